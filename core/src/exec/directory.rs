//! The exec directory: the managed hosts, the access rules and the gateway's own ceiling as the
//! signed cluster configuration states them, under `exec.host.NAME`, `exec.acl.PRINCIPAL` and
//! `exec.max_runs`, with the node-set groups (`group.NAME`). Owns the text form of each entry
//! (what `cohort host add` and `cohort acl set` write and `cohort get` shows) and its checks: an
//! entry that does not parse never enters a configuration ([`check_setting`] runs in
//! `ClusterConfig::validate`). It never decides who may run what: the ACL does, at each daemon,
//! and the gateway applies the limits.

use std::collections::{BTreeMap, BTreeSet};

use super::acl::{ANY_COMMAND, Acl, AclEntry, Limits, is_command_entry, is_plain_absolute, is_shell};
use crate::child_env::is_var_name;
use crate::identity::PublicIdentity;

pub const HOST_PREFIX: &str = "exec.host.";
pub const ACL_PREFIX: &str = "exec.acl.";
pub const GROUP_PREFIX: &str = "group.";
/// Runs at once across every principal, at the gateway.
pub const MAX_RUNS_KEY: &str = "exec.max_runs";
pub const DEFAULT_GATEWAY_MAX_RUNS: u32 = 64;

/// Bounds an entry's text can name, so a setting cannot ask the gateway for the impossible.
pub const MAX_FANOUT_LIMIT: u32 = 1024;
pub const MAX_TIME_LIMIT_MS: u64 = 7 * 24 * 3_600_000;
pub const MAX_RUNS_LIMIT: u32 = 10_000;
const MAX_LIST_ITEMS: usize = 256;
const MAX_WORD_LEN: usize = 256;

/// A managed host: where its exec daemon listens and the key it proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedHost {
    /// `host:port`; drivers resolve it.
    pub address: String,
    pub identity: PublicIdentity,
}

/// Everything the exec roles take from the installed configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecDirectory {
    pub hosts: BTreeMap<String, ManagedHost>,
    pub acl: Acl,
    /// `@NAME` in node sets → the node set it stands for.
    pub groups: BTreeMap<String, String>,
    /// Runs at once at the gateway, across all principals.
    pub max_runs: u32,
    /// The configuration's operators: who may manage principals at the KDC. Not a setting: the
    /// node fills it from the configuration's operator list.
    pub operators: BTreeSet<PublicIdentity>,
}

impl Default for ExecDirectory {
    fn default() -> ExecDirectory {
        ExecDirectory {
            hosts: BTreeMap::new(),
            acl: Acl::default(),
            groups: BTreeMap::new(),
            max_runs: DEFAULT_GATEWAY_MAX_RUNS,
            operators: BTreeSet::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    #[error("`{key}`: {reason}")]
    Entry { key: String, reason: String },
}

fn entry_error(key: &str, reason: impl Into<String>) -> DirectoryError {
    DirectoryError::Entry { key: key.to_owned(), reason: reason.into() }
}

impl ExecDirectory {
    /// The directory the shared settings describe. Entries were checked when the configuration
    /// was made; one that still does not parse is left out and named in the second value.
    pub fn from_settings(settings: &BTreeMap<String, String>) -> (ExecDirectory, Vec<DirectoryError>) {
        let mut directory = ExecDirectory::default();
        let mut errors = Vec::new();
        for (key, value) in settings {
            let parsed = parse_setting(key, value);
            match parsed {
                Ok(Some(Entry::Host(name, host))) => {
                    directory.hosts.insert(name, host);
                }
                Ok(Some(Entry::Acl(principal, entry))) => {
                    directory.acl.principals.insert(principal, entry);
                }
                Ok(Some(Entry::MaxRuns(n))) => directory.max_runs = n,
                Ok(Some(Entry::Group(name, set))) => {
                    directory.groups.insert(name, set);
                }
                Ok(None) => {}
                Err(e) => errors.push(e),
            }
        }
        (directory, errors)
    }

    /// Whether `name` is a managed host known by exactly `identity`.
    pub fn lists(&self, name: &str, identity: &PublicIdentity) -> bool {
        self.hosts.get(name).is_some_and(|h| h.identity == *identity)
    }
}

enum Entry {
    Host(String, ManagedHost),
    Acl(String, AclEntry),
    MaxRuns(u32),
    Group(String, String),
}

/// Checks one setting that belongs to the exec directory (others pass).
pub fn check_setting(key: &str, value: &str) -> Result<(), DirectoryError> {
    parse_setting(key, value).map(|_| ())
}

fn parse_setting(key: &str, value: &str) -> Result<Option<Entry>, DirectoryError> {
    if let Some(name) = key.strip_prefix(HOST_PREFIX) {
        check_name(key, name)?;
        return parse_host(value)
            .map(|h| Some(Entry::Host(name.to_owned(), h)))
            .map_err(|r| entry_error(key, r));
    }
    if let Some(principal) = key.strip_prefix(ACL_PREFIX) {
        check_name(key, principal)?;
        return parse_acl(value)
            .map(|e| Some(Entry::Acl(principal.to_owned(), e)))
            .map_err(|r| entry_error(key, r));
    }
    if key == MAX_RUNS_KEY {
        return parse_bounded(value, 1, u64::from(MAX_RUNS_LIMIT))
            .map(|n| Some(Entry::MaxRuns(u32::try_from(n).unwrap_or(MAX_RUNS_LIMIT))))
            .map_err(|r| entry_error(key, r));
    }
    if let Some(name) = key.strip_prefix(GROUP_PREFIX) {
        return Ok(Some(Entry::Group(name.to_owned(), value.to_owned())));
    }
    Ok(None)
}

/// Whether `name` may name a host or a principal: 1-128 letters, digits, `.`, `-` or `_` (what
/// a node set can name).
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

fn check_name(key: &str, name: &str) -> Result<(), DirectoryError> {
    if is_plain_name(name) {
        Ok(())
    } else {
        Err(entry_error(key, "the name must be letters, digits, `.`, `-` or `_`"))
    }
}

/// `word=value` pairs separated by spaces, each word once.
fn fields(value: &str) -> Result<BTreeMap<&str, &str>, String> {
    let mut out = BTreeMap::new();
    for part in value.split_ascii_whitespace() {
        let (word, v) = part.split_once('=').ok_or_else(|| format!("`{part}` is not FIELD=VALUE"))?;
        if v.len() > MAX_WORD_LEN * MAX_LIST_ITEMS {
            return Err(format!("`{word}` is too long"));
        }
        if out.insert(word, v).is_some() {
            return Err(format!("`{word}` is given twice"));
        }
    }
    Ok(out)
}

fn reject_unknown(fields: &BTreeMap<&str, &str>, known: &[&str]) -> Result<(), String> {
    match fields.keys().find(|k| !known.contains(k)) {
        Some(k) => Err(format!("unknown field `{k}` (known: {})", known.join(", "))),
        None => Ok(()),
    }
}

fn key_hex(text: &str, what: &str) -> Result<[u8; 32], String> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).map_err(|_| format!("{what} is not 64 hex digits"))?;
    Ok(out)
}

/// `host:port` with a numeric port and no spaces: resolving it is the driver's job.
fn check_address(address: &str) -> Result<(), String> {
    let (host, port) =
        address.rsplit_once(':').ok_or_else(|| format!("address `{address}` is not HOST:PORT"))?;
    let host_ok =
        !host.is_empty() && host.len() <= 253 && !host.chars().any(|c| c.is_whitespace() || c == '/');
    match port.parse::<u16>() {
        Ok(p) if p > 0 && host_ok => Ok(()),
        _ => Err(format!("address `{address}` is not HOST:PORT")),
    }
}

fn parse_host(value: &str) -> Result<ManagedHost, String> {
    let f = fields(value)?;
    reject_unknown(&f, &["address", "ed25519", "x25519"])?;
    let get = |k: &str| f.get(k).copied().ok_or_else(|| format!("`{k}=` is missing"));
    let address = get("address")?;
    check_address(address)?;
    let identity = PublicIdentity {
        signing: key_hex(get("ed25519")?, "ed25519")?,
        agreement: key_hex(get("x25519")?, "x25519")?,
    };
    Ok(ManagedHost { address: address.to_owned(), identity })
}

impl ManagedHost {
    /// The setting's text, as [`parse_host`] reads it.
    pub fn to_setting(&self) -> String {
        format!(
            "address={} ed25519={} x25519={}",
            self.address,
            hex::encode(self.identity.signing),
            hex::encode(self.identity.agreement)
        )
    }
}

fn list(text: &str, what: &str, check: impl Fn(&str) -> bool) -> Result<BTreeSet<String>, String> {
    let items: BTreeSet<String> = text.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect();
    if items.len() > MAX_LIST_ITEMS {
        return Err(format!("{what}: at most {MAX_LIST_ITEMS} items"));
    }
    match items.iter().find(|i| i.len() > MAX_WORD_LEN || !check(i)) {
        Some(bad) => Err(format!("{what}: `{bad}` is not allowed here")),
        None => Ok(items),
    }
}

fn parse_bounded(text: &str, min: u64, max: u64) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("`{text}` is not a whole number from {min} to {max}")),
    }
}

/// `48s`, `1500ms`, `10m` or `1h`.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 =
        digits.parse().map_err(|_| format!("`{text}` is not a duration like 48s, 1500ms, 10m or 1h"))?;
    let factor = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("`{text}` is not a duration like 48s, 1500ms, 10m or 1h")),
    };
    n.checked_mul(factor).ok_or_else(|| format!("`{text}` is too long"))
}

fn format_duration_ms(ms: u64) -> String {
    if ms % 1000 == 0 { format!("{}s", ms / 1000) } else { format!("{ms}ms") }
}

/// A word a command name or user name may be: no space, no `,`, no `=`, no control character.
fn plain_word(word: &str) -> bool {
    !word.chars().any(|c| c.is_whitespace() || c.is_control() || c == ',' || c == '=')
}

/// `commands=`: `*`, or absolute paths and patterns; a bare name is refused with the fix, and
/// a shell named outright needs `shell=yes` (a pattern may match one: the daemon refuses it then).
fn parse_commands(text: &str, shell: bool) -> Result<BTreeSet<String>, String> {
    let commands = list(text, "commands", plain_word)?;
    if let Some(bare) = commands.iter().find(|c| !is_command_entry(c)) {
        return Err(format!(
            "commands: `{bare}` is not an absolute path or a pattern on one (write e.g. `/usr/bin/{bare}`, or `{ANY_COMMAND}` for any command)"
        ));
    }
    match commands.iter().find(|c| !shell && *c != ANY_COMMAND && !c.contains(['*', '?']) && is_shell(c)) {
        Some(named) => {
            Err(format!("commands: `{named}` is a shell or runs commands for it: it needs shell=yes"))
        }
        None => Ok(commands),
    }
}

fn parse_acl(value: &str) -> Result<AclEntry, String> {
    let f = fields(value)?;
    reject_unknown(
        &f,
        &["run_as", "commands", "shell", "env", "copy", "audit", "max_fanout", "max_time", "max_runs"],
    )?;
    let run_as = list(f.get("run_as").copied().unwrap_or(""), "run_as", plain_word)?;
    if run_as.is_empty() {
        return Err("`run_as=` names no user: the principal could run nothing".into());
    }
    let shell = match f.get("shell").copied().unwrap_or("no") {
        "yes" | "true" => true,
        "no" | "false" => false,
        other => return Err(format!("shell=`{other}` is not yes or no")),
    };
    let commands = parse_commands(f.get("commands").copied().unwrap_or(""), shell)?;
    // Exact names only: `*` is not a name, so no wildcard can pass every variable.
    let env = list(f.get("env").copied().unwrap_or(""), "env", is_var_name)?;
    let audit = match f.get("audit").copied().unwrap_or("no") {
        "yes" | "true" => true,
        "no" | "false" => false,
        other => return Err(format!("audit=`{other}` is not yes or no")),
    };
    let copy = list(f.get("copy").copied().unwrap_or(""), "copy", |p| p == "/" || is_plain_absolute(p))?;
    let defaults = Limits::default();
    let max_fanout = match f.get("max_fanout") {
        Some(t) => {
            u32::try_from(parse_bounded(t, 1, u64::from(MAX_FANOUT_LIMIT))?).unwrap_or(MAX_FANOUT_LIMIT)
        }
        None => defaults.max_fanout,
    };
    let max_time_ms = match f.get("max_time") {
        Some(t) => {
            let ms = parse_duration_ms(t)?;
            if !(1000..=MAX_TIME_LIMIT_MS).contains(&ms) {
                return Err(format!("max_time=`{t}` is not from 1s to 168h"));
            }
            ms
        }
        None => defaults.max_time_ms,
    };
    let max_runs = match f.get("max_runs") {
        Some(t) => u32::try_from(parse_bounded(t, 1, u64::from(MAX_RUNS_LIMIT))?).unwrap_or(MAX_RUNS_LIMIT),
        None => defaults.max_runs,
    };
    let limits = Limits { max_fanout, max_time_ms, max_runs };
    Ok(AclEntry { run_as, commands, shell, env, copy, audit, limits })
}

/// The setting's text for an ACL entry, as `parse_acl` reads it.
pub fn acl_setting(entry: &AclEntry) -> String {
    let join = |set: &BTreeSet<String>| set.iter().cloned().collect::<Vec<_>>().join(",");
    let mut text = format!("run_as={}", join(&entry.run_as));
    if !entry.commands.is_empty() {
        text.push_str(&format!(" commands={}", join(&entry.commands)));
    }
    text.push_str(if entry.shell { " shell=yes" } else { " shell=no" });
    if !entry.env.is_empty() {
        text.push_str(&format!(" env={}", join(&entry.env)));
    }
    if !entry.copy.is_empty() {
        text.push_str(&format!(" copy={}", join(&entry.copy)));
    }
    if entry.audit {
        text.push_str(" audit=yes");
    }
    let l = entry.limits;
    text.push_str(&format!(
        " max_fanout={} max_time={} max_runs={}",
        l.max_fanout,
        format_duration_ms(l.max_time_ms),
        l.max_runs
    ));
    text
}

/// Reads an ACL entry's setting text (for `cohort acl show`).
pub fn parse_acl_setting(value: &str) -> Result<AclEntry, String> {
    parse_acl(value)
}

/// Reads a host's setting text (for `cohort host list`).
pub fn parse_host_setting(value: &str) -> Result<ManagedHost, String> {
    parse_host(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> String {
        hex::encode([byte; 32])
    }

    #[test]
    fn entries_round_trip_through_their_text() {
        let host = ManagedHost {
            address: "127.0.1.2:7100".into(),
            identity: PublicIdentity { signing: [1; 32], agreement: [2; 32] },
        };
        assert_eq!(parse_host(&host.to_setting()), Ok(host.clone()));
        let entry = AclEntry {
            run_as: ["alice".to_owned(), "deploy".to_owned()].into(),
            commands: ["*".to_owned()].into(),
            shell: false,
            env: BTreeSet::new(),
            copy: ["/tmp".to_owned()].into(),
            audit: true,
            limits: Limits { max_fanout: 10, max_time_ms: 1500, max_runs: 5 },
        };
        assert_eq!(parse_acl(&acl_setting(&entry)), Ok(entry.clone()));
        let allowlist = AclEntry {
            commands: ["/usr/bin/uptime".to_owned(), "/opt/app/bin/*".to_owned(), "/bin/bash".to_owned()]
                .into(),
            shell: true,
            env: ["LANG".to_owned(), "TZ".to_owned()].into(),
            audit: false,
            ..entry.clone()
        };
        let text = acl_setting(&allowlist);
        assert!(text.contains("commands=/bin/bash,/opt/app/bin/*,/usr/bin/uptime"), "{text}");
        assert!(text.contains("shell=yes env=LANG,TZ"), "{text}");
        assert_eq!(parse_acl(&text), Ok(allowlist));
        let settings: BTreeMap<String, String> = [
            ("exec.host.h01".to_owned(), host.to_setting()),
            ("exec.acl.alice".to_owned(), acl_setting(&entry)),
            ("exec.max_runs".to_owned(), "7".to_owned()),
            ("group.web".to_owned(), "h01".to_owned()),
            ("other".to_owned(), "x".to_owned()),
        ]
        .into();
        let (directory, errors) = ExecDirectory::from_settings(&settings);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(directory.hosts.get("h01"), Some(&host));
        assert_eq!(directory.acl.principals.get("alice"), Some(&entry));
        assert_eq!(directory.max_runs, 7);
        assert_eq!(directory.groups.get("web").map(String::as_str), Some("h01"));
        assert!(directory.lists("h01", &host.identity));
        assert!(!directory.lists("h01", &PublicIdentity { signing: [1; 32], agreement: [3; 32] }));
    }

    #[test]
    fn bad_entries_are_named_and_refused() {
        let good_host = format!("address=h:1 ed25519={} x25519={}", key(1), key(2));
        let cases = [
            ("exec.host.h01", format!("address=h ed25519={} x25519={}", key(1), key(2)), "HOST:PORT"),
            ("exec.host.h01", format!("address=h:1 ed25519=zz x25519={}", key(2)), "ed25519"),
            ("exec.host.h01", "address=h:1".to_owned(), "missing"),
            ("exec.host.h;1", good_host.clone(), "name"),
            ("exec.host.h01", format!("{good_host} colour=red"), "unknown field `colour`"),
            ("exec.acl.bob", "commands=*".to_owned(), "run_as"),
            ("exec.acl.bob", "run_as=bob shell=maybe".to_owned(), "shell"),
            ("exec.acl.bob", "run_as=bob copy=../etc".to_owned(), "copy"),
            ("exec.acl.bob", "run_as=bob max_fanout=0".to_owned(), "from 1"),
            ("exec.acl.bob", "run_as=bob max_time=5 ".to_owned(), "duration"),
            ("exec.acl.bob", "run_as=bob run_as=root".to_owned(), "twice"),
            ("exec.acl.bob", "run_as=bob commands=echo".to_owned(), "`echo` is not an absolute path"),
            ("exec.acl.bob", "run_as=bob commands=/bin/echo,true".to_owned(), "/usr/bin/true"),
            ("exec.acl.bob", "run_as=bob commands=bin/*".to_owned(), "absolute"),
            ("exec.acl.bob", "run_as=bob commands=/usr/bin/[ab]".to_owned(), "absolute"),
            ("exec.acl.bob", "run_as=bob commands=/bin/bash".to_owned(), "shell=yes"),
            ("exec.acl.bob", "run_as=bob env=*".to_owned(), "env: `*`"),
            ("exec.acl.bob", "run_as=bob env=LANG,1X".to_owned(), "env: `1X`"),
            ("exec.acl.bob", "run_as=bob env=A-B".to_owned(), "env"),
            ("exec.max_runs", "lots".to_owned(), "whole number"),
        ];
        for (key, value, says) in cases {
            let error = check_setting(key, &value).expect_err(key).to_string();
            assert!(error.contains(key) && error.contains(says), "{key}={value}: {error}");
        }
        assert_eq!(check_setting("exec.acl.bob", "run_as=bob"), Ok(()));
        assert_eq!(check_setting("exec.acl.bob", "run_as=bob commands=/usr/bin/*,/bin/echo"), Ok(()));
        assert_eq!(check_setting("exec.acl.bob", "run_as=bob commands=/bin/bash shell=yes"), Ok(()));
        assert_eq!(check_setting("exec.acl.bob", "run_as=bob env=PATH,LD_PRELOAD"), Ok(()));
        assert_eq!(check_setting("unrelated", "anything at all"), Ok(()));
    }

    #[test]
    fn durations_read_as_operators_write_them() {
        assert_eq!(parse_duration_ms("48s"), Ok(48_000));
        assert_eq!(parse_duration_ms("1500ms"), Ok(1500));
        assert_eq!(parse_duration_ms("2m"), Ok(120_000));
        assert_eq!(parse_duration_ms("1h"), Ok(3_600_000));
        assert!(parse_duration_ms("5").is_err() && parse_duration_ms("s").is_err());
    }
}
