//! The policy tier as an operator runs it: `cohort init --policy-locals 3`, one `cohort node run`
//! per server and one for the agents, then `cohort policy` and `cohort status --global`. Windows
//! are an hour long, so every move here is one the test caused.

mod common;

use std::time::Duration;

use common::{TestCluster, cohort, free_base_port, path_str};

const PROCESSES: [&str; 5] =
    ["policy/master", "policy/local-00", "policy/local-01", "policy/local-02", "policy/agents"];
const MASTER: usize = 0;
const PATIENCE: Duration = Duration::from_secs(30);

struct PolicyTier {
    cluster: TestCluster,
}

impl PolicyTier {
    fn start() -> PolicyTier {
        let policy_port = free_base_port(4).to_string();
        let mut cluster = TestCluster::init_with(
            &[
                "--members",
                "1",
                "--policy-locals",
                "3",
                "--policy-agents",
                "6",
                "--policy-port",
                &policy_port,
                "--policy-sync-s",
                "3600",
                "--policy-poll-s",
                "1",
            ],
            1,
            PROCESSES.iter().map(|p| (*p).to_owned()).collect(),
        );
        cluster.start_all();
        PolicyTier { cluster }
    }

    /// Runs `cohort ARGS… --tier … --key …`.
    fn run(&self, args: &[&str]) -> std::process::Output {
        let root = self.cluster.root();
        let tier = root.join("policy/tier.toml");
        let key = root.join("operator.key");
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--tier", path_str(&tier), "--key", path_str(&key)]);
        cohort(&all)
    }

    fn list(&self, server: &str) -> Option<String> {
        let out = self.run(&["policy", "list", "--server", server]);
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn agents_with(&self, line: &str) -> usize {
        let dir = self.cluster.root().join("policy/agents");
        (0..6)
            .filter(|a| {
                std::fs::read_to_string(dir.join(format!("agent-{a:02}.policy")))
                    .is_ok_and(|t| t.contains(line))
            })
            .count()
    }

    fn historical(&self) -> serde_json::Value {
        let out = self.run(&["status", "--global", "--json"]);
        assert!(out.status.success(), "status: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("json")
    }
}

#[test]
fn a_policy_set_at_a_nested_local_reaches_every_agent_and_the_master_keeps_it_across_a_kill() {
    let mut tier = PolicyTier::start();
    let deny = "firewall.default = \"deny\"";
    // local-02 sits behind local-00: its policy climbs to the master at once.
    let set = |tier: &PolicyTier| {
        tier.run(&["policy", "set", "fw", "firewall.default=deny", "--server", "local-02"])
    };
    tier.cluster.wait_for("local-02 takes the policy", PATIENCE, |_| set(&tier).status.success());
    tier.cluster.wait_for("the master holds fw", PATIENCE, |_| {
        tier.list("master").is_some_and(|l| l.contains("fw v1 by local-02"))
    });
    // local-01 is on another branch and syncs only when asked.
    assert!(!tier.list("local-01").expect("local-01 answers").contains("fw"), "local-01 has not synced");
    let before = tier.agents_with(deny);
    assert!(before < 6, "agents of local-01 cannot have it yet");
    for local in ["local-00", "local-01"] {
        let out = tier.run(&["policy", "sync", "--server", local]);
        assert!(out.status.success(), "sync: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("syncing with its parent now"));
    }
    tier.cluster.wait_for("every agent applies fw", PATIENCE, |_| tier.agents_with(deny) == 6);

    // The master has no parent: asking it to sync is refused, saying what to do instead.
    let out = tier.run(&["policy", "sync", "--server", "master"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ask a local"), "{out:?}");

    let status = tier.historical();
    assert!(status["as_of"]["local-01"].is_u64(), "local-01's sync is in the history: {status}");

    // kill -9 the master and start it again: its policies and history come back from SQLite.
    tier.cluster.kill(MASTER);
    tier.cluster.start(MASTER);
    tier.cluster.wait_for("the restarted master lists fw v1", PATIENCE, |_| {
        tier.list("master").is_some_and(|l| l.contains("fw v1 by local-02"))
    });
    assert!(tier.historical()["as_of"]["local-01"].is_u64(), "history survives the kill");
    let out = tier.run(&["policy", "set", "fw", "firewall.default=allow"]);
    assert!(out.status.success(), "set: {}", String::from_utf8_lossy(&out.stderr));
    tier.cluster.wait_for("the master holds fw v2", PATIENCE, |_| {
        tier.list("master").is_some_and(|l| l.contains("fw v2 by master"))
    });
}
