//! The audit chain's and the collector's tests.
use super::*;
use crate::identity::NodeKeys;
use crate::rng::seeded;
use crate::time::Now;

fn key(n: u8) -> NodeKeys {
    NodeKeys::generate(&mut seeded(u64::from(n)))
}

#[test]
fn a_recorded_command_is_quoted_as_a_shell_reads_it_and_never_spans_lines() {
    let argv = ["sh", "-c", "echo 'hi' && rm x", "two\nlines", "esc\u{1b}[2J", "plain-word"];
    let line = quote_words(&argv);
    assert_eq!(line, "sh -c 'echo '\\''hi'\\'' && rm x' $'two\\nlines' $'esc\\u001b[2J' plain-word");
    assert!(!line.chars().any(char::is_control), "{line:?}");
    let without_controls = &argv[..3];
    let words = shell_words::split(&quote_words(without_controls)).expect("splits");
    assert_eq!(words, without_controls);
}

fn signers(n: u8) -> BTreeMap<String, PublicIdentity> {
    (0..n).map(|i| (format!("h{i}"), key(i).public())).collect()
}

fn body(n: u8) -> AuditRecord {
    AuditRecord {
        host: format!("h{n}"),
        principal: "alice".into(),
        run_as: "alice".into(),
        argv: vec!["uptime".into()],
        at: WallClock(u64::from(n)),
        decision: AuditDecision::Run,
        run_id: [n; 16],
        data: Vec::new(),
    }
}

/// Host `n`'s record, signed by host `n`.
fn record(n: u8) -> Signed<AuditRecord> {
    Signed::sign(body(n), &key(n)).expect("signs")
}

fn chain(n: u8) -> Vec<ChainEntry> {
    let mut collector = AuditCollector::new(None, signers(n), key(200));
    let mut entries = Vec::new();
    for i in 0..n {
        collector
            .handle(Now::ZERO, CollectorInput::Submit { ack: u64::from(i), record: Box::new(record(i)) });
    }
    while let Some(out) = collector.poll_output() {
        if let CollectorOutput::Append { entry: e, .. } = out {
            entries.push(*e);
        }
    }
    entries
}

#[test]
fn acks_come_only_after_persistence_and_in_order() {
    let mut collector = AuditCollector::new(None, signers(3), key(200));
    collector.handle(Now::ZERO, CollectorInput::Submit { ack: 7, record: Box::new(record(1)) });
    collector.handle(Now::ZERO, CollectorInput::Submit { ack: 8, record: Box::new(record(2)) });
    let appended: Vec<_> = std::iter::from_fn(|| collector.poll_output()).collect();
    assert!(appended.iter().all(|o| matches!(o, CollectorOutput::Append { .. })));
    collector.handle(Now::ZERO, CollectorInput::Persisted { index: 1 });
    let acks: Vec<_> = std::iter::from_fn(|| collector.poll_output()).collect();
    assert_eq!(
        acks,
        vec![CollectorOutput::Ack { ack: 7, index: 0 }, CollectorOutput::Ack { ack: 8, index: 1 }]
    );
}

/// The collector decodes each signer's key once, when it hears the signers: a key swapped
/// in the configuration is the one records are checked against from then on, and a key that
/// is no curve point takes no record.
#[test]
fn records_are_checked_against_the_signers_current_keys() {
    let mut collector = AuditCollector::new(None, signers(3), key(200));
    let mut table = signers(3);
    table.insert("h1".into(), key(101).public());
    // The y coordinate 2 has no point on the curve.
    let mut broken = key(2).public();
    broken.signing = [0; 32];
    broken.signing[0] = 2;
    assert!(broken.verifier().is_err());
    table.insert("h2".into(), broken);
    collector.handle(Now::ZERO, CollectorInput::Signers(table));
    collector.handle(Now::ZERO, CollectorInput::Submit { ack: 1, record: Box::new(record(1)) });
    collector.handle(Now::ZERO, CollectorInput::Submit { ack: 2, record: Box::new(record(2)) });
    let renewed = Signed::sign(body(1), &key(101)).expect("signs");
    collector.handle(Now::ZERO, CollectorInput::Submit { ack: 3, record: Box::new(renewed) });
    let outputs: Vec<_> = std::iter::from_fn(|| collector.poll_output()).collect();
    assert_eq!(
        outputs[..2],
        [
            CollectorOutput::Refused { ack: 1, refusal: AuditRefusal::BadSignature("h1".into()) },
            CollectorOutput::Refused { ack: 2, refusal: AuditRefusal::BadSignature("h2".into()) },
        ]
    );
    assert!(matches!(&outputs[2..], [CollectorOutput::Append { entry, .. }] if entry.record.host == "h1"));
}

#[test]
fn a_record_not_signed_by_the_host_it_names_is_refused_and_counted() {
    let mut collector = AuditCollector::new(None, signers(3), key(200));
    // h2's record signed by h1: a host writing in another's name.
    let forged = Signed::sign(body(2), &key(1)).expect("signs");
    collector.handle(Now::ZERO, CollectorInput::Submit { ack: 1, record: Box::new(forged) });
    // A host the collector has never heard of.
    collector.handle(Now::ZERO, CollectorInput::Submit { ack: 2, record: Box::new(record(9)) });
    let outputs: Vec<_> = std::iter::from_fn(|| collector.poll_output()).collect();
    assert_eq!(
        outputs,
        vec![
            CollectorOutput::Refused { ack: 1, refusal: AuditRefusal::BadSignature("h2".into()) },
            CollectorOutput::Refused { ack: 2, refusal: AuditRefusal::UnknownHost("h9".into()) },
        ]
    );
    assert_eq!((collector.refused(), collector.len()), (2, 0));
    // Once the configuration names h9, its records count.
    let mut table = signers(3);
    table.insert("h9".into(), key(9).public());
    collector.handle(Now::ZERO, CollectorInput::Signers(table));
    collector.handle(Now::ZERO, CollectorInput::Submit { ack: 3, record: Box::new(record(9)) });
    assert!(
        matches!(collector.poll_output(), Some(CollectorOutput::Append { entry: e, .. }) if e.index == 0)
    );
}

#[test]
fn a_chain_verifies_and_an_altered_record_is_named() {
    let mut entries = chain(5);
    assert_eq!(verify_chain(&entries), Ok(5));
    entries[2].record.argv = vec!["rm".into()];
    assert_eq!(verify_chain(&entries), Err(ChainError::Hash { index: 2 }));
    let mut entries = chain(5);
    entries.remove(3);
    assert_eq!(verify_chain(&entries), Err(ChainError::Index { index: 4, expected: 3 }));
}

#[test]
fn a_resumed_collector_continues_the_chain() {
    let entries = chain(3);
    let mut collector = AuditCollector::new(entries.last(), signers(10), key(200));
    collector.handle(Now::ZERO, CollectorInput::Submit { ack: 0, record: Box::new(record(9)) });
    let Some(CollectorOutput::Append { entry: next, .. }) = collector.poll_output() else {
        panic!("an append")
    };
    let all: Vec<ChainEntry> = entries.into_iter().chain([*next]).collect();
    assert_eq!(verify_chain(&all), Ok(4));
}

/// `n` records through a collector whose appends are all persisted: the entries and the
/// checkpoints it signed.
fn trail(n: u8) -> (Vec<ChainEntry>, Vec<Signed<Checkpoint>>) {
    let mut collector = AuditCollector::new(None, signers(n), key(200));
    let (mut entries, mut checkpoints) = (Vec::new(), Vec::new());
    for i in 0..n {
        collector
            .handle(Now::ZERO, CollectorInput::Submit { ack: u64::from(i), record: Box::new(record(i)) });
        collector.handle(Now::ZERO, CollectorInput::Persisted { index: u64::from(i) });
        while let Some(out) = collector.poll_output() {
            if let CollectorOutput::Append { entry, checkpoint } = out {
                entries.push(*entry);
                checkpoints.extend(checkpoint.map(|c| *c));
            }
        }
    }
    (entries, checkpoints)
}

/// Rehashes the chain from `from` on, as someone with write access to the store would to
/// hide an edit from the links.
fn rehash(entries: &mut [ChainEntry], from: usize) {
    for i in from..entries.len() {
        let prev = if i == 0 { GENESIS_HASH } else { entries[i - 1].hash };
        let e = &mut entries[i];
        e.prev_hash = prev;
        e.hash = entry_hash(e.index, &e.prev_hash, &e.record, &e.signature, &e.signer);
    }
}

#[test]
fn a_whole_trail_verifies_and_each_kind_of_tampering_is_named() {
    let (entries, checkpoints) = trail(40);
    let (table, collector) = (signers(40), key(200).public());
    assert_eq!(checkpoints.iter().map(|c| c.body.index).collect::<Vec<_>>(), [15, 31]);
    assert_eq!(verify_trail(&entries, &table, &collector, &checkpoints), Ok(40));

    // (a) A record altered in place.
    let mut altered = entries.clone();
    altered[7].record.argv = vec!["rm".into()];
    assert_eq!(verify_trail(&altered, &table, &collector, &checkpoints), Err(ChainError::Hash { index: 7 }));

    // (b) A record re-signed with another host's key, the chain rehashed behind it.
    let mut resigned = entries.clone();
    resigned[5].record.argv = vec!["rm".into()];
    resigned[5].signature = Signed::sign(resigned[5].record.clone(), &key(6)).expect("signs").signature;
    rehash(&mut resigned, 5);
    assert_eq!(verify_chain(&resigned), Ok(40), "the links alone no longer show it");
    assert_eq!(
        verify_trail(&resigned, &table, &collector, &checkpoints),
        Err(ChainError::Signature { index: 5, host: "h5".into() })
    );

    // (c) The chain cut short behind the last checkpoint.
    let truncated = &entries[..20];
    assert_eq!(
        verify_trail(truncated, &table, &collector, &checkpoints),
        Err(ChainError::Truncated { entries: 20, index: 31 })
    );

    // A record dropped and the rest renumbered and rehashed: the checkpoints no longer match.
    let mut dropped: Vec<ChainEntry> = entries.iter().filter(|e| e.index != 3).cloned().collect();
    for (i, e) in dropped.iter_mut().enumerate() {
        e.index = i as u64;
    }
    rehash(&mut dropped, 0);
    assert_eq!(
        verify_trail(&dropped, &table, &collector, &checkpoints),
        Err(ChainError::CheckpointMismatch { index: 15 })
    );

    // A checkpoint not signed by the collector.
    let mut forged = checkpoints.clone();
    forged[0] = Signed::sign(forged[0].body.clone(), &key(1)).expect("signs");
    assert_eq!(
        verify_trail(&entries, &table, &collector, &forged),
        Err(ChainError::CheckpointSignature { index: 15 })
    );
}

/// Everything the collector said, in order.
fn drain(collector: &mut AuditCollector) -> Vec<CollectorOutput> {
    std::iter::from_fn(|| collector.poll_output()).collect()
}

#[test]
fn a_record_submitted_again_is_not_appended_twice_and_is_acknowledged_once_durable() {
    let mut collector = AuditCollector::new(None, signers(3), key(200));
    collector.handle(Now::ZERO, CollectorInput::Submit { ack: 1, record: Box::new(record(1)) });
    // Again before the first copy is durable (its answer is not lost yet; a replay).
    collector.handle(Now::ZERO, CollectorInput::Submit { ack: 2, record: Box::new(record(1)) });
    let outputs = drain(&mut collector);
    assert!(matches!(&outputs[0], CollectorOutput::Append { entry, .. } if entry.index == 0));
    assert_eq!(outputs[1..], [CollectorOutput::Duplicate { host: "h1".into(), index: 0 }]);
    collector.handle(Now::ZERO, CollectorInput::Persisted { index: 0 });
    let acks = drain(&mut collector);
    assert_eq!(acks, [CollectorOutput::Ack { ack: 1, index: 0 }, CollectorOutput::Ack { ack: 2, index: 0 }]);
    // And again once durable: answered at once, nothing appended.
    collector.handle(Now::ZERO, CollectorInput::Submit { ack: 3, record: Box::new(record(1)) });
    let outputs = drain(&mut collector);
    assert_eq!(
        outputs,
        [
            CollectorOutput::Duplicate { host: "h1".into(), index: 0 },
            CollectorOutput::Ack { ack: 3, index: 0 }
        ]
    );
    assert_eq!((collector.len(), collector.duplicates()), (1, 2));
}

#[test]
fn a_record_older_than_every_one_remembered_is_refused_as_too_old() {
    let mut collector = AuditCollector::new(None, signers(4), key(200));
    collector.remember_limit = 2;
    for n in 1..4 {
        collector
            .handle(Now::ZERO, CollectorInput::Submit { ack: u64::from(n), record: Box::new(record(n)) });
    }
    drain(&mut collector);
    // Three appended, two remembered: h1's (made at 1) was forgotten, so anything made at or
    // before 1 may be a replay of it.
    collector.handle(Now::ZERO, CollectorInput::Submit { ack: 9, record: Box::new(record(1)) });
    collector.handle(Now::ZERO, CollectorInput::Submit { ack: 10, record: Box::new(record(0)) });
    let outputs = drain(&mut collector);
    let too_old = |host: &str| AuditRefusal::TooOld { host: host.into(), floor: 1 };
    assert_eq!(
        outputs,
        [
            CollectorOutput::Refused { ack: 9, refusal: too_old("h1") },
            CollectorOutput::Refused { ack: 10, refusal: too_old("h0") },
        ]
    );
    assert_eq!(collector.len(), 3);
    // A record remembered is still known for what it is.
    collector.handle(Now::ZERO, CollectorInput::Submit { ack: 11, record: Box::new(record(3)) });
    assert!(drain(&mut collector).contains(&CollectorOutput::Duplicate { host: "h3".into(), index: 2 }));
}
