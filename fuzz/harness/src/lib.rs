//! The fuzz harnesses: each public function takes the bytes a fuzzer made and feeds them to one
//! of cohort's decoders, or (in [`node`]) to the whole node machine, then checks what must hold
//! whatever the bytes were. A harness panics only when a check fails or the code under test
//! panics: that is a finding. It never decides anything for the code it drives.
//!
//! The same functions serve `cargo fuzz` (the binaries in `fuzz/fuzz_targets/`) and `cargo
//! test` (which feeds each the committed seed corpus and every input a fuzzer ever crashed
//! on, kept in `fuzz/regressions/`), so a crash once found stays a test.

pub mod decoders;
pub mod node;

/// A harness: takes the fuzzer's bytes, panics on a finding.
pub type Harness = fn(&[u8]);

/// Every harness by name, as `cargo fuzz` and the corpus test know them.
pub const TARGETS: &[(&str, Harness)] = &[
    ("frame", decoders::frame),
    ("chunk", decoders::chunk),
    ("wire", decoders::wire),
    ("member_message", decoders::member_message),
    ("nodeset", decoders::nodeset),
    ("policy_file", decoders::policy_file),
    ("policy_check", decoders::policy_check),
    ("lookup_request", decoders::lookup_request),
    ("key_file", decoders::key_file),
    ("web_fields", decoders::web_fields),
    ("node", node::node),
];
