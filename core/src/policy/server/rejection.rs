//! Why a policy server refused an input: a kind to count and match on, and a detail naming the
//! sender and what was wrong. It decides nothing; the server does.

/// Why a server refused an input. The detail names the sender and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub kind: RejectKind,
    pub detail: String,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RejectKind {
    UnknownLocal,
    UnknownAgent,
    BadSignature,
    /// A message whose named sender is not the peer its channel authenticated.
    WrongPeer,
    OversizedReport,
    /// A report not newer than the one held from its agent: a replay.
    StaleReport,
    /// A sync not newer than the last one taken from its child: a replay.
    StaleSync,
    Unexpected,
    PolicyUnknownSigner,
    PolicyBadSignature,
    PolicyInvalid,
    /// A policy version older than the one held (a rollback, or a copy that crossed a newer one).
    OlderPolicy,
    StoredPolicyInvalid,
    AdminNotOperator,
    AdminStale,
    /// A change request taken already (inside its freshness window): a replay.
    AdminReplayed,
    AdminInvalid,
    /// A viewer (read-only) asked for something other than status or history.
    AdminNotAllowed,
}

impl RejectKind {
    /// The name a counter is shown under.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectKind::UnknownLocal => "unknown-local",
            RejectKind::UnknownAgent => "unknown-agent",
            RejectKind::BadSignature => "bad-signature",
            RejectKind::WrongPeer => "wrong-peer",
            RejectKind::OversizedReport => "oversized-report",
            RejectKind::StaleReport => "stale-report",
            RejectKind::StaleSync => "stale-sync",
            RejectKind::Unexpected => "unexpected",
            RejectKind::PolicyUnknownSigner => "policy-unknown-signer",
            RejectKind::PolicyBadSignature => "policy-bad-signature",
            RejectKind::PolicyInvalid => "policy-invalid",
            RejectKind::OlderPolicy => "older-policy",
            RejectKind::StoredPolicyInvalid => "stored-policy-invalid",
            RejectKind::AdminNotOperator => "admin-not-operator",
            RejectKind::AdminStale => "admin-stale",
            RejectKind::AdminReplayed => "admin-replayed",
            RejectKind::AdminInvalid => "admin-invalid",
            RejectKind::AdminNotAllowed => "admin-not-allowed",
        }
    }
}
