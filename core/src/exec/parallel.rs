//! The parallel execution utility (source 002, figures 8 and 9A-9E): runs one session per host,
//! at most `fanout` at once, under one global alarm. Owns the fanout cap, the alarm rules and each
//! session's outcome. It never talks to a host: the driver starts and kills sessions and reports
//! their output and exits as inputs.
//!
//! The alarm rules, exactly as the source gives them. The first alarm fires T1 after the run
//! starts. At each alarm the next alarm is set to T1 from now, then each running session is
//! checked: running for T1+T2 or more → killed; running for T1 or more → killed if it produced no
//! output since the last alarm, else the next alarm comes within T3; running less than T1 → the
//! next alarm comes no later than its start + T1. "Output since the last alarm" means since the
//! last alarm that collected this session's output (one at which it had run T1 or more).

use std::collections::VecDeque;
use std::time::Duration;

use crate::machine::Machine;
use crate::time::{Instant, Now};

/// T1, T2, T3 of the source (defaults 16 s, 32 s, 2 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlarmSchedule {
    pub t1: Duration,
    pub t2: Duration,
    pub t3: Duration,
}

impl Default for AlarmSchedule {
    fn default() -> Self {
        AlarmSchedule { t1: Duration::from_secs(16), t2: Duration::from_secs(32), t3: Duration::from_secs(2) }
    }
}

/// Why the alarm handler ended a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmKill {
    /// Still running at T1+T2.
    RanTooLong,
    /// Running past T1 with no new output since the previous alarm.
    Silent,
}

impl std::fmt::Display for AlarmKill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AlarmKill::RanTooLong => "killed by alarm: still running at T1+T2",
            AlarmKill::Silent => "killed by alarm: no output since the last alarm after T1",
        })
    }
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    Exited {
        code: i32,
    },
    Signalled {
        signal: i32,
    },
    Killed(AlarmKill),
    /// The host refused the request before anything ran (ticket, authenticator, ACL, audit).
    Denied {
        reason: String,
    },
    /// The host could not be reached, or its connection dropped mid-run.
    Unreachable {
        reason: String,
    },
    /// The host ended the run on a cancel that was not the alarm (the client went away).
    Cancelled {
        reason: String,
    },
    /// The gateway could not start the session (no ticket, no such host).
    Failed {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionResult {
    pub host: String,
    pub end: SessionEnd,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Output beyond the cap, here or at the host, counted and not kept.
    pub cut: u64,
    pub started: Option<Instant>,
    pub ended: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParallelInput {
    /// Output from session `index` (stdout when `stderr` is false).
    Output {
        index: usize,
        stderr: bool,
        bytes: Vec<u8>,
    },
    /// The host dropped `bytes` of session `index`'s output beyond the cap.
    Dropped {
        index: usize,
        bytes: u64,
    },
    /// Session `index` ended on its own (or failed); after a kill the driver reports it too.
    Ended {
        index: usize,
        end: SessionEnd,
    },
    Timeout,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParallelOutput {
    /// Start the session for `host`.
    Start { index: usize, host: String },
    /// End session `index` on its host (the whole process group), for `reason`.
    Kill { index: usize, reason: AlarmKill },
    /// Session `index` is over; its result is final.
    Finished { index: usize },
    /// Every session is over.
    AllDone,
}

/// How long a killed session may take to confirm its end. A host that says nothing more (its
/// link cut, its machine gone) must not hold the whole run open: past this the session ends as
/// killed, and whatever the host says later is ignored.
pub const KILL_CONFIRM: Duration = Duration::from_secs(5);

#[derive(Debug)]
enum State {
    Waiting,
    Running {
        started: Instant,
        produced_at_last_alarm: u64,
    },
    /// Killed by the alarm; waiting for the driver to report the end, until `since` plus
    /// [`KILL_CONFIRM`].
    Killing {
        started: Instant,
        reason: AlarmKill,
        since: Instant,
    },
    Done,
}

#[derive(Debug)]
struct Session {
    host: String,
    state: State,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// Every byte the session ever produced, kept or not: what the alarm rules look at.
    produced: u64,
    cut: u64,
    result: Option<SessionResult>,
}

/// One parallel run over a list of hosts.
#[derive(Debug)]
pub struct ParallelRun {
    fanout: usize,
    alarms: AlarmSchedule,
    /// Output kept per host and stream; beyond it bytes are dropped (and counted).
    max_output: usize,
    sessions: Vec<Session>,
    next_waiting: usize,
    running: usize,
    alarm_at: Option<Instant>,
    outputs: VecDeque<ParallelOutput>,
    done: bool,
    max_running_seen: usize,
    pub dropped_output: u64,
}

impl ParallelRun {
    /// Starts a run at `now`: the first alarm is set for `now + T1` and up to `fanout` sessions
    /// start at once.
    pub fn new(
        now: Instant,
        hosts: Vec<String>,
        fanout: usize,
        alarms: AlarmSchedule,
        max_output: usize,
    ) -> Self {
        let sessions = hosts
            .into_iter()
            .map(|host| Session {
                host,
                state: State::Waiting,
                stdout: Vec::new(),
                stderr: Vec::new(),
                produced: 0,
                cut: 0,
                result: None,
            })
            .collect();
        let mut run = ParallelRun {
            fanout: fanout.max(1),
            alarms,
            max_output,
            sessions,
            next_waiting: 0,
            running: 0,
            alarm_at: Some(now + alarms.t1),
            outputs: VecDeque::new(),
            done: false,
            max_running_seen: 0,
            dropped_output: 0,
        };
        run.fill(now);
        run.check_done();
        run
    }

    /// Starts waiting sessions while fewer than `fanout` are running.
    fn fill(&mut self, now: Instant) {
        while self.running < self.fanout && self.next_waiting < self.sessions.len() {
            let index = self.next_waiting;
            self.next_waiting += 1;
            let session = &mut self.sessions[index];
            session.state = State::Running { started: now, produced_at_last_alarm: 0 };
            self.running += 1;
            self.max_running_seen = self.max_running_seen.max(self.running);
            self.outputs.push_back(ParallelOutput::Start { index, host: session.host.clone() });
        }
    }

    fn check_done(&mut self) {
        if !self.done && self.running == 0 && self.next_waiting >= self.sessions.len() {
            self.done = true;
            self.alarm_at = None;
            self.outputs.push_back(ParallelOutput::AllDone);
        }
    }

    /// The alarm event handler (figures 9A-9E).
    fn alarm(&mut self, now: Instant) {
        let AlarmSchedule { t1, t2, t3 } = self.alarms;
        let mut next = now + t1;
        let mut unconfirmed = Vec::new();
        for (index, session) in self.sessions.iter_mut().enumerate() {
            if let State::Killing { since, .. } = session.state {
                if now >= since + KILL_CONFIRM {
                    unconfirmed.push(index);
                } else {
                    next = next.min(since + KILL_CONFIRM);
                }
                continue;
            }
            let State::Running { started, produced_at_last_alarm } = session.state else { continue };
            let ran = now - started;
            if ran >= t1 + t2 {
                session.state = State::Killing { started, reason: AlarmKill::RanTooLong, since: now };
                next = next.min(now + KILL_CONFIRM);
                self.outputs.push_back(ParallelOutput::Kill { index, reason: AlarmKill::RanTooLong });
            } else if ran >= t1 {
                let produced = session.produced;
                if produced == produced_at_last_alarm {
                    session.state = State::Killing { started, reason: AlarmKill::Silent, since: now };
                    next = next.min(now + KILL_CONFIRM);
                    self.outputs.push_back(ParallelOutput::Kill { index, reason: AlarmKill::Silent });
                } else {
                    session.state = State::Running { started, produced_at_last_alarm: produced };
                    next = next.min(now + t3);
                }
            } else {
                // Younger than T1: the handler only schedules (box 1720); it collects no output,
                // so what the session prints now still counts at its first check.
                next = next.min(started + t1);
            }
        }
        self.alarm_at = Some(next);
        for index in unconfirmed {
            // Ends as killed, for the alarm's reason, as if the host had confirmed.
            self.ended(now, index, SessionEnd::Signalled { signal: 9 });
        }
    }

    fn ended(&mut self, now: Instant, index: usize, end: SessionEnd) {
        let Some(session) = self.sessions.get_mut(index) else { return };
        let (started, end) = match session.state {
            State::Running { started, .. } => (Some(started), end),
            // The alarm's reason is what the user needs to see, whatever signal ended it.
            State::Killing { started, reason, .. } => (Some(started), SessionEnd::Killed(reason)),
            State::Waiting | State::Done => return,
        };
        session.state = State::Done;
        session.result = Some(SessionResult {
            host: session.host.clone(),
            end,
            stdout: std::mem::take(&mut session.stdout),
            stderr: std::mem::take(&mut session.stderr),
            cut: session.cut,
            started,
            ended: now,
        });
        self.running -= 1;
        self.outputs.push_back(ParallelOutput::Finished { index });
        self.fill(now);
        self.check_done();
    }

    /// The result of a finished session.
    pub fn result(&self, index: usize) -> Option<&SessionResult> {
        self.sessions.get(index).and_then(|s| s.result.as_ref())
    }

    pub fn results(&self) -> impl Iterator<Item = &SessionResult> {
        self.sessions.iter().filter_map(|s| s.result.as_ref())
    }

    pub fn host(&self, index: usize) -> Option<&str> {
        self.sessions.get(index).map(|s| s.host.as_str())
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    pub fn running(&self) -> usize {
        self.running
    }

    /// The most sessions ever running at once (never above the fanout).
    pub fn max_running_seen(&self) -> usize {
        self.max_running_seen
    }

    pub fn finished(&self) -> usize {
        self.sessions.iter().filter(|s| s.result.is_some()).count()
    }
}

impl Machine for ParallelRun {
    type Input = ParallelInput;
    type Output = ParallelOutput;

    fn handle(&mut self, now: Now, input: ParallelInput) {
        let now = now.mono;
        match input {
            ParallelInput::Output { index, stderr, bytes } => {
                let max = self.max_output;
                let Some(session) = self.sessions.get_mut(index) else { return };
                if !matches!(session.state, State::Running { .. } | State::Killing { .. }) {
                    return;
                }
                session.produced = session.produced.saturating_add(bytes.len() as u64);
                let sink = if stderr { &mut session.stderr } else { &mut session.stdout };
                let room = max.saturating_sub(sink.len());
                let kept = bytes.len().min(room);
                sink.extend_from_slice(&bytes[..kept]);
                let cut = (bytes.len() - kept) as u64;
                session.cut = session.cut.saturating_add(cut);
                self.dropped_output += cut;
            }
            ParallelInput::Dropped { index, bytes } => {
                if let Some(session) = self.sessions.get_mut(index) {
                    // Dropped at the host is still output: the alarm rules count it.
                    session.produced = session.produced.saturating_add(bytes);
                    session.cut = session.cut.saturating_add(bytes);
                    self.dropped_output = self.dropped_output.saturating_add(bytes);
                }
            }
            ParallelInput::Ended { index, end } => self.ended(now, index, end),
            ParallelInput::Timeout => {
                if self.alarm_at.is_some_and(|at| now >= at) {
                    self.alarm(now);
                }
            }
        }
    }

    fn poll_output(&mut self) -> Option<ParallelOutput> {
        self.outputs.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.alarm_at
    }
}

/// Items grouped by `same`, each group with its hosts in order, largest group first: what a
/// person wants to read after running a command on a hundred hosts.
pub fn group_by_host<'a, T>(
    items: impl IntoIterator<Item = &'a T>,
    host: impl Fn(&T) -> &str,
    same: impl Fn(&T, &T) -> bool,
) -> Vec<(Vec<&'a str>, &'a T)> {
    let mut groups: Vec<(Vec<&'a str>, &'a T)> = Vec::new();
    for item in items {
        match groups.iter_mut().find(|(_, first)| same(first, item)) {
            Some((hosts, _)) => hosts.push(host(item)),
            None => groups.push((vec![host(item)], item)),
        }
    }
    groups.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
    groups
}

/// Session results grouped by identical end and output.
pub fn group_results<'a>(
    results: impl IntoIterator<Item = &'a SessionResult>,
) -> Vec<(Vec<&'a str>, &'a SessionResult)> {
    group_by_host(results, |r| &r.host, |a, b| a.end == b.end && a.stdout == b.stdout && a.stderr == b.stderr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> Now {
        Now::ZERO.with_mono(Instant::ZERO + Duration::from_secs(secs))
    }

    /// Drives one run: `script[i]` is host i's (offset from its start, output or end) list, a
    /// `None` end meaning it hangs. Returns the instants the alarm fired and each kill.
    #[allow(clippy::type_complexity)]
    fn alarms_of(
        script: Vec<Vec<(u64, Option<&str>)>>,
        fanout: usize,
    ) -> (Vec<u64>, Vec<(u64, usize, AlarmKill)>) {
        let hosts = (0..script.len()).map(|i| format!("h{i}")).collect();
        let mut run = ParallelRun::new(Instant::ZERO, hosts, fanout, AlarmSchedule::default(), 1024);
        // (when, order) -> (host, output or end): the one machine's world, nothing else.
        let mut due: std::collections::BTreeMap<(u64, u64), (usize, Option<String>)> = Default::default();
        let mut order = 0;
        let (mut alarms, mut kills, mut now) = (Vec::new(), Vec::new(), 0u64);
        loop {
            while let Some(out) = run.poll_output() {
                match out {
                    ParallelOutput::Start { index, .. } => {
                        for (offset, what) in &script[index] {
                            order += 1;
                            due.insert((now + offset, order), (index, what.map(str::to_owned)));
                        }
                    }
                    ParallelOutput::Kill { index, reason } => {
                        kills.push((now, index, reason));
                        due.retain(|_, (i, _)| *i != index);
                        let end = SessionEnd::Signalled { signal: 9 };
                        run.handle(at(now), ParallelInput::Ended { index, end });
                    }
                    ParallelOutput::Finished { .. } => {}
                    ParallelOutput::AllDone => return (alarms, kills),
                }
            }
            let alarm = run.poll_timeout().map(|t| (t - Instant::ZERO).as_secs());
            let event = due.keys().next().map(|(t, _)| *t);
            match (event, alarm) {
                (Some(e), Some(a)) if a < e => {
                    now = a;
                    alarms.push(now);
                    run.handle(at(now), ParallelInput::Timeout);
                }
                (None, Some(a)) => {
                    now = a;
                    alarms.push(now);
                    run.handle(at(now), ParallelInput::Timeout);
                }
                (Some(_), _) => {
                    let Some(((t, _), (index, what))) = due.pop_first() else { continue };
                    now = t;
                    let input = match what {
                        Some(line) => {
                            ParallelInput::Output { index, stderr: false, bytes: line.into_bytes() }
                        }
                        None => ParallelInput::Ended { index, end: SessionEnd::Exited { code: 0 } },
                    };
                    run.handle(at(now), input);
                }
                (None, None) => return (alarms, kills),
            }
        }
    }

    /// Output only at the start counts at T1 (output since the run began), so the next alarm
    /// comes T3 later, where nothing new has come: killed then.
    #[test]
    fn output_only_at_the_start_is_killed_at_t1_plus_t3() {
        let (alarms, kills) = alarms_of(vec![vec![(0, Some("started\n"))]], 1);
        assert_eq!(alarms, [16, 18]);
        assert_eq!(kills, [(18, 0, AlarmKill::Silent)]);
    }

    /// Fanout 1: h1 ends at 10 s and h2 starts then; at the 16 s alarm h2 is younger than T1, so
    /// the next alarm comes at its start + T1 = 26 s, then T3 later.
    #[test]
    fn a_session_younger_than_t1_brings_the_next_alarm_to_its_start_plus_t1() {
        let h1 = vec![(0, Some("done\n")), (10, None)];
        let h2 = vec![(0, Some("started\n"))];
        let (alarms, kills) = alarms_of(vec![h1, h2], 1);
        assert_eq!(&alarms[..3], &[16, 26, 28]);
        assert_eq!(kills, [(28, 1, AlarmKill::Silent)]);
    }

    /// A line every second until 25 s: rechecked at least every T3 after T1, never killed.
    #[test]
    fn steady_output_is_rechecked_within_t3_after_t1() {
        let mut h = (0..25).map(|s| (s, Some("tick\n"))).collect::<Vec<_>>();
        h.push((25, None));
        let (alarms, kills) = alarms_of(vec![h], 1);
        assert!(kills.is_empty(), "{kills:?}");
        assert_eq!(alarms.first(), Some(&16));
        assert!(alarms.windows(2).all(|w| w[1] - w[0] <= 2), "rechecks within T3: {alarms:?}");
        assert!(alarms.len() >= 4, "{alarms:?}");
    }

    /// A host that never confirms a kill (its link cut) does not hold the run open: the session
    /// ends as killed for the alarm's reason once the grace has passed.
    #[test]
    fn a_kill_the_host_never_confirms_ends_the_session_after_the_grace() {
        let alarms = AlarmSchedule {
            t1: Duration::from_secs(1),
            t2: Duration::from_secs(2),
            t3: Duration::from_secs(1),
        };
        let mut run = ParallelRun::new(Instant::ZERO, vec!["h1".into()], 1, alarms, 1024);
        assert!(matches!(run.poll_output(), Some(ParallelOutput::Start { index: 0, .. })));
        run.handle(at(1), ParallelInput::Timeout);
        assert_eq!(run.poll_output(), Some(ParallelOutput::Kill { index: 0, reason: AlarmKill::Silent }));
        // The alarm keeps its round until the grace has passed, and nothing ends before.
        let grace_over = Instant::ZERO + Duration::from_secs(1) + KILL_CONFIRM;
        while let Some(next) = run.poll_timeout().filter(|t| *t < grace_over) {
            run.handle(Now::ZERO.with_mono(next), ParallelInput::Timeout);
            assert_eq!(run.poll_output(), None, "ended before the grace at {next}");
        }
        assert_eq!(run.poll_timeout(), Some(grace_over));
        run.handle(Now::ZERO.with_mono(grace_over), ParallelInput::Timeout);
        assert_eq!(run.poll_output(), Some(ParallelOutput::Finished { index: 0 }));
        assert_eq!(run.poll_output(), Some(ParallelOutput::AllDone));
        assert_eq!(run.result(0).map(|r| r.end.clone()), Some(SessionEnd::Killed(AlarmKill::Silent)));
        // The host's late word changes nothing.
        run.handle(at(9), ParallelInput::Ended { index: 0, end: SessionEnd::Exited { code: 0 } });
        assert_eq!(run.poll_output(), None);
    }
}
