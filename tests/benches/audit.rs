//! Making an exec host's audit record durable in the io-mio store: `Store::keep_all` with
//! `Record::LocalAudit`, the call the mio driver makes for whatever the node asked it to keep
//! (the exec host keeps its record before it spawns the command). Measured per record (one
//! `keep_all` of one record: one transaction, one sync) and batched (one `keep_all` of 64
//! records: the driver's group commit, one transaction and one sync for the lot). The database
//! is a file under the build's temporary directory (a real disk, not tmpfs), in the store's own
//! settings: WAL, synchronous=FULL.
//!
//! Floor: raw rusqlite on its own file with the same pragmas and the same `audit_local` table:
//! `BEGIN IMMEDIATE`, one cached-statement INSERT of a blob as long as the encoded record (or 64
//! of them), `COMMIT`.

mod common;

use std::path::Path;
use std::time::Duration;

use cohort_core::WallClock;
use cohort_core::exec::audit::{AuditDecision, AuditRecord};
use cohort_core::node::Record;
use cohort_io_mio::store::Store;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rusqlite::{Connection, params};

const BATCH: usize = 64;

fn record() -> AuditRecord {
    AuditRecord {
        host: "web01".to_owned(),
        principal: "alice".to_owned(),
        run_as: "alice".to_owned(),
        argv: ["systemctl", "restart", "nginx.service"].map(str::to_owned).to_vec(),
        at: WallClock(1_750_000_000_000),
        decision: AuditDecision::Run,
        run_id: [7; 16],
        data: Vec::new(),
    }
}

/// The floor's database: the store's pragmas and its `audit_local` table, nothing else.
fn raw_database(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("opens");
    conn.pragma_update(None, "journal_mode", "WAL").expect("WAL");
    conn.pragma_update(None, "synchronous", "FULL").expect("synchronous");
    conn.execute_batch(
        "CREATE TABLE audit_local (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             host TEXT NOT NULL,
             record BLOB NOT NULL
         );",
    )
    .expect("creates the table");
    conn
}

fn raw_insert_commit(conn: &Connection, host: &str, blob: &[u8], count: usize) {
    conn.execute_batch("BEGIN IMMEDIATE").expect("begins");
    let mut insert =
        conn.prepare_cached("INSERT INTO audit_local (host, record) VALUES (?1, ?2)").expect("prepares");
    for _ in 0..count {
        insert.execute(params![host, blob]).expect("inserts");
    }
    conn.execute_batch("COMMIT").expect("commits");
}

fn audit(c: &mut Criterion) {
    // CARGO_TARGET_TMPDIR is under target/: on the disk, where a sync is a real one.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let mut store = Store::open(&dir.path().join("node.db")).expect("opens the store");
    let raw = raw_database(&dir.path().join("raw.db"));
    let record = record();
    let blob = cohort_core::wire::encode(&record).expect("encodes");
    println!("audit: an encoded record is {} bytes; databases in {}", blob.len(), dir.path().display());

    let mut group = c.benchmark_group("audit");
    for count in [1, BATCH] {
        group.throughput(Throughput::Elements(count as u64));
        let label = if count == 1 { "per_record".to_owned() } else { format!("batch_of_{count}") };
        let records = vec![Record::LocalAudit(record.clone()); count];
        group.bench_function(BenchmarkId::new("store_keep_all", &label), |b| {
            b.iter(|| store.keep_all(&records, 1_750_000_000_000).expect("keeps"))
        });
        group.bench_function(BenchmarkId::new("floor_rusqlite_insert_commit", &label), |b| {
            b.iter(|| raw_insert_commit(&raw, &record.host, &blob, count))
        });
    }
    group.finish();
    let kept = store.local_audit_count().expect("counts");
    assert!(kept > 0, "the store kept the records");
}

/// Fewer, longer samples than the others: each is bound by a disk sync.
fn config() -> Criterion {
    common::quick().measurement_time(Duration::from_secs(4)).sample_size(20)
}

criterion_group! { name = benches; config = config(); targets = audit }
criterion_main!(benches);
