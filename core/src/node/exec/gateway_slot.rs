//! The gateway on a node: its client listener, the collector beside it, its channels to hosts
//! and to the KDC, and the results waiting for a slow client. Owns carrying out what the gateway
//! and the collector ask for; the rules are theirs.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::super::conns::{ConnLimits, Owner};
use super::super::io::{ConnId, Event, ListenerId, Record};
use super::super::{AfterPersist, Effects};
use super::host_channels::HostChannels;
use super::web_slot::WebSlot;
use super::{GatewayRole, encode, send};
use crate::channel::TrustSet;
use crate::exec::audit::{AuditCollector, CollectorInput, CollectorOutput};
use crate::exec::audit_view::audit_signers;
use crate::exec::directory::ExecDirectory;
use crate::exec::gateway::{Gateway, GatewayInput, GatewayOutput};
use crate::exec::wire::GatewayReply;
use crate::identity::{NodeKeys, PublicIdentity};
use crate::machine::Machine;
use crate::rng::{SeededRng, fork};
use crate::time::Now;
use crate::web::WebConsole;

#[derive(Debug)]
pub(super) struct GatewaySlot {
    pub(super) gateway: Gateway,
    pub(super) kdc_addr: String,
    pub(super) kdc: PublicIdentity,
    /// Each question to the KDC in flight: ask → its connection.
    pub(super) asks: BTreeMap<u64, ConnId>,
    pub(super) collector: AuditCollector,
    pub(super) listener: ListenerId,
    pub(super) keys: NodeKeys,
    pub(super) limits: ConnLimits,
    /// The channels to hosts, and which session is on which.
    pub(super) hosts: HostChannels,
    /// Collector ack → (the submitter's connection, its own ack); the gateway's own records
    /// have no entry.
    pub(super) acks: BTreeMap<u64, (ConnId, u64)>,
    pub(super) next_ack: u64,
    /// Messages for each client waiting for its connection to drain, and the clients to close
    /// once theirs is sent.
    pub(super) outbox: BTreeMap<ConnId, VecDeque<Vec<u8>>>,
    pub(super) closing: BTreeSet<ConnId>,
    /// The web console, when the gateway serves one: its requests are gateway clients too.
    pub(super) web: Option<WebSlot>,
}

impl GatewaySlot {
    pub(super) fn new(
        role: GatewayRole,
        directory: &ExecDirectory,
        rng: &mut SeededRng,
        fx: &mut Effects<'_>,
    ) -> GatewaySlot {
        // Clients are any key: a client proves itself with a credential bound to its key.
        let listener =
            fx.conns.listen("gateway", role.listen, role.keys.clone(), TrustSet::any_peer(), role.limits);
        let web = role
            .web
            .map(|web| WebSlot::new(web, WebConsole::new(&role.keys, fork(rng)), role.keys.clone(), fx));
        GatewaySlot {
            gateway: Gateway::new(role.kdc, role.keys.clone(), fork(rng)),
            kdc_addr: role.kdc_addr,
            kdc: role.kdc,
            asks: BTreeMap::new(),
            collector: AuditCollector::new(
                role.chain_tail.as_ref(),
                audit_signers(directory, role.keys.public()),
                role.keys.clone(),
            ),
            listener,
            hosts: HostChannels::new(role.keys.clone(), role.limits),
            keys: role.keys,
            limits: role.limits,
            acks: BTreeMap::new(),
            next_ack: 1,
            outbox: BTreeMap::new(),
            closing: BTreeSet::new(),
            web,
        }
    }

    /// Sends what a client is owed while its connection keeps up; closes it once all is sent
    /// if asked to.
    pub(super) fn flush_client(&mut self, fx: &mut Effects<'_>, conn: ConnId) {
        let queue = self.outbox.entry(conn).or_default();
        while !fx.conns.congested(conn) {
            let Some(bytes) = queue.pop_front() else { break };
            fx.conns.send(conn, &bytes);
        }
        if queue.is_empty() {
            self.outbox.remove(&conn);
            if self.closing.remove(&conn) {
                fx.conns.close(conn);
            }
        }
    }

    /// Carries out what the gateway and the collector asked for; whether anything was.
    pub(super) fn drain(&mut self, now: Now, fx: &mut Effects<'_>) -> bool {
        let mut moved = false;
        loop {
            if let Some(out) = self.collector.poll_output() {
                moved = true;
                match out {
                    CollectorOutput::Append { entry, checkpoint } => {
                        let index = entry.index;
                        fx.persist_then(Record::AuditEntry { entry, checkpoint }, AfterPersist::Chain(index));
                    }
                    CollectorOutput::Ack { ack, .. } => {
                        if let Some((conn, remote)) = self.acks.remove(&ack) {
                            send(fx, conn, &GatewayReply::AuditAck { ack: remote });
                        }
                    }
                    CollectorOutput::Duplicate { host, index } => {
                        fx.log(Event::AuditDuplicate { host, index });
                    }
                    CollectorOutput::Refused { ack, refusal } => {
                        let reason = refusal.to_string();
                        fx.log(Event::AuditRefused { reason: reason.clone() });
                        if let Some((conn, remote)) = self.acks.remove(&ack) {
                            send(fx, conn, &GatewayReply::AuditRefused { ack: remote, reason });
                        }
                    }
                }
                continue;
            }
            if let Some(web) = &mut self.web
                && let Some(out) = web.console.poll_output()
            {
                moved = true;
                if let Some(input) = web.carry_out(now, out, fx) {
                    self.gateway.handle(now, input);
                }
                continue;
            }
            let Some(out) = self.gateway.poll_output() else { return moved };
            moved = true;
            match out {
                // The console's requests: it turns the gateway's answers into web responses.
                GatewayOutput::ToClient { client, event } if WebConsole::owns(client) => {
                    if let Some(web) = &mut self.web {
                        web.console.handle_event(now, client, event);
                    }
                }
                // A console run ends with its last event; there is no connection to close.
                GatewayOutput::CloseClient { client } if WebConsole::owns(client) => {}
                // Results wait here, not in the driver, while a client reads slowly.
                GatewayOutput::ToClient { client, event } => {
                    let conn = ConnId(client);
                    self.outbox.entry(conn).or_default().push_back(encode(&GatewayReply::Client(event)));
                    self.flush_client(fx, conn);
                }
                GatewayOutput::CloseClient { client } => {
                    let conn = ConnId(client);
                    self.closing.insert(conn);
                    self.flush_client(fx, conn);
                }
                GatewayOutput::AskKdc { ask, request } => {
                    let dialled = fx.conns.connect(
                        now,
                        self.kdc_addr.clone(),
                        &self.keys,
                        self.kdc,
                        Owner::Dial(ask),
                        self.limits,
                    );
                    match dialled {
                        Ok(conn) => {
                            self.asks.insert(ask, conn);
                            send(fx, conn, &request);
                        }
                        Err(reason) => self.gateway.handle(now, GatewayInput::KdcLost { ask, reason }),
                    }
                }
                GatewayOutput::HostStart { session, host, request } => {
                    if let Some(lost) = self.hosts.start(now, session, host, Box::new(request), fx) {
                        self.gateway.handle(now, lost);
                    }
                }
                GatewayOutput::HostDone { session } => self.hosts.done(now, session, fx),
                GatewayOutput::HostCancel { session, reason } => self.hosts.cancel(session, reason, fx),
                GatewayOutput::Audit(record) => {
                    let ack = self.next_ack;
                    self.next_ack += 1;
                    self.collector.handle(now, CollectorInput::Submit { ack, record: Box::new(record) });
                }
            }
        }
    }
}
