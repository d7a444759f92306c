//! One run as a browser watches it: each host's end and the digest of its output, so the final
//! grouping costs no output memory (the browser holds the output it was sent). It never holds a
//! host's output.

use std::collections::BTreeMap;

use serde_json::json;

use super::http::RequestId;
use crate::exec::report::{outcome_text, output_digest, summary_of};
use crate::exec::wire::{HostOutcome, HostResult};

/// A run streaming to a browser: only each host's end and output digest is kept, so the final
/// grouping costs no output memory (the browser holds the output it was sent).
#[derive(Debug)]
pub(super) struct RunView {
    pub(super) request: RequestId,
    pub(super) principal: String,
    pub(super) accepted: bool,
    pub(super) ends: Vec<(String, HostOutcome)>,
    pub(super) groups: BTreeMap<[u8; 32], Vec<String>>,
}

impl RunView {
    pub(super) fn record(&mut self, result: &HostResult) {
        self.ends.push((result.host.clone(), result.outcome.clone()));
        self.groups.entry(output_digest(result)).or_default().push(result.host.clone());
    }

    /// The last event: the summary and every group under its folded host list, largest first.
    pub(super) fn finished(&self) -> serde_json::Value {
        let mut groups: Vec<&Vec<String>> = self.groups.values().collect();
        groups.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        let groups: Vec<serde_json::Value> = groups
            .into_iter()
            .map(|hosts| {
                let outcome = self.ends.iter().find(|(h, _)| *h == hosts[0]).map(|(_, o)| outcome_text(o));
                json!({
                    "hosts": crate::exec::nodeset::fold(hosts),
                    "names": hosts,
                    "example": hosts[0],
                    "outcome": outcome,
                })
            })
            .collect();
        let summary = summary_of(self.ends.iter().map(|(h, o)| (h.as_str(), o)));
        json!({ "event": "finished", "summary": summary, "groups": groups })
    }
}
