//! The environment a spawned command starts in. Owns the rule: a client's command gets sudo's
//! `env_reset` (nothing of the node's own environment, a fixed `PATH`, `HOME`, `USER`, `LOGNAME`
//! and `SHELL` from the run-as user's account, its home as the working directory or `/` when the
//! home is not a directory, plus the variables the client passed that its ACL allows); the
//! node's own programs (policy checks and hooks) may keep the node's environment. Owns too the
//! shape a passed variable must have. It never looks an account up, reads the node's environment
//! or starts anything: the driver observes the account (its passwd entry, whether the home is a
//! directory), hands it to [`ChildEnvironment::resolve`], and starts the process with the answer.

/// The `PATH` of a command whose environment is reset (sudo's `secure_path` on Debian).
pub const SAFE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The working directory of a command whose run-as user's home is not a directory (sudo's).
pub const FALLBACK_DIR: &str = "/";
/// The shell named for an account whose passwd entry names none (as login(1) and sudo do).
pub const DEFAULT_SHELL: &str = "/bin/sh";
/// The most variables one run may pass.
pub const MAX_PASSED_VARS: usize = 32;
/// The longest name a passed variable may have.
pub const MAX_VAR_NAME: usize = 64;
/// The most bytes the passed variables may take, names and values together.
pub const MAX_PASSED_BYTES: usize = 16 * 1024;

/// Whether `name` may name a variable a client passes: `[A-Za-z_][A-Za-z0-9_]*`, at most
/// [`MAX_VAR_NAME`] bytes. No `=`, no NUL, nothing a shell or `env` would read otherwise.
pub fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first_ok && name.len() <= MAX_VAR_NAME && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Why the variables a client passed are malformed, whatever any ACL says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VarError {
    #[error(
        "`{0}` is not a variable name (letters, digits and `_`, not starting with a digit, at most {MAX_VAR_NAME} bytes)"
    )]
    BadName(String),
    #[error("the value of `{0}` holds a NUL byte")]
    BadValue(String),
    #[error("`{0}` is passed twice")]
    Duplicate(String),
    #[error("{count} variables passed; a run passes at most {MAX_PASSED_VARS}")]
    TooMany { count: usize },
    #[error("{total} bytes of variables passed; a run passes at most {MAX_PASSED_BYTES}")]
    TooLarge { total: usize },
}

/// Checks the variables a client passed: names, values, count and size.
pub fn check_vars(vars: &[(String, String)]) -> Result<(), VarError> {
    if vars.len() > MAX_PASSED_VARS {
        return Err(VarError::TooMany { count: vars.len() });
    }
    let total = vars.iter().fold(0usize, |sum, (k, v)| sum.saturating_add(k.len()).saturating_add(v.len()));
    if total > MAX_PASSED_BYTES {
        return Err(VarError::TooLarge { total });
    }
    let mut seen = std::collections::BTreeSet::new();
    for (name, value) in vars {
        if !is_var_name(name) {
            return Err(VarError::BadName(name.chars().take(MAX_VAR_NAME + 1).collect()));
        }
        if value.contains('\0') {
            return Err(VarError::BadValue(name.clone()));
        }
        if !seen.insert(name.as_str()) {
            return Err(VarError::Duplicate(name.clone()));
        }
    }
    Ok(())
}

/// The environment a spawned command starts in, as core decides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildEnvironment {
    /// The node's own environment and working directory, with `vars` added: only for programs
    /// the node's configuration names, run as the node's own user (policy hooks, alert hooks,
    /// policy checks without a `user=`). Never for a client's command.
    Inherit { vars: Vec<(String, String)> },
    /// sudo's `env_reset`: nothing of the node's environment; `PATH` is [`SAFE_PATH`]; `HOME`,
    /// `USER`, `LOGNAME` and `SHELL` come from the run-as user's account; the working directory
    /// is its home, or [`FALLBACK_DIR`] when that is not a directory; then `vars` (checked
    /// against the ACL already), each replacing a variable of the same name.
    Reset { vars: Vec<(String, String)> },
}

/// What the driver observed of the run-as user's account: its passwd entry, and whether its
/// home is a directory now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub home: String,
    pub shell: String,
    pub home_is_dir: bool,
}

/// What the driver starts the process with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Start from an empty environment rather than the node's.
    pub clear: bool,
    /// Set, in this order, after clearing (or on top of the node's environment).
    pub vars: Vec<(String, String)>,
    /// The working directory; the node's own when `None`.
    pub dir: Option<String>,
}

impl ChildEnvironment {
    /// A reset environment with nothing passed.
    pub fn reset() -> ChildEnvironment {
        ChildEnvironment::Reset { vars: Vec::new() }
    }

    /// The variables added on top of the base (the client's, for a reset one).
    pub fn vars(&self) -> &[(String, String)] {
        match self {
            ChildEnvironment::Inherit { vars } | ChildEnvironment::Reset { vars } => vars,
        }
    }

    /// The environment filled in with the facts of the run-as user's `account`.
    pub fn resolve(&self, account: &Account) -> Resolved {
        match self {
            ChildEnvironment::Inherit { vars } => Resolved { clear: false, vars: vars.clone(), dir: None },
            ChildEnvironment::Reset { vars: passed } => {
                let shell = if account.shell.is_empty() { DEFAULT_SHELL } else { account.shell.as_str() };
                let mut vars: Vec<(String, String)> = [
                    ("PATH", SAFE_PATH),
                    ("HOME", account.home.as_str()),
                    ("USER", account.name.as_str()),
                    ("LOGNAME", account.name.as_str()),
                    ("SHELL", shell),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
                for (name, value) in passed {
                    match vars.iter_mut().find(|(k, _)| k == name) {
                        Some(slot) => slot.1.clone_from(value),
                        None => vars.push((name.clone(), value.clone())),
                    }
                }
                let dir = if account.home_is_dir { account.home.clone() } else { FALLBACK_DIR.to_owned() };
                Resolved { clear: true, vars, dir: Some(dir) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nobody(home_is_dir: bool) -> Account {
        Account {
            name: "nobody".into(),
            home: "/nonexistent".into(),
            shell: "/usr/sbin/nologin".into(),
            home_is_dir,
        }
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn names_are_portable_identifiers() {
        for good in ["LANG", "TZ", "_", "_x1", "LC_ALL", "a"] {
            assert!(is_var_name(good), "{good}");
        }
        for bad in ["", "1A", "A-B", "A=B", "A B", "Ä", "A\0", "a.b", &"A".repeat(MAX_VAR_NAME + 1)] {
            assert!(!is_var_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn passed_variables_are_bounded_and_named_once() {
        assert_eq!(check_vars(&pairs(&[("LANG", "C.UTF-8"), ("TZ", "UTC")])), Ok(()));
        assert_eq!(check_vars(&pairs(&[("1X", "")])), Err(VarError::BadName("1X".into())));
        assert_eq!(check_vars(&pairs(&[("X", "a\0b")])), Err(VarError::BadValue("X".into())));
        assert_eq!(check_vars(&pairs(&[("X", "1"), ("X", "2")])), Err(VarError::Duplicate("X".into())));
        let many: Vec<(String, String)> =
            (0..=MAX_PASSED_VARS).map(|i| (format!("V{i}"), String::new())).collect();
        assert!(matches!(check_vars(&many), Err(VarError::TooMany { .. })));
        let big = vec![("BIG".to_owned(), "x".repeat(MAX_PASSED_BYTES))];
        assert!(matches!(check_vars(&big), Err(VarError::TooLarge { .. })));
    }

    #[test]
    fn a_reset_environment_is_the_accounts_and_what_was_passed() {
        let env = ChildEnvironment::Reset { vars: pairs(&[("LANG", "C.UTF-8")]) };
        let resolved = env.resolve(&nobody(false));
        assert!(resolved.clear);
        assert_eq!(
            resolved.vars,
            pairs(&[
                ("PATH", SAFE_PATH),
                ("HOME", "/nonexistent"),
                ("USER", "nobody"),
                ("LOGNAME", "nobody"),
                ("SHELL", "/usr/sbin/nologin"),
                ("LANG", "C.UTF-8"),
            ])
        );
        // A home that is not a directory: the command starts in `/`, HOME still says the entry.
        assert_eq!(resolved.dir.as_deref(), Some("/"));
        assert_eq!(env.resolve(&nobody(true)).dir.as_deref(), Some("/nonexistent"));
    }

    #[test]
    fn a_passed_variable_replaces_a_base_one_and_an_empty_shell_is_sh() {
        // Only an ACL that names PATH explicitly lets it through to here.
        let env = ChildEnvironment::Reset { vars: pairs(&[("PATH", "/opt/bin")]) };
        let account = Account { shell: String::new(), ..nobody(true) };
        let resolved = env.resolve(&account);
        assert_eq!(resolved.vars.iter().filter(|(k, _)| k == "PATH").count(), 1);
        assert!(resolved.vars.contains(&("PATH".into(), "/opt/bin".into())));
        assert!(resolved.vars.contains(&("SHELL".into(), DEFAULT_SHELL.into())));
    }

    #[test]
    fn an_inherited_environment_only_adds() {
        let env = ChildEnvironment::Inherit { vars: pairs(&[("COHORT_POLICY_FILE", "/etc/p")]) };
        let resolved = env.resolve(&nobody(true));
        assert_eq!(resolved, Resolved { clear: false, vars: env.vars().to_vec(), dir: None });
    }
}
