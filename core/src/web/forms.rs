//! What a console form or a script's JSON body says: its fields, and the exec request a run
//! form describes, every value checked and bounded. Owns reading requests; it never decides who
//! may make them.

use super::http::{WebRequest, field};
use crate::exec::gateway::{ExecCommand, MAX_FANOUT};
use crate::exec::task::Task;
use crate::exec::ticket::Credential;
use crate::signed::Signed;

/// The fan-out the form offers, within the principal's ceiling (the CLI's default).
pub const DEFAULT_FANOUT: u32 = 32;
/// Each stream's cap per host for a run from the console (the CLI's default).
const MAX_OUTPUT: u64 = 1024 * 1024;
const CONNECT_TIMEOUT_MS: u64 = 10_000;

/// The fields of a form post or a JSON object of strings and numbers.
pub(super) fn read_fields(web: &WebRequest) -> Result<Vec<(String, String)>, String> {
    if web.body.len() > super::http::MAX_BODY {
        return Err(format!("a request body of {} bytes; at most {}", web.body.len(), super::http::MAX_BODY));
    }
    if web.header("content-type").is_some_and(|c| c.starts_with("application/json")) {
        let value: serde_json::Value =
            serde_json::from_slice(&web.body).map_err(|e| format!("the body is not JSON: {e}"))?;
        let object = value.as_object().ok_or("the body must be a JSON object")?;
        return object
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => Ok((k.clone(), s.clone())),
                serde_json::Value::Number(n) => Ok((k.clone(), n.to_string())),
                _ => Err(format!("`{k}` must be a string or a number")),
            })
            .collect();
    }
    web.form()
}

/// The exec request a console form (or API call) describes.
pub(super) fn exec_command(
    pairs: &[(String, String)],
    credential: Signed<Credential>,
) -> Result<ExecCommand, String> {
    let nodes =
        field(pairs, "nodes").map(str::trim).filter(|n| !n.is_empty()).ok_or("name the hosts (nodes)")?;
    let line = field(pairs, "command").map(str::trim).filter(|c| !c.is_empty()).ok_or("give a command")?;
    let argv =
        shell_words::split(line).map_err(|e| format!("the command could not be split into words: {e}"))?;
    let run_as = field(pairs, "run_as").filter(|r| !r.is_empty()).ok_or("say whom to run as (run_as)")?;
    let fanout = match field(pairs, "fanout") {
        None | Some("") => DEFAULT_FANOUT,
        Some(f) => f
            .parse::<u32>()
            .ok()
            .filter(|f| (1..=MAX_FANOUT as u32).contains(f))
            .ok_or_else(|| format!("fan-out `{f}` is not a number from 1 to {MAX_FANOUT}"))?,
    };
    let seconds = |name: &str, default: u64| -> Result<u64, String> {
        match field(pairs, name) {
            None | Some("") => Ok(default),
            Some(text) => text
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && (0.0..=86_400.0).contains(s))
                .map(|s| (s * 1000.0) as u64)
                .ok_or_else(|| format!("{name} `{text}` is not a number of seconds from 0 to 86400")),
        }
    };
    // The console passes no variable: its command runs in the run-as user's reset environment.
    let task = Task::Run { argv, stdin: Vec::new(), env: Vec::new() };
    task.check().map_err(|e| e.to_string())?;
    Ok(ExecCommand {
        credential,
        hosts: vec![nodes.to_owned()],
        exclude: Vec::new(),
        run_as: run_as.to_owned(),
        task,
        fanout,
        t1_ms: seconds("t1", 16_000)?,
        t2_ms: seconds("t2", 32_000)?,
        t3_ms: seconds("t3", 2_000)?,
        max_output: MAX_OUTPUT,
        connect_timeout_ms: CONNECT_TIMEOUT_MS,
    })
}
