//! The client's defaults: `$XDG_CONFIG_HOME/cohort/config.toml` (else `~/.config/cohort/config.toml`,
//! or the file `$COHORT_CONFIG` names), so an operator need not repeat `--cluster`, `--key` and the
//! rest on every command. A flag wins over its `COHORT_*` variable, which wins over this file.
//! It only supplies paths and names; every one is checked where it is used. An unknown key is an
//! error (a typo must not silently fall back to another cluster).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::Context;
use serde::Deserialize;

/// The file's keys; each optional.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// The operator's cluster.toml (`--cluster`, `COHORT_CLUSTER`).
    pub cluster: Option<PathBuf>,
    /// The operator key file (`--key`, `COHORT_KEY`).
    pub key: Option<PathBuf>,
    /// The member to talk to by default (`--node`, `COHORT_NODE`).
    pub node: Option<String>,
    /// Where `cohort login` and `cohort exec` keep the client key and credential
    /// (`--state-dir`, `COHORT_HOME`).
    pub state_dir: Option<PathBuf>,
    /// The principal `cohort login` logs in as (`--user`, `COHORT_USER`).
    pub user: Option<String>,
    /// The gateway's address, when it is reached by another address than the cluster file's
    /// (`--gateway`, `COHORT_GATEWAY`); its key is still the one the cluster file pins.
    pub gateway: Option<std::net::SocketAddr>,
}

/// Where the file is looked for, if anywhere.
pub fn config_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("COHORT_CONFIG") {
        return Some(PathBuf::from(path));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(base.join("cohort").join("config.toml"))
}

impl ClientConfig {
    /// Reads `path`; a missing file is an empty configuration unless `$COHORT_CONFIG` named it.
    pub fn load(path: &Path, must_exist: bool) -> anyhow::Result<ClientConfig> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => {
                return Ok(ClientConfig::default());
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("could not read the client config {}", path.display()));
            }
        };
        let config: ClientConfig = toml::from_str(&text)
            .with_context(|| format!("the client config {} is not valid", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Ok(config.relative_to(dir))
    }

    /// Paths in the file are relative to the file's directory, as in cluster.toml.
    fn relative_to(mut self, dir: &Path) -> ClientConfig {
        for path in [&mut self.cluster, &mut self.key, &mut self.state_dir].into_iter().flatten() {
            if path.is_relative() {
                *path = dir.join(&*path);
            }
        }
        self
    }
}

/// The configuration of this process, read once.
pub fn client_config() -> anyhow::Result<&'static ClientConfig> {
    static CONFIG: OnceLock<ClientConfig> = OnceLock::new();
    if let Some(config) = CONFIG.get() {
        return Ok(config);
    }
    let config = match config_path() {
        Some(path) => ClientConfig::load(&path, std::env::var_os("COHORT_CONFIG").is_some())?,
        None => ClientConfig::default(),
    };
    Ok(CONFIG.get_or_init(|| config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_read_from_the_files_directory_and_unknown_keys_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "cluster = \"cluster.toml\"\nkey = \"/keys/op.key\"\nnode = \"m2\"\n")
            .expect("write");
        let config = ClientConfig::load(&path, true).expect("loads");
        assert_eq!(config.cluster, Some(dir.path().join("cluster.toml")));
        assert_eq!(config.key, Some(PathBuf::from("/keys/op.key")));
        assert_eq!(config.node.as_deref(), Some("m2"));

        std::fs::write(&path, "clustr = \"cluster.toml\"\n").expect("write");
        let err = format!("{:#}", ClientConfig::load(&path, true).expect_err("a typo is refused"));
        assert!(err.contains("clustr"), "{err}");

        let missing = dir.path().join("absent.toml");
        assert!(ClientConfig::load(&missing, false).expect("absent is empty").cluster.is_none());
        assert!(ClientConfig::load(&missing, true).is_err());
    }
}
