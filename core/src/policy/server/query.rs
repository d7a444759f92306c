//! Questions asked of the tier now: current statistics, the agents below a server, one agent's
//! checks. A server answers for its own agents at once and asks each child, which does the same
//! for its subtree within a smaller share of the time left, so a nested tier answers within the
//! asker's deadline; a child that does not answer in time is named as missing (and its subtree
//! with it), never filled in from older figures: the agents its last sync counted are answered
//! as not reporting, by the server that holds that sync. Owns the pending questions, their deadlines and
//! how answers combine. It never forwards a raw report upward except as the per-agent detail an
//! operator asked for, and never takes an answer from a peer that is not the child it names.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::{PolicyServer, RejectKind, ServerOutput};
use crate::policy::checks::CheckOutcome;
use crate::policy::report::{AgentReport, Aggregate};
use crate::policy::server::PolicyMessage;
use crate::policy::wire::{
    AgentDetail, AgentListing, Found, GlobalStatus, MAX_AGENT_DETAILS, PolicyAdminReply, TierAnswer,
    TierQuery, Unanswered,
};
use crate::signed::Signed;
use crate::time::{Instant, WallClock};

/// The share of its own time a server gives its children: what is left covers the way back.
const CHILD_SHARE: (u32, u32) = (3, 4);
/// Below this, a server answers for itself alone rather than ask children who could not answer
/// in time anyway.
const MIN_CHILD_BUDGET: Duration = Duration::from_millis(50);

/// Whom a finished question is answered to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReplyTo {
    /// An operator's or viewer's request.
    Admin(u64),
    /// The parent's query with this request number.
    Parent(u64),
}

/// A question waiting on children.
#[derive(Debug)]
pub(super) struct PendingQuery {
    /// The number the children's answers carry.
    id: u64,
    reply_to: ReplyTo,
    waiting: BTreeSet<String>,
    deadline: Instant,
    found: Found,
    missing: Vec<String>,
    as_of: BTreeMap<String, WallClock>,
    /// What the servers below said of those below them that did not answer.
    unanswered: BTreeMap<String, Unanswered>,
}

impl PendingQuery {
    pub(super) fn deadline(&self) -> Instant {
        self.deadline
    }
}

/// An agent's latest report as a server holds it.
#[derive(Debug, Clone)]
pub(super) struct HeldReport {
    pub report: AgentReport,
    /// Whether it came since the last sync.
    pub fresh: bool,
    /// When it came.
    pub heard: WallClock,
}

impl HeldReport {
    fn detail(&self, server: &str, every_check: bool) -> AgentDetail {
        let (total, passed) = self.report.passed();
        let checks = self
            .report
            .checks
            .iter()
            .filter(|(_, c)| every_check || c.outcome != CheckOutcome::Pass)
            .map(|(name, c)| (name.clone(), c.clone()))
            .collect();
        AgentDetail {
            agent: self.report.agent.clone(),
            server: server.to_owned(),
            platform: self.report.platform.clone(),
            applied: self.report.applied,
            heard: self.heard,
            measured: self.report.last_scan,
            threats: self.report.threats,
            checks_total: total,
            checks_passed: passed,
            checks,
        }
    }

    fn failing(&self) -> bool {
        self.report.checks.values().any(|c| c.outcome != CheckOutcome::Pass)
    }
}

impl PolicyServer {
    /// Asks this server's subtree `query` now and answers `reply_to` when every child answered
    /// or `budget` ran out.
    pub(super) fn ask_tier(
        &mut self,
        now: Instant,
        wall: WallClock,
        reply_to: ReplyTo,
        query: TierQuery,
        budget: Duration,
    ) {
        let (found, done_here) = self.own_part(&query, wall);
        let mut as_of = BTreeMap::new();
        as_of.insert(self.setup.name.clone(), wall);
        let child_budget = budget * CHILD_SHARE.0 / CHILD_SHARE.1;
        let children: Vec<String> = if done_here || child_budget < MIN_CHILD_BUDGET {
            Vec::new()
        } else {
            self.setup.children.keys().cloned().collect()
        };
        let id = self.next_query;
        self.next_query += 1;
        let budget_ms = u64::try_from(child_budget.as_millis()).unwrap_or(u64::MAX);
        for child in &children {
            self.send(child, PolicyMessage::Query { request: id, query: query.clone(), budget_ms });
        }
        self.pending.push(PendingQuery {
            id,
            reply_to,
            waiting: children.into_iter().collect(),
            deadline: now + budget,
            found,
            missing: Vec::new(),
            as_of,
            unanswered: BTreeMap::new(),
        });
        self.finish_queries(now, false);
    }

    /// What this server itself holds for `query`, and whether that settles it (the one agent
    /// asked for is here, or the server named is this one).
    fn own_part(&self, query: &TierQuery, wall: WallClock) -> (Found, bool) {
        let name = &self.setup.name;
        match query {
            // Only its own agents: the children answer for theirs now.
            TierQuery::Stats => (Found::Stats(self.own_aggregate(false, wall)), false),
            TierQuery::Agent(agent) => match self.reports.get(agent) {
                Some(held) => {
                    (Found::Agents { agents: vec![held.detail(name, true)], truncated: false }, true)
                }
                None => (Found::Agents { agents: Vec::new(), truncated: false }, false),
            },
            TierQuery::Agents { server, failing } => {
                let here = server.as_ref().is_none_or(|s| s == name);
                let agents: Vec<AgentDetail> = self
                    .reports
                    .values()
                    .filter(|_| here)
                    .filter(|held| !*failing || held.failing())
                    .map(|held| held.detail(name, false))
                    .collect();
                let settled = server.as_ref().is_some_and(|s| s == name);
                (Found::Agents { agents, truncated: false }, settled)
            }
        }
    }

    /// A child's signed answer to one of this server's questions.
    pub(super) fn handle_answer(&mut self, now: Instant, signed: Box<Signed<TierAnswer>>) {
        let from = signed.body.from.clone();
        let Some(identity) = self.setup.children.get(&from).copied() else {
            let from = from.chars().take(64).collect::<String>();
            return self.reject(RejectKind::UnknownLocal, format!("an answer from unknown local `{from}`"));
        };
        if signed.verify(&identity).is_err() {
            return self
                .reject(RejectKind::BadSignature, format!("an answer from `{from}` has a bad signature"));
        }
        let TierAnswer { request, found, missing, as_of, unanswered, .. } = signed.body;
        let Some(pending) = self.pending.iter_mut().find(|p| p.id == request) else { return };
        if !pending.waiting.remove(&from) {
            return;
        }
        match (&mut pending.found, found) {
            (Found::Stats(sum), Found::Stats(part)) => sum.absorb(&part),
            (Found::Agents { agents, truncated }, Found::Agents { agents: more, truncated: cut }) => {
                agents.extend(more);
                *truncated |= cut;
            }
            _ => {
                return self
                    .reject(RejectKind::Unexpected, format!("`{from}` answered a different question"));
            }
        }
        // Bounded by the tier: a child names at most the servers below it, once each.
        pending.missing.extend(missing.into_iter().take(self.setup.signers.len()));
        pending.as_of.extend(as_of.into_iter().take(self.setup.signers.len()));
        pending.unanswered.extend(unanswered.into_iter().take(self.setup.signers.len()));
        self.finish_queries(now, false);
    }

    /// Answers every question whose children all answered, or (on timeout) whose deadline
    /// passed, naming those missing.
    pub(super) fn finish_queries(&mut self, now: Instant, timeout: bool) {
        let (done, waiting): (Vec<PendingQuery>, Vec<PendingQuery>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.waiting.is_empty() || (timeout && now >= p.deadline));
        self.pending = waiting;
        for p in done {
            self.answer(p);
        }
    }

    fn answer(&mut self, p: PendingQuery) {
        let PendingQuery { reply_to, waiting, mut found, mut missing, as_of, mut unanswered, .. } = p;
        // A child that did not answer: its agents, as its last sync here counted them, are not
        // reporting (a count matters only to statistics).
        if matches!(found, Found::Stats(_)) {
            for child in &waiting {
                unanswered.insert(child.clone(), self.last_heard_below(child));
            }
        } else {
            unanswered.clear();
        }
        missing.extend(waiting);
        missing.sort();
        missing.dedup();
        if let Found::Agents { agents, truncated } = &mut found {
            agents.sort_by(|a, b| a.agent.cmp(&b.agent));
            if agents.len() > MAX_AGENT_DETAILS {
                agents.truncate(MAX_AGENT_DETAILS);
                *truncated = true;
            }
        }
        match reply_to {
            ReplyTo::Admin(request) => {
                let reply = match found {
                    Found::Stats(aggregate) => PolicyAdminReply::Status(GlobalStatus {
                        current: true,
                        missing,
                        aggregate,
                        as_of,
                        unanswered,
                    }),
                    Found::Agents { agents, truncated } => {
                        PolicyAdminReply::Agents(AgentListing { agents, missing, truncated })
                    }
                };
                self.outputs.push_back(ServerOutput::AdminReply { request, reply });
            }
            ReplyTo::Parent(request) => {
                let Some((parent, _)) = self.setup.parent.clone() else { return };
                let from = self.setup.name.clone();
                let answer = TierAnswer { from, request, found, missing, as_of, unanswered };
                if let Ok(signed) = Signed::sign(answer, &self.setup.keys) {
                    self.send(&parent, PolicyMessage::Answer(Box::new(signed)));
                }
            }
        }
    }

    /// What this server last heard of the agents below child `child`: its latest sync, if any.
    fn last_heard_below(&self, child: &str) -> Unanswered {
        self.child_aggregates.get(child).map(|(agg, at)| Unanswered::of(*at, agg)).unwrap_or_default()
    }

    /// The master's historical status: each child's latest sync (at or after `since`). A child
    /// with none in that span is missing, and the agents its latest sync counted (if it ever
    /// synced) are not reporting.
    pub(super) fn stored_status(&self, since: Option<WallClock>) -> GlobalStatus {
        let mut aggregate = Aggregate::default();
        let mut as_of = BTreeMap::new();
        for (child, (agg, at)) in &self.child_aggregates {
            if since.is_none_or(|s| *at >= s) {
                aggregate.absorb(agg);
                as_of.insert(child.clone(), *at);
            }
        }
        let missing: Vec<String> =
            self.setup.children.keys().filter(|c| !as_of.contains_key(*c)).cloned().collect();
        let unanswered = missing.iter().map(|c| (c.clone(), self.last_heard_below(c))).collect();
        GlobalStatus { current: false, missing, aggregate, as_of, unanswered }
    }
}
