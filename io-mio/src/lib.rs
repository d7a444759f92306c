//! cohort-io-mio: the production driver. Owns everything cohort-core must not touch: key files
//! on disk, OS randomness, the mio event loop, sockets, timers, signals and SQLite storage.
//! Protocol rules never live here: they belong to core.

pub mod admin_client;
pub mod channel_client;
mod channel_conn;
pub mod child;
pub mod clock;
pub mod driver;
pub mod entropy;
pub mod exec_runtime;
pub mod keyfile;
pub mod node;
pub mod node_config;
pub mod policy_roles;
pub mod reactor;
pub mod store;
