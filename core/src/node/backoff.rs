//! Reconnect pacing for outbound links (a local to its parent, an agent to its server, exec hosts
//! to the audit collector): exponential backoff with jitter, reset once a link works. A peer that
//! is down must cost a few attempts a minute, not a busy loop, and a fleet that lost its server
//! together must not come back in lockstep.

use std::time::Duration;

use crate::rng::{SeededRng, uniform_duration};

#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    step: Duration,
}

impl Backoff {
    /// 200 ms, doubling to 15 s.
    pub fn reconnect() -> Backoff {
        Backoff::new(Duration::from_millis(200), Duration::from_secs(15))
    }

    pub fn new(first: Duration, cap: Duration) -> Backoff {
        Backoff { first, cap, step: first }
    }

    /// An attempt failed: how long to wait before the next one (the current step plus up to half
    /// of it again, at random); the step doubles up to the cap.
    pub fn failed(&mut self, rng: &mut SeededRng) -> Duration {
        let wait = self.step + uniform_duration(rng, self.step / 2);
        self.step = (self.step * 2).min(self.cap);
        wait
    }

    /// The link works again: the next failure starts from the first step.
    pub fn succeeded(&mut self) {
        self.step = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::seeded;

    #[test]
    fn waits_double_up_to_the_cap_with_jitter_and_reset_after_success() {
        let mut rng = seeded(1);
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let waits: Vec<Duration> = (0..8).map(|_| backoff.failed(&mut rng)).collect();
        for (i, wait) in waits.iter().enumerate() {
            let step = (Duration::from_millis(100) * 2u32.pow(i as u32)).min(Duration::from_secs(1));
            assert!(*wait >= step && *wait <= step + step / 2, "attempt {i}: {wait:?} for step {step:?}");
        }
        backoff.succeeded();
        assert!(backoff.failed(&mut rng) < Duration::from_millis(151));
    }
}
