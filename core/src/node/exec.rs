//! Parallel secure execution on a node: the gateway (with the audit collector) on the gateway
//! listener, the KDC on its own listener with its own key, each managed host's exec daemon on its
//! own listener with its own key, and the link an exec node keeps to the collector. Owns the
//! mapping between those roles and the node: a client is its connection (its key, the
//! channel's); the gateway's sessions to a host go on channels it keeps to that host, pinned to
//! the host's key; each question the gateway puts to the KDC is one connection it opens; the KDC
//! answers one request per connection from the gateways it lists; a daemon answers each session
//! on the channel it came on; audit records go to the collector and acknowledgements come back to
//! the daemon that asked; a session's process is a child of the node. The rules are the roles'.

use std::collections::BTreeMap;

use super::conns::{ConnEvent, ConnLimits, Owner};
use super::io::{ChildId, ConnId, Event, FileId, ListenerId, Output, Record, RunningWork};
use super::links::Links;
use super::{AfterPersist, Effects};
use crate::channel::TrustSet;
use crate::exec::acl::Acl;
use crate::exec::audit::{AuditCollector, ChainEntry, CollectorInput};
use crate::exec::audit_view::audit_signers;
use crate::exec::daemon::{DaemonInput, DaemonOutput, DaemonSettings, ExecDaemon, ProcessEnd};
use crate::exec::directory::ExecDirectory;
use crate::exec::gateway::{Gateway, GatewayInput};
use crate::exec::kdc::Kdc;
use crate::exec::wire::{GatewayReply, GatewayWire, HostFrame, HostWire, KdcReply};
use crate::identity::{NodeKeys, PublicIdentity};
use crate::machine::Machine;
use crate::rng::SeededRng;
use crate::time::{Instant, Now};
use crate::wire;

mod daemons;
mod gateway_slot;
mod host_channels;
mod kdc_slot;
mod web_slot;

use daemons::{Daemons, Host};
use gateway_slot::GatewaySlot;
use kdc_slot::KdcSlot;
pub use web_slot::{PolicyMaster, WebRole};

/// The gateway a node runs, with the audit collector.
#[derive(Debug)]
pub struct GatewayRole {
    pub listen: String,
    /// Signs the gateway's own audit records.
    pub keys: NodeKeys,
    /// Where the KDC listens, and its key: it signs credentials and answers only on a channel
    /// that proves this key.
    pub kdc_addr: String,
    pub kdc: PublicIdentity,
    /// The last entry of the stored audit chain, which the collector continues.
    pub chain_tail: Option<ChainEntry>,
    pub limits: ConnLimits,
    /// The web console, if the gateway serves one.
    pub web: Option<WebRole>,
}

/// The KDC a node runs: its own key, its principals' hashes, and the gateways it answers.
#[derive(Debug)]
pub struct KdcRole {
    pub listen: String,
    pub kdc: Kdc,
    /// The gateways whose channels it accepts.
    pub gateways: Vec<PublicIdentity>,
    pub limits: ConnLimits,
}

/// One managed host a node plays.
#[derive(Debug, Clone)]
pub struct ExecHostRole {
    pub name: String,
    pub keys: NodeKeys,
    /// The KDC whose signed tickets this host takes.
    pub kdc: PublicIdentity,
    pub listen: String,
    pub settings: DaemonSettings,
    pub limits: ConnLimits,
}

/// Where an exec node's hosts send their audit records.
#[derive(Debug, Clone)]
pub struct AuditLinkRole {
    pub addr: String,
    pub collector: PublicIdentity,
}

/// Audit records waiting for the collector link; beyond it the daemons' audit timeout decides.
const MAX_AUDIT_QUEUE: usize = 10_000;
const AUDIT_LINK_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug)]
pub(super) struct ExecHost {
    gateway: Option<GatewaySlot>,
    kdc: Option<KdcSlot>,
    hosts: Daemons,
    /// The link to the collector, and each record in flight on it: link ack → (host, token).
    audit_link: Option<usize>,
    in_flight: BTreeMap<u64, (usize, u64)>,
    next_link_ack: u64,
    /// Each running session's child: child → (host, session).
    children: BTreeMap<ChildId, (usize, u64)>,
    /// Children whose output waits for their session's channel to drain: child → channel.
    paused: BTreeMap<ChildId, ConnId>,
    /// Each file a copy is placing: file → (host, session, path).
    placing: BTreeMap<FileId, (usize, u64, String)>,
    /// Which host each host listener belongs to (a node may play a thousand hosts).
    by_listener: BTreeMap<ListenerId, usize>,
}

/// The exec roles a node was set up with.
#[derive(Debug)]
pub(super) struct ExecRoles {
    pub gateway: Option<GatewayRole>,
    pub kdc: Option<KdcRole>,
    pub hosts: Vec<ExecHostRole>,
    pub audit: Option<AuditLinkRole>,
    /// Hosts, ACL and limits until a configuration is installed (a node without the member
    /// role keeps these).
    pub directory: ExecDirectory,
}

impl ExecHost {
    pub fn new(
        now: Now,
        roles: ExecRoles,
        node_keys: &NodeKeys,
        rng: &mut SeededRng,
        fx: &mut Effects<'_>,
    ) -> ExecHost {
        let ExecRoles { gateway, kdc, hosts, audit, directory } = roles;
        let gateway = gateway.map(|role| GatewaySlot::new(role, &directory, rng, fx));
        let kdc = kdc.map(|role| KdcSlot::new(role, fx));
        let hosts = hosts
            .into_iter()
            .map(|role| {
                // Gateways are any key: a gateway proves itself with a ticket sealed to this host.
                let listener = fx.conns.listen(
                    "exec host",
                    role.listen,
                    role.keys.clone(),
                    TrustSet::any_peer(),
                    role.limits,
                );
                let daemon =
                    ExecDaemon::new(role.name, role.keys, role.kdc, Acl::default(), role.settings, now.wall);
                Host { daemon, listener }
            })
            .collect::<Vec<_>>();
        let by_listener = hosts.iter().enumerate().map(|(i, h)| (h.listener, i)).collect();
        let hosts = Daemons::new(hosts);
        let audit_link = audit.filter(|_| !hosts.is_empty()).map(|a| {
            // The collector acknowledges every record at once: a link that hears nothing for this
            // long is dead (a cut without a reset), and is closed and redialled when needed.
            let limits = ConnLimits { idle: Some(AUDIT_LINK_IDLE), ..ConnLimits::default() };
            fx.links.add_with_queue(a.addr, node_keys.clone(), a.collector, limits, MAX_AUDIT_QUEUE)
        });
        let mut host = ExecHost {
            gateway,
            kdc,
            hosts,
            audit_link,
            in_flight: BTreeMap::new(),
            next_link_ack: 1,
            children: BTreeMap::new(),
            paused: BTreeMap::new(),
            placing: BTreeMap::new(),
            by_listener,
        };
        host.set_directory(now, directory, fx);
        host
    }

    /// The console whose question to the policy master `owner` is, if it is one.
    fn web_asking(&mut self, owner: Owner) -> Option<&mut web_slot::WebSlot> {
        self.gateway.as_mut().and_then(|g| g.web.as_mut()).filter(|w| w.asks_master(owner))
    }

    /// The host whose listener `owner` is, if it is one.
    fn host_of(&self, owner: Owner) -> Option<usize> {
        match owner {
            Owner::Listener(l) => self.by_listener.get(&l).copied(),
            Owner::Link(_) | Owner::Dial(_) | Owner::HostChannel(_) => None,
        }
    }

    pub fn owns(&self, owner: Owner) -> bool {
        match owner {
            Owner::Listener(l) => {
                self.gateway.as_ref().is_some_and(|g| g.listener == l)
                    || self.kdc.as_ref().is_some_and(|k| k.listener == l)
                    || self.by_listener.contains_key(&l)
            }
            Owner::Link(i) => self.audit_link == Some(i),
            Owner::Dial(_) | Owner::HostChannel(_) => self.gateway.is_some(),
        }
    }

    /// What still runs: gateway runs, host sessions and their processes, placements, and
    /// audit records on their way to the collector.
    pub fn running_work(&self) -> RunningWork {
        let held = self.gateway.as_ref().map(|g| g.gateway.held_state()).unwrap_or_default();
        RunningWork {
            runs: held.runs,
            sessions: self.hosts.iter().map(|h| h.daemon.sessions()).sum(),
            processes: self.children.len(),
            placements: self.placing.len(),
            audit_in_flight: self.in_flight.len(),
        }
    }

    /// The gateway's channels to hosts: carrying a session, and open with none.
    pub fn host_channels(&self) -> (usize, usize) {
        self.gateway.as_ref().map_or((0, 0), |g| g.hosts.counts())
    }

    /// Audit records waiting for the collector link to open.
    pub fn audit_queued(&self, links: &Links) -> usize {
        self.audit_link.map_or(0, |l| links.queued(l))
    }

    /// Whether nothing runs and no audit record waits to reach the collector.
    pub fn is_idle(&self, links: &Links) -> bool {
        self.running_work() == RunningWork::default() && self.audit_queued(links) == 0
    }

    pub fn gateway(&self) -> Option<&Gateway> {
        self.gateway.as_ref().map(|g| &g.gateway)
    }

    pub fn kdc(&self) -> Option<&Kdc> {
        self.kdc.as_ref().map(|k| &k.kdc)
    }

    pub fn collector(&self) -> Option<&AuditCollector> {
        self.gateway.as_ref().map(|g| &g.collector)
    }

    pub fn daemons(&self) -> impl Iterator<Item = &ExecDaemon> {
        self.hosts.iter().map(|h| &h.daemon)
    }

    /// Hands every exec role its part of a newly installed configuration: the gateway its
    /// hosts, limits and groups, the collector whose records it accepts, the KDC the hosts it
    /// may seal tickets to, each daemon the ACL and whether it is still a managed host.
    pub fn set_directory(&mut self, now: Now, directory: ExecDirectory, fx: &mut Effects<'_>) {
        if let Some(k) = &mut self.kdc {
            k.kdc.set_hosts(directory.hosts.iter().map(|(n, h)| (n.clone(), h.identity)).collect());
            k.operators = directory.operators.clone();
            fx.conns.set_trust(k.listener, k.trust());
        }
        let listed: Vec<bool> =
            self.hosts.iter().map(|h| directory.lists(h.daemon.host(), &h.daemon.identity())).collect();
        for (i, listed) in listed.into_iter().enumerate() {
            self.hosts.handle(i, now, DaemonInput::Directory { acl: directory.acl.clone(), listed });
        }
        if let Some(g) = &mut self.gateway {
            g.collector.handle(now, CollectorInput::Signers(audit_signers(&directory, g.keys.public())));
            g.gateway.handle(now, GatewayInput::Directory(Box::new(directory)));
        }
        self.drain(now, fx);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let gateway = self.gateway.as_ref().and_then(|g| g.gateway.poll_timeout());
        let channels = self.gateway.as_ref().and_then(|g| g.hosts.poll_timeout());
        gateway.into_iter().chain(channels).chain(self.hosts.poll_timeout()).min()
    }

    pub fn handle_timeout(&mut self, now: Now, fx: &mut Effects<'_>) {
        if let Some(g) = &mut self.gateway
            && g.gateway.poll_timeout().is_some_and(|t| t <= now.mono)
        {
            g.gateway.handle(now, GatewayInput::Timeout);
        }
        if let Some(g) = &mut self.gateway
            && g.hosts.poll_timeout().is_some_and(|t| t <= now.mono)
        {
            g.hosts.handle_timeout(now, fx);
        }
        self.hosts.handle_timeout(now);
        self.drain(now, fx);
    }

    pub fn on_conn(&mut self, now: Now, event: ConnEvent, fx: &mut Effects<'_>) {
        match event {
            ConnEvent::Established { owner: owner @ Owner::HostChannel(_), .. } => {
                if let Some(g) = &mut self.gateway {
                    g.hosts.on_established(owner);
                }
            }
            ConnEvent::Established { .. } => {}
            ConnEvent::Message { conn, owner, peer, bytes } => {
                self.on_message(now, conn, owner, peer, &bytes, fx)
            }
            ConnEvent::Gone { conn, owner, error } => self.on_gone(now, conn, owner, error, fx),
            ConnEvent::Drained { conn, owner } => self.on_drained(conn, owner, fx),
        }
        self.drain(now, fx);
    }

    fn on_message(
        &mut self,
        now: Now,
        conn: ConnId,
        owner: Owner,
        peer: PublicIdentity,
        bytes: &[u8],
        fx: &mut Effects<'_>,
    ) {
        if let Some(k) = self.kdc.as_mut().filter(|k| Owner::Listener(k.listener) == owner) {
            return k.on_request(now, conn, peer, bytes, fx);
        }
        if let Some(web) = self.web_asking(owner) {
            return web.master_answered(now, owner, conn, bytes, fx);
        }
        let host = self.host_of(owner);
        match (owner, host, &mut self.gateway) {
            (Owner::Dial(ask), _, Some(g)) if g.asks.contains_key(&ask) => {
                g.asks.remove(&ask);
                fx.conns.close(conn);
                let input = match wire::decode::<KdcReply>(bytes) {
                    Ok(reply) => GatewayInput::KdcReplied { ask, reply },
                    Err(e) => GatewayInput::KdcLost { ask, reason: format!("an undecodable answer: {e}") },
                };
                g.gateway.handle(now, input);
            }
            (Owner::Listener(_), Some(i), _) => match wire::decode::<HostWire>(bytes) {
                Ok(message) => self.hosts.handle(i, now, DaemonInput::Wire { conn: conn.0, message }),
                Err(e) => bad_message(fx, conn, format!("undecodable request: {e}")),
            },
            (Owner::Listener(_), None, Some(g)) => match wire::decode::<GatewayWire>(bytes) {
                Ok(GatewayWire::Client(request)) => {
                    let input = GatewayInput::Client { client: conn.0, client_key: peer.agreement, request };
                    g.gateway.handle(now, input);
                }
                Ok(GatewayWire::AuditSubmit { ack: remote, record }) => {
                    let ack = g.next_ack;
                    g.next_ack += 1;
                    g.acks.insert(ack, (conn, remote));
                    g.collector.handle(now, CollectorInput::Submit { ack, record: Box::new(record) });
                }
                Err(e) => {
                    let refused = GatewayReply::Client(crate::exec::gateway::ClientEvent::Refused {
                        reason: format!("bad request: {e}"),
                    });
                    send(fx, conn, &refused);
                    fx.conns.close(conn);
                }
            },
            (Owner::HostChannel(_), _, Some(g)) => {
                if let Some(input) = g.hosts.on_message(now, owner, conn, bytes, fx) {
                    g.gateway.handle(now, input);
                }
            }
            (Owner::Link(_), _, _) => match wire::decode::<GatewayReply>(bytes) {
                Ok(GatewayReply::AuditAck { ack }) => {
                    if let Some((host, token)) = self.in_flight.remove(&ack) {
                        self.hosts.handle(host, now, DaemonInput::AuditAcked { token });
                    }
                }
                Ok(GatewayReply::AuditRefused { ack, reason }) => {
                    self.in_flight.remove(&ack);
                    fx.log(Event::AuditRefused { reason });
                }
                Ok(GatewayReply::Client(_)) | Err(_) => {
                    bad_message(fx, conn, "unexpected message on the audit link".into())
                }
            },
            _ => bad_message(fx, conn, "an exec message on the wrong kind of connection".into()),
        }
    }

    /// A congested connection caught up: the session's command may write again, or the
    /// client's results go on.
    fn on_drained(&mut self, conn: ConnId, owner: Owner, fx: &mut Effects<'_>) {
        let host = self.host_of(owner);
        match (host, &mut self.gateway) {
            (Some(_), _) => {
                let waiting: Vec<ChildId> =
                    self.paused.iter().filter(|(_, c)| **c == conn).map(|(child, _)| *child).collect();
                for child in waiting {
                    self.paused.remove(&child);
                    fx.out.push_back(Output::ResumeChild { child });
                }
            }
            (None, Some(g)) if Owner::Listener(g.listener) == owner => g.flush_client(fx, conn),
            _ => {}
        }
    }

    fn on_gone(&mut self, now: Now, conn: ConnId, owner: Owner, error: Option<String>, fx: &mut Effects<'_>) {
        if let Some(web) = self.web_asking(owner) {
            return web.master_gone(now, owner, error);
        }
        let host = self.host_of(owner);
        match (owner, host, &mut self.gateway) {
            (Owner::Listener(_), Some(i), _) => self.hosts.handle(i, now, DaemonInput::Gone { conn: conn.0 }),
            (Owner::Listener(_), None, Some(g)) => {
                g.gateway.handle(now, GatewayInput::ClientGone { client: conn.0 });
                g.acks.retain(|_, (c, _)| *c != conn);
                g.outbox.remove(&conn);
                g.closing.remove(&conn);
            }
            (Owner::Dial(ask), _, Some(g)) if g.asks.contains_key(&ask) => {
                g.asks.remove(&ask);
                let reason = error.unwrap_or_else(|| "the KDC closed the channel without answering".into());
                g.gateway.handle(now, GatewayInput::KdcLost { ask, reason });
            }
            (Owner::HostChannel(_), _, Some(g)) => {
                for lost in g.hosts.on_gone(now, owner, error, fx) {
                    g.gateway.handle(now, lost);
                }
            }
            // Records in flight are refused by the daemons' audit timeout; the link redials.
            (Owner::Link(_), _, _) => self.in_flight.clear(),
            _ => {}
        }
    }

    pub fn on_persisted(&mut self, now: Now, after: AfterPersist, fx: &mut Effects<'_>) {
        match after {
            AfterPersist::Chain(index) => {
                if let Some(g) = &mut self.gateway {
                    g.collector.handle(now, CollectorInput::Persisted { index });
                }
            }
            AfterPersist::LocalAudit { host, token } => {
                self.hosts.handle(host, now, DaemonInput::AuditPersisted { token });
            }
            AfterPersist::KdcAnswer(conn) => {
                if let Some(k) = &mut self.kdc {
                    k.on_persisted(conn, fx);
                }
            }
            AfterPersist::Nothing | AfterPersist::Member(_) => {}
        }
        self.drain(now, fx);
    }

    /// A child event; false if the child is not a session of this host.
    pub fn on_child(&mut self, now: Now, child: ChildId, input: ChildEvent, fx: &mut Effects<'_>) -> bool {
        let Some(&(host, session)) = self.children.get(&child) else { return false };
        let input = match input {
            ChildEvent::Output { stderr, bytes } => DaemonInput::Output { session, stderr, bytes },
            ChildEvent::Exited(end) => {
                self.children.remove(&child);
                self.paused.remove(&child);
                DaemonInput::Exited { session, end }
            }
            ChildEvent::Failed(reason) => {
                self.children.remove(&child);
                self.paused.remove(&child);
                DaemonInput::SpawnFailed { session, reason }
            }
        };
        self.hosts.handle(host, now, input);
        self.drain(now, fx);
        true
    }

    /// Whether file write `id` places a copy's file.
    pub fn places(&self, id: FileId) -> bool {
        self.placing.contains_key(&id)
    }

    /// A copy's file write answered.
    pub fn on_file_written(
        &mut self,
        now: Now,
        id: FileId,
        outcome: Result<(), String>,
        fx: &mut Effects<'_>,
    ) {
        let Some((host, session, path)) = self.placing.remove(&id) else { return };
        self.hosts.handle(host, now, DaemonInput::Placed { session, path, outcome });
        self.drain(now, fx);
    }

    /// Carries out what the gateway, the collector and the daemons asked for, until none asks.
    fn drain(&mut self, now: Now, fx: &mut Effects<'_>) {
        loop {
            let mut moved = self.gateway.as_mut().is_some_and(|g| g.drain(now, fx));
            moved |= self.drain_hosts(now, fx);
            if !moved {
                return;
            }
        }
    }

    fn drain_hosts(&mut self, now: Now, fx: &mut Effects<'_>) -> bool {
        let mut moved = false;
        while let Some((i, out)) = self.hosts.poll_output() {
            moved = true;
            match out {
                DaemonOutput::PersistAudit { token, record } => {
                    fx.persist_then(Record::LocalAudit(record), AfterPersist::LocalAudit { host: i, token })
                }
                DaemonOutput::SubmitAudit { token, record } => {
                    let Some(link) = self.audit_link else { continue };
                    let ack = self.next_link_ack;
                    self.next_link_ack += 1;
                    self.in_flight.insert(ack, (i, token));
                    let bytes = encode(&GatewayWire::AuditSubmit { ack, record });
                    fx.links.send(now, link, bytes, fx.conns);
                }
                DaemonOutput::Spawn { session, run_as, argv, env, stdin } => {
                    let child = fx.ids.child();
                    self.children.insert(child, (i, session));
                    fx.out.push_back(Output::Spawn { child, argv, run_as: Some(run_as), env, stdin });
                }
                DaemonOutput::PlaceFile { session, owner, file } => {
                    let id = fx.ids.file();
                    self.placing.insert(id, (i, session, file.path.clone()));
                    fx.out.push_back(Output::PlaceFile {
                        id,
                        path: file.path,
                        contents: file.content,
                        mode: file.mode,
                        owner,
                    });
                }
                DaemonOutput::Kill { session } => {
                    let child = self.children.iter().find(|(_, s)| **s == (i, session)).map(|(c, _)| *c);
                    if let Some(child) = child {
                        fx.out.push_back(Output::Kill { child });
                    }
                }
                DaemonOutput::Reply { session, to, event } => {
                    let conn = ConnId(to.conn);
                    send(fx, conn, &HostFrame { session: to.session, event });
                    // The gateway is not keeping up: the command waits instead of memory filling.
                    if fx.conns.congested(conn) {
                        let child = self.children.iter().find(|(_, s)| **s == (i, session)).map(|(c, _)| *c);
                        if let Some(child) = child.filter(|c| !self.paused.contains_key(c)) {
                            self.paused.insert(child, conn);
                            fx.out.push_back(Output::PauseChild { child });
                        }
                    }
                }
            }
        }
        moved
    }
}

/// What a child process did (an exec session's, or a policy check's).
#[derive(Debug)]
pub(super) enum ChildEvent {
    Output { stderr: bool, bytes: Vec<u8> },
    Exited(ProcessEnd),
    Failed(String),
}

fn encode<T: serde::Serialize>(message: &T) -> Vec<u8> {
    // Every exec message type encodes; an error here is a bug, and the peer refuses the empty
    // message it turns into rather than this node going down.
    wire::encode(message).unwrap_or_default()
}

fn send<T: serde::Serialize>(fx: &mut Effects<'_>, conn: ConnId, message: &T) {
    fx.conns.send(conn, &encode(message));
}

fn bad_message(fx: &mut Effects<'_>, conn: ConnId, error: String) {
    fx.log(Event::BadMessage { conn, error });
    fx.conns.close(conn);
}
