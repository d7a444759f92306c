//! The audit trail: records of every run and every denial, and the collector's append-only chain
//! in which each entry holds the hash of the one before. Owns the record, the chain hashing, the
//! collector machine (a record counts only if signed by the host it names; durable before
//! acknowledged) and chain verification. It never rewrites or drops an entry, and never appends a
//! record it could not verify.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::identity::PublicIdentity;
use crate::machine::Machine;
use crate::signed::Signed;
use crate::time::{Instant, Now, WallClock};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditDecision {
    /// Allowed; the command is about to run.
    Run,
    /// Refused before anything ran.
    Denied { reason: String },
    /// The run ended (exit code, signal, or why it was killed).
    Ended { outcome: String },
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
}

/// One link of the collector's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainEntry {
    pub index: u64,
    pub prev_hash: [u8; 32],
    pub record: AuditRecord,
    pub hash: [u8; 32],
}

/// The hash before the first entry.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// SHA-256 over the previous hash, the index and the canonical encoding of the record.
pub fn entry_hash(index: u64, prev_hash: &[u8; 32], record: &AuditRecord) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"cohort-audit-v1");
    h.update(prev_hash);
    h.update(index.to_be_bytes());
    h.update(postcard::to_allocvec(record).unwrap_or_default());
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
        if entry_hash(entry.index, &entry.prev_hash, &entry.record) != entry.hash {
            return Err(ChainError::Hash { index: entry.index });
        }
        prev = entry.hash;
        expected += 1;
    }
    Ok(expected)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CollectorInput {
    /// A host submits a record signed with its key; `ack` identifies the reply.
    Submit {
        ack: u64,
        record: Signed<AuditRecord>,
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
    /// Append `entry` durably; answer `Persisted` after.
    Append(Box<ChainEntry>),
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
    signers: BTreeMap<String, PublicIdentity>,
    refused: u64,
    next_index: u64,
    last_hash: [u8; 32],
    waiting: VecDeque<(u64, u64)>,
    outputs: VecDeque<CollectorOutput>,
}

impl AuditCollector {
    /// Resumes after the last stored entry (`None` for an empty trail), accepting records from
    /// `signers`.
    pub fn new(last: Option<&ChainEntry>, signers: BTreeMap<String, PublicIdentity>) -> Self {
        AuditCollector {
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
        let signer = self.signers.get(host).ok_or_else(|| AuditRefusal::UnknownHost(clip(host)))?;
        record.verify(signer).map_err(|_| AuditRefusal::BadSignature(clip(host)))?;
        Ok(())
    }
}

/// A host name from a record, cut short enough to log and send back.
fn clip(name: &str) -> String {
    name.chars().take(64).collect()
}

impl Machine for AuditCollector {
    type Input = CollectorInput;
    type Output = CollectorOutput;

    fn handle(&mut self, _now: Now, input: CollectorInput) {
        match input {
            CollectorInput::Signers(signers) => self.signers = signers,
            CollectorInput::Submit { ack, record } => {
                if let Err(refusal) = self.check(&record) {
                    self.refused += 1;
                    self.outputs.push_back(CollectorOutput::Refused { ack, refusal });
                    return;
                }
                let record = record.body;
                let index = self.next_index;
                let hash = entry_hash(index, &self.last_hash, &record);
                let entry = ChainEntry { index, prev_hash: self.last_hash, record, hash };
                self.next_index += 1;
                self.last_hash = hash;
                self.waiting.push_back((index, ack));
                self.outputs.push_back(CollectorOutput::Append(Box::new(entry)));
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
        }
    }

    /// Host `n`'s record, signed by host `n`.
    fn record(n: u8) -> Signed<AuditRecord> {
        Signed::sign(body(n), &key(n)).expect("signs")
    }

    fn chain(n: u8) -> Vec<ChainEntry> {
        let mut collector = AuditCollector::new(None, signers(n));
        let mut entries = Vec::new();
        for i in 0..n {
            collector.handle(Now::ZERO, CollectorInput::Submit { ack: u64::from(i), record: record(i) });
        }
        while let Some(out) = collector.poll_output() {
            if let CollectorOutput::Append(e) = out {
                entries.push(*e);
            }
        }
        entries
    }

    #[test]
    fn acks_come_only_after_persistence_and_in_order() {
        let mut collector = AuditCollector::new(None, signers(3));
        collector.handle(Now::ZERO, CollectorInput::Submit { ack: 7, record: record(1) });
        collector.handle(Now::ZERO, CollectorInput::Submit { ack: 8, record: record(2) });
        let appended: Vec<_> = std::iter::from_fn(|| collector.poll_output()).collect();
        assert!(appended.iter().all(|o| matches!(o, CollectorOutput::Append(_))));
        collector.handle(Now::ZERO, CollectorInput::Persisted { index: 1 });
        let acks: Vec<_> = std::iter::from_fn(|| collector.poll_output()).collect();
        assert_eq!(
            acks,
            vec![CollectorOutput::Ack { ack: 7, index: 0 }, CollectorOutput::Ack { ack: 8, index: 1 }]
        );
    }

    #[test]
    fn a_record_not_signed_by_the_host_it_names_is_refused_and_counted() {
        let mut collector = AuditCollector::new(None, signers(3));
        // h2's record signed by h1: a host writing in another's name.
        let forged = Signed::sign(body(2), &key(1)).expect("signs");
        collector.handle(Now::ZERO, CollectorInput::Submit { ack: 1, record: forged });
        // A host the collector has never heard of.
        collector.handle(Now::ZERO, CollectorInput::Submit { ack: 2, record: record(9) });
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
        collector.handle(Now::ZERO, CollectorInput::Submit { ack: 3, record: record(9) });
        assert!(matches!(collector.poll_output(), Some(CollectorOutput::Append(e)) if e.index == 0));
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
        let mut collector = AuditCollector::new(entries.last(), signers(10));
        collector.handle(Now::ZERO, CollectorInput::Submit { ack: 0, record: record(9) });
        let Some(CollectorOutput::Append(next)) = collector.poll_output() else { panic!("an append") };
        let all: Vec<ChainEntry> = entries.into_iter().chain([*next]).collect();
        assert_eq!(verify_chain(&all), Ok(4));
    }
}
