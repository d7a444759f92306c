//! The cluster member on a node: member messages on channels between members, the admin
//! channel on its listener, and the local lookup service for the host's applications. Owns the
//! mapping between the member and the node: one outbound link to each member it writes to (its
//! key pinned) and a listener that admits only the roster's keys, each message handed to the
//! member with the peer the channel authenticated; who may open the admin channel
//! (the operators the active configuration lists, and the node's own key, kept current at every
//! install), one admin request at a time per connection, answers on the connection the request
//! came on, and what the member asks to keep. The rules of agreement are the member's.

use std::collections::BTreeMap;

use super::Effects;
use super::backoff::Backoff;
use super::conns::{ConnEvent, ConnLimits, Owner};
use super::io::{ConnId, Event, ListenerId, Output, Record};
use super::lookup::{self, LocalConns, LocalEvent, LocalRequest};
use crate::admin::{AdminRequest, AdminResponse, node_status};
use crate::channel::TrustSet;
use crate::identity::{NodeId, NodeKeys};
use crate::machine::Machine;
use crate::member::messages::MAX_MEMBER_MESSAGE;
use crate::member::{
    JoinAnchor, Member, MemberInput, MemberOutput, MemberRecord, MemberSettings, PersistToken,
};
use crate::rng::SeededRng;
use crate::time::{Instant, Now};
use crate::wire;

/// A cluster member a node runs.
#[derive(Debug, Clone)]
pub struct MemberRole {
    /// What the driver kept: the member resumes from it.
    pub record: MemberRecord,
    pub settings: MemberSettings,
    /// Where other members' channels arrive (`IP:PORT`).
    pub listen: String,
    /// Where operators open the admin channel.
    pub admin_listen: String,
    pub admin_limits: ConnLimits,
    /// The Unix socket of the local lookup service, if the node offers one.
    pub lookup_socket: Option<String>,
}

#[derive(Debug)]
pub(super) struct MemberHost {
    member: Member,
    keys: NodeKeys,
    admin: ListenerId,
    /// Where other members' channels arrive.
    peers: ListenerId,
    /// The outbound link to each member this one writes to.
    links: BTreeMap<NodeId, usize>,
    /// When each member was last heard on any channel: a link to a member silent for three
    /// heartbeats is reset, since a cut that sent no reset leaves it looking open.
    last_heard: BTreeMap<NodeId, Instant>,
    heartbeat: std::time::Duration,
    /// The request each admin connection is waiting on: one at a time.
    waiting: BTreeMap<ConnId, u64>,
    next_request: u64,
    /// The shared settings and operators of a configuration installed since the node last
    /// asked.
    installed: Option<Installed>,
    /// The local lookup listener and its connections.
    local: Option<(ListenerId, LocalConns)>,
}

impl MemberHost {
    pub fn new(
        now: Now,
        role: MemberRole,
        keys: NodeKeys,
        rng: SeededRng,
        fx: &mut Effects<'_>,
    ) -> MemberHost {
        let member = Member::new(now.mono, keys.clone(), role.record, role.settings, rng);
        let heartbeat = role.settings.heartbeat;
        let limits = member_limits(heartbeat);
        let peers = fx.conns.listen("member", role.listen, keys.clone(), roster_trust(&member), limits);
        let trust = admin_trust(&member, &keys);
        let admin = fx.conns.listen("admin", role.admin_listen, keys.clone(), trust, role.admin_limits);
        let installed = Some(installed(&member));
        let local = role.lookup_socket.map(|path| {
            let listener = ListenerId::local(0);
            fx.out.push_back(Output::ListenLocal { listener, path });
            (listener, LocalConns::default())
        });
        let mut host = MemberHost {
            member,
            keys,
            admin,
            peers,
            links: BTreeMap::new(),
            last_heard: BTreeMap::new(),
            heartbeat,
            waiting: BTreeMap::new(),
            next_request: 1,
            installed,
            local,
        };
        host.drain(now, fx);
        host
    }

    pub fn member(&self) -> &Member {
        &self.member
    }

    /// The shared settings of a configuration installed since the last call (at start, the
    /// active one's), for the roles that read the exec directory from them.
    pub fn take_installed_settings(&mut self) -> Option<Installed> {
        self.installed.take()
    }

    /// Whether connections of `owner` are this member's (its admin or member listener, or one
    /// of its links).
    pub fn owns(&self, owner: Owner) -> bool {
        match owner {
            Owner::Listener(l) => l == self.admin || l == self.peers,
            Owner::Link(i) => self.links.values().any(|l| *l == i),
            Owner::Dial(_) | Owner::HostChannel(_) => false,
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.member.poll_timeout()
    }

    pub fn handle_timeout(&mut self, now: Now, fx: &mut Effects<'_>) {
        if self.member.poll_timeout().is_some_and(|t| t <= now.mono) {
            self.member.handle(now, MemberInput::Timeout);
        }
        for (peer, link) in &self.links {
            let heard = self.last_heard.entry(*peer).or_insert(now.mono);
            if now.mono - *heard >= self.heartbeat * 3 {
                fx.links.reset(*link, fx.conns);
                *heard = now.mono;
            }
        }
        self.drain(now, fx);
    }

    pub fn on_persisted(&mut self, now: Now, token: PersistToken, fx: &mut Effects<'_>) {
        self.member.handle(now, MemberInput::Persisted(token));
        self.drain(now, fx);
    }

    /// A message or close on one of this member's connections.
    pub fn on_conn(&mut self, now: Now, event: ConnEvent, fx: &mut Effects<'_>) {
        let from_member = match &event {
            ConnEvent::Message { owner: Owner::Listener(l), .. } => *l == self.peers,
            ConnEvent::Message { owner: Owner::Link(_), .. } => true,
            _ => false,
        };
        if from_member {
            if let ConnEvent::Message { peer, bytes, .. } = event {
                let from = peer.node_id();
                self.last_heard.insert(from, now.mono);
                self.member.handle(now, MemberInput::Received { from, bytes });
                self.drain(now, fx);
            }
            return;
        }
        let (conn, bytes) = match event {
            ConnEvent::Message { conn, bytes, .. } => (conn, bytes),
            ConnEvent::Gone { conn, .. } => {
                self.waiting.remove(&conn);
                return;
            }
            ConnEvent::Established { .. } | ConnEvent::Drained { .. } => return,
        };
        if self.waiting.contains_key(&conn) {
            return reply(fx, conn, &AdminResponse::Error("one request at a time per connection".into()));
        }
        let request = match wire::decode::<AdminRequest>(&bytes) {
            Ok(request) => request,
            Err(e) => return reply(fx, conn, &AdminResponse::Error(format!("bad request: {e}"))),
        };
        match request {
            AdminRequest::Status => {
                reply(fx, conn, &AdminResponse::Status(node_status(&self.member, now.mono)))
            }
            AdminRequest::Change(request) => {
                let request_id = self.track(conn);
                self.member.handle(now, MemberInput::Change { request_id, request });
            }
            AdminRequest::JoinAnchor => {
                let anchor = JoinAnchor::of(self.member.active());
                reply(fx, conn, &AdminResponse::JoinAnchor(Box::new(anchor)))
            }
            AdminRequest::Lookup { key } => {
                let request_id = self.track(conn);
                self.member.handle(now, MemberInput::Lookup { request_id, key });
            }
        }
        self.drain(now, fx);
    }

    /// Whether `conn` is one of the local lookup service's connections.
    pub fn owns_local(&self, conn: ConnId) -> bool {
        self.local.as_ref().is_some_and(|(_, conns)| conns.owns(conn))
    }

    /// Whether `listener` is the local lookup service's.
    pub fn owns_local_listener(&self, listener: ListenerId) -> bool {
        self.local.as_ref().is_some_and(|(l, _)| *l == listener)
    }

    pub fn on_local_accepted(&mut self, conn: ConnId, fx: &mut Effects<'_>) {
        let admitted = self.local.as_mut().is_some_and(|(_, conns)| conns.accepted(conn));
        if !admitted {
            fx.out.push_back(Output::Close { conn });
        }
    }

    pub fn on_local_closed(&mut self, conn: ConnId) {
        if let Some((_, conns)) = self.local.as_mut() {
            conns.closed(conn);
        }
    }

    /// Bytes from a local client: each request line is answered from the active configuration,
    /// in order (the member answers lookups in the step it takes them).
    pub fn on_local_bytes(&mut self, now: Now, conn: ConnId, bytes: &[u8], fx: &mut Effects<'_>) {
        let Some((_, conns)) = self.local.as_mut() else { return };
        for event in conns.received(conn, bytes) {
            match event {
                LocalEvent::Request { conn, request: Ok(LocalRequest::Version) } => {
                    let line = lookup::version_line(self.member.active_version(), self.member.is_syncing());
                    fx.out.push_back(Output::Transmit { conn, bytes: line });
                }
                LocalEvent::Request { conn, request: Ok(request) } => {
                    let key = match request {
                        LocalRequest::Get(key) => Some(key),
                        LocalRequest::All | LocalRequest::Version => None,
                    };
                    let request_id = self.next_request;
                    self.next_request += 1;
                    if !self.local.as_mut().is_some_and(|(_, conns)| conns.wait(conn, request_id)) {
                        self.refuse_local(conn, "too many requests waiting; read the answers", fx);
                        return;
                    }
                    self.member.handle(now, MemberInput::Lookup { request_id, key });
                    self.drain(now, fx);
                }
                LocalEvent::Request { conn, request: Err(error) } => {
                    fx.out.push_back(Output::Transmit { conn, bytes: lookup::error_line(&error) });
                }
                LocalEvent::Refuse { conn, reason } => return self.refuse_local(conn, &reason, fx),
            }
            if self.local.is_none() {
                return;
            }
        }
    }

    fn refuse_local(&mut self, conn: ConnId, reason: &str, fx: &mut Effects<'_>) {
        fx.out.push_back(Output::Transmit { conn, bytes: lookup::error_line(reason) });
        fx.out.push_back(Output::Close { conn });
        self.on_local_closed(conn);
    }

    fn track(&mut self, conn: ConnId) -> u64 {
        let id = self.next_request;
        self.next_request += 1;
        self.waiting.insert(conn, id);
        id
    }

    fn answer(&mut self, fx: &mut Effects<'_>, request_id: u64, response: &AdminResponse) {
        let conn = self.waiting.iter().find(|(_, r)| **r == request_id).map(|(c, _)| *c);
        if let Some(conn) = conn {
            self.waiting.remove(&conn);
            reply(fx, conn, response);
        }
    }

    /// Carries out what the member asked for.
    /// Sends on the link to `to`, opening one the first time.
    fn send(&mut self, now: Now, to: NodeId, address: String, bytes: Vec<u8>, fx: &mut Effects<'_>) {
        let link = match self.links.get(&to) {
            Some(link) => *link,
            None => {
                let Some(identity) = self.member.peer_identity(&to) else { return };
                // A member that went away is redialled within a heartbeat or two of its return.
                let backoff = Backoff::new(self.heartbeat / 4, self.heartbeat);
                // Only sent on: its silence says nothing (the listener side judges the peer).
                let limits = ConnLimits { idle: None, ..member_limits(self.heartbeat) };
                let link =
                    fx.links.add_paced(address, self.keys.clone(), identity, limits, LINK_QUEUE, backoff);
                self.links.insert(to, link);
                link
            }
        };
        fx.links.send(now, link, bytes, fx.conns);
    }

    fn drain(&mut self, now: Now, fx: &mut Effects<'_>) {
        while let Some(out) = self.member.poll_output() {
            match out {
                MemberOutput::Send { to, address, message } => match message.to_wire() {
                    Ok(bytes) => self.send(now, to, address, bytes, fx),
                    Err(e) => {
                        fx.log(Event::BadMessage { conn: ConnId(0), error: format!("member message: {e}") })
                    }
                },
                MemberOutput::Heard { from, active, staged } => fx.log(Event::Heard { from, active, staged }),
                MemberOutput::Persist { token, record } => {
                    fx.persist_then(Record::Member(record), super::AfterPersist::Member(token))
                }
                MemberOutput::Staged { version, source } => {
                    // The staged roster's members may open channels too (rule 8: a member added
                    // by the change takes part in installing it).
                    fx.conns.set_trust(self.peers, roster_trust(&self.member));
                    let from = source.map(|id| self.member.peer_name(&id));
                    fx.log(Event::Staged { version, from })
                }
                MemberOutput::Installed { version, .. } => {
                    fx.log(Event::Installed { version });
                    if !self.member.active().config.is_member(&self.keys.node_id()) {
                        fx.log(Event::OutsideRoster { version });
                    }
                    fx.conns.set_trust(self.admin, admin_trust(&self.member, &self.keys));
                    fx.conns.set_trust(self.peers, roster_trust(&self.member));
                    self.installed = Some(installed(&self.member));
                }
                MemberOutput::Removed { version } => fx.log(Event::OutsideRoster { version }),
                MemberOutput::Dropped { reason } => {
                    fx.log(Event::MemberDropped { reason: reason.to_string() })
                }
                MemberOutput::ChangeAccepted { request_id, version } => {
                    fx.log(Event::ChangeAccepted { version });
                    self.answer(fx, request_id, &AdminResponse::ChangeAccepted { version });
                }
                MemberOutput::ChangeRejected { request_id, error } => {
                    let reason = error.to_string();
                    fx.log(Event::ChangeRejected { reason: reason.clone() });
                    self.answer(fx, request_id, &AdminResponse::ChangeRejected { reason });
                }
                MemberOutput::LookupAnswer { request_id, answer } => {
                    let local = self.local.as_mut().and_then(|(_, conns)| conns.answered(request_id));
                    match local {
                        Some(conn) => {
                            fx.out.push_back(Output::Transmit { conn, bytes: lookup::answer_line(&answer) })
                        }
                        None => self.answer(fx, request_id, &AdminResponse::Lookup(answer.into())),
                    }
                }
            }
        }
    }
}

/// What other roles take from an installed configuration: its shared settings and its
/// operators' keys.
pub type Installed = (BTreeMap<String, String>, std::collections::BTreeSet<crate::identity::PublicIdentity>);

fn installed(member: &Member) -> Installed {
    let config = &member.active().config;
    (config.settings.clone(), config.operators.values().map(|o| o.identity).collect())
}

/// Messages kept for a member whose channel is down: a few heartbeats' worth (newer ones say
/// more than older ones, and fetches are retried).
const LINK_QUEUE: usize = 16;

/// Member channels: a message is at most a fetch reply, and a channel that carried nothing for
/// three heartbeats is dead (a cut that sent no reset): closed, and redialled when there is
/// something to send.
fn member_limits(heartbeat: std::time::Duration) -> ConnLimits {
    ConnLimits {
        max_message: MAX_MEMBER_MESSAGE,
        max_backlog: 2 * MAX_MEMBER_MESSAGE,
        idle: Some(heartbeat * 3),
        ..ConnLimits::default()
    }
}

/// Who may open a member channel: the members of the active and the staged configuration.
fn roster_trust(member: &Member) -> TrustSet {
    let active = member.active().config.members.values();
    let staged = member.staged().into_iter().flat_map(|s| s.config.members.values());
    active.chain(staged).map(|m| m.identity).filter(|id| id.node_id() != member.id()).collect()
}

/// Who may open the admin channel: the operators the active configuration lists, and this node's
/// own key (for `cohort status` run on the node itself).
fn admin_trust(member: &Member, keys: &NodeKeys) -> TrustSet {
    let operators = member.active().config.operators.values().map(|o| o.identity);
    operators.chain([keys.public()]).collect()
}

fn reply(fx: &mut Effects<'_>, conn: ConnId, response: &AdminResponse) {
    match wire::encode(response) {
        Ok(bytes) => fx.conns.send(conn, &bytes),
        Err(e) => fx.log(Event::BadMessage { conn, error: format!("could not encode an answer: {e}") }),
    }
}
