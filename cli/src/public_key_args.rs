//! The public keys of someone being added (an operator, a managed host), as given on the command
//! line: read from its key file, or typed as the hex `cohort key show` prints. Owns only reading
//! and checking them; it never reads a secret half, and never decides who may be added.

use std::path::PathBuf;

use anyhow::{Context, bail};
use cohort_core::PublicIdentity;

use crate::cluster_file::identity_from_hex;

#[derive(Debug, clap::Args)]
pub struct PublicKeyArgs {
    /// Its key file (only the public halves are read).
    #[arg(long, value_name = "FILE", required_unless_present_all = ["ed25519", "x25519"])]
    pub key_file: Option<PathBuf>,
    /// Its Ed25519 public key (64 hex digits), as `cohort key show` prints it.
    #[arg(long, value_name = "HEX", conflicts_with = "key_file", requires = "x25519")]
    pub ed25519: Option<String>,
    /// Its X25519 public key (64 hex digits).
    #[arg(long, value_name = "HEX", conflicts_with = "key_file", requires = "ed25519")]
    pub x25519: Option<String>,
}

impl PublicKeyArgs {
    /// The identity given; `whose` names it in errors (`the host`, `the new operator`).
    pub fn identity(&self, whose: &str) -> anyhow::Result<PublicIdentity> {
        match (&self.key_file, &self.ed25519, &self.x25519) {
            (Some(path), _, _) => Ok(cohort_io_mio::keyfile::read_key_file(path)
                .with_context(|| format!("could not read {whose}'s key file {}", path.display()))?
                .public()),
            (None, Some(ed), Some(x)) => identity_from_hex(whose, ed.trim(), x.trim()),
            _ => bail!("give {whose}'s keys: --key-file FILE, or --ed25519 HEX --x25519 HEX"),
        }
    }
}
