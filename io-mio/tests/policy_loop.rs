//! The policy roles on real sockets, in-process: a master, local-00, local-01 behind local-00, and
//! three agents. An operator's policy reaches every agent's file; current global status counts
//! every agent; the master keeps sync history in SQLite.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use cohort_core::NodeKeys;
use cohort_core::WallClock;
use cohort_core::policy::document::{Policy, PolicyTarget, Scope};
use cohort_core::policy::wire::{PolicyAdmin, PolicyAdminReply, PolicyAdminRequest, PolicyWire};
use cohort_core::rng::seeded;
use cohort_core::signed::Signed;
use cohort_io_mio::channel_client::ChannelClient;
use cohort_io_mio::keyfile;
use cohort_io_mio::node::NodeHandle;
use cohort_io_mio::node_config::{
    AgentsFile, NodeConfig, PolicyAgentConfig, PolicyServerConfig, TierFile, TierOperator, TierServer,
};
use cohort_io_mio::policy_runtime::PolicyRuntime;
use cohort_io_mio::store::Store;

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    l.local_addr().expect("addr")
}

fn hex_keys(keys: &NodeKeys) -> (String, String) {
    let p = keys.public();
    (hex::encode(p.signing), hex::encode(p.agreement))
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

fn admin(addr: SocketAddr, master: &NodeKeys, operator: &NodeKeys, request: PolicyAdmin) -> PolicyAdminReply {
    let mut client =
        ChannelClient::connect(addr, master.public(), operator, Duration::from_secs(5)).expect("connects");
    let signed = Signed::sign(PolicyAdminRequest { at: wall(), request }, operator).expect("signs");
    client.send(&PolicyWire::Admin(signed)).expect("sends");
    match client.recv::<PolicyWire>(Duration::from_secs(10)).expect("an answer") {
        PolicyWire::AdminReply(reply) => reply,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_policy_from_the_operator_reaches_every_agents_file_and_status_counts_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = seeded(9);
    let operator = NodeKeys::generate(&mut rng);
    let names = ["master", "local-00", "local-01"];
    let parents = [None, Some("master"), Some("local-00")];
    let keys: Vec<NodeKeys> = names.iter().map(|_| NodeKeys::generate(&mut rng)).collect();
    let addrs: Vec<SocketAddr> = names.iter().map(|_| free_addr()).collect();
    let tier = TierFile {
        servers: (0..3)
            .map(|i| {
                let (ed25519, x25519) = hex_keys(&keys[i]);
                TierServer {
                    name: names[i].into(),
                    address: addrs[i],
                    ed25519,
                    x25519,
                    parent: parents[i].map(str::to_owned),
                }
            })
            .collect(),
        operators: vec![{
            let (ed25519, x25519) = hex_keys(&operator);
            TierOperator { name: "ops".into(), ed25519, x25519 }
        }],
    };
    let tier_file = dir.path().join("tier.toml");
    std::fs::write(&tier_file, toml::to_string(&tier).expect("toml")).expect("written");
    // Agents: a0, a1 on local-00; a2 on local-01.
    let agent_server = ["local-00", "local-00", "local-01"];
    let agent_keys: Vec<NodeKeys> = (0..3).map(|_| NodeKeys::generate(&mut rng)).collect();

    let mut handles: Vec<NodeHandle> = Vec::new();
    let mut threads = Vec::new();
    for i in 0..3 {
        let node_dir = dir.path().join(names[i]);
        std::fs::create_dir_all(&node_dir).expect("dir");
        keyfile::write_key_file(&node_dir.join("node.key"), &keys[i], false).expect("key");
        let served: Vec<TierOperator> = (0..3)
            .filter(|a| agent_server[*a] == names[i])
            .map(|a| {
                let (ed25519, x25519) = hex_keys(&agent_keys[a]);
                TierOperator { name: format!("a{a}"), ed25519, x25519 }
            })
            .collect();
        let agents_file = node_dir.join("agents.toml");
        std::fs::write(&agents_file, toml::to_string(&AgentsFile { agents: served }).expect("toml"))
            .expect("written");
        let mut config = base_config(&node_dir);
        config.policy_server = Some(PolicyServerConfig {
            name: names[i].into(),
            listen: addrs[i],
            tier_file: tier_file.clone(),
            agents_file: Some(agents_file),
            sync_window_s: 1,
            sync_jitter_s: 0,
        });
        let mut runtime = PolicyRuntime::start(&config).expect("server starts");
        handles.push(runtime.handle());
        threads.push(std::thread::spawn(move || runtime.run()));
    }
    let agent_dir = dir.path().join("agents");
    std::fs::create_dir_all(&agent_dir).expect("dir");
    keyfile::write_key_file(&agent_dir.join("node.key"), &agent_keys[0], false).expect("key");
    let mut config = base_config(&agent_dir);
    for a in 0..3 {
        keyfile::write_key_file(&agent_dir.join(format!("a{a}.key")), &agent_keys[a], false).expect("key");
        config.policy_agents.push(PolicyAgentConfig {
            name: format!("a{a}"),
            key_file: agent_dir.join(format!("a{a}.key")),
            server: agent_server[a].into(),
            tier_file: tier_file.clone(),
            os: "linux".into(),
            os_version: "6".into(),
            role: "web".into(),
            policy_file: agent_dir.join(format!("a{a}.policy")),
            hook: vec!["touch".into(), agent_dir.join(format!("a{a}.hooked")).to_string_lossy().into_owned()],
            poll_interval_s: 1,
        });
    }
    let mut runtime = PolicyRuntime::start(&config).expect("agents start");
    handles.push(runtime.handle());
    threads.push(std::thread::spawn(move || runtime.run()));

    let policy = Policy {
        id: "fw".into(),
        version: 1,
        author: String::new(),
        scope: Scope::Global,
        target: PolicyTarget::default(),
        params: [("firewall.default".to_owned(), "deny".to_owned())].into(),
    };
    assert_eq!(admin(addrs[0], &keys[0], &operator, PolicyAdmin::Create(policy)), PolicyAdminReply::Created);
    // A stranger's request is refused.
    let stranger = NodeKeys::generate(&mut rng);
    assert!(matches!(admin(addrs[0], &keys[0], &stranger, PolicyAdmin::List), PolicyAdminReply::Error(_)));

    let started = Instant::now();
    let files: Vec<_> = (0..3).map(|a| agent_dir.join(format!("a{a}.policy"))).collect();
    while !files
        .iter()
        .all(|f| std::fs::read_to_string(f).is_ok_and(|t| t.contains("firewall.default = \"deny\"")))
    {
        assert!(started.elapsed() < Duration::from_secs(20), "the policy did not reach every agent");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!((0..3).all(|a| agent_dir.join(format!("a{a}.hooked")).exists()), "each agent's hook ran");

    // Current status, once every agent's report has climbed the tier.
    let started = Instant::now();
    loop {
        match admin(addrs[0], &keys[0], &operator, PolicyAdmin::Status { current: true, since: None }) {
            PolicyAdminReply::Status(status) if status.aggregate.agents() == 3 && !status.partial() => break,
            other => assert!(
                started.elapsed() < Duration::from_secs(20),
                "status never counted 3 agents: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    for handle in &handles {
        handle.shutdown().expect("stops");
    }
    for thread in threads {
        thread.join().expect("thread").expect("clean stop");
    }
    let store = Store::open(&dir.path().join("master/node.db")).expect("db");
    assert!(store.policy_history_count().expect("count") >= 1, "the master stored sync history");
}
