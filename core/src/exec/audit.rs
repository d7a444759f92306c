//! The audit trail: records of every run and every denial, and the collector's append-only chain
//! in which each entry holds the record, the signature of the host that made it, and the hash of
//! the entry before; at intervals the collector signs a checkpoint (index, head hash, time) of
//! what is durable. Owns the record, the chain hashing, the collector machine (a record counts
//! only if signed by the host it names; durable before acknowledged), checkpoints, and
//! verification of a whole trail. It never rewrites or drops an entry, and never appends a record
//! it could not verify.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

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
    /// The record is one the chain holds already, at `index` (a submission whose answer was
    /// lost, or a replay): it is not appended again; the submitter hears `Ack` once `index` is
    /// durable.
    Duplicate { host: String, index: u64 },
}

/// Why the collector would not append a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditRefusal {
    #[error("the record names host `{0}`, which the collector does not know")]
    UnknownHost(String),
    #[error("the record for `{0}` is not signed by that host's key")]
    BadSignature(String),
    #[error(
        "the record for `{host}` was made before the oldest record the collector still remembers \
         ({floor} ms), so it cannot be told from a replay; it stays in the host's own trail"
    )]
    TooOld { host: String, floor: u64 },
}

/// Records the collector remembers, to know one it appended already when it comes again. Past
/// this, the oldest are forgotten and a record made before them is refused as too old.
pub const REMEMBERED_RECORDS: usize = 131_072;

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
    /// Appended and not yet durable: (index, ack), in the order the answers are due.
    waiting: VecDeque<(u64, u64)>,
    /// Records appended since start, by digest of the signed record: the index each went to.
    remembered: BTreeMap<[u8; 32], u64>,
    /// The same, oldest first by the time the record was made, to forget the oldest.
    remembered_by_age: BTreeSet<(WallClock, [u8; 32])>,
    /// The newest time of a record forgotten: one made at or before it may be a replay.
    forgotten_before: Option<WallClock>,
    /// How many records it remembers ([`REMEMBERED_RECORDS`]; tests lower it).
    remember_limit: usize,
    duplicates: u64,
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
            remembered: BTreeMap::new(),
            remembered_by_age: BTreeSet::new(),
            forgotten_before: None,
            remember_limit: REMEMBERED_RECORDS,
            duplicates: 0,
            outputs: VecDeque::new(),
        }
    }

    /// Records submitted again and not appended (lost answers and replays).
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// The chain index of a record appended already, if it is one.
    fn appended(&self, digest: &[u8; 32]) -> Option<u64> {
        self.remembered.get(digest).copied()
    }

    fn remember(&mut self, at: WallClock, digest: [u8; 32], index: u64) {
        self.remembered.insert(digest, index);
        self.remembered_by_age.insert((at, digest));
        while self.remembered.len() > self.remember_limit {
            let Some((at, oldest)) = self.remembered_by_age.pop_first() else { break };
            self.remembered.remove(&oldest);
            self.forgotten_before = self.forgotten_before.max(Some(at));
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

    fn check(&self, record: &Signed<AuditRecord>, digest: &[u8; 32]) -> Result<(), AuditRefusal> {
        let host = &record.body.host;
        if !self.signers.contains_key(host) {
            return Err(AuditRefusal::UnknownHost(clip(host)));
        }
        let verifier = self.verifiers.get(host).ok_or_else(|| AuditRefusal::BadSignature(clip(host)))?;
        record.verify_by(verifier).map_err(|_| AuditRefusal::BadSignature(clip(host)))?;
        if let Some(floor) = self.forgotten_before
            && record.body.at <= floor
            && self.appended(digest).is_none()
        {
            return Err(AuditRefusal::TooOld { host: clip(host), floor: floor.0 });
        }
        Ok(())
    }
}

/// What tells one signed record from another: the digest of its encoding, signature included
/// (Ed25519 signs deterministically, so a record submitted again has the same one).
fn record_digest(record: &Signed<AuditRecord>) -> [u8; 32] {
    let bytes = postcard::to_allocvec(record).unwrap_or_default();
    Sha256::digest(bytes).into()
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
                let digest = record_digest(&record);
                if let Err(refusal) = self.check(&record, &digest) {
                    self.refused += 1;
                    self.outputs.push_back(CollectorOutput::Refused { ack, refusal });
                    return;
                }
                if let Some(index) = self.appended(&digest) {
                    self.duplicates += 1;
                    self.outputs
                        .push_back(CollectorOutput::Duplicate { host: clip(&record.body.host), index });
                    let durable = self.waiting.iter().all(|(i, _)| *i != index);
                    if durable {
                        self.outputs.push_back(CollectorOutput::Ack { ack, index });
                    } else {
                        // Answered with the first copy's append, once it is durable.
                        self.waiting.push_back((index, ack));
                    }
                    return;
                }
                let Signed { body: record, signature } = *record;
                let index = self.next_index;
                let Some(signer) = self.signers.get(&record.host).copied() else { return };
                self.remember(record.at, digest, index);
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
mod tests;
