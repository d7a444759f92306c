//! Simulated commands for the parallel execution utility: each host runs a script of outputs at
//! set offsets, then exits, hangs, or is unreachable. A discrete-event loop drives
//! [`ParallelRun`] through simulated time, so every alarm branch is exercised in milliseconds
//! of real time and replays exactly. No protocol rule lives here: the alarm rules are core's.

use std::collections::BTreeMap;
use std::time::Duration;

use cohort_core::exec::parallel::{
    AlarmKill, AlarmSchedule, ParallelInput, ParallelOutput, ParallelRun, SessionEnd, SessionResult,
};
use cohort_core::{Instant, Machine, Now};

/// What a simulated command does once started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimScript {
    /// (offset from start, stdout bytes).
    pub outputs: Vec<(Duration, Vec<u8>)>,
    pub end: SimEnd,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimEnd {
    /// Exits with this code at this offset.
    Exit { at: Duration, code: i32 },
    /// Never exits on its own.
    Hang,
    /// The host cannot be reached: the session fails at once.
    Unreachable,
}

impl SimScript {
    /// Prints `line` once and exits `code` after `after`.
    pub fn quick(line: &str, after: Duration, code: i32) -> SimScript {
        SimScript {
            outputs: vec![(Duration::ZERO, line.as_bytes().to_vec())],
            end: SimEnd::Exit { at: after, code },
        }
    }

    /// Prints a line every `every` until `until`, then exits 0 (or hangs silently when `hang`).
    pub fn chatty(every: Duration, until: Duration, hang: bool) -> SimScript {
        let mut outputs = Vec::new();
        let mut at = Duration::ZERO;
        while at < until {
            outputs.push((at, format!("tick {}\n", at.as_millis()).into_bytes()));
            at += every;
        }
        let end = if hang { SimEnd::Hang } else { SimEnd::Exit { at: until, code: 0 } };
        SimScript { outputs, end }
    }

    /// Prints once at the start, then hangs silently.
    pub fn silent_hang() -> SimScript {
        SimScript { outputs: vec![(Duration::ZERO, b"started\n".to_vec())], end: SimEnd::Hang }
    }
}

/// What happened during a simulated parallel run.
#[derive(Debug, Clone)]
pub struct SimExecReport {
    pub results: Vec<SessionResult>,
    /// Simulated times (since the run started) at which the alarm fired.
    pub alarms: Vec<Duration>,
    /// (host, time since the run started, reason) for each alarm kill.
    pub kills: Vec<(String, Duration, AlarmKill)>,
    pub max_running: usize,
    pub fanout: usize,
    pub finished_at: Duration,
}

/// Runs `hosts` (each with its script) under `fanout` and `alarms` in simulated time.
pub fn run_parallel(hosts: Vec<(String, SimScript)>, fanout: usize, alarms: AlarmSchedule) -> SimExecReport {
    let start = Instant::from_nanos(1_000_000_000);
    let scripts: Vec<SimScript> = hosts.iter().map(|(_, s)| s.clone()).collect();
    let names: Vec<String> = hosts.into_iter().map(|(h, _)| h).collect();
    let mut run = ParallelRun::new(start, names, fanout, alarms, 1 << 20);
    // Pending simulated events: (time, sequence) → (session, event).
    let mut events: BTreeMap<(Instant, u64), (usize, ParallelInput)> = BTreeMap::new();
    let mut seq = 0u64;
    let mut report = SimExecReport {
        results: Vec::new(),
        alarms: Vec::new(),
        kills: Vec::new(),
        max_running: 0,
        fanout,
        finished_at: Duration::ZERO,
    };
    let mut now = start;
    loop {
        while let Some(output) = run.poll_output() {
            match output {
                ParallelOutput::Start { index, .. } => {
                    let script = &scripts[index];
                    for (offset, bytes) in &script.outputs {
                        seq += 1;
                        let input = ParallelInput::Output { index, stderr: false, bytes: bytes.clone() };
                        events.insert((now + *offset, seq), (index, input));
                    }
                    seq += 1;
                    match script.end {
                        SimEnd::Exit { at, code } => {
                            let end = SessionEnd::Exited { code };
                            events.insert((now + at, seq), (index, ParallelInput::Ended { index, end }));
                        }
                        SimEnd::Unreachable => {
                            let end = SessionEnd::Unreachable { reason: "host unreachable".into() };
                            events.insert((now, seq), (index, ParallelInput::Ended { index, end }));
                        }
                        SimEnd::Hang => {}
                    }
                }
                ParallelOutput::Kill { index, reason } => {
                    let host = run.host(index).unwrap_or_default().to_owned();
                    report.kills.push((host, now - start, reason));
                    // The host kills the process group; nothing more comes from it.
                    events.retain(|_, (i, _)| *i != index);
                    seq += 1;
                    let end = SessionEnd::Signalled { signal: 9 };
                    events.insert((now, seq), (index, ParallelInput::Ended { index, end }));
                }
                ParallelOutput::Finished { .. } => {}
                ParallelOutput::AllDone => {
                    report.results = run.results().cloned().collect();
                    report.max_running = run.max_running_seen();
                    report.finished_at = now - start;
                    return report;
                }
            }
        }
        let next_event = events.keys().next().map(|(t, _)| *t);
        let next_alarm = run.poll_timeout();
        match (next_event, next_alarm) {
            (Some(e), Some(a)) if a < e => {
                now = a;
                report.alarms.push(now - start);
                run.handle(Now::ZERO.with_mono(now), ParallelInput::Timeout);
            }
            (None, Some(a)) => {
                now = a;
                report.alarms.push(now - start);
                run.handle(Now::ZERO.with_mono(now), ParallelInput::Timeout);
            }
            (Some(_), _) => {
                let Some(((at, _), (_, input))) = events.pop_first() else { continue };
                now = at;
                run.handle(Now::ZERO.with_mono(now), input);
            }
            (None, None) => {
                // Nothing scheduled and not done: cannot happen with a well-formed run.
                report.results = run.results().cloned().collect();
                report.max_running = run.max_running_seen();
                report.finished_at = now - start;
                return report;
            }
        }
    }
}
