//! The member role of a node: a cluster member over UDP and the admin channel over TCP, with state
//! in SQLite, hosted by the process's event loop (`reactor`). Owns its sockets, timers, storage and the
//! limits that keep hostile peers from costing more than their share: open handshakes are bounded
//! in number and time, each connection's write queue is bounded, and reads are budgeted. Protocol
//! rules stay in core.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cohort_core::admin::{AdminRequest, AdminResponse, node_status};
use cohort_core::channel::{Channel, ChannelConfig, ChannelOutput, CloseReason, TrustSet};
use cohort_core::member::{Member, MemberInput, MemberOutput, MemberSettings};
use cohort_core::rng::{SeededRng, fork};
use cohort_core::{Instant, Machine, NodeKeys, Now, wire};
use mio::event::Event;
use mio::net::{TcpListener, UdpSocket};
use mio::{Interest, Token};
use tracing::{debug, info, warn};

use crate::channel_conn::{ChannelConn, ReadOutcome};
use crate::clock::Clock;
use crate::entropy::os_seeded_rng;
use crate::keyfile;
use crate::node_config::NodeConfig;
use crate::reactor::{Role, Slot};
use crate::store::{Store, StoreError};

// The role's own token numbers (see `reactor::Slot`).
const UDP: usize = 0;
const LISTENER: usize = 1;
const FIRST_CONN: usize = 16;

/// Limits on the admin listener.
#[derive(Debug, Clone, Copy)]
pub struct AdminLimits {
    /// Connections still in their handshake; more are refused at accept.
    pub max_handshaking: usize,
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    /// Largest admin message either way.
    pub max_message: usize,
}

impl AdminLimits {
    /// The limits a node configuration asks for; the rest default.
    pub fn from_config(config: &NodeConfig) -> AdminLimits {
        AdminLimits {
            max_handshaking: config.admin_max_handshaking,
            handshake_timeout: config.admin_handshake_timeout(),
            ..AdminLimits::default()
        }
    }
}

impl Default for AdminLimits {
    fn default() -> Self {
        AdminLimits {
            max_handshaking: 32,
            max_connections: 256,
            handshake_timeout: Duration::from_secs(5),
            max_message: 1024 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{0}")]
    Key(#[from] keyfile::KeyFileIoError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Config(#[from] crate::node_config::NodeConfigError),
    #[error("{path} holds no member state; create the cluster with `cohort init` first")]
    NoState { path: std::path::PathBuf },
    #[error("could not {what} {addr}: {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("event loop failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the {role} role: {source}")]
    InRole { role: &'static str, source: Box<NodeError> },
}

impl NodeError {
    /// Names the role an error came from (once).
    pub fn in_role(self, role: &'static str) -> NodeError {
        match self {
            NodeError::InRole { .. } => self,
            other => NodeError::InRole { role, source: Box::new(other) },
        }
    }
}

pub struct Node {
    config: NodeConfig,
    keys: NodeKeys,
    slot: Slot,
    udp: UdpSocket,
    listener: TcpListener,
    member: Member,
    store: Store,
    rng: SeededRng,
    clock: Clock,
    conns: BTreeMap<Token, ChannelConn>,
    next_conn: usize,
    next_request: u64,
    /// Requests fed to the member, by id, waiting for its answer.
    waiting: BTreeMap<u64, Token>,
    limits: AdminLimits,
    /// `group.NAME` settings, published for the exec roles' node sets.
    groups: Option<crate::exec_runtime::SharedGroups>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("member", &self.member).field("conns", &self.conns.len()).finish()
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Node {
    /// Opens storage, binds sockets and starts the member from its stored record.
    pub fn start(config: NodeConfig, limits: AdminLimits, slot: Slot) -> Result<Node, NodeError> {
        let keys = keyfile::read_key_file(&config.key_file)?;
        let store = Store::open(&config.database())?;
        let record = store.load_member()?.ok_or_else(|| NodeError::NoState { path: config.database() })?;
        let mut udp = UdpSocket::bind(config.listen).map_err(|source| NodeError::Bind {
            what: "bind the member socket on",
            addr: config.listen,
            source,
        })?;
        let mut listener = TcpListener::bind(config.admin_listen).map_err(|source| NodeError::Bind {
            what: "listen for admin connections on",
            addr: config.admin_listen,
            source,
        })?;
        slot.register(&mut udp, UDP, Interest::READABLE)?;
        slot.register(&mut listener, LISTENER, Interest::READABLE)?;
        let mut rng = os_seeded_rng();
        let clock = Clock::start();
        let settings = MemberSettings { heartbeat: config.heartbeat(), ..MemberSettings::default() };
        info!(
            node = %keys.node_id(),
            listen = %config.listen,
            admin = %config.admin_listen,
            active = %record.active.version(),
            staged = ?record.staged.as_ref().map(|s| s.version()),
            "node starting"
        );
        let member = Member::new(Instant::ZERO, keys.clone(), record, settings, fork(&mut rng));
        Ok(Node {
            config,
            keys,
            slot,
            udp,
            listener,
            member,
            store,
            rng,
            clock,
            conns: BTreeMap::new(),
            next_conn: FIRST_CONN,
            next_request: 1,
            waiting: BTreeMap::new(),
            limits,
            groups: None,
        })
    }

    /// Publishes the active configuration's `group.NAME` settings into `groups`, now and at
    /// every install.
    pub fn share_groups(&mut self, groups: crate::exec_runtime::SharedGroups) {
        self.groups = Some(groups);
        self.publish_groups();
    }

    fn publish_groups(&self) {
        let Some(shared) = &self.groups else { return };
        let settings = &self.member.active().config.settings;
        let groups = settings
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("group.").map(|name| (name.to_owned(), v.clone())))
            .collect();
        if let Ok(mut slot) = shared.write() {
            *slot = groups;
        }
    }

    fn now(&self) -> Now {
        self.clock.now()
    }

    fn next_deadline(&self) -> Option<Instant> {
        let conns = self.conns.values().filter_map(|c| c.channel.poll_timeout());
        self.member.poll_timeout().into_iter().chain(conns).min()
    }

    fn fire_member_timeouts(&mut self) {
        let now = self.now();
        if self.member.poll_timeout().is_some_and(|t| t <= now.mono) {
            self.member.handle(now, MemberInput::Timeout);
        }
        for conn in self.conns.values_mut() {
            if conn.channel.poll_timeout().is_some_and(|t| t <= now.mono) {
                conn.channel.handle(now, cohort_core::channel::ChannelInput::Timeout);
            }
        }
    }

    // ---- member -----------------------------------------------------------------------------

    fn read_datagrams(&mut self) {
        let mut buf = vec![0u8; 64 * 1024];
        // Bounded per wake-up so a flood cannot starve timers and admin connections.
        for _ in 0..1024 {
            match self.udp.recv_from(&mut buf) {
                Ok((len, _from)) => {
                    let now = self.now();
                    self.member.handle(now, MemberInput::Received(buf[..len].to_vec()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    warn!(error = %e, "member socket read failed");
                    return;
                }
            }
        }
    }

    fn drive_member(&mut self) -> Result<(), NodeError> {
        while let Some(output) = self.member.poll_output() {
            match output {
                MemberOutput::Send { to, address, message } => {
                    let Ok(addr) = address.parse::<SocketAddr>() else {
                        warn!(%to, %address, "member address is not IP:PORT; message not sent");
                        continue;
                    };
                    match message.to_wire() {
                        Ok(bytes) => {
                            if let Err(e) = self.udp.send_to(&bytes, addr) {
                                debug!(%to, %addr, error = %e, "send failed (counted as loss)");
                            }
                        }
                        Err(e) => warn!(%to, error = %e, "could not encode a member message"),
                    }
                }
                MemberOutput::Persist { token, record } => {
                    // Durable before the member hears so: the commit returns only once synced.
                    self.store.save_member(&record, unix_ms())?;
                    let now = self.now();
                    self.member.handle(now, MemberInput::Persisted(token));
                }
                MemberOutput::Staged { version } => info!(%version, "configuration staged"),
                MemberOutput::Installed { version, .. } => {
                    info!(%version, "configuration installed");
                    self.publish_groups();
                }
                MemberOutput::Dropped { reason } => debug!(%reason, "member message dropped"),
                MemberOutput::ChangeAccepted { request_id, version } => {
                    info!(%version, "operator change accepted");
                    self.answer(request_id, &AdminResponse::ChangeAccepted { version });
                }
                MemberOutput::ChangeRejected { request_id, error } => {
                    info!(%error, "operator change rejected");
                    self.answer(request_id, &AdminResponse::ChangeRejected { reason: error.to_string() });
                }
                MemberOutput::LookupAnswer { request_id, answer } => {
                    self.answer(request_id, &AdminResponse::Lookup(answer.into()));
                }
            }
        }
        Ok(())
    }

    // ---- admin channel ----------------------------------------------------------------------

    /// Who may open the admin channel: the operators the active configuration lists, and this
    /// node's own key (for `cohort status` run on the node itself).
    fn admin_trust(&self) -> TrustSet {
        let operators = self.member.active().config.operators.values().map(|o| o.identity);
        operators.chain([self.keys.public()]).collect()
    }

    fn accept(&mut self) {
        loop {
            let (mut stream, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    return;
                }
            };
            let handshaking = self.conns.values().filter(|c| !c.channel.is_established()).count();
            if handshaking >= self.limits.max_handshaking || self.conns.len() >= self.limits.max_connections {
                warn!(%peer, handshaking, open = self.conns.len(), "admin connection refused: too many open");
                continue;
            }
            let config = ChannelConfig {
                max_message_len: self.limits.max_message,
                handshake_timeout: self.limits.handshake_timeout,
                max_queued_bytes: self.limits.max_message,
            };
            let now = self.now();
            let channel = match Channel::responder(
                now.mono,
                config,
                &self.keys,
                self.admin_trust(),
                fork(&mut self.rng),
            ) {
                Ok(channel) => channel,
                Err(e) => {
                    warn!(%peer, error = %e, "could not start an admin channel");
                    continue;
                }
            };
            let token = self.slot.token(self.next_conn);
            self.next_conn += 1;
            if let Err(e) = self.slot.registry().register(&mut stream, token, Interest::READABLE) {
                warn!(%peer, error = %e, "could not register an admin connection");
                continue;
            }
            debug!(%peer, "admin connection opened");
            self.conns.insert(token, ChannelConn::new(stream, peer, channel));
        }
    }

    fn service_connection(&mut self, token: Token, readable: bool, writable: bool) {
        let now = self.now();
        let Some(conn) = self.conns.get_mut(&token) else { return };
        if readable {
            match conn.read(now) {
                Ok(ReadOutcome::Drained | ReadOutcome::Eof) => {}
                // More is waiting: mio is edge-triggered, so come back for it on the next pass.
                Ok(ReadOutcome::Budget) => conn.more_to_read = true,
                Err(e) => {
                    debug!(peer = %conn.peer, error = %e, "admin connection read failed");
                    self.drop_connection(token, "read failed");
                    return;
                }
            }
        }
        if writable {
            self.flush(token);
        }
    }

    /// Drains every channel's outputs: bytes to write, requests to serve, closes to act on.
    /// Returns whether any request reached the member.
    fn drive_connections(&mut self) -> bool {
        let mut fed_member = false;
        let tokens: Vec<Token> = self.conns.keys().copied().collect();
        for token in tokens {
            // A connection that hit its read budget still has bytes waiting.
            let more = self.conns.get_mut(&token).is_some_and(|c| std::mem::take(&mut c.more_to_read));
            if more {
                self.service_connection(token, true, false);
            }
            while let Some(output) = self.conns.get_mut(&token).and_then(|c| c.channel.poll_output()) {
                match output {
                    ChannelOutput::Transmit(bytes) => {
                        let fits = self.conns.get_mut(&token).is_some_and(|c| c.queue(&bytes));
                        if !fits {
                            self.drop_connection(token, "peer is not reading; write queue full");
                            break;
                        }
                    }
                    ChannelOutput::Established(peer) => {
                        debug!(operator = %peer.node_id(), "admin channel established");
                    }
                    ChannelOutput::Message(bytes) => {
                        self.handle_admin(token, &bytes);
                        fed_member = true;
                    }
                    ChannelOutput::Closed(reason) => {
                        let why = match &reason {
                            CloseReason::Failed(e) => e.to_string(),
                            CloseReason::PeerClosed => "peer closed".into(),
                            CloseReason::Local => "closed".into(),
                        };
                        if matches!(reason, CloseReason::Failed(_)) {
                            let peer = self.conns.get(&token).map(|c| c.peer);
                            warn!(peer = ?peer, reason = %why, "admin connection dropped");
                        }
                        self.flush(token);
                        self.drop_connection(token, &why);
                        break;
                    }
                }
            }
            self.flush(token);
        }
        fed_member
    }

    fn flush(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(&token) else { return };
        match conn.flush() {
            Ok(pending) => {
                let interest =
                    if pending { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
                let _ = self.slot.registry().reregister(&mut conn.stream, token, interest);
            }
            Err(e) => {
                debug!(peer = %conn.peer, error = %e, "admin connection write failed");
                self.drop_connection(token, "write failed");
            }
        }
    }

    fn drop_connection(&mut self, token: Token, why: &str) {
        if let Some(mut conn) = self.conns.remove(&token) {
            debug!(peer = %conn.peer, why, "admin connection closed");
            let _ = self.slot.registry().deregister(&mut conn.stream);
            self.waiting.retain(|_, t| *t != token);
        }
    }

    fn handle_admin(&mut self, token: Token, bytes: &[u8]) {
        if self.conns.get(&token).is_some_and(|c| c.awaiting.is_some()) {
            return self.reply(token, &AdminResponse::Error("one request at a time per connection".into()));
        }
        let request: AdminRequest = match wire::decode(bytes) {
            Ok(request) => request,
            Err(e) => return self.reply(token, &AdminResponse::Error(format!("bad request: {e}"))),
        };
        let now = self.now();
        match request {
            AdminRequest::Status => {
                let status = node_status(&self.member, now.mono);
                self.reply(token, &AdminResponse::Status(status));
            }
            AdminRequest::Change(request) => {
                let id = self.track(token);
                self.member.handle(now, MemberInput::Change { request_id: id, request });
            }
            AdminRequest::Lookup { key } => {
                let id = self.track(token);
                self.member.handle(now, MemberInput::Lookup { request_id: id, key });
            }
        }
    }

    fn track(&mut self, token: Token) -> u64 {
        let id = self.next_request;
        self.next_request += 1;
        self.waiting.insert(id, token);
        if let Some(conn) = self.conns.get_mut(&token) {
            conn.awaiting = Some(id);
        }
        id
    }

    fn answer(&mut self, request_id: u64, response: &AdminResponse) {
        if let Some(token) = self.waiting.remove(&request_id) {
            if let Some(conn) = self.conns.get_mut(&token) {
                conn.awaiting = None;
            }
            self.reply(token, response);
        }
    }

    fn reply(&mut self, token: Token, response: &AdminResponse) {
        let Some(conn) = self.conns.get_mut(&token) else { return };
        match wire::encode(response) {
            Ok(bytes) => {
                if let Err(e) = conn.channel.send(&bytes) {
                    warn!(peer = %conn.peer, error = %e, "could not send an admin answer");
                }
            }
            Err(e) => warn!(error = %e, "could not encode an admin answer"),
        }
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }
}

impl Role for Node {
    fn name(&self) -> &'static str {
        "member"
    }

    fn settle(&mut self) -> Result<(), NodeError> {
        // Admin requests feed the member and the member answers them: settle both before
        // sleeping, or an answer would wait for the next timer.
        loop {
            self.drive_member()?;
            if !self.drive_connections() {
                return Ok(());
            }
        }
    }

    fn next_wake(&self) -> Option<std::time::Instant> {
        self.next_deadline().map(|d| self.clock.wake_at(d))
    }

    fn handle_event(&mut self, event: &Event) -> Result<(), NodeError> {
        match self.slot.local(event.token()) {
            UDP => self.read_datagrams(),
            LISTENER => self.accept(),
            _ => self.service_connection(event.token(), event.is_readable(), event.is_writable()),
        }
        Ok(())
    }

    fn fire_timeouts(&mut self) -> Result<(), NodeError> {
        self.fire_member_timeouts();
        Ok(())
    }

    fn stop(&mut self) {
        for (_, conn) in std::mem::take(&mut self.conns) {
            let _ = conn.stream.shutdown(std::net::Shutdown::Both);
        }
        info!(active = %self.member.active_version(), "member stopped");
    }
}
