//! The exec daemon of one managed host: checks a request's ticket, authenticator, clock skew,
//! replay cache and ACL; writes the audit record durably and has the collector acknowledge it
//! before anything runs; then runs argv (the driver spawns it, no shell, in the run-as user's
//! reset environment with the variables the ACL let through) and streams output back, or has the
//! driver place a copy's files. A gateway's channel carries many sessions, each under the
//! gateway's number for it; the daemon numbers them itself for everything else. It never spawns
//! or writes without an acknowledged audit record, never acts on a refused request, never lets
//! the node's own environment reach a command, and audits every refusal and every end.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use super::acl::Acl;
use super::audit::{AuditDecision, AuditRecord};
use super::task::{CopyFile, DataDigest, Task};
use super::ticket::{TicketError, TicketKey};
pub use super::wire::{ExecRequest, HostEvent, HostWire};
use crate::child_env::ChildEnvironment;

mod checks;
mod output_cap;

use crate::identity::{NodeKeys, PublicIdentity};
use crate::machine::Machine;
use crate::signed::Signed;
use crate::time::{Instant, Now, WallClock};
pub use checks::Refusal;
use output_cap::OutputCap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessEnd {
    Exited(i32),
    Signalled(i32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonInput {
    /// A gateway's message on connection `conn`. A `Start` opens a session under a number the
    /// channel does not carry yet; a `Cancel` names one it does.
    Wire {
        conn: u64,
        message: HostWire,
    },
    /// The gateway's connection `conn` closed: whatever runs for it is stopped.
    Gone {
        conn: u64,
    },
    /// The local audit write `token` is durable.
    AuditPersisted {
        token: u64,
    },
    /// The collector has the record `token` durably.
    AuditAcked {
        token: u64,
    },
    Output {
        session: u64,
        stderr: bool,
        bytes: Vec<u8>,
    },
    Exited {
        session: u64,
        end: ProcessEnd,
    },
    /// The process could not be started.
    SpawnFailed {
        session: u64,
        reason: String,
    },
    /// The driver placed (or failed to place) the file at `path` for a copy.
    Placed {
        session: u64,
        path: String,
        outcome: Result<(), String>,
    },
    /// The installed configuration's ACL, and whether it lists this host under this daemon's
    /// key: a host it does not list runs nothing. Sessions already running keep going.
    Directory {
        acl: Acl,
        listed: bool,
    },
    Timeout,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonOutput {
    /// Write the record to local storage; answer `AuditPersisted`.
    PersistAudit { token: u64, record: AuditRecord },
    /// Send the record, signed with this host's key, to the collector; answer `AuditAcked`
    /// when it acknowledges.
    SubmitAudit { token: u64, record: Signed<AuditRecord> },
    Spawn {
        session: u64,
        run_as: String,
        argv: Vec<String>,
        /// Always reset: the run-as user's, with the variables the client passed (each one its
        /// ACL allows: a request passing another is refused before this).
        env: ChildEnvironment,
        /// What the command reads on its standard input; then end of file.
        stdin: Vec<u8>,
    },
    /// Write `file` whole at its path, owned by `owner`, replacing what is there atomically
    /// and following no symbolic link; answer `Placed`.
    PlaceFile { session: u64, owner: String, file: CopyFile },
    /// Kill the session's whole process group.
    Kill { session: u64 },
    /// Send `event` on the gateway's channel `to`.
    Reply { session: u64, to: Stream, event: HostEvent },
}

/// Where a session's events go: the gateway's channel, and the gateway's number for the session
/// on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stream {
    pub conn: u64,
    pub session: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DaemonSettings {
    pub max_skew: Duration,
    /// How long to wait for the collector's acknowledgement before refusing to run.
    pub audit_timeout: Duration,
    pub max_replay_entries: usize,
    /// Sessions one gateway channel may carry at once; a Start beyond them is refused
    /// unaudited, as a connection past a listener's limit is.
    pub max_sessions_per_channel: usize,
}

impl Default for DaemonSettings {
    fn default() -> Self {
        DaemonSettings {
            max_skew: Duration::from_secs(120),
            audit_timeout: Duration::from_secs(5),
            max_replay_entries: 100_000,
            max_sessions_per_channel: 256,
        }
    }
}

#[derive(Debug)]
enum Phase {
    /// Waiting for the audit record (`allowed` or not) to be durable here and at the collector.
    Auditing {
        token: u64,
        allowed: bool,
        reason: Option<Refusal>,
        deadline: Instant,
        persisted: bool,
    },
    Running {
        cancelled: Option<String>,
    },
    /// A copy's files are being placed.
    Placing {
        cancelled: Option<String>,
        pending: usize,
        placed: usize,
        /// `path: reason` of each file that could not be placed.
        failed: Vec<String>,
    },
}

#[derive(Debug)]
struct Session {
    to: Stream,
    principal: String,
    run_as: String,
    /// What the audit records name: the command and the digests of the data it carried.
    argv: Vec<String>,
    data: Vec<DataDigest>,
    /// Held until it starts.
    task: Option<Task>,
    run_id: [u8; 16],
    phase: Phase,
    output: OutputCap,
}

/// One managed host's exec daemon.
#[derive(Debug)]
pub struct ExecDaemon {
    host: String,
    keys: NodeKeys,
    kdc: PublicIdentity,
    /// The key this host shares with `kdc`, derived at the first ticket it is shown.
    ticket_key: Option<Result<TicketKey, TicketError>>,
    acl: Acl,
    /// Whether the installed configuration lists this host (under this daemon's key).
    listed: bool,
    settings: DaemonSettings,
    /// Authenticators made before this daemon started are refused: the replay cache is not
    /// kept across restarts, so nothing it might have seen can be replayed.
    started: WallClock,
    /// (principal, nonce) → when it may be forgotten.
    replay: BTreeMap<(String, [u8; 16]), WallClock>,
    sessions: BTreeMap<u64, Session>,
    next_session: u64,
    /// Audit records written locally but not yet handed to the collector, by token.
    unsent: BTreeMap<u64, AuditRecord>,
    next_token: u64,
    outputs: VecDeque<DaemonOutput>,
    denials: u64,
    /// Gateway messages out of protocol (a Start under a number its channel already carries).
    protocol_errors: u64,
}

impl ExecDaemon {
    /// The daemon of `host`, taking tickets sealed by `kdc` only.
    pub fn new(
        host: String,
        keys: NodeKeys,
        kdc: PublicIdentity,
        acl: Acl,
        settings: DaemonSettings,
        started: WallClock,
    ) -> Self {
        ExecDaemon {
            host,
            keys,
            kdc,
            ticket_key: None,
            acl,
            listed: true,
            settings,
            started,
            replay: BTreeMap::new(),
            sessions: BTreeMap::new(),
            next_session: 0,
            unsent: BTreeMap::new(),
            next_token: 0,
            outputs: VecDeque::new(),
            denials: 0,
            protocol_errors: 0,
        }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// The key this daemon proves: the configuration must list its host under it.
    pub fn identity(&self) -> PublicIdentity {
        self.keys.public()
    }

    pub fn denials(&self) -> u64 {
        self.denials
    }

    pub fn protocol_errors(&self) -> u64 {
        self.protocol_errors
    }

    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    fn record(&self, session: &Session, wall: WallClock, decision: AuditDecision) -> AuditRecord {
        AuditRecord {
            host: self.host.clone(),
            principal: session.principal.clone(),
            run_as: session.run_as.clone(),
            argv: session.argv.clone(),
            at: wall,
            decision,
            run_id: session.run_id,
            data: session.data.clone(),
        }
    }

    fn audit(&mut self, record: AuditRecord) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        self.unsent.insert(token, record.clone());
        self.outputs.push_back(DaemonOutput::PersistAudit { token, record });
        token
    }

    /// The session the gateway's channel `conn` carries under its number `session`.
    fn session_on(&self, to: Stream) -> Option<u64> {
        self.sessions.iter().find(|(_, s)| s.to == to).map(|(id, _)| *id)
    }

    fn reply(&mut self, session: u64, to: Stream, event: HostEvent) {
        self.outputs.push_back(DaemonOutput::Reply { session, to, event });
    }

    /// A gateway's Start: acknowledged at once, then checked and audited.
    fn start(&mut self, now: Instant, wall: WallClock, to: Stream, request: ExecRequest) {
        if let Some(id) = self.session_on(to) {
            // A number the channel already carries: a gateway out of protocol. What runs under
            // it is stopped rather than a second command started.
            self.protocol_errors += 1;
            return self.cancel(id, wall, Refusal::OutOfOrder.to_string());
        }
        let carried = self.sessions.values().filter(|s| s.to.conn == to.conn).count();
        if carried >= self.settings.max_sessions_per_channel {
            self.denials += 1;
            let reason = format!(
                "the channel already carries {carried} sessions, the most this host takes on one; retry"
            );
            return self.reply(u64::MAX, to, HostEvent::Denied { reason });
        }
        let id = self.next_session;
        self.next_session += 1;
        self.reply(id, to, HostEvent::Received);
        self.handle_request(now, id, to, request, wall);
    }

    fn handle_request(
        &mut self,
        now: Instant,
        session_id: u64,
        to: Stream,
        request: ExecRequest,
        wall: WallClock,
    ) {
        let (principal, verdict) = self.verify(&request, wall);
        let mut run_id = [0u8; 16];
        run_id[..8].copy_from_slice(&session_id.to_be_bytes());
        run_id[8..].copy_from_slice(&wall.0.to_be_bytes());
        let session = Session {
            to,
            principal,
            run_as: request.run_as,
            argv: request.task.argv().to_vec(),
            data: request.task.digests(),
            task: Some(request.task),
            run_id,
            phase: Phase::Running { cancelled: None },
            output: OutputCap::new(request.max_output),
        };
        let (decision, allowed, reason) = match verdict {
            Ok(()) => (AuditDecision::Run, true, None),
            Err(refusal) => {
                self.denials += 1;
                (AuditDecision::Denied { reason: refusal.to_string() }, false, Some(refusal))
            }
        };
        let record = self.record(&session, wall, decision);
        let token = self.audit(record);
        let deadline = now + self.settings.audit_timeout;
        let phase = Phase::Auditing { token, allowed, reason, deadline, persisted: false };
        self.sessions.insert(session_id, Session { phase, ..session });
    }

    fn find_auditing(&mut self, token: u64) -> Option<(u64, &mut Session)> {
        self.sessions
            .iter_mut()
            .find(|(_, s)| matches!(s.phase, Phase::Auditing { token: t, .. } if t == token))
            .map(|(id, s)| (*id, s))
    }

    /// Durable here: now it goes to the collector.
    fn audit_persisted(&mut self, token: u64) {
        if let Some((_, session)) = self.find_auditing(token)
            && let Phase::Auditing { persisted, .. } = &mut session.phase
        {
            *persisted = true;
        }
        // A record that cannot be signed is never acknowledged: the audit timeout then refuses
        // the run, which is what an unaudited run deserves.
        if let Some(record) = self.unsent.remove(&token)
            && let Ok(record) = Signed::sign(record, &self.keys)
        {
            self.outputs.push_back(DaemonOutput::SubmitAudit { token, record });
        }
    }

    fn audit_acked(&mut self, token: u64) {
        let Some((id, session)) = self.find_auditing(token) else { return };
        let to = session.to;
        let Phase::Auditing { allowed, reason, persisted, .. } = &session.phase else { return };
        if !persisted {
            return;
        }
        if *allowed {
            let run_as = session.run_as.clone();
            match session.task.take() {
                Some(Task::Run { argv, stdin, env }) => {
                    session.phase = Phase::Running { cancelled: None };
                    let env = ChildEnvironment::Reset { vars: env };
                    self.outputs.push_back(DaemonOutput::Spawn { session: id, run_as, argv, env, stdin });
                }
                Some(Task::Copy { files }) => {
                    session.phase = Phase::Placing {
                        cancelled: None,
                        pending: files.len(),
                        placed: 0,
                        failed: Vec::new(),
                    };
                    for file in files {
                        let owner = run_as.clone();
                        self.outputs.push_back(DaemonOutput::PlaceFile { session: id, owner, file });
                    }
                }
                None => return,
            }
            self.reply(id, to, HostEvent::Started);
        } else {
            let reason = reason.as_ref().map(Refusal::to_string).unwrap_or_default();
            self.sessions.remove(&id);
            self.reply(id, to, HostEvent::Denied { reason });
        }
    }

    fn ended(&mut self, id: u64, wall: WallClock, end: ProcessEnd) {
        let Some(mut session) = self.sessions.remove(&id) else { return };
        if let Some(event) = session.output.report(true) {
            self.reply(id, session.to, event);
        }
        let Phase::Running { cancelled } = &session.phase else {
            self.sessions.insert(id, session);
            return;
        };
        let (event, outcome) = match (cancelled, end) {
            (Some(reason), _) => (HostEvent::Killed { reason: reason.clone() }, format!("killed: {reason}")),
            (None, ProcessEnd::Exited(code)) => (HostEvent::Exited { code }, format!("exit {code}")),
            (None, ProcessEnd::Signalled(signal)) => {
                (HostEvent::Signalled { signal }, format!("signal {signal}"))
            }
        };
        self.finish(id, &session, wall, event, outcome);
    }

    /// Audits how the session ended, tells the gateway, and closes it.
    fn finish(&mut self, id: u64, session: &Session, wall: WallClock, event: HostEvent, outcome: String) {
        let record = self.record(session, wall, AuditDecision::Ended { outcome });
        self.audit(record);
        self.reply(id, session.to, event);
    }

    /// One file of a copy is placed or not; when the last is, the copy ends: exit 0 if every
    /// file is in place, else 1 with a line on standard error per file that is not.
    fn placed(&mut self, id: u64, wall: WallClock, path: String, outcome: Result<(), String>) {
        let Some(session) = self.sessions.get_mut(&id) else { return };
        let Phase::Placing { pending, placed, failed, .. } = &mut session.phase else { return };
        *pending = pending.saturating_sub(1);
        match outcome {
            Ok(()) => *placed += 1,
            Err(reason) => failed.push(format!("{path}: {reason}")),
        }
        if *pending > 0 {
            return;
        }
        let Some(mut session) = self.sessions.remove(&id) else { return };
        let done = std::mem::replace(&mut session.phase, Phase::Running { cancelled: None });
        let Phase::Placing { cancelled, placed, failed, .. } = done else { return };
        let (event, outcome) = match cancelled {
            // Files already placed stay: each was written whole, and the record says so.
            Some(reason) => (
                HostEvent::Killed { reason: reason.clone() },
                format!("killed: {reason} (after {placed} files placed)"),
            ),
            None if failed.is_empty() => (HostEvent::Exited { code: 0 }, format!("copied {placed} files")),
            None => {
                let text: String = failed.iter().map(|f| format!("cohort copy: {f}\n")).collect();
                let outcome = format!("copy failed: {} ({placed} files placed)", failed.join("; "));
                let bytes = session.output.admit(true, text.into_bytes());
                self.reply(id, session.to, HostEvent::Output { stderr: true, bytes });
                (HostEvent::Exited { code: 1 }, outcome)
            }
        };
        self.finish(id, &session, wall, event, outcome);
    }

    fn cancel(&mut self, id: u64, wall: WallClock, reason: String) {
        let Some(session) = self.sessions.get_mut(&id) else { return };
        match &mut session.phase {
            Phase::Running { cancelled } => {
                if cancelled.is_none() {
                    *cancelled = Some(reason);
                    self.outputs.push_back(DaemonOutput::Kill { session: id });
                }
            }
            // A file write is not interrupted midway: the copy ends when the writes answer.
            Phase::Placing { cancelled, .. } => {
                cancelled.get_or_insert(reason);
            }
            Phase::Auditing { .. } => {
                // Nothing has run; record why it never will, and say so.
                let session = self.sessions.remove(&id);
                if let Some(session) = session {
                    let outcome = format!("not run: cancelled ({reason})");
                    let record = self.record(&session, wall, AuditDecision::Ended { outcome });
                    self.audit(record);
                    self.reply(id, session.to, HostEvent::Killed { reason });
                }
            }
        }
    }
}

impl Machine for ExecDaemon {
    type Input = DaemonInput;
    type Output = DaemonOutput;

    fn handle(&mut self, now: Now, input: DaemonInput) {
        let Now { mono: now, wall } = now;
        match input {
            DaemonInput::Wire { conn, message } => match message {
                HostWire::Start { session, request } => {
                    self.start(now, wall, Stream { conn, session }, *request)
                }
                // A Cancel that crossed the session's end on the wire finds nothing to stop.
                HostWire::Cancel { session, reason } => {
                    if let Some(id) = self.session_on(Stream { conn, session }) {
                        self.cancel(id, wall, reason);
                    }
                }
            },
            DaemonInput::Gone { conn } => {
                let carried: Vec<u64> =
                    self.sessions.iter().filter(|(_, s)| s.to.conn == conn).map(|(id, _)| *id).collect();
                for id in carried {
                    self.cancel(id, wall, "the gateway went away".to_owned());
                }
            }
            DaemonInput::AuditPersisted { token } => self.audit_persisted(token),
            DaemonInput::AuditAcked { token } => self.audit_acked(token),
            DaemonInput::Output { session: id, stderr, bytes } => {
                if let Some(session) = self.sessions.get_mut(&id) {
                    let bytes = session.output.admit(stderr, bytes);
                    let report = session.output.report(false);
                    let to = session.to;
                    if !bytes.is_empty() {
                        self.reply(id, to, HostEvent::Output { stderr, bytes });
                    }
                    if let Some(event) = report {
                        self.reply(id, to, event);
                    }
                }
            }
            DaemonInput::Exited { session, end } => self.ended(session, wall, end),
            DaemonInput::SpawnFailed { session, reason } => {
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.phase = Phase::Running { cancelled: Some(format!("could not start: {reason}")) };
                }
                self.ended(session, wall, ProcessEnd::Exited(127));
            }
            DaemonInput::Placed { session, path, outcome } => self.placed(session, wall, path, outcome),
            DaemonInput::Directory { acl, listed } => {
                self.acl = acl;
                self.listed = listed;
            }
            DaemonInput::Timeout => {
                let expired: Vec<u64> = self
                    .sessions
                    .iter()
                    .filter(|(_, s)| matches!(s.phase, Phase::Auditing { deadline, .. } if now >= deadline))
                    .map(|(id, _)| *id)
                    .collect();
                for id in expired {
                    let Some(session) = self.sessions.remove(&id) else { continue };
                    let reason = Refusal::AuditUnacknowledged.to_string();
                    self.denials += 1;
                    let record =
                        self.record(&session, wall, AuditDecision::Denied { reason: reason.clone() });
                    self.audit(record);
                    self.reply(id, session.to, HostEvent::Denied { reason });
                }
            }
        }
    }

    fn poll_output(&mut self) -> Option<DaemonOutput> {
        self.outputs.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.sessions
            .values()
            .filter_map(|s| match s.phase {
                Phase::Auditing { deadline, .. } => Some(deadline),
                Phase::Running { .. } | Phase::Placing { .. } => None,
            })
            .min()
    }
}
