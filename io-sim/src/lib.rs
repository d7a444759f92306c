//! cohort-io-sim: the turmoil driver. Owns simulated hosts and links, in-memory storage that loses
//! unsynced writes on a crash, fault schedules (loss, partitions, crashes) and the invariants
//! checked while a run goes, so cohort-core's machines run under chaos with every run replayable
//! from its seed. Protocol rules never live here: they belong to core.

pub mod browser;
pub mod clock;
pub mod config_change;
mod exec_invariants;
pub mod exec_site;
pub mod member_site;
pub mod member_view;
pub mod members;
pub mod node_host;
pub mod observer;
pub mod operator;
pub mod policy_fleet;
pub mod processes;
pub mod storage;

pub use config_change::{ConfigChangeReport, ConfigChangeScenario, run_config_change};
