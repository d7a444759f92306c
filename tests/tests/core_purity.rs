//! cohort-core must never touch the operating system (DESIGN.md, "The sans-IO contract"). This
//! test reads core's sources and fails on any use of sockets, files, processes, threads, clocks,
//! OS randomness or HashMap/HashSet (whose iteration order is not deterministic).

use std::path::{Path, PathBuf};

/// Forbidden in core, with the reason shown when one appears.
const FORBIDDEN: &[(&str, &str)] = &[
    ("std::net", "sockets belong to the drivers"),
    ("std::fs", "files belong to the drivers"),
    ("std::process", "processes belong to the drivers"),
    ("std::thread", "threads belong to the drivers"),
    ("std::os", "OS access belongs to the drivers"),
    ("std::env", "the environment belongs to the drivers"),
    ("Instant::now", "time enters as a value"),
    ("SystemTime", "wall-clock time enters as a value"),
    ("OsRng", "randomness comes from the seeded rng"),
    ("thread_rng", "randomness comes from the seeded rng"),
    ("from_entropy", "randomness comes from the seeded rng"),
    ("from_os_rng", "randomness comes from the seeded rng"),
    ("getrandom", "randomness comes from the seeded rng"),
    ("rand::random", "randomness comes from the seeded rng"),
    ("HashMap", "iteration order must be deterministic: use BTreeMap"),
    ("HashSet", "iteration order must be deterministic: use BTreeSet"),
    ("tokio", "async runtimes belong to the drivers"),
    ("mio", "event loops belong to the drivers"),
];

/// Crate-level paths that a grouped import could reach: `use std::{fs, net};`.
const FORBIDDEN_STD_ITEMS: &[&str] = &["net", "fs", "process", "thread", "os", "env"];

/// Every violation in `source`, as `line: pattern (reason)`. Comments are skipped.
fn violations(source: &str) -> Vec<String> {
    let mut found = Vec::new();
    let code: String = source
        .lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    for (number, line) in code.lines().enumerate() {
        let compact: String = line.chars().filter(|c| !c.is_whitespace()).collect();
        for (pattern, reason) in FORBIDDEN {
            let hit = if pattern.contains(':') {
                compact.contains(pattern)
            } else {
                contains_word(&compact, pattern)
            };
            if hit {
                found.push(format!("line {}: {pattern} ({reason})", number + 1));
            }
        }
    }
    // Grouped imports may span lines: look at the compacted whole file.
    let compact: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    let mut rest = compact.as_str();
    while let Some(at) = rest.find("std::{") {
        let group = &rest[at + 6..];
        let end = group.find('}').unwrap_or(group.len());
        for item in group[..end].split(',') {
            let head = item.split("::").next().unwrap_or("");
            if FORBIDDEN_STD_ITEMS.contains(&head) {
                found.push(format!("grouped import std::{{{head}}}"));
            }
        }
        rest = &group[end..];
    }
    found
}

fn contains_word(haystack: &str, word: &str) -> bool {
    haystack.match_indices(word).any(|(at, _)| {
        let before = haystack[..at].chars().next_back();
        let after = haystack[at + word.len()..].chars().next();
        let is_ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        !is_ident(before) && !is_ident(after)
    })
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("core/src is readable") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn core_touches_no_operating_system_facility() {
    let core_src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/src");
    let mut files = Vec::new();
    rust_files(&core_src, &mut files);
    assert!(files.len() >= 5, "expected core's sources under {}", core_src.display());
    let mut report = Vec::new();
    for file in files {
        let source = std::fs::read_to_string(&file).expect("readable source");
        for v in violations(&source) {
            report.push(format!("{}: {v}", file.display()));
        }
    }
    assert!(report.is_empty(), "core/ must stay pure:\n{}", report.join("\n"));
}

#[test]
fn core_manifest_enables_no_os_randomness() {
    let manifest = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/Cargo.toml"))
        .expect("core/Cargo.toml");
    for bad in ["getrandom", "\"std\"", "ring"] {
        assert!(!manifest.contains(bad), "core/Cargo.toml must not enable {bad}");
    }
}

#[test]
fn the_checker_catches_what_it_claims_to() {
    let samples = [
        "use std::net::TcpStream;",
        "let t = std::time::Instant::now();",
        "let t = SystemTime::now();",
        "use std::{collections::BTreeMap, fs};",
        "use std::{\n    io,\n    process::Command,\n};",
        "let mut rng = rand::rngs::OsRng;",
        "let m: HashMap<u8, u8> = HashMap::new();",
        "std :: thread :: spawn(|| {});",
    ];
    for sample in samples {
        assert!(!violations(sample).is_empty(), "missed a violation in {sample:?}");
    }
    let clean = ["use std::collections::BTreeMap; // std::fs in a comment is fine", "let hashmapish = 1;"];
    for sample in clean {
        assert!(violations(sample).is_empty(), "false alarm in {sample:?}: {:?}", violations(sample));
    }
}
