//! Running commands, for the event loop: what the spawner started (argv run directly, no shell,
//! in a process group of its own), with stdout and stderr as non-blocking pipes registered with
//! mio. Owns reading without blocking, pausing and resuming the reads, killing the whole group
//! and reaping. It never starts a command (the spawner does) and never leaves a killed command's
//! descendants running.

use std::io::{self, Read};
use std::process::{Child, ExitStatus};

use mio::unix::pipe::Receiver;
use mio::{Interest, Registry, Token};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::launch::ChildError;
use crate::spawner::Spawned;

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A running command whose output the event loop reads as it arrives.
#[derive(Debug)]
pub struct RunningChild {
    child: Child,
    stdout: Option<Receiver>,
    stderr: Option<Receiver>,
    pub stdout_token: Token,
    pub stderr_token: Token,
}

impl RunningChild {
    /// Takes `program`, which the spawner started, and registers its output pipes under the two
    /// tokens, unless `paused` (then [`RunningChild::resume`] registers them). If they cannot
    /// be watched, the command is killed.
    pub fn adopt(
        program: &str,
        spawned: Spawned,
        registry: &Registry,
        (stdout_token, stderr_token): (Token, Token),
        paused: bool,
    ) -> Result<RunningChild, ChildError> {
        let Spawned { child, stdout, stderr } = spawned;
        let mut running = RunningChild {
            child,
            stdout: Some(Receiver::from(stdout)),
            stderr: Some(Receiver::from(stderr)),
            stdout_token,
            stderr_token,
        };
        let nonblocking = [&running.stdout, &running.stderr]
            .into_iter()
            .flatten()
            .try_for_each(|receiver| receiver.set_nonblocking(true));
        let watched = nonblocking.and_then(|()| if paused { Ok(()) } else { running.resume(registry) });
        if let Err(source) = watched {
            let _ = running.kill_group();
            return Err(ChildError::Register { program: program.to_owned(), source });
        }
        Ok(running)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads what `stream` has now, up to `limit` bytes, without blocking. `Ok(None)` at EOF.
    pub fn read(&mut self, stream: Stream, limit: usize) -> io::Result<Option<Vec<u8>>> {
        let pipe = match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        let Some(receiver) = pipe.as_mut() else { return Ok(None) };
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        while out.len() < limit {
            match receiver.read(&mut buf) {
                Ok(0) => {
                    *pipe = None;
                    return Ok(if out.is_empty() { None } else { Some(out) });
                }
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Some(out))
    }

    /// Stops watching the output pipes: the command blocks once they fill.
    pub fn pause(&mut self, registry: &Registry) -> io::Result<()> {
        for receiver in [&mut self.stdout, &mut self.stderr].into_iter().flatten() {
            registry.deregister(receiver)?;
        }
        Ok(())
    }

    /// Watches the output pipes again (what waited in them is reported at once).
    pub fn resume(&mut self, registry: &Registry) -> io::Result<()> {
        let tokens = [self.stdout_token, self.stderr_token];
        for (receiver, token) in [&mut self.stdout, &mut self.stderr].into_iter().zip(tokens) {
            if let Some(receiver) = receiver {
                registry.register(receiver, token, Interest::READABLE)?;
            }
        }
        Ok(())
    }

    /// Both pipes have reached EOF.
    pub fn output_closed(&self) -> bool {
        self.stdout.is_none() && self.stderr.is_none()
    }

    /// The exit status, if the command has finished (reaps it).
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// SIGKILL to the command's whole process group, then reaps the command.
    pub fn kill_group(&mut self) -> io::Result<ExitStatus> {
        let pid = i32::try_from(self.child.id()).map_err(|_| io::Error::other("pid out of range"))?;
        match killpg(Pid::from_raw(pid), Signal::SIGKILL) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => return Err(io::Error::from(e)),
        }
        self.child.wait()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    use cohort_core::child_env::ChildEnvironment;
    use cohort_core::node::ChildId;
    use mio::{Events, Poll};

    use crate::launch::{SpawnRequest, account_of, current_user};
    use crate::spawner::Spawner;

    fn me() -> String {
        current_user().expect("a passwd entry")
    }

    fn inherit() -> ChildEnvironment {
        ChildEnvironment::Inherit { vars: Vec::new() }
    }

    /// Starts `argv` as this test's user through a spawner.
    fn spawned(argv: &[&str], env: ChildEnvironment, stdin: &[u8]) -> Spawned {
        let mut spawner = Spawner::start().expect("the thread starts");
        let argv = argv.iter().map(|w| (*w).to_owned()).collect();
        let request = SpawnRequest { argv, run_as: Some(me()), env, stdin: stdin.to_vec() };
        spawner.submit(ChildId(1), request).expect("handed over");
        spawner.wait_finished().outcome.expect("spawns")
    }

    /// Starts `argv` and watches its output on `poll` under `tokens`.
    fn started(
        poll: &Poll,
        tokens: (Token, Token),
        argv: &[&str],
        env: ChildEnvironment,
        stdin: &[u8],
    ) -> RunningChild {
        let spawned = spawned(argv, env, stdin);
        RunningChild::adopt(argv[0], spawned, poll.registry(), tokens, false).expect("watched")
    }

    /// Waits for events up to `timeout`. Other tests in this process raise signals: an
    /// interrupted wait is a wait with no events.
    fn wait(poll: &mut Poll, events: &mut Events, timeout: Duration) {
        match poll.poll(events, Some(timeout)) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => events.clear(),
            outcome => outcome.expect("poll"),
        }
    }

    /// Runs the poll loop until both pipes close; returns (stdout, stderr).
    fn collect(child: &mut RunningChild, poll: &mut Poll) -> (Vec<u8>, Vec<u8>) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut events = Events::with_capacity(8);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !child.output_closed() && Instant::now() < deadline {
            wait(poll, &mut events, Duration::from_millis(100));
            for (stream, sink) in [(Stream::Stdout, &mut out), (Stream::Stderr, &mut err)] {
                if let Some(bytes) = child.read(stream, 1 << 20).expect("read") {
                    sink.extend(bytes);
                }
            }
        }
        (out, err)
    }

    const TOKENS: (Token, Token) = (Token(1), Token(2));

    #[test]
    fn output_and_exit_status_come_back_without_blocking() {
        let mut poll = Poll::new().expect("poll");
        let argv = ["sh", "-c", "echo out; echo err >&2; exit 3"];
        let mut child = started(&poll, TOKENS, &argv, inherit(), &[]);
        let (out, err) = collect(&mut child, &mut poll);
        assert_eq!(out, b"out\n");
        assert_eq!(err, b"err\n");
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "the command did not exit");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(status.code(), Some(3));
    }

    #[test]
    fn standard_input_reaches_the_command_whole_then_end_of_file() {
        let mut poll = Poll::new().expect("poll");
        // Larger than a pipe's buffer: a blocking write to a command not yet reading would hang.
        let input: Vec<u8> = (0..200_000u32).flat_map(|i| format!("{i}\n").into_bytes()).collect();
        let mut child = started(&poll, TOKENS, &["cat"], inherit(), &input);
        let (out, _) = collect(&mut child, &mut poll);
        assert_eq!(out.len(), input.len());
        assert!(out == input, "cat gave back what it read");
    }

    #[test]
    fn argv_is_not_interpreted_by_a_shell() {
        let mut poll = Poll::new().expect("poll");
        let mut child = started(&poll, TOKENS, &["echo", "$HOME;", "`id`"], inherit(), &[]);
        let (out, _) = collect(&mut child, &mut poll);
        assert_eq!(out, b"$HOME; `id`\n");
    }

    /// A command adopted paused is not read until resumed; what it wrote meanwhile waits.
    #[test]
    fn a_command_adopted_paused_is_read_only_once_resumed() {
        let mut poll = Poll::new().expect("poll");
        let spawned = spawned(&["echo", "held"], inherit(), &[]);
        let mut child = RunningChild::adopt("echo", spawned, poll.registry(), TOKENS, true).expect("adopted");
        let mut events = Events::with_capacity(8);
        let quiet_until = Instant::now() + Duration::from_millis(200);
        while Instant::now() < quiet_until {
            wait(&mut poll, &mut events, quiet_until - Instant::now());
            assert!(events.is_empty(), "a paused command's pipes are not watched");
        }
        child.resume(poll.registry()).expect("resumed");
        let (out, _) = collect(&mut child, &mut poll);
        assert_eq!(out, b"held\n");
    }

    #[test]
    fn a_kill_reaches_the_whole_process_group() {
        let mut poll = Poll::new().expect("poll");
        // The shell starts a grandchild and waits: killing only the shell would leave it running.
        let argv = ["sh", "-c", "sleep 300 & echo $!; wait"];
        let mut child = started(&poll, TOKENS, &argv, inherit(), &[]);
        let mut events = Events::with_capacity(8);
        let mut line = Vec::new();
        while !line.ends_with(b"\n") {
            wait(&mut poll, &mut events, Duration::from_millis(100));
            if let Some(bytes) = child.read(Stream::Stdout, 64).expect("read") {
                line.extend(bytes);
            }
        }
        let grandchild: i32 = String::from_utf8_lossy(&line).trim().parse().expect("a pid");
        child.kill_group().expect("killed");
        let deadline = Instant::now() + Duration::from_secs(5);
        // Signal 0 probes existence; the grandchild is gone (or a zombie awaiting init).
        while nix::sys::signal::kill(Pid::from_raw(grandchild), None).is_ok() {
            let stat = std::fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default();
            if stat.is_empty() || stat.contains(") Z ") {
                break;
            }
            assert!(Instant::now() < deadline, "grandchild {grandchild} survived the group kill");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_reset_environment_holds_the_account_and_the_passed_variables_only() {
        let mut poll = Poll::new().expect("poll");
        let account = account_of(&me()).expect("my own account");
        let env = ChildEnvironment::Reset { vars: vec![("LANG".into(), "C.UTF-8".into())] };
        // A bare name: found on the reset PATH, not on the test's own.
        let mut child = started(&poll, TOKENS, &["env"], env.clone(), &[]);
        let (out, _) = collect(&mut child, &mut poll);
        let mut shown: Vec<String> = String::from_utf8_lossy(&out).lines().map(str::to_owned).collect();
        shown.sort();
        let mut expected: Vec<String> =
            env.resolve(&account).vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
        expected.sort();
        assert_eq!(shown, expected);
        let mut child = started(&poll, (Token(3), Token(4)), &["pwd"], env, &[]);
        let (out, _) = collect(&mut child, &mut poll);
        let dir = if account.home_is_dir { account.home.clone() } else { "/".to_owned() };
        assert_eq!(String::from_utf8_lossy(&out).trim_end(), dir);
    }
}
