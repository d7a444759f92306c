//! One test per rule of DESIGN.md "Cluster member" (rules 1-9), each member a core node on the one
//! turmoil host driver: the operator speaks over the admin channel, a forger puts datagrams on a
//! member's port, partitions hold announcements back, crashes lose what was not synced. The
//! assertions read what members hold and refuse and what the operator is told; the observer
//! checks the invariants at every step (a broken one fails the run). Where a rule is about one
//! member's own choices that no network run can show, its test is a unit test of the member
//! machine in `core/src/member/tests.rs`.

use std::time::Duration;

use cohort_core::NodeKeys;
use cohort_core::admin::{AdminRequest, LookupReply};
use cohort_core::member::{Change, ChangeError, MemberMessage, Status};
use cohort_core::rng::seeded;
use cohort_core::signed::Signed;
use cohort_io_sim::member_site::{CLUSTER_ID, MemberSite, SiteResult};
use cohort_tests::admin::{accepted, rejected, set};

const HEARTBEAT: Duration = Duration::from_secs(1);

/// A Status in member `from`'s name, as it would send one now with sequence number `seq`, signed
/// by `signer` and then adjusted by `edit` (before signing), as one datagram.
fn status(
    site: &MemberSite,
    from: usize,
    signer: &NodeKeys,
    seq: u64,
    edit: impl FnOnce(&mut Status),
) -> SiteResult<Vec<u8>> {
    let sender = site.node_id(from)?;
    let mut others: Vec<_> =
        (0..site.nodes()).filter(|i| *i != from).map(|i| site.keys(i)).collect::<Result<_, _>>()?;
    // A member names its recipients in the order of their node ids.
    others.sort_by_key(|k| k.node_id());
    let mut body = Status {
        cluster_id: CLUSTER_ID.into(),
        sender,
        active: site.view(from)?.active_version(),
        staged: None,
        seq,
        recipients: others.iter().map(|k| k.public().key_digest()).collect(),
    };
    edit(&mut body);
    let signed = Signed::sign(body, signer).expect("signs");
    Ok(MemberMessage::Status(signed).to_wire().expect("encodes"))
}

/// The sequence number of a member's `n`th Status after its first boot (epoch 1 in the high half).
fn first_boot_seq(n: u32) -> u64 {
    (1 << 32) | u64::from(n)
}

#[test]
fn rule1_every_member_sends_every_other_a_signed_status_each_heartbeat() -> SiteResult<()> {
    let mut site = MemberSite::new(3, 1)?;
    site.run_for(HEARTBEAT * 3 + Duration::from_millis(500))?;
    for r in 0..3 {
        let view = site.view(r)?;
        // Nothing refused: every Status was signed by its sender, named this member as a
        // recipient, and carried a higher sequence number than the one before.
        assert_eq!(view.all_drops(), 0, "m{r} refused {:?}", view.drops);
        for s in (0..3).filter(|s| *s != r) {
            let sender = site.node_id(s)?;
            // One at boot, then one per heartbeat; the boot one waits for the channel's
            // handshake and may arrive in one read with the next, which the probe sees as one.
            let heard = view.heard.get(&sender).copied().unwrap_or(0);
            assert!((3..=4).contains(&heard), "m{r} accepted {heard} from m{s}");
            let peer = view.peers.get(&sender).expect("heard");
            assert_eq!((peer.active, peer.staged), (site.genesis_version(), None), "what m{s} runs");
            let ago = site.elapsed() - peer.last_heard.since_start();
            assert!(ago < HEARTBEAT, "m{r} last heard m{s} {ago:?} ago");
        }
    }
    Ok(())
}

#[test]
fn rule2_status_from_unknown_key_bad_signature_replayed_wrong_channel_or_missing_digest_is_dropped()
-> SiteResult<()> {
    let mut site = MemberSite::new(3, 2)?;
    // Between heartbeats, so each forgery is handled on its own.
    site.run_for(HEARTBEAT + HEARTBEAT / 2)?;
    let stranger = NodeKeys::generate(&mut seeded(777));
    let (m1, m2) = (site.keys(1)?.clone(), site.keys(2)?.clone());
    let heard_before = site.view(0)?.heard;

    // A key not in the roster gets no channel: its Status never reaches the member.
    let unknown = status(&site, 1, &stranger, u64::MAX / 2, |s| s.sender = stranger.node_id())?;
    site.inject(0, &stranger, unknown)?;
    assert_eq!(site.view(0)?.all_drops(), 0, "nothing arrived to refuse");

    // The rest come over channels opened with members' own (stolen) keys.
    // Member 1's name, a stranger's signature.
    site.inject(0, &m1, status(&site, 1, &stranger, u64::MAX / 2, |_| {})?)?;
    assert_eq!(site.view(0)?.drops_of("bad-signature"), 1);

    // Member 1's heartbeats replayed: its first, and the last one member 0 accepted from it (its
    // second, a heartbeat ago), byte for byte what member 1 sent (Ed25519 signs deterministically).
    for n in [1, 2] {
        site.inject(0, &m1, status(&site, 1, &m1, first_boot_seq(n), |_| {})?)?;
    }
    assert_eq!(site.view(0)?.drops_of("stale-sequence"), 2);

    // Member 2's genuine-looking Status on member 1's channel.
    site.inject(0, &m1, status(&site, 2, &m2, u64::MAX / 2, |_| {})?)?;
    assert_eq!(site.view(0)?.drops_of("wrong-peer"), 1);

    // Member 2's signature on a Status that does not name member 0 as a recipient.
    let me = site.keys(0)?.public().key_digest();
    site.inject(0, &m2, status(&site, 2, &m2, u64::MAX / 2, |s| s.recipients.retain(|d| *d != me))?)?;
    assert_eq!(site.view(0)?.drops_of("not-a-recipient"), 1);

    site.inject(0, &m1, vec![1, 0xff, 0xff, 0x03])?;
    assert_eq!(site.view(0)?.drops_of("undecodable"), 1);

    // None of it disturbed the members' own heartbeats, and the operator sees each refusal.
    site.run_for(HEARTBEAT * 2)?;
    let view = site.view(0)?;
    for s in [1, 2] {
        let id = site.node_id(s)?;
        let (before, now) =
            (heard_before.get(&id).copied().unwrap_or(0), view.heard.get(&id).copied().unwrap_or(0));
        assert!(now >= before + 2, "m0 still hears m{s}: {before} then {now}");
    }
    let dropped = site.status(0)?.dropped;
    let expected = [
        ("bad-signature", 1),
        ("not-a-recipient", 1),
        ("stale-sequence", 2),
        ("undecodable", 1),
        ("wrong-peer", 1),
    ];
    assert_eq!(dropped, expected.map(|(kind, n)| (kind.to_owned(), n)), "what `cohort status` shows");
    Ok(())
}

#[test]
fn rule3_a_newer_version_starts_syncing_and_lookups_are_declined() -> SiteResult<()> {
    let mut site = MemberSite::new(3, 3)?;
    site.run_for(HEARTBEAT)?;
    let genesis = site.genesis_version();
    let answer = site.lookup(1, Some("dns"))?;
    assert_eq!(answer, LookupReply::Value { version: genesis, key: "dns".into(), value: None });
    // Member 2 cannot hear from member 0, the author: it learns of the change from member 1.
    site.cut_oneway(0, 2);
    let version = accepted(site.change(0, set("dns", "10.0.0.53"))?);
    site.run_for(Duration::from_millis(1200))?;
    let m2 = site.view(2)?;
    assert!(m2.syncing, "member 2 has heard of {version}");
    assert_eq!(m2.active_version(), genesis);
    assert_eq!(site.lookup(2, Some("dns"))?, LookupReply::Declined { retry_after_ms: 1000 });
    // Once member 2 hears the author again (the author's channel to it, dead since the cut,
    // is redialled within a heartbeat or two), it installs, stops syncing, and answers from the
    // new version.
    site.heal();
    site.run_for(HEARTBEAT * 5)?;
    assert!(site.installed_everywhere(version));
    assert!(!site.view(2)?.syncing);
    let answer = site.lookup(2, Some("dns"))?;
    assert_eq!(answer, LookupReply::Value { version, key: "dns".into(), value: Some("10.0.0.53".into()) });
    Ok(())
}

#[test]
fn rule4_every_member_keeps_the_whole_block_and_tampering_keeps_the_old_configuration() -> SiteResult<()> {
    let mut site = MemberSite::new(3, 4)?;
    site.run_for(HEARTBEAT)?;
    let before = site.view(1)?.active_version();
    site.isolate(1);
    let version = accepted(site.change(0, set("ntp", "pool.example"))?);
    site.run_for(HEARTBEAT)?;
    let digest = |i: usize| site.keys(i).map(|k| k.public().key_digest());

    // Member 2 fetched the whole block, the same the author holds: it can serve it in turn.
    let fetched = site.view(2)?.staged.expect("member 2 staged the change").block;
    let authored = site.view(0)?.staged.expect("the author staged the change").block;
    assert_eq!(fetched, authored);
    assert_eq!(fetched.entries.len(), 3);

    // Member 1 is cut off from the members. A forger hands it the block with member 2's entry
    // in member 1's place, the block under a tampered header, and the block with its body
    // tampered.
    let mut swapped = authored.clone();
    let entry_2 = authored.entries[&digest(2)?].clone();
    swapped.entries.insert(digest(1)?, entry_2);
    let mut bad_header = authored.clone();
    bad_header.header.body.config_hash[0] ^= 1;
    let mut bad_body = authored.clone();
    bad_body.body[0] ^= 1;
    // It comes over a channel opened with member 2's (stolen) key: the block itself must check.
    let m2 = site.keys(2)?.clone();
    for block in [swapped, bad_header, bad_body] {
        let reply = MemberMessage::FetchReply { block: Box::new(block) };
        site.inject(1, &m2, reply.to_wire().expect("encodes"))?;
    }
    let m1 = site.view(1)?;
    assert_eq!(m1.drops_of("bad-block"), 3, "{:?}", m1.drops);
    assert_eq!((m1.active_version(), m1.staged_version()), (before, None));

    // Once it can reach the author again, it gets the genuine block and everyone installs it.
    site.heal();
    site.run_for(HEARTBEAT * 3)?;
    assert!(site.installed_everywhere(version));
    Ok(())
}

#[test]
fn rule5_install_waits_for_two_announcements_from_every_other_member() -> SiteResult<()> {
    let mut site = MemberSite::new(5, 5)?;
    site.run_for(HEARTBEAT)?;
    site.isolate(4);
    let version = accepted(site.change(0, set("k", "v"))?);
    site.run_for(HEARTBEAT * 10)?;
    assert_eq!(site.installs(), [], "no member installs while one member is cut off");
    for i in 0..4 {
        assert_eq!(site.view(i)?.staged_version(), Some(version), "member {i} staged it");
    }
    site.heal();
    let healed = site.elapsed();
    site.run_for(HEARTBEAT * 4)?;
    assert!(site.installed_everywhere(version));
    // The observer checked at every install that the installer had heard the version announced
    // twice by every other member since staging it; the run would have failed otherwise.
    let installs = site.installs();
    assert_eq!(installs.len(), 5);
    for (member, installed, at) in installs {
        assert_eq!(installed, version, "member {member}");
        assert!(at > healed, "member {member} installed at {at:?}, before the heal at {healed:?}");
    }
    Ok(())
}

#[test]
fn rule6_two_concurrent_changes_end_with_everyone_on_the_highest_version() -> SiteResult<()> {
    let mut site = MemberSite::new(5, 6)?;
    site.run_for(HEARTBEAT)?;
    // Members 1 and 3 each take a change while neither can hear of the other's.
    site.isolate(1);
    site.isolate(3);
    let a = accepted(site.change(1, set("who", "one"))?);
    let b = accepted(site.change(3, set("who", "three"))?);
    assert_eq!(a.counter, b.counter, "both changes saw the same history");
    site.heal();
    let winner = a.max(b);
    site.run_for(HEARTBEAT * 5)?;
    assert!(site.installed_everywhere(winner));
    let expected = if winner == a { "one" } else { "three" };
    for (i, view) in site.views().iter().enumerate() {
        assert_eq!(view.setting("who"), Some(expected), "member {i}");
    }
    Ok(())
}

/// Rule 6 meets rule 5: members that staged the lower of two concurrent versions replace it with
/// the higher one, and count announcements afresh: announcements of the lower version never help
/// install the higher.
#[test]
fn rule6_a_replaced_staged_version_starts_its_count_of_announcements_afresh() -> SiteResult<()> {
    let mut site = MemberSite::new(5, 16)?;
    site.run_for(HEARTBEAT)?;
    // Of members 1 and 3, the one with the higher id authors the version that wins (same counter).
    let (low, high) = if site.node_id(1)? < site.node_id(3)? { (1, 3) } else { (3, 1) };
    site.isolate(high);
    let lower = accepted(site.change(low, set("who", "low"))?);
    let higher = accepted(site.change(high, set("who", "high"))?);
    assert_eq!(lower.counter, higher.counter, "both changes saw the same history");
    assert!(higher > lower);
    // The four others stage the lower version and announce it to each other, again and again,
    // waiting on the member cut off.
    site.run_for(HEARTBEAT * 3)?;
    for i in (0..5).filter(|i| *i != high) {
        assert_eq!(site.view(i)?.staged_version(), Some(lower), "member {i}");
    }
    assert_eq!(site.installs(), []);
    // The author of the higher version comes back while member 0 is cut off. The others replace
    // the lower version with the higher; member 0 has announced only the lower one, so nobody may
    // install yet, however often it announced that.
    site.heal();
    site.isolate(0);
    site.run_for(HEARTBEAT * 3)?;
    for i in 1..5 {
        assert_eq!(site.view(i)?.staged_version(), Some(higher), "member {i}");
    }
    assert_eq!(site.installs(), [], "an install counted announcements of the version it replaced");
    site.heal();
    site.run_for(HEARTBEAT * 5)?;
    // The observer checked each install against announcements of `higher` since it was staged.
    assert!(site.installed_everywhere(higher));
    assert!(site.installs().iter().all(|(_, version, _)| *version == higher));
    assert!(site.views().iter().all(|v| v.setting("who") == Some("high")));
    Ok(())
}

#[test]
fn rule7_only_a_listed_operator_with_a_valid_signature_and_fresh_base_changes_the_configuration()
-> SiteResult<()> {
    let mut site = MemberSite::new(3, 7)?;
    site.run_for(HEARTBEAT)?;
    let genesis = site.genesis_version();
    let stranger = NodeKeys::generate(&mut seeded(5));
    let operator = site.operator().clone();

    // A key the configuration does not list gets no admin channel at all.
    assert!(site.ask(2, &stranger, AdminRequest::Status).is_err(), "a stranger was answered");

    // A request signed by that key, carried on the operator's channel: the member refuses it.
    let mut request = site.change_request(genesis, set("a", "b"))?;
    request.body.operator = stranger.public().signing;
    let forged = Signed::sign(request.body, &stranger).expect("signs");
    let reason = rejected(site.ask(2, &operator, AdminRequest::Change(forged))?);
    let unknown = cohort_core::NodeId::of_signing_key(&stranger.public().signing);
    assert_eq!(reason, ChangeError::UnknownOperator(unknown).to_string());

    // The operator's request, altered after it was signed.
    let mut tampered = site.change_request(genesis, set("a", "b"))?;
    tampered.body.changes = set("a", "evil");
    let reason = rejected(site.ask(2, &operator, AdminRequest::Change(tampered))?);
    assert_eq!(reason, ChangeError::BadSignature.to_string());

    // A good change at member 2 (any member may take one) reaches all.
    let version = accepted(site.change(2, set("a", "b"))?);
    assert_eq!((version.counter, version.author), (2, site.node_id(2)?));
    site.run_for(HEARTBEAT * 3)?;
    assert!(site.installed_everywhere(version));
    assert!(site.views().iter().all(|v| v.setting("a") == Some("b")));

    // A request based on a version older than the active one is stale.
    let old = site.change_request(genesis, set("a", "c"))?;
    let reason = rejected(site.ask(0, &operator, AdminRequest::Change(old))?);
    assert_eq!(reason, ChangeError::Stale { base: genesis, active: version }.to_string());
    Ok(())
}

#[test]
fn rule8_a_removed_member_learns_it_from_the_signed_header_and_falls_silent() -> SiteResult<()> {
    let mut site = MemberSite::new(4, 8)?;
    site.run_for(HEARTBEAT)?;
    let removed = site.node_id(3)?;
    let version = accepted(site.change(0, vec![Change::RemoveMember(removed)])?);
    site.run_for(HEARTBEAT * 4)?;
    for i in 0..3 {
        let view = site.view(i)?;
        assert_eq!(view.active_version(), version, "member {i}");
        assert!(!view.active.config.is_member(&removed));
    }
    // Member 3 never gets an entry for a configuration without it; it keeps its old one, but
    // the author's answer to its fetch (the new version's signed header, which lists no entry
    // for it) tells it that it was removed.
    let gone = site.view(3)?;
    assert_ne!(gone.active_version(), version);
    assert_eq!(gone.removed, Some(version), "the removed member knows it");
    // It falls silent: no member hears from it any more.
    let heard = |site: &MemberSite| -> SiteResult<Vec<u64>> {
        (0..3).map(|i| site.view(i).map(|v| v.heard.get(&removed).copied().unwrap_or(0))).collect()
    };
    let before = heard(&site)?;
    site.run_for(HEARTBEAT * 2)?;
    assert_eq!(heard(&site)?, before, "nothing more from the removed member");
    Ok(())
}

#[test]
fn rule8_an_added_member_joins_and_the_install_waits_for_it() -> SiteResult<()> {
    // Three founders; node 3 was provisioned with the genesis configuration but is not a member.
    let mut site = MemberSite::with_joiners(3, 1, 14)?;
    site.run_for(HEARTBEAT * 2)?;
    let joiner = site.node_id(3)?;
    assert!(!site.view(0)?.peers.contains_key(&joiner), "a non-member gets no channel: nothing heard");
    let version = accepted(site.change(1, vec![Change::AddMember(site.info(3)?)])?);
    site.run_for(HEARTBEAT * 4)?;
    assert!(site.installed_everywhere(version), "all four, the joiner included, run {version}");
    for (i, view) in site.views().iter().enumerate() {
        assert!(view.active.config.is_member(&joiner), "member {i}");
    }
    // Now the joiner's heartbeats count: nothing of it is refused.
    site.run_for(HEARTBEAT * 2)?;
    assert_eq!(site.view(0)?.all_drops(), 0);
    assert!(site.view(0)?.heard.get(&joiner).is_some_and(|n| *n >= 2), "member 0 hears the joiner");
    Ok(())
}

#[test]
fn a_member_crashed_while_staging_recovers_its_staged_state_from_storage() -> SiteResult<()> {
    let mut site = MemberSite::new(3, 9)?;
    site.run_for(HEARTBEAT)?;
    site.isolate(2);
    let version = accepted(site.change(0, set("x", "1"))?);
    site.run_for(HEARTBEAT)?;
    assert_eq!(site.view(1)?.staged_version(), Some(version));
    site.crash(1);
    site.run_for(HEARTBEAT)?;
    site.restart(1);
    site.run_for(Duration::from_millis(10))?;
    assert_eq!(site.recoveries(), [(1, site.genesis_version(), Some(version))], "staged state came back");
    assert_eq!(site.view(1)?.staged_version(), Some(version));
    site.heal();
    site.run_for(HEARTBEAT * 4)?;
    assert!(site.installed_everywhere(version));
    Ok(())
}

#[test]
fn rule9_lookups_name_the_version_they_came_from() -> SiteResult<()> {
    let mut site = MemberSite::new(3, 10)?;
    site.run_for(HEARTBEAT)?;
    let version = accepted(site.change(0, set("dns", "10.0.0.53"))?);
    site.run_for(HEARTBEAT * 3)?;
    let answer = site.lookup(1, Some("dns"))?;
    assert_eq!(answer, LookupReply::Value { version, key: "dns".into(), value: Some("10.0.0.53".into()) });
    match site.lookup(2, None)? {
        LookupReply::Settings { version: from, settings } => {
            assert_eq!(from, version);
            assert_eq!(settings, [("dns".to_owned(), "10.0.0.53".to_owned())]);
        }
        other => panic!("not the whole document: {other:?}"),
    }
    Ok(())
}

/// Whoever captures the network between members learns nothing of the configuration: through
/// a change and its install, no setting's key or value, roster address, member key or node id
/// (which versions name) appears in clear in any byte a member sent.
#[test]
fn member_traffic_carries_nothing_of_the_configuration_in_clear() -> SiteResult<()> {
    let mut site = MemberSite::new(3, 21)?;
    site.run_for(HEARTBEAT)?;
    let version = accepted(site.change(1, set("wire-secret-key", "wire-secret-value"))?);
    site.run_for(HEARTBEAT * 4)?;
    assert!(site.installed_everywhere(version));
    let wire = site.captured();
    assert!(wire.len() > 10_000, "the capture holds the run's traffic: {} bytes", wire.len());
    let mut secrets: Vec<(String, Vec<u8>)> = vec![
        ("a setting's key".into(), b"wire-secret-key".to_vec()),
        ("a setting's value".into(), b"wire-secret-value".to_vec()),
    ];
    for i in 0..3 {
        let info = site.info(i)?;
        secrets.push((format!("m{i}'s address"), info.address.into_bytes()));
        secrets.push((format!("m{i}'s signing key"), info.identity.signing.to_vec()));
        secrets.push((format!("m{i}'s agreement key"), info.identity.agreement.to_vec()));
        secrets.push((format!("m{i}'s node id"), site.node_id(i)?.0.to_vec()));
    }
    for (what, bytes) in secrets {
        assert!(!wire.windows(bytes.len()).any(|w| w == bytes.as_slice()), "{what} is readable on the wire");
    }
    Ok(())
}
