//! The node: the one machine a process runs, whatever roles it hosts (as quinn-proto's
//! `Endpoint` owns its connections). It owns a Noise channel per connection, admission limits,
//! outbound links with reconnect backoff, and delivery of every message to the role that owns its
//! listener or link, with the identity the channel authenticated: a role never trusts a name
//! written inside a message for who sent it. Roles reply to an identity, and the node finds the
//! channel.
//!
//! The node never touches the operating system. A driver feeds it what it observed as
//! [`Input`]s and carries out its [`Output`]s:
//!
//! ```no_run
//! # use cohort_core::node::{Input, Node, Output};
//! # use cohort_core::{Machine, Now};
//! # fn read_clocks() -> Now { Now::ZERO }
//! # fn wait_for_io_until(_: Option<cohort_core::Instant>) -> Option<Input> { None }
//! # fn carry_out(_: Output) -> Option<Input> { None }
//! # fn drive(mut node: Node) {
//! loop {
//!     // Carry out every output; some are answered at once (a persist made durable).
//!     while let Some(output) = node.poll_output() {
//!         if let Some(answer) = carry_out(output) {
//!             node.handle(read_clocks(), answer);
//!         }
//!     }
//!     // Sleep until something happens or the node's next deadline.
//!     match wait_for_io_until(node.poll_timeout()) {
//!         Some(input) => node.handle(read_clocks(), input),
//!         None => node.handle(read_clocks(), Input::Timeout),
//!     }
//! }
//! # }
//! ```
//!
//! While a [`Output::Persist`] is unanswered the node yields only further `Persist` outputs
//! (in the order it made them), never anything else: nothing that follows a record reaches the
//! network, a file or a child before the record is durable (raft-rs's `Ready` discipline). A
//! driver may so gather every record the node has ready, make them durable in one write (group
//! commit), and then answer each with [`Input::Persisted`]; one that answers each record as it
//! comes is just as correct. Records are never reordered among themselves.

mod backoff;
mod conns;
mod exec;
mod io;
mod links;
mod lookup;
mod member;
mod metrics;
mod policy;
mod probes;
mod trace;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

pub use backoff::Backoff;
pub use conns::ConnLimits;
pub use exec::{AuditLinkRole, ExecHostRole, GatewayRole, KdcRole, PolicyMaster, WebRole};
pub use io::{
    AuditRange, AuditReadId, AuditRows, ChildId, ConnId, Event, FileId, Input, Level, ListenerId, Output,
    PersistId, Record, RunningWork,
};
pub use lookup::{LocalRequest, parse_request};
pub use member::MemberRole;
pub use metrics::{ExecMetrics, MemberMetrics, NodeMetrics, PolicyMetrics};
pub use policy::{PolicyAgentRole, PolicyServerRole};

use crate::exec::audit::AuditCollector;
use crate::exec::daemon::ExecDaemon;
use crate::exec::directory::ExecDirectory;
use crate::exec::gateway::Gateway;
use crate::identity::NodeKeys;
use crate::machine::Machine;
use crate::member::{Member, PersistToken};
use crate::policy::agent::PolicyAgent;
use crate::policy::server::PolicyServer;
use crate::rng::{SeededRng, fork};
use crate::time::{Instant, Now};
use conns::{ConnEvent, Connections, Owner};
use exec::{ChildEvent, ExecHost, ExecRoles};
use links::Links;
use member::MemberHost;
use policy::PolicyHost;

/// The roles a node runs, and the key it presents where a role has none of its own.
#[derive(Debug)]
pub struct NodeSetup {
    pub keys: NodeKeys,
    pub member: Option<MemberRole>,
    pub gateway: Option<GatewayRole>,
    /// The KDC, with its own key (never the node's or the gateway's).
    pub kdc: Option<KdcRole>,
    pub exec_hosts: Vec<ExecHostRole>,
    /// Where this node's exec hosts send their audit records.
    pub audit_link: Option<AuditLinkRole>,
    /// The exec roles' hosts, ACL and limits until the member role installs a configuration
    /// (a node without the member role keeps these).
    pub exec_directory: ExecDirectory,
    pub policy_server: Option<PolicyServerRole>,
    pub policy_agents: Vec<PolicyAgentRole>,
}

impl NodeSetup {
    /// A node that runs nothing yet.
    pub fn new(keys: NodeKeys) -> NodeSetup {
        NodeSetup {
            keys,
            member: None,
            gateway: None,
            kdc: None,
            exec_hosts: Vec::new(),
            audit_link: None,
            exec_directory: ExecDirectory::default(),
            policy_server: None,
            policy_agents: Vec::new(),
        }
    }
}

/// What follows when a record is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterPersist {
    Nothing,
    Member(PersistToken),
    Chain(u64),
    LocalAudit {
        host: usize,
        token: u64,
    },
    /// The KDC's answer on `conn` may go now that its principal write is durable.
    KdcAnswer(ConnId),
}

/// Ids the node hands out for what it asks the driver to do.
#[derive(Debug, Default)]
struct Ids {
    persist: u64,
    file: u64,
    child: u64,
}

impl Ids {
    fn persist(&mut self) -> PersistId {
        self.persist += 1;
        PersistId(self.persist)
    }

    fn file(&mut self) -> FileId {
        self.file += 1;
        FileId(self.file)
    }

    fn child(&mut self) -> ChildId {
        self.child += 1;
        ChildId(self.child)
    }
}

/// What a role may do to the node while it handles an input.
struct Effects<'a> {
    conns: &'a mut Connections,
    links: &'a mut Links,
    out: &'a mut VecDeque<Output>,
    ids: &'a mut Ids,
    after: &'a mut BTreeMap<PersistId, AfterPersist>,
}

impl Effects<'_> {
    fn persist_then(&mut self, record: Record, after: AfterPersist) {
        let id = self.ids.persist();
        self.after.insert(id, after);
        self.out.push_back(Output::Persist { id, record });
    }

    fn log(&mut self, event: Event) {
        self.out.push_back(Output::Log(event));
    }
}

/// The roles, apart from the node's plumbing, so each can be lent with the plumbing at once.
#[derive(Debug)]
struct Roles {
    member: Option<MemberHost>,
    exec: ExecHost,
    policy: PolicyHost,
}

/// One process's machine. See the module docs.
#[derive(Debug)]
pub struct Node {
    conns: Connections,
    links: Links,
    roles: Roles,
    ids: Ids,
    after: BTreeMap<PersistId, AfterPersist>,
    outputs: VecDeque<Output>,
    /// Persists handed out and not yet answered: only further records leave until they are.
    unanswered: BTreeSet<PersistId>,
    /// Since [`Input::Drain`]: no new exec work is taken.
    draining: bool,
}

impl Node {
    /// Starts the roles of `setup`; the first outputs ask for the sockets.
    pub fn new(now: Now, setup: NodeSetup, mut rng: SeededRng) -> Node {
        let mut conns = Connections::new(fork(&mut rng));
        let mut links = Links::new(fork(&mut rng));
        let mut ids = Ids::default();
        let mut after = BTreeMap::new();
        let mut outputs = VecDeque::new();
        let mut fx = Effects {
            conns: &mut conns,
            links: &mut links,
            out: &mut outputs,
            ids: &mut ids,
            after: &mut after,
        };
        let member =
            setup.member.map(|role| MemberHost::new(now, role, setup.keys.clone(), fork(&mut rng), &mut fx));
        let roles = ExecRoles {
            gateway: setup.gateway,
            kdc: setup.kdc,
            hosts: setup.exec_hosts,
            audit: setup.audit_link,
            directory: setup.exec_directory,
        };
        let exec = ExecHost::new(now, roles, &setup.keys, &mut rng, &mut fx);
        let policy = PolicyHost::new(now, setup.policy_server, setup.policy_agents, &mut rng, &mut fx);
        let roles = Roles { member, exec, policy };
        let mut node =
            Node { conns, links, roles, ids, after, outputs, unanswered: BTreeSet::new(), draining: false };
        node.settle(now);
        node
    }

    pub fn member(&self) -> Option<&Member> {
        self.roles.member.as_ref().map(MemberHost::member)
    }

    pub fn gateway(&self) -> Option<&Gateway> {
        self.roles.exec.gateway()
    }

    pub fn collector(&self) -> Option<&AuditCollector> {
        self.roles.exec.collector()
    }

    pub fn kdc(&self) -> Option<&crate::exec::kdc::Kdc> {
        self.roles.exec.kdc()
    }

    pub fn exec_daemons(&self) -> impl Iterator<Item = &ExecDaemon> {
        self.roles.exec.daemons()
    }

    /// The policy server this node runs, if any.
    pub fn policy_server(&self) -> Option<&PolicyServer> {
        self.roles.policy.server()
    }

    pub fn policy_agents(&self) -> impl Iterator<Item = &PolicyAgent> {
        self.roles.policy.agents()
    }

    /// Whether a drain asked for by [`Input::Drain`] is over: no exec run, session, process or
    /// file placement is left, every audit record has reached the collector, and every record
    /// handed out is durable. False before a drain.
    pub fn is_drained(&self) -> bool {
        self.draining && self.unanswered.is_empty() && self.roles.exec.is_idle(&self.links)
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.conns.open()
    }

    /// Lends the roles and the node's plumbing to `f`.
    fn with_roles(&mut self, f: impl FnOnce(&mut Roles, &mut Effects<'_>)) {
        let Node { conns, links, roles, ids, after, outputs, .. } = self;
        f(roles, &mut Effects { conns, links, out: outputs, ids, after });
    }

    /// Runs connection events through the roles until nothing moves, opens links that have
    /// something to send, and hands a newly installed configuration's exec directory to the
    /// exec roles.
    fn settle(&mut self, now: Now) {
        loop {
            self.with_roles(|roles, fx| {
                if let Some((settings, operators)) =
                    roles.member.as_mut().and_then(MemberHost::take_installed_settings)
                {
                    let (mut directory, errors) = ExecDirectory::from_settings(&settings);
                    directory.operators = operators;
                    for e in errors {
                        fx.log(Event::BadSetting { error: e.to_string() });
                    }
                    roles.exec.set_directory(now, directory, fx);
                }
            });
            self.links.dial_due(now, &mut self.conns);
            while let Some(out) = self.conns.poll_output() {
                self.outputs.push_back(out);
            }
            let Some(event) = self.conns.poll_event() else { return };
            if let Some(log) = self.links.on_event(now, &event) {
                self.outputs.push_back(log);
            }
            let owner = match &event {
                ConnEvent::Established { owner, .. }
                | ConnEvent::Message { owner, .. }
                | ConnEvent::Gone { owner, .. }
                | ConnEvent::Drained { owner, .. } => *owner,
            };
            self.with_roles(|roles, fx| match owner {
                _ if roles.member.as_ref().is_some_and(|m| m.owns(owner)) => {
                    if let Some(m) = roles.member.as_mut() {
                        m.on_conn(now, event, fx);
                    }
                }
                _ if roles.exec.owns(owner) => roles.exec.on_conn(now, event, fx),
                _ if roles.policy.owns(owner) => roles.policy.on_conn(now, event, fx),
                _ => {}
            });
        }
    }

    /// Whether `conn` is a local lookup connection.
    fn is_local(&self, conn: ConnId) -> bool {
        self.roles.member.as_ref().is_some_and(|m| m.owns_local(conn))
    }

    fn on_child(&mut self, now: Now, child: ChildId, event: ChildEvent) {
        self.with_roles(|roles, fx| {
            // A policy check's command, a policy hook, or else an exec session's process.
            if roles.policy.probes(child) {
                return roles.policy.on_probe(now, child, event, fx);
            }
            if roles.policy.on_alert_hook(child, &event, fx) {
                return;
            }
            let hook_failed = match &event {
                ChildEvent::Failed(reason) => Some(Err(reason.clone())),
                ChildEvent::Output { .. } | ChildEvent::Exited(_) => None,
            };
            if !roles.exec.on_child(now, child, event, fx)
                && let Some(outcome) = hook_failed
            {
                roles.policy.on_hook(now, child, outcome, fx);
            }
        });
    }
}

impl Machine for Node {
    type Input = Input;
    type Output = Output;

    fn handle(&mut self, now: Now, input: Input) {
        match input {
            // A local listener's connections carry no channel: they go to the lookup service.
            Input::Accepted { listener, conn } if listener.is_local() => self.with_roles(|roles, fx| {
                match roles.member.as_mut().filter(|m| m.owns_local_listener(listener)) {
                    Some(m) => m.on_local_accepted(conn, fx),
                    None => fx.out.push_back(Output::Close { conn }),
                }
            }),
            Input::Received { conn, bytes } if self.is_local(conn) => self.with_roles(|roles, fx| {
                if let Some(m) = roles.member.as_mut() {
                    m.on_local_bytes(now, conn, &bytes, fx);
                }
            }),
            Input::Written { conn, .. } if self.is_local(conn) => {}
            Input::Closed { conn, .. } if self.is_local(conn) => {
                if let Some(m) = self.roles.member.as_mut() {
                    m.on_local_closed(conn);
                }
            }
            Input::Accepted { listener, conn }
                if self.draining && self.roles.exec.owns(Owner::Listener(listener)) =>
            {
                self.outputs.push_back(Output::Close { conn })
            }
            Input::Accepted { listener, conn } => self.conns.accepted(now, listener, conn),
            Input::Received { conn, bytes } => self.conns.received(now, conn, bytes),
            Input::Written { conn, bytes } => self.conns.written(conn, bytes),
            Input::Closed { conn, error } => self.conns.closed(now, conn, error),
            Input::Persisted { id } => {
                self.unanswered.remove(&id);
                let after = self.after.remove(&id);
                self.with_roles(|roles, fx| match after {
                    Some(AfterPersist::Member(token)) => {
                        if let Some(m) = roles.member.as_mut() {
                            m.on_persisted(now, token, fx);
                        }
                    }
                    Some(
                        after @ (AfterPersist::Chain(_)
                        | AfterPersist::LocalAudit { .. }
                        | AfterPersist::KdcAnswer(_)),
                    ) => roles.exec.on_persisted(now, after, fx),
                    Some(AfterPersist::Nothing) | None => {}
                });
            }
            Input::FileWritten { id, outcome } => self.with_roles(|roles, fx| {
                if roles.exec.places(id) {
                    roles.exec.on_file_written(now, id, outcome, fx)
                } else {
                    roles.policy.on_file_written(now, id, outcome, fx)
                }
            }),
            Input::ChildStarted { child } => self.with_roles(|roles, fx| {
                roles.policy.on_hook(now, child, Ok(()), fx);
            }),
            Input::ChildFailed { child, reason } => self.on_child(now, child, ChildEvent::Failed(reason)),
            Input::ChildOutput { child, stderr, bytes } => {
                self.on_child(now, child, ChildEvent::Output { stderr, bytes })
            }
            Input::ChildExited { child, end } => self.on_child(now, child, ChildEvent::Exited(end)),
            Input::WebRequest { request, web } => self.with_roles(|roles, fx| {
                let member = roles.member.as_ref().map(MemberHost::member);
                roles.exec.on_web_request(now, request, *web, member, fx)
            }),
            Input::WebSent { request, bytes } => self.roles.exec.on_web_sent(request, bytes),
            Input::Inspected { id, facts } => {
                self.with_roles(|roles, fx| roles.policy.on_inspected(now, id, facts, fx))
            }
            Input::AuditRead { read, rows } => {
                self.with_roles(|roles, fx| roles.exec.on_audit_read(now, read, rows, fx))
            }
            Input::WebGone { request } => {
                self.with_roles(|roles, fx| roles.exec.on_web_gone(now, request, fx))
            }
            Input::Drain => {
                if !self.draining {
                    self.draining = true;
                    self.outputs
                        .push_back(Output::Log(Event::Draining { work: self.roles.exec.running_work() }));
                }
            }
            Input::Timeout => {
                self.conns.handle_timeout(now);
                self.with_roles(|roles, fx| {
                    if let Some(m) = roles.member.as_mut() {
                        m.handle_timeout(now, fx);
                    }
                    roles.exec.handle_timeout(now, fx);
                    roles.policy.handle_timeout(now, fx);
                });
            }
        }
        self.settle(now);
    }

    fn poll_output(&mut self) -> Option<Output> {
        let out = if self.unanswered.is_empty() {
            self.outputs.pop_front()?
        } else {
            // Records may go ahead of what waits for an earlier one: being durable sooner is
            // never less safe, and it lets the driver commit them together.
            let next = self.outputs.iter().position(|o| matches!(o, Output::Persist { .. }))?;
            self.outputs.remove(next)?
        };
        if let Output::Persist { id, .. } = &out {
            self.unanswered.insert(*id);
        }
        Some(out)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let member = self.roles.member.as_ref().and_then(MemberHost::poll_timeout);
        [
            self.conns.poll_timeout(),
            self.links.poll_timeout(),
            member,
            self.roles.exec.poll_timeout(),
            self.roles.policy.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

#[cfg(test)]
mod tests;
