//! Parallel secure execution (source 002): node sets, the parallel execution utility with its
//! alarm rules, and (as they land) tickets, the KDC, the gateway, exec daemons and the audit
//! chain.

pub mod acl;
pub mod audit;
pub mod audit_view;
pub mod command_pattern;
pub mod daemon;
pub mod directory;
pub mod gateway;
pub mod kdc;
pub mod nodeset;
pub mod parallel;
pub mod principals;
pub mod report;
pub mod task;
pub mod ticket;
pub mod wire;
