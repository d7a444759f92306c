//! Unit tests of one member machine, for the parts of the rules that are a member's own choice
//! and show on no network: which member it asks for a block, and in what order. Everything a
//! network run can show is tested on the turmoil host driver (`tests/tests/member_rules.rs`).

use std::collections::BTreeMap;
use std::time::Duration;

use super::genesis::{genesis_config, genesis_records};
use super::{MemberInfo, MemberInput, MemberMessage, MemberOutput, MemberSettings, Status, Version};
use crate::identity::{NodeId, NodeKeys};
use crate::machine::Machine;
use crate::member::Member;
use crate::rng::seeded;
use crate::signed::Signed;
use crate::time::{Instant, Now};

/// Three members' keys and member `me`'s machine, booted (its boot record made durable).
fn booted(me: usize) -> (Vec<NodeKeys>, Member) {
    let mut rng = seeded(31);
    let operator = NodeKeys::generate(&mut rng);
    let keys: Vec<NodeKeys> = (0..3).map(|_| NodeKeys::generate(&mut rng)).collect();
    let infos = keys.iter().enumerate().map(|(i, k)| MemberInfo {
        name: format!("m{i}"),
        identity: k.public(),
        address: format!("m{i}:7000"),
    });
    let config = genesis_config("c", "ops", &operator, infos, BTreeMap::new());
    let mut records = genesis_records(&config, &operator, &mut rng).expect("seals");
    let record = records.remove(&keys[me].node_id()).expect("a record");
    let mut member = Member::new(Instant::ZERO, keys[me].clone(), record, MemberSettings::default(), rng);
    let persist = match member.poll_output() {
        Some(MemberOutput::Persist { token, .. }) => token,
        other => panic!("a member persists its boot epoch first, not {other:?}"),
    };
    member.handle(Now::ZERO, MemberInput::Persisted(persist));
    while member.poll_output().is_some() {}
    (keys, member)
}

/// Where the member's fetch requests went, in order.
fn fetches(member: &mut Member) -> Vec<NodeId> {
    std::iter::from_fn(|| member.poll_output())
        .filter_map(|out| match out {
            MemberOutput::Send { to, message, .. } if matches!(*message, MemberMessage::Fetch(_)) => Some(to),
            _ => None,
        })
        .collect()
}

/// Rule 3: told of a newer version by a member that is not its author, a member asks the author
/// first, and when no reply comes, the member that told it.
#[test]
fn rule3_a_member_fetches_from_the_author_first_then_from_the_member_that_advertised_it() {
    let (keys, mut m2) = booted(2);
    let (author, teller) = (keys[0].node_id(), keys[1].node_id());
    let status = Status {
        cluster_id: "c".into(),
        sender: teller,
        active: m2.active_version(),
        staged: Some(Version { counter: 2, author }),
        seq: (1 << 32) | 1,
        recipients: vec![keys[0].public().key_digest(), keys[2].public().key_digest()],
    };
    let bytes =
        MemberMessage::Status(Signed::sign(status, &keys[1]).expect("signs")).to_wire().expect("encodes");
    let at = Instant::ZERO + Duration::from_millis(100);
    m2.handle(Now::ZERO.with_mono(at), MemberInput::Received { from: teller, bytes });
    assert_eq!(fetches(&mut m2), [author], "the author first");
    assert!(m2.is_syncing());

    let retry = m2.poll_timeout().expect("a retry is due");
    assert_eq!(retry, at + MemberSettings::default().fetch_retry);
    m2.handle(Now::ZERO.with_mono(retry), MemberInput::Timeout);
    assert_eq!(fetches(&mut m2), [teller], "then the member that advertised it");
}

/// A header claiming that the version being fetched leaves this member out is believed only
/// when it verifies: one signed by a stranger is dropped and the member keeps fetching.
#[test]
fn a_removal_is_believed_only_from_a_header_its_trusted_authors_signed() {
    use super::block::{Author, BlockHeader};
    let (keys, mut m2) = booted(2);
    let author = keys[0].node_id();
    let version = Version { counter: 2, author };
    let status = Status {
        cluster_id: "c".into(),
        sender: author,
        active: m2.active_version(),
        staged: Some(version),
        seq: (1 << 32) | 1,
        recipients: vec![keys[1].public().key_digest(), keys[2].public().key_digest()],
    };
    let bytes =
        MemberMessage::Status(Signed::sign(status, &keys[0]).expect("signs")).to_wire().expect("encodes");
    m2.handle(Now::ZERO, MemberInput::Received { from: author, bytes });
    assert_eq!(fetches(&mut m2), [author]);
    // The header of a version listing only m0 and m1.
    let header = BlockHeader {
        cluster_id: "c".into(),
        version,
        author: Author::Member(author),
        config_hash: [0; 32],
        body_hash: [0; 32],
        entries: [keys[0].public().key_digest(), keys[1].public().key_digest()]
            .into_iter()
            .map(|d| (d, [0; 32]))
            .collect(),
    };
    let stranger = NodeKeys::generate(&mut seeded(99));
    let forged =
        MemberMessage::NotInVersion { header: Signed::sign(header.clone(), &stranger).expect("signs") };
    m2.handle(Now::ZERO, MemberInput::Received { from: author, bytes: forged.to_wire().expect("encodes") });
    assert_eq!(m2.removed_in(), None, "a stranger's header removes nobody");
    assert_eq!(m2.drops().get("bad-block"), Some(&1));
    assert!(m2.in_roster());
    let genuine = MemberMessage::NotInVersion { header: Signed::sign(header, &keys[0]).expect("signs") };
    m2.handle(Now::ZERO, MemberInput::Received { from: author, bytes: genuine.to_wire().expect("encodes") });
    assert_eq!(m2.removed_in(), Some(version));
    assert!(!m2.in_roster(), "a removed member answers nothing");
    assert!(std::iter::from_fn(|| m2.poll_output()).any(|o| o == MemberOutput::Removed { version }));
}

/// A member message is taken only from the channel of the member it names: m1's genuine
/// Status arriving on m0's channel, or a fetch in m1's name from m0, is dropped and counted.
#[test]
fn a_message_on_a_channel_whose_peer_is_not_its_sender_is_dropped() {
    let (keys, mut m2) = booted(2);
    let (m0, m1) = (keys[0].node_id(), keys[1].node_id());
    let status = Status {
        cluster_id: "c".into(),
        sender: m1,
        active: m2.active_version(),
        staged: None,
        seq: (1 << 32) | 1,
        recipients: vec![keys[0].public().key_digest(), keys[2].public().key_digest()],
    };
    let bytes =
        MemberMessage::Status(Signed::sign(status, &keys[1]).expect("signs")).to_wire().expect("encodes");
    m2.handle(Now::ZERO, MemberInput::Received { from: m0, bytes: bytes.clone() });
    let fetch = super::FetchRequest { cluster_id: "c".into(), requester: m1, version: m2.active_version() };
    let fetch =
        MemberMessage::Fetch(Signed::sign(fetch, &keys[1]).expect("signs")).to_wire().expect("encodes");
    m2.handle(Now::ZERO, MemberInput::Received { from: m0, bytes: fetch });
    assert_eq!(m2.drops().get("wrong-peer"), Some(&2));
    assert!(m2.peers().is_empty(), "nothing was taken from either");
    // The same Status on its own sender's channel is taken.
    m2.handle(Now::ZERO, MemberInput::Received { from: m1, bytes });
    assert!(m2.peers().contains_key(&m1));
}
