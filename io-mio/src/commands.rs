//! The commands a node runs, from the spawn the node asks for to the exit it hears: handed to
//! the spawner, waiting to start, running. Owns which process is which child, which token is
//! which output pipe, the kill or pause the node asked for before its command started (carried
//! out the moment it does), and reaping. Each change it sees becomes the node input that reports
//! it. It never decides what runs, or when to kill or pause: the node does.

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use cohort_core::exec::daemon::ProcessEnd;
use cohort_core::node::{ChildId, Input};
use mio::{Registry, Token};
use tracing::{debug, warn};

use crate::child::{RunningChild, Stream};
use crate::launch::SpawnRequest;
use crate::spawner::{Finished, Spawner};

/// A command handed to the spawner and not yet announced: what the node asked of it meanwhile.
#[derive(Debug)]
struct Starting {
    program: String,
    tokens: (Token, Token),
    /// The node killed it before it started: kill it as soon as it does.
    killed: bool,
    /// The node paused its output: adopt it unwatched.
    paused: bool,
}

/// The node's commands. See the module docs.
#[derive(Debug)]
pub struct Commands {
    /// Started before any socket, so the commands it starts copy a small descriptor table.
    spawner: Spawner,
    starting: BTreeMap<ChildId, Starting>,
    running: BTreeMap<ChildId, RunningChild>,
    pipes: BTreeMap<Token, (ChildId, Stream)>,
    /// Running commands whose output reached its end: reaped once they exit.
    closed: BTreeSet<ChildId>,
}

impl Commands {
    /// Starts the spawner. Call it before opening the node's sockets (see [`Spawner::start`]).
    pub fn start() -> io::Result<Commands> {
        Ok(Commands {
            spawner: Spawner::start()?,
            starting: BTreeMap::new(),
            running: BTreeMap::new(),
            pipes: BTreeMap::new(),
            closed: BTreeSet::new(),
        })
    }

    /// The socket to watch: readable when the spawner has news for [`Commands::take_started`].
    pub fn news(&mut self) -> Option<&mut mio::net::UnixDatagram> {
        self.spawner.news()
    }

    /// Which command's output `token` is, if it is one.
    pub fn pipe(&self, token: Token) -> Option<(ChildId, Stream)> {
        self.pipes.get(&token).copied()
    }

    /// Hands `request` to the spawner; its output will come on `tokens` (stdout, stderr). The
    /// node hears `ChildStarted` once it has started; at once `ChildFailed` if it cannot be
    /// handed over.
    pub fn spawn(&mut self, child: ChildId, request: SpawnRequest, tokens: (Token, Token)) -> Option<Input> {
        let program = request.program().to_owned();
        if let Err(e) = self.spawner.submit(child, request) {
            return Some(Input::ChildFailed { child, reason: e.to_string() });
        }
        self.pipes.insert(tokens.0, (child, Stream::Stdout));
        self.pipes.insert(tokens.1, (child, Stream::Stderr));
        self.starting.insert(child, Starting { program, tokens, killed: false, paused: false });
        None
    }

    /// Kills the command's whole process group; one still starting is killed when it starts.
    pub fn kill(&mut self, child: ChildId) -> Option<Input> {
        if let Some(starting) = self.starting.get_mut(&child) {
            starting.killed = true;
            return None;
        }
        let mut running = self.running.remove(&child)?;
        self.ended(child, &running);
        killed(child, &mut running)
    }

    /// Stops reading the command's output (at its start, if it has not started yet).
    pub fn pause(&mut self, child: ChildId, registry: &Registry) {
        if let Some(starting) = self.starting.get_mut(&child) {
            starting.paused = true;
        } else if let Some(running) = self.running.get_mut(&child)
            && let Err(e) = running.pause(registry)
        {
            warn!(error = %e, "could not pause a command's output");
        }
    }

    /// Reads the command's output again.
    pub fn resume(&mut self, child: ChildId, registry: &Registry) {
        if let Some(starting) = self.starting.get_mut(&child) {
            starting.paused = false;
        } else if let Some(running) = self.running.get_mut(&child)
            && let Err(e) = running.resume(registry)
        {
            warn!(error = %e, "could not resume a command's output");
        }
    }

    /// Takes in every command the spawner announced: watched and reported started (then killed
    /// at once if the node killed it meanwhile), or reported failed.
    pub fn take_started(&mut self, registry: &Registry) -> io::Result<Vec<Input>> {
        let mut heard = Vec::new();
        while let Some(Finished { id: child, outcome }) = self.spawner.next_finished()? {
            let Some(starting) = self.starting.remove(&child) else { continue };
            let Starting { program, tokens, killed: kill, paused } = starting;
            match outcome.and_then(|spawned| RunningChild::adopt(&program, spawned, registry, tokens, paused))
            {
                Ok(mut running) => {
                    heard.push(Input::ChildStarted { child });
                    if kill {
                        self.ended(child, &running);
                        heard.extend(killed(child, &mut running));
                    } else {
                        self.running.insert(child, running);
                    }
                }
                Err(e) => {
                    self.forget(tokens);
                    heard.push(Input::ChildFailed { child, reason: e.to_string() });
                }
            }
        }
        Ok(heard)
    }

    /// Reads what the command's `stream` has now, up to `limit` bytes.
    pub fn read(&mut self, child: ChildId, stream: Stream, limit: usize) -> Option<Input> {
        let running = self.running.get_mut(&child)?;
        let read = running.read(stream, limit);
        if running.output_closed() {
            self.closed.insert(child);
        }
        match read {
            Ok(Some(bytes)) => Some(Input::ChildOutput { child, stderr: stream == Stream::Stderr, bytes }),
            Ok(None) => None,
            Err(e) => {
                debug!(error = %e, "pipe read failed");
                None
            }
        }
    }

    /// Reports the commands whose output closed and who exited.
    pub fn reap(&mut self) -> Vec<Input> {
        let mut heard = Vec::new();
        for child in std::mem::take(&mut self.closed) {
            let Some(running) = self.running.get_mut(&child) else { continue };
            match running.try_wait() {
                Ok(Some(status)) => {
                    if let Some(running) = self.running.remove(&child) {
                        self.ended(child, &running);
                    }
                    heard.push(Input::ChildExited { child, end: process_end(status) });
                }
                // Closed its output but still running: looked at again on the next reap.
                Ok(None) => {
                    self.closed.insert(child);
                }
                Err(e) => warn!(error = %e, "could not reap a command"),
            }
        }
        heard
    }

    /// Whether a command closed its output and has not been seen to exit: reap again soon.
    pub fn awaiting_exit(&self) -> bool {
        !self.closed.is_empty()
    }

    /// Kills every running command (the spawner kills what it started and nobody took).
    pub fn stop(&mut self) {
        for running in self.running.values_mut() {
            let _ = running.kill_group();
        }
    }

    fn ended(&mut self, child: ChildId, running: &RunningChild) {
        self.closed.remove(&child);
        self.forget((running.stdout_token, running.stderr_token));
    }

    fn forget(&mut self, (stdout, stderr): (Token, Token)) {
        self.pipes.remove(&stdout);
        self.pipes.remove(&stderr);
    }
}

/// Kills `running`'s group and reports how it ended.
fn killed(child: ChildId, running: &mut RunningChild) -> Option<Input> {
    match running.kill_group() {
        Ok(status) => Some(Input::ChildExited { child, end: process_end(status) }),
        Err(e) => {
            warn!(error = %e, "kill failed");
            None
        }
    }
}

fn process_end(status: std::process::ExitStatus) -> ProcessEnd {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ProcessEnd::Exited(code),
        (None, Some(signal)) => ProcessEnd::Signalled(signal),
        (None, None) => ProcessEnd::Exited(-1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    use cohort_core::child_env::ChildEnvironment;
    use mio::{Events, Interest, Poll};

    const NEWS: Token = Token(0);

    fn request(argv: &[&str]) -> SpawnRequest {
        SpawnRequest {
            argv: argv.iter().map(|w| (*w).to_owned()).collect(),
            run_as: None,
            env: ChildEnvironment::Inherit { vars: Vec::new() },
            stdin: Vec::new(),
        }
    }

    /// Turns the loop as a driver would until `done` says the inputs heard are enough.
    fn drive(commands: &mut Commands, poll: &mut Poll, done: impl Fn(&[Input]) -> bool) -> Vec<Input> {
        let mut heard = Vec::new();
        let mut events = Events::with_capacity(16);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(&heard) {
            assert!(Instant::now() < deadline, "only heard {heard:?}");
            match poll.poll(&mut events, Some(Duration::from_millis(20))) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                outcome => outcome.expect("poll"),
            }
            for event in &events {
                if event.token() == NEWS {
                    heard.extend(commands.take_started(poll.registry()).expect("news reads"));
                } else if let Some((child, stream)) = commands.pipe(event.token()) {
                    heard.extend(commands.read(child, stream, 1 << 16));
                }
            }
            heard.extend(commands.reap());
        }
        heard
    }

    fn started() -> (Commands, Poll) {
        let mut commands = Commands::start().expect("the spawner starts");
        let poll = Poll::new().expect("poll");
        let news = commands.news().expect("news to watch");
        poll.registry().register(news, NEWS, Interest::READABLE).expect("registers");
        (commands, poll)
    }

    #[test]
    fn a_command_is_heard_starting_writing_and_exiting() {
        let (mut commands, mut poll) = started();
        let child = ChildId(3);
        assert_eq!(
            commands.spawn(child, request(&["sh", "-c", "echo hi; exit 4"]), (Token(1), Token(2))),
            None
        );
        let heard =
            drive(&mut commands, &mut poll, |h| h.iter().any(|i| matches!(i, Input::ChildExited { .. })));
        assert_eq!(
            heard,
            [
                Input::ChildStarted { child },
                Input::ChildOutput { child, stderr: false, bytes: b"hi\n".to_vec() },
                Input::ChildExited { child, end: ProcessEnd::Exited(4) },
            ]
        );
        assert_eq!(commands.pipe(Token(1)), None, "an ended command's tokens are forgotten");
    }

    /// The node may kill a command before the spawner has started it: it is killed the moment
    /// it starts, and the node hears it start, then end by SIGKILL.
    #[test]
    fn a_kill_before_the_start_is_carried_out_when_the_command_starts() {
        let (mut commands, mut poll) = started();
        let child = ChildId(9);
        assert_eq!(commands.spawn(child, request(&["sleep", "300"]), (Token(1), Token(2))), None);
        assert_eq!(commands.kill(child), None, "nothing to report before it starts");
        let heard = drive(&mut commands, &mut poll, |h| h.len() >= 2);
        assert_eq!(
            heard,
            [Input::ChildStarted { child }, Input::ChildExited { child, end: ProcessEnd::Signalled(9) }]
        );
    }

    #[test]
    fn a_command_that_cannot_start_is_heard_failing() {
        let (mut commands, mut poll) = started();
        let child = ChildId(1);
        assert_eq!(commands.spawn(child, request(&["/no/such/program"]), (Token(1), Token(2))), None);
        let heard = drive(&mut commands, &mut poll, |h| !h.is_empty());
        assert!(
            matches!(&heard[..], [Input::ChildFailed { child: c, reason }] if *c == child && reason.contains("/no/such/program")),
            "{heard:?}"
        );
    }
}
