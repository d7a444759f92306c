//! A policy agent on a client machine: polls its local server on a schedule with a signed status
//! report, applies the effective policy it gets back (an output; the driver writes it and says
//! how that went), and measures the applied policy's checks once per poll interval: each check
//! becomes a probe the driver carries out (read a file, run a command) and reports back plainly,
//! and the check's verdict is judged here. Owns the poll schedule, the measuring rounds and what
//! it reports. It never applies a policy from anyone but its server, and never reports what was
//! not measured: a policy counts as applied only once the driver reports it written, a failed
//! write is reported as failed, a check that could not be evaluated says so, and threats stay
//! unknown until a round of checks completes. It also says when its server stops answering: once
//! when [`UNREACHABLE_AFTER`] polls in a row went unanswered, again every
//! [`UNREACHABLE_AGAIN_EVERY`] polls while that lasts, and once when an answer comes again.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use super::checks::{
    Check, CheckError, CheckOutcome, Observation, PackageTool, Probe, RunEnd, Severity, checks_of, judge,
};
use super::document::Platform;
use super::merge::EffectivePolicy;
use super::platform::{Detected, Detection, UNKNOWN};
use super::report::{AgentReport, CheckResult, MAX_CHECKS, NO_POLICY};
use super::server::PolicyMessage;
use crate::identity::NodeKeys;
use crate::machine::Machine;
use crate::rng::{SeededRng, uniform_duration};
use crate::signed::Signed;
use crate::time::{Instant, Now, WallClock};

/// The check an agent reports for its own apply: passed once the effective policy is written,
/// failed when writing it failed.
pub const APPLIED_CHECK: &str = "policy.applied";
/// The check an agent reports when it could not read its platform (an error, saying why).
pub const PLATFORM_CHECK: &str = "platform.detected";

/// Polls in a row without an answer after which the agent says its server is unreachable.
pub const UNREACHABLE_AFTER: u32 = 2;
/// While the server stays unreachable, it is said again every this many unanswered polls.
pub const UNREACHABLE_AGAIN_EVERY: u32 = 10;

/// How the agent knows its distribution and version.
#[derive(Debug)]
enum Detect {
    /// Given in its configuration.
    Declared,
    /// To be read from the machine before the first poll.
    NotStarted,
    Running(Detection),
    Done,
}

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
    /// The server `server` left the last `unanswered` polls unanswered: said once when that
    /// reaches [`UNREACHABLE_AFTER`], then every [`UNREACHABLE_AGAIN_EVERY`] more. The agent
    /// keeps its applied policy and goes on polling.
    ServerUnreachable { server: String, unanswered: u32, last_heard: Option<WallClock> },
    /// The server answered again after it was said unreachable, `unanswered` polls later.
    ServerReachable { server: String, unanswered: u32 },
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
    detect: Detect,
    kernel: Option<String>,
    /// Why the platform could not be read, when it could not.
    platform_error: Option<String>,
    /// A poll went out that has had no answer yet.
    awaiting: bool,
    /// Polls in a row that went unanswered.
    unanswered: u32,
    /// When the server last answered.
    last_heard: Option<WallClock>,
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
        detect: bool,
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
            detect: if detect { Detect::NotStarted } else { Detect::Declared },
            kernel: None,
            platform_error: None,
            awaiting: false,
            unanswered: 0,
            last_heard: None,
        }
    }

    /// Polls in a row that went unanswered (0 once the server answers).
    pub fn unanswered(&self) -> u32 {
        self.unanswered
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

    /// The platform the agent reports (detected, or as declared).
    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    /// Reads the machine's os-release and kernel release: the first poll waits for them.
    fn start_detecting(&mut self) {
        let (detection, probes) = Detection::start(&mut self.next_probe);
        for (probe, what) in probes {
            self.outputs.push_back(AgentOutput::Probe { probe, what });
        }
        self.detect = Detect::Running(detection);
    }

    /// Takes what detection found; the role stays the configured one.
    fn detected(&mut self, found: Detected) {
        self.platform.os = found.os;
        self.platform.os_version = found.os_version;
        self.kernel = found.kernel;
        self.platform_error = found.error;
        self.detect = Detect::Done;
    }

    /// A detection probe's observation; once detection is done, the agent polls at once.
    fn observed_platform(&mut self, now: Instant, probe: u64, seen: &Observation, wall: WallClock) -> bool {
        let Detect::Running(detection) = &mut self.detect else { return false };
        if !detection.waits_on(probe) {
            return false;
        }
        if let Some((probe, what)) = detection.observed(probe, seen, &mut self.next_probe) {
            self.outputs.push_back(AgentOutput::Probe { probe, what });
        }
        if let Some(found) = detection.finished() {
            self.detected(found);
            self.poll_now(now, wall);
        }
        true
    }

    fn poll_now(&mut self, now: Instant, wall: WallClock) {
        self.poll(wall);
        self.start_round(now, wall);
        self.next_poll = now + self.interval + uniform_duration(&mut self.rng, self.jitter);
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
        let mut checks = self.checks.clone();
        if let Some(error) = &self.platform_error {
            let detail = error.chars().take(super::checks::MAX_DETAIL).collect();
            let result = CheckResult { outcome: CheckOutcome::Error, severity: Severity::Medium, detail };
            checks.insert(PLATFORM_CHECK.to_owned(), result);
        }
        let report = AgentReport {
            agent: self.name.clone(),
            platform: self.platform.clone(),
            applied: self.applied.as_ref().map_or(NO_POLICY, |p| p.digest),
            checks,
            threats,
            last_scan: self.measured,
            at: wall,
            poll_every_ms: u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX),
            kernel: self.kernel.clone(),
        };
        if let Ok(signed) = Signed::sign(report, &self.keys) {
            self.count_unanswered();
            let to = self.server.clone();
            self.outputs.push_back(AgentOutput::Report { to, report: Box::new(signed) });
            self.awaiting = true;
        }
    }

    /// Before a poll goes out: the one before it, if still unanswered, counts as unanswered,
    /// and the count is said when it reaches the threshold and every so often after.
    fn count_unanswered(&mut self) {
        if !std::mem::take(&mut self.awaiting) {
            return;
        }
        self.unanswered = self.unanswered.saturating_add(1);
        let past = self.unanswered.checked_sub(UNREACHABLE_AFTER);
        if past.is_some_and(|past| past % UNREACHABLE_AGAIN_EVERY == 0) {
            self.outputs.push_back(AgentOutput::ServerUnreachable {
                server: self.server.clone(),
                unanswered: self.unanswered,
                last_heard: self.last_heard,
            });
        }
    }

    /// The server answered: what was said unreachable is said reachable again.
    fn heard(&mut self, wall: WallClock) {
        self.awaiting = false;
        self.last_heard = Some(wall);
        let unanswered = std::mem::take(&mut self.unanswered);
        if unanswered >= UNREACHABLE_AFTER {
            self.outputs.push_back(AgentOutput::ServerReachable { server: self.server.clone(), unanswered });
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
                let PolicyMessage::PollReply { effective } = *message else { return };
                self.heard(wall);
                // A policy already written is not written again; one whose write failed is
                // tried again at the next answer.
                if self.applied.as_ref().is_none_or(|p| p.digest != effective.digest)
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
            AgentInput::Observed { probe, seen } => {
                if !self.observed_platform(now, probe, &seen, wall) {
                    self.observed(probe, &seen, wall);
                }
            }
            AgentInput::Timeout => {
                self.expire_probes(now, wall);
                if now >= self.next_poll {
                    match &self.detect {
                        Detect::NotStarted => {
                            // Polls once the platform is read; an interval at the most.
                            self.start_detecting();
                            self.next_poll = now + self.interval;
                        }
                        Detect::Running(_) => {
                            let error = "reading the platform took longer than a poll interval".to_owned();
                            let unknown = Detected {
                                os: UNKNOWN.to_owned(),
                                os_version: UNKNOWN.to_owned(),
                                kernel: None,
                                error: Some(error),
                            };
                            self.detected(unknown);
                            self.poll_now(now, wall);
                        }
                        Detect::Declared | Detect::Done => self.poll_now(now, wall),
                    }
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
mod tests;
