//! The fleet harness on a small tier: a change reaches every agent's file, and one seed replays
//! the servers' whole trace and every file byte for byte.

use std::time::Duration;

use cohort_core::policy::document::Scope;
use cohort_core::policy::wire::PolicyAdminReply;

use super::{Fleet, FleetScenario, MASTER};

fn run(seed: u64) -> (Fleet, Option<Duration>) {
    let mut scenario = FleetScenario::new(2, 6, seed);
    scenario.trace_servers = true;
    let mut fleet = Fleet::new(scenario);
    let created = fleet.create(MASTER, Fleet::policy("fw", "firewall.default", "deny", Scope::Global));
    assert_eq!(created.reply(), Some(&PolicyAdminReply::Created), "{created:?}");
    let took = fleet.time_until_all("firewall.default", "deny", Duration::from_secs(300));
    (fleet, took)
}

#[test]
fn a_change_at_the_master_reaches_every_agent_and_one_seed_replays_byte_for_byte() {
    let (first, took) = run(3);
    assert!(took.is_some(), "every agent wrote the policy");
    assert_eq!(first.agents_with("firewall.default", "deny"), 6);
    let (second, again) = run(3);
    assert_eq!(took, again);
    assert!(first.trace().is_some_and(|t| t.lines().len() > 100), "the servers were traced");
    assert_eq!(first.trace(), second.trace(), "one seed, one trace");
    let files = |f: &Fleet| f.files.lock().map(|files| files.clone()).unwrap_or_default();
    assert_eq!(files(&first), files(&second));
}
