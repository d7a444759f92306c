//! Node identity. Owns the node's key pair (Ed25519 for signatures; X25519 for Noise, HPKE and
//! the key the KDC shares with each host), the [`NodeId`] and [`KeyDigest`] derived from them,
//! and the versioned text encoding of a key file. It never reads or writes the file itself (the
//! driver does, and enforces its permissions) and never prints a secret.

use core::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey as X25519Public, StaticSecret};
use zeroize::Zeroizing;

/// A node's name on the wire: the first 16 bytes of SHA-256 of its Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub [u8; 16]);

impl NodeId {
    pub fn of_signing_key(key: &[u8; 32]) -> NodeId {
        let digest = Sha256::digest(key);
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        NodeId(id)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.to_hex())
    }
}

/// The source's "secure representation" of a member's key: SHA-256 of its X25519 public key.
/// Used to locate a member's sealed entry and to name recipients in heartbeats.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KeyDigest(pub [u8; 32]);

impl KeyDigest {
    pub fn of_agreement_key(key: &[u8; 32]) -> KeyDigest {
        KeyDigest(Sha256::digest(key).into())
    }
}

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyDigest({})", hex::encode(&self.0[..8]))
    }
}

/// What others know of a node: its two public keys.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PublicIdentity {
    /// Ed25519 verifying key.
    pub signing: [u8; 32],
    /// X25519 public key: the Noise static key and the HPKE recipient key.
    pub agreement: [u8; 32],
}

impl PublicIdentity {
    pub fn node_id(&self) -> NodeId {
        NodeId::of_signing_key(&self.signing)
    }

    pub fn key_digest(&self) -> KeyDigest {
        KeyDigest::of_agreement_key(&self.agreement)
    }

    /// Checks an Ed25519 signature by this identity (strict verification: no malleable forms).
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> Result<(), SignatureError> {
        self.verifier()?.verify(message, signature)
    }

    /// This identity's signing key decoded, for checking many of its signatures: decoding a
    /// point costs about a tenth of a verification.
    pub fn verifier(&self) -> Result<Verifier, SignatureError> {
        VerifyingKey::from_bytes(&self.signing).map(Verifier).map_err(|_| SignatureError::BadKey)
    }
}

/// An identity's Ed25519 key, decoded once (see [`PublicIdentity::verifier`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verifier(VerifyingKey);

impl Verifier {
    /// Checks an Ed25519 signature (strict verification: no malleable forms).
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> Result<(), SignatureError> {
        self.0.verify_strict(message, &Signature::from_bytes(signature)).map_err(|_| SignatureError::Invalid)
    }
}

impl fmt::Debug for PublicIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicIdentity({})", self.node_id())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signer's Ed25519 public key is not a valid curve point")]
    BadKey,
    #[error("the signature does not verify against the signer's key")]
    Invalid,
}

/// A node's secret keys. Debug output never shows them.
#[derive(Clone)]
pub struct NodeKeys {
    signing: SigningKey,
    agreement: StaticSecret,
}

impl NodeKeys {
    /// Fresh keys from the caller's rng (seeded by the driver).
    pub fn generate(rng: &mut impl CryptoRngCore) -> NodeKeys {
        let signing = SigningKey::generate(rng);
        let agreement = StaticSecret::random_from_rng(rng);
        NodeKeys { signing, agreement }
    }

    pub fn from_secrets(signing: [u8; 32], agreement: [u8; 32]) -> NodeKeys {
        NodeKeys { signing: SigningKey::from_bytes(&signing), agreement: StaticSecret::from(agreement) }
    }

    pub fn public(&self) -> PublicIdentity {
        PublicIdentity {
            signing: self.signing.verifying_key().to_bytes(),
            agreement: X25519Public::from(&self.agreement).to_bytes(),
        }
    }

    pub fn node_id(&self) -> NodeId {
        self.public().node_id()
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    /// The X25519 secret, for Noise and HPKE. Wrapped so the copy is wiped when dropped.
    pub fn agreement_secret(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.agreement.to_bytes())
    }

    /// X25519 between this node's agreement secret and `peer`'s public key, for a key two nodes
    /// share without a message (the KDC and a host, for tickets). `None` when `peer` is a
    /// low-order point, which would make the result known to anyone.
    pub fn agree(&self, peer: &PublicIdentity) -> Option<Zeroizing<[u8; 32]>> {
        let shared = self.agreement.diffie_hellman(&X25519Public::from(peer.agreement));
        shared.was_contributory().then(|| Zeroizing::new(shared.to_bytes()))
    }

    /// The key file's text. Holds secrets: the caller writes it with mode 0600.
    pub fn to_key_file(&self) -> Zeroizing<String> {
        let signing = Zeroizing::new(hex::encode(self.signing.to_bytes()));
        let agreement = Zeroizing::new(hex::encode(self.agreement.to_bytes()));
        Zeroizing::new(format!(
            "# cohort node key: secret. Keep it mode 0600, owned by the node's user.\n\
             {KEY_FILE_MAGIC} {KEY_FILE_VERSION}\n\
             node-id {}\n\
             ed25519-secret {}\n\
             x25519-secret {}\n",
            self.node_id(),
            signing.as_str(),
            agreement.as_str(),
        ))
    }

    /// Parses a key file's text. Every line is checked; the recorded node id must match the keys.
    pub fn from_key_file(text: &str) -> Result<NodeKeys, KeyFileError> {
        if text.len() > MAX_KEY_FILE_LEN {
            return Err(KeyFileError::TooLarge { len: text.len() });
        }
        let mut version = None;
        let mut node_id = None;
        let mut signing = None;
        let mut agreement = None;
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (field, value) = line.split_once(' ').ok_or(KeyFileError::Malformed { line: line_no })?;
            let value = value.trim();
            let slot = match field {
                KEY_FILE_MAGIC => &mut version,
                "node-id" => &mut node_id,
                "ed25519-secret" => &mut signing,
                "x25519-secret" => &mut agreement,
                _ => return Err(KeyFileError::UnknownField { line: line_no, field: field.to_owned() }),
            };
            if slot.replace(value).is_some() {
                return Err(KeyFileError::DuplicateField { line: line_no });
            }
        }
        match version {
            None => return Err(KeyFileError::NotAKeyFile),
            Some(v) if v == KEY_FILE_VERSION => {}
            Some(v) => return Err(KeyFileError::UnsupportedVersion(v.to_owned())),
        }
        let signing = decode_secret(signing, "ed25519-secret")?;
        let agreement = decode_secret(agreement, "x25519-secret")?;
        let keys = NodeKeys::from_secrets(*signing, *agreement);
        let recorded = node_id.ok_or(KeyFileError::MissingField("node-id"))?;
        if recorded != keys.node_id().to_hex() {
            return Err(KeyFileError::NodeIdMismatch);
        }
        Ok(keys)
    }
}

impl fmt::Debug for NodeKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeKeys({}, secrets hidden)", self.node_id())
    }
}

const KEY_FILE_MAGIC: &str = "cohort-key";
const KEY_FILE_VERSION: &str = "v1";
/// A real key file is under 300 bytes; anything far larger is not one.
const MAX_KEY_FILE_LEN: usize = 4096;

fn decode_secret(value: Option<&str>, field: &'static str) -> Result<Zeroizing<[u8; 32]>, KeyFileError> {
    let value = value.ok_or(KeyFileError::MissingField(field))?;
    let mut out = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(value, &mut *out).map_err(|_| KeyFileError::BadSecret(field))?;
    Ok(out)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFileError {
    #[error("not a cohort key file (no `cohort-key` line); create one with `cohort keygen --out FILE`")]
    NotAKeyFile,
    #[error("key file version {0} is not supported by this cohort (it reads v1)")]
    UnsupportedVersion(String),
    #[error("key file line {line} is not `field value`")]
    Malformed { line: usize },
    #[error("key file line {line} has unknown field `{field}`")]
    UnknownField { line: usize, field: String },
    #[error("key file line {line} repeats a field")]
    DuplicateField { line: usize },
    #[error("key file lacks the `{0}` line")]
    MissingField(&'static str),
    #[error("key file field `{0}` is not 64 hex digits")]
    BadSecret(&'static str),
    #[error("key file is damaged: its node-id does not match its keys")]
    NodeIdMismatch,
    #[error("key file is {len} bytes, far larger than any cohort key file")]
    TooLarge { len: usize },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::seeded;

    #[test]
    fn key_file_round_trips() {
        let keys = NodeKeys::generate(&mut seeded(1));
        let back = NodeKeys::from_key_file(&keys.to_key_file()).expect("own key file parses");
        assert_eq!(back.public(), keys.public());
    }

    #[test]
    fn node_id_is_the_sha256_prefix_of_the_signing_key() {
        let keys = NodeKeys::generate(&mut seeded(2));
        let public = keys.public();
        let digest = Sha256::digest(public.signing);
        assert_eq!(public.node_id().0[..], digest[..16]);
        assert_eq!(public.key_digest().0[..], Sha256::digest(public.agreement)[..]);
    }

    #[test]
    fn a_damaged_key_file_is_refused_with_the_reason() {
        let text = NodeKeys::generate(&mut seeded(3)).to_key_file();
        let tampered = text.replace("node-id ", "node-id 00");
        assert_eq!(NodeKeys::from_key_file(&tampered).unwrap_err(), KeyFileError::NodeIdMismatch);
        let unknown = format!("{}extra 1\n", text.as_str());
        assert!(matches!(NodeKeys::from_key_file(&unknown), Err(KeyFileError::UnknownField { line: 6, .. })));
        assert_eq!(NodeKeys::from_key_file("hello").unwrap_err(), KeyFileError::Malformed { line: 1 });
    }

    #[test]
    fn signatures_verify_only_for_the_signed_message() {
        let keys = NodeKeys::generate(&mut seeded(4));
        let sig = keys.sign(b"status");
        assert_eq!(keys.public().verify(b"status", &sig), Ok(()));
        assert_eq!(keys.public().verify(b"statuz", &sig), Err(SignatureError::Invalid));
    }

    #[test]
    fn debug_never_shows_secrets() {
        let keys = NodeKeys::generate(&mut seeded(5));
        let secret_hex = hex::encode(keys.agreement_secret().as_slice());
        assert!(!format!("{keys:?}").contains(&secret_hex));
    }
}
