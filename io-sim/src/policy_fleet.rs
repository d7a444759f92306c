//! A simulated security-policy fleet: a master, L local servers (the last one nested behind the
//! first when there are two or more), and A agents spread over the locals, on a discrete-event
//! network with latency, partitions and servers that go down. Owns routing, fault injection and
//! the measurements: bytes reaching the master per sync cycle, the same for the baseline where
//! every agent talks to the master directly (from the very messages of this run), and the time a
//! policy change takes to reach every agent. Protocol rules are core's.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use cohort_core::policy::agent::{AgentInput, AgentOutput, PolicyAgent};
use cohort_core::policy::document::{Platform, Policy, PolicyTarget, Scope};
use cohort_core::policy::server::{
    GlobalStatus, PolicyMessage, PolicyServer, ServerInput, ServerOutput, ServerSetup,
};
use cohort_core::policy::wire::{PolicyAdmin, PolicyAdminReply, PolicyAdminRequest};
use cohort_core::rng::{SeededRng, fork, seeded};
use cohort_core::signed::Signed;
use cohort_core::{Instant, Machine, NodeKeys, Now, PublicIdentity, WallClock, wire};
use serde::Serialize;

pub const MASTER: &str = "master";
const LATENCY: Duration = Duration::from_millis(20);
const START_WALL: u64 = 1_900_000_000_000;

#[derive(Debug, Clone)]
pub struct FleetScenario {
    pub locals: usize,
    pub agents: usize,
    pub seed: u64,
    pub sync_window: Duration,
    pub sync_jitter: Duration,
    pub poll_interval: Duration,
    pub stats_deadline: Duration,
}

impl FleetScenario {
    pub fn new(locals: usize, agents: usize, seed: u64) -> FleetScenario {
        FleetScenario {
            locals: locals.max(1),
            agents,
            seed,
            sync_window: Duration::from_secs(60),
            sync_jitter: Duration::from_secs(10),
            poll_interval: Duration::from_secs(30),
            stats_deadline: Duration::from_secs(5),
        }
    }
}

pub fn local_name(i: usize) -> String {
    format!("local-{i:02}")
}

pub fn agent_name(i: usize) -> String {
    format!("agent-{i:04}")
}

fn platforms() -> [Platform; 3] {
    [
        Platform::new("linux", "6", "web"),
        Platform::new("linux", "6", "db"),
        Platform::new("windows", "11", "desk"),
    ]
}

/// A message on its way: when it lands, from whom, to whom, and its encoded size.
type InFlight = (String, String, PolicyMessage, usize);

pub struct Fleet {
    pub scenario: FleetScenario,
    pub master: PolicyServer,
    pub locals: Vec<PolicyServer>,
    pub agents: Vec<PolicyAgent>,
    /// Which local serves each agent.
    pub agent_local: Vec<usize>,
    /// Parent of each local (`None` = the master).
    pub local_parent: Vec<Option<usize>>,
    pub now: Instant,
    pub wall: WallClock,
    queue: BTreeMap<(Instant, u64), InFlight>,
    seq: u64,
    pub down: BTreeSet<String>,
    /// Undirected cut links.
    pub cut: BTreeSet<(String, String)>,
    /// (arrival time, bytes) of every message the master received.
    pub master_bytes: Vec<(Instant, usize)>,
    /// (time, bytes) of every agent poll: what would reach a master that agents polled directly.
    pub baseline_bytes: Vec<(Instant, usize)>,
    pub statuses: Vec<(u64, Instant, GlobalStatus)>,
    /// Every admin answer, by request: (server, request, reply).
    pub admin_replies: Vec<(String, u64, PolicyAdminReply)>,
    pub rejections: Vec<(String, String)>,
    /// Keys, for tests that forge or sign messages.
    pub master_keys: NodeKeys,
    pub local_keys: Vec<NodeKeys>,
    /// The operator every server of the fleet lists.
    pub operator: NodeKeys,
    next_request: u64,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("locals", &self.locals.len())
            .field("agents", &self.agents.len())
            .finish()
    }
}

impl Fleet {
    pub fn new(scenario: FleetScenario) -> Fleet {
        let mut rng = seeded(scenario.seed);
        let now = Instant::from_nanos(1_000_000_000);
        let master_keys = NodeKeys::generate(&mut rng);
        let local_keys: Vec<NodeKeys> = (0..scenario.locals).map(|_| NodeKeys::generate(&mut rng)).collect();
        let agent_keys: Vec<NodeKeys> = (0..scenario.agents).map(|_| NodeKeys::generate(&mut rng)).collect();
        let operator = NodeKeys::generate(&mut rng);
        // The last local sits behind the first, when there are two or more.
        let local_parent: Vec<Option<usize>> = (0..scenario.locals)
            .map(|i| (scenario.locals >= 2 && i == scenario.locals - 1).then_some(0))
            .collect();
        let agent_local: Vec<usize> = (0..scenario.agents).map(|i| i % scenario.locals).collect();
        let mut signers: BTreeMap<String, PublicIdentity> =
            local_keys.iter().enumerate().map(|(i, k)| (local_name(i), k.public())).collect();
        signers.insert(MASTER.into(), master_keys.public());
        let setup =
            |name: String, keys: NodeKeys, parent: Option<(String, PublicIdentity)>, children, agents| {
                ServerSetup {
                    name,
                    keys,
                    parent,
                    children,
                    agents,
                    signers: signers.clone(),
                    operators: vec![operator.public()],
                    sync_window: scenario.sync_window,
                    sync_jitter: scenario.sync_jitter,
                    stats_deadline: scenario.stats_deadline,
                }
            };
        let children_of = |parent: Option<usize>| -> BTreeMap<String, PublicIdentity> {
            (0..scenario.locals)
                .filter(|i| local_parent[*i] == parent)
                .map(|i| (local_name(i), local_keys[i].public()))
                .collect()
        };
        let master = PolicyServer::new(
            now,
            setup(MASTER.into(), master_keys.clone(), None, children_of(None), BTreeMap::new()),
            fork(&mut rng),
        );
        let locals = (0..scenario.locals)
            .map(|i| {
                let parent = match local_parent[i] {
                    None => (MASTER.to_owned(), master_keys.public()),
                    Some(p) => (local_name(p), local_keys[p].public()),
                };
                let agents = (0..scenario.agents)
                    .filter(|a| agent_local[*a] == i)
                    .map(|a| (agent_name(a), agent_keys[a].public()))
                    .collect();
                PolicyServer::new(
                    now,
                    setup(local_name(i), local_keys[i].clone(), Some(parent), children_of(Some(i)), agents),
                    fork(&mut rng),
                )
            })
            .collect();
        let plats = platforms();
        let wall = WallClock(START_WALL);
        let agents = (0..scenario.agents)
            .map(|a| {
                PolicyAgent::new(
                    now,
                    agent_name(a),
                    agent_keys[a].clone(),
                    plats[a % plats.len()].clone(),
                    local_name(agent_local[a]),
                    scenario.poll_interval,
                    Duration::from_secs(5),
                    fork(&mut rng),
                )
            })
            .collect();
        Fleet {
            scenario,
            master,
            locals,
            agents,
            agent_local,
            local_parent,
            now,
            wall,
            queue: BTreeMap::new(),
            seq: 0,
            down: BTreeSet::new(),
            cut: BTreeSet::new(),
            master_bytes: Vec::new(),
            baseline_bytes: Vec::new(),
            statuses: Vec::new(),
            admin_replies: Vec::new(),
            rejections: Vec::new(),
            master_keys,
            local_keys,
            operator,
            next_request: 1,
        }
    }

    /// An operator's request to `server`, signed now; returns the request id its answer
    /// carries in [`Fleet::admin_replies`] (and, for a status, in [`Fleet::statuses`]).
    pub fn admin(&mut self, server: &str, request: PolicyAdmin) -> u64 {
        let id = self.next_request;
        self.next_request += 1;
        let body = PolicyAdminRequest { at: self.wall, request };
        if let Ok(signed) = Signed::sign(body, &self.operator) {
            self.feed_server(server, ServerInput::Admin { request: id, signed });
        }
        id
    }

    /// An operator creates `policy` at `server`.
    pub fn create(&mut self, server: &str, policy: Policy) -> u64 {
        self.admin(server, PolicyAdmin::Create(policy))
    }

    /// The identity a node of the fleet authenticates as, by name.
    pub fn identity_of(&self, name: &str) -> Option<PublicIdentity> {
        if name == MASTER {
            return Some(self.master_keys.public());
        }
        if let Some(i) = name.strip_prefix("local-").and_then(|n| n.parse::<usize>().ok()) {
            return self.local_keys.get(i).map(NodeKeys::public);
        }
        let agent = name.strip_prefix("agent-").and_then(|n| n.parse::<usize>().ok())?;
        self.agents.get(agent).map(|a| a.keys().public())
    }

    fn is_cut(&self, a: &str, b: &str) -> bool {
        self.cut.contains(&(a.to_owned(), b.to_owned())) || self.cut.contains(&(b.to_owned(), a.to_owned()))
    }

    /// Cuts the link between a local and its parent.
    pub fn partition_local(&mut self, i: usize) {
        let parent = self.local_parent[i].map_or(MASTER.to_owned(), local_name);
        self.cut.insert((local_name(i), parent));
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    pub fn send(&mut self, from: &str, to: &str, message: PolicyMessage) {
        let size = wire::encode(&message).map_or(0, |b| b.len());
        // Were agents to talk to the master directly, each poll would reach it.
        if from.starts_with("agent-") {
            self.baseline_bytes.push((self.now, size));
        }
        if self.down.contains(from) || self.down.contains(to) || self.is_cut(from, to) {
            return;
        }
        self.seq += 1;
        self.queue.insert((self.now + LATENCY, self.seq), (from.to_owned(), to.to_owned(), message, size));
    }

    fn server_mut(&mut self, name: &str) -> Option<&mut PolicyServer> {
        if name == MASTER {
            return Some(&mut self.master);
        }
        self.locals.iter_mut().find(|l| l.name() == name)
    }

    /// Feeds a server an input, then routes what it says.
    pub fn feed_server(&mut self, name: &str, input: ServerInput) {
        let now = Now::new(self.now, self.wall);
        if self.down.contains(name) {
            return;
        }
        let Some(server) = self.server_mut(name) else { return };
        server.handle(now, input);
        self.drain_server(name);
    }

    fn drain_server(&mut self, name: &str) {
        loop {
            let Some(out) = self.server_mut(name).and_then(|s| s.poll_output()) else { return };
            match out {
                ServerOutput::Send { name: to, message, .. } => self.send(name, &to, message),
                ServerOutput::AdminReply { request, reply } => {
                    if let PolicyAdminReply::Status(status) = &reply {
                        self.statuses.push((request, self.now, status.clone()));
                    }
                    self.admin_replies.push((name.to_owned(), request, reply));
                }
                ServerOutput::Rejected(rejection) => {
                    self.rejections.push((name.to_owned(), rejection.to_string()))
                }
                ServerOutput::Stored(_) | ServerOutput::History { .. } => {}
            }
        }
    }

    fn feed_agent(&mut self, index: usize, input: AgentInput) {
        let now = Now::new(self.now, self.wall);
        self.agents[index].handle(now, input);
        while let Some(out) = self.agents[index].poll_output() {
            match out {
                AgentOutput::Send { to, message } => {
                    let from = agent_name(index);
                    self.send(&from, &to, message);
                }
                // A simulated machine writes every policy it is given.
                AgentOutput::Apply(policy) => {
                    let applied = AgentInput::Applied { digest: policy.digest, outcome: Ok(()) };
                    self.agents[index].handle(now, applied);
                }
            }
        }
    }

    fn deliver(&mut self, from: &str, to: String, message: PolicyMessage, size: usize) {
        if to == MASTER {
            self.master_bytes.push((self.now, size));
        }
        if let Some(index) = to.strip_prefix("agent-").and_then(|n| n.parse::<usize>().ok()) {
            if index < self.agents.len() {
                self.feed_agent(index, AgentInput::FromServer(Box::new(message)));
            }
            return;
        }
        // The channel would have authenticated the sender as who it is.
        let Some(from) = self.identity_of(from) else { return };
        self.feed_server(&to, ServerInput::Received { from, message, size });
    }

    /// Runs the fleet for `span` of simulated time.
    pub fn run_for(&mut self, span: Duration) {
        let until = self.now + span;
        loop {
            let next_message = self.queue.keys().next().map(|(t, _)| *t);
            let servers = std::iter::once(&self.master)
                .chain(self.locals.iter())
                .filter(|s| !self.down.contains(s.name()))
                .filter_map(PolicyServer::poll_timeout);
            let agents = self.agents.iter().filter_map(|a| a.poll_timeout());
            let next_timer = servers.chain(agents).min();
            let Some(next) = [next_message, next_timer].into_iter().flatten().min() else { break };
            if next > until {
                break;
            }
            self.wall = WallClock(self.wall.0 + (next - self.now).as_millis() as u64);
            self.now = self.now.max(next);
            if next_message == Some(next) {
                let Some((_, (from, to, message, size))) = self.queue.pop_first() else { continue };
                if !self.down.contains(&to) {
                    self.deliver(&from, to, message, size);
                }
                continue;
            }
            let names: Vec<String> =
                std::iter::once(MASTER.to_owned()).chain((0..self.locals.len()).map(local_name)).collect();
            for name in names {
                let due = self.server_mut(&name).and_then(|s| s.poll_timeout()).is_some_and(|t| t <= next);
                if due {
                    self.feed_server(&name, ServerInput::Timeout);
                }
            }
            for a in 0..self.agents.len() {
                if self.agents[a].poll_timeout().is_some_and(|t| t <= next) {
                    self.feed_agent(a, AgentInput::Timeout);
                }
            }
        }
        self.wall = WallClock(self.wall.0 + (until - self.now).as_millis() as u64);
        self.now = until;
    }

    /// Agents whose applied policy has `key` = `value`.
    pub fn agents_with(&self, key: &str, value: &str) -> usize {
        self.agents
            .iter()
            .filter(|a| a.applied().is_some_and(|p| p.params.get(key).is_some_and(|v| v == value)))
            .count()
    }

    /// Runs until every agent has `key` = `value` (or `limit` passes); returns the time taken.
    pub fn time_until_all(&mut self, key: &str, value: &str, limit: Duration) -> Option<Duration> {
        let start = self.now;
        let step = Duration::from_millis(500);
        while self.now - start < limit {
            if self.agents_with(key, value) == self.agents.len() {
                return Some(self.now - start);
            }
            self.run_for(step);
        }
        (self.agents_with(key, value) == self.agents.len()).then(|| self.now - start)
    }

    pub fn policy(id: &str, key: &str, value: &str, scope: Scope) -> Policy {
        Policy {
            id: id.into(),
            version: 1,
            author: String::new(),
            scope,
            target: PolicyTarget::default(),
            params: [(key.to_owned(), value.to_owned())].into(),
        }
    }

    pub fn rng(&self) -> SeededRng {
        seeded(self.scenario.seed ^ 0xfeed)
    }
}

/// What `cohort sim policy` reports.
#[derive(Debug, Clone, Serialize)]
pub struct FleetReport {
    pub seed: u64,
    pub locals: usize,
    pub agents: usize,
    pub sync_window_s: u64,
    pub poll_interval_s: u64,
    pub cycles_measured: u64,
    pub master_bytes_per_cycle: f64,
    pub direct_baseline_bytes_per_cycle: f64,
    pub reduction: f64,
    pub policy_change_to_every_agent_ms: Option<u64>,
    pub agents_applied: usize,
}

/// Warms the fleet up, measures bytes at the master against the direct baseline over several
/// sync cycles, then times a policy change made at the master until every agent has applied it.
pub fn run_fleet(scenario: FleetScenario) -> FleetReport {
    let mut fleet = Fleet::new(scenario.clone());
    let base = Fleet::policy("baseline", "antimalware.enabled", "true", Scope::Global);
    fleet.create(MASTER, base);
    // Warm up: every local has synced and every agent has polled at least once.
    let warmup = scenario.sync_window * 2 + scenario.sync_jitter;
    fleet.run_for(warmup);
    let cycles = 4u64;
    let start = fleet.now;
    fleet.run_for(scenario.sync_window * cycles as u32);
    let in_window =
        |v: &[(Instant, usize)]| v.iter().filter(|(t, _)| *t >= start).map(|(_, b)| *b as f64).sum::<f64>();
    let master = in_window(&fleet.master_bytes) / cycles as f64;
    let baseline = in_window(&fleet.baseline_bytes) / cycles as f64;
    let change = Fleet::policy("scan", "scan.interval_hours", "6", Scope::Global);
    fleet.create(MASTER, change);
    let limit = scenario.sync_window * 6;
    let reached = fleet.time_until_all("scan.interval_hours", "6", limit);
    FleetReport {
        seed: scenario.seed,
        locals: scenario.locals,
        agents: scenario.agents,
        sync_window_s: scenario.sync_window.as_secs(),
        poll_interval_s: scenario.poll_interval.as_secs(),
        cycles_measured: cycles,
        master_bytes_per_cycle: master,
        direct_baseline_bytes_per_cycle: baseline,
        reduction: if master > 0.0 { baseline / master } else { 0.0 },
        policy_change_to_every_agent_ms: reached.map(|d| d.as_millis() as u64),
        agents_applied: fleet.agents_with("scan.interval_hours", "6"),
    }
}
