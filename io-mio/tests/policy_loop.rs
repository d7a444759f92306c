//! The policy roles on real sockets, in-process. One tier shape for every test: the master,
//! local-00 under it, local-01 behind local-00, local-02 beside local-00, and agents a0..a2 on
//! local-00, local-01 and local-02. Each server runs on its own thread and can be stopped and
//! started again over the same data directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cohort_core::NodeKeys;
use cohort_core::WallClock;
use cohort_core::policy::document::{Policy, PolicyTarget, Scope};
use cohort_core::policy::wire::{PolicyAdmin, PolicyAdminReply, PolicyAdminRequest, PolicyWire};
use cohort_core::rng::seeded;
use cohort_core::signed::Signed;
use cohort_io_mio::channel_client::ChannelClient;
use cohort_io_mio::error::NodeError;
use cohort_io_mio::keyfile;
use cohort_io_mio::node_config::{
    AgentsFile, KeyRef, NodeConfig, PolicyAgentConfig, PolicyServerConfig, TierFile, TierOperator, TierServer,
};
use cohort_io_mio::reactor::{NodeHandle, Reactor};
use cohort_io_mio::roles;
use cohort_io_mio::store::Store;

const NAMES: [&str; 4] = ["master", "local-00", "local-01", "local-02"];
const PARENTS: [Option<&str>; 4] = [None, Some("master"), Some("local-00"), Some("master")];
const AGENT_SERVER: [&str; 3] = ["local-00", "local-01", "local-02"];
const PATIENCE: Duration = Duration::from_secs(20);

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    l.local_addr().expect("addr")
}

fn hex_keys(name: &str, keys: &NodeKeys) -> TierOperator {
    let p = keys.public();
    TierOperator { name: name.into(), ed25519: hex::encode(p.signing), x25519: hex::encode(p.agreement) }
}

fn base_config(dir: &Path) -> NodeConfig {
    let unused: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    NodeConfig::new(unused, unused, dir.to_owned(), dir.join("node.key"), "policy")
}

fn wall() -> WallClock {
    WallClock(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as u64
    )
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < PATIENCE, "{what}: not within {PATIENCE:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

type Running = (NodeHandle, JoinHandle<Result<(), NodeError>>);

struct Tier {
    dir: tempfile::TempDir,
    root: PathBuf,
    operator: NodeKeys,
    /// Listed in the master's node.toml as a viewer: it may read status and history only.
    viewer: NodeKeys,
    keys: Vec<NodeKeys>,
    addrs: Vec<SocketAddr>,
    configs: Vec<NodeConfig>,
    servers: Vec<Option<Running>>,
    agents: Option<Running>,
}

impl Tier {
    /// Writes the tier and starts every server and the agents. `window_s` is every local's sync
    /// window (no jitter).
    fn start(seed: u64, window_s: u64) -> Tier {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_owned();
        let mut rng = seeded(seed);
        let operator = NodeKeys::generate(&mut rng);
        let keys: Vec<NodeKeys> = NAMES.iter().map(|_| NodeKeys::generate(&mut rng)).collect();
        let addrs: Vec<SocketAddr> = NAMES.iter().map(|_| free_addr()).collect();
        let tier = TierFile {
            servers: (0..NAMES.len())
                .map(|i| {
                    let TierOperator { ed25519, x25519, .. } = hex_keys(NAMES[i], &keys[i]);
                    TierServer {
                        name: NAMES[i].into(),
                        address: addrs[i],
                        ed25519,
                        x25519,
                        parent: PARENTS[i].map(str::to_owned),
                    }
                })
                .collect(),
            operators: vec![hex_keys("ops", &operator)],
        };
        let tier_file = root.join("tier.toml");
        std::fs::write(&tier_file, toml::to_string(&tier).expect("toml")).expect("written");
        let agent_keys: Vec<NodeKeys> = AGENT_SERVER.iter().map(|_| NodeKeys::generate(&mut rng)).collect();
        // Its own seed, so every other key stays as the seed made it.
        let viewer = NodeKeys::generate(&mut seeded(seed ^ 0x7669_6577));

        let mut configs = Vec::new();
        for (i, name) in NAMES.iter().enumerate() {
            let node_dir = root.join(name);
            std::fs::create_dir_all(&node_dir).expect("dir");
            keyfile::write_key_file(&node_dir.join("node.key"), &keys[i], false).expect("key");
            let served = (0..AGENT_SERVER.len())
                .filter(|a| AGENT_SERVER[*a] == *name)
                .map(|a| hex_keys(&format!("a{a}"), &agent_keys[a]))
                .collect();
            let agents_file = node_dir.join("agents.toml");
            std::fs::write(&agents_file, toml::to_string(&AgentsFile { agents: served }).expect("toml"))
                .expect("written");
            let mut config = base_config(&node_dir);
            config.policy_server = Some(PolicyServerConfig {
                name: (*name).into(),
                listen: addrs[i],
                tier_file: tier_file.clone(),
                agents_file: Some(agents_file),
                sync_window_s: window_s,
                sync_jitter_s: 0,
                viewers: if i == 0 {
                    let p = viewer.public();
                    vec![KeyRef { ed25519: hex::encode(p.signing), x25519: hex::encode(p.agreement) }]
                } else {
                    Vec::new()
                },
                alerts: None,
            });
            configs.push(config);
        }
        let agent_dir = root.join("agents");
        std::fs::create_dir_all(&agent_dir).expect("dir");
        keyfile::write_key_file(&agent_dir.join("node.key"), &agent_keys[0], false).expect("key");
        let mut agents_config = base_config(&agent_dir);
        for (a, server) in AGENT_SERVER.iter().enumerate() {
            let key_file = agent_dir.join(format!("a{a}.key"));
            keyfile::write_key_file(&key_file, &agent_keys[a], false).expect("key");
            agents_config.policy_agents.push(PolicyAgentConfig {
                name: format!("a{a}"),
                key_file,
                server: (*server).into(),
                tier_file: tier_file.clone(),
                os: None,
                os_version: None,
                role: "web".into(),
                policy_file: agent_dir.join(format!("a{a}.policy")),
                hook: vec![
                    "touch".into(),
                    agent_dir.join(format!("a{a}.hooked")).to_string_lossy().into_owned(),
                ],
                poll_interval_s: 1,
            });
        }
        let mut tier =
            Tier { dir, root, operator, viewer, keys, addrs, configs, servers: Vec::new(), agents: None };
        for i in 0..NAMES.len() {
            let running = run(&tier.configs[i]);
            tier.servers.push(Some(running));
        }
        tier.agents = Some(run(&agents_config));
        tier
    }

    fn stop_server(&mut self, i: usize) {
        let (handle, thread) = self.servers[i].take().expect("running");
        handle.shutdown().expect("stops");
        thread.join().expect("thread").expect("clean stop");
    }

    fn restart_server(&mut self, i: usize) {
        self.stop_server(i);
        self.servers[i] = Some(run(&self.configs[i]));
    }

    fn admin_as(&self, server: usize, operator: &NodeKeys, request: PolicyAdmin) -> PolicyAdminReply {
        let mut client = ChannelClient::connect(
            self.addrs[server],
            self.keys[server].public(),
            operator,
            Duration::from_secs(5),
        )
        .expect("connects");
        let signed = Signed::sign(PolicyAdminRequest { at: wall(), request }, operator).expect("signs");
        client.send(&PolicyWire::Admin(signed)).expect("sends");
        match client.recv::<PolicyWire>(Duration::from_secs(10)).expect("an answer") {
            PolicyWire::AdminReply(reply) => reply,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn admin(&self, server: usize, request: PolicyAdmin) -> PolicyAdminReply {
        self.admin_as(server, &self.operator, request)
    }

    fn held_at(&self, server: usize, id: &str) -> Option<u64> {
        match self.admin(server, PolicyAdmin::List) {
            PolicyAdminReply::Policies(list) => list.iter().find(|p| p.id == id).map(|p| p.version),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn agent_file(&self, a: usize) -> PathBuf {
        self.root.join("agents").join(format!("a{a}.policy"))
    }

    /// Whether agent `a`'s policy file, read as the TOML it is, sets `key` to `value`.
    fn agent_has(&self, a: usize, key: &str, value: &str) -> bool {
        std::fs::read_to_string(self.agent_file(a)).is_ok_and(|text| {
            cohort_core::policy::policy_file::PolicyFile::parse(&text)
                .is_ok_and(|file| file.params.get(key).is_some_and(|v| v == value))
        })
    }

    /// Stops everything; the data stays until the returned directory drops.
    fn stop(mut self) -> tempfile::TempDir {
        for i in 0..NAMES.len() {
            if self.servers[i].is_some() {
                self.stop_server(i);
            }
        }
        let (handle, thread) = self.agents.take().expect("running");
        handle.shutdown().expect("stops");
        thread.join().expect("thread").expect("clean stop");
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"))
    }
}

fn run(config: &NodeConfig) -> Running {
    let mut reactor = Reactor::new().expect("a loop");
    reactor.host(|slot| roles::start(config, slot)).expect("starts");
    (reactor.handle(), std::thread::spawn(move || reactor.run()))
}

fn firewall(value: &str) -> Policy {
    Policy {
        id: "fw".into(),
        version: 1,
        author: String::new(),
        scope: Scope::Global,
        target: PolicyTarget::default(),
        params: [("firewall.default".to_owned(), value.to_owned())].into(),
        retired: false,
    }
}

#[test]
fn a_policy_from_the_operator_reaches_every_agents_file_and_status_counts_them() {
    let tier = Tier::start(9, 1);
    assert_eq!(tier.admin(0, PolicyAdmin::Create(firewall("deny"))), PolicyAdminReply::Created);
    // A stranger gets no channel at all: the listener admits the tier and its operators only.
    let stranger = NodeKeys::generate(&mut seeded(99));
    let refused =
        ChannelClient::connect(tier.addrs[0], tier.keys[0].public(), &stranger, Duration::from_secs(5))
            .and_then(|mut client| {
                let request = PolicyAdminRequest { at: wall(), request: PolicyAdmin::List };
                client.send(&PolicyWire::Admin(Signed::sign(request, &stranger).expect("signs")))?;
                client.recv::<PolicyWire>(Duration::from_secs(5))
            });
    assert!(refused.is_err(), "a stranger was answered: {refused:?}");

    wait_until("the policy reaches every agent's file", || {
        (0..3).all(|a| tier.agent_has(a, "firewall.default", "deny"))
    });
    let hooked = |a: usize| tier.root.join("agents").join(format!("a{a}.hooked")).exists();
    wait_until("each agent's hook ran", || (0..3).all(hooked));

    wait_until("current status counts all 3 agents", || {
        matches!(
            tier.admin(0, PolicyAdmin::Status { current: true, since: None }),
            PolicyAdminReply::Status(status) if status.aggregate.agents() == 3 && !status.partial()
        )
    });
    let master_db = tier.root.join("master/node.db");
    let _kept = tier.stop();
    let store = Store::open(&master_db).expect("db");
    assert!(store.policy_history_count().expect("count") >= 1, "the master stored sync history");
}

/// With hour-long windows nothing syncs by schedule here: what moves is a policy climbing from
/// where it was made, and the syncs an operator asks for.
#[test]
fn a_policy_made_at_a_nested_local_reaches_every_branch_and_survives_a_master_restart() {
    let mut tier = Tier::start(11, 3600);
    // Made at local-01 (behind local-00): it climbs to local-00 and the master at once.
    assert_eq!(tier.admin(2, PolicyAdmin::Create(firewall("deny"))), PolicyAdminReply::Created);
    wait_until("the master holds the policy made at local-01", || tier.held_at(0, "fw") == Some(1));
    wait_until("the agents on its own branch apply it", || {
        tier.agent_has(0, "firewall.default", "deny") && tier.agent_has(1, "firewall.default", "deny")
    });
    // local-02 is on another branch: only a sync brings it there.
    assert_eq!(tier.held_at(3, "fw"), None, "local-02 has not synced yet");
    assert_eq!(tier.admin(3, PolicyAdmin::SyncNow), PolicyAdminReply::SyncStarted);
    wait_until("a2 on local-02 applies it after the sync", || tier.agent_has(2, "firewall.default", "deny"));
    // The master refuses a sync request: it has no parent.
    assert!(matches!(tier.admin(0, PolicyAdmin::SyncNow), PolicyAdminReply::Error(_)));

    // local-02's sync reached the master's history.
    let historical = |tier: &Tier| match tier.admin(0, PolicyAdmin::Status { current: false, since: None }) {
        PolicyAdminReply::Status(status) => status,
        other => panic!("unexpected {other:?}"),
    };
    assert!(historical(&tier).as_of.contains_key("local-02"));
    // The viewer (the web console's gateway) reads the same in the history; it may not write.
    let viewer = tier.viewer.clone();
    let history =
        |tier: &Tier| match tier.admin_as(0, &viewer, PolicyAdmin::History { since: None, until: None }) {
            PolicyAdminReply::History(points) => points,
            other => panic!("unexpected {other:?}"),
        };
    let before = history(&tier);
    assert!(before.iter().any(|p| p.local == "local-02"), "{before:?}");
    let refused = tier.admin_as(0, &viewer, PolicyAdmin::Create(firewall("allow")));
    assert!(matches!(&refused, PolicyAdminReply::Error(e) if e.contains("viewer")), "{refused:?}");

    tier.restart_server(0);
    assert_eq!(tier.held_at(0, "fw"), Some(1), "the master serves its policies after a restart");
    assert!(
        historical(&tier).as_of.contains_key("local-02"),
        "historical status still has local-02's last sync after a restart"
    );
    let after = history(&tier);
    assert!(after.starts_with(&before), "the history from before the restart was restored: {after:?}");
    // A change after the restart gets the next version, so every server takes it.
    assert_eq!(tier.admin(0, PolicyAdmin::Create(firewall("allow"))), PolicyAdminReply::Created);
    assert_eq!(tier.held_at(0, "fw"), Some(2));
    assert_eq!(tier.admin(3, PolicyAdmin::SyncNow), PolicyAdminReply::SyncStarted);
    wait_until("a2 applies version 2", || tier.agent_has(2, "firewall.default", "allow"));
    tier.stop();
}

/// A server that accepts and hangs up at once: the agent keeps trying at its pace rather than
/// spinning on reconnects or giving up. (The backoff's own pacing is unit-tested in `backoff`.)
#[test]
fn an_agent_whose_server_hangs_up_keeps_retrying_without_spinning() {
    let mut tier = Tier::start(13, 3600);
    tier.stop_server(3);
    let listener = std::net::TcpListener::bind(tier.addrs[3]).expect("local-02's address is free again");
    listener.set_nonblocking(true).expect("nonblocking");
    let started = Instant::now();
    let mut attempts: Vec<Duration> = Vec::new();
    while started.elapsed() < Duration::from_secs(5) {
        match listener.accept() {
            Ok((stream, _)) => {
                attempts.push(started.elapsed());
                drop(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
    assert!((2..=10).contains(&attempts.len()), "attempts at {attempts:?}");
    let _kept = tier.stop();
}
