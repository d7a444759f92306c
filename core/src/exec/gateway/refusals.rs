//! The gateway's own word: refusing a client (told why, then closed) and the audit records the
//! gateway makes and signs itself, for refusals and lowered requests, each naming what it was
//! about. Owns the record's shape; it never decides whether to refuse (the gateway does).

use rand_core::RngCore;

use super::super::audit::{AuditDecision, AuditRecord};
use super::super::task::{DataDigest, Task};
use super::{ClientEvent, GATEWAY_AUDIT_NAME, Gateway, GatewayOutput};
use crate::signed::Signed;
use crate::time::WallClock;

/// What one of the gateway's own audit records is about: the command (or `(login)`) and the
/// digests of the data the run carried.
#[derive(Debug)]
pub(super) struct Subject {
    argv: Vec<String>,
    data: Vec<DataDigest>,
}

impl Subject {
    pub(super) fn of(task: &Task) -> Subject {
        Subject { argv: task.argv().to_vec(), data: task.digests() }
    }

    pub(super) fn login() -> Subject {
        Subject { argv: vec!["(login)".into()], data: Vec::new() }
    }
}

impl Gateway {
    /// Refuses a client and audits the refusal under the principal it claimed.
    pub(super) fn refuse_audited(
        &mut self,
        wall: WallClock,
        client: u64,
        principal: &str,
        subject: Subject,
        reason: String,
    ) {
        self.audit_refusal(wall, principal, subject, reason.clone());
        self.refuse(client, reason);
    }

    pub(super) fn audit_refusal(
        &mut self,
        wall: WallClock,
        principal: &str,
        subject: Subject,
        reason: String,
    ) {
        self.audit_own(wall, principal, String::new(), subject, AuditDecision::Denied { reason });
    }

    /// A record the gateway makes itself, signed with its key.
    pub(super) fn audit_own(
        &mut self,
        wall: WallClock,
        principal: &str,
        run_as: String,
        subject: Subject,
        decision: AuditDecision,
    ) {
        let mut run_id = [0u8; 16];
        self.rng.fill_bytes(&mut run_id);
        let record = AuditRecord {
            host: GATEWAY_AUDIT_NAME.into(),
            principal: principal.chars().take(128).collect(),
            run_as,
            argv: subject.argv,
            at: wall,
            decision,
            run_id,
            data: subject.data,
        };
        // An encoding failure here would be a bug in the record type, not an input; the refusal
        // itself still reaches the client.
        if let Ok(signed) = Signed::sign(record, &self.keys) {
            self.outputs.push_back(GatewayOutput::Audit(signed));
        }
    }

    pub(super) fn refuse(&mut self, client: u64, reason: String) {
        self.outputs.push_back(GatewayOutput::ToClient { client, event: ClientEvent::Refused { reason } });
        self.outputs.push_back(GatewayOutput::CloseClient { client });
    }
}
