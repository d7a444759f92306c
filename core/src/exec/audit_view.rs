//! The audit trail as people and scripts read it: rows as a store hands them back (decoded as
//! far as they go), a filter by principal and host, one entry as JSON with every field named,
//! times in UTC, and a verify of stored rows that names the first row that no longer decodes.
//! Owns no chain rule: linking, signatures and checkpoints are [`verify_trail`]'s.

use std::collections::BTreeMap;

use super::audit::{AuditDecision, ChainEntry, ChainError, Checkpoint, verify_trail};
use super::directory::ExecDirectory;
use super::gateway::GATEWAY_AUDIT_NAME;
use super::task::{DataDigest, DataKind};
use crate::identity::PublicIdentity;
use crate::signed::Signed;

/// A chain row as stored, decoded as far as it will go: verification must name a row that no
/// longer decodes rather than stop at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredEntry {
    Entry(Box<ChainEntry>),
    Undecodable { index: u64, reason: String },
}

impl StoredEntry {
    pub fn index(&self) -> u64 {
        match self {
            StoredEntry::Entry(entry) => entry.index,
            StoredEntry::Undecodable { index, .. } => *index,
        }
    }
}

/// Which part of the audit trail a read of the store wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditRange {
    /// Up to `count` entries with an index below `before` (the newest when `None`), newest
    /// first, without checkpoints.
    Newest { before: Option<u64>, count: u32 },
    /// The whole chain, oldest first, with every checkpoint: what a verify needs.
    Whole,
}

/// What a read of the audit trail found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRows {
    pub rows: Vec<StoredEntry>,
    pub checkpoints: Vec<Signed<Checkpoint>>,
}

impl AuditRows {
    /// What a store holding `kept` (each entry with the checkpoint written beside it) returns
    /// for `range`: for drivers that keep the trail in memory.
    pub fn select<'a>(
        kept: impl IntoIterator<Item = (&'a ChainEntry, Option<&'a Signed<Checkpoint>>)>,
        range: AuditRange,
    ) -> AuditRows {
        let mut rows = Vec::new();
        let mut checkpoints = Vec::new();
        for (entry, checkpoint) in kept {
            rows.push(StoredEntry::Entry(Box::new(entry.clone())));
            checkpoints.extend(checkpoint.cloned());
        }
        rows.sort_by_key(StoredEntry::index);
        match range {
            AuditRange::Whole => AuditRows { rows, checkpoints },
            AuditRange::Newest { before, count } => {
                let rows = rows
                    .into_iter()
                    .rev()
                    .filter(|r| before.is_none_or(|b| r.index() < b))
                    .take(count as usize)
                    .collect();
                AuditRows { rows, checkpoints: Vec::new() }
            }
        }
    }
}

/// Why stored rows do not make an intact trail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrailError {
    #[error("entry {index} does not decode ({reason})")]
    Undecodable { index: u64, reason: String },
    #[error(transparent)]
    Chain(#[from] ChainError),
}

/// Verifies the whole stored trail: every row decodes, then [`verify_trail`]. Returns the number
/// of entries.
pub fn verify_stored(
    rows: &[StoredEntry],
    signers: &BTreeMap<String, PublicIdentity>,
    collector: &PublicIdentity,
    checkpoints: &[Signed<Checkpoint>],
) -> Result<u64, TrailError> {
    let mut entries = Vec::with_capacity(rows.len());
    for row in rows {
        match row {
            StoredEntry::Entry(entry) => entries.push((**entry).clone()),
            StoredEntry::Undecodable { index, reason } => {
                return Err(TrailError::Undecodable { index: *index, reason: reason.clone() });
            }
        }
    }
    Ok(verify_trail(&entries, signers, collector, checkpoints)?)
}

/// Whose signatures a trail carries: each managed host's key by its name, and the gateway's own
/// (for its refusals) under [`GATEWAY_AUDIT_NAME`]. The collector takes records only from these,
/// and a verify checks every entry against them.
pub fn audit_signers(directory: &ExecDirectory, gateway: PublicIdentity) -> BTreeMap<String, PublicIdentity> {
    let mut signers: BTreeMap<String, PublicIdentity> =
        directory.hosts.iter().map(|(name, host)| (name.clone(), host.identity)).collect();
    signers.insert(GATEWAY_AUDIT_NAME.to_owned(), gateway);
    signers
}

/// Which entries a reader wants: all of one principal's, one host's, or both at once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub principal: Option<String>,
    pub host: Option<String>,
}

impl AuditFilter {
    /// An undecodable row matches only an empty filter: it is shown where nothing is filtered
    /// out, so damage is never hidden from a plain listing.
    pub fn matches(&self, row: &StoredEntry) -> bool {
        match row {
            StoredEntry::Entry(entry) => {
                self.principal.as_ref().is_none_or(|p| *p == entry.record.principal)
                    && self.host.as_ref().is_none_or(|h| *h == entry.record.host)
            }
            StoredEntry::Undecodable { .. } => self.principal.is_none() && self.host.is_none(),
        }
    }
}

/// Milliseconds since the epoch as an RFC 3339 time in UTC to the second
/// (`2026-11-23T10:08:59Z`): unambiguous in every time zone, and what log pipelines parse.
pub fn utc_text(millis: u64) -> String {
    let secs = i64::try_from(millis / 1000).unwrap_or(i64::MAX);
    match jiff::Timestamp::from_second(secs) {
        Ok(t) => t.to_string(),
        // Beyond year 9999: no RFC 3339 form; say what it is rather than invent a date.
        Err(_) => format!("{millis} ms after the Unix epoch"),
    }
}

/// A decision's one word, and its detail where it has one.
pub fn decision_parts(decision: &AuditDecision) -> (&'static str, Option<&str>) {
    match decision {
        AuditDecision::Run => ("run", None),
        AuditDecision::Denied { reason } => ("denied", Some(reason.as_str())),
        AuditDecision::Ended { outcome } => ("ended", Some(outcome.as_str())),
        AuditDecision::Lowered { ceilings } => ("lowered", Some(ceilings.as_str())),
    }
}

/// One entry as a log pipeline wants it: every field named, times in UTC and milliseconds.
pub fn entry_json(entry: &ChainEntry) -> serde_json::Value {
    let r = &entry.record;
    let (decision, detail) = decision_parts(&r.decision);
    serde_json::json!({
        "index": entry.index,
        "at": utc_text(r.at.0),
        "at_unix_ms": r.at.0,
        "host": r.host,
        "principal": r.principal,
        "run_as": r.run_as,
        "argv": r.argv,
        "data": r.data.iter().map(data_json).collect::<Vec<_>>(),
        "decision": decision,
        "detail": detail,
        "run_id": hex::encode(r.run_id),
        "hash": hex::encode(entry.hash),
        "prev_hash": hex::encode(entry.prev_hash),
        "host_signature": hex::encode(entry.signature.0),
        "host_key": hex::encode(entry.signer.signing),
    })
}

/// A stored row as JSON: the entry, or the index and why it does not decode.
pub fn row_json(row: &StoredEntry) -> serde_json::Value {
    match row {
        StoredEntry::Entry(entry) => entry_json(entry),
        StoredEntry::Undecodable { index, reason } => {
            serde_json::json!({ "index": index, "undecodable": reason })
        }
    }
}

/// One piece of data a run carried, by size and digest.
fn data_json(d: &DataDigest) -> serde_json::Value {
    let (kind, path, mode, name) = match &d.what {
        DataKind::Stdin => ("stdin", None, None, None),
        DataKind::File { path, mode } => ("file", Some(path.as_str()), Some(format!("{mode:04o}")), None),
        DataKind::Env { name } => ("env", None, None, Some(name.as_str())),
    };
    serde_json::json!({
        "kind": kind, "path": path, "mode": mode, "name": name, "size": d.size, "sha256": hex::encode(d.sha256)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc_text(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_text(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(utc_text(1_795_428_539_207), "2026-11-23T10:08:59Z");
        assert_eq!(utc_text(u64::MAX), "18446744073709551615 ms after the Unix epoch");
    }

    #[test]
    fn an_undecodable_row_fails_verify_by_its_index_and_shows_only_unfiltered() {
        let rows = vec![StoredEntry::Undecodable { index: 4, reason: "bad bytes".into() }];
        let collector = crate::identity::NodeKeys::generate(&mut crate::rng::seeded(1)).public();
        let e = verify_stored(&rows, &BTreeMap::new(), &collector, &[]).expect_err("undecodable");
        assert_eq!(e.to_string(), "entry 4 does not decode (bad bytes)");
        assert!(AuditFilter::default().matches(&rows[0]));
        let by_alice = AuditFilter { principal: Some("alice".into()), host: None };
        assert!(!by_alice.matches(&rows[0]));
    }
}
