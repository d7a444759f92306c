//! Member traces as insta snapshots under `snapshots/`: a clean change on 3 members, a change
//! during a partition and its heal, and a rejected forged heartbeat. Each replays identically.

use std::time::Duration;

use cohort_core::NodeKeys;
use cohort_core::member::{Change, MemberMessage, Status};
use cohort_core::rng::seeded;
use cohort_core::signed::Signed;
use cohort_core::trace::Trace;
use cohort_tests::cluster::MemCluster;

const HEARTBEAT: Duration = Duration::from_secs(1);

fn snapshot(name: &str, trace: &Trace) {
    insta::with_settings!({ snapshot_path => "../../snapshots", prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!(name, trace.render());
    });
}

/// Boots the cluster, lets it settle, then starts a fresh trace for the scenario.
fn settled(n: usize, seed: u64) -> MemCluster {
    let mut cluster = MemCluster::new(n, seed);
    cluster.run_for(HEARTBEAT);
    cluster.trace = Trace::new();
    cluster
}

fn clean_change() -> Trace {
    let mut cluster = settled(3, 11);
    cluster.change(1, vec![Change::Set { key: "dns".into(), value: "10.0.0.53".into() }]);
    cluster.run_for(HEARTBEAT * 2);
    assert!(cluster.installed_everywhere(cluster.member(1).active_version()));
    assert_eq!(cluster.member(0).active_version().counter, 2);
    cluster.trace
}

fn partition_and_heal() -> Trace {
    let mut cluster = settled(3, 12);
    cluster.isolate(2);
    cluster.change(0, vec![Change::Set { key: "ntp".into(), value: "pool.example".into() }]);
    cluster.run_for(HEARTBEAT * 2);
    assert_eq!(cluster.member(0).active_version().counter, 1, "held back by the partition");
    cluster.heal();
    cluster.run_for(HEARTBEAT * 3);
    assert!((0..3).all(|i| cluster.member(i).active_version().counter == 2));
    cluster.trace
}

fn forged_heartbeat() -> Trace {
    let mut cluster = settled(3, 13);
    let forger = NodeKeys::generate(&mut seeded(666));
    let status = Status {
        cluster_id: "test-cluster".into(),
        sender: cluster.keys[1].node_id(),
        active: cluster.member(0).active_version(),
        staged: None,
        seq: u64::MAX,
        recipients: cluster.keys.iter().map(|k| k.public().key_digest()).collect(),
    };
    let forged = MemberMessage::Status(Signed::sign(status, &forger).expect("signs"));
    cluster.inject(0, forged.to_wire().expect("encodes"));
    assert_eq!(cluster.drops_of(0, "bad-signature"), 1);
    cluster.trace
}

#[test]
fn clean_change_on_three_members() {
    let trace = clean_change();
    assert_eq!(trace, clean_change(), "same seed, same trace");
    snapshot("member_clean_change_3", &trace);
}

#[test]
fn change_during_a_partition_and_its_heal() {
    let trace = partition_and_heal();
    assert_eq!(trace, partition_and_heal());
    snapshot("member_partition_and_heal", &trace);
}

#[test]
fn rejected_forged_heartbeat() {
    let trace = forged_heartbeat();
    assert_eq!(trace, forged_heartbeat());
    snapshot("member_forged_heartbeat", &trace);
}
