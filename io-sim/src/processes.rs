//! Simulated commands for simulated hosts: what a command prints, when, and how it ends, decided
//! by its argv so a scenario can ask for exit codes, output, silence and hangs by name (the file
//! name of argv[0]: `/usr/bin/echo` and `echo` behave alike, as they would on a real host whose
//! PATH finds `echo` there). Owns only the behaviour table; the node decides what runs.

use std::time::Duration;

use cohort_core::exec::daemon::ProcessEnd;

/// How one simulated command behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// Prints each output at its offset from the start, then ends as `end` says (at its offset),
    /// or never ends on its own when `end` is `None`.
    Script { outputs: Vec<(Duration, Vec<u8>)>, end: Option<(Duration, ProcessEnd)> },
    /// Prints `chunk` every `every`, forever (until killed).
    Chatters { chunk: Vec<u8>, every: Duration },
}

/// How soon a command that "prints at once" prints.
const AT_ONCE: Duration = Duration::from_millis(5);

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> T {
    args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

/// The behaviour of `argv`:
/// - `echo ARGS` prints them; `true`/`false` exit 0/1 at once; `uname` prints `Linux`; `exit N`
///   exits N;
/// - `sleep S` is silent for S seconds, then exits 0; `hang` prints `started` and then nothing,
///   ever; `yes` prints `y` every 100 ms until killed;
/// - `say TEXT S CODE` prints TEXT at once and exits CODE after S seconds;
/// - `tick EVERY_MS UNTIL_MS [hang]` prints a line every EVERY_MS until UNTIL_MS, then exits 0
///   (or falls silent and hangs);
/// - `spew MIB` prints MIB mebibytes at once and exits 0;
/// - `when A=B CMD… else CMD…` behaves as the first command when A equals B, else as the second
///   (with `%h` for A, one run gives hosts different behaviours);
/// - `mixed HOST` is one host of a mixed fleet: host number N prints `error: disk full` and
///   exits 1 after N mod 7 + 1 seconds when N is a multiple of 10, else prints `ok` and exits 0
///   after N mod 5 + 1 seconds;
/// - `cat` prints what it was given on its standard input and exits 0;
/// - anything else is not found (exit 127).
pub fn behaviour(argv: &[String], stdin: &[u8]) -> Behaviour {
    let now = |stdout: &[u8], code| Behaviour::Script {
        outputs: vec![(AT_ONCE, stdout.to_vec())],
        end: Some((AT_ONCE, ProcessEnd::Exited(code))),
    };
    let Some((cmd, args)) = argv.split_first() else { return now(b"", 127) };
    match cmd.rsplit('/').next().unwrap_or(cmd) {
        "echo" => now(format!("{}\n", args.join(" ")).as_bytes(), 0),
        "true" => now(b"", 0),
        "cat" => now(stdin, 0),
        "false" => now(b"", 1),
        "uname" => now(b"Linux\n", 0),
        "exit" => now(b"", arg(args, 0, 1)),
        "sleep" => Behaviour::Script {
            outputs: Vec::new(),
            end: Some((Duration::from_secs_f64(arg(args, 0, 1.0)), ProcessEnd::Exited(0))),
        },
        "hang" => Behaviour::Script { outputs: vec![(AT_ONCE, b"started\n".to_vec())], end: None },
        "yes" => Behaviour::Chatters { chunk: b"y\n".to_vec(), every: Duration::from_millis(100) },
        "say" => Behaviour::Script {
            outputs: vec![(AT_ONCE, format!("{}\n", arg(args, 0, String::new())).into_bytes())],
            end: Some((Duration::from_secs_f64(arg(args, 1, 1.0)), ProcessEnd::Exited(arg(args, 2, 0)))),
        },
        "tick" => {
            let every = Duration::from_millis(arg(args, 0, 1000u64).max(1));
            let until = Duration::from_millis(arg(args, 1, 10_000));
            let mut outputs = Vec::new();
            let mut at = Duration::ZERO;
            while at < until {
                outputs.push((at, format!("tick {}\n", at.as_millis()).into_bytes()));
                at += every;
            }
            let hang = args.get(2).is_some_and(|a| a == "hang");
            Behaviour::Script { outputs, end: (!hang).then_some((until, ProcessEnd::Exited(0))) }
        }
        "spew" => {
            let mib: usize = arg(args, 0, 3);
            Behaviour::Script {
                outputs: vec![(AT_ONCE, vec![b'y'; mib * 1024 * 1024])],
                end: Some((AT_ONCE, ProcessEnd::Exited(0))),
            }
        }
        "when" => {
            let same = args.first().and_then(|c| c.split_once('=')).is_some_and(|(a, b)| a == b);
            let rest = args.get(1..).unwrap_or_default();
            let split = rest.iter().position(|a| a == "else").unwrap_or(rest.len());
            let (then, otherwise) = rest.split_at(split);
            behaviour(if same { then } else { otherwise.get(1..).unwrap_or_default() }, stdin)
        }
        "mixed" => {
            let n: u64 = args
                .first()
                .map(|h| h.trim_start_matches(|c: char| !c.is_ascii_digit()))
                .and_then(|d| d.parse().ok())
                .unwrap_or(0);
            let (line, after, code): (&[u8], u64, i32) =
                if n % 10 == 0 { (b"error: disk full\n", n % 7 + 1, 1) } else { (b"ok\n", n % 5 + 1, 0) };
            Behaviour::Script {
                outputs: vec![(AT_ONCE, line.to_vec())],
                end: Some((Duration::from_secs(after), ProcessEnd::Exited(code))),
            }
        }
        _ => now(b"", 127),
    }
}
