//! One signed admin request to a policy server of a tier: which server (from the tier file), the
//! operator's key, the Noise channel with the server's identity pinned, and the answer or the
//! server's refusal. Every `cohort policy` and `status --global` command asks through here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use cohort_core::policy::wire::{PolicyAdmin, PolicyAdminReply, PolicyAdminRequest, PolicyWire};
use cohort_core::signed::Signed;
use cohort_core::{NodeKeys, PublicIdentity, WallClock};
use cohort_io_mio::channel_client::ChannelClient;
use cohort_io_mio::keyfile;
use cohort_io_mio::node_config::{TierFile, load_toml, parse_key};

#[derive(Debug, Clone, clap::Args)]
pub struct TierArgs {
    /// The policy tier file (from `cohort init --policy-locals`).
    #[arg(long, value_name = "FILE")]
    pub tier: Option<PathBuf>,
    /// Which server to ask (default: the master).
    #[arg(long, value_name = "NAME")]
    pub server: Option<String>,
}

pub fn wall() -> WallClock {
    WallClock(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    )
}

/// Sends one signed admin request to a policy server.
pub fn ask(tier: &TierArgs, key: &Option<PathBuf>, request: PolicyAdmin) -> anyhow::Result<PolicyAdminReply> {
    let tier_path = tier.tier.clone().context("say which tier: --tier tier.toml")?;
    let key = key.clone().context("policy requests are signed: pass --key with the operator key")?;
    let keys: NodeKeys = keyfile::read_key_file(&key)?;
    let file: TierFile = load_toml(&tier_path)?;
    let server = match &tier.server {
        Some(name) => file.servers.iter().find(|s| &s.name == name),
        None => file.servers.iter().find(|s| s.parent.is_none()),
    }
    .with_context(|| match &tier.server {
        Some(name) => format!("{} lists no server `{name}`", tier_path.display()),
        None => format!("{} lists no master (a server without a parent)", tier_path.display()),
    })?;
    let identity = PublicIdentity {
        signing: parse_key(&tier_path, "ed25519", &server.ed25519)?,
        agreement: parse_key(&tier_path, "x25519", &server.x25519)?,
    };
    let addr: SocketAddr = server.address;
    let timeout = Duration::from_secs(15);
    let mut client = ChannelClient::connect(addr, identity, &keys, timeout)?;
    let signed = Signed::sign(PolicyAdminRequest { at: wall(), request }, &keys)?;
    client.send(&PolicyWire::Admin(signed))?;
    match client.recv::<PolicyWire>(timeout)? {
        PolicyWire::AdminReply(PolicyAdminReply::Error(e)) => bail!("{} refused: {e}", server.name),
        PolicyWire::AdminReply(reply) => Ok(reply),
        other => bail!("unexpected answer: {other:?}"),
    }
}
