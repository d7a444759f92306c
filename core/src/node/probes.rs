//! The agents' probes on a node: each becomes a look at a file, two looks (both TCP socket
//! tables), or a child process whose standard output is kept (bounded) until it ends. Owns
//! matching what the driver reports back to the agent and probe that asked; what a probe means
//! and how its check is judged are the agent's.

use std::collections::BTreeMap;

use super::Effects;
use super::exec::ChildEvent;
use super::io::{ChildEnvironment, ChildId, FileId, Output};
use crate::exec::daemon::ProcessEnd;
use crate::policy::checks::{FileFacts, Observation, Probe, RunEnd};

/// Output a check command may leave for judging; the rest is not kept.
const MAX_PROBE_OUTPUT: usize = 64 * 1024;
/// The socket tables a port check reads, both of them.
const SOCKET_TABLES: [&str; 2] = ["/proc/net/tcp", "/proc/net/tcp6"];

/// A look at files under way: the tables read so far, and what is left to read.
#[derive(Debug)]
struct Look {
    agent: usize,
    probe: u64,
    /// For the socket tables: bytes read so far and the paths still to read.
    tables: Option<(Vec<u8>, Vec<&'static str>)>,
}

#[derive(Debug, Default)]
pub(super) struct Probes {
    looks: BTreeMap<FileId, Look>,
    /// Each check command: (agent, probe, its standard output so far).
    running: BTreeMap<ChildId, (usize, u64, Vec<u8>)>,
}

impl Probes {
    pub fn runs(&self, child: ChildId) -> bool {
        self.running.contains_key(&child)
    }

    /// Hands `what` to the driver for agent `agent`'s probe `probe`.
    pub fn start(&mut self, agent: usize, probe: u64, what: Probe, fx: &mut Effects<'_>) {
        match what {
            Probe::Inspect { path, read } => {
                let id = fx.ids.file();
                self.looks.insert(id, Look { agent, probe, tables: None });
                fx.out.push_back(Output::Inspect { id, path, read });
            }
            Probe::SocketTables => {
                let id = fx.ids.file();
                let rest = SOCKET_TABLES[1..].to_vec();
                self.looks.insert(id, Look { agent, probe, tables: Some((Vec::new(), rest)) });
                fx.out.push_back(Output::Inspect { id, path: SOCKET_TABLES[0].to_owned(), read: true });
            }
            Probe::Run { argv, user, .. } => {
                let child = fx.ids.child();
                self.running.insert(child, (agent, probe, Vec::new()));
                // A check runs with nothing on its standard input. One the policy runs as another
                // user gets that user's reset environment, as `sudo -u` would give it (never the
                // node's HOME or variables); one run as the node's own user keeps the node's
                // environment, as it always has. A policy is an operator's, never a client's:
                // nothing a client passed reaches either.
                let env = match user {
                    Some(_) => ChildEnvironment::reset(),
                    None => ChildEnvironment::Inherit { vars: Vec::new() },
                };
                fx.out.push_back(Output::Spawn { child, argv, run_as: user, env, stdin: Vec::new() });
            }
        }
    }

    /// The agent gave up on `probe` (its command ran past its time): the command is killed.
    pub fn stop(&mut self, agent: usize, probe: u64, fx: &mut Effects<'_>) {
        let child = self.running.iter().find(|(_, (a, p, _))| (*a, *p) == (agent, probe)).map(|(c, _)| *c);
        if let Some(child) = child {
            self.running.remove(&child);
            fx.out.push_back(Output::Kill { child });
        }
    }

    /// A check command's output or end; its observation once it ended.
    pub fn on_child(&mut self, child: ChildId, event: ChildEvent) -> Option<(usize, u64, Observation)> {
        let (agent, probe, stdout) = self.running.get_mut(&child)?;
        let end = match event {
            ChildEvent::Output { stderr: false, bytes } => {
                let room = MAX_PROBE_OUTPUT.saturating_sub(stdout.len());
                stdout.extend_from_slice(&bytes[..bytes.len().min(room)]);
                return None;
            }
            ChildEvent::Output { stderr: true, .. } => return None,
            ChildEvent::Exited(ProcessEnd::Exited(code)) => RunEnd::Exited(code),
            ChildEvent::Exited(ProcessEnd::Signalled(signal)) => RunEnd::Signalled(signal),
            ChildEvent::Failed(reason) => RunEnd::NotStarted(reason),
        };
        let (agent, probe, stdout) = (*agent, *probe, std::mem::take(stdout));
        self.running.remove(&child);
        Some((agent, probe, Observation::Ran { end, stdout }))
    }

    /// What the driver found at a path; for the socket tables, the next one is read first.
    pub fn on_inspected(
        &mut self,
        id: FileId,
        facts: Result<Option<FileFacts>, String>,
        fx: &mut Effects<'_>,
    ) -> Option<(usize, u64, Observation)> {
        let look = self.looks.remove(&id)?;
        let Some((mut read, mut rest)) = look.tables else {
            return Some((look.agent, look.probe, Observation::File(facts)));
        };
        match facts {
            Err(e) => return Some((look.agent, look.probe, Observation::Sockets(Err(e)))),
            // A kernel without IPv6 has no tcp6 table: nothing listens there.
            Ok(None) => {}
            Ok(Some(f)) => read.extend(f.content.unwrap_or_default()),
        }
        if rest.is_empty() {
            return Some((look.agent, look.probe, Observation::Sockets(Ok(read))));
        }
        let path = rest.remove(0);
        let next = fx.ids.file();
        self.looks.insert(next, Look { agent: look.agent, probe: look.probe, tables: Some((read, rest)) });
        fx.out.push_back(Output::Inspect { id: next, path: path.to_owned(), read: true });
        None
    }
}
