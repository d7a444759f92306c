//! The configuration-change scenario: N members on simulated hosts, one operator change at a
//! random member, with seeded loss, a partition and crashes, invariants checked as it runs. Owns
//! the fault schedule and the report. Every run replays exactly from its seed.

use std::collections::BTreeMap;
use std::time::Duration;

use cohort_core::NodeKeys;
use cohort_core::admin::{AdminRequest, AdminResponse};
use cohort_core::member::{Change, ChangeRequest, MemberSettings};
use cohort_core::rng::{fork, seeded};
use cohort_core::signed::Signed;
use rand_core::RngCore;
use serde::Serialize;

use crate::members::{Genesis, admin_addr, host_name};
use crate::node_host::{self, NodeHostContext};
use crate::observer::Observer;
use crate::operator;

#[derive(Debug, Clone, PartialEq)]
pub struct ConfigChangeScenario {
    pub nodes: usize,
    pub seed: u64,
    /// Probability that any one write breaks its connection (loss on a stream).
    pub loss: f64,
    /// Cut one random member off from all others for this long, starting just before the change.
    pub partition: Option<Duration>,
    /// Crash this many random members (then restart them) around the change.
    pub crashes: usize,
    /// Crashes at set times, in addition to the random ones: (member, after the change, downtime).
    pub planned_crashes: Vec<(usize, Duration, Duration)>,
    /// Which member the partition isolates; random when `None`.
    pub partition_victim: Option<usize>,
    /// Which member takes the operator's change; random when `None`.
    pub author: Option<usize>,
    pub heartbeat: Duration,
    /// Give up (and report not converged) after this much simulated time.
    pub limit: Duration,
    /// What the operator's change does besides setting a key: add a node that joined from an
    /// anchor, or remove a member.
    pub membership: Membership,
}

/// A change of roster carried by the scenario's change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum Membership {
    #[default]
    Unchanged,
    /// One more node runs from the start, joined from an anchor, and the change adds it.
    Join,
    /// The change removes a random member other than the author.
    Remove,
}

impl ConfigChangeScenario {
    pub fn new(nodes: usize, seed: u64) -> Self {
        ConfigChangeScenario {
            nodes,
            seed,
            loss: 0.0,
            partition: None,
            crashes: 0,
            planned_crashes: Vec::new(),
            partition_victim: None,
            author: None,
            heartbeat: Duration::from_secs(1),
            limit: Duration::from_secs(120),
            membership: Membership::Unchanged,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Recovery {
    pub member: String,
    pub at_ms: u64,
    pub active: String,
    pub staged: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConfigChangeReport {
    pub seed: u64,
    pub nodes: usize,
    pub loss: f64,
    pub partition_ms: Option<u64>,
    pub crashes: usize,
    pub membership: Membership,
    /// Every live member has the changed configuration (or a later one) active.
    pub all_installed: bool,
    pub version: Option<String>,
    /// Simulated time from the change being accepted to the last member installing it.
    pub change_to_last_install_ms: Option<u64>,
    pub heartbeat_ms: u64,
    pub change_to_last_install_heartbeats: Option<f64>,
    /// Simulated time from the change being accepted to the first member installing it.
    pub change_to_first_install_ms: Option<u64>,
    /// Restarts: member, simulated time, and the active and staged versions it recovered.
    pub recoveries: Vec<Recovery>,
    pub simulated_ms: u64,
    pub messages_sent_per_member: f64,
    pub bytes_sent_per_member: f64,
    pub messages_sent: BTreeMap<String, u64>,
    pub bytes_sent: BTreeMap<String, u64>,
    pub violation: Option<String>,
}

/// One fault on the schedule.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Isolate(usize),
    Heal(usize),
    Crash(usize),
    Restart(usize),
}

fn roll(rng: &mut impl RngCore, below: u64) -> u64 {
    if below == 0 { 0 } else { rng.next_u64() % below }
}

pub fn run_config_change(scenario: &ConfigChangeScenario) -> ConfigChangeReport {
    let mut rng = seeded(scenario.seed);
    let joiners = usize::from(scenario.membership == Membership::Join);
    let genesis = match Genesis::new("sim", scenario.nodes, joiners, &mut rng) {
        Ok(genesis) => genesis,
        Err(e) => return failed_report(scenario, format!("genesis could not be sealed: {e}")),
    };
    let (operator, keys, config) = (&genesis.operator, &genesis.keys, &genesis.config);

    let change_at = Duration::from_millis(2_000 + roll(&mut rng, 1_000));
    let random_author = roll(&mut rng, scenario.nodes as u64) as usize;
    let author = scenario.author.filter(|a| *a < scenario.nodes).unwrap_or(random_author);
    let mut changes = vec![Change::Set { key: "changed-by".into(), value: host_name(author) }];
    // Who must install the change for the run to have converged.
    let mut installers: Vec<NodeKeys> = keys.clone();
    match scenario.membership {
        Membership::Unchanged => {}
        Membership::Join => match genesis.info(scenario.nodes) {
            Some(info) => changes.push(Change::AddMember(info)),
            None => return failed_report(scenario, "no joiner was made".into()),
        },
        Membership::Remove if scenario.nodes > 1 => {
            let removed = (author + 1 + roll(&mut rng, scenario.nodes as u64 - 1) as usize) % scenario.nodes;
            changes.push(Change::RemoveMember(keys[removed].node_id()));
            installers.remove(removed);
        }
        Membership::Remove => return failed_report(scenario, "a removal needs two members".into()),
    }
    let request = ChangeRequest {
        cluster_id: "sim".into(),
        base: config.version,
        changes,
        operator: operator.public().signing,
    };
    let Ok(request) = Signed::sign(request, operator) else {
        return failed_report(scenario, "the change request could not be signed".into());
    };

    let mut faults: Vec<(Duration, Fault)> = Vec::new();
    if let Some(span) = scenario.partition {
        let random_victim = roll(&mut rng, scenario.nodes as u64) as usize;
        let victim = scenario.partition_victim.filter(|v| *v < scenario.nodes).unwrap_or(random_victim);
        let start = change_at.saturating_sub(Duration::from_millis(100));
        faults.push((start, Fault::Isolate(victim)));
        faults.push((start + span, Fault::Heal(victim)));
    }
    for _ in 0..scenario.crashes {
        let victim = roll(&mut rng, scenario.nodes as u64) as usize;
        let at = change_at + Duration::from_millis(roll(&mut rng, 3_000));
        let down = Duration::from_millis(200 + roll(&mut rng, 1_300));
        faults.push((at, Fault::Crash(victim)));
        faults.push((at + down, Fault::Restart(victim)));
    }
    for (victim, after, down) in
        scenario.planned_crashes.iter().copied().filter(|(v, ..)| *v < scenario.nodes)
    {
        faults.push((change_at + after, Fault::Crash(victim)));
        faults.push((change_at + after + down, Fault::Restart(victim)));
    }
    faults.sort_by_key(|(at, _)| *at);

    let observer = Observer::default();
    let settings = MemberSettings { heartbeat: scenario.heartbeat, ..MemberSettings::default() };
    let mut sim = crate::clock::simulation(
        scenario.seed,
        scenario.limit + Duration::from_secs(10),
        Duration::from_millis(10),
    );
    for i in 0..scenario.nodes + joiners {
        let seed = fork(&mut rng).next_u64();
        let Some(ctx) = genesis.context(i, settings, seed) else {
            return failed_report(scenario, format!("no genesis record for m{i}"));
        };
        let ctx = NodeHostContext { observer: observer.clone(), loss: scenario.loss, ..ctx };
        sim.host(host_name(i), move || node_host::run(ctx.clone()));
    }
    // The operator asks the author over its admin channel, as `cohort admin set` would, until a
    // change is accepted (the author may be down or cut off when it first asks).
    let author_addr = admin_addr(author);
    let author_identity = keys[author].public();
    let operator_rng = fork(&mut rng);
    let operator = operator.clone();
    sim.client("operator", async move {
        tokio::time::sleep(change_at).await;
        let change = AdminRequest::Change(request);
        for attempt in 0u64.. {
            let rng = seeded(operator_rng.clone().next_u64() ^ attempt);
            let answer =
                operator::ask(&author_addr, author_identity, &operator, &change, rng, Duration::from_secs(2))
                    .await;
            if matches!(answer, Ok(AdminResponse::ChangeAccepted { .. })) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(())
    });

    let mut crashed = vec![false; scenario.nodes];
    let mut next_fault = 0;
    let mut converged_at = None;
    loop {
        let elapsed = sim.elapsed();
        while let Some((at, fault)) = faults.get(next_fault).copied().filter(|(at, _)| *at <= elapsed) {
            let _ = at;
            next_fault += 1;
            match fault {
                Fault::Isolate(v) => {
                    for j in (0..scenario.nodes).filter(|j| *j != v) {
                        sim.partition(host_name(v), host_name(j));
                    }
                }
                Fault::Heal(v) => {
                    for j in (0..scenario.nodes).filter(|j| *j != v) {
                        sim.repair(host_name(v), host_name(j));
                    }
                }
                Fault::Crash(v) if !crashed[v] => {
                    sim.crash(host_name(v));
                    crashed[v] = true;
                }
                Fault::Restart(v) if crashed[v] => {
                    sim.bounce(host_name(v));
                    crashed[v] = false;
                }
                _ => {}
            }
        }
        if observer.violation().is_some() {
            break;
        }
        if next_fault >= faults.len() && converged(&observer, &installers) {
            converged_at = Some(elapsed);
            break;
        }
        if elapsed >= scenario.limit {
            break;
        }
        match sim.step() {
            Ok(_) => {}
            Err(e) => {
                let mut state = observer.lock();
                state.violation.get_or_insert(format!("simulation error: {e}"));
                break;
            }
        }
    }
    report(scenario, &observer, keys, converged_at, sim.elapsed())
}

/// Every member has the accepted change (or something newer) active.
fn converged(observer: &Observer, keys: &[NodeKeys]) -> bool {
    let state = observer.lock();
    let Some((version, _)) = state.change_accepted else { return false };
    keys.iter().all(|k| state.last_active.get(&k.node_id()).is_some_and(|c| c.version >= version))
}

fn report(
    scenario: &ConfigChangeScenario,
    observer: &Observer,
    keys: &[NodeKeys],
    converged_at: Option<Duration>,
    elapsed: Duration,
) -> ConfigChangeReport {
    let state = observer.lock();
    let accepted = state.change_accepted;
    let last_install = accepted.and_then(|(version, _)| {
        state.installs.iter().filter(|(_, v, _)| *v >= version).map(|(_, _, at)| *at).max()
    });
    let first_install = accepted.and_then(|(version, at)| {
        state.installs.iter().filter(|(_, v, _)| *v >= version).map(|(_, _, t)| t.saturating_sub(at)).min()
    });
    let change_to_last = match (accepted, last_install, converged_at) {
        (Some((_, at)), Some(last), Some(_)) => Some(last.saturating_sub(at)),
        _ => None,
    };
    let name_of = |id: &cohort_core::NodeId| {
        keys.iter().position(|k| k.node_id() == *id).map_or_else(|| id.to_hex(), host_name)
    };
    let messages: BTreeMap<String, u64> =
        state.messages_sent.iter().map(|(id, n)| (name_of(id), *n)).collect();
    let bytes: BTreeMap<String, u64> = state.bytes_sent.iter().map(|(id, n)| (name_of(id), *n)).collect();
    let nodes = scenario.nodes.max(1) as f64;
    ConfigChangeReport {
        seed: scenario.seed,
        nodes: scenario.nodes,
        loss: scenario.loss,
        partition_ms: scenario.partition.map(|p| p.as_millis() as u64),
        crashes: scenario.crashes,
        membership: scenario.membership,
        all_installed: converged_at.is_some(),
        version: accepted.map(|(v, _)| v.to_string()),
        change_to_last_install_ms: change_to_last.map(|d| d.as_millis() as u64),
        heartbeat_ms: scenario.heartbeat.as_millis() as u64,
        change_to_last_install_heartbeats: change_to_last
            .map(|d| d.as_secs_f64() / scenario.heartbeat.as_secs_f64()),
        change_to_first_install_ms: first_install.map(|d| d.as_millis() as u64),
        recoveries: state
            .recoveries
            .iter()
            .map(|(id, at, active, staged)| Recovery {
                member: name_of(id),
                at_ms: at.as_millis() as u64,
                active: active.to_string(),
                staged: staged.map(|s| s.to_string()),
            })
            .collect(),
        simulated_ms: elapsed.as_millis() as u64,
        messages_sent_per_member: messages.values().sum::<u64>() as f64 / nodes,
        bytes_sent_per_member: bytes.values().sum::<u64>() as f64 / nodes,
        messages_sent: messages,
        bytes_sent: bytes,
        violation: state.violation.clone(),
    }
}

fn failed_report(scenario: &ConfigChangeScenario, violation: String) -> ConfigChangeReport {
    let mut report = report(scenario, &Observer::default(), &[], None, Duration::ZERO);
    report.violation = Some(violation);
    report
}
