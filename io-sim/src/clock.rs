//! Simulated time for machines: turmoil's clock as the monotonic instant, and a wall clock that
//! starts at a fixed calendar date and never drifts from it, so every run replays exactly. It
//! never reads the host's clocks.

use std::time::{Duration, UNIX_EPOCH};

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

/// A turmoil simulation that replays exactly from `seed`: 1 ms ticks, each message taking 1 ms to
/// `max_latency`, and a fixed epoch (turmoil's own defaults to the host's wall clock).
pub fn simulation<'a>(seed: u64, duration: Duration, max_latency: Duration) -> turmoil::Sim<'a> {
    simulation_ticked(seed, duration, max_latency, Duration::from_millis(1))
}

/// The same, stepping `tick` at a time: a run of many simulated minutes, whose protocol timers
/// are seconds apart, need not pay for a step per millisecond. Timers and deliveries land on tick
/// boundaries.
pub fn simulation_ticked<'a>(
    seed: u64,
    duration: Duration,
    max_latency: Duration,
    tick: Duration,
) -> turmoil::Sim<'a> {
    turmoil::Builder::new()
        .simulation_duration(duration)
        .tick_duration(tick)
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(max_latency)
        .rng_seed(seed)
        // Turmoil has no back-pressure: a socket whose buffer fills panics. A real kernel buffer
        // holds far more than its default 64 segments, and a burst (a thousand audit records
        // after a mass kill) must not end a simulation that a real network would carry.
        .tcp_capacity(4096)
        .epoch(UNIX_EPOCH + Duration::from_millis(EPOCH_UNIX_MS))
        .build()
}
