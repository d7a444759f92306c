//! What agents report and what servers consolidate. Owns the agent's status report and its bounds,
//! and the aggregate counters locals send upward instead of raw reports. An aggregate never holds
//! an agent's identity or its individual results: only counts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::document::Platform;
use crate::signed::SignedKind;
use crate::time::WallClock;

/// An agent's security status, signed by the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentReport {
    pub agent: String,
    pub platform: Platform,
    /// Digest of the effective policy the agent applied (all zero before the first).
    pub applied: [u8; 32],
    /// Compliance checks and whether each passed.
    pub checks: BTreeMap<String, bool>,
    /// Threats found by the last scan; `None` until something on the machine measured it.
    pub threats: Option<u32>,
    pub last_scan: Option<WallClock>,
    pub at: WallClock,
}

impl SignedKind for AgentReport {
    const DOMAIN: &'static str = "agent-report";
}

/// The largest encoded report a server accepts.
pub const MAX_REPORT_BYTES: usize = 16 * 1024;
pub const MAX_CHECKS: usize = 256;

impl AgentReport {
    /// Every check passed, and there was at least one: an agent that measured nothing is not
    /// counted compliant.
    pub fn compliant(&self) -> bool {
        !self.checks.is_empty() && self.checks.values().all(|passed| *passed)
    }
}

/// Counters for one platform.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformCounts {
    pub agents: u64,
    pub compliant: u64,
    pub threats: u64,
}

/// Consolidated statistics: what a local sends its parent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aggregate {
    /// By platform key (`os/version/role`).
    pub platforms: BTreeMap<String, PlatformCounts>,
    /// Agents per applied policy digest (first 4 bytes, hex): the version spread.
    pub policy_versions: BTreeMap<String, u64>,
    /// Per local server (including nested ones): agents reporting and compliant.
    pub locals: BTreeMap<String, PlatformCounts>,
    /// Agents a local knows that have not reported within the window.
    pub silent_agents: u64,
}

impl Aggregate {
    /// Counts one agent's latest report under `local`.
    pub fn add_report(&mut self, local: &str, report: &AgentReport) {
        let compliant = u64::from(report.compliant());
        for counts in [
            self.platforms.entry(report.platform.key()).or_default(),
            self.locals.entry(local.to_owned()).or_default(),
        ] {
            counts.agents += 1;
            counts.compliant += compliant;
            counts.threats += u64::from(report.threats.unwrap_or(0));
        }
        *self.policy_versions.entry(hex::encode(&report.applied[..4])).or_default() += 1;
    }

    /// Adds another aggregate's counts (a child's) into this one.
    pub fn absorb(&mut self, other: &Aggregate) {
        for (key, c) in &other.platforms {
            let mine = self.platforms.entry(key.clone()).or_default();
            mine.agents += c.agents;
            mine.compliant += c.compliant;
            mine.threats += c.threats;
        }
        for (key, c) in &other.locals {
            let mine = self.locals.entry(key.clone()).or_default();
            mine.agents += c.agents;
            mine.compliant += c.compliant;
            mine.threats += c.threats;
        }
        for (digest, n) in &other.policy_versions {
            *self.policy_versions.entry(digest.clone()).or_default() += n;
        }
        self.silent_agents += other.silent_agents;
    }

    pub fn agents(&self) -> u64 {
        self.platforms.values().map(|c| c.agents).sum()
    }
}
