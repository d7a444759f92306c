//! Time as a value. Owns the monotonic [`Instant`] that machines compare deadlines against and
//! the [`WallClock`] reading used where a rule needs calendar time (ticket expiry, clock skew).
//! It must never read a clock: drivers read theirs and pass the value in.

use core::fmt;
use core::ops::{Add, Sub};
use core::time::Duration;

use serde::{Deserialize, Serialize};

/// A point on the driver's monotonic clock, in nanoseconds since the driver started.
///
/// Only differences between two `Instant`s of the same driver mean anything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    /// The driver's start.
    pub const ZERO: Instant = Instant(0);

    pub const fn from_nanos(nanos: u64) -> Self {
        Instant(nanos)
    }

    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time since the driver started.
    pub const fn since_start(self) -> Duration {
        Duration::from_nanos(self.0)
    }

    /// `self - earlier`, or zero when `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;

    /// Saturates at the far future instead of overflowing: a deadline that far away never fires.
    fn add(self, rhs: Duration) -> Instant {
        let nanos = u64::try_from(rhs.as_nanos()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_add(nanos))
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;

    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

impl fmt::Display for Instant {
    /// Seconds with millisecond precision: the form traces show.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0 / 1_000_000;
        // `pad` so traces can right-align times with `{:>9}`.
        f.pad(&format!("{}.{:03}", millis / 1000, millis % 1000))
    }
}

/// The one time value every machine is given: the driver's monotonic instant (deadlines,
/// timeouts) and its wall clock read at the same moment (ticket expiry, clock skew, audit times).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Now {
    pub mono: Instant,
    pub wall: WallClock,
}

impl Now {
    /// A driver's start with the wall clock at the Unix epoch: for tests of rules that never
    /// read the calendar.
    pub const ZERO: Now = Now { mono: Instant::ZERO, wall: WallClock(0) };

    pub const fn new(mono: Instant, wall: WallClock) -> Self {
        Now { mono, wall }
    }

    /// `d` later on both clocks.
    pub fn after(self, d: Duration) -> Now {
        let millis = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Now { mono: self.mono + d, wall: WallClock(self.wall.0.saturating_add(millis)) }
    }

    /// The same wall-clock offset from the driver's start, at monotonic instant `mono`: how a
    /// simulation (whose clocks never drift apart) turns a deadline into a `Now`.
    pub fn with_mono(self, mono: Instant) -> Now {
        if mono >= self.mono { self.after(mono - self.mono) } else { Now { mono, ..self } }
    }
}

/// Calendar time: milliseconds since the Unix epoch, as read by the driver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WallClock(pub u64);

impl WallClock {
    pub const fn from_unix_millis(millis: u64) -> Self {
        WallClock(millis)
    }

    pub const fn unix_millis(self) -> u64 {
        self.0
    }

    /// Absolute distance between two readings, for clock-skew checks.
    pub fn distance(self, other: WallClock) -> Duration {
        Duration::from_millis(self.0.abs_diff(other.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_a_huge_duration_saturates_instead_of_overflowing() {
        let t = Instant::from_nanos(u64::MAX - 1) + Duration::from_secs(10);
        assert_eq!(t.as_nanos(), u64::MAX);
    }

    #[test]
    fn display_shows_seconds_and_millis() {
        assert_eq!(Instant::from_nanos(1_234_567_890).to_string(), "1.234");
    }

    #[test]
    fn subtraction_never_goes_negative() {
        assert_eq!(Instant::ZERO - Instant::from_nanos(5), Duration::ZERO);
    }
}
