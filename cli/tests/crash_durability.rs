//! Crash durability with real processes: fifty seeded kill -9s. Each seed picks a node of a
//! four-member cluster (m0 the gateway with the audit collector, m1 the KDC, m2, and the exec
//! member hosting two managed hosts) and a moment; configuration changes and commands on both
//! hosts run one after another, before, across and after the moment the node is killed with
//! SIGKILL; then it is started again.
//! Once the cluster has settled, it checks what was acknowledged before the kill:
//!
//! - every change the operator was told was accepted is in every member's configuration (no
//!   acknowledged change lost, none half-installed: all members on one version, none staged);
//! - one version never names two configurations, across all seeds;
//! - every command the client saw run has its host's `run` record in the collector's trail,
//!   and the trail verifies from its first entry.
//!
//! The policy tier's own fifty seeds kill its master or its local while operators set policies
//! at either and the local syncs every second: a policy a server answered as stored is listed
//! there after the restart, and reaches the other once they have synced.
//!
//! A seed's failure names the seed, the node and the moment, so it can be run again alone
//! (`COHORT_CRASH_SEEDS=FROM..TO`).

mod common;

use std::collections::BTreeMap;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{TestCluster, active, cohort, exec, path_str, staged};

/// The nodes a seed may kill, by their index in the cluster.
const NODES: [&str; 4] = ["m0 (gateway, collector)", "m1 (KDC)", "m2", "exec (two hosts)"];

/// splitmix64: the seed's choices, the same on every machine.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The seeds to run: `COHORT_CRASH_SEEDS=FROM..TO` (end exclusive), or 0..50.
fn seeds() -> std::ops::Range<u64> {
    let chosen = std::env::var("COHORT_CRASH_SEEDS").ok().and_then(|s| {
        let (from, to) = s.split_once("..")?;
        Some(from.trim().parse().ok()?..to.trim().parse().ok()?)
    });
    chosen.unwrap_or(0..50)
}

/// Every setting member `i` holds, as `key=value` lines.
fn settings_of(cluster: &TestCluster, i: usize) -> Option<String> {
    let out = cohort(&["get", "--config", path_str(&cluster.config(i))]);
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether every member answers, all on one active version with nothing staged.
fn settled(cluster: &TestCluster) -> Option<String> {
    let statuses: Vec<serde_json::Value> = (0..4).map(|i| cluster.status(i)).collect::<Option<_>>()?;
    let version = active(&statuses[0])?;
    let one = statuses.iter().all(|s| active(s).as_deref() == Some(&version) && staged(s).is_none());
    one.then_some(version)
}

/// Waits for the cluster to settle; if it does not within 60 s, fails with what each member
/// says of itself and the end of its log.
fn settle(cluster: &TestCluster, what: &str) {
    let started = std::time::Instant::now();
    while settled(cluster).is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            let views: Vec<String> = (0..4)
                .map(|i| {
                    let status = cluster.status(i).map_or("no answer".to_owned(), |s| {
                        format!("active {:?}, staged {:?}, state {}", active(&s), staged(&s), s["state"])
                    });
                    let log = cluster.log_text(i);
                    let tail: Vec<&str> = log.lines().rev().take(15).collect();
                    format!(
                        "{}: {status}\n{}",
                        cluster.names[i],
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    )
                })
                .collect();
            panic!("{what}: the cluster did not settle in 60 s:\n{}", views.join("\n\n"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The collector's trail as JSON records.
fn trail(cluster: &TestCluster) -> Vec<serde_json::Value> {
    let out = cohort(&["audit", "export", "--config", path_str(&cluster.config(0)), "--json"]);
    assert!(out.status.success(), "audit export: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// What a stream of attempts came to: the numbers that succeeded, and how many were tried.
type Streamed = (Vec<u32>, usize);

/// Calls `attempt` with 0, 1, 2, … on a thread of its own until `stop` is set. A failure (the
/// node it needs is down) waits a little before the next.
fn stream(
    stop: &Arc<AtomicBool>,
    mut attempt: impl FnMut(u32) -> Output + Send + 'static,
) -> std::thread::JoinHandle<Streamed> {
    let stop = stop.clone();
    std::thread::spawn(move || {
        let mut acked = Vec::new();
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            if attempt(n).status.success() {
                acked.push(n);
            } else {
                std::thread::sleep(Duration::from_millis(50));
            }
            n += 1;
        }
        (acked, usize::try_from(n).unwrap_or(usize::MAX))
    })
}

/// Kills node `victim` with SIGKILL `delay` into `streams`, lets them go on 300 ms past the
/// kill, then stops them and gives what each came to, in order.
fn kill_amid(
    cluster: &mut TestCluster,
    victim: usize,
    delay: Duration,
    stop: &AtomicBool,
    streams: Vec<std::thread::JoinHandle<Streamed>>,
) -> Vec<Streamed> {
    std::thread::sleep(delay);
    cluster.kill(victim);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    streams.into_iter().map(|s| s.join().expect("a stream's thread")).collect()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn fifty_seeded_kill_9s_lose_nothing_acknowledged() {
    let mut cluster = TestCluster::init_exec(3, 2);
    cluster.start_all();
    cluster.wait_for("the cluster to settle", Duration::from_secs(30), |c| settled(c).is_some());
    let state = cluster.dir.path().join("client");
    cluster.login(&state);

    // What the operator and the client were told succeeded: the settings and the run tags.
    let mut changes: Vec<String> = Vec::new();
    let mut runs: Vec<String> = Vec::new();
    let mut attempts = (0usize, 0usize);
    let mut configurations: BTreeMap<String, String> = BTreeMap::new();
    let mut killed = [0u32; 4];
    let range = seeds();
    for seed in range.clone() {
        let victim = usize::try_from(mix(seed) % 4).expect("small");
        let delay = Duration::from_millis(mix(seed ^ 0xdead_beef) % 700);
        let what = format!("seed {seed}: kill -9 of {} after {delay:?}", NODES[victim]);
        // The operator asks a member that is not the victim (the victim may still be its peer),
        // and the client runs commands, one after another, before, across and after the kill.
        let via = cluster.names[(victim + 1) % 3].clone();
        let operator = cluster.operator_args(&via);
        let stop = Arc::new(AtomicBool::new(false));
        let changing = stream(&stop, move |n| {
            let mut change = vec!["admin".to_owned(), "set".into(), format!("crash{seed}.{n}=v")];
            change.extend(operator.iter().cloned());
            cohort(&change.iter().map(String::as_str).collect::<Vec<_>>())
        });
        let client = state.clone();
        let running = stream(&stop, move |n| {
            exec(&client, &["-w", "h[01-02]", "-t", "5", "--", "/bin/echo", &format!("crash-{seed}.{n}")])
        });
        let streamed = kill_amid(&mut cluster, victim, delay, &stop, vec![changing, running]);
        killed[victim] += 1;
        let [(changed, tried_changes), (ran, tried_runs)] = <[Streamed; 2]>::try_from(streamed).expect("two");
        changes.extend(changed.into_iter().map(|n| format!("crash{seed}.{n}=v")));
        runs.extend(ran.into_iter().map(|n| format!("crash-{seed}.{n}")));
        attempts.0 += tried_changes;
        attempts.1 += tried_runs;
        cluster.start(victim);
        settle(&cluster, &what);

        // Every acknowledged change, on every member, under one version.
        let version = settled(&cluster).expect("settled");
        let held: Vec<String> = (0..4).map(|i| settings_of(&cluster, i).expect("answers")).collect();
        assert!(held.iter().all(|h| h == &held[0]), "{what}: members differ under {version}: {held:#?}");
        for line in &changes {
            assert!(held[0].lines().any(|l| l == line), "{what}: the acknowledged change `{line}` is lost");
        }
        let first = configurations.entry(version.clone()).or_insert_with(|| held[0].clone());
        assert_eq!(first, &held[0], "{what}: version {version} names two configurations");

        // Every command the client saw run, in the trail; the trail whole.
        let records = trail(&cluster);
        for tag in &runs {
            for host in ["h01", "h02"] {
                let found = records.iter().any(|r| {
                    r["host"] == host
                        && r["decision"] == "run"
                        && r["argv"].as_array().is_some_and(|a| a.iter().any(|w| w == tag.as_str()))
                });
                assert!(found, "{what}: the run record of `{tag}` on {host} is lost");
            }
        }
        let verify = cohort(&["audit", "verify", "--config", path_str(&cluster.config(0))]);
        assert!(verify.status.success(), "{what}: the trail does not verify: {}", text(&verify));
    }

    let seeds = range.end - range.start;
    println!("| node killed | times |\n|---|---:|");
    for (node, n) in NODES.iter().zip(killed) {
        println!("| {node} | {n} |");
    }
    println!(
        "{seeds} of {seeds} seeds: nothing lost ({} of {} changes acknowledged, {} of {} runs acknowledged, {} versions)",
        changes.len(),
        attempts.0,
        runs.len(),
        attempts.1,
        configurations.len()
    );
}

/// The policy tier's processes, by index; the first two are the ones a seed kills.
const TIER: [&str; 3] = ["policy/master", "policy/local-00", "policy/agents"];

/// `cohort policy ARGS… --tier … --key …`.
fn policy(root: &std::path::Path, args: &[&str]) -> Output {
    let tier = root.join("policy/tier.toml");
    let key = root.join("operator.key");
    let mut all = vec!["policy"];
    all.extend(args);
    all.extend(["--tier", path_str(&tier), "--key", path_str(&key)]);
    cohort(&all)
}

/// What `server` lists, if it answers.
fn listed(root: &std::path::Path, server: &str) -> Option<String> {
    let out = policy(root, &["list", "--server", server]);
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn fifty_seeded_kill_9s_of_policy_servers_lose_no_stored_policy() {
    let port = common::free_base_port(2).to_string();
    let args = [
        "--members",
        "1",
        "--policy-locals",
        "1",
        "--policy-agents",
        "2",
        "--policy-port",
        &port,
        "--policy-sync-s",
        "1",
        "--policy-poll-s",
        "1",
    ];
    let mut tier = TestCluster::init_with(&args, 1, TIER.iter().map(|p| (*p).to_owned()).collect());
    tier.start_all();
    let root = tier.root();
    tier.wait_for("both servers answer", Duration::from_secs(30), |_| {
        listed(&root, "master").is_some() && listed(&root, "local-00").is_some()
    });

    // Each policy a server answered as stored, with the server that stored it.
    let mut stored: Vec<(String, &str)> = Vec::new();
    let mut tried = 0usize;
    let mut killed = [0u32; 2];
    let range = seeds();
    for seed in range.clone() {
        let victim = usize::try_from(mix(seed ^ 0x5eed) % 2).expect("small");
        let delay = Duration::from_millis(mix(seed ^ 0xfeed) % 700);
        let what = format!("seed {seed}: kill -9 of {} after {delay:?}", TIER[victim]);
        let stop = Arc::new(AtomicBool::new(false));
        let server = |n: u32| if n % 2 == 0 { "master" } else { "local-00" };
        let at = root.clone();
        let setting = stream(&stop, move |n| {
            policy(
                &at,
                &["set", &format!("p{seed}-{n}"), &format!("crash.seed=s{seed}"), "--server", server(n)],
            )
        });
        let streamed = kill_amid(&mut tier, victim, delay, &stop, vec![setting]);
        killed[victim] += 1;
        for (acked, n) in streamed {
            stored.extend(acked.into_iter().map(|n| (format!("p{seed}-{n}"), server(n))));
            tried += n;
        }
        tier.start(victim);

        // What each server stored, it holds; and once they have synced, the other holds it too.
        tier.wait_for(
            &format!("{what}: every stored policy on both servers"),
            Duration::from_secs(30),
            |_| {
                let (Some(master), Some(local)) = (listed(&root, "master"), listed(&root, "local-00")) else {
                    return false;
                };
                let holds = |list: &str, id: &str| list.lines().any(|l| l.starts_with(&format!("{id} v")));
                stored.iter().all(|(id, _)| holds(&master, id) && holds(&local, id))
            },
        );
    }
    let seeds = range.end - range.start;
    println!("| policy server killed | times |\n|---|---:|");
    for (node, n) in TIER.iter().zip(killed) {
        println!("| {node} | {n} |");
    }
    println!(
        "{seeds} of {seeds} seeds: no stored policy lost ({} of {tried} sets acknowledged)",
        stored.len()
    );
}
