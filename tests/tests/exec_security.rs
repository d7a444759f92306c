//! Parallel secure execution end to end in memory: a run on many hosts, and every refusal the
//! issue names (expired ticket, ticket for another host, replayed authenticator, clock skew,
//! unknown principal, wrong password, ACL denial, no credential): each refused with a clear
//! error, none spawns a process, each denial audited. The gateway keeps nothing afterwards.

use std::time::Duration;

use cohort_core::exec::audit::{AuditDecision, verify_chain};
use cohort_core::exec::daemon::{DaemonInput, ExecRequest, HostWire};
use cohort_core::exec::gateway::{ClientEvent, GatewayInput, HeldState, HostOutcome};
use cohort_core::exec::kdc::KdcError;
use cohort_core::exec::ticket::{Authenticator, request_digest};
use cohort_core::rng::seeded;
use cohort_core::signed::Signed;
use cohort_core::{NodeKeys, WallClock};
use cohort_tests::exec_world::{ExecWorld, PASSWORD, host_name};

fn hosts(n: usize) -> Vec<String> {
    (0..n).map(host_name).collect()
}

fn results(world: &ExecWorld, client: u64) -> Vec<(String, HostOutcome, Vec<u8>)> {
    world
        .events(client)
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Host(r) => Some((r.host.clone(), r.outcome.clone(), r.stdout.clone())),
            _ => None,
        })
        .collect()
}

fn refused(world: &ExecWorld, client: u64) -> Option<String> {
    world.events(client).iter().find_map(|e| match e {
        ClientEvent::Refused { reason } => Some(reason.clone()),
        _ => None,
    })
}

/// A request for `host` built the way the gateway builds one, with knobs to break it.
fn request(
    world: &mut ExecWorld,
    ticket_host: &str,
    host: &str,
    stamp: WallClock,
    argv: &[&str],
) -> ExecRequest {
    let credential = world.login(900, "alice", PASSWORD).expect("alice logs in");
    let client_key = world.client_keys[&900];
    let wall = world.wall;
    let issued =
        world.gateway.kdc_mut().issue_ticket(wall, &credential, &client_key, ticket_host).expect("ticket");
    let argv: Vec<String> = argv.iter().map(|a| (*a).to_owned()).collect();
    let mut nonce = [0u8; 16];
    nonce[0] = stamp.0 as u8;
    let auth = Authenticator {
        principal: "alice".into(),
        timestamp: stamp,
        nonce,
        request_digest: request_digest(host, "alice", &argv),
    };
    let authenticator = auth.seal(&issued.session_key, host, &mut seeded(stamp.0)).expect("seals");
    ExecRequest { ticket: issued.ticket, authenticator, run_as: "alice".into(), argv, max_output: 1 << 20 }
}

fn denial_reason(world: &ExecWorld, host: usize) -> Option<String> {
    world.local_audit[host].iter().rev().find_map(|r| match &r.decision {
        AuditDecision::Denied { reason } => Some(reason.clone()),
        _ => None,
    })
}

fn denied_at_collector(world: &ExecWorld, needle: &str) -> bool {
    world
        .chain
        .iter()
        .any(|e| matches!(&e.record.decision, AuditDecision::Denied { reason } if reason.contains(needle)))
}

#[test]
fn a_run_on_ten_hosts_returns_every_result_audits_in_order_and_leaves_the_gateway_empty() {
    let mut world = ExecWorld::new(10, 1);
    let credential = world.login(1, "alice", PASSWORD).expect("alice logs in");
    let key = world.client_keys[&1];
    world.exec(2, key, credential, hosts(10), &["echo", "hi"]);
    let got = results(&world, 2);
    assert_eq!(got.len(), 10);
    assert!(got.iter().all(|(_, outcome, out)| *outcome == HostOutcome::Exited(0) && out == b"hi\n"));
    assert_eq!(world.events(2).last(), Some(&ClientEvent::Finished));
    // Two records per host (run, ended), chained and verifiable.
    assert_eq!(verify_chain(&world.chain), Ok(20));
    for host in 0..10 {
        let decisions: Vec<&AuditDecision> = world
            .chain
            .iter()
            .filter(|e| e.record.host == host_name(host))
            .map(|e| &e.record.decision)
            .collect();
        assert!(matches!(decisions[..], [AuditDecision::Run, AuditDecision::Ended { .. }]), "{decisions:?}");
    }
    assert_eq!(world.gateway.held_state(), HeldState::default(), "the gateway keeps nothing after the run");
}

#[test]
fn an_expired_ticket_is_refused_and_audited() {
    let mut world = ExecWorld::new(2, 2);
    let wall = world.wall;
    let request = request(&mut world, "h01", "h01", wall, &["echo", "x"]);
    world.wall = WallClock(wall.0 + 10 * 60 * 1000);
    world.direct(0, 1, request);
    assert_eq!(world.total_spawned(), 0);
    assert_eq!(denial_reason(&world, 0).as_deref(), Some("ticket expired; log in again"));
    assert!(denied_at_collector(&world, "ticket expired"));
}

#[test]
fn a_ticket_for_another_host_is_refused_and_audited() {
    let mut world = ExecWorld::new(2, 3);
    let wall = world.wall;
    let request = request(&mut world, "h02", "h01", wall, &["echo", "x"]);
    world.direct(0, 1, request);
    assert_eq!(world.total_spawned(), 0);
    assert!(denial_reason(&world, 0).expect("audited").contains("ticket refused"));
    assert!(denied_at_collector(&world, "ticket refused"));
}

#[test]
fn a_replayed_authenticator_is_refused_and_audited() {
    let mut world = ExecWorld::new(1, 4);
    let wall = world.wall;
    let request = request(&mut world, "h01", "h01", wall, &["echo", "once"]);
    world.direct(0, 1, request.clone());
    assert_eq!(world.total_spawned(), 1);
    world.direct(0, 2, request);
    assert_eq!(world.total_spawned(), 1, "the replay ran nothing");
    assert_eq!(denial_reason(&world, 0).as_deref(), Some("replayed authenticator"));
    assert!(denied_at_collector(&world, "replayed authenticator"));
}

#[test]
fn clock_skew_beyond_the_limit_is_refused_and_audited() {
    let mut world = ExecWorld::new(1, 5);
    let future = WallClock(world.wall.0 + 5 * 60 * 1000);
    let request = request(&mut world, "h01", "h01", future, &["echo", "x"]);
    world.direct(0, 1, request);
    assert_eq!(world.total_spawned(), 0);
    assert!(
        denial_reason(&world, 0).expect("audited").contains("clock skew of 300s is beyond the 120s limit")
    );
}

#[test]
fn unknown_principals_and_wrong_passwords_are_refused_alike_and_audited_precisely() {
    let mut world = ExecWorld::new(1, 6);
    assert!(world.login(1, "mallory", PASSWORD).is_none());
    assert!(world.login(2, "alice", "hunter2").is_none());
    for client in [1, 2] {
        assert_eq!(
            refused(&world, client).as_deref(),
            Some("login failed: unknown principal or wrong password")
        );
    }
    assert!(denied_at_collector(&world, "unknown principal `mallory`"));
    assert!(denied_at_collector(&world, "wrong password for `alice`"));
    let wall = world.wall;
    assert!(matches!(
        world.gateway.kdc_mut().login(wall, "mallory", "x", [0; 32]),
        Err(KdcError::UnknownPrincipal(_))
    ));
    assert!(matches!(
        world.gateway.kdc_mut().login(wall, "alice", "x", [0; 32]),
        Err(KdcError::WrongPassword(_))
    ));
    assert_eq!(world.total_spawned(), 0);
}

#[test]
fn an_acl_denial_runs_nothing_and_is_audited_on_every_host() {
    let mut world = ExecWorld::new(3, 7);
    let credential = world.login(1, "bob", PASSWORD).expect("bob logs in");
    let key = world.client_keys[&1];
    world.exec(2, key, credential, hosts(3), &["echo", "hi"]);
    let got = results(&world, 2);
    assert_eq!(got.len(), 3);
    for (_, outcome, _) in &got {
        assert_eq!(
            outcome,
            &HostOutcome::Denied("ACL: principal `bob` has no entry in this host's ACL".into())
        );
    }
    assert_eq!(world.total_spawned(), 0);
    assert_eq!(
        world.chain.iter().filter(|e| matches!(e.record.decision, AuditDecision::Denied { .. })).count(),
        3
    );
    // Alice may not run what her ACL does not list either.
    let credential = world.login(3, "alice", PASSWORD).expect("alice logs in");
    let key = world.client_keys[&3];
    world.exec(4, key, credential, hosts(1), &["rm", "-rf", "/"]);
    assert!(matches!(&results(&world, 4)[0].1, HostOutcome::Denied(r) if r.contains("may not run `rm`")));
    assert_eq!(world.total_spawned(), 0);
}

#[test]
fn the_gateway_refuses_to_act_without_a_valid_credential() {
    let mut world = ExecWorld::new(2, 8);
    let credential = world.login(1, "alice", PASSWORD).expect("alice logs in");
    // Forged: the same content signed by someone other than the KDC.
    let forger = NodeKeys::generate(&mut seeded(66));
    let forged = Signed::sign(credential.body.clone(), &forger).expect("signs");
    let key = world.client_keys[&1];
    world.exec(2, key, forged, hosts(2), &["echo", "x"]);
    assert!(
        refused(&world, 2)
            .expect("refused")
            .contains("credential refused: the credential is not signed by this KDC")
    );
    // Stolen: alice's real credential presented over another client's channel.
    let other_key = world.new_client_key(3);
    world.exec(3, other_key, credential, hosts(2), &["echo", "x"]);
    assert!(refused(&world, 3).expect("refused").contains("another client key"));
    assert_eq!(world.total_spawned(), 0);
    assert!(denied_at_collector(&world, "credential refused"));
    assert_eq!(world.gateway.held_state(), HeldState::default());
}

#[test]
fn the_alarm_kill_reaches_the_host_and_is_audited() {
    let mut world = ExecWorld::new(2, 9);
    let credential = world.login(1, "alice", PASSWORD).expect("alice logs in");
    let key = world.client_keys[&1];
    world.exec(2, key, credential, hosts(2), &["sleep", "1000"]);
    for _ in 0..20 {
        world.advance(Duration::from_secs(1));
    }
    let got = results(&world, 2);
    assert_eq!(got.len(), 2);
    assert!(
        got.iter().all(|(_, o, _)| matches!(o, HostOutcome::KilledByAlarm(r) if r.contains("no output"))),
        "{got:?}"
    );
    let ended: Vec<String> = world
        .chain
        .iter()
        .filter_map(|e| match &e.record.decision {
            AuditDecision::Ended { outcome } => Some(outcome.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(ended.len(), 2);
    assert!(ended.iter().all(|o| o.starts_with("killed: killed by alarm")), "{ended:?}");
    assert_eq!(world.gateway.held_state(), HeldState::default());
}

#[test]
fn a_client_that_goes_away_has_its_commands_killed() {
    let mut world = ExecWorld::new(2, 10);
    let credential = world.login(1, "alice", PASSWORD).expect("alice logs in");
    let key = world.client_keys[&1];
    world.exec(2, key, credential, hosts(2), &["sleep", "1000"]);
    assert_eq!(world.total_spawned(), 2);
    world.gateway_in(GatewayInput::ClientGone { client: 2 });
    world.pump();
    let killed = world
        .chain
        .iter()
        .filter(|e| matches!(&e.record.decision, AuditDecision::Ended { outcome } if outcome.contains("the client went away")))
        .count();
    assert_eq!(killed, 2);
    assert_eq!(world.gateway.held_state(), HeldState::default());
    assert!(world.daemons.iter().all(|d| d.sessions() == 0));
}

#[test]
fn an_unreachable_host_is_reported_while_the_others_complete() {
    let mut world = ExecWorld::new(3, 11);
    world.down = vec![1];
    let credential = world.login(1, "alice", PASSWORD).expect("alice logs in");
    let key = world.client_keys[&1];
    world.exec(2, key, credential, hosts(3), &["uname"]);
    let got = results(&world, 2);
    assert_eq!(got.len(), 3);
    let down = got.iter().find(|(h, ..)| h == "h02").expect("reported");
    assert_eq!(down.1, HostOutcome::Unreachable("connection refused".into()));
    assert_eq!(got.iter().filter(|(_, o, _)| *o == HostOutcome::Exited(0)).count(), 2);
}

#[test]
fn without_the_collectors_acknowledgement_nothing_runs() {
    let mut world = ExecWorld::new(1, 12);
    world.collector_up = false;
    let credential = world.login(1, "alice", PASSWORD).expect("alice logs in");
    let key = world.client_keys[&1];
    world.exec(2, key, credential, hosts(1), &["echo", "x"]);
    assert_eq!(world.total_spawned(), 0);
    world.advance(Duration::from_secs(6));
    assert_eq!(world.total_spawned(), 0);
    let got = results(&world, 2);
    assert!(
        matches!(&got[0].1, HostOutcome::Denied(r) if r.contains("audit collector did not acknowledge")),
        "{got:?}"
    );
}

#[test]
fn percent_h_becomes_each_hosts_name() {
    let mut world = ExecWorld::new(3, 13);
    let credential = world.login(1, "alice", PASSWORD).expect("alice logs in");
    let key = world.client_keys[&1];
    world.exec(2, key, credential, hosts(3), &["echo", "I am %h"]);
    let mut got: Vec<(String, Vec<u8>)> =
        results(&world, 2).into_iter().map(|(h, _, out)| (h, out)).collect();
    got.sort();
    assert_eq!(got[0], ("h01".to_owned(), b"I am h01\n".to_vec()));
    assert_eq!(got[2], ("h03".to_owned(), b"I am h03\n".to_vec()));
}

/// Node sets are the gateway's to expand, from the groups the installed configuration gave it:
/// `@web` names what `group.web` says, ranges expand, and a malformed set is refused with what
/// was wrong before anything runs.
#[test]
fn the_gateway_expands_node_sets_and_groups_from_its_installed_configuration() {
    let mut world = ExecWorld::new(6, 31);
    let groups = [("web".to_owned(), "h[01-02],h05".to_owned())].into();
    world.gateway_in(GatewayInput::Groups(groups));
    let credential = world.login(1, "alice", PASSWORD).expect("logs in");
    let key = world.client_keys[&1];
    world.exec(1, key, credential.clone(), vec!["@web".into(), "h06".into()], &["echo", "hi"]);
    let mut ran: Vec<String> = results(&world, 1).into_iter().map(|(h, ..)| h).collect();
    ran.sort();
    assert_eq!(ran, ["h01", "h02", "h05", "h06"]);

    world.exec(1, key, credential, vec!["h[03-".into()], &["echo", "hi"]);
    let reason = refused(&world, 1).expect("refused");
    assert!(reason.starts_with("bad host list:"), "{reason}");
    // A group the configuration does not define is an error too, not an empty run.
    let credential = world.login(2, "alice", PASSWORD).expect("logs in");
    let key = world.client_keys[&2];
    world.exec(2, key, credential, vec!["@db".into()], &["echo", "hi"]);
    assert!(refused(&world, 2).is_some_and(|r| r.contains("bad host list")));
    assert_eq!(world.total_spawned(), 4);
}

/// A connection to a host carries one session: a second Start on it is a gateway out of protocol,
/// so what runs is stopped (and audited) rather than a second command started; a Cancel with no
/// session behind it changes nothing.
#[test]
fn a_second_start_on_one_host_connection_stops_the_run_instead_of_starting_another() {
    let mut world = ExecWorld::new(1, 32);
    world.daemon_in(0, DaemonInput::Wire { conn: 77, message: HostWire::Cancel { reason: "early".into() } });
    world.pump();
    assert_eq!(world.daemons[0].protocol_errors(), 0, "a cancel that crossed the end is harmless");
    let stamp = world.wall;
    let first = request(&mut world, "h01", "h01", stamp, &["sleep", "60"]);
    let first_again = first.clone();
    world.direct(0, 77, first);
    assert_eq!(world.total_spawned(), 1);
    // The order rule comes before any check of what the message carries.
    world.direct(0, 77, first_again);
    assert_eq!(world.total_spawned(), 1, "the second Start ran nothing");
    assert_eq!(world.daemons[0].protocol_errors(), 1);
    assert_eq!(world.daemons[0].sessions(), 0, "the running session was stopped");
    let ended = world.local_audit[0].iter().any(
        |r| matches!(&r.decision, AuditDecision::Ended { outcome } if outcome.contains("already carries a session")),
    );
    assert!(ended, "the stop was audited: {:?}", world.local_audit[0]);
}

/// The collector takes a record only if the host it names signed it: a host writing records in
/// another host's name is refused, the chain stays as it was, and the refusal is counted.
#[test]
fn an_audit_record_not_signed_by_the_host_it_names_is_refused_and_counted() {
    let mut world = ExecWorld::new(3, 33);
    let before = world.chain.len();
    let record = cohort_core::exec::audit::AuditRecord {
        host: host_name(1),
        principal: "alice".into(),
        run_as: "root".into(),
        argv: vec!["true".into()],
        at: world.wall,
        decision: AuditDecision::Run,
        run_id: [7; 16],
    };
    let forged = Signed::sign(record, &world.host_keys[0]).expect("signs");
    world.submit_audit(forged);
    assert_eq!(world.chain.len(), before);
    assert_eq!(world.collector.refused(), 1);
    assert!(verify_chain(&world.chain).is_ok());
}

/// Output past the cap stops at the host: what goes back is the cap's worth, and the rest is
/// counted, reported before the end, and shown to the client as cut.
#[test]
fn output_beyond_the_cap_is_cut_at_the_host_and_counted() {
    let mut world = ExecWorld::new(2, 34);
    let credential = world.login(1, "alice", PASSWORD).expect("logs in");
    let key = world.client_keys[&1];
    world.exec(1, key, credential, hosts(2), &["spew"]);
    let results: Vec<_> = world
        .events(1)
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Host(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(results.len(), 2);
    for r in &results {
        assert_eq!(r.outcome, HostOutcome::Exited(0));
        assert_eq!(r.stdout.len(), 1024 * 1024, "the cap's worth came back");
        assert_eq!(r.cut_bytes, 2 * 1024 * 1024, "the rest was counted");
    }
}
