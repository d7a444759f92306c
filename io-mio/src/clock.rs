//! The process's clocks: the monotonic instant since the driver started and the wall clock, read
//! together into the one [`Now`] every machine is given. It never decides anything about time;
//! it only reads it and converts a machine's deadline back to a moment on this process's clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cohort_core::{Instant, Now, WallClock};

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    started: std::time::Instant,
}

impl Clock {
    pub fn start() -> Clock {
        Clock { started: std::time::Instant::now() }
    }

    /// Both clocks, now.
    pub fn now(&self) -> Now {
        let mono = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        // A clock set before 1970 reads as the epoch: expiry checks then fail closed.
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        Now::new(Instant::from_nanos(mono), WallClock(u64::try_from(wall).unwrap_or(u64::MAX)))
    }

    /// A machine's deadline as a moment on this process's clock.
    pub fn wake_at(&self, deadline: Instant) -> std::time::Instant {
        self.started + Duration::from_nanos(deadline.as_nanos())
    }
}
