//! What can stop a node process: its key, its store, its configuration, a socket it cannot bind,
//! or the event loop itself. Every error names what failed and where.

use crate::keyfile;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{0}")]
    Key(#[from] keyfile::KeyFileIoError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Config(#[from] crate::node_config::NodeConfigError),
    #[error("{path} holds no member state; create the cluster with `cohort init` first")]
    NoState { path: std::path::PathBuf },
    #[error("could not {what} {addr}: {source}")]
    Bind { what: &'static str, addr: String, source: std::io::Error },
    #[error("lookup_group `{group}` is not a group on this machine; give an existing group's name or number")]
    UnknownGroup { group: String },
    #[error("{0}")]
    Tls(#[from] crate::web_front::TlsError),
    #[error("the node asked for a web listener but no certificate was configured")]
    NoWebCertificate,
    #[error("event loop failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the {role} role: {source}")]
    InRole { role: &'static str, source: Box<NodeError> },
}

impl NodeError {
    /// Names the role an error came from (once).
    pub fn in_role(self, role: &'static str) -> NodeError {
        match self {
            NodeError::InRole { .. } => self,
            other => NodeError::InRole { role, source: Box::new(other) },
        }
    }
}
