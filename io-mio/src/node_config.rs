//! A node's configuration file (TOML): where it listens, where its data and key live, which roles
//! it plays and its heartbeat. Owns parsing and checking it. It never holds cluster state: that
//! comes from the signed configuration in the node's database.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cohort_core::PublicIdentity;
use cohort_core::policy::alerts::AlertRules;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Where other members' channels arrive (TCP); must match this node's address in the roster.
    pub listen: SocketAddr,
    /// The admin channel's TCP address (Noise; operators and this node's own key may connect).
    pub admin_listen: SocketAddr,
    /// The gateway role (with the audit collector), if this node plays it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayConfig>,
    /// Exec daemons this node hosts, each a managed host with its own key and address.
    #[serde(default, rename = "exec_host", skip_serializing_if = "Vec::is_empty")]
    pub exec_hosts: Vec<ExecHostConfig>,
    /// Where this node's exec hosts send their audit records (the gateway's listener).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collector: Option<PeerRef>,
    /// The KDC role, with its own key, if this node plays it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kdc: Option<KdcConfig>,
    /// The KDC whose signed tickets this node's exec hosts take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_kdc: Option<KeyRef>,
    /// A policy server (the master, or a local) this node runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_server: Option<PolicyServerConfig>,
    /// Policy agents this node runs, each a client machine with its own key.
    #[serde(default, rename = "policy_agent", skip_serializing_if = "Vec::is_empty")]
    pub policy_agents: Vec<PolicyAgentConfig>,
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
    /// The member's local lookup service for this host's applications: a Unix socket (mode 0660)
    /// answering `get KEY`, `get --all` and `version` without any key. Relative paths are
    /// relative to the config file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookup_socket: Option<PathBuf>,
    /// The group (name or number) that owns the lookup socket: its members' applications may
    /// ask. The node's own group when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookup_group: Option<String>,
    /// Where and how the node logs; SIGHUP re-reads the filter and the file path.
    #[serde(default, skip_serializing_if = "LogConfig::is_default")]
    pub log: LogConfig,
    /// A Prometheus scrape endpoint; off unless this section is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsConfig>,
    /// On SIGTERM, how long running exec sessions may take to finish before they are stopped.
    #[serde(default = "default_drain_timeout_secs")]
    pub drain_timeout_secs: u64,
}

/// `[log]` in node.toml.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter (`info`, `warn,cohort_io_mio=debug`); `RUST_LOG` wins when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// `text` (the default) or `json` (one object per line); `--log-format` wins when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<LogFormat>,
    /// Append to this file instead of standard error, reopened on SIGHUP (for logrotate).
    /// Relative paths are relative to the config file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
}

impl LogConfig {
    fn is_default(&self) -> bool {
        *self == LogConfig::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `[metrics]` in node.toml: serve Prometheus' text format on `listen` (any path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Loopback unless said otherwise: the figures describe the cluster to whoever can read them.
    #[serde(default = "default_metrics_listen")]
    pub listen: SocketAddr,
}

fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}

fn default_drain_timeout_secs() -> u64 {
    30
}

fn default_handshake_timeout_ms() -> u64 {
    5000
}

fn default_max_handshaking() -> usize {
    32
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Clients and exec hosts' audit links connect here (Noise; clients pin this node's key).
    pub listen: SocketAddr,
    /// The KDC the gateway asks for credentials and tickets, over a channel per request.
    pub kdc: PeerRef,
    /// The web console, served over HTTPS, if the gateway offers one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web: Option<WebConfig>,
}

/// The web console's listener and certificate (PEM files; `cohort init` makes a self-signed
/// pair for a demo, an operator gives their own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    pub listen: SocketAddr,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The policy tier's master, for the console's policy pages; it must list this node's key
    /// among its `viewers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_master: Option<PeerRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KdcConfig {
    /// Gateways connect here (Noise; only the gateways listed below are admitted).
    pub listen: SocketAddr,
    /// The KDC's own key (mode 0600): it signs credentials and tickets. Never the node's key.
    pub key_file: PathBuf,
    /// The gateways it answers.
    pub gateways: Vec<KeyRef>,
}

/// A peer's public keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRef {
    pub ed25519: String,
    pub x25519: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecHostConfig {
    pub name: String,
    /// Its own address: many hosts on one machine each bind a distinct 127.x.y.z.
    pub listen: SocketAddr,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerRef {
    pub address: SocketAddr,
    pub ed25519: String,
    pub x25519: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyServerConfig {
    pub name: String,
    pub listen: SocketAddr,
    /// `tier.toml`: every policy server and the operators allowed to administer them.
    pub tier_file: PathBuf,
    /// `agents.toml`: the agents this server serves (locals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents_file: Option<PathBuf>,
    #[serde(default = "default_sync_window_s")]
    pub sync_window_s: u64,
    #[serde(default = "default_sync_jitter_s")]
    pub sync_jitter_s: u64,
    /// Identities (hex keys, as `tier.toml` gives operators) that may only read this server's
    /// global status and history: the web console on the exec gateway, say. The master's only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub viewers: Vec<KeyRef>,
    /// The master's alert thresholds and hook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<AlertsConfig>,
}

/// `[policy_server.alerts]`: each threshold is off unless set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Alert when a local server's or a platform's compliance falls below this percentage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compliance_below_pct: Option<u8>,
    /// Alert when an agent is silent for longer than this many of its poll intervals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silent_polls: Option<u32>,
    /// Alert on any failed high-severity check.
    #[serde(default)]
    pub high_severity: bool,
    /// Run for each alert (argv), the alert as one JSON object on stdin.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hook: Vec<String>,
}

impl AlertsConfig {
    pub fn rules(&self) -> AlertRules {
        AlertRules {
            compliance_below_pct: self.compliance_below_pct,
            silent_polls: self.silent_polls,
            high_severity: self.high_severity,
        }
    }
}

impl PolicyServerConfig {
    /// The viewers' identities; a key that is not 64 hex digits is an error naming the field
    /// (`policy_server.viewers[i].ed25519`) in `path`.
    pub fn viewer_identities(&self, path: &Path) -> Result<Vec<PublicIdentity>, NodeConfigError> {
        self.viewers
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let field = |key: &str| format!("policy_server.viewers[{i}].{key}");
                Ok(PublicIdentity {
                    signing: parse_key(path, &field("ed25519"), &v.ed25519)?,
                    agreement: parse_key(path, &field("x25519"), &v.x25519)?,
                })
            })
            .collect()
    }
}

fn default_sync_window_s() -> u64 {
    60
}

fn default_sync_jitter_s() -> u64 {
    10
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyAgentConfig {
    pub name: String,
    pub key_file: PathBuf,
    /// The local server it polls, by name in `tier_file`.
    pub server: String,
    pub tier_file: PathBuf,
    /// The distribution (`ID` in os-release) and its version, when declared; left out, the
    /// agent reads them from `/etc/os-release` (the usual case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    pub role: String,
    /// Where the effective policy is written (atomically).
    pub policy_file: PathBuf,
    /// Run after each new policy is written: argv, no shell.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hook: Vec<String>,
    #[serde(default = "default_poll_interval_s")]
    pub poll_interval_s: u64,
}

fn default_poll_interval_s() -> u64 {
    30
}

/// `tier.toml`: the policy servers and the operators who may administer them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierFile {
    pub servers: Vec<TierServer>,
    #[serde(default)]
    pub operators: Vec<TierOperator>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierServer {
    pub name: String,
    pub address: SocketAddr,
    pub ed25519: String,
    pub x25519: String,
    /// The parent server's name; none for the master.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierOperator {
    pub name: String,
    pub ed25519: String,
    pub x25519: String,
}

/// `agents.toml`: agents a local server serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentsFile {
    pub agents: Vec<TierOperator>,
}

/// Reads a TOML file into `T`, naming the file in any error.
pub fn load_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, NodeConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| NodeConfigError::Read { path: path.to_owned(), source })?;
    toml::from_str(&text)
        .map_err(|e| NodeConfigError::Parse { path: path.to_owned(), message: e.to_string() })
}

/// A 64-hex-digit key from a config file.
pub fn parse_key(path: &Path, what: &str, text: &str) -> Result<[u8; 32], NodeConfigError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).map_err(|_| NodeConfigError::Parse {
        path: path.to_owned(),
        message: format!("{what} `{text}` is not 64 hex digits"),
    })?;
    Ok(out)
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
    #[error("{path}: unknown role `{role}` (roles: member, gateway, kdc, exec, policy)")]
    UnknownRole { path: PathBuf, role: String },
}

impl NodeConfig {
    /// A configuration for one role with every optional setting at its default and no role
    /// sections; callers fill in the sections their role needs.
    pub fn new(
        listen: SocketAddr,
        admin_listen: SocketAddr,
        data_dir: PathBuf,
        key_file: PathBuf,
        role: &str,
    ) -> Self {
        NodeConfig {
            listen,
            admin_listen,
            data_dir,
            key_file,
            roles: vec![role.to_owned()],
            heartbeat_ms: default_heartbeat_ms(),
            admin_handshake_timeout_ms: default_handshake_timeout_ms(),
            admin_max_handshaking: default_max_handshaking(),
            gateway: None,
            exec_hosts: Vec::new(),
            collector: None,
            kdc: None,
            trusted_kdc: None,
            policy_server: None,
            policy_agents: Vec::new(),
            lookup_socket: None,
            lookup_group: None,
            log: LogConfig::default(),
            metrics: None,
            drain_timeout_secs: default_drain_timeout_secs(),
        }
    }

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
        if let Some(role) = config
            .roles
            .iter()
            .find(|r| !matches!(r.as_str(), "member" | "gateway" | "kdc" | "exec" | "policy"))
        {
            return Err(NodeConfigError::UnknownRole { path: path.to_owned(), role: role.clone() });
        }
        let invalid =
            |message: &str| NodeConfigError::Parse { path: path.to_owned(), message: message.to_owned() };
        if config.has_role("member") && config.listen == config.admin_listen {
            return Err(invalid("listen and admin_listen must differ: a member listens on both (TCP)"));
        }
        if config.has_role("gateway") != config.gateway.is_some() {
            return Err(invalid("the gateway role and a [gateway] section go together"));
        }
        if config.has_role("exec") == config.exec_hosts.is_empty() {
            return Err(invalid("the exec role and [[exec_host]] sections go together"));
        }
        if config.has_role("kdc") != config.kdc.is_some() {
            return Err(invalid("the kdc role and a [kdc] section go together"));
        }
        if ["gateway", "kdc", "exec"].iter().any(|r| config.has_role(r)) && !config.has_role("member") {
            return Err(invalid(
                "the gateway, kdc and exec roles need the member role: hosts and ACLs come from the cluster configuration",
            ));
        }
        if config.has_role("exec") && (config.collector.is_none() || config.trusted_kdc.is_none()) {
            return Err(invalid(
                "the exec role needs a [collector] section (where audit records go) and a [trusted_kdc] section (whose key signs tickets)",
            ));
        }
        let base = path.parent().unwrap_or(Path::new(".")).to_owned();
        config.data_dir = base.join(&config.data_dir);
        config.key_file = base.join(&config.key_file);
        config.lookup_socket = config.lookup_socket.as_ref().map(|p| base.join(p));
        config.log.file = config.log.file.as_ref().map(|p| base.join(p));
        if let Some(filter) = &config.log.filter
            && let Err(e) = tracing_subscriber::EnvFilter::try_new(filter)
        {
            return Err(invalid(&format!("[log] filter `{filter}` is not a tracing filter: {e}")));
        }
        if config.drain_timeout_secs > 3600 {
            return Err(invalid("drain_timeout_secs must be at most 3600"));
        }
        if let Some(kdc) = &mut config.kdc {
            kdc.key_file = base.join(&kdc.key_file);
        }
        if let Some(web) = config.gateway.as_mut().and_then(|g| g.web.as_mut()) {
            web.cert_file = base.join(&web.cert_file);
            web.key_file = base.join(&web.key_file);
        }
        for host in &mut config.exec_hosts {
            host.key_file = base.join(&host.key_file);
        }
        let has_policy = config.policy_server.is_some() || !config.policy_agents.is_empty();
        if config.has_role("policy") != has_policy {
            return Err(invalid(
                "the policy role and [policy_server] or [[policy_agent]] sections go together",
            ));
        }
        if let Some(server) = &mut config.policy_server {
            // Checked here, where the file's name is known, so a typo stops the load.
            server.viewer_identities(path)?;
            server.tier_file = base.join(&server.tier_file);
            server.agents_file = server.agents_file.as_ref().map(|f| base.join(f));
        }
        for agent in &mut config.policy_agents {
            agent.key_file = base.join(&agent.key_file);
            agent.tier_file = base.join(&agent.tier_file);
            agent.policy_file = base.join(&agent.policy_file);
        }
        Ok(config)
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A policy master's node.toml with `viewers` as given (a TOML array).
    fn master(dir: &Path, viewers: &str) -> PathBuf {
        let path = dir.join("node.toml");
        let text = format!(
            "listen = \"127.0.0.1:1\"\nadmin_listen = \"127.0.0.1:2\"\ndata_dir = \".\"\n\
             key_file = \"node.key\"\nroles = [\"policy\"]\n\n[policy_server]\nname = \"master\"\n\
             listen = \"127.0.0.1:3\"\ntier_file = \"tier.toml\"\nviewers = {viewers}\n"
        );
        std::fs::write(&path, text).expect("writes");
        path
    }

    #[test]
    fn a_policy_servers_viewers_are_read_as_identities() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ed, x) = ("11".repeat(32), "22".repeat(32));
        let path = master(dir.path(), &format!("[{{ ed25519 = \"{ed}\", x25519 = \"{x}\" }}]"));
        let config = NodeConfig::load(&path).expect("loads");
        let server = config.policy_server.expect("a policy server");
        let viewers = server.viewer_identities(&path).expect("valid");
        assert_eq!(viewers, [PublicIdentity { signing: [0x11; 32], agreement: [0x22; 32] }]);
    }

    #[test]
    fn a_viewer_key_that_is_not_hex_is_an_error_naming_the_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = "11".repeat(32);
        let viewers = format!(
            "[{{ ed25519 = \"{good}\", x25519 = \"{good}\" }}, {{ ed25519 = \"{good}\", x25519 = \"zz\" }}]"
        );
        let path = master(dir.path(), &viewers);
        let error = NodeConfig::load(&path).expect_err("refused").to_string();
        assert!(error.contains("policy_server.viewers[1].x25519") && error.contains("node.toml"), "{error}");
    }
}
