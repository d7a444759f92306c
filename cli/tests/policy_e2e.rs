//! The policy tier as an operator runs it: `cohort init --policy-locals 3`, one `cohort node run`
//! per server and one for the agents, then `cohort policy` and `cohort status --global`. Windows
//! are an hour long, so every move here is one the test caused.

mod common;

use std::time::Duration;

use cohort_core::policy::policy_file::PolicyFile;
use common::scrape::{Sample, scrape_samples, value};
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

    /// Agents whose policy file, read as TOML, sets `key` to `value`.
    fn agents_with(&self, key: &str, value: &str) -> usize {
        let dir = self.cluster.root().join("policy/agents");
        (0..6)
            .filter(|a| {
                let text =
                    std::fs::read_to_string(dir.join(format!("agent-{a:02}.policy"))).unwrap_or_default();
                PolicyFile::parse(&text).is_ok_and(|f| f.params.get(key).is_some_and(|v| v == value))
            })
            .count()
    }

    fn json(&self, args: &[&str]) -> Option<serde_json::Value> {
        let out = self.run(args);
        out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
    }

    fn historical(&self) -> serde_json::Value {
        self.historical_with(&[])
    }

    /// The stored status with `extra` arguments: printed whether or not it is PARTIAL, and
    /// exiting non-zero exactly when it is.
    fn historical_with(&self, extra: &[&str]) -> serde_json::Value {
        let mut args = vec!["status", "--global", "--json"];
        args.extend(extra);
        let out = self.run(&args);
        let said = String::from_utf8_lossy(&out.stderr);
        let status: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("status: {e}: {said}"));
        let partial = status["partial"] != false;
        assert_eq!(out.status.success(), !partial, "exits non-zero when PARTIAL: {status} {said}");
        assert_eq!(said.contains("PARTIAL"), partial, "{said}");
        status
    }
}

fn unix_ms_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[test]
fn a_policy_set_at_a_nested_local_reaches_every_agent_and_the_master_keeps_it_across_a_kill() {
    let mut tier = PolicyTier::start();
    let deny = ("firewall.default", "deny");
    // local-02 sits behind local-00: its policy climbs to the master at once.
    let set = |tier: &PolicyTier| {
        tier.run(&["policy", "set", "fw", "firewall.default=deny", "--server", "local-02"])
    };
    // Every local syncs once, when its channel to its parent opens; local-01's must be over
    // before the policy exists, or that first sync already brings it down.
    tier.cluster.wait_for("every local's first sync reaches the master", PATIENCE, |_| {
        tier.json(&["status", "--global", "--json"]).is_some_and(|s| s["as_of"]["local-01"].is_u64())
    });
    tier.cluster.wait_for("local-02 takes the policy", PATIENCE, |_| set(&tier).status.success());
    tier.cluster.wait_for("the master holds fw", PATIENCE, |_| {
        tier.list("master").is_some_and(|l| l.contains("fw v1 by local-02"))
    });
    // The current status asks every local now: within the first of the hour-long windows (each
    // local has synced only once, when its channel to its parent opened) it counts all six
    // agents, is not PARTIAL, and exits 0.
    tier.cluster.wait_for("the current status counts every agent", PATIENCE, |_| {
        tier.json(&["status", "--global", "--current", "--json"])
            .is_some_and(|s| s["agents"] == 6 && s["partial"] == false && s["not_reporting"] == 0)
    });
    // local-01 is on another branch and syncs only when asked.
    assert!(!tier.list("local-01").expect("local-01 answers").contains("fw"), "local-01 has not synced");
    let before = tier.agents_with(deny.0, deny.1);
    assert!(before < 6, "agents of local-01 cannot have it yet");
    for local in ["local-00", "local-01"] {
        let out = tier.run(&["policy", "sync", "--server", local]);
        assert!(out.status.success(), "sync: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("syncing with its parent now"));
    }
    tier.cluster.wait_for("every agent applies fw", PATIENCE, |_| tier.agents_with(deny.0, deny.1) == 6);

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
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("no policy `nosuch` is held here"), "{out:?}");
    assert!(said.contains("`cohort policy list` shows those that are"), "says how to list ids: {out:?}");
    assert!(out.stdout.is_empty(), "nothing on stdout: {out:?}");
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

/// A local killed: the current status still answers by its deadline, PARTIAL and exiting
/// non-zero, names the local and counts every agent below it (as its last sync at the master
/// counted them) as not reporting; the stored status says the same once its last sync falls
/// outside the span asked for. The agents of that local warn that their server does not answer,
/// and say so when it answers again.
#[test]
fn a_killed_local_leaves_its_agents_counted_as_not_reporting_and_they_warn() {
    const LOCAL_01: usize = 2;
    const AGENTS: usize = 4;
    let mut tier = PolicyTier::start_syncing_every("1");
    let mut below = 0;
    tier.cluster.wait_for("every agent reports and every local has synced", PATIENCE, |_| {
        let listing = tier.json(&["policy", "agents", "--server", "local-01", "--json"]).unwrap_or_default();
        below = listing["agents"].as_array().map_or(0, Vec::len) as u64;
        let current = tier.json(&["status", "--global", "--current", "--json"]).unwrap_or_default();
        // The stored status only once the master answers at all (it may still be starting).
        below > 0 && current["agents"] == 6 && tier.historical()["partial"] == false
    });
    tier.cluster.kill(LOCAL_01);
    let killed_at = unix_ms_now();

    let out = tier.run(&["status", "--global", "--current", "--json"]);
    assert!(!out.status.success(), "a PARTIAL status exits non-zero: {out:?}");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the status is still printed");
    assert_eq!(status["missing"], serde_json::json!(["local-01"]), "{status}");
    assert_eq!(status["unanswered"]["local-01"]["agents"], below, "{status}");
    assert!(status["unanswered"]["local-01"]["last_sync_unix_ms"].is_u64(), "{status}");
    assert_eq!(status["agents"], 6 - below, "the others answered now: {status}");
    assert_eq!(status["not_reporting"], below, "{status}");
    let by_platform: u64 = status["not_reporting_platforms"]
        .as_object()
        .expect("by platform")
        .values()
        .filter_map(serde_json::Value::as_u64)
        .sum();
    assert!(by_platform <= below, "{status}");
    let out = tier.run(&["status", "--global", "--current"]);
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(!out.status.success());
    assert!(text.contains("PARTIAL: no answer from local-01"), "{text}");
    let agents = |n: u64| if n == 1 { "1 agent".to_owned() } else { format!("{n} agents") };
    let said = format!("local-01 did not answer: {} not reporting, as its last sync at", agents(below));
    assert!(text.contains(&said), "{said:?} in {text}");
    assert!(text.contains(&format!("{} not reporting\n", agents(below))), "{text}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("PARTIAL"), "{out:?}");

    // The stored status, asked for syncs since the kill: local-01 sent none, and its agents are
    // counted as not reporting rather than dropped.
    let since = killed_at.to_string();
    let mut stored = serde_json::Value::Null;
    tier.cluster.wait_for("local-00 syncs after the kill", PATIENCE, |_| {
        stored = tier.historical_with(&["--since", &since]);
        stored["missing"] == serde_json::json!(["local-01"])
    });
    assert_eq!(stored["unanswered"]["local-01"]["agents"], below, "{stored}");
    assert_eq!(stored["not_reporting"].as_u64().map(|n| n >= below), Some(true), "{stored}");
    // Time flags take a date (and an age, or RFC 3339): no local synced in a span yet to come.
    let future = tier.historical_with(&["--since", "2099-01-01"]);
    assert_eq!(future["missing"], serde_json::json!(["local-00", "local-01"]), "{future}");
    let out = tier.run(&["status", "--global", "--since", "soon"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("`soon` is not a time: give an age (10m, 2h, 1d)"),
        "{out:?}"
    );

    // The agents below it warn, at the default level, once it has left two polls unanswered.
    tier.cluster.wait_for("the agents warn that local-01 does not answer", PATIENCE, |c| {
        c.log_text(AGENTS)
            .lines()
            .any(|l| l.contains("WARN") && l.contains("cannot reach its policy server local-01"))
    });
    let log = tier.cluster.log_text(AGENTS);
    // Said when two polls went unanswered, again at twelve: never at every poll.
    assert!(!log.contains("no answer to its last 3 polls"), "not at every poll:\n{log}");
    // No process of the tier logs a debug-printed option (`peer=Some(…)`), at any level.
    for (i, process) in PROCESSES.iter().enumerate() {
        let log = tier.cluster.log_text(i);
        assert!(!log.contains("Some("), "a debug-printed option in {process}'s log:\n{log}");
    }

    tier.cluster.start(LOCAL_01);
    tier.cluster.wait_for("the agents say local-01 answers again", PATIENCE, |c| {
        c.log_text(AGENTS)
            .lines()
            .any(|l| l.contains("INFO") && l.contains("its policy server local-01 answers again"))
    });
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
    // (An agent slowed by a loaded machine may have been alerted on as silent before the kill:
    // that episode ended when it was heard again, so only alerts after `before` are this one's.)
    let last_before = |alerts: &[serde_json::Value]| alerts.iter().filter_map(|a| a["id"].as_u64()).max();
    let before = last_before(&hooked("silent-agent")).max(last_before(&hooked("high-severity"))).unwrap_or(0);
    let after = |alerts: Vec<serde_json::Value>| -> Vec<serde_json::Value> {
        alerts.into_iter().filter(|a| a["id"].as_u64().is_some_and(|id| id > before)).collect()
    };
    let agents = |alerts: &[serde_json::Value]| -> std::collections::BTreeSet<String> {
        alerts.iter().filter_map(|a| a["about"]["agent"].as_str().map(str::to_owned)).collect()
    };
    tier.cluster.kill(4);
    let killed_ms = unix_ms_now();
    tier.cluster.wait_for("a silent-agent alert for every agent at the hook", PATIENCE, |_| {
        agents(&after(hooked("silent-agent"))).len() == 6
    });
    // Several more syncs. Once every agent's last report has had time to climb the two hops
    // (syncs every second), each agent is silent without a break: nothing is alerted twice.
    std::thread::sleep(Duration::from_secs(5));
    let out = tier.run(&["policy", "alerts", "--json"]);
    assert!(out.status.success(), "alerts: {}", String::from_utf8_lossy(&out.stderr));
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
    let settled_ms = killed_ms + 3_000;
    let mut seen = std::collections::BTreeSet::new();
    for alert in &listed {
        let silent_since_settled =
            alert["kind"] == "silent-agent" && alert["at_unix_ms"].as_u64().is_some_and(|at| at > settled_ms);
        if alert["kind"] == "high-severity" || silent_since_settled {
            let key = (alert["kind"].to_string(), alert["about"].to_string());
            assert!(seen.insert(key), "listed twice: {alert} in {listed:?}");
        }
    }
    let of_kind = |kind: &str| -> Vec<serde_json::Value> {
        listed.iter().filter(|a| a["kind"] == kind).cloned().collect()
    };
    assert_eq!(of_kind("high-severity").len(), 6, "one per agent: {listed:?}");
    assert_eq!(agents(&after(of_kind("silent-agent"))).len(), 6, "{listed:?}");
    // Each alert's hook runs on its own, so they may land in any order.
    let ids = |alerts: Vec<serde_json::Value>| -> std::collections::BTreeSet<u64> {
        alerts.iter().filter_map(|a| a["id"].as_u64()).collect()
    };
    assert_eq!(ids(hooked("high-severity")), ids(of_kind("high-severity")), "the hook ran once per alert");
    assert_eq!(ids(hooked("silent-agent")), ids(of_kind("silent-agent")), "the hook ran once per alert");
    let text = tier.run(&["policy", "alerts"]);
    println!("{}", String::from_utf8_lossy(&text.stdout));
}

#[test]
fn the_master_reports_each_locals_sync_lag_and_the_silent_agents_as_metrics() {
    let port = free_base_port(1);
    let mut tier = PolicyTier::start_with("1", |root| {
        let path = root.join("policy/master/node.toml");
        let mut text = std::fs::read_to_string(&path).expect("the master's node.toml");
        text.push_str(&format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"));
        std::fs::write(&path, text).expect("written");
    });
    let lag = |s: &[Sample], local: &str| value(s, "cohort_policy_sync_lag_seconds", Some(("child", local)));
    let silent = |s: &[Sample]| value(s, "cohort_policy_silent_agents", None);
    // The master's children (local-02 syncs to local-01) sync every second: each has a small
    // lag, and every agent is heard.
    tier.cluster.wait_for("each local's lag, no agent silent", PATIENCE, |_| {
        let now = scrape_samples(port);
        // -1 would say "no sync since the master started": wait for a real one from each.
        ["local-00", "local-01"].iter().all(|l| lag(&now, l).is_some_and(|v| (0.0..5.0).contains(&v)))
            && silent(&now) == Some(0.0)
    });
    // local-00 stops: its lag grows while local-01's stays small. The agents stop: the locals
    // still syncing report them silent.
    tier.cluster.kill(1);
    tier.cluster.kill(4);
    tier.cluster.wait_for("local-00's lag to grow and the agents to go silent", PATIENCE, |_| {
        let now = scrape_samples(port);
        lag(&now, "local-00").is_some_and(|v| v >= 5.0)
            && lag(&now, "local-01").is_some_and(|v| (0.0..5.0).contains(&v))
            && silent(&now).is_some_and(|v| v >= 1.0)
    });
}
