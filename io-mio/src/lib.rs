//! cohort-io-mio: the production driver. Owns everything cohort-core must not touch: key files
//! on disk, OS randomness, the mio event loop, sockets, timers, signals and SQLite storage.
//! Protocol rules never live here: they belong to core.

pub mod admin_client;
pub mod channel_client;
pub mod child;
pub mod clock;
pub mod commands;
pub mod driver;
pub mod entropy;
pub mod error;
pub mod inspect;
pub mod keyfile;
pub mod launch;
pub mod metrics;
pub mod node_config;
pub mod place;
pub mod reactor;
pub mod roles;
pub mod sockets;
pub mod spawner;
pub mod store;
pub mod web_front;
