//! What crosses policy channels: tier messages between servers and agents, and operators' and
//! viewers' signed admin requests (create a policy, list, global status, history). Owns the admin
//! request and its freshness rule; the channel is Noise, and tier messages carry their own
//! signatures.

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use super::alerts::Alert;
use super::document::{Platform, Policy, PolicyRank, SignedPolicy, Superseded};
use super::merge::EffectivePolicy;
use super::report::{AgentReport, Aggregate, CheckResult, PlatformCounts};
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
    /// The master's time series of what each child's syncs carried, for points taken between
    /// `since` and `until` (both inclusive, either open). Read-only: a viewer may ask it.
    History {
        since: Option<WallClock>,
        until: Option<WallClock>,
    },
    /// One policy as held here, with the versions of it that lost conflicts.
    Show(String),
    /// Retire a policy: a new version that applies to no one replicates through the tier.
    Retire(String),
    /// The agents of every server below this one (or only of the one named), asked now; with
    /// `failing`, only those with a check not passing.
    Agents {
        server: Option<String>,
        failing: bool,
    },
    /// One agent's every check, asked of the tier now.
    Agent(String),
    /// The alerts the master raised, oldest first.
    Alerts,
}

impl PolicyAdmin {
    /// Whether the request only reads: the only kind a viewer (not an operator) may make.
    pub fn read_only(&self) -> bool {
        matches!(
            self,
            PolicyAdmin::Status { .. }
                | PolicyAdmin::History { .. }
                | PolicyAdmin::Agents { .. }
                | PolicyAdmin::Agent(_)
                | PolicyAdmin::Alerts
        )
    }
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
    /// History points in time order, at most [`MAX_HISTORY_REPLY`] (the newest when more match).
    /// Last, so every earlier reply keeps its encoding.
    History(Vec<HistoryPoint>),
    /// The answer to `Show`: the held version, and those that lost a conflict to an earlier or
    /// the current one, oldest first.
    Policy {
        held: Policy,
        superseded: Vec<Superseded>,
    },
    /// The policy is retired from this version on.
    Retired {
        version: u64,
    },
    /// The answer to `Agents` or `Agent`.
    Agents(AgentListing),
    /// The answer to `Alerts`: the newest [`MAX_HISTORY_REPLY`] at most, oldest first.
    Alerts(Vec<Alert>),
}

/// Agents as the servers that own them reported them now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentListing {
    pub agents: Vec<AgentDetail>,
    /// Servers that did not answer within the deadline: their agents are not listed.
    pub missing: Vec<String>,
    /// More agents matched than [`MAX_AGENT_DETAILS`]; the first by name are listed.
    pub truncated: bool,
}

/// The most agents one answer lists.
pub const MAX_AGENT_DETAILS: usize = 2_000;

/// One agent as its server holds it: its latest report, reduced for a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentDetail {
    pub agent: String,
    /// The local server the agent reports to.
    pub server: String,
    pub platform: Platform,
    /// Digest of the effective policy the agent applied (all zero before the first).
    pub applied: [u8; 32],
    /// When the server received the report.
    pub heard: WallClock,
    /// When the agent last completed a round of checks.
    pub measured: Option<WallClock>,
    pub threats: Option<u32>,
    /// Checks measured and of those passing.
    pub checks_total: u64,
    pub checks_passed: u64,
    /// Every check (asked for one agent), or only those not passing (a listing).
    pub checks: BTreeMap<String, CheckResult>,
}

/// What a server asks the tier below it now; every server on the way down answers for itself
/// and for those below it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TierQuery {
    /// Statistics consolidated now.
    Stats,
    /// See [`PolicyAdmin::Agents`].
    Agents { server: Option<String>, failing: bool },
    /// See [`PolicyAdmin::Agent`].
    Agent(String),
}

/// What a server found for a query, itself and below.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Found {
    Stats(Aggregate),
    Agents { agents: Vec<AgentDetail>, truncated: bool },
}

/// A server's answer to its parent's query, signed by the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierAnswer {
    pub from: String,
    pub request: u64,
    pub found: Found,
    /// Servers below that did not answer in time.
    pub missing: Vec<String>,
    /// When each server's part was taken.
    pub as_of: BTreeMap<String, WallClock>,
    /// For each server in `missing`, its agents as its parent last heard of them.
    pub unanswered: BTreeMap<String, Unanswered>,
}

/// A server that did not answer (a current status: in time; a historical one: with a sync in
/// the span), and the agents below it as the last sync its parent holds counted them: every one
/// of them is counted as not reporting, never left out of the totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unanswered {
    /// When that sync reached the parent; `None` when it never synced, so its agents are unknown.
    pub last_sync: Option<WallClock>,
    /// Agents that sync counted, reporting or silent then.
    pub agents: u64,
    /// Those of them whose platform it named (those reporting then), by platform.
    pub platforms: BTreeMap<String, u64>,
}

impl Unanswered {
    /// What `aggregate`, a sync taken at `at`, says of the agents below the server that sent it.
    pub fn of(at: WallClock, aggregate: &Aggregate) -> Unanswered {
        let platforms: BTreeMap<String, u64> = aggregate
            .platforms
            .iter()
            .filter(|(_, c)| c.agents > 0)
            .map(|(platform, c)| (platform.clone(), c.agents))
            .collect();
        let reporting = platforms.values().fold(0u64, |sum, n| sum.saturating_add(*n));
        Unanswered {
            last_sync: Some(at),
            agents: reporting.saturating_add(aggregate.silent_agents),
            platforms,
        }
    }
}

impl SignedKind for TierAnswer {
    const DOMAIN: &'static str = "policy-answer";
}

/// The most history points one reply carries: a reply stays well under a channel's message
/// limit, and a console asking for a long span gets its most recent part.
pub const MAX_HISTORY_REPLY: usize = 4_000;

/// One child sync as the master received it, reduced to totals a chart can plot: never an
/// agent's identity, only counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryPoint {
    /// When the master received the sync (its wall clock).
    pub at: WallClock,
    /// The child (local server) that synced.
    pub local: String,
    /// The sync's aggregate summed over platforms: agents reporting, compliant, threats found.
    pub counts: PlatformCounts,
    /// Agents the child knows that did not report since its previous sync.
    pub silent: u64,
    /// The same sync's counts by platform (`os/version/role`).
    pub platforms: BTreeMap<String, PlatformCounts>,
    /// The same sync's counts by the local server the agents report to: the child itself and
    /// every local nested below it.
    pub locals: BTreeMap<String, PlatformCounts>,
}

impl HistoryPoint {
    /// This sync split by the local server its agents report to (one point per nested local,
    /// the child's own silent count and platforms on the child's point); a sync that named no
    /// local stays whole.
    pub fn by_reporting_local(&self) -> Vec<HistoryPoint> {
        if self.locals.is_empty() {
            return vec![self.clone()];
        }
        let mut out: Vec<HistoryPoint> = self
            .locals
            .iter()
            .map(|(local, counts)| HistoryPoint {
                at: self.at,
                local: local.clone(),
                counts: *counts,
                silent: 0,
                platforms: BTreeMap::new(),
                locals: BTreeMap::new(),
            })
            .collect();
        match out.iter_mut().find(|p| p.local == self.local) {
            Some(own) => {
                own.silent = self.silent;
                own.platforms = self.platforms.clone();
            }
            None => out.push(HistoryPoint {
                counts: PlatformCounts::default(),
                locals: BTreeMap::new(),
                ..self.clone()
            }),
        }
        out
    }
}

impl HistoryPoint {
    /// The totals of `aggregate`, which `local` sent at `at`.
    pub fn of(local: &str, at: WallClock, aggregate: &Aggregate) -> HistoryPoint {
        // Saturating: a child's figures are signed but not bounded, and a total that overflowed
        // must not take the master down. (`agents` equals `Aggregate::agents` short of that.)
        let counts = aggregate.platforms.values().fold(PlatformCounts::default(), |sum, c| PlatformCounts {
            agents: sum.agents.saturating_add(c.agents),
            compliant: sum.compliant.saturating_add(c.compliant),
            threats: sum.threats.saturating_add(c.threats),
            checks: sum.checks.saturating_add(c.checks),
            passed: sum.passed.saturating_add(c.passed),
        });
        HistoryPoint {
            at,
            local: local.to_owned(),
            counts,
            silent: aggregate.silent_agents,
            platforms: aggregate.platforms.clone(),
            locals: aggregate.locals.clone(),
        }
    }
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
    /// When the child signed it: its parent takes only a sync newer than the last it took
    /// from that child, so a captured one cannot be played again.
    pub at: WallClock,
    /// The rank of every policy version the child holds, by id.
    pub versions: BTreeMap<String, PolicyRank>,
    /// Statistics consolidated since the child's last sync.
    pub aggregate: Aggregate,
}

impl SignedKind for SyncRequest {
    const DOMAIN: &'static str = "policy-sync";
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
    /// A parent's query, to be answered within `budget_ms` of its arrival.
    Query {
        request: u64,
        query: TierQuery,
        budget_ms: u64,
    },
    Answer(Box<Signed<TierAnswer>>),
    Poll(Signed<AgentReport>),
    PollReply {
        effective: EffectivePolicy,
    },
}

/// The master's answer for the whole tier.
///
/// Current: every server was asked now; one that did not answer within the deadline is named in
/// `missing`, and the agents below it are counted as not reporting, as many as the last sync
/// its parent holds counted (by platform where that sync named them), never dropped.
///
/// Historical: each child's latest sync (at or after `since`, when given), as of the time in
/// `as_of`; a child with no sync in that span is named in `missing`, and its agents as its last
/// sync counted them are not reporting, as for a current answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalStatus {
    pub current: bool,
    /// Servers that did not answer in time (current) or sent no sync in the span (historical),
    /// nested ones included.
    pub missing: Vec<String>,
    pub aggregate: Aggregate,
    /// When each child's figures were taken.
    pub as_of: BTreeMap<String, WallClock>,
    /// For each server in `missing`, the agents below it, counted as not reporting.
    pub unanswered: BTreeMap<String, Unanswered>,
}

impl GlobalStatus {
    pub fn partial(&self) -> bool {
        !self.missing.is_empty()
    }

    /// Agents below servers that did not answer, as their last syncs counted them.
    pub fn unanswered_agents(&self) -> u64 {
        self.unanswered.values().fold(0u64, |sum, u| sum.saturating_add(u.agents))
    }

    /// Every agent not reporting: those the answering servers know but did not hear from, and
    /// every agent below a server that did not answer.
    pub fn not_reporting(&self) -> u64 {
        self.aggregate.silent_agents.saturating_add(self.unanswered_agents())
    }

    /// Agents below servers that did not answer, by platform, where their last syncs named it.
    pub fn unanswered_platforms(&self) -> BTreeMap<String, u64> {
        let mut sums: BTreeMap<String, u64> = BTreeMap::new();
        for u in self.unanswered.values() {
            for (platform, n) in &u.platforms {
                let sum = sums.entry(platform.clone()).or_default();
                *sum = sum.saturating_add(*n);
            }
        }
        sums
    }

    /// The status as `cohort status --global --json` and the console's `/api/policy` give it.
    pub fn to_json(&self) -> serde_json::Value {
        let counts = |rows: &BTreeMap<String, PlatformCounts>| -> serde_json::Map<String, serde_json::Value> {
            rows.iter()
                .map(|(k, c)| {
                    let row = serde_json::json!({
                        "agents": c.agents,
                        "compliant": c.compliant,
                        "threats": c.threats,
                        "checks": c.checks,
                        "passed": c.passed,
                        "compliance_pct": c.compliance_pct(),
                    });
                    (k.clone(), row)
                })
                .collect()
        };
        let unanswered: serde_json::Map<String, serde_json::Value> = self
            .unanswered
            .iter()
            .map(|(server, u)| {
                let row = serde_json::json!({
                    "last_sync_unix_ms": u.last_sync.map(|at| at.0),
                    "agents": u.agents,
                    "platforms": u.platforms,
                });
                (server.clone(), row)
            })
            .collect();
        serde_json::json!({
            "current": self.current,
            "partial": self.partial(),
            "missing": self.missing,
            "as_of": self.as_of.iter().map(|(k, at)| (k.clone(), serde_json::json!(at.0))).collect::<serde_json::Map<_, _>>(),
            "agents": self.aggregate.agents(),
            "silent_agents": self.aggregate.silent_agents,
            "not_reporting": self.not_reporting(),
            "not_reporting_platforms": self.unanswered_platforms(),
            "unanswered": unanswered,
            "platforms": counts(&self.aggregate.platforms),
            "locals": counts(&self.aggregate.locals),
            "policy_versions": self.aggregate.policy_versions,
            "failing": self.aggregate.failing,
        })
    }
}
