//! Access control: which principal may run which commands as which local users, whether a shell
//! is allowed, where it may write files, and the ceilings of its runs. Owns the rules and their
//! check (the daemon checks commands and files, the gateway applies the limits). It never runs
//! anything and grants nothing by default: a principal without an entry may do nothing.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::task::Task;

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
    /// Directories under which `cohort copy` may write files (absolute, no `..`).
    #[serde(default)]
    pub copy: BTreeSet<String>,
    /// Whether it may read every principal's records in the web console's audit trail (each
    /// principal always sees its own).
    #[serde(default)]
    pub audit: bool,
    /// The ceilings of its runs, whatever a client asks for.
    #[serde(default)]
    pub limits: Limits,
}

/// A principal's ceilings, applied at the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Sessions at once within one run.
    pub max_fanout: u32,
    /// T1 + T2: how long one host's command may run, at most, in milliseconds.
    pub max_time_ms: u64,
    /// Runs at once, across all of the principal's connections to the gateway.
    pub max_runs: u32,
}

impl Default for Limits {
    /// Generous enough not to surprise (clush's default fan-out is 64, the default T1+T2 48 s),
    /// bounded so one principal cannot take the gateway.
    fn default() -> Limits {
        Limits { max_fanout: 256, max_time_ms: 3_600_000, max_runs: 8 }
    }
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
    #[error("principal `{principal}` may not write `{path}`: not under a directory its ACL permits for copy")]
    CopyPath { principal: String, path: String },
    #[error("`{0}` is not an absolute, normalised path (no `..`, `.`, `//` or trailing `/`)")]
    BadPath(String),
}

/// Whether `path` is absolute and names each directory once plainly: no `.`/`..` component, no
/// empty one, no trailing `/`, no NUL. Only such a path can be compared with a prefix safely.
pub fn is_plain_absolute(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else { return false };
    !rest.is_empty()
        && !path.contains('\0')
        && rest.split('/').all(|part| !part.is_empty() && part != "." && part != "..")
}

/// Whether `path` lies under directory `prefix` (`/` or a plain absolute path), component-wise:
/// `/tmp/a` is under `/tmp`, `/tmpx` is not.
fn is_under(path: &str, prefix: &str) -> bool {
    prefix == "/" || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
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

    /// May `principal` write the file `path` as `run_as`?
    pub fn check_copy(&self, principal: &str, run_as: &str, path: &str) -> Result<(), AclDenied> {
        let entry = self.principals.get(principal).ok_or_else(|| AclDenied::NoEntry(principal.to_owned()))?;
        if !entry.run_as.contains(run_as) {
            return Err(AclDenied::RunAs { principal: principal.to_owned(), run_as: run_as.to_owned() });
        }
        if !is_plain_absolute(path) {
            return Err(AclDenied::BadPath(path.to_owned()));
        }
        if entry.copy.iter().any(|prefix| is_under(path, prefix)) {
            Ok(())
        } else {
            Err(AclDenied::CopyPath { principal: principal.to_owned(), path: path.to_owned() })
        }
    }

    /// May `principal` do `task` as `run_as`: run its command, or write every one of its files?
    pub fn check_task(&self, principal: &str, run_as: &str, task: &Task) -> Result<(), AclDenied> {
        match task {
            Task::Run { argv, .. } => self.check(principal, run_as, argv),
            Task::Copy { files } => {
                files.iter().try_for_each(|file| self.check_copy(principal, run_as, &file.path))
            }
        }
    }

    /// The ceilings of `principal`'s runs (the defaults for one without an entry, who may run
    /// nothing anyway).
    pub fn limits(&self, principal: &str) -> Limits {
        self.principals.get(principal).map(|e| e.limits).unwrap_or_default()
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
                copy: ["/srv/www".to_owned()].into(),
                ..AclEntry::default()
            },
        );
        acl.principals.insert(
            "root-ops".into(),
            AclEntry {
                run_as: ["root".to_owned()].into(),
                commands: ["*".to_owned()].into(),
                shell: true,
                ..AclEntry::default()
            },
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

    #[test]
    fn copies_only_under_a_permitted_directory_and_never_by_a_crooked_path() {
        let acl = acl();
        assert_eq!(acl.check_copy("alice", "deploy", "/srv/www/index.html"), Ok(()));
        assert_eq!(acl.check_copy("alice", "deploy", "/srv/www/a/b"), Ok(()));
        for outside in ["/srv/wwwx", "/srv/www", "/etc/passwd", "/srv"] {
            assert!(
                matches!(acl.check_copy("alice", "deploy", outside), Err(AclDenied::CopyPath { .. })),
                "{outside}"
            );
        }
        for crooked in
            ["/srv/www/../../etc/passwd", "srv/www/x", "/srv/www//x", "/srv/www/./x", "/srv/www/x/"]
        {
            assert!(
                matches!(acl.check_copy("alice", "deploy", crooked), Err(AclDenied::BadPath(_))),
                "{crooked}"
            );
        }
        assert!(matches!(acl.check_copy("alice", "root", "/srv/www/x"), Err(AclDenied::RunAs { .. })));
        assert!(matches!(acl.check_copy("root-ops", "root", "/srv/www/x"), Err(AclDenied::CopyPath { .. })));
    }
}
