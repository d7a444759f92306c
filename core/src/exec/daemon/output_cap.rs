//! A session's output cap: how much of each stream goes back to the gateway, and the count of
//! what was dropped beyond it, reported in steps so the alarm rules still see a command that
//! keeps writing. It never drops a byte uncounted.

use super::HostEvent;

/// How much of a run's output goes back, and what was dropped beyond it.
#[derive(Debug, Default)]
pub(super) struct OutputCap {
    max: u64,
    /// Sent so far, stdout and stderr.
    sent: [u64; 2],
    /// Dropped and not yet reported, stdout and stderr.
    unreported: [u64; 2],
}

/// Dropped output is reported in steps of this much, so the gateway's alarm rules see it.
const DROPPED_REPORT_STEP: u64 = 64 * 1024;

impl OutputCap {
    /// A cap of `max` bytes per stream.
    pub(super) fn new(max: u64) -> OutputCap {
        OutputCap { max, ..OutputCap::default() }
    }

    /// The part of `bytes` that goes back; the rest is counted.
    pub(super) fn admit(&mut self, stderr: bool, mut bytes: Vec<u8>) -> Vec<u8> {
        let i = usize::from(stderr);
        let room = self.max.saturating_sub(self.sent[i]);
        let keep = usize::try_from(room).unwrap_or(usize::MAX).min(bytes.len());
        let dropped = (bytes.len() - keep) as u64;
        bytes.truncate(keep);
        self.sent[i] = self.sent[i].saturating_add(keep as u64);
        self.unreported[i] = self.unreported[i].saturating_add(dropped);
        bytes
    }

    /// A `Dropped` report if `force` or a step's worth is waiting.
    pub(super) fn report(&mut self, force: bool) -> Option<HostEvent> {
        let [stdout, stderr] = self.unreported;
        let total = stdout.saturating_add(stderr);
        if total == 0 || (!force && total < DROPPED_REPORT_STEP) {
            return None;
        }
        self.unreported = [0, 0];
        Some(HostEvent::Dropped { stdout, stderr })
    }
}
