//! The exec directory in simulation, through the one turmoil host driver: a daemon whose
//! installed configuration no longer lists its host refuses on its own (even while the gateway
//! and the KDC still send it work), and the gateway holds a run to the principal's ceilings
//! (fan-out, T1+T2, runs at once), telling the client and the audit trail.

use std::time::Duration;

use cohort_core::exec::acl::Limits;
use cohort_core::exec::audit::AuditDecision;
use cohort_core::exec::gateway::{Ceiling, ClientEvent, HostOutcome};
use cohort_io_sim::exec_site::{PASSWORD, Site, SiteSpec, host_results};

#[test]
fn a_daemon_whose_configuration_no_longer_lists_its_host_refuses_and_audits_it() {
    let mut spec = SiteSpec::new(3, 71);
    spec.unlisted = [1].into();
    let run = Site::run_checked(&spec, |client| async move {
        let login = client.login("alice", PASSWORD).await?;
        let events = client.exec(&login, &["h[01-03]"], &["/usr/bin/echo", "hi"]).await?;
        let results = host_results(&events);
        for r in &results {
            match (r.host.as_str(), &r.outcome) {
                ("h02", HostOutcome::Denied(reason)) if reason.contains("not a managed host") => {}
                ("h01" | "h03", HostOutcome::Exited(0)) => {}
                _ => return Err(format!("unexpected result: {r:?}")),
            }
        }
        if results.len() == 3 { Ok(()) } else { Err(format!("{results:?}")) }
    });
    let denied = run.chain.iter().any(|e| {
        e.record.host == "h02"
            && matches!(&e.record.decision, AuditDecision::Denied { reason } if reason.contains("not a managed host"))
    });
    assert!(denied, "h02's own refusal is in the chain: {:?}", run.chain);
}

#[test]
fn the_gateway_lowers_a_run_to_the_principals_ceilings_and_refuses_one_run_too_many() {
    let mut spec = SiteSpec::new(4, 72);
    let entry = spec.acl.principals.get_mut("alice").expect("alice's entry");
    entry.limits = Limits { max_fanout: 2, max_time_ms: 10_000, max_runs: 1 };
    let run = Site::run_checked(&spec, |client| async move {
        let login = client.login("alice", PASSWORD).await?;
        let mut command = client.command(&login.credential, &["h[01-04]"], &["/usr/bin/echo", "hi"]);
        command.fanout = 1000;
        command.t2_ms = 100_000_000;
        let events = client.run(&login.keys, command).await?;
        let lowered = events.iter().find_map(|e| match e {
            ClientEvent::Lowered(l) => Some(l.ceilings.clone()),
            _ => None,
        });
        let expected = vec![
            Ceiling::Fanout { asked: 1000, granted: 2 },
            Ceiling::Time { asked_ms: 100_016_000, granted_ms: 10_000 },
        ];
        if lowered != Some(expected) {
            return Err(format!("not told of the ceilings: {events:?}"));
        }
        if host_results(&events).iter().filter(|r| r.outcome == HostOutcome::Exited(0)).count() != 4 {
            return Err(format!("the lowered run did not run everywhere: {events:?}"));
        }
        // One run at a time: a second while the first sleeps is refused, and says why.
        let first = client.exec(&login, &["h01"], &["/usr/bin/sleep", "2"]);
        let second = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            client.exec(&login, &["h02"], &["/usr/bin/echo", "second"]).await
        };
        let (first, second) = tokio::join!(first, second);
        match second?.last() {
            Some(ClientEvent::Refused { reason }) if reason.contains("its limit of 1") => {}
            other => return Err(format!("the second run was not refused: {other:?}")),
        }
        all_exited(&first?)
    });
    let gateway_records: Vec<&AuditDecision> =
        run.chain.iter().filter(|e| e.record.host == "gateway").map(|e| &e.record.decision).collect();
    assert!(
        gateway_records.iter().any(|d| matches!(d, AuditDecision::Lowered { ceilings } if ceilings.contains("fan-out 1000 lowered to 2"))),
        "{gateway_records:?}"
    );
    assert!(
        gateway_records
            .iter()
            .any(|d| matches!(d, AuditDecision::Denied { reason } if reason.contains("its limit of 1"))),
        "{gateway_records:?}"
    );
}

fn all_exited(events: &[ClientEvent]) -> Result<(), String> {
    let results = host_results(events);
    if !results.is_empty() && results.iter().all(|r| r.outcome == HostOutcome::Exited(0)) {
        Ok(())
    } else {
        Err(format!("{events:?}"))
    }
}
