//! Security policies: signed, versioned documents of parameters (anti-malware, firewall, update
//! and scan settings, and free-form keys), targeted at client platforms and scoped globally or to
//! one local server. Owns the document, its bounds and its signature domain. It never decides
//! which policy applies to a client: the merge does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::signed::{Signed, SignedKind};

/// A client platform: what policies are targeted at.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub os_version: String,
    pub role: String,
}

impl Platform {
    pub fn new(os: &str, os_version: &str, role: &str) -> Platform {
        Platform { os: os.into(), os_version: os_version.into(), role: role.into() }
    }

    /// `os/version/role`, the key aggregates count by.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.os, self.os_version, self.role)
    }
}

/// Which platforms a policy applies to: each field set must match; unset fields match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PolicyTarget {
    pub os: Option<String>,
    pub os_version: Option<String>,
    pub role: Option<String>,
}

impl PolicyTarget {
    pub fn matches(&self, platform: &Platform) -> bool {
        self.os.as_ref().is_none_or(|os| *os == platform.os)
            && self.os_version.as_ref().is_none_or(|v| *v == platform.os_version)
            && self.role.as_ref().is_none_or(|r| *r == platform.role)
    }

    /// How many fields are set: more specific targets override less specific ones.
    pub fn specificity(&self) -> u8 {
        u8::from(self.os.is_some()) + u8::from(self.os_version.is_some()) + u8::from(self.role.is_some())
    }
}

/// Where a policy applies: everywhere, or only to the clients of one local server.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Scope {
    Global,
    Local(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Stable name; a new version of the same id replaces the old one.
    pub id: String,
    pub version: u64,
    /// The server that created this version (master or a local).
    pub author: String,
    pub scope: Scope,
    pub target: PolicyTarget,
    /// `antimalware.enabled`, `firewall.default`, `update.channel`, `scan.interval_hours`, or any
    /// other key.
    pub params: BTreeMap<String, String>,
    /// A retired policy is a tombstone: a version like any other, so it replicates and wins by
    /// the same order, that applies to no one and holds no parameters. It stays held so an
    /// older version can never come back.
    pub retired: bool,
}

/// Where one version of a policy stands in the one order every tier applies to the versions of
/// a policy id: the higher `version` wins; at equal versions (two servers edited the policy
/// between syncs, each numbering from what it held) the `author` whose name sorts last wins;
/// at equal authors (a server numbers its own edits, so only a forged history gets here) the
/// higher `digest` of the body. Any two servers holding the same versions pick the same winner,
/// whatever order the versions reached them in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PolicyRank {
    pub version: u64,
    pub author: String,
    pub digest: [u8; 32],
}

impl PolicyRank {
    /// `v3 by local-00`, as listings and logs show a version.
    pub fn label(&self) -> String {
        format!("v{} by {}", self.version, self.author)
    }
}

impl SignedKind for Policy {
    const DOMAIN: &'static str = "security-policy";
}

pub type SignedPolicy = Signed<Policy>;

/// A version that lost a conflict (one version number edited at two servers between syncs), and
/// the rank of the version it lost to: kept as history, applied nowhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Superseded {
    pub policy: Policy,
    pub by: PolicyRank,
}

pub const MAX_PARAMS: usize = 512;
pub const MAX_TEXT: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("policy `{id}`: {what}")]
    Invalid { id: String, what: String },
    #[error("policy `{0}` is not signed by a known policy server")]
    UnknownSigner(String),
    #[error("policy `{0}` has a bad signature")]
    BadSignature(String),
}

impl Policy {
    /// This version's place in the order of [`PolicyRank`].
    pub fn rank(&self) -> PolicyRank {
        let digest = Sha256::digest(postcard::to_allocvec(self).unwrap_or_default()).into();
        PolicyRank { version: self.version, author: self.author.clone(), digest }
    }

    /// Checks bounds on every field.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let invalid = |what: String| PolicyError::Invalid { id: self.id.chars().take(64).collect(), what };
        let text_ok = |t: &str| !t.is_empty() && t.len() <= MAX_TEXT && !t.chars().any(char::is_control);
        if !text_ok(&self.id) || !text_ok(&self.author) {
            return Err(invalid("id and author must be 1 to 256 printable characters".into()));
        }
        if self.retired && !self.params.is_empty() {
            return Err(invalid("a retired policy holds no parameters".into()));
        }
        if self.params.len() > MAX_PARAMS {
            return Err(invalid(format!("more than {MAX_PARAMS} parameters")));
        }
        for (key, value) in &self.params {
            if !text_ok(key) || value.len() > MAX_TEXT || value.chars().any(char::is_control) {
                return Err(invalid(format!(
                    "parameter `{}` is empty, too long or not printable",
                    key.chars().take(40).collect::<String>()
                )));
            }
        }
        // A check an agent could not read is refused where it is written, not found on the
        // machines later.
        for (name, check) in super::checks::checks_of(&self.params) {
            if let Err(e) = check {
                return Err(invalid(format!("check `{}`: {e}", name.chars().take(40).collect::<String>())));
            }
        }
        for field in [&self.target.os, &self.target.os_version, &self.target.role].into_iter().flatten() {
            if !text_ok(field) {
                return Err(invalid("target fields must be 1 to 256 printable characters".into()));
            }
        }
        if let Scope::Local(local) = &self.scope
            && !text_ok(local)
        {
            return Err(invalid("the local scope must name a server".into()));
        }
        Ok(())
    }
}
