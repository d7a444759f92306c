//! The gateway: the client's one door. It keeps no user state between requests and holds no
//! password hash and no signing key: a login is passed to the KDC (its own role, asked over a
//! channel per request, [`GatewayOutput::AskKdc`]) and the credential handed back; an exec request
//! carries its credential, which the gateway checks against the KDC's public key, then it asks
//! the KDC for the hosts' service tickets, makes an authenticator per host, and runs the parallel
//! execution utility over the hosts, streaming each host's result back as it completes. When the
//! run ends every trace of it (credential, tickets, session keys, output) is dropped. It never
//! acts without a valid credential presented over the channel it was issued to. Node sets
//! (`h[01-50]`, `@web`) are expanded here, from the groups of the installed configuration, and
//! the principal's ceilings (fan-out, T1+T2, runs at once) and the gateway's own are applied
//! here, from the ACL the configuration holds: a client asking for more gets the ceiling and is
//! told so. Its own refusals and lowered requests are audited in records it signs.

use std::collections::{BTreeMap, VecDeque};

use super::audit::{AuditDecision, AuditRecord};
use super::directory::{ExecDirectory, ManagedHost};
use super::kdc::Kdc;
use super::nodeset;
use super::parallel::{AlarmSchedule, ParallelInput, ParallelOutput, ParallelRun, SessionEnd, SessionResult};
use super::task::Task;
use super::ticket::Credential;
use super::wire::{CONNECT_TIMEOUT_MS, ExecRequest, HostEvent, KdcReply, KdcRequest};
pub use super::wire::{Ceiling, ClientEvent, ClientRequest, ExecCommand, HostOutcome, HostResult, Lowered};

mod limits;
mod refusals;
mod tickets;

use crate::identity::{NodeKeys, PublicIdentity};
use crate::machine::Machine;
use crate::rng::SeededRng;
use crate::signed::Signed;
use crate::time::{Instant, Now, WallClock};
use limits::{grant_within, lowered_text};
use refusals::Subject;
use tickets::HeldTicket;

/// The largest fanout a client may ask for.
pub const MAX_FANOUT: usize = 1024;
/// The host name the gateway's own audit records carry; the collector knows the gateway's key by
/// it.
pub const GATEWAY_AUDIT_NAME: &str = "gateway";
/// The smallest cap a client may ask for.
pub const MIN_OUTPUT_PER_HOST: u64 = 1024;
/// Output kept per host and stream, at most.
pub const MAX_OUTPUT_PER_HOST: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayInput {
    /// A request from client `client`, whose channel static key is `client_key`.
    Client {
        client: u64,
        client_key: [u8; 32],
        request: ClientRequest,
    },
    ClientGone {
        client: u64,
    },
    /// The hosts, ACL, limits and groups of the installed configuration; replaces the
    /// directory before (runs in progress keep their grants).
    Directory(Box<ExecDirectory>),
    /// A host's report for session `session`.
    Host {
        session: u64,
        event: HostEvent,
    },
    /// The host for `session` could not be reached or dropped the connection.
    HostLost {
        session: u64,
        reason: String,
    },
    /// The KDC's answer to [`GatewayOutput::AskKdc`] `ask`.
    KdcReplied {
        ask: u64,
        reply: KdcReply,
    },
    /// The KDC could not be reached for `ask`, or closed without answering.
    KdcLost {
        ask: u64,
        reason: String,
    },
    Timeout,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayOutput {
    ToClient {
        client: u64,
        event: ClientEvent,
    },
    /// Send `host` (at its address, pinning its key) `request` as session `session`, on a
    /// channel to it that is open or opened for it.
    HostStart {
        session: u64,
        host: ManagedHost,
        request: ExecRequest,
    },
    HostCancel {
        session: u64,
        reason: String,
    },
    /// The session's result is final, whether or not the host said its last word (a kill it
    /// never confirmed, a request it never took): nothing more of it is wanted.
    HostDone {
        session: u64,
    },
    CloseClient {
        client: u64,
    },
    /// A refusal at the gateway (failed login, bad credential, a limit reached) or a request
    /// lowered to its ceilings, for the audit trail, signed with the gateway's key under the
    /// host name [`GATEWAY_AUDIT_NAME`].
    Audit(Signed<AuditRecord>),
    /// Open a channel to the KDC, send `request`, and answer with `KdcReplied` or `KdcLost`.
    /// `ask` numbers come from the same counter as sessions, so they never collide.
    AskKdc {
        ask: u64,
        request: KdcRequest,
    },
}

#[derive(Debug)]
struct Run {
    started: Instant,
    parallel: ParallelRun,
    /// Session id per host index, once started.
    sessions: BTreeMap<usize, u64>,
}

/// What a running exec was granted with; dropped when the run ends.
#[derive(Debug)]
struct RunGrant {
    credential: Signed<Credential>,
    client_key: [u8; 32],
    run_as: String,
    task: Task,
    max_output: u64,
    connect_timeout: std::time::Duration,
    /// Every host of the run, by index.
    hosts: Vec<String>,
    /// Tickets granted and not yet used, by host; and the KDC's refusal for a host it would
    /// not grant.
    tickets: BTreeMap<String, HeldTicket>,
    refused: BTreeMap<String, String>,
    /// Sessions the parallel utility started that wait for their ticket.
    waiting: Vec<(usize, String)>,
    /// The KDC is being asked for this run's tickets.
    asking: bool,
    /// How many tickets beyond the waiting sessions' one question asks for.
    ticket_batch: usize,
}

/// What the gateway holds right now: all zero between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeldState {
    pub runs: usize,
    pub sessions: usize,
    pub credentials: usize,
    /// Tickets (and their session keys) held for runs in progress.
    pub tickets: usize,
    /// Requests to the KDC awaiting their answer.
    pub asks: usize,
}

/// What a question to the KDC was for.
#[derive(Debug)]
enum Ask {
    Login { client: u64, principal: String },
    Tickets { client: u64 },
}

/// The gateway role. It asks the KDC (by its public key) for credentials and tickets.
#[derive(Debug)]
pub struct Gateway {
    /// The KDC whose signature a credential must carry.
    kdc: PublicIdentity,
    /// Signs the gateway's own audit records.
    keys: NodeKeys,
    directory: ExecDirectory,
    rng: SeededRng,
    runs: BTreeMap<u64, Run>,
    /// session id → (client, host index).
    session_index: BTreeMap<u64, (u64, usize)>,
    /// The credential of each running exec, dropped when the run ends.
    credentials: BTreeMap<u64, RunGrant>,
    asks: BTreeMap<u64, Ask>,
    /// Sessions sent to a host that has not said it has them yet, with when to give up.
    connecting: BTreeMap<u64, Instant>,
    next_session: u64,
    outputs: VecDeque<GatewayOutput>,
    /// Sessions the alarm handler ended (T1+T2, or silent past T1), since start.
    alarm_kills: u64,
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Gateway {
    /// A gateway that takes credentials signed by `kdc`.
    pub fn new(kdc: PublicIdentity, keys: NodeKeys, rng: SeededRng) -> Gateway {
        Gateway {
            kdc,
            keys,
            directory: ExecDirectory::default(),
            rng,
            runs: BTreeMap::new(),
            session_index: BTreeMap::new(),
            credentials: BTreeMap::new(),
            asks: BTreeMap::new(),
            connecting: BTreeMap::new(),
            next_session: 1,
            outputs: VecDeque::new(),
            alarm_kills: 0,
        }
    }

    /// Sessions the alarm handler ended since start.
    pub fn alarm_kills(&self) -> u64 {
        self.alarm_kills
    }

    pub fn held_state(&self) -> HeldState {
        HeldState {
            runs: self.runs.len(),
            sessions: self.session_index.len(),
            credentials: self.credentials.len(),
            tickets: self.credentials.values().map(|g| g.tickets.len()).sum(),
            asks: self.asks.len(),
        }
    }

    fn ask_kdc(&mut self, ask: Ask, request: KdcRequest) {
        let id = self.next_session;
        self.next_session += 1;
        self.asks.insert(id, ask);
        self.outputs.push_back(GatewayOutput::AskKdc { ask: id, request });
    }

    fn handle_client(
        &mut self,
        now: Instant,
        wall: WallClock,
        client: u64,
        client_key: [u8; 32],
        request: ClientRequest,
    ) {
        let busy = self.runs.contains_key(&client)
            || self.asks.values().any(|a| matches!(a, Ask::Login { client: c, .. } if *c == client));
        if busy {
            return self.refuse(client, "one request per connection".into());
        }
        match request {
            ClientRequest::Login { principal, password } => {
                let principal: String = principal.chars().take(128).collect();
                let ask = Ask::Login { client, principal: principal.clone() };
                self.ask_kdc(ask, KdcRequest::Login { principal, password, client_key });
            }
            ClientRequest::Exec(command) => self.start_exec(now, wall, client, client_key, *command),
        }
    }

    fn start_exec(
        &mut self,
        now: Instant,
        wall: WallClock,
        client: u64,
        client_key: [u8; 32],
        command: ExecCommand,
    ) {
        if let Err(e) = Kdc::check_credential(&self.kdc, wall, &command.credential, &client_key) {
            let principal = command.credential.body.principal.clone();
            let reason = format!("credential refused: {e}");
            return self.refuse_audited(wall, client, &principal, Subject::of(&command.task), reason);
        }
        let hosts = match self.expand(&command.hosts) {
            Ok(hosts) => hosts,
            Err(reason) => return self.refuse(client, format!("bad host list: {reason}")),
        };
        let excluded = match self.expand(&command.exclude) {
            Ok(excluded) => excluded,
            Err(reason) => return self.refuse(client, format!("bad exclusion list: {reason}")),
        };
        // Each host once, in the order first named, less the excluded ones.
        let mut seen = std::collections::BTreeSet::new();
        let excluded: std::collections::BTreeSet<String> = excluded.into_iter().collect();
        let hosts: Vec<String> =
            hosts.into_iter().filter(|h| !excluded.contains(h) && seen.insert(h.clone())).collect();
        let command = ExecCommand { hosts, ..command };
        if command.hosts.is_empty() {
            return self.refuse(client, "no hosts".into());
        }
        if let Err(e) = command.task.check() {
            return self.refuse(client, e.to_string());
        }
        if command.run_as.is_empty() {
            return self.refuse(client, "no run-as user".into());
        }
        let principal = command.credential.body.principal.clone();
        if let Err(reason) = self.admit(&principal, &command.task) {
            return self.refuse_audited(wall, client, &principal, Subject::of(&command.task), reason);
        }
        let limits = self.directory.acl.limits(&principal);
        let (granted, lowered) = grant_within(&command, limits);
        let fanout = usize::try_from(granted.fanout).unwrap_or(MAX_FANOUT).clamp(1, MAX_FANOUT);
        let alarms = AlarmSchedule {
            t1: std::time::Duration::from_millis(granted.t1_ms.max(1)),
            t2: std::time::Duration::from_millis(granted.t2_ms.max(1)),
            t3: std::time::Duration::from_millis(command.t3_ms.max(1)),
        };
        let count = u32::try_from(command.hosts.len()).unwrap_or(u32::MAX);
        self.outputs
            .push_back(GatewayOutput::ToClient { client, event: ClientEvent::Accepted { hosts: count } });
        if !lowered.is_empty() {
            let decision = AuditDecision::Lowered { ceilings: lowered_text(&lowered) };
            self.audit_own(wall, &principal, command.run_as.clone(), Subject::of(&command.task), decision);
            let event = ClientEvent::Lowered(Lowered { principal: principal.clone(), ceilings: lowered });
            self.outputs.push_back(GatewayOutput::ToClient { client, event });
        }
        // Each stream's cap, within the gateway's ceiling (a result must fit one message).
        let ceiling = MAX_OUTPUT_PER_HOST as u64;
        let max_output = command.max_output.clamp(MIN_OUTPUT_PER_HOST, ceiling);
        let grant = RunGrant {
            credential: command.credential,
            client_key,
            run_as: command.run_as,
            task: command.task,
            max_output,
            connect_timeout: std::time::Duration::from_millis(
                command.connect_timeout_ms.clamp(*CONNECT_TIMEOUT_MS.start(), *CONNECT_TIMEOUT_MS.end()),
            ),
            hosts: command.hosts.clone(),
            tickets: BTreeMap::new(),
            refused: BTreeMap::new(),
            waiting: Vec::new(),
            asking: false,
            ticket_batch: fanout.clamp(16, 512),
        };
        self.credentials.insert(client, grant);
        let kept = usize::try_from(max_output).unwrap_or(MAX_OUTPUT_PER_HOST);
        let parallel = ParallelRun::new(now, command.hosts, fanout, alarms, kept);
        self.runs.insert(client, Run { started: now, parallel, sessions: BTreeMap::new() });
        self.drive(now, wall, client);
    }

    /// The installed hosts, ACL, limits and groups this gateway works from.
    pub fn directory(&self) -> &ExecDirectory {
        &self.directory
    }

    /// Every host the node sets name, with `@groups` from the installed configuration.
    pub fn expand(&self, patterns: &[String]) -> Result<Vec<String>, String> {
        let lookup = |name: &str| self.directory.groups.get(name).cloned();
        let mut hosts = Vec::new();
        for pattern in patterns {
            hosts.extend(nodeset::expand(pattern, &lookup).map_err(|e| e.to_string())?);
            if hosts.len() > nodeset::MAX_HOSTS {
                return Err(format!("more than {} hosts", nodeset::MAX_HOSTS));
            }
        }
        Ok(hosts)
    }

    /// Drains one run's parallel utility: starts sessions, sends kills, reports results.
    fn drive(&mut self, now: Instant, wall: WallClock, client: u64) {
        loop {
            let Some(run) = self.runs.get_mut(&client) else { return };
            let Some(output) = run.parallel.poll_output() else { return };
            match output {
                ParallelOutput::Start { index, host } => self.start_session(now, wall, client, index, host),
                ParallelOutput::Kill { index, reason } => {
                    self.alarm_kills += 1;
                    if let Some(session) = self.runs.get(&client).and_then(|r| r.sessions.get(&index)) {
                        let reason = reason.to_string();
                        self.outputs.push_back(GatewayOutput::HostCancel { session: *session, reason });
                    }
                }
                ParallelOutput::Finished { index } => {
                    let Some(run) = self.runs.get(&client) else { return };
                    if let Some(result) = run.parallel.result(index) {
                        let event = ClientEvent::Host(host_result(result, run.started));
                        self.outputs.push_back(GatewayOutput::ToClient { client, event });
                    }
                    if let Some(session) = run.sessions.get(&index).copied() {
                        self.session_index.remove(&session);
                        self.outputs.push_back(GatewayOutput::HostDone { session });
                    }
                }
                ParallelOutput::AllDone => {
                    self.outputs.push_back(GatewayOutput::ToClient { client, event: ClientEvent::Finished });
                    self.outputs.push_back(GatewayOutput::CloseClient { client });
                    self.forget(client);
                    return;
                }
            }
        }
    }

    fn session_ended(&mut self, now: Instant, wall: WallClock, session: u64, end: SessionEnd) {
        self.connecting.remove(&session);
        let Some(&(client, index)) = self.session_index.get(&session) else { return };
        if let Some(run) = self.runs.get_mut(&client) {
            run.parallel.handle(Now::new(now, wall), ParallelInput::Ended { index, end });
        }
        self.drive(now, wall, client);
    }

    fn handle_host(&mut self, now: Instant, wall: WallClock, session: u64, event: HostEvent) {
        self.connecting.remove(&session);
        let Some(&(client, index)) = self.session_index.get(&session) else { return };
        let end = match event {
            // The host has it (the connect timeout ended above), or it runs.
            HostEvent::Received | HostEvent::Started => return,
            HostEvent::Dropped { stdout, stderr } => {
                if let Some(run) = self.runs.get_mut(&client) {
                    let bytes = stdout.saturating_add(stderr);
                    run.parallel.handle(Now::new(now, wall), ParallelInput::Dropped { index, bytes });
                }
                return;
            }
            HostEvent::Output { stderr, bytes } => {
                if let Some(run) = self.runs.get_mut(&client) {
                    run.parallel.handle(Now::new(now, wall), ParallelInput::Output { index, stderr, bytes });
                }
                return;
            }
            HostEvent::Exited { code } => SessionEnd::Exited { code },
            HostEvent::Signalled { signal } => SessionEnd::Signalled { signal },
            HostEvent::Denied { reason } => SessionEnd::Denied { reason },
            HostEvent::Killed { reason } => SessionEnd::Cancelled { reason },
        };
        self.session_ended(now, wall, session, end);
    }

    /// Drops everything about a client's run.
    fn forget(&mut self, client: u64) {
        if let Some(run) = self.runs.remove(&client) {
            for session in run.sessions.values() {
                self.session_index.remove(session);
            }
        }
        self.credentials.remove(&client);
        self.connecting.retain(|s, _| self.session_index.contains_key(s));
        // An answer still on its way for this client finds nothing to act on.
        self.asks.retain(
            |_, a| !matches!(a, Ask::Login { client: c, .. } | Ask::Tickets { client: c } if *c == client),
        );
    }
}

impl Machine for Gateway {
    type Input = GatewayInput;
    type Output = GatewayOutput;

    fn handle(&mut self, now: Now, input: GatewayInput) {
        let Now { mono: now, wall } = now;
        match input {
            GatewayInput::Client { client, client_key, request } => {
                self.handle_client(now, wall, client, client_key, request)
            }
            GatewayInput::ClientGone { client } => {
                // The client went away: cancel what runs on its behalf, then forget it.
                if let Some(run) = self.runs.get(&client) {
                    for session in run.sessions.values().filter(|s| self.session_index.contains_key(s)) {
                        let reason = "the client went away".to_owned();
                        self.outputs.push_back(GatewayOutput::HostCancel { session: *session, reason });
                    }
                }
                self.forget(client);
            }
            GatewayInput::Directory(directory) => self.directory = *directory,
            GatewayInput::Host { session, event } => self.handle_host(now, wall, session, event),
            GatewayInput::HostLost { session, reason } => {
                self.session_ended(now, wall, session, SessionEnd::Unreachable { reason })
            }
            GatewayInput::KdcReplied { ask, reply } => self.handle_kdc_reply(now, wall, ask, Ok(reply)),
            GatewayInput::KdcLost { ask, reason } => self.handle_kdc_reply(now, wall, ask, Err(reason)),
            GatewayInput::Timeout => {
                let silent: Vec<u64> =
                    self.connecting.iter().filter(|(_, at)| **at <= now).map(|(s, _)| *s).collect();
                for session in silent {
                    // The host never took it: give up on it apart from the command's own time.
                    self.outputs.push_back(GatewayOutput::HostDone { session });
                    let reason = "the host did not take the request within the connect timeout".to_owned();
                    self.session_ended(now, wall, session, SessionEnd::Unreachable { reason });
                }
                let due: Vec<u64> = self
                    .runs
                    .iter()
                    .filter(|(_, r)| r.parallel.poll_timeout().is_some_and(|t| t <= now))
                    .map(|(c, _)| *c)
                    .collect();
                for client in due {
                    if let Some(run) = self.runs.get_mut(&client) {
                        run.parallel.handle(Now::new(now, wall), ParallelInput::Timeout);
                    }
                    self.drive(now, wall, client);
                }
            }
        }
    }

    fn poll_output(&mut self) -> Option<GatewayOutput> {
        self.outputs.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let connect = self.connecting.values().min().copied();
        self.runs.values().filter_map(|r| r.parallel.poll_timeout()).chain(connect).min()
    }
}

fn host_result(result: &SessionResult, run_started: Instant) -> HostResult {
    let outcome = match &result.end {
        SessionEnd::Exited { code } => HostOutcome::Exited(*code),
        SessionEnd::Signalled { signal } => HostOutcome::Signalled(*signal),
        SessionEnd::Killed(kill) => HostOutcome::KilledByAlarm(kill.to_string()),
        SessionEnd::Denied { reason } => HostOutcome::Denied(reason.clone()),
        SessionEnd::Unreachable { reason } => HostOutcome::Unreachable(reason.clone()),
        SessionEnd::Cancelled { reason } => HostOutcome::Failed(format!("killed: {reason}")),
        SessionEnd::Failed { reason } => HostOutcome::Failed(reason.clone()),
    };
    HostResult {
        host: result.host.clone(),
        outcome,
        stdout: result.stdout.clone(),
        stderr: result.stderr.clone(),
        cut_bytes: result.cut,
        started_ms: result.started.map(|s| millis(s - run_started)),
        ended_ms: millis(result.ended - run_started),
    }
}
