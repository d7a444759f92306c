//! What a member scenario reads back from each member while it runs: a copy of the member's state
//! taken by the host driver's probe after every input (active and staged configuration, syncing,
//! drop counters, the peers it heard from). Owns only that copy; it never changes a member and
//! never judges what it saw (the scenario's assertions and the observer do).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use cohort_core::NodeId;
use cohort_core::member::{MemberRecord, PeerView, StoredConfig, Version};
use cohort_core::node::Node;

use crate::node_host::Probe;

/// One member as its probe last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    pub active: StoredConfig,
    /// The staged configuration, once durable.
    pub staged: Option<StoredConfig>,
    /// A newer version is known than the one active: lookups are declined.
    pub syncing: bool,
    /// The version whose verified header showed the member it was removed.
    pub removed: Option<Version>,
    /// Refused messages, by kind, since the member last booted.
    pub drops: BTreeMap<String, u64>,
    /// Each peer's last valid Status, as the member holds it.
    pub peers: BTreeMap<NodeId, PeerView>,
    /// Statuses the member accepted from each peer over the whole run, counted as the times the
    /// peer's `last_heard` moved (a member accepts at most one per input).
    pub heard: BTreeMap<NodeId, u64>,
}

impl MemberView {
    /// The view before a member's first boot: what its disk holds.
    pub fn of_record(record: &MemberRecord) -> MemberView {
        MemberView {
            active: record.active.clone(),
            staged: record.staged.clone(),
            syncing: false,
            removed: None,
            drops: BTreeMap::new(),
            peers: BTreeMap::new(),
            heard: BTreeMap::new(),
        }
    }

    pub fn active_version(&self) -> Version {
        self.active.version()
    }

    pub fn staged_version(&self) -> Option<Version> {
        self.staged.as_ref().map(StoredConfig::version)
    }

    /// Messages of this kind the member refused (`bad-signature`, `unknown-sender`, ...).
    pub fn drops_of(&self, kind: &str) -> u64 {
        self.drops.get(kind).copied().unwrap_or(0)
    }

    /// Every refused message, whatever its kind.
    pub fn all_drops(&self) -> u64 {
        self.drops.values().sum()
    }

    /// The active configuration's value for `key`.
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.active.config.settings.get(key).map(String::as_str)
    }
}

/// Every member's view, by index, shared between the probes and the scenario.
pub type SharedViews = Arc<Mutex<Vec<MemberView>>>;

/// The probe for member `index`: copies what the node's member holds into `views` after every
/// input (and once at each boot).
pub fn probe(views: SharedViews, index: usize) -> Probe {
    Arc::new(move |node: &Node| {
        let Some(member) = node.member() else { return };
        let mut views = views.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(view) = views.get_mut(index) else { return };
        for (peer, seen) in member.peers() {
            if view.peers.get(peer).map(|p| p.last_heard) != Some(seen.last_heard) {
                *view.heard.entry(*peer).or_default() += 1;
            }
        }
        view.peers = member.peers().clone();
        view.drops = member.drops().iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
        view.syncing = member.is_syncing();
        view.removed = member.removed_in();
        // Versions name their content (one configuration per version), so a copy is taken only
        // when one moves.
        if view.active_version() != member.active_version() {
            view.active = member.active().clone();
        }
        if view.staged_version() != member.staged_version() {
            view.staged = member.staged().cloned();
        }
    })
}
