//! A policy agent on a client machine: polls its local server on a schedule with a signed status
//! report, and applies the effective policy it gets back (an output; the driver writes it and
//! says how that went). Owns the poll schedule and what it reports. It never applies a policy
//! from anyone but its server, and never reports what was not measured: a policy counts as
//! applied only once the driver reports it written, a failed write is reported as failed, and
//! threats and scan times stay unknown until something measures them.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use super::document::Platform;
use super::merge::EffectivePolicy;
use super::report::AgentReport;
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
    Timeout,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentOutput {
    Send {
        to: String,
        message: PolicyMessage,
    },
    /// Apply this policy (write it, run the hook).
    Apply(EffectivePolicy),
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
    checks: BTreeMap<String, bool>,
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

    fn poll(&mut self, wall: WallClock) {
        let report = AgentReport {
            agent: self.name.clone(),
            platform: self.platform.clone(),
            applied: self.applied.as_ref().map_or([0; 32], |p| p.digest),
            checks: self.checks.clone(),
            // Nothing here scans for threats yet: unknown, not zero.
            threats: None,
            last_scan: None,
            at: wall,
        };
        if let Ok(signed) = Signed::sign(report, &self.keys) {
            let to = self.server.clone();
            self.outputs.push_back(AgentOutput::Send { to, message: PolicyMessage::Poll(signed) });
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
                let ok = outcome.is_ok();
                self.checks.insert(APPLIED_CHECK.to_owned(), ok);
                self.apply_error = outcome.err();
                if ok {
                    self.applied = Some(applying);
                }
            }
            AgentInput::Timeout => {
                if now >= self.next_poll {
                    self.poll(wall);
                    self.next_poll = now + self.interval + uniform_duration(&mut self.rng, self.jitter);
                }
            }
        }
    }

    fn poll_output(&mut self) -> Option<AgentOutput> {
        self.outputs.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next_poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::seeded;

    fn agent() -> PolicyAgent {
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
                Some(AgentOutput::Send { message: PolicyMessage::Poll(signed), .. }) => return signed.body,
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
            AgentOutput::Send { .. } => None,
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
        assert_eq!(sent.checks.get(APPLIED_CHECK), Some(&false));
        assert_eq!(sent.applied, [0; 32], "the digest of a policy never written is not reported");
        assert!(!sent.compliant());

        assert_eq!(offer(&mut agent, deny.clone()), Some(deny.clone()), "tried again");
        agent.handle(Now::ZERO, AgentInput::Applied { digest: deny.digest, outcome: Ok(()) });
        let sent = report(&mut agent, Now::ZERO);
        assert_eq!(sent.checks.get(APPLIED_CHECK), Some(&true));
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
