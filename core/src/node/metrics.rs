//! A node's figures for a metrics scrape, read from its roles at one instant: member versions
//! and sync state, heartbeats heard and dropped by reason, exec work running, alarm kills and
//! denials, the audit queue, policy sync lag and silent agents. Owns what each figure means; it
//! keeps no counter of its own (the roles do) and never formats them (the driver's exporter does).

use super::Node;
use super::io::RunningWork;
use crate::member::DropReason;
use crate::time::WallClock;

/// Everything a scrape shows, for one node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeMetrics {
    pub member: Option<MemberMetrics>,
    pub exec: ExecMetrics,
    pub policy: Option<PolicyMetrics>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberMetrics {
    /// The active configuration's version counter.
    pub active_version: u64,
    /// The staged configuration's, while one is staged.
    pub staged_version: Option<u64>,
    /// Fetching a newer configuration than it can install yet.
    pub syncing: bool,
    pub in_roster: bool,
    /// Heartbeats (Status messages) accepted since start.
    pub heartbeats_heard: u64,
    /// Messages refused since start, by every reason (`bad-signature`, `stale-sequence`, …).
    pub dropped: Vec<(&'static str, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecMetrics {
    pub work: RunningWork,
    /// Audit records waiting for the collector link to open.
    pub audit_queued: usize,
    /// Sessions the gateway's alarm handler ended since start.
    pub alarm_kills: u64,
    /// Requests the node's exec daemons refused since start.
    pub denials: u64,
    /// The gateway's channels to hosts carrying a session, and those open and idle.
    pub host_channels_busy: usize,
    pub host_channels_idle: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyMetrics {
    /// Each child server and how long ago its last sync came (`None`: not since start).
    pub child_sync_lag_ms: Vec<(String, Option<u64>)>,
    /// Agents not heard within a sync window, here and as children last reported.
    pub silent_agents: u64,
}

impl Node {
    /// The figures at wall-clock time `wall` (for ages).
    pub fn metrics(&self, wall: WallClock) -> NodeMetrics {
        let member = self.member().map(|m| MemberMetrics {
            active_version: m.active_version().counter,
            staged_version: m.staged_version().map(|v| v.counter),
            syncing: m.is_syncing(),
            in_roster: m.in_roster(),
            heartbeats_heard: m.heartbeats_heard(),
            dropped: DropReason::KINDS.iter().map(|k| (*k, m.drops().get(k).copied().unwrap_or(0))).collect(),
        });
        let (host_channels_busy, host_channels_idle) = self.roles.exec.host_channels();
        let exec = ExecMetrics {
            host_channels_busy,
            host_channels_idle,
            work: self.roles.exec.running_work(),
            audit_queued: self.roles.exec.audit_queued(&self.links),
            alarm_kills: self.gateway().map_or(0, |g| g.alarm_kills()),
            denials: self.exec_daemons().map(|d| d.denials()).sum(),
        };
        let policy = self.policy_server().map(|server| PolicyMetrics {
            child_sync_lag_ms: server
                .child_syncs()
                .map(|(name, at)| (name.to_owned(), at.map(|at| wall.0.saturating_sub(at.0))))
                .collect(),
            silent_agents: server.silent_agents(wall),
        });
        NodeMetrics { member, exec, policy }
    }
}
