//! The admin protocol spoken over a secure channel to a node: status, operator changes and
//! service lookups (rule 9). Owns the request and response types and the node's status view. It
//! never authorises a change itself: a change request carries its operator's signature and the
//! member machine checks it.

use serde::{Deserialize, Serialize};

use crate::identity::{NodeId, PublicIdentity};
use crate::member::{ChangeRequest, JoinAnchor, LookupAnswer, Member, Version};
use crate::signed::Signed;
use crate::time::Instant;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminRequest {
    Status,
    Change(Signed<ChangeRequest>),
    Lookup {
        key: Option<String>,
    },
    /// What a new node needs to join (`cohort admin join-file`).
    JoinAnchor,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminResponse {
    Status(NodeStatus),
    ChangeAccepted {
        version: Version,
    },
    ChangeRejected {
        reason: String,
    },
    Lookup(LookupReply),
    JoinAnchor(Box<JoinAnchor>),
    /// The request could not be served; the text says why and what to do.
    Error(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LookupReply {
    Value { version: Version, key: String, value: Option<String> },
    Settings { version: Version, settings: Vec<(String, String)> },
    Declined { retry_after_ms: u64 },
}

impl From<LookupAnswer> for LookupReply {
    fn from(answer: LookupAnswer) -> Self {
        match answer {
            LookupAnswer::Value { version, key, value } => LookupReply::Value { version, key, value },
            LookupAnswer::Settings { version, settings } => {
                LookupReply::Settings { version, settings: settings.into_iter().collect() }
            }
            LookupAnswer::Declined { retry_after } => LookupReply::Declined {
                retry_after_ms: u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX),
            },
        }
    }
}

/// A node's view of the cluster, as `cohort status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: NodeId,
    pub name: String,
    pub cluster_id: String,
    pub active: Version,
    pub staged: Option<Version>,
    pub syncing: bool,
    /// Whether this node is in its active configuration's roster: false while joining (not yet
    /// added) and after it was removed.
    pub in_roster: bool,
    pub settings: u64,
    pub members: Vec<PeerStatus>,
    /// The operators the active configuration lists: who may sign changes.
    pub operators: Vec<OperatorStatus>,
    pub dropped: Vec<(String, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorStatus {
    pub name: String,
    pub node_id: NodeId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub node_id: NodeId,
    /// The keys the roster lists for it: what an operator seals its own settings to.
    pub identity: PublicIdentity,
    pub name: String,
    pub address: String,
    pub is_self: bool,
    /// Milliseconds since this node last accepted a Status from the peer.
    pub last_heard_ms: Option<u64>,
    pub active: Option<Version>,
    pub staged: Option<Version>,
}

impl NodeStatus {
    /// What the node is doing, in one word for scripts.
    pub fn state(&self) -> &'static str {
        match (self.in_roster, self.syncing) {
            (false, _) => "outside-roster",
            (true, true) => "syncing",
            (true, false) => "serving",
        }
    }

    /// The status as `cohort status --json` and the console's `/api/status` give it: versions
    /// in full, times in milliseconds since last heard.
    pub fn to_json(&self) -> serde_json::Value {
        let members: Vec<serde_json::Value> = self
            .members
            .iter()
            .map(|m| {
                serde_json::json!({
                    "name": m.name,
                    "node_id": m.node_id.to_hex(),
                    "address": m.address,
                    "self": m.is_self,
                    "active": m.active.map(|v| v.to_full_string()),
                    "staged": m.staged.map(|v| v.to_full_string()),
                    "last_heard_ms": m.last_heard_ms,
                })
            })
            .collect();
        serde_json::json!({
            "node": self.name,
            "node_id": self.node_id.to_hex(),
            "cluster_id": self.cluster_id,
            "active": self.active.to_full_string(),
            "staged": self.staged.map(|v| v.to_full_string()),
            "state": self.state(),
            "settings": self.settings,
            "members": members,
            "operators": self
                .operators
                .iter()
                .map(|o| serde_json::json!({ "name": o.name, "node_id": o.node_id.to_hex() }))
                .collect::<Vec<_>>(),
            "dropped": self.dropped.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        })
    }
}

/// The status view of `member` at `now`: its own versions and each member of its active and
/// staged rosters as last heard.
pub fn node_status(member: &Member, now: Instant) -> NodeStatus {
    let active = &member.active().config;
    let mut roster = active.members.clone();
    if let Some(staged) = member.staged() {
        roster.extend(staged.config.members.clone());
    }
    let me = member.id();
    let members = roster
        .iter()
        .map(|(id, info)| {
            let heard = member.peers().get(id);
            let is_self = *id == me;
            PeerStatus {
                node_id: *id,
                identity: info.identity,
                name: info.name.clone(),
                address: info.address.clone(),
                is_self,
                last_heard_ms: heard
                    .map(|p| u64::try_from((now - p.last_heard).as_millis()).unwrap_or(u64::MAX)),
                active: if is_self { Some(member.active_version()) } else { heard.map(|p| p.active) },
                staged: if is_self { member.staged_version() } else { heard.and_then(|p| p.staged) },
            }
        })
        .collect();
    NodeStatus {
        node_id: me,
        name: active.members.get(&me).map_or_else(|| me.to_hex(), |m| m.name.clone()),
        cluster_id: active.cluster_id.clone(),
        active: member.active_version(),
        staged: member.staged_version(),
        syncing: member.is_syncing(),
        in_roster: member.in_roster(),
        settings: active.settings.len() as u64,
        members,
        operators: active
            .operators
            .values()
            .map(|o| OperatorStatus { name: o.name.clone(), node_id: o.id() })
            .collect(),
        dropped: member.drops().iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
    }
}
