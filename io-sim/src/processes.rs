//! Simulated commands for simulated hosts: what a command prints, when, and how it ends, decided
//! by its argv so a scenario can ask for exit codes, output, silence and hangs by name. Owns only
//! the behaviour table; the node decides what runs.

use std::time::Duration;

use cohort_core::exec::daemon::ProcessEnd;

/// How one simulated command behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// Prints `stdout` after `after`, then ends with `end`.
    Runs { stdout: Vec<u8>, after: Duration, end: ProcessEnd },
    /// Prints `chunk` every `every`, forever (until killed).
    Chatters { chunk: Vec<u8>, every: Duration },
}

/// The behaviour of `argv`:
/// `echo ARGS` prints them; `true`/`false` exit 0/1 at once; `uname` prints `Linux`; `exit N`
/// exits N; `sleep S` is silent for S seconds, then exits 0; `yes` prints `y` every 100 ms until
/// killed; anything else is not found (exit 127).
pub fn behaviour(argv: &[String]) -> Behaviour {
    let now = |stdout: &[u8], code| Behaviour::Runs {
        stdout: stdout.to_vec(),
        after: Duration::from_millis(5),
        end: ProcessEnd::Exited(code),
    };
    match argv.split_first() {
        Some((cmd, args)) if cmd == "echo" => now(format!("{}\n", args.join(" ")).as_bytes(), 0),
        Some((cmd, _)) if cmd == "true" => now(b"", 0),
        Some((cmd, _)) if cmd == "false" => now(b"", 1),
        Some((cmd, _)) if cmd == "uname" => now(b"Linux\n", 0),
        Some((cmd, args)) if cmd == "exit" => {
            now(b"", args.first().and_then(|a| a.parse().ok()).unwrap_or(1))
        }
        Some((cmd, args)) if cmd == "sleep" => Behaviour::Runs {
            stdout: Vec::new(),
            after: Duration::from_secs_f64(args.first().and_then(|a| a.parse().ok()).unwrap_or(1.0)),
            end: ProcessEnd::Exited(0),
        },
        Some((cmd, _)) if cmd == "yes" => {
            Behaviour::Chatters { chunk: b"y\n".to_vec(), every: Duration::from_millis(100) }
        }
        _ => now(b"", 127),
    }
}
