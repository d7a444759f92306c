//! Configuration blocks (rule 4): a header signed by its author, and one HPKE-sealed copy of the
//! configuration per member, located by the member's key digest and committed to by a hash in the
//! header. Owns building a block and verifying and opening one member's entry. It never opens an
//! entry whose header is not signed by a trusted author, and never returns a configuration that
//! differs from what the header commits to.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
    /// SHA-256 of the configuration's canonical encoding: every entry must open to it.
    pub config_hash: [u8; 32],
    /// Each member's entry, by key digest, as the SHA-256 of the sealed box.
    pub entries: BTreeMap<KeyDigest, [u8; 32]>,
}

impl SignedKind for BlockHeader {
    const DOMAIN: &'static str = "config-block-header";
}

pub type SignedHeader = Signed<BlockHeader>;

/// A block as a member holds it: the header and the entries it has. The author holds every
/// entry (and can serve fetches); any other member holds only its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigBlock {
    pub header: SignedHeader,
    pub entries: BTreeMap<KeyDigest, SealedBox>,
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
    #[error("the entry does not match the hash in the signed header")]
    EntryHashMismatch,
    #[error("the entry does not open: {0}")]
    Open(#[from] SealError),
    #[error("the opened entry is not a configuration: {0}")]
    Decode(String),
    #[error("the opened configuration does not match the header ({0})")]
    ContentMismatch(&'static str),
    #[error("invalid configuration: {0}")]
    Invalid(#[from] ConfigError),
    #[error("could not sign or encode the block: {0}")]
    Encode(String),
}

/// The HPKE `info` for a block's entries: binds cluster id and version, so an entry never opens
/// as part of another cluster or version.
fn seal_info(cluster_id: &str, version: &Version) -> Vec<u8> {
    let mut info = b"cohort config entry v1\0".to_vec();
    info.extend_from_slice(cluster_id.as_bytes());
    info.push(0);
    info.extend_from_slice(&version.counter.to_be_bytes());
    info.extend_from_slice(&version.author.0);
    info
}

impl ConfigBlock {
    /// Seals `config` for each of its members and signs the header as `author`.
    pub fn seal(
        config: &ClusterConfig,
        author: Author,
        author_keys: &NodeKeys,
        rng: &mut SeededRng,
    ) -> Result<ConfigBlock, BlockError> {
        config.validate()?;
        let plaintext = config.encode()?;
        let info = seal_info(&config.cluster_id, &config.version);
        let mut entries = BTreeMap::new();
        for member in config.members.values() {
            let sealed = seal::seal(&member.identity, &info, b"", &plaintext, rng)?;
            entries.insert(member.identity.key_digest(), sealed);
        }
        let header = BlockHeader {
            cluster_id: config.cluster_id.clone(),
            version: config.version,
            author,
            config_hash: config.hash()?,
            entries: entries.iter().map(|(d, e)| (*d, e.digest())).collect(),
        };
        let header = Signed::sign(header, author_keys).map_err(|e| BlockError::Encode(e.to_string()))?;
        Ok(ConfigBlock { header, entries })
    }

    pub fn version(&self) -> Version {
        self.header.body.version
    }

    /// The header plus only `digest`'s entry: all a member may fetch.
    pub fn entry_for(&self, digest: &KeyDigest) -> Option<(SignedHeader, SealedBox)> {
        self.entries.get(digest).map(|e| (self.header.clone(), e.clone()))
    }

    /// A copy holding only `digest`'s entry.
    pub fn only_entry(&self, digest: &KeyDigest) -> Option<ConfigBlock> {
        let (header, entry) = self.entry_for(digest)?;
        Some(ConfigBlock { header, entries: [(*digest, entry)].into_iter().collect() })
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

/// Verifies `header` against `trusted` and opens `entry` with `keys`. Returns the configuration
/// only if every check passes: cluster, author, signature, entry hash, decryption, content hash,
/// version and cluster inside the configuration, and its bounds.
pub fn verify_and_open(
    cluster_id: &str,
    header: &SignedHeader,
    entry: &SealedBox,
    keys: &NodeKeys,
    trusted: &TrustedAuthors,
) -> Result<ClusterConfig, BlockError> {
    verify_header(cluster_id, header, trusted)?;
    let body = &header.body;
    let me = keys.public().key_digest();
    let expected = body.entries.get(&me).ok_or(BlockError::NoEntry)?;
    if entry.digest() != *expected {
        return Err(BlockError::EntryHashMismatch);
    }
    let plaintext = seal::open(keys, &seal_info(cluster_id, &body.version), b"", entry)?;
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
    fn each_member_opens_its_own_entry_to_the_same_configuration() {
        let f = fixture();
        let block = genesis(&f);
        for keys in &f.members {
            let (header, entry) = block.entry_for(&keys.public().key_digest()).expect("an entry");
            let config = verify_and_open("c1", &header, &entry, keys, &f.trusted).expect("opens");
            assert_eq!(config, f.config);
        }
    }

    #[test]
    fn a_member_cannot_open_another_members_entry() {
        let f = fixture();
        let block = genesis(&f);
        let (header, theirs) = block.entry_for(&f.members[1].public().key_digest()).expect("an entry");
        // Presented as member 0's entry, the hash check fails; forced past it, HPKE refuses.
        assert_eq!(
            verify_and_open("c1", &header, &theirs, &f.members[0], &f.trusted),
            Err(BlockError::EntryHashMismatch)
        );
        let info = seal_info("c1", &f.config.version);
        assert_eq!(seal::open(&f.members[0], &info, b"", &theirs), Err(SealError::Open));
    }

    #[test]
    fn tampered_entries_and_headers_are_rejected() {
        let f = fixture();
        let block = genesis(&f);
        let me = &f.members[0];
        let (header, entry) = block.entry_for(&me.public().key_digest()).expect("an entry");
        let mut bad_entry = entry.clone();
        bad_entry.ciphertext[3] ^= 0x40;
        assert_eq!(
            verify_and_open("c1", &header, &bad_entry, me, &f.trusted),
            Err(BlockError::EntryHashMismatch)
        );
        let mut bad_header = header.clone();
        bad_header.body.config_hash[0] ^= 1;
        assert_eq!(verify_and_open("c1", &bad_header, &entry, me, &f.trusted), Err(BlockError::BadSignature));
        assert!(matches!(
            verify_and_open("other", &header, &entry, me, &f.trusted),
            Err(BlockError::WrongCluster { .. })
        ));
    }

    #[test]
    fn an_author_outside_the_trusted_set_is_rejected() {
        let f = fixture();
        let block = genesis(&f);
        let me = &f.members[0];
        let (header, entry) = block.entry_for(&me.public().key_digest()).expect("an entry");
        let nobody = TrustedAuthors::default();
        assert!(matches!(
            verify_and_open("c1", &header, &entry, me, &nobody),
            Err(BlockError::UnknownAuthor(_))
        ));
    }
}
