//! One generation of the crypto crates across the tree (DESIGN.md, "Identity and cryptography"):
//! `cargo tree -d` must list no second copy of any of them.

use std::process::Command;

const CRYPTO_CRATES: &[&str] = &[
    "snow",
    "hpke",
    "ed25519-dalek",
    "x25519-dalek",
    "curve25519-dalek",
    "chacha20poly1305",
    "chacha20",
    "poly1305",
    "sha2",
    "argon2",
    "rand_chacha",
    "rand_core",
];

#[test]
fn cargo_tree_d_lists_no_second_copy_of_a_crypto_crate() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        // Every edge kind, dev-dependencies included: what `cargo tree -d` shows.
        .args(["tree", "--workspace", "-d", "--depth", "0", "--prefix", "none", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(output.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&output.stderr));
    let listing = String::from_utf8_lossy(&output.stdout);
    let duplicated: Vec<&str> = listing
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| CRYPTO_CRATES.contains(name))
        .collect();
    // turmoil is pinned to 0.7.0 and proptest to 1.6 because their later releases bring rand 0.9,
    // a second rand_core and rand_chacha.
    assert!(duplicated.is_empty(), "duplicated crypto crates: {duplicated:?}\n{listing}");
}

#[test]
fn core_sees_exactly_one_rand_core_and_rand_chacha() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args(["tree", "-p", "cohort-core", "-e", "normal", "--prefix", "none", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(output.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&output.stderr));
    let listing = String::from_utf8_lossy(&output.stdout);
    for name in CRYPTO_CRATES {
        let mut versions: Vec<&str> = listing
            .lines()
            .filter(|l| l.split_whitespace().next() == Some(name))
            .filter_map(|l| l.split_whitespace().nth(1))
            .collect();
        versions.sort_unstable();
        versions.dedup();
        assert!(versions.len() <= 1, "core depends on {name} {versions:?}");
    }
}
