//! `cohort copy` on real processes and sockets: files reach every host whole and with their mode,
//! each copy is in the audit trail with its SHA-256, and a copy outside the directories the
//! principal's ACL permits is refused on every host and writes nothing. The twenty hosts share
//! this machine's file system, so one destination is written twenty times (each host renames a
//! whole file into place) and `%h` gives each host a file of its own.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{TestCluster, cohort, path_str};
use sha2::{Digest, Sha256};

fn copy(state: &std::path::Path, args: &[&str]) -> (bool, String) {
    let mut full = vec!["copy", "--state-dir", path_str(state)];
    full.extend(args);
    let out = cohort(&full);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn a_copy_leaves_identical_files_with_their_mode_audits_each_hash_and_stays_inside_its_prefix() {
    let mut cluster = TestCluster::init_exec(1, 20);
    cluster.start_all();
    let state = cluster.dir.path().join("client");
    cluster.login(&state);

    let source = cluster.dir.path().join("f");
    let content = b"cohort copy test\nsecond line\n".repeat(100);
    std::fs::write(&source, &content).expect("source");
    std::fs::set_permissions(&source, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let sha = hex::encode(Sha256::digest(&content));
    // The ACL `cohort init` writes permits copies under /tmp.
    let dest = tempfile::Builder::new().prefix("cohort-copy-").tempdir_in("/tmp").expect("dest");
    let dest_path = |name: &str| format!("{}/{name}", path_str(dest.path()));

    let (ok, text) = copy(&state, &[path_str(&source), &dest_path("f"), "-w", "h[01-20]"]);
    assert!(ok, "{text}");
    assert!(text.contains("h[01-20] (20) ok") && text.contains("20 hosts: 20 ok"), "{text}");
    assert_eq!(std::fs::read(dest_path("f")).expect("placed"), content);

    let (ok, text) = copy(&state, &[path_str(&source), &dest_path("f-%h"), "-w", "h[01-20]"]);
    assert!(ok, "{text}");
    for i in 1..=20 {
        let path = dest_path(&format!("f-h{i:02}"));
        assert_eq!(std::fs::read(&path).expect("placed"), content, "{path}");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640, "{path}");
    }
    let leftovers: Vec<String> = std::fs::read_dir(dest.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // Outside /tmp: every host refuses, before anything is written.
    let elsewhere = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("outside /tmp");
    let outside = elsewhere.path().join("not-permitted");
    let outside = path_str(&outside);
    assert!(!outside.starts_with("/tmp/"), "the target dir must lie outside /tmp: {outside}");
    let (ok, text) = copy(&state, &[path_str(&source), outside, "-w", "h[01-03]"]);
    assert!(!ok, "{text}");
    assert!(text.contains("h[01-03] (3) denied") && text.contains("may not write"), "{text}");
    assert!(!std::path::Path::new(outside).exists(), "nothing was written");

    // The trail: a `run` record per host and copy, each naming the file with its mode and hash.
    let config = path_str(&cluster.config(0)).to_owned();
    let export = cohort(&["audit", "export", "--config", &config, "--json"]);
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    let records: Vec<serde_json::Value> = String::from_utf8_lossy(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let placed = |path: &str| {
        records
            .iter()
            .filter(|r| r["decision"] == "run")
            .filter(|r| {
                r["data"].as_array().is_some_and(|d| {
                    d.iter().any(|d| d["path"] == path && d["sha256"] == sha.as_str() && d["mode"] == "0640")
                })
            })
            .map(|r| r["host"].as_str().expect("host").to_owned())
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(placed(&dest_path("f")).len(), 20, "one audited copy per host to one path");
    for i in 1..=20 {
        let host = format!("h{i:02}");
        let path = dest_path(&format!("f-{host}"));
        assert_eq!(placed(&path), [host].into(), "{path} audited for its host");
    }
    let denied = records.iter().filter(|r| r["decision"] == "denied").filter(|r| {
        r["data"].as_array().is_some_and(|d| d.iter().any(|d| d["path"] == outside))
            && r["detail"].as_str().is_some_and(|d| d.contains("may not write"))
    });
    assert_eq!(denied.count(), 3, "each refusal is audited with the file it would have written");
    let verify = cohort(&["audit", "verify", "--config", &config]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
}
