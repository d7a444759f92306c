//! The node's connections: a Noise channel per connection, who owns each (a listener or an
//! outbound link), the peer each channel authenticated, and the limits that keep a hostile peer
//! from costing more than its share: open and mid-handshake connections per listener, connections
//! per peer, a deadline for a first message, an idle timeout, and a bound on bytes the driver
//! holds for a peer that does not read. It never interprets a message: whole messages go to the
//! owner, with the authenticated peer.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use super::io::{ConnId, Event, ListenerId, Output};
use crate::channel::{Channel, ChannelConfig, ChannelInput, ChannelOutput, CloseReason, TrustSet};
use crate::identity::{NodeKeys, PublicIdentity};
use crate::machine::Machine;
use crate::rng::{SeededRng, fork};
use crate::time::{Instant, Now};

/// Above this many bytes waiting to be written, a connection is congested: producers that can
/// wait (a command's output, results for a client) hold back ...
const HIGH_WATER: usize = 1024 * 1024;
/// ... until it is down to this.
const LOW_WATER: usize = 256 * 1024;

/// What one listener admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections open at once; more are refused at accept.
    pub max_open: usize,
    /// Of those, still in their handshake.
    pub max_handshaking: usize,
    /// Established connections from one peer key.
    pub max_per_peer: usize,
    pub handshake_timeout: Duration,
    /// An inbound connection must deliver a whole message this soon after it opens.
    pub first_message: Duration,
    /// A connection with no message received for this long is closed (`None`: never).
    pub idle: Option<Duration>,
    /// A frame begun must be whole this soon (a frame is at most 64 KiB, so this asks a peer
    /// for a couple of kilobytes a second): one byte at a time holds no connection open.
    pub frame_timeout: Duration,
    /// Largest message either way.
    pub max_message: usize,
    /// Bytes given to the driver and not yet written before the peer counts as not reading.
    pub max_backlog: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_open: 4096,
            max_handshaking: 64,
            max_per_peer: 64,
            handshake_timeout: Duration::from_secs(5),
            first_message: Duration::from_secs(30),
            idle: None,
            frame_timeout: Duration::from_secs(30),
            max_message: 4 * 1024 * 1024,
            max_backlog: 16 * 1024 * 1024,
        }
    }
}

impl ConnLimits {
    fn channel_config(&self) -> ChannelConfig {
        ChannelConfig {
            max_message_len: self.max_message,
            handshake_timeout: self.handshake_timeout,
            max_queued_bytes: self.max_message,
        }
    }
}

/// Who a connection's messages belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Owner {
    Listener(ListenerId),
    /// An outbound link, by the index its host gave it.
    Link(usize),
    /// A one-off outbound connection a role opened, by the role's own number for it (a
    /// gateway's question to the KDC).
    Dial(u64),
    /// A gateway's channel to an exec host, by the gateway's number for it: it carries many
    /// sessions and outlives each.
    HostChannel(u64),
}

/// What a connection produced, for its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnEvent {
    Established {
        conn: ConnId,
        owner: Owner,
        peer: PublicIdentity,
    },
    Message {
        conn: ConnId,
        owner: Owner,
        peer: PublicIdentity,
        bytes: Vec<u8>,
    },
    /// The connection is gone, with the error that ended it if one did; nothing more comes.
    Gone {
        conn: ConnId,
        owner: Owner,
        error: Option<String>,
    },
    /// A congested connection is down to its low-water mark: producers may go on.
    Drained {
        conn: ConnId,
        owner: Owner,
    },
}

#[derive(Debug)]
struct Listener {
    /// What it serves, as logs name it ("admin", "gateway", ...).
    name: &'static str,
    keys: NodeKeys,
    trust: TrustSet,
    limits: ConnLimits,
}

#[derive(Debug)]
struct Conn {
    channel: Channel,
    owner: Owner,
    limits: ConnLimits,
    peer: Option<PublicIdentity>,
    opened: Instant,
    last_message: Option<Instant>,
    /// When bytes last arrived once the first message was whole: a large message in transit
    /// keeps a connection from counting as idle.
    last_bytes: Option<Instant>,
    /// When the frame now arriving began (`None`: no frame half-read).
    frame_started: Option<Instant>,
    backlog: usize,
    /// Over the high-water mark since it last drained: its producer should wait.
    congested: bool,
    /// Closed by this side; the `Gone` has been reported.
    done: bool,
    /// The driver's error for a connection that ended on one.
    error: Option<String>,
    /// Its entry in the table's deadlines.
    filed: Option<Instant>,
}

impl Conn {
    fn last_heard(&self) -> Instant {
        self.last_bytes.max(self.last_message).unwrap_or(self.opened)
    }

    fn deadline(&self) -> Option<Instant> {
        let first = match self.last_message {
            None if matches!(self.owner, Owner::Listener(_)) => Some(self.opened + self.limits.first_message),
            _ => None,
        };
        let idle = self.limits.idle.map(|idle| self.last_heard() + idle);
        let frame = self.frame_started.map(|at| at + self.limits.frame_timeout);
        [first, idle, frame, self.channel.poll_timeout()].into_iter().flatten().min()
    }
}

/// The connection table. See the module docs.
#[derive(Debug)]
pub struct Connections {
    listeners: BTreeMap<ListenerId, Listener>,
    conns: BTreeMap<ConnId, Conn>,
    /// Every connection's next deadline, earliest first, so the next wake-up is found without
    /// asking each of thousands; kept current by [`Connections::pump`], which follows every
    /// change to a connection.
    deadlines: BTreeSet<(Instant, ConnId)>,
    rng: SeededRng,
    next_outbound: u64,
    /// The time of the input being handled: when a message counts as heard.
    now: Instant,
    outputs: VecDeque<Output>,
    events: VecDeque<ConnEvent>,
}

impl Connections {
    pub fn new(rng: SeededRng) -> Connections {
        Connections {
            listeners: BTreeMap::new(),
            conns: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            rng,
            next_outbound: 1,
            now: Instant::ZERO,
            outputs: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Listens on `addr`, presenting `keys` and admitting the peers `trust` names.
    pub fn listen(
        &mut self,
        name: &'static str,
        addr: String,
        keys: NodeKeys,
        trust: TrustSet,
        limits: ConnLimits,
    ) -> ListenerId {
        let listener = ListenerId(u32::try_from(self.listeners.len()).unwrap_or(u32::MAX));
        self.listeners.insert(listener, Listener { name, keys, trust, limits });
        self.outputs.push_back(Output::Listen { listener, addr });
        listener
    }

    /// Replaces whom a listener admits (a configuration changed); open channels stay.
    /// Replaces what `listener` admits. A connection already open from a peer the new set does
    /// not name is closed: a removed member or a replaced key must not keep talking on the
    /// channel it opened while it was trusted.
    pub fn set_trust(&mut self, listener: ListenerId, trust: TrustSet) {
        let Some(l) = self.listeners.get_mut(&listener) else { return };
        let name = l.name;
        let revoked: Vec<(ConnId, PublicIdentity)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.owner == Owner::Listener(listener) && !c.done)
            .filter_map(|(id, c)| c.peer.map(|p| (*id, p)))
            .filter(|(_, peer)| trust.lookup(&peer.agreement) != Some(*peer))
            .collect();
        l.trust = trust;
        for (conn, peer) in revoked {
            let peer = peer.node_id().to_string();
            self.outputs.push_back(Output::Log(Event::NoLongerTrusted { listener: name, conn, peer }));
            self.close(conn);
        }
    }

    /// Opens a channel to `addr` as `keys`, trusting only `peer`.
    pub fn connect(
        &mut self,
        now: Now,
        addr: String,
        keys: &NodeKeys,
        peer: PublicIdentity,
        owner: Owner,
        limits: ConnLimits,
    ) -> Result<ConnId, String> {
        let trust: TrustSet = [peer].into_iter().collect();
        let channel = Channel::initiator(now.mono, limits.channel_config(), keys, trust, fork(&mut self.rng))
            .map_err(|e| e.to_string())?;
        let conn = ConnId(self.next_outbound);
        self.next_outbound += 1;
        self.outputs.push_back(Output::Connect { conn, addr });
        self.insert(now, conn, channel, owner, limits);
        Ok(conn)
    }

    fn insert(&mut self, now: Now, conn: ConnId, channel: Channel, owner: Owner, limits: ConnLimits) {
        self.now = now.mono;
        let fresh = Conn {
            channel,
            owner,
            limits,
            peer: None,
            opened: now.mono,
            last_message: None,
            last_bytes: None,
            frame_started: None,
            backlog: 0,
            congested: false,
            done: false,
            error: None,
            filed: None,
        };
        self.conns.insert(conn, fresh);
        self.pump(conn);
    }

    /// A driver accepted `conn` on `listener`: admitted within the listener's limits, or closed.
    pub fn accepted(&mut self, now: Now, listener: ListenerId, conn: ConnId) {
        let Some(l) = self.listeners.get(&listener) else {
            return self.outputs.push_back(Output::Close { conn });
        };
        let of_listener = || self.conns.values().filter(|c| c.owner == Owner::Listener(listener));
        let open = of_listener().count();
        let handshaking = of_listener().filter(|c| c.peer.is_none()).count();
        if !conn.is_inbound()
            || self.conns.contains_key(&conn)
            || open >= l.limits.max_open
            || handshaking >= l.limits.max_handshaking
        {
            let listener = l.name;
            self.outputs.push_back(Output::Log(Event::Refused { listener, conn, open, handshaking }));
            return self.outputs.push_back(Output::Close { conn });
        }
        let limits = l.limits;
        let channel = Channel::responder(
            now.mono,
            limits.channel_config(),
            &l.keys,
            l.trust.clone(),
            fork(&mut self.rng),
        );
        match channel {
            Ok(channel) => self.insert(now, conn, channel, Owner::Listener(listener), limits),
            Err(e) => {
                let error = e.to_string();
                self.outputs.push_back(Output::Log(Event::ConnFailed { conn, error }));
                self.outputs.push_back(Output::Close { conn });
            }
        }
    }

    pub fn received(&mut self, now: Now, conn: ConnId, bytes: Vec<u8>) {
        self.now = now.mono;
        if let Some(c) = self.conns.get_mut(&conn) {
            if c.last_message.is_some() {
                c.last_bytes = Some(now.mono);
            }
            let read = c.channel.frames_read();
            c.channel.handle(now, ChannelInput::Received(bytes));
            // The clock runs from the first byte of the frame still unfinished.
            c.frame_started = match (c.channel.partial_frame(), c.channel.frames_read() != read) {
                (false, _) => None,
                (true, true) => Some(now.mono),
                (true, false) => c.frame_started.or(Some(now.mono)),
            };
            self.pump(conn);
        }
    }

    pub fn written(&mut self, conn: ConnId, bytes: usize) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.backlog = c.backlog.saturating_sub(bytes);
            if c.congested && c.backlog <= LOW_WATER {
                c.congested = false;
                self.events.push_back(ConnEvent::Drained { conn, owner: c.owner });
            }
        }
    }

    /// Whether `conn` has more waiting to be written than a producer should add to: it should
    /// hold back until [`ConnEvent::Drained`].
    pub fn congested(&self, conn: ConnId) -> bool {
        self.conns.get(&conn).is_some_and(|c| c.congested)
    }

    /// The driver saw `conn` end.
    pub fn closed(&mut self, now: Now, conn: ConnId, error: Option<String>) {
        self.now = now.mono;
        let Some(c) = self.conns.get_mut(&conn) else { return };
        if let Some(error) = &error {
            let error = error.clone();
            self.outputs.push_back(Output::Log(Event::ConnFailed { conn, error }));
        }
        c.error = error;
        c.channel.handle(now, ChannelInput::PeerClosed);
        self.pump(conn);
        // The driver's side is gone: nothing to close there.
        if let Some(c) = self.remove(conn)
            && !c.done
        {
            self.events.push_back(ConnEvent::Gone { conn, owner: c.owner, error: c.error });
        }
    }

    /// Sends one whole message on `conn`.
    pub fn send(&mut self, conn: ConnId, bytes: &[u8]) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        if let Err(e) = c.channel.send(bytes) {
            let error = format!("could not send: {e}");
            self.outputs.push_back(Output::Log(Event::ConnFailed { conn, error }));
            c.channel.close();
        }
        self.pump(conn);
    }

    /// Closes `conn` from this side once what was sent is written.
    pub fn close(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.channel.close();
            self.pump(conn);
        }
    }

    /// The peer `conn` authenticated, once its handshake finished.
    #[cfg(test)]
    pub fn peer_of(&self, conn: ConnId) -> Option<&PublicIdentity> {
        self.conns.get(&conn).and_then(|c| c.peer.as_ref())
    }

    /// The newest established connection on `listener` whose peer authenticated as `peer`.
    pub fn find(&self, listener: ListenerId, peer: &crate::identity::NodeId) -> Option<ConnId> {
        self.conns
            .iter()
            .rev()
            .find(|(_, c)| {
                c.owner == Owner::Listener(listener) && c.peer.is_some_and(|p| p.node_id() == *peer)
            })
            .map(|(id, _)| *id)
    }

    pub fn open(&self) -> usize {
        self.conns.len()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    pub fn handle_timeout(&mut self, now: Now) {
        self.now = now.mono;
        // In connection order, whatever their deadlines' order.
        let due: BTreeSet<ConnId> =
            self.deadlines.iter().take_while(|(at, _)| *at <= now.mono).map(|(_, conn)| *conn).collect();
        for conn in due {
            let Some(c) = self.conns.get_mut(&conn) else { continue };
            c.channel.handle(now, ChannelInput::Timeout);
            let silent = c.last_message.is_none()
                && matches!(c.owner, Owner::Listener(_))
                && now.mono >= c.opened + c.limits.first_message;
            let idle = c.limits.idle.is_some_and(|i| now.mono >= c.last_heard() + i);
            let slow = c.frame_started.is_some_and(|at| now.mono >= at + c.limits.frame_timeout);
            if (silent || idle) && !c.channel.is_closed() {
                self.outputs.push_back(Output::Log(Event::Silent { conn }));
                c.channel.close();
            } else if slow && !c.channel.is_closed() {
                let timeout_ms = u64::try_from(c.limits.frame_timeout.as_millis()).unwrap_or(u64::MAX);
                self.outputs.push_back(Output::Log(Event::SlowFrame { conn, timeout_ms }));
                c.frame_started = None;
                c.channel.close();
            }
            self.pump(conn);
        }
    }

    /// Moves one channel's outputs (bytes to the driver, the rest to the owner), then files the
    /// connection's deadline anew. Called after every change to a connection.
    fn pump(&mut self, conn: ConnId) {
        self.pump_outputs(conn);
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let next = c.deadline();
        if next != c.filed {
            if let Some(at) = std::mem::replace(&mut c.filed, next) {
                self.deadlines.remove(&(at, conn));
            }
            if let Some(at) = next {
                self.deadlines.insert((at, conn));
            }
        }
    }

    /// Takes `conn` out of the table, with its deadline.
    fn remove(&mut self, conn: ConnId) -> Option<Conn> {
        let c = self.conns.remove(&conn)?;
        if let Some(at) = c.filed {
            self.deadlines.remove(&(at, conn));
        }
        Some(c)
    }

    fn pump_outputs(&mut self, conn: ConnId) {
        while let Some(out) = self.conns.get_mut(&conn).and_then(|c| c.channel.poll_output()) {
            let Some(c) = self.conns.get_mut(&conn) else { return };
            match out {
                ChannelOutput::Transmit(bytes) => {
                    c.backlog = c.backlog.saturating_add(bytes.len());
                    c.congested |= c.backlog > HIGH_WATER;
                    if c.backlog > c.limits.max_backlog {
                        // Dropped whole: a frame skipped mid-stream would read as forgery.
                        let backlog = c.backlog;
                        self.outputs.push_back(Output::Log(Event::NotReading { conn, backlog }));
                        c.channel.close();
                        continue;
                    }
                    self.outputs.push_back(Output::Transmit { conn, bytes });
                }
                ChannelOutput::Established(peer) => {
                    c.peer = Some(peer);
                    let owner = c.owner;
                    let max = c.limits.max_per_peer;
                    let same = self
                        .conns
                        .values()
                        .filter(|o| o.owner == owner && o.peer.is_some_and(|p| p.node_id() == peer.node_id()))
                        .count();
                    if matches!(owner, Owner::Listener(_)) && same > max {
                        let peer = peer.node_id().to_string();
                        self.outputs.push_back(Output::Log(Event::PerPeerLimit { conn, peer }));
                        if let Some(c) = self.conns.get_mut(&conn) {
                            c.channel.close();
                        }
                        continue;
                    }
                    self.events.push_back(ConnEvent::Established { conn, owner, peer });
                }
                ChannelOutput::Message(bytes) => {
                    // Messages come only after the handshake, so the peer is known.
                    let Some(peer) = c.peer else { continue };
                    c.last_message = Some(self.now);
                    let owner = c.owner;
                    self.events.push_back(ConnEvent::Message { conn, owner, peer, bytes });
                }
                ChannelOutput::Closed(reason) => {
                    let mut error = c.error.take();
                    if let CloseReason::Failed(e) = reason {
                        let text = e.to_string();
                        self.outputs.push_back(Output::Log(Event::ConnFailed { conn, error: text.clone() }));
                        error = error.or(Some(text));
                    }
                    c.done = true;
                    let owner = c.owner;
                    self.outputs.push_back(Output::Close { conn });
                    self.events.push_back(ConnEvent::Gone { conn, owner, error });
                    self.remove(conn);
                    return;
                }
            }
        }
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<ConnEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests;
