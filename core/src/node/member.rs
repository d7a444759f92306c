//! The cluster member on a node: member messages as datagrams, the admin channel on its
//! listener, and the local lookup service for the host's applications. Owns the mapping between the member and the node: who may open the admin channel
//! (the operators the active configuration lists, and the node's own key, kept current at every
//! install), one admin request at a time per connection, answers on the connection the request
//! came on, and what the member asks to keep. The rules of agreement are the member's.

use std::collections::BTreeMap;

use super::Effects;
use super::conns::{ConnEvent, ConnLimits};
use super::io::{ConnId, Event, ListenerId, Output, Record};
use super::lookup::{self, LocalConns, LocalEvent, LocalRequest};
use crate::admin::{AdminRequest, AdminResponse, node_status};
use crate::channel::TrustSet;
use crate::identity::NodeKeys;
use crate::machine::Machine;
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
    /// Where member datagrams arrive (`IP:PORT`).
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
    /// The request each admin connection is waiting on: one at a time.
    waiting: BTreeMap<ConnId, u64>,
    next_request: u64,
    /// The groups of a configuration installed since the node last asked.
    installed: Option<BTreeMap<String, String>>,
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
        fx.out.push_back(Output::BindDatagram { addr: role.listen });
        let trust = admin_trust(&member, &keys);
        let admin = fx.conns.listen("admin", role.admin_listen, keys.clone(), trust, role.admin_limits);
        let installed = Some(groups(&member));
        let local = role.lookup_socket.map(|path| {
            let listener = ListenerId::local(0);
            fx.out.push_back(Output::ListenLocal { listener, path });
            (listener, LocalConns::default())
        });
        let mut host =
            MemberHost { member, keys, admin, waiting: BTreeMap::new(), next_request: 1, installed, local };
        host.drain(now, fx);
        host
    }

    pub fn member(&self) -> &Member {
        &self.member
    }

    /// The `group.NAME` settings of a configuration installed since the last call (at start,
    /// the active one's), for the roles that expand node sets.
    pub fn take_installed_groups(&mut self) -> Option<BTreeMap<String, String>> {
        self.installed.take()
    }

    pub fn owns(&self, listener: ListenerId) -> bool {
        self.admin == listener
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.member.poll_timeout()
    }

    pub fn handle_timeout(&mut self, now: Now, fx: &mut Effects<'_>) {
        if self.member.poll_timeout().is_some_and(|t| t <= now.mono) {
            self.member.handle(now, MemberInput::Timeout);
        }
        self.drain(now, fx);
    }

    pub fn on_datagram(&mut self, now: Now, bytes: Vec<u8>, fx: &mut Effects<'_>) {
        self.member.handle(now, MemberInput::Received(bytes));
        self.drain(now, fx);
    }

    pub fn on_persisted(&mut self, now: Now, token: PersistToken, fx: &mut Effects<'_>) {
        self.member.handle(now, MemberInput::Persisted(token));
        self.drain(now, fx);
    }

    /// A message or close on the admin listener.
    pub fn on_conn(&mut self, now: Now, event: ConnEvent, fx: &mut Effects<'_>) {
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
    fn drain(&mut self, _now: Now, fx: &mut Effects<'_>) {
        while let Some(out) = self.member.poll_output() {
            match out {
                MemberOutput::Send { address, message, .. } => match message.to_wire() {
                    Ok(bytes) => fx.out.push_back(Output::SendDatagram { addr: address, bytes }),
                    Err(e) => {
                        fx.log(Event::BadMessage { conn: ConnId(0), error: format!("member message: {e}") })
                    }
                },
                MemberOutput::Persist { token, record } => {
                    fx.persist_then(Record::Member(record), super::AfterPersist::Member(token))
                }
                MemberOutput::Staged { version } => fx.log(Event::Staged { version }),
                MemberOutput::Installed { version, .. } => {
                    fx.log(Event::Installed { version });
                    if !self.member.active().config.is_member(&self.keys.node_id()) {
                        fx.log(Event::OutsideRoster { version });
                    }
                    fx.conns.set_trust(self.admin, admin_trust(&self.member, &self.keys));
                    self.installed = Some(groups(&self.member));
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

/// The `group.NAME` settings of the active configuration, for `@NAME` in node sets.
fn groups(member: &Member) -> BTreeMap<String, String> {
    let settings = &member.active().config.settings;
    settings
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("group.").map(|name| (name.to_owned(), v.clone())))
        .collect()
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
