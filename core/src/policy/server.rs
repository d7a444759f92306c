//! A policy server: the master (no parent) or a local (with a parent, which may be another local:
//! tiers nest to any depth). Owns the policy store, replication down the tier by scheduled sync
//! (window plus jitter) and on demand, upward forwarding of policies created below, serving agents
//! their effective policy, consolidating their reports into aggregates, and (at the master) the
//! global status, historical or current with a deadline. It never stores a policy, report or
//! aggregate it could not verify, and never sends raw reports upward.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::document::{Policy, PolicyError, SignedPolicy};
use super::merge::{EffectivePolicy, effective};
use super::report::{AgentReport, Aggregate, MAX_CHECKS, MAX_REPORT_BYTES};
use crate::identity::{NodeKeys, PublicIdentity};
use crate::rng::{SeededRng, uniform_duration};
use crate::signed::{Signed, SignedKind};
use crate::time::{Instant, WallClock};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    pub from: String,
    pub cycle: u64,
    /// The version of every policy the child holds.
    pub versions: BTreeMap<String, u64>,
    /// Statistics consolidated since the child's last sync.
    pub aggregate: Aggregate,
}

impl SignedKind for SyncRequest {
    const DOMAIN: &'static str = "policy-sync";
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReply {
    pub from: String,
    pub request: u64,
    pub aggregate: Aggregate,
}

impl SignedKind for StatsReply {
    const DOMAIN: &'static str = "policy-stats";
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
    StatsRequest {
        request: u64,
    },
    StatsReply(Signed<StatsReply>),
    Poll(Signed<AgentReport>),
    PollReply {
        effective: EffectivePolicy,
    },
}

/// Who a server is and whom it trusts.
#[derive(Debug, Clone)]
pub struct ServerSetup {
    pub name: String,
    pub keys: NodeKeys,
    /// The parent server (name, identity); `None` for the master.
    pub parent: Option<(String, PublicIdentity)>,
    /// Local servers directly below.
    pub children: BTreeMap<String, PublicIdentity>,
    /// Agents this server serves.
    pub agents: BTreeMap<String, PublicIdentity>,
    /// Servers whose signed policies are accepted (the master and every local).
    pub signers: BTreeMap<String, PublicIdentity>,
    pub sync_window: Duration,
    pub sync_jitter: Duration,
    pub stats_deadline: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalStatus {
    pub current: bool,
    /// Direct children that did not answer in time (current status only).
    pub missing: Vec<String>,
    pub aggregate: Aggregate,
    /// When each child's figures were taken.
    pub as_of: BTreeMap<String, WallClock>,
}

impl GlobalStatus {
    pub fn partial(&self) -> bool {
        !self.missing.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerInput {
    Received {
        message: PolicyMessage,
        size: usize,
    },
    Timeout,
    /// An operator creates (or replaces) a policy at this server.
    Create(Policy),
    /// Sync with the parent now rather than at the next window.
    SyncNow,
    /// The global status (master only): current asks every child now.
    Status {
        request: u64,
        current: bool,
        since: Option<WallClock>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerOutput {
    Send {
        to: String,
        message: PolicyMessage,
    },
    /// A verified policy version is now held here; the driver keeps it durably so a restart
    /// serves it again (and versions never go backwards).
    Stored(SignedPolicy),
    /// The master keeps each sync's aggregate for history.
    History {
        from: String,
        at: WallClock,
        aggregate: Aggregate,
    },
    StatusAnswer {
        request: u64,
        status: GlobalStatus,
    },
    Rejected {
        reason: String,
    },
}

#[derive(Debug)]
struct PendingStatus {
    request: u64,
    waiting: BTreeSet<String>,
    deadline: Instant,
    aggregate: Aggregate,
    as_of: BTreeMap<String, WallClock>,
}

/// One policy server. See the module docs.
#[derive(Debug)]
pub struct PolicyServer {
    setup: ServerSetup,
    rng: SeededRng,
    policies: BTreeMap<String, SignedPolicy>,
    /// Latest report per agent, and whether it came since the last sync.
    reports: BTreeMap<String, (AgentReport, bool)>,
    /// Latest aggregate per child and when it came: at the master, this is what historical
    /// status reads (the full history is the driver's, in its store).
    child_aggregates: BTreeMap<String, (Aggregate, WallClock)>,
    /// Verified syncs received from children.
    syncs_received: u64,
    next_sync: Option<Instant>,
    cycle: u64,
    pending: Vec<PendingStatus>,
    outputs: VecDeque<ServerOutput>,
    rejected: BTreeMap<&'static str, u64>,
}

impl PolicyServer {
    pub fn new(now: Instant, setup: ServerSetup, mut rng: SeededRng) -> PolicyServer {
        let next_sync = setup.parent.as_ref().map(|_| now + jittered(&setup, &mut rng));
        PolicyServer {
            setup,
            rng,
            policies: BTreeMap::new(),
            reports: BTreeMap::new(),
            child_aggregates: BTreeMap::new(),
            syncs_received: 0,
            next_sync,
            cycle: 0,
            pending: Vec::new(),
            outputs: VecDeque::new(),
            rejected: BTreeMap::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.setup.name
    }

    pub fn policies(&self) -> impl Iterator<Item = &Policy> {
        self.policies.values().map(|s| &s.body)
    }

    pub fn signed_policies(&self) -> impl Iterator<Item = &SignedPolicy> {
        self.policies.values()
    }

    /// Refusals, by kind.
    pub fn rejected(&self) -> &BTreeMap<&'static str, u64> {
        &self.rejected
    }

    pub fn reports_held(&self) -> usize {
        self.reports.len()
    }

    pub fn syncs_received(&self) -> u64 {
        self.syncs_received
    }

    /// Takes back what the driver kept from before a restart: the policies (each verified again,
    /// as if it had just arrived; one that fails is refused and counted, never served) and each
    /// child's latest aggregate. Emits no `Stored`: these are already durable.
    pub fn restore(
        &mut self,
        policies: impl IntoIterator<Item = SignedPolicy>,
        latest: impl IntoIterator<Item = (String, WallClock, Aggregate)>,
    ) {
        for signed in policies {
            match self.verify_policy(&signed) {
                Ok(()) => {
                    self.policies.insert(signed.body.id.clone(), signed);
                }
                Err(PolicyError::NotNewer { .. }) => {}
                Err(e) => self.reject("stored-policy-invalid", format!("a stored policy was refused: {e}")),
            }
        }
        for (child, at, aggregate) in latest {
            if self.setup.children.contains_key(&child) {
                self.child_aggregates.insert(child, (aggregate, at));
            }
        }
    }

    fn reject(&mut self, kind: &'static str, reason: String) {
        *self.rejected.entry(kind).or_default() += 1;
        self.outputs.push_back(ServerOutput::Rejected { reason });
    }

    /// Checks a policy is valid, signed by a server of the tier, and newer than the one held.
    fn verify_policy(&self, signed: &SignedPolicy) -> Result<(), PolicyError> {
        let id = &signed.body.id;
        signed.body.validate()?;
        let signer = self
            .setup
            .signers
            .get(&signed.body.author)
            .ok_or_else(|| PolicyError::UnknownSigner(id.clone()))?;
        signed.verify(signer).map_err(|_| PolicyError::BadSignature(id.clone()))?;
        if let Some(held) = self.policies.get(id)
            && held.body.version >= signed.body.version
        {
            return Err(PolicyError::NotNewer {
                id: id.clone(),
                version: signed.body.version,
                stored: held.body.version,
            });
        }
        Ok(())
    }

    /// Verifies and stores a policy; returns whether it was new here.
    fn accept_policy(&mut self, signed: SignedPolicy) -> bool {
        match self.verify_policy(&signed) {
            Ok(()) => {
                self.policies.insert(signed.body.id.clone(), signed.clone());
                self.outputs.push_back(ServerOutput::Stored(signed));
                true
            }
            Err(PolicyError::NotNewer { .. }) => false,
            Err(e) => {
                let kind = match e {
                    PolicyError::UnknownSigner(_) => "policy-unknown-signer",
                    PolicyError::BadSignature(_) => "policy-bad-signature",
                    _ => "policy-invalid",
                };
                self.reject(kind, e.to_string());
                false
            }
        }
    }

    fn send(&mut self, to: &str, message: PolicyMessage) {
        self.outputs.push_back(ServerOutput::Send { to: to.to_owned(), message });
    }

    fn create(&mut self, mut policy: Policy) {
        policy.author = self.setup.name.clone();
        if let Some(held) = self.policies.get(&policy.id) {
            policy.version = policy.version.max(held.body.version + 1);
        }
        let Ok(signed) = Signed::sign(policy, &self.setup.keys) else { return };
        if self.accept_policy(signed.clone())
            && let Some((parent, _)) = self.setup.parent.clone()
        {
            self.send(&parent, PolicyMessage::NewPolicy(signed));
        }
    }

    /// This server's consolidated statistics: its agents' reports since the last sync (agents
    /// silent since then counted as such) and its children's latest aggregates.
    fn aggregate(&self, since_last_sync_only: bool) -> Aggregate {
        let mut aggregate = Aggregate::default();
        for (report, fresh) in self.reports.values() {
            if *fresh || !since_last_sync_only {
                aggregate.add_report(&self.setup.name, report);
            }
        }
        let reporting: BTreeSet<&String> = self
            .reports
            .iter()
            .filter(|(_, (_, fresh))| *fresh || !since_last_sync_only)
            .map(|(a, _)| a)
            .collect();
        aggregate.silent_agents = self.setup.agents.keys().filter(|a| !reporting.contains(a)).count() as u64;
        for (child, _) in self.child_aggregates.values() {
            aggregate.absorb(child);
        }
        aggregate
    }

    fn sync(&mut self) {
        let Some((parent, _)) = self.setup.parent.clone() else { return };
        self.cycle += 1;
        let request = SyncRequest {
            from: self.setup.name.clone(),
            cycle: self.cycle,
            versions: self.policies.iter().map(|(id, p)| (id.clone(), p.body.version)).collect(),
            aggregate: self.aggregate(true),
        };
        for (_, fresh) in self.reports.values_mut() {
            *fresh = false;
        }
        if let Ok(signed) = Signed::sign(request, &self.setup.keys) {
            self.send(&parent, PolicyMessage::Sync(signed));
        }
    }

    fn handle_message(&mut self, now: Instant, wall: WallClock, message: PolicyMessage, size: usize) {
        match message {
            PolicyMessage::Sync(signed) => {
                let from = signed.body.from.clone();
                let Some(identity) = self.setup.children.get(&from).copied() else {
                    return self.reject(
                        "unknown-local",
                        format!("sync from unknown local `{}`", from.chars().take(64).collect::<String>()),
                    );
                };
                if signed.verify(&identity).is_err() {
                    return self.reject("bad-signature", format!("sync from `{from}` has a bad signature"));
                }
                let SyncRequest { versions, aggregate, .. } = signed.body;
                self.syncs_received += 1;
                if self.setup.parent.is_none() {
                    self.outputs.push_back(ServerOutput::History {
                        from: from.clone(),
                        at: wall,
                        aggregate: aggregate.clone(),
                    });
                }
                self.child_aggregates.insert(from.clone(), (aggregate, wall));
                let changed: Vec<SignedPolicy> = self
                    .policies
                    .values()
                    .filter(|p| versions.get(&p.body.id).is_none_or(|v| *v < p.body.version))
                    .cloned()
                    .collect();
                let wanted = versions
                    .iter()
                    .filter(|(id, v)| self.policies.get(*id).is_none_or(|held| held.body.version < **v))
                    .map(|(id, _)| id.clone())
                    .collect();
                self.send(&from, PolicyMessage::SyncReply { policies: changed, wanted });
            }
            PolicyMessage::SyncReply { policies, wanted } => {
                for policy in policies {
                    self.accept_policy(policy);
                }
                let Some((parent, _)) = self.setup.parent.clone() else { return };
                // Bounded by what this server holds, however long the list.
                let again: Vec<SignedPolicy> =
                    wanted.iter().filter_map(|id| self.policies.get(id)).cloned().collect();
                for policy in again {
                    self.send(&parent, PolicyMessage::NewPolicy(policy));
                }
            }
            PolicyMessage::NewPolicy(signed) => {
                // Forward upward only what is new here, so a policy climbs each tier once.
                if self.accept_policy(signed.clone())
                    && let Some((parent, _)) = self.setup.parent.clone()
                {
                    self.send(&parent, PolicyMessage::NewPolicy(signed));
                }
            }
            PolicyMessage::StatsRequest { request } => {
                let Some((parent, _)) = self.setup.parent.clone() else { return };
                let reply =
                    StatsReply { from: self.setup.name.clone(), request, aggregate: self.aggregate(false) };
                if let Ok(signed) = Signed::sign(reply, &self.setup.keys) {
                    self.send(&parent, PolicyMessage::StatsReply(signed));
                }
            }
            PolicyMessage::StatsReply(signed) => {
                let from = signed.body.from.clone();
                let Some(identity) = self.setup.children.get(&from).copied() else {
                    return self.reject(
                        "unknown-local",
                        format!(
                            "statistics from unknown local `{}`",
                            from.chars().take(64).collect::<String>()
                        ),
                    );
                };
                if signed.verify(&identity).is_err() {
                    return self
                        .reject("bad-signature", format!("statistics from `{from}` have a bad signature"));
                }
                let StatsReply { request, aggregate, .. } = signed.body;
                if let Some(pending) = self.pending.iter_mut().find(|p| p.request == request)
                    && pending.waiting.remove(&from)
                {
                    pending.aggregate.absorb(&aggregate);
                    pending.as_of.insert(from, wall);
                }
                self.finish_statuses(now, false);
            }
            PolicyMessage::Poll(signed) => self.handle_poll(wall, signed, size),
            PolicyMessage::PollReply { .. } => {
                self.reject("unexpected", "a poll reply sent to a server".into())
            }
        }
    }

    fn handle_poll(&mut self, wall: WallClock, signed: Signed<AgentReport>, size: usize) {
        let agent = signed.body.agent.clone();
        if size > MAX_REPORT_BYTES {
            return self.reject(
                "oversized-report",
                format!(
                    "report of {size} bytes from `{}` is over the {MAX_REPORT_BYTES}-byte limit",
                    agent.chars().take(64).collect::<String>()
                ),
            );
        }
        let Some(identity) = self.setup.agents.get(&agent).copied() else {
            return self.reject(
                "unknown-agent",
                format!("report from unknown agent `{}`", agent.chars().take(64).collect::<String>()),
            );
        };
        if signed.verify(&identity).is_err() {
            return self.reject("bad-signature", format!("report from `{agent}` has a bad signature"));
        }
        if signed.body.checks.len() > MAX_CHECKS {
            return self.reject(
                "oversized-report",
                format!("report from `{agent}` has {} checks", signed.body.checks.len()),
            );
        }
        let _ = wall;
        let platform = signed.body.platform.clone();
        self.reports.insert(agent.clone(), (signed.body, true));
        let policy = effective(self.policies.values().map(|p| &p.body), &platform, &self.setup.name);
        self.send(&agent, PolicyMessage::PollReply { effective: policy });
    }

    fn status(
        &mut self,
        now: Instant,
        wall: WallClock,
        request: u64,
        current: bool,
        since: Option<WallClock>,
    ) {
        if !current {
            let mut aggregate = Aggregate::default();
            let mut as_of = BTreeMap::new();
            for (child, (agg, at)) in &self.child_aggregates {
                if since.is_none_or(|s| *at >= s) {
                    aggregate.absorb(agg);
                    as_of.insert(child.clone(), *at);
                }
            }
            let missing = self.setup.children.keys().filter(|c| !as_of.contains_key(*c)).cloned().collect();
            let status = GlobalStatus { current: false, missing, aggregate, as_of };
            self.outputs.push_back(ServerOutput::StatusAnswer { request, status });
            return;
        }
        let children: Vec<String> = self.setup.children.keys().cloned().collect();
        for child in &children {
            self.send(child, PolicyMessage::StatsRequest { request });
        }
        let mut aggregate = Aggregate::default();
        // The master's own agents, if it serves any, count as of now.
        for (report, _) in self.reports.values() {
            aggregate.add_report(&self.setup.name, report);
        }
        let mut as_of = BTreeMap::new();
        as_of.insert(self.setup.name.clone(), wall);
        self.pending.push(PendingStatus {
            request,
            waiting: children.into_iter().collect(),
            deadline: now + self.setup.stats_deadline,
            aggregate,
            as_of,
        });
        self.finish_statuses(now, false);
    }

    /// Answers every pending status whose children all answered, or (on timeout) whose deadline
    /// passed, marking the missing ones.
    fn finish_statuses(&mut self, now: Instant, timeout: bool) {
        let (done, waiting): (Vec<PendingStatus>, Vec<PendingStatus>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.waiting.is_empty() || (timeout && now >= p.deadline));
        self.pending = waiting;
        for p in done {
            let status = GlobalStatus {
                current: true,
                missing: p.waiting.into_iter().collect(),
                aggregate: p.aggregate,
                as_of: p.as_of,
            };
            self.outputs.push_back(ServerOutput::StatusAnswer { request: p.request, status });
        }
    }

    pub fn handle_at(&mut self, now: Instant, wall: WallClock, input: ServerInput) {
        match input {
            ServerInput::Received { message, size } => self.handle_message(now, wall, message, size),
            ServerInput::Create(policy) => self.create(policy),
            ServerInput::SyncNow => self.sync(),
            ServerInput::Status { request, current, since } => {
                self.status(now, wall, request, current, since)
            }
            ServerInput::Timeout => {
                if self.next_sync.is_some_and(|t| now >= t) {
                    self.sync();
                    self.next_sync = Some(now + jittered(&self.setup, &mut self.rng));
                }
                self.finish_statuses(now, true);
            }
        }
    }

    pub fn poll_output(&mut self) -> Option<ServerOutput> {
        self.outputs.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let pending = self.pending.iter().map(|p| p.deadline).min();
        [self.next_sync, pending].into_iter().flatten().min()
    }
}

fn jittered(setup: &ServerSetup, rng: &mut SeededRng) -> Duration {
    setup.sync_window + uniform_duration(rng, setup.sync_jitter)
}
