//! A policy server: the master (no parent) or a local (with a parent, which may be another local:
//! tiers nest to any depth). Owns the policy store, replication down the tier by scheduled sync
//! (window plus jitter) and on demand, upward forwarding of policies created below, serving agents
//! their effective policy, consolidating their reports into aggregates, and (at the master) the
//! global status, historical or current with a deadline, its history as a bounded time series,
//! and signed admin requests from operators and read-only viewers (who may ask, how fresh, what
//! each tier may do). It never stores a policy, report or aggregate
//! it could not verify, never takes a tier message from a channel peer other than the server or
//! agent the message names, and never sends raw reports upward.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use super::alerts::{Alert, AlertBook, AlertRules};
use super::document::{Policy, PolicyError, SignedPolicy, Superseded};
use super::report::{AgentReport, Aggregate};
use super::wire::{HistoryPoint, PolicyAdminReply, PolicyAdminRequest};
pub use held::MAX_SUPERSEDED_PER_POLICY;
pub use history::MAX_HISTORY_POINTS;
pub use rejection::{RejectKind, Rejection};
mod admin;
mod held;
mod history;
mod query;
mod rejection;
mod reports;
#[cfg(test)]
mod tests;

pub use super::wire::{GlobalStatus, PolicyMessage, SyncRequest, TierAnswer, TierQuery};
use query::{HeldReport, PendingQuery, ReplyTo};

/// The longest a server waits on the tier below for one question, whatever its parent allows.
const MAX_QUERY_BUDGET_MS: u64 = 60_000;
use crate::identity::{NodeId, NodeKeys, PublicIdentity};
use crate::machine::Machine;
use crate::rng::{SeededRng, uniform_duration};
use crate::signed::Signed;
use crate::time::{Instant, Now, WallClock};

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
    /// Operators whose signed admin requests this server serves.
    pub operators: Vec<PublicIdentity>,
    /// Identities that may only read (status and history): a console on another node shows the
    /// tier without being able to change it.
    pub viewers: Vec<PublicIdentity>,
    pub sync_window: Duration,
    pub sync_jitter: Duration,
    pub stats_deadline: Duration,
    /// The master's alert thresholds (a local ignores them).
    pub alerts: AlertRules,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerInput {
    /// A tier message from the channel peer `from` (the identity its channel authenticated).
    Received {
        from: PublicIdentity,
        message: PolicyMessage,
        size: usize,
    },
    Timeout,
    /// The channel to the parent opened (at start, and again after it broke): a sync goes up
    /// at once, so the parent has this server's figures, and the channel it asks questions on
    /// carries a message from the start.
    ParentConnected,
    /// An operator's or viewer's signed request; the answer leaves as [`ServerOutput::AdminReply`] with the
    /// same `request`.
    Admin {
        request: u64,
        signed: Signed<PolicyAdminRequest>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerOutput {
    /// Send `message` to the peer whose channel authenticated as `to` (`name` is for logs).
    Send {
        to: NodeId,
        name: String,
        message: PolicyMessage,
    },
    /// A verified policy version is now held here; the driver keeps it durably so a restart
    /// serves it again (and versions never go backwards).
    Stored(SignedPolicy),
    /// A version lost a conflict to the one held (logged; the driver keeps it as history).
    Superseded(Superseded),
    /// An alert the master raised: the driver logs it, keeps it and passes it to the hook.
    Alert(Alert),
    /// The master keeps each sync's aggregate for history.
    History {
        from: String,
        at: WallClock,
        aggregate: Aggregate,
    },
    /// The answer to the admin request `request`.
    AdminReply {
        request: u64,
        reply: PolicyAdminReply,
    },
    Rejected(Rejection),
}

/// One policy server. See the module docs.
#[derive(Debug)]
pub struct PolicyServer {
    setup: ServerSetup,
    rng: SeededRng,
    held: held::HeldPolicies,
    /// Latest report per agent, and whether it came since the last sync.
    reports: BTreeMap<String, HeldReport>,
    /// Latest aggregate per child and when it came: at the master, this is what historical
    /// status reads (the full history is the driver's, in its store).
    child_aggregates: BTreeMap<String, (Aggregate, WallClock)>,
    /// At the master, one point per child sync, oldest first and at most
    /// [`MAX_HISTORY_POINTS`]: what a history request reads without asking the driver's store.
    history: VecDeque<HistoryPoint>,
    /// Verified syncs received from children.
    syncs_received: u64,
    /// At the master, the alert thresholds, the conditions they hold and the alerts raised.
    alerts: AlertBook,
    /// When this server first saw the time: an agent never heard is quiet since then.
    started: Option<WallClock>,
    next_sync: Option<Instant>,
    cycle: u64,
    /// When each child signed the last sync taken from it.
    child_syncs: BTreeMap<String, WallClock>,
    /// Change requests taken from operators, by when they were signed and their digest, kept
    /// while they are fresh enough to be taken: the same one again is a replay.
    admin_taken: BTreeSet<(WallClock, [u8; 32])>,
    /// Questions to the tier below waiting on answers, and the number the next one takes.
    pending: Vec<PendingQuery>,
    next_query: u64,
    outputs: VecDeque<ServerOutput>,
    rejected: BTreeMap<RejectKind, u64>,
}

impl PolicyServer {
    pub fn new(now: Instant, setup: ServerSetup, mut rng: SeededRng) -> PolicyServer {
        let next_sync = setup.parent.as_ref().map(|_| now + jittered(&setup, &mut rng));
        let alerts = AlertBook::new(setup.alerts);
        PolicyServer {
            setup,
            rng,
            held: held::HeldPolicies::default(),
            reports: BTreeMap::new(),
            child_aggregates: BTreeMap::new(),
            history: VecDeque::new(),
            syncs_received: 0,
            alerts,
            started: None,
            next_sync,
            cycle: 0,
            child_syncs: BTreeMap::new(),
            admin_taken: BTreeSet::new(),
            pending: Vec::new(),
            next_query: 1,
            outputs: VecDeque::new(),
            rejected: BTreeMap::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.setup.name
    }

    /// The version of every policy held here (retired ones included), by id.
    pub fn policies(&self) -> impl Iterator<Item = &Policy> {
        self.held.iter().map(|s| &s.body)
    }

    pub fn signed_policies(&self) -> impl Iterator<Item = &SignedPolicy> {
        self.held.iter()
    }

    /// The versions of `id` that lost a conflict here, oldest first.
    pub fn superseded(&self, id: &str) -> impl Iterator<Item = &Superseded> {
        self.held.superseded(id)
    }

    /// Refusals, by kind.
    pub fn rejected(&self) -> &BTreeMap<RejectKind, u64> {
        &self.rejected
    }

    pub fn reports_held(&self) -> usize {
        self.reports.len()
    }

    /// The latest report held from each agent, by agent name.
    pub fn reports(&self) -> impl Iterator<Item = (&str, &AgentReport)> {
        self.reports.iter().map(|(agent, held)| (agent.as_str(), &held.report))
    }

    /// Each child and when its last verified sync came (`None`: not since this server started).
    pub fn child_syncs(&self) -> impl Iterator<Item = (&str, Option<WallClock>)> {
        self.setup
            .children
            .keys()
            .map(|name| (name.as_str(), self.child_aggregates.get(name).map(|(_, at)| *at)))
    }

    pub fn syncs_received(&self) -> u64 {
        self.syncs_received
    }

    /// Takes back what the driver kept from before a restart: the policies (each verified again,
    /// as if it had just arrived; one that fails is refused and counted, never served), the
    /// versions that lost conflicts, and each child's latest aggregate. Emits no `Stored`: these
    /// are already durable.
    pub fn restore(
        &mut self,
        policies: impl IntoIterator<Item = SignedPolicy>,
        superseded: impl IntoIterator<Item = Superseded>,
        latest: impl IntoIterator<Item = (String, WallClock, Aggregate)>,
    ) {
        for signed in policies {
            match self.verify_policy(&signed) {
                Ok(()) => {
                    self.held.place(signed);
                }
                Err(e) => {
                    self.reject(RejectKind::StoredPolicyInvalid, format!("a stored policy was refused: {e}"))
                }
            }
        }
        for lost in superseded {
            self.held.keep(lost);
        }
        for (child, at, aggregate) in latest {
            if self.setup.children.contains_key(&child) {
                self.child_aggregates.insert(child, (aggregate, at));
            }
        }
    }

    /// Takes back the alerts the master raised before a restart; what the restored syncs show
    /// now raises nothing again.
    pub fn restore_alerts(&mut self, kept: impl IntoIterator<Item = Alert>) {
        let children: Vec<&Aggregate> = self.child_aggregates.values().map(|(a, _)| a).collect();
        self.alerts.restore(kept, &children);
    }

    /// The alerts the master raised, oldest first.
    pub fn alerts(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.alerts()
    }

    fn reject(&mut self, kind: RejectKind, detail: String) {
        *self.rejected.entry(kind).or_default() += 1;
        self.outputs.push_back(ServerOutput::Rejected(Rejection { kind, detail }));
    }

    /// Who this server exchanges tier messages with: its parent, children and agents. A
    /// driver's listener admits these (and the operators and viewers) and no one else.
    pub fn peers(&self) -> impl Iterator<Item = &PublicIdentity> {
        let parent = self.setup.parent.iter().map(|(_, id)| id);
        parent.chain(self.setup.children.values()).chain(self.setup.agents.values())
    }

    pub fn operators(&self) -> &[PublicIdentity] {
        &self.setup.operators
    }

    /// Identities that may make read-only admin requests (status, history).
    pub fn viewers(&self) -> &[PublicIdentity] {
        &self.setup.viewers
    }

    /// The parent's identity, if this server has one.
    pub fn parent(&self) -> Option<&PublicIdentity> {
        self.setup.parent.as_ref().map(|(_, id)| id)
    }

    /// Checks a policy is valid and signed by the server of the tier it names as its author.
    fn verify_policy(&self, signed: &SignedPolicy) -> Result<(), PolicyError> {
        let id = &signed.body.id;
        signed.body.validate()?;
        let signer = self
            .setup
            .signers
            .get(&signed.body.author)
            .ok_or_else(|| PolicyError::UnknownSigner(id.clone()))?;
        signed.verify(signer).map_err(|_| PolicyError::BadSignature(id.clone()))?;
        Ok(())
    }

    /// Verifies a policy and offers it to what is held; returns whether it is now the held
    /// version (so it travels on). A version that lost a conflict is kept as superseded.
    fn accept_policy(&mut self, signed: SignedPolicy) -> bool {
        // Held already, or an older version number: nothing it could change, so nothing to verify.
        let held = self.held.get(&signed.body.id);
        if held.is_some_and(|h| *h == signed) {
            return false;
        }
        if let Some(newer) = held.map(|h| h.body.version).filter(|v| *v > signed.body.version) {
            let detail = format!(
                "policy `{}` version {} is older than version {newer} held here; kept {newer}",
                signed.body.id.chars().take(64).collect::<String>(),
                signed.body.version
            );
            self.reject(RejectKind::OlderPolicy, detail);
            return false;
        }
        match self.verify_policy(&signed) {
            Ok(()) => match self.held.place(signed.clone()) {
                held::Placed::New => {
                    self.outputs.push_back(ServerOutput::Stored(signed));
                    true
                }
                held::Placed::Replaced { lost } => {
                    self.outputs.push_back(ServerOutput::Stored(signed));
                    if let Some(lost) = lost {
                        self.outputs.push_back(ServerOutput::Superseded(lost));
                    }
                    true
                }
                held::Placed::Known => false,
                held::Placed::Lost(lost) => {
                    self.outputs.push_back(ServerOutput::Superseded(lost));
                    false
                }
            },
            Err(e) => {
                let kind = match e {
                    PolicyError::UnknownSigner(_) => RejectKind::PolicyUnknownSigner,
                    PolicyError::BadSignature(_) => RejectKind::PolicyBadSignature,
                    _ => RejectKind::PolicyInvalid,
                };
                self.reject(kind, e.to_string());
                false
            }
        }
    }

    /// Sends to a named parent, child or agent of this server; names come from the setup, so a
    /// name with no identity is a bug, never a peer's doing.
    fn send(&mut self, to: &str, message: PolicyMessage) {
        let setup = &self.setup;
        let parent = setup.parent.as_ref().filter(|(name, _)| name == to).map(|(_, id)| id);
        let identity = parent.or_else(|| setup.children.get(to)).or_else(|| setup.agents.get(to));
        if let Some(identity) = identity {
            let to_id = identity.node_id();
            self.outputs.push_back(ServerOutput::Send { to: to_id, name: to.to_owned(), message });
        }
    }

    /// Whether a message naming `name`, a known sender, came on a channel that authenticated
    /// someone else. (A name nobody knows is refused as unknown, later.)
    fn wrong_peer(known: &BTreeMap<String, PublicIdentity>, name: &str, peer: &PublicIdentity) -> bool {
        known.get(name).is_some_and(|id| id.node_id() != peer.node_id())
    }

    fn create(&mut self, mut policy: Policy) {
        if let Some(held) = self.held.get(&policy.id) {
            policy.version = policy.version.max(held.body.version.saturating_add(1));
        }
        let Ok(signed) = Signed::sign(policy, &self.setup.keys) else { return };
        if self.accept_policy(signed.clone())
            && let Some((parent, _)) = self.setup.parent.clone()
        {
            self.send(&parent, PolicyMessage::NewPolicy(signed));
        }
    }

    fn handle_message(
        &mut self,
        now: Instant,
        wall: WallClock,
        peer: PublicIdentity,
        message: PolicyMessage,
        size: usize,
    ) {
        let from_parent = self.parent().is_some_and(|p| p.node_id() == peer.node_id());
        let from_child = self.setup.children.values().any(|c| c.node_id() == peer.node_id());
        let wrong_peer = |what: &str| format!("{what} on a channel from {}, not its sender", peer.node_id());
        match &message {
            PolicyMessage::Sync(s) if Self::wrong_peer(&self.setup.children, &s.body.from, &peer) => {
                return self.reject(RejectKind::WrongPeer, wrong_peer("a sync"));
            }
            PolicyMessage::Answer(s) if Self::wrong_peer(&self.setup.children, &s.body.from, &peer) => {
                return self.reject(RejectKind::WrongPeer, wrong_peer("an answer"));
            }
            PolicyMessage::Poll(s) if Self::wrong_peer(&self.setup.agents, &s.body.agent, &peer) => {
                return self.reject(RejectKind::WrongPeer, wrong_peer("a report"));
            }
            PolicyMessage::SyncReply { .. } | PolicyMessage::Query { .. } if !from_parent => {
                return self.reject(RejectKind::WrongPeer, wrong_peer("a parent's message"));
            }
            PolicyMessage::NewPolicy(_) if !from_child => {
                return self.reject(RejectKind::WrongPeer, wrong_peer("a policy on its way up"));
            }
            _ => {}
        }
        match message {
            PolicyMessage::Sync(signed) => {
                let from = signed.body.from.clone();
                let Some(identity) = self.setup.children.get(&from).copied() else {
                    return self.reject(
                        RejectKind::UnknownLocal,
                        format!("sync from unknown local `{}`", from.chars().take(64).collect::<String>()),
                    );
                };
                if signed.verify(&identity).is_err() {
                    return self
                        .reject(RejectKind::BadSignature, format!("sync from `{from}` has a bad signature"));
                }
                if let Some(last) = self.child_syncs.get(&from)
                    && signed.body.at <= *last
                {
                    return self.reject(
                        RejectKind::StaleSync,
                        format!("sync from `{from}` is not newer than the last one taken (a replay)"),
                    );
                }
                let SyncRequest { versions, aggregate, at, .. } = signed.body;
                self.child_syncs.insert(from.clone(), at);
                self.syncs_received += 1;
                if self.setup.parent.is_none() {
                    self.record_history(HistoryPoint::of(&from, wall, &aggregate));
                    self.outputs.push_back(ServerOutput::History {
                        from: from.clone(),
                        at: wall,
                        aggregate: aggregate.clone(),
                    });
                }
                self.child_aggregates.insert(from.clone(), (aggregate, wall));
                if self.setup.parent.is_none() {
                    let children: Vec<&Aggregate> = self.child_aggregates.values().map(|(a, _)| a).collect();
                    for alert in self.alerts.evaluate(&children, wall) {
                        self.outputs.push_back(ServerOutput::Alert(alert));
                    }
                }
                // By the one order: what the child holds lower goes down, what it holds higher
                // (a policy made below whose climb was lost, or a conflict it wins) comes up.
                let changed: Vec<SignedPolicy> = self
                    .held
                    .iter()
                    .filter(|p| versions.get(&p.body.id).is_none_or(|r| *r < p.body.rank()))
                    .cloned()
                    .collect();
                let wanted = versions
                    .iter()
                    .filter(|(id, r)| self.held.rank_of(id).is_none_or(|held| held < *r))
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
                    wanted.iter().filter_map(|id| self.held.get(id)).cloned().collect();
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
            PolicyMessage::Query { request, query, budget_ms } => {
                // However long the parent allows, a question never outlives a minute here.
                let budget = Duration::from_millis(budget_ms.min(MAX_QUERY_BUDGET_MS));
                self.ask_tier(now, wall, ReplyTo::Parent(request), query, budget);
            }
            PolicyMessage::Answer(signed) => self.handle_answer(now, signed),
            PolicyMessage::Poll(signed) => self.handle_poll(wall, signed, size),
            PolicyMessage::PollReply { .. } => {
                self.reject(RejectKind::Unexpected, "a poll reply sent to a server".into())
            }
        }
    }
}

impl Machine for PolicyServer {
    type Input = ServerInput;
    type Output = ServerOutput;

    fn handle(&mut self, now: Now, input: ServerInput) {
        let Now { mono: now, wall } = now;
        self.started.get_or_insert(wall);
        match input {
            ServerInput::Received { from, message, size } => {
                self.handle_message(now, wall, from, message, size)
            }
            ServerInput::Admin { request, signed } => self.admin(now, wall, request, signed),
            ServerInput::Timeout => {
                if self.next_sync.is_some_and(|t| now >= t) {
                    self.sync(wall);
                    self.next_sync = Some(now + jittered(&self.setup, &mut self.rng));
                }
                self.finish_queries(now, true);
            }
            ServerInput::ParentConnected => {
                if self.setup.parent.is_some() {
                    self.sync(wall);
                    self.next_sync = Some(now + jittered(&self.setup, &mut self.rng));
                }
            }
        }
    }

    fn poll_output(&mut self) -> Option<ServerOutput> {
        self.outputs.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let pending = self.pending.iter().map(|p| p.deadline()).min();
        [self.next_sync, pending].into_iter().flatten().min()
    }
}

fn jittered(setup: &ServerSetup, rng: &mut SeededRng) -> Duration {
    setup.sync_window + uniform_duration(rng, setup.sync_jitter)
}
