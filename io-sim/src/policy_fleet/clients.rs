//! Anyone who talks to a server from outside the tier's own links: an operator with a signed
//! admin request, or an attacker holding some key (a stranger's, a local's, an agent's) who
//! opens a channel to a server, its identity pinned, and sends whatever bytes it likes. Each
//! exchange runs on a turmoil client host of its own and is recorded with when it was asked and
//! answered. It carries bytes and records answers; it never judges one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cohort_core::policy::server::GlobalStatus;
use cohort_core::policy::wire::{PolicyAdminReply, PolicyWire};
use cohort_core::rng::seeded;
use cohort_core::{NodeKeys, PublicIdentity};

use crate::operator;

/// One request on one channel, and what came of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// Simulated time the client started to connect.
    pub asked: Duration,
    /// Simulated time the exchange ended (an answer, a refusal, or patience run out).
    pub ended: Duration,
    /// The first answer, or why there was none (no channel, or nothing said in time).
    pub outcome: Result<PolicyWire, String>,
}

impl Exchange {
    /// The admin reply, if one came.
    pub fn reply(&self) -> Option<&PolicyAdminReply> {
        match &self.outcome {
            Ok(PolicyWire::AdminReply(reply)) => Some(reply),
            _ => None,
        }
    }

    /// The global status, if that was the answer.
    pub fn status(&self) -> Option<&GlobalStatus> {
        match self.reply() {
            Some(PolicyAdminReply::Status(status)) => Some(status),
            _ => None,
        }
    }

    /// The error text of an admin reply that refused.
    pub fn error(&self) -> Option<&str> {
        match self.reply() {
            Some(PolicyAdminReply::Error(e)) => Some(e),
            _ => None,
        }
    }

    /// How long the answer took, when one came.
    pub fn took(&self) -> Option<Duration> {
        self.outcome.is_ok().then(|| self.ended.saturating_sub(self.asked))
    }
}

/// Exchanges by number, filled in by the client hosts as they end.
pub(super) type Exchanges = Arc<Mutex<BTreeMap<u64, Exchange>>>;

/// What one client sends, and to whom.
pub(super) struct Ask {
    pub id: u64,
    pub addr: String,
    pub server: PublicIdentity,
    pub keys: NodeKeys,
    pub message: PolicyWire,
    pub patience: Duration,
    pub seed: u64,
}

/// The client host's task: one channel, one message, the first answer recorded under `id`.
pub(super) async fn run(ask: Ask, exchanges: Exchanges) -> turmoil::Result {
    // The fleet's time, not this client's: a client host's own clock starts when it is added.
    let asked = sim_time();
    let rng = seeded(ask.seed ^ ask.id.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let outcome: Result<PolicyWire, String> =
        operator::ask(&ask.addr, ask.server, &ask.keys, &ask.message, rng, ask.patience).await;
    let exchange = Exchange { asked, ended: sim_time(), outcome };
    exchanges.lock().unwrap_or_else(PoisonError::into_inner).insert(ask.id, exchange);
    Ok(())
}

fn sim_time() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

/// Whether an exchange ended because the server would not open a channel to the key (as
/// opposed to opening one and saying nothing).
pub fn no_channel(exchange: &Exchange) -> bool {
    matches!(&exchange.outcome, Err(e) if e.starts_with("the channel closed"))
}
