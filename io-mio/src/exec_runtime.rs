//! The exec roles of a node, hosted by the process's event loop: the gateway (with the KDC and the audit
//! collector) and any number of exec daemons, each a managed host with its own key and address.
//! Owns the listeners, the channels to clients, hosts and the collector, child processes, local
//! and chained audit storage, and the wall clock the core machines are given. Protocol rules stay
//! in core: this file only moves bytes and answers commands.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use cohort_core::channel::{Channel, ChannelConfig, ChannelInput, ChannelOutput, CloseReason, TrustSet};
use cohort_core::exec::acl::Acl;
use cohort_core::exec::audit::{AuditCollector, AuditRecord, CollectorInput, CollectorOutput};
use cohort_core::exec::daemon::{
    DaemonInput, DaemonOutput, DaemonSettings, ExecDaemon, HostEvent, ProcessEnd,
};
use cohort_core::exec::gateway::{
    ClientEvent, ClientRequest, GATEWAY_AUDIT_NAME, Gateway, GatewayInput, GatewayOutput,
};
use cohort_core::exec::kdc::{Kdc, KdcSettings};
use cohort_core::exec::wire::{GatewayReply, GatewayWire, HostWire};
use cohort_core::rng::{SeededRng, fork};
use cohort_core::signed::Signed;
use cohort_core::{Instant, Machine, NodeKeys, Now, PublicIdentity, wire};
use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Token};
use serde::Serialize;
use tracing::{debug, info, warn};

use crate::channel_conn::ChannelConn;
use crate::child::{RunningChild, Stream};
use crate::clock::Clock;
use crate::entropy::os_seeded_rng;
use crate::keyfile;
use crate::node::NodeError;
use crate::node_config::{HostsFile, NodeConfig, PrincipalsFile, load_toml, parse_key};
use crate::reactor::{Role, Slot};
use crate::store::Store;
use cohort_core::node::Backoff;

// The role's own token numbers (see `reactor::Slot`).
const GATEWAY_LISTENER: usize = 2;
const FIRST_HOST_LISTENER: usize = 1_000;
const FIRST_DYNAMIC: usize = 1_000_000;
/// Largest message on an exec channel (a host's output travels in events under this).
const MAX_MESSAGE: usize = 4 * 1024 * 1024;
/// Audit records waiting for the collector link; beyond it the daemon's audit timeout decides.
const MAX_AUDIT_QUEUE: usize = 10_000;
/// Inbound connections (clients, gateways, audit links) open at once, and how many of them may
/// be mid-handshake: beyond either, new connections are refused at accept.
const MAX_INBOUND: usize = 4096;
const MAX_INBOUND_HANDSHAKING: usize = 64;
/// An inbound connection that has said nothing this long after connecting is closed.
const INBOUND_IDLE: Duration = Duration::from_secs(30);

/// `group.NAME` settings of the cluster configuration, shared from the member role so node sets
/// can name `@NAME`.
pub type SharedGroups = Arc<RwLock<BTreeMap<String, String>>>;

#[derive(Debug)]
enum Kind {
    /// A client or an exec node's audit link, on the gateway listener.
    GatewayIn,
    /// The gateway's connection to a host for one session.
    GatewayToHost { session: u64 },
    /// A gateway's connection into one of this node's hosts; the connection names its session.
    HostIn { host: usize },
    /// This node's audit link to the collector.
    AuditLink,
}

#[derive(Debug)]
struct Conn {
    io: ChannelConn,
    kind: Kind,
    peer: Option<PublicIdentity>,
    /// Close once everything queued is written.
    closing: bool,
    /// The socket error that ended it, if one did (a refused connect, a reset).
    failure: Option<String>,
    opened: Instant,
    /// Whether a whole message has arrived on it yet.
    spoke: bool,
}

impl Conn {
    fn inbound(&self) -> bool {
        matches!(self.kind, Kind::GatewayIn | Kind::HostIn { .. })
    }

    /// When an inbound connection that has said nothing gets closed.
    fn idle_deadline(&self) -> Option<Instant> {
        (self.inbound() && !self.spoke).then(|| self.opened + INBOUND_IDLE)
    }
}

/// The session a host connection carries: the daemon names sessions by their connection.
fn session_of(token: Token) -> u64 {
    token.0 as u64
}

fn conn_of(session: u64) -> Token {
    Token(session as usize)
}

#[derive(Debug)]
struct GatewaySide {
    gateway: Gateway,
    collector: AuditCollector,
    listener: TcpListener,
    hosts: BTreeMap<String, (SocketAddr, PublicIdentity)>,
    /// session → connection to its host.
    sessions: BTreeMap<u64, Token>,
    /// collector ack → (connection, the submitter's own ack); internal records have no entry.
    acks: BTreeMap<u64, (Token, u64)>,
    next_ack: u64,
}

#[derive(Debug)]
struct HostSide {
    daemon: ExecDaemon,
    keys: NodeKeys,
    listener: TcpListener,
    children: BTreeMap<u64, RunningChild>,
}

#[derive(Debug)]
struct AuditLink {
    addr: SocketAddr,
    identity: PublicIdentity,
    token: Option<Token>,
    queue: VecDeque<(u64, Signed<AuditRecord>)>,
    /// link ack → (host, daemon token).
    in_flight: BTreeMap<u64, (usize, u64)>,
    next_ack: u64,
    /// While the collector is unreachable: when to try again.
    retry_at: Option<Instant>,
    backoff: Backoff,
}

/// The exec roles' event loop.
pub struct ExecRuntime {
    slot: Slot,
    keys: NodeKeys,
    store: Store,
    rng: SeededRng,
    clock: Clock,
    gateway: Option<GatewaySide>,
    hosts: Vec<HostSide>,
    link: Option<AuditLink>,
    conns: BTreeMap<Token, Conn>,
    /// child pipe token → (host, session, stream).
    pipes: BTreeMap<Token, (usize, u64, Stream)>,
    next_token: usize,
    groups: SharedGroups,
}

impl std::fmt::Debug for ExecRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecRuntime")
            .field("gateway", &self.gateway.is_some())
            .field("hosts", &self.hosts.len())
            .field("conns", &self.conns.len())
            .finish()
    }
}

fn channel_config() -> ChannelConfig {
    ChannelConfig {
        max_message_len: MAX_MESSAGE,
        handshake_timeout: Duration::from_secs(5),
        max_queued_bytes: MAX_MESSAGE,
    }
}

fn encode<T: Serialize>(value: &T) -> Option<Vec<u8>> {
    wire::encode(value).map_err(|e| warn!(error = %e, "could not encode an exec message")).ok()
}

impl ExecRuntime {
    /// Sets up the gateway and exec hosts the configuration names.
    pub fn start(config: &NodeConfig, groups: SharedGroups, slot: Slot) -> Result<ExecRuntime, NodeError> {
        let keys = keyfile::read_key_file(&config.key_file)?;
        let store = Store::open(&config.database())?;
        let mut rng = os_seeded_rng();
        let gateway = match &config.gateway {
            None => None,
            Some(gw) => {
                let principals: PrincipalsFile = load_toml(&gw.principals_file)?;
                let hosts_file: HostsFile = load_toml(&gw.hosts_file)?;
                let mut hosts = BTreeMap::new();
                for h in &hosts_file.hosts {
                    let identity = PublicIdentity {
                        signing: parse_key(&gw.hosts_file, "ed25519", &h.ed25519)?,
                        agreement: parse_key(&gw.hosts_file, "x25519", &h.x25519)?,
                    };
                    hosts.insert(h.name.clone(), (h.address, identity));
                }
                let table = hosts.iter().map(|(n, (_, id))| (n.clone(), *id)).collect();
                let kdc = Kdc::new(
                    keys.clone(),
                    principals.principals,
                    table,
                    KdcSettings::default(),
                    fork(&mut rng),
                );
                let mut listener = TcpListener::bind(gw.listen).map_err(|source| NodeError::Bind {
                    what: "listen for exec clients on",
                    addr: gw.listen,
                    source,
                })?;
                slot.register(&mut listener, GATEWAY_LISTENER, Interest::READABLE)?;
                // Records count when signed by the host they name, or by this gateway.
                let mut signers: BTreeMap<String, PublicIdentity> =
                    hosts.iter().map(|(n, (_, id))| (n.clone(), *id)).collect();
                signers.entry(GATEWAY_AUDIT_NAME.to_owned()).or_insert_with(|| keys.public());
                let collector = AuditCollector::new(store.last_chain_entry()?.as_ref(), signers);
                info!(listen = %gw.listen, hosts = hosts.len(), audit_entries = collector.len(), "gateway up");
                Some(GatewaySide {
                    gateway: Gateway::new(kdc, keys.clone(), fork(&mut rng)),
                    collector,
                    listener,
                    hosts,
                    sessions: BTreeMap::new(),
                    acks: BTreeMap::new(),
                    next_ack: 1,
                })
            }
        };
        let mut hosts = Vec::new();
        for (i, h) in config.exec_hosts.iter().enumerate() {
            let host_keys = keyfile::read_key_file(&h.key_file)?;
            let acl: Acl = load_toml(&h.acl_file)?;
            let mut listener = TcpListener::bind(h.listen).map_err(|source| NodeError::Bind {
                what: "listen for the exec host on",
                addr: h.listen,
                source,
            })?;
            slot.register(&mut listener, FIRST_HOST_LISTENER + i, Interest::READABLE)?;
            let started = Clock::start().now().wall;
            let daemon =
                ExecDaemon::new(h.name.clone(), host_keys.clone(), acl, DaemonSettings::default(), started);
            hosts.push(HostSide { daemon, keys: host_keys, listener, children: BTreeMap::new() });
        }
        if !hosts.is_empty() {
            info!(hosts = hosts.len(), "exec hosts up");
        }
        let link = match (&config.collector, hosts.is_empty()) {
            (Some(c), false) => {
                let path = config.key_file.clone();
                let identity = PublicIdentity {
                    signing: parse_key(&path, "collector ed25519", &c.ed25519)?,
                    agreement: parse_key(&path, "collector x25519", &c.x25519)?,
                };
                Some(AuditLink {
                    addr: c.address,
                    identity,
                    token: None,
                    queue: VecDeque::new(),
                    in_flight: BTreeMap::new(),
                    next_ack: 1,
                    retry_at: None,
                    backoff: Backoff::reconnect(),
                })
            }
            _ => None,
        };
        Ok(ExecRuntime {
            slot,
            keys,
            store,
            rng,
            clock: Clock::start(),
            gateway,
            hosts,
            link,
            conns: BTreeMap::new(),
            pipes: BTreeMap::new(),
            next_token: FIRST_DYNAMIC,
            groups,
        })
    }

    fn now(&self) -> Now {
        self.clock.now()
    }

    fn token(&mut self) -> Token {
        let t = self.slot.token(self.next_token);
        self.next_token += 1;
        t
    }

    fn next_deadline(&self) -> Option<Instant> {
        let gateway = self.gateway.as_ref().and_then(|g| g.gateway.poll_timeout());
        let daemons = self.hosts.iter().filter_map(|h| h.daemon.poll_timeout());
        let conns = self.conns.values().filter_map(|c| c.io.channel.poll_timeout());
        let idle = self.conns.values().filter_map(Conn::idle_deadline);
        let link = self.link.as_ref().filter(|l| !l.queue.is_empty()).and_then(|l| l.retry_at);
        gateway.into_iter().chain(daemons).chain(conns).chain(idle).chain(link).min()
    }

    fn fire_due(&mut self) {
        let now = self.now();
        if let Some(g) = &mut self.gateway
            && g.gateway.poll_timeout().is_some_and(|t| t <= now.mono)
        {
            g.gateway.handle(now, GatewayInput::Timeout);
        }
        for host in &mut self.hosts {
            if host.daemon.poll_timeout().is_some_and(|t| t <= now.mono) {
                host.daemon.handle(now, DaemonInput::Timeout);
            }
        }
        for conn in self.conns.values_mut() {
            if conn.io.channel.poll_timeout().is_some_and(|t| t <= now.mono) {
                conn.io.channel.handle(now, ChannelInput::Timeout);
            }
            if conn.idle_deadline().is_some_and(|t| t <= now.mono) && !conn.closing {
                debug!(peer = %conn.io.peer, "closing an inbound connection that never sent a request");
                conn.io.channel.close();
            }
        }
        self.reap_children();
    }

    /// Drives every machine and connection until nothing moves.
    fn drive_all(&mut self) -> Result<(), NodeError> {
        for _ in 0..10_000 {
            let mut moved = self.drive_gateway()?;
            moved |= self.drive_hosts()?;
            moved |= self.drive_link();
            moved |= self.drive_conns();
            if !moved {
                break;
            }
        }
        Ok(())
    }

    // ---- connections --------------------------------------------------------------------------

    fn add_conn(
        &mut self,
        mut stream: TcpStream,
        peer: SocketAddr,
        channel: Channel,
        kind: Kind,
    ) -> Option<Token> {
        let token = self.token();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self.slot.registry().register(&mut stream, token, interest) {
            warn!(%peer, error = %e, "could not register a connection");
            return None;
        }
        let opened = self.now().mono;
        let io = ChannelConn::new(stream, peer, channel);
        let conn = Conn { io, kind, peer: None, closing: false, failure: None, opened, spoke: false };
        self.conns.insert(token, conn);
        Some(token)
    }

    /// Whether another inbound connection may be taken; logs the refusal when not.
    fn inbound_room(&self, peer: SocketAddr) -> bool {
        let inbound = self.conns.values().filter(|c| c.inbound()).count();
        let handshaking =
            self.conns.values().filter(|c| c.inbound() && !c.io.channel.is_established()).count();
        let room = inbound < MAX_INBOUND && handshaking < MAX_INBOUND_HANDSHAKING;
        if !room {
            warn!(%peer, inbound, handshaking, "exec connection refused: too many open");
        }
        room
    }

    fn accept_gateway(&mut self) {
        loop {
            let Some(g) = &self.gateway else { return };
            let (stream, peer) = match g.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => return warn!(error = %e, "gateway accept failed"),
            };
            if !self.inbound_room(peer) {
                continue;
            }
            let channel = match Channel::responder(
                self.now().mono,
                channel_config(),
                &self.keys,
                TrustSet::any_peer(),
                fork(&mut self.rng),
            ) {
                Ok(c) => c,
                Err(e) => return warn!(error = %e, "could not start a gateway channel"),
            };
            self.add_conn(stream, peer, channel, Kind::GatewayIn);
        }
    }

    fn accept_host(&mut self, host: usize) {
        loop {
            let Some(side) = self.hosts.get(host) else { return };
            let (stream, peer) = match side.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => return warn!(error = %e, "exec host accept failed"),
            };
            if !self.inbound_room(peer) {
                continue;
            }
            let keys = side.keys.clone();
            let channel = match Channel::responder(
                self.now().mono,
                channel_config(),
                &keys,
                TrustSet::any_peer(),
                fork(&mut self.rng),
            ) {
                Ok(c) => c,
                Err(e) => return warn!(error = %e, "could not start an exec channel"),
            };
            self.add_conn(stream, peer, channel, Kind::HostIn { host });
        }
    }

    fn connect(&mut self, addr: SocketAddr, identity: PublicIdentity, kind: Kind) -> Result<Token, String> {
        let stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        let trust: TrustSet = [identity].into_iter().collect();
        let channel =
            Channel::initiator(self.now().mono, channel_config(), &self.keys, trust, fork(&mut self.rng))
                .map_err(|e| e.to_string())?;
        self.add_conn(stream, addr, channel, kind).ok_or_else(|| "could not register".to_owned())
    }

    fn service(&mut self, token: Token, readable: bool, writable: bool) {
        let now = self.now();
        if let Some(conn) = self.conns.get_mut(&token)
            && let Some(failure) = conn.io.service(now, readable, writable)
        {
            conn.failure = Some(failure);
        }
    }

    fn send_on<T: Serialize>(&mut self, token: Token, message: &T) {
        let Some(bytes) = encode(message) else { return };
        if let Some(conn) = self.conns.get_mut(&token)
            && let Err(e) = conn.io.channel.send(&bytes)
        {
            debug!(peer = %conn.io.peer, error = %e, "could not send");
        }
    }

    fn close_after_flush(&mut self, token: Token) {
        if let Some(conn) = self.conns.get_mut(&token) {
            conn.closing = true;
        }
    }

    /// Moves channel outputs: bytes out, messages in, closes handled by kind.
    fn drive_conns(&mut self) -> bool {
        let mut moved = false;
        let tokens: Vec<Token> = self.conns.keys().copied().collect();
        for token in tokens {
            let now = self.now();
            if self.conns.get_mut(&token).is_some_and(|c| std::mem::take(&mut c.io.more_to_read)) {
                self.service(token, true, false);
            }
            while let Some(output) = self.conns.get_mut(&token).and_then(|c| c.io.channel.poll_output()) {
                let Some(conn) = self.conns.get_mut(&token) else { break };
                moved = true;
                match output {
                    ChannelOutput::Transmit(bytes) => {
                        if !conn.io.queue(&bytes) {
                            warn!(peer = %conn.io.peer, "peer is not reading; dropping it");
                            conn.io.channel.close();
                        }
                    }
                    ChannelOutput::Established(peer) => {
                        conn.peer = Some(peer);
                        if matches!(conn.kind, Kind::AuditLink)
                            && let Some(link) = &mut self.link
                        {
                            link.backoff.succeeded();
                        }
                    }
                    ChannelOutput::Message(bytes) => self.on_message(now, token, &bytes),
                    ChannelOutput::Closed(reason) => {
                        if let CloseReason::Failed(e) = &reason {
                            debug!(peer = %conn.io.peer, error = %e, "exec channel failed");
                        }
                        let _ = conn.io.flush();
                        self.on_closed(now, token, &reason);
                        break;
                    }
                }
            }
            if let Some(conn) = self.conns.get_mut(&token) {
                let pending = match conn.io.flush() {
                    Ok(pending) => pending,
                    Err(_) => {
                        conn.io.channel.handle(now, ChannelInput::PeerClosed);
                        moved = true;
                        continue;
                    }
                };
                if conn.closing && !pending {
                    self.remove_conn(token);
                }
            }
        }
        moved
    }

    fn remove_conn(&mut self, token: Token) {
        if let Some(mut conn) = self.conns.remove(&token) {
            let _ = self.slot.registry().deregister(&mut conn.io.stream);
        }
    }

    fn on_closed(&mut self, now: Now, token: Token, reason: &CloseReason) {
        let Some(conn) = self.conns.get(&token) else { return };
        let why = match reason {
            _ if conn.failure.is_some() => conn.failure.clone().unwrap_or_default(),
            CloseReason::Failed(e) => e.to_string(),
            CloseReason::PeerClosed => "connection closed".into(),
            CloseReason::Local => "closed".into(),
        };
        match conn.kind {
            Kind::GatewayIn => {
                if let Some(g) = &mut self.gateway {
                    g.gateway.handle(now, GatewayInput::ClientGone { client: token.0 as u64 });
                    g.acks.retain(|_, (t, _)| *t != token);
                }
            }
            Kind::GatewayToHost { session } => {
                if let Some(g) = &mut self.gateway
                    && g.sessions.remove(&session).is_some()
                {
                    g.gateway.handle(now, GatewayInput::HostLost { session, reason: why });
                }
            }
            Kind::HostIn { host } => {
                if let Some(side) = self.hosts.get_mut(host) {
                    side.daemon.handle(now, DaemonInput::Gone { conn: session_of(token) });
                }
            }
            Kind::AuditLink => {
                if let Some(link) = &mut self.link {
                    link.token = None;
                    link.retry_at = Some(now.mono + link.backoff.failed(&mut self.rng));
                    // Unacknowledged records will be refused by the daemons' audit timeout.
                    link.in_flight.clear();
                }
            }
        }
        self.remove_conn(token);
    }

    fn on_message(&mut self, now: Now, token: Token, bytes: &[u8]) {
        let Some(conn) = self.conns.get_mut(&token) else { return };
        conn.spoke = true;
        let peer = conn.peer;
        match conn.kind {
            Kind::GatewayIn => match wire::decode::<GatewayWire>(bytes) {
                Ok(GatewayWire::Client(request)) => self.client_request(now, token, peer, request),
                Ok(GatewayWire::AuditSubmit { ack, record }) => self.audit_submit(token, ack, record),
                Err(e) => self.refuse_and_close(token, format!("bad request: {e}")),
            },
            Kind::GatewayToHost { session } => match wire::decode::<HostEvent>(bytes) {
                Ok(event) => {
                    let done = event.is_final();
                    if let Some(g) = &mut self.gateway {
                        if done {
                            g.sessions.remove(&session);
                        }
                        g.gateway.handle(now, GatewayInput::Host { session, event });
                    }
                    if done {
                        self.close_after_flush(token);
                    }
                }
                Err(e) => {
                    warn!(error = %e, "a host sent an undecodable event");
                    if let Some(conn) = self.conns.get_mut(&token) {
                        conn.io.channel.close();
                    }
                }
            },
            Kind::HostIn { host } => match wire::decode::<HostWire>(bytes) {
                Ok(message) => {
                    if let Some(side) = self.hosts.get_mut(host) {
                        side.daemon.handle(now, DaemonInput::Wire { conn: session_of(token), message });
                    }
                }
                Err(e) => {
                    warn!(error = %e, "an exec host got an undecodable message; closing");
                    if let Some(conn) = self.conns.get_mut(&token) {
                        conn.io.channel.close();
                    }
                }
            },
            Kind::AuditLink => match wire::decode::<GatewayReply>(bytes) {
                Ok(GatewayReply::AuditAck { ack }) => {
                    if let Some(link) = &mut self.link
                        && let Some((host, daemon_token)) = link.in_flight.remove(&ack)
                        && let Some(side) = self.hosts.get_mut(host)
                    {
                        side.daemon.handle(now, DaemonInput::AuditAcked { token: daemon_token });
                    }
                }
                Ok(GatewayReply::AuditRefused { ack, reason }) => {
                    warn!(ack, %reason, "the collector refused an audit record");
                    if let Some(link) = &mut self.link {
                        link.in_flight.remove(&ack);
                    }
                }
                Ok(GatewayReply::Client(_)) | Err(_) => warn!("unexpected message on the audit link"),
            },
        }
    }

    fn refuse_and_close(&mut self, token: Token, reason: String) {
        self.send_on(token, &GatewayReply::Client(ClientEvent::Refused { reason }));
        self.close_after_flush(token);
    }

    // ---- gateway ------------------------------------------------------------------------------

    fn client_request(
        &mut self,
        now: Now,
        token: Token,
        peer: Option<PublicIdentity>,
        request: ClientRequest,
    ) {
        let Some(client_key) = peer.map(|p| p.agreement) else { return };
        // The member role's installed groups reach the gateway before each request it expands.
        let groups = self.groups.read().map(|g| g.clone()).unwrap_or_default();
        if let Some(g) = &mut self.gateway {
            g.gateway.handle(now, GatewayInput::Groups(groups));
            g.gateway.handle(now, GatewayInput::Client { client: token.0 as u64, client_key, request });
        }
    }

    fn audit_submit(&mut self, token: Token, remote_ack: u64, record: Signed<AuditRecord>) {
        let now = self.now();
        let Some(g) = &mut self.gateway else { return };
        let ack = g.next_ack;
        g.next_ack += 1;
        g.acks.insert(ack, (token, remote_ack));
        g.collector.handle(now, CollectorInput::Submit { ack, record });
    }

    fn drive_gateway(&mut self) -> Result<bool, NodeError> {
        let mut moved = false;
        loop {
            let Some(g) = &mut self.gateway else { return Ok(moved) };
            if let Some(out) = g.collector.poll_output() {
                moved = true;
                match out {
                    CollectorOutput::Append(entry) => {
                        self.store.append_chain(&entry)?;
                        let now = self.now();
                        if let Some(g) = &mut self.gateway {
                            g.collector.handle(now, CollectorInput::Persisted { index: entry.index });
                        }
                    }
                    CollectorOutput::Ack { ack, .. } => {
                        if let Some((token, remote)) = g.acks.remove(&ack) {
                            self.send_on(token, &GatewayReply::AuditAck { ack: remote });
                        }
                    }
                    CollectorOutput::Refused { ack, refusal } => {
                        warn!(%refusal, "audit record refused");
                        if let Some((token, remote)) = g.acks.remove(&ack) {
                            let reason = refusal.to_string();
                            self.send_on(token, &GatewayReply::AuditRefused { ack: remote, reason });
                        }
                    }
                }
                continue;
            }
            let Some(out) = g.gateway.poll_output() else { return Ok(moved) };
            moved = true;
            match out {
                GatewayOutput::ToClient { client, event } => {
                    self.send_on(Token(client as usize), &GatewayReply::Client(event));
                }
                GatewayOutput::CloseClient { client } => self.close_after_flush(Token(client as usize)),
                GatewayOutput::HostStart { session, host, identity, request } => {
                    let addr = g.hosts.get(&host).map(|(a, _)| *a);
                    let connected = match addr {
                        Some(addr) => self.connect(addr, identity, Kind::GatewayToHost { session }),
                        None => Err(format!("no address for host `{host}`")),
                    };
                    match connected {
                        Ok(token) => {
                            if let Some(g) = &mut self.gateway {
                                g.sessions.insert(session, token);
                            }
                            self.send_on(token, &HostWire::Start(Box::new(request)));
                        }
                        Err(reason) => {
                            let now = self.now();
                            if let Some(g) = &mut self.gateway {
                                g.gateway.handle(now, GatewayInput::HostLost { session, reason });
                            }
                        }
                    }
                }
                GatewayOutput::HostCancel { session, reason } => {
                    if let Some(token) = g.sessions.get(&session).copied() {
                        self.send_on(token, &HostWire::Cancel { reason });
                    }
                }
                GatewayOutput::Audit(record) => {
                    let now = self.now();
                    if let Some(g) = &mut self.gateway {
                        let ack = g.next_ack;
                        g.next_ack += 1;
                        g.collector.handle(now, CollectorInput::Submit { ack, record });
                    }
                }
            }
        }
    }

    // ---- exec hosts ---------------------------------------------------------------------------

    fn drive_hosts(&mut self) -> Result<bool, NodeError> {
        let mut moved = false;
        for host in 0..self.hosts.len() {
            while let Some(out) = self.hosts[host].daemon.poll_output() {
                moved = true;
                let now = self.now();
                match out {
                    DaemonOutput::PersistAudit { token, record } => {
                        self.store.append_local_audit(&record)?;
                        self.hosts[host].daemon.handle(now, DaemonInput::AuditPersisted { token });
                    }
                    DaemonOutput::SubmitAudit { token, record: signed } => {
                        if let Some(link) = &mut self.link
                            && link.queue.len() < MAX_AUDIT_QUEUE
                        {
                            let ack = link.next_ack;
                            link.next_ack += 1;
                            link.in_flight.insert(ack, (host, token));
                            link.queue.push_back((ack, signed));
                        }
                    }
                    DaemonOutput::Spawn { session, run_as, argv } => {
                        self.spawn(host, session, &run_as, &argv)
                    }
                    DaemonOutput::Kill { session } => {
                        if let Some(child) = self.hosts[host].children.get_mut(&session) {
                            match child.kill_group() {
                                Ok(status) => {
                                    self.forget_pipes(host, session);
                                    self.hosts[host].children.remove(&session);
                                    let end = process_end(status);
                                    self.hosts[host].daemon.handle(now, DaemonInput::Exited { session, end });
                                }
                                Err(e) => warn!(error = %e, "kill failed"),
                            }
                        }
                    }
                    DaemonOutput::Reply { session, event } => self.send_on(conn_of(session), &event),
                    DaemonOutput::Done { session } => self.close_after_flush(conn_of(session)),
                }
            }
        }
        Ok(moved)
    }

    fn spawn(&mut self, host: usize, session: u64, run_as: &str, argv: &[String]) {
        let (out, err) = (self.token(), self.token());
        let now = self.now();
        match RunningChild::spawn(argv, run_as, &[], self.slot.registry(), out, err) {
            Ok(child) => {
                debug!(host = %self.hosts[host].daemon.host(), pid = child.pid(), "spawned");
                self.pipes.insert(out, (host, session, Stream::Stdout));
                self.pipes.insert(err, (host, session, Stream::Stderr));
                self.hosts[host].children.insert(session, child);
            }
            Err(e) => {
                let reason = e.to_string();
                self.hosts[host].daemon.handle(now, DaemonInput::SpawnFailed { session, reason });
            }
        }
    }

    fn forget_pipes(&mut self, host: usize, session: u64) {
        self.pipes.retain(|_, (h, s, _)| !(*h == host && *s == session));
    }

    fn read_pipe(&mut self, token: Token) {
        let Some(&(host, session, stream)) = self.pipes.get(&token) else { return };
        let now = self.now();
        let Some(child) = self.hosts[host].children.get_mut(&session) else { return };
        match child.read(stream, 256 * 1024) {
            Ok(Some(bytes)) => {
                let stderr = stream == Stream::Stderr;
                self.hosts[host].daemon.handle(now, DaemonInput::Output { session, stderr, bytes });
            }
            Ok(None) => {
                self.pipes.remove(&token);
            }
            Err(e) => debug!(error = %e, "pipe read failed"),
        }
        self.reap_children();
    }

    fn reap_children(&mut self) {
        let now = self.now();
        for host in 0..self.hosts.len() {
            let done: Vec<(u64, ProcessEnd)> = self.hosts[host]
                .children
                .iter_mut()
                .filter(|(_, c)| c.output_closed())
                .filter_map(|(s, c)| c.try_wait().ok().flatten().map(|status| (*s, process_end(status))))
                .collect();
            for (session, end) in done {
                self.hosts[host].children.remove(&session);
                self.forget_pipes(host, session);
                self.hosts[host].daemon.handle(now, DaemonInput::Exited { session, end });
            }
        }
    }

    // ---- audit link ---------------------------------------------------------------------------

    fn drive_link(&mut self) -> bool {
        let now = self.now();
        let Some(link) = &mut self.link else { return false };
        if link.queue.is_empty() {
            return false;
        }
        if link.token.is_none() {
            if link.retry_at.is_some_and(|t| t > now.mono) {
                return false;
            }
            let (addr, identity) = (link.addr, link.identity);
            let connected = self.connect(addr, identity, Kind::AuditLink);
            let Some(link) = &mut self.link else { return false };
            match connected {
                Ok(token) => {
                    link.token = Some(token);
                    link.retry_at = None;
                }
                Err(e) => {
                    let wait = link.backoff.failed(&mut self.rng);
                    link.retry_at = Some(now.mono + wait);
                    warn!(%addr, error = %e, retry_in = ?wait, "audit collector unreachable");
                    return false;
                }
            }
        }
        let Some(link) = &mut self.link else { return false };
        let Some(token) = link.token else { return false };
        let queued: Vec<(u64, Signed<AuditRecord>)> = link.queue.drain(..).collect();
        for (ack, record) in queued {
            self.send_on(token, &GatewayWire::AuditSubmit { ack, record });
        }
        true
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

/// Hosts named by a nodeset, for tests and tools that check a gateway's table.
pub fn known_hosts(runtime: &ExecRuntime) -> BTreeSet<String> {
    runtime.gateway.as_ref().map(|g| g.hosts.keys().cloned().collect()).unwrap_or_default()
}

impl Role for ExecRuntime {
    fn name(&self) -> &'static str {
        "exec"
    }

    fn settle(&mut self) -> Result<(), NodeError> {
        self.drive_all()
    }

    fn next_wake(&self) -> Option<std::time::Instant> {
        let deadline = self.next_deadline().map(|d| self.clock.wake_at(d));
        // Children that closed their pipes may not have been reaped yet: look again soon.
        if self.hosts.iter().any(|h| h.children.values().any(RunningChild::output_closed)) {
            let soon = std::time::Instant::now() + Duration::from_millis(10);
            return Some(deadline.map_or(soon, |d| d.min(soon)));
        }
        deadline
    }

    fn handle_event(&mut self, event: &Event) -> Result<(), NodeError> {
        let token = event.token();
        match self.slot.local(token) {
            GATEWAY_LISTENER => self.accept_gateway(),
            t if (FIRST_HOST_LISTENER..FIRST_DYNAMIC).contains(&t) => {
                self.accept_host(t - FIRST_HOST_LISTENER)
            }
            _ if self.pipes.contains_key(&token) => self.read_pipe(token),
            _ => self.service(token, event.is_readable(), event.is_writable()),
        }
        Ok(())
    }

    fn fire_timeouts(&mut self) -> Result<(), NodeError> {
        self.fire_due();
        Ok(())
    }

    fn stop(&mut self) {
        for host in &mut self.hosts {
            for child in host.children.values_mut() {
                let _ = child.kill_group();
            }
        }
        info!("exec roles stopped");
    }
}
