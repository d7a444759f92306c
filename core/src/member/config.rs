//! The cluster configuration document: its [`Version`], roster of members, operator keys and
//! settings, and the [`Change`]s an operator may make to it. Owns the bounds every configuration
//! must satisfy and the one deterministic way a change applies. It never decides who may change it
//! (the member machine does) and never touches storage.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::identity::{KeyDigest, NodeId, PublicIdentity};
use crate::seal::SealedBox;

/// A configuration version. Ordered by counter, then author: the highest wins (rule 6), and two
/// concurrent changes (same counter) resolve the same way at every member.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    pub counter: u64,
    pub author: NodeId,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}@{}", self.counter, &self.author.to_hex()[..8])
    }
}

impl Version {
    /// `COUNTER@AUTHOR` with the author's full hex id: the form operators type and scripts parse.
    pub fn to_full_string(&self) -> String {
        format!("{}@{}", self.counter, self.author.to_hex())
    }
}

impl std::str::FromStr for Version {
    type Err = String;

    /// Parses `COUNTER@AUTHOR` (author: 32 hex digits), as printed by [`Version::to_full_string`].
    fn from_str(text: &str) -> Result<Version, String> {
        let (counter, author) = text
            .split_once('@')
            .ok_or_else(|| format!("`{text}` is not a version; expected COUNTER@AUTHOR (32 hex digits)"))?;
        let counter = counter.parse().map_err(|_| format!("`{counter}` is not a version counter"))?;
        let mut id = [0u8; 16];
        hex::decode_to_slice(author, &mut id)
            .map_err(|_| format!("`{author}` is not a 32-hex-digit node id"))?;
        Ok(Version { counter, author: NodeId(id) })
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A member of the cluster as the configuration records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub name: String,
    pub identity: PublicIdentity,
    /// Where the member listens (`host:port`); drivers resolve it.
    pub address: String,
}

/// An operator allowed to sign change requests (with the Ed25519 key) and to open the admin
/// channel (with the X25519 key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorInfo {
    pub name: String,
    pub identity: PublicIdentity,
}

impl OperatorInfo {
    pub fn id(&self) -> NodeId {
        self.identity.node_id()
    }

    /// The Ed25519 key change requests are checked against.
    pub fn signing(&self) -> [u8; 32] {
        self.identity.signing
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    pub cluster_id: String,
    pub version: Version,
    pub members: BTreeMap<NodeId, MemberInfo>,
    pub operators: BTreeMap<NodeId, OperatorInfo>,
    /// Settings shared by every member.
    pub settings: BTreeMap<String, String>,
    /// Each member's own settings, every value sealed to that member alone (see
    /// [`super::section`]): authors carry them from version to version without reading them.
    pub sections: BTreeMap<NodeId, BTreeMap<String, SealedBox>>,
    /// The digests of the operators' change requests this version applied on top of the version
    /// that was active when its author took them (a staged version replaced by a later change
    /// carries the earlier ones forward). A member holding it refuses the same signed request
    /// again, so a request replayed before its change installs cannot apply twice; once it
    /// installs, the request's base is older than the active version and it is stale.
    pub applied_requests: Vec<[u8; 32]>,
}

/// One edit an operator requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    Set {
        key: String,
        value: String,
    },
    Unset {
        key: String,
    },
    AddMember(MemberInfo),
    RemoveMember(NodeId),
    AddOperator(OperatorInfo),
    RemoveOperator(NodeId),
    /// Sets `key` in `member`'s own section to a value the operator sealed to that member.
    SetFor {
        member: NodeId,
        key: String,
        value: SealedBox,
    },
    UnsetFor {
        member: NodeId,
        key: String,
    },
}

/// A change in words, as `cohort change show` prints it: values quoted with escapes (so a
/// newline or a control character cannot forge another line), sealed values never shown.
impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Set { key, value } => write!(f, "set {key:?} to {value:?}"),
            Change::Unset { key } => write!(f, "unset {key:?}"),
            Change::AddMember(m) => {
                write!(
                    f,
                    "add member {:?} at {:?} (node id {})",
                    m.name,
                    m.address,
                    m.identity.node_id().to_hex()
                )
            }
            Change::RemoveMember(id) => write!(f, "remove member {}", id.to_hex()),
            Change::AddOperator(o) => write!(f, "add operator {:?} (node id {})", o.name, o.id().to_hex()),
            Change::RemoveOperator(id) => write!(f, "remove operator {}", id.to_hex()),
            Change::SetFor { member, key, value } => write!(
                f,
                "set {key:?} in member {}'s own section (sealed to it: {} bytes)",
                member.to_hex(),
                value.ciphertext.len()
            ),
            Change::UnsetFor { member, key } => {
                write!(f, "unset {key:?} in member {}'s own section", member.to_hex())
            }
        }
    }
}

pub const MAX_CLUSTER_ID_LEN: usize = 64;
pub const MAX_MEMBERS: usize = 256;
pub const MAX_OPERATORS: usize = 64;
/// Shared settings, and separately each member's own.
pub const MAX_SETTINGS: usize = 65_536;
pub const MAX_KEY_LEN: usize = 128;
/// One value may fill the configuration (a bundle, a hosts file): the total bound governs.
pub const MAX_VALUE_LEN: usize = MAX_ENCODED_CONFIG;
pub const MAX_NAME_LEN: usize = 128;
pub const MAX_CHANGES: usize = 256;
/// Change requests one staged version may carry forward before it installs.
pub const MAX_APPLIED_REQUESTS: usize = 1024;
/// The largest configuration, encoded. A fetch reply carries it whole (chunked on the channel),
/// so the member message limit leaves room above it for the header and entries.
pub const MAX_ENCODED_CONFIG: usize = 16 * 1024 * 1024;
/// A sealed section value: the value plus HPKE's tag.
const MAX_SEALED_VALUE_LEN: usize = MAX_VALUE_LEN + 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("cluster id must be 1 to {MAX_CLUSTER_ID_LEN} characters")]
    BadClusterId,
    #[error("a configuration needs at least one member")]
    NoMembers,
    #[error("a configuration needs at least one operator, or nobody could ever change it")]
    NoOperators,
    #[error("{what} limit is {limit}")]
    TooMany { what: &'static str, limit: usize },
    #[error("{what} `{text}` is empty or longer than {limit} bytes")]
    BadText { what: &'static str, text: String, limit: usize },
    #[error("member {0} is listed under another member's id")]
    MemberIdMismatch(NodeId),
    #[error("two members share one X25519 key")]
    DuplicateAgreementKey,
    #[error("operator {0} is listed under another operator's id")]
    OperatorIdMismatch(NodeId),
    #[error("member {0} is already in the configuration")]
    AlreadyMember(NodeId),
    #[error("node {0} is not a member")]
    NotAMember(NodeId),
    #[error("operator {0} is not listed")]
    NotAnOperator(NodeId),
    #[error("setting `{0}` is not set")]
    NoSuchSetting(String),
    #[error("setting `{key}` is not set in member {member}'s section")]
    NoSuchMemberSetting { member: NodeId, key: String },
    #[error("member {0} has a section but is not a member")]
    SectionWithoutMember(NodeId),
    #[error(
        "the configuration would encode to {len} bytes, over the {MAX_ENCODED_CONFIG}-byte (16 MiB) limit; remove or shorten settings"
    )]
    TooLarge { len: usize },
    #[error("a change request carries {0} changes; at most {MAX_CHANGES}")]
    TooManyChanges(usize),
    #[error("could not encode the configuration: {0}")]
    Encode(String),
    #[error("exec directory entry {0}")]
    Exec(#[from] crate::exec::directory::DirectoryError),
}

fn check_text(what: &'static str, text: &str, limit: usize) -> Result<(), ConfigError> {
    if text.is_empty() || text.len() > limit {
        return Err(ConfigError::BadText { what, text: text.chars().take(40).collect(), limit });
    }
    Ok(())
}

impl ClusterConfig {
    /// Checks every bound. Run on every configuration made or received.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.cluster_id.is_empty() || self.cluster_id.len() > MAX_CLUSTER_ID_LEN {
            return Err(ConfigError::BadClusterId);
        }
        if self.members.is_empty() {
            return Err(ConfigError::NoMembers);
        }
        if self.operators.is_empty() {
            return Err(ConfigError::NoOperators);
        }
        for (what, count, limit) in [
            ("members", self.members.len(), MAX_MEMBERS),
            ("operators", self.operators.len(), MAX_OPERATORS),
            ("settings", self.settings.len(), MAX_SETTINGS),
            ("change requests since the active version", self.applied_requests.len(), MAX_APPLIED_REQUESTS),
        ] {
            if count > limit {
                return Err(ConfigError::TooMany { what, limit });
            }
        }
        let mut agreement_keys = std::collections::BTreeSet::new();
        for (id, member) in &self.members {
            if member.identity.node_id() != *id {
                return Err(ConfigError::MemberIdMismatch(*id));
            }
            if !agreement_keys.insert(member.identity.agreement) {
                return Err(ConfigError::DuplicateAgreementKey);
            }
            check_text("member name", &member.name, MAX_NAME_LEN)?;
            check_text("member address", &member.address, MAX_NAME_LEN)?;
        }
        for (id, operator) in &self.operators {
            if operator.id() != *id {
                return Err(ConfigError::OperatorIdMismatch(*id));
            }
            check_text("operator name", &operator.name, MAX_NAME_LEN)?;
        }
        for (key, value) in &self.settings {
            check_text("setting key", key, MAX_KEY_LEN)?;
            if value.len() > MAX_VALUE_LEN {
                return Err(ConfigError::BadText {
                    what: "setting value",
                    text: key.clone(),
                    limit: MAX_VALUE_LEN,
                });
            }
            // Hosts and ACLs are read by every exec role: one that does not parse never enters.
            crate::exec::directory::check_setting(key, value)?;
        }
        for (member, section) in &self.sections {
            if !self.members.contains_key(member) {
                return Err(ConfigError::SectionWithoutMember(*member));
            }
            if section.len() > MAX_SETTINGS {
                return Err(ConfigError::TooMany { what: "member settings", limit: MAX_SETTINGS });
            }
            for (key, value) in section {
                check_text("member setting key", key, MAX_KEY_LEN)?;
                if value.ciphertext.len() > MAX_SEALED_VALUE_LEN {
                    return Err(ConfigError::BadText {
                        what: "member setting value",
                        text: key.clone(),
                        limit: MAX_VALUE_LEN,
                    });
                }
            }
        }
        let len = self.encode()?.len();
        if len > MAX_ENCODED_CONFIG {
            return Err(ConfigError::TooLarge { len });
        }
        Ok(())
    }

    /// The canonical encoding: what is sealed for each member and what the header hashes.
    pub fn encode(&self) -> Result<Vec<u8>, ConfigError> {
        postcard::to_allocvec(self).map_err(|e| ConfigError::Encode(e.to_string()))
    }

    /// SHA-256 of the canonical encoding: one configuration, one hash, at every member.
    pub fn hash(&self) -> Result<[u8; 32], ConfigError> {
        Ok(Sha256::digest(self.encode()?).into())
    }

    pub fn is_member(&self, id: &NodeId) -> bool {
        self.members.contains_key(id)
    }

    pub fn member_by_digest(&self, digest: &KeyDigest) -> Option<&MemberInfo> {
        self.members.values().find(|m| m.identity.key_digest() == *digest)
    }

    /// The key digests of every member: the recipients of a block and of a Status.
    pub fn member_digests(&self) -> impl Iterator<Item = KeyDigest> + '_ {
        self.members.values().map(|m| m.identity.key_digest())
    }

    /// This configuration with `changes` applied in order, under `version`. Fails on the first
    /// change that does not apply; the result is validated.
    pub fn with_changes(&self, changes: &[Change], version: Version) -> Result<ClusterConfig, ConfigError> {
        if changes.len() > MAX_CHANGES {
            return Err(ConfigError::TooManyChanges(changes.len()));
        }
        let mut next = self.clone();
        next.version = version;
        for change in changes {
            match change {
                Change::Set { key, value } => {
                    next.settings.insert(key.clone(), value.clone());
                }
                Change::Unset { key } => {
                    next.settings.remove(key).ok_or_else(|| ConfigError::NoSuchSetting(key.clone()))?;
                }
                Change::AddMember(member) => {
                    let id = member.identity.node_id();
                    if next.members.insert(id, member.clone()).is_some() {
                        return Err(ConfigError::AlreadyMember(id));
                    }
                }
                Change::RemoveMember(id) => {
                    next.members.remove(id).ok_or(ConfigError::NotAMember(*id))?;
                    next.sections.remove(id);
                }
                Change::AddOperator(operator) => {
                    next.operators.insert(operator.id(), operator.clone());
                }
                Change::RemoveOperator(id) => {
                    next.operators.remove(id).ok_or(ConfigError::NotAnOperator(*id))?;
                }
                Change::SetFor { member, key, value } => {
                    if !next.members.contains_key(member) {
                        return Err(ConfigError::NotAMember(*member));
                    }
                    next.sections.entry(*member).or_default().insert(key.clone(), value.clone());
                }
                Change::UnsetFor { member, key } => {
                    let section = next.sections.get_mut(member);
                    section.and_then(|s| s.remove(key)).ok_or_else(|| ConfigError::NoSuchMemberSetting {
                        member: *member,
                        key: key.clone(),
                    })?;
                    if next.sections.get(member).is_some_and(BTreeMap::is_empty) {
                        next.sections.remove(member);
                    }
                }
            }
        }
        next.validate()?;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeKeys;
    use crate::rng::seeded;

    pub(crate) fn sample(members: usize) -> ClusterConfig {
        let mut rng = seeded(42);
        let operator = NodeKeys::generate(&mut rng);
        let op = OperatorInfo { name: "ops".into(), identity: operator.public() };
        let members = (0..members)
            .map(|i| {
                let identity = NodeKeys::generate(&mut rng).public();
                (
                    identity.node_id(),
                    MemberInfo { name: format!("m{i}"), identity, address: format!("m{i}:7000") },
                )
            })
            .collect();
        ClusterConfig {
            cluster_id: "test".into(),
            version: Version { counter: 1, author: op.id() },
            members,
            operators: [(op.id(), op)].into_iter().collect(),
            settings: BTreeMap::new(),
            sections: BTreeMap::new(),
            applied_requests: Vec::new(),
        }
    }

    #[test]
    fn versions_parse_from_their_full_form_only() {
        let v = Version { counter: 7, author: NodeId([0xab; 16]) };
        assert_eq!(v.to_full_string().parse::<Version>(), Ok(v));
        assert!("7".parse::<Version>().is_err());
        assert!("x@abab".parse::<Version>().is_err());
        assert!("7@abab".parse::<Version>().is_err());
    }

    #[test]
    fn changes_read_as_words_with_quoted_values() {
        let set = Change::Set { key: "motd".into(), value: "hi \"there\"\n".into() };
        assert_eq!(set.to_string(), r#"set "motd" to "hi \"there\"\n""#);
        assert_eq!(Change::Unset { key: "dns".into() }.to_string(), r#"unset "dns""#);
        let gone = Change::RemoveMember(NodeId([0xab; 16]));
        assert_eq!(gone.to_string(), format!("remove member {}", "ab".repeat(16)));
    }

    #[test]
    fn versions_order_by_counter_then_author() {
        let (a, b) = (NodeId([1; 16]), NodeId([2; 16]));
        assert!(Version { counter: 2, author: a } > Version { counter: 1, author: b });
        assert!(Version { counter: 2, author: b } > Version { counter: 2, author: a });
    }

    #[test]
    fn changes_apply_in_order_and_the_result_is_validated() {
        let config = sample(3);
        let v2 = Version { counter: 2, author: NodeId([0; 16]) };
        let next = config
            .with_changes(&[Change::Set { key: "dns".into(), value: "10.0.0.53".into() }], v2)
            .expect("applies");
        assert_eq!(next.settings.get("dns").map(String::as_str), Some("10.0.0.53"));
        assert_eq!(next.version, v2);
        assert_eq!(
            config.with_changes(&[Change::Unset { key: "nope".into() }], v2),
            Err(ConfigError::NoSuchSetting("nope".into()))
        );
        let all: Vec<Change> = config.members.keys().map(|id| Change::RemoveMember(*id)).collect();
        assert_eq!(config.with_changes(&all, v2), Err(ConfigError::NoMembers));
    }

    #[test]
    fn a_member_listed_under_the_wrong_id_is_refused() {
        let mut config = sample(2);
        let (id, member) = config.members.pop_first().expect("a member");
        config.members.insert(NodeId([9; 16]), member);
        let _ = id;
        assert_eq!(config.validate(), Err(ConfigError::MemberIdMismatch(NodeId([9; 16]))));
    }
}
