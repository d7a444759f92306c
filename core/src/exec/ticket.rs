//! Credentials, service tickets and authenticators. Owns their contents, the HPKE sealing of a
//! KDC-signed ticket to its host's key, and the AEAD sealing of an authenticator under the ticket's session
//! key. It never judges freshness or permission: the KDC and the exec daemon do, with the wall
//! clock the driver passes in.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand_core::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use super::task::Task;
use crate::identity::{NodeKeys, PublicIdentity};
use crate::rng::SeededRng;
use crate::seal::{self, SealError, SealedBox};
use crate::signed::{Signed, SignedKind};
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

impl SignedKind for TicketBody {
    const DOMAIN: &'static str = "exec-ticket";
}

impl Drop for TicketBody {
    fn drop(&mut self) {
        self.session_key.zeroize();
    }
}

/// A service ticket as it travels: the host it names and the sealed body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceTicket {
    pub host: String,
    pub sealed: SealedBox,
}

fn ticket_info(host: &str) -> Vec<u8> {
    let mut info = b"cohort service ticket v1\0".to_vec();
    info.extend_from_slice(host.as_bytes());
    info
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("ticket could not be sealed: {0}")]
    Seal(SealError),
    #[error("ticket does not open with this host's key (for another host, or altered)")]
    NotForThisHost,
    #[error("ticket is not signed by the KDC this host trusts (forged, or from another site)")]
    NotFromKdc,
    #[error("ticket does not decode")]
    Malformed,
    #[error("authenticator does not open with the ticket's session key")]
    BadAuthenticator,
}

impl ServiceTicket {
    /// Seals `body`, signed by the KDC, to `host`: only that host can read it, and it can tell
    /// that the KDC (and not whoever knows the host's public key) made it.
    pub fn seal(
        body: &TicketBody,
        host: &PublicIdentity,
        kdc: &NodeKeys,
        rng: &mut SeededRng,
    ) -> Result<Self, TicketError> {
        let signed = Signed::sign(body.clone(), kdc).map_err(|_| TicketError::Malformed)?;
        let mut plain = postcard::to_allocvec(&signed).map_err(|_| TicketError::Malformed)?;
        let sealed = seal::seal(host, &ticket_info(&body.host), b"", &plain, rng).map_err(TicketError::Seal);
        plain.zeroize();
        Ok(ServiceTicket { host: body.host.clone(), sealed: sealed? })
    }

    /// Opens the ticket with the host's keys and checks the KDC's signature; `host` is this
    /// host's own name.
    pub fn open(&self, keys: &NodeKeys, host: &str, kdc: &PublicIdentity) -> Result<TicketBody, TicketError> {
        let mut plain = seal::open(keys, &ticket_info(host), b"", &self.sealed)
            .map_err(|_| TicketError::NotForThisHost)?;
        let signed: Result<Signed<TicketBody>, _> = postcard::from_bytes(&plain);
        plain.zeroize();
        let signed = signed.map_err(|_| TicketError::Malformed)?;
        signed.verify(kdc).map_err(|_| TicketError::NotFromKdc)?;
        Ok(signed.body)
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
