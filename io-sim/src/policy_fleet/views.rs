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
use cohort_core::policy::policy_file::PolicyFile;
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

/// An agent's written policy file, read as the TOML it is; `None` for one that does not parse
/// (which no agent should ever have written).
fn parsed(contents: &[u8]) -> Option<PolicyFile> {
    PolicyFile::parse(std::str::from_utf8(contents).ok()?).ok()
}

/// Whether `contents` may hold `texts`: TOML writes a string of only these characters
/// verbatim, so a file lacking one of them cannot hold it; anything else needs the parse. (Looked
/// at every tenth of a second over every agent's file, so most files skip the parse.)
fn may_hold(contents: &[u8], texts: &[&str]) -> bool {
    let verbatim = |t: &str| t.chars().all(|c| c.is_ascii_alphanumeric() || "._- ".contains(c));
    let found = |t: &str| t.is_empty() || contents.windows(t.len()).any(|w| w == t.as_bytes());
    texts.iter().all(|t| !verbatim(t) || found(t))
}

/// How many of `files` (host, path) set `key` to `value`, reading the shared map once.
pub(super) fn count_setting(
    files: &SharedFiles,
    which: &[(String, String)],
    key: &str,
    value: &str,
) -> usize {
    let files = files.lock().unwrap_or_else(PoisonError::into_inner);
    which
        .iter()
        .filter_map(|k| files.get(k))
        .filter(|c| may_hold(c, &[key, value]))
        .filter_map(|c| parsed(c))
        .filter(|f| f.params.get(key).is_some_and(|v| v == value))
        .count()
}

/// How many of `files` set `key` to anything.
pub(super) fn count_key(files: &SharedFiles, which: &[(String, String)], key: &str) -> usize {
    let files = files.lock().unwrap_or_else(PoisonError::into_inner);
    which
        .iter()
        .filter_map(|k| files.get(k))
        .filter(|c| may_hold(c, &[key]))
        .filter_map(|c| parsed(c))
        .filter(|f| f.params.contains_key(key))
        .count()
}

/// The digest an agent's policy file names in its `digest` field.
pub(super) fn digest_of(contents: &[u8]) -> Option<[u8; 32]> {
    parsed(contents)?.digest_bytes()
}

/// Stream bytes one way (`inbound` or not) within `span` of simulated time.
pub(super) fn bytes_within(traffic: &SharedTraffic, inbound: bool, span: Range<Duration>) -> u64 {
    let samples = traffic.lock().unwrap_or_else(PoisonError::into_inner);
    samples.iter().filter(|s| s.inbound == inbound && span.contains(&s.at)).map(|s| s.bytes as u64).sum()
}
