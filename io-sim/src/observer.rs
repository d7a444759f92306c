//! Invariants checked while a simulated run goes, from what the hosts report: one configuration
//! per version cluster-wide; no member stages (and so may serve) or installs a version whose
//! header is not signed by a key it trusted, or holds a block short of what its header commits
//! to; and no install of a version before every other member of its roster announced it twice to
//! the installer *since the installer staged it* (a boot with it staged counts as staging it
//! again). The first violation is kept with the simulated time it happened.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cohort_core::NodeId;
use cohort_core::member::block::{TrustedAuthors, verify_header};
use cohort_core::member::{ClusterConfig, MemberRecord, StoredConfig, Version};

#[derive(Debug, Clone, Default)]
pub struct Observer {
    inner: Arc<Mutex<Observations>>,
}

#[derive(Debug, Default)]
pub struct Observations {
    /// The configuration hash seen active under each version, anywhere.
    pub active_by_version: BTreeMap<Version, [u8; 32]>,
    /// Status announcements delivered since the receiver last staged the version:
    /// (receiver, sender, version) → count.
    pub announced: BTreeMap<(NodeId, NodeId, Version), u32>,
    /// Each member's last active configuration, to judge who it trusted at its next install.
    pub last_active: BTreeMap<NodeId, ClusterConfig>,
    /// Each member's last staged configuration: its roster is trusted too (rule 8).
    pub last_staged: BTreeMap<NodeId, ClusterConfig>,
    /// (member, version) whose header this checker verified when the member staged it.
    verified: std::collections::BTreeSet<(NodeId, Version)>,
    /// When each member installed each version.
    pub installs: Vec<(NodeId, Version, Duration)>,
    pub change_accepted: Option<(Version, Duration)>,
    /// Each boot after the first: who, when, and the active and staged versions it recovered.
    pub recoveries: Vec<(NodeId, Duration, Version, Option<Version>)>,
    boots: BTreeMap<NodeId, u32>,
    pub messages_sent: BTreeMap<NodeId, u64>,
    pub bytes_sent: BTreeMap<NodeId, u64>,
    pub violation: Option<String>,
}

impl Observer {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Observations> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn violate(state: &mut Observations, at: Duration, what: String) {
        if state.violation.is_none() {
            state.violation = Some(format!("at {:.3}s: {what}", at.as_secs_f64()));
        }
    }

    /// A member started from `record` (first boot or restart).
    pub fn booted(&self, member: NodeId, record: &MemberRecord, at: Duration) {
        let mut state = self.lock();
        let active = &record.active;
        let boots = state.boots.entry(member).or_default();
        *boots += 1;
        if *boots > 1 {
            let staged = record.staged.as_ref().map(StoredConfig::version);
            state.recoveries.push((member, at, active.version(), staged));
        }
        Self::record_active(&mut state, member, active, at);
        state.last_active.insert(member, active.config.clone());
        state.last_staged.remove(&member);
        if let Some(staged) = &record.staged {
            Self::forget_announcements(&mut state, member, staged.version());
            state.verified.insert((member, staged.version()));
            state.last_staged.insert(member, staged.config.clone());
        }
    }

    /// `member` staged `staged`: it must be whole and signed by a key the member trusted, since
    /// the member now serves it; only announcements from now on count toward installing it.
    pub fn staged(&self, member: NodeId, staged: &StoredConfig, at: Duration) {
        let mut state = self.lock();
        let version = staged.version();
        Self::forget_announcements(&mut state, member, version);
        if let Err(what) = Self::check_block(&state, member, staged) {
            Self::violate(&mut state, at, format!("{member} staged {version}: {what}"));
        }
        state.verified.insert((member, version));
        state.last_staged.insert(member, staged.config.clone());
    }

    /// Who `member` trusted to author a block, from what it last had active and staged.
    fn trusted(state: &Observations, member: NodeId) -> TrustedAuthors {
        let mut trusted = TrustedAuthors::default();
        for config in [state.last_active.get(&member), state.last_staged.get(&member)].into_iter().flatten() {
            trusted.members.extend(config.members.iter().map(|(id, m)| (*id, m.identity)));
        }
        if let Some(active) = state.last_active.get(&member) {
            trusted.operators.extend(active.operators.iter().map(|(id, o)| (*id, o.signing())));
        }
        trusted
    }

    fn check_block(state: &Observations, member: NodeId, stored: &StoredConfig) -> Result<(), String> {
        let header = &stored.block.header;
        verify_header(&stored.config.cluster_id, header, &Self::trusted(state, member))
            .map_err(|e| format!("a header it could not have verified ({e})"))?;
        stored.block.check_whole().map_err(|e| format!("a block it cannot serve whole ({e})"))?;
        if stored.config.hash().ok() != Some(header.body.config_hash) {
            return Err("a configuration other than its header commits to".into());
        }
        Ok(())
    }

    fn forget_announcements(state: &mut Observations, member: NodeId, version: Version) {
        state.announced.retain(|(receiver, _, v), _| !(*receiver == member && *v == version));
    }

    pub fn sent(&self, member: NodeId, bytes: usize) {
        let mut state = self.lock();
        *state.messages_sent.entry(member).or_default() += 1;
        *state.bytes_sent.entry(member).or_default() += bytes as u64;
    }

    /// `receiver` took a valid Status from `sender` advertising these versions.
    pub fn heard(&self, receiver: NodeId, sender: NodeId, active: Version, staged: Option<Version>) {
        let mut state = self.lock();
        for version in [Some(active), staged].into_iter().flatten() {
            *state.announced.entry((receiver, sender, version)).or_default() += 1;
        }
    }

    pub fn change_accepted(&self, version: Version, at: Duration) {
        self.lock().change_accepted.get_or_insert((version, at));
    }

    /// `member` installed `active`; checks all three invariants.
    pub fn installed(&self, member: NodeId, active: &StoredConfig, at: Duration) {
        let mut state = self.lock();
        let version = active.version();
        Self::record_active(&mut state, member, active, at);

        // Verified when it was staged, or signed by a key the member trusts now; and whole.
        let checked = if state.verified.contains(&(member, version)) {
            active.block.check_whole().map_err(|e| format!("a block it cannot serve whole ({e})"))
        } else {
            Self::check_block(&state, member, active)
        };
        if let Err(what) = checked {
            Self::violate(&mut state, at, format!("{member} installed {version}: {what}"));
        }

        // Announced twice by every other member of the roster, to this member.
        for other in active.config.members.keys().filter(|id| **id != member) {
            let heard = state.announced.get(&(member, *other, version)).copied().unwrap_or(0);
            if heard < 2 {
                Self::violate(
                    &mut state,
                    at,
                    format!("{member} installed {version} after hearing it from {other} only {heard} times"),
                );
            }
        }
        state.last_active.insert(member, active.config.clone());
        state.last_staged.remove(&member);
        state.installs.push((member, version, at));
    }

    fn record_active(state: &mut Observations, member: NodeId, active: &StoredConfig, at: Duration) {
        let version = active.version();
        let hash = active.config.hash().unwrap_or_default();
        match state.active_by_version.get(&version) {
            Some(seen) if *seen != hash => Self::violate(
                state,
                at,
                format!("{member} has a different configuration active under {version} than another member"),
            ),
            _ => {
                state.active_by_version.insert(version, hash);
            }
        }
    }

    /// Records a violation a driver found itself (the first one is kept).
    pub fn report_violation(&self, at: Duration, what: String) {
        Self::violate(&mut self.lock(), at, what);
    }

    pub fn violation(&self) -> Option<String> {
        self.lock().violation.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_core::NodeKeys;
    use cohort_core::member::genesis::{genesis_config, genesis_records};
    use cohort_core::member::{Change, MemberInfo};
    use cohort_core::rng::seeded;

    /// The checker must catch what it claims to: two configurations under one version.
    #[test]
    fn two_configurations_under_one_version_is_a_violation() {
        let mut rng = seeded(1);
        let operator = NodeKeys::generate(&mut rng);
        let member = NodeKeys::generate(&mut rng);
        let info = MemberInfo { name: "m0".into(), identity: member.public(), address: "m0:1".into() };
        let config = genesis_config("c", "ops", &operator, [info], BTreeMap::new());
        let records = genesis_records(&config, &operator, &mut rng).expect("seals");
        let record = records.values().next().expect("one record").clone();
        let observer = Observer::default();
        observer.booted(member.node_id(), &record, Duration::ZERO);
        assert_eq!(observer.violation(), None);
        let mut other = record.clone();
        other.active.config = config
            .with_changes(&[Change::Set { key: "x".into(), value: "y".into() }], config.version)
            .expect("applies");
        observer.booted(NodeId([7; 16]), &other, Duration::from_secs(1));
        assert!(observer.violation().expect("caught").contains("different configuration"));
    }

    /// Member `a` of a two-member cluster (with `b`), booted from its genesis record under a new observer.
    fn booted_member_of_two(seed: u64) -> (NodeKeys, NodeKeys, MemberRecord, Observer) {
        let mut rng = seeded(seed);
        let operator = NodeKeys::generate(&mut rng);
        let a = NodeKeys::generate(&mut rng);
        let b = NodeKeys::generate(&mut rng);
        let infos =
            [&a, &b].map(|k| MemberInfo { name: "m".into(), identity: k.public(), address: "m:1".into() });
        let config = genesis_config("c", "ops", &operator, infos, BTreeMap::new());
        let records = genesis_records(&config, &operator, &mut rng).expect("seals");
        let record = records.get(&a.node_id()).expect("a's record").clone();
        let observer = Observer::default();
        observer.booted(a.node_id(), &record, Duration::ZERO);
        (a, b, record, observer)
    }

    #[test]
    fn an_install_without_two_announcements_is_a_violation() {
        let (a, _b, record, observer) = booted_member_of_two(2);
        let record = &record;
        observer.installed(a.node_id(), &record.active, Duration::from_secs(1));
        assert!(observer.violation().expect("caught").contains("only 0 times"));
    }

    /// Announcements heard before staging do not count: a member that skipped the reset would
    /// install on stale ones, and the checker must say so.
    #[test]
    fn announcements_from_before_staging_do_not_count() {
        let (a, b, record, observer) = booted_member_of_two(3);
        let record = &record;
        let version = record.active.version();
        {
            let mut state = observer.lock();
            state.announced.insert((a.node_id(), b.node_id(), version), 5);
        }
        observer.staged(a.node_id(), &record.active, Duration::ZERO);
        assert_eq!(observer.violation(), None, "a genuine whole block is fine to stage");
        observer.installed(a.node_id(), &record.active, Duration::from_secs(1));
        assert!(observer.violation().expect("caught").contains("only 0 times"));
    }

    /// A member that staged (and so would serve) a block whose header no trusted key signed, or
    /// one short of an entry, is caught.
    #[test]
    fn staging_an_unverified_or_partial_block_is_a_violation() {
        let (a, _b, record, observer) = booted_member_of_two(4);
        let mut forged = record.active.clone();
        forged.block.header =
            cohort_core::signed::Signed::sign(forged.block.header.body.clone(), &a).expect("signs");
        observer.staged(a.node_id(), &forged, Duration::from_secs(1));
        assert!(observer.violation().expect("caught").contains("could not have verified"));

        let (a, _b, record, observer) = booted_member_of_two(5);
        let mut partial = record.active.clone();
        partial.block.entries.pop_first();
        observer.staged(a.node_id(), &partial, Duration::from_secs(1));
        assert!(observer.violation().expect("caught").contains("cannot serve whole"));
    }
}
