//! How a run's results read, wherever they are shown (terminal, browser, script): each outcome's
//! words, one JSON object per host, hosts with identical outcome and output grouped under one
//! folded host list, and the one-line summary of how many hosts ended which way. Owns the
//! wording and the grouping rule; it never prints and never escapes for a medium.

use std::collections::BTreeMap;

use super::nodeset;
use super::parallel::group_by_host;
use super::wire::{HostOutcome, HostResult};

/// An outcome in words: `ok`, `exit 3`, `signal 9`, `denied: ...`.
pub fn outcome_text(outcome: &HostOutcome) -> String {
    match outcome {
        HostOutcome::Exited(0) => "ok".into(),
        HostOutcome::Exited(code) => format!("exit {code}"),
        HostOutcome::Signalled(signal) => format!("signal {signal}"),
        HostOutcome::KilledByAlarm(reason) => reason.clone(),
        HostOutcome::Denied(reason) => format!("denied: {reason}"),
        HostOutcome::Unreachable(reason) => format!("unreachable: {reason}"),
        HostOutcome::Failed(reason) => format!("failed: {reason}"),
    }
}

/// The kind of an outcome, without its reason: what the summary counts by.
pub fn outcome_kind(outcome: &HostOutcome) -> String {
    match outcome {
        HostOutcome::Exited(0) => "ok".to_owned(),
        HostOutcome::Exited(code) => format!("exit {code}"),
        HostOutcome::Signalled(s) => format!("signal {s}"),
        HostOutcome::KilledByAlarm(_) => "killed by alarm".into(),
        HostOutcome::Denied(_) => "denied".into(),
        HostOutcome::Unreachable(_) => "unreachable".into(),
        HostOutcome::Failed(_) => "failed".into(),
    }
}

/// One host's result as a JSON object (output as text, invalid UTF-8 replaced).
pub fn host_json(r: &HostResult) -> serde_json::Value {
    let (exit, signal) = match r.outcome {
        HostOutcome::Exited(code) => (Some(code), None),
        HostOutcome::Signalled(signal) => (None, Some(signal)),
        _ => (None, None),
    };
    let killed = match &r.outcome {
        HostOutcome::KilledByAlarm(reason) => Some(reason.clone()),
        _ => None,
    };
    serde_json::json!({
        "host": r.host,
        "exit_code": exit,
        "signal": signal,
        "killed_by_alarm": killed,
        "outcome": outcome_text(&r.outcome),
        "stdout": String::from_utf8_lossy(&r.stdout),
        "stderr": String::from_utf8_lossy(&r.stderr),
        "output_cut_bytes": r.cut_bytes,
        "start_ms": r.started_ms,
        "end_ms": r.ended_ms,
    })
}

/// Hosts that ended the same way with the same output, under one folded host list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultGroup<'a> {
    /// The folded host list (`h[01-20]`).
    pub hosts: String,
    pub count: usize,
    /// The result every host of the group shares (the first one's).
    pub result: &'a HostResult,
}

/// Results grouped by identical outcome and output, largest group first.
pub fn grouped(results: &[HostResult]) -> Vec<ResultGroup<'_>> {
    let same = |a: &HostResult, b: &HostResult| {
        a.outcome == b.outcome && a.stdout == b.stdout && a.stderr == b.stderr && a.cut_bytes == b.cut_bytes
    };
    group_by_host(results, |r| &r.host, same)
        .into_iter()
        .map(|(hosts, result)| ResultGroup { hosts: nodeset::fold(&hosts), count: hosts.len(), result })
        .collect()
}

/// What two results must share to be shown as one group, as a digest: a viewer that keeps only
/// the digest of each result groups exactly as [`grouped`] does.
pub fn output_digest(r: &HostResult) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    let outcome = postcard::to_allocvec(&r.outcome).expect("an outcome encodes");
    for part in [outcome.as_slice(), &r.stdout, &r.stderr] {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    hash.update(r.cut_bytes.to_le_bytes());
    hash.finalize().into()
}

/// The exit status a host's outcome stands for when the client reports the largest (pdsh's and
/// clush's `-S`): the command's own status, 128 plus the signal that ended it (as a shell
/// says), 124 for one the alarm rules killed (as `timeout` says), 126 for one the host refused
/// to run, 255 for a host not reached or a run that failed there (as `ssh` says).
pub fn exit_status(outcome: &HostOutcome) -> u8 {
    match outcome {
        HostOutcome::Exited(code) => u8::try_from(*code).unwrap_or(255),
        HostOutcome::Signalled(signal) => u8::try_from(128 + signal.clamp(&0, &127)).unwrap_or(255),
        HostOutcome::KilledByAlarm(_) => 124,
        HostOutcome::Denied(_) => 126,
        HostOutcome::Unreachable(_) | HostOutcome::Failed(_) => 255,
    }
}

/// One line: how many hosts ended which way (`20 hosts: 18 ok, 2 exit 1 (h[03,07])`).
pub fn summary(results: &[HostResult]) -> String {
    summary_of(results.iter().map(|r| (r.host.as_str(), &r.outcome)))
}

/// [`summary`] from each host's name and outcome alone.
pub fn summary_of<'a>(ends: impl IntoIterator<Item = (&'a str, &'a HostOutcome)>) -> String {
    let mut counts: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    let mut total = 0usize;
    for (host, outcome) in ends {
        total += 1;
        counts.entry(outcome_kind(outcome)).or_default().push(host);
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|(k, hosts)| match k.as_str() {
            "ok" => format!("{} ok", hosts.len()),
            _ => format!("{} {k} ({})", hosts.len(), nodeset::fold(hosts)),
        })
        .collect();
    let noun = if total == 1 { "host" } else { "hosts" };
    format!("{total} {noun}: {}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_exit_status_speaks_for_every_kind_of_end() {
        assert_eq!(exit_status(&HostOutcome::Exited(3)), 3);
        assert_eq!(exit_status(&HostOutcome::Exited(-1)), 255);
        assert_eq!(exit_status(&HostOutcome::Signalled(9)), 137);
        assert_eq!(exit_status(&HostOutcome::KilledByAlarm("t1".into())), 124);
        assert_eq!(exit_status(&HostOutcome::Denied("acl".into())), 126);
        assert_eq!(exit_status(&HostOutcome::Unreachable("refused".into())), 255);
    }

    fn result(host: &str, outcome: HostOutcome, stdout: &str) -> HostResult {
        HostResult {
            host: host.into(),
            outcome,
            stdout: stdout.as_bytes().to_vec(),
            stderr: Vec::new(),
            cut_bytes: 0,
            started_ms: Some(0),
            ended_ms: 1,
        }
    }

    #[test]
    fn identical_results_fold_into_one_group_and_the_summary_names_the_odd_ones() {
        let results = vec![
            result("h01", HostOutcome::Exited(0), "a\n"),
            result("h03", HostOutcome::Exited(1), "b\n"),
            result("h02", HostOutcome::Exited(0), "a\n"),
        ];
        let groups = grouped(&results);
        assert_eq!(groups.len(), 2);
        assert_eq!((groups[0].hosts.as_str(), groups[0].count), ("h[01-02]", 2));
        assert_eq!(groups[1].hosts, "h03");
        assert_eq!(summary(&results), "3 hosts: 1 exit 1 (h03), 2 ok");
        assert_eq!(summary(&results[..1]), "1 host: 1 ok");
        assert_eq!(output_digest(&results[0]), output_digest(&results[2]));
        assert_ne!(output_digest(&results[0]), output_digest(&results[1]));
    }
}
