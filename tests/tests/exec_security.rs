//! Parallel secure execution through the one turmoil host driver: a gateway node and an exec node
//! playing the hosts, each the core `Node` that ships. A run on many hosts, and every refusal the
//! exec rules name (expired ticket, ticket for another host, replayed authenticator, clock skew,
//! unknown principal, wrong password, ACL denial, no credential, a second Start, a record in
//! another host's name): each refused with a clear error, none spawns a process, each denial
//! audited; the gateway keeps nothing afterwards. The node-host invariants (nothing runs before
//! its audit record is durable at its host and in the chain; the chain verifies after every
//! append) hold in every scenario.

use std::time::Duration;

use cohort_core::exec::audit::{AuditDecision, AuditRecord, verify_chain};
use cohort_core::exec::daemon::{DaemonSettings, ExecRequest, HostWire};
use cohort_core::exec::gateway::{ClientEvent, ClientRequest, HeldState, HostOutcome};
use cohort_core::exec::kdc::KdcSettings;
use cohort_core::exec::task::Task;
use cohort_core::exec::ticket::{Authenticator, ServiceTicket, TicketBody, TicketKey, request_digest};
use cohort_core::exec::wire::{GatewayReply, GatewayWire, HostEvent, HostFrame};
use cohort_core::rng::seeded;
use cohort_core::signed::Signed;
use cohort_core::{NodeKeys, WallClock};
use cohort_io_sim::clock::now;
use cohort_io_sim::exec_site::{PASSWORD, Site, SiteClient, SiteSpec, host_results};
use cohort_io_sim::operator::Conversation;

fn refused(events: &[ClientEvent]) -> Option<String> {
    events.iter().find_map(|e| match e {
        ClientEvent::Refused { reason } => Some(reason.clone()),
        _ => None,
    })
}

/// A slot the client script fills and the test reads after the run.
type Seen<T> = std::sync::Arc<std::sync::Mutex<T>>;

fn seen<T: Default>() -> Seen<T> {
    Seen::default()
}

/// Sends `messages` to host 0 on one connection presenting a fresh key, each after the host has
/// answered the one before (or stayed quiet for a second), and returns everything it answered
/// apart from the `Received` each Start is answered with first (checked to come, under the
/// session the Start named, before any other event of that session).
async fn talk_to_host(client: &SiteClient, messages: Vec<HostWire>) -> Result<Vec<HostEvent>, String> {
    let keys = client.new_keys();
    let mut host: Conversation = client.to_host(0, &keys).await?;
    let mut heard = Vec::new();
    let mut received = std::collections::BTreeSet::new();
    for message in messages {
        host.send(&message)?;
        while let Ok(answer) = tokio::time::timeout(Duration::from_secs(1), host.receive::<HostFrame>()).await
        {
            let Some(HostFrame { session, event }) = answer? else { return Ok(heard) };
            if event == HostEvent::Received {
                received.insert(session);
            } else if received.contains(&session) {
                heard.push(event);
            } else {
                return Err(format!("session {session} answered {event:?} before Received"));
            }
        }
    }
    Ok(heard)
}

/// A Start as session 1 of its channel.
fn start(request: ExecRequest) -> HostWire {
    HostWire::Start { session: 1, request: Box::new(request) }
}

#[test]
fn a_run_on_ten_hosts_returns_every_result_audits_in_order_and_leaves_the_gateway_empty() {
    let events = seen::<Vec<ClientEvent>>();
    let out = events.clone();
    let run = Site::run_checked(&SiteSpec::new(10, 1), |client| async move {
        let login = client.login("alice", PASSWORD).await?;
        *out.lock().expect("not poisoned") =
            client.exec(&login, &["h[01-10]"], &["/usr/bin/echo", "hi"]).await?;
        Ok(())
    });
    let events = events.lock().expect("not poisoned").clone();
    let got = host_results(&events);
    assert_eq!(got.len(), 10);
    assert!(got.iter().all(|r| r.outcome == HostOutcome::Exited(0) && r.stdout == b"hi\n"), "{got:?}");
    assert_eq!(events.last(), Some(&ClientEvent::Finished));
    // Two records per host (run, ended), chained and verifiable.
    assert_eq!(verify_chain(&run.chain), Ok(20));
    for host in ["h01", "h05", "h10"] {
        let decisions: Vec<&AuditDecision> =
            run.chain.iter().filter(|e| e.record.host == host).map(|e| &e.record.decision).collect();
        assert!(matches!(decisions[..], [AuditDecision::Run, AuditDecision::Ended { .. }]), "{decisions:?}");
    }
    assert_eq!(run.spawned.len(), 10);
    assert_eq!(run.state.gateway, HeldState::default(), "the gateway keeps nothing after the run");
}

#[test]
fn an_expired_ticket_is_refused_and_audited() {
    let spec = SiteSpec {
        kdc: KdcSettings { ticket_lifetime: Duration::from_secs(30), ..KdcSettings::default() },
        ..SiteSpec::new(2, 2)
    };
    let run = Site::run_checked(&spec, |client| async move {
        let request = client.request("h01", "h01", now().wall, &["/usr/bin/echo", "x"])?;
        tokio::time::sleep(Duration::from_secs(40)).await;
        talk_to_host(&client, vec![start(request)]).await?;
        Ok(())
    });
    assert!(run.spawned.is_empty());
    assert_eq!(run.denial("h01"), Some("ticket expired; log in again"));
    assert!(run.denied_in_chain("ticket expired"));
}

#[test]
fn a_ticket_for_another_host_is_refused_and_audited() {
    let run = Site::run_checked(&SiteSpec::new(2, 3), |client| async move {
        let request = client.request("h02", "h01", now().wall, &["/usr/bin/echo", "x"])?;
        let heard = talk_to_host(&client, vec![start(request)]).await?;
        match heard.first() {
            Some(HostEvent::Denied { reason }) if reason.contains("ticket refused") => Ok(()),
            other => Err(format!("expected a denial, heard {other:?}")),
        }
    });
    assert!(run.spawned.is_empty());
    assert!(run.denial("h01").expect("audited").contains("ticket refused"));
    assert!(run.denied_in_chain("ticket refused"));
}

/// Each host checks the variables a request passes against its own ACL, and that the
/// authenticator covers them: a gateway that skipped its early check, or added a variable after
/// the client's run was signed for, runs nothing.
#[test]
fn a_variable_the_acl_does_not_list_or_the_authenticator_does_not_cover_is_refused_by_the_host() {
    let mut spec = SiteSpec::new(1, 15);
    if let Some(alice) = spec.acl.principals.get_mut("alice") {
        alice.env = ["LANG".to_owned()].into();
    }
    let heard = seen::<Vec<Vec<HostEvent>>>();
    let out = heard.clone();
    let run = Site::run_checked(&spec, |client| async move {
        let var = |name: &str| vec![(name.to_owned(), "x".to_owned())];
        let argv = vec!["/usr/bin/echo".to_owned(), "hi".to_owned()];
        let listed = Task::Run { argv: argv.clone(), stdin: Vec::new(), env: var("LANG") };
        let unlisted = Task::Run { argv: argv.clone(), stdin: Vec::new(), env: var("LD_PRELOAD") };
        // Each request at its own millisecond: the test client's nonce is its timestamp, and a
        // repeated one would be refused as a replay before anything else is checked.
        let at = |ms: u64| WallClock(now().wall.0 + ms);
        let mut added = client.request_task("h01", "h01", at(1), listed.clone())?;
        added.task = Task::Run { argv, stdin: Vec::new(), env: [var("LANG"), var("TZ")].concat() };
        for request in [
            client.request_task("h01", "h01", at(0), unlisted)?,
            added,
            client.request_task("h01", "h01", at(2), listed)?,
        ] {
            let events = talk_to_host(&client, vec![start(request)]).await?;
            out.lock().expect("not poisoned").push(events);
        }
        Ok(())
    });
    let heard = heard.lock().expect("not poisoned").clone();
    let denied = |events: &[HostEvent], says: &str| matches!(events.first(), Some(HostEvent::Denied { reason }) if reason.contains(says));
    assert!(denied(&heard[0], "may not pass the variable `LD_PRELOAD`"), "{:?}", heard[0]);
    assert!(denied(&heard[1], "does not cover"), "{:?}", heard[1]);
    assert!(matches!(heard[2].first(), Some(HostEvent::Started)), "{:?}", heard[2]);
    assert_eq!(run.spawned.len(), 1, "only the listed variable ran: {:?}", run.spawned);
    assert!(run.denied_in_chain("may not pass the variable `LD_PRELOAD`"));
}

/// A ticket is sealed under the key the KDC and its host share, which anyone may try to make from
/// the host's public key and a key of their own: one sealed by anyone but the KDC runs nothing.
#[test]
fn a_ticket_not_sealed_by_the_kdc_is_refused_and_audited() {
    let run = Site::run_checked(&SiteSpec::new(1, 14), |client| async move {
        let forger = NodeKeys::generate(&mut seeded(67));
        let session_key = [7u8; 32];
        let wall = now().wall;
        let body = TicketBody {
            principal: "alice".into(),
            host: "h01".into(),
            issued: wall,
            expires: WallClock(wall.0 + 60_000),
            session_key,
        };
        let host = client.host_identity(0).ok_or("no h01")?;
        let key = TicketKey::for_kdc(&forger, &host).map_err(|e| e.to_string())?;
        let ticket = ServiceTicket::seal(&body, &key, &mut client.rng()).map_err(|e| e.to_string())?;
        let task = Task::Run {
            argv: vec!["/usr/bin/echo".to_owned(), "pwned".to_owned()],
            stdin: Vec::new(),
            env: Vec::new(),
        };
        let auth = Authenticator {
            principal: "alice".into(),
            timestamp: wall,
            nonce: [1; 16],
            request_digest: request_digest("h01", "alice", &task),
        };
        let authenticator = auth.seal(&session_key, "h01", &mut client.rng()).map_err(|e| e.to_string())?;
        let request = ExecRequest { ticket, authenticator, run_as: "alice".into(), task, max_output: 1024 };
        talk_to_host(&client, vec![start(request)]).await?;
        Ok(())
    });
    assert!(run.spawned.is_empty(), "{:?}", run.spawned);
    let refused = "does not open with the key this host shares with its KDC";
    assert!(run.denial("h01").expect("audited").contains(refused), "{:?}", run.denial("h01"));
    assert!(run.denied_in_chain(refused));
}

#[test]
fn a_replayed_authenticator_is_refused_and_audited() {
    let run = Site::run_checked(&SiteSpec::new(1, 4), |client| async move {
        let request = client.request("h01", "h01", now().wall, &["/usr/bin/echo", "once"])?;
        talk_to_host(&client, vec![start(request.clone())]).await?;
        // The same bytes again, on a new connection: what a captured request replayed is.
        talk_to_host(&client, vec![start(request)]).await?;
        Ok(())
    });
    assert_eq!(run.spawned.len(), 1, "the replay ran nothing: {:?}", run.spawned);
    assert_eq!(run.denial("h01"), Some("replayed authenticator"));
    assert!(run.denied_in_chain("replayed authenticator"));
}

#[test]
fn clock_skew_beyond_the_limit_is_refused_and_audited() {
    let run = Site::run_checked(&SiteSpec::new(1, 5), |client| async move {
        let future = WallClock(now().wall.0 + 5 * 60 * 1000);
        let request = client.request("h01", "h01", future, &["/usr/bin/echo", "x"])?;
        talk_to_host(&client, vec![start(request)]).await?;
        Ok(())
    });
    assert!(run.spawned.is_empty());
    let reason = run.denial("h01").expect("audited");
    assert!(reason.contains("clock skew of") && reason.contains("s is beyond the 120s limit"), "{reason}");
}

#[test]
fn unknown_principals_and_wrong_passwords_are_refused_alike_and_audited_precisely() {
    let reasons = seen::<Vec<String>>();
    let out = reasons.clone();
    let run = Site::run_checked(&SiteSpec::new(1, 6), |client| async move {
        for (principal, password) in [("mallory", PASSWORD), ("alice", "hunter2")] {
            match client.login(principal, password).await {
                Ok(_) => return Err(format!("{principal} logged in with {password}")),
                Err(reason) => out.lock().expect("not poisoned").push(reason),
            }
        }
        Ok(())
    });
    let reasons = reasons.lock().expect("not poisoned").clone();
    assert_eq!(reasons, vec!["login failed: unknown principal or wrong password"; 2], "refused alike");
    assert!(run.denied_in_chain("unknown principal `mallory`"));
    assert!(run.denied_in_chain("wrong password for `alice`"));
    assert!(run.spawned.is_empty());
}

#[test]
fn an_acl_denial_runs_nothing_and_is_audited_on_every_host() {
    let runs = seen::<Vec<Vec<ClientEvent>>>();
    let out = runs.clone();
    let run = Site::run_checked(&SiteSpec::new(3, 7), |client| async move {
        let bob = client.login("bob", PASSWORD).await?;
        let first = client.exec(&bob, &["h[01-03]"], &["/usr/bin/echo", "hi"]).await?;
        // Alice may not run what her ACL does not list either.
        let alice = client.login("alice", PASSWORD).await?;
        let second = client.exec(&alice, &["h01"], &["/usr/bin/rm", "-rf", "/"]).await?;
        *out.lock().expect("not poisoned") = vec![first, second];
        Ok(())
    });
    let runs = runs.lock().expect("not poisoned").clone();
    let got = host_results(&runs[0]);
    assert_eq!(got.len(), 3);
    for r in &got {
        assert_eq!(
            r.outcome,
            HostOutcome::Denied("ACL: principal `bob` has no entry in this host's ACL".into())
        );
    }
    let denied =
        run.chain.iter().filter(|e| matches!(e.record.decision, AuditDecision::Denied { .. })).count();
    assert_eq!(denied, 4, "three for bob, one for alice's rm");
    assert!(
        matches!(&host_results(&runs[1])[0].outcome, HostOutcome::Denied(r) if r.contains("may not run `/usr/bin/rm`"))
    );
    assert!(run.spawned.is_empty(), "{:?}", run.spawned);
}

#[test]
fn the_gateway_refuses_to_act_without_a_valid_credential() {
    let reasons = seen::<Vec<Option<String>>>();
    let out = reasons.clone();
    let run = Site::run_checked(&SiteSpec::new(2, 8), |client| async move {
        let login = client.login("alice", PASSWORD).await?;
        // Forged: the same content signed by someone other than the KDC.
        let forger = NodeKeys::generate(&mut seeded(66));
        let forged = Signed::sign(login.credential.body.clone(), &forger).map_err(|e| e.to_string())?;
        let events =
            client.run(&login.keys, client.command(&forged, &["h[01-02]"], &["/usr/bin/echo", "x"])).await?;
        out.lock().expect("not poisoned").push(refused(&events));
        // Stolen: alice's real credential presented over another client's channel.
        let thief = client.new_keys();
        let events = client
            .run(&thief, client.command(&login.credential, &["h[01-02]"], &["/usr/bin/echo", "x"]))
            .await?;
        out.lock().expect("not poisoned").push(refused(&events));
        Ok(())
    });
    let reasons = reasons.lock().expect("not poisoned").clone();
    assert!(
        reasons[0]
            .as_deref()
            .is_some_and(|r| r.contains("credential refused: the credential is not signed by this KDC")),
        "{reasons:?}"
    );
    assert!(reasons[1].as_deref().is_some_and(|r| r.contains("another client key")), "{reasons:?}");
    assert!(run.spawned.is_empty());
    assert!(run.denied_in_chain("credential refused"));
    assert_eq!(run.state.gateway, HeldState::default());
}

#[test]
fn the_alarm_kill_reaches_the_host_and_is_audited() {
    let events = seen::<Vec<ClientEvent>>();
    let out = events.clone();
    let run = Site::run_checked(&SiteSpec::new(2, 9), |client| async move {
        let login = client.login("alice", PASSWORD).await?;
        *out.lock().expect("not poisoned") =
            client.exec(&login, &["h[01-02]"], &["/usr/bin/sleep", "1000"]).await?;
        Ok(())
    });
    let got = host_results(&events.lock().expect("not poisoned"));
    assert_eq!(got.len(), 2);
    assert!(
        got.iter().all(
            |r| matches!(&r.outcome, HostOutcome::KilledByAlarm(reason) if reason.contains("no output"))
        ),
        "{got:?}"
    );
    let ended: Vec<String> = run
        .chain
        .iter()
        .filter_map(|e| match &e.record.decision {
            AuditDecision::Ended { outcome } => Some(outcome.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(ended.len(), 2);
    assert!(ended.iter().all(|o| o.starts_with("killed: killed by alarm")), "{ended:?}");
    assert_eq!(run.state.gateway, HeldState::default());
}

#[test]
fn a_client_that_goes_away_has_its_commands_killed() {
    let run = Site::run_checked(&SiteSpec::new(2, 10), |client| async move {
        let login = client.login("alice", PASSWORD).await?;
        let command = client.command(&login.credential, &["h[01-02]"], &["/usr/bin/sleep", "1000"]);
        let mut gateway = client.to_gateway(&login.keys).await?;
        gateway.send(&GatewayWire::Client(ClientRequest::Exec(Box::new(command))))?;
        while !matches!(
            gateway.receive::<GatewayReply>().await?,
            Some(GatewayReply::Client(ClientEvent::Accepted { .. }))
        ) {}
        // Both commands start; then the client hangs up mid-run.
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(gateway);
        Ok(())
    });
    assert_eq!(run.spawned.len(), 2);
    let killed = run
        .chain
        .iter()
        .filter(|e| matches!(&e.record.decision, AuditDecision::Ended { outcome } if outcome.contains("the client went away")))
        .count();
    assert_eq!(killed, 2);
    assert_eq!(run.state.gateway, HeldState::default());
    assert_eq!(run.state.host_sessions, 0);
}

#[test]
fn an_unreachable_host_is_reported_while_the_others_complete() {
    let events = seen::<Vec<ClientEvent>>();
    let out = events.clone();
    let spec = SiteSpec { down: [1].into(), ..SiteSpec::new(3, 11) };
    Site::run_checked(&spec, |client| async move {
        let login = client.login("alice", PASSWORD).await?;
        *out.lock().expect("not poisoned") = client.exec(&login, &["h[01-03]"], &["/usr/bin/uname"]).await?;
        Ok(())
    });
    let got = host_results(&events.lock().expect("not poisoned"));
    assert_eq!(got.len(), 3);
    assert!(matches!(&got[1].outcome, HostOutcome::Unreachable(_)), "{:?}", got[1]);
    assert_eq!(got.iter().filter(|r| r.outcome == HostOutcome::Exited(0)).count(), 2);
}

#[test]
fn without_the_collectors_acknowledgement_nothing_runs() {
    let events = seen::<Vec<ClientEvent>>();
    let out = events.clone();
    let spec = SiteSpec { collector_reachable: false, ..SiteSpec::new(1, 12) };
    let run = Site::run_checked(&spec, |client| async move {
        let login = client.login("alice", PASSWORD).await?;
        *out.lock().expect("not poisoned") = client.exec(&login, &["h01"], &["/usr/bin/echo", "x"]).await?;
        Ok(())
    });
    assert!(run.spawned.is_empty());
    let got = host_results(&events.lock().expect("not poisoned"));
    assert!(
        matches!(&got[0].outcome, HostOutcome::Denied(r) if r.contains("audit collector did not acknowledge")),
        "{got:?}"
    );
}

#[test]
fn percent_h_becomes_each_hosts_name() {
    let events = seen::<Vec<ClientEvent>>();
    let out = events.clone();
    Site::run_checked(&SiteSpec::new(3, 13), |client| async move {
        let login = client.login("alice", PASSWORD).await?;
        *out.lock().expect("not poisoned") =
            client.exec(&login, &["h[01-03]"], &["/usr/bin/echo", "I am %h"]).await?;
        Ok(())
    });
    let got = host_results(&events.lock().expect("not poisoned"));
    assert_eq!((got[0].host.as_str(), got[0].stdout.as_slice()), ("h01", b"I am h01\n".as_slice()));
    assert_eq!((got[2].host.as_str(), got[2].stdout.as_slice()), ("h03", b"I am h03\n".as_slice()));
}

/// Node sets are the gateway's to expand, from the groups its member installed: `@web` names
/// what `group.web` says, ranges expand, and a malformed set is refused with what was wrong
/// before anything runs.
#[test]
fn the_gateway_expands_node_sets_and_groups_from_its_installed_configuration() {
    let runs = seen::<Vec<Vec<ClientEvent>>>();
    let out = runs.clone();
    let spec =
        SiteSpec { groups: [("web".to_owned(), "h[01-02],h05".to_owned())].into(), ..SiteSpec::new(6, 31) };
    let run = Site::run_checked(&spec, |client| async move {
        let login = client.login("alice", PASSWORD).await?;
        for hosts in [&["@web", "h06"][..], &["h[03-"], &["@db"]] {
            let events = client.exec(&login, hosts, &["/usr/bin/echo", "hi"]).await?;
            out.lock().expect("not poisoned").push(events);
        }
        Ok(())
    });
    let runs = runs.lock().expect("not poisoned").clone();
    let ran: Vec<String> = host_results(&runs[0]).into_iter().map(|r| r.host).collect();
    assert_eq!(ran, ["h01", "h02", "h05", "h06"]);
    let reason = refused(&runs[1]).expect("refused");
    assert!(reason.starts_with("bad host list:"), "{reason}");
    // A group the configuration does not define is an error too, not an empty run.
    assert!(refused(&runs[2]).is_some_and(|r| r.contains("bad host list")), "{:?}", runs[2]);
    assert_eq!(run.spawned.len(), 4);
}

/// A channel to a host carries each session under its own number: a second Start under a number
/// the channel already carries is a gateway out of protocol, so what runs under it is stopped
/// (and audited) rather than a second command started; a Cancel naming no session changes
/// nothing.
#[test]
fn a_second_start_under_one_session_number_stops_the_run_instead_of_starting_another() {
    let run = Site::run_checked(&SiteSpec::new(1, 32), |client| async move {
        let first = client.request("h01", "h01", now().wall, &["/usr/bin/sleep", "60"])?;
        let cancel = HostWire::Cancel { session: 1, reason: "early".into() };
        let start = start(first);
        // The order rule comes before any check of what the second Start carries.
        talk_to_host(&client, vec![cancel, start.clone(), start]).await?;
        Ok(())
    });
    assert_eq!(run.spawned.len(), 1, "the second Start ran nothing");
    assert_eq!(run.state.host_protocol_errors, 1, "only the second Start was out of protocol");
    assert_eq!(run.state.host_sessions, 0, "the running session was stopped");
    let ended = run.local_audit.iter().any(
        |r| matches!(&r.decision, AuditDecision::Ended { outcome } if outcome.contains("its channel already carries")),
    );
    assert!(ended, "the stop was audited: {:?}", run.local_audit);
}

/// The collector takes a record only if the host it names signed it: a host writing records in
/// another host's name is refused, the chain stays as it was, and the refusal is counted.
#[test]
fn an_audit_record_not_signed_by_the_host_it_names_is_refused_and_counted() {
    let spec = SiteSpec::new(3, 33);
    let site = Site::new(&spec).expect("builds");
    let h01 = site.host_keys[0].clone();
    let answer = seen::<Option<GatewayReply>>();
    let out = answer.clone();
    let run = site.run(Duration::from_secs(1), |client| async move {
        let record = AuditRecord {
            host: "h02".into(),
            principal: "alice".into(),
            run_as: "root".into(),
            argv: vec!["true".into()],
            at: now().wall,
            decision: AuditDecision::Run,
            run_id: [7; 16],
            data: Vec::new(),
        };
        let forged = Signed::sign(record, &h01).map_err(|e| e.to_string())?;
        *out.lock().expect("not poisoned") = Some(client.submit_audit(&h01, forged).await?);
        Ok(())
    });
    assert_eq!(run.violation, None);
    assert!(
        matches!(&*answer.lock().expect("not poisoned"), Some(GatewayReply::AuditRefused { reason, .. }) if reason.contains("not signed by that host's key")),
        "{:?}",
        answer.lock().expect("not poisoned")
    );
    assert!(run.chain.is_empty(), "the chain stays as it was");
    assert_eq!(run.state.collector_refused, 1);
}

/// Output past the cap stops at the host: what goes back is the cap's worth, and the rest is
/// counted, reported before the end, and shown to the client as cut.
#[test]
fn output_beyond_the_cap_is_cut_at_the_host_and_counted() {
    let events = seen::<Vec<ClientEvent>>();
    let out = events.clone();
    Site::run_checked(&SiteSpec::new(2, 34), |client| async move {
        let login = client.login("alice", PASSWORD).await?;
        *out.lock().expect("not poisoned") =
            client.exec(&login, &["h[01-02]"], &["/usr/bin/spew", "3"]).await?;
        Ok(())
    });
    let got = host_results(&events.lock().expect("not poisoned"));
    assert_eq!(got.len(), 2);
    for r in &got {
        assert_eq!(r.outcome, HostOutcome::Exited(0));
        assert_eq!(r.stdout.len(), 1024 * 1024, "the cap's worth came back");
        assert_eq!(r.cut_bytes, 2 * 1024 * 1024, "the rest was counted");
    }
}

/// Reads frames from `host` until every session in `sessions` said its final word (or the host
/// stayed quiet for five seconds), and returns them in the order they came.
async fn frames_until_final(host: &mut Conversation, sessions: &[u64]) -> Result<Vec<HostFrame>, String> {
    let mut frames: Vec<HostFrame> = Vec::new();
    let open = |frames: &[HostFrame]| {
        sessions.iter().any(|s| !frames.iter().any(|f| f.session == *s && f.event.is_final()))
    };
    while open(&frames) {
        match tokio::time::timeout(Duration::from_secs(5), host.receive::<HostFrame>()).await {
            Ok(answer) => match answer? {
                Some(frame) => frames.push(frame),
                None => break,
            },
            Err(_) => break,
        }
    }
    Ok(frames)
}

/// One channel carries many sessions, each under the gateway's number for it: two commands sent
/// on one channel both run, every event comes back under the number that asked, and each is
/// received before it is answered.
#[test]
fn two_sessions_on_one_channel_each_run_and_answer_under_their_own_number() {
    let frames = seen::<Vec<HostFrame>>();
    let out = frames.clone();
    let run = Site::run_checked(&SiteSpec::new(1, 34), |client| async move {
        let at = |ms: u64| WallClock(now().wall.0 + ms);
        let one = client.request("h01", "h01", at(0), &["/usr/bin/echo", "one"])?;
        let two = client.request("h01", "h01", at(1), &["/usr/bin/echo", "two"])?;
        let keys = client.new_keys();
        let mut host = client.to_host(0, &keys).await?;
        host.send(&HostWire::Start { session: 7, request: Box::new(one) })?;
        host.send(&HostWire::Start { session: 9, request: Box::new(two) })?;
        *out.lock().expect("not poisoned") = frames_until_final(&mut host, &[7, 9]).await?;
        Ok(())
    });
    let frames = frames.lock().expect("not poisoned").clone();
    for (session, said) in [(7, b"one\n"), (9, b"two\n")] {
        let events: Vec<&HostEvent> =
            frames.iter().filter(|f| f.session == session).map(|f| &f.event).collect();
        assert_eq!(events.first(), Some(&&HostEvent::Received), "{session}: {events:?}");
        let output = HostEvent::Output { stderr: false, bytes: said.to_vec() };
        assert!(events.contains(&&output), "{session}: {events:?}");
        assert_eq!(events.last(), Some(&&HostEvent::Exited { code: 0 }), "{session}: {events:?}");
    }
    assert!(frames.iter().all(|f| [7, 9].contains(&f.session)), "{frames:?}");
    assert_eq!(run.spawned.len(), 2, "{:?}", run.spawned);
    assert_eq!(run.state.host_sessions, 0);
}

/// A channel takes at most as many sessions at once as the host allows on one: the Start past
/// that is refused under its own number, runs nothing, and leaves the sessions already running
/// alone; when the channel goes, every session on it stops.
#[test]
fn a_channel_past_its_session_limit_is_refused_and_its_close_stops_every_session_on_it() {
    let limit = DaemonSettings::default().max_sessions_per_channel as u64;
    let frames = seen::<Vec<HostFrame>>();
    let out = frames.clone();
    let run = Site::run_checked(&SiteSpec::new(1, 35), |client| async move {
        let keys = client.new_keys();
        let mut host = client.to_host(0, &keys).await?;
        let mut heard = Vec::new();
        // One at a time, each once the host started or refused the one before.
        for n in 0..=limit {
            let request =
                client.request("h01", "h01", WallClock(now().wall.0 + n), &["/usr/bin/sleep", "60"])?;
            host.send(&HostWire::Start { session: n, request: Box::new(request) })?;
            let settled = |f: &HostFrame| {
                f.session == n && matches!(f.event, HostEvent::Started | HostEvent::Denied { .. })
            };
            while !heard.iter().any(settled) {
                match tokio::time::timeout(Duration::from_secs(5), host.receive::<HostFrame>()).await {
                    Ok(Ok(Some(frame))) => heard.push(frame),
                    other => return Err(format!("session {n}: no answer ({other:?})")),
                }
            }
        }
        *out.lock().expect("not poisoned") = heard;
        // Dropping the channel is the gateway going away.
        drop(host);
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(())
    });
    let frames = frames.lock().expect("not poisoned").clone();
    let refused: Vec<&HostFrame> =
        frames.iter().filter(|f| matches!(&f.event, HostEvent::Denied { .. })).collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].session, limit, "the one past the limit");
    assert!(
        matches!(&refused[0].event, HostEvent::Denied { reason } if reason.contains("the most this host takes on one")),
        "{refused:?}"
    );
    assert_eq!(
        run.spawned.len(),
        limit as usize,
        "every session under the limit ran, the one past it did not"
    );
    assert_eq!(run.state.host_sessions, 0, "the channel's close stopped every session on it");
    let kills = run.trace.lines().iter().filter(|l| l.contains("exec       -> Kill")).count();
    assert_eq!(kills, limit as usize, "each running command was killed");
}

/// The gateway keeps its channel to each host open after a run, for the next run to use, and
/// closes one that carried no session for five minutes.
#[test]
fn the_gateway_closes_a_channel_to_a_host_after_five_idle_minutes() {
    let spec = SiteSpec { limit: Duration::from_secs(420), ..SiteSpec::new(2, 36) };
    let site = Site::new(&spec).expect("the site builds");
    let run = site.run(Duration::from_secs(330), |client| async move {
        let login = client.login("alice", PASSWORD).await?;
        client.exec(&login, &["h[01-02]"], &["/usr/bin/echo", "hi"]).await?;
        Ok(())
    });
    assert_eq!(run.violation, None);
    assert_eq!(run.script, Ok(()));
    let at = |line: &str| line.split_whitespace().next().and_then(|t| t.parse::<f64>().ok());
    let lines = run.trace.lines();
    let opened: Vec<(String, f64)> = lines
        .iter()
        .filter(|l| l.contains("gw         -> Connect") && l.contains(" to exec:"))
        .filter_map(|l| Some((l.split_whitespace().nth(4)?.to_owned(), at(l)?)))
        .collect();
    assert_eq!(opened.len(), 2, "one channel per host: {opened:?}");
    let ended =
        lines.iter().filter(|l| l.contains("-> Persist") && l.contains("Ended")).filter_map(|l| at(l));
    let last_session = ended.fold(0.0, f64::max);
    for (conn, _) in &opened {
        let closed = lines
            .iter()
            .find(|l| l.contains(&format!("gw         -> Close {conn}")))
            .and_then(|l| at(l))
            .unwrap_or_else(|| panic!("{conn} was never closed"));
        let idle = closed - last_session;
        assert!((299.0..302.0).contains(&idle), "{conn} closed {idle:.3} s after its last session ended");
    }
}
