//! The gateway: the client's one door. It keeps no user state between requests: a login is
//! passed to the KDC and the credential handed back; an exec request carries its credential, which
//! the gateway checks, then for each host it gets a service ticket, makes an authenticator, and
//! runs the parallel execution utility over the hosts, streaming each host's result back as it
//! completes. When the run ends every trace of it (credential, session keys, output) is dropped.
//! It never acts without a valid credential presented over the channel it was issued to. Node
//! sets (`h[01-50]`, `@web`) are expanded here, from the groups of the installed configuration.
//! Its own refusals are audited in records it signs.

use std::collections::{BTreeMap, VecDeque};

use rand_core::RngCore;
use zeroize::Zeroizing;

use super::audit::{AuditDecision, AuditRecord};
use super::kdc::Kdc;
use super::nodeset;
use super::parallel::{AlarmSchedule, ParallelInput, ParallelOutput, ParallelRun, SessionEnd, SessionResult};
use super::ticket::{Authenticator, Credential, request_digest};
pub use super::wire::{ClientEvent, ClientRequest, ExecCommand, HostOutcome, HostResult};
use super::wire::{ExecRequest, HostEvent};
use crate::identity::{NodeKeys, PublicIdentity};
use crate::machine::Machine;
use crate::rng::SeededRng;
use crate::signed::Signed;
use crate::time::{Instant, Now, WallClock};

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
    /// The `group.NAME` settings of the installed configuration, for `@NAME` in node sets;
    /// replaces the groups before.
    Groups(BTreeMap<String, String>),
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
    Timeout,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayOutput {
    ToClient {
        client: u64,
        event: ClientEvent,
    },
    /// Connect to `host` (pinning `identity`) and send it `request` as session `session`.
    HostStart {
        session: u64,
        host: String,
        identity: PublicIdentity,
        request: ExecRequest,
    },
    HostCancel {
        session: u64,
        reason: String,
    },
    /// The session's result is final: its connection to the host may go, whether or not the
    /// host said its last word (a kill it never confirmed).
    HostDone {
        session: u64,
    },
    CloseClient {
        client: u64,
    },
    /// A refusal at the gateway (failed login, bad credential) for the audit trail, signed with
    /// the gateway's key under the host name [`GATEWAY_AUDIT_NAME`].
    Audit(Signed<AuditRecord>),
}

#[derive(Debug)]
struct Run {
    started: Instant,
    parallel: ParallelRun,
    /// Session id per host index, once started.
    sessions: BTreeMap<usize, u64>,
}

/// What a running exec was granted with; dropped when the run ends.
#[derive(Debug, Clone)]
struct RunGrant {
    credential: Signed<Credential>,
    client_key: [u8; 32],
    run_as: String,
    argv: Vec<String>,
    max_output: u64,
}

/// What the gateway holds right now: all zero between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeldState {
    pub runs: usize,
    pub sessions: usize,
    pub credentials: usize,
}

/// The gateway role, with the KDC it asks for credentials and tickets.
#[derive(Debug)]
pub struct Gateway {
    kdc: Kdc,
    /// Signs the gateway's own audit records.
    keys: NodeKeys,
    groups: BTreeMap<String, String>,
    rng: SeededRng,
    runs: BTreeMap<u64, Run>,
    /// session id → (client, host index).
    session_index: BTreeMap<u64, (u64, usize)>,
    /// The credential of each running exec, dropped when the run ends.
    credentials: BTreeMap<u64, RunGrant>,
    next_session: u64,
    outputs: VecDeque<GatewayOutput>,
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Gateway {
    pub fn new(kdc: Kdc, keys: NodeKeys, rng: SeededRng) -> Gateway {
        Gateway {
            kdc,
            keys,
            groups: BTreeMap::new(),
            rng,
            runs: BTreeMap::new(),
            session_index: BTreeMap::new(),
            credentials: BTreeMap::new(),
            next_session: 1,
            outputs: VecDeque::new(),
        }
    }

    pub fn held_state(&self) -> HeldState {
        HeldState {
            runs: self.runs.len(),
            sessions: self.session_index.len(),
            credentials: self.credentials.len(),
        }
    }

    pub fn kdc(&self) -> &Kdc {
        &self.kdc
    }

    /// The KDC, for drivers that also serve it to other gateways, and for tests.
    pub fn kdc_mut(&mut self) -> &mut Kdc {
        &mut self.kdc
    }

    /// Refuses a client and audits the refusal under the principal it claimed.
    fn refuse_audited(
        &mut self,
        wall: WallClock,
        client: u64,
        principal: &str,
        argv: Vec<String>,
        reason: String,
    ) {
        self.audit_refusal(wall, principal, argv, reason.clone());
        self.refuse(client, reason);
    }

    fn audit_refusal(&mut self, wall: WallClock, principal: &str, argv: Vec<String>, reason: String) {
        let mut run_id = [0u8; 16];
        self.rng.fill_bytes(&mut run_id);
        let record = AuditRecord {
            host: GATEWAY_AUDIT_NAME.into(),
            principal: principal.chars().take(128).collect(),
            run_as: String::new(),
            argv,
            at: wall,
            decision: AuditDecision::Denied { reason },
            run_id,
        };
        // An encoding failure here would be a bug in the record type, not an input; the refusal
        // itself still reaches the client.
        if let Ok(signed) = Signed::sign(record, &self.keys) {
            self.outputs.push_back(GatewayOutput::Audit(signed));
        }
    }

    fn refuse(&mut self, client: u64, reason: String) {
        self.outputs.push_back(GatewayOutput::ToClient { client, event: ClientEvent::Refused { reason } });
        self.outputs.push_back(GatewayOutput::CloseClient { client });
    }

    fn handle_client(
        &mut self,
        now: Instant,
        wall: WallClock,
        client: u64,
        client_key: [u8; 32],
        request: ClientRequest,
    ) {
        match request {
            ClientRequest::Login { principal, password } => {
                let password = Zeroizing::new(password);
                match self.kdc.login(wall, &principal, &password, client_key) {
                    Ok(credential) => {
                        let event = ClientEvent::LoggedIn { credential };
                        self.outputs.push_back(GatewayOutput::ToClient { client, event });
                        self.outputs.push_back(GatewayOutput::CloseClient { client });
                    }
                    Err(e) => {
                        // The trail keeps the precise reason; the client learns only that it failed.
                        self.audit_refusal(wall, &principal, vec!["(login)".into()], e.to_string());
                        self.refuse(client, e.public_message());
                    }
                }
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
        if self.runs.contains_key(&client) {
            return self.refuse(client, "one run per connection".into());
        }
        if let Err(e) = Kdc::check_credential(&self.kdc.public(), wall, &command.credential, &client_key) {
            let principal = command.credential.body.principal.clone();
            return self.refuse_audited(
                wall,
                client,
                &principal,
                command.argv,
                format!("credential refused: {e}"),
            );
        }
        let groups = &self.groups;
        let lookup = |name: &str| groups.get(name).cloned();
        let mut hosts = Vec::new();
        for pattern in &command.hosts {
            match nodeset::expand(pattern, &lookup) {
                Ok(expanded) => hosts.extend(expanded),
                Err(e) => return self.refuse(client, format!("bad host list: {e}")),
            }
            if hosts.len() > nodeset::MAX_HOSTS {
                let reason = format!("bad host list: more than {} hosts", nodeset::MAX_HOSTS);
                return self.refuse(client, reason);
            }
        }
        let command = ExecCommand { hosts, ..command };
        if command.hosts.is_empty() || command.argv.is_empty() {
            return self.refuse(client, "no hosts or no command".into());
        }
        if command.run_as.is_empty() {
            return self.refuse(client, "no run-as user".into());
        }
        let fanout = usize::try_from(command.fanout).unwrap_or(MAX_FANOUT).clamp(1, MAX_FANOUT);
        let alarms = AlarmSchedule {
            t1: std::time::Duration::from_millis(command.t1_ms.max(1)),
            t2: std::time::Duration::from_millis(command.t2_ms.max(1)),
            t3: std::time::Duration::from_millis(command.t3_ms.max(1)),
        };
        let count = u32::try_from(command.hosts.len()).unwrap_or(u32::MAX);
        self.outputs
            .push_back(GatewayOutput::ToClient { client, event: ClientEvent::Accepted { hosts: count } });
        // Each stream's cap, within the gateway's ceiling (a result must fit one message).
        let ceiling = MAX_OUTPUT_PER_HOST as u64;
        let max_output = command.max_output.clamp(MIN_OUTPUT_PER_HOST, ceiling);
        let grant = RunGrant {
            credential: command.credential,
            client_key,
            run_as: command.run_as,
            argv: command.argv,
            max_output,
        };
        self.credentials.insert(client, grant);
        let kept = usize::try_from(max_output).unwrap_or(MAX_OUTPUT_PER_HOST);
        let parallel = ParallelRun::new(now, command.hosts, fanout, alarms, kept);
        self.runs.insert(client, Run { started: now, parallel, sessions: BTreeMap::new() });
        self.drive(now, wall, client);
    }

    /// Drains one run's parallel utility: starts sessions, sends kills, reports results.
    fn drive(&mut self, now: Instant, wall: WallClock, client: u64) {
        loop {
            let Some(run) = self.runs.get_mut(&client) else { return };
            let Some(output) = run.parallel.poll_output() else { return };
            match output {
                ParallelOutput::Start { index, host } => self.start_session(now, wall, client, index, host),
                ParallelOutput::Kill { index, reason } => {
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

    fn start_session(&mut self, now: Instant, wall: WallClock, client: u64, index: usize, host: String) {
        let Some(RunGrant { credential, client_key, run_as, argv, max_output }) =
            self.credentials.get(&client).cloned()
        else {
            return;
        };
        // `%h` stands for the host's name, as in ClusterShell; the authenticator covers the
        // substituted command, so each host runs exactly what it was sent.
        let argv: Vec<String> = argv.iter().map(|a| a.replace("%h", &host)).collect();
        let session = self.next_session;
        self.next_session += 1;
        if let Some(run) = self.runs.get_mut(&client) {
            run.sessions.insert(index, session);
        }
        self.session_index.insert(session, (client, index));
        let identity = self.kdc.host(&host).copied();
        let issued = self.kdc.issue_ticket(wall, &credential, &client_key, &host);
        let (identity, issued) = match (identity, issued) {
            (Some(identity), Ok(issued)) => (identity, issued),
            (_, Err(e)) => {
                return self.session_ended(now, wall, session, SessionEnd::Failed { reason: e.to_string() });
            }
            (None, Ok(_)) => {
                let reason = format!("no host `{host}` is registered");
                return self.session_ended(now, wall, session, SessionEnd::Failed { reason });
            }
        };
        let mut nonce = [0u8; 16];
        self.rng.fill_bytes(&mut nonce);
        let authenticator = Authenticator {
            principal: credential.body.principal.clone(),
            timestamp: wall,
            nonce,
            request_digest: request_digest(&host, &run_as, &argv),
        };
        // The session key lives only as long as this call: it makes one authenticator.
        let sealed = match authenticator.seal(&issued.session_key, &host, &mut self.rng) {
            Ok(sealed) => sealed,
            Err(e) => {
                return self.session_ended(now, wall, session, SessionEnd::Failed { reason: e.to_string() });
            }
        };
        let request = ExecRequest { ticket: issued.ticket, authenticator: sealed, run_as, argv, max_output };
        self.outputs.push_back(GatewayOutput::HostStart { session, host, identity, request });
    }

    fn session_ended(&mut self, now: Instant, wall: WallClock, session: u64, end: SessionEnd) {
        let Some(&(client, index)) = self.session_index.get(&session) else { return };
        if let Some(run) = self.runs.get_mut(&client) {
            run.parallel.handle(Now::new(now, wall), ParallelInput::Ended { index, end });
        }
        self.drive(now, wall, client);
    }

    fn handle_host(&mut self, now: Instant, wall: WallClock, session: u64, event: HostEvent) {
        let Some(&(client, index)) = self.session_index.get(&session) else { return };
        let end = match event {
            HostEvent::Started => return,
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
            GatewayInput::Groups(groups) => self.groups = groups,
            GatewayInput::Host { session, event } => self.handle_host(now, wall, session, event),
            GatewayInput::HostLost { session, reason } => {
                self.session_ended(now, wall, session, SessionEnd::Unreachable { reason })
            }
            GatewayInput::Timeout => {
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
        self.runs.values().filter_map(|r| r.parallel.poll_timeout()).min()
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
