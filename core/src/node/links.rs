//! Outbound links: a channel this node keeps to one pinned peer (a local to its parent, an agent
//! to its server), opened when there is something to send (or, for a link kept open, at once, so
//! the peer can reach this node between messages of its own) and reopened after a failure with
//! jittered exponential backoff. Owns the messages waiting for a link to open (bounded); it never
//! dials a peer in a busy loop and never talks to a key other than the pinned one.

use std::collections::VecDeque;

use super::backoff::Backoff;
use super::conns::{ConnEvent, ConnLimits, Connections, Owner};
use super::io::{ConnId, Event, Output};
use crate::identity::{NodeKeys, PublicIdentity};
use crate::rng::SeededRng;
use crate::time::{Instant, Now};

/// Messages kept for a link that is down, unless its owner asks for more; older ones are dropped
/// first (the protocols on links resend what matters, or time out on it).
const MAX_QUEUED: usize = 256;

#[derive(Debug)]
struct Link {
    addr: String,
    keys: NodeKeys,
    peer: PublicIdentity,
    limits: ConnLimits,
    conn: Option<ConnId>,
    queue: VecDeque<Vec<u8>>,
    max_queued: usize,
    retry_at: Option<Instant>,
    backoff: Backoff,
    /// Dialled whether or not there is something to send: the peer may have something to ask.
    kept_open: bool,
}

impl Link {
    /// Whether the link wants a connection it does not have.
    fn wants_conn(&self) -> bool {
        self.conn.is_none() && (self.kept_open || !self.queue.is_empty())
    }
}

/// The node's outbound links, by index.
#[derive(Debug)]
pub struct Links {
    links: Vec<Link>,
    rng: SeededRng,
}

impl Links {
    pub fn new(rng: SeededRng) -> Links {
        Links { links: Vec::new(), rng }
    }

    /// A link to `peer` at `addr`, presenting `keys`; returns its index.
    pub fn add(&mut self, addr: String, keys: NodeKeys, peer: PublicIdentity, limits: ConnLimits) -> usize {
        self.add_with_queue(addr, keys, peer, limits, MAX_QUEUED)
    }

    /// A link that keeps up to `max_queued` messages while it is down.
    pub fn add_with_queue(
        &mut self,
        addr: String,
        keys: NodeKeys,
        peer: PublicIdentity,
        limits: ConnLimits,
        max_queued: usize,
    ) -> usize {
        self.add_paced(addr, keys, peer, limits, max_queued, Backoff::reconnect())
    }

    /// A link with its own reconnect pacing (members redial within a heartbeat or two).
    pub fn add_paced(
        &mut self,
        addr: String,
        keys: NodeKeys,
        peer: PublicIdentity,
        limits: ConnLimits,
        max_queued: usize,
        backoff: Backoff,
    ) -> usize {
        self.links.push(Link {
            addr,
            keys,
            peer,
            limits,
            conn: None,
            queue: VecDeque::new(),
            max_queued,
            retry_at: None,
            backoff,
            kept_open: false,
        });
        self.links.len() - 1
    }

    /// A link dialled at once and again after every failure, with or without anything to send:
    /// a local keeps one to its parent, which asks it questions over it between syncs.
    pub fn add_kept_open(
        &mut self,
        addr: String,
        keys: NodeKeys,
        peer: PublicIdentity,
        limits: ConnLimits,
    ) -> usize {
        let link = self.add(addr, keys, peer, limits);
        if let Some(l) = self.links.get_mut(link) {
            l.kept_open = true;
        }
        link
    }

    /// Drops the link's connection (its peer went silent: the connection is likely dead); the
    /// next message dials afresh.
    pub fn reset(&mut self, link: usize, conns: &mut Connections) {
        if let Some(l) = self.links.get_mut(link)
            && let Some(conn) = l.conn.take()
        {
            conns.close(conn);
            l.retry_at = None;
        }
    }

    /// Messages waiting for the link to open.
    pub fn queued(&self, link: usize) -> usize {
        self.links.get(link).map_or(0, |l| l.queue.len())
    }

    pub fn peer(&self, link: usize) -> Option<&PublicIdentity> {
        self.links.get(link).map(|l| &l.peer)
    }

    /// Sends on the link's channel, or keeps the message until the link opens.
    pub fn send(&mut self, now: Now, link: usize, bytes: Vec<u8>, conns: &mut Connections) {
        let Some(l) = self.links.get_mut(link) else { return };
        match l.conn {
            Some(conn) => conns.send(conn, &bytes),
            None => {
                if l.queue.len() >= l.max_queued {
                    l.queue.pop_front();
                }
                l.queue.push_back(bytes);
                self.dial_due(now, conns);
            }
        }
    }

    /// Opens every link that has something to send (or is kept open) and whose backoff has
    /// passed.
    pub fn dial_due(&mut self, now: Now, conns: &mut Connections) {
        for (i, l) in self.links.iter_mut().enumerate() {
            if !l.wants_conn() || l.retry_at.is_some_and(|t| t > now.mono) {
                continue;
            }
            match conns.connect(now, l.addr.clone(), &l.keys, l.peer, Owner::Link(i), l.limits) {
                Ok(conn) => {
                    l.conn = Some(conn);
                    l.retry_at = None;
                    // The channel holds these until its handshake is done.
                    for bytes in l.queue.drain(..) {
                        conns.send(conn, &bytes);
                    }
                }
                Err(_) => l.retry_at = Some(now.mono + l.backoff.failed(&mut self.rng)),
            }
        }
    }

    /// A link's connection opened or went; returns a log line for a link that went down.
    pub fn on_event(&mut self, now: Now, event: &ConnEvent) -> Option<Output> {
        match *event {
            ConnEvent::Established { owner: Owner::Link(i), .. } => {
                if let Some(l) = self.links.get_mut(i) {
                    l.backoff.succeeded();
                }
                None
            }
            ConnEvent::Gone { conn, owner: Owner::Link(i), .. } => {
                let l = self.links.get_mut(i).filter(|l| l.conn == Some(conn))?;
                l.conn = None;
                let wait = l.backoff.failed(&mut self.rng);
                l.retry_at = Some(now.mono + wait);
                let retry_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                Some(Output::Log(Event::LinkDown { peer: l.peer.node_id().to_string(), retry_ms }))
            }
            _ => None,
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.links.iter().filter(|l| l.wants_conn()).filter_map(|l| l.retry_at).min()
    }
}
