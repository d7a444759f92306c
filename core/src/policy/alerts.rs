//! Alerts at the master: the thresholds of the tier's configuration (compliance below a share for
//! a local server or a platform, an agent silent for longer than some of its poll intervals, any
//! failed high-severity check), the conditions they find in the children's latest syncs, and an
//! alert raised once when a condition starts to hold (not at every sync while it holds). Owns the
//! rules, the conditions held and the bounded list of alerts raised. It never raises an alert from
//! anything but a verified child's figures, and never twice for one condition while it holds.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::report::Aggregate;
use crate::time::WallClock;

/// The most alerts kept in memory (the driver's store keeps every one).
pub const MAX_ALERTS: usize = 10_000;

/// A condition counts as over once it was absent from this many evaluations in a row: a sync
/// that happened to carry no figure for a local does not end it and raise it again at the next.
pub const CLEAR_AFTER: u32 = 3;

/// The thresholds; every one is off unless set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlertRules {
    /// Compliance (the share of passing checks) below this percentage for a local server or a
    /// platform, once at least one check was measured there.
    pub compliance_below_pct: Option<u8>,
    /// An agent not heard for longer than this many of its poll intervals.
    pub silent_polls: Option<u32>,
    /// Any failed high-severity check.
    pub high_severity: bool,
}

impl AlertRules {
    pub fn any(&self) -> bool {
        self.compliance_below_pct.is_some() || self.silent_polls.is_some() || self.high_severity
    }
}

/// What an alert is about: one condition, named so that the same condition holding at the next
/// sync is recognised as the same.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Condition {
    LocalCompliance { local: String },
    PlatformCompliance { platform: String },
    SilentAgent { agent: String, local: String },
    HighSeverity { agent: String, local: String, check: String },
}

impl Condition {
    pub fn kind(&self) -> &'static str {
        match self {
            Condition::LocalCompliance { .. } => "local-compliance",
            Condition::PlatformCompliance { .. } => "platform-compliance",
            Condition::SilentAgent { .. } => "silent-agent",
            Condition::HighSeverity { .. } => "high-severity",
        }
    }
}

/// An alert raised at the master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// Counts up from 1 at each master.
    pub id: u64,
    pub at: WallClock,
    pub condition: Condition,
    /// What was seen, for a person (`compliance 62% < 90%`, `not heard for 95 s (poll every 30 s)`).
    pub detail: String,
}

impl Alert {
    /// The alert as its hook reads it on stdin and `cohort policy alerts --json` prints it.
    pub fn to_json(&self) -> serde_json::Value {
        let mut about = serde_json::to_value(&self.condition).unwrap_or_default();
        // Serde's externally tagged form: lift the fields of the one variant.
        if let Some(fields) = about.as_object().and_then(|o| o.values().next()).cloned() {
            about = fields;
        }
        serde_json::json!({
            "id": self.id,
            "at_unix_ms": self.at.0,
            "kind": self.condition.kind(),
            "about": about,
            "detail": self.detail,
        })
    }
}

/// The master's alert state. See the module docs.
#[derive(Debug, Default)]
pub struct AlertBook {
    rules: AlertRules,
    /// The conditions that hold, each with how many evaluations in a row it was absent from.
    holding: BTreeMap<Condition, u32>,
    raised: VecDeque<Alert>,
    next_id: u64,
}

impl AlertBook {
    pub fn new(rules: AlertRules) -> AlertBook {
        AlertBook { rules, next_id: 1, ..AlertBook::default() }
    }

    /// Takes back the alerts kept before a restart, and the conditions the children's restored
    /// syncs show now: those were alerted on already (or held then), so they raise nothing again.
    pub fn restore(&mut self, kept: impl IntoIterator<Item = Alert>, children: &[&Aggregate]) {
        for alert in kept {
            self.next_id = self.next_id.max(alert.id.saturating_add(1));
            self.keep(alert);
        }
        self.holding = self.conditions(children).into_keys().map(|c| (c, 0)).collect();
    }

    /// The alerts raised, oldest first.
    pub fn alerts(&self) -> impl Iterator<Item = &Alert> {
        self.raised.iter()
    }

    /// Evaluates the rules over every child's latest sync (`wall` stamps what it raises); returns
    /// the alerts for the conditions that hold now and did not at the last evaluation.
    pub fn evaluate(&mut self, children: &[&Aggregate], wall: WallClock) -> Vec<Alert> {
        let now = self.conditions(children);
        let mut raised = Vec::new();
        for (condition, detail) in &now {
            if !self.holding.contains_key(condition) {
                let alert = Alert {
                    id: self.next_id,
                    at: wall,
                    condition: condition.clone(),
                    detail: detail.clone(),
                };
                self.next_id += 1;
                self.keep(alert.clone());
                raised.push(alert);
            }
        }
        for (condition, misses) in &mut self.holding {
            *misses = if now.contains_key(condition) { 0 } else { misses.saturating_add(1) };
        }
        self.holding.retain(|_, misses| *misses < CLEAR_AFTER);
        for condition in now.into_keys() {
            self.holding.entry(condition).or_insert(0);
        }
        raised
    }

    fn keep(&mut self, alert: Alert) {
        if self.raised.len() >= MAX_ALERTS {
            self.raised.pop_front();
        }
        self.raised.push_back(alert);
    }

    /// Every condition the rules find, with what was seen.
    fn conditions(&self, children: &[&Aggregate]) -> BTreeMap<Condition, String> {
        let mut found = BTreeMap::new();
        let mut fleet = Aggregate::default();
        for child in children {
            fleet.absorb(child);
        }
        if let Some(floor) = self.rules.compliance_below_pct {
            let low = |c: &super::report::PlatformCounts| {
                (c.checks > 0 && c.compliance_pct() < f64::from(floor)).then(|| {
                    format!("compliance {:.0}% of {} checks, below {floor}%", c.compliance_pct(), c.checks)
                })
            };
            for (local, counts) in &fleet.locals {
                if let Some(detail) = low(counts) {
                    found.insert(Condition::LocalCompliance { local: local.clone() }, detail);
                }
            }
            for (platform, counts) in &fleet.platforms {
                if let Some(detail) = low(counts) {
                    found.insert(Condition::PlatformCompliance { platform: platform.clone() }, detail);
                }
            }
        }
        if let Some(polls) = self.rules.silent_polls {
            for (agent, quiet) in &fleet.quiet {
                let silent_ms = quiet.silent_ms();
                if silent_ms > quiet.every_ms.saturating_mul(u64::from(polls)) {
                    let detail = format!(
                        "not heard for {} s (polls every {} s; the limit is {polls} polls)",
                        silent_ms / 1000,
                        quiet.every_ms / 1000
                    );
                    found.insert(
                        Condition::SilentAgent { agent: agent.clone(), local: quiet.local.clone() },
                        detail,
                    );
                }
            }
        }
        if self.rules.high_severity {
            for (agent, threatened) in &fleet.threatened {
                for check in &threatened.checks {
                    let condition = Condition::HighSeverity {
                        agent: agent.clone(),
                        local: threatened.local.clone(),
                        check: check.clone(),
                    };
                    found.insert(condition, format!("high-severity check `{check}` is not passing"));
                }
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::report::{PlatformCounts, Quiet, Threatened};

    /// A child whose local found `agent-1` quiet from `quiet.0` until `quiet.1` (ms).
    fn child(quiet: Option<(u64, u64)>, threatened: bool, passed: u64) -> Aggregate {
        let mut a = Aggregate::default();
        let counts = PlatformCounts { agents: 2, compliant: 1, threats: 0, checks: 10, passed };
        a.locals.insert("local-00".into(), counts);
        a.platforms.insert("debian/12/web".into(), counts);
        if let Some((since, as_of)) = quiet {
            let quiet = Quiet {
                local: "local-00".into(),
                since: WallClock(since),
                every_ms: 1_000,
                as_of: WallClock(as_of),
            };
            a.quiet.insert("agent-1".into(), quiet);
        }
        if threatened {
            let t = Threatened { local: "local-00".into(), checks: vec!["flag".into()] };
            a.threatened.insert("agent-2".into(), t);
        }
        a
    }

    fn rules() -> AlertRules {
        AlertRules { compliance_below_pct: Some(90), silent_polls: Some(3), high_severity: true }
    }

    #[test]
    fn each_condition_is_alerted_once_while_it_holds_and_again_after_it_cleared() {
        let mut book = AlertBook::new(rules());
        // agent-1 quiet since 10 s, as its local saw it at `ms`.
        let quiet = |ms: u64| child(Some((10_000, ms)), true, 10);
        // Two seconds quiet: not yet three polls; the threat is new.
        let first = book.evaluate(&[&quiet(12_000)], WallClock(12_000));
        assert_eq!(first.iter().map(|a| a.condition.kind()).collect::<Vec<_>>(), ["high-severity"]);
        // Four seconds: silent now; the threat still holds and is not raised again.
        let second = book.evaluate(&[&quiet(14_000)], WallClock(14_000));
        assert_eq!(second.len(), 1);
        assert_eq!(
            second[0].condition,
            Condition::SilentAgent { agent: "agent-1".into(), local: "local-00".into() }
        );
        for at in 15..30 {
            let figure = quiet(at * 1_000);
            assert!(book.evaluate(&[&figure], WallClock(at * 1_000)).is_empty(), "nothing new at every sync");
        }
        // Absent from one evaluation: still held, nothing raised when it shows again.
        assert!(book.evaluate(&[&child(None, false, 10)], WallClock(30_000)).is_empty());
        assert!(book.evaluate(&[&quiet(30_500)], WallClock(30_500)).is_empty());
        // Cleared (absent from three in a row), then back: a new alert.
        for at in 0..CLEAR_AFTER {
            assert!(book.evaluate(&[&child(None, false, 10)], WallClock(31_000 + u64::from(at))).is_empty());
        }
        let back = book.evaluate(&[&quiet(32_000)], WallClock(32_000));
        assert_eq!(back.len(), 2);
        assert_eq!(book.alerts().count(), 4);
        assert_eq!(book.alerts().map(|a| a.id).collect::<Vec<_>>(), [1, 2, 3, 4]);
    }

    #[test]
    fn silence_is_judged_as_the_local_saw_it_not_when_a_late_figure_arrives() {
        let mut book = AlertBook::new(rules());
        // The local found agent-1 quiet for two seconds; the figure reached the master two hops
        // and six seconds later. The local may have heard the agent since: no alert on a guess.
        let late = child(Some((10_000, 12_000)), false, 10);
        assert!(book.evaluate(&[&late], WallClock(18_000)).is_empty());
        // The next figure shows it still quiet past three polls: now it is silent.
        let raised = book.evaluate(&[&child(Some((10_000, 14_000)), false, 10)], WallClock(19_000));
        assert_eq!(raised.len(), 1);
        assert!(raised[0].detail.contains("not heard for 4 s"), "{}", raised[0].detail);
    }

    #[test]
    fn low_compliance_names_the_local_and_the_platform() {
        let mut book = AlertBook::new(rules());
        let raised = book.evaluate(&[&child(None, false, 5)], WallClock(1));
        let kinds: Vec<&str> = raised.iter().map(|a| a.condition.kind()).collect();
        assert_eq!(kinds, ["local-compliance", "platform-compliance"]);
        assert!(raised[0].detail.contains("compliance 50%"), "{}", raised[0].detail);
        let json = raised[0].to_json();
        assert_eq!(json["about"]["local"], "local-00");
        assert_eq!(json["kind"], "local-compliance");
    }

    #[test]
    fn a_restart_raises_nothing_for_what_held_before_it() {
        let mut book = AlertBook::new(rules());
        let quiet = child(Some((0, 10_000)), true, 10);
        let raised = book.evaluate(&[&quiet], WallClock(10_000));
        assert_eq!(raised.len(), 2);
        let mut again = AlertBook::new(rules());
        again.restore(raised, &[&quiet]);
        assert!(again.evaluate(&[&quiet], WallClock(12_000)).is_empty());
        for at in 0..CLEAR_AFTER {
            assert!(again.evaluate(&[&child(None, false, 10)], WallClock(13_000 + u64::from(at))).is_empty());
        }
        assert_eq!(again.evaluate(&[&quiet], WallClock(14_000))[0].id, 3, "ids go on from the kept ones");
    }

    #[test]
    fn no_rules_no_alerts() {
        let mut book = AlertBook::new(AlertRules::default());
        assert!(book.evaluate(&[&child(Some((0, 100_000)), true, 0)], WallClock(100_000)).is_empty());
    }
}
