//! How a node's inputs and outputs read in a trace: one line each, bytes as length and digest,
//! records by what they hold. It never prints a message's contents: channels carry ciphertext,
//! and records are shown by kind and version.

use super::io::{ChildEnvironment, Input, Output, Record};
use crate::trace::{TraceEvent, short};

impl TraceEvent for Input {
    fn describe(&self) -> String {
        match self {
            Input::Accepted { listener, conn } => format!("Accepted {conn} on listener {}", listener.0),
            Input::Received { conn, bytes } => format!("Received {conn} {}", short(bytes)),
            Input::Written { conn, bytes } => format!("Written {conn} {bytes}B"),
            Input::Closed { conn, error: None } => format!("Closed {conn}"),
            Input::Closed { conn, error: Some(e) } => format!("Closed {conn}: {e}"),
            Input::Persisted { id } => format!("Persisted #{}", id.0),
            Input::FileWritten { id, outcome: Ok(()) } => format!("FileWritten #{}", id.0),
            Input::FileWritten { id, outcome: Err(e) } => format!("FileWritten #{} failed: {e}", id.0),
            Input::ChildStarted { child } => format!("ChildStarted #{}", child.0),
            Input::ChildFailed { child, reason } => format!("ChildFailed #{}: {reason}", child.0),
            Input::ChildOutput { child, stderr, bytes } => {
                let stream = if *stderr { "stderr" } else { "stdout" };
                format!("ChildOutput #{} {stream} {}", child.0, short(bytes))
            }
            Input::ChildExited { child, end } => format!("ChildExited #{} {end:?}", child.0),
            // Never a cookie, a password or a body in a trace.
            Input::WebRequest { request, web } => {
                format!("WebRequest {request} {:?} {}", web.method, web.path)
            }
            Input::WebSent { request, bytes } => format!("WebSent {request} {bytes}B"),
            Input::WebGone { request } => format!("WebGone {request}"),
            Input::Inspected { id, facts: Ok(Some(f)) } => {
                format!("Inspected #{} mode {:04o} uid {} {}B", id.0, f.mode, f.uid, f.size)
            }
            Input::Inspected { id, facts: Ok(None) } => format!("Inspected #{} missing", id.0),
            Input::Inspected { id, facts: Err(e) } => format!("Inspected #{} failed: {e}", id.0),
            Input::AuditRead { read, rows: Ok(rows) } => {
                format!(
                    "AuditRead #{} {} rows {} checkpoints",
                    read.0,
                    rows.rows.len(),
                    rows.checkpoints.len()
                )
            }
            Input::AuditRead { read, rows: Err(e) } => format!("AuditRead #{} failed: {e}", read.0),
            Input::Drain => "Drain".to_owned(),
            Input::Timeout => "Timeout".to_owned(),
        }
    }
}

fn describe_record(record: &Record) -> String {
    match record {
        Record::Member(r) => {
            let staged = r.staged.as_ref().map_or_else(|| "-".to_owned(), |s| s.version().to_string());
            format!("member active={} staged={staged}", r.active.version())
        }
        Record::AuditEntry { entry: e, checkpoint: None } => {
            format!("audit entry {} {}", e.index, e.record.host)
        }
        Record::AuditEntry { entry: e, checkpoint: Some(c) } => {
            format!("audit entry {} {} and checkpoint {}", e.index, e.record.host, c.body.index)
        }
        Record::LocalAudit(r) => format!("local audit {} {:?}", r.host, r.decision),
        Record::Policy(p) => format!("policy {} v{}", p.body.id, p.body.version),
        Record::PolicySuperseded(s) => {
            format!("policy {} {} superseded", s.policy.id, s.policy.rank().label())
        }
        Record::PolicyAlert(a) => format!("policy alert {} {}", a.id, a.condition.kind()),
        Record::PolicyHistory { from, .. } => format!("policy history from {from}"),
        // Never the hash in a trace.
        Record::Principal { name, hash } => {
            format!("principal {name} {}", if hash.is_some() { "set" } else { "removed" })
        }
    }
}

impl TraceEvent for Output {
    fn describe(&self) -> String {
        match self {
            Output::Listen { listener, addr } => format!("Listen {} on {addr}", listener.0),
            Output::ListenLocal { listener, path } => format!("ListenLocal {} on {path}", listener.0),
            Output::ListenWeb { addr, .. } => format!("ListenWeb on {addr}"),
            Output::WebRespond { request, response } => {
                format!("WebRespond {request} {} {}B", response.status, response.body.len())
            }
            Output::WebChunk { request, bytes, last } => {
                format!("WebChunk {request} {}{}", short(bytes), if *last { " last" } else { "" })
            }
            Output::ReadAudit { read, range } => format!("ReadAudit #{} {range:?}", read.0),
            Output::Inspect { id, path, read } => {
                format!("Inspect #{} {path}{}", id.0, if *read { " (read)" } else { "" })
            }
            Output::Connect { conn, addr } => format!("Connect {conn} to {addr}"),
            Output::Transmit { conn, bytes } => format!("Transmit {conn} {}", short(bytes)),
            Output::Close { conn } => format!("Close {conn}"),
            Output::Persist { id, record } => format!("Persist #{} {}", id.0, describe_record(record)),
            Output::WriteFile { id, path, contents } => {
                format!("WriteFile #{} {path} {}", id.0, short(contents))
            }
            Output::PlaceFile { id, path, contents, mode, owner } => {
                format!("PlaceFile #{} {path} mode {mode:o} owner {owner} {}", id.0, short(contents))
            }
            Output::Spawn { child, argv, run_as, env, .. } => {
                let user = run_as.as_deref().unwrap_or("(self)");
                // The variables a command gets on top of its base, by name (values stay out).
                let added: String = env.vars().iter().map(|(name, _)| format!(" +{name}")).collect();
                let env = match env {
                    ChildEnvironment::Reset { .. } => format!(" [env reset{added}]"),
                    ChildEnvironment::Inherit { vars } if vars.is_empty() => String::new(),
                    ChildEnvironment::Inherit { .. } => format!(" [env{added}]"),
                };
                format!("Spawn #{} as {user}{env}: {}", child.0, argv.join(" "))
            }
            Output::Kill { child } => format!("Kill #{}", child.0),
            Output::PauseChild { child } => format!("PauseChild #{}", child.0),
            Output::ResumeChild { child } => format!("ResumeChild #{}", child.0),
            Output::Log(event) => format!("Log {event}"),
        }
    }
}
