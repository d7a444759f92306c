//! Simulated disk for one host: a durable layer that survives crashes and a pending layer that a
//! crash throws away. A write becomes durable only after a simulated sync; the machine hears
//! `Persisted` only then. Nothing here decides what to store.

use std::sync::{Arc, Mutex, PoisonError};

use cohort_core::exec::audit_view::{AuditRange, AuditRows};
use cohort_core::member::MemberRecord;
use cohort_core::node::Record;

#[derive(Debug, Clone, Default)]
pub struct SimDisk {
    inner: Arc<Mutex<DiskState>>,
}

#[derive(Debug, Default)]
struct DiskState {
    durable: Option<MemberRecord>,
    pending: Option<MemberRecord>,
    syncs: u64,
}

impl SimDisk {
    pub fn with_record(record: MemberRecord) -> SimDisk {
        let disk = SimDisk::default();
        disk.lock().durable = Some(record);
        disk
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DiskState> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a write; it is lost if the host crashes before [`SimDisk::sync`].
    pub fn write(&self, record: MemberRecord) {
        self.lock().pending = Some(record);
    }

    /// Makes the pending write durable.
    pub fn sync(&self) {
        let mut state = self.lock();
        if let Some(record) = state.pending.take() {
            state.durable = Some(record);
            state.syncs += 1;
        }
    }

    /// What a restarted host finds: the durable layer only.
    pub fn recover(&self) -> Option<MemberRecord> {
        let mut state = self.lock();
        state.pending = None;
        state.durable.clone()
    }

    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }
}

/// What a read of `host`'s audit trail finds among the records the hosts kept: the chain
/// entries and checkpoints `host` made durable, as the real store would return them.
pub fn audit_rows(records: &[(String, Record)], host: &str, range: AuditRange) -> AuditRows {
    let kept = records.iter().filter(|(h, _)| h == host).filter_map(|(_, record)| match record {
        Record::AuditEntry { entry, checkpoint } => Some((&**entry, checkpoint.as_deref())),
        _ => None,
    });
    AuditRows::select(kept, range)
}
