//! Access control: which principal may run which programs as which local users, which variables
//! it may pass, where it may write files, and the ceilings of its runs. Owns the rules and their
//! check (the daemon checks commands, variables and files; the gateway checks variables early and
//! applies the limits). It never runs anything and grants nothing by default: a principal without
//! an entry may do nothing.
//!
//! What a command entry enforces, exactly:
//! - `commands = *`: any program, named as the client likes (a bare name is found on the reset
//!   `PATH`, see [`crate::child_env::SAFE_PATH`]). A shell is reachable through it: `nice sh -c`,
//!   `python3 -c`, and so on.
//! - otherwise an allowlist of absolute paths and patterns on them (`/usr/bin/uptime`,
//!   `/opt/app/bin/*`, see [`super::command_pattern`]): argv\[0\] must itself be a plain absolute
//!   path (no `.`, `..` or `//`) that one of them matches, as written; a bare name is refused
//!   (nothing is looked up on a `PATH`). Only the program argv\[0\] names is checked: a listed
//!   program that runs commands itself (`nice`, `timeout`, `xargs`, `find`, an interpreter, an
//!   editor) reaches whatever it runs, a shell included, so such a program belongs on an
//!   allowlist only if that is meant.
//! - `shell`: without it, argv\[0\] may not be a program of [`SHELLS`] (by its file name), even
//!   when `*` or a pattern matches it; with it, such a program runs if the commands permit it.
//!   That is all it does: it does not stop a permitted program from starting a shell.
//! - `env`: the exact names of the variables a client may pass (no wildcard; `PATH`,
//!   `LD_PRELOAD` and the like pass only if named). Everything else of the command's
//!   environment is reset (see [`crate::child_env`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::command_pattern;
use super::task::Task;

/// Shells, and programs whose purpose is to run their arguments as a command under another
/// environment or user: argv\[0\] may be one of these only with `shell = true`. Not every
/// program that can start a shell is here (nor could be): see the module's documentation.
pub const SHELLS: &[&str] =
    &["sh", "bash", "dash", "zsh", "ksh", "csh", "tcsh", "fish", "busybox", "env", "sudo", "su"];

/// The `commands` entry that permits any program.
pub const ANY_COMMAND: &str = "*";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclEntry {
    /// Local users this principal may run as.
    pub run_as: BTreeSet<String>,
    /// Programs it may run: `*` for any, or absolute paths and patterns argv\[0\] must match.
    pub commands: BTreeSet<String>,
    /// Whether argv\[0\] may be one of [`SHELLS`] (still only if `commands` permits it).
    #[serde(default)]
    pub shell: bool,
    /// Variables a client may pass to its commands, by exact name.
    #[serde(default)]
    pub env: BTreeSet<String>,
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
    #[error(
        "principal `{principal}` may run only programs named by absolute path, as its ACL lists them (`{program}` is not one)"
    )]
    NotAbsolute { principal: String, program: String },
    #[error("principal `{principal}` may not pass the variable `{name}` (its ACL's env does not list it)")]
    Env { principal: String, name: String },
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

/// The file name of a program: what [`SHELLS`] lists.
fn program_name(program: &str) -> &str {
    program.rsplit('/').next().unwrap_or(program)
}

/// Whether `program`'s file name is one of [`SHELLS`].
pub fn is_shell(program: &str) -> bool {
    SHELLS.contains(&program_name(program))
}

/// Whether `entry` (a `commands` item) may stand in an ACL: `*`, or an absolute path or pattern.
pub fn is_command_entry(entry: &str) -> bool {
    entry == ANY_COMMAND || command_pattern::is_command_pattern(entry)
}

impl Acl {
    /// May `principal` run `argv` as `run_as`?
    pub fn check(&self, principal: &str, run_as: &str, argv: &[String]) -> Result<(), AclDenied> {
        let entry = self.principals.get(principal).ok_or_else(|| AclDenied::NoEntry(principal.to_owned()))?;
        if !entry.run_as.contains(run_as) {
            return Err(AclDenied::RunAs { principal: principal.to_owned(), run_as: run_as.to_owned() });
        }
        let program = argv.first().ok_or(AclDenied::Empty)?;
        let (who, what) = (principal.to_owned(), program.clone());
        if is_shell(program) && !entry.shell {
            return Err(AclDenied::Shell { principal: who, program: what });
        }
        if entry.commands.contains(ANY_COMMAND) {
            return Ok(());
        }
        if !is_plain_absolute(program) {
            return Err(AclDenied::NotAbsolute { principal: who, program: what });
        }
        if entry.commands.iter().any(|pattern| command_pattern::matches(pattern, program)) {
            Ok(())
        } else {
            Err(AclDenied::Command { principal: who, program: what })
        }
    }

    /// May `principal` pass each of `vars` to its command? (Passing none needs no entry: that
    /// is for [`Acl::check`] to judge.)
    pub fn check_env(&self, principal: &str, vars: &[(String, String)]) -> Result<(), AclDenied> {
        let listed = |name: &String| self.principals.get(principal).is_some_and(|e| e.env.contains(name));
        match vars.iter().find(|(name, _)| !listed(name)) {
            Some((name, _)) => Err(AclDenied::Env { principal: principal.to_owned(), name: name.clone() }),
            None => Ok(()),
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

    /// May `principal` do `task` as `run_as`: run its command with the variables it passes, or
    /// write every one of its files?
    pub fn check_task(&self, principal: &str, run_as: &str, task: &Task) -> Result<(), AclDenied> {
        match task {
            Task::Run { argv, env, .. } => {
                self.check(principal, run_as, argv)?;
                self.check_env(principal, env)
            }
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
                commands: [
                    "/usr/bin/uptime".to_owned(),
                    "/usr/bin/systemctl".to_owned(),
                    "/opt/app/bin/*".to_owned(),
                ]
                .into(),
                shell: false,
                env: ["LANG".to_owned(), "TZ".to_owned()].into(),
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

    fn vars(names: &[&str]) -> Vec<(String, String)> {
        names.iter().map(|n| ((*n).to_owned(), "x".to_owned())).collect()
    }

    #[test]
    fn listed_paths_and_patterns_as_listed_users_only() {
        let acl = acl();
        assert_eq!(acl.check("alice", "deploy", &argv(&["/usr/bin/uptime"])), Ok(()));
        assert_eq!(acl.check("alice", "alice", &argv(&["/usr/bin/systemctl", "status"])), Ok(()));
        assert_eq!(acl.check("alice", "alice", &argv(&["/opt/app/bin/deploy", "now"])), Ok(()));
        assert!(matches!(
            acl.check("alice", "root", &argv(&["/usr/bin/uptime"])),
            Err(AclDenied::RunAs { .. })
        ));
        for other in ["/bin/rm", "/opt/app/bin/sub/deploy", "/usr/local/bin/uptime", "/usr/bin/uptimes"] {
            assert!(
                matches!(
                    acl.check("alice", "alice", &argv(&[other, "-rf", "/"])),
                    Err(AclDenied::Command { .. })
                ),
                "{other}"
            );
        }
        assert!(matches!(
            acl.check("mallory", "alice", &argv(&["/usr/bin/uptime"])),
            Err(AclDenied::NoEntry(_))
        ));
        assert_eq!(acl.check("alice", "alice", &[]), Err(AclDenied::Empty));
    }

    #[test]
    fn an_allowlist_takes_absolute_plain_paths_only() {
        let acl = acl();
        // A bare name is not looked up anywhere: it is refused, naming the rule.
        let denied = acl.check("alice", "alice", &argv(&["uptime"])).expect_err("a bare name");
        assert!(matches!(denied, AclDenied::NotAbsolute { .. }));
        assert!(denied.to_string().contains("absolute path"), "{denied}");
        // Nor can a crooked path climb out of a pattern's directory.
        for crooked in ["/opt/app/bin/../../../bin/sh-x", "/opt/app/bin/./x", "/opt//app/bin/x", "./uptime"] {
            assert!(
                matches!(acl.check("alice", "alice", &argv(&[crooked])), Err(AclDenied::NotAbsolute { .. })),
                "{crooked}"
            );
        }
    }

    #[test]
    fn the_shell_flag_guards_argv0_only_and_a_wildcard_reaches_anything() {
        let mut acl = acl();
        assert!(matches!(
            acl.check("alice", "alice", &argv(&["/bin/sh", "-c", "id"])),
            Err(AclDenied::Shell { .. })
        ));
        // A shell behind a program that runs commands is not argv[0]: an allowlist without that
        // program refuses it; `*` lets it through, as documented.
        let nice = argv(&["/usr/bin/nice", "sh", "-c", "id"]);
        assert!(matches!(acl.check("alice", "alice", &nice), Err(AclDenied::Command { .. })));
        acl.principals.get_mut("alice").expect("alice").commands.insert("*".into());
        assert_eq!(acl.check("alice", "alice", &nice), Ok(()));
        assert_eq!(acl.check("alice", "alice", &argv(&["nice", "sh", "-c", "id"])), Ok(()));
        assert!(matches!(acl.check("alice", "alice", &argv(&["bash"])), Err(AclDenied::Shell { .. })));
        assert_eq!(acl.check("root-ops", "root", &argv(&["sh", "-c", "id"])), Ok(()));
        // A pattern that happens to match a shell does not grant one without the flag.
        let mut acl = Acl::default();
        let entry = AclEntry {
            run_as: ["alice".to_owned()].into(),
            commands: ["/usr/bin/*".to_owned()].into(),
            ..AclEntry::default()
        };
        acl.principals.insert("alice".into(), entry);
        assert!(matches!(
            acl.check("alice", "alice", &argv(&["/usr/bin/bash"])),
            Err(AclDenied::Shell { .. })
        ));
        acl.principals.get_mut("alice").expect("alice").shell = true;
        assert_eq!(acl.check("alice", "alice", &argv(&["/usr/bin/bash"])), Ok(()));
        // The flag grants nothing the commands do not: a shell elsewhere stays refused.
        assert!(matches!(acl.check("alice", "alice", &argv(&["/bin/sh"])), Err(AclDenied::Command { .. })));
    }

    #[test]
    fn only_variables_the_entry_names_pass() {
        let acl = acl();
        assert_eq!(acl.check_env("alice", &vars(&["LANG", "TZ"])), Ok(()));
        assert_eq!(acl.check_env("alice", &[]), Ok(()));
        assert_eq!(acl.check_env("mallory", &[]), Ok(()));
        assert!(matches!(acl.check_env("mallory", &vars(&["LANG"])), Err(AclDenied::Env { .. })));
        let denied = acl.check_env("alice", &vars(&["LANG", "LD_PRELOAD"])).expect_err("not listed");
        assert_eq!(denied, AclDenied::Env { principal: "alice".into(), name: "LD_PRELOAD".into() });
        assert!(denied.to_string().contains("`LD_PRELOAD`"), "{denied}");
        // `*` in commands says nothing about variables.
        assert!(matches!(acl.check_env("root-ops", &vars(&["LANG"])), Err(AclDenied::Env { .. })));
        let task = Task::Run { argv: argv(&["/usr/bin/uptime"]), stdin: Vec::new(), env: vars(&["PATH"]) };
        assert!(matches!(acl.check_task("alice", "alice", &task), Err(AclDenied::Env { .. })));
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
