//! A policy agent on a client machine: polls its local server on a schedule with a signed status
//! report, applies the effective policy it gets back (an output; the driver writes it and says
//! how that went), and measures the applied policy's checks once per poll interval: each check
//! becomes a probe the driver carries out (read a file, run a command) and reports back plainly,
//! and the check's verdict is judged here. Owns the poll schedule, the measuring rounds and what
//! it reports. It never applies a policy from anyone but its server, and never reports what was
//! not measured: a policy counts as applied only once the driver reports it written, a failed
//! write is reported as failed, a check that could not be evaluated says so, and threats stay
//! unknown until a round of checks completes.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use super::checks::{
    Check, CheckError, CheckOutcome, Observation, PackageTool, Probe, RunEnd, Severity, checks_of, judge,
};
use super::document::Platform;
use super::merge::EffectivePolicy;
use super::report::{AgentReport, CheckResult, MAX_CHECKS};
use super::server::PolicyMessage;
use crate::identity::NodeKeys;
use crate::machine::Machine;
use crate::rng::{SeededRng, uniform_duration};
use crate::signed::Signed;
use crate::time::{Instant, Now, WallClock};

/// The check an agent reports for its own apply: passed once the effective policy is written,
/// failed when writing it failed.
pub const APPLIED_CHECK: &str = "policy.applied";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentInput {
    /// A message from the agent's local server.
    FromServer(Box<PolicyMessage>),
    /// The driver's outcome of applying the policy with `digest` (writing its file).
    Applied {
        digest: [u8; 32],
        outcome: Result<(), String>,
    },
    /// What the driver observed for `probe`.
    Observed {
        probe: u64,
        seen: Observation,
    },
    Timeout,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentOutput {
    /// Send this signed report to the server `to` (a poll).
    Report { to: String, report: Box<Signed<AgentReport>> },
    /// Apply this policy (write it, run the hook).
    Apply(EffectivePolicy),
    /// Observe `what` for a check and answer `Observed` with the same `probe`.
    Probe { probe: u64, what: Probe },
    /// The probe's command ran past its time: kill it (its observation is no longer wanted).
    StopProbe { probe: u64 },
}

/// One measuring round: every check of the applied policy, each waiting on its probe.
#[derive(Debug)]
struct Round {
    digest: [u8; 32],
    results: BTreeMap<String, CheckResult>,
    /// Probe → the check it measures, and when a command probe is given up on.
    waiting: BTreeMap<u64, (String, Check, Option<Instant>)>,
}

#[derive(Debug)]
pub struct PolicyAgent {
    name: String,
    keys: NodeKeys,
    platform: Platform,
    server: String,
    interval: Duration,
    jitter: Duration,
    rng: SeededRng,
    /// The policy last written successfully.
    applied: Option<EffectivePolicy>,
    /// The policy handed to the driver and not yet reported on.
    applying: Option<EffectivePolicy>,
    /// The last completed round's results, for the applied policy, and when it completed.
    checks: BTreeMap<String, CheckResult>,
    measured: Option<WallClock>,
    round: Option<Round>,
    next_probe: u64,
    /// Why the last apply failed, if it did.
    apply_error: Option<String>,
    next_poll: Instant,
    outputs: VecDeque<AgentOutput>,
}

impl PolicyAgent {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        now: Instant,
        name: String,
        keys: NodeKeys,
        platform: Platform,
        server: String,
        interval: Duration,
        jitter: Duration,
        mut rng: SeededRng,
    ) -> PolicyAgent {
        // Agents start spread over one interval, not all at once.
        let first = uniform_duration(&mut rng, interval);
        PolicyAgent {
            name,
            keys,
            platform,
            server,
            interval,
            jitter,
            rng,
            applied: None,
            applying: None,
            checks: BTreeMap::new(),
            measured: None,
            round: None,
            next_probe: 1,
            apply_error: None,
            next_poll: now + first,
            outputs: VecDeque::new(),
        }
    }

    pub fn applied(&self) -> Option<&EffectivePolicy> {
        self.applied.as_ref()
    }

    /// Why the last apply failed, while it stays failed.
    pub fn apply_error(&self) -> Option<&str> {
        self.apply_error.as_deref()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The agent's keys, for the driver's channel to its server.
    pub fn keys(&self) -> &NodeKeys {
        &self.keys
    }

    /// The checks as last measured, by name.
    pub fn checks(&self) -> &BTreeMap<String, CheckResult> {
        &self.checks
    }

    /// Which package manager answers package checks here: RPM-based systems use rpm.
    fn package_tool(&self) -> PackageTool {
        const RPM: &[&str] =
            &["rhel", "centos", "fedora", "rocky", "almalinux", "ol", "amzn", "sles", "opensuse-leap"];
        if RPM.contains(&self.platform.os.as_str()) { PackageTool::Rpm } else { PackageTool::Dpkg }
    }

    /// Starts measuring the applied policy's checks, unless a round is under way.
    fn start_round(&mut self, now: Instant, wall: WallClock) {
        let Some(applied) = &self.applied else { return };
        if self.round.is_some() {
            return;
        }
        let digest = applied.digest;
        let checks = checks_of(&applied.params);
        let tool = self.package_tool();
        let mut round = Round { digest, results: BTreeMap::new(), waiting: BTreeMap::new() };
        for (name, check) in checks.into_iter().take(MAX_CHECKS - 1) {
            match check {
                Ok(check) => {
                    let probe = self.next_probe;
                    self.next_probe += 1;
                    let what = check.probe(tool);
                    let deadline = match &what {
                        Probe::Run { timeout, .. } => Some(now + *timeout),
                        Probe::Inspect { .. } | Probe::SocketTables => None,
                    };
                    round.waiting.insert(probe, (name, check, deadline));
                    self.outputs.push_back(AgentOutput::Probe { probe, what });
                }
                Err(e) => {
                    round.results.insert(name, unreadable(&e));
                }
            }
        }
        self.round = Some(round);
        self.finish_round(wall);
    }

    /// One probe's observation: its check is judged.
    fn observed(&mut self, probe: u64, seen: &Observation, wall: WallClock) {
        let Some(round) = &mut self.round else { return };
        let Some((name, check, _)) = round.waiting.remove(&probe) else { return };
        let (outcome, detail) = judge(&check, seen);
        round.results.insert(name, CheckResult { outcome, severity: check.severity, detail });
        self.finish_round(wall);
    }

    /// A round with nothing left to wait for becomes what the agent reports.
    fn finish_round(&mut self, wall: WallClock) {
        if self.round.as_ref().is_some_and(|r| r.waiting.is_empty())
            && let Some(round) = self.round.take()
        {
            // A round for a policy replaced since is not this policy's measurement.
            if self.applied.as_ref().is_some_and(|p| p.digest == round.digest) {
                let applied = self.checks.remove(APPLIED_CHECK);
                self.checks = round.results;
                self.checks.extend(applied.map(|a| (APPLIED_CHECK.to_owned(), a)));
                self.measured = Some(wall);
            }
        }
    }

    /// Command probes past their time: killed, and judged as having run too long.
    fn expire_probes(&mut self, now: Instant, wall: WallClock) {
        let expired: Vec<u64> = self
            .round
            .iter()
            .flat_map(|r| r.waiting.iter())
            .filter(|(_, (_, _, deadline))| deadline.is_some_and(|d| d <= now))
            .map(|(probe, _)| *probe)
            .collect();
        for probe in expired {
            self.outputs.push_back(AgentOutput::StopProbe { probe });
            let timed_out = Observation::Ran { end: RunEnd::TimedOut, stdout: Vec::new() };
            self.observed(probe, &timed_out, wall);
        }
    }

    fn poll(&mut self, wall: WallClock) {
        let threats = self.measured.map(|_| self.checks.values().filter(|c| c.is_threat()).count() as u32);
        let report = AgentReport {
            agent: self.name.clone(),
            platform: self.platform.clone(),
            applied: self.applied.as_ref().map_or([0; 32], |p| p.digest),
            checks: self.checks.clone(),
            threats,
            last_scan: self.measured,
            at: wall,
            poll_every_ms: u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX),
        };
        if let Ok(signed) = Signed::sign(report, &self.keys) {
            let to = self.server.clone();
            self.outputs.push_back(AgentOutput::Report { to, report: Box::new(signed) });
        }
    }
}

impl Machine for PolicyAgent {
    type Input = AgentInput;
    type Output = AgentOutput;

    fn handle(&mut self, now: Now, input: AgentInput) {
        let Now { mono: now, wall } = now;
        match input {
            AgentInput::FromServer(message) => {
                // A policy already written is not written again; one whose write failed is
                // tried again at the next answer.
                if let PolicyMessage::PollReply { effective } = *message
                    && self.applied.as_ref().is_none_or(|p| p.digest != effective.digest)
                    && self.applying.as_ref().is_none_or(|p| p.digest != effective.digest)
                {
                    self.applying = Some(effective.clone());
                    self.outputs.push_back(AgentOutput::Apply(effective));
                }
            }
            AgentInput::Applied { digest, outcome } => {
                let Some(applying) = self.applying.take_if(|p| p.digest == digest) else { return };
                let result = match &outcome {
                    Ok(()) => CheckResult {
                        outcome: CheckOutcome::Pass,
                        severity: Severity::Medium,
                        detail: "written".into(),
                    },
                    Err(e) => CheckResult {
                        outcome: CheckOutcome::Fail,
                        severity: Severity::Medium,
                        detail: e.chars().take(super::checks::MAX_DETAIL).collect(),
                    },
                };
                self.apply_error = outcome.err();
                if self.apply_error.is_none() {
                    // The old policy's measurements say nothing about the new one.
                    self.applied = Some(applying);
                    self.checks.clear();
                    self.measured = None;
                    self.round = None;
                }
                self.checks.insert(APPLIED_CHECK.to_owned(), result);
                self.start_round(now, wall);
            }
            AgentInput::Observed { probe, seen } => self.observed(probe, &seen, wall),
            AgentInput::Timeout => {
                self.expire_probes(now, wall);
                if now >= self.next_poll {
                    self.poll(wall);
                    self.start_round(now, wall);
                    self.next_poll = now + self.interval + uniform_duration(&mut self.rng, self.jitter);
                }
            }
        }
    }

    fn poll_output(&mut self) -> Option<AgentOutput> {
        self.outputs.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let probes = self.round.iter().flat_map(|r| r.waiting.values()).filter_map(|(_, _, d)| *d);
        probes.chain([self.next_poll]).min()
    }
}

/// A check line that does not parse: reported as an error, so the policy's author sees it.
fn unreadable(e: &CheckError) -> CheckResult {
    let detail = e.to_string().chars().take(super::checks::MAX_DETAIL).collect();
    CheckResult { outcome: CheckOutcome::Error, severity: Severity::Medium, detail }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::seeded;

    pub(super) fn agent() -> PolicyAgent {
        let keys = NodeKeys::generate(&mut seeded(1));
        let platform = Platform::new("linux", "6", "web");
        let second = Duration::from_secs(1);
        PolicyAgent::new(
            Instant::ZERO,
            "a0".into(),
            keys,
            platform,
            "local".into(),
            second,
            second,
            seeded(2),
        )
    }

    fn policy(value: &str) -> EffectivePolicy {
        let params: BTreeMap<String, String> = [("fw".to_owned(), value.to_owned())].into();
        let sources = [("fw".to_owned(), ("fw".to_owned(), 1))].into();
        let mut digest = [0u8; 32];
        digest[..value.len().min(32)].copy_from_slice(&value.as_bytes()[..value.len().min(32)]);
        EffectivePolicy { params, sources, digest }
    }

    /// The report the agent sends at its next poll.
    fn report(agent: &mut PolicyAgent, now: Now) -> AgentReport {
        let due = Now { mono: agent.poll_timeout().unwrap_or(now.mono), ..now };
        agent.handle(due, AgentInput::Timeout);
        loop {
            match agent.poll_output() {
                Some(AgentOutput::Report { report, .. }) => return report.body,
                Some(_) => {}
                None => panic!("no report"),
            }
        }
    }

    fn offer(agent: &mut PolicyAgent, effective: EffectivePolicy) -> Option<EffectivePolicy> {
        let reply = PolicyMessage::PollReply { effective };
        agent.handle(Now::ZERO, AgentInput::FromServer(Box::new(reply)));
        std::iter::from_fn(|| agent.poll_output()).find_map(|o| match o {
            AgentOutput::Apply(p) => Some(p),
            _ => None,
        })
    }

    #[test]
    fn before_any_apply_nothing_is_reported_and_nothing_counts_as_compliant() {
        let mut agent = agent();
        let report = report(&mut agent, Now::ZERO);
        assert!(report.checks.is_empty());
        assert_eq!((report.threats, report.last_scan, report.applied), (None, None, [0; 32]));
        assert!(!report.compliant(), "an agent that measured nothing is not compliant");
    }

    #[test]
    fn a_failed_apply_is_reported_failed_and_tried_again_at_the_next_answer() {
        let mut agent = agent();
        let deny = policy("deny");
        assert_eq!(offer(&mut agent, deny.clone()), Some(deny.clone()));
        // Offered again while the write is still under way: not handed out twice.
        assert_eq!(offer(&mut agent, deny.clone()), None);
        let failed = AgentInput::Applied { digest: deny.digest, outcome: Err("disk full".into()) };
        agent.handle(Now::ZERO, failed);
        assert_eq!(agent.apply_error(), Some("disk full"));
        assert!(agent.applied().is_none());
        let sent = report(&mut agent, Now::ZERO);
        assert_eq!(sent.checks.get(APPLIED_CHECK).map(|c| c.outcome), Some(CheckOutcome::Fail));
        assert_eq!(sent.applied, [0; 32], "the digest of a policy never written is not reported");
        assert!(!sent.compliant());

        assert_eq!(offer(&mut agent, deny.clone()), Some(deny.clone()), "tried again");
        agent.handle(Now::ZERO, AgentInput::Applied { digest: deny.digest, outcome: Ok(()) });
        let sent = report(&mut agent, Now::ZERO);
        assert_eq!(sent.checks.get(APPLIED_CHECK).map(|c| c.outcome), Some(CheckOutcome::Pass));
        assert_eq!(sent.applied, deny.digest);
        assert!(sent.compliant());
        assert_eq!(offer(&mut agent, deny), None, "a written policy is not written again");
    }

    #[test]
    fn an_outcome_for_a_policy_not_being_applied_changes_nothing() {
        let mut agent = agent();
        agent.handle(Now::ZERO, AgentInput::Applied { digest: [9; 32], outcome: Ok(()) });
        assert!(agent.applied().is_none());
        assert!(report(&mut agent, Now::ZERO).checks.is_empty());
    }
}

#[cfg(test)]
mod measuring {
    use super::tests::agent;
    use super::*;
    use crate::policy::checks::FileFacts;

    fn with_checks(checks: &[(&str, &str)]) -> EffectivePolicy {
        let params: BTreeMap<String, String> =
            checks.iter().map(|(k, v)| (format!("check.{k}"), (*v).to_owned())).collect();
        EffectivePolicy { params, sources: BTreeMap::new(), digest: [7; 32] }
    }

    fn at(secs: u64) -> Now {
        Now { mono: Instant::ZERO + Duration::from_secs(secs), wall: WallClock(1_000_000 + secs * 1000) }
    }

    /// Applies `policy`; the probes the agent asks for, by probe.
    fn apply(agent: &mut PolicyAgent, policy: EffectivePolicy) -> Vec<(u64, Probe)> {
        let digest = policy.digest;
        agent.handle(at(0), AgentInput::FromServer(Box::new(PolicyMessage::PollReply { effective: policy })));
        agent.handle(at(0), AgentInput::Applied { digest, outcome: Ok(()) });
        probes(agent)
    }

    fn probes(agent: &mut PolicyAgent) -> Vec<(u64, Probe)> {
        std::iter::from_fn(|| agent.poll_output())
            .filter_map(|o| match o {
                AgentOutput::Probe { probe, what } => Some((probe, what)),
                _ => None,
            })
            .collect()
    }

    fn file(mode: u32) -> Observation {
        Observation::File(Ok(Some(FileFacts {
            is_file: true,
            mode,
            owner: Some("root".into()),
            ..FileFacts::default()
        })))
    }

    /// The report sent at the next poll after `now`.
    fn report_at(agent: &mut PolicyAgent, now: Now) -> AgentReport {
        agent.handle(now, AgentInput::Timeout);
        let mut report = None;
        let mut rest = Vec::new();
        while let Some(o) = agent.poll_output() {
            match o {
                AgentOutput::Report { report: signed, .. } => report = Some(signed.body),
                other => rest.push(other),
            }
        }
        for o in rest {
            agent.outputs.push_back(o);
        }
        report.expect("a report")
    }

    #[test]
    fn checks_are_measured_each_round_and_a_fixed_file_passes_at_the_next() {
        let mut agent = agent();
        let policy = with_checks(&[
            ("flag", "file /etc/cohort-test-flag mode=0600 severity=high"),
            ("ok", "command -- /bin/true"),
        ]);
        let asked = apply(&mut agent, policy);
        assert_eq!(asked.len(), 2);
        let file_probe = asked.iter().find(|(_, p)| matches!(p, Probe::Inspect { .. })).expect("a look").0;
        let run_probe = asked.iter().find(|(_, p)| matches!(p, Probe::Run { .. })).expect("a run").0;
        agent.handle(at(0), AgentInput::Observed { probe: file_probe, seen: file(0o644) });
        let exited = Observation::Ran { end: RunEnd::Exited(0), stdout: Vec::new() };
        agent.handle(at(0), AgentInput::Observed { probe: run_probe, seen: exited.clone() });
        let first = report_at(&mut agent, at(5));
        assert_eq!(first.checks["flag"].outcome, CheckOutcome::Fail);
        assert_eq!(first.checks["flag"].detail, "mode 0644, wants 0600");
        assert_eq!(first.checks["ok"].outcome, CheckOutcome::Pass);
        assert_eq!(first.threats, Some(1), "one failed high-severity check");
        assert!(first.last_scan.is_some());
        assert!(!first.compliant());
        assert_eq!(first.passed(), (3, 2), "the two checks and the apply");

        // The poll started the next round: the file was fixed since.
        let asked = probes(&mut agent);
        for (probe, what) in asked {
            let seen = match what {
                Probe::Inspect { .. } => file(0o600),
                _ => exited.clone(),
            };
            agent.handle(at(5), AgentInput::Observed { probe, seen });
        }
        let second = report_at(&mut agent, at(10));
        assert_eq!(second.checks["flag"].outcome, CheckOutcome::Pass);
        assert_eq!(second.threats, Some(0));
        assert!(second.compliant());
    }

    #[test]
    fn a_command_past_its_time_is_killed_and_fails_and_a_bad_line_is_an_error() {
        let mut agent = agent();
        let policy = with_checks(&[("slow", "command timeout=2s -- sleep 60"), ("typo", "fiel /etc/x")]);
        let asked = apply(&mut agent, policy);
        assert_eq!(asked.len(), 1, "the line that does not parse asks for nothing");
        assert!(
            agent.poll_timeout() <= Some(Instant::ZERO + Duration::from_secs(2)),
            "woken for the deadline"
        );
        agent.handle(at(2), AgentInput::Timeout);
        let stopped = std::iter::from_fn(|| agent.poll_output())
            .any(|o| matches!(o, AgentOutput::StopProbe { probe } if probe == asked[0].0));
        assert!(stopped, "the command is killed");
        // Its exit after the kill changes nothing.
        let late = Observation::Ran { end: RunEnd::Signalled(9), stdout: Vec::new() };
        agent.handle(at(2), AgentInput::Observed { probe: asked[0].0, seen: late });
        let report = report_at(&mut agent, at(5));
        assert_eq!(report.checks["slow"].detail, "still running after 2 s");
        assert_eq!(report.checks["typo"].outcome, CheckOutcome::Error);
        assert!(
            report.checks["typo"].detail.contains("`fiel` is not a check"),
            "{}",
            report.checks["typo"].detail
        );
    }

    #[test]
    fn a_newly_applied_policy_reports_nothing_measured_under_the_old_one() {
        let mut agent = agent();
        let asked = apply(&mut agent, with_checks(&[("flag", "file /etc/flag")]));
        agent.handle(at(0), AgentInput::Observed { probe: asked[0].0, seen: file(0o600) });
        let mut next = with_checks(&[("other", "file /etc/other")]);
        next.digest = [8; 32];
        let asked_next = apply(&mut agent, next);
        let report = report_at(&mut agent, at(5));
        assert!(!report.checks.contains_key("flag"), "{:?}", report.checks);
        assert_eq!(report.applied, [8; 32]);
        assert_eq!(report.threats, None, "the new policy's round has not completed");
        assert_eq!(asked_next.len(), 1);
    }
}
