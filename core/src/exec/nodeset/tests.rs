//! Unit tests of node set parsing, arithmetic and folding; the table of ClusterShell's own answers
//! is in `tests/tests/nodeset_table.rs`.

use super::*;

fn no_groups(_: &str) -> Option<String> {
    None
}

fn folded(text: &str) -> String {
    NodeSet::parse(text, &no_groups).expect("parses").fold()
}

#[test]
fn ranges_lists_and_padding_expand_in_clustershell_order() {
    assert_eq!(
        expand("web[01-03,10],db[1-2]", &no_groups).expect("expands"),
        ["db1", "db2", "web01", "web02", "web03", "web10"]
    );
    assert_eq!(expand("a[1-2]-b[1-2]", &no_groups).expect("expands"), ["a1-b1", "a1-b2", "a2-b1", "a2-b2"]);
    assert_eq!(expand("h1,h1,h2", &no_groups).expect("expands"), ["h1", "h2"]);
    assert_eq!(expand("h[1-10/3]", &no_groups).expect("expands"), ["h1", "h4", "h7", "h10"]);
}

#[test]
fn operators_apply_left_to_right() {
    assert_eq!(folded("a[1-5]!a3,a9"), "a[1-2,4-5,9]");
    assert_eq!(folded("a[1-5]&a[3-8],b1"), "a[3-5],b1");
    assert_eq!(folded("a[1-5]^a[4-7]"), "a[1-3,6-7]");
    assert_eq!(count("a[1-5]!a[1-5]", &no_groups), Ok(0));
}

#[test]
fn groups_resolve_through_the_caller() {
    let groups = |name: &str| (name == "web").then(|| "w[1-2]".to_owned());
    assert_eq!(expand("@web,db1", &groups).expect("expands"), ["db1", "w1", "w2"]);
    assert_eq!(expand("w[1-5]!@web", &groups).expect("expands"), ["w3", "w4", "w5"]);
    assert_eq!(expand("@nope", &groups), Err(NodeSetError::UnknownGroup("nope".into())));
    let looping = |_: &str| Some("@self".to_owned());
    assert!(matches!(expand("@self", &looping), Err(NodeSetError::Recursive(_))));
    let doubling = |name: &str| Some(format!("@{name}x,@{name}y"));
    assert!(expand("@g", &doubling).is_err());
}

#[test]
fn bad_sets_are_errors_not_panics_or_huge_allocations() {
    assert!(matches!(expand("h[1-", &no_groups), Err(NodeSetError::Unclosed(_))));
    assert!(matches!(expand("h]", &no_groups), Err(NodeSetError::Unopened(_))));
    assert!(matches!(expand("h[a-b]", &no_groups), Err(NodeSetError::BadRange(..))));
    assert!(matches!(expand("h[5-1]", &no_groups), Err(NodeSetError::Backwards(_))));
    // A missing bound stays an error when digits follow the bracket (found by fuzzing: `[-19]1`
    // read as `[1-191/10]`).
    for missing in ["n[-19]1", "[-19]1", "n[5-]0", "n[1,-3]2"] {
        assert!(matches!(expand(missing, &no_groups), Err(NodeSetError::BadRange(..))), "{missing}");
    }
    assert!(matches!(expand("h[1-5/0]", &no_groups), Err(NodeSetError::BadStep(_))));
    assert!(matches!(expand("h[01-100]", &no_groups), Err(NodeSetError::PaddingMismatch(_))));
    assert!(matches!(expand("a,", &no_groups), Err(NodeSetError::MissingOperand { op: ',', .. })));
    assert_eq!(expand("h[1-99999999999]", &no_groups), Err(NodeSetError::TooLarge));
    assert_eq!(expand("h[1-99999999]&h1", &no_groups), Err(NodeSetError::TooLarge));
    assert_eq!(expand("a[1-1000]b[1-1000]", &no_groups), Err(NodeSetError::TooLarge));
    assert_eq!(expand("a[1-60000],b[1-60000]", &no_groups), Err(NodeSetError::TooLarge));
    assert!(matches!(expand("h;rm -rf /", &no_groups), Err(NodeSetError::BadName(_))));
    assert!(matches!(expand("h%s", &no_groups), Err(NodeSetError::BadName(_))));
    assert_eq!(expand("  ", &no_groups), Err(NodeSetError::Empty));
    assert_eq!(expand(&"a,".repeat(40_000), &no_groups), Err(NodeSetError::TooLong));
}

#[test]
fn folding_matches_clustershell() {
    let hosts = expand("h[01-50]", &no_groups).expect("expands");
    assert_eq!(fold(&hosts), "h[01-50]");
    assert_eq!(fold(&["web3", "web1", "web2", "db", "web7"]), "db,web[1-3,7]");
    assert_eq!(fold(&["n1.rack2", "n1.rack3"]), "n1.rack[2-3]");
    assert_eq!(fold(&["h09", "h10", "h7"]), "h[7,09-10]");
    assert_eq!(fold(&["n01", "n2", "n03"]), "n[2,01,03]");
    assert_eq!(fold(&["solo9"]), "solo9");
    assert_eq!(folded("h[1-10/2]"), "h[1,3,5,7,9]");
    let pairs = ["web1-eth0", "web1-eth1", "web2-eth0", "web2-eth1", "web3-eth0", "web3-eth1"];
    assert_eq!(fold(&pairs), "web[1-3]-eth[0-1]");
    assert_eq!(folded("web[1-3]-eth0,web1-eth1"), "web[2-3]-eth0,web1-eth[0-1]");
}

#[test]
fn the_typed_set_does_set_arithmetic() {
    let a = NodeSet::parse("n[1-10]", &no_groups).expect("parses");
    let b = NodeSet::parse("n[5-15]", &no_groups).expect("parses");
    assert_eq!(a.union(&b).expect("fits").fold(), "n[1-15]");
    assert_eq!(a.difference(&b).expect("fits").fold(), "n[1-4]");
    assert_eq!(a.intersection(&b).expect("fits").fold(), "n[5-10]");
    assert_eq!(a.symmetric_difference(&b).expect("fits").fold(), "n[1-4,11-15]");
    assert_eq!(a.len(), 10);
    assert!(a.contains("n7") && !a.contains("n11") && !a.contains("m7"));
    let grid = NodeSet::parse("r[1-2]n[1-3]", &no_groups).expect("parses");
    assert!(grid.contains("r2n3") && !grid.contains("r3n1"));
}

#[test]
fn a_large_multi_number_set_folds_quickly() {
    let set = NodeSet::parse("a[1-300]b[1-300]!a7b7", &no_groups).expect("parses");
    assert_eq!(set.fold(), "a[1-6,8-300]b[1-300],a7b[1-6,8-300]");
    assert_eq!(set.len(), 89_999);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn fold_then_expand_gives_back_the_same_hosts(numbers in prop::collection::btree_set(0u64..500, 1..40), padded in any::<bool>()) {
            let hosts: Vec<String> = numbers.iter().map(|n| if padded { format!("h{n:03}") } else { format!("h{n}") }).collect();
            let folded = fold(&hosts);
            let mut back = expand(&folded, &no_groups).expect("folded sets expand");
            back.sort();
            let mut want = hosts.clone();
            want.sort();
            prop_assert_eq!(back, want);
        }

        #[test]
        fn two_number_sets_fold_back_to_themselves(points in prop::collection::btree_set((0u8..6, 0u8..6), 1..30)) {
            let hosts: Vec<String> = points.iter().map(|(a, b)| format!("r{a}n{b}")).collect();
            let folded = fold(&hosts);
            let mut back = expand(&folded, &no_groups).expect("folded sets expand");
            back.sort();
            let mut want = hosts.clone();
            want.sort();
            prop_assert_eq!(back, want);
        }

        #[test]
        fn any_text_expands_or_errors_without_panicking(text in ".{0,60}") {
            let _ = expand(&text, &no_groups);
        }

        #[test]
        fn node_set_syntax_never_panics(text in "[a-c0-9\\[\\]\\-,!&^/ @]{0,40}") {
            let groups = |name: &str| (name.len() < 3).then(|| "a[1-3]".to_owned());
            let _ = expand(&text, &groups);
        }
    }
}
