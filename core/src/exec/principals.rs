//! Managing the KDC's principals: an operator's signed command (add, change a password, remove,
//! list), sent to the KDC on a channel its operator key opened, and what the KDC makes of it.
//! Owns who may manage principals (an operator of the installed configuration, proving the key
//! on the channel and signing the command with it, recently) and the checks on names and
//! passwords. The hash is made here, at the KDC; it never leaves the KDC, and a password is
//! never kept or logged.

use std::collections::BTreeSet;

use zeroize::Zeroizing;

use super::directory::is_plain_name;
use super::kdc::{Kdc, hash_password};
pub use super::wire::{PrincipalCommand, PrincipalOp, PrincipalReply};
use crate::identity::PublicIdentity;
use crate::signed::Signed;
use crate::time::WallClock;

/// How far an operator's clock may be from the KDC's.
pub const COMMAND_FRESHNESS_MS: u64 = 5 * 60 * 1000;
const MAX_PASSWORD_LEN: usize = 1024;

/// What the store must make durable before the answer goes out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalWrite {
    pub name: String,
    /// The new hash, or `None` to remove.
    pub hash: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrincipalRefusal {
    #[error("the channel's key is not an operator of the installed configuration")]
    NotAnOperator,
    #[error("the command is not signed by the key that opened the channel")]
    BadSignature,
    #[error("the command was signed {skew_s} s away from the KDC's clock (limit {limit_s} s); check NTP")]
    Stale { skew_s: u64, limit_s: u64 },
    #[error("principal name `{0}` must be 1-128 letters, digits, `.`, `-` or `_`")]
    BadName(String),
    #[error("the password is empty or longer than {MAX_PASSWORD_LEN} bytes")]
    BadPassword,
    #[error("principal `{0}` already exists; use passwd to change its password")]
    Exists(String),
    #[error("no principal `{0}`")]
    NoSuchPrincipal(String),
    #[error("could not hash the password: {0}")]
    Hash(String),
}

fn check_name(name: &str) -> Result<(), PrincipalRefusal> {
    if is_plain_name(name) {
        Ok(())
    } else {
        Err(PrincipalRefusal::BadName(name.chars().take(128).collect()))
    }
}

fn check_password(password: &str) -> Result<(), PrincipalRefusal> {
    if password.is_empty() || password.len() > MAX_PASSWORD_LEN {
        Err(PrincipalRefusal::BadPassword)
    } else {
        Ok(())
    }
}

impl Kdc {
    /// An operator's command from the channel whose key is `peer`; `operators` are those of the
    /// installed configuration. The answer, and what must be durable before it is sent.
    pub fn manage(
        &mut self,
        now: WallClock,
        peer: &PublicIdentity,
        operators: &BTreeSet<PublicIdentity>,
        command: Signed<PrincipalCommand>,
    ) -> (PrincipalReply, Option<PrincipalWrite>) {
        match self.manage_checked(now, peer, operators, command) {
            Ok((reply, write)) => (reply, write),
            Err(refusal) => (PrincipalReply::Refused { reason: refusal.to_string() }, None),
        }
    }

    fn manage_checked(
        &mut self,
        now: WallClock,
        peer: &PublicIdentity,
        operators: &BTreeSet<PublicIdentity>,
        command: Signed<PrincipalCommand>,
    ) -> Result<(PrincipalReply, Option<PrincipalWrite>), PrincipalRefusal> {
        if !operators.contains(peer) {
            return Err(PrincipalRefusal::NotAnOperator);
        }
        command.verify(peer).map_err(|_| PrincipalRefusal::BadSignature)?;
        let skew = now.0.abs_diff(command.body.at.0);
        if skew > COMMAND_FRESHNESS_MS {
            return Err(PrincipalRefusal::Stale {
                skew_s: skew / 1000,
                limit_s: COMMAND_FRESHNESS_MS / 1000,
            });
        }
        let done = |message: String, name: &str, hash: Option<String>| {
            (PrincipalReply::Done { message }, Some(PrincipalWrite { name: name.to_owned(), hash }))
        };
        match command.body.op {
            PrincipalOp::List => Ok((PrincipalReply::Listed { names: self.principal_names() }, None)),
            PrincipalOp::Add { name, password } => {
                let password = Zeroizing::new(password);
                check_name(&name)?;
                check_password(&password)?;
                if self.has_principal(&name) {
                    return Err(PrincipalRefusal::Exists(name));
                }
                let hash = self.new_hash(&password)?;
                self.set_principal(&name, Some(hash.clone()));
                Ok(done(format!("principal `{name}` added"), &name, Some(hash)))
            }
            PrincipalOp::Passwd { name, password } => {
                let password = Zeroizing::new(password);
                check_password(&password)?;
                if !self.has_principal(&name) {
                    return Err(PrincipalRefusal::NoSuchPrincipal(name));
                }
                let hash = self.new_hash(&password)?;
                self.set_principal(&name, Some(hash.clone()));
                Ok(done(format!("password of `{name}` changed"), &name, Some(hash)))
            }
            PrincipalOp::Remove { name } => {
                if !self.has_principal(&name) {
                    return Err(PrincipalRefusal::NoSuchPrincipal(name));
                }
                self.set_principal(&name, None);
                Ok(done(format!("principal `{name}` removed; its credentials stop working"), &name, None))
            }
        }
    }

    fn new_hash(&mut self, password: &str) -> Result<String, PrincipalRefusal> {
        hash_password(password, self.rng_mut()).map_err(|e| PrincipalRefusal::Hash(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::kdc::KdcSettings;
    use crate::identity::NodeKeys;
    use crate::rng::seeded;

    fn kdc() -> Kdc {
        let mut rng = seeded(7);
        Kdc::new(
            NodeKeys::generate(&mut rng),
            Default::default(),
            Default::default(),
            KdcSettings::default(),
            rng,
        )
    }

    fn signed(op: PrincipalOp, at: u64, keys: &NodeKeys) -> Signed<PrincipalCommand> {
        Signed::sign(PrincipalCommand { op, at: WallClock(at), nonce: [1; 16] }, keys).expect("signs")
    }

    #[test]
    fn an_operator_adds_changes_and_removes_principals_and_each_write_is_handed_out() {
        let mut kdc = kdc();
        let operator = NodeKeys::generate(&mut seeded(1));
        let operators: BTreeSet<PublicIdentity> = [operator.public()].into();
        let now = WallClock(1_000_000);
        let add = PrincipalOp::Add { name: "bob".into(), password: "pw1".into() };
        let (reply, write) =
            kdc.manage(now, &operator.public(), &operators, signed(add.clone(), now.0, &operator));
        assert!(matches!(reply, PrincipalReply::Done { .. }), "{reply:?}");
        let hash = write.and_then(|w| w.hash).expect("a hash to store");
        assert!(hash.starts_with("$argon2id$"));
        assert!(kdc.login(now, "bob", "pw1", [0; 32]).is_ok());
        let (again, _) = kdc.manage(now, &operator.public(), &operators, signed(add, now.0, &operator));
        assert!(matches!(again, PrincipalReply::Refused { reason } if reason.contains("already exists")));

        let passwd = PrincipalOp::Passwd { name: "bob".into(), password: "pw2".into() };
        kdc.manage(now, &operator.public(), &operators, signed(passwd, now.0, &operator));
        assert!(kdc.login(now, "bob", "pw1", [0; 32]).is_err());
        assert!(kdc.login(now, "bob", "pw2", [0; 32]).is_ok());

        let list =
            kdc.manage(now, &operator.public(), &operators, signed(PrincipalOp::List, now.0, &operator));
        assert_eq!(list.0, PrincipalReply::Listed { names: vec!["bob".into()] });

        let remove = PrincipalOp::Remove { name: "bob".into() };
        let (_, write) = kdc.manage(now, &operator.public(), &operators, signed(remove, now.0, &operator));
        assert_eq!(write, Some(PrincipalWrite { name: "bob".into(), hash: None }));
        assert!(kdc.login(now, "bob", "pw2", [0; 32]).is_err());
    }

    #[test]
    fn strangers_forgeries_stale_commands_and_bad_names_are_refused() {
        let mut kdc = kdc();
        let operator = NodeKeys::generate(&mut seeded(1));
        let stranger = NodeKeys::generate(&mut seeded(2));
        let operators: BTreeSet<PublicIdentity> = [operator.public()].into();
        let now = WallClock(10_000_000);
        let add = |name: &str| PrincipalOp::Add { name: name.into(), password: "pw".into() };
        let refused = |(reply, write): (PrincipalReply, Option<PrincipalWrite>), says: &str| {
            assert!(write.is_none());
            assert!(
                matches!(&reply, PrincipalReply::Refused { reason } if reason.contains(says)),
                "{reply:?}"
            );
        };
        refused(
            kdc.manage(now, &stranger.public(), &operators, signed(add("x"), now.0, &stranger)),
            "not an operator",
        );
        refused(
            kdc.manage(now, &operator.public(), &operators, signed(add("x"), now.0, &stranger)),
            "not signed",
        );
        let stale = now.0 - COMMAND_FRESHNESS_MS - 1;
        refused(kdc.manage(now, &operator.public(), &operators, signed(add("x"), stale, &operator)), "NTP");
        refused(
            kdc.manage(now, &operator.public(), &operators, signed(add("a b"), now.0, &operator)),
            "letters",
        );
        let empty = PrincipalOp::Add { name: "x".into(), password: String::new() };
        refused(kdc.manage(now, &operator.public(), &operators, signed(empty, now.0, &operator)), "password");
        let missing = PrincipalOp::Remove { name: "ghost".into() };
        refused(
            kdc.manage(now, &operator.public(), &operators, signed(missing, now.0, &operator)),
            "no principal",
        );
        assert!(format!("{:?}", add("x")).find("pw").is_none(), "no password in Debug");
    }
}
