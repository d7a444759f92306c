//! What crosses policy channels: tier messages between servers and agents, and operators'
//! signed admin requests (create a policy, list, global status). Owns the admin request and its
//! freshness rule; the channel is Noise, and tier messages carry their own signatures.

use serde::{Deserialize, Serialize};

use super::document::Policy;
use super::server::{GlobalStatus, PolicyMessage};
use crate::signed::{Signed, SignedKind};
use crate::time::WallClock;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyAdmin {
    Create(Policy),
    List,
    /// A local syncs with its parent now, outside its window.
    SyncNow,
    Status {
        current: bool,
        since: Option<WallClock>,
    },
}

/// An operator's request, signed, with the time it was made: a server refuses one older than
/// [`ADMIN_FRESHNESS_MS`] so a captured request cannot be replayed later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyAdminRequest {
    pub at: WallClock,
    pub request: PolicyAdmin,
}

impl SignedKind for PolicyAdminRequest {
    const DOMAIN: &'static str = "policy-admin";
}

pub const ADMIN_FRESHNESS_MS: u64 = 5 * 60 * 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyAdminReply {
    Created,
    SyncStarted,
    Policies(Vec<Policy>),
    Status(GlobalStatus),
    Error(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyWire {
    Tier(PolicyMessage),
    Admin(Signed<PolicyAdminRequest>),
    AdminReply(PolicyAdminReply),
}
