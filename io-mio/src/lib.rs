//! cohort-io-mio: the production driver. Owns everything cohort-core must not touch: key files
//! on disk, OS randomness, and (as later issues land) the mio event loop, sockets, timers, child
//! processes and SQLite storage. Protocol rules never live here: they belong to core.

pub mod entropy;
pub mod keyfile;
