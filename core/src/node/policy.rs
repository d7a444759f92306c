//! The security-policy roles on a node: a policy server (master or local) on its listener, with
//! its link to a parent, and any number of agents, each on its own link to its server with its
//! own key. Owns the mapping between the roles and the node: tier messages in by the identity
//! each channel authenticated and out to an identity, operators' admin requests and their
//! answers, storing what the server keeps, and an agent's apply (write the file, start the hook,
//! report how it went). The rules themselves are the server's and the agent's.

use std::collections::BTreeMap;
use std::time::Duration;

use super::Effects;
use super::conns::{ConnEvent, ConnLimits, Owner};
use super::exec::ChildEvent;
use super::io::{ChildEnvironment, ChildId, ConnId, Event, FileId, ListenerId, Output, Record};
use super::probes::Probes;
use crate::channel::TrustSet;
use crate::exec::daemon::ProcessEnd;
use crate::identity::{NodeKeys, PublicIdentity};
use crate::machine::Machine;
use crate::policy::agent::{AgentInput, AgentOutput, PolicyAgent};
use crate::policy::alerts::Alert;
use crate::policy::checks::Observation;
use crate::policy::document::{Platform, SignedPolicy, Superseded};
use crate::policy::policy_file::PolicyFile;
use crate::policy::report::Aggregate;
use crate::policy::server::{PolicyServer, ServerInput, ServerOutput, ServerSetup};
use crate::policy::wire::{PolicyMessage, PolicyWire};
use crate::rng::{SeededRng, fork};
use crate::time::{Now, WallClock};
use crate::wire;

/// A policy listener closes a connection silent for at least this long, whatever the window:
/// agents may poll less often than locals sync.
const LISTENER_IDLE_FLOOR: Duration = Duration::from_secs(600);

/// A policy server a node runs.
#[derive(Debug, Clone)]
pub struct PolicyServerRole {
    pub listen: String,
    pub setup: ServerSetup,
    /// Where the parent listens (a local's).
    pub parent_addr: Option<String>,
    /// What the driver kept from before a restart: verified again before use.
    pub stored: Vec<SignedPolicy>,
    /// Versions that lost conflicts, as kept.
    pub superseded: Vec<Superseded>,
    pub latest: Vec<(String, WallClock, Aggregate)>,
    /// The master's history as kept (oldest first, the newest few thousand), so a history
    /// request after a restart still sees what came before it.
    pub history: Vec<(String, WallClock, Aggregate)>,
    /// The alerts the master raised before a restart, as kept.
    pub alerts: Vec<Alert>,
    /// Run for each alert the master raises (argv), the alert as JSON on its stdin; empty for
    /// none.
    pub alert_hook: Vec<String>,
    pub limits: ConnLimits,
}

/// A policy agent a node runs.
#[derive(Debug, Clone)]
pub struct PolicyAgentRole {
    pub name: String,
    pub keys: NodeKeys,
    pub platform: Platform,
    pub server: String,
    pub server_addr: String,
    pub server_identity: PublicIdentity,
    pub poll_interval: Duration,
    /// The effective policy's file, replaced atomically at each apply.
    pub policy_file: String,
    /// Run after each apply (argv), with `COHORT_POLICY_FILE` set; empty for none.
    pub hook: Vec<String>,
    /// Read the distribution and version from the machine (the role is `platform.role`);
    /// otherwise `platform` is taken as declared.
    pub detect_platform: bool,
}

#[derive(Debug)]
struct Server {
    server: PolicyServer,
    listener: ListenerId,
    parent_link: Option<usize>,
    /// Admin requests waiting for the server's answer, and the connection each came on.
    admin: BTreeMap<u64, ConnId>,
    next_request: u64,
    alert_hook: Vec<String>,
    /// Alert hooks running, and the alert each was given.
    alert_hooks: BTreeMap<ChildId, u64>,
}

#[derive(Debug)]
struct Agent {
    agent: PolicyAgent,
    link: usize,
    policy_file: String,
    hook: Vec<String>,
}

/// An apply under way: the file is being written, or the hook started.
#[derive(Debug, Clone, Copy)]
struct Applying {
    agent: usize,
    digest: [u8; 32],
}

#[derive(Debug)]
pub(super) struct PolicyHost {
    server: Option<Server>,
    agents: Vec<Agent>,
    files: BTreeMap<FileId, Applying>,
    hooks: BTreeMap<ChildId, Applying>,
    /// Agents' probes the driver is carrying out: files being looked at, commands running.
    probes: Probes,
}

impl PolicyHost {
    pub fn new(
        now: Now,
        server: Option<PolicyServerRole>,
        agents: Vec<PolicyAgentRole>,
        rng: &mut SeededRng,
        fx: &mut Effects<'_>,
    ) -> PolicyHost {
        let server = server.map(|role| {
            let keys = role.setup.keys.clone();
            let parent = role.setup.parent.clone();
            // A parent answers every sync, so a link that hears nothing for three windows is
            // dead (a peer gone without a reset): it is closed and dialled again. A child or
            // agent that falls silent that long has its connection here closed too.
            let silent_for = role.setup.sync_window * 3;
            let link_limits = ConnLimits { idle: Some(silent_for), ..role.limits };
            let listen_limits = ConnLimits {
                idle: role.limits.idle.or(Some(silent_for.max(LISTENER_IDLE_FLOOR))),
                ..role.limits
            };
            let mut server = PolicyServer::new(now.mono, role.setup, fork(rng));
            server.restore(role.stored, role.superseded, role.latest);
            server.restore_history(role.history);
            server.restore_alerts(role.alerts);
            // The tier's servers and agents, its operators and its viewers: no one else gets a
            // channel.
            let trust: TrustSet =
                server.peers().chain(server.operators()).chain(server.viewers()).copied().collect();
            let listener = fx.conns.listen("policy", role.listen, keys.clone(), trust, listen_limits);
            // Kept open, not only dialled at each sync: the parent asks for a current status
            // over it at any time, and a child it cannot reach is missing from the answer.
            let parent_link = parent.zip(role.parent_addr).map(|((_, identity), addr)| {
                fx.links.add_kept_open(addr, keys.clone(), identity, link_limits)
            });
            Server {
                server,
                listener,
                parent_link,
                admin: BTreeMap::new(),
                next_request: 1,
                alert_hook: role.alert_hook,
                alert_hooks: BTreeMap::new(),
            }
        });
        let agents = agents
            .into_iter()
            .map(|role| {
                // The server answers every poll: three intervals of silence is a dead link.
                let limits = ConnLimits { idle: Some(role.poll_interval * 3), ..ConnLimits::default() };
                let link = fx.links.add(role.server_addr, role.keys.clone(), role.server_identity, limits);
                let agent = PolicyAgent::new(
                    now.mono,
                    role.name,
                    role.keys,
                    role.platform,
                    role.server,
                    role.poll_interval,
                    role.poll_interval / 5,
                    fork(rng),
                    role.detect_platform,
                );
                Agent { agent, link, policy_file: role.policy_file, hook: role.hook }
            })
            .collect();
        let mut host = PolicyHost {
            server,
            agents,
            files: BTreeMap::new(),
            hooks: BTreeMap::new(),
            probes: Probes::default(),
        };
        host.drain(now, fx);
        host
    }

    pub fn owns(&self, owner: Owner) -> bool {
        let server = self.server.as_ref();
        match owner {
            Owner::Listener(l) => server.is_some_and(|s| s.listener == l),
            Owner::Link(i) => {
                server.is_some_and(|s| s.parent_link == Some(i)) || self.agents.iter().any(|a| a.link == i)
            }
            Owner::Dial(_) | Owner::HostChannel(_) => false,
        }
    }

    pub fn server(&self) -> Option<&PolicyServer> {
        self.server.as_ref().map(|s| &s.server)
    }

    pub fn agents(&self) -> impl Iterator<Item = &PolicyAgent> {
        self.agents.iter().map(|a| &a.agent)
    }

    pub fn poll_timeout(&self) -> Option<crate::time::Instant> {
        let server = self.server.as_ref().and_then(|s| s.server.poll_timeout());
        server.into_iter().chain(self.agents.iter().filter_map(|a| a.agent.poll_timeout())).min()
    }

    pub fn handle_timeout(&mut self, now: Now, fx: &mut Effects<'_>) {
        if let Some(s) = &mut self.server
            && s.server.poll_timeout().is_some_and(|t| t <= now.mono)
        {
            s.server.handle(now, ServerInput::Timeout);
        }
        for a in &mut self.agents {
            if a.agent.poll_timeout().is_some_and(|t| t <= now.mono) {
                a.agent.handle(now, AgentInput::Timeout);
            }
        }
        self.drain(now, fx);
    }

    /// A connection event on a listener or link this host owns.
    pub fn on_conn(&mut self, now: Now, event: ConnEvent, fx: &mut Effects<'_>) {
        let ConnEvent::Message { conn, owner, peer, bytes } = event else {
            match (event, &mut self.server) {
                (ConnEvent::Gone { conn, .. }, Some(s)) => s.admin.retain(|_, c| *c != conn),
                (ConnEvent::Established { owner: Owner::Link(link), .. }, Some(s))
                    if s.parent_link == Some(link) =>
                {
                    s.server.handle(now, ServerInput::ParentConnected);
                    self.drain(now, fx);
                }
                _ => {}
            }
            return;
        };
        let size = bytes.len();
        let message = match wire::decode::<PolicyWire>(&bytes) {
            Ok(message) => message,
            Err(e) => return bad_message(fx, conn, format!("undecodable policy message: {e}")),
        };
        let agent = self.agents.iter().position(|a| Owner::Link(a.link) == owner);
        match (message, agent, &mut self.server) {
            (PolicyWire::Tier(message), Some(i), _) => {
                self.agents[i].agent.handle(now, AgentInput::FromServer(Box::new(message)))
            }
            (PolicyWire::Tier(message), None, Some(s)) => {
                s.server.handle(now, ServerInput::Received { from: peer, message, size })
            }
            (PolicyWire::Admin(signed), None, Some(s)) if Owner::Listener(s.listener) == owner => {
                let request = s.next_request;
                s.next_request += 1;
                s.admin.insert(request, conn);
                s.server.handle(now, ServerInput::Admin { request, signed });
            }
            _ => return bad_message(fx, conn, "a policy message on the wrong kind of connection".into()),
        }
        self.drain(now, fx);
    }

    pub fn on_file_written(
        &mut self,
        now: Now,
        id: FileId,
        outcome: Result<(), String>,
        fx: &mut Effects<'_>,
    ) {
        let Some(applying) = self.files.remove(&id) else { return };
        let Some(a) = self.agents.get(applying.agent) else { return };
        let hook = match (outcome, a.hook.split_first()) {
            (Err(e), _) => {
                return self.applied(
                    now,
                    applying,
                    Err(format!("could not write {}: {e}", a.policy_file)),
                    fx,
                );
            }
            (Ok(()), None) => return self.applied(now, applying, Ok(()), fx),
            (Ok(()), Some(_)) => a.hook.clone(),
        };
        let child = fx.ids.child();
        // The operator's own hook, run as the node's user in the node's environment, told which
        // file it is about; no client's variable is ever here.
        let env = ChildEnvironment::Inherit {
            vars: vec![("COHORT_POLICY_FILE".to_owned(), a.policy_file.clone())],
        };
        self.hooks.insert(child, applying);
        fx.out.push_back(Output::Spawn { child, argv: hook, run_as: None, env, stdin: Vec::new() });
    }

    /// Whether `child` is an alert hook; its failure to start, or an exit other than 0, is logged.
    pub fn on_alert_hook(&mut self, child: ChildId, event: &ChildEvent, fx: &mut Effects<'_>) -> bool {
        let Some(server) = &mut self.server else { return false };
        let Some(&alert) = server.alert_hooks.get(&child) else { return false };
        let failed = match event {
            ChildEvent::Output { .. } => return true,
            ChildEvent::Failed(reason) => Some(reason.clone()),
            ChildEvent::Exited(ProcessEnd::Exited(0)) => None,
            ChildEvent::Exited(ProcessEnd::Exited(code)) => Some(format!("it exited with status {code}")),
            ChildEvent::Exited(ProcessEnd::Signalled(signal)) => {
                Some(format!("it was killed by signal {signal}"))
            }
        };
        server.alert_hooks.remove(&child);
        if let Some(reason) = failed {
            fx.out.push_back(Output::Log(Event::AlertHookFailed { alert, reason }));
        }
        true
    }

    /// Whether `child` is one of the agents' check commands.
    pub fn probes(&self, child: ChildId) -> bool {
        self.probes.runs(child)
    }

    /// A check command's output or end.
    pub fn on_probe(&mut self, now: Now, child: ChildId, event: ChildEvent, fx: &mut Effects<'_>) {
        let observed = self.probes.on_child(child, event);
        self.observed(now, observed, fx);
    }

    /// What the driver found at a path a probe asked about.
    pub fn on_inspected(
        &mut self,
        now: Now,
        id: FileId,
        facts: Result<Option<crate::policy::checks::FileFacts>, String>,
        fx: &mut Effects<'_>,
    ) {
        let observed = self.probes.on_inspected(id, facts, fx);
        self.observed(now, observed, fx);
    }

    /// A probe's observation, once complete, to the agent that asked.
    fn observed(&mut self, now: Now, observed: Option<(usize, u64, Observation)>, fx: &mut Effects<'_>) {
        if let Some((agent, probe, seen)) = observed
            && let Some(a) = self.agents.get_mut(agent)
        {
            a.agent.handle(now, AgentInput::Observed { probe, seen });
        }
        self.drain(now, fx);
    }

    /// Whether `child` is one of this host's hooks; its start or failure ends the apply.
    pub fn on_hook(
        &mut self,
        now: Now,
        child: ChildId,
        started: Result<(), String>,
        fx: &mut Effects<'_>,
    ) -> bool {
        let Some(applying) = self.hooks.remove(&child) else { return false };
        let program =
            self.agents.get(applying.agent).and_then(|a| a.hook.first().cloned()).unwrap_or_default();
        let outcome = started.map_err(|e| format!("the policy hook `{program}` did not start: {e}"));
        self.applied(now, applying, outcome, fx);
        true
    }

    fn applied(&mut self, now: Now, applying: Applying, outcome: Result<(), String>, fx: &mut Effects<'_>) {
        let Some(a) = self.agents.get_mut(applying.agent) else { return };
        let agent = a.agent.name().to_owned();
        let event = match &outcome {
            Ok(()) => Event::PolicyApplied { agent, digest: hex::encode(&applying.digest[..4]) },
            Err(error) => Event::PolicyApplyFailed { agent, error: error.clone() },
        };
        fx.out.push_back(Output::Log(event));
        a.agent.handle(now, AgentInput::Applied { digest: applying.digest, outcome });
        self.drain(now, fx);
    }

    /// Carries out what the server and agents asked for.
    fn drain(&mut self, now: Now, fx: &mut Effects<'_>) {
        if let Some(s) = &mut self.server {
            while let Some(out) = s.server.poll_output() {
                match out {
                    ServerOutput::Send { to, name, message } => {
                        let bytes = encode(&PolicyWire::Tier(message));
                        let parent =
                            s.parent_link.filter(|l| fx.links.peer(*l).is_some_and(|p| p.node_id() == to));
                        match (parent, fx.conns.find(s.listener, &to)) {
                            (Some(link), _) => fx.links.send(now, link, bytes, fx.conns),
                            (None, Some(conn)) => fx.conns.send(conn, &bytes),
                            (None, None) => fx.out.push_back(Output::Log(Event::Undeliverable { to: name })),
                        }
                    }
                    ServerOutput::Stored(policy) => {
                        let (id, version) = (policy.body.id.clone(), policy.body.version);
                        fx.persist_then(Record::Policy(policy), super::AfterPersist::Nothing);
                        fx.out.push_back(Output::Log(Event::PolicyStored { id, version }));
                    }
                    ServerOutput::Superseded(lost) => {
                        let event = Event::PolicySuperseded {
                            id: lost.policy.id.clone(),
                            lost: lost.policy.rank().label(),
                            by: lost.by.label(),
                        };
                        fx.persist_then(Record::PolicySuperseded(lost), super::AfterPersist::Nothing);
                        fx.out.push_back(Output::Log(event));
                    }
                    ServerOutput::Alert(alert) => {
                        // One line, so a hook may read it with `read` or append it to a log.
                        let stdin = format!("{}\n", alert.to_json()).into_bytes();
                        let (id, kind, detail) = (alert.id, alert.condition.kind(), alert.detail.clone());
                        fx.persist_then(Record::PolicyAlert(alert), super::AfterPersist::Nothing);
                        fx.out.push_back(Output::Log(Event::PolicyAlert { id, kind, detail }));
                        if !s.alert_hook.is_empty() {
                            let child = fx.ids.child();
                            s.alert_hooks.insert(child, id);
                            let argv = s.alert_hook.clone();
                            // The operator's alert hook, as the node's user in its environment.
                            let env = ChildEnvironment::Inherit { vars: Vec::new() };
                            fx.out.push_back(Output::Spawn { child, argv, run_as: None, env, stdin });
                        }
                    }
                    ServerOutput::History { from, at, aggregate } => fx.persist_then(
                        Record::PolicyHistory { from, at, aggregate },
                        super::AfterPersist::Nothing,
                    ),
                    ServerOutput::AdminReply { request, reply } => {
                        if let Some(conn) = s.admin.remove(&request) {
                            fx.conns.send(conn, &encode(&PolicyWire::AdminReply(reply)));
                        }
                    }
                    ServerOutput::Rejected(rejection) => {
                        fx.out.push_back(Output::Log(Event::PolicyRejected(rejection)))
                    }
                }
            }
        }
        // Applies whose file could not even be made: reported failed once the agents are drained.
        let mut unwritable = Vec::new();
        for (i, a) in self.agents.iter_mut().enumerate() {
            while let Some(out) = a.agent.poll_output() {
                match out {
                    AgentOutput::Report { report, .. } => {
                        let message = PolicyWire::Tier(PolicyMessage::Poll(*report));
                        fx.links.send(now, a.link, encode(&message), fx.conns)
                    }
                    AgentOutput::Apply(policy) => {
                        let applying = Applying { agent: i, digest: policy.digest };
                        match PolicyFile::of(&policy, a.agent.name()).render() {
                            Ok(text) => {
                                let id = fx.ids.file();
                                self.files.insert(id, applying);
                                let (path, contents) = (a.policy_file.clone(), text.into_bytes());
                                fx.out.push_back(Output::WriteFile { id, path, contents });
                            }
                            Err(e) => unwritable.push((applying, e.to_string())),
                        }
                    }
                    AgentOutput::Probe { probe, what } => self.probes.start(i, probe, what, fx),
                    AgentOutput::StopProbe { probe } => self.probes.stop(i, probe, fx),
                    AgentOutput::ServerUnreachable { server, unanswered, last_heard } => {
                        let agent = a.agent.name().to_owned();
                        let event = Event::PolicyServerUnreachable { agent, server, unanswered, last_heard };
                        fx.out.push_back(Output::Log(event));
                    }
                    AgentOutput::ServerReachable { server, unanswered } => {
                        let agent = a.agent.name().to_owned();
                        fx.out.push_back(Output::Log(Event::PolicyServerReachable {
                            agent,
                            server,
                            unanswered,
                        }));
                    }
                }
            }
        }
        for (applying, error) in unwritable {
            self.applied(now, applying, Err(error), fx);
        }
    }
}

fn encode(message: &PolicyWire) -> Vec<u8> {
    // Every policy message type encodes; an error here is a bug, and an empty message is then
    // refused by the peer's decoder rather than taking this node down.
    wire::encode(message).unwrap_or_default()
}

fn bad_message(fx: &mut Effects<'_>, conn: ConnId, error: String) {
    fx.out.push_back(Output::Log(Event::BadMessage { conn, error }));
    fx.conns.close(conn);
}
