//! A policy agent on a client machine: polls its local server on a schedule with a signed status
//! report, and applies the effective policy it gets back (an output; the driver writes it). Owns
//! the poll schedule and what it reports. It never applies a policy from anyone but its server.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use super::document::Platform;
use super::merge::EffectivePolicy;
use super::report::AgentReport;
use super::server::PolicyMessage;
use crate::identity::NodeKeys;
use crate::rng::{SeededRng, uniform_duration};
use crate::signed::Signed;
use crate::time::{Instant, WallClock};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentInput {
    /// A message from the agent's local server.
    FromServer(Box<PolicyMessage>),
    /// The machine's current security state, from the driver's checks.
    State {
        checks: BTreeMap<String, bool>,
        threats: u32,
        last_scan: WallClock,
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
    applied: Option<EffectivePolicy>,
    checks: BTreeMap<String, bool>,
    threats: u32,
    last_scan: WallClock,
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
            checks: BTreeMap::new(),
            threats: 0,
            last_scan: WallClock(0),
            next_poll: now + first,
            outputs: VecDeque::new(),
        }
    }

    pub fn applied(&self) -> Option<&EffectivePolicy> {
        self.applied.as_ref()
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
            threats: self.threats,
            last_scan: self.last_scan,
            at: wall,
        };
        if let Ok(signed) = Signed::sign(report, &self.keys) {
            let to = self.server.clone();
            self.outputs.push_back(AgentOutput::Send { to, message: PolicyMessage::Poll(signed) });
        }
    }

    pub fn handle_at(&mut self, now: Instant, wall: WallClock, input: AgentInput) {
        match input {
            AgentInput::FromServer(message) => {
                if let PolicyMessage::PollReply { effective } = *message
                    && self.applied.as_ref().is_none_or(|p| p.digest != effective.digest)
                {
                    self.applied = Some(effective.clone());
                    self.outputs.push_back(AgentOutput::Apply(effective));
                }
            }
            AgentInput::State { checks, threats, last_scan } => {
                self.checks = checks;
                self.threats = threats;
                self.last_scan = last_scan;
            }
            AgentInput::Timeout => {
                if now >= self.next_poll {
                    self.poll(wall);
                    self.next_poll = now + self.interval + uniform_duration(&mut self.rng, self.jitter);
                }
            }
        }
    }

    pub fn poll_output(&mut self) -> Option<AgentOutput> {
        self.outputs.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next_poll)
    }
}
