//! The checks a policy declares and an agent runs on its machine: a documented catalog, each
//! check with a severity. A policy carries each check as the parameter `check.NAME` whose value
//! is one line (`file /etc/ssh/sshd_config mode=0600 owner=root severity=high`), so checks merge
//! across policies exactly as parameters do. Owns parsing a check, what the agent must observe
//! for it (a [`Probe`]), and judging what was observed; it never observes anything itself: the
//! driver reads files and runs commands, and reports plain facts back.
//!
//! The catalog (options in any order, `severity=low|medium|high` on any, medium by default):
//!
//! | check | passes when |
//! | --- | --- |
//! | `file PATH [present\|absent] [mode=0600] [owner=USER] [group=GROUP]` | the file exists (or not), with exactly that mode, owner and group |
//! | `contains PATH REGEX` / `lacks PATH REGEX` | some line of the file matches the pattern (or none does) |
//! | `sysctl NAME VALUE` | `/proc/sys/NAME` (dots as slashes) holds VALUE, whitespace aside |
//! | `unit NAME active\|inactive` | `systemctl is-active NAME` says so |
//! | `port PORT listening\|closed` | a TCP socket listens on PORT (IPv4 or IPv6), or none does |
//! | `package NAME [min=VERSION]` | the package is installed (dpkg-query, or rpm on RPM systems), at or above VERSION by dpkg's ordering |
//! | `command [timeout=10s] [user=USER] -- PROGRAM ARGS...` | the program (run without a shell) exits 0 within the time |

mod judge;
mod version;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use judge::{CheckOutcome, FileFacts, Observation, RunEnd, judge};
pub use version::compare_versions;

/// The parameter prefix under which a policy declares its checks.
pub const CHECK_PREFIX: &str = "check.";
/// A command check's time limit unless it says otherwise, and the most it may ask for.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
pub const MAX_COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// How much of a file a content check reads: a larger file is judged on its start, and says so.
pub const MAX_READ: usize = 1024 * 1024;
/// The longest detail a check's result carries.
pub const MAX_DETAIL: usize = 120;

/// How much a failing check matters: a failed high-severity check counts as a threat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Severity {
    Low,
    Medium,
    High,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }
}

/// Whether something should be there or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Present,
    Absent,
}

/// One check of the catalog, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    File { path: String, want: Want, mode: Option<u32>, owner: Option<String>, group: Option<String> },
    Contains { path: String, pattern: String, want: Want },
    Sysctl { name: String, value: String },
    Unit { name: String, active: bool },
    Port { port: u16, listening: bool },
    Package { name: String, min: Option<String> },
    Command { argv: Vec<String>, user: Option<String>, timeout: Duration },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub kind: CheckKind,
    pub severity: Severity,
}

/// Which package manager answers a package check: the agent's platform decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageTool {
    Dpkg,
    Rpm,
}

/// What the agent asks the driver to observe for a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The file at `path` (following links): its kind, mode, owner and group, and with `read`
    /// its first [`MAX_READ`] bytes.
    Inspect { path: String, read: bool },
    /// Run `argv` without a shell as `user` (the agent's own user when `None`); its exit and
    /// first bytes of output come back. The agent kills it at `timeout`.
    Run { argv: Vec<String>, user: Option<String>, timeout: Duration },
    /// Both TCP socket tables (`/proc/net/tcp` and `/proc/net/tcp6`).
    SocketTables,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    #[error(
        "`{0}` is not a check this agent knows (file, contains, lacks, sysctl, unit, port, package, command)"
    )]
    UnknownKind(String),
    #[error("the check is empty")]
    Empty,
    #[error("the check could not be split into words: {0}")]
    Words(String),
    #[error("{0}")]
    Bad(String),
}

impl Check {
    /// Parses one catalog line.
    pub fn parse(text: &str) -> Result<Check, CheckError> {
        let words = shell_words::split(text).map_err(|e| CheckError::Words(e.to_string()))?;
        let (kind, rest) = words.split_first().ok_or(CheckError::Empty)?;
        let bad = |what: String| CheckError::Bad(format!("{kind}: {what}"));
        // The command's own words are never options.
        let (opts_part, argv) = match kind.as_str() {
            "command" => match rest.iter().position(|w| w == "--") {
                Some(i) => (&rest[..i], rest[i + 1..].to_vec()),
                None => return Err(bad("put the program after `--`".into())),
            },
            _ => (rest, Vec::new()),
        };
        let mut severity = Severity::Medium;
        let mut options = Vec::new();
        let mut words = Vec::new();
        for w in opts_part {
            match w.split_once('=') {
                Some(("severity", s)) => {
                    severity = match s {
                        "low" => Severity::Low,
                        "medium" => Severity::Medium,
                        "high" => Severity::High,
                        other => return Err(bad(format!("severity `{other}` is not low, medium or high"))),
                    }
                }
                Some((key, value)) if is_option(kind, key) => options.push((key, value)),
                _ => words.push(w.as_str()),
            }
        }
        let option = |key: &str| options.iter().find(|(k, _)| *k == key).map(|(_, v)| (*v).to_owned());
        let arity = |n: usize, usage: &str| {
            if words.len() == n { Ok(()) } else { Err(bad(format!("expected {usage}"))) }
        };
        let kind = match kind.as_str() {
            "file" => {
                let want = match words.get(1).copied() {
                    None | Some("present") => Want::Present,
                    Some("absent") => Want::Absent,
                    Some(other) => return Err(bad(format!("`{other}` is not present or absent"))),
                };
                if words.is_empty() || words.len() > 2 {
                    return Err(bad(
                        "expected PATH [present|absent] [mode=...] [owner=...] [group=...]".into()
                    ));
                }
                let mode = match option("mode") {
                    None => None,
                    Some(m) => Some(
                        u32::from_str_radix(&m, 8)
                            .ok()
                            .filter(|m| *m <= 0o7777)
                            .ok_or_else(|| bad(format!("mode `{m}` is not octal permission bits")))?,
                    ),
                };
                CheckKind::File {
                    path: path(words[0], &bad)?,
                    want,
                    mode,
                    owner: option("owner"),
                    group: option("group"),
                }
            }
            "contains" | "lacks" => {
                arity(2, "PATH REGEX")?;
                regex::Regex::new(words[1]).map_err(|e| bad(format!("the pattern does not compile: {e}")))?;
                let want = if kind == "contains" { Want::Present } else { Want::Absent };
                CheckKind::Contains { path: path(words[0], &bad)?, pattern: words[1].to_owned(), want }
            }
            "sysctl" => {
                arity(2, "NAME VALUE")?;
                let name = words[0];
                if name.is_empty()
                    || !name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                    || name.contains("..")
                {
                    return Err(bad(format!("`{name}` is not a sysctl name")));
                }
                CheckKind::Sysctl { name: name.to_owned(), value: words[1].to_owned() }
            }
            "unit" => {
                arity(2, "NAME active|inactive")?;
                let active = match words[1] {
                    "active" => true,
                    "inactive" => false,
                    other => return Err(bad(format!("`{other}` is not active or inactive"))),
                };
                if words[0].starts_with('-') {
                    return Err(bad("a unit name cannot start with `-`".into()));
                }
                CheckKind::Unit { name: words[0].to_owned(), active }
            }
            "port" => {
                arity(2, "PORT listening|closed")?;
                let port = words[0]
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| bad(format!("`{}` is not a port", words[0])))?;
                let listening = match words[1] {
                    "listening" => true,
                    "closed" => false,
                    other => return Err(bad(format!("`{other}` is not listening or closed"))),
                };
                CheckKind::Port { port, listening }
            }
            "package" => {
                arity(1, "NAME [min=VERSION]")?;
                if words[0].starts_with('-') {
                    return Err(bad("a package name cannot start with `-`".into()));
                }
                CheckKind::Package { name: words[0].to_owned(), min: option("min") }
            }
            "command" => {
                if !words.is_empty() {
                    return Err(bad(format!(
                        "`{}` before `--` is not an option (timeout=, user=, severity=)",
                        words[0]
                    )));
                }
                if argv.is_empty() {
                    return Err(bad("name a program after `--`".into()));
                }
                let timeout = match option("timeout") {
                    None => DEFAULT_COMMAND_TIMEOUT,
                    Some(t) => parse_seconds(&t)
                        .filter(|d| !d.is_zero() && *d <= MAX_COMMAND_TIMEOUT)
                        .ok_or_else(|| bad(format!("timeout `{t}` is not from 1s to 300s")))?,
                };
                CheckKind::Command { argv, user: option("user"), timeout }
            }
            other => return Err(CheckError::UnknownKind(other.to_owned())),
        };
        Ok(Check { kind, severity })
    }

    /// What the driver must observe for this check on a machine whose packages `tool` manages.
    pub fn probe(&self, tool: PackageTool) -> Probe {
        match &self.kind {
            CheckKind::File { path, .. } => Probe::Inspect { path: path.clone(), read: false },
            CheckKind::Contains { path, .. } => Probe::Inspect { path: path.clone(), read: true },
            CheckKind::Sysctl { name, .. } => {
                Probe::Inspect { path: format!("/proc/sys/{}", name.replace('.', "/")), read: true }
            }
            CheckKind::Unit { name, .. } => Probe::Run {
                argv: vec!["systemctl".into(), "is-active".into(), "--".into(), name.clone()],
                user: None,
                timeout: DEFAULT_COMMAND_TIMEOUT,
            },
            CheckKind::Port { .. } => Probe::SocketTables,
            CheckKind::Package { name, .. } => {
                let argv = match tool {
                    PackageTool::Dpkg => vec![
                        "dpkg-query".into(),
                        "-W".into(),
                        "-f=${Status}\\t${Version}".into(),
                        "--".into(),
                        name.clone(),
                    ],
                    PackageTool::Rpm => vec![
                        "rpm".into(),
                        "-q".into(),
                        "--qf".into(),
                        "installed\\t%{EPOCHNUM}:%{VERSION}-%{RELEASE}".into(),
                        "--".into(),
                        name.clone(),
                    ],
                };
                Probe::Run { argv, user: None, timeout: DEFAULT_COMMAND_TIMEOUT }
            }
            CheckKind::Command { argv, user, timeout } => {
                Probe::Run { argv: argv.clone(), user: user.clone(), timeout: *timeout }
            }
        }
    }
}

/// Which options each kind takes as `key=value` (anything else is a word).
fn is_option(kind: &str, key: &str) -> bool {
    matches!(
        (kind, key),
        ("file", "mode" | "owner" | "group") | ("package", "min") | ("command", "timeout" | "user")
    )
}

/// An absolute, plain path: a check names exactly one file.
fn path(p: &str, bad: &dyn Fn(String) -> CheckError) -> Result<String, CheckError> {
    if crate::exec::acl::is_plain_absolute(p) {
        Ok(p.to_owned())
    } else {
        Err(bad(format!("`{p}` is not an absolute, plain path")))
    }
}

/// `10`, `10s`, `2m`.
fn parse_seconds(text: &str) -> Option<Duration> {
    let (number, unit) = match text.strip_suffix('s') {
        Some(n) => (n, 1),
        None => match text.strip_suffix('m') {
            Some(n) => (n, 60),
            None => (text, 1),
        },
    };
    number.parse::<u64>().ok().map(|n| Duration::from_secs(n.saturating_mul(unit)))
}

/// The checks among a policy's effective parameters, by name; a line that does not parse is
/// kept as its error, so the agent reports it rather than dropping it.
pub fn checks_of<'a>(
    params: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Vec<(String, Result<Check, CheckError>)> {
    params
        .into_iter()
        .filter_map(|(key, value)| {
            key.strip_prefix(CHECK_PREFIX).map(|name| (name.to_owned(), Check::parse(value)))
        })
        .collect()
}

#[cfg(test)]
mod tests;
