//! cohort-core: every protocol rule of cohort, as deterministic sans-IO state machines.
//!
//! This crate owns the rules; drivers (`cohort-io-mio`, `cohort-io-sim`) own the sockets, disks,
//! clocks and processes. Nothing here may touch the operating system: no sockets, files,
//! threads, processes, clocks or OS randomness. Time enters as a value ([`time::Instant`],
//! [`time::WallClock`]), randomness from a seeded [`rng::SeededRng`]. A test under `tests/`
//! fails if that rule is broken.

pub mod admin;
pub mod channel;
pub mod child_env;
pub mod exec;
pub mod identity;
pub mod machine;
pub mod member;
pub mod node;
pub mod policy;
pub mod rng;
pub mod seal;
pub mod signed;
pub mod time;
pub mod trace;
pub mod web;
pub mod wire;

pub use identity::{KeyDigest, NodeId, NodeKeys, PublicIdentity};
pub use machine::Machine;
pub use time::{Instant, Now, WallClock};
