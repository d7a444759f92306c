//! The parallel execution utility's alarm rules (source 002, figures 9A-9E) and fanout, through
//! the one turmoil host driver: a client runs simulated commands on a gateway node and an exec
//! node (T1 = 16 s, T2 = 32 s, T3 = 2 s unless a test sets them). When a session ended is read
//! from its result (`ended_ms`, since the run began), so every kill is checked at the alarm the
//! rules name, within the few milliseconds the simulated network takes. The exact alarm
//! sequence of one run is a unit test of `ParallelRun` in core.

use std::time::Duration;

use cohort_core::exec::gateway::{ClientEvent, ExecCommand, HostOutcome, HostResult};
use cohort_core::exec::nodeset::fold;
use cohort_core::exec::parallel::{AlarmKill, group_by_host};
use cohort_io_sim::exec_site::{PASSWORD, Site, SiteRun, SiteSpec, host_results};

/// How long after the alarm a kill may land: the cancel's and the exit's trips.
const SLACK_MS: u64 = 500;

/// Runs `argv` on `hosts` with `adjust` applied to the command, and returns each host's result.
fn run_with(
    spec: SiteSpec,
    hosts: &str,
    argv: &[&str],
    adjust: fn(&mut ExecCommand),
) -> (Vec<HostResult>, SiteRun) {
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::<ClientEvent>::new()));
    let out = events.clone();
    let argv: Vec<String> = argv.iter().map(|a| (*a).to_owned()).collect();
    let hosts = hosts.to_owned();
    let site = Site::new(&spec).expect("the site builds");
    let run = site.run(Duration::from_secs(2), |client| async move {
        let login = client.login("alice", PASSWORD).await?;
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let mut command = client.command(&login.credential, &[hosts.as_str()], &argv);
        adjust(&mut command);
        *out.lock().expect("not poisoned") = client.run(&login.keys, command).await?;
        Ok(())
    });
    assert_eq!(run.violation, None);
    assert_eq!(run.script, Ok(()));
    let results = host_results(&events.lock().expect("not poisoned"));
    (results, run)
}

fn one(argv: &[&str]) -> HostResult {
    let (mut results, _) = run_with(SiteSpec::new(1, 1), "h01", argv, |_| {});
    assert_eq!(results.len(), 1);
    results.remove(0)
}

/// Asserts `result` was killed by the alarm for `why` at `at_s` seconds into the run.
fn killed_at(result: &HostResult, why: AlarmKill, at_s: u64) {
    assert_eq!(result.outcome, HostOutcome::KilledByAlarm(why.to_string()), "{result:?}");
    let at_ms = at_s * 1000;
    assert!(
        (at_ms..at_ms + SLACK_MS).contains(&result.ended_ms),
        "{} killed at {} ms, the rules say {at_ms} ms",
        result.host,
        result.ended_ms
    );
}

#[test]
fn a_session_still_running_at_t1_plus_t2_is_killed_then() {
    // Output every second: the "no output" rule never fires, the T1+T2 rule does.
    killed_at(&one(&["/usr/bin/tick", "1000", "1000000"]), AlarmKill::RanTooLong, 48);
}

#[test]
fn a_session_silent_since_the_last_alarm_after_t1_is_killed_at_that_alarm() {
    // No output at all: killed at the first alarm, T1.
    killed_at(&one(&["/usr/bin/sleep", "1000"]), AlarmKill::Silent, 16);
    // Output only at the start: it counts at T1 (output since the run began), so the next alarm
    // comes T3 later, where nothing new has come: killed then.
    let quiet = one(&["/usr/bin/hang"]);
    killed_at(&quiet, AlarmKill::Silent, 18);
    assert_eq!(quiet.stdout, b"started\n");
}

#[test]
fn steady_output_keeps_a_session_alive_past_t1() {
    let steady = one(&["/usr/bin/tick", "1000", "25000"]);
    assert_eq!(steady.outcome, HostOutcome::Exited(0), "{steady:?}");
    assert!((25_000..25_000 + SLACK_MS).contains(&steady.ended_ms), "ended at {}", steady.ended_ms);
}

#[test]
fn a_session_younger_than_t1_sets_the_next_alarm_at_its_start_plus_t1() {
    // Fanout 1: h02 starts when h01 exits at 10 s. At the 16 s alarm h02 has run 6 s, so the next
    // alarm is at its start + T1 = 26 s, where its one line counts; T3 later, at 28 s, nothing
    // new has come: killed then (a schedule keyed on the run's start would kill at 34 s).
    let (results, _) = run_with(
        SiteSpec::new(2, 2),
        "h[01-02]",
        &["/usr/bin/when", "%h=h01", "say", "done", "10", "0", "else", "hang"],
        |c| c.fanout = 1,
    );
    assert_eq!(results[0].outcome, HostOutcome::Exited(0));
    let started = results[1].started_ms.expect("h02 started");
    assert!((10_000..10_000 + SLACK_MS).contains(&started), "h02 started at {started} ms");
    killed_at(&results[1], AlarmKill::Silent, 28);
}

#[test]
fn configured_timers_are_used() {
    let (results, _) =
        run_with(SiteSpec::new(1, 3), "h01", &["/usr/bin/tick", "200", "60000", "hang"], |c| {
            (c.t1_ms, c.t2_ms, c.t3_ms) = (2_000, 3_000, 500);
        });
    killed_at(&results[0], AlarmKill::RanTooLong, 5);
}

#[test]
fn fanout_is_never_exceeded_and_outputs_come_back_grouped_per_host() {
    let (results, run) =
        run_with(SiteSpec::new(50, 4), "h[01-50]", &["/usr/bin/mixed", "%h"], |c| c.fanout = 7);
    assert_eq!(results.len(), 50);
    // Commands running at once on the exec node, from what it spawned and saw exit.
    let mut running = 0usize;
    let mut most = 0usize;
    for line in run.trace.lines() {
        if line.contains("exec       -> Spawn ") {
            running += 1;
            most = most.max(running);
        } else if line.contains("exec       <- ChildExited ") {
            running -= 1;
        }
    }
    assert_eq!(most, 7, "fanout reached but never exceeded");
    let groups = group_by_host(&results, |r| &r.host, |a, b| a.outcome == b.outcome && a.stdout == b.stdout);
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0].0.len(), 45);
    assert_eq!(groups[0].1.stdout, b"ok\n");
    let failed: Vec<String> = groups[1].0.iter().map(|h| (*h).to_owned()).collect();
    assert_eq!(fold(&failed), "h[10,20,30,40,50]");
    assert_eq!(groups[1].1.outcome, HostOutcome::Exited(1));
}

#[test]
fn an_unreachable_host_is_reported_while_the_others_complete() {
    let spec = SiteSpec { down: [1].into(), ..SiteSpec::new(3, 5) };
    let (results, _) = run_with(spec, "h[01-03]", &["/usr/bin/say", "hi", "1", "0"], |c| c.fanout = 2);
    assert!(matches!(&results[1].outcome, HostOutcome::Unreachable(_)), "{:?}", results[1]);
    assert_eq!(results.iter().filter(|r| r.outcome == HostOutcome::Exited(0)).count(), 2);
}

/// A host whose address accepts a connection and never answers is reported unreachable once
/// the run's connect timeout passes, apart from the command's own time and alarms, while the
/// others complete.
#[test]
fn a_host_that_accepts_and_never_answers_is_unreachable_after_the_connect_timeout() {
    let spec = SiteSpec { mute: [1].into(), ..SiteSpec::new(3, 6) };
    let (results, _) =
        run_with(spec, "h[01-03]", &["/usr/bin/say", "hi", "1", "0"], |c| c.connect_timeout_ms = 1_500);
    let HostOutcome::Unreachable(reason) = &results[1].outcome else { panic!("{:?}", results[1]) };
    assert!(reason.contains("connect timeout"), "{reason}");
    // Given up at the connect timeout (1.5 s after it was sent), not at T1 (16 s).
    assert!((1_500..2_500).contains(&results[1].ended_ms), "{:?}", results[1]);
    assert_eq!(results.iter().filter(|r| r.outcome == HostOutcome::Exited(0)).count(), 2);
}
