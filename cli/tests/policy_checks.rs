//! Agents that measure, on real processes: a policy requires `/etc/cohort-test-flag` with mode
//! 0600, a TCP port listening, and a command that exits 0. The agent finds all three failing, the
//! global status shows the failures and the threats (the two high-severity ones) for its
//! platform and names the failing checks; then each is fixed on the machine and the next status
//! shows it passing. Writing under /etc needs root: elsewhere the test says so and stops.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{TestCluster, cohort, free_base_port, path_str};

const FLAG: &str = "/etc/cohort-test-flag";
const PATIENCE: Duration = Duration::from_secs(30);

fn run(cluster: &TestCluster, args: &[&str]) -> std::process::Output {
    let root = cluster.root();
    let (tier, key) = (root.join("policy/tier.toml"), root.join("operator.key"));
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--tier", path_str(&tier), "--key", path_str(&key)]);
    cohort(&all)
}

/// The current global status's one platform (the only agent's), and the whole status.
fn current(cluster: &TestCluster) -> Option<(serde_json::Value, serde_json::Value)> {
    let out = run(cluster, &["status", "--global", "--current", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let platform = status["platforms"].as_object()?.values().next()?.clone();
    Some((platform, status))
}

fn table(cluster: &TestCluster) -> String {
    let out = run(cluster, &["status", "--global", "--current"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes the flag file however the test ends.
struct Flag;

impl Drop for Flag {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(FLAG);
    }
}

#[test]
fn an_agent_measures_a_file_a_port_and_a_command_and_the_global_status_follows_each_fix() {
    if let Err(e) = std::fs::write(FLAG, "cohort test\n") {
        eprintln!("skipped: {FLAG} cannot be written ({e}); this test needs root");
        return;
    }
    let _flag = Flag;
    std::fs::set_permissions(FLAG, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let port = free_base_port(1);
    let scratch = tempfile::tempdir().expect("tempdir");
    let marker = scratch.path().join("ready");
    let policy_port = free_base_port(2).to_string();
    let extra = [
        "--members",
        "1",
        "--policy-locals",
        "1",
        "--policy-agents",
        "1",
        "--policy-port",
        &policy_port,
        "--policy-sync-s",
        "1",
        "--policy-poll-s",
        "1",
    ];
    let processes = ["policy/master", "policy/local-00", "policy/agents"].map(str::to_owned).to_vec();
    let mut cluster = TestCluster::init_with(&extra, 1, processes);
    cluster.start_all();
    let flag_check = format!("check.flag=file {FLAG} mode=0600 owner=root severity=high");
    let port_check = format!("check.port=port {port} listening severity=high");
    let command_check = format!("check.ready=command timeout=5s -- test -e {}", marker.display());
    cluster.wait_for("the master takes the policy", PATIENCE, |c| {
        run(c, &["policy", "set", "guard", &flag_check, &port_check, &command_check]).status.success()
    });

    // Measured failing: three checks and the apply, one passing; two threats (flag and port).
    cluster.wait_for("the failures reach the global status", PATIENCE, |c| {
        current(c).is_some_and(|(p, _)| p["checks"] == 4 && p["passed"] == 1 && p["threats"] == 2)
    });
    let (_, status) = current(&cluster).expect("a status");
    for check in ["flag", "port", "ready"] {
        assert_eq!(status["failing"][check], 1, "{check} fails: {status}");
    }
    let failing = table(&cluster);
    assert!(failing.contains("25% of 4"), "the platform's compliance:\n{failing}");
    assert!(failing.contains("failing checks: flag (1 agent), port (1 agent), ready (1 agent)"), "{failing}");
    // One agent is one agent, not "1 agents".
    assert!(
        failing.starts_with("global status (current): 1 agent reporting, 0 agents not reporting\n"),
        "{failing}"
    );
    eprintln!("{failing}");

    // Fixed one at a time: each shows passing at the next measurement.
    std::fs::set_permissions(FLAG, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    cluster.wait_for("the file passes", PATIENCE, |c| {
        current(c)
            .is_some_and(|(p, s)| p["passed"] == 2 && p["threats"] == 1 && s["failing"].get("flag").is_none())
    });
    let _listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("the port binds");
    cluster.wait_for("the port passes", PATIENCE, |c| {
        current(c).is_some_and(|(p, _)| p["passed"] == 3 && p["threats"] == 0)
    });
    std::fs::write(&marker, "").expect("the marker");
    cluster.wait_for("the command passes", PATIENCE, |c| {
        current(c).is_some_and(|(p, s)| {
            p["passed"] == 4 && p["compliant"] == 1 && s["failing"] == serde_json::json!({})
        })
    });
    let fixed = table(&cluster);
    assert!(fixed.contains("100% of 4") && fixed.contains("failing checks: none"), "{fixed}");
    eprintln!("{fixed}");
}
