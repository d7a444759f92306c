//! `cluster.toml`: the operator's map of a cluster, written by `cohort init`: the cluster id and,
//! per member, its name, addresses and public keys. Admin commands use it to find a member and to
//! pin its key. It holds no secret.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, bail};
use cohort_core::PublicIdentity;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    pub cluster_id: String,
    pub members: Vec<MemberEntry>,
    /// Where clients log in and run commands, if the cluster has a gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Endpoint>,
    /// Where operators manage principals, if the cluster has a KDC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kdc: Option<Endpoint>,
}

/// A service's address and the keys its channel proves.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub address: SocketAddr,
    pub ed25519: String,
    pub x25519: String,
}

impl Endpoint {
    pub fn identity(&self) -> anyhow::Result<PublicIdentity> {
        identity_from_hex("gateway", &self.ed25519, &self.x25519)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberEntry {
    pub name: String,
    /// Where other members' channels arrive (TCP).
    pub address: SocketAddr,
    /// The admin channel's TCP address.
    pub admin: SocketAddr,
    pub ed25519: String,
    pub x25519: String,
}

/// A public identity from its two keys in hex, naming `whose` keys they are in any error.
pub fn identity_from_hex(whose: &str, ed25519: &str, x25519: &str) -> anyhow::Result<PublicIdentity> {
    let key = |text: &str, what: &str| -> anyhow::Result<[u8; 32]> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out)
            .with_context(|| format!("{whose}: {what} key is not 64 hex digits"))?;
        Ok(out)
    };
    Ok(PublicIdentity { signing: key(ed25519, "ed25519")?, agreement: key(x25519, "x25519")? })
}

impl MemberEntry {
    pub fn identity(&self) -> anyhow::Result<PublicIdentity> {
        identity_from_hex(&format!("member {}", self.name), &self.ed25519, &self.x25519)
    }
}

impl ClusterFile {
    pub fn load(path: &Path) -> anyhow::Result<ClusterFile> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("could not read {}", path.display()))?;
        let file: ClusterFile =
            toml::from_str(&text).with_context(|| format!("{} is not a cluster file", path.display()))?;
        if file.members.is_empty() {
            bail!("{} lists no members", path.display());
        }
        Ok(file)
    }

    pub fn member(&self, name: Option<&str>) -> anyhow::Result<&MemberEntry> {
        match name {
            None => self.members.first().context("the cluster file lists no members"),
            Some(name) => self.members.iter().find(|m| m.name == name).with_context(|| {
                let names: Vec<&str> = self.members.iter().map(|m| m.name.as_str()).collect();
                format!("no member `{name}` in the cluster file (members: {})", names.join(", "))
            }),
        }
    }
}
