//! What agents report and what servers consolidate. Owns the agent's status report and its bounds,
//! and the aggregate counters locals send upward instead of raw reports. An aggregate holds
//! counts, and names only the agents alerts are about (silent ones, and those failing a
//! high-severity check), never an agent's individual results.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::checks::{CheckOutcome, Severity};
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
    /// Each check of the applied policy as last measured, by name.
    pub checks: BTreeMap<String, CheckResult>,
    /// Failed high-severity checks at the last measurement; `None` until one was made.
    pub threats: Option<u32>,
    pub last_scan: Option<WallClock>,
    pub at: WallClock,
    /// How often the agent polls (milliseconds): how long its silence is measured in.
    pub poll_every_ms: u64,
    /// The kernel release the agent runs on, where it could read it.
    pub kernel: Option<String>,
}

impl SignedKind for AgentReport {
    const DOMAIN: &'static str = "agent-report";
}

/// One check as the agent measured it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub outcome: CheckOutcome,
    pub severity: Severity,
    /// What was seen, in a few words (`mode 0644, wants 0600`).
    pub detail: String,
}

impl CheckResult {
    /// A failed or unevaluated high-severity check: what the status counts as a threat.
    pub fn is_threat(&self) -> bool {
        self.severity == Severity::High && self.outcome != CheckOutcome::Pass
    }
}

/// The largest encoded report a server accepts.
pub const MAX_REPORT_BYTES: usize = 64 * 1024;
pub const MAX_CHECKS: usize = 256;

impl AgentReport {
    /// Every check passed, and there was at least one: an agent that measured nothing is not
    /// counted compliant.
    pub fn compliant(&self) -> bool {
        !self.checks.is_empty() && self.checks.values().all(|c| c.outcome == CheckOutcome::Pass)
    }

    /// Checks measured, and how many passed.
    pub fn passed(&self) -> (u64, u64) {
        let passed = self.checks.values().filter(|c| c.outcome == CheckOutcome::Pass).count();
        (self.checks.len() as u64, passed as u64)
    }
}

/// Counters for one platform.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformCounts {
    pub agents: u64,
    /// Agents whose every check passed.
    pub compliant: u64,
    /// Failed high-severity checks.
    pub threats: u64,
    /// Checks measured, and of those passing: compliance is their share.
    pub checks: u64,
    pub passed: u64,
}

impl PlatformCounts {
    /// The share of measured checks that passed, in percent (0 when nothing was measured).
    pub fn compliance_pct(&self) -> f64 {
        if self.checks == 0 { 0.0 } else { 100.0 * self.passed as f64 / self.checks as f64 }
    }

    fn add(&mut self, other: &PlatformCounts) {
        self.agents = self.agents.saturating_add(other.agents);
        self.compliant = self.compliant.saturating_add(other.compliant);
        self.threats = self.threats.saturating_add(other.threats);
        self.checks = self.checks.saturating_add(other.checks);
        self.passed = self.passed.saturating_add(other.passed);
    }
}

/// Consolidated statistics: what a local sends its parent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aggregate {
    /// By platform key (`os/version/role`).
    pub platforms: BTreeMap<String, PlatformCounts>,
    /// Agents per applied policy digest (first 4 bytes, hex): the version spread. An agent that
    /// has applied no policy yet (its digest all zero) is under no version, and no version has
    /// a row without an agent on it.
    pub policy_versions: BTreeMap<String, u64>,
    /// Per local server (including nested ones): agents reporting and compliant.
    pub locals: BTreeMap<String, PlatformCounts>,
    /// Agents a local knows that have not reported within the window.
    pub silent_agents: u64,
    /// By check name: agents whose last measurement of it did not pass. Names and counts only,
    /// so an operator sees which check fails without any agent being named.
    pub failing: BTreeMap<String, u64>,
    /// Agents that did not report within the window, by name (at most [`MAX_NAMED_AGENTS`]):
    /// what the master's silence alert reads.
    pub quiet: BTreeMap<String, Quiet>,
    /// Agents whose last report failed a high-severity check, by name (at most
    /// [`MAX_NAMED_AGENTS`]), with the local and the checks: what the master's threat alert reads.
    pub threatened: BTreeMap<String, Threatened>,
}

/// The digest an agent reports before it has applied any policy.
pub const NO_POLICY: [u8; 32] = [0; 32];

/// The most agents one aggregate names in `quiet` and in `threatened` each.
pub const MAX_NAMED_AGENTS: usize = 1_000;

/// An agent not heard within a sync window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quiet {
    pub local: String,
    /// When it was last heard (or, never heard, when its local started listening for it).
    pub since: WallClock,
    /// Its poll interval, as it last reported it (or the local's sync window, never heard).
    pub every_ms: u64,
    /// When its local last found it quiet. Silence is judged up to here and never guessed past
    /// it: a figure that took two hops to reach the master must not call an agent silent that
    /// its local has heard since.
    pub as_of: WallClock,
}

impl Quiet {
    /// How long the agent was known to be silent.
    pub fn silent_ms(&self) -> u64 {
        self.as_of.0.saturating_sub(self.since.0)
    }
}

/// An agent failing high-severity checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Threatened {
    pub local: String,
    pub checks: Vec<String>,
}

impl Aggregate {
    /// Counts one agent's latest report under `local`.
    pub fn add_report(&mut self, local: &str, report: &AgentReport) {
        let (checks, passed) = report.passed();
        let one = PlatformCounts {
            agents: 1,
            compliant: u64::from(report.compliant()),
            threats: u64::from(report.threats.unwrap_or(0)),
            checks,
            passed,
        };
        self.platforms.entry(report.platform.key()).or_default().add(&one);
        self.locals.entry(local.to_owned()).or_default().add(&one);
        for (name, check) in &report.checks {
            if check.outcome != CheckOutcome::Pass {
                *self.failing.entry(name.clone()).or_default() += 1;
            }
        }
        if report.applied != NO_POLICY {
            let applied = self.policy_versions.entry(hex::encode(&report.applied[..4])).or_default();
            *applied = applied.saturating_add(1);
        }
    }

    /// Names `report`'s agent under `threatened` if its report fails a high-severity check.
    pub fn name_threats(&mut self, local: &str, report: &AgentReport) {
        let threats: Vec<String> =
            report.checks.iter().filter(|(_, c)| c.is_threat()).map(|(name, _)| name.clone()).collect();
        if !threats.is_empty() && self.threatened.len() < MAX_NAMED_AGENTS {
            let named = Threatened { local: local.to_owned(), checks: threats };
            self.threatened.insert(report.agent.clone(), named);
        }
    }

    /// Adds another aggregate's counts (a child's) into this one.
    pub fn absorb(&mut self, other: &Aggregate) {
        for (key, c) in &other.platforms {
            self.platforms.entry(key.clone()).or_default().add(c);
        }
        for (key, c) in &other.locals {
            self.locals.entry(key.clone()).or_default().add(c);
        }
        for (name, n) in &other.failing {
            let mine = self.failing.entry(name.clone()).or_default();
            *mine = mine.saturating_add(*n);
        }
        // A row nobody applies is no version.
        for (digest, n) in other.policy_versions.iter().filter(|(_, n)| **n > 0) {
            let mine = self.policy_versions.entry(digest.clone()).or_default();
            *mine = mine.saturating_add(*n);
        }
        self.silent_agents = self.silent_agents.saturating_add(other.silent_agents);
        for (agent, quiet) in &other.quiet {
            if self.quiet.len() >= MAX_NAMED_AGENTS {
                break;
            }
            self.quiet.insert(agent.clone(), quiet.clone());
        }
        for (agent, threatened) in &other.threatened {
            if self.threatened.len() >= MAX_NAMED_AGENTS {
                break;
            }
            self.threatened.insert(agent.clone(), threatened.clone());
        }
    }

    pub fn agents(&self) -> u64 {
        self.platforms.values().fold(0u64, |sum, c| sum.saturating_add(c.agents))
    }

    /// Agents reporting that have applied no policy yet: those under no version.
    pub fn without_policy(&self) -> u64 {
        let on_a_version = self.policy_versions.values().fold(0u64, |sum, n| sum.saturating_add(*n));
        self.agents().saturating_sub(on_a_version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(agent: &str, applied: [u8; 32]) -> AgentReport {
        AgentReport {
            agent: agent.into(),
            platform: Platform::new("linux", "12", "web"),
            applied,
            checks: BTreeMap::new(),
            threats: None,
            last_scan: None,
            at: WallClock(0),
            poll_every_ms: 1_000,
            kernel: None,
        }
    }

    #[test]
    fn an_agent_with_no_policy_yet_is_under_no_version_and_no_version_row_is_empty() {
        let mut local = Aggregate::default();
        local.add_report("local-00", &report("a", NO_POLICY));
        local.add_report("local-00", &report("b", [7; 32]));
        local.add_report("local-00", &report("c", [7; 32]));
        assert_eq!(local.policy_versions, [("07070707".to_owned(), 2)].into());
        assert_eq!((local.agents(), local.without_policy()), (3, 1));

        // A child's row with nobody on it adds no row; counts saturate.
        let mut child = Aggregate { silent_agents: u64::MAX, ..Aggregate::default() };
        child.policy_versions.insert("00000000".into(), 0);
        child.policy_versions.insert("07070707".into(), u64::MAX);
        let mut master = Aggregate::default();
        master.absorb(&local);
        master.absorb(&child);
        assert_eq!(master.policy_versions, [("07070707".to_owned(), u64::MAX)].into());
        assert_eq!(master.silent_agents, u64::MAX);
        assert_eq!(master.without_policy(), 0);
    }
}
