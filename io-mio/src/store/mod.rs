//! Durable node state in SQLite (bundled, WAL, synchronous=FULL). Owns the schema, its versioned
//! migrations, and keeping each batch of node records (a member record whole, a chain entry with
//! its checkpoint) inside one transaction, so the driver answers `Persisted` only after the
//! commit. It never interprets the record: core owns what it means.

use std::path::{Path, PathBuf};

use cohort_core::exec::audit::{AuditRecord, ChainEntry, Checkpoint};
use cohort_core::member::MemberRecord;
use cohort_core::node::Record;
use cohort_core::signed::{Signature, Signed};
use rusqlite::{Connection, OptionalExtension, params};

mod kdc;
mod policy;

/// Each entry upgrades the schema from its index to the next version (`PRAGMA user_version`).
const MIGRATIONS: &[&str] = &[
    // 0 → 1: the member's record, one row.
    "CREATE TABLE member_record (
         id INTEGER PRIMARY KEY CHECK (id = 1),
         record BLOB NOT NULL,
         written_unix_ms INTEGER NOT NULL
     );",
    // 1 → 2: the audit collector's chain, and each exec host's local audit records.
    "CREATE TABLE audit_chain (
         idx INTEGER PRIMARY KEY,
         prev_hash BLOB NOT NULL,
         record BLOB NOT NULL,
         hash BLOB NOT NULL
     );
     CREATE TABLE audit_local (
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         host TEXT NOT NULL,
         record BLOB NOT NULL
     );",
    // 2 → 3: the policy master's history of every sync's aggregate.
    "CREATE TABLE policy_history (
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         local TEXT NOT NULL,
         at_unix_ms INTEGER NOT NULL,
         aggregate BLOB NOT NULL
     );",
    // 3 → 4: every policy server's policies, so a restart serves them again.
    "CREATE TABLE policy_store (
         id TEXT PRIMARY KEY,
         version INTEGER NOT NULL,
         signed BLOB NOT NULL
     );",
    // 4 → 5: each chain entry keeps its host's signature; the collector's signed checkpoints.
    "ALTER TABLE audit_chain ADD COLUMN signature BLOB NOT NULL DEFAULT x'';
     CREATE TABLE audit_checkpoints (
         idx INTEGER PRIMARY KEY,
         checkpoint BLOB NOT NULL
     );",
    // 5 → 6: the KDC's principals and their Argon2id hashes; each chain entry keeps the key
    // its signature was checked against.
    "CREATE TABLE kdc_principals (
         name TEXT PRIMARY KEY,
         hash TEXT NOT NULL
     );
     ALTER TABLE audit_chain ADD COLUMN signer BLOB NOT NULL DEFAULT x'';",
    // 6 → 7: policy versions that lost a conflict, kept as history (one row per version).
    "CREATE TABLE policy_superseded (
         id TEXT NOT NULL,
         version INTEGER NOT NULL,
         author TEXT NOT NULL,
         lost BLOB NOT NULL,
         PRIMARY KEY (id, version, author)
     );",
    // 7 → 8: the alerts the policy master raised.
    "CREATE TABLE policy_alerts (
         id INTEGER PRIMARY KEY,
         alert BLOB NOT NULL
     );",
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    #[error(
        "database {path} has schema version {found}, newer than this cohort understands ({known}); \
         run a newer cohort"
    )]
    TooNew { path: PathBuf, found: i64, known: usize },
    #[error(
        "database {path} holds a member record that does not decode ({reason}); restore it from a backup"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "database {path} holds a stored {what} that does not decode ({reason}); restore it from a \
         backup, or remove that row and let the tier send it again"
    )]
    CorruptRow { path: PathBuf, what: String, reason: String },
    #[error("could not encode a record for the database: {0}")]
    Encode(String),
}

#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    conn: Connection,
}

impl Store {
    /// Opens (creating if needed) the database and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let err = |source| StoreError::Sqlite { path: path.to_owned(), source };
        let mut conn = Connection::open(path).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0)).map_err(err)?;
        let known = MIGRATIONS.len();
        if version < 0 || version as usize > known {
            return Err(StoreError::TooNew { path: path.to_owned(), found: version, known });
        }
        for (index, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction().map_err(err)?;
            tx.execute_batch(migration).map_err(err)?;
            tx.pragma_update(None, "user_version", (index + 1) as i64).map_err(err)?;
            tx.commit().map_err(err)?;
        }
        Ok(Store { path: path.to_owned(), conn })
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite { path: self.path.clone(), source }
    }

    /// Makes `records` durable together, in order: one transaction and one sync for the lot
    /// (group commit). Every record is kept when this returns, or (on an error) none is.
    pub fn keep_all(&mut self, records: &[Record], unix_ms: u64) -> Result<(), StoreError> {
        self.conn.execute_batch("BEGIN IMMEDIATE").map_err(|e| self.err(e))?;
        let kept = records.iter().try_for_each(|record| self.keep(record, unix_ms));
        let end = if kept.is_ok() { "COMMIT" } else { "ROLLBACK" };
        let ended = self.conn.execute_batch(end).map_err(|e| self.err(e));
        kept.and(ended)
    }

    fn keep(&mut self, record: &Record, unix_ms: u64) -> Result<(), StoreError> {
        match record {
            Record::Member(record) => self.save_member(record, unix_ms),
            Record::AuditEntry { entry, checkpoint } => self.append_chain(entry, checkpoint.as_deref()),
            Record::LocalAudit(record) => self.append_local_audit(record),
            Record::Principal { name, hash } => self.set_principal(name, hash.as_deref()),
            Record::Policy(policy) => self.save_policy(policy),
            Record::PolicySuperseded(lost) => self.save_superseded(lost),
            Record::PolicyAlert(alert) => self.save_alert(alert),
            Record::PolicyHistory { from, at, aggregate } => self.append_policy_history(from, *at, aggregate),
        }
    }

    /// The member record, if one was ever written.
    pub fn load_member(&self) -> Result<Option<MemberRecord>, StoreError> {
        let blob: Option<Vec<u8>> = self
            .conn
            .query_row("SELECT record FROM member_record WHERE id = 1", [], |row| row.get(0))
            .optional()
            .map_err(|e| self.err(e))?;
        blob.map(|bytes| {
            MemberRecord::from_bytes(&bytes)
                .map_err(|e| StoreError::Corrupt { path: self.path.clone(), reason: e.to_string() })
        })
        .transpose()
    }

    /// Replaces the member record; durable when this returns.
    pub fn save_member(&mut self, record: &MemberRecord, unix_ms: u64) -> Result<(), StoreError> {
        let bytes = record.to_bytes().map_err(|e| StoreError::Encode(e.to_string()))?;
        // A savepoint: its own transaction alone, or part of a `keep_all` batch.
        let tx =
            self.conn.savepoint().map_err(|e| StoreError::Sqlite { path: self.path.clone(), source: e })?;
        tx.execute(
            "INSERT INTO member_record (id, record, written_unix_ms) VALUES (1, ?1, ?2)
             ON CONFLICT (id) DO UPDATE SET record = excluded.record, written_unix_ms = excluded.written_unix_ms",
            params![bytes, unix_ms as i64],
        )
        .map_err(|e| StoreError::Sqlite { path: self.path.clone(), source: e })?;
        tx.commit().map_err(|e| StoreError::Sqlite { path: self.path.clone(), source: e })
    }
}

pub use cohort_core::exec::audit_view::StoredEntry;

impl Store {
    /// Appends one chain entry, and the checkpoint that vouches for the chain up to it when
    /// there is one, in one transaction: both are durable when this returns, or neither is.
    pub fn append_chain(
        &mut self,
        entry: &ChainEntry,
        checkpoint: Option<&Signed<Checkpoint>>,
    ) -> Result<(), StoreError> {
        let encode = |e: cohort_core::wire::WireError| StoreError::Encode(e.to_string());
        let record = cohort_core::wire::encode(&entry.record).map_err(encode)?;
        let checkpoint = checkpoint
            .map(|c| cohort_core::wire::encode(c).map(|bytes| (c.body.index, bytes)))
            .transpose()
            .map_err(encode)?;
        let path = self.path.clone();
        let sqlite = |source| StoreError::Sqlite { path: path.clone(), source };
        let tx = self.conn.savepoint().map_err(sqlite)?;
        tx.execute(
            "INSERT INTO audit_chain (idx, prev_hash, record, hash, signature, signer) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                entry.index as i64,
                entry.prev_hash.to_vec(),
                record,
                entry.hash.to_vec(),
                entry.signature.0.to_vec(),
                [entry.signer.signing, entry.signer.agreement].concat()
            ],
        )
        .map_err(sqlite)?;
        if let Some((index, bytes)) = checkpoint {
            tx.execute(
                "INSERT OR REPLACE INTO audit_checkpoints (idx, checkpoint) VALUES (?1, ?2)",
                params![index as i64, bytes],
            )
            .map_err(sqlite)?;
        }
        tx.commit().map_err(sqlite)
    }

    /// The whole chain in index order.
    pub fn load_chain(&self) -> Result<Vec<StoredEntry>, StoreError> {
        self.chain_rows(
            "SELECT idx, prev_hash, record, hash, signature, signer FROM audit_chain ORDER BY idx",
            [],
        )
    }

    /// Up to `count` entries with an index below `before` (from the newest when `None`), newest
    /// first: one stretch of a listing.
    pub fn chain_newest(&self, before: Option<u64>, count: u32) -> Result<Vec<StoredEntry>, StoreError> {
        let before = before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
        self.chain_rows(
            "SELECT idx, prev_hash, record, hash, signature, signer FROM audit_chain \
             WHERE idx < ?1 ORDER BY idx DESC LIMIT ?2",
            params![before, i64::from(count)],
        )
    }

    /// The chain rows `sql` selects, each decoded as far as it goes.
    fn chain_rows(&self, sql: &str, params: impl rusqlite::Params) -> Result<Vec<StoredEntry>, StoreError> {
        let mut stmt = self.conn.prepare(sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params, |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, Vec<u8>>(1)?,
                    row.get::<_, Vec<u8>>(2)?,
                    row.get::<_, Vec<u8>>(3)?,
                    row.get::<_, Vec<u8>>(4)?,
                    row.get::<_, Vec<u8>>(5)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (idx, prev, record, hash, signature, signer) = row.map_err(|e| self.err(e))?;
            let index = idx as u64;
            let decoded = (|| {
                let prev_hash: [u8; 32] =
                    prev.try_into().map_err(|_| "prev_hash is not 32 bytes".to_owned())?;
                let hash: [u8; 32] = hash.try_into().map_err(|_| "hash is not 32 bytes".to_owned())?;
                let record: AuditRecord = cohort_core::wire::decode(&record).map_err(|e| e.to_string())?;
                let signature: [u8; 64] = signature
                    .try_into()
                    .map_err(|_| "the host's signature is missing or not 64 bytes".to_owned())?;
                let signature = Signature(signature);
                if signer.len() != 64 {
                    return Err("the signer's key is missing or not 64 bytes".to_owned());
                }
                let (signing, agreement) = signer.split_at(32);
                let signer = cohort_core::PublicIdentity {
                    signing: signing.try_into().map_err(|_| "bad signer key".to_owned())?,
                    agreement: agreement.try_into().map_err(|_| "bad signer key".to_owned())?,
                };
                Ok::<_, String>(ChainEntry { index, prev_hash, record, signature, signer, hash })
            })();
            out.push(match decoded {
                Ok(entry) => StoredEntry::Entry(Box::new(entry)),
                Err(reason) => StoredEntry::Undecodable { index, reason },
            });
        }
        Ok(out)
    }

    /// Every checkpoint in index order; one that does not decode is an error naming it.
    pub fn load_checkpoints(&self) -> Result<Vec<Signed<Checkpoint>>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT idx, checkpoint FROM audit_checkpoints ORDER BY idx")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?)))
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (idx, bytes) = row.map_err(|e| self.err(e))?;
            let checkpoint = cohort_core::wire::decode(&bytes).map_err(|e| StoreError::CorruptRow {
                path: self.path.clone(),
                what: format!("audit checkpoint {idx}"),
                reason: e.to_string(),
            })?;
            out.push(checkpoint);
        }
        Ok(out)
    }

    /// The last chain entry, to resume the collector.
    pub fn last_chain_entry(&self) -> Result<Option<ChainEntry>, StoreError> {
        Ok(self.load_chain()?.into_iter().rev().find_map(|e| match e {
            StoredEntry::Entry(entry) => Some(*entry),
            StoredEntry::Undecodable { .. } => None,
        }))
    }

    /// Appends one of this host's audit records; durable when this returns.
    pub fn append_local_audit(&mut self, record: &AuditRecord) -> Result<(), StoreError> {
        let bytes = cohort_core::wire::encode(record).map_err(|e| StoreError::Encode(e.to_string()))?;
        let path = self.path.clone();
        // Prepared once per connection: a batch of records is one statement run many times.
        self.conn
            .prepare_cached("INSERT INTO audit_local (host, record) VALUES (?1, ?2)")
            .and_then(|mut insert| insert.execute(params![record.host, bytes]))
            .map_err(|source| StoreError::Sqlite { path, source })?;
        Ok(())
    }

    pub fn local_audit_count(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM audit_local", [], |row| row.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_core::NodeKeys;
    use cohort_core::member::MemberInfo;
    use cohort_core::member::genesis::{genesis_config, genesis_records};
    use cohort_core::rng::seeded;

    fn record() -> MemberRecord {
        let mut rng = seeded(1);
        let operator = NodeKeys::generate(&mut rng);
        let member = NodeKeys::generate(&mut rng);
        let info = MemberInfo { name: "m0".into(), identity: member.public(), address: "127.0.0.1:1".into() };
        let config = genesis_config("c", "ops", &operator, [info], Default::default());
        genesis_records(&config, &operator, &mut rng).expect("seals").into_values().next().expect("one")
    }

    #[test]
    fn a_saved_record_survives_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.db");
        let mut store = Store::open(&path).expect("opens");
        assert_eq!(store.load_member().expect("loads"), None);
        let mut rec = record();
        store.save_member(&rec, 1).expect("saves");
        rec.boot_epoch = 9;
        store.save_member(&rec, 2).expect("saves");
        drop(store);
        let store = Store::open(&path).expect("reopens");
        assert_eq!(store.load_member().expect("loads"), Some(rec));
    }

    #[test]
    fn a_corrupt_record_is_reported_not_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.db");
        let store = Store::open(&path).expect("opens");
        store.conn.execute("INSERT INTO member_record VALUES (1, x'01ff', 0)", []).expect("insert");
        assert!(matches!(store.load_member(), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.db");
        drop(Store::open(&path).expect("opens"));
        let conn = Connection::open(&path).expect("raw open");
        conn.pragma_update(None, "user_version", 99).expect("bump");
        drop(conn);
        assert!(matches!(Store::open(&path), Err(StoreError::TooNew { found: 99, .. })));
    }
}
