//! What the fleet's harness reads back, never writes: a copy of each server's counters and
//! policies taken by the host's probe after every input, which agents hold a parameter (from the
//! policy files their host wrote), and the stream bytes that reached the master or left the
//! agents in a span of simulated time. Measuring only: it judges nothing a role decides.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cohort_core::node::Node;
use cohort_core::policy::document::{Policy, Superseded};
use cohort_core::policy::server::RejectKind;

use crate::node_host::{Probe, SharedFiles, SharedTraffic};

/// A server's state as its probe last saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerView {
    /// Refusals, by kind, since the server last started.
    pub rejected: BTreeMap<RejectKind, u64>,
    pub policies: Vec<Policy>,
    pub reports_held: usize,
    pub syncs_received: u64,
    /// When each policy version was first held here (simulated time), across restarts.
    pub held_since: BTreeMap<(String, u64), Duration>,
    /// With reports watched: every applied digest each agent reported here, and the versions
    /// this server kept as superseded.
    pub reported: BTreeMap<String, BTreeSet<[u8; 32]>>,
    pub superseded: Vec<Superseded>,
}

impl ServerView {
    /// How many refusals of `kind` the server counted.
    pub fn refused(&self, kind: RejectKind) -> u64 {
        self.rejected.get(&kind).copied().unwrap_or(0)
    }

    /// The policy `id` held here, if any.
    pub fn policy(&self, id: &str) -> Option<&Policy> {
        self.policies.iter().find(|p| p.id == id)
    }
}

pub(super) type SharedView = Arc<Mutex<ServerView>>;

/// A probe that copies a server's counters and policies into `view` after every input (and,
/// with `watch_reports`, what agents reported and what lost conflicts).
pub(super) fn server_probe(view: SharedView, watch_reports: bool) -> Probe {
    Arc::new(move |node: &Node| {
        let Some(server) = node.policy_server() else { return };
        let mut view = view.lock().unwrap_or_else(PoisonError::into_inner);
        if watch_reports {
            for (agent, report) in server.reports() {
                view.reported.entry(agent.to_owned()).or_default().insert(report.applied);
            }
            let ids: Vec<String> = server.policies().map(|p| p.id.clone()).collect();
            view.superseded = ids.iter().flat_map(|id| server.superseded(id)).cloned().collect();
        }
        if view.rejected != *server.rejected() {
            view.rejected = server.rejected().clone();
        }
        view.reports_held = server.reports_held();
        view.syncs_received = server.syncs_received();
        let changed = view.policies.len() != server.policies().count()
            || view.policies.iter().zip(server.policies()).any(|(a, b)| a != b);
        if changed {
            view.policies = server.policies().cloned().collect();
            let at = turmoil::sim_elapsed().unwrap_or_default();
            for p in server.policies() {
                view.held_since.entry((p.id.clone(), p.version)).or_insert(at);
            }
        }
    })
}

pub(super) fn read(view: &SharedView) -> ServerView {
    view.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// The line an agent's written policy file holds when `key` is set to `value` (the file's own
/// format: `key = "value"`, then the source as a comment).
fn line_for(key: &str, value: &str) -> String {
    format!("{key} = {value:?}")
}

/// How many of `files` (host, path) set `key` to `value`, reading the shared map once.
pub(super) fn count_setting(
    files: &SharedFiles,
    which: &[(String, String)],
    key: &str,
    value: &str,
) -> usize {
    let files = files.lock().unwrap_or_else(PoisonError::into_inner);
    let wanted = line_for(key, value);
    let spaced = format!("{wanted} ");
    which
        .iter()
        .filter_map(|k| files.get(k))
        .filter(|c| String::from_utf8_lossy(c).lines().any(|l| l == wanted || l.starts_with(&spaced)))
        .count()
}

/// How many of `files` set `key` to anything.
pub(super) fn count_key(files: &SharedFiles, which: &[(String, String)], key: &str) -> usize {
    let files = files.lock().unwrap_or_else(PoisonError::into_inner);
    let prefix = format!("{key} = ");
    which
        .iter()
        .filter_map(|k| files.get(k))
        .filter(|c| String::from_utf8_lossy(c).lines().any(|l| l.starts_with(&prefix)))
        .count()
}

/// The digest an agent's policy file names in its `# digest` header line.
pub(super) fn digest_line(contents: &[u8]) -> Option<[u8; 32]> {
    let text = String::from_utf8_lossy(contents);
    let hex_digest = text.lines().find_map(|l| l.strip_prefix("# digest "))?;
    hex::decode(hex_digest.trim()).ok()?.try_into().ok()
}

/// Stream bytes one way (`inbound` or not) within `span` of simulated time.
pub(super) fn bytes_within(traffic: &SharedTraffic, inbound: bool, span: Range<Duration>) -> u64 {
    let samples = traffic.lock().unwrap_or_else(PoisonError::into_inner);
    samples.iter().filter(|s| s.inbound == inbound && span.contains(&s.at)).map(|s| s.bytes as u64).sum()
}
