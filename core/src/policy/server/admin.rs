//! Signed admin requests at a policy server: who may ask (an operator the tier lists, for
//! anything; a viewer it lists, only to read status and history), how fresh a request must be,
//! and what each tier may be asked (no sync at the master, no global status or history at a
//! local). The answer always goes back as an `AdminReply`; nothing is done for a request that
//! fails a check.

use std::time::Duration;

use super::query::ReplyTo;
use super::{PolicyServer, RejectKind, ServerOutput, TierQuery};
use crate::policy::document::Policy;
use crate::policy::wire::{
    ADMIN_FRESHNESS_MS, MAX_HISTORY_REPLY, PolicyAdmin, PolicyAdminReply, PolicyAdminRequest,
};
use crate::signed::Signed;
use crate::time::{Instant, WallClock};

/// Change requests a server remembers inside one freshness window; more are refused until the
/// oldest age out, so a flood of signed requests cannot grow the memory of them without end.
const MAX_ADMIN_TAKEN: usize = 4096;

impl PolicyServer {
    /// An admin request: signed by an operator this server lists (or, for a read-only request, a
    /// viewer it lists), made within [`ADMIN_FRESHNESS_MS`] of now, and asking for something this
    /// tier does.
    pub(super) fn admin(
        &mut self,
        now: Instant,
        wall: WallClock,
        request: u64,
        signed: Signed<PolicyAdminRequest>,
    ) {
        let reply = |server: &mut Self, reply: PolicyAdminReply| {
            server.outputs.push_back(ServerOutput::AdminReply { request, reply });
        };
        let refuse = |server: &mut Self, kind: RejectKind, text: &str| {
            server.reject(kind, format!("admin request refused: {text}"));
            reply(server, PolicyAdminReply::Error(text.to_owned()));
        };
        let operator = self.setup.operators.iter().any(|op| signed.verify(op).is_ok());
        if !operator {
            if !self.setup.viewers.iter().any(|v| signed.verify(v).is_ok()) {
                let text = "not signed by an operator this tier lists";
                return refuse(self, RejectKind::AdminNotOperator, text);
            }
            if !signed.body.request.read_only() {
                let text = "a viewer may only read status and history";
                return refuse(self, RejectKind::AdminNotAllowed, text);
            }
        }
        if wall.distance(signed.body.at) > Duration::from_millis(ADMIN_FRESHNESS_MS) {
            let text = "the request is stale or from the future; check the clock and retry";
            return refuse(self, RejectKind::AdminStale, text);
        }
        if !signed.body.request.read_only() {
            // A change taken once must not be taken again while it is still fresh enough to be.
            let window = ADMIN_FRESHNESS_MS;
            self.admin_taken.retain(|(at, _)| at.0.saturating_add(window) >= wall.0);
            let Ok(digest) = signed.body_digest() else {
                return refuse(self, RejectKind::AdminInvalid, "the request could not be encoded");
            };
            let taken = (signed.body.at, digest);
            if self.admin_taken.contains(&taken) {
                let text = "this signed request was carried out already; sign a new one to do it again";
                return refuse(self, RejectKind::AdminReplayed, text);
            }
            if self.admin_taken.len() >= MAX_ADMIN_TAKEN {
                let text = "too many changes in the last five minutes; retry in a minute";
                return refuse(self, RejectKind::AdminInvalid, text);
            }
            self.admin_taken.insert(taken);
        }
        match signed.body.request {
            PolicyAdmin::Create(policy) => {
                // The server signs what it creates, so it is the author whatever the request said.
                let policy = Policy { author: self.setup.name.clone(), ..policy };
                if let Err(e) = policy.validate() {
                    return refuse(self, RejectKind::AdminInvalid, &e.to_string());
                }
                self.create(policy);
                reply(self, PolicyAdminReply::Created);
            }
            PolicyAdmin::Show(id) => match self.held.get(&id) {
                Some(held) => {
                    let superseded = self.held.superseded(&id).cloned().collect();
                    reply(self, PolicyAdminReply::Policy { held: held.body.clone(), superseded });
                }
                None => refuse(self, RejectKind::AdminInvalid, &no_such(&id)),
            },
            PolicyAdmin::Retire(id) => {
                let Some(held) = self.held.get(&id).map(|p| p.body.clone()) else {
                    return refuse(self, RejectKind::AdminInvalid, &no_such(&id));
                };
                if held.retired {
                    return refuse(
                        self,
                        RejectKind::AdminInvalid,
                        &format!("policy `{id}` is retired already"),
                    );
                }
                let version = held.version.saturating_add(1);
                let tombstone = Policy {
                    version,
                    author: self.setup.name.clone(),
                    params: Default::default(),
                    retired: true,
                    ..held
                };
                self.create(tombstone);
                reply(self, PolicyAdminReply::Retired { version });
            }
            PolicyAdmin::List => {
                let policies = self.policies().cloned().collect();
                reply(self, PolicyAdminReply::Policies(policies));
            }
            PolicyAdmin::SyncNow if self.setup.parent.is_none() => {
                let text = "the master has no parent to sync with; ask a local (--server NAME)";
                refuse(self, RejectKind::AdminInvalid, text);
            }
            PolicyAdmin::SyncNow => {
                self.sync(wall);
                reply(self, PolicyAdminReply::SyncStarted);
            }
            PolicyAdmin::Status { .. } if self.setup.parent.is_some() => {
                refuse(self, RejectKind::AdminInvalid, "global status comes from the master");
            }
            PolicyAdmin::Status { current: true, .. } => {
                let budget = self.setup.stats_deadline;
                self.ask_tier(now, wall, ReplyTo::Admin(request), TierQuery::Stats, budget);
            }
            PolicyAdmin::Status { current: false, since } => {
                let status = self.stored_status(since);
                reply(self, PolicyAdminReply::Status(status));
            }
            PolicyAdmin::Agents { server, failing } => {
                let budget = self.setup.stats_deadline;
                self.ask_tier(
                    now,
                    wall,
                    ReplyTo::Admin(request),
                    TierQuery::Agents { server, failing },
                    budget,
                );
            }
            PolicyAdmin::Agent(agent) => {
                let budget = self.setup.stats_deadline;
                self.ask_tier(now, wall, ReplyTo::Admin(request), TierQuery::Agent(agent), budget);
            }
            PolicyAdmin::History { .. } if self.setup.parent.is_some() => {
                refuse(self, RejectKind::AdminInvalid, "history comes from the master");
            }
            PolicyAdmin::Alerts if self.setup.parent.is_some() => {
                refuse(self, RejectKind::AdminInvalid, "alerts are raised at the master");
            }
            PolicyAdmin::Alerts => {
                let held: Vec<_> = self.alerts().cloned().collect();
                let skip = held.len().saturating_sub(MAX_HISTORY_REPLY);
                reply(self, PolicyAdminReply::Alerts(held.into_iter().skip(skip).collect()));
            }
            PolicyAdmin::History { since, until } => {
                let points = self.history_between(since, until);
                reply(self, PolicyAdminReply::History(points));
            }
        }
    }
}

/// The refusal for an id this server does not hold.
fn no_such(id: &str) -> String {
    format!(
        "no policy `{}` is held here; `cohort policy list` shows those that are",
        id.chars().take(64).collect::<String>()
    )
}
