//! `cohort completions bash` is a script bash sources and completes from; `cohort install-man`
//! writes pages `man -l` renders.

mod common;

use std::process::Command;

use common::{cohort, path_str};

#[test]
fn bash_sources_the_completions_and_completes_a_subcommand() {
    let out = cohort(&["completions", "bash"]);
    assert!(out.status.success());
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("cohort.bash");
    std::fs::write(&script, &out.stdout).expect("written");
    // Source it, then ask the completion function what follows `cohort no`.
    let probe = format!(
        "set -e; source {}; COMP_WORDS=(cohort no); COMP_CWORD=1; COMP_LINE='cohort no'; COMP_POINT=9; \
         _cohort cohort no cohort; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        path_str(&script)
    );
    let bash =
        Command::new("bash").args(["--norc", "--noprofile", "-c", &probe]).output().expect("bash runs");
    let stderr = String::from_utf8_lossy(&bash.stderr);
    assert!(bash.status.success(), "sourcing failed: {stderr}");
    assert!(stderr.is_empty(), "bash complained: {stderr}");
    let offered = String::from_utf8_lossy(&bash.stdout);
    assert!(offered.lines().any(|l| l == "node"), "completions for `cohort no`: {offered}");
}

#[test]
fn man_renders_the_generated_pages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = cohort(&["install-man", "--dir", path_str(dir.path())]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for page in ["cohort.1", "cohort-exec.1", "cohort-admin-operator-add.1"] {
        let path = dir.path().join(page);
        assert!(path.exists(), "{page} was not written");
        let man =
            Command::new("man").arg("-l").arg(&path).env("MANPAGER", "cat").env("MANWIDTH", "100").output();
        let Ok(man) = man else {
            println!("skipped rendering: `man` is not installed (apt-get install man-db)");
            return;
        };
        let text = String::from_utf8_lossy(&man.stdout);
        assert!(man.status.success(), "man -l {page}: {}", String::from_utf8_lossy(&man.stderr));
        assert!(text.contains("NAME") && text.contains("SYNOPSIS"), "{page} rendered as {text}");
    }
}
