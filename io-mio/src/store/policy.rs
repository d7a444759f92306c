//! What a policy server keeps: every policy it holds (the winning version of each, signed), the
//! versions that lost conflicts, and, at the master, each sync's aggregate. Reading back never trusts the rows: core verifies each
//! policy again before serving it.

use cohort_core::WallClock;
use cohort_core::policy::alerts::Alert;
use cohort_core::policy::document::{SignedPolicy, Superseded};
use cohort_core::policy::report::Aggregate;
use rusqlite::params;

use super::{Store, StoreError};

impl Store {
    /// Keeps `policy`, replacing the held version of the same id (core sends only winners; a lower
    /// version number never replaces a higher one here either, whatever a fault reorders);
    /// durable when this returns.
    pub fn save_policy(&mut self, policy: &SignedPolicy) -> Result<(), StoreError> {
        let bytes = cohort_core::wire::encode(policy).map_err(|e| StoreError::Encode(e.to_string()))?;
        let version = i64::try_from(policy.body.version).map_err(|_| {
            StoreError::Encode(format!(
                "policy `{}` version {} is too large",
                policy.body.id, policy.body.version
            ))
        })?;
        self.conn
            .execute(
                "INSERT INTO policy_store (id, version, signed) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET version = excluded.version, signed = excluded.signed
                 WHERE excluded.version >= policy_store.version",
                params![policy.body.id, version, bytes],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Every kept policy, by id. A row that no longer decodes is an error naming it: serving
    /// without it would silently lose a policy the tier had agreed on.
    pub fn load_policies(&self) -> Result<Vec<SignedPolicy>, StoreError> {
        self.decode_rows("SELECT id, signed FROM policy_store ORDER BY id", [], |id| format!("policy `{id}`"))
    }

    /// Keeps a version that lost a conflict (once).
    pub fn save_superseded(&mut self, lost: &Superseded) -> Result<(), StoreError> {
        let bytes = cohort_core::wire::encode(lost).map_err(|e| StoreError::Encode(e.to_string()))?;
        let version = i64::try_from(lost.policy.version).unwrap_or(i64::MAX);
        self.conn
            .execute(
                "INSERT OR IGNORE INTO policy_superseded (id, version, author, lost) VALUES (?1, ?2, ?3, ?4)",
                params![lost.policy.id, version, lost.policy.author, bytes],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Every kept lost version, by id then version.
    pub fn load_superseded(&self) -> Result<Vec<Superseded>, StoreError> {
        self.decode_rows("SELECT id, lost FROM policy_superseded ORDER BY id, version, author", [], |id| {
            format!("superseded version of policy `{id}`")
        })
    }

    /// Keeps an alert the master raised (once per id).
    pub fn save_alert(&mut self, alert: &Alert) -> Result<(), StoreError> {
        let bytes = cohort_core::wire::encode(alert).map_err(|e| StoreError::Encode(e.to_string()))?;
        let id = i64::try_from(alert.id).unwrap_or(i64::MAX);
        self.conn
            .execute("INSERT OR IGNORE INTO policy_alerts (id, alert) VALUES (?1, ?2)", params![id, bytes])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The newest `limit` alerts kept, oldest first.
    pub fn load_alerts(&self, limit: usize) -> Result<Vec<Alert>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.decode_rows(
            "SELECT CAST(id AS TEXT), alert FROM
               (SELECT id, alert FROM policy_alerts ORDER BY id DESC LIMIT ?1)
             ORDER BY id",
            [limit],
            |id| format!("alert {id}"),
        )
    }

    /// Decodes the value in each row `sql` selects as (name, encoded value), in order. A row
    /// that no longer decodes is an error naming it (`what(name)`), never skipped: going on
    /// without it would silently lose what the node had kept.
    fn decode_rows<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        what: impl Fn(&str) -> String,
    ) -> Result<Vec<T>, StoreError> {
        let mut stmt = self.conn.prepare(sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params, |row| Ok((row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?)))
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (name, bytes) = row.map_err(|e| self.err(e))?;
            out.push(cohort_core::wire::decode(&bytes).map_err(|e| StoreError::CorruptRow {
                path: self.path.clone(),
                what: what(&name),
                reason: e.to_string(),
            })?);
        }
        Ok(out)
    }

    /// Keeps one sync's aggregate for historical status.
    pub fn append_policy_history(
        &mut self,
        local: &str,
        at: WallClock,
        aggregate: &Aggregate,
    ) -> Result<(), StoreError> {
        let bytes = cohort_core::wire::encode(aggregate).map_err(|e| StoreError::Encode(e.to_string()))?;
        self.conn
            .execute(
                "INSERT INTO policy_history (local, at_unix_ms, aggregate) VALUES (?1, ?2, ?3)",
                params![local, at.0 as i64, bytes],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn policy_history_count(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM policy_history", [], |row| row.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }

    /// The newest `limit` rows of the history, oldest first (in the order they were kept): what
    /// the master's in-memory history starts from after a restart. A row that no longer decodes
    /// is an error naming it, like every other loader here.
    pub fn policy_history(&self, limit: usize) -> Result<Vec<(String, WallClock, Aggregate)>, StoreError> {
        // SQLite takes a signed limit; anything past i64::MAX is every row anyway.
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, local, at_unix_ms, aggregate FROM
                   (SELECT id, local, at_unix_ms, aggregate FROM policy_history ORDER BY id DESC LIMIT ?1)
                 ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([limit], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, Vec<u8>>(3)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, local, at, bytes) = row.map_err(|e| self.err(e))?;
            let aggregate: Aggregate =
                cohort_core::wire::decode(&bytes).map_err(|e| StoreError::CorruptRow {
                    path: self.path.clone(),
                    what: format!("history row {id} (from `{local}`)"),
                    reason: e.to_string(),
                })?;
            out.push((local, WallClock(at.max(0) as u64), aggregate));
        }
        Ok(out)
    }

    /// Each local's most recent stored aggregate: what historical status starts from after a
    /// restart.
    pub fn latest_policy_history(&self) -> Result<Vec<(String, WallClock, Aggregate)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT local, at_unix_ms, aggregate FROM policy_history
                 WHERE id IN (SELECT MAX(id) FROM policy_history GROUP BY local) ORDER BY local",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?, row.get::<_, Vec<u8>>(2)?))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (local, at, bytes) = row.map_err(|e| self.err(e))?;
            let aggregate: Aggregate =
                cohort_core::wire::decode(&bytes).map_err(|e| StoreError::CorruptRow {
                    path: self.path.clone(),
                    what: format!("aggregate from `{local}`"),
                    reason: e.to_string(),
                })?;
            out.push((local, WallClock(at.max(0) as u64), aggregate));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use cohort_core::NodeKeys;
    use cohort_core::policy::document::{Policy, PolicyTarget, Scope};
    use cohort_core::rng::seeded;
    use cohort_core::signed::Signed;

    use super::*;

    fn policy(keys: &NodeKeys, version: u64, value: &str) -> SignedPolicy {
        let body = Policy {
            id: "fw".into(),
            version,
            author: "master".into(),
            scope: Scope::Global,
            target: PolicyTarget::default(),
            params: [("firewall.default".to_owned(), value.to_owned())].into(),
            retired: false,
        };
        Signed::sign(body, keys).expect("signs")
    }

    /// Group commit: a batch is kept whole in one transaction, and a batch with a record that
    /// cannot be kept leaves nothing of itself behind.
    #[test]
    fn a_batch_of_records_is_kept_whole_or_not_at_all() {
        use cohort_core::node::Record;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.db");
        let keys = NodeKeys::generate(&mut seeded(3));
        let mut store = Store::open(&path).expect("opens");
        let principal = |name: &str| Record::Principal { name: name.into(), hash: Some("h".into()) };
        let kept = [principal("alice"), Record::Policy(policy(&keys, 1, "deny")), principal("bob")];
        store.keep_all(&kept, 1).expect("keeps the batch");
        let unkeepable = Record::Policy(policy(&keys, u64::MAX, "allow"));
        let error = store.keep_all(&[principal("carol"), unkeepable], 2).expect_err("refused");
        assert!(error.to_string().contains("too large"), "{error}");
        drop(store);
        let store = Store::open(&path).expect("reopens");
        let names: Vec<String> = store.load_principals().expect("loads").into_keys().collect();
        assert_eq!(names, ["alice", "bob"], "carol went with the batch that failed");
        let policies = store.load_policies().expect("loads");
        assert_eq!(policies.iter().map(|p| p.body.version).collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn a_kept_policy_survives_reopening_and_an_older_version_never_replaces_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.db");
        let keys = NodeKeys::generate(&mut seeded(3));
        let mut store = Store::open(&path).expect("opens");
        store.save_policy(&policy(&keys, 2, "deny")).expect("saved");
        store.save_policy(&policy(&keys, 1, "allow")).expect("an older one is ignored");
        drop(store);
        let store = Store::open(&path).expect("reopens");
        let held = store.load_policies().expect("loads");
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].body.version, 2);
        assert_eq!(held[0].body.params["firewall.default"], "deny");
    }

    #[test]
    fn a_policy_row_that_does_not_decode_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.db");
        let mut store = Store::open(&path).expect("opens");
        store.save_policy(&policy(&NodeKeys::generate(&mut seeded(4)), 1, "deny")).expect("saved");
        store.conn.execute("UPDATE policy_store SET signed = x'ff00'", []).expect("altered");
        let err = store.load_policies().expect_err("refused").to_string();
        assert!(err.contains("policy `fw`") && err.contains("does not decode"), "{err}");
    }

    #[test]
    fn lost_versions_and_alerts_are_kept_once_and_read_back_in_order() {
        use cohort_core::policy::alerts::Condition;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.db");
        let keys = NodeKeys::generate(&mut seeded(4));
        let lost =
            Superseded { policy: policy(&keys, 2, "allow").body, by: policy(&keys, 2, "deny").body.rank() };
        let alert = |id: u64| Alert {
            id,
            at: WallClock(id * 1_000),
            condition: Condition::LocalCompliance { local: format!("local-{id:02}") },
            detail: "compliance 50%".into(),
        };
        {
            let mut store = Store::open(&path).expect("opens");
            store.save_superseded(&lost).expect("kept");
            store.save_superseded(&lost).expect("a second time changes nothing");
            for id in [1, 2, 10] {
                store.save_alert(&alert(id)).expect("kept");
            }
        }
        let store = Store::open(&path).expect("reopens");
        assert_eq!(store.load_superseded().expect("reads"), [lost]);
        assert_eq!(
            store.load_alerts(2).expect("reads"),
            [alert(2), alert(10)],
            "the newest two, oldest first"
        );
    }

    #[test]
    fn the_newest_history_rows_are_read_back_oldest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(&dir.path().join("node.db")).expect("opens");
        for i in 0..5u64 {
            let aggregate = Aggregate { silent_agents: i, ..Aggregate::default() };
            let local = if i % 2 == 0 { "local-00" } else { "local-01" };
            store.append_policy_history(local, WallClock(100 + i), &aggregate).expect("kept");
        }
        let newest = store.policy_history(3).expect("reads");
        let read: Vec<(&str, WallClock, u64)> =
            newest.iter().map(|(l, at, a)| (l.as_str(), *at, a.silent_agents)).collect();
        assert_eq!(
            read,
            [
                ("local-00", WallClock(102), 2),
                ("local-01", WallClock(103), 3),
                ("local-00", WallClock(104), 4)
            ]
        );
        assert_eq!(store.policy_history(50).expect("reads").len(), 5, "fewer rows than the limit: all");
        assert!(store.policy_history(0).expect("reads").is_empty());
    }

    #[test]
    fn a_history_row_that_does_not_decode_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(&dir.path().join("node.db")).expect("opens");
        store.append_policy_history("local-00", WallClock(1), &Aggregate::default()).expect("kept");
        store.conn.execute("UPDATE policy_history SET aggregate = x'ffffffffff'", []).expect("altered");
        let err = store.policy_history(10).expect_err("refused");
        assert!(matches!(err, StoreError::CorruptRow { .. }), "{err}");
        assert!(err.to_string().contains("history row 1 (from `local-00`)"), "{err}");
    }

    #[test]
    fn the_latest_aggregate_of_each_local_is_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(&dir.path().join("node.db")).expect("opens");
        let later = Aggregate { silent_agents: 7, ..Aggregate::default() };
        store.append_policy_history("local-00", WallClock(10), &Aggregate::default()).expect("kept");
        store.append_policy_history("local-01", WallClock(11), &Aggregate::default()).expect("kept");
        store.append_policy_history("local-00", WallClock(20), &later).expect("kept");
        let latest = store.latest_policy_history().expect("reads");
        assert_eq!(latest.len(), 2);
        assert_eq!(
            (latest[0].0.as_str(), latest[0].1, latest[0].2.silent_agents),
            ("local-00", WallClock(20), 7)
        );
        assert_eq!(latest[1].0, "local-01");
    }
}
