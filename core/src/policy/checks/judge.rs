//! Judging what the driver observed against what a check wants: pass, fail, or error (the
//! observation could not be made), each with a short detail a person can act on. Owns the
//! verdict; the observation is the driver's, made without any rule.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use super::{Check, CheckKind, MAX_DETAIL, MAX_READ, Want, compare_versions};

/// A file as the driver found it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileFacts {
    pub is_file: bool,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// The owner's and group's names, where the system has them.
    pub owner: Option<String>,
    pub group: Option<String>,
    pub size: u64,
    /// The first [`MAX_READ`] bytes, when asked for.
    pub content: Option<Vec<u8>>,
}

/// How a probe's command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    Exited(i32),
    Signalled(i32),
    /// The agent killed it at its time limit.
    TimedOut,
    /// It could not be started.
    NotStarted(String),
}

/// What the driver observed for one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The file, `Ok(None)` when nothing is at the path.
    File(Result<Option<FileFacts>, String>),
    Ran {
        end: RunEnd,
        stdout: Vec<u8>,
    },
    /// Both TCP socket tables, one after the other.
    Sockets(Result<Vec<u8>, String>),
}

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum CheckOutcome {
    Pass,
    Fail,
    /// The check could not be evaluated: it counts as not passing, and says why.
    Error,
}

impl CheckOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckOutcome::Pass => "pass",
            CheckOutcome::Fail => "fail",
            CheckOutcome::Error => "error",
        }
    }
}

/// The verdict on `check` given `seen`, with its detail (at most [`MAX_DETAIL`] characters).
pub fn judge(check: &Check, seen: &Observation) -> (CheckOutcome, String) {
    let (outcome, detail) = verdict(&check.kind, seen);
    (outcome, clip(&detail))
}

fn clip(text: &str) -> String {
    let printable: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    match printable.char_indices().nth(MAX_DETAIL) {
        Some((cut, _)) => format!("{}…", &printable[..cut]),
        None => printable,
    }
}

use CheckOutcome::{Error, Fail, Pass};

fn verdict(kind: &CheckKind, seen: &Observation) -> (CheckOutcome, String) {
    match (kind, seen) {
        (_, Observation::File(Err(e))) | (_, Observation::Sockets(Err(e))) => (Error, e.clone()),
        (CheckKind::File { want: Want::Absent, .. }, Observation::File(Ok(found))) => match found {
            None => (Pass, "absent".into()),
            Some(_) => (Fail, "exists".into()),
        },
        (CheckKind::File { mode, owner, group, .. }, Observation::File(Ok(found))) => {
            let Some(f) = found else { return (Fail, "missing".into()) };
            let owner_name = f.owner.clone().unwrap_or_else(|| f.uid.to_string());
            let group_name = f.group.clone().unwrap_or_else(|| f.gid.to_string());
            if let Some(m) = mode.filter(|m| *m != f.mode) {
                return (Fail, format!("mode {:04o}, wants {m:04o}", f.mode));
            }
            if let Some(o) = owner.as_ref().filter(|o| **o != owner_name && **o != f.uid.to_string()) {
                return (Fail, format!("owner {owner_name}, wants {o}"));
            }
            if let Some(g) = group.as_ref().filter(|g| **g != group_name && **g != f.gid.to_string()) {
                return (Fail, format!("group {group_name}, wants {g}"));
            }
            (Pass, format!("mode {:04o}, owner {owner_name}", f.mode))
        }
        (CheckKind::Contains { pattern, want, .. }, Observation::File(Ok(found))) => {
            let Some(content) = found.as_ref().and_then(|f| f.content.as_ref()) else {
                return match want {
                    Want::Present => (Fail, "the file is missing".into()),
                    Want::Absent => (Pass, "the file is missing".into()),
                };
            };
            let Ok(re) = regex::Regex::new(pattern) else {
                return (Error, "the pattern does not compile".into());
            };
            let text = String::from_utf8_lossy(content);
            let hit = text.lines().enumerate().find(|(_, line)| re.is_match(line)).map(|(n, _)| n + 1);
            let partial = if content.len() >= MAX_READ { " (first MiB read)" } else { "" };
            match (hit, want) {
                (Some(n), Want::Present) => (Pass, format!("line {n} matches")),
                (Some(n), Want::Absent) => (Fail, format!("line {n} matches")),
                (None, Want::Present) => (Fail, format!("no line matches{partial}")),
                (None, Want::Absent) => (Pass, format!("no line matches{partial}")),
            }
        }
        (CheckKind::Sysctl { value, .. }, Observation::File(Ok(found))) => {
            let Some(content) = found.as_ref().and_then(|f| f.content.as_ref()) else {
                return (Error, "no such sysctl".into());
            };
            let normal = |t: &str| t.split_whitespace().collect::<Vec<_>>().join(" ");
            let have = normal(&String::from_utf8_lossy(content));
            match have == normal(value) {
                true => (Pass, format!("= {have}")),
                false => (Fail, format!("= {have}, wants {value}")),
            }
        }
        (CheckKind::Unit { active, .. }, Observation::Ran { end, stdout }) => match end {
            RunEnd::NotStarted(e) => (Error, format!("systemctl did not start: {e}")),
            RunEnd::TimedOut => (Error, "systemctl did not answer in time".into()),
            _ => {
                let state = String::from_utf8_lossy(stdout).trim().to_owned();
                let state = if state.is_empty() { "unknown".to_owned() } else { state };
                match (state == "active", active) {
                    (true, true) | (false, false) => (Pass, state),
                    (true, false) => (Fail, "active, wants inactive".into()),
                    (false, true) => (Fail, format!("{state}, wants active")),
                }
            }
        },
        (CheckKind::Port { port, listening }, Observation::Sockets(Ok(tables))) => {
            let open = listens(&String::from_utf8_lossy(tables), *port);
            match (open, listening) {
                (true, true) => (Pass, format!("{port} listening")),
                (false, false) => (Pass, format!("{port} closed")),
                (true, false) => (Fail, format!("{port} listening, wants closed")),
                (false, true) => (Fail, format!("nothing listens on {port}")),
            }
        }
        (CheckKind::Package { min, .. }, Observation::Ran { end, stdout }) => match end {
            RunEnd::NotStarted(e) => (Error, format!("the package tool did not start: {e}")),
            RunEnd::TimedOut => (Error, "the package tool did not answer in time".into()),
            RunEnd::Signalled(_) => (Error, "the package tool was killed".into()),
            RunEnd::Exited(code) => {
                let text = String::from_utf8_lossy(stdout);
                let (status, version) = text.split_once('\t').unwrap_or(("", ""));
                let installed = *code == 0 && status.split_whitespace().last() == Some("installed");
                match (installed, min) {
                    (false, _) => (Fail, "not installed".into()),
                    (true, Some(min)) if compare_versions(version.trim(), min) == Ordering::Less => {
                        (Fail, format!("{}, wants {min} or later", version.trim()))
                    }
                    (true, _) => (Pass, version.trim().to_owned()),
                }
            }
        },
        (CheckKind::Command { timeout, .. }, Observation::Ran { end, .. }) => match end {
            RunEnd::Exited(0) => (Pass, "exit 0".into()),
            RunEnd::Exited(code) => (Fail, format!("exit {code}")),
            RunEnd::Signalled(signal) => (Fail, format!("killed by signal {signal}")),
            RunEnd::TimedOut => (Fail, format!("still running after {} s", timeout.as_secs())),
            RunEnd::NotStarted(e) => (Error, format!("did not start: {e}")),
        },
        _ => (Error, "the observation does not fit the check".into()),
    }
}

/// Whether a TCP socket in the `/proc/net/tcp{,6}` tables listens on `port`.
fn listens(tables: &str, port: u16) -> bool {
    const LISTEN: &str = "0A";
    tables.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local_port =
            fields.get(1).and_then(|a| a.rsplit_once(':')).and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
        fields.get(3) == Some(&LISTEN) && local_port == Some(port)
    })
}
