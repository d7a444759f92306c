//! A fourth member joins three running ones, as an operator does it by hand: export a join file
//! from a member, `cohort join` the new node's directory, start it, add it with a signed change.
//! It installs, answers `cohort get` on its own lookup socket, and is then removed: the three
//! install without it and drop what it still sends, and it learns from the new version's signed
//! header that it was removed, says so, and answers nothing; a channel opened with its key is
//! refused by each of the three.

mod common;

use std::time::Duration;

use common::{TestCluster, active, cohort, free_base_port, path_str, run};

fn counter(status: &serde_json::Value) -> u64 {
    active(status).and_then(|v| v.split_once('@').and_then(|(c, _)| c.parse().ok())).unwrap_or(0)
}

#[test]
fn a_fourth_member_joins_installs_answers_lookups_and_is_removed() {
    let names = ["m0", "m1", "m2", "m3"].map(str::to_owned).to_vec();
    let mut cluster = TestCluster::init_with(&["--members", "3", "--heartbeat-ms", "200"], 3, names);
    for i in 0..3 {
        cluster.start(i);
    }
    cluster.wait_for("three members up", Duration::from_secs(20), |c| (0..3).all(|i| c.status(i).is_some()));
    let mut set = vec!["admin".to_owned(), "set".into(), "dns=10.0.0.53".into(), "--wait".into()];
    set.extend(cluster.operator_args("m0"));
    run(&set);

    // The operator exports the join file; the new node prepares its directory from it.
    let root = cluster.root();
    let join_file = root.join("join.toml");
    let mut export =
        vec!["admin".to_owned(), "join-file".into(), "--out".into(), path_str(&join_file).into()];
    export.extend(cluster.operator_args("m1"));
    run(&export);
    let key = root.join("m3.key");
    run(&["keygen".into(), "--out".into(), path_str(&key).into()]);
    let port = free_base_port(2);
    let dir = root.join("m3");
    let joined = run(&[
        "join".into(),
        "--join-file".into(),
        path_str(&join_file).into(),
        "--key".into(),
        path_str(&key).into(),
        "--dir".into(),
        path_str(&dir).into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--admin".into(),
        format!("127.0.0.1:{}", port + 1),
        "--heartbeat-ms".into(),
        "200".into(),
    ]);
    let spec = joined
        .lines()
        .find_map(|l| l.trim().strip_prefix("cohort admin add-member "))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("join prints the add-member spec")
        .to_owned();
    cluster.start(3);
    cluster.wait_for("the new node up", Duration::from_secs(20), |c| c.status(3).is_some());
    let waiting = cluster.status(3).expect("answers");
    assert_eq!(waiting["state"], "outside-roster", "not a member before the change: {waiting}");
    let socket = dir.join("lookup.sock");
    let out = cohort(&["get", "dns", "--socket", path_str(&socket)]);
    assert!(!out.status.success(), "nothing is answered before the node is a member");

    // The signed change adds it; all four install, and it answers from its own socket.
    let mut add = vec!["admin".to_owned(), "add-member".into(), spec];
    add.extend(cluster.operator_args("m2"));
    run(&add);
    cluster.wait_for("all four on the version that adds m3", Duration::from_secs(30), |c| {
        (0..4).all(|i| c.status(i).is_some_and(|s| counter(&s) == 3 && s["state"] == "serving"))
    });
    let out = cohort(&["get", "dns", "--socket", path_str(&socket)]);
    assert!(out.status.success(), "get on m3 failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "10.0.0.53\n");

    // Removed: the three install without it.
    let m3 = cluster.status(3).expect("answers")["node_id"].as_str().expect("node id").to_owned();
    let mut remove = vec!["admin".to_owned(), "remove-member".into(), m3];
    remove.extend(cluster.operator_args("m0"));
    run(&remove);
    cluster.wait_for("the three on the version without m3", Duration::from_secs(30), |c| {
        (0..3).all(|i| c.status(i).is_some_and(|s| counter(&s) == 4))
    });
    let status = cluster.status(0).expect("answers");
    // The removed node learned it from the new version's signed header: it says so and serves
    // nothing.
    cluster.wait_for("m3 knows it was removed", Duration::from_secs(10), |c| {
        c.status(3).is_some_and(|s| s["state"] == "outside-roster")
    });
    assert!(cluster.log_text(3).contains("removed from the cluster"), "{}", cluster.log_text(3));
    assert!(!cohort(&["get", "dns", "--socket", path_str(&socket)]).status.success());
    let mut roster: Vec<&str> =
        status["members"].as_array().expect("members").iter().filter_map(|m| m["name"].as_str()).collect();
    roster.sort_unstable();
    assert_eq!(roster, ["m0", "m1", "m2"]);

    // Whatever m3 still tries, the three refuse its channel: its key is in no roster they hold.
    let file: toml::Value =
        toml::from_str(&std::fs::read_to_string(root.join("cluster.toml")).expect("cluster.toml"))
            .expect("toml");
    let m3_keys = cohort_io_mio::keyfile::read_key_file(&key).expect("m3's key");
    for (i, member) in file["members"].as_array().expect("members").iter().enumerate() {
        let hex32 = |field: &str| {
            let mut out = [0u8; 32];
            hex::decode_to_slice(member[field].as_str().expect("hex"), &mut out).expect("32 bytes");
            out
        };
        let identity = cohort_core::PublicIdentity { signing: hex32("ed25519"), agreement: hex32("x25519") };
        let addr = member["address"].as_str().expect("address").parse().expect("an address");
        let logged_before = cluster.log_text(i).matches("not trusted").count();
        let refused = match cohort_io_mio::channel_client::ChannelClient::connect(
            addr,
            identity,
            &m3_keys,
            Duration::from_secs(5),
        ) {
            Err(_) => true,
            // The initiator may finish its half first: then the member closes on it unanswered.
            Ok(mut client) => {
                let _ = client.send(&0u8);
                client.recv::<u8>(Duration::from_secs(5)).is_err()
            }
        };
        assert!(refused, "m{i} took a channel from the removed member");
        cluster.wait_for("the refusal logged", Duration::from_secs(5), |c| {
            c.log_text(i).matches("not trusted").count() > logged_before
        });
    }
}
