//! Simulated time for machines: turmoil's clock as the monotonic instant, and a wall clock that
//! starts at a fixed calendar date and never drifts from it, so every run replays exactly. It
//! never reads the host's clocks.

use cohort_core::{Instant, Now, WallClock};

/// The calendar time at a simulation's start (2030-03-17), fixed so runs replay exactly.
pub const EPOCH_UNIX_MS: u64 = 1_900_000_000_000;

/// Both clocks of the running simulation, now.
pub fn now() -> Now {
    let elapsed = turmoil::elapsed();
    let mono = Instant::from_nanos(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
    let millis = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    Now::new(mono, WallClock(EPOCH_UNIX_MS.saturating_add(millis)))
}
