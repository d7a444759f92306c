//! What a request must pass before anything is recorded as allowed: the ticket (sealed by the KDC
//! under the key it shares with this host, unexpired), the authenticator (same principal, fresh
//! within the skew, made after this daemon started, covering exactly this task), the task's
//! bounds, the replay cache, and the ACL. It decides and remembers the nonce; it never audits or acts (the daemon
//! does, with what this answers).

use super::super::acl::AclDenied;
use super::super::task::TaskError;
use super::super::ticket::{Authenticator, TicketError, TicketKey, request_digest};
use super::{ExecDaemon, ExecRequest};
use crate::time::WallClock;

/// Why a host refused a request before anything ran. The text is safe to show the user and is
/// what the audit record keeps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("ticket refused: {0}")]
    Ticket(TicketError),
    #[error("ticket is for host `{ticket}`, not `{host}`")]
    WrongHost { ticket: String, host: String },
    #[error("ticket expired; log in again")]
    Expired,
    #[error("ticket issued in the future beyond the allowed clock skew")]
    IssuedInFuture,
    #[error("authenticator refused: {0}")]
    Authenticator(TicketError),
    #[error("authenticator names another principal")]
    OtherPrincipal,
    #[error("clock skew of {skew_s}s is beyond the {limit_s}s limit; check NTP on both ends")]
    ClockSkew { skew_s: u64, limit_s: u64 },
    #[error("authenticator predates this daemon's start; retry")]
    PredatesStart,
    #[error("authenticator does not cover this command")]
    NotCovered,
    #[error("{0}")]
    Task(TaskError),
    #[error("replayed authenticator")]
    Replayed,
    #[error("replay cache full; retry shortly")]
    ReplayCacheFull,
    #[error("ACL: {0}")]
    Acl(AclDenied),
    #[error("the audit collector did not acknowledge the record; refusing to run")]
    AuditUnacknowledged,
    #[error("a request named a session number its channel already carries")]
    OutOfOrder,
    #[error(
        "host `{0}` is not a managed host in the installed configuration (removed, or listed under another key)"
    )]
    NotListed(String),
}

impl ExecDaemon {
    /// Checks everything a request must pass. Returns the principal (or the name claimed) and
    /// the refusal, if any.
    pub(super) fn verify(&mut self, request: &ExecRequest, wall: WallClock) -> (String, Result<(), Refusal>) {
        let key = self.ticket_key.get_or_insert_with(|| TicketKey::for_host(&self.keys, &self.kdc));
        let opened = key.as_ref().map_err(Clone::clone).and_then(|key| request.ticket.open(key, &self.host));
        let body = match opened {
            Ok(body) => body,
            Err(e) => return ("(unverified)".into(), Err(Refusal::Ticket(e))),
        };
        let principal = body.principal.clone();
        if !self.listed {
            return (principal, Err(Refusal::NotListed(self.host.clone())));
        }
        let skew_ms = u64::try_from(self.settings.max_skew.as_millis()).unwrap_or(u64::MAX);
        let refuse = |refusal: Refusal| (principal.clone(), Err(refusal));
        if body.host != self.host {
            return refuse(Refusal::WrongHost { ticket: body.host.clone(), host: self.host.clone() });
        }
        if wall >= body.expires {
            return refuse(Refusal::Expired);
        }
        if body.issued.0 > wall.0.saturating_add(skew_ms) {
            return refuse(Refusal::IssuedInFuture);
        }
        let auth = match Authenticator::open(&request.authenticator, &body.session_key, &self.host) {
            Ok(auth) => auth,
            Err(e) => return refuse(Refusal::Authenticator(e)),
        };
        if auth.principal != body.principal {
            return refuse(Refusal::OtherPrincipal);
        }
        let skew = wall.distance(auth.timestamp);
        if skew > self.settings.max_skew {
            let (skew_s, limit_s) = (skew.as_secs(), self.settings.max_skew.as_secs());
            return refuse(Refusal::ClockSkew { skew_s, limit_s });
        }
        if auth.timestamp < self.started {
            return refuse(Refusal::PredatesStart);
        }
        if let Err(e) = request.task.check() {
            return refuse(Refusal::Task(e));
        }
        if auth.request_digest != request_digest(&self.host, &request.run_as, &request.task) {
            return refuse(Refusal::NotCovered);
        }
        self.replay.retain(|_, forget_at| *forget_at > wall);
        let key = (auth.principal.clone(), auth.nonce);
        if self.replay.contains_key(&key) {
            return refuse(Refusal::Replayed);
        }
        if self.replay.len() >= self.settings.max_replay_entries {
            return refuse(Refusal::ReplayCacheFull);
        }
        self.replay.insert(key, WallClock(auth.timestamp.0.saturating_add(2 * skew_ms)));
        if let Err(denied) = self.acl.check_task(&principal, &request.run_as, &request.task) {
            return refuse(Refusal::Acl(denied));
        }
        (principal, Ok(()))
    }
}
