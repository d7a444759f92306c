//! Hostile admin clients against a real node: garbage, a 4 GiB length prefix, and handshakes
//! that never finish are each dropped with a logged reason while the node goes on serving; open
//! handshakes are bounded in number and in time.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::TestCluster;

fn admin_addr(cluster: &TestCluster) -> SocketAddr {
    let text = std::fs::read_to_string(cluster.config(0)).expect("node.toml");
    let line = text.lines().find(|l| l.starts_with("admin_listen")).expect("admin_listen");
    line.split('"').nth(1).expect("quoted address").parse().expect("an address")
}

/// Waits until the node closes `stream` (EOF or reset); returns how long that took.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    stream.set_read_timeout(Some(limit)).expect("timeout");
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) if started.elapsed() < limit => return Some(started.elapsed()),
            Ok(_) => continue,
            _ => return None,
        }
    }
}

fn set_node_limits(cluster: &TestCluster, timeout_ms: u64, max_handshaking: usize) {
    let path = cluster.config(0);
    let text = std::fs::read_to_string(&path).expect("node.toml");
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("admin_handshake_timeout_ms") {
                format!("admin_handshake_timeout_ms = {timeout_ms}")
            } else if l.starts_with("admin_max_handshaking") {
                format!("admin_max_handshaking = {max_handshaking}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(path, text).expect("written");
}

#[test]
fn hostile_clients_are_dropped_and_the_node_goes_on_serving() {
    let mut cluster = TestCluster::init(1, 200);
    set_node_limits(&cluster, 1500, 4);
    cluster.start(0);
    cluster.wait_for("node up", Duration::from_secs(20), |c| c.status(0).is_some());
    let addr = admin_addr(&cluster);

    // Garbage: not a Noise handshake.
    let mut garbage = TcpStream::connect(addr).expect("connects");
    garbage.write_all(&[0, 0, 0, 40]).expect("writes");
    garbage.write_all(&[0x5a; 40]).expect("writes");
    assert!(closed_within(&mut garbage, Duration::from_secs(5)).is_some(), "garbage client not dropped");

    // A 4 GiB length prefix.
    let mut huge = TcpStream::connect(addr).expect("connects");
    huge.write_all(&u32::MAX.to_be_bytes()).expect("writes");
    assert!(closed_within(&mut huge, Duration::from_secs(5)).is_some(), "4 GiB prefix not dropped");
    assert!(cluster.status(0).is_some(), "node still serving");

    // Handshakes that never finish: bounded in number (4 here) …
    let mut idle: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).expect("connects")).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = TcpStream::connect(addr).expect("the kernel accepts it");
    let refused = closed_within(&mut extra, Duration::from_secs(1));
    assert!(refused.is_some(), "a fifth open handshake was not refused");
    // … and in time (1.5 s here).
    for stream in &mut idle {
        let took = closed_within(stream, Duration::from_secs(5)).expect("idle handshake dropped");
        assert!(took <= Duration::from_secs(3), "dropped only after {took:?}");
    }
    assert!(cluster.status(0).is_some(), "node still serving after all of it");

    let log = cluster.log_text(0);
    for reason in [
        "frame length prefix says 4294967295 bytes",
        "handshake not finished within",
        "admin connection refused: too many open",
    ] {
        assert!(log.contains(reason), "log lacks `{reason}`:\n{log}");
    }
    // Forty bytes of 0x5a read as a first handshake message with an 8-byte payload.
    assert!(log.contains("the peer sent a handshake payload"), "garbage reason not logged:\n{log}");
}
