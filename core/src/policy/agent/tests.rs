//! The agent's schedule, apply, measuring rounds and platform detection, driven by hand.
use super::*;
use crate::rng::seeded;

pub(super) fn agent() -> PolicyAgent {
    let keys = NodeKeys::generate(&mut seeded(1));
    let platform = Platform::new("linux", "6", "web");
    let second = Duration::from_secs(1);
    PolicyAgent::new(
        Instant::ZERO,
        "a0".into(),
        keys,
        platform,
        "local".into(),
        second,
        second,
        seeded(2),
        false,
    )
}

fn policy(value: &str) -> EffectivePolicy {
    let params: BTreeMap<String, String> = [("fw".to_owned(), value.to_owned())].into();
    let sources = [("fw".to_owned(), ("fw".to_owned(), 1))].into();
    let mut digest = [0u8; 32];
    digest[..value.len().min(32)].copy_from_slice(&value.as_bytes()[..value.len().min(32)]);
    EffectivePolicy { params, sources, digest }
}

/// The report the agent sends at its next poll.
fn report(agent: &mut PolicyAgent, now: Now) -> AgentReport {
    let due = Now { mono: agent.poll_timeout().unwrap_or(now.mono), ..now };
    agent.handle(due, AgentInput::Timeout);
    loop {
        match agent.poll_output() {
            Some(AgentOutput::Report { report, .. }) => return report.body,
            Some(_) => {}
            None => panic!("no report"),
        }
    }
}

fn offer(agent: &mut PolicyAgent, effective: EffectivePolicy) -> Option<EffectivePolicy> {
    let reply = PolicyMessage::PollReply { effective };
    agent.handle(Now::ZERO, AgentInput::FromServer(Box::new(reply)));
    std::iter::from_fn(|| agent.poll_output()).find_map(|o| match o {
        AgentOutput::Apply(p) => Some(p),
        _ => None,
    })
}

#[test]
fn before_any_apply_nothing_is_reported_and_nothing_counts_as_compliant() {
    let mut agent = agent();
    let report = report(&mut agent, Now::ZERO);
    assert!(report.checks.is_empty());
    assert_eq!((report.threats, report.last_scan, report.applied), (None, None, [0; 32]));
    assert!(!report.compliant(), "an agent that measured nothing is not compliant");
}

#[test]
fn a_failed_apply_is_reported_failed_and_tried_again_at_the_next_answer() {
    let mut agent = agent();
    let deny = policy("deny");
    assert_eq!(offer(&mut agent, deny.clone()), Some(deny.clone()));
    // Offered again while the write is still under way: not handed out twice.
    assert_eq!(offer(&mut agent, deny.clone()), None);
    let failed = AgentInput::Applied { digest: deny.digest, outcome: Err("disk full".into()) };
    agent.handle(Now::ZERO, failed);
    assert_eq!(agent.apply_error(), Some("disk full"));
    assert!(agent.applied().is_none());
    let sent = report(&mut agent, Now::ZERO);
    assert_eq!(sent.checks.get(APPLIED_CHECK).map(|c| c.outcome), Some(CheckOutcome::Fail));
    assert_eq!(sent.applied, [0; 32], "the digest of a policy never written is not reported");
    assert!(!sent.compliant());

    assert_eq!(offer(&mut agent, deny.clone()), Some(deny.clone()), "tried again");
    agent.handle(Now::ZERO, AgentInput::Applied { digest: deny.digest, outcome: Ok(()) });
    let sent = report(&mut agent, Now::ZERO);
    assert_eq!(sent.checks.get(APPLIED_CHECK).map(|c| c.outcome), Some(CheckOutcome::Pass));
    assert_eq!(sent.applied, deny.digest);
    assert!(sent.compliant());
    assert_eq!(offer(&mut agent, deny), None, "a written policy is not written again");
}

#[test]
fn an_outcome_for_a_policy_not_being_applied_changes_nothing() {
    let mut agent = agent();
    agent.handle(Now::ZERO, AgentInput::Applied { digest: [9; 32], outcome: Ok(()) });
    assert!(agent.applied().is_none());
    assert!(report(&mut agent, Now::ZERO).checks.is_empty());
}

mod measuring {
    use super::agent;
    use super::*;
    use crate::policy::checks::FileFacts;

    fn with_checks(checks: &[(&str, &str)]) -> EffectivePolicy {
        let params: BTreeMap<String, String> =
            checks.iter().map(|(k, v)| (format!("check.{k}"), (*v).to_owned())).collect();
        EffectivePolicy { params, sources: BTreeMap::new(), digest: [7; 32] }
    }

    fn at(secs: u64) -> Now {
        Now { mono: Instant::ZERO + Duration::from_secs(secs), wall: WallClock(1_000_000 + secs * 1000) }
    }

    /// Applies `policy`; the probes the agent asks for, by probe.
    fn apply(agent: &mut PolicyAgent, policy: EffectivePolicy) -> Vec<(u64, Probe)> {
        let digest = policy.digest;
        agent.handle(at(0), AgentInput::FromServer(Box::new(PolicyMessage::PollReply { effective: policy })));
        agent.handle(at(0), AgentInput::Applied { digest, outcome: Ok(()) });
        probes(agent)
    }

    fn probes(agent: &mut PolicyAgent) -> Vec<(u64, Probe)> {
        std::iter::from_fn(|| agent.poll_output())
            .filter_map(|o| match o {
                AgentOutput::Probe { probe, what } => Some((probe, what)),
                _ => None,
            })
            .collect()
    }

    fn file(mode: u32) -> Observation {
        Observation::File(Ok(Some(FileFacts {
            is_file: true,
            mode,
            owner: Some("root".into()),
            ..FileFacts::default()
        })))
    }

    /// The report sent at the next poll after `now`.
    fn report_at(agent: &mut PolicyAgent, now: Now) -> AgentReport {
        agent.handle(now, AgentInput::Timeout);
        let mut report = None;
        let mut rest = Vec::new();
        while let Some(o) = agent.poll_output() {
            match o {
                AgentOutput::Report { report: signed, .. } => report = Some(signed.body),
                other => rest.push(other),
            }
        }
        for o in rest {
            agent.outputs.push_back(o);
        }
        report.expect("a report")
    }

    #[test]
    fn checks_are_measured_each_round_and_a_fixed_file_passes_at_the_next() {
        let mut agent = agent();
        let policy = with_checks(&[
            ("flag", "file /etc/cohort-test-flag mode=0600 severity=high"),
            ("ok", "command -- /bin/true"),
        ]);
        let asked = apply(&mut agent, policy);
        assert_eq!(asked.len(), 2);
        let file_probe = asked.iter().find(|(_, p)| matches!(p, Probe::Inspect { .. })).expect("a look").0;
        let run_probe = asked.iter().find(|(_, p)| matches!(p, Probe::Run { .. })).expect("a run").0;
        agent.handle(at(0), AgentInput::Observed { probe: file_probe, seen: file(0o644) });
        let exited = Observation::Ran { end: RunEnd::Exited(0), stdout: Vec::new() };
        agent.handle(at(0), AgentInput::Observed { probe: run_probe, seen: exited.clone() });
        let first = report_at(&mut agent, at(5));
        assert_eq!(first.checks["flag"].outcome, CheckOutcome::Fail);
        assert_eq!(first.checks["flag"].detail, "mode 0644, wants 0600");
        assert_eq!(first.checks["ok"].outcome, CheckOutcome::Pass);
        assert_eq!(first.threats, Some(1), "one failed high-severity check");
        assert!(first.last_scan.is_some());
        assert!(!first.compliant());
        assert_eq!(first.passed(), (3, 2), "the two checks and the apply");

        // The poll started the next round: the file was fixed since.
        let asked = probes(&mut agent);
        for (probe, what) in asked {
            let seen = match what {
                Probe::Inspect { .. } => file(0o600),
                _ => exited.clone(),
            };
            agent.handle(at(5), AgentInput::Observed { probe, seen });
        }
        let second = report_at(&mut agent, at(10));
        assert_eq!(second.checks["flag"].outcome, CheckOutcome::Pass);
        assert_eq!(second.threats, Some(0));
        assert!(second.compliant());
    }

    #[test]
    fn a_command_past_its_time_is_killed_and_fails_and_a_bad_line_is_an_error() {
        let mut agent = agent();
        let policy = with_checks(&[("slow", "command timeout=2s -- sleep 60"), ("typo", "fiel /etc/x")]);
        let asked = apply(&mut agent, policy);
        assert_eq!(asked.len(), 1, "the line that does not parse asks for nothing");
        assert!(
            agent.poll_timeout() <= Some(Instant::ZERO + Duration::from_secs(2)),
            "woken for the deadline"
        );
        agent.handle(at(2), AgentInput::Timeout);
        let stopped = std::iter::from_fn(|| agent.poll_output())
            .any(|o| matches!(o, AgentOutput::StopProbe { probe } if probe == asked[0].0));
        assert!(stopped, "the command is killed");
        // Its exit after the kill changes nothing.
        let late = Observation::Ran { end: RunEnd::Signalled(9), stdout: Vec::new() };
        agent.handle(at(2), AgentInput::Observed { probe: asked[0].0, seen: late });
        let report = report_at(&mut agent, at(5));
        assert_eq!(report.checks["slow"].detail, "still running after 2 s");
        assert_eq!(report.checks["typo"].outcome, CheckOutcome::Error);
        assert!(
            report.checks["typo"].detail.contains("`fiel` is not a check"),
            "{}",
            report.checks["typo"].detail
        );
    }

    #[test]
    fn a_newly_applied_policy_reports_nothing_measured_under_the_old_one() {
        let mut agent = agent();
        let asked = apply(&mut agent, with_checks(&[("flag", "file /etc/flag")]));
        agent.handle(at(0), AgentInput::Observed { probe: asked[0].0, seen: file(0o600) });
        let mut next = with_checks(&[("other", "file /etc/other")]);
        next.digest = [8; 32];
        let asked_next = apply(&mut agent, next);
        let report = report_at(&mut agent, at(5));
        assert!(!report.checks.contains_key("flag"), "{:?}", report.checks);
        assert_eq!(report.applied, [8; 32]);
        assert_eq!(report.threats, None, "the new policy's round has not completed");
        assert_eq!(asked_next.len(), 1);
    }
}

mod detecting {
    use super::*;
    use crate::policy::platform::{KERNEL_RELEASE, OS_RELEASE, readable as file};

    fn detecting_agent() -> PolicyAgent {
        let keys = NodeKeys::generate(&mut seeded(1));
        let declared = Platform::new("unknown", "unknown", "web");
        let second = Duration::from_secs(1);
        PolicyAgent::new(
            Instant::ZERO,
            "a0".into(),
            keys,
            declared,
            "local".into(),
            second,
            second,
            seeded(2),
            true,
        )
    }

    #[test]
    fn the_first_poll_waits_for_the_platform_read_from_the_machine_and_keeps_the_configured_role() {
        let mut agent = detecting_agent();
        let due = Now { mono: agent.poll_timeout().expect("a first poll"), wall: WallClock(5_000) };
        agent.handle(due, AgentInput::Timeout);
        let mut probes = BTreeMap::new();
        while let Some(out) = agent.poll_output() {
            match out {
                AgentOutput::Probe { probe, what: Probe::Inspect { path, read: true } } => {
                    probes.insert(path, probe);
                }
                other => panic!("nothing but the platform's probes before the first poll: {other:?}"),
            }
        }
        assert_eq!(probes.keys().collect::<Vec<_>>(), [OS_RELEASE, KERNEL_RELEASE]);
        let os =
            AgentInput::Observed { probe: probes[OS_RELEASE], seen: file("ID=debian\nVERSION_ID=\"12\"\n") };
        agent.handle(due, os);
        assert!(agent.poll_output().is_none(), "still reading the kernel release");
        let kernel = AgentInput::Observed { probe: probes[KERNEL_RELEASE], seen: file("6.1.0-21-amd64\n") };
        agent.handle(due, kernel);
        let Some(AgentOutput::Report { report, .. }) = agent.poll_output() else { panic!("polls once read") };
        assert_eq!(report.body.platform, Platform::new("debian", "12", "web"));
        assert_eq!(report.body.kernel.as_deref(), Some("6.1.0-21-amd64"));
        assert!(!report.body.checks.contains_key(PLATFORM_CHECK));
    }

    #[test]
    fn a_platform_that_cannot_be_read_is_reported_unknown_with_the_reason() {
        let mut agent = detecting_agent();
        let due = Now { mono: agent.poll_timeout().expect("a first poll"), wall: WallClock(5_000) };
        agent.handle(due, AgentInput::Timeout);
        let probes: Vec<u64> = std::iter::from_fn(|| agent.poll_output())
            .filter_map(|o| match o {
                AgentOutput::Probe { probe, .. } => Some(probe),
                _ => None,
            })
            .collect();
        for probe in probes {
            agent.handle(
                due,
                AgentInput::Observed { probe, seen: Observation::File(Err("permission denied".into())) },
            );
        }
        let Some(AgentOutput::Report { report, .. }) = agent.poll_output() else { panic!("polls anyway") };
        assert_eq!(report.body.platform.key(), "unknown/unknown/web");
        let check = &report.body.checks[PLATFORM_CHECK];
        assert_eq!(check.outcome, CheckOutcome::Error);
        assert!(check.detail.contains("permission denied"), "{}", check.detail);
    }
}

/// Runs the agent to its next poll at `wall` and returns what it said of its server.
fn poll_and_listen(agent: &mut PolicyAgent, wall: WallClock) -> Vec<AgentOutput> {
    let due = Now { mono: agent.poll_timeout().unwrap_or(Instant::ZERO), wall };
    agent.handle(due, AgentInput::Timeout);
    std::iter::from_fn(|| agent.poll_output())
        .filter(|o| matches!(o, AgentOutput::ServerUnreachable { .. } | AgentOutput::ServerReachable { .. }))
        .collect()
}

#[test]
fn a_server_that_stops_answering_is_said_unreachable_once_then_rarely_and_reachable_when_it_answers() {
    let mut agent = agent();
    // The server answers the first poll, then nothing for 24 more.
    assert!(poll_and_listen(&mut agent, WallClock(1_000)).is_empty());
    let answered = WallClock(1_100);
    let reply = PolicyMessage::PollReply { effective: policy("deny") };
    agent
        .handle(Now { mono: Instant::ZERO, wall: answered }, AgentInput::FromServer(Box::new(reply.clone())));
    let mut said = Vec::new();
    for poll in 2..=25u64 {
        for out in poll_and_listen(&mut agent, WallClock(poll * 1_000)) {
            match out {
                AgentOutput::ServerUnreachable { server, unanswered, last_heard } => {
                    assert_eq!((server.as_str(), last_heard), ("local", Some(answered)));
                    said.push(unanswered);
                }
                other => panic!("said reachable while unanswered: {other:?}"),
            }
        }
    }
    // Polls 2 and 3 went unanswered by the 4th: said then, and again every 10 unanswered polls.
    assert_eq!(said, vec![UNREACHABLE_AFTER, UNREACHABLE_AFTER + 10, UNREACHABLE_AFTER + 20]);
    assert_eq!(agent.unanswered(), 23);

    // An answer: said once that the server is back, and nothing more while it answers.
    agent.handle(
        Now { mono: Instant::ZERO, wall: WallClock(26_000) },
        AgentInput::FromServer(Box::new(reply.clone())),
    );
    let back: Vec<AgentOutput> = std::iter::from_fn(|| agent.poll_output())
        .filter(|o| matches!(o, AgentOutput::ServerReachable { .. }))
        .collect();
    assert_eq!(back, vec![AgentOutput::ServerReachable { server: "local".into(), unanswered: 23 }]);
    for poll in 27..=30u64 {
        assert!(poll_and_listen(&mut agent, WallClock(poll * 1_000)).is_empty());
        agent.handle(
            Now { mono: Instant::ZERO, wall: WallClock(poll * 1_000) },
            AgentInput::FromServer(Box::new(reply.clone())),
        );
    }
    assert_eq!(agent.unanswered(), 0);
}

#[test]
fn one_late_answer_is_not_an_unreachable_server() {
    let mut agent = agent();
    let reply = PolicyMessage::PollReply { effective: policy("deny") };
    for poll in 1..=6u64 {
        // Every other poll is answered: never two in a row without an answer.
        assert!(poll_and_listen(&mut agent, WallClock(poll * 1_000)).is_empty(), "poll {poll}");
        if poll % 2 == 0 {
            let now = Now { mono: Instant::ZERO, wall: WallClock(poll * 1_000) };
            agent.handle(now, AgentInput::FromServer(Box::new(reply.clone())));
            let said: Vec<AgentOutput> = std::iter::from_fn(|| agent.poll_output())
                .filter(|o| matches!(o, AgentOutput::ServerReachable { .. }))
                .collect();
            assert!(said.is_empty(), "{said:?}");
        }
    }
}
