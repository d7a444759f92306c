//! `cohort change sign` writes a request a member accepts; `cohort change show` checks it and
//! refuses one altered after signing.

use std::process::Command;

use cohort_core::member::ChangeRequest;
use cohort_core::signed::Signed;

fn cohort(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cohort")).args(args).output().expect("cohort runs")
}

#[test]
fn a_signed_request_verifies_and_an_altered_one_does_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("op.key");
    let req = dir.path().join("req.bin");
    let (key, req) = (key.to_str().expect("utf-8"), req.to_str().expect("utf-8"));
    assert!(cohort(&["keygen", "--out", key]).status.success());
    let base = "3@00112233445566778899aabbccddeeff";
    let signed = cohort(&[
        "change",
        "sign",
        "--key",
        key,
        "--cluster",
        "prod",
        "--base",
        base,
        "--set",
        "dns=10.0.0.53",
        "--out",
        req,
    ]);
    assert!(signed.status.success(), "{}", String::from_utf8_lossy(&signed.stderr));

    let bytes = std::fs::read(req).expect("written");
    let request: Signed<ChangeRequest> = cohort_core::wire::decode(&bytes).expect("a change request");
    assert_eq!(request.body.cluster_id, "prod");
    assert_eq!(request.body.base.to_full_string(), base);
    assert!(request.verify_with_signing_key(&request.body.operator).is_ok());

    let shown = cohort(&["change", "show", req]);
    assert!(shown.status.success());
    assert!(String::from_utf8_lossy(&shown.stdout).contains("signature  valid"));

    // Alter the value after signing: "10.0.0.53" → "10.0.0.54".
    let at = bytes.windows(9).position(|w| w == b"10.0.0.53").expect("the value is in the request");
    let mut altered = bytes.clone();
    altered[at + 8] = b'4';
    std::fs::write(req, altered).expect("written");
    let shown = cohort(&["change", "show", req]);
    assert!(!shown.status.success());
    assert!(String::from_utf8_lossy(&shown.stderr).contains("does not verify"));
}
