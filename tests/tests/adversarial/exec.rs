//! Attacks on the execution tier: an audit record submitted to the collector again. The
//! gateway (with its collector) and the hosts are core nodes on the turmoil driver.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cohort_core::exec::audit::{AuditDecision, AuditRecord};
use cohort_core::exec::wire::GatewayReply;
use cohort_core::signed::Signed;
use cohort_io_sim::clock::now;
use cohort_io_sim::exec_site::{Site, SiteSpec};

#[test]
fn an_audit_record_submitted_again_is_not_appended_twice_and_is_logged() {
    let site = Site::new(&SiteSpec::new(2, 361)).expect("builds");
    let h01 = site.host_keys[0].clone();
    let answers = Arc::new(Mutex::new(Vec::new()));
    let seen = answers.clone();
    let run = site.run(Duration::from_secs(1), |client| async move {
        let record = AuditRecord {
            host: "h01".into(),
            principal: "alice".into(),
            run_as: "alice".into(),
            argv: vec!["/usr/bin/true".into()],
            at: now().wall,
            decision: AuditDecision::Run,
            run_id: [9; 16],
            data: Vec::new(),
        };
        let signed = Signed::sign(record, &h01).map_err(|e| e.to_string())?;
        // The host's own submission, then the same bytes from someone who read them (the audit
        // view shows each record's signature) on a channel of its own.
        let first = client.submit_audit(&h01, signed.clone()).await?;
        let replay = client.submit_audit(&client.new_keys(), signed).await?;
        seen.lock().map_err(|e| e.to_string())?.extend([first, replay]);
        Ok(())
    });
    assert_eq!(run.violation, None);
    assert_eq!(run.script, Ok(()));
    let answers = answers.lock().expect("answers").clone();
    assert!(
        matches!(answers[..], [GatewayReply::AuditAck { .. }, GatewayReply::AuditAck { .. }]),
        "both are answered as durable: {answers:?}"
    );
    assert_eq!(run.chain.len(), 1, "appended once");
    assert!(run.chain[0].record.run_id == [9; 16]);
    let logged = run.trace.lines().iter().any(|l| l.contains("came again (a lost answer or a replay)"));
    assert!(logged, "the collector logs the second copy");
}
