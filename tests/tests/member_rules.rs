//! One test per rule of DESIGN.md "Cluster member" (rules 1-9), on an in-memory cluster.

use std::time::Duration;

use cohort_core::NodeKeys;
use cohort_core::member::{
    Change, ChangeError, LookupAnswer, MemberInput, MemberMessage, MemberOutput, Status,
};
use cohort_core::rng::seeded;
use cohort_core::signed::Signed;
use cohort_tests::cluster::{Event, MemCluster};

const HEARTBEAT: Duration = Duration::from_secs(1);

fn set(key: &str, value: &str) -> Vec<Change> {
    vec![Change::Set { key: key.into(), value: value.into() }]
}

fn installs(cluster: &MemCluster) -> Vec<(usize, cohort_core::member::Version)> {
    cluster
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Installed { member, version, .. } => Some((*member, *version)),
            _ => None,
        })
        .collect()
}

fn accepted_version(cluster: &MemCluster, member: usize) -> cohort_core::member::Version {
    cluster
        .events
        .iter()
        .rev()
        .find_map(|e| match e {
            Event::Output { member: m, output: MemberOutput::ChangeAccepted { version, .. } }
                if *m == member =>
            {
                Some(*version)
            }
            _ => None,
        })
        .expect("the change was accepted")
}

/// A Status from member `from` as it would sign one, with fields adjusted by `edit`.
fn crafted_status(
    cluster: &MemCluster,
    from: usize,
    signer: &NodeKeys,
    edit: impl FnOnce(&mut Status),
) -> Vec<u8> {
    let mut status = Status {
        cluster_id: "test-cluster".into(),
        sender: cluster.keys[from].node_id(),
        active: cluster.member(0).active_version(),
        staged: None,
        seq: u64::MAX / 2,
        recipients: cluster.keys.iter().map(|k| k.public().key_digest()).collect(),
    };
    edit(&mut status);
    MemberMessage::Status(Signed::sign(status, signer).expect("signs")).to_wire().expect("encodes")
}

#[test]
fn rule1_every_member_sends_every_other_a_signed_status_each_heartbeat() {
    let mut cluster = MemCluster::new(3, 1);
    cluster.run_for(HEARTBEAT * 3 + Duration::from_millis(500));
    for i in 0..3 {
        let sends: Vec<&Status> = cluster
            .sent_by(i)
            .into_iter()
            .filter_map(|(_, m)| match m {
                MemberMessage::Status(s) => Some(&s.body),
                _ => None,
            })
            .collect();
        // One at boot, then one per heartbeat, to each of the two others.
        assert_eq!(sends.len(), 2 * 4, "member {i}");
        for status in &sends {
            assert_eq!(status.sender, cluster.keys[i].node_id());
            assert_eq!(status.recipients.len(), 2, "the other members' digests");
            assert!(!status.recipients.contains(&cluster.keys[i].public().key_digest()));
        }
        // One signature per heartbeat, shared by its recipients; sequence numbers strictly rise.
        let mut seqs: Vec<u64> = sends.iter().map(|s| s.seq).collect();
        seqs.dedup();
        assert_eq!(seqs.len(), 4);
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    }
}

#[test]
fn rule2_status_from_unknown_key_bad_signature_replayed_or_missing_digest_is_dropped() {
    let mut cluster = MemCluster::new(3, 2);
    cluster.run_for(HEARTBEAT);
    let stranger = NodeKeys::generate(&mut seeded(777));

    // Unknown key: claims to be a sender not in the roster.
    let unknown = {
        let mut status_bytes = crafted_status(&cluster, 1, &stranger, |_| {});
        let mut msg = MemberMessage::from_wire(&status_bytes).expect("decodes");
        if let MemberMessage::Status(s) = &mut msg {
            s.body.sender = stranger.node_id();
            *s = Signed::sign(s.body.clone(), &stranger).expect("signs");
        }
        status_bytes = msg.to_wire().expect("encodes");
        status_bytes
    };
    cluster.inject(0, unknown);
    assert_eq!(cluster.drops_of(0, "unknown-sender"), 1);

    // Bad signature: member 1's name, a stranger's signature.
    cluster.inject(0, crafted_status(&cluster, 1, &stranger, |_| {}));
    assert_eq!(cluster.drops_of(0, "bad-signature"), 1);

    // Replayed: a genuine Status delivered twice.
    let genuine = crafted_status(&cluster, 1, &cluster.keys[1].clone(), |_| {});
    cluster.inject(0, genuine.clone());
    cluster.inject(0, genuine);
    assert_eq!(cluster.drops_of(0, "stale-sequence"), 1);

    // Lacking the receiver's digest.
    let keys2 = cluster.keys[2].clone();
    let me = cluster.keys[0].public().key_digest();
    cluster.inject(0, crafted_status(&cluster, 2, &keys2, |s| s.recipients.retain(|d| *d != me)));
    assert_eq!(cluster.drops_of(0, "not-a-recipient"), 1);

    // Garbage bytes.
    cluster.inject(0, vec![1, 0xff, 0xff, 0x03]);
    assert_eq!(cluster.drops_of(0, "undecodable"), 1);
}

#[test]
fn rule3_a_newer_version_starts_syncing_and_lookups_are_declined() {
    let mut cluster = MemCluster::new(3, 3);
    cluster.run_for(HEARTBEAT);
    cluster.feed(1, MemberInput::Lookup { request_id: 1, key: Some("dns".into()) });
    cluster.pump();
    // Member 2 cannot hear from member 0 (the author), so it stays syncing.
    cluster.cut.insert((0, 2));
    cluster.change(0, set("dns", "10.0.0.53"));
    cluster.run_for(Duration::from_millis(1200));
    let m2 = cluster.member(2);
    assert!(m2.is_syncing(), "member 2 has heard of a newer version");
    cluster.feed(2, MemberInput::Lookup { request_id: 2, key: Some("dns".into()) });
    cluster.pump();
    let answers: Vec<&LookupAnswer> = cluster
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Output { output: MemberOutput::LookupAnswer { answer, .. }, .. } => Some(answer),
            _ => None,
        })
        .collect();
    assert!(matches!(answers[0], LookupAnswer::Value { value: None, .. }));
    assert_eq!(answers[1], &LookupAnswer::Declined { retry_after: HEARTBEAT });
    // It fetched from the author, and with the author unreachable, from the member that told it.
    let fetch_targets: Vec<usize> = cluster
        .sent_by(2)
        .into_iter()
        .filter(|(_, m)| matches!(m, MemberMessage::Fetch(_)))
        .map(|(to, _)| to)
        .collect();
    assert_eq!(fetch_targets.first(), Some(&0));
    assert!(fetch_targets.contains(&1));
}

#[test]
fn rule4_a_member_fetches_only_its_own_entry_and_tampering_keeps_the_old_configuration() {
    let mut cluster = MemCluster::new(3, 4);
    cluster.run_for(HEARTBEAT);
    let before = cluster.member(1).active_version();
    cluster.isolate(1);
    cluster.change(0, set("ntp", "pool.example"));
    cluster.run_for(HEARTBEAT);
    // The reply member 0 sent to member 2 holds member 2's entry only.
    let replies: Vec<(usize, MemberMessage)> = cluster
        .sent_by(0)
        .into_iter()
        .filter(|(_, m)| matches!(m, MemberMessage::FetchReply { .. }))
        .map(|(to, m)| (to, m.clone()))
        .collect();
    let (_, MemberMessage::FetchReply { header, entry }) =
        replies.iter().find(|(to, _)| *to == 2).expect("member 2 fetched").clone()
    else {
        unreachable!()
    };
    assert_eq!(header.body.entries.get(&cluster.keys[2].public().key_digest()), Some(&entry.digest()));

    // Member 1 is cut off; hand it member 2's entry, then a tampered header, then a tampered entry.
    cluster.inject(
        1,
        MemberMessage::FetchReply { header: header.clone(), entry: entry.clone() }
            .to_wire()
            .expect("encodes"),
    );
    let mut bad_header = header.clone();
    bad_header.body.config_hash[0] ^= 1;
    cluster.inject(
        1,
        MemberMessage::FetchReply { header: bad_header, entry: entry.clone() }.to_wire().expect("encodes"),
    );
    let mut bad_entry = entry;
    bad_entry.ciphertext[0] ^= 1;
    cluster.inject(1, MemberMessage::FetchReply { header, entry: bad_entry }.to_wire().expect("encodes"));
    assert_eq!(cluster.drops_of(1, "bad-block"), 3);
    assert_eq!(cluster.member(1).active_version(), before);
    assert_eq!(cluster.member(1).staged_version(), None);
}

#[test]
fn rule5_install_waits_for_two_announcements_from_every_other_member() {
    let mut cluster = MemCluster::new(5, 5);
    cluster.run_for(HEARTBEAT);
    cluster.isolate(4);
    cluster.change(0, set("k", "v"));
    let version = accepted_version(&cluster, 0);
    cluster.run_for(HEARTBEAT * 10);
    assert!(installs(&cluster).is_empty(), "no member installs while one member is cut off");
    for i in 0..4 {
        assert_eq!(cluster.member(i).staged_version(), Some(version), "member {i} staged it");
    }
    cluster.heal();
    cluster.run_for(HEARTBEAT * 4);
    assert!(cluster.installed_everywhere(version));
    // No install happened before every other member had announced it twice to the installer:
    // MemCluster checks that at every install from the messages it delivered.
    for (member, installed) in installs(&cluster) {
        assert_eq!(installed, version, "member {member}");
    }
}

#[test]
fn rule6_two_concurrent_changes_end_with_everyone_on_the_highest_version() {
    let mut cluster = MemCluster::new(5, 6);
    cluster.run_for(HEARTBEAT);
    cluster.change(1, set("who", "one"));
    cluster.change(3, set("who", "three"));
    let (a, b) = (accepted_version(&cluster, 1), accepted_version(&cluster, 3));
    assert_eq!(a.counter, b.counter, "both changes saw the same history");
    let winner = a.max(b);
    cluster.run_for(HEARTBEAT * 5);
    assert!(cluster.installed_everywhere(winner));
    let expected = if winner == a { "one" } else { "three" };
    for i in 0..5 {
        assert_eq!(cluster.member(i).active().config.settings.get("who").map(String::as_str), Some(expected));
    }
}

#[test]
fn rule7_only_a_listed_operator_with_a_valid_signature_and_fresh_base_changes_the_configuration() {
    let mut cluster = MemCluster::new(3, 7);
    cluster.run_for(HEARTBEAT);
    let rejections = |cluster: &MemCluster| -> Vec<ChangeError> {
        cluster
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Output { output: MemberOutput::ChangeRejected { error, .. }, .. } => {
                    Some(error.clone())
                }
                _ => None,
            })
            .collect()
    };
    let stranger = NodeKeys::generate(&mut seeded(5));
    let mut request = cluster.signed_change(2, set("a", "b"));
    request.body.operator = stranger.public().signing;
    let forged = Signed::sign(request.body.clone(), &stranger).expect("signs");
    cluster.feed(2, MemberInput::Change { request_id: 10, request: forged });
    let mut tampered = cluster.signed_change(2, set("a", "b"));
    tampered.body.changes = set("a", "evil");
    cluster.feed(2, MemberInput::Change { request_id: 11, request: tampered });
    cluster.pump();
    let errors = rejections(&cluster);
    assert!(matches!(errors[0], ChangeError::UnknownOperator(_)));
    assert_eq!(errors[1], ChangeError::BadSignature);

    // A good change at member 2 (any member may take one) reaches all.
    cluster.change(2, set("a", "b"));
    let version = accepted_version(&cluster, 2);
    assert_eq!(version.author, cluster.keys[2].node_id());
    assert_eq!(version.counter, 2);
    cluster.run_for(HEARTBEAT * 3);
    assert!(cluster.installed_everywhere(version));

    // A request based on a version older than the active one is stale.
    let mut old = cluster.signed_change(0, set("a", "c"));
    old.body.base.counter = 1;
    let old = Signed::sign(old.body, &cluster.operator).expect("signs");
    cluster.feed(0, MemberInput::Change { request_id: 12, request: old });
    cluster.pump();
    assert!(matches!(rejections(&cluster).last(), Some(ChangeError::Stale { .. })));
}

#[test]
fn rule8_a_removed_members_messages_are_dropped_after_install() {
    let mut cluster = MemCluster::new(4, 8);
    cluster.run_for(HEARTBEAT);
    let removed = cluster.keys[3].node_id();
    cluster.change(0, vec![Change::RemoveMember(removed)]);
    let version = accepted_version(&cluster, 0);
    cluster.run_for(HEARTBEAT * 4);
    for i in 0..3 {
        assert_eq!(cluster.member(i).active_version(), version, "member {i}");
        assert!(!cluster.member(i).active().config.is_member(&removed));
    }
    // Member 3 never gets an entry for a configuration without it; it keeps its old one.
    assert_ne!(cluster.member(3).active_version(), version);
    let before: u64 = (0..3).map(|i| cluster.drops_of(i, "unknown-sender")).sum();
    cluster.run_for(HEARTBEAT * 2);
    let after: u64 = (0..3).map(|i| cluster.drops_of(i, "unknown-sender")).sum();
    assert!(after > before, "the removed member's heartbeats are dropped");
}

#[test]
fn rule8_an_added_member_joins_and_the_install_waits_for_it() {
    // Three founders; node 3 was provisioned with the genesis configuration but is not a member.
    let mut cluster = MemCluster::with_joiners(3, 1, 14);
    cluster.run_for(HEARTBEAT * 2);
    let joiner = cluster.keys[3].node_id();
    assert!(cluster.drops_of(0, "unknown-sender") > 0, "a non-member's heartbeats are dropped");
    cluster.change(1, vec![Change::AddMember(cluster.info(3))]);
    let version = accepted_version(&cluster, 1);
    cluster.run_for(HEARTBEAT * 4);
    assert!(cluster.installed_everywhere(version), "all four, the joiner included, run {version}");
    for i in 0..4 {
        assert!(cluster.member(i).active().config.is_member(&joiner));
    }
    // Now the joiner's heartbeats count: no new drops of its messages.
    let before = cluster.drops_of(0, "unknown-sender");
    cluster.run_for(HEARTBEAT * 2);
    assert_eq!(cluster.drops_of(0, "unknown-sender"), before);
}

#[test]
fn a_member_crashed_while_staging_recovers_its_staged_state_from_storage() {
    let mut cluster = MemCluster::new(3, 9);
    cluster.run_for(HEARTBEAT);
    cluster.isolate(2);
    cluster.change(0, set("x", "1"));
    let version = accepted_version(&cluster, 0);
    cluster.run_for(HEARTBEAT);
    assert_eq!(cluster.member(1).staged_version(), Some(version));
    cluster.crash(1);
    cluster.run_for(HEARTBEAT);
    cluster.restart(1);
    assert_eq!(cluster.member(1).staged_version(), Some(version), "staged state came back from storage");
    cluster.heal();
    cluster.run_for(HEARTBEAT * 4);
    assert!(cluster.installed_everywhere(version));
}

#[test]
fn rule9_lookups_name_the_version_they_came_from() {
    let mut cluster = MemCluster::new(3, 10);
    cluster.run_for(HEARTBEAT);
    cluster.change(0, set("dns", "10.0.0.53"));
    let version = accepted_version(&cluster, 0);
    cluster.run_for(HEARTBEAT * 3);
    cluster.feed(1, MemberInput::Lookup { request_id: 5, key: Some("dns".into()) });
    cluster.pump();
    let answer = cluster.events.iter().rev().find_map(|e| match e {
        Event::Output { output: MemberOutput::LookupAnswer { answer, .. }, .. } => Some(answer.clone()),
        _ => None,
    });
    assert_eq!(
        answer,
        Some(LookupAnswer::Value { version, key: "dns".into(), value: Some("10.0.0.53".into()) })
    );
}
