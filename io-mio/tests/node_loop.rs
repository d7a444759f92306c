//! The node's event loop in-process: it serves status over the admin channel and stops when
//! another thread asks through its handle (the mio waker path).

use std::collections::BTreeMap;
use std::time::Duration;

use cohort_core::NodeKeys;
use cohort_core::admin::{AdminRequest, AdminResponse};
use cohort_core::member::MemberInfo;
use cohort_core::member::genesis::{genesis_config, genesis_records};
use cohort_core::rng::seeded;
use cohort_io_mio::node_config::NodeConfig;
use cohort_io_mio::reactor::Reactor;
use cohort_io_mio::roles;
use cohort_io_mio::store::Store;
use cohort_io_mio::{admin_client, keyfile};

#[test]
fn a_node_serves_status_and_stops_on_a_local_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = seeded(5);
    let operator = NodeKeys::generate(&mut rng);
    let keys = NodeKeys::generate(&mut rng);
    let free = || {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        probe.local_addr().expect("address")
    };
    let (member_addr, addr) = (free(), free());
    let info = MemberInfo { name: "solo".into(), identity: keys.public(), address: member_addr.to_string() };
    let config = genesis_config("c", "ops", &operator, [info], BTreeMap::new());
    let record =
        genesis_records(&config, &operator, &mut rng).expect("seals").into_values().next().expect("one");
    keyfile::write_key_file(&dir.path().join("node.key"), &keys, false).expect("key");
    Store::open(&dir.path().join("node.db")).expect("db").save_member(&record, 0).expect("saved");
    let node_config = NodeConfig {
        heartbeat_ms: 100,
        admin_handshake_timeout_ms: 2000,
        admin_max_handshaking: 4,
        ..NodeConfig::new(member_addr, addr, dir.path().to_owned(), dir.path().join("node.key"), "member")
    };
    let mut reactor = Reactor::new().expect("a loop");
    reactor.host(|slot| roles::start(&node_config, slot)).expect("starts");
    let handle = reactor.handle();
    let running = std::thread::spawn(move || reactor.run());

    let answer =
        admin_client::request(addr, keys.public(), &operator, &AdminRequest::Status, Duration::from_secs(5))
            .expect("the operator gets an answer");
    let AdminResponse::Status(status) = answer else { panic!("expected a status, got {answer:?}") };
    assert_eq!(status.cluster_id, "c");
    assert_eq!(status.active, config.version);

    // A key neither operator nor node is refused.
    let stranger = NodeKeys::generate(&mut rng);
    assert!(
        admin_client::request(addr, keys.public(), &stranger, &AdminRequest::Status, Duration::from_secs(5))
            .is_err()
    );

    handle.shutdown().expect("woken");
    running.join().expect("the loop thread").expect("a clean stop");
}
