//! The parallel execution utility's alarm rules (source 002, figures 9A-9E) and fanout, in
//! simulated time with simulated commands (T1 = 16 s, T2 = 32 s, T3 = 2 s).

use std::time::Duration;

use cohort_core::exec::parallel::{AlarmKill, AlarmSchedule, SessionEnd, group_results};
use cohort_io_sim::commands::{SimEnd, SimScript, run_parallel};

const S: fn(u64) -> Duration = Duration::from_secs;

fn one(script: SimScript) -> cohort_io_sim::commands::SimExecReport {
    run_parallel(vec![("h1".into(), script)], 1, AlarmSchedule::default())
}

#[test]
fn a_session_still_running_at_t1_plus_t2_is_killed_then() {
    // Output every second forever: the "no output" rule never fires, the T1+T2 rule does.
    let report = one(SimScript::chatty(S(1), S(1000), true));
    assert_eq!(report.kills, vec![("h1".to_owned(), S(48), AlarmKill::RanTooLong)]);
    assert_eq!(report.results[0].end, SessionEnd::Killed(AlarmKill::RanTooLong));
}

#[test]
fn a_session_silent_since_the_last_alarm_after_t1_is_killed_at_that_alarm() {
    // No output at all: killed at the first alarm, T1.
    let silent = one(SimScript { outputs: vec![], end: SimEnd::Hang });
    assert_eq!(silent.kills, vec![("h1".to_owned(), S(16), AlarmKill::Silent)]);
    // Output only at the start: it counts at T1 (output since the run began), so the next alarm
    // comes T3 later, where nothing new has come: killed then.
    let quiet = one(SimScript::silent_hang());
    assert_eq!(quiet.alarms, vec![S(16), S(18)]);
    assert_eq!(quiet.kills, vec![("h1".to_owned(), S(18), AlarmKill::Silent)]);
    assert_eq!(quiet.results[0].stdout, b"started\n");
}

#[test]
fn steady_output_keeps_a_session_alive_past_t1_with_rechecks_within_t3() {
    let report = one(SimScript::chatty(S(1), S(25), false));
    assert!(report.kills.is_empty(), "{:?}", report.kills);
    assert_eq!(report.results[0].end, SessionEnd::Exited { code: 0 });
    let after_t1: Vec<Duration> = report.alarms.iter().copied().filter(|a| *a >= S(16)).collect();
    assert_eq!(after_t1.first(), Some(&S(16)));
    assert!(after_t1.windows(2).all(|w| w[1] - w[0] <= S(2)), "rechecks within T3: {after_t1:?}");
    assert!(after_t1.len() >= 4);
}

#[test]
fn a_session_younger_than_t1_sets_the_next_alarm_at_its_start_plus_t1() {
    // Fanout 1: h2 starts when h1 exits at 10 s. At the 16 s alarm h2 has run 6 s, so the next
    // alarm is at 10 + 16 = 26 s, not 32 s.
    let hosts =
        vec![("h1".into(), SimScript::quick("done\n", S(10), 0)), ("h2".into(), SimScript::silent_hang())];
    let report = run_parallel(hosts, 1, AlarmSchedule::default());
    assert_eq!(&report.alarms[..3], &[S(16), S(26), S(28)]);
    assert_eq!(report.kills, vec![("h2".to_owned(), S(28), AlarmKill::Silent)]);
}

#[test]
fn configured_timers_are_used() {
    let alarms = AlarmSchedule { t1: S(2), t2: S(3), t3: Duration::from_millis(500) };
    let report = run_parallel(
        vec![("h".into(), SimScript::chatty(Duration::from_millis(200), S(60), true))],
        1,
        alarms,
    );
    assert_eq!(report.kills, vec![("h".to_owned(), S(5), AlarmKill::RanTooLong)]);
}

#[test]
fn fanout_is_never_exceeded_and_outputs_come_back_grouped_per_host() {
    let hosts: Vec<(String, SimScript)> = (1..=50)
        .map(|i| {
            let script = if i % 10 == 0 {
                SimScript::quick("error: disk full\n", S(i % 7 + 1), 1)
            } else {
                SimScript::quick("ok\n", S(i % 5 + 1), 0)
            };
            (format!("h{i:02}"), script)
        })
        .collect();
    let report = run_parallel(hosts, 7, AlarmSchedule::default());
    assert_eq!(report.max_running, 7, "fanout reached but never exceeded");
    assert_eq!(report.results.len(), 50);
    let groups = group_results(&report.results);
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0].0.len(), 45);
    assert_eq!(groups[0].1.stdout, b"ok\n");
    assert_eq!(cohort_core::exec::nodeset::fold(&groups[1].0), "h[10,20,30,40,50]");
    assert_eq!(groups[1].1.end, SessionEnd::Exited { code: 1 });
}

#[test]
fn an_unreachable_host_is_reported_while_the_others_complete() {
    let hosts = vec![
        ("up1".into(), SimScript::quick("hi\n", S(1), 0)),
        ("down".into(), SimScript { outputs: vec![], end: SimEnd::Unreachable }),
        ("up2".into(), SimScript::quick("hi\n", S(1), 0)),
    ];
    let report = run_parallel(hosts, 2, AlarmSchedule::default());
    let down = report.results.iter().find(|r| r.host == "down").expect("reported");
    assert!(matches!(&down.end, SessionEnd::Unreachable { .. }));
    assert_eq!(report.results.iter().filter(|r| r.end == SessionEnd::Exited { code: 0 }).count(), 2);
}
