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
        PolicyTier::start_syncing_every("3600")
    }

    fn start_syncing_every(seconds: &str) -> PolicyTier {
        PolicyTier::start_with(seconds, |_| {})
    }

    /// Writes the tier, lets `edit` change its files, then starts every process.
    fn start_with(seconds: &str, edit: impl FnOnce(&std::path::Path)) -> PolicyTier {
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
                seconds,
                "--policy-poll-s",
                "1",
            ],
            1,
            PROCESSES.iter().map(|p| (*p).to_owned()).collect(),
        );
        edit(&cluster.root());
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

    fn json(&self, args: &[&str]) -> Option<serde_json::Value> {
        let out = self.run(args);
        out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
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

    // Retired: a new version that applies to no one; `show` says so, and an unknown id is an error.
    let out = tier.run(&["policy", "retire", "fw"]);
    assert!(out.status.success(), "retire: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("retired as v3"), "{out:?}");
    let out = tier.run(&["policy", "show", "fw"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("fw v3 by master (global, retired)"), "{out:?}");
    let out = tier.run(&["policy", "show", "nosuch"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no policy `nosuch` is held here"), "{out:?}");
    let out = tier.run(&["policy", "retire", "fw"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("retired already"), "{out:?}");
}

#[test]
fn an_agent_behind_a_nested_local_is_shown_through_the_tier_and_the_history_plots_every_local() {
    let tier = PolicyTier::start_syncing_every("1");
    let set = |tier: &PolicyTier| {
        tier.run(&[
            "policy",
            "set",
            "base",
            "antimalware.enabled=true",
            "check.true=command timeout=5s -- true",
        ])
    };
    tier.cluster.wait_for("the master takes the policy", PATIENCE, |_| set(&tier).status.success());
    // Every agent has measured the policy's check, as the tier answers now.
    let mut listing = serde_json::Value::Null;
    tier.cluster.wait_for("six agents measured", PATIENCE, |_| {
        listing = tier.json(&["policy", "agents", "--json"]).unwrap_or_default();
        listing["agents"]
            .as_array()
            .is_some_and(|a| a.len() == 6 && a.iter().all(|agent| agent["checks_total"].as_u64() == Some(2)))
    });
    let agents = listing["agents"].as_array().expect("agents");
    let nested: Vec<&str> =
        agents.iter().filter(|a| a["server"] == "local-02").filter_map(|a| a["agent"].as_str()).collect();
    assert!(!nested.is_empty(), "local-02 (behind local-00) serves agents: {listing}");

    // One agent two tiers down, asked through the master: every check, within the deadline.
    let out = tier.run(&["policy", "agent", nested[0]]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "policy agent: {}", String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    assert!(text.starts_with(&format!("{} at local-02", nested[0])), "{text}");
    assert!(text.contains("pass  true"), "the command check is shown: {text}");
    assert!(text.contains("pass  policy.applied"), "the apply is shown: {text}");
    // Only local-02's agents, and none failing.
    let only = tier.json(&["policy", "agents", "--server", "local-02", "--json"]).expect("listing");
    let servers: Vec<&str> =
        only["agents"].as_array().expect("agents").iter().filter_map(|a| a["server"].as_str()).collect();
    assert_eq!(servers, vec!["local-02"; nested.len()]);
    let out = tier.run(&["policy", "agents", "--failing"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "no agents with a failing check\n");
    let out = tier.run(&["policy", "agent", "no-such-agent"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no server of the tier has a report"), "{out:?}");

    // At least five syncs at the master, then the history as tables and as a chart.
    tier.cluster.wait_for("five syncs stored at the master", PATIENCE, |_| {
        tier.json(&["status", "--global", "--history", "--json"])
            .and_then(|h| h.as_array().map(Vec::len))
            .is_some_and(|n| n >= 5)
    });
    let svg = tier.cluster.root().join("history.svg");
    let out = tier.run(&["status", "--global", "--history", "--plot", path_str(&svg)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "history: {}", String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    assert!(text.contains("by local server") && text.contains("by platform"), "{text}");
    let chart = std::fs::read_to_string(&svg).expect("the chart was written");
    let doc = roxmltree::Document::parse(&chart).expect("the chart parses as XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts: Vec<&str> = doc.descendants().filter_map(|n| n.text()).map(str::trim).collect();
    for local in ["local-00", "local-01", "local-02"] {
        assert!(texts.contains(&local), "the chart names {local}: {texts:?}");
    }
}

/// Adds `hook` to the master's `[policy_server.alerts]` (which `cohort init` writes).
fn set_alert_hook(root: &std::path::Path, hook: &[String]) {
    let path = root.join("policy/master/node.toml");
    let mut config: toml::Table =
        toml::from_str(&std::fs::read_to_string(&path).expect("node.toml")).expect("toml");
    let alerts =
        config["policy_server"]["alerts"].as_table().cloned().expect("init writes the master's alerts");
    let mut alerts = alerts;
    alerts.insert(
        "hook".into(),
        toml::Value::Array(hook.iter().map(|a| toml::Value::String(a.clone())).collect()),
    );
    config
        .get_mut("policy_server")
        .and_then(toml::Value::as_table_mut)
        .expect("policy_server")
        .insert("alerts".into(), toml::Value::Table(alerts));
    std::fs::write(&path, toml::to_string(&config).expect("toml")).expect("write node.toml");
}

#[test]
fn alerts_fire_once_for_a_high_severity_failure_and_for_silent_agents_and_reach_the_hook() {
    let dir = tempfile::tempdir().expect("tempdir");
    let received = dir.path().join("alerts.jsonl");
    let hook = vec!["/bin/sh".to_owned(), "-c".to_owned(), format!("cat >> {}", received.display())];
    let mut tier = PolicyTier::start_with("1", |root| set_alert_hook(root, &hook));
    let set = |tier: &PolicyTier| {
        tier.run(&[
            "policy",
            "set",
            "base",
            "check.flag=file /nonexistent/cohort-alert-flag present severity=high",
        ])
    };
    tier.cluster.wait_for("the master takes the policy", PATIENCE, |_| set(&tier).status.success());
    let hooked = |kind: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(&received)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("the hook got valid JSON"))
            .filter(|a| a["kind"] == kind)
            .collect()
    };
    tier.cluster.wait_for("a high-severity alert per agent at the hook", PATIENCE, |_| {
        hooked("high-severity").len() == 6
    });
    let first = &hooked("high-severity")[0];
    assert_eq!(first["about"]["check"], "flag", "{first}");
    assert!(first["about"]["agent"].as_str().is_some_and(|a| a.starts_with("agent-")), "{first}");

    // The agents go away: after three of their polls without a word, each is alerted on once.
    // (An agent slow to start may have been alerted on as silent before it first polled: that
    // episode ended when it was heard, so only alerts after the kill are this episode's.)
    let last_before = |alerts: &[serde_json::Value]| alerts.iter().filter_map(|a| a["id"].as_u64()).max();
    let before = last_before(&hooked("silent-agent")).max(last_before(&hooked("high-severity"))).unwrap_or(0);
    let after = |alerts: Vec<serde_json::Value>| -> Vec<serde_json::Value> {
        alerts.into_iter().filter(|a| a["id"].as_u64().is_some_and(|id| id > before)).collect()
    };
    tier.cluster.kill(4);
    tier.cluster.wait_for("a silent-agent alert per agent at the hook", PATIENCE, |_| {
        after(hooked("silent-agent")).len() >= 6
    });
    // Several more syncs: nothing is alerted twice.
    std::thread::sleep(Duration::from_secs(5));
    let out = tier.run(&["policy", "alerts", "--json"]);
    assert!(out.status.success(), "alerts: {}", String::from_utf8_lossy(&out.stderr));
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
    let episode: Vec<serde_json::Value> = listed
        .iter()
        .filter(|a| a["kind"] == "high-severity" || a["id"].as_u64().is_some_and(|id| id > before))
        .cloned()
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    for alert in &episode {
        let key = (alert["kind"].to_string(), alert["about"].to_string());
        assert!(seen.insert(key), "listed twice: {alert} in {listed:?}");
    }
    let count = |kind: &str| episode.iter().filter(|a| a["kind"] == kind).count();
    assert_eq!((count("high-severity"), count("silent-agent")), (6, 6), "{listed:?}");
    assert_eq!(
        (hooked("high-severity").len(), after(hooked("silent-agent")).len()),
        (6, 6),
        "the hook ran once per alert"
    );
    let text = tier.run(&["policy", "alerts"]);
    println!("{}", String::from_utf8_lossy(&text.stdout));
}
