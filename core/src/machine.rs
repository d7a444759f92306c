//! The sans-IO contract every role follows (the shape of quinn-proto and str0m): feed one event
//! with [`Machine::handle`], drain commands with [`Machine::poll_output`], and ask
//! [`Machine::poll_timeout`] when to feed [`Machine::handle`] again with a timeout.
//!
//! A machine never blocks, never reads a clock and never performs I/O; its driver does all three.
//! Anything that must survive a crash leaves as a persist command, and the machine acts on it only
//! after the driver reports it durable.

use crate::time::{Instant, Now};

pub trait Machine {
    /// Events the driver feeds: bytes received, timers fired, storage confirmations, requests.
    type Input;
    /// Commands for the driver: transmit, connect, close, persist, spawn, notify…
    type Output;

    /// Feeds one event observed at `now` (both clocks, read once by the driver).
    fn handle(&mut self, now: Now, input: Self::Input);

    /// The next command for the driver, if any. Drain until `None` after every `handle`.
    fn poll_output(&mut self) -> Option<Self::Output>;

    /// When the machine next wants a timeout fed; `None` if it waits only for input.
    fn poll_timeout(&self) -> Option<Instant>;
}
