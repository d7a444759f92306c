//! What a server's agents report and what it sends up: each agent's poll checked and held (its
//! latest report, whether it came since the last sync, when it was heard), answered with the
//! agent's effective policy, and folded at each sync into the aggregate its parent receives,
//! with the children's latest aggregates absorbed. It never sends a raw report upward, and never
//! holds a report it could not verify as its named agent's.

use std::collections::BTreeSet;

use super::{HeldReport, PolicyServer, RejectKind};
use crate::policy::merge::effective;
use crate::policy::report::{AgentReport, Aggregate, MAX_CHECKS, MAX_NAMED_AGENTS, MAX_REPORT_BYTES, Quiet};
use crate::policy::wire::{PolicyMessage, SyncRequest};
use crate::signed::Signed;
use crate::time::WallClock;

impl PolicyServer {
    /// Agents not heard within a sync window before `wall`: this server's own, and those its
    /// children said were silent in their last syncs.
    pub fn silent_agents(&self, wall: WallClock) -> u64 {
        let window_ms = u64::try_from(self.setup.sync_window.as_millis()).unwrap_or(u64::MAX);
        let heard_lately = |agent: &String| {
            self.reports.get(agent).is_some_and(|held| wall.0.saturating_sub(held.heard.0) <= window_ms)
        };
        let own = self.setup.agents.keys().filter(|a| !heard_lately(a)).count() as u64;
        own + self.child_aggregates.values().map(|(a, _)| a.silent_agents).sum::<u64>()
    }

    /// What this server's own agents reported (only since the last sync, with `since_last_sync_only`;
    /// agents not reporting in that span counted as silent).
    pub(super) fn own_aggregate(&self, since_last_sync_only: bool, wall: WallClock) -> Aggregate {
        let mut aggregate = Aggregate::default();
        for held in self.reports.values() {
            if held.fresh || !since_last_sync_only {
                aggregate.add_report(&self.setup.name, &held.report);
            }
            // An agent's threats are as its latest report left them, fresh or not: a window it
            // happened not to report in does not clear them.
            aggregate.name_threats(&self.setup.name, &held.report);
        }
        let reporting: BTreeSet<&String> = self
            .reports
            .iter()
            .filter(|(_, held)| held.fresh || !since_last_sync_only)
            .map(|(a, _)| a)
            .collect();
        aggregate.silent_agents = self.setup.agents.keys().filter(|a| !reporting.contains(a)).count() as u64;
        let window_ms = u64::try_from(self.setup.sync_window.as_millis()).unwrap_or(u64::MAX);
        let started = self.started.unwrap_or_default();
        for agent in self.setup.agents.keys().filter(|a| !reporting.contains(a)).take(MAX_NAMED_AGENTS) {
            let held = self.reports.get(agent);
            let quiet = Quiet {
                local: self.setup.name.clone(),
                since: held.map_or(started, |h| h.heard),
                every_ms: held.map_or(window_ms, |h| h.report.poll_every_ms),
                as_of: wall,
            };
            aggregate.quiet.insert(agent.clone(), quiet);
        }
        aggregate
    }

    /// What a sync carries up: this server's agents since the last sync, and its children's
    /// latest syncs.
    fn sync_aggregate(&self, wall: WallClock) -> Aggregate {
        let mut aggregate = self.own_aggregate(true, wall);
        for (child, _) in self.child_aggregates.values() {
            aggregate.absorb(child);
        }
        aggregate
    }

    pub(super) fn sync(&mut self, wall: WallClock) {
        let Some((parent, _)) = self.setup.parent.clone() else { return };
        self.cycle += 1;
        let request = SyncRequest {
            from: self.setup.name.clone(),
            cycle: self.cycle,
            at: wall,
            versions: self.held.ranks(),
            aggregate: self.sync_aggregate(wall),
        };
        for held in self.reports.values_mut() {
            held.fresh = false;
        }
        if let Ok(signed) = Signed::sign(request, &self.setup.keys) {
            self.send(&parent, PolicyMessage::Sync(signed));
        }
    }

    pub(super) fn handle_poll(&mut self, wall: WallClock, signed: Signed<AgentReport>, size: usize) {
        let agent = signed.body.agent.clone();
        if size > MAX_REPORT_BYTES {
            return self.reject(
                RejectKind::OversizedReport,
                format!(
                    "report of {size} bytes from `{}` is over the {MAX_REPORT_BYTES}-byte limit",
                    agent.chars().take(64).collect::<String>()
                ),
            );
        }
        let Some(identity) = self.setup.agents.get(&agent).copied() else {
            return self.reject(
                RejectKind::UnknownAgent,
                format!("report from unknown agent `{}`", agent.chars().take(64).collect::<String>()),
            );
        };
        if signed.verify(&identity).is_err() {
            return self
                .reject(RejectKind::BadSignature, format!("report from `{agent}` has a bad signature"));
        }
        if signed.body.checks.len() > MAX_CHECKS {
            return self.reject(
                RejectKind::OversizedReport,
                format!("report from `{agent}` has {} checks", signed.body.checks.len()),
            );
        }
        if let Some(held) = self.reports.get(&agent)
            && signed.body.at <= held.report.at
        {
            return self.reject(
                RejectKind::StaleReport,
                format!("report from `{agent}` is not newer than the one held (a replay); kept the newer"),
            );
        }
        let platform = signed.body.platform.clone();
        self.reports.insert(agent.clone(), HeldReport { report: signed.body, fresh: true, heard: wall });
        let policy = effective(self.policies(), &platform, &self.setup.name);
        self.send(&agent, PolicyMessage::PollReply { effective: policy });
    }
}
