//! What travels between members on real sockets. Each member listens on a port of its own and a
//! recording relay stands on its roster address, so every member-to-member connection passes
//! through a relay, both directions recorded. Over heartbeats, a change and its install on all
//! three, the recorded bytes hold no configuration key or value, no roster entry (address, key,
//! node id) and no version string in clear.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{TestCluster, active, free_base_port, run};

type Recording = Arc<Mutex<Vec<u8>>>;

/// Accepts on `listener` for ever, relaying each connection to `to` and recording both ways.
fn relay(listener: TcpListener, to: SocketAddr, recording: Recording) {
    std::thread::spawn(move || {
        for inbound in listener.incoming().flatten() {
            let Ok(outbound) = TcpStream::connect(to) else { continue };
            for (mut from, mut into) in [
                (inbound.try_clone().expect("clone"), outbound.try_clone().expect("clone")),
                (outbound, inbound),
            ] {
                let recording = recording.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || into.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        recording.lock().expect("not poisoned").extend_from_slice(&buf[..n]);
                    }
                    let _ = into.shutdown(std::net::Shutdown::Both);
                });
            }
        }
    });
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn member_traffic_on_loopback_carries_no_configuration_roster_or_version_in_clear() {
    let mut cluster = TestCluster::init(3, 200);
    let recording: Recording = Arc::default();
    let cluster_toml = cluster.root().join("cluster.toml");
    let file: toml::Value =
        toml::from_str(&std::fs::read_to_string(&cluster_toml).expect("cluster.toml")).expect("toml");
    let members = file["members"].as_array().expect("members").clone();
    for (i, member) in members.iter().enumerate() {
        let roster: SocketAddr = member["address"].as_str().expect("address").parse().expect("an address");
        let own = SocketAddr::from(([127, 0, 0, 1], free_base_port(1)));
        let config = cluster.config(i);
        let text = std::fs::read_to_string(&config).expect("node.toml");
        let moved = text.replace(&format!("listen = \"{roster}\""), &format!("listen = \"{own}\""));
        assert_ne!(moved, text, "node.toml names its listen address");
        std::fs::write(&config, moved).expect("node.toml");
        relay(TcpListener::bind(roster).expect("the roster address is free"), own, recording.clone());
    }
    for i in 0..3 {
        cluster.start(i);
    }
    cluster.wait_for("three members up", Duration::from_secs(20), |c| (0..3).all(|i| c.status(i).is_some()));
    let (key, value) = ("probe.wire-secret", "value-c0h0rt-9f4e2a71");
    let mut set = vec!["admin".to_owned(), "set".into(), format!("{key}={value}"), "--wait".into()];
    set.extend(cluster.operator_args("m0"));
    run(&set);
    let version = active(&cluster.status(0).expect("answers")).expect("an active version");
    cluster.wait_for("all three installed it", Duration::from_secs(20), |c| {
        (0..3).all(|i| c.status(i).as_ref().and_then(active).as_deref() == Some(version.as_str()))
    });
    // A few more heartbeats on the installed version.
    std::thread::sleep(Duration::from_secs(1));

    let captured = recording.lock().expect("not poisoned").clone();
    assert!(captured.len() > 10_000, "the relays saw the member traffic: {} bytes", captured.len());
    let mut secrets: Vec<(String, Vec<u8>)> = vec![
        ("the key".into(), key.into()),
        ("the value".into(), value.into()),
        ("the version string".into(), version.clone().into()),
    ];
    for (i, member) in members.iter().enumerate() {
        for field in ["address", "admin", "ed25519", "x25519"] {
            let text = member[field].as_str().expect("a string").to_owned();
            secrets.push((format!("m{i}'s {field}"), text.clone().into()));
            if let Ok(raw) = hex::decode(&text) {
                secrets.push((format!("m{i}'s raw {field}"), raw));
            }
        }
        let id = cluster.status(i).expect("answers")["node_id"].as_str().expect("node id").to_owned();
        secrets.push((format!("m{i}'s raw node id"), hex::decode(&id).expect("hex")));
        secrets.push((format!("m{i}'s node id"), id.into()));
    }
    for (what, bytes) in &secrets {
        assert!(!contains(&captured, bytes), "{what} appears in clear on the wire");
    }
}
