//! `cohort keygen` as an operator runs it: prints the identity, refuses to overwrite without
//! `--force`, and a key file others can read is refused with the fix.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn cohort(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cohort")).args(args).output().expect("cohort runs")
}

#[test]
fn keygen_prints_identity_and_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("node.key");
    let key_arg = key.to_str().expect("utf-8 path");

    let first = cohort(&["keygen", "--out", key_arg]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let stdout = String::from_utf8_lossy(&first.stdout);
    let node_id = stdout.lines().find_map(|l| l.strip_prefix("node-id")).expect("node-id line").trim();
    assert_eq!(node_id.len(), 32, "NodeId is 16 bytes of hex: {stdout}");
    assert!(stdout.contains("ed25519-public") && stdout.contains("x25519-public"));
    assert_eq!(std::fs::metadata(&key).expect("written").permissions().mode() & 0o777, 0o600);
    let original = std::fs::read(&key).expect("readable");

    let again = cohort(&["keygen", "--out", key_arg]);
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("already exists") && stderr.contains("--force"), "{stderr}");
    assert_eq!(std::fs::read(&key).expect("readable"), original, "the old key must survive");

    let forced = cohort(&["keygen", "--out", key_arg, "--force"]);
    assert!(forced.status.success(), "{}", String::from_utf8_lossy(&forced.stderr));
    assert_ne!(std::fs::read(&key).expect("readable"), original);
}

#[test]
fn a_key_file_readable_by_others_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("node.key");
    let key_arg = key.to_str().expect("utf-8 path");
    let made = cohort(&["keygen", "--out", key_arg]);
    assert!(made.status.success());
    let shown = cohort(&["key", "show", key_arg]);
    assert!(shown.status.success(), "{}", String::from_utf8_lossy(&shown.stderr));
    assert_eq!(
        String::from_utf8_lossy(&shown.stdout).lines().find(|l| l.starts_with("node-id")),
        String::from_utf8_lossy(&made.stdout).lines().find(|l| l.starts_with("node-id")),
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let read = cohort(&["key", "show", key_arg]);
    assert!(!read.status.success());
    let stderr = String::from_utf8_lossy(&read.stderr);
    assert!(stderr.contains("mode 0644") && stderr.contains("chmod 600"), "{stderr}");
}
