//! Configuration agreement on turmoil's simulated hosts and links: convergence, a partition that
//! holds the install back, recovery from a crash while staging, loss, and a seed sweep with random
//! faults. The invariants are checked while each run goes (cohort_io_sim::observer).

use std::time::Duration;

use cohort_io_sim::config_change::Membership;
use cohort_io_sim::{ConfigChangeReport, ConfigChangeScenario, run_config_change};

fn assert_clean(report: &ConfigChangeReport) {
    assert_eq!(report.violation, None, "seed {}", report.seed);
    assert!(report.all_installed, "seed {} did not converge: {report:?}", report.seed);
}

#[test]
fn five_members_converge_within_three_heartbeats() {
    let report = run_config_change(&ConfigChangeScenario::new(5, 1));
    assert_clean(&report);
    let beats = report.change_to_last_install_heartbeats.expect("measured");
    assert!(beats <= 3.0, "took {beats} heartbeats");
}

#[test]
fn a_partitioned_member_holds_the_install_back_everywhere_until_the_heal() {
    let mut scenario = ConfigChangeScenario::new(5, 2);
    scenario.partition = Some(Duration::from_secs(6));
    scenario.partition_victim = Some(4);
    scenario.author = Some(0);
    let report = run_config_change(&scenario);
    assert_clean(&report);
    // The partition began 100 ms before the change and lasted 6 s: no member may install before.
    let first = report.change_to_first_install_ms.expect("installed");
    assert!(first >= 5_900, "a member installed {first} ms after the change, inside the partition");
}

#[test]
fn a_member_crashed_while_staging_recovers_its_staged_state() {
    let mut scenario = ConfigChangeScenario::new(5, 3);
    // Member 4 is cut off so nobody can install; member 1 stages, then crashes and restarts.
    scenario.partition = Some(Duration::from_secs(5));
    scenario.partition_victim = Some(4);
    scenario.author = Some(0);
    scenario.planned_crashes = vec![(1, Duration::from_secs(2), Duration::from_secs(1))];
    let report = run_config_change(&scenario);
    assert_clean(&report);
    let recovery = report.recoveries.iter().find(|r| r.member == "m1").expect("m1 restarted");
    assert_eq!(recovery.staged, report.version, "m1 came back with the change staged: {recovery:?}");
}

#[test]
fn twenty_percent_loss_still_converges() {
    for seed in 1..=5 {
        let mut scenario = ConfigChangeScenario::new(5, seed);
        scenario.loss = 0.2;
        assert_clean(&run_config_change(&scenario));
    }
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let mut scenario = ConfigChangeScenario::new(5, 4);
    scenario.loss = 0.1;
    scenario.crashes = 1;
    scenario.partition = Some(Duration::from_millis(1500));
    let a = serde_json::to_string(&run_config_change(&scenario)).expect("json");
    let b = serde_json::to_string(&run_config_change(&scenario)).expect("json");
    assert_eq!(a, b);
}

/// 200 seeds, each with 3-7 members, loss of 0-25%, a partition of up to 4 s and 0-2 crashes; in a
/// quarter of them the change also adds a node that joined from an anchor, in another quarter it
/// removes a member. The invariants include that no member stages (and so may serve) or installs
/// a version whose header it has not verified.
/// The test's name carries the count so CI's test list shows it; run with `--nocapture` to see
/// the summary line.
#[test]
fn seed_sweep_200_seeds_with_random_loss_partitions_crashes_joins_and_removals() {
    let seeds: u64 = 200;
    let mut ran = 0;
    let mut slowest = (0, 0);
    for seed in 1..=seeds {
        let mut scenario = ConfigChangeScenario::new(3 + (seed % 5) as usize, seed);
        scenario.loss = (seed % 6) as f64 * 0.05;
        scenario.partition = (seed % 3 != 0).then(|| Duration::from_millis(seed * 37 % 4000));
        scenario.crashes = (seed % 3) as usize;
        scenario.membership = match seed % 4 {
            1 => Membership::Join,
            3 => Membership::Remove,
            _ => Membership::Unchanged,
        };
        let report = run_config_change(&scenario);
        assert!(
            report.violation.is_none(),
            "invariant violated: {} (replay: cohort sim config-change --nodes {} --seed {seed} --loss {} {} --crash {} --membership {})",
            report.violation.as_deref().unwrap_or_default(),
            scenario.nodes,
            scenario.loss,
            scenario.partition.map(|p| format!("--partition-ms {}", p.as_millis())).unwrap_or_default(),
            scenario.crashes,
            format!("{:?}", scenario.membership).to_lowercase(),
        );
        assert!(report.all_installed, "seed {seed} did not converge: {report:?}");
        let took = report.change_to_last_install_ms.unwrap_or_default();
        if took > slowest.1 {
            slowest = (seed, took);
        }
        ran += 1;
    }
    println!(
        "seed sweep: {ran} seeds ran, no invariant violated; slowest seed {} took {} ms",
        slowest.0, slowest.1
    );
    assert_eq!(ran, seeds);
}
