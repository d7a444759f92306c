//! Real `cohort node run` processes on loopback: a change through `cohort admin` installs on every
//! member and is read back through each member's local lookup socket; a member killed with SIGKILL while a change is staged comes back with it from SQLite.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{TestCluster, active, cohort, staged};

fn settings_of(cluster: &TestCluster, i: usize) -> String {
    let out = cohort(&["get", "--config", cluster.config(i).to_str().expect("utf-8")]);
    assert!(out.status.success(), "get failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_change_through_admin_installs_on_every_member() {
    let mut cluster = TestCluster::init(3, 200);
    cluster.start_all();
    cluster.wait_for("all members up", Duration::from_secs(20), |c| (0..3).all(|i| c.status(i).is_some()));

    let mut args = vec!["admin".to_owned(), "set".into(), "dns=10.0.0.53".into()];
    args.extend(cluster.operator_args("m1"));
    args.push("--wait".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = cohort(&args);
    assert!(out.status.success(), "admin set failed: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("installed on every member"), "{stdout}");

    let versions: Vec<String> =
        (0..3).map(|i| active(&cluster.status(i).expect("answers")).expect("active")).collect();
    assert!(versions.iter().all(|v| v == &versions[0] && v.starts_with("2@")), "{versions:?}");
    for i in 0..3 {
        assert_eq!(settings_of(&cluster, i), "dns=10.0.0.53\n");
        let status = cluster.status(i).expect("answers");
        assert_eq!(status["state"], "serving");
        let heard: Vec<&serde_json::Value> =
            status["members"].as_array().expect("members").iter().filter(|m| m["self"] == false).collect();
        assert_eq!(heard.len(), 2);
        assert!(heard.iter().all(|m| m["last_heard_ms"].as_u64().is_some()));
    }
    // The same configuration from each member's local lookup service, with no key at all.
    for (i, version) in versions.iter().enumerate() {
        let socket = cluster.config(i).with_file_name("lookup.sock");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&socket).expect("socket").permissions(),
        );
        assert_eq!(mode & 0o777, 0o660, "only the owner and the group may ask");
        let out = cohort(&["get", "dns", "--socket", socket.to_str().expect("utf-8")]);
        assert!(out.status.success(), "get --socket failed: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "10.0.0.53\n");
        assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("(dns from {version})")));
        let out = cohort(&["get", "nosuch", "--socket", socket.to_str().expect("utf-8")]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("`nosuch` is not set in 2@"));
    }
}

#[test]
fn a_member_killed_while_staged_recovers_from_sqlite_and_the_cluster_installs() {
    let mut cluster = TestCluster::init(3, 200);
    cluster.start_all();
    cluster.wait_for("all members up", Duration::from_secs(20), |c| (0..3).all(|i| c.status(i).is_some()));

    // m2 down: nobody can install, so m1 keeps the change staged.
    cluster.kill(2);
    let mut args = vec!["admin".to_owned(), "set".into(), "ntp=pool.example".into()];
    args.extend(cluster.operator_args("m0"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = cohort(&args);
    assert!(out.status.success(), "admin set failed: {}", String::from_utf8_lossy(&out.stderr));
    cluster
        .wait_for("m1 staged", Duration::from_secs(10), |c| c.status(1).and_then(|s| staged(&s)).is_some());
    let version = staged(&cluster.status(1).expect("answers")).expect("staged");

    cluster.kill(1);
    cluster.start(1);
    cluster.wait_for("m1 back", Duration::from_secs(10), |c| c.status(1).is_some());
    let back = cluster.status(1).expect("answers");
    assert!(
        staged(&back).as_deref() == Some(version.as_str())
            || active(&back).as_deref() == Some(version.as_str()),
        "m1 lost the staged change: {back}"
    );

    cluster.start(2);
    cluster.wait_for("the change installed everywhere", Duration::from_secs(20), |c| {
        (0..3).all(|i| c.status(i).and_then(|s| active(&s)).as_deref() == Some(version.as_str()))
    });
    // One version, one configuration: every member holds the same settings under it.
    let settings: BTreeMap<usize, String> = (0..3).map(|i| (i, settings_of(&cluster, i))).collect();
    assert!(settings.values().all(|s| s == "ntp=pool.example\n"), "{settings:?}");
}

/// logrotate and `systemctl reload` send SIGHUP: the node logs it and goes on serving.
#[test]
fn a_node_outlives_sighup_and_says_so() {
    let mut cluster = TestCluster::init(1, 200);
    cluster.start_all();
    cluster.wait_for("the member answers", Duration::from_secs(30), |c| c.status(0).is_some());
    cluster.signal(0, nix::sys::signal::Signal::SIGHUP);
    cluster.wait_for("the SIGHUP is logged", Duration::from_secs(10), |c| {
        c.log_text(0).contains("SIGHUP received")
    });
    let child = cluster.members[0].as_mut().expect("the member runs");
    assert!(child.try_wait().expect("waits").is_none(), "SIGHUP stopped the node");
    assert!(cluster.status(0).is_some(), "the node still answers after SIGHUP");
}
