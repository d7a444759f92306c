//! Any member serves a version it staged: the author of a change is killed with SIGKILL right
//! after a second member staged it, and a third member that was cut off during the change fetches
//! it from the second. When the author returns, the change installs everywhere.

mod common;

use std::time::Duration;

use common::{TestCluster, accepted_version, active, staged};

#[test]
fn a_member_cut_off_during_a_change_fetches_it_from_another_member_once_the_author_is_gone() {
    let mut cluster = TestCluster::init(3, 200);
    cluster.start_all();
    cluster.wait_for("three members up", Duration::from_secs(20), |c| (0..3).all(|i| c.status(i).is_some()));

    // m2 is cut off (stopped: it neither sends nor reads) while m0 authors a change.
    cluster.pause(2);
    let mut set = vec!["admin".to_owned(), "set".into(), "dns=10.0.0.53".into()];
    set.extend(cluster.operator_args("m0"));
    let version = accepted_version(&common::run(&set));
    cluster.wait_for("m1 stages the change", Duration::from_secs(20), |c| {
        c.status(1).and_then(|s| staged(&s)).as_deref() == Some(version.as_str())
    });
    // The author dies the moment a second member holds the block.
    cluster.kill(0);

    // m2 comes back: the author is gone, so it can only have the block from m1.
    cluster.resume(2);
    cluster.wait_for("m2 stages the change", Duration::from_secs(20), |c| {
        c.status(2).and_then(|s| staged(&s)).as_deref() == Some(version.as_str())
    });
    let log = cluster.log_text(2);
    let line = log
        .lines()
        .find(|l| l.contains("staged (fetched from"))
        .unwrap_or_else(|| panic!("m2 logged no fetch: {log}"));
    assert!(line.contains("fetched from m1"), "m2 staged {version} from someone else: {line}");
    for i in [1, 2] {
        let status = cluster.status(i).expect("answers");
        assert_ne!(active(&status).as_deref(), Some(version.as_str()), "no install while m0 is down");
    }

    // The author returns from its store and the install completes everywhere.
    cluster.start(0);
    cluster.wait_for("the change installed on all three", Duration::from_secs(30), |c| {
        (0..3).all(|i| c.status(i).and_then(|s| active(&s)).as_deref() == Some(version.as_str()))
    });
}
