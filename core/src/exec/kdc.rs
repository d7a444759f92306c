//! The key distribution center: principals with Argon2id password hashes, the hosts it issues
//! tickets for, and the two exchanges (login → credential, credential → service tickets), which
//! gateways ask for over a channel ([`Kdc::answer`]). It runs as its own role with its own key,
//! so a gateway holds neither a hash nor the signing key. Owns password checks, credential
//! signing and ticket sealing, with the key it shares with each host. It never stores a
//! password, never issues a ticket to an expired or foreign credential, and never for a host it
//! does not know.

use std::collections::BTreeMap;
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand_core::RngCore;
use zeroize::Zeroizing;

use super::nodeset::MAX_HOSTS;
use super::ticket::{Credential, ServiceTicket, TicketBody, TicketError, TicketKey};
use super::wire::{GrantedTicket, KdcReply, KdcRequest, TicketGrant};
use crate::identity::{NodeKeys, PublicIdentity};
use crate::rng::SeededRng;
use crate::signed::Signed;
use crate::time::WallClock;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KdcError {
    #[error("unknown principal `{0}`")]
    UnknownPrincipal(String),
    #[error("wrong password for `{0}`")]
    WrongPassword(String),
    #[error("the stored password hash for `{0}` is unreadable; reset it")]
    BadStoredHash(String),
    #[error("the credential is not signed by this KDC")]
    ForeignCredential,
    #[error("the credential expired; log in again")]
    Expired,
    #[error("the credential belongs to another client key")]
    WrongClient,
    #[error("`{0}` is not a managed host in the KDC's installed configuration")]
    UnknownHost(String),
    #[error("could not issue: {0}")]
    Issue(String),
}

impl KdcError {
    /// What a client may be told: login failures do not reveal which part was wrong.
    pub fn public_message(&self) -> String {
        match self {
            KdcError::UnknownPrincipal(_) | KdcError::WrongPassword(_) => {
                "login failed: unknown principal or wrong password".to_owned()
            }
            other => other.to_string(),
        }
    }

    /// The reason one host's ticket was refused, without the host's name: the client shows it
    /// under the hosts it concerns, so every unknown host of a run folds into one group.
    pub fn host_reason(&self) -> String {
        match self {
            KdcError::UnknownHost(_) => "not a managed host in the KDC's installed configuration".to_owned(),
            other => other.to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdcSettings {
    pub credential_lifetime: Duration,
    pub ticket_lifetime: Duration,
}

impl Default for KdcSettings {
    fn default() -> Self {
        KdcSettings {
            credential_lifetime: Duration::from_secs(8 * 3600),
            ticket_lifetime: Duration::from_secs(300),
        }
    }
}

/// An Argon2id PHC string for `password`, salted from `rng`.
pub fn hash_password(password: &str, rng: &mut SeededRng) -> Result<String, KdcError> {
    let mut salt = [0u8; 16];
    rng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| KdcError::Issue(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| KdcError::Issue(e.to_string()))
}

#[derive(Debug)]
pub struct Kdc {
    keys: NodeKeys,
    /// `keys`' public half, derived once: every request checks a credential against it.
    public: PublicIdentity,
    principals: BTreeMap<String, String>,
    hosts: BTreeMap<String, PublicIdentity>,
    /// The key shared with each host tickets were sealed to, with the identity it was made
    /// with: derived at a host's first ticket, dropped when the host leaves or changes key.
    ticket_keys: BTreeMap<String, (PublicIdentity, TicketKey)>,
    settings: KdcSettings,
    rng: SeededRng,
}

/// A service ticket and the session key the gateway uses to make authenticators for it.
#[derive(Debug)]
pub struct IssuedTicket {
    pub ticket: ServiceTicket,
    pub session_key: Zeroizing<[u8; 32]>,
    pub expires: WallClock,
}

impl Kdc {
    pub fn new(
        keys: NodeKeys,
        principals: BTreeMap<String, String>,
        hosts: BTreeMap<String, PublicIdentity>,
        settings: KdcSettings,
        rng: SeededRng,
    ) -> Kdc {
        let public = keys.public();
        Kdc { keys, public, principals, hosts, ticket_keys: BTreeMap::new(), settings, rng }
    }

    /// The key that signs credentials: gateways check credentials against it.
    pub fn public(&self) -> PublicIdentity {
        self.public
    }

    /// The KDC's own keys: its channel's static key and its signing key.
    pub fn keys(&self) -> &NodeKeys {
        &self.keys
    }

    pub(super) fn has_principal(&self, name: &str) -> bool {
        self.principals.contains_key(name)
    }

    pub(super) fn principal_names(&self) -> Vec<String> {
        self.principals.keys().cloned().collect()
    }

    /// Sets (or with `None` removes) a principal's hash in memory; the store is the caller's.
    pub(super) fn set_principal(&mut self, name: &str, hash: Option<String>) {
        match hash {
            Some(hash) => self.principals.insert(name.to_owned(), hash),
            None => self.principals.remove(name),
        };
    }

    pub(super) fn rng_mut(&mut self) -> &mut SeededRng {
        &mut self.rng
    }

    pub fn host(&self, name: &str) -> Option<&PublicIdentity> {
        self.hosts.get(name)
    }

    /// The managed hosts tickets may be sealed to, from the installed configuration: a host it
    /// no longer lists gets no ticket.
    pub fn set_hosts(&mut self, hosts: BTreeMap<String, PublicIdentity>) {
        self.ticket_keys.retain(|name, (identity, _)| hosts.get(name) == Some(identity));
        self.hosts = hosts;
    }

    /// Login: checks the password and issues a credential bound to `client_key`.
    pub fn login(
        &mut self,
        now: WallClock,
        principal: &str,
        password: &str,
        client_key: [u8; 32],
    ) -> Result<Signed<Credential>, KdcError> {
        let stored =
            self.principals.get(principal).ok_or_else(|| KdcError::UnknownPrincipal(principal.to_owned()))?;
        let hash = PasswordHash::new(stored).map_err(|_| KdcError::BadStoredHash(principal.to_owned()))?;
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .map_err(|_| KdcError::WrongPassword(principal.to_owned()))?;
        let mut id = [0u8; 16];
        self.rng.fill_bytes(&mut id);
        let lifetime = u64::try_from(self.settings.credential_lifetime.as_millis()).unwrap_or(u64::MAX);
        let credential = Credential {
            principal: principal.to_owned(),
            client_key,
            issued: now,
            expires: WallClock(now.0.saturating_add(lifetime)),
            id,
        };
        Signed::sign(credential, &self.keys).map_err(|e| KdcError::Issue(e.to_string()))
    }

    /// Checks a credential: this KDC's signature, not expired, presented by its own client.
    pub fn check_credential(
        kdc: &PublicIdentity,
        now: WallClock,
        credential: &Signed<Credential>,
        client_key: &[u8; 32],
    ) -> Result<(), KdcError> {
        credential.verify(kdc).map_err(|_| KdcError::ForeignCredential)?;
        if now >= credential.body.expires {
            return Err(KdcError::Expired);
        }
        if credential.body.client_key != *client_key {
            return Err(KdcError::WrongClient);
        }
        Ok(())
    }

    /// A gateway's request, answered. Principal commands are operators' and go to
    /// [`Kdc::manage`].
    pub fn answer(&mut self, now: WallClock, request: KdcRequest) -> KdcReply {
        match request {
            KdcRequest::Principals(_) => {
                KdcReply::Refused { reason: "a principal command is an operator's".into() }
            }
            KdcRequest::Login { principal, password, client_key } => {
                let password = Zeroizing::new(password);
                match self.login(now, &principal, &password, client_key) {
                    Ok(credential) => KdcReply::LoggedIn { credential },
                    Err(e) => KdcReply::LoginRefused { public: e.public_message(), reason: e.to_string() },
                }
            }
            KdcRequest::Tickets { credential, client_key, hosts } => {
                if hosts.len() > MAX_HOSTS {
                    return KdcReply::Refused {
                        reason: format!("more than {MAX_HOSTS} hosts in one request"),
                    };
                }
                if let Err(e) = Self::check_credential(&self.public, now, &credential, &client_key) {
                    return KdcReply::Refused { reason: format!("credential refused: {e}") };
                }
                // The credential was checked once above, for the whole batch.
                let grants = hosts
                    .into_iter()
                    .map(|host| {
                        let ticket = self
                            .seal_ticket(now, &credential, &host)
                            .map(|issued| GrantedTicket {
                                ticket: issued.ticket,
                                session_key: *issued.session_key,
                                expires: issued.expires,
                            })
                            .map_err(|e| e.host_reason());
                        TicketGrant { host, ticket }
                    })
                    .collect();
                KdcReply::Tickets { grants }
            }
        }
    }

    /// A service ticket for `host`, for the principal of a valid credential.
    pub fn issue_ticket(
        &mut self,
        now: WallClock,
        credential: &Signed<Credential>,
        client_key: &[u8; 32],
        host: &str,
    ) -> Result<IssuedTicket, KdcError> {
        Self::check_credential(&self.public, now, credential, client_key)?;
        self.seal_ticket(now, credential, host)
    }

    /// A service ticket for `host` under a credential already checked.
    fn seal_ticket(
        &mut self,
        now: WallClock,
        credential: &Signed<Credential>,
        host: &str,
    ) -> Result<IssuedTicket, KdcError> {
        let identity = *self.hosts.get(host).ok_or_else(|| KdcError::UnknownHost(host.to_owned()))?;
        let mut session_key = Zeroizing::new([0u8; 32]);
        self.rng.fill_bytes(&mut *session_key);
        let lifetime = u64::try_from(self.settings.ticket_lifetime.as_millis()).unwrap_or(u64::MAX);
        // A ticket never outlives the credential it was issued under.
        let expires = WallClock(now.0.saturating_add(lifetime).min(credential.body.expires.0));
        let body = TicketBody {
            principal: credential.body.principal.clone(),
            host: host.to_owned(),
            issued: now,
            expires,
            session_key: *session_key,
        };
        if self.ticket_keys.get(host).is_none_or(|(known, _)| *known != identity) {
            let key =
                TicketKey::for_kdc(&self.keys, &identity).map_err(|e| KdcError::Issue(e.to_string()))?;
            self.ticket_keys.insert(host.to_owned(), (identity, key));
        }
        let (_, key) = self.ticket_keys.get(host).ok_or_else(|| KdcError::UnknownHost(host.to_owned()))?;
        let ticket = ServiceTicket::seal(&body, key, &mut self.rng)
            .map_err(|e: TicketError| KdcError::Issue(e.to_string()))?;
        Ok(IssuedTicket { ticket, session_key, expires })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::ticket::TicketKey;
    use crate::rng::{fork, seeded};

    const NOW: WallClock = WallClock(1_750_000_000_000);

    /// A host that changes its key in the configuration gets tickets under the new key at once:
    /// the key kept for its old identity is dropped, and what the old key could open it cannot.
    #[test]
    fn a_host_listed_under_a_new_key_gets_tickets_only_it_can_open() {
        let mut rng = seeded(5);
        let kdc_keys = NodeKeys::generate(&mut rng);
        let (old, new) = (NodeKeys::generate(&mut rng), NodeKeys::generate(&mut rng));
        let principals =
            BTreeMap::from([("alice".to_owned(), hash_password("pw", &mut rng).expect("hashes"))]);
        let hosts = BTreeMap::from([("h01".to_owned(), old.public())]);
        let mut kdc = Kdc::new(kdc_keys, principals, hosts, KdcSettings::default(), fork(&mut rng));
        let client_key = [3; 32];
        let credential = kdc.login(NOW, "alice", "pw", client_key).expect("logs in");
        let at = |keys: &NodeKeys| TicketKey::for_host(keys, &kdc.public()).expect("a key");
        let (old_key, new_key) = (at(&old), at(&new));

        let first = kdc.issue_ticket(NOW, &credential, &client_key, "h01").expect("issued");
        assert!(first.ticket.open(&old_key, "h01").is_ok());

        kdc.set_hosts(BTreeMap::from([("h01".to_owned(), new.public())]));
        let second = kdc.issue_ticket(NOW, &credential, &client_key, "h01").expect("issued");
        assert!(second.ticket.open(&new_key, "h01").is_ok());
        assert_eq!(second.ticket.open(&old_key, "h01").err(), Some(TicketError::NotForThisHost));

        kdc.set_hosts(BTreeMap::new());
        let gone = kdc.issue_ticket(NOW, &credential, &client_key, "h01").err();
        assert_eq!(gone, Some(KdcError::UnknownHost("h01".to_owned())));
    }
}
