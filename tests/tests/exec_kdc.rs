//! The KDC as its own role on its own simulated machine, through the one turmoil host driver: the
//! gateway asks it over a channel per request and keeps nothing; a credential outlives a gateway
//! crash between login and exec; a KDC that cannot be reached makes a login fail with a clear,
//! audited reason instead of hanging.

use std::time::Duration;

use cohort_core::exec::gateway::{HeldState, HostOutcome};
use cohort_io_sim::exec_site::{GATEWAY_PORT, KDC_PORT, PASSWORD, Site, SiteSpec, host_results};

fn all_ok(events: &[cohort_core::exec::gateway::ClientEvent], hosts: usize) -> Result<(), String> {
    let results = host_results(events);
    if results.len() != hosts || results.iter().any(|r| r.outcome != HostOutcome::Exited(0)) {
        return Err(format!("not every host ran: {results:?}"));
    }
    Ok(())
}

#[test]
fn login_and_exec_go_through_a_kdc_on_another_machine_and_the_gateway_keeps_nothing() {
    let spec = SiteSpec::new(4, 61);
    let run = Site::run_checked(&spec, |client| async move {
        let login = client.login("alice", PASSWORD).await?;
        all_ok(&client.exec(&login, &["h[01-04]"], &["/usr/bin/echo", "hi"]).await?, 4)
    });
    // The gateway dialled the KDC's machine, once for the login and once for the run's tickets;
    // it listens for clients only.
    let to_kdc = format!("to kdc:{KDC_PORT}");
    let dials = run.trace.lines().iter().filter(|l| l.contains(" gw ") && l.contains(&to_kdc)).count();
    assert_eq!(dials, 2, "{}", run.trace.lines().join("\n"));
    let gw_listens_on = |port: u16| {
        run.trace
            .lines()
            .iter()
            .any(|l| l.contains(" gw ") && l.contains("-> Listen") && l.ends_with(&format!(":{port}")))
    };
    assert!(gw_listens_on(GATEWAY_PORT));
    assert!(!gw_listens_on(KDC_PORT), "the KDC is not on the gateway's machine");
    // No run, session, credential, ticket or question to the KDC held after the run.
    assert_eq!(run.state.gateway, HeldState::default());
}

#[test]
fn a_credential_still_works_after_the_gateway_crashed_between_login_and_exec() {
    let mut spec = SiteSpec::new(3, 62);
    spec.gateway_outage = Some((Duration::from_secs(2), Duration::from_secs(1)));
    let run = Site::run_checked(&spec, |client| async move {
        let login = client.login("alice", PASSWORD).await?;
        // The gateway goes down at 2 s and is back at 3 s, with nothing of this login kept.
        tokio::time::sleep(Duration::from_secs(4)).await;
        all_ok(&client.exec(&login, &["h[01-03]"], &["/usr/bin/echo", "after"]).await?, 3)
    });
    // The gateway really started twice: it opened its client listener at boot and again at 3 s.
    let listens = run
        .trace
        .lines()
        .iter()
        .filter(|l| l.contains(" gw ") && l.contains("-> Listen") && l.ends_with(&format!(":{GATEWAY_PORT}")))
        .count();
    assert_eq!(listens, 2);
}

#[test]
fn a_login_while_the_kdc_cannot_be_reached_fails_with_a_clear_audited_reason() {
    let mut spec = SiteSpec::new(2, 63);
    spec.kdc_reachable = false;
    let run = Site::run_checked(&spec, |client| async move {
        match client.login("alice", PASSWORD).await {
            Ok(_) => Err("logged in without a KDC".into()),
            Err(reason) if reason.contains("the KDC could not be reached") => Ok(()),
            Err(reason) => Err(format!("unclear refusal: {reason}")),
        }
    });
    let audited = run.chain.iter().any(|e| {
        matches!(&e.record.decision, cohort_core::exec::audit::AuditDecision::Denied { reason }
            if reason.contains("the KDC could not be reached"))
    });
    assert!(audited, "the refusal is in the audit chain: {:?}", run.chain);
    assert_eq!(run.state.gateway, HeldState::default());
}

#[test]
fn a_run_larger_than_a_ticket_batch_asks_the_kdc_batch_by_batch_and_runs_everywhere() {
    // Fan-out 2 asks for 16 tickets ahead at a time: 40 hosts take several questions, and a
    // session that starts while a question is out waits for the next one instead of failing.
    let spec = SiteSpec::new(40, 64);
    let run = Site::run_checked(&spec, |client| async move {
        let login = client.login("alice", PASSWORD).await?;
        let mut command = client.command(&login.credential, &["h[01-40]"], &["/usr/bin/echo", "hi"]);
        command.fanout = 2;
        all_ok(&client.run(&login.keys, command).await?, 40)
    });
    let to_kdc = format!("to kdc:{KDC_PORT}");
    let dials = run.trace.lines().iter().filter(|l| l.contains(" gw ") && l.contains(&to_kdc)).count();
    // One for the login, then at least three batches (16 + 16 + 8).
    assert!(dials >= 4, "{dials} dials to the KDC");
    assert_eq!(run.state.gateway, HeldState::default(), "nothing held after the run");
}
