//! Joining a running cluster: `cohort admin join-file` exports what a new node needs from any
//! member (over the admin channel, as an operator), and `cohort join` prepares the new node's
//! directory from it and the node's own key. The node becomes a member only when an operator's
//! signed `admin add-member` change installs; until then it answers no lookups. Owns the join
//! file's format and the directory it writes; the checks on the anchor are core's.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use cohort_core::admin::{AdminRequest, AdminResponse};
use cohort_core::member::JoinAnchor;
use cohort_io_mio::keyfile;
use cohort_io_mio::node_config::NodeConfig;
use cohort_io_mio::store::Store;
use serde::{Deserialize, Serialize};

use crate::target::TargetArgs;

/// The join file: readable fields for a person, and the anchor itself (hex of its encoding)
/// that `cohort join` checks against them.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinFile {
    cluster_id: String,
    version: String,
    members: Vec<String>,
    anchor: String,
}

#[derive(Debug, clap::Args)]
pub struct JoinFileArgs {
    /// Where to write the join file.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    #[command(flatten)]
    pub target: TargetArgs,
}

/// `cohort admin join-file`: asks a member for its active version's anchor and writes it.
pub fn export(args: &JoinFileArgs) -> anyhow::Result<()> {
    let node = args.target.resolve()?;
    let anchor = match node.ask(&AdminRequest::JoinAnchor)? {
        AdminResponse::JoinAnchor(anchor) => *anchor,
        AdminResponse::Error(e) => bail!("{} refused: {e}", node.name),
        other => bail!("{} answered a join-file request with {other:?}", node.name),
    };
    let file = JoinFile {
        cluster_id: anchor.cluster_id.clone(),
        version: anchor.version.to_full_string(),
        members: anchor.members.iter().map(|m| format!("{} {}", m.name, m.address)).collect(),
        anchor: hex::encode(cohort_core::wire::encode(&anchor).context("could not encode the anchor")?),
    };
    let text = toml::to_string(&file).context("could not write the join file")?;
    let text = format!(
        "# From {} by `cohort admin join-file`; give it to `cohort join` on the new node.\n{text}",
        node.name
    );
    std::fs::write(&args.out, text).with_context(|| format!("could not write {}", args.out.display()))?;
    println!(
        "join file for cluster `{}` at {} written to {}",
        file.cluster_id,
        file.version,
        args.out.display()
    );
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct JoinArgs {
    /// The join file an operator exported with `cohort admin join-file`.
    #[arg(long, value_name = "FILE")]
    pub join_file: PathBuf,
    /// This node's key file (from `cohort keygen`); copied into the new directory.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// The directory to create for the node (node.toml, node.key, node.db).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// The member address (IP:PORT) the operator's add-member change will name.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Where operators open this node's admin channel (IP:PORT).
    #[arg(long)]
    pub admin: SocketAddr,
    /// The heartbeat period, as the other members have it.
    #[arg(long, default_value_t = 1000)]
    pub heartbeat_ms: u64,
}

fn read_join_file(path: &Path) -> anyhow::Result<JoinAnchor> {
    let text = std::fs::read_to_string(path).with_context(|| format!("could not read {}", path.display()))?;
    let file: JoinFile =
        toml::from_str(&text).with_context(|| format!("{} is not a join file", path.display()))?;
    let bytes =
        hex::decode(&file.anchor).with_context(|| format!("{}: `anchor` is not hex", path.display()))?;
    let anchor: JoinAnchor = cohort_core::wire::decode(&bytes)
        .with_context(|| format!("{}: `anchor` does not decode; export the file again", path.display()))?;
    if anchor.cluster_id != file.cluster_id || anchor.version.to_full_string() != file.version {
        bail!("{}: the readable fields disagree with the anchor; export the file again", path.display());
    }
    Ok(anchor)
}

/// `cohort join`: prepares a new node's directory to join the cluster the join file names.
pub fn join(args: &JoinArgs) -> anyhow::Result<()> {
    let anchor = read_join_file(&args.join_file)?;
    let keys = keyfile::read_key_file(&args.key)?;
    let record = anchor
        .joiner_record(keys.node_id())
        .with_context(|| format!("{} cannot start this node", args.join_file.display()))?;
    if args.dir.join("node.db").exists() {
        bail!("{} already holds a node; choose an empty directory", args.dir.display());
    }
    std::fs::create_dir_all(&args.dir).with_context(|| format!("could not create {}", args.dir.display()))?;
    keyfile::write_key_file(&args.dir.join("node.key"), &keys, false)?;
    let config = NodeConfig {
        heartbeat_ms: args.heartbeat_ms,
        lookup_socket: Some("lookup.sock".into()),
        ..NodeConfig::new(args.listen, args.admin, ".".into(), "node.key".into(), "member")
    };
    let config_path = args.dir.join("node.toml");
    std::fs::write(&config_path, config.to_toml())
        .with_context(|| format!("could not write {}", config_path.display()))?;
    Store::open(&args.dir.join("node.db"))?.save_member(&record, 0)?;
    let name = args.dir.file_name().map_or_else(|| "new".to_owned(), |n| n.to_string_lossy().into_owned());
    let public = keys.public();
    println!(
        "{} prepared to join cluster `{}` (at {})",
        args.dir.display(),
        anchor.cluster_id,
        anchor.version
    );
    println!("next, as an operator:");
    println!(
        "  cohort admin add-member {name},{},{},{} --cluster CLUSTER.toml --key OPERATOR.key",
        args.listen,
        hex::encode(public.signing),
        hex::encode(public.agreement)
    );
    println!("and on this machine:\n  cohort node run --config {}", config_path.display());
    Ok(())
}
