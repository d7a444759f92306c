//! What a member takes in and gives out, and what it keeps: its inputs and outputs, the record
//! it persists, its settings, and the typed outcomes of what it refuses. Owns these types only;
//! the rules that produce them are the machine's.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::block::{BlockError, ConfigBlock};
use super::config::{ClusterConfig, ConfigError, Version};
use super::messages::{ChangeRequest, MemberMessage};
use crate::identity::NodeId;
use crate::signed::Signed;
use crate::time::Instant;
use crate::wire::WireError;

/// A configuration as a member stores it: the whole block, which it serves to other members,
/// and the configuration it opened from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredConfig {
    pub block: ConfigBlock,
    pub config: ClusterConfig,
}

impl StoredConfig {
    pub fn version(&self) -> Version {
        self.config.version
    }
}

/// Everything a member keeps across a crash. The driver writes each one whole and atomically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// Raised at every start, before the first heartbeat: the high half of Status sequence
    /// numbers, so a restarted member's heartbeats are never taken for replays.
    pub boot_epoch: u64,
    pub active: StoredConfig,
    pub staged: Option<StoredConfig>,
}

/// A record holds at most two configurations (active and staged), each as its block and as
/// opened.
pub const MAX_RECORD_LEN: usize = 4 * super::config::MAX_ENCODED_CONFIG + 4 * 1024 * 1024;

impl MemberRecord {
    /// The record as storage keeps it.
    pub fn to_bytes(&self) -> Result<Vec<u8>, WireError> {
        crate::wire::encode_bounded(self, MAX_RECORD_LEN)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<MemberRecord, WireError> {
        crate::wire::decode_bounded(bytes, MAX_RECORD_LEN)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberSettings {
    pub heartbeat: Duration,
    /// How long to wait for a fetch reply before asking again (possibly someone else).
    pub fetch_retry: Duration,
}

impl Default for MemberSettings {
    fn default() -> Self {
        MemberSettings { heartbeat: Duration::from_secs(1), fetch_retry: Duration::from_millis(500) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PersistToken(pub u64);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberInput {
    /// A member message as it arrived on a channel whose peer authenticated as `from`, not yet
    /// decoded.
    Received {
        from: NodeId,
        bytes: Vec<u8>,
    },
    /// Storage holds the record of `Persist { token }` durably.
    Persisted(PersistToken),
    Timeout,
    /// An operator's change request, from the admin channel.
    Change {
        request_id: u64,
        request: Signed<ChangeRequest>,
    },
    /// A service lookup: one setting, or all settings when `key` is `None` (rule 9).
    Lookup {
        request_id: u64,
        key: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberOutput {
    Send {
        to: NodeId,
        address: String,
        message: Box<MemberMessage>,
    },
    /// Write `record` whole; answer `Persisted(token)` once it is durable.
    Persist {
        token: PersistToken,
        record: Box<MemberRecord>,
    },
    /// A verified configuration is now staged and advertised; `source` is the member it was
    /// fetched from (`None`: authored here).
    Staged {
        version: Version,
        source: Option<NodeId>,
    },
    /// A configuration is now active.
    Installed {
        version: Version,
        config_hash: [u8; 32],
    },
    /// A verified header shows that `version` does not list this member: it was removed, and
    /// stops heartbeating, fetching and answering.
    Removed {
        version: Version,
    },
    /// A valid Status from `from` was taken: what it advertised. For observers counting
    /// announcements; the member has already acted on it.
    Heard {
        from: NodeId,
        active: Version,
        staged: Option<Version>,
    },
    /// A message was refused; counted in [`Member::drops`].
    Dropped {
        reason: DropReason,
    },
    ChangeAccepted {
        request_id: u64,
        version: Version,
    },
    ChangeRejected {
        request_id: u64,
        error: ChangeError,
    },
    LookupAnswer {
        request_id: u64,
        answer: LookupAnswer,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupAnswer {
    Value {
        version: Version,
        key: String,
        value: Option<String>,
    },
    Settings {
        version: Version,
        settings: BTreeMap<String, String>,
    },
    /// Syncing: ask again after the hint, never answered from a half-installed version.
    Declined {
        retry_after: Duration,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    #[error("undecodable message: {0}")]
    Undecodable(WireError),
    #[error("message for another cluster")]
    WrongCluster,
    #[error("sender {0} is not a member")]
    UnknownSender(NodeId),
    #[error("bad signature from {0}")]
    BadSignature(NodeId),
    #[error("stale or replayed sequence number from {0}")]
    StaleSequence(NodeId),
    #[error("status from {0} does not name this member as a recipient")]
    NotARecipient(NodeId),
    #[error("rejected block {version}: {error}")]
    BadBlock { version: Version, error: BlockError },
    #[error("reply for {0}, which is not newer than what this member holds")]
    StaleReply(Version),
    #[error("message claims to be from {claimed} but came on {peer}'s channel")]
    WrongPeer { claimed: NodeId, peer: NodeId },
    #[error("{0} asked again for the block it was just sent (a replayed fetch)")]
    RepeatedFetch(NodeId),
}

impl DropReason {
    /// A stable name for counting.
    /// Every kind [`DropReason::kind`] names, so a count can be shown as zero before the
    /// first drop of its kind.
    pub const KINDS: [&'static str; 10] = [
        "undecodable",
        "wrong-cluster",
        "unknown-sender",
        "bad-signature",
        "stale-sequence",
        "not-a-recipient",
        "bad-block",
        "stale-reply",
        "wrong-peer",
        "repeated-fetch",
    ];

    pub fn kind(&self) -> &'static str {
        match self {
            DropReason::Undecodable(_) => "undecodable",
            DropReason::WrongCluster => "wrong-cluster",
            DropReason::UnknownSender(_) => "unknown-sender",
            DropReason::BadSignature(_) => "bad-signature",
            DropReason::StaleSequence(_) => "stale-sequence",
            DropReason::NotARecipient(_) => "not-a-recipient",
            DropReason::BadBlock { .. } => "bad-block",
            DropReason::StaleReply(_) => "stale-reply",
            DropReason::WrongPeer { .. } => "wrong-peer",
            DropReason::RepeatedFetch(_) => "repeated-fetch",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("request is for cluster `{0}`")]
    WrongCluster(String),
    #[error("operator key {0} is not listed in the active configuration")]
    UnknownOperator(NodeId),
    #[error("request signature does not verify")]
    BadSignature,
    #[error("request is based on {base}, but {active} is already active; read the configuration again")]
    Stale { base: Version, active: Version },
    #[error(
        "this request was already applied, in version {0}: a signed request changes the configuration once"
    )]
    Replayed(Version),
    #[error("this member is syncing to a newer configuration; retry after {retry_after:?}")]
    Syncing { retry_after: Duration },
    #[error("this node is not a member of its active configuration and cannot author a change")]
    NotAMember,
    #[error("the change does not apply: {0}")]
    Invalid(#[from] ConfigError),
    #[error("could not seal the new configuration: {0}")]
    Seal(BlockError),
}

/// A peer as this member last heard of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerView {
    pub last_heard: Instant,
    pub active: Version,
    pub staged: Option<Version>,
}
