//! What the browser holds between requests, so the gateway holds nothing (the seed's "encoded
//! credential"): the KDC's credential, sealed and authenticated under a key the gateway derives
//! from its own node key (a restart derives the same key, so nothing is lost; no session table),
//! and the CSRF token each form must bring back, derived from the credential it goes with. Owns
//! the cookie's format and checks; it never decides what the credential allows.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, Mac};
use rand_core::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::exec::ticket::Credential;
use crate::identity::NodeKeys;
use crate::rng::SeededRng;
use crate::signed::Signed;
use crate::time::WallClock;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "cohort_session";
/// The cookie that ties a login form to the browser it was sent to.
pub const LOGIN_COOKIE: &str = "cohort_login";
/// A cookie larger than this is refused before it is decoded.
const MAX_COOKIE: usize = 4096;
const AAD: &[u8] = b"cohort web session v1";

/// Why a session cookie was not accepted; each sends the browser back to the login form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CookieError {
    #[error("your session cookie could not be read (altered, or sealed by another gateway); log in again")]
    Tampered,
    #[error("your session has expired; log in again")]
    Expired,
    #[error("this session was logged out; log in again")]
    LoggedOut,
}

impl CookieError {
    /// The word the login page is sent (`/login?why=`) to say which it was.
    pub fn why(&self) -> &'static str {
        match self {
            CookieError::Tampered => "tampered",
            CookieError::Expired => "expired",
            CookieError::LoggedOut => "logged-out",
        }
    }
}

/// The keys the console seals cookies and makes CSRF tokens with.
pub struct ConsoleKeys {
    cookie: Zeroizing<[u8; 32]>,
    csrf: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for ConsoleKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConsoleKeys(..)")
    }
}

impl ConsoleKeys {
    /// Derived from the gateway's node key (HKDF-SHA256), one key per use.
    pub fn derive(keys: &NodeKeys) -> ConsoleKeys {
        let secret = keys.agreement_secret();
        let kdf = hkdf::Hkdf::<Sha256>::new(Some(&keys.node_id().0), secret.as_ref());
        let mut cookie = Zeroizing::new([0u8; 32]);
        let mut csrf = Zeroizing::new([0u8; 32]);
        kdf.expand(b"cohort web console: session cookie", cookie.as_mut())
            .expect("32 bytes is a valid length");
        kdf.expand(b"cohort web console: csrf token", csrf.as_mut()).expect("32 bytes is a valid length");
        ConsoleKeys { cookie, csrf }
    }

    /// The credential sealed for the browser: base64url of nonce and ciphertext.
    pub fn seal(&self, credential: &Signed<Credential>, rng: &mut SeededRng) -> String {
        let plain = Zeroizing::new(postcard::to_allocvec(credential).expect("a credential encodes"));
        let mut nonce = [0u8; 12];
        rng.fill_bytes(&mut nonce);
        let cipher = ChaCha20Poly1305::new(Key::from_slice(self.cookie.as_ref()));
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: &plain, aad: AAD })
            .expect("sealing in memory cannot fail");
        URL_SAFE_NO_PAD.encode([nonce.as_slice(), &sealed].concat())
    }

    /// The credential in a session cookie, if this gateway sealed it and it has not expired.
    pub fn open(&self, cookie: &str, now: WallClock) -> Result<Signed<Credential>, CookieError> {
        if cookie.len() > MAX_COOKIE {
            return Err(CookieError::Tampered);
        }
        let bytes = URL_SAFE_NO_PAD.decode(cookie).map_err(|_| CookieError::Tampered)?;
        if bytes.len() < 12 {
            return Err(CookieError::Tampered);
        }
        let (nonce, sealed) = bytes.split_at(12);
        let cipher = ChaCha20Poly1305::new(Key::from_slice(self.cookie.as_ref()));
        let plain = cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad: AAD })
            .map(Zeroizing::new)
            .map_err(|_| CookieError::Tampered)?;
        let credential: Signed<Credential> =
            postcard::from_bytes(&plain).map_err(|_| CookieError::Tampered)?;
        if now >= credential.body.expires {
            return Err(CookieError::Expired);
        }
        Ok(credential)
    }

    /// The token a form must carry for the session of `credential`.
    pub fn csrf_token(&self, credential: &Signed<Credential>) -> String {
        self.token(b"session", &credential.body.id)
    }

    /// The token the login form carries for the browser holding login cookie `nonce`.
    pub fn login_token(&self, nonce: &str) -> String {
        self.token(b"login", nonce.as_bytes())
    }

    fn token(&self, purpose: &[u8], subject: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.csrf.as_ref()).expect("any key length");
        mac.update(purpose);
        mac.update(&[0]);
        mac.update(subject);
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    /// Whether `presented` is `expected`, in time that does not depend on where they differ.
    pub fn same_token(expected: &str, presented: Option<&str>) -> bool {
        use subtle::ConstantTimeEq;
        presented
            .is_some_and(|p| p.len() == expected.len() && bool::from(p.as_bytes().ct_eq(expected.as_bytes())))
    }
}

/// Logged-out sessions remembered until they expire; past this, a logout ends every session
/// issued before it.
const MAX_LOGGED_OUT: usize = 65_536;

/// Sessions ended by a logout before they expire, by credential id. The cookie itself is the
/// session (the gateway keeps no table of them), so a copy kept elsewhere would open until it
/// expired; this is what the gateway remembers to refuse it. A restart forgets it.
#[derive(Debug, Default)]
pub struct LoggedOut {
    /// Each ended session's credential id, with when the credential expires.
    ended: BTreeMap<[u8; 16], WallClock>,
    /// With the table full, every session issued before this time counts as ended: a logout
    /// always ends its own session, at worst it ends others with it.
    before: WallClock,
}

impl LoggedOut {
    /// Ends `credential`'s session at the gateway, not only in the browser that asked.
    pub fn end(&mut self, credential: &Credential, now: WallClock) {
        self.ended.retain(|_, expires| *expires > now);
        if self.ended.len() >= MAX_LOGGED_OUT {
            self.ended.clear();
            self.before = now;
        } else {
            self.ended.insert(credential.id, credential.expires);
        }
    }

    /// Whether `credential`'s session was logged out.
    pub fn ended(&self, credential: &Credential) -> bool {
        credential.issued < self.before || self.ended.contains_key(&credential.id)
    }
}

/// A `Set-Cookie` value: only over HTTPS, out of script's reach, never sent cross-site.
pub fn cookie(name: &str, value: &str, max_age_secs: u64) -> String {
    format!("{name}={value}; Path=/; Max-Age={max_age_secs}; Secure; HttpOnly; SameSite=Strict")
}

/// A `Set-Cookie` value that removes cookie `name`.
pub fn clear_cookie(name: &str) -> String {
    cookie(name, "", 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::seeded;

    fn credential(keys: &NodeKeys, expires: u64) -> Signed<Credential> {
        let body = Credential {
            principal: "alice".into(),
            client_key: [7; 32],
            issued: WallClock(1),
            expires: WallClock(expires),
            id: [9; 16],
        };
        Signed::sign(body, keys).expect("signs")
    }

    #[test]
    fn a_sealed_credential_opens_under_the_same_node_key_only_and_not_after_it_expires() {
        let mut rng = seeded(1);
        let gateway = NodeKeys::generate(&mut rng);
        let kdc = NodeKeys::generate(&mut rng);
        let keys = ConsoleKeys::derive(&gateway);
        let sealed = keys.seal(&credential(&kdc, 1_000), &mut rng);
        // A restart derives the same keys: nothing was kept but the node key.
        let again = ConsoleKeys::derive(&gateway);
        assert_eq!(again.open(&sealed, WallClock(999)).expect("opens").body.principal, "alice");
        assert_eq!(again.open(&sealed, WallClock(1_000)), Err(CookieError::Expired));
        let other = ConsoleKeys::derive(&NodeKeys::generate(&mut rng));
        assert_eq!(other.open(&sealed, WallClock(1)), Err(CookieError::Tampered));
        let mut bytes = URL_SAFE_NO_PAD.decode(&sealed).expect("base64");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(keys.open(&URL_SAFE_NO_PAD.encode(bytes), WallClock(1)), Err(CookieError::Tampered));
        for junk in ["", "!!!", "AAAA", &"A".repeat(10_000)] {
            assert_eq!(keys.open(junk, WallClock(1)), Err(CookieError::Tampered), "{junk:.10}");
        }
    }

    #[test]
    fn csrf_tokens_differ_by_session_and_purpose_and_compare_whole() {
        let mut rng = seeded(2);
        let kdc = NodeKeys::generate(&mut rng);
        let keys = ConsoleKeys::derive(&NodeKeys::generate(&mut rng));
        let mut other = credential(&kdc, 5);
        other.body.id = [1; 16];
        let token = keys.csrf_token(&credential(&kdc, 5));
        assert_ne!(token, keys.csrf_token(&other));
        assert_ne!(keys.login_token("n"), keys.login_token("m"));
        assert!(ConsoleKeys::same_token(&token, Some(&token)));
        assert!(!ConsoleKeys::same_token(&token, Some(&token[..31])));
        assert!(!ConsoleKeys::same_token(&token, None));
    }
}
