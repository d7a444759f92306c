//! Attacks on the security-policy tier: an agent's report, a local's sync and an operator's
//! change played again, and an older version of a policy offered where a newer one is held.
//! Each message is genuine (signed by the key it names, sent on that key's own channel), as
//! a thief of the bytes or a compromised peer would send it; the servers are core nodes on the
//! turmoil driver.

use std::time::Duration;

use cohort_core::NodeKeys;
use cohort_core::WallClock;
use cohort_core::node::Record;
use cohort_core::policy::document::{Platform, Policy, Scope};
use cohort_core::policy::report::AgentReport;
use cohort_core::policy::server::{RejectKind, SyncRequest};
use cohort_core::policy::wire::{PolicyAdmin, PolicyAdminReply, PolicyMessage, PolicyWire};
use cohort_core::signed::Signed;
use cohort_io_sim::node_host::SharedRecords;
use cohort_io_sim::policy_fleet::{Fleet, FleetScenario, MASTER, agent_name, local_name};

const SECOND: Duration = Duration::from_secs(1);

/// Two locals of ten agents each, every agent holding the base policy; servers' logs kept.
fn fleet(seed: u64) -> Fleet {
    let mut scenario = FleetScenario::new(2, 20, seed);
    scenario.trace_servers = true;
    scenario.watch_reports = true;
    let mut fleet = Fleet::new(scenario);
    let created = fleet.create(MASTER, Fleet::policy("base", "firewall.default", "deny", Scope::Global));
    assert_eq!(created.reply(), Some(&PolicyAdminReply::Created), "{created:?}");
    fleet.run_for(SECOND * 180);
    assert_eq!(fleet.agents_with("firewall.default", "deny"), 20, "warm-up");
    fleet
}

fn keys(fleet: &Fleet, name: &str) -> NodeKeys {
    fleet.keys_of(name).unwrap_or_else(|| panic!("no keys for {name}")).clone()
}

fn tier(fleet: &mut Fleet, server: &str, keys: &NodeKeys, message: PolicyMessage) {
    fleet.send_as(server, keys, PolicyWire::Tier(message), SECOND);
}

fn logged(fleet: &Fleet, server: &str, needle: &str) -> bool {
    fleet.refusals(server).iter().any(|r| r.contains(needle))
}

/// History points the master stored from `from` whose aggregate counts `agents` agents.
fn history_points(records: &SharedRecords, from: &str, agents: u64) -> usize {
    let records = records.lock().expect("records");
    records
        .iter()
        .filter(|(_, r)| {
            matches!(r, Record::PolicyHistory { from: f, aggregate, .. } if f == from && aggregate.agents() == agents)
        })
        .count()
}

#[test]
fn a_replayed_agent_report_is_refused_and_the_newer_one_kept() {
    let mut fleet = fleet(41);
    let local = local_name(0);
    let agent = agent_name(0);
    let agent_keys = keys(&fleet, &agent);
    // A report an hour old, as captured then: it claims a policy digest no agent ever applied.
    let old = AgentReport {
        agent: agent.clone(),
        platform: Platform::new("linux", "6", "web"),
        applied: [7; 32],
        checks: Default::default(),
        threats: Some(0),
        last_scan: None,
        at: WallClock(fleet.wall().0 - 3_600_000),
        poll_every_ms: 30_000,
        kernel: None,
    };
    let held_before = fleet.server(&local).reports_held;
    tier(
        &mut fleet,
        &local,
        &agent_keys,
        PolicyMessage::Poll(Signed::sign(old, &agent_keys).expect("signs")),
    );
    let view = fleet.server(&local);
    assert_eq!(view.refused(RejectKind::StaleReport), 1);
    assert!(logged(
        &fleet,
        &local,
        &format!("report from `{agent}` is not newer than the one held (a replay)")
    ));
    assert_eq!(view.reports_held, held_before);
    let reported = fleet.reported_digests();
    assert!(!reported.get(&agent).is_some_and(|d| d.contains(&[7; 32])), "the replayed report was taken");
}

#[test]
fn a_replayed_sync_is_refused_and_adds_no_history() {
    let mut fleet = fleet(42);
    let local = local_name(0);
    let local_keys = keys(&fleet, &local);
    // A sync in local-00's name counting no agents (its real ones count its agents), sent twice.
    let sync = SyncRequest {
        from: local.clone(),
        cycle: 1,
        at: fleet.wall(),
        versions: Default::default(),
        aggregate: Default::default(),
    };
    let signed = Signed::sign(sync, &local_keys).expect("signs");
    let records = fleet.records();
    let before = history_points(&records, &local, 0);
    tier(&mut fleet, MASTER, &local_keys, PolicyMessage::Sync(signed.clone()));
    assert_eq!(history_points(&records, &local, 0), before + 1, "the first copy is taken");
    tier(&mut fleet, MASTER, &local_keys, PolicyMessage::Sync(signed));
    assert_eq!(fleet.server(MASTER).refused(RejectKind::StaleSync), 1);
    let refusal = format!("sync from `{local}` is not newer than the last one taken (a replay)");
    assert!(logged(&fleet, MASTER, &refusal));
    assert_eq!(history_points(&records, &local, 0), before + 1, "the replay added history");
}

#[test]
fn a_replayed_change_from_the_operator_is_refused_and_a_later_edit_stands() {
    let mut fleet = fleet(43);
    let operator = fleet.operator().clone();
    let first = Fleet::signed_admin(
        &operator,
        fleet.wall(),
        PolicyAdmin::Create(Fleet::policy("ssh", "ssh.root_login", "yes", Scope::Global)),
    );
    let answer = fleet.send_as(MASTER, &operator, PolicyWire::Admin(first.clone()), SECOND * 5);
    assert_eq!(answer.reply(), Some(&PolicyAdminReply::Created));
    let edit = fleet.create(MASTER, Fleet::policy("ssh", "ssh.root_login", "no", Scope::Global));
    assert_eq!(edit.reply(), Some(&PolicyAdminReply::Created));

    // The first request again, well inside its five minutes of freshness.
    let replayed = fleet.send_as(MASTER, &operator, PolicyWire::Admin(first), SECOND * 5);
    assert!(replayed.error().is_some_and(|e| e.contains("carried out already")), "{replayed:?}");
    assert_eq!(fleet.server(MASTER).refused(RejectKind::AdminReplayed), 1);
    assert!(logged(&fleet, MASTER, "admin request refused: this signed request was carried out already"));
    let held = fleet.server(MASTER).policies.into_iter().find(|p| p.id == "ssh").expect("held");
    assert_eq!((held.version, held.params.get("ssh.root_login").map(String::as_str)), (2, Some("no")));
}

#[test]
fn an_older_policy_version_offered_again_is_refused_and_the_newer_kept() {
    let mut fleet = fleet(44);
    let stored = |fleet: &Fleet, version: u64| {
        let records = fleet.records();
        let records = records.lock().expect("records");
        records.iter().find_map(|(host, r)| match r {
            Record::Policy(p) if host == MASTER && p.body.id == "base" && p.body.version == version => {
                Some(p.clone())
            }
            _ => None,
        })
    };
    let v1 = stored(&fleet, 1).expect("the master stored version 1");
    let edit = fleet.create(MASTER, Fleet::policy("base", "firewall.default", "drop", Scope::Global));
    assert_eq!(edit.reply(), Some(&PolicyAdminReply::Created));
    assert!(stored(&fleet, 2).is_some());

    // Version 1, genuinely signed by the master, offered back to it by a local.
    let local_keys = keys(&fleet, &local_name(0));
    tier(&mut fleet, MASTER, &local_keys, PolicyMessage::NewPolicy(v1));
    let view = fleet.server(MASTER);
    assert_eq!(view.refused(RejectKind::OlderPolicy), 1);
    assert!(logged(&fleet, MASTER, "policy `base` version 1 is older than version 2 held here; kept 2"));
    let held: Vec<&Policy> = view.policies.iter().filter(|p| p.id == "base").collect();
    assert_eq!(held.len(), 1);
    assert_eq!(
        (held[0].version, held[0].params.get("firewall.default").map(String::as_str)),
        (2, Some("drop"))
    );
}
