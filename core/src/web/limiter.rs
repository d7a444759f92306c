//! Login rate limits for the web console: attempts per source address and failures per principal,
//! each counted in a fixed window, in tables of bounded size. Owns when a login may be tried; it
//! never sees a password.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::time::Instant;

/// How long a window counts.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Login attempts one address may make in a window.
pub const ATTEMPTS_PER_PEER: u32 = 20;
/// Failed logins one principal may have in a window, from anywhere.
pub const FAILURES_PER_PRINCIPAL: u32 = 5;
/// Entries each table keeps at most: a flood of addresses evicts the oldest, never grows memory.
const MAX_ENTRIES: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    count: u32,
}

#[derive(Debug, Default)]
struct Table {
    windows: BTreeMap<String, Window>,
}

impl Table {
    fn count(&self, now: Instant, key: &str) -> u32 {
        self.windows
            .get(key)
            .filter(|w| now.saturating_duration_since(w.start) < WINDOW)
            .map_or(0, |w| w.count)
    }

    fn bump(&mut self, now: Instant, key: &str) {
        if !self.windows.contains_key(key) && self.windows.len() >= MAX_ENTRIES {
            self.windows.retain(|_, w| now.saturating_duration_since(w.start) < WINDOW);
            if self.windows.len() >= MAX_ENTRIES {
                let oldest = self.windows.iter().min_by_key(|(_, w)| w.start).map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    self.windows.remove(&oldest);
                }
            }
        }
        let window = self.windows.entry(key.to_owned()).or_insert(Window { start: now, count: 0 });
        if now.saturating_duration_since(window.start) >= WINDOW {
            *window = Window { start: now, count: 0 };
        }
        window.count += 1;
    }

    fn retry_after(&self, now: Instant, key: &str) -> Duration {
        self.windows
            .get(key)
            .map_or(Duration::ZERO, |w| WINDOW.saturating_sub(now.saturating_duration_since(w.start)))
    }
}

/// Why a login was not tried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Limited {
    #[error("too many login attempts from your address; try again in {0} s")]
    Peer(u64),
    #[error("too many failed logins for this principal; try again in {0} s")]
    Principal(u64),
}

#[derive(Debug, Default)]
pub struct LoginLimiter {
    peers: Table,
    principals: Table,
}

impl LoginLimiter {
    /// Counts an attempt from `peer` for `principal`, or says why it may not be made now.
    pub fn attempt(&mut self, now: Instant, peer: &str, principal: &str) -> Result<(), Limited> {
        if self.peers.count(now, peer) >= ATTEMPTS_PER_PEER {
            return Err(Limited::Peer(self.peers.retry_after(now, peer).as_secs().max(1)));
        }
        if self.principals.count(now, principal) >= FAILURES_PER_PRINCIPAL {
            return Err(Limited::Principal(self.principals.retry_after(now, principal).as_secs().max(1)));
        }
        self.peers.bump(now, peer);
        Ok(())
    }

    /// A login for `principal` failed.
    pub fn failed(&mut self, now: Instant, principal: &str) {
        self.principals.bump(now, principal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> Instant {
        Instant::from_nanos(1 + secs * 1_000_000_000)
    }

    #[test]
    fn failures_per_principal_and_attempts_per_address_are_limited_per_window() {
        let mut limiter = LoginLimiter::default();
        for i in 0..FAILURES_PER_PRINCIPAL {
            limiter.attempt(at(0), &format!("10.0.0.{i}"), "alice").expect("allowed");
            limiter.failed(at(0), "alice");
        }
        assert_eq!(limiter.attempt(at(1), "10.0.9.9", "alice"), Err(Limited::Principal(59)));
        limiter.attempt(at(1), "10.0.9.9", "bob").expect("another principal is not held back");
        limiter.attempt(at(61), "10.0.9.9", "alice").expect("a new window");
        for _ in 1..ATTEMPTS_PER_PEER {
            limiter.attempt(at(62), "10.0.9.9", "carol").expect("allowed");
        }
        assert!(matches!(limiter.attempt(at(62), "10.0.9.9", "dave"), Err(Limited::Peer(_))));
    }

    #[test]
    fn a_flood_of_addresses_keeps_the_table_bounded() {
        let mut limiter = LoginLimiter::default();
        for i in 0..(MAX_ENTRIES as u32 + 100) {
            limiter.attempt(at(0), &format!("peer-{i}"), "x").expect("each address's first attempt");
        }
        assert!(limiter.peers.windows.len() <= MAX_ENTRIES);
    }
}
