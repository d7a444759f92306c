//! How a run's results are shown: hosts with identical outcome and output grouped under one
//! folded host list, `host: line` lines as results arrive (pdsh's way), one JSON object per host,
//! and a one-line summary of how many hosts ended which way. It never talks to the gateway.

use cohort_core::exec::gateway::{HostOutcome, HostResult};
use cohort_core::exec::nodeset;
use cohort_core::exec::parallel::group_by_host;

/// One host's result as `host: line` lines.
pub fn print_lines(r: &HostResult) {
    for line in String::from_utf8_lossy(&r.stdout).lines() {
        println!("{}: {line}", r.host);
    }
    for line in String::from_utf8_lossy(&r.stderr).lines() {
        eprintln!("{}: {line}", r.host);
    }
    if r.cut_bytes > 0 {
        eprintln!("{}: [output cut: {} more bytes not kept; see --max-output]", r.host, r.cut_bytes);
    }
    if r.outcome != HostOutcome::Exited(0) {
        eprintln!("{}: [{}]", r.host, outcome_text(&r.outcome));
    }
}

fn outcome_text(outcome: &HostOutcome) -> String {
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

/// Hosts with identical outcome and output under one folded host list, largest group first.
pub fn render_grouped(results: &[HostResult]) -> String {
    let groups = group_by_host(
        results,
        |r| &r.host,
        |a, b| {
            a.outcome == b.outcome
                && a.stdout == b.stdout
                && a.stderr == b.stderr
                && a.cut_bytes == b.cut_bytes
        },
    );
    let mut out = String::new();
    for (hosts, r) in groups {
        let header = format!("{} ({}) {}", nodeset::fold(&hosts), hosts.len(), outcome_text(&r.outcome));
        let rule = "-".repeat(header.len().min(78));
        out.push_str(&format!("{rule}\n{header}\n{rule}\n"));
        out.push_str(&String::from_utf8_lossy(&r.stdout));
        if !r.stderr.is_empty() {
            for line in String::from_utf8_lossy(&r.stderr).lines() {
                out.push_str(&format!("stderr: {line}\n"));
            }
        }
        if r.cut_bytes > 0 {
            if !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&format!("[output cut: {} more bytes not kept; see --max-output]\n", r.cut_bytes));
        }
    }
    out
}

/// One line: how many hosts ended which way.
pub fn summary(results: &[HostResult]) -> String {
    let mut counts: std::collections::BTreeMap<String, Vec<&str>> = std::collections::BTreeMap::new();
    for r in results {
        let key = match &r.outcome {
            HostOutcome::Exited(0) => "ok".to_owned(),
            HostOutcome::Exited(code) => format!("exit {code}"),
            HostOutcome::Signalled(s) => format!("signal {s}"),
            HostOutcome::KilledByAlarm(_) => "killed by alarm".into(),
            HostOutcome::Denied(_) => "denied".into(),
            HostOutcome::Unreachable(_) => "unreachable".into(),
            HostOutcome::Failed(_) => "failed".into(),
        };
        counts.entry(key).or_default().push(&r.host);
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|(k, hosts)| {
            if k == "ok" {
                format!("{} ok", hosts.len())
            } else {
                format!("{} {k} ({})", hosts.len(), nodeset::fold(hosts))
            }
        })
        .collect();
    format!("{} hosts: {}", results.len(), parts.join(", "))
}
