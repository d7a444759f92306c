//! The security-policy tier on a simulated fleet: 1 master, 3 locals (local-02 behind local-00),
//! 300 agents. Changes at the master and at a local reach every agent; a partitioned local keeps
//! serving and catches up; current status with a local down is partial and on time; bad input is
//! refused, counted, and stored nowhere; and the tier cuts the master's traffic at least 20-fold.

use std::time::Duration;

use cohort_core::policy::document::{Platform, Scope};
use cohort_core::policy::report::AgentReport;
use cohort_core::policy::server::{PolicyMessage, RejectKind, ServerInput, SyncRequest};
use cohort_core::policy::wire::{PolicyAdmin, PolicyAdminReply, PolicyAdminRequest};
use cohort_core::rng::seeded;
use cohort_core::signed::Signed;
use cohort_core::{NodeKeys, WallClock};
use cohort_io_sim::policy_fleet::{Fleet, FleetScenario, MASTER, local_name, run_fleet};

const MINUTE: Duration = Duration::from_secs(60);

fn fleet() -> Fleet {
    let mut fleet = Fleet::new(FleetScenario::new(3, 300, 7));
    fleet.create(MASTER, Fleet::policy("base", "antimalware.enabled", "true", Scope::Global));
    fleet.run_for(MINUTE * 3);
    assert_eq!(
        fleet.agents_with("antimalware.enabled", "true"),
        300,
        "warm-up: every agent has the base policy"
    );
    fleet
}

#[test]
fn a_change_at_the_master_reaches_every_agent_including_behind_the_nested_local() {
    let mut fleet = fleet();
    assert_eq!(fleet.local_parent[2], Some(0), "local-02 sits behind local-00");
    fleet.create(MASTER, Fleet::policy("fw", "firewall.default", "deny", Scope::Global));
    let took = fleet.time_until_all("firewall.default", "deny", MINUTE * 6).expect("reached every agent");
    assert!(took <= MINUTE * 4, "took {took:?}");
}

#[test]
fn a_change_made_at_a_local_reaches_every_agent_in_every_branch() {
    let mut fleet = fleet();
    // Made at the nested local: it climbs to local-00, then the master, then down every branch.
    let name = local_name(2);
    fleet.create(&name, Fleet::policy("upd", "update.channel", "stable", Scope::Global));
    fleet.time_until_all("update.channel", "stable", MINUTE * 8).expect("reached every agent");
    assert!(fleet.master.policies().any(|p| p.id == "upd" && p.author == name));
}

#[test]
fn a_partitioned_local_keeps_serving_its_agents_and_catches_up_after_the_heal() {
    let mut fleet = fleet();
    fleet.partition_local(1);
    fleet.create(MASTER, Fleet::policy("scan", "scan.interval_hours", "6", Scope::Global));
    fleet.run_for(MINUTE * 4);
    let behind: Vec<usize> = (0..300).filter(|a| fleet.agent_local[*a] == 1).collect();
    let others = 300 - behind.len();
    assert_eq!(fleet.agents_with("scan.interval_hours", "6"), others, "only the cut-off branch lacks it");
    // Still served: those agents keep the last policy their local had.
    for a in &behind {
        let applied = fleet.agents[*a].applied().expect("an applied policy");
        assert_eq!(applied.params.get("antimalware.enabled").map(String::as_str), Some("true"));
    }
    assert!(fleet.locals[1].reports_held() >= behind.len(), "the local still takes their reports");
    fleet.heal();
    fleet.time_until_all("scan.interval_hours", "6", MINUTE * 6).expect("caught up after the heal");
}

/// The policy climbs at once when made, but that message is lost in the partition: the parent
/// learns at the next sync that the local holds something newer and asks for it.
#[test]
fn a_policy_made_at_a_partitioned_local_climbs_after_the_heal() {
    let mut fleet = fleet();
    fleet.partition_local(1);
    fleet.create(&local_name(1), Fleet::policy("usb", "usb.storage", "block", Scope::Global));
    fleet.run_for(MINUTE * 3);
    assert_eq!(fleet.master.policies().filter(|p| p.id == "usb").count(), 0, "cut off from the master");
    fleet.heal();
    fleet.time_until_all("usb.storage", "block", MINUTE * 6).expect("every agent after the heal");
}

#[test]
fn current_status_with_a_local_down_returns_by_its_deadline_marked_partial() {
    let mut fleet = fleet();
    fleet.down.insert(local_name(1));
    let asked = fleet.now;
    let request = fleet.admin(MASTER, PolicyAdmin::Status { current: true, since: None });
    fleet.run_for(Duration::from_secs(10));
    let (_, answered, status) = fleet.statuses.iter().find(|(r, ..)| *r == request).expect("answered");
    assert!(
        *answered - asked <= Duration::from_secs(5) + Duration::from_millis(100),
        "answered after {:?}",
        *answered - asked
    );
    assert!(status.partial());
    assert_eq!(status.missing, vec![local_name(1)]);
    // local-00 answered for itself and for local-02 behind it.
    let agents = status.aggregate.agents();
    assert_eq!(agents, 200, "local-00 and local-02 carry 200 of the 300 agents");
    // Historical status comes from stored syncs, including the down local's last one.
    let request = fleet.admin(MASTER, PolicyAdmin::Status { current: false, since: None });
    let (_, _, history) = fleet.statuses.iter().find(|(r, ..)| *r == request).expect("answered");
    assert!(!history.partial(), "every direct child has synced before: {history:?}");
}

#[test]
fn bad_input_is_refused_counted_and_never_stored() {
    let mut fleet = fleet();
    let held = fleet.master.policies().count();
    let stranger = NodeKeys::generate(&mut seeded(404));
    // A compromised local forwards what it likes: the policy's own signature still decides.
    let local_0 = fleet.local_keys[0].public();

    // A policy signed by a key no server has.
    let mut forged = Fleet::policy("evil", "firewall.default", "allow-all", Scope::Global);
    forged.author = MASTER.into();
    let forged = Signed::sign(forged, &stranger).expect("signs");
    fleet.feed_server(
        MASTER,
        ServerInput::Received { from: local_0, message: PolicyMessage::NewPolicy(forged.clone()), size: 0 },
    );
    // The same, claiming an author nobody knows.
    let mut unknown = forged.clone();
    unknown.body.author = "nobody".into();
    let message = PolicyMessage::NewPolicy(unknown);
    fleet.feed_server(MASTER, ServerInput::Received { from: local_0, message, size: 0 });
    // Unsigned: the signature field left empty (all zero).
    let mut unsigned = forged.clone();
    unsigned.body.id = "unsigned".into();
    unsigned.signature = cohort_core::signed::Signature([0; 64]);
    let message = PolicyMessage::NewPolicy(unsigned);
    fleet.feed_server(MASTER, ServerInput::Received { from: local_0, message, size: 0 });
    assert_eq!(fleet.master.policies().count(), held);
    assert_eq!(fleet.master.rejected().get(&RejectKind::PolicyBadSignature), Some(&2));
    assert_eq!(fleet.master.rejected().get(&RejectKind::PolicyUnknownSigner), Some(&1));

    // An aggregate from a local the master does not know.
    let sync = SyncRequest {
        from: "rogue".into(),
        cycle: 1,
        versions: Default::default(),
        aggregate: Default::default(),
    };
    let sync = Signed::sign(sync, &stranger).expect("signs");
    let syncs = fleet.master.syncs_received();
    let from = stranger.public();
    fleet.feed_server(MASTER, ServerInput::Received { from, message: PolicyMessage::Sync(sync), size: 0 });
    assert_eq!(fleet.master.rejected().get(&RejectKind::UnknownLocal), Some(&1));
    assert_eq!(fleet.master.syncs_received(), syncs);

    // A report from an agent the local does not know, and an oversized one.
    let report = AgentReport {
        agent: "agent-9999".into(),
        platform: Platform::new("linux", "6", "web"),
        applied: [0; 32],
        checks: Default::default(),
        threats: None,
        last_scan: None,
        at: WallClock(0),
    };
    let local = local_name(0);
    let held_reports = fleet.locals[0].reports_held();
    let signed = Signed::sign(report.clone(), &stranger).expect("signs");
    let from = stranger.public();
    fleet
        .feed_server(&local, ServerInput::Received { from, message: PolicyMessage::Poll(signed), size: 300 });
    let mut big = report;
    big.agent = "agent-0000".into();
    big.checks = (0..2000).map(|i| (format!("check-{i}"), true)).collect();
    let big = Signed::sign(big, &stranger).expect("signs");
    let size = cohort_core::wire::encode(&PolicyMessage::Poll(big.clone())).expect("encodes").len();
    // From agent-0000's own channel, so the size is what is judged.
    let from = fleet.identity_of("agent-0000").expect("agent-0000");
    fleet.feed_server(&local, ServerInput::Received { from, message: PolicyMessage::Poll(big), size });
    assert_eq!(fleet.locals[0].rejected().get(&RejectKind::UnknownAgent), Some(&1));
    assert_eq!(fleet.locals[0].rejected().get(&RejectKind::OversizedReport), Some(&1));
    assert_eq!(fleet.locals[0].reports_held(), held_reports);
    assert!(fleet.rejections.iter().any(|(_, r)| r.contains("over the 16384-byte limit")));

    // What a restart takes back from storage is verified again: a row altered on disk is refused.
    let mut tampered = fleet.master.signed_policies().next().expect("one held").clone();
    tampered.body.params.insert("firewall.default".into(), "allow-all".into());
    tampered.body.version += 1;
    fleet.master.restore([tampered], []);
    assert_eq!(fleet.master.rejected().get(&RejectKind::StoredPolicyInvalid), Some(&1));
    assert!(fleet.master.policies().all(|p| !p.params.contains_key("firewall.default")));
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
    let held = fleet.master.policies().count();
    let stranger = NodeKeys::generate(&mut seeded(405));
    let create = PolicyAdmin::Create(Fleet::policy("evil", "firewall.default", "allow-all", Scope::Global));
    let request = PolicyAdminRequest { at: fleet.wall, request: create.clone() };
    let signed = Signed::sign(request, &stranger).expect("signs");
    fleet.feed_server(MASTER, ServerInput::Admin { request: 900, signed });
    // The operator's own key, but a request made an hour ago (a captured one, replayed).
    let stale = PolicyAdminRequest { at: WallClock(fleet.wall.0 - 3_600_000), request: create };
    let signed = Signed::sign(stale, &fleet.operator).expect("signs");
    fleet.feed_server(MASTER, ServerInput::Admin { request: 901, signed });
    assert_eq!(fleet.master.policies().count(), held, "nothing was created");
    assert_eq!(fleet.master.rejected().get(&RejectKind::AdminNotOperator), Some(&1));
    assert_eq!(fleet.master.rejected().get(&RejectKind::AdminStale), Some(&1));
    let reply = |fleet: &Fleet, id: u64| {
        fleet.admin_replies.iter().find(|(_, r, _)| *r == id).map(|(_, _, reply)| reply.clone())
    };
    assert!(
        matches!(reply(&fleet, 900), Some(PolicyAdminReply::Error(e)) if e.contains("not signed by an operator"))
    );
    assert!(matches!(reply(&fleet, 901), Some(PolicyAdminReply::Error(e)) if e.contains("stale")));

    let sync = fleet.admin(MASTER, PolicyAdmin::SyncNow);
    assert!(matches!(reply(&fleet, sync), Some(PolicyAdminReply::Error(e)) if e.contains("no parent")));
    let status = fleet.admin(&local_name(0), PolicyAdmin::Status { current: true, since: None });
    assert!(
        matches!(reply(&fleet, status), Some(PolicyAdminReply::Error(e)) if e.contains("from the master"))
    );
    // A genuine request: the server becomes the author, whatever the request said.
    let mut policy = Fleet::policy("ok", "update.channel", "stable", Scope::Global);
    policy.author = "someone-else".into();
    let created = fleet.create(&local_name(0), policy);
    assert_eq!(reply(&fleet, created), Some(PolicyAdminReply::Created));
    assert!(fleet.locals[0].policies().any(|p| p.id == "ok" && p.author == local_name(0)));
}

/// A tier message is taken only from the channel of the server or agent it names: a local's
/// sync arriving on another local's channel, an agent's report on a stranger's, a parent's
/// reply from a child, are refused and counted.
#[test]
fn a_message_on_a_channel_whose_peer_is_not_its_sender_is_refused() {
    let mut fleet = fleet();
    let syncs = fleet.master.syncs_received();
    let sync = SyncRequest {
        from: local_name(0),
        cycle: 99,
        versions: Default::default(),
        aggregate: Default::default(),
    };
    let sync = Signed::sign(sync, &fleet.local_keys[0]).expect("signs");
    let from = fleet.local_keys[1].public();
    fleet.feed_server(MASTER, ServerInput::Received { from, message: PolicyMessage::Sync(sync), size: 0 });
    assert_eq!(fleet.master.syncs_received(), syncs, "a relayed sync is not a sync");

    let report = AgentReport {
        agent: "agent-0000".into(),
        platform: Platform::new("linux", "6", "web"),
        applied: [0; 32],
        checks: Default::default(),
        threats: None,
        last_scan: None,
        at: fleet.wall,
    };
    let agent_0 = fleet.agents[0].keys().clone();
    let signed = Signed::sign(report, &agent_0).expect("signs");
    let stranger = NodeKeys::generate(&mut seeded(406)).public();
    let local = local_name(0);
    fleet.feed_server(
        &local,
        ServerInput::Received { from: stranger, message: PolicyMessage::Poll(signed), size: 300 },
    );

    let reply = PolicyMessage::SyncReply { policies: Vec::new(), wanted: vec!["base".into()] };
    let child = fleet.local_keys[2].public();
    fleet.feed_server(&local, ServerInput::Received { from: child, message: reply, size: 0 });

    assert_eq!(fleet.master.rejected().get(&RejectKind::WrongPeer), Some(&1));
    assert_eq!(fleet.locals[0].rejected().get(&RejectKind::WrongPeer), Some(&2));
}
