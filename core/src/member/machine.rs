//! The cluster member machine (rules 1-9 of DESIGN.md "Cluster member"). Owns heartbeats, Status
//! validation, version ordering, fetching, staging, the install rule, the syncing state and
//! operator changes. Persistence precedes action: staged and installed configurations, and the boot
//! epoch that keeps sequence numbers rising across restarts, take effect only when the driver
//! answers [`MemberInput::Persisted`]; drivers must answer persists in the order they were asked.
//! It never trusts a message it has not verified against its own configuration.

use std::collections::{BTreeMap, VecDeque};

use super::block::{Author, ConfigBlock, TrustedAuthors};
use super::config::Version;
use super::io::{
    ChangeError, DropReason, LookupAnswer, MemberInput, MemberOutput, MemberRecord, MemberSettings, PeerView,
    PersistToken, StoredConfig,
};
use super::messages::{ChangeRequest, MemberMessage, Status};
use super::section::open_section;
use crate::identity::{KeyDigest, NodeId, NodeKeys};
use crate::machine::Machine;
use crate::rng::SeededRng;
use crate::signed::Signed;
use crate::time::{Instant, Now};
use crate::wire::WireError;

mod fetch;

use fetch::Fetch;

enum Effect {
    Boot,
    /// Staging `version`, fetched from `source` (`None`: authored here).
    Stage(Version, Option<NodeId>),
    Install(Version),
}

/// One cluster member. See the module docs.
pub struct Member {
    keys: NodeKeys,
    id: NodeId,
    digest: KeyDigest,
    settings: MemberSettings,
    rng: SeededRng,
    /// What storage has confirmed: the state this member acts on.
    durable: MemberRecord,
    /// What this member has asked storage to hold: durable plus writes in flight.
    intended: MemberRecord,
    pending: VecDeque<(PersistToken, Effect, MemberRecord)>,
    next_token: u64,
    running: bool,
    seq_low: u32,
    /// Status messages advertising the staged version, per sender, since it was staged.
    announcements: BTreeMap<NodeId, u32>,
    last_seq: BTreeMap<NodeId, u64>,
    /// What each peer last told this member, from its last valid Status.
    peers: BTreeMap<NodeId, PeerView>,
    highest_seen: Version,
    fetch: Option<Fetch>,
    /// The version whose verified header left this member out.
    removed: Option<Version>,
    next_heartbeat: Option<Instant>,
    outputs: VecDeque<MemberOutput>,
    drops: BTreeMap<&'static str, u64>,
    /// Status messages (heartbeats) accepted.
    heard: u64,
    /// The block last served to each member, and when: the same fetch again sooner than a
    /// requester retries is a replay, and is not answered with the whole block again.
    served: BTreeMap<NodeId, (Version, Instant)>,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("id", &self.id)
            .field("active", &self.active_version())
            .field("staged", &self.staged_version())
            .finish_non_exhaustive()
    }
}

impl Member {
    /// Starts (or restarts) a member from what storage holds. The first output persists a raised
    /// boot epoch; heartbeats begin once that is durable.
    pub fn new(
        now: Instant,
        keys: NodeKeys,
        record: MemberRecord,
        settings: MemberSettings,
        rng: SeededRng,
    ) -> Member {
        let id = keys.node_id();
        let digest = keys.public().key_digest();
        let highest_seen = record.staged.as_ref().map_or(record.active.version(), |s| s.version());
        let mut member = Member {
            keys,
            id,
            digest,
            settings,
            rng,
            intended: record.clone(),
            durable: record,
            pending: VecDeque::new(),
            next_token: 0,
            running: false,
            seq_low: 0,
            announcements: BTreeMap::new(),
            last_seq: BTreeMap::new(),
            peers: BTreeMap::new(),
            highest_seen,
            fetch: None,
            removed: None,
            next_heartbeat: None,
            outputs: VecDeque::new(),
            drops: BTreeMap::new(),
            heard: 0,
            served: BTreeMap::new(),
        };
        member.intended.boot_epoch = member.intended.boot_epoch.saturating_add(1);
        member.persist(now, Effect::Boot);
        member
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn active(&self) -> &StoredConfig {
        &self.durable.active
    }

    pub fn active_version(&self) -> Version {
        self.durable.active.version()
    }

    pub fn staged_version(&self) -> Option<Version> {
        self.durable.staged.as_ref().map(StoredConfig::version)
    }

    /// Rule 3: a newer version is known than the one active; service requests are declined.
    pub fn is_syncing(&self) -> bool {
        self.highest_seen > self.active_version()
    }

    /// The version that removed this member, once a verified header showed it.
    pub fn removed_in(&self) -> Option<Version> {
        self.removed
    }

    /// Whether this member may answer from its active configuration: listed there, and not
    /// known to be removed by a newer one.
    pub fn in_roster(&self) -> bool {
        self.removed.is_none() && self.durable.active.config.is_member(&self.id)
    }

    /// Each peer's last valid Status, by sender.
    pub fn peers(&self) -> &BTreeMap<NodeId, PeerView> {
        &self.peers
    }

    /// The staged configuration, once durable.
    pub fn staged(&self) -> Option<&StoredConfig> {
        self.durable.staged.as_ref()
    }

    /// Refused messages, by kind.
    pub fn drops(&self) -> &BTreeMap<&'static str, u64> {
        &self.drops
    }

    /// Heartbeats (Status messages) accepted since start.
    pub fn heartbeats_heard(&self) -> u64 {
        self.heard
    }

    /// The record as storage last confirmed it.
    pub fn durable_record(&self) -> &MemberRecord {
        &self.durable
    }

    fn persist(&mut self, _now: Instant, effect: Effect) {
        let token = PersistToken(self.next_token);
        self.next_token += 1;
        let record = self.intended.clone();
        self.outputs.push_back(MemberOutput::Persist { token, record: Box::new(record.clone()) });
        self.pending.push_back((token, effect, record));
    }

    fn drop_message(&mut self, reason: DropReason) {
        *self.drops.entry(reason.kind()).or_default() += 1;
        self.outputs.push_back(MemberOutput::Dropped { reason });
    }

    /// Members this node currently recognises: its active roster plus its verified staged one.
    fn known_member(&self, id: &NodeId) -> Option<&super::config::MemberInfo> {
        self.durable
            .staged
            .as_ref()
            .and_then(|s| s.config.members.get(id))
            .or_else(|| self.durable.active.config.members.get(id))
    }

    fn known_members(&self) -> BTreeMap<NodeId, &super::config::MemberInfo> {
        let mut all: BTreeMap<NodeId, &super::config::MemberInfo> =
            self.durable.active.config.members.iter().map(|(id, m)| (*id, m)).collect();
        if let Some(staged) = &self.durable.staged {
            all.extend(staged.config.members.iter().map(|(id, m)| (*id, m)));
        }
        all
    }

    fn trusted_authors(&self) -> TrustedAuthors {
        let active = &self.durable.active.config;
        TrustedAuthors {
            members: self.known_members().into_iter().map(|(id, m)| (id, m.identity)).collect(),
            operators: active.operators.iter().map(|(id, o)| (*id, o.signing())).collect(),
        }
    }

    /// The keys of member `id` as this member's configurations list it.
    pub fn peer_identity(&self, id: &NodeId) -> Option<crate::identity::PublicIdentity> {
        self.known_member(id).map(|m| m.identity)
    }

    /// Member `id`'s name as this member's configurations list it, or its id.
    pub fn peer_name(&self, id: &NodeId) -> String {
        self.known_member(id).map_or_else(|| id.to_string(), |m| m.name.clone())
    }

    fn cluster_id(&self) -> &str {
        &self.durable.active.config.cluster_id
    }

    // ---- heartbeats -------------------------------------------------------------------------

    fn send_status(&mut self, now: Instant) {
        if !self.running || self.removed.is_some() {
            return;
        }
        self.seq_low = self.seq_low.saturating_add(1);
        let recipients: Vec<(NodeId, String, KeyDigest)> = self
            .known_members()
            .into_iter()
            .filter(|(id, _)| *id != self.id)
            .map(|(id, m)| (id, m.address.clone(), m.identity.key_digest()))
            .collect();
        let status = Status {
            cluster_id: self.cluster_id().to_owned(),
            sender: self.id,
            active: self.active_version(),
            staged: self.staged_version(),
            seq: (self.durable.boot_epoch << 32) | u64::from(self.seq_low),
            recipients: recipients.iter().map(|(_, _, d)| *d).collect(),
        };
        let Ok(signed) = Signed::sign(status, &self.keys) else { return };
        for (to, address, _) in recipients {
            let message = MemberMessage::Status(signed.clone());
            self.outputs.push_back(MemberOutput::Send { to, address, message: Box::new(message) });
        }
        self.next_heartbeat = Some(now + self.settings.heartbeat);
    }

    fn handle_status(&mut self, now: Instant, from: NodeId, signed: Signed<Status>) {
        let status = &signed.body;
        let sender = status.sender;
        if sender != from {
            return self.drop_message(DropReason::WrongPeer { claimed: sender, peer: from });
        }
        if status.cluster_id != self.cluster_id() {
            return self.drop_message(DropReason::WrongCluster);
        }
        let Some(identity) = self.known_member(&sender).map(|m| m.identity) else {
            return self.drop_message(DropReason::UnknownSender(sender));
        };
        if signed.verify(&identity).is_err() {
            return self.drop_message(DropReason::BadSignature(sender));
        }
        if self.last_seq.get(&sender).is_some_and(|last| status.seq <= *last) {
            return self.drop_message(DropReason::StaleSequence(sender));
        }
        if !status.recipients.contains(&self.digest) {
            return self.drop_message(DropReason::NotARecipient(sender));
        }
        self.last_seq.insert(sender, status.seq);
        self.heard += 1;
        self.peers.insert(sender, PeerView { last_heard: now, active: status.active, staged: status.staged });
        self.outputs.push_back(MemberOutput::Heard {
            from: sender,
            active: status.active,
            staged: status.staged,
        });

        if let Some(staged) = &self.durable.staged
            && status.advertises(staged.version())
            && staged.config.is_member(&sender)
        {
            *self.announcements.entry(sender).or_default() += 1;
        }
        let newest = status.newest();
        self.highest_seen = self.highest_seen.max(newest);
        if newest > self.newest_intended() {
            self.want(now, newest, sender);
        }
        self.try_install(now);
    }

    /// The newest version this member holds or is about to hold.
    fn newest_intended(&self) -> Version {
        let active = self.intended.active.version();
        self.intended.staged.as_ref().map_or(active, |s| s.version().max(active))
    }

    // ---- staging and install ----------------------------------------------------------------

    fn stage(&mut self, now: Instant, stored: StoredConfig, source: Option<NodeId>) {
        let version = stored.version();
        self.highest_seen = self.highest_seen.max(version);
        if self.fetch.as_ref().is_some_and(|f| f.version <= version) {
            self.fetch = None;
        }
        // Rule 6: a lower staged version is simply replaced.
        self.intended.staged = Some(stored);
        self.persist(now, Effect::Stage(version, source));
    }

    /// Rule 5: install the staged version once every other member of its roster has advertised it
    /// at least twice since it was staged.
    fn try_install(&mut self, now: Instant) {
        let Some(staged) = &self.durable.staged else { return };
        let version = staged.version();
        if version <= self.active_version()
            || self.pending.iter().any(|(_, e, _)| matches!(e, Effect::Install(v) if *v == version))
        {
            return;
        }
        let ready = staged
            .config
            .members
            .keys()
            .filter(|id| **id != self.id)
            .all(|id| self.announcements.get(id).copied().unwrap_or(0) >= 2);
        if !ready {
            return;
        }
        if self.intended.staged.as_ref().is_some_and(|s| s.version() == version) {
            self.intended.staged = None;
        }
        self.intended.active = staged.clone();
        self.persist(now, Effect::Install(version));
    }

    fn handle_persisted(&mut self, now: Instant, token: PersistToken) {
        // Drivers answer in order, so everything up to `token` is durable too.
        let Some(position) = self.pending.iter().position(|(t, _, _)| *t == token) else { return };
        let done: Vec<_> = self.pending.drain(..=position).collect();
        for (_, effect, record) in done {
            self.durable = record;
            match effect {
                Effect::Boot => {
                    self.running = true;
                    self.send_status(now);
                }
                Effect::Stage(version, source) => {
                    if self.staged_version() == Some(version) {
                        self.announcements.clear();
                        self.outputs.push_back(MemberOutput::Staged { version, source });
                        self.send_status(now);
                    }
                }
                Effect::Install(version) => {
                    if self.active_version() == version {
                        self.announcements.clear();
                        let config_hash = self.durable.active.config.hash().unwrap_or_default();
                        self.outputs.push_back(MemberOutput::Installed { version, config_hash });
                        self.send_status(now);
                    }
                }
            }
        }
        self.try_install(now);
    }

    // ---- operators and service --------------------------------------------------------------

    fn handle_change(&mut self, now: Instant, request_id: u64, signed: Signed<ChangeRequest>) {
        let outcome = self.author_change(now, &signed);
        self.outputs.push_back(match outcome {
            Ok(version) => MemberOutput::ChangeAccepted { request_id, version },
            Err(error) => MemberOutput::ChangeRejected { request_id, error },
        });
    }

    /// Rule 7: verify the operator's request, then seal the changed configuration for every
    /// member under counter = highest seen + 1, and stage it.
    fn author_change(
        &mut self,
        now: Instant,
        signed: &Signed<ChangeRequest>,
    ) -> Result<Version, ChangeError> {
        let request = &signed.body;
        let active = &self.durable.active.config;
        if request.cluster_id != active.cluster_id {
            return Err(ChangeError::WrongCluster(request.cluster_id.chars().take(64).collect()));
        }
        let operator_id = NodeId::of_signing_key(&request.operator);
        if !active.operators.contains_key(&operator_id) {
            return Err(ChangeError::UnknownOperator(operator_id));
        }
        signed.verify_with_signing_key(&request.operator).map_err(|_| ChangeError::BadSignature)?;
        if request.base < active.version {
            return Err(ChangeError::Stale { base: request.base, active: active.version });
        }
        if !active.is_member(&self.id) {
            return Err(ChangeError::NotAMember);
        }
        if self.fetch.is_some() {
            return Err(ChangeError::Syncing { retry_after: self.settings.heartbeat });
        }
        // Encodes as it did to verify just above.
        let digest = signed.body_digest().map_err(|_| ChangeError::BadSignature)?;
        // A staged version (this member's own or another's) names every request it applied.
        let staged = [self.intended.staged.as_ref(), self.durable.staged.as_ref()];
        if let Some(held) = staged.into_iter().flatten().find(|s| s.config.applied_requests.contains(&digest))
        {
            return Err(ChangeError::Replayed(held.version()));
        }
        let staged = self.intended.staged.as_ref();
        let mut base = staged.unwrap_or(&self.intended.active).config.clone();
        if staged.is_none() {
            base.applied_requests.clear();
        }
        base.applied_requests.push(digest);
        let counter = self.highest_seen.max(self.newest_intended()).counter.saturating_add(1);
        let version = Version { counter, author: self.id };
        let config = base.with_changes(&request.changes, version)?;
        let block = ConfigBlock::seal(&config, Author::Member(self.id), &self.keys, &mut self.rng)
            .map_err(ChangeError::Seal)?;
        self.stage(now, StoredConfig { block, config }, None);
        Ok(version)
    }

    /// The settings this member answers with: the shared ones, overlaid by its own section.
    /// Other members' sections stay sealed; this member could not open them if it tried.
    pub fn effective_settings(&self) -> BTreeMap<String, String> {
        let active = &self.durable.active.config;
        let mut settings = active.settings.clone();
        if let Some(own) = active.sections.get(&self.id) {
            settings.extend(open_section(&active.cluster_id, &self.keys, own).values);
        }
        settings
    }

    fn handle_lookup(&mut self, request_id: u64, key: Option<String>) {
        let version = self.active_version();
        // A node not (or no longer) in its own roster has nothing it may answer from.
        let answer = if self.is_syncing() || !self.in_roster() {
            LookupAnswer::Declined { retry_after: self.settings.heartbeat }
        } else {
            let mut settings = self.effective_settings();
            match key {
                Some(key) => LookupAnswer::Value { version, value: settings.remove(&key), key },
                None => LookupAnswer::Settings { version, settings },
            }
        };
        self.outputs.push_back(MemberOutput::LookupAnswer { request_id, answer });
    }

    fn handle_decoded(&mut self, now: Instant, from: NodeId, decoded: Result<MemberMessage, WireError>) {
        if self.known_member(&from).is_none() {
            // The channel admitted a key that is no longer a member (a configuration moved on).
            return self.drop_message(DropReason::UnknownSender(from));
        }
        match decoded {
            Err(e) => self.drop_message(DropReason::Undecodable(e)),
            Ok(MemberMessage::Status(status)) => self.handle_status(now, from, status),
            Ok(MemberMessage::Fetch(request)) => self.handle_fetch(now, from, request),
            Ok(MemberMessage::FetchReply { block }) => self.handle_fetch_reply(now, from, *block),
            Ok(MemberMessage::FetchRefused { version }) => self.handle_fetch_refused(now, version),
            Ok(MemberMessage::NotInVersion { header }) => self.handle_not_in_version(header),
        }
    }
}

impl Machine for Member {
    type Input = MemberInput;
    type Output = MemberOutput;

    fn handle(&mut self, now: Now, input: MemberInput) {
        let now = now.mono;
        match input {
            MemberInput::Received { from, bytes } => {
                self.handle_decoded(now, from, MemberMessage::from_wire(&bytes))
            }
            MemberInput::Persisted(token) => self.handle_persisted(now, token),
            MemberInput::Change { request_id, request } => self.handle_change(now, request_id, request),
            MemberInput::Lookup { request_id, key } => self.handle_lookup(request_id, key),
            MemberInput::Timeout => {
                if self.next_heartbeat.is_some_and(|t| now >= t) {
                    self.send_status(now);
                }
                if self.fetch.as_ref().is_some_and(|f| now >= f.deadline) {
                    self.send_fetch(now);
                }
            }
        }
    }

    fn poll_output(&mut self) -> Option<MemberOutput> {
        self.outputs.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let fetch = self.fetch.as_ref().map(|f| f.deadline);
        [self.next_heartbeat, fetch].into_iter().flatten().min()
    }
}
