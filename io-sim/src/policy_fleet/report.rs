//! What `cohort sim policy` reports, and the run that measures it: the stream bytes reaching the
//! master per sync cycle through the tier against what the same agents sent in the same cycles
//! (what a master they polled directly would take in), and the time a change made at the master
//! takes to be written by every agent. It measures only.

use std::time::Duration;

use cohort_core::policy::document::Scope;
use serde::Serialize;

use super::{Fleet, FleetScenario, MASTER};

/// What `cohort sim policy` reports.
#[derive(Debug, Clone, Serialize)]
pub struct FleetReport {
    pub seed: u64,
    pub locals: usize,
    pub agents: usize,
    pub sync_window_s: u64,
    pub poll_interval_s: u64,
    pub cycles_measured: u64,
    pub master_bytes_per_cycle: f64,
    pub direct_baseline_bytes_per_cycle: f64,
    pub reduction: f64,
    pub policy_change_to_every_agent_ms: Option<u64>,
    pub agents_applied: usize,
}

/// Sync cycles the traffic is measured over.
const CYCLES: u32 = 4;

/// Warms the fleet up, measures bytes at the master against the direct baseline over several
/// sync cycles, then times a policy change made at the master until every agent has written it.
pub fn run_fleet(scenario: FleetScenario) -> FleetReport {
    let mut fleet = Fleet::new(scenario.clone());
    fleet.create(MASTER, Fleet::policy("baseline", "antimalware.enabled", "true", Scope::Global));
    // Warm up: every local has synced and every agent has polled at least once.
    fleet.run_for(scenario.sync_window * 2 + scenario.sync_jitter);
    let start = fleet.elapsed();
    fleet.run_for(scenario.sync_window * CYCLES);
    let span = start..fleet.elapsed();
    let master = fleet.bytes_into_master(span.clone()) as f64 / f64::from(CYCLES);
    let baseline = fleet.bytes_sent_by_agents(span) as f64 / f64::from(CYCLES);

    let (key, value) = ("scan.interval_hours", "6");
    fleet.create(MASTER, Fleet::policy("scan", key, value, Scope::Global));
    let waited_from = fleet.elapsed();
    let reached = fleet.time_until_all(key, value, scenario.sync_window * 6);
    // From the moment the master held the change, as its probe saw it.
    let held = fleet.server(MASTER).held_since.iter().find(|((id, _), _)| id == "scan").map(|(_, at)| *at);
    let took = reached.zip(held).map(|(r, held)| (waited_from + r).saturating_sub(held));
    FleetReport {
        seed: scenario.seed,
        locals: scenario.locals,
        agents: scenario.agents,
        sync_window_s: scenario.sync_window.as_secs(),
        poll_interval_s: scenario.poll_interval.as_secs(),
        cycles_measured: u64::from(CYCLES),
        master_bytes_per_cycle: master,
        direct_baseline_bytes_per_cycle: baseline,
        reduction: if master > 0.0 { baseline / master } else { 0.0 },
        policy_change_to_every_agent_ms: took.map(millis),
        agents_applied: fleet.agents_with(key, value),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
