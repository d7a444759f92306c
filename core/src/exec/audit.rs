//! The audit trail: records of every run and every denial, and the collector's append-only chain
//! in which each entry holds the record, the signature of the host that made it, and the hash of
//! the entry before; at intervals the collector signs a checkpoint (index, head hash, time) of
//! what is durable. Owns the record, the chain hashing, the collector machine (a record counts
//! only if signed by the host it names; durable before acknowledged), checkpoints, and
//! verification of a whole trail. It never rewrites or drops an entry, and never appends a record
//! it could not verify.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::task::{DataDigest, DataKind};
use crate::identity::{NodeKeys, PublicIdentity, Verifier};
use crate::machine::Machine;
use crate::signed::{Signature, Signed, SignedKind};
use crate::time::{Instant, Now, WallClock};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditDecision {
    /// Allowed; the command is about to run.
    Run,
    /// Refused before anything ran.
    Denied { reason: String },
    /// The run ended (exit code, signal, or why it was killed).
    Ended { outcome: String },
    /// The gateway held the run to the principal's ceilings (what was asked, what was granted).
    Lowered { ceilings: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub host: String,
    /// The principal as the ticket named it, or as claimed when no valid ticket was shown.
    pub principal: String,
    pub run_as: String,
    pub argv: Vec<String>,
    pub at: WallClock,
    pub decision: AuditDecision,
    /// Ties the records of one run together.
    pub run_id: [u8; 16],
    /// The size and SHA-256 of the data the run carried: its standard input and the value of
    /// each variable passed (by name), or each file a copy placed (argv is then empty). Never
    /// the bytes.
    pub data: Vec<DataDigest>,
}

impl AuditRecord {
    /// What the record is about, in one line: the command, or the files a copy placed, each
    /// word quoted as a shell would need it (see [`quote_words`]).
    pub fn subject(&self) -> String {
        if self.argv.is_empty() && !self.data.is_empty() {
            let paths: Vec<&str> = self
                .data
                .iter()
                .filter_map(|d| match &d.what {
                    DataKind::File { path, .. } => Some(path.as_str()),
                    DataKind::Stdin | DataKind::Env { .. } => None,
                })
                .collect();
            return format!("copy {}", quote_words(&paths));
        }
        quote_words(&self.argv)
    }
}

/// Words as one line a shell reads back as the same words: plain words as they are, others in
/// single quotes, and a word with a control character (a newline, an escape) in bash's `$'…'`
/// with the character escaped, so a recorded argument can never forge a second line or move
/// the terminal's cursor.
pub fn quote_words<S: AsRef<str>>(words: &[S]) -> String {
    let quoted: Vec<String> = words
        .iter()
        .map(|w| {
            let w = w.as_ref();
            if !w.chars().any(char::is_control) {
                return shell_words::quote(w).into_owned();
            }
            let mut out = String::from("$'");
            for c in w.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\'' => out.push_str("\\'"),
                    '\n' => out.push_str("\\n"),
                    '\t' => out.push_str("\\t"),
                    '\r' => out.push_str("\\r"),
                    c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
                    c => out.push(c),
                }
            }
            out.push('\'');
            out
        })
        .collect();
    quoted.join(" ")
}

/// One link of the collector's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainEntry {
    pub index: u64,
    pub prev_hash: [u8; 32],
    pub record: AuditRecord,
    /// The signature of the host the record names, over the record.
    pub signature: Signature,
    /// The key the collector checked that signature against: the host's key in the
    /// configuration of the day, so a record outlives its host's removal.
    pub signer: PublicIdentity,
    pub hash: [u8; 32],
}

impl ChainEntry {
    /// The record as its host signed it.
    pub fn signed_record(&self) -> Signed<AuditRecord> {
        Signed { body: self.record.clone(), signature: self.signature }
    }
}

/// The collector's signed statement that the chain up to `index` ends in `head_hash`: an
/// entry removed or changed behind it can no longer be hidden by rehashing what follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub index: u64,
    pub head_hash: [u8; 32],
    pub at: WallClock,
}

impl SignedKind for Checkpoint {
    const DOMAIN: &'static str = "audit-checkpoint";
}

/// The collector signs a checkpoint after every this many durable entries.
pub const CHECKPOINT_EVERY: u64 = 16;

/// The hash before the first entry.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// SHA-256 over the previous hash, the index, the canonical encoding of the record, the host's
/// signature and the key it was checked against.
pub fn entry_hash(
    index: u64,
    prev_hash: &[u8; 32],
    record: &AuditRecord,
    signature: &Signature,
    signer: &PublicIdentity,
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"cohort-audit-v3");
    h.update(prev_hash);
    h.update(index.to_be_bytes());
    h.update(postcard::to_allocvec(record).unwrap_or_default());
    h.update(signature.0);
    h.update(signer.signing);
    h.update(signer.agreement);
    h.finalize().into()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("entry {index}: expected index {expected}")]
    Index { index: u64, expected: u64 },
    #[error("entry {index}: does not link to the entry before it")]
    Link { index: u64 },
    #[error("entry {index}: its hash does not match its contents (altered)")]
    Hash { index: u64 },
    #[error("entry {index}: names host `{host}`, whose key is not known")]
    UnknownHost { index: u64, host: String },
    #[error("entry {index}: not signed by host `{host}`'s key (forged or re-signed)")]
    Signature { index: u64, host: String },
    #[error("checkpoint at entry {index}: not signed by the collector's key")]
    CheckpointSignature { index: u64 },
    #[error("checkpoint at entry {index}: the chain there does not end in the checkpointed hash")]
    CheckpointMismatch { index: u64 },
    #[error("the chain has {entries} entries, but a checkpoint vouches for entry {index}: truncated")]
    Truncated { entries: u64, index: u64 },
}

/// Walks the chain from the start; the first broken link is the error.
pub fn verify_chain<'a>(entries: impl IntoIterator<Item = &'a ChainEntry>) -> Result<u64, ChainError> {
    let mut prev = GENESIS_HASH;
    let mut expected = 0u64;
    for entry in entries {
        if entry.index != expected {
            return Err(ChainError::Index { index: entry.index, expected });
        }
        if entry.prev_hash != prev {
            return Err(ChainError::Link { index: entry.index });
        }
        if entry_hash(entry.index, &entry.prev_hash, &entry.record, &entry.signature, &entry.signer)
            != entry.hash
        {
            return Err(ChainError::Hash { index: entry.index });
        }
        prev = entry.hash;
        expected += 1;
    }
    Ok(expected)
}

/// A whole trail: every link, every host's signature, and every checkpoint against the
/// collector's key and the chain. A record's signature must verify under the key its entry
/// names, and that key must be the host's key in `signers` (by the host name the record
/// carries); a host no longer in `signers` (removed since) is taken on the collector's word only
/// where a valid checkpoint covers its entry. Returns the number of entries; the first failure
/// is the error.
pub fn verify_trail(
    entries: &[ChainEntry],
    signers: &BTreeMap<String, PublicIdentity>,
    collector: &PublicIdentity,
    checkpoints: &[Signed<Checkpoint>],
) -> Result<u64, ChainError> {
    let count = verify_chain(entries)?;
    let vouched = checkpoints.iter().filter(|c| c.verify(collector).is_ok()).map(|c| c.body.index).max();
    for entry in entries {
        let host = clip(&entry.record.host);
        let signature_error = || ChainError::Signature { index: entry.index, host: host.clone() };
        match signers.get(&entry.record.host) {
            Some(key) if *key != entry.signer => return Err(signature_error()),
            Some(_) => {}
            None if vouched.is_some_and(|v| entry.index <= v) => {}
            None => return Err(ChainError::UnknownHost { index: entry.index, host: host.clone() }),
        }
        entry.signed_record().verify(&entry.signer).map_err(|_| signature_error())?;
    }
    for checkpoint in checkpoints {
        let index = checkpoint.body.index;
        checkpoint.verify(collector).map_err(|_| ChainError::CheckpointSignature { index })?;
        let at = usize::try_from(index).ok().and_then(|i| entries.get(i));
        match at {
            None => return Err(ChainError::Truncated { entries: count, index }),
            Some(entry) if entry.hash != checkpoint.body.head_hash => {
                return Err(ChainError::CheckpointMismatch { index });
            }
            Some(_) => {}
        }
    }
    Ok(count)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CollectorInput {
    /// A host submits a record signed with its key; `ack` identifies the reply.
    Submit {
        ack: u64,
        record: Box<Signed<AuditRecord>>,
    },
    /// The hosts (and the gateway) whose records are accepted, by the name a record carries:
    /// from the installed configuration, replacing the table before.
    Signers(BTreeMap<String, PublicIdentity>),
    Persisted {
        index: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CollectorOutput {
    /// Append `entry` durably, with `checkpoint` (vouching for the chain up to and including
    /// `entry`) in the same write when this entry completes a stretch of [`CHECKPOINT_EVERY`];
    /// answer `Persisted` after. One write keeps the two durable together, for one sync.
    Append { entry: Box<ChainEntry>, checkpoint: Option<Box<Signed<Checkpoint>>> },
    /// The record is durable at `index`: tell the submitter.
    Ack { ack: u64, index: u64 },
    /// The record was not appended: tell the submitter why.
    Refused { ack: u64, refusal: AuditRefusal },
}

/// Why the collector would not append a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditRefusal {
    #[error("the record names host `{0}`, which the collector does not know")]
    UnknownHost(String),
    #[error("the record for `{0}` is not signed by that host's key")]
    BadSignature(String),
}

/// The audit collector: appends in arrival order and acknowledges only what is durable.
#[derive(Debug)]
pub struct AuditCollector {
    /// Signs checkpoints.
    keys: NodeKeys,
    signers: BTreeMap<String, PublicIdentity>,
    /// The signers' keys decoded, each once: a record costs one verification, not a decode too.
    /// A signer whose key does not decode has none, and its records are refused.
    verifiers: BTreeMap<String, Verifier>,
    refused: u64,
    next_index: u64,
    last_hash: [u8; 32],
    /// Appended and not yet durable: (index, ack, hash).
    waiting: VecDeque<(u64, u64)>,
    outputs: VecDeque<CollectorOutput>,
}

impl AuditCollector {
    /// Resumes after the last stored entry (`None` for an empty trail), accepting records from
    /// `signers`, signing checkpoints with `keys`.
    pub fn new(last: Option<&ChainEntry>, signers: BTreeMap<String, PublicIdentity>, keys: NodeKeys) -> Self {
        AuditCollector {
            keys,
            verifiers: decoded(&signers),
            signers,
            refused: 0,
            next_index: last.map_or(0, |e| e.index + 1),
            last_hash: last.map_or(GENESIS_HASH, |e| e.hash),
            waiting: VecDeque::new(),
            outputs: VecDeque::new(),
        }
    }

    pub fn len(&self) -> u64 {
        self.next_index
    }

    pub fn is_empty(&self) -> bool {
        self.next_index == 0
    }

    /// Records refused since start (unknown host, bad signature).
    pub fn refused(&self) -> u64 {
        self.refused
    }

    fn check(&self, record: &Signed<AuditRecord>) -> Result<(), AuditRefusal> {
        let host = &record.body.host;
        if !self.signers.contains_key(host) {
            return Err(AuditRefusal::UnknownHost(clip(host)));
        }
        let verifier = self.verifiers.get(host).ok_or_else(|| AuditRefusal::BadSignature(clip(host)))?;
        record.verify_by(verifier).map_err(|_| AuditRefusal::BadSignature(clip(host)))?;
        Ok(())
    }
}

/// Each signer's key decoded, leaving out any that is not a curve point.
fn decoded(signers: &BTreeMap<String, PublicIdentity>) -> BTreeMap<String, Verifier> {
    signers.iter().filter_map(|(host, id)| Some((host.clone(), id.verifier().ok()?))).collect()
}

/// A host name from a record, cut short enough to log and send back.
fn clip(name: &str) -> String {
    name.chars().take(64).collect()
}

impl Machine for AuditCollector {
    type Input = CollectorInput;
    type Output = CollectorOutput;

    fn handle(&mut self, now: Now, input: CollectorInput) {
        match input {
            CollectorInput::Signers(signers) => {
                self.verifiers = decoded(&signers);
                self.signers = signers;
            }
            CollectorInput::Submit { ack, record } => {
                if let Err(refusal) = self.check(&record) {
                    self.refused += 1;
                    self.outputs.push_back(CollectorOutput::Refused { ack, refusal });
                    return;
                }
                let Signed { body: record, signature } = *record;
                let index = self.next_index;
                let Some(signer) = self.signers.get(&record.host).copied() else { return };
                let hash = entry_hash(index, &self.last_hash, &record, &signature, &signer);
                let entry = ChainEntry { index, prev_hash: self.last_hash, record, signature, signer, hash };
                self.next_index += 1;
                self.last_hash = hash;
                self.waiting.push_back((index, ack));
                // Signing a fixed-shape value cannot fail short of a bug; the next checkpoint
                // covers this one's entries too.
                let checkpoint = ((index + 1) % CHECKPOINT_EVERY == 0)
                    .then(|| {
                        Signed::sign(Checkpoint { index, head_hash: hash, at: now.wall }, &self.keys).ok()
                    })
                    .flatten()
                    .map(Box::new);
                self.outputs.push_back(CollectorOutput::Append { entry: Box::new(entry), checkpoint });
            }
            CollectorInput::Persisted { index } => {
                // Appends complete in order: everything up to `index` is durable.
                while let Some(&(i, ack)) = self.waiting.front() {
                    if i > index {
                        break;
                    }
                    self.waiting.pop_front();
                    self.outputs.push_back(CollectorOutput::Ack { ack, index: i });
                }
            }
        }
    }

    fn poll_output(&mut self) -> Option<CollectorOutput> {
        self.outputs.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

#[cfg(test)]
mod tests {
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
        assert!(
            matches!(&outputs[2..], [CollectorOutput::Append { entry, .. }] if entry.record.host == "h1")
        );
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
        assert_eq!(
            verify_trail(&altered, &table, &collector, &checkpoints),
            Err(ChainError::Hash { index: 7 })
        );

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
}
