//! Signed values: Ed25519 over a domain-separated canonical encoding of the value without its
//! signature. Owns the signing-bytes layout and the [`Signature`] wire form. It never accepts a
//! signature without checking it against a key the caller chose to trust.

use core::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::identity::{NodeKeys, PublicIdentity, SignatureError, Verifier};

/// An Ed25519 signature (64 bytes; serde has no derive for arrays that long).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}…)", hex::encode(&self.0[..6]))
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Signature;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 signature bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Signature, E> {
                let bytes: [u8; 64] = v.try_into().map_err(|_| E::invalid_length(v.len(), &self))?;
                Ok(Signature(bytes))
            }
        }
        d.deserialize_bytes(Visitor)
    }
}

/// A value and its author's signature over `signing_bytes(DOMAIN, value)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed<T> {
    pub body: T,
    pub signature: Signature,
}

/// Kinds of signed value: the domain tag keeps a signature on one kind from verifying as another.
pub trait SignedKind: Serialize {
    const DOMAIN: &'static str;
}

/// The bytes a signature covers: a fixed prefix, the domain, then the postcard encoding.
pub fn signing_bytes<T: SignedKind>(body: &T) -> Result<Vec<u8>, postcard::Error> {
    let mut out = b"cohort-signed-v1\0".to_vec();
    out.extend_from_slice(T::DOMAIN.as_bytes());
    out.push(0);
    postcard::to_extend(body, out)
}

impl<T: SignedKind> Signed<T> {
    pub fn sign(body: T, keys: &NodeKeys) -> Result<Signed<T>, postcard::Error> {
        let signature = Signature(keys.sign(&signing_bytes(&body)?));
        Ok(Signed { body, signature })
    }

    /// Checks the signature against `signer`.
    pub fn verify(&self, signer: &PublicIdentity) -> Result<&T, SignatureError> {
        let bytes = signing_bytes(&self.body).map_err(|_| SignatureError::Invalid)?;
        signer.verify(&bytes, &self.signature.0)?;
        Ok(&self.body)
    }

    /// Checks the signature against a signer's key decoded beforehand.
    pub fn verify_by(&self, verifier: &Verifier) -> Result<&T, SignatureError> {
        let bytes = signing_bytes(&self.body).map_err(|_| SignatureError::Invalid)?;
        verifier.verify(&bytes, &self.signature.0)?;
        Ok(&self.body)
    }

    /// SHA-256 of the bytes the signature covers: what names one signed request, to know it when
    /// it comes again (the same body, however it was signed).
    pub fn body_digest(&self) -> Result<[u8; 32], postcard::Error> {
        Ok(Sha256::digest(signing_bytes(&self.body)?).into())
    }

    /// Checks the signature against a bare Ed25519 key (operators have no X25519 key on file).
    pub fn verify_with_signing_key(&self, signing: &[u8; 32]) -> Result<&T, SignatureError> {
        let signer = PublicIdentity { signing: *signing, agreement: [0; 32] };
        self.verify(&signer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::seeded;

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    struct Note(u32);
    impl SignedKind for Note {
        const DOMAIN: &'static str = "test-note";
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    struct Other(u32);
    impl SignedKind for Other {
        const DOMAIN: &'static str = "test-other";
    }

    #[test]
    fn a_signature_verifies_only_for_its_signer_body_and_domain() {
        let alice = NodeKeys::generate(&mut seeded(1));
        let bob = NodeKeys::generate(&mut seeded(2));
        let signed = Signed::sign(Note(7), &alice).expect("signs");
        assert!(signed.verify(&alice.public()).is_ok());
        assert!(signed.verify(&bob.public()).is_err());
        let mut altered = signed.clone();
        altered.body = Note(8);
        assert!(altered.verify(&alice.public()).is_err());
        let cross = Signed { body: Other(7), signature: signed.signature };
        assert!(cross.verify(&alice.public()).is_err(), "domain separation");
    }

    #[test]
    fn signatures_round_trip_through_the_wire() {
        let keys = NodeKeys::generate(&mut seeded(3));
        let signed = Signed::sign(Note(1), &keys).expect("signs");
        let bytes = crate::wire::encode(&signed).expect("encodes");
        let back: Signed<Note> = crate::wire::decode(&bytes).expect("decodes");
        assert_eq!(back, signed);
    }
}
