//! The KDC on a node: its listener (gateways, and the installed configuration's operators),
//! one request per connection, and principal answers held until their write is durable. Owns
//! carrying out what the KDC decides; the rules are the KDC's.

use std::collections::{BTreeMap, BTreeSet};

use super::super::io::{ConnId, ListenerId, Record};
use super::super::{AfterPersist, Effects};
use super::{KdcRole, send};
use crate::channel::TrustSet;
use crate::exec::kdc::Kdc;
use crate::exec::wire::{KdcReply, KdcRequest};
use crate::identity::PublicIdentity;
use crate::time::Now;
use crate::wire;

#[derive(Debug)]
pub(super) struct KdcSlot {
    pub(super) kdc: Kdc,
    pub(super) listener: ListenerId,
    /// The gateways that may ask for logins and tickets.
    pub(super) gateways: Vec<PublicIdentity>,
    /// The installed configuration's operators, who may manage principals.
    pub(super) operators: BTreeSet<PublicIdentity>,
    /// Answers held until the principal write before them is durable.
    pub(super) pending: BTreeMap<ConnId, KdcReply>,
}

impl KdcSlot {
    pub(super) fn new(role: KdcRole, fx: &mut Effects<'_>) -> KdcSlot {
        // Only the gateways it lists (and, once a configuration is installed, its operators)
        // may open a channel.
        let trust: TrustSet = role.gateways.iter().copied().collect();
        let keys = role.kdc.keys().clone();
        let listener = fx.conns.listen("kdc", role.listen, keys, trust, role.limits);
        KdcSlot {
            kdc: role.kdc,
            listener,
            gateways: role.gateways,
            operators: BTreeSet::new(),
            pending: BTreeMap::new(),
        }
    }

    /// Gateways, and operators for principal commands.
    pub(super) fn trust(&self) -> TrustSet {
        self.gateways.iter().chain(&self.operators).copied().collect()
    }

    /// One request on connection `conn` from `peer`, answered (at once, or once its write is
    /// durable); then the connection closes.
    pub(super) fn on_request(
        &mut self,
        now: Now,
        conn: ConnId,
        peer: PublicIdentity,
        bytes: &[u8],
        fx: &mut Effects<'_>,
    ) {
        let reply = match wire::decode::<KdcRequest>(bytes) {
            Ok(KdcRequest::Principals(command)) => {
                let (reply, write) = self.kdc.manage(now.wall, &peer, &self.operators, command);
                if let Some(write) = write {
                    self.pending.insert(conn, KdcReply::Principals(reply));
                    let record = Record::Principal { name: write.name, hash: write.hash };
                    return fx.persist_then(record, AfterPersist::KdcAnswer(conn));
                }
                KdcReply::Principals(reply)
            }
            Ok(_) if !self.gateways.contains(&peer) => {
                KdcReply::Refused { reason: "only a gateway may ask for logins and tickets".into() }
            }
            Ok(request) => self.kdc.answer(now.wall, request),
            Err(e) => KdcReply::Refused { reason: format!("undecodable request: {e}") },
        };
        // One request per connection: the answer, then the asker's side closes it.
        send(fx, conn, &reply);
        fx.conns.close(conn);
    }

    pub(super) fn on_persisted(&mut self, conn: ConnId, fx: &mut Effects<'_>) {
        if let Some(reply) = self.pending.remove(&conn) {
            send(fx, conn, &reply);
            fx.conns.close(conn);
        }
    }
}
