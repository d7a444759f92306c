//! A node to talk to over its admin channel: which one (`--config`, or `--cluster` with `--node`),
//! the key to talk with, and the requests every admin command makes of it (status, a signed
//! change, waiting for an install). It decides nothing itself: the node checks every request.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant as StdInstant};

use anyhow::{Context, bail};
use cohort_core::admin::{AdminRequest, AdminResponse, NodeStatus};
use cohort_core::member::{ChangeRequest, Version};
use cohort_core::signed::Signed;
use cohort_core::{NodeKeys, PublicIdentity};
use cohort_io_mio::admin_client;
use cohort_io_mio::keyfile;
use cohort_io_mio::node_config::NodeConfig;

use crate::client_config::client_config;
use crate::cluster_file::ClusterFile;

#[derive(Debug, Clone, clap::Args)]
pub struct TargetArgs {
    /// A node's config file: talk to that node, opening the channel with its own key (or --key).
    #[arg(long, value_name = "FILE", conflicts_with = "cluster")]
    pub config: Option<PathBuf>,
    /// The operator's cluster.toml (from `cohort init`); pick a member with --node.
    /// [default: $COHORT_CLUSTER, else `cluster` in the client config]
    #[arg(long, value_name = "FILE")]
    pub cluster: Option<PathBuf>,
    /// Which member of --cluster to talk to (default: $COHORT_NODE, else `node` in the client
    /// config, else the first).
    #[arg(long, visible_alias = "member", value_name = "NAME")]
    pub node: Option<String>,
    /// The operator key file: opens the channel, and signs changes.
    /// [default: $COHORT_KEY, else `key` in the client config]
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Give up after this many seconds (also bounds --wait).
    #[arg(long, default_value_t = 10)]
    pub timeout_secs: u64,
}

/// A flag's value, else its `COHORT_*` variable, else the client config's.
pub fn with_defaults<T: Clone + From<String>>(flag: &Option<T>, var: &str, config: Option<&T>) -> Option<T> {
    flag.clone()
        .or_else(|| std::env::var(var).ok().filter(|v| !v.is_empty()).map(T::from))
        .or_else(|| config.cloned())
}

/// A node to talk to, and the key to talk with.
#[derive(Debug)]
pub struct Target {
    pub name: String,
    pub addr: SocketAddr,
    pub identity: PublicIdentity,
    pub keys: NodeKeys,
    pub timeout: Duration,
}

impl TargetArgs {
    /// The cluster file: --cluster, $COHORT_CLUSTER or the client config's.
    pub fn cluster_file(&self) -> anyhow::Result<Option<PathBuf>> {
        Ok(with_defaults(&self.cluster, "COHORT_CLUSTER", client_config()?.cluster.as_ref()))
    }

    /// The operator key file: --key, $COHORT_KEY or the client config's.
    pub fn key_file(&self) -> anyhow::Result<Option<PathBuf>> {
        Ok(with_defaults(&self.key, "COHORT_KEY", client_config()?.key.as_ref()))
    }

    /// How long to wait for an answer, or for --wait.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.max(1))
    }

    pub fn resolve(&self) -> anyhow::Result<Target> {
        let timeout = self.timeout();
        let operator = self
            .key_file()?
            .as_ref()
            .map(|path| keyfile::read_key_file(path).context("could not read the key given with --key"))
            .transpose()?;
        if let Some(path) = &self.config {
            let config = NodeConfig::load(path)?;
            let node_keys =
                keyfile::read_key_file(&config.key_file).context("could not read the node's key")?;
            return Ok(Target {
                name: path.display().to_string(),
                addr: config.admin_listen,
                identity: node_keys.public(),
                keys: operator.unwrap_or(node_keys),
                timeout,
            });
        }
        let Some(path) = self.cluster_file()? else {
            bail!(
                "say which node: --config NODE.toml, or --cluster cluster.toml [--node NAME] --key operator.key \
                 (or set `cluster` and `key` in the client config)"
            );
        };
        let file = ClusterFile::load(&path)?;
        let node = with_defaults(&self.node, "COHORT_NODE", client_config()?.node.as_ref());
        let entry = file.member(node.as_deref())?;
        let keys = operator.context("--cluster needs --key with the operator's key file")?;
        Ok(Target { name: entry.name.clone(), addr: entry.admin, identity: entry.identity()?, keys, timeout })
    }

    /// Every member of --cluster, each as a target (for waiting on a cluster-wide install).
    pub fn all_members(&self) -> anyhow::Result<Vec<Target>> {
        let Some(path) = self.config.is_none().then(|| self.cluster_file()).transpose()?.flatten() else {
            return Ok(vec![self.resolve()?]);
        };
        let file = ClusterFile::load(&path)?;
        file.members
            .iter()
            .map(|entry| {
                let mut args = self.clone();
                args.node = Some(entry.name.clone());
                args.resolve()
            })
            .collect()
    }
}

impl Target {
    pub fn ask(&self, request: &AdminRequest) -> anyhow::Result<AdminResponse> {
        admin_client::request(self.addr, self.identity, &self.keys, request, self.timeout)
            .with_context(|| format!("admin request to {} ({}) failed", self.name, self.addr))
    }

    pub fn status(&self) -> anyhow::Result<NodeStatus> {
        match self.ask(&AdminRequest::Status)? {
            AdminResponse::Status(status) => Ok(status),
            AdminResponse::Error(e) => bail!("{} refused the status request: {e}", self.name),
            other => bail!("{} answered a status request with {other:?}", self.name),
        }
    }

    /// Signs `changes` against the node's active version and sends them. Returns the new version.
    pub fn change(&self, changes: Vec<cohort_core::member::Change>) -> anyhow::Result<Version> {
        let status = self.status()?;
        let request = ChangeRequest {
            cluster_id: status.cluster_id,
            base: status.active,
            changes,
            operator: self.keys.public().signing,
        };
        let signed = Signed::sign(request, &self.keys).context("could not sign the change")?;
        match self.ask(&AdminRequest::Change(signed))? {
            AdminResponse::ChangeAccepted { version } => Ok(version),
            AdminResponse::ChangeRejected { reason } => bail!("{} rejected the change: {reason}", self.name),
            AdminResponse::Error(e) => bail!("{} refused the change: {e}", self.name),
            other => bail!("{} answered a change with {other:?}", self.name),
        }
    }
}

/// Polls every target until each reports `version` (or later) active. Returns the time taken.
pub fn wait_installed(targets: &[Target], version: Version, limit: Duration) -> anyhow::Result<Duration> {
    let started = StdInstant::now();
    let mut pending: Vec<&Target> = targets.iter().collect();
    while !pending.is_empty() {
        if started.elapsed() > limit {
            let names: Vec<&str> = pending.iter().map(|t| t.name.as_str()).collect();
            bail!("{version} not installed on {} within {limit:?}", names.join(", "));
        }
        pending.retain(|t| !t.status().is_ok_and(|s| s.active >= version));
        if !pending.is_empty() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(started.elapsed())
}

/// Says which version `node` accepted a change as and, with `wait`, waits (at most
/// --timeout-secs) until every member has installed it.
pub fn report_accepted(
    node: &Target,
    target: &TargetArgs,
    version: Version,
    wait: bool,
) -> anyhow::Result<()> {
    println!("{} accepted the change as {} ({})", node.name, version, version.to_full_string());
    if wait {
        let took = wait_installed(&target.all_members()?, version, target.timeout())?;
        println!("installed on every member {:.2}s later", took.as_secs_f64());
    }
    Ok(())
}
