//! Every input kept for a harness runs through it in `cargo test`: the seed corpus in
//! `fuzz/corpus/TARGET/` (what the fuzzer found worth keeping, minimised) and every input a
//! fuzzer ever crashed on, in `fuzz/regressions/TARGET/`. A crash once found stays a test.

use std::path::{Path, PathBuf};

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> =
        entries.filter_map(|e| Some(e.ok()?.path())).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

#[test]
fn every_kept_input_runs_through_its_harness_without_a_finding() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut ran = 0;
    for (name, harness) in cohort_fuzz::TARGETS {
        let kept = [fuzz.join("corpus").join(name), fuzz.join("regressions").join(name)];
        for input in kept.iter().flat_map(|dir| inputs(dir)) {
            let bytes = std::fs::read(&input).expect("a kept input reads");
            let outcome = std::panic::catch_unwind(|| harness(&bytes));
            assert!(outcome.is_ok(), "{name}: {} is a finding again", input.display());
            ran += 1;
        }
    }
    assert!(ran > 0, "no kept input was found under {}", fuzz.display());
}

/// Each harness has a corpus to start from, and each target binary names a harness.
#[test]
fn every_harness_has_a_seed_corpus_and_a_target() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (name, _) in cohort_fuzz::TARGETS {
        assert!(!inputs(&fuzz.join("corpus").join(name)).is_empty(), "{name} has no seed corpus");
        let target = fuzz.join("fuzz_targets").join(format!("{name}.rs"));
        assert!(target.is_file(), "no cargo-fuzz target {}", target.display());
    }
}
