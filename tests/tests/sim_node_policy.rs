//! The security-policy tier on the one turmoil host driver that runs the core node: a master, a
//! local under it and a local under that one, and agents on both locals. An operator's change at
//! the master reaches every agent's file through both tiers; the whole run is a trace snapshot and
//! replays byte for byte from its seed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cohort_core::node::{ConnLimits, NodeSetup, PolicyAgentRole, PolicyServerRole};
use cohort_core::policy::document::{Platform, Policy, PolicyTarget, Scope};
use cohort_core::policy::policy_file::PolicyFile;
use cohort_core::policy::server::{PolicyMessage, ServerSetup, SyncRequest};
use cohort_core::policy::wire::{PolicyAdmin, PolicyAdminReply, PolicyAdminRequest, PolicyWire};
use cohort_core::rng::seeded;
use cohort_core::signed::Signed;
use cohort_core::trace::Trace;
use cohort_core::{NodeKeys, PublicIdentity};
use cohort_io_sim::clock::now;
use cohort_io_sim::node_host::{self, NodeHostContext, SetupFn, SharedFiles, SharedTrace};
use cohort_io_sim::operator;
use cohort_io_sim::storage::SimDisk;
use rand_core::RngCore;

const PORT: u16 = 7400;
const SERVERS: [(&str, Option<&str>); 3] =
    [("master", None), ("local-a", Some("master")), ("local-b", Some("local-a"))];
const AGENTS: [(&str, &str); 2] = [("agent-a", "local-a"), ("agent-b", "local-b")];

fn file(agent: &str) -> String {
    format!("/etc/cohort/{agent}.policy")
}

/// A link cut for a while: (one end, the other, from, for how long).
type Cut = (&'static str, &'static str, Duration, Duration);

/// The cut seed `seed` makes: a local cut off from its parent at a seeded time for a seeded span.
fn cut_for(seed: u64) -> Cut {
    let mut rng = seeded(seed ^ 0xc0ffee);
    let (a, b) = if rng.next_u32() % 2 == 0 { ("local-a", "master") } else { ("local-b", "local-a") };
    let from = Duration::from_millis(1_000 + u64::from(rng.next_u32() % 5_000));
    let span = Duration::from_millis(u64::from(rng.next_u32() % 10_000));
    (a, b, from, span)
}

/// Runs the tier until both agents' files set `firewall.default` to `deny` (or 60 simulated seconds),
/// with `cut` applied on the way. Returns the trace, the files written, and whether both agents
/// got the policy.
fn run(seed: u64, cut: Option<Cut>) -> (Trace, SharedFiles, bool, Vec<String>) {
    let mut rng = seeded(seed);
    let operator = NodeKeys::generate(&mut rng);
    let keys: BTreeMap<&str, NodeKeys> = SERVERS
        .iter()
        .map(|(n, _)| *n)
        .chain(AGENTS.iter().map(|(n, _)| *n))
        .map(|n| (n, NodeKeys::generate(&mut rng)))
        .collect();
    let id = |name: &str| keys[name].public();
    let signers: BTreeMap<String, PublicIdentity> =
        SERVERS.iter().map(|(n, _)| ((*n).to_owned(), id(n))).collect();
    let trace: SharedTrace = Arc::new(Mutex::new(Trace::new()));
    let files = SharedFiles::default();
    let mut sim = cohort_io_sim::clock::simulation(seed, Duration::from_secs(90), Duration::from_millis(5));
    for (i, (name, parent)) in SERVERS.iter().enumerate() {
        let children: BTreeMap<String, PublicIdentity> = SERVERS
            .iter()
            .filter(|(_, p)| *p == Some(*name))
            .map(|(n, _)| ((*n).to_owned(), id(n)))
            .collect();
        let agents: BTreeMap<String, PublicIdentity> =
            AGENTS.iter().filter(|(_, s)| s == name).map(|(n, _)| ((*n).to_owned(), id(n))).collect();
        let role = PolicyServerRole {
            listen: format!("0.0.0.0:{PORT}"),
            setup: ServerSetup {
                name: (*name).to_owned(),
                keys: keys[name].clone(),
                parent: parent.map(|p| (p.to_owned(), id(p))),
                children,
                agents,
                signers: signers.clone(),
                operators: vec![operator.public()],
                viewers: Vec::new(),
                sync_window: Duration::from_secs(3),
                sync_jitter: Duration::ZERO,
                stats_deadline: Duration::from_secs(5),
                alerts: cohort_core::policy::alerts::AlertRules::default(),
            },
            parent_addr: parent.map(|p| format!("{p}:{PORT}")),
            stored: Vec::new(),
            superseded: Vec::new(),
            latest: Vec::new(),
            history: Vec::new(),
            alerts: Vec::new(),
            alert_hook: Vec::new(),
            limits: ConnLimits::default(),
        };
        let node_keys = keys[name].clone();
        let setup: SetupFn = Arc::new(move |_| NodeSetup {
            policy_server: Some(role.clone()),
            ..NodeSetup::new(node_keys.clone())
        });
        let ctx = NodeHostContext {
            trace: Some(trace.clone()),
            files: files.clone(),
            ..NodeHostContext::new(name, keys[name].clone(), setup, SimDisk::default(), seed ^ i as u64)
        };
        sim.host(*name, move || node_host::run(ctx.clone()));
    }
    let agent_roles: Vec<PolicyAgentRole> = AGENTS
        .iter()
        .map(|(name, server)| PolicyAgentRole {
            name: (*name).to_owned(),
            keys: keys[name].clone(),
            platform: Platform::new("linux", "6", "web"),
            server: (*server).to_owned(),
            server_addr: format!("{server}:{PORT}"),
            server_identity: id(server),
            poll_interval: Duration::from_secs(1),
            policy_file: file(name),
            hook: Vec::new(),
            detect_platform: false,
        })
        .collect();
    let agents_keys = NodeKeys::generate(&mut rng);
    let setup: SetupFn = Arc::new(move |_| NodeSetup {
        policy_agents: agent_roles.clone(),
        ..NodeSetup::new(agents_keys.clone())
    });
    let ctx = NodeHostContext {
        trace: Some(trace.clone()),
        files: files.clone(),
        ..NodeHostContext::new("agents", NodeKeys::generate(&mut rng), setup, SimDisk::default(), seed ^ 99)
    };
    sim.host("agents", move || node_host::run(ctx.clone()));

    let master = id("master");
    let done = Arc::new(Mutex::new(None::<PolicyAdminReply>));
    let reply = done.clone();
    let agent_a = keys["agent-a"].clone();
    let local_a = id("local-a");
    let refusals = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = refusals.clone();
    sim.client("operator", async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let patience = Duration::from_secs(5);
        let master_addr = format!("master:{PORT}");
        // A key the tier does not list gets no channel at all.
        let stranger = NodeKeys::generate(&mut seeded(404));
        let body = PolicyAdminRequest { at: now().wall, request: PolicyAdmin::List };
        let request = PolicyWire::Admin(Signed::sign(body, &stranger).map_err(|e| e.to_string())?);
        let answer: Result<PolicyWire, String> =
            operator::ask(&master_addr, master, &stranger, &request, seeded(5), patience).await;
        seen.lock()
            .expect("refusals")
            .push(format!("stranger: {}", if answer.is_err() { "no channel" } else { "answered" }));
        // The operator's own key on a request made an hour ago (a captured one, replayed).
        let stale = cohort_core::WallClock(now().wall.0 - 3_600_000);
        let body = PolicyAdminRequest { at: stale, request: PolicyAdmin::List };
        let request = PolicyWire::Admin(Signed::sign(body, &operator).map_err(|e| e.to_string())?);
        let answer: PolicyWire =
            operator::ask(&master_addr, master, &operator, &request, seeded(6), patience).await?;
        seen.lock().expect("refusals").push(format!("stale: {answer:?}"));
        // agent-a's channel carrying a sync in local-b's name: refused as the wrong peer.
        let sync = SyncRequest {
            from: "local-b".into(),
            cycle: 1,
            at: now().wall,
            versions: BTreeMap::new(),
            aggregate: Default::default(),
        };
        let message =
            PolicyWire::Tier(PolicyMessage::Sync(Signed::sign(sync, &agent_a).map_err(|e| e.to_string())?));
        let _: Result<PolicyWire, String> = operator::ask(
            &format!("local-a:{PORT}"),
            local_a,
            &agent_a,
            &message,
            seeded(8),
            Duration::from_secs(1),
        )
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let policy = Policy {
            id: "fw".into(),
            version: 1,
            author: String::new(),
            scope: Scope::Global,
            target: PolicyTarget::default(),
            params: [("firewall.default".to_owned(), "deny".to_owned())].into(),
            retired: false,
        };
        let body = PolicyAdminRequest { at: now().wall, request: PolicyAdmin::Create(policy) };
        let request = PolicyWire::Admin(Signed::sign(body, &operator).map_err(|e| e.to_string())?);
        let answer: PolicyWire = operator::ask(
            &format!("master:{PORT}"),
            master,
            &operator,
            &request,
            seeded(7),
            Duration::from_secs(5),
        )
        .await?;
        if let PolicyWire::AdminReply(answer) = answer {
            *reply.lock().expect("reply") = Some(answer);
        }
        Ok(())
    });
    let has = |files: &SharedFiles, agent: &str| {
        files
            .lock()
            .expect("files")
            .get(&("agents".to_owned(), file(agent)))
            .and_then(|f| PolicyFile::parse(&String::from_utf8_lossy(f)).ok())
            .is_some_and(|f| f.params.get("firewall.default").is_some_and(|v| v == "deny"))
    };
    let mut reached = false;
    while sim.elapsed() < Duration::from_secs(60) {
        if let Some((a, b, from, span)) = cut {
            if sim.elapsed() >= from && sim.elapsed() < from + span {
                sim.partition(a, b);
            } else if sim.elapsed() >= from + span {
                sim.repair(a, b);
            }
        }
        sim.step().expect("the simulation runs");
        if AGENTS.iter().all(|(a, _)| has(&files, a)) {
            reached = true;
            break;
        }
    }
    assert_eq!(
        *done.lock().expect("reply"),
        Some(PolicyAdminReply::Created),
        "the operator's request was taken"
    );
    let trace = trace.lock().expect("trace").clone();
    let refusals = refusals.lock().expect("refusals").clone();
    (trace, files, reached, refusals)
}

#[test]
fn a_change_at_the_master_reaches_agents_two_tiers_down_and_the_run_replays() {
    let (trace, _, reached, refusals) = run(3, None);
    assert!(reached, "both agents applied the policy");
    // The rules the server owns, through the driver: no channel for a stranger, a stale request
    // refused, a message on a channel whose peer is not its sender refused and logged.
    assert_eq!(refusals[0], "stranger: no channel");
    assert!(refusals[1].contains("stale or from the future"), "{}", refusals[1]);
    assert!(trace.lines().iter().any(|l| l.contains("local-a    -> Log policy input refused (wrong-peer)")));
    let (again, _, _, _) = run(3, None);
    assert_eq!(trace, again, "one seed must replay byte for byte");
    insta::with_settings!({ snapshot_path => "../../snapshots", prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!("node_policy_change_two_tiers", trace.render());
    });
}

/// Every seed cuts a local off from its parent for a while; once the link heals, both agents end
/// on the policy made at the master. A failure prints the command that replays it.
#[test]
fn seed_sweep_100_seeds_with_partitions_every_agent_ends_on_the_policy() {
    let seeds = 100;
    let mut ran = 0;
    for seed in 1..=seeds {
        let cut = cut_for(seed);
        let (_, _, reached, _) = run(seed, Some(cut));
        assert!(
            reached,
            "seed {seed} ({} cut from {} at {:?} for {:?}): an agent never got the policy \
             (replay: COHORT_SEED={seed} cargo test -p cohort-tests --test sim_node_policy replay_one_seed)",
            cut.0, cut.1, cut.2, cut.3
        );
        ran += 1;
    }
    println!("policy seed sweep: {ran} seeds ran, every agent ended on the policy");
}

/// Replays the seed in `COHORT_SEED` (default 1) with its cut, printing the trace.
#[test]
fn replay_one_seed() {
    let seed = std::env::var("COHORT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let (trace, _, reached, _) = run(seed, Some(cut_for(seed)));
    if std::env::var("COHORT_SEED").is_ok() {
        println!("{}", trace.render());
    }
    assert!(reached, "seed {seed}: an agent never got the policy");
}
