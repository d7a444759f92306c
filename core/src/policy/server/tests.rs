//! One policy server on its own, no network: what a restart takes back from storage is verified
//! again, as if it had just arrived; who may make which admin request (operators anything,
//! viewers only status and history); and the master's bounded history, filtered and restored.
//! Tier behaviour across servers is tested through the turmoil driver
//! (tests/tests/policy_fleet.rs).

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::policy::document::{PolicyTarget, Scope};
use crate::policy::report::PlatformCounts;
use crate::policy::wire::{MAX_HISTORY_REPLY, PolicyAdmin};
use crate::rng::seeded;

fn master(keys: &NodeKeys) -> PolicyServer {
    let setup = ServerSetup {
        name: "master".into(),
        keys: keys.clone(),
        parent: None,
        children: BTreeMap::new(),
        agents: BTreeMap::new(),
        signers: [("master".to_owned(), keys.public())].into(),
        operators: Vec::new(),
        viewers: Vec::new(),
        sync_window: Duration::from_secs(60),
        sync_jitter: Duration::ZERO,
        stats_deadline: Duration::from_secs(5),
        alerts: crate::policy::alerts::AlertRules::default(),
    };
    PolicyServer::new(Instant::ZERO, setup, seeded(2))
}

#[test]
fn a_stored_policy_altered_on_disk_is_refused_at_restore_and_never_served() {
    let keys = NodeKeys::generate(&mut seeded(1));
    let base = Policy {
        id: "base".into(),
        version: 1,
        author: "master".into(),
        scope: Scope::Global,
        target: PolicyTarget::default(),
        params: [("antimalware.enabled".to_owned(), "true".to_owned())].into(),
        retired: false,
    };
    let stored = Signed::sign(base, &keys).expect("signs");
    // A row altered on disk: a newer version that opens the firewall, under the old signature.
    let mut tampered = stored.clone();
    tampered.body.params.insert("firewall.default".into(), "allow-all".into());
    tampered.body.version += 1;

    let mut server = master(&keys);
    server.restore([stored, tampered], [], []);
    assert_eq!(server.rejected().get(&RejectKind::StoredPolicyInvalid), Some(&1));
    let held: Vec<&Policy> = server.policies().collect();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].version, 1, "the genuine row is still served");
    assert!(held.iter().all(|p| !p.params.contains_key("firewall.default")));
    let outputs: Vec<ServerOutput> = std::iter::from_fn(|| server.poll_output()).collect();
    assert!(
        matches!(outputs.as_slice(), [ServerOutput::Rejected(r)] if r.kind == RejectKind::StoredPolicyInvalid),
        "a refusal and nothing stored again: {outputs:?}"
    );
}

/// A master with one child (`local-00`), one operator and one viewer; the keys by seed.
struct Master {
    server: PolicyServer,
    operator: NodeKeys,
    viewer: NodeKeys,
    local: NodeKeys,
    next_request: u64,
    /// The local's own clock, which only moves on (whatever the master's does).
    local_clock: u64,
}

/// The wall clock every request and sync below is made at (unless a test says otherwise).
const WALL: WallClock = WallClock(1_700_000_000_000);

impl Master {
    fn start() -> Master {
        let mut rng = seeded(7);
        let (keys, operator, viewer, local) = (
            NodeKeys::generate(&mut rng),
            NodeKeys::generate(&mut rng),
            NodeKeys::generate(&mut rng),
            NodeKeys::generate(&mut rng),
        );
        let setup = ServerSetup {
            name: "master".into(),
            keys: keys.clone(),
            parent: None,
            children: [("local-00".to_owned(), local.public())].into(),
            agents: BTreeMap::new(),
            signers: [("master".to_owned(), keys.public()), ("local-00".to_owned(), local.public())].into(),
            operators: vec![operator.public()],
            viewers: vec![viewer.public()],
            sync_window: Duration::from_secs(60),
            sync_jitter: Duration::ZERO,
            stats_deadline: Duration::from_secs(5),
            alerts: crate::policy::alerts::AlertRules::default(),
        };
        let server = PolicyServer::new(Instant::ZERO, setup, seeded(8));
        Master { server, operator, viewer, local, next_request: 1, local_clock: 0 }
    }

    fn drain(&mut self) -> Vec<ServerOutput> {
        std::iter::from_fn(|| self.server.poll_output()).collect()
    }

    /// `request` signed by `keys` at [`WALL`]; the reply it got (every other output dropped).
    fn admin(&mut self, keys: &NodeKeys, request: PolicyAdmin) -> PolicyAdminReply {
        self.drain();
        let id = self.next_request;
        self.next_request += 1;
        let signed = Signed::sign(PolicyAdminRequest { at: WALL, request }, keys).expect("signs");
        self.server
            .handle(Now { mono: Instant::ZERO, wall: WALL }, ServerInput::Admin { request: id, signed });
        let replies: Vec<PolicyAdminReply> = self
            .drain()
            .into_iter()
            .filter_map(|o| match o {
                ServerOutput::AdminReply { request, reply } if request == id => Some(reply),
                _ => None,
            })
            .collect();
        assert_eq!(replies.len(), 1, "one reply per request: {replies:?}");
        replies.into_iter().next().expect("one reply")
    }

    /// A sync from `local-00`, received at `at`, whose aggregate is `aggregate`.
    fn sync(&mut self, at: WallClock, aggregate: Aggregate) {
        self.local_clock += 1;
        let signed_at = WallClock(self.local_clock);
        let versions = BTreeMap::new();
        let body = SyncRequest { from: "local-00".into(), cycle: 1, at: signed_at, versions, aggregate };
        let message = PolicyMessage::Sync(Signed::sign(body, &self.local).expect("signs"));
        let input = ServerInput::Received { from: self.local.public(), message, size: 100 };
        self.server.handle(Now { mono: Instant::ZERO, wall: at }, input);
    }

    fn history(&mut self, since: Option<WallClock>, until: Option<WallClock>) -> Vec<HistoryPoint> {
        match self.admin(&self.viewer.clone(), PolicyAdmin::History { since, until }) {
            PolicyAdminReply::History(points) => points,
            other => panic!("not a history: {other:?}"),
        }
    }

    fn refused(&self, kind: RejectKind) -> u64 {
        self.server.rejected().get(&kind).copied().unwrap_or(0)
    }
}

/// An aggregate with two platforms: 3 + 2 agents, 2 + 1 compliant, 4 + 0 threats, and `silent`.
fn figures(silent: u64) -> Aggregate {
    let mut aggregate = Aggregate { silent_agents: silent, ..Aggregate::default() };
    aggregate.platforms.insert(
        "linux/6/web".into(),
        PlatformCounts { agents: 3, compliant: 2, threats: 4, ..PlatformCounts::default() },
    );
    aggregate.platforms.insert(
        "windows/11/desk".into(),
        PlatformCounts { agents: 2, compliant: 1, threats: 0, ..PlatformCounts::default() },
    );
    aggregate
}

fn policy(id: &str) -> Policy {
    Policy {
        id: id.into(),
        version: 1,
        author: "master".into(),
        scope: Scope::Global,
        target: PolicyTarget::default(),
        params: [("firewall.default".to_owned(), "deny".to_owned())].into(),
        retired: false,
    }
}

#[test]
fn a_viewer_may_read_status_and_history() {
    let mut master = Master::start();
    master.sync(WALL, figures(1));
    let viewer = master.viewer.clone();
    let status = master.admin(&viewer, PolicyAdmin::Status { current: false, since: None });
    assert!(
        matches!(&status, PolicyAdminReply::Status(s) if s.aggregate.agents() == 5 && !s.partial()),
        "{status:?}"
    );
    let history = master.admin(&viewer, PolicyAdmin::History { since: None, until: None });
    assert!(matches!(&history, PolicyAdminReply::History(points) if points.len() == 1), "{history:?}");
    assert!(master.server.rejected().is_empty(), "{:?}", master.server.rejected());
}

#[test]
fn a_viewer_asking_to_create_list_or_sync_is_refused_and_nothing_is_done() {
    let mut master = Master::start();
    let viewer = master.viewer.clone();
    for request in [PolicyAdmin::Create(policy("evil")), PolicyAdmin::List, PolicyAdmin::SyncNow] {
        let reply = master.admin(&viewer, request);
        assert_eq!(reply, PolicyAdminReply::Error("a viewer may only read status and history".into()));
    }
    assert_eq!(master.refused(RejectKind::AdminNotAllowed), 3);
    assert_eq!(RejectKind::AdminNotAllowed.as_str(), "admin-not-allowed");
    assert_eq!(master.server.policies().count(), 0, "the viewer's policy was not created");
    // The operator may still do all of it.
    let operator = master.operator.clone();
    assert_eq!(master.admin(&operator, PolicyAdmin::Create(policy("fw"))), PolicyAdminReply::Created);
    let listed = master.admin(&operator, PolicyAdmin::List);
    assert!(matches!(&listed, PolicyAdminReply::Policies(p) if p.len() == 1), "{listed:?}");
    let history = master.admin(&operator, PolicyAdmin::History { since: None, until: None });
    assert_eq!(history, PolicyAdminReply::History(Vec::new()));
    assert_eq!(master.refused(RejectKind::AdminNotAllowed), 3);
}

#[test]
fn a_signer_neither_operator_nor_viewer_is_refused_as_not_an_operator() {
    let mut master = Master::start();
    let stranger = NodeKeys::generate(&mut seeded(404));
    for request in [PolicyAdmin::History { since: None, until: None }, PolicyAdmin::List] {
        let reply = master.admin(&stranger, request);
        assert!(matches!(&reply, PolicyAdminReply::Error(e) if e.contains("operator")), "{reply:?}");
    }
    // A child of the tier is a peer, not a viewer.
    let local = master.local.clone();
    let reply = master.admin(&local, PolicyAdmin::Status { current: false, since: None });
    assert!(matches!(reply, PolicyAdminReply::Error(_)), "{reply:?}");
    assert_eq!(master.refused(RejectKind::AdminNotOperator), 3);
    assert_eq!(master.refused(RejectKind::AdminNotAllowed), 0);
}

#[test]
fn a_viewer_is_listed_apart_from_the_peers_and_operators() {
    let master = Master::start();
    assert_eq!(master.server.viewers(), [master.viewer.public()]);
    assert!(master.server.peers().all(|p| p.node_id() != master.viewer.public().node_id()));
    assert!(master.server.operators().iter().all(|p| p.node_id() != master.viewer.public().node_id()));
}

#[test]
fn each_child_sync_adds_a_history_point_with_its_totals() {
    let mut master = Master::start();
    master.sync(WallClock(WALL.0 - 2_000), figures(1));
    master.sync(WallClock(WALL.0 - 1_000), Aggregate::default());
    let points = master.history(None, None);
    assert_eq!(
        points,
        [
            HistoryPoint {
                at: WallClock(WALL.0 - 2_000),
                local: "local-00".into(),
                counts: PlatformCounts { agents: 5, compliant: 3, threats: 4, ..PlatformCounts::default() },
                silent: 1,
                platforms: figures(1).platforms,
                locals: BTreeMap::new(),
            },
            HistoryPoint {
                at: WallClock(WALL.0 - 1_000),
                local: "local-00".into(),
                counts: PlatformCounts::default(),
                silent: 0,
                platforms: BTreeMap::new(),
                locals: BTreeMap::new(),
            },
        ]
    );
    assert_eq!(master.server.history().count(), 2);
}

#[test]
fn history_is_filtered_by_since_and_until_inclusive_and_in_time_order() {
    let mut master = Master::start();
    // The wall clock stepped back between the second and third syncs: the reply is still in
    // time order.
    for (at, silent) in [(100, 0), (300, 1), (200, 2), (400, 3)] {
        master.sync(WallClock(at), figures(silent));
    }
    let at = |points: &[HistoryPoint]| points.iter().map(|p| p.at.0).collect::<Vec<_>>();
    assert_eq!(at(&master.history(None, None)), [100, 200, 300, 400]);
    assert_eq!(at(&master.history(Some(WallClock(200)), None)), [200, 300, 400]);
    assert_eq!(at(&master.history(None, Some(WallClock(300)))), [100, 200, 300]);
    assert_eq!(at(&master.history(Some(WallClock(200)), Some(WallClock(300)))), [200, 300]);
    assert_eq!(at(&master.history(Some(WallClock(301)), Some(WallClock(399)))), Vec::<u64>::new());
    assert_eq!(at(&master.history(Some(WallClock(400)), Some(WallClock(100)))), Vec::<u64>::new());
}

#[test]
fn history_held_is_bounded_oldest_first_and_a_reply_keeps_the_newest() {
    let mut master = Master::start();
    let over = 5;
    let kept: Vec<(String, WallClock, Aggregate)> = (0..(MAX_HISTORY_POINTS + over) as u64)
        .map(|i| ("local-00".to_owned(), WallClock(i), Aggregate::default()))
        .collect();
    master.server.restore_history(kept);
    let held: Vec<u64> = master.server.history().map(|p| p.at.0).collect();
    assert_eq!(held.len(), MAX_HISTORY_POINTS);
    assert_eq!(held.first(), Some(&(over as u64)), "the oldest went first");
    // A sync past the bound drops the oldest again.
    let newest = WallClock((MAX_HISTORY_POINTS + over) as u64);
    master.sync(newest, figures(0));
    assert_eq!(master.server.history().count(), MAX_HISTORY_POINTS);
    assert_eq!(master.server.history().next().map(|p| p.at.0), Some(over as u64 + 1));
    // More match than a reply carries: the newest, in time order.
    let points = master.history(None, None);
    assert_eq!(points.len(), MAX_HISTORY_REPLY);
    assert_eq!(points.last().map(|p| p.at), Some(newest));
    assert_eq!(points.first().map(|p| p.at.0), Some(newest.0 + 1 - MAX_HISTORY_REPLY as u64));
    assert!(points.windows(2).all(|w| w[0].at <= w[1].at));
}

#[test]
fn restored_history_is_answered_after_a_restart_and_a_local_keeps_none() {
    let mut master = Master::start();
    let kept = vec![
        ("local-00".to_owned(), WallClock(10), figures(2)),
        // A child since removed from the tier: still what the master received then.
        ("local-09".to_owned(), WallClock(20), Aggregate::default()),
    ];
    master.server.restore_history(kept.clone());
    master.sync(WallClock(30), figures(0));
    let points = master.history(None, None);
    let got: Vec<(&str, u64, u64, u64)> =
        points.iter().map(|p| (p.local.as_str(), p.at.0, p.counts.agents, p.silent)).collect();
    assert_eq!(got, [("local-00", 10, 5, 2), ("local-09", 20, 0, 0), ("local-00", 30, 5, 0)]);

    // A local neither keeps history nor answers for it: that is the master's.
    let mut rng = seeded(9);
    let (keys, parent, viewer) =
        (NodeKeys::generate(&mut rng), NodeKeys::generate(&mut rng), NodeKeys::generate(&mut rng));
    let setup = ServerSetup {
        name: "local-00".into(),
        keys: keys.clone(),
        parent: Some(("master".into(), parent.public())),
        children: BTreeMap::new(),
        agents: BTreeMap::new(),
        signers: BTreeMap::new(),
        operators: Vec::new(),
        viewers: vec![viewer.public()],
        sync_window: Duration::from_secs(60),
        sync_jitter: Duration::ZERO,
        stats_deadline: Duration::from_secs(5),
        alerts: crate::policy::alerts::AlertRules::default(),
    };
    let mut local = PolicyServer::new(Instant::ZERO, setup, seeded(10));
    local.restore_history(kept);
    assert_eq!(local.history().count(), 0);
    let signed = Signed::sign(
        PolicyAdminRequest { at: WALL, request: PolicyAdmin::History { since: None, until: None } },
        &viewer,
    )
    .expect("signs");
    local.handle(Now { mono: Instant::ZERO, wall: WALL }, ServerInput::Admin { request: 1, signed });
    let outputs: Vec<ServerOutput> = std::iter::from_fn(|| local.poll_output()).collect();
    assert!(
        outputs.iter().any(|o| matches!(o,
            ServerOutput::AdminReply { reply: PolicyAdminReply::Error(e), .. } if e.contains("master"))),
        "{outputs:?}"
    );
    assert_eq!(local.rejected().get(&RejectKind::AdminInvalid), Some(&1));
}

#[test]
fn a_child_that_does_not_answer_now_has_the_agents_of_its_last_sync_counted_as_not_reporting() {
    let mut master = Master::start();
    let synced = WallClock(WALL.0 - 30_000);
    // 5 agents reporting on two platforms and 1 silent, as local-00 last synced.
    master.sync(synced, figures(1));
    master.drain();
    let operator = master.operator.clone();
    let request =
        PolicyAdminRequest { at: WALL, request: PolicyAdmin::Status { current: true, since: None } };
    let signed = Signed::sign(request, &operator).expect("signs");
    master.server.handle(Now { mono: Instant::ZERO, wall: WALL }, ServerInput::Admin { request: 9, signed });
    let asked = master.drain();
    assert!(
        asked.iter().any(|o| matches!(o, ServerOutput::Send { name, message: PolicyMessage::Query { .. }, .. } if name == "local-00")),
        "local-00 is asked now, not read from its sync: {asked:?}"
    );
    // local-00 never answers: at the deadline the answer goes out without it.
    let deadline = master.server.poll_timeout().expect("a deadline");
    assert_eq!(deadline, Instant::ZERO + Duration::from_secs(5));
    master.server.handle(Now { mono: deadline, wall: WALL }, ServerInput::Timeout);
    let status = master
        .drain()
        .into_iter()
        .find_map(|o| match o {
            ServerOutput::AdminReply { request: 9, reply: PolicyAdminReply::Status(s) } => Some(s),
            _ => None,
        })
        .expect("answered at the deadline");
    assert!(status.current && status.partial());
    assert_eq!(status.missing, ["local-00"]);
    let expected = crate::policy::wire::Unanswered {
        last_sync: Some(synced),
        agents: 6,
        platforms: [("linux/6/web".to_owned(), 3), ("windows/11/desk".to_owned(), 2)].into(),
    };
    assert_eq!(status.unanswered, [("local-00".to_owned(), expected.clone())].into());
    assert_eq!((status.aggregate.agents(), status.not_reporting()), (0, 6));
    assert_eq!(status.unanswered_platforms(), expected.platforms);
    let json = status.to_json();
    assert_eq!(json["not_reporting"], 6);
    assert_eq!(json["unanswered"]["local-00"]["agents"], 6);
    assert_eq!(json["unanswered"]["local-00"]["last_sync_unix_ms"], synced.0);

    // The stored status, asked for syncs since local-00's last: the same agents, not dropped.
    let viewer = master.viewer.clone();
    let since = Some(WallClock(synced.0 + 1));
    let PolicyAdminReply::Status(stored) =
        master.admin(&viewer, PolicyAdmin::Status { current: false, since })
    else {
        panic!("not a status")
    };
    assert!(!stored.current && stored.partial());
    assert_eq!(stored.unanswered, [("local-00".to_owned(), expected)].into());
    assert_eq!(stored.not_reporting(), 6);
    // Without a span, its last sync is the figure, as of when it came.
    let PolicyAdminReply::Status(stored) =
        master.admin(&viewer, PolicyAdmin::Status { current: false, since: None })
    else {
        panic!("not a status")
    };
    assert!(!stored.partial() && stored.unanswered.is_empty());
    assert_eq!((stored.aggregate.agents(), stored.not_reporting(), stored.as_of["local-00"]), (5, 1, synced));
}

#[test]
fn a_child_that_never_synced_and_does_not_answer_is_named_with_its_agents_unknown() {
    let mut master = Master::start();
    let viewer = master.viewer.clone();
    let PolicyAdminReply::Status(stored) =
        master.admin(&viewer, PolicyAdmin::Status { current: false, since: None })
    else {
        panic!("not a status")
    };
    assert_eq!(stored.missing, ["local-00"]);
    assert_eq!(stored.unanswered["local-00"], crate::policy::wire::Unanswered::default());
    assert_eq!(stored.not_reporting(), 0);
}
