//! What crosses policy channels: tier messages between servers and agents, and operators'
//! signed admin requests (create a policy, list, global status). Owns the admin request and its
//! freshness rule; the channel is Noise, and tier messages carry their own signatures.

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use super::document::{Policy, SignedPolicy};
use super::merge::EffectivePolicy;
use super::report::{AgentReport, Aggregate};
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    pub from: String,
    pub cycle: u64,
    /// The version of every policy the child holds.
    pub versions: BTreeMap<String, u64>,
    /// Statistics consolidated since the child's last sync.
    pub aggregate: Aggregate,
}

impl SignedKind for SyncRequest {
    const DOMAIN: &'static str = "policy-sync";
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReply {
    pub from: String,
    pub request: u64,
    pub aggregate: Aggregate,
}

impl SignedKind for StatsReply {
    const DOMAIN: &'static str = "policy-stats";
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyMessage {
    Sync(Signed<SyncRequest>),
    /// Only the policies the child lacks or holds older versions of, and the ids of those the
    /// child holds newer than the parent (a policy made below whose climb was lost): the child
    /// sends those up again.
    SyncReply {
        policies: Vec<SignedPolicy>,
        wanted: Vec<String>,
    },
    /// A policy created below, on its way to the master.
    NewPolicy(SignedPolicy),
    StatsRequest {
        request: u64,
    },
    StatsReply(Signed<StatsReply>),
    Poll(Signed<AgentReport>),
    PollReply {
        effective: EffectivePolicy,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalStatus {
    pub current: bool,
    /// Direct children that did not answer in time (current status only).
    pub missing: Vec<String>,
    pub aggregate: Aggregate,
    /// When each child's figures were taken.
    pub as_of: BTreeMap<String, WallClock>,
}

impl GlobalStatus {
    pub fn partial(&self) -> bool {
        !self.missing.is_empty()
    }
}
