//! The local lookup service: applications on a member's host ask for configuration values on a
//! local socket, without any key (whoever can open the socket may read the settings, which is
//! why the driver makes it mode 0660 for one group). Owns the line protocol and each local
//! connection's buffer and limits; the answers are the member's. It never answers from anything
//! but the member's active configuration, and never while the member is syncing.
//!
//! Requests, one per line (UTF-8, at most [`MAX_LINE`] bytes): `get KEY`, `get --all`, `version`.
//! Answers, one JSON object per line, in request order:
//! - `{"version":"2@<author>","key":"dns","value":"10.0.0.53"}` (`"value":null` when unset);
//! - `{"version":"2@<author>","settings":{"dns":"10.0.0.53"}}` for `get --all`;
//! - `{"version":"2@<author>","syncing":false}` for `version`;
//! - `{"declined":"syncing","retry_after_ms":1000}` while a newer version is being fetched;
//! - `{"error":"…"}` for a request it does not understand (the connection stays open), or a line
//!   over the limit (then it closes).

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use super::io::ConnId;
use crate::member::{LookupAnswer, Version};

/// The longest request line.
pub const MAX_LINE: usize = 1024;
/// Local connections open at once; more are closed at once.
pub const MAX_LOCAL_CONNS: usize = 64;
/// Requests waiting for answers on one connection; a client that sends more without reading is
/// closed.
const MAX_PENDING: usize = 16;

/// What a local client asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalRequest {
    Get(String),
    All,
    Version,
}

/// Reads one request line.
pub fn parse_request(line: &str) -> Result<LocalRequest, String> {
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("get"), Some("--all"), None) => Ok(LocalRequest::All),
        (Some("get"), Some(key), None) => Ok(LocalRequest::Get(key.to_owned())),
        (Some("version"), None, None) => Ok(LocalRequest::Version),
        _ => Err(format!(
            "cannot read `{}`: ask `get KEY`, `get --all` or `version`, one per line",
            line.chars().take(80).collect::<String>()
        )),
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum Line<'a> {
    Value { version: String, key: &'a str, value: Option<&'a str> },
    Settings { version: String, settings: &'a BTreeMap<String, String> },
    Version { version: String, syncing: bool },
    Declined { declined: &'static str, retry_after_ms: u64 },
    Error { error: &'a str },
}

fn encode(line: &Line<'_>) -> Vec<u8> {
    // Every field is a string, number, bool or map of strings: encoding cannot fail.
    let mut bytes = serde_json::to_vec(line).unwrap_or_else(|_| b"{\"error\":\"internal\"}".to_vec());
    bytes.push(b'\n');
    bytes
}

/// The answer line for a member's lookup answer.
pub fn answer_line(answer: &LookupAnswer) -> Vec<u8> {
    match answer {
        LookupAnswer::Value { version, key, value } => {
            encode(&Line::Value { version: version.to_full_string(), key, value: value.as_deref() })
        }
        LookupAnswer::Settings { version, settings } => {
            encode(&Line::Settings { version: version.to_full_string(), settings })
        }
        LookupAnswer::Declined { retry_after } => encode(&Line::Declined {
            declined: "syncing",
            retry_after_ms: u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX),
        }),
    }
}

/// The answer line for `version`.
pub fn version_line(version: Version, syncing: bool) -> Vec<u8> {
    encode(&Line::Version { version: version.to_full_string(), syncing })
}

pub fn error_line(error: &str) -> Vec<u8> {
    encode(&Line::Error { error })
}

/// What a local connection's bytes amounted to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalEvent {
    /// A request line, or the reason it could not be read.
    Request { conn: ConnId, request: Result<LocalRequest, String> },
    /// The connection broke a limit: answer `reason` and close it.
    Refuse { conn: ConnId, reason: String },
}

/// The local connections of one lookup listener.
#[derive(Debug, Default)]
pub struct LocalConns {
    buffers: BTreeMap<ConnId, Vec<u8>>,
    /// Requests each connection is waiting on, oldest first.
    pending: BTreeMap<ConnId, VecDeque<u64>>,
}

impl LocalConns {
    /// A connection was accepted; false when it is one too many (close it).
    pub fn accepted(&mut self, conn: ConnId) -> bool {
        if self.buffers.len() >= MAX_LOCAL_CONNS {
            return false;
        }
        self.buffers.insert(conn, Vec::new());
        true
    }

    pub fn owns(&self, conn: ConnId) -> bool {
        self.buffers.contains_key(&conn)
    }

    pub fn closed(&mut self, conn: ConnId) {
        self.buffers.remove(&conn);
        self.pending.remove(&conn);
    }

    /// Splits what arrived into request lines.
    pub fn received(&mut self, conn: ConnId, bytes: &[u8]) -> Vec<LocalEvent> {
        let Some(buffer) = self.buffers.get_mut(&conn) else { return Vec::new() };
        buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            let request = match std::str::from_utf8(&line) {
                Ok(text) => parse_request(text.trim_end_matches(['\n', '\r'])),
                Err(_) => Err("a request line must be UTF-8".to_owned()),
            };
            events.push(LocalEvent::Request { conn, request });
        }
        if buffer.len() > MAX_LINE {
            let reason = format!("request line longer than {MAX_LINE} bytes");
            events.push(LocalEvent::Refuse { conn, reason });
        }
        events
    }

    /// Notes that `conn` waits for the answer to `request_id`; false when it already waits on
    /// too many (refuse it).
    pub fn wait(&mut self, conn: ConnId, request_id: u64) -> bool {
        let queue = self.pending.entry(conn).or_default();
        if queue.len() >= MAX_PENDING {
            return false;
        }
        queue.push_back(request_id);
        true
    }

    /// The connection waiting on `request_id`, which is answered now.
    pub fn answered(&mut self, request_id: u64) -> Option<ConnId> {
        let conn = self.pending.iter().find(|(_, q)| q.front() == Some(&request_id)).map(|(c, _)| *c)?;
        if let Some(queue) = self.pending.get_mut(&conn) {
            queue.pop_front();
        }
        Some(conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_read_one_per_line_and_nonsense_is_named() {
        assert_eq!(parse_request("get dns"), Ok(LocalRequest::Get("dns".into())));
        assert_eq!(parse_request("get --all"), Ok(LocalRequest::All));
        assert_eq!(parse_request(" version "), Ok(LocalRequest::Version));
        let error = parse_request("drop table").expect_err("refused");
        assert!(error.contains("`drop table`") && error.contains("get KEY"), "{error}");
        assert!(parse_request("get a b").is_err());
    }

    #[test]
    fn lines_split_across_reads_and_overlong_lines_are_refused() {
        let mut conns = LocalConns::default();
        let conn = ConnId::inbound(1);
        assert!(conns.accepted(conn));
        assert_eq!(conns.received(conn, b"get d"), Vec::new());
        let events = conns.received(conn, b"ns\r\nversion\n");
        assert_eq!(
            events,
            vec![
                LocalEvent::Request { conn, request: Ok(LocalRequest::Get("dns".into())) },
                LocalEvent::Request { conn, request: Ok(LocalRequest::Version) },
            ]
        );
        let events = conns.received(conn, &[b'x'; MAX_LINE + 1]);
        assert!(matches!(&events[..], [LocalEvent::Refuse { .. }]), "{events:?}");
        let events = conns.received(conn, &[0xff, b'\n']);
        assert!(matches!(&events[0], LocalEvent::Request { request: Err(e), .. } if e.contains("UTF-8")));
    }

    #[test]
    fn answers_are_json_lines_that_escape_whatever_a_value_holds() {
        let version = Version { counter: 2, author: crate::identity::NodeId([0xab; 16]) };
        let answer = LookupAnswer::Value { version, key: "motd".into(), value: Some("a\n\"b\"".into()) };
        let line = String::from_utf8(answer_line(&answer)).expect("utf-8");
        assert_eq!(line.matches('\n').count(), 1, "one line: {line}");
        let parsed: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(parsed["value"], "a\n\"b\"");
        assert_eq!(parsed["version"], format!("2@{}", "ab".repeat(16)));
        let declined = LookupAnswer::Declined { retry_after: std::time::Duration::from_millis(1000) };
        assert_eq!(answer_line(&declined), b"{\"declined\":\"syncing\",\"retry_after_ms\":1000}\n");
    }

    #[test]
    fn answers_go_back_in_request_order_and_a_flood_of_requests_is_refused() {
        let mut conns = LocalConns::default();
        let (a, b) = (ConnId::inbound(1), ConnId::inbound(2));
        assert!(conns.accepted(a) && conns.accepted(b));
        assert!(conns.wait(a, 1) && conns.wait(b, 2) && conns.wait(a, 3));
        assert_eq!(conns.answered(1), Some(a));
        assert_eq!(conns.answered(2), Some(b));
        assert_eq!(conns.answered(3), Some(a));
        assert!((0..MAX_PENDING as u64).all(|i| conns.wait(a, 10 + i)));
        assert!(!conns.wait(a, 99), "one more than the limit");
    }
}
