//! `cohort get --socket PATH`: one request to a member's local lookup service, the answer printed
//! as `cohort get` prints one from the admin channel (the value on stdout, where it came from on
//! stderr). Owns the client side of the line protocol only.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

/// Longest wait for the member's answer.
const PATIENCE: Duration = Duration::from_secs(5);

/// One answer line; which fields are present says what kind it is.
#[derive(Debug, Deserialize)]
struct Answer {
    version: Option<String>,
    key: Option<String>,
    #[serde(default)]
    value: Option<String>,
    settings: Option<std::collections::BTreeMap<String, String>>,
    declined: Option<String>,
    retry_after_ms: Option<u64>,
    error: Option<String>,
}

pub fn get(socket: &Path, key: Option<&str>) -> anyhow::Result<()> {
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "could not open the lookup socket {} (is the member running, and may you use it?)",
            socket.display()
        )
    })?;
    stream.set_read_timeout(Some(PATIENCE)).context("could not set a read timeout")?;
    let request = match key {
        Some(key) if key.is_empty() || key.chars().any(char::is_whitespace) => {
            bail!("`{key}` is not a setting name: names have no spaces")
        }
        Some(key) => format!("get {key}\n"),
        None => "get --all\n".to_owned(),
    };
    stream.write_all(request.as_bytes()).context("could not send the request")?;
    let mut line = String::new();
    // An answer is bounded by the configuration's size; more is not an answer.
    BufReader::new(Read::take(&stream, 64 * 1024 * 1024))
        .read_line(&mut line)
        .with_context(|| format!("no answer on {} within {PATIENCE:?}", socket.display()))?;
    if line.is_empty() {
        bail!("{} closed without answering", socket.display());
    }
    let answer: Answer = serde_json::from_str(&line).with_context(|| format!("unreadable answer: {line}"))?;
    let version = answer.version.clone().unwrap_or_default();
    match answer {
        Answer { error: Some(error), .. } => bail!("the lookup service refused the request: {error}"),
        Answer { declined: Some(_), retry_after_ms, .. } => {
            bail!(
                "the member is syncing to a newer configuration; retry in {} ms",
                retry_after_ms.unwrap_or(0)
            )
        }
        Answer { settings: Some(settings), .. } => {
            for (key, value) in settings {
                println!("{key}={value}");
            }
            eprintln!("(from {version})");
        }
        Answer { key: Some(key), value: Some(value), .. } => {
            println!("{value}");
            eprintln!("({key} from {version})");
        }
        Answer { key: Some(key), value: None, .. } => bail!("`{key}` is not set in {version}"),
        other => bail!("unexpected answer: {other:?}"),
    }
    Ok(())
}
