//! The cluster member role (source 000): every member holds the same signed, versioned
//! configuration; a change made at any member reaches all, sealed for each member alone, and is
//! installed everywhere only once every member has it.
//!
//! One module per concern: [`config`] the document and its changes, [`block`] sealing and
//! opening, [`messages`] the wire, [`io`] what the machine takes, gives and keeps, [`machine`]
//! the rules, [`join`] what a new node starts from, [`section`] each member's own
//! settings, [`trace`] how it reads in a trace.

pub mod block;
pub mod config;
pub mod genesis;
pub mod io;
pub mod join;
pub mod machine;
pub mod messages;
pub mod section;
pub mod trace;
pub mod version_ref;

pub use block::{Author, ConfigBlock};
pub use config::{Change, ClusterConfig, MemberInfo, OperatorInfo, Version};
pub use io::{
    ChangeError, DropReason, LookupAnswer, MemberInput, MemberOutput, MemberRecord, MemberSettings, PeerView,
    PersistToken, StoredConfig,
};
pub use join::{JoinAnchor, JoinError};
pub use machine::Member;
pub use messages::{ChangeRequest, FetchRequest, MemberMessage, Status};
pub use version_ref::{VersionRef, VersionRefError};

#[cfg(test)]
mod tests;
