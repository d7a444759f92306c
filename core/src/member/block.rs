//! Configuration blocks (rule 4). A block is the configuration encrypted once under a fresh
//! content key (the body), that key sealed with HPKE to each member (its entry, located by the
//! member's key digest), and a header signed by its author that commits to the body, every entry
//! and the configuration's hash. Every member that stages a version keeps the whole block and can
//! serve it: each entry opens only for its recipient, so holding them reveals nothing. Owns
//! building a block, checking a whole block against its header, and opening one member's view.
//! It never opens a block whose header is not signed by a trusted author, and never returns a
//! configuration that differs from what the header commits to.

use std::collections::BTreeMap;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand_core::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::config::{ClusterConfig, ConfigError, Version};
use crate::identity::{KeyDigest, NodeId, NodeKeys, PublicIdentity};
use crate::rng::SeededRng;
use crate::seal::{self, SealError, SealedBox};
use crate::signed::{Signed, SignedKind};

/// Who signed a block: a member (every change after genesis) or an operator (genesis).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Author {
    Member(NodeId),
    Operator([u8; 32]),
}

impl Author {
    pub fn id(&self) -> NodeId {
        match self {
            Author::Member(id) => *id,
            Author::Operator(key) => NodeId::of_signing_key(key),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockHeader {
    pub cluster_id: String,
    pub version: Version,
    pub author: Author,
    /// SHA-256 of the configuration's canonical encoding: the body must decrypt to it.
    pub config_hash: [u8; 32],
    /// SHA-256 of the encrypted body.
    pub body_hash: [u8; 32],
    /// Each member's entry (the content key sealed to it), by key digest, as its SHA-256.
    pub entries: BTreeMap<KeyDigest, [u8; 32]>,
}

impl SignedKind for BlockHeader {
    const DOMAIN: &'static str = "config-block-header";
}

pub type SignedHeader = Signed<BlockHeader>;

/// A whole block: what the author makes, what every member that staged it keeps and serves.
/// A joining node's starting anchor is the one block without a body or entries.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigBlock {
    pub header: SignedHeader,
    /// The configuration, encrypted under the content key (ChaCha20-Poly1305, bound to the
    /// cluster and version).
    pub body: Vec<u8>,
    /// The content key sealed to each member, by key digest.
    pub entries: BTreeMap<KeyDigest, SealedBox>,
}

impl std::fmt::Debug for ConfigBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigBlock")
            .field("version", &self.header.body.version)
            .field("body_len", &self.body.len())
            .field("entries", &self.entries.len())
            .finish()
    }
}

/// Who a member trusts to author blocks: members of its active (and verified staged)
/// configurations, and the operators its active configuration lists.
#[derive(Debug, Clone, Default)]
pub struct TrustedAuthors {
    pub members: BTreeMap<NodeId, PublicIdentity>,
    pub operators: BTreeMap<NodeId, [u8; 32]>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("block is for cluster `{got}`, not this cluster")]
    WrongCluster { got: String },
    #[error("block author {0} is not a trusted member or operator")]
    UnknownAuthor(NodeId),
    #[error("block version {version} names author {claimed}, but {signer} signed it")]
    AuthorMismatch { version: Version, claimed: NodeId, signer: NodeId },
    #[error("block header signature does not verify")]
    BadSignature,
    #[error("the block has no entry for this member")]
    NoEntry,
    #[error("the block's entries are not exactly those its header lists")]
    EntriesMismatch,
    #[error("an entry does not match the hash in the signed header")]
    EntryHashMismatch,
    #[error("the body does not match the hash in the signed header")]
    BodyHashMismatch,
    #[error("the entry does not open: {0}")]
    Open(#[from] SealError),
    #[error("the body does not decrypt with the content key")]
    Body,
    #[error("the opened body is not a configuration: {0}")]
    Decode(String),
    #[error("the opened configuration does not match the header ({0})")]
    ContentMismatch(&'static str),
    #[error("invalid configuration: {0}")]
    Invalid(#[from] ConfigError),
    #[error("could not sign or encode the block: {0}")]
    Encode(String),
}

/// The context every entry and the body are bound to: cluster id and version, so neither
/// opens as part of another cluster or version.
fn seal_info(cluster_id: &str, version: &Version) -> Vec<u8> {
    let mut info = b"cohort config entry v2\0".to_vec();
    info.extend_from_slice(cluster_id.as_bytes());
    info.push(0);
    info.extend_from_slice(&version.counter.to_be_bytes());
    info.extend_from_slice(&version.author.0);
    info
}

/// A content key is used for one body only, so a fixed nonce never repeats under it.
const BODY_NONCE: [u8; 12] = [0; 12];

fn body_cipher(content_key: &[u8]) -> Result<ChaCha20Poly1305, BlockError> {
    if content_key.len() != 32 {
        return Err(BlockError::Body);
    }
    Ok(ChaCha20Poly1305::new(Key::from_slice(content_key)))
}

impl ConfigBlock {
    /// Encrypts `config` once, seals its key for each of its members, and signs the header as
    /// `author`.
    pub fn seal(
        config: &ClusterConfig,
        author: Author,
        author_keys: &NodeKeys,
        rng: &mut SeededRng,
    ) -> Result<ConfigBlock, BlockError> {
        config.validate()?;
        let plaintext = config.encode()?;
        let info = seal_info(&config.cluster_id, &config.version);
        let mut content_key = [0u8; 32];
        rng.fill_bytes(&mut content_key);
        let body = body_cipher(&content_key)?
            .encrypt(Nonce::from_slice(&BODY_NONCE), Payload { msg: &plaintext, aad: &info })
            .map_err(|_| BlockError::Encode("the body does not encrypt".into()))?;
        let mut entries = BTreeMap::new();
        for member in config.members.values() {
            let sealed = seal::seal(&member.identity, &info, b"", &content_key, rng)?;
            entries.insert(member.identity.key_digest(), sealed);
        }
        let header = BlockHeader {
            cluster_id: config.cluster_id.clone(),
            version: config.version,
            author,
            config_hash: config.hash()?,
            body_hash: Sha256::digest(&body).into(),
            entries: entries.iter().map(|(d, e)| (*d, e.digest())).collect(),
        };
        let header = Signed::sign(header, author_keys).map_err(|e| BlockError::Encode(e.to_string()))?;
        Ok(ConfigBlock { header, body, entries })
    }

    pub fn version(&self) -> Version {
        self.header.body.version
    }

    /// Whether this block lists `digest` among its recipients.
    pub fn lists(&self, digest: &KeyDigest) -> bool {
        self.header.body.entries.contains_key(digest)
    }

    /// Whether this block holds everything its header commits to: a body and exactly the listed
    /// entries, each matching its hash. Only a whole block is served.
    pub fn check_whole(&self) -> Result<(), BlockError> {
        let header = &self.header.body;
        let body_hash: [u8; 32] = Sha256::digest(&self.body).into();
        if body_hash != header.body_hash {
            return Err(BlockError::BodyHashMismatch);
        }
        if self.entries.len() != header.entries.len() {
            return Err(BlockError::EntriesMismatch);
        }
        for (digest, entry) in &self.entries {
            let expected = header.entries.get(digest).ok_or(BlockError::EntriesMismatch)?;
            if entry.digest() != *expected {
                return Err(BlockError::EntryHashMismatch);
            }
        }
        Ok(())
    }
}

/// Checks `header` alone: for this cluster, and signed by the trusted member or operator it
/// names as its author.
pub fn verify_header(
    cluster_id: &str,
    header: &SignedHeader,
    trusted: &TrustedAuthors,
) -> Result<(), BlockError> {
    let body = &header.body;
    if body.cluster_id != cluster_id {
        return Err(BlockError::WrongCluster { got: body.cluster_id.chars().take(64).collect() });
    }
    let signer = body.author.id();
    if body.version.author != signer {
        return Err(BlockError::AuthorMismatch {
            version: body.version,
            claimed: body.version.author,
            signer,
        });
    }
    match &body.author {
        Author::Member(id) => {
            let identity = trusted.members.get(id).ok_or(BlockError::UnknownAuthor(*id))?;
            header.verify(identity).map_err(|_| BlockError::BadSignature)?;
        }
        Author::Operator(key) => {
            if !trusted.operators.contains_key(&signer) {
                return Err(BlockError::UnknownAuthor(signer));
            }
            header.verify_with_signing_key(key).map_err(|_| BlockError::BadSignature)?;
        }
    }
    Ok(())
}

/// Verifies a whole `block` against `trusted` and opens it with `keys`. Returns the
/// configuration only if every check passes: cluster, author, signature, body and entry hashes,
/// decryption, content hash, version and cluster inside the configuration, and its bounds.
pub fn verify_and_open(
    cluster_id: &str,
    block: &ConfigBlock,
    keys: &NodeKeys,
    trusted: &TrustedAuthors,
) -> Result<ClusterConfig, BlockError> {
    verify_header(cluster_id, &block.header, trusted)?;
    let me = keys.public().key_digest();
    if !block.lists(&me) {
        return Err(BlockError::NoEntry);
    }
    block.check_whole()?;
    let body = &block.header.body;
    let entry = block.entries.get(&me).ok_or(BlockError::NoEntry)?;
    let info = seal_info(cluster_id, &body.version);
    let content_key = seal::open(keys, &info, b"", entry)?;
    let plaintext = body_cipher(&content_key)?
        .decrypt(Nonce::from_slice(&BODY_NONCE), Payload { msg: &block.body, aad: &info })
        .map_err(|_| BlockError::Body)?;
    let config: ClusterConfig =
        postcard::from_bytes(&plaintext).map_err(|e| BlockError::Decode(e.to_string()))?;
    if config.hash()? != body.config_hash {
        return Err(BlockError::ContentMismatch("configuration hash"));
    }
    if config.version != body.version {
        return Err(BlockError::ContentMismatch("version"));
    }
    if config.cluster_id != body.cluster_id {
        return Err(BlockError::ContentMismatch("cluster id"));
    }
    let digests: Vec<KeyDigest> = config.member_digests().collect();
    if digests.len() != body.entries.len() || !digests.iter().all(|d| body.entries.contains_key(d)) {
        return Err(BlockError::ContentMismatch("entries are not exactly the members"));
    }
    config.validate()?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::config::{MemberInfo, OperatorInfo};
    use crate::rng::seeded;

    struct Fixture {
        operator: NodeKeys,
        members: Vec<NodeKeys>,
        config: ClusterConfig,
        trusted: TrustedAuthors,
    }

    fn fixture() -> Fixture {
        let mut rng = seeded(7);
        let operator = NodeKeys::generate(&mut rng);
        let members: Vec<NodeKeys> = (0..3).map(|_| NodeKeys::generate(&mut rng)).collect();
        let op = OperatorInfo { name: "ops".into(), identity: operator.public() };
        let config = ClusterConfig {
            cluster_id: "c1".into(),
            version: Version { counter: 1, author: op.id() },
            members: members
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    let identity = k.public();
                    (
                        identity.node_id(),
                        MemberInfo { name: format!("m{i}"), identity, address: format!("m{i}") },
                    )
                })
                .collect(),
            operators: [(op.id(), op.clone())].into_iter().collect(),
            settings: [("k".to_owned(), "v".to_owned())].into_iter().collect(),
            sections: BTreeMap::new(),
            applied_requests: Vec::new(),
        };
        let trusted = TrustedAuthors {
            members: config.members.iter().map(|(id, m)| (*id, m.identity)).collect(),
            operators: [(op.id(), op.signing())].into_iter().collect(),
        };
        Fixture { operator, members, config, trusted }
    }

    fn genesis(f: &Fixture) -> ConfigBlock {
        let author = Author::Operator(f.operator.public().signing);
        ConfigBlock::seal(&f.config, author, &f.operator, &mut seeded(8)).expect("seals")
    }

    #[test]
    fn each_member_opens_the_whole_block_to_the_same_configuration() {
        let f = fixture();
        let block = genesis(&f);
        for keys in &f.members {
            let config = verify_and_open("c1", &block, keys, &f.trusted).expect("opens");
            assert_eq!(config, f.config);
        }
    }

    #[test]
    fn the_block_grows_by_one_small_entry_per_member_not_one_copy() {
        let mut f = fixture();
        f.config.settings.insert("big".into(), "x".repeat(100_000));
        let block = genesis(&f);
        let encoded = postcard::to_allocvec(&block).expect("encodes").len();
        assert!(encoded < 100_000 + 4096, "{encoded} bytes for 3 members");
    }

    #[test]
    fn a_member_cannot_open_another_members_entry() {
        let f = fixture();
        let block = genesis(&f);
        let theirs = block.entries.get(&f.members[1].public().key_digest()).expect("an entry");
        // Put in member 0's place, the header's hash refuses it; forced past that, HPKE refuses.
        let mut swapped = block.clone();
        swapped.entries.insert(f.members[0].public().key_digest(), theirs.clone());
        assert_eq!(
            verify_and_open("c1", &swapped, &f.members[0], &f.trusted),
            Err(BlockError::EntryHashMismatch)
        );
        let info = seal_info("c1", &f.config.version);
        assert_eq!(seal::open(&f.members[0], &info, b"", theirs), Err(SealError::Open));
    }

    #[test]
    fn tampered_entries_and_headers_are_rejected() {
        let f = fixture();
        let block = genesis(&f);
        let me = &f.members[0];
        let mut bad_entry = block.clone();
        bad_entry.entries.values_mut().for_each(|e| e.ciphertext[3] ^= 0x40);
        assert_eq!(verify_and_open("c1", &bad_entry, me, &f.trusted), Err(BlockError::EntryHashMismatch));
        let mut bad_body = block.clone();
        bad_body.body[0] ^= 1;
        assert_eq!(verify_and_open("c1", &bad_body, me, &f.trusted), Err(BlockError::BodyHashMismatch));
        let mut short = block.clone();
        short.entries.pop_last();
        assert_eq!(short.check_whole(), Err(BlockError::EntriesMismatch));
        let mut bad_header = block.clone();
        bad_header.header.body.config_hash[0] ^= 1;
        assert_eq!(verify_and_open("c1", &bad_header, me, &f.trusted), Err(BlockError::BadSignature));
        assert!(matches!(
            verify_and_open("other", &block, me, &f.trusted),
            Err(BlockError::WrongCluster { .. })
        ));
    }

    #[test]
    fn an_author_outside_the_trusted_set_is_rejected() {
        let f = fixture();
        let block = genesis(&f);
        let me = &f.members[0];
        let nobody = TrustedAuthors::default();
        assert!(matches!(verify_and_open("c1", &block, me, &nobody), Err(BlockError::UnknownAuthor(_))));
    }
}
