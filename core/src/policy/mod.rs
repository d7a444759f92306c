//! The security-policy tier (source 001): a master policy server replicates signed policies down
//! a tier of local servers (which may nest), locals serve their agents the effective policy for
//! their platform and send consolidated statistics back up, and the master answers for the global
//! status, historical or current.

pub mod agent;
pub mod alerts;
pub mod checks;
pub mod document;
pub mod merge;
pub mod platform;
pub mod policy_file;
pub mod report;
pub mod server;
pub mod wire;
