//! The trace recorder: a readable log of a run, one line per input and output, for insta
//! snapshots and for replaying failures. Owns the line format and the short digests that stand in
//! for keys and ciphertext so traces stay stable and readable. It never records a secret.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::time::Instant;

/// How a machine's inputs and outputs describe themselves in a trace: one line, no newline,
/// bytes shown through [`short`].
pub trait TraceEvent {
    fn describe(&self) -> String;
}

/// Bytes as their length and the first 4 bytes of their SHA-256, e.g. `48B#1a2b3c4d`.
pub fn short(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    format!("{}B#{}", bytes.len(), hex::encode(&digest[..4]))
}

/// An ordered record of a run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Trace {
    lines: Vec<String>,
}

impl Trace {
    pub fn new() -> Self {
        Self::default()
    }

    /// `actor` was fed `event` at `now`.
    pub fn input(&mut self, now: Instant, actor: &str, event: &impl TraceEvent) {
        self.line(now, actor, "<-", &event.describe());
    }

    /// `actor` emitted `event` at `now`.
    pub fn output(&mut self, now: Instant, actor: &str, event: &impl TraceEvent) {
        self.line(now, actor, "->", &event.describe());
    }

    /// A remark from the harness (a fault injected, a phase begun).
    pub fn note(&mut self, now: Instant, actor: &str, text: &str) {
        self.line(now, actor, "##", text);
    }

    fn line(&mut self, now: Instant, actor: &str, arrow: &str, text: &str) {
        let mut line = String::with_capacity(32 + text.len());
        // Writing to a String cannot fail.
        let _ = write!(line, "{now:>9} {actor:<10} {arrow} {text}");
        self.lines.push(line);
    }

    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// The whole trace, one event per line.
    pub fn render(&self) -> String {
        let mut out = self.lines.join("\n");
        out.push('\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Ping(&'static [u8]);
    impl TraceEvent for Ping {
        fn describe(&self) -> String {
            format!("Ping {}", short(self.0))
        }
    }

    #[test]
    fn lines_show_time_actor_direction_and_digest() {
        let mut trace = Trace::new();
        trace.input(Instant::from_nanos(1_500_000_000), "alice", &Ping(b"abc"));
        trace.output(Instant::from_nanos(1_500_000_000), "alice", &Ping(b"abc"));
        assert_eq!(
            trace.render(),
            "    1.500 alice      <- Ping 3B#ba7816bf\n    1.500 alice      -> Ping 3B#ba7816bf\n"
        );
    }
}
