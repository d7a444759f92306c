//! Credentials, service tickets and authenticators. Owns their contents, the [`TicketKey`] the KDC
//! and each host share, the AEAD sealing of a ticket under it, and the AEAD sealing of an
//! authenticator under the ticket's session key. It never judges freshness or permission: the KDC
//! and the exec daemon do, with the wall clock the driver passes in.
//!
//! A ticket is sealed as Kerberos seals it (RFC 4120 §5.3): under a long-term key only the KDC
//! and the host know, so that opening it proves both that it is for this host and that the KDC
//! made it. The key is X25519 between the KDC's agreement key and the host's, through HKDF bound
//! to both public keys, derived once per pair and kept. Sealing a ticket is then one
//! XChaCha20-Poly1305 pass rather than a signature and an HPKE seal (two X25519 at the KDC, one
//! and a signature check at the host) for every host of every run.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, XChaCha20Poly1305, XNonce};
use rand_core::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use super::task::Task;
use crate::identity::{NodeKeys, PublicIdentity};
use crate::rng::SeededRng;
use crate::signed::SignedKind;
use crate::time::WallClock;

/// The ticket-granting credential the KDC issues at login and the client keeps. It is bound to
/// the client's channel key: presented over any other channel it is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    pub principal: String,
    /// The X25519 static key of the client's channel.
    pub client_key: [u8; 32],
    pub issued: WallClock,
    pub expires: WallClock,
    pub id: [u8; 16],
}

impl SignedKind for Credential {
    const DOMAIN: &'static str = "exec-credential";
}

/// What a service ticket says, readable only by its host.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketBody {
    pub principal: String,
    pub host: String,
    pub issued: WallClock,
    pub expires: WallClock,
    pub session_key: [u8; 32],
}

impl std::fmt::Debug for TicketBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketBody")
            .field("principal", &self.principal)
            .field("host", &self.host)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

impl Drop for TicketBody {
    fn drop(&mut self) {
        self.session_key.zeroize();
    }
}

/// The key the KDC and one host share, as a Kerberos service key is shared: only the two of them
/// can derive it. Wiped when dropped; its Debug output never shows it.
pub struct TicketKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketKey(..)")
    }
}

impl TicketKey {
    /// The KDC's side: its keys and the host's public identity.
    pub fn for_kdc(kdc: &NodeKeys, host: &PublicIdentity) -> Result<TicketKey, TicketError> {
        Self::derive(kdc, host, &kdc.public(), host)
    }

    /// The host's side: its keys and the public identity of the KDC it trusts.
    pub fn for_host(host: &NodeKeys, kdc: &PublicIdentity) -> Result<TicketKey, TicketError> {
        Self::derive(host, kdc, kdc, &host.public())
    }

    fn derive(
        own: &NodeKeys,
        peer: &PublicIdentity,
        kdc: &PublicIdentity,
        host: &PublicIdentity,
    ) -> Result<TicketKey, TicketError> {
        let shared = own.agree(peer).ok_or(TicketError::UnusableKey)?;
        // Both public keys, in one fixed order, so the key is this pair's and no other's.
        let mut info = b"cohort ticket key v1\0".to_vec();
        info.extend_from_slice(&kdc.agreement);
        info.extend_from_slice(&host.agreement);
        let mut key = Zeroizing::new([0u8; 32]);
        hkdf::Hkdf::<Sha256>::new(None, &shared[..])
            .expand(&info, &mut key[..])
            .map_err(|_| TicketError::UnusableKey)?;
        Ok(TicketKey(key))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(Key::from_slice(&self.0[..]))
    }
}

/// A service ticket as it travels: the host it names and the body, sealed under the key the
/// KDC and that host share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceTicket {
    pub host: String,
    pub nonce: [u8; 24],
    pub ciphertext: Vec<u8>,
}

/// What a ticket's seal is bound to besides its key: its purpose and the host it names.
fn ticket_aad(host: &str) -> Vec<u8> {
    let mut aad = b"cohort service ticket v2\0".to_vec();
    aad.extend_from_slice(host.as_bytes());
    aad
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("the KDC's or the host's X25519 key is a low-order point; no ticket key can be made with it")]
    UnusableKey,
    #[error(
        "ticket does not open with the key this host shares with its KDC (forged, for another host, \
         from another site, or altered)"
    )]
    NotForThisHost,
    #[error("ticket does not decode")]
    Malformed,
    #[error("authenticator does not open with the ticket's session key")]
    BadAuthenticator,
}

impl ServiceTicket {
    /// Seals `body` under `key`, the key the KDC shares with `body.host`.
    pub fn seal(body: &TicketBody, key: &TicketKey, rng: &mut SeededRng) -> Result<Self, TicketError> {
        let plain = Zeroizing::new(postcard::to_allocvec(body).map_err(|_| TicketError::Malformed)?);
        let mut nonce = [0u8; 24];
        rng.fill_bytes(&mut nonce);
        let aad = ticket_aad(&body.host);
        let ciphertext = key
            .cipher()
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: &plain, aad: &aad })
            .map_err(|_| TicketError::Malformed)?;
        Ok(ServiceTicket { host: body.host.clone(), nonce, ciphertext })
    }

    /// Opens the ticket with the key this host shares with its KDC; `host` is this host's own
    /// name. It opens only if the KDC sealed it, for this host, unaltered.
    pub fn open(&self, key: &TicketKey, host: &str) -> Result<TicketBody, TicketError> {
        let aad = ticket_aad(host);
        let plain = Zeroizing::new(
            key.cipher()
                .decrypt(XNonce::from_slice(&self.nonce), Payload { msg: &self.ciphertext, aad: &aad })
                .map_err(|_| TicketError::NotForThisHost)?,
        );
        postcard::from_bytes(&plain).map_err(|_| TicketError::Malformed)
    }
}

/// Proof that the sender holds the ticket's session key, now, for this one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authenticator {
    pub principal: String,
    pub timestamp: WallClock,
    pub nonce: [u8; 16],
    /// SHA-256 of the request it authenticates (command, run-as user, host).
    pub request_digest: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedAuthenticator {
    pub nonce: [u8; 12],
    pub ciphertext: Vec<u8>,
}

impl Authenticator {
    pub fn seal(
        &self,
        session_key: &[u8; 32],
        host: &str,
        rng: &mut SeededRng,
    ) -> Result<SealedAuthenticator, TicketError> {
        let cipher = ChaCha20Poly1305::new(Key::from_slice(session_key));
        let mut nonce = [0u8; 12];
        rng.fill_bytes(&mut nonce);
        let plain = postcard::to_allocvec(self).map_err(|_| TicketError::Malformed)?;
        let ciphertext = cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: &plain, aad: host.as_bytes() })
            .map_err(|_| TicketError::BadAuthenticator)?;
        Ok(SealedAuthenticator { nonce, ciphertext })
    }

    pub fn open(
        sealed: &SealedAuthenticator,
        session_key: &[u8; 32],
        host: &str,
    ) -> Result<Authenticator, TicketError> {
        let cipher = ChaCha20Poly1305::new(Key::from_slice(session_key));
        let plain = cipher
            .decrypt(
                Nonce::from_slice(&sealed.nonce),
                Payload { msg: &sealed.ciphertext, aad: host.as_bytes() },
            )
            .map_err(|_| TicketError::BadAuthenticator)?;
        postcard::from_bytes(&plain).map_err(|_| TicketError::Malformed)
    }
}

/// The digest an authenticator commits to: what the host does (the command, what it reads on its
/// standard input and the variables passed to it, or each file with its path and mode), as whom,
/// and where. A gateway can therefore add, drop or change no variable.
pub fn request_digest(host: &str, run_as: &str, task: &Task) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"cohort-request-v3");
    for part in [host, run_as] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    task.hash_into(&mut h);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::seeded;

    fn body(host: &str) -> TicketBody {
        TicketBody {
            principal: "alice".into(),
            host: host.into(),
            issued: WallClock(1_000),
            expires: WallClock(301_000),
            session_key: [9; 32],
        }
    }

    #[test]
    fn a_ticket_opens_only_at_its_host_and_only_if_its_kdc_sealed_it_unaltered() {
        let mut rng = seeded(3);
        let (kdc, h01, h02, other_kdc) = (
            NodeKeys::generate(&mut rng),
            NodeKeys::generate(&mut rng),
            NodeKeys::generate(&mut rng),
            NodeKeys::generate(&mut rng),
        );
        let at_kdc = TicketKey::for_kdc(&kdc, &h01.public()).expect("a key");
        let ticket = ServiceTicket::seal(&body("h01"), &at_kdc, &mut rng).expect("sealed");

        let at_h01 = TicketKey::for_host(&h01, &kdc.public()).expect("a key");
        let opened = ticket.open(&at_h01, "h01").expect("h01 opens its own ticket");
        assert_eq!((opened.principal.as_str(), opened.session_key), ("alice", [9; 32]));
        // Another host, even under its own name or h01's, cannot.
        let at_h02 = TicketKey::for_host(&h02, &kdc.public()).expect("a key");
        assert_eq!(ticket.open(&at_h02, "h02"), Err(TicketError::NotForThisHost));
        assert_eq!(ticket.open(&at_h02, "h01"), Err(TicketError::NotForThisHost));
        // Nor does h01 open it as if it were another host's name.
        assert_eq!(ticket.open(&at_h01, "h02"), Err(TicketError::NotForThisHost));
        // A ticket sealed by another KDC for h01 does not open at h01.
        let forged_key = TicketKey::for_kdc(&other_kdc, &h01.public()).expect("a key");
        let forged = ServiceTicket::seal(&body("h01"), &forged_key, &mut rng).expect("sealed");
        assert_eq!(forged.open(&at_h01, "h01"), Err(TicketError::NotForThisHost));
        // One flipped bit anywhere in the sealed body and it does not open.
        for i in 0..ticket.ciphertext.len() {
            let mut altered = ticket.clone();
            altered.ciphertext[i] ^= 1;
            assert_eq!(altered.open(&at_h01, "h01"), Err(TicketError::NotForThisHost), "byte {i}");
        }
        let mut renonced = ticket.clone();
        renonced.nonce[0] ^= 1;
        assert_eq!(renonced.open(&at_h01, "h01"), Err(TicketError::NotForThisHost));
    }

    #[test]
    fn no_ticket_key_is_made_with_a_low_order_public_key() {
        let kdc = NodeKeys::generate(&mut seeded(4));
        // The identity point: X25519 with it is all zeros whatever the secret.
        let weak = PublicIdentity { signing: kdc.public().signing, agreement: [0; 32] };
        assert!(matches!(TicketKey::for_kdc(&kdc, &weak), Err(TicketError::UnusableKey)));
        assert!(matches!(TicketKey::for_host(&kdc, &weak), Err(TicketError::UnusableKey)));
    }

    #[test]
    fn the_request_digest_covers_standard_input_and_keeps_it_apart_from_argv() {
        let run = |argv: &[&str], stdin: &[u8]| Task::Run {
            argv: argv.iter().map(|a| (*a).to_owned()).collect(),
            stdin: stdin.to_vec(),
            env: Vec::new(),
        };
        let plain = request_digest("h01", "alice", &run(&["cat"], b""));
        assert_ne!(plain, request_digest("h01", "alice", &run(&["cat"], b"hello")));
        // An argument cannot stand in for input, nor input for an argument.
        assert_ne!(
            request_digest("h01", "alice", &run(&["cat", "hello"], b"")),
            request_digest("h01", "alice", &run(&["cat"], b"hello"))
        );
        // Nor the host for the user.
        assert_ne!(
            request_digest("h01", "alice", &run(&["cat"], b"")),
            request_digest("h01a", "lice", &run(&["cat"], b""))
        );
    }

    #[test]
    fn the_request_digest_covers_every_passed_variable() {
        let run = |env: &[(&str, &str)]| Task::Run {
            argv: vec!["/usr/bin/env".to_owned()],
            stdin: Vec::new(),
            env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        };
        let lang = request_digest("h01", "alice", &run(&[("LANG", "C")]));
        assert_ne!(lang, request_digest("h01", "alice", &run(&[])));
        assert_ne!(lang, request_digest("h01", "alice", &run(&[("LANG", "C"), ("LD_PRELOAD", "/x.so")])));
        assert_ne!(lang, request_digest("h01", "alice", &run(&[("LANG", "POSIX")])));
        assert_ne!(lang, request_digest("h01", "alice", &run(&[("LAN", "GC")])));
    }
}
