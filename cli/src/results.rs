//! How a run's results are shown on a terminal: hosts with identical outcome and output grouped
//! under one folded host list, or `host: line` lines as results arrive (pdsh's way). The wording,
//! grouping and summary are core's (`exec::report`). It never talks to the gateway.

use cohort_core::exec::gateway::{HostOutcome, HostResult};
use cohort_core::exec::report::{self, ResultGroup, outcome_text};
pub use cohort_core::exec::report::{exit_status, host_json, summary};

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

/// Hosts with identical outcome and output under one folded host list, largest group first.
pub fn render_grouped(results: &[HostResult]) -> String {
    let mut out = String::new();
    for ResultGroup { hosts, count, result: r } in report::grouped(results) {
        let header = format!("{hosts} ({count}) {}", outcome_text(&r.outcome));
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
