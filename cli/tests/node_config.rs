//! What a configuration may hold, on real members: a 10 MiB change installs on three members
//! (chunked on their channels) and one past the 16 MiB limit is refused naming the limit; a
//! member's own section is answered by that member only.

mod common;

use std::time::Duration;

use common::{TestCluster, accepted_version, active, cohort, path_str, run};

const MIB: usize = 1024 * 1024;

fn text_file(dir: &std::path::Path, name: &str, len: usize) -> std::path::PathBuf {
    let path = dir.join(name);
    // Varied lines, so nothing downstream can shortcut a run of one byte.
    let mut text = String::with_capacity(len + 64);
    let mut i = 0u64;
    while text.len() < len {
        text.push_str(&format!("host-{i:08} 10.{}.{}.{}\n", (i >> 16) & 255, (i >> 8) & 255, i & 255));
        i += 1;
    }
    text.truncate(len);
    std::fs::write(&path, text).expect("writes the value file");
    path
}

#[test]
fn a_ten_mib_change_installs_on_three_members_and_one_over_the_limit_is_refused() {
    let mut cluster = TestCluster::init(3, 200);
    cluster.start_all();
    cluster.wait_for("three members up", Duration::from_secs(20), |c| (0..3).all(|i| c.status(i).is_some()));
    let root = cluster.root();
    let big = text_file(&root, "hosts.txt", 10 * MIB);

    let mut set =
        vec!["admin".to_owned(), "set".into(), "--file".into(), format!("hosts={}", path_str(&big))];
    set.extend(["--wait".into(), "--timeout-secs".into(), "60".into()]);
    set.extend(cluster.operator_args("m0"));
    let version = accepted_version(&run(&set));
    for i in 0..3 {
        let status = cluster.status(i).expect("answers");
        assert_eq!(active(&status).as_deref(), Some(version.as_str()), "m{i}: {status}");
    }
    // m2 fetched it (chunked on the member channel) and answers the whole value.
    let socket = root.join("m2").join("lookup.sock");
    let out = cohort(&["get", "hosts", "--socket", path_str(&socket)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let expected = std::fs::read(&big).expect("reads");
    assert_eq!(out.stdout.len(), expected.len() + 1, "the value and a newline");
    assert!(out.stdout.starts_with(&expected));

    // 7 MiB more would make 17 MiB: the member refuses it and says what the limit is.
    let more = text_file(&root, "more.txt", 7 * MIB);
    let mut over =
        vec!["admin".to_owned(), "set".into(), "--file".into(), format!("more={}", path_str(&more))];
    over.extend(cluster.operator_args("m1"));
    let args: Vec<&str> = over.iter().map(String::as_str).collect();
    let out = cohort(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a 17 MiB configuration was accepted");
    assert!(stderr.contains("16777216-byte (16 MiB) limit"), "{stderr}");
    let status = cluster.status(1).expect("answers");
    assert_eq!(active(&status).as_deref(), Some(version.as_str()));
    assert!(status["staged"].is_null(), "nothing was staged: {status}");
}

#[test]
fn a_members_own_section_is_answered_by_that_member_only() {
    let mut cluster = TestCluster::init(3, 200);
    cluster.start_all();
    cluster.wait_for("three members up", Duration::from_secs(20), |c| (0..3).all(|i| c.status(i).is_some()));
    let mut shared = vec!["admin".to_owned(), "set".into(), "dns=10.0.0.53".into(), "--wait".into()];
    shared.extend(cluster.operator_args("m0"));
    run(&shared);
    // Set through m0: m0 authors the change without being able to read the value.
    let mut own = vec!["admin".to_owned(), "set".into(), "--sealed-for".into(), "m2".into()];
    own.extend(["db.password=s3cr3t-m2".into(), "dns=10.2.0.53".into(), "--wait".into()]);
    own.extend(cluster.operator_args("m0"));
    run(&own);

    let get = |i: usize, key: Option<&str>| {
        let socket = cluster.root().join(format!("m{i}")).join("lookup.sock");
        let mut args = vec!["get"];
        args.extend(key);
        args.extend(["--socket", path_str(&socket)]);
        cohort(&args)
    };
    let at_m2 = get(2, Some("db.password"));
    assert!(at_m2.status.success(), "{}", String::from_utf8_lossy(&at_m2.stderr));
    assert_eq!(String::from_utf8_lossy(&at_m2.stdout), "s3cr3t-m2\n");
    // m2's own value overrides the shared one for m2 alone.
    assert_eq!(String::from_utf8_lossy(&get(2, Some("dns")).stdout), "10.2.0.53\n");
    for i in [0, 1] {
        assert!(!get(i, Some("db.password")).status.success(), "m{i} answered m2's setting");
        assert_eq!(String::from_utf8_lossy(&get(i, Some("dns")).stdout), "10.0.0.53\n");
        let all = get(i, None);
        assert!(all.status.success());
        let text = String::from_utf8_lossy(&all.stdout);
        assert!(
            !text.contains("s3cr3t") && !text.contains("db.password") && !text.contains("10.2.0.53"),
            "{text}"
        );
        // Over the admin channel too.
        let mut admin_get = vec!["get".to_owned()];
        admin_get.extend(cluster.operator_args(&format!("m{i}")));
        let text = run(&admin_get);
        assert!(!text.contains("s3cr3t") && !text.contains("10.2.0.53"), "{text}");
    }
    // Nothing in any member's store holds the value in clear.
    for i in 0..3 {
        let dir = cluster.root().join(format!("m{i}"));
        let store: Vec<u8> = ["node.db", "node.db-wal"]
            .iter()
            .flat_map(|f| std::fs::read(dir.join(f)).unwrap_or_default())
            .collect();
        assert!(store.len() > 1000, "m{i}'s store was found");
        assert!(!store.windows(9).any(|w| w == b"s3cr3t-m2"), "m{i}'s store holds the value in clear");
    }
}

#[test]
fn init_refuses_two_listeners_on_one_address_and_creates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("c");
    // m0's admin listener is on --base-port + 100: the gateway cannot have that port too.
    let args = ["init", "--dir", path_str(&root), "--members", "1", "--base-port", "9600"];
    let out = cohort(&[&args[..], &["--exec-hosts", "3", "--exec-port", "9700"]].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("127.0.0.1:9700 would be both member 0's admin listener and the gateway"),
        "{stderr}"
    );
    assert!(!root.exists(), "nothing was created");
    let out = cohort(&[&args[..], &["--exec-hosts", "3", "--exec-port", "9800"]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
