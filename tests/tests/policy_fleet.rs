//! The security-policy tier on a simulated fleet of core nodes on the turmoil host driver: 1
//! master, 3 locals (local-02 behind local-00), 300 agents. Changes at the master and at a local
//! reach every agent's file; a partitioned local keeps serving and catches up; current status with
//! a local down (or a nested one cut off) is partial and on time, and counts the agents below it
//! as not reporting; bad input sent over real channels, with stolen or
//! stranger keys, is refused, counted, and stored nowhere; and the tier cuts the master's traffic
//! at least 20-fold.

use std::time::Duration;

use cohort_core::node::Record;
use cohort_core::policy::checks::{CheckOutcome, Severity};
use cohort_core::policy::document::{Platform, Scope};
use cohort_core::policy::report::{AgentReport, CheckResult};
use cohort_core::policy::server::{PolicyMessage, RejectKind, SyncRequest};
use cohort_core::policy::wire::{PolicyAdmin, PolicyAdminReply, PolicyWire};
use cohort_core::rng::seeded;
use cohort_core::signed::Signed;
use cohort_core::{NodeKeys, WallClock};
use cohort_io_sim::policy_fleet::{
    Fleet, FleetScenario, MASTER, agent_name, local_name, no_channel, run_fleet,
};

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);

/// The fleet, warmed up: every agent has written the base policy. `trace` keeps the servers'
/// logs, for tests that read a refusal's detail.
fn fleet_with(trace: bool) -> Fleet {
    let mut scenario = FleetScenario::new(3, 300, 7);
    scenario.trace_servers = trace;
    let mut fleet = Fleet::new(scenario);
    let created = fleet.create(MASTER, Fleet::policy("base", "antimalware.enabled", "true", Scope::Global));
    assert_eq!(created.reply(), Some(&PolicyAdminReply::Created), "{created:?}");
    fleet.run_for(MINUTE * 3);
    assert_eq!(
        fleet.agents_with("antimalware.enabled", "true"),
        300,
        "warm-up: every agent has the base policy"
    );
    fleet
}

fn fleet() -> Fleet {
    fleet_with(false)
}

/// Sends a tier message to `server` on a channel that presents `keys`.
fn send_tier(fleet: &mut Fleet, server: &str, keys: &NodeKeys, message: PolicyMessage) {
    fleet.send_as(server, keys, PolicyWire::Tier(message), SECOND);
}

fn keys(fleet: &Fleet, name: &str) -> NodeKeys {
    fleet.keys_of(name).unwrap_or_else(|| panic!("no keys for {name}")).clone()
}

/// Whether any server persisted a policy with `id`.
fn stored_anywhere(fleet: &Fleet, id: &str) -> bool {
    let records = fleet.records();
    let records = records.lock().expect("records");
    records.iter().any(|(_, r)| matches!(r, Record::Policy(p) if p.body.id == id))
}

/// How many agents local `i` serves.
fn agents_of(fleet: &Fleet, i: usize) -> u64 {
    fleet.agent_local().iter().filter(|l| **l == i).count() as u64
}

fn report(agent: &str, wall: WallClock) -> AgentReport {
    AgentReport {
        agent: agent.into(),
        platform: Platform::new("linux", "6", "web"),
        applied: [0; 32],
        checks: Default::default(),
        threats: None,
        last_scan: None,
        poll_every_ms: 1_000,
        kernel: None,
        at: wall,
    }
}

#[test]
fn a_change_at_the_master_reaches_every_agent_including_behind_the_nested_local() {
    let mut fleet = fleet();
    assert_eq!(fleet.local_parent()[2], Some(0), "local-02 sits behind local-00");
    fleet.create(MASTER, Fleet::policy("fw", "firewall.default", "deny", Scope::Global));
    let took = fleet.time_until_all("firewall.default", "deny", MINUTE * 6).expect("reached every agent");
    assert!(took <= MINUTE * 4, "took {took:?}");
}

#[test]
fn a_change_made_at_a_local_reaches_every_agent_in_every_branch() {
    let mut fleet = fleet();
    // Made at the nested local: it climbs to local-00, then the master, then down every branch.
    let name = local_name(2);
    let created = fleet.create(&name, Fleet::policy("upd", "update.channel", "stable", Scope::Global));
    assert_eq!(created.reply(), Some(&PolicyAdminReply::Created));
    fleet.time_until_all("update.channel", "stable", MINUTE * 8).expect("reached every agent");
    let at_master = fleet.server(MASTER).policy("upd").cloned().expect("the master holds it");
    assert_eq!(at_master.author, name);
}

#[test]
fn a_partitioned_local_keeps_serving_its_agents_and_catches_up_after_the_heal() {
    let mut fleet = fleet();
    fleet.partition_local(1);
    fleet.create(MASTER, Fleet::policy("scan", "scan.interval_hours", "6", Scope::Global));
    fleet.run_for(MINUTE * 4);
    let behind: Vec<usize> = (0..300).filter(|a| fleet.agent_local()[*a] == 1).collect();
    let others = 300 - behind.len();
    assert_eq!(fleet.agents_with("scan.interval_hours", "6"), others, "only the cut-off branch lacks it");
    // Still served: those agents keep the last policy their local had.
    for a in &behind {
        assert!(fleet.agent_has(*a, "antimalware.enabled", "true"), "{} lost its policy", agent_name(*a));
    }
    assert!(fleet.server(&local_name(1)).reports_held >= behind.len(), "the local still takes their reports");
    fleet.heal();
    fleet.time_until_all("scan.interval_hours", "6", MINUTE * 6).expect("caught up after the heal");
}

/// The policy climbs at once when made, but that message is lost in the partition: the parent
/// learns at the next sync that the local holds something newer and asks for it.
#[test]
fn a_policy_made_at_a_partitioned_local_climbs_after_the_heal() {
    let mut fleet = fleet();
    fleet.partition_local(1);
    let created = fleet.create(&local_name(1), Fleet::policy("usb", "usb.storage", "block", Scope::Global));
    assert_eq!(created.reply(), Some(&PolicyAdminReply::Created));
    fleet.run_for(MINUTE * 3);
    assert!(fleet.server(MASTER).policy("usb").is_none(), "cut off from the master");
    fleet.heal();
    fleet.time_until_all("usb.storage", "block", MINUTE * 6).expect("every agent after the heal");
}

#[test]
fn current_status_with_a_local_down_returns_by_its_deadline_marked_partial() {
    let mut fleet = fleet();
    fleet.take_down(1);
    let down_at = fleet.wall();
    let asked = fleet.status(true, None);
    let took = asked.took().expect("answered");
    assert!(took <= Duration::from_secs(5) + Duration::from_millis(100), "answered after {took:?}");
    let status = asked.status().expect("a status");
    assert!(status.partial());
    assert_eq!(status.missing, vec![local_name(1)]);
    // local-00 answered for itself and for local-02 behind it.
    assert_eq!(status.aggregate.agents(), 200, "local-00 and local-02 carry 200 of the 300 agents");
    // local-01's agents are not dropped: its last sync at the master counted them, and they are
    // counted as not reporting, by platform too.
    let below = agents_of(&fleet, 1);
    let unanswered = &status.unanswered[&local_name(1)];
    assert_eq!(unanswered.agents, below, "{status:?}");
    assert!(unanswered.last_sync.is_some());
    assert_eq!(status.not_reporting(), below);
    assert_eq!(status.aggregate.agents() + status.not_reporting(), 300, "every agent is counted");
    assert_eq!(status.unanswered_platforms().values().sum::<u64>(), below, "{status:?}");
    // Historical status comes from stored syncs, including the down local's last one.
    let history = fleet.status(false, None);
    let history = history.status().expect("a status");
    assert!(!history.partial(), "every direct child has synced before: {history:?}");
    // Asked for the syncs since it went down, it has none: missing, its agents not reporting.
    fleet.run_for(MINUTE * 2);
    let recent = fleet.status(false, Some(down_at));
    let recent = recent.status().expect("a status");
    assert_eq!(recent.missing, vec![local_name(1)], "{recent:?}");
    assert_eq!(recent.unanswered[&local_name(1)].agents, below);
    assert!(recent.not_reporting() >= below);

    // Back up from what it had stored: it serves the base policy again and, once it has synced,
    // answers for its agents.
    fleet.bring_up(1);
    fleet.run_for(SECOND * 5);
    let restarted = fleet.server(&local_name(1));
    assert_eq!(restarted.syncs_received, 0);
    assert!(restarted.policy("base").is_some(), "restored from its store before any sync");
    fleet.run_for(MINUTE * 2);
    let asked = fleet.status(true, None);
    let status = asked.status().expect("a status");
    assert!(!status.partial(), "{status:?}");
    assert_eq!(status.aggregate.agents(), 300);
}

/// A nested local cut off from its parent: its parent answers the master for it, naming it
/// missing and counting the agents of its last sync there as not reporting.
#[test]
fn a_nested_local_cut_off_has_its_agents_counted_as_not_reporting_by_its_parent() {
    let mut fleet = fleet();
    assert_eq!(fleet.local_parent()[2], Some(0), "local-02 sits behind local-00");
    fleet.partition_local(2);
    let asked = fleet.status(true, None);
    let status = asked.status().expect("a status");
    let below = agents_of(&fleet, 2);
    assert_eq!(status.missing, vec![local_name(2)], "{status:?}");
    let unanswered = &status.unanswered[&local_name(2)];
    assert_eq!(unanswered.agents, below, "{status:?}");
    assert_eq!(status.aggregate.agents() + status.not_reporting(), 300, "every agent is counted");
    assert!(!status.aggregate.locals.contains_key(&local_name(2)), "nothing of local-02 was heard now");
}

#[test]
fn bad_input_is_refused_counted_and_never_stored() {
    let mut fleet = fleet_with(true);
    let held = fleet.server(MASTER).policies.len();
    let stranger = NodeKeys::generate(&mut seeded(404));
    let mut forged = Fleet::policy("evil", "firewall.default", "allow-all", Scope::Global);
    forged.author = MASTER.into();
    let forged = Signed::sign(forged, &stranger).expect("signs");

    // A key the tier does not list gets no channel at all.
    let tried =
        fleet.send_as(MASTER, &stranger, PolicyWire::Tier(PolicyMessage::NewPolicy(forged.clone())), SECOND);
    assert!(no_channel(&tried), "{tried:?}");
    assert!(fleet.server(MASTER).rejected.is_empty(), "nothing reached the server's role");

    // A compromised local forwards what it likes: the policy's own signature still decides.
    let local_0 = keys(&fleet, &local_name(0));
    // Signed by a key no server has.
    send_tier(&mut fleet, MASTER, &local_0, PolicyMessage::NewPolicy(forged.clone()));
    // The same, claiming an author nobody knows.
    let mut unknown = forged.clone();
    unknown.body.author = "nobody".into();
    send_tier(&mut fleet, MASTER, &local_0, PolicyMessage::NewPolicy(unknown));
    // Unsigned: the signature field left empty (all zero).
    let mut unsigned = forged.clone();
    unsigned.body.id = "unsigned".into();
    unsigned.signature = cohort_core::signed::Signature([0; 64]);
    send_tier(&mut fleet, MASTER, &local_0, PolicyMessage::NewPolicy(unsigned));
    let master = fleet.server(MASTER);
    assert_eq!(master.policies.len(), held);
    assert_eq!(master.refused(RejectKind::PolicyBadSignature), 2);
    assert_eq!(master.refused(RejectKind::PolicyUnknownSigner), 1);
    assert!(!stored_anywhere(&fleet, "evil") && !stored_anywhere(&fleet, "unsigned"));

    // An aggregate in the name of a local the master does not know, on local-00's channel.
    let sync = SyncRequest {
        from: "rogue".into(),
        cycle: 1,
        at: fleet.wall(),
        versions: Default::default(),
        aggregate: Default::default(),
    };
    send_tier(
        &mut fleet,
        MASTER,
        &local_0,
        PolicyMessage::Sync(Signed::sign(sync, &stranger).expect("signs")),
    );
    assert_eq!(fleet.server(MASTER).refused(RejectKind::UnknownLocal), 1);
    let records = fleet.records();
    let history_from_rogue = records
        .lock()
        .expect("records")
        .iter()
        .any(|(_, r)| matches!(r, Record::PolicyHistory { from, .. } if from == "rogue"));
    assert!(!history_from_rogue, "a refused sync leaves no history");

    // A report from an agent local-00 does not know, on agent-0000's channel; then an oversized
    // one in agent-0000's own name.
    let local = local_name(0);
    let agent_0 = keys(&fleet, &agent_name(0));
    let held_reports = fleet.server(&local).reports_held;
    let unknown = Signed::sign(report("agent-9999", fleet.wall()), &stranger).expect("signs");
    send_tier(&mut fleet, &local, &agent_0, PolicyMessage::Poll(unknown));
    let mut big = report(&agent_name(0), fleet.wall());
    let result = CheckResult { outcome: CheckOutcome::Pass, severity: Severity::Low, detail: "x".repeat(40) };
    big.checks = (0..2000).map(|i| (format!("check-{i}"), result.clone())).collect();
    let big = Signed::sign(big, &agent_0).expect("signs");
    send_tier(&mut fleet, &local, &agent_0, PolicyMessage::Poll(big));
    let view = fleet.server(&local);
    assert_eq!(view.refused(RejectKind::UnknownAgent), 1);
    assert_eq!(view.refused(RejectKind::OversizedReport), 1);
    assert_eq!(view.reports_held, held_reports);
    let refusals = fleet.refusals(&local);
    assert!(refusals.iter().any(|r| r.contains("over the 65536-byte limit")), "{refusals:#?}");
}

#[test]
fn the_tier_cuts_bytes_at_the_master_at_least_twentyfold() {
    let report = run_fleet(FleetScenario::new(10, 1000, 1));
    assert!(
        report.master_bytes_per_cycle * 20.0 <= report.direct_baseline_bytes_per_cycle,
        "tier {} vs direct {}",
        report.master_bytes_per_cycle,
        report.direct_baseline_bytes_per_cycle
    );
    assert_eq!(report.agents_applied, 1000);
}

/// Operators' requests are judged by the server itself: a request signed by a key the tier does
/// not list, or made outside the freshness window, is refused, counted and changes nothing; the
/// master refuses to "sync now"; a local refuses to answer for the global status.
#[test]
fn admin_requests_are_authorised_and_checked_for_freshness_by_the_server() {
    let mut fleet = fleet();
    let held = fleet.server(MASTER).policies.len();
    let stranger = NodeKeys::generate(&mut seeded(405));
    let create = PolicyAdmin::Create(Fleet::policy("evil", "firewall.default", "allow-all", Scope::Global));
    // The stranger gets no channel of its own, so its request rides on local-00's, which the
    // master admits: the signature, not the channel, says who asks.
    let signed = Fleet::signed_admin(&stranger, fleet.wall(), create.clone());
    let local_0 = keys(&fleet, &local_name(0));
    let not_operator = fleet.send_as(MASTER, &local_0, PolicyWire::Admin(signed), SECOND * 5);
    // The operator's own key, but a request made an hour ago (a captured one, replayed).
    let stale = WallClock(fleet.wall().0 - 3_600_000);
    let signed = Fleet::signed_admin(fleet.operator(), stale, create);
    let operator = fleet.operator().clone();
    let replayed = fleet.send_as(MASTER, &operator, PolicyWire::Admin(signed), SECOND * 5);
    let master = fleet.server(MASTER);
    assert_eq!(master.policies.len(), held, "nothing was created");
    assert!(!stored_anywhere(&fleet, "evil"));
    assert_eq!(master.refused(RejectKind::AdminNotOperator), 1);
    assert_eq!(master.refused(RejectKind::AdminStale), 1);
    assert!(
        not_operator.error().is_some_and(|e| e.contains("not signed by an operator")),
        "{not_operator:?}"
    );
    assert!(replayed.error().is_some_and(|e| e.contains("stale")), "{replayed:?}");

    let sync = fleet.admin(MASTER, PolicyAdmin::SyncNow);
    assert!(sync.error().is_some_and(|e| e.contains("no parent")), "{sync:?}");
    let status = fleet.admin(&local_name(0), PolicyAdmin::Status { current: true, since: None });
    assert!(status.error().is_some_and(|e| e.contains("from the master")), "{status:?}");
    // A genuine request: the server becomes the author, whatever the request said.
    let mut policy = Fleet::policy("ok", "update.channel", "stable", Scope::Global);
    policy.author = "someone-else".into();
    let created = fleet.create(&local_name(0), policy);
    assert_eq!(created.reply(), Some(&PolicyAdminReply::Created));
    let ok = fleet.server(&local_name(0)).policy("ok").cloned().expect("held at local-00");
    assert_eq!(ok.author, local_name(0));
}

/// A tier message is taken only from the channel of the server or agent it names: a local's
/// sync arriving on another local's channel, an agent's report on another agent's, a parent's
/// reply from a child, are refused and counted.
#[test]
fn a_message_on_a_channel_whose_peer_is_not_its_sender_is_refused() {
    let mut fleet = fleet_with(true);
    // local-00's own signed sync, sent on local-01's channel.
    let sync = SyncRequest {
        from: local_name(0),
        cycle: 99,
        at: fleet.wall(),
        versions: Default::default(),
        aggregate: Default::default(),
    };
    let sync = Signed::sign(sync, &keys(&fleet, &local_name(0))).expect("signs");
    let local_1 = keys(&fleet, &local_name(1));
    send_tier(&mut fleet, MASTER, &local_1, PolicyMessage::Sync(sync));
    // Taken as a sync, it would have left its empty aggregate in the master's history.
    let records = fleet.records();
    let relayed_kept = records.lock().expect("records").iter().any(|(host, r)| {
        host == MASTER
            && matches!(r, Record::PolicyHistory { aggregate, .. } if *aggregate == Default::default())
    });
    assert!(!relayed_kept, "a relayed sync is not a sync");

    // agent-0000's own signed report, on agent-0003's channel (both are local-00's).
    let local = local_name(0);
    assert_eq!(fleet.agent_local()[3], 0);
    let signed =
        Signed::sign(report(&agent_name(0), fleet.wall()), &keys(&fleet, &agent_name(0))).expect("signs");
    let agent_3 = keys(&fleet, &agent_name(3));
    send_tier(&mut fleet, &local, &agent_3, PolicyMessage::Poll(signed));
    // A parent's reply, from local-02, local-00's child.
    let reply = PolicyMessage::SyncReply { policies: Vec::new(), wanted: vec!["base".into()] };
    let local_2 = keys(&fleet, &local_name(2));
    send_tier(&mut fleet, &local, &local_2, reply);

    assert_eq!(fleet.server(MASTER).refused(RejectKind::WrongPeer), 1);
    assert_eq!(fleet.server(&local).refused(RejectKind::WrongPeer), 2);
    let logged = fleet.refusals(&local);
    assert_eq!(logged.iter().filter(|l| l.contains("(wrong-peer)")).count(), 2, "{logged:#?}");
}
