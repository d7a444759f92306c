//! The policy tier on the in-memory network: a master, a local under it and an agent, as one
//! node each; a change reaching the agent's file, the rules on operators' and viewers' admin
//! requests, a failed apply reported as such, and the same seed giving the same run.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::identity::{NodeKeys, PublicIdentity};
use crate::policy::document::{Platform, Policy, PolicyTarget, Scope};
use crate::policy::policy_file::PolicyFile;
use crate::policy::server::{RejectKind, ServerSetup};
use crate::policy::wire::{PolicyAdmin, PolicyAdminReply, PolicyAdminRequest, PolicyWire};
use crate::rng::seeded;
use crate::signed::Signed;
use crate::time::WallClock;
use crate::wire;

/// A master, one local under it, and one agent on the local; keys and addresses by seed.
struct Tier {
    net: Net,
    operator: NodeKeys,
    master_keys: NodeKeys,
    /// The local's key: trusted by the master as a child, and no operator.
    local_keys: NodeKeys,
    /// A read-only identity (the web console's gateway, say): a channel, status and history.
    viewer: NodeKeys,
    master: usize,
    local: usize,
    agents: usize,
}

const MASTER_ADDR: &str = "10.0.0.1:7400";
const LOCAL_ADDR: &str = "10.0.0.2:7400";
const POLICY_FILE: &str = "/etc/cohort/a0.policy";

fn policy(value: &str, version: u64) -> Policy {
    Policy {
        id: "fw".into(),
        version,
        author: "master".into(),
        scope: Scope::Global,
        target: PolicyTarget::default(),
        params: [("firewall.default".to_owned(), value.to_owned())].into(),
        retired: false,
    }
}

impl Tier {
    fn start(unwritable: bool) -> Tier {
        Tier::start_with(unwritable, Duration::from_secs(10))
    }

    /// The tier, its servers syncing every `sync_window`.
    fn start_with(unwritable: bool, sync_window: Duration) -> Tier {
        let mut rng = seeded(5);
        let operator = NodeKeys::generate(&mut rng);
        let master_keys = NodeKeys::generate(&mut rng);
        let local_keys = NodeKeys::generate(&mut rng);
        let agent_keys = NodeKeys::generate(&mut rng);
        // Its own seed, so the other keys (and the runs they make) stay as they were.
        let viewer = NodeKeys::generate(&mut seeded(55));
        let signers: BTreeMap<String, PublicIdentity> =
            [("master".to_owned(), master_keys.public()), ("local".to_owned(), local_keys.public())].into();
        let setup = |name: &str, keys: &NodeKeys, parent, children, agents| ServerSetup {
            name: name.into(),
            keys: keys.clone(),
            parent,
            children,
            agents,
            signers: signers.clone(),
            operators: vec![operator.public()],
            viewers: vec![viewer.public()],
            sync_window,
            sync_jitter: Duration::ZERO,
            stats_deadline: Duration::from_secs(5),
            alerts: crate::policy::alerts::AlertRules::default(),
        };
        let stored = Signed::sign(policy("deny", 1), &master_keys).expect("signs");
        let mut net = Net::new();
        if unwritable {
            net.unwritable.insert(POLICY_FILE.into());
        }
        let master = net.add(
            NodeSetup {
                policy_server: Some(PolicyServerRole {
                    listen: MASTER_ADDR.into(),
                    setup: setup(
                        "master",
                        &master_keys,
                        None,
                        [("local".to_owned(), local_keys.public())].into(),
                        BTreeMap::new(),
                    ),
                    parent_addr: None,
                    stored: vec![stored],
                    superseded: Vec::new(),
                    latest: Vec::new(),
                    history: Vec::new(),
                    alerts: Vec::new(),
                    alert_hook: Vec::new(),
                    limits: ConnLimits::default(),
                }),
                ..NodeSetup::new(master_keys.clone())
            },
            1,
        );
        let local = net.add(
            NodeSetup {
                policy_server: Some(PolicyServerRole {
                    listen: LOCAL_ADDR.into(),
                    setup: setup(
                        "local",
                        &local_keys,
                        Some(("master".to_owned(), master_keys.public())),
                        BTreeMap::new(),
                        [("a0".to_owned(), agent_keys.public())].into(),
                    ),
                    parent_addr: Some(MASTER_ADDR.into()),
                    stored: Vec::new(),
                    superseded: Vec::new(),
                    latest: Vec::new(),
                    history: Vec::new(),
                    alerts: Vec::new(),
                    alert_hook: Vec::new(),
                    limits: ConnLimits::default(),
                }),
                ..NodeSetup::new(local_keys.clone())
            },
            2,
        );
        let agents = net.add(
            NodeSetup {
                policy_agents: vec![PolicyAgentRole {
                    name: "a0".into(),
                    keys: agent_keys.clone(),
                    platform: Platform::new("linux", "6", "web"),
                    server: "local".into(),
                    server_addr: LOCAL_ADDR.into(),
                    server_identity: local_keys.public(),
                    poll_interval: Duration::from_secs(2),
                    policy_file: POLICY_FILE.into(),
                    hook: vec!["/usr/sbin/reload-firewall".into()],
                    detect_platform: false,
                }],
                ..NodeSetup::new(NodeKeys::generate(&mut seeded(6)))
            },
            3,
        );
        Tier { net, operator, master_keys, local_keys, viewer, master, local, agents }
    }

    fn admin(&mut self, keys: &NodeKeys, request: PolicyAdmin) -> Option<PolicyAdminReply> {
        let at = self.net.now.wall;
        self.admin_at(keys, at, request)
    }

    /// An admin request made at `at`, signed with `keys`, on a channel `keys` opens.
    fn admin_at(&mut self, keys: &NodeKeys, at: WallClock, request: PolicyAdmin) -> Option<PolicyAdminReply> {
        let client = self.net.client(MASTER_ADDR, keys, self.master_keys.public());
        let body = PolicyAdminRequest { at, request };
        let signed = Signed::sign(body, keys).expect("signs");
        self.net.send(client, &wire::encode(&PolicyWire::Admin(signed)).expect("encodes"));
        let End::Client(c) = &self.net.ends[client] else { return None };
        match wire::decode::<PolicyWire>(c.received.first()?) {
            Ok(PolicyWire::AdminReply(reply)) => Some(reply),
            _ => None,
        }
    }
}

#[test]
fn a_policy_at_the_master_reaches_the_agents_file_through_a_local() {
    let mut tier = Tier::start(false);
    tier.net.run_for(Duration::from_secs(30));
    let file =
        String::from_utf8(tier.net.files.get(POLICY_FILE).cloned().unwrap_or_default()).expect("utf-8");
    let written = PolicyFile::parse(&file).expect("the file is the TOML an agent writes");
    assert_eq!(written.params["firewall.default"], "deny", "{file:?}");
    let agent = tier.net.node(tier.agents).policy_agents().next().expect("an agent");
    assert!(agent.applied().is_some_and(|p| p.params["firewall.default"] == "deny"));
    assert!(tier.net.logs.iter().any(|(i, e)| *i == tier.agents && matches!(e, Event::PolicyApplied { .. })));
    // The local stored what it got, and the master kept each sync for history.
    assert!(tier.net.persisted.iter().any(|(i, r)| *i == tier.local && matches!(r, Record::Policy(_))));
    assert!(
        tier.net
            .persisted
            .iter()
            .any(|(i, r)| *i == tier.master && matches!(r, Record::PolicyHistory { .. }))
    );

    // An operator's change at the master travels the same way.
    let created = tier.admin(&tier.operator.clone(), PolicyAdmin::Create(policy("allow", 1)));
    assert_eq!(created, Some(PolicyAdminReply::Created));
    tier.net.run_for(Duration::from_secs(30));
    let file = String::from_utf8(tier.net.files[POLICY_FILE].clone()).expect("utf-8");
    let written = PolicyFile::parse(&file).expect("the file is the TOML an agent writes");
    assert_eq!(written.params["firewall.default"], "allow", "{file:?}");
}

#[test]
fn a_stranger_gets_no_channel_to_a_policy_listener() {
    let mut tier = Tier::start(false);
    let stranger = NodeKeys::generate(&mut seeded(404));
    let reply = tier.admin(&stranger, PolicyAdmin::List);
    assert_eq!(reply, None);
    let refused = tier.net.logs.iter().any(|(i, e)| {
        *i == tier.master && matches!(e, Event::ConnFailed { error, .. } if error.contains("not trusted"))
    });
    assert!(refused, "{:?}", tier.net.logs);
}

#[test]
fn a_policy_admin_request_not_signed_by_an_operator_or_stale_is_refused_counted_and_not_acted_on() {
    let mut tier = Tier::start(false);
    tier.net.run_for(Duration::from_secs(5));
    let rejected = |tier: &Tier, kind: RejectKind| {
        let server = tier.net.node(tier.master).policy_server().expect("the master");
        server.rejected().get(&kind).copied().unwrap_or(0)
    };
    // The local may open a channel to the master (it is a child), but it is no operator.
    let local = tier.local_keys.clone();
    let reply = tier.admin(&local, PolicyAdmin::Create(policy("allow", 7)));
    assert!(matches!(&reply, Some(PolicyAdminReply::Error(e)) if e.contains("operator")), "{reply:?}");
    assert_eq!(rejected(&tier, RejectKind::AdminNotOperator), 1);
    // The operator's own request, made ten minutes ago: a replay, or a clock gone wrong.
    let operator = tier.operator.clone();
    let stale = WallClock(tier.net.now.wall.0 - 600_000);
    let reply = tier.admin_at(&operator, stale, PolicyAdmin::Create(policy("allow", 8)));
    assert!(matches!(&reply, Some(PolicyAdminReply::Error(e)) if e.contains("stale")), "{reply:?}");
    assert_eq!(rejected(&tier, RejectKind::AdminStale), 1);
    let versions: Vec<u64> = tier
        .net
        .node(tier.master)
        .policy_server()
        .expect("the master")
        .policies()
        .map(|p| p.version)
        .collect();
    assert_eq!(versions, [1], "nothing was created");
}

#[test]
fn a_viewer_gets_a_channel_to_the_master_reads_history_and_changes_nothing() {
    let mut tier = Tier::start(false);
    tier.net.run_for(Duration::from_secs(30));
    let viewer = tier.viewer.clone();
    let history = tier.admin(&viewer, PolicyAdmin::History { since: None, until: None });
    assert!(
        matches!(&history, Some(PolicyAdminReply::History(points))
            if !points.is_empty() && points.iter().all(|p| p.local == "local")),
        "{history:?}"
    );
    let status = tier.admin(&viewer, PolicyAdmin::Status { current: false, since: None });
    assert!(matches!(&status, Some(PolicyAdminReply::Status(_))), "{status:?}");
    let reply = tier.admin(&viewer, PolicyAdmin::Create(policy("allow", 9)));
    assert!(matches!(&reply, Some(PolicyAdminReply::Error(e)) if e.contains("viewer")), "{reply:?}");
    let server = tier.net.node(tier.master).policy_server().expect("the master");
    assert_eq!(server.rejected().get(&RejectKind::AdminNotAllowed), Some(&1));
    assert_eq!(server.policies().map(|p| p.version).collect::<Vec<_>>(), [1], "nothing was created");
}

#[test]
fn an_agent_whose_policy_file_cannot_be_written_reports_the_apply_as_failed() {
    let mut tier = Tier::start(true);
    tier.net.run_for(Duration::from_secs(30));
    let agent = tier.net.node(tier.agents).policy_agents().next().expect("an agent");
    assert!(agent.applied().is_none());
    assert!(
        agent.apply_error().is_some_and(|e| e.contains("permission denied")),
        "{:?}",
        agent.apply_error()
    );
    let failed =
        tier.net.logs.iter().any(|(i, e)| *i == tier.agents && matches!(e, Event::PolicyApplyFailed { .. }));
    assert!(failed);
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let run = || {
        let mut tier = Tier::start(false);
        tier.net.run_for(Duration::from_secs(25));
        (tier.net.files.clone(), tier.net.persisted.len(), format!("{:?}", tier.net.logs))
    };
    assert_eq!(run(), run());
}

#[test]
fn a_current_status_in_the_first_sync_window_counts_the_locals_agents_asked_now() {
    // Hour-long windows: the local's periodic sync is far off, yet it keeps its channel to the
    // master open from the start (with a sync as its first message), so the master asks it now.
    let mut tier = Tier::start_with(false, Duration::from_secs(3600));
    tier.net.run_for(Duration::from_secs(5));
    let master = tier.net.node(tier.master).policy_server().expect("the master");
    assert_eq!(master.syncs_received(), 1, "the local synced once, when its channel opened");
    let operator = tier.operator.clone();
    let Some(PolicyAdminReply::Status(now)) =
        tier.admin(&operator, PolicyAdmin::Status { current: true, since: None })
    else {
        panic!("no current status")
    };
    assert!(!now.partial(), "the local answered at once: {now:?}");
    assert_eq!((now.aggregate.agents(), now.not_reporting()), (1, 0), "{now:?}");
    // The stored status holds only that first sync, taken before the agent reported.
    let Some(PolicyAdminReply::Status(stored)) =
        tier.admin(&operator, PolicyAdmin::Status { current: false, since: None })
    else {
        panic!("no stored status")
    };
    assert_eq!(stored.aggregate.agents(), 0, "{stored:?}");

    // The channel breaks: the local dials again after its backoff and syncs on the new channel,
    // without waiting for its next window.
    tier.net.break_connections(tier.master);
    tier.net.run_for(Duration::from_secs(60));
    let master = tier.net.node(tier.master).policy_server().expect("the master");
    assert_eq!(master.syncs_received(), 2, "a sync on the new channel");
    let Some(PolicyAdminReply::Status(now)) =
        tier.admin(&operator, PolicyAdmin::Status { current: true, since: None })
    else {
        panic!("no current status")
    };
    assert!(!now.partial() && now.aggregate.agents() == 1, "{now:?}");
}

#[test]
fn an_agent_whose_server_stops_answering_warns_and_says_when_it_answers_again() {
    let mut tier = Tier::start(false);
    tier.net.run_for(Duration::from_secs(10));
    let said = |tier: &Tier| -> Vec<Event> {
        let unreachable = |e: &Event| {
            matches!(e, Event::PolicyServerUnreachable { .. } | Event::PolicyServerReachable { .. })
        };
        tier.net
            .logs
            .iter()
            .filter(|(i, e)| *i == tier.agents && unreachable(e))
            .map(|(_, e)| e.clone())
            .collect()
    };
    assert!(said(&tier).is_empty(), "the local answers: {:?}", said(&tier));

    // The local goes away: nothing listens at its address any more.
    let listener = tier.net.listening.remove(LOCAL_ADDR).expect("the local listens");
    tier.net.break_connections(tier.local);
    tier.net.run_for(Duration::from_secs(30));
    let warned = said(&tier);
    let [first, ..] = warned.as_slice() else { panic!("no warning: {:?}", tier.net.logs) };
    let Event::PolicyServerUnreachable { agent, server, unanswered, last_heard } = first else {
        panic!("{first:?}")
    };
    assert_eq!((agent.as_str(), server.as_str(), *unanswered), ("a0", "local", 2));
    assert!(last_heard.is_some(), "it answered before");
    // A warning, at the level a node logs by default, in words (no debug-printed options).
    assert_eq!(first.level(), Level::Warn);
    let text = first.to_string();
    assert!(
        text.starts_with("a0: cannot reach its policy server local: no answer to its last 2 polls"),
        "{text}"
    );
    assert!(text.contains("it last answered at") && !text.contains("Some("), "{text}");
    // Not at every poll: 15 polls went by, said at the 2nd and the 12th unanswered.
    assert_eq!(warned.len(), 2, "{warned:?}");

    tier.net.listening.insert(LOCAL_ADDR.into(), listener);
    tier.net.run_for(Duration::from_secs(30));
    let back = said(&tier);
    let Some(last) = back.last() else { panic!("nothing said") };
    assert!(matches!(last, Event::PolicyServerReachable { .. }), "{back:?}");
    assert_eq!(last.level(), Level::Info);
    assert!(last.to_string().starts_with("a0: its policy server local answers again, after "), "{last}");
}
