//! The KDC's principals in the node's store: each name with its Argon2id hash. Owns their rows
//! only; who may change them is the KDC's rule.

use std::collections::BTreeMap;

use rusqlite::params;

use super::{Store, StoreError};

impl Store {
    /// Every principal and its hash.
    pub fn load_principals(&self) -> Result<BTreeMap<String, String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, hash FROM kdc_principals ORDER BY name")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<BTreeMap<_, _>, _>>().map_err(|e| self.err(e))
    }

    /// Sets (or, with `None`, removes) one principal's hash; durable when this returns.
    pub fn set_principal(&mut self, name: &str, hash: Option<&str>) -> Result<(), StoreError> {
        let done = match hash {
            Some(hash) => self.conn.execute(
                "INSERT INTO kdc_principals (name, hash) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET hash = excluded.hash",
                params![name, hash],
            ),
            None => self.conn.execute("DELETE FROM kdc_principals WHERE name = ?1", params![name]),
        };
        done.map(|_| ()).map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_are_set_replaced_and_removed_durably() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.db");
        let mut store = Store::open(&path).expect("opens");
        store.set_principal("alice", Some("h1")).expect("sets");
        store.set_principal("bob", Some("h2")).expect("sets");
        store.set_principal("alice", Some("h3")).expect("replaces");
        store.set_principal("bob", None).expect("removes");
        drop(store);
        let store = Store::open(&path).expect("reopens");
        let expected: BTreeMap<String, String> = [("alice".to_owned(), "h3".to_owned())].into();
        assert_eq!(store.load_principals().expect("loads"), expected);
    }
}
