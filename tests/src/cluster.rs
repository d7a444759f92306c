//! An in-memory cluster of [`Member`] machines for rule tests and trace snapshots: a queue of
//! messages with fixed latency, link cuts, per-message drop rules, instant durable storage, and a
//! trace of every input and output. Deterministic: same seed, same run.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use cohort_core::member::Member;
use cohort_core::member::genesis::{genesis_config, genesis_records};
use cohort_core::member::{
    Change, ChangeRequest, MemberInfo, MemberInput, MemberMessage, MemberOutput, MemberRecord,
    MemberSettings, Version,
};
use cohort_core::rng::{fork, seeded};
use cohort_core::signed::Signed;
use cohort_core::trace::Trace;
use cohort_core::{Instant, Machine, NodeKeys, Now};

pub const LATENCY: Duration = Duration::from_millis(5);

/// What happened at a member, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Staged { member: usize, version: Version, at: Instant },
    Installed { member: usize, version: Version, config_hash: [u8; 32], at: Instant },
    Dropped { member: usize, kind: &'static str },
    Output { member: usize, output: MemberOutput },
}

type DropRule = Box<dyn FnMut(usize, usize, &MemberMessage) -> bool>;

pub struct MemCluster {
    pub keys: Vec<NodeKeys>,
    pub operator: NodeKeys,
    pub members: Vec<Option<Member>>,
    pub storage: Vec<MemberRecord>,
    pub now: Instant,
    pub trace: Trace,
    pub events: Vec<Event>,
    /// Directed links that deliver nothing.
    pub cut: BTreeSet<(usize, usize)>,
    queue: VecDeque<(Instant, usize, usize, Vec<u8>)>,
    drop_rule: Option<DropRule>,
    settings: MemberSettings,
    rng: cohort_core::rng::SeededRng,
    request_ids: u64,
    pub traced: bool,
    /// Status messages delivered that advertise a version: (receiver, sender, version) → count.
    announced: BTreeMap<(usize, usize, Version), u32>,
}

impl std::fmt::Debug for MemCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemCluster")
            .field("now", &self.now)
            .field("members", &self.members)
            .finish_non_exhaustive()
    }
}

pub fn name(i: usize) -> String {
    format!("m{i}")
}

impl MemCluster {
    pub fn new(n: usize, seed: u64) -> MemCluster {
        MemCluster::with_joiners(n, 0, seed)
    }

    /// `n` founding members plus `joiners` nodes that are not in the genesis roster. A joiner
    /// is provisioned as an operator would: with the genesis configuration (header only, no entry
    /// of its own) as its trust anchor, waiting to be added by a change.
    pub fn with_joiners(n: usize, joiners: usize, seed: u64) -> MemCluster {
        let mut rng = seeded(seed);
        let operator = NodeKeys::generate(&mut rng);
        let keys: Vec<NodeKeys> = (0..n + joiners).map(|_| NodeKeys::generate(&mut rng)).collect();
        let infos = keys[..n].iter().enumerate().map(|(i, k)| MemberInfo {
            name: name(i),
            identity: k.public(),
            address: name(i),
        });
        let config = genesis_config("test-cluster", "ops", &operator, infos, BTreeMap::new());
        let records = genesis_records(&config, &operator, &mut rng).expect("genesis seals");
        let founder = records.values().next().expect("at least one founder").clone();
        let storage: Vec<MemberRecord> = keys
            .iter()
            .map(|k| {
                records.get(&k.node_id()).cloned().unwrap_or_else(|| {
                    let mut joiner = founder.clone();
                    joiner.active.block.entries.clear();
                    joiner
                })
            })
            .collect();
        let mut cluster = MemCluster {
            keys,
            operator,
            members: Vec::new(),
            storage,
            now: Instant::ZERO,
            trace: Trace::new(),
            events: Vec::new(),
            cut: BTreeSet::new(),
            queue: VecDeque::new(),
            drop_rule: None,
            settings: MemberSettings::default(),
            rng,
            request_ids: 0,
            traced: true,
            announced: BTreeMap::new(),
        };
        for i in 0..n + joiners {
            let member = cluster.boot(i);
            cluster.members.push(Some(member));
        }
        cluster.pump();
        cluster
    }

    fn boot(&mut self, i: usize) -> Member {
        let rng = fork(&mut self.rng);
        Member::new(self.now, self.keys[i].clone(), self.storage[i].clone(), self.settings, rng)
    }

    /// Member `i`'s roster entry, for an add-member change.
    pub fn info(&self, i: usize) -> MemberInfo {
        MemberInfo { name: name(i), identity: self.keys[i].public(), address: name(i) }
    }

    pub fn with_drop_rule(&mut self, rule: DropRule) {
        self.drop_rule = Some(rule);
    }

    pub fn clear_drop_rule(&mut self) {
        self.drop_rule = None;
    }

    pub fn index_of(&self, id: &cohort_core::NodeId) -> Option<usize> {
        self.keys.iter().position(|k| k.node_id() == *id)
    }

    /// Cuts member `i` off from everyone, both ways.
    pub fn isolate(&mut self, i: usize) {
        for j in 0..self.keys.len() {
            if i != j {
                self.cut.insert((i, j));
                self.cut.insert((j, i));
            }
        }
        self.trace.note(self.now, &name(i), "partitioned from everyone");
    }

    pub fn heal(&mut self) {
        self.cut.clear();
        self.trace.note(self.now, "net", "partition healed");
    }

    pub fn crash(&mut self, i: usize) {
        self.members[i] = None;
        self.queue.retain(|(_, _, to, _)| *to != i);
        self.trace.note(self.now, &name(i), "crashed");
    }

    pub fn restart(&mut self, i: usize) {
        self.trace.note(self.now, &name(i), "restarted from storage");
        let member = self.boot(i);
        self.members[i] = Some(member);
        self.pump();
    }

    /// A change request signed by this cluster's operator, based on member `at`'s active version.
    pub fn signed_change(&self, at: usize, changes: Vec<Change>) -> Signed<ChangeRequest> {
        let base = self.member(at).active_version();
        let request = ChangeRequest {
            cluster_id: "test-cluster".into(),
            base,
            changes,
            operator: self.operator.public().signing,
        };
        Signed::sign(request, &self.operator).expect("signs")
    }

    pub fn change(&mut self, at: usize, changes: Vec<Change>) {
        let request = self.signed_change(at, changes);
        self.feed(at, MemberInput::Change { request_id: self.request_ids, request });
        self.request_ids += 1;
        self.pump();
    }

    pub fn member(&self, i: usize) -> &Member {
        self.members[i].as_ref().expect("member is running")
    }

    pub fn feed(&mut self, i: usize, input: MemberInput) {
        if self.traced {
            self.trace.input(self.now, &name(i), &input);
        }
        let now = self.now;
        if let Some(member) = self.members[i].as_mut() {
            member.handle(Now::ZERO.with_mono(now), input);
        }
    }

    /// Delivers raw bytes to member `i`, as if from the network.
    pub fn inject(&mut self, i: usize, bytes: Vec<u8>) {
        self.feed(i, MemberInput::Received(bytes));
        self.pump();
    }

    /// Drains every member's outputs until none remain.
    pub fn pump(&mut self) {
        loop {
            let mut any = false;
            for i in 0..self.members.len() {
                while let Some(out) = self.members[i].as_mut().and_then(|m| m.poll_output()) {
                    any = true;
                    self.route(i, out);
                }
            }
            if !any {
                return;
            }
        }
    }

    fn route(&mut self, i: usize, out: MemberOutput) {
        if self.traced {
            self.trace.output(self.now, &name(i), &out);
        }
        match &out {
            MemberOutput::Send { to, message, .. } => {
                let Some(j) = self.index_of(to) else { return };
                let dropped = self.cut.contains(&(i, j))
                    || self.drop_rule.as_mut().is_some_and(|rule| rule(i, j, message));
                if !dropped {
                    let bytes = message.to_wire().expect("member messages encode");
                    self.queue.push_back((self.now + LATENCY, i, j, bytes));
                }
            }
            MemberOutput::Persist { token, record } => {
                self.storage[i] = (**record).clone();
                self.feed(i, MemberInput::Persisted(*token));
            }
            MemberOutput::Staged { version } => {
                self.events.push(Event::Staged { member: i, version: *version, at: self.now })
            }
            MemberOutput::Installed { version, config_hash } => {
                self.check_install(i, *version);
                self.events.push(Event::Installed {
                    member: i,
                    version: *version,
                    config_hash: *config_hash,
                    at: self.now,
                })
            }
            MemberOutput::Dropped { reason } => {
                self.events.push(Event::Dropped { member: i, kind: reason.kind() })
            }
            _ => {}
        }
        self.events.push(Event::Output { member: i, output: out });
    }

    /// Invariant: member `i` installs `version` only after every other member of its roster has
    /// had at least two Status messages advertising it delivered to `i`. Panics otherwise.
    fn check_install(&self, i: usize, version: Version) {
        let roster = &self.member(i).active().config.members;
        for id in roster.keys() {
            let Some(j) = self.index_of(id) else { continue };
            if j == i {
                continue;
            }
            let heard = self.announced.get(&(i, j, version)).copied().unwrap_or(0);
            assert!(
                heard >= 2,
                "invariant: {} installed {version} having heard it from {} only {heard} times",
                name(i),
                name(j)
            );
        }
    }

    /// Runs until simulated time `until`, delivering messages and firing timeouts in time order.
    pub fn run_for(&mut self, span: Duration) {
        let until = self.now + span;
        loop {
            let next_message = self.queue.iter().map(|(t, ..)| *t).min();
            let next_timer = self.members.iter().flatten().filter_map(|m| m.poll_timeout()).min();
            let Some(next) = [next_message, next_timer].into_iter().flatten().min() else { break };
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            if next_message == Some(next) {
                let at = self.queue.iter().position(|(t, ..)| *t == next).expect("present");
                let (_, from, to, bytes) = self.queue.remove(at).expect("present");
                if self.members[to].is_some()
                    && let Ok(MemberMessage::Status(status)) = MemberMessage::from_wire(&bytes)
                {
                    for version in [Some(status.body.active), status.body.staged].into_iter().flatten() {
                        *self.announced.entry((to, from, version)).or_default() += 1;
                    }
                }
                self.feed(to, MemberInput::Received(bytes));
            } else {
                for i in 0..self.members.len() {
                    if self.members[i].as_ref().and_then(|m| m.poll_timeout()).is_some_and(|t| t <= next) {
                        self.feed(i, MemberInput::Timeout);
                    }
                }
            }
            self.pump();
        }
        self.now = until;
    }

    /// Members (running) whose active version is `version`.
    pub fn installed_everywhere(&self, version: Version) -> bool {
        self.members.iter().flatten().all(|m| m.active_version() == version)
    }

    /// Every message member `from` sent, with the index of its addressee, in order.
    pub fn sent_by(&self, from: usize) -> Vec<(usize, &MemberMessage)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Output { member, output: MemberOutput::Send { to, message, .. } }
                    if *member == from =>
                {
                    Some((self.index_of(to)?, &**message))
                }
                _ => None,
            })
            .collect()
    }

    pub fn drops_of(&self, i: usize, kind: &str) -> u64 {
        self.member(i).drops().get(kind).copied().unwrap_or(0)
    }
}
