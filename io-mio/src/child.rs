//! Child processes for the event loop: argv run directly (no shell), in a process group of its
//! own, in the environment core decided, with stdout and stderr as non-blocking pipes registered
//! with mio. Owns spawning (with the run-as user's account looked up: its passwd entry and
//! whether its home is a directory, the facts core fills the environment in with), reading
//! without blocking, killing the whole group and reaping. It never runs a shell on its own, never
//! decides what a command's environment holds, and never leaves a killed command's descendants
//! running.

use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};

use cohort_core::child_env::{Account, ChildEnvironment};

use mio::unix::pipe::Receiver;
use mio::{Interest, Registry, Token};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::spawner::{Spawned, Spawner};

#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("an empty command cannot run")]
    EmptyCommand,
    #[error("could not start `{program}`: {source}")]
    Spawn { program: String, source: io::Error },
    #[error("could not watch the output of `{program}`: {source}")]
    Register { program: String, source: io::Error },
    #[error("cannot run as `{user}`: {reason}")]
    RunAs { user: String, reason: String },
}

/// This process's user name, if its uid has a passwd entry.
pub fn current_user() -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::geteuid()).ok().flatten().map(|u| u.name)
}

/// The uid and gid to run as: switching users needs root; otherwise only the daemon's own user.
pub(crate) fn resolve_run_as(user: &str) -> Result<Option<(u32, u32)>, ChildError> {
    let fail = |reason: String| ChildError::RunAs { user: user.to_owned(), reason };
    let me = current_user().ok_or_else(|| fail("the daemon's own user has no passwd entry".into()))?;
    if me == user {
        return Ok(None);
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(fail(format!("the exec daemon runs as `{me}`, not root")));
    }
    let target = nix::unistd::User::from_name(user)
        .map_err(|e| fail(e.to_string()))?
        .ok_or_else(|| fail("no such user on this host".into()))?;
    Ok(Some((target.uid.as_raw(), target.gid.as_raw())))
}

/// What `user`'s passwd entry says (name, home, shell), and whether its home is a directory now.
pub(crate) fn account_of(user: &str) -> Result<Account, ChildError> {
    let fail = |reason: String| ChildError::RunAs { user: user.to_owned(), reason };
    let entry = nix::unistd::User::from_name(user)
        .map_err(|e| fail(e.to_string()))?
        .ok_or_else(|| fail("no such user on this host".into()))?;
    Ok(Account {
        home_is_dir: entry.dir.is_dir(),
        home: entry.dir.to_string_lossy().into_owned(),
        shell: entry.shell.to_string_lossy().into_owned(),
        name: entry.name,
    })
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// What to start: argv (no shell), as whom, in what environment, with what on standard input.
#[derive(Debug, Clone, Copy)]
pub struct SpawnRequest<'a> {
    pub argv: &'a [String],
    pub run_as: &'a str,
    pub env: &'a ChildEnvironment,
    pub stdin: &'a [u8],
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
    /// Starts `argv` with no shell, as `run_as`, in the environment and working directory `env`
    /// resolves to for `run_as`'s account, with `stdin` on its standard input, in a new process
    /// group, from `spawner`'s thread, and registers its output pipes. A bare program name is
    /// looked up on the `PATH` that environment sets.
    pub fn spawn(
        spawner: &Spawner,
        request: &SpawnRequest<'_>,
        registry: &Registry,
        stdout_token: Token,
        stderr_token: Token,
    ) -> Result<RunningChild, ChildError> {
        let SpawnRequest { argv, run_as, env, stdin } = *request;
        let (program, args) = argv.split_first().ok_or(ChildError::EmptyCommand)?;
        let ids = resolve_run_as(run_as)?;
        let resolved = env.resolve(&account_of(run_as)?);
        let mut command = Command::new(program);
        if let Some((uid, gid)) = ids {
            command.gid(gid).uid(uid);
        }
        if resolved.clear {
            command.env_clear();
        }
        if let Some(dir) = &resolved.dir {
            command.current_dir(dir);
        }
        command
            .args(args)
            .envs(resolved.vars.iter().map(|(k, v)| (k, v)))
            // Its own group, so a kill reaches everything it started.
            .process_group(0);
        let Spawned { mut child, stdout, stderr } = spawner
            .spawn(command, stdin.to_vec())
            .map_err(|source| ChildError::Spawn { program: program.clone(), source })?;
        let register = |receiver: &mut Receiver, token| -> io::Result<()> {
            receiver.set_nonblocking(true)?;
            registry.register(receiver, token, Interest::READABLE)
        };
        let mut stdout = Some(Receiver::from(stdout));
        let mut stderr = Some(Receiver::from(stderr));
        for (pipe, token) in [(&mut stdout, stdout_token), (&mut stderr, stderr_token)] {
            if let Some(pipe) = pipe
                && let Err(source) = register(pipe, token)
            {
                let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
                let _ = child.wait();
                return Err(ChildError::Register { program: program.clone(), source });
            }
        }
        Ok(RunningChild { child, stdout, stderr, stdout_token, stderr_token })
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

    use mio::{Events, Poll};

    fn me() -> String {
        current_user().expect("a passwd entry")
    }

    #[test]
    fn another_user_needs_root_or_is_refused() {
        let poll = Poll::new().expect("poll");
        let result = RunningChild::spawn(
            &Spawner::here(),
            &SpawnRequest {
                argv: &argv(&["true"]),
                run_as: "no-such-user-here",
                env: &inherit(),
                stdin: &[],
            },
            poll.registry(),
            Token(1),
            Token(2),
        );
        assert!(matches!(result, Err(ChildError::RunAs { .. })));
    }

    /// A request to run `argv` as this test's own user, with nothing on standard input.
    fn request<'a>(argv: &'a [String], env: &'a ChildEnvironment) -> SpawnRequest<'a> {
        SpawnRequest { argv, run_as: me_static(), env, stdin: &[] }
    }

    fn me_static() -> &'static str {
        static ME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        ME.get_or_init(me)
    }

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    fn inherit() -> ChildEnvironment {
        ChildEnvironment::Inherit { vars: Vec::new() }
    }

    /// Runs the poll loop until both pipes close; returns (stdout, stderr).
    fn collect(child: &mut RunningChild, poll: &mut Poll) -> (Vec<u8>, Vec<u8>) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut events = Events::with_capacity(8);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !child.output_closed() && Instant::now() < deadline {
            poll.poll(&mut events, Some(Duration::from_millis(100))).expect("poll");
            for (stream, sink) in [(Stream::Stdout, &mut out), (Stream::Stderr, &mut err)] {
                if let Some(bytes) = child.read(stream, 1 << 20).expect("read") {
                    sink.extend(bytes);
                }
            }
        }
        (out, err)
    }

    #[test]
    fn output_and_exit_status_come_back_without_blocking() {
        let mut poll = Poll::new().expect("poll");
        let mut child = RunningChild::spawn(
            &Spawner::here(),
            &SpawnRequest {
                argv: &argv(&["sh", "-c", "echo out; echo err >&2; exit 3"]),
                run_as: &me(),
                env: &inherit(),
                stdin: &[],
            },
            poll.registry(),
            Token(1),
            Token(2),
        )
        .expect("spawns");
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
        let mut child = RunningChild::spawn(
            &Spawner::here(),
            &SpawnRequest { argv: &argv(&["cat"]), run_as: &me(), env: &inherit(), stdin: &input },
            poll.registry(),
            Token(1),
            Token(2),
        )
        .expect("spawns");
        let (out, _) = collect(&mut child, &mut poll);
        assert_eq!(out.len(), input.len());
        assert!(out == input, "cat gave back what it read");
    }

    #[test]
    fn argv_is_not_interpreted_by_a_shell() {
        let mut poll = Poll::new().expect("poll");
        let mut child = RunningChild::spawn(
            &Spawner::here(),
            &SpawnRequest {
                argv: &argv(&["echo", "$HOME;", "`id`"]),
                run_as: &me(),
                env: &inherit(),
                stdin: &[],
            },
            poll.registry(),
            Token(1),
            Token(2),
        )
        .expect("spawns");
        let (out, _) = collect(&mut child, &mut poll);
        assert_eq!(out, b"$HOME; `id`\n");
    }

    #[test]
    fn a_kill_reaches_the_whole_process_group() {
        let mut poll = Poll::new().expect("poll");
        // The shell starts a grandchild and waits: killing only the shell would leave it running.
        let mut child = RunningChild::spawn(
            &Spawner::here(),
            &SpawnRequest {
                argv: &argv(&["sh", "-c", "sleep 300 & echo $!; wait"]),
                run_as: &me(),
                env: &inherit(),
                stdin: &[],
            },
            poll.registry(),
            Token(1),
            Token(2),
        )
        .expect("spawns");
        let mut events = Events::with_capacity(8);
        let mut line = Vec::new();
        while !line.ends_with(b"\n") {
            poll.poll(&mut events, Some(Duration::from_millis(100))).expect("poll");
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
        let mut child = RunningChild::spawn(
            &Spawner::here(),
            &request(&argv(&["env"]), &env),
            poll.registry(),
            Token(1),
            Token(2),
        )
        .expect("spawns");
        let (out, _) = collect(&mut child, &mut poll);
        let mut shown: Vec<String> = String::from_utf8_lossy(&out).lines().map(str::to_owned).collect();
        shown.sort();
        let mut expected: Vec<String> =
            env.resolve(&account).vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
        expected.sort();
        assert_eq!(shown, expected);
        let mut child = RunningChild::spawn(
            &Spawner::here(),
            &request(&argv(&["pwd"]), &env),
            poll.registry(),
            Token(3),
            Token(4),
        )
        .expect("spawns");
        let (out, _) = collect(&mut child, &mut poll);
        let dir = if account.home_is_dir { account.home.clone() } else { "/".to_owned() };
        assert_eq!(String::from_utf8_lossy(&out).trim_end(), dir);
    }

    #[test]
    fn an_empty_command_is_refused() {
        let poll = Poll::new().expect("poll");
        assert!(matches!(
            RunningChild::spawn(
                &Spawner::here(),
                &request(&[], &inherit()),
                poll.registry(),
                Token(1),
                Token(2)
            ),
            Err(ChildError::EmptyCommand)
        ));
    }
}
