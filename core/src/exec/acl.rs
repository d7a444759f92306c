//! Access control on an exec host: which principal may run which commands as which local users,
//! and whether a shell is allowed. Owns the rules and their check. It never runs anything and
//! grants nothing by default: a principal without an entry may do nothing.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Programs that interpret their arguments as commands: running one needs `shell = true`.
const SHELLS: &[&str] =
    &["sh", "bash", "dash", "zsh", "ksh", "csh", "tcsh", "fish", "busybox", "env", "sudo", "su"];

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclEntry {
    /// Local users this principal may run as.
    pub run_as: BTreeSet<String>,
    /// Programs it may run (argv[0], exact), or `*` for any that is not a shell.
    pub commands: BTreeSet<String>,
    /// Whether it may run a shell (or anything that runs commands for it).
    #[serde(default)]
    pub shell: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acl {
    pub principals: BTreeMap<String, AclEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclDenied {
    #[error("principal `{0}` has no entry in this host's ACL")]
    NoEntry(String),
    #[error("principal `{principal}` may not run commands as `{run_as}`")]
    RunAs { principal: String, run_as: String },
    #[error("principal `{principal}` may not run `{program}`")]
    Command { principal: String, program: String },
    #[error("principal `{principal}` may not run a shell (`{program}`)")]
    Shell { principal: String, program: String },
    #[error("empty command")]
    Empty,
}

fn program_name(program: &str) -> &str {
    program.rsplit('/').next().unwrap_or(program)
}

impl Acl {
    /// May `principal` run `argv` as `run_as`?
    pub fn check(&self, principal: &str, run_as: &str, argv: &[String]) -> Result<(), AclDenied> {
        let entry = self.principals.get(principal).ok_or_else(|| AclDenied::NoEntry(principal.to_owned()))?;
        if !entry.run_as.contains(run_as) {
            return Err(AclDenied::RunAs { principal: principal.to_owned(), run_as: run_as.to_owned() });
        }
        let program = argv.first().ok_or(AclDenied::Empty)?;
        let is_shell = SHELLS.contains(&program_name(program));
        if is_shell && !entry.shell {
            return Err(AclDenied::Shell { principal: principal.to_owned(), program: program.clone() });
        }
        let listed = entry.commands.contains(program) || entry.commands.contains(program_name(program));
        if listed || entry.commands.contains("*") || (is_shell && entry.shell) {
            Ok(())
        } else {
            Err(AclDenied::Command { principal: principal.to_owned(), program: program.clone() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl() -> Acl {
        let mut acl = Acl::default();
        acl.principals.insert(
            "alice".into(),
            AclEntry {
                run_as: ["alice".to_owned(), "deploy".to_owned()].into(),
                commands: ["uptime".to_owned(), "/usr/bin/systemctl".to_owned()].into(),
                shell: false,
            },
        );
        acl.principals.insert(
            "root-ops".into(),
            AclEntry { run_as: ["root".to_owned()].into(), commands: ["*".to_owned()].into(), shell: true },
        );
        acl
    }

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn listed_commands_as_listed_users_only() {
        let acl = acl();
        assert_eq!(acl.check("alice", "deploy", &argv(&["uptime"])), Ok(()));
        assert_eq!(acl.check("alice", "alice", &argv(&["/usr/bin/systemctl", "status"])), Ok(()));
        assert!(matches!(acl.check("alice", "root", &argv(&["uptime"])), Err(AclDenied::RunAs { .. })));
        assert!(matches!(
            acl.check("alice", "alice", &argv(&["rm", "-rf", "/"])),
            Err(AclDenied::Command { .. })
        ));
        assert!(matches!(acl.check("mallory", "alice", &argv(&["uptime"])), Err(AclDenied::NoEntry(_))));
    }

    #[test]
    fn shells_need_the_shell_grant_even_with_a_wildcard() {
        let mut acl = acl();
        assert!(matches!(
            acl.check("alice", "alice", &argv(&["/bin/sh", "-c", "id"])),
            Err(AclDenied::Shell { .. })
        ));
        acl.principals.get_mut("alice").expect("alice").commands.insert("*".into());
        assert!(matches!(acl.check("alice", "alice", &argv(&["bash"])), Err(AclDenied::Shell { .. })));
        assert_eq!(acl.check("root-ops", "root", &argv(&["sh", "-c", "id"])), Ok(()));
    }
}
