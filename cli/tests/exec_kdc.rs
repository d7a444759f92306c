//! The KDC as its own role with its own key, on another node than the gateway (`cohort init`
//! puts it on m1): login and exec go through it; the gateway's node holds no password hash and
//! no ticket-signing key in any file; and killing the gateway between login and exec and starting
//! it again loses nothing, since the gateway kept nothing: the client's credential still works.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{TestCluster, exec};

/// Every byte under `dir`, file by file.
fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("reads the directory").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path.display().to_string(), bytes));
        }
    }
    out
}

#[test]
fn the_kdc_on_another_node_logs_in_and_issues_tickets_and_the_gateway_holds_neither_hash_nor_key() {
    let mut cluster = TestCluster::init_exec(2, 3);
    cluster.start_all();
    let root = cluster.root();
    let state = cluster.dir.path().join("client");
    cluster.login(&state);
    let out = exec(&state, &["-w", "h[01-03]", "--", "echo", "hi"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("3 hosts: 3 ok"), "{stdout}");

    // The gateway goes down hard between two requests and comes back: the credential the
    // client holds still works, because the gateway held nothing of it.
    cluster.kill(0);
    cluster.start(0);
    let started = Instant::now();
    loop {
        let out = exec(&state, &["-w", "h[01-03]", "--", "echo", "again"]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            assert!(stdout.contains("3 hosts: 3 ok"), "{stdout}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "exec after the gateway's restart failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // What logs in (an Argon2id hash) and what mints tickets (the KDC's secret keys) is on m1
    // only; nothing under the gateway's directory holds either.
    let kdc_key = std::fs::read_to_string(root.join("m1/kdc.key")).expect("the KDC's key is on m1");
    let secrets: Vec<&str> = kdc_key
        .lines()
        .filter_map(|l| l.strip_prefix("ed25519-secret ").or_else(|| l.strip_prefix("x25519-secret ")))
        .collect();
    assert_eq!(secrets.len(), 2);
    let secret_bytes: Vec<Vec<u8>> = secrets.iter().map(|s| hex::decode(s).expect("hex")).collect();
    let kdc_store = std::fs::read(root.join("m1/node.db")).expect("the KDC's store is on m1");
    assert!(kdc_store.windows(10).any(|w| w == b"$argon2id$"), "the hashes are in the KDC's store");
    let gateway_files = files_under(&root.join("m0"));
    assert!(gateway_files.len() >= 3, "{:?}", gateway_files.iter().map(|f| &f.0).collect::<Vec<_>>());
    for (name, bytes) in &gateway_files {
        assert!(!bytes.windows(10).any(|w| w == b"$argon2id$"), "{name} holds a password hash");
        for secret in &secrets {
            assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "{name} holds the KDC key");
        }
        for secret in &secret_bytes {
            assert!(!bytes.windows(32).any(|w| w == secret.as_slice()), "{name} holds the KDC key (raw)");
        }
    }
}
