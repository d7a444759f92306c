//! Parallel execution on the one turmoil host driver that runs the core node: a gateway (with the
//! collector, and the KDC as a role with its own key on the same node) and an exec node playing three hosts, simulated commands, a client that logs
//! in and runs. A run on three hosts, one killed by the alarm, one refused by the ACL; the
//! invariants (nothing runs before its audit record is durable at its host and in the chain, the
//! chain verifies after every append) are checked as it goes; the trace is a snapshot and replays
//! byte for byte from its seed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cohort_core::exec::acl::{Acl, AclEntry};
use cohort_core::exec::audit::{AuditDecision, AuditRecord};
use cohort_core::exec::daemon::DaemonSettings;
use cohort_core::exec::directory::{ExecDirectory, ManagedHost};
use cohort_core::exec::gateway::{ClientEvent, ClientRequest, ExecCommand, HostOutcome};
use cohort_core::exec::kdc::{Kdc, KdcSettings, hash_password};
use cohort_core::exec::task::Task;
use cohort_core::exec::wire::{GatewayReply, GatewayWire};
use cohort_core::node::{AuditLinkRole, ConnLimits, ExecHostRole, GatewayRole, KdcRole, NodeSetup};
use cohort_core::rng::{fork, seeded};
use cohort_core::signed::Signed;
use cohort_core::trace::Trace;
use cohort_core::{NodeKeys, PublicIdentity};
use cohort_io_sim::node_host::{self, NodeHostContext, SetupFn, SharedRecords, SharedTrace};
use cohort_io_sim::observer::Observer;
use cohort_io_sim::operator;
use cohort_io_sim::storage::SimDisk;
use rand_core::RngCore;

const GATEWAY_PORT: u16 = 7300;
const KDC_PORT: u16 = 7400;
const HOSTS: [&str; 3] = ["h1", "h2", "h3"];
const PASSWORD: &str = "correct horse battery staple";

fn host_port(i: usize) -> u16 {
    7301 + i as u16
}

/// What the client saw of one run: each host's outcome and output.
type Results = Vec<(String, HostOutcome, String)>;

struct Run {
    trace: Trace,
    /// The collector's answer to a record forged in a host's name.
    forged: Option<GatewayReply>,
    runs: Vec<Results>,
    violation: Option<String>,
    spawned: Vec<String>,
}

/// The link between the gateway and the exec node cut from `.0` for `.1`.
type Cut = (Duration, Duration);

fn cut_for(seed: u64) -> Cut {
    let mut rng = seeded(seed ^ 0xfa17);
    let from = Duration::from_millis(400 + u64::from(rng.next_u32() % 6_000));
    (from, Duration::from_millis(u64::from(rng.next_u32() % 8_000)))
}

/// What happens to the network and the nodes during a run.
#[derive(Clone, Copy, Default)]
struct Trouble {
    cut: Option<Cut>,
    /// The exec node crashes after the first run and comes back before the second.
    restart_exec_after_first_run: bool,
}

fn run(seed: u64, cut: Option<Cut>) -> Run {
    run_with(seed, Trouble { cut, ..Trouble::default() })
}

fn run_with(seed: u64, trouble: Trouble) -> Run {
    let mut rng = seeded(seed);
    let gw_keys = NodeKeys::generate(&mut rng);
    let exec_keys = NodeKeys::generate(&mut rng);
    let kdc_keys = NodeKeys::generate(&mut rng);
    let host_keys: Vec<NodeKeys> = HOSTS.iter().map(|_| NodeKeys::generate(&mut rng)).collect();
    let client_keys = NodeKeys::generate(&mut rng);
    let table: BTreeMap<String, PublicIdentity> =
        HOSTS.iter().zip(&host_keys).map(|(h, k)| ((*h).to_owned(), k.public())).collect();
    let hash = hash_password(PASSWORD, &mut fork(&mut rng)).expect("hashes");
    let principals: BTreeMap<String, String> = [("alice".to_owned(), hash)].into();
    let hosts: BTreeMap<String, ManagedHost> = HOSTS
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host =
                ManagedHost { address: format!("exec:{}", host_port(i)), identity: host_keys[i].public() };
            ((*h).to_owned(), host)
        })
        .collect();
    let mut acl = Acl::default();
    acl.principals.insert(
        "alice".into(),
        AclEntry {
            run_as: ["alice".to_owned()].into(),
            commands: ["/usr/bin/echo", "/usr/bin/sleep"].iter().map(|c| (*c).to_owned()).collect(),
            ..AclEntry::default()
        },
    );
    // Neither node is a member here: each is given what the configuration would say.
    let directory = ExecDirectory { hosts, acl, ..ExecDirectory::default() };
    let trace: SharedTrace = Arc::new(Mutex::new(Trace::new()));
    let records = SharedRecords::default();
    let observer = Observer::default();
    let mut sim = cohort_io_sim::clock::simulation(seed, Duration::from_secs(120), Duration::from_millis(5));

    let kdc_rng = fork(&mut rng);
    let gw = gw_keys.clone();
    let kk = kdc_keys.clone();
    let gw_directory = directory.clone();
    let setup: SetupFn = Arc::new(move |_| NodeSetup {
        kdc: Some(KdcRole {
            listen: format!("0.0.0.0:{KDC_PORT}"),
            kdc: Kdc::new(
                kk.clone(),
                principals.clone(),
                table.clone(),
                KdcSettings::default(),
                kdc_rng.clone(),
            ),
            gateways: vec![gw.public()],
            limits: ConnLimits::default(),
        }),
        gateway: Some(GatewayRole {
            listen: format!("0.0.0.0:{GATEWAY_PORT}"),
            keys: gw.clone(),
            kdc_addr: format!("gw:{KDC_PORT}"),
            kdc: kk.public(),
            chain_tail: None,
            limits: ConnLimits::default(),
            web: None,
        }),
        exec_directory: gw_directory.clone(),
        ..NodeSetup::new(gw.clone())
    });
    let ctx = NodeHostContext {
        trace: Some(trace.clone()),
        records: records.clone(),
        observer: observer.clone(),
        ..NodeHostContext::new("gw", gw_keys.clone(), setup, SimDisk::default(), seed ^ 1)
    };
    sim.host("gw", move || node_host::run(ctx.clone()));

    let roles: Vec<ExecHostRole> = HOSTS
        .iter()
        .enumerate()
        .map(|(i, h)| ExecHostRole {
            name: (*h).to_owned(),
            keys: host_keys[i].clone(),
            kdc: kdc_keys.public(),
            listen: format!("0.0.0.0:{}", host_port(i)),
            settings: DaemonSettings::default(),
            limits: ConnLimits::default(),
        })
        .collect();
    let collector = gw_keys.public();
    let ek = exec_keys.clone();
    let setup: SetupFn = Arc::new(move |_| NodeSetup {
        exec_hosts: roles.clone(),
        audit_link: Some(AuditLinkRole { addr: format!("gw:{GATEWAY_PORT}"), collector }),
        exec_directory: directory.clone(),
        ..NodeSetup::new(ek.clone())
    });
    let ctx = NodeHostContext {
        trace: Some(trace.clone()),
        records: records.clone(),
        observer: observer.clone(),
        ..NodeHostContext::new("exec", exec_keys, setup, SimDisk::default(), seed ^ 2)
    };
    sim.host("exec", move || node_host::run(ctx.clone()));

    let results = Arc::new(Mutex::new(Vec::<Results>::new()));
    let seen = results.clone();
    let forged = Arc::new(Mutex::new(None::<GatewayReply>));
    let forged_reply = forged.clone();
    let gateway = gw_keys.public();
    sim.client("client", async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let addr = format!("gw:{GATEWAY_PORT}");
        let patience = Duration::from_secs(60);
        let login = GatewayWire::Client(ClientRequest::Login {
            principal: "alice".into(),
            password: PASSWORD.into(),
        });
        let answer: GatewayReply =
            operator::ask(&addr, gateway, &client_keys, &login, seeded(11), patience).await?;
        let GatewayReply::Client(ClientEvent::LoggedIn { credential }) = answer else {
            return Err(format!("login refused: {answer:?}").into());
        };
        // Three runs: every host echoes; a silent command past the alarm's T1; a command the
        // ACL does not grant.
        let runs: [(&[&str], u64); 3] = [
            (&["/usr/bin/echo", "hi"], 16_000),
            (&["/usr/bin/sleep", "100"], 1_000),
            (&["/usr/bin/rm", "-rf", "/"], 16_000),
        ];
        for (n, (argv, t1_ms)) in runs.into_iter().enumerate() {
            let command = ExecCommand {
                credential: credential.clone(),
                hosts: vec!["h[1-3]".into()],
                exclude: Vec::new(),
                run_as: "alice".into(),
                task: Task::Run {
                    argv: argv.iter().map(|a| (*a).to_owned()).collect(),
                    stdin: Vec::new(),
                    env: Vec::new(),
                },
                fanout: 3,
                t1_ms,
                t2_ms: 2 * t1_ms,
                t3_ms: 500,
                max_output: 1 << 20,
                connect_timeout_ms: 10_000,
            };
            let request = GatewayWire::Client(ClientRequest::Exec(Box::new(command)));
            let events: Vec<GatewayReply> = operator::converse(
                &addr,
                gateway,
                &client_keys,
                &request,
                seeded(20 + n as u64),
                patience,
                |e| matches!(e, GatewayReply::Client(ClientEvent::Finished | ClientEvent::Refused { .. })),
            )
            .await?;
            let mut hosts: Results = events
                .into_iter()
                .filter_map(|e| match e {
                    GatewayReply::Client(ClientEvent::Host(r)) => {
                        Some((r.host, r.outcome, String::from_utf8_lossy(&r.stdout).into_owned()))
                    }
                    _ => None,
                })
                .collect();
            hosts.sort_by(|a, b| a.0.cmp(&b.0));
            seen.lock().expect("results").push(hosts);
            // A pause between runs, in which the gateway's channels to the hosts sit idle.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // A key that is no host's writes a record in h1's name: the collector must refuse it.
        let forger = NodeKeys::generate(&mut seeded(404));
        let record = AuditRecord {
            host: "h1".into(),
            principal: "alice".into(),
            run_as: "root".into(),
            argv: vec!["true".into()],
            at: cohort_io_sim::clock::now().wall,
            decision: AuditDecision::Run,
            run_id: [9; 16],
            data: Vec::new(),
        };
        let forged = GatewayWire::AuditSubmit {
            ack: 1,
            record: Signed::sign(record, &forger).map_err(|e| e.to_string())?,
        };
        let answer: GatewayReply =
            operator::ask(&addr, gateway, &forger, &forged, seeded(30), patience).await?;
        *forged_reply.lock().expect("reply") = Some(answer);
        Ok(())
    });
    // Until the client is done.
    let mut exec_down = false;
    let mut exec_restarted = false;
    loop {
        if trouble.restart_exec_after_first_run && !exec_restarted {
            let first_run_done = !results.lock().expect("results").is_empty();
            // Cut off while it goes down and comes back, the gateway hears nothing of it: as after
            // a power loss, its channels look open until it sends on them.
            if exec_down {
                sim.bounce("exec");
                sim.repair("gw", "exec");
                exec_restarted = true;
            } else if first_run_done {
                sim.partition("gw", "exec");
                sim.crash("exec");
                exec_down = true;
            }
        }
        if let Some((from, span)) = trouble.cut {
            let t = sim.elapsed();
            if t >= from && t < from + span {
                sim.partition("gw", "exec");
            } else if t >= from + span {
                sim.repair("gw", "exec");
            }
        }
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            // A client that gave up (a run that never ended) or a host that failed.
            Err(e) => {
                observer.report_violation(sim.elapsed(), format!("the simulation stopped: {e}"));
                break;
            }
        }
    }
    let trace = trace.lock().expect("trace").clone();
    let spawned = trace.lines().iter().filter(|l| l.contains("-> Spawn")).cloned().collect();
    let runs = results.lock().expect("results").clone();
    let forged = forged.lock().expect("reply").clone();
    Run { trace, forged, runs, violation: observer.violation(), spawned }
}

#[test]
fn a_run_an_alarm_kill_and_an_acl_denial_through_the_node_with_invariants_and_a_replayable_trace() {
    let first = run(5, None);
    assert_eq!(first.violation, None);
    assert_eq!(first.runs.len(), 3, "every run came back");
    for (host, outcome, stdout) in &first.runs[0] {
        assert_eq!((outcome, stdout.as_str()), (&HostOutcome::Exited(0), "hi\n"), "{host}");
    }
    for (host, outcome, _) in &first.runs[1] {
        assert!(
            matches!(outcome, HostOutcome::KilledByAlarm(reason) if reason.contains("no output")),
            "{host}: {outcome:?}"
        );
    }
    for (host, outcome, _) in &first.runs[2] {
        assert!(
            matches!(outcome, HostOutcome::Denied(reason) if reason.contains("ACL")),
            "{host}: {outcome:?}"
        );
    }
    assert_eq!(
        first.spawned.len(),
        6,
        "echo and sleep on three hosts each, nothing else: {:?}",
        first.spawned
    );
    assert!(first.spawned.iter().all(|l| !l.contains("rm")), "a denied command never spawns");
    // A record not signed by the host it names is refused, said so, and logged at the collector.
    assert!(
        matches!(&first.forged, Some(GatewayReply::AuditRefused { reason, .. }) if reason.contains("not signed by that host's key")),
        "{:?}",
        first.forged
    );
    let refused =
        "gw         -> Log audit record refused: the record for `h1` is not signed by that host's key";
    assert!(first.trace.lines().iter().any(|l| l.ends_with(refused)));
    // Three runs on three hosts open one channel to each host: the later runs reuse them.
    assert_eq!(channels_to_hosts(&first.trace), 3, "{:#?}", first.trace.lines());
    let again = run(5, None);
    assert_eq!(first.trace, again.trace, "one seed must replay byte for byte");
    insta::with_settings!({ snapshot_path => "../../snapshots", prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!("node_exec_run_kill_denial", first.trace.render());
    });
}

/// How many connections the gateway opened to the exec node's hosts.
fn channels_to_hosts(trace: &Trace) -> usize {
    trace.lines().iter().filter(|l| l.contains("gw         -> Connect") && l.contains(" to exec:")).count()
}

/// The exec node restarts between two runs while the gateway's channels to its hosts sit open:
/// the second run's requests go out on channels that died with the old process, are sent once
/// more on fresh ones, and run on every host; nothing runs twice.
#[test]
fn a_host_restarted_between_runs_still_runs_the_next_command_on_a_fresh_channel() {
    let r = run_with(9, Trouble { restart_exec_after_first_run: true, ..Trouble::default() });
    assert_eq!(r.violation, None);
    assert_eq!(r.runs.len(), 3, "every run came back");
    for results in &r.runs[..1] {
        for (host, outcome, stdout) in results {
            assert_eq!((outcome, stdout.as_str()), (&HostOutcome::Exited(0), "hi\n"), "{host}");
        }
    }
    for (host, outcome, _) in &r.runs[1] {
        assert!(matches!(outcome, HostOutcome::KilledByAlarm(_)), "{host}: {outcome:?}");
    }
    assert_eq!(r.spawned.len(), 6, "each command once on each host: {:?}", r.spawned);
    assert_eq!(channels_to_hosts(&r.trace), 6, "one channel per host before the restart, one after");
}

/// Every seed cuts the gateway off the exec node for a while during the runs. Whatever the cut
/// hits, every run ends with a result for every host (none hangs), a result is only what could
/// have happened, nothing runs before it is audited, the chain verifies after every append, and
/// the denied command never runs. A failure prints the command that replays it.
#[test]
fn seed_sweep_100_seeds_with_the_gateway_cut_off_the_hosts() {
    let seeds = 100;
    let mut ran = 0;
    for seed in 1..=seeds {
        let cut = cut_for(seed);
        let replay =
            format!("COHORT_SEED={seed} cargo test -p cohort-tests --test sim_node_exec replay_one_seed");
        let r = run(seed, Some(cut));
        assert_eq!(r.violation, None, "seed {seed} (cut at {:?} for {:?}); replay: {replay}", cut.0, cut.1);
        assert_eq!(r.runs.len(), 3, "seed {seed}: a run never ended; replay: {replay}");
        for (n, results) in r.runs.iter().enumerate() {
            assert_eq!(results.len(), 3, "seed {seed} run {n}: {results:?}; replay: {replay}");
            for (host, outcome, _) in results {
                let possible = matches!(
                    (n, outcome),
                    (_, HostOutcome::Unreachable(_) | HostOutcome::KilledByAlarm(_) | HostOutcome::Denied(_))
                        | (0, HostOutcome::Exited(0))
                );
                assert!(possible, "seed {seed} run {n} {host}: {outcome:?}; replay: {replay}");
            }
        }
        assert!(
            r.spawned.iter().all(|l| !l.contains("rm")),
            "seed {seed}: a denied command ran; replay: {replay}"
        );
        ran += 1;
    }
    println!("exec seed sweep: {ran} seeds ran, no invariant violated, every run ended");
}

/// Replays the seed in `COHORT_SEED` (default 1) with its cut, printing the trace.
#[test]
fn replay_one_seed() {
    let seed = std::env::var("COHORT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let r = run(seed, Some(cut_for(seed)));
    if std::env::var("COHORT_SEED").is_ok() {
        println!("{}", r.trace.render());
    }
    assert_eq!(r.violation, None);
    assert_eq!(r.runs.len(), 3);
}
