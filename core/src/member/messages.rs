//! What members say to each other and what operators send them: signed Status heartbeats
//! (rule 1), signed fetch requests and self-authenticating fetch replies (rules 3-4), and
//! operator-signed change requests (rule 7). Owns their wire form and its bounds. It never judges
//! whether a message is acceptable; the machine does that against its configuration.

use serde::{Deserialize, Serialize};

use super::block::{ConfigBlock, SignedHeader};
use super::config::{Change, Version};
use crate::identity::{KeyDigest, NodeId};
use crate::signed::{Signed, SignedKind};
use crate::wire::{self, Envelope, RoleTag, WireError};

/// A member's heartbeat: what it runs, what it has staged, and whom it believes are members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub cluster_id: String,
    pub sender: NodeId,
    pub active: Version,
    pub staged: Option<Version>,
    /// Strictly increasing per sender, across restarts (a boot epoch forms the high bits).
    pub seq: u64,
    /// Key digests of the recipients the sender believes are members.
    pub recipients: Vec<KeyDigest>,
}

impl SignedKind for Status {
    const DOMAIN: &'static str = "member-status";
}

impl Status {
    /// Whether this Status advertises `version`, staged or active (the install rule's test).
    pub fn advertises(&self, version: Version) -> bool {
        self.active == version || self.staged == Some(version)
    }

    /// The newest version this Status names.
    pub fn newest(&self) -> Version {
        self.staged.map_or(self.active, |s| s.max(self.active))
    }
}

/// A member asks a block's holder for the header and its own entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchRequest {
    pub cluster_id: String,
    pub requester: NodeId,
    pub version: Version,
}

impl SignedKind for FetchRequest {
    const DOMAIN: &'static str = "member-fetch";
}

/// An operator's signed request to change the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRequest {
    pub cluster_id: String,
    /// The version the operator read; a request older than the member's active version is stale.
    pub base: Version,
    pub changes: Vec<Change>,
    /// The operator's Ed25519 key; it must be listed in the member's active configuration.
    pub operator: [u8; 32],
}

impl SignedKind for ChangeRequest {
    const DOMAIN: &'static str = "operator-change";
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberMessage {
    Status(Signed<Status>),
    Fetch(Signed<FetchRequest>),
    /// The whole block, so the requester can serve it in turn. Needs no signature of its own:
    /// the header is signed by the block's author and commits to the body and every entry.
    FetchReply {
        block: Box<ConfigBlock>,
    },
    /// The asked member does not hold that version; ask another member that advertised it.
    FetchRefused {
        version: Version,
    },
    /// The version asked for does not list the requester: its signed header, which commits to
    /// every entry, shows that the requester was removed.
    NotInVersion {
        header: SignedHeader,
    },
}

/// The largest member message on a member channel: a fetch reply with the largest
/// configuration, and room for a full roster's header and entries.
pub const MAX_MEMBER_MESSAGE: usize = super::config::MAX_ENCODED_CONFIG + 512 * 1024;
/// A Status naming more recipients than any roster may hold is malformed.
pub const MAX_STATUS_RECIPIENTS: usize = super::config::MAX_MEMBERS;

impl MemberMessage {
    /// The message as it travels: an [`Envelope`] for the member role.
    pub fn to_wire(&self) -> Result<Vec<u8>, WireError> {
        let body = postcard::to_allocvec(self).map_err(|e| WireError::Encode(e.to_string()))?;
        let bytes = wire::encode(&Envelope { role: RoleTag::Member, body })?;
        if bytes.len() > MAX_MEMBER_MESSAGE {
            return Err(WireError::TooLarge { len: bytes.len(), limit: MAX_MEMBER_MESSAGE });
        }
        Ok(bytes)
    }

    /// Decodes a whole message (envelope and body).
    pub fn from_wire(bytes: &[u8]) -> Result<MemberMessage, WireError> {
        if bytes.len() > MAX_MEMBER_MESSAGE {
            return Err(WireError::TooLarge { len: bytes.len(), limit: MAX_MEMBER_MESSAGE });
        }
        let envelope: Envelope = wire::decode(bytes)?;
        if envelope.role != RoleTag::Member {
            return Err(WireError::Decode(format!("message for role {:?}, not a member", envelope.role)));
        }
        Self::from_body(&envelope.body)
    }

    /// Decodes an envelope body already routed to the member role.
    pub fn from_body(body: &[u8]) -> Result<MemberMessage, WireError> {
        let (message, rest): (MemberMessage, _) =
            postcard::take_from_bytes(body).map_err(|e| WireError::Decode(e.to_string()))?;
        if !rest.is_empty() {
            return Err(WireError::TrailingBytes(rest.len()));
        }
        if let MemberMessage::Status(s) = &message
            && s.body.recipients.len() > MAX_STATUS_RECIPIENTS
        {
            return Err(WireError::Decode(format!("status names {} recipients", s.body.recipients.len())));
        }
        Ok(message)
    }
}
