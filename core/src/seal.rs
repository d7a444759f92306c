//! Per-recipient encryption: HPKE (RFC 9180) base mode, X25519-HKDF-SHA256 with
//! ChaCha20-Poly1305, to a node's X25519 key. Owns the suite choice and the [`SealedBox`] wire
//! form. The caller supplies `info` binding the context (cluster id and version, purpose),
//! so a box sealed for one context never opens in another. Randomness comes from the seeded rng.

use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::identity::{NodeKeys, PublicIdentity};
use crate::rng::SeededRng;

type Kem = X25519HkdfSha256;

/// An HPKE encapsulated key and ciphertext for one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedBox {
    pub encapped_key: [u8; 32],
    pub ciphertext: Vec<u8>,
}

impl SealedBox {
    /// SHA-256 over the encapsulated key and ciphertext: what a signed header commits to.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.encapped_key);
        h.update((self.ciphertext.len() as u64).to_be_bytes());
        h.update(&self.ciphertext);
        h.finalize().into()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("recipient's X25519 key is not usable for HPKE")]
    BadRecipientKey,
    #[error("sealing failed: {0}")]
    Seal(String),
    #[error("the box does not open with this node's key (not sealed for it, or altered)")]
    Open,
}

/// Seals `plaintext` so only `recipient` can open it, bound to `info` and `aad`.
pub fn seal(
    recipient: &PublicIdentity,
    info: &[u8],
    aad: &[u8],
    plaintext: &[u8],
    rng: &mut SeededRng,
) -> Result<SealedBox, SealError> {
    let pk = <Kem as hpke::Kem>::PublicKey::from_bytes(&recipient.agreement)
        .map_err(|_| SealError::BadRecipientKey)?;
    let (encapped, ciphertext) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, Kem, _>(
        &OpModeS::Base,
        &pk,
        info,
        plaintext,
        aad,
        rng,
    )
    .map_err(|e| SealError::Seal(e.to_string()))?;
    let mut encapped_key = [0u8; 32];
    encapped_key.copy_from_slice(&encapped.to_bytes());
    Ok(SealedBox { encapped_key, ciphertext })
}

/// Opens a box sealed to `keys` with the same `info` and `aad`.
pub fn open(keys: &NodeKeys, info: &[u8], aad: &[u8], sealed: &SealedBox) -> Result<Vec<u8>, SealError> {
    let secret = keys.agreement_secret();
    let sk = <Kem as hpke::Kem>::PrivateKey::from_bytes(&secret[..]).map_err(|_| SealError::Open)?;
    let encapped =
        <Kem as hpke::Kem>::EncappedKey::from_bytes(&sealed.encapped_key).map_err(|_| SealError::Open)?;
    hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, Kem>(
        &OpModeR::Base,
        &sk,
        &encapped,
        info,
        &sealed.ciphertext,
        aad,
    )
    .map_err(|_| SealError::Open)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::seeded;

    #[test]
    fn only_the_recipient_opens_and_only_in_the_same_context() {
        let mut rng = seeded(1);
        let alice = NodeKeys::generate(&mut rng);
        let bob = NodeKeys::generate(&mut rng);
        let sealed = seal(&alice.public(), b"ctx", b"aad", b"secret", &mut rng).expect("seals");
        assert_eq!(open(&alice, b"ctx", b"aad", &sealed).expect("opens"), b"secret");
        assert_eq!(open(&bob, b"ctx", b"aad", &sealed), Err(SealError::Open));
        assert_eq!(open(&alice, b"other", b"aad", &sealed), Err(SealError::Open));
        let mut tampered = sealed.clone();
        tampered.ciphertext[0] ^= 1;
        assert_eq!(open(&alice, b"ctx", b"aad", &tampered), Err(SealError::Open));
    }

    #[test]
    fn same_seed_same_box() {
        let keys = NodeKeys::generate(&mut seeded(2));
        let a = seal(&keys.public(), b"i", b"", b"x", &mut seeded(9)).expect("seals");
        let b = seal(&keys.public(), b"i", b"", b"x", &mut seeded(9)).expect("seals");
        assert_eq!(a, b);
    }
}
