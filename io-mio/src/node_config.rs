//! A node's configuration file (TOML): where it listens, where its data and key live, which roles
//! it plays and its heartbeat. Owns parsing and checking it. It never holds cluster state: that
//! comes from the signed configuration in the node's database.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The member protocol's UDP address; must match this node's address in the cluster roster.
    pub listen: SocketAddr,
    /// The admin channel's TCP address (Noise; operators and this node's own key may connect).
    pub admin_listen: SocketAddr,
    /// Holds `node.db`. Relative paths are relative to the config file.
    pub data_dir: PathBuf,
    /// The node's key file (mode 0600). Relative paths are relative to the config file.
    pub key_file: PathBuf,
    #[serde(default = "default_roles")]
    pub roles: Vec<String>,
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// An admin connection must finish its handshake within this long.
    #[serde(default = "default_handshake_timeout_ms")]
    pub admin_handshake_timeout_ms: u64,
    /// Admin connections allowed to be mid-handshake at once; more are refused at accept.
    #[serde(default = "default_max_handshaking")]
    pub admin_max_handshaking: usize,
}

fn default_handshake_timeout_ms() -> u64 {
    5000
}

fn default_max_handshaking() -> usize {
    32
}

fn default_roles() -> Vec<String> {
    vec!["member".to_owned()]
}

fn default_heartbeat_ms() -> u64 {
    1000
}

#[derive(Debug, thiserror::Error)]
pub enum NodeConfigError {
    #[error("could not read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid node configuration: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: heartbeat_ms must be between 10 and 60000 (got {got})")]
    Heartbeat { path: PathBuf, got: u64 },
    #[error("{path}: unknown role `{role}` (this cohort plays: member)")]
    UnknownRole { path: PathBuf, role: String },
}

impl NodeConfig {
    pub fn load(path: &Path) -> Result<NodeConfig, NodeConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| NodeConfigError::Read { path: path.to_owned(), source })?;
        let mut config: NodeConfig = toml::from_str(&text)
            .map_err(|e| NodeConfigError::Parse { path: path.to_owned(), message: e.to_string() })?;
        if !(10..=60_000).contains(&config.heartbeat_ms) {
            return Err(NodeConfigError::Heartbeat { path: path.to_owned(), got: config.heartbeat_ms });
        }
        if !(100..=60_000).contains(&config.admin_handshake_timeout_ms) || config.admin_max_handshaking == 0 {
            return Err(NodeConfigError::Parse {
                path: path.to_owned(),
                message:
                    "admin_handshake_timeout_ms must be 100 to 60000 and admin_max_handshaking at least 1"
                        .into(),
            });
        }
        if let Some(role) = config.roles.iter().find(|r| r.as_str() != "member") {
            return Err(NodeConfigError::UnknownRole { path: path.to_owned(), role: role.clone() });
        }
        let base = path.parent().unwrap_or(Path::new("."));
        config.data_dir = base.join(&config.data_dir);
        config.key_file = base.join(&config.key_file);
        Ok(config)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }

    pub fn admin_handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.admin_handshake_timeout_ms)
    }

    pub fn database(&self) -> PathBuf {
        self.data_dir.join("node.db")
    }
}
