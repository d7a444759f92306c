//! The security-policy fleet on the one turmoil host driver: a master, L locals (the last one
//! nested behind the first when there are two or more) and A agents spread over the locals, every
//! one the core `Node` that a real process runs. Each server is a host of its own; the agents of
//! one local share a host, so cutting a local off cuts only its branch. Owns the topology, the
//! faults (partitions, a local down and back), the operators' and attackers' channels, and the
//! measurements; every run replays from its seed. It never holds a protocol rule: what is
//! refused, stored, synced or applied is decided by the roles in core and only read back here.

mod clients;
mod hosts;
mod report;
#[cfg(test)]
mod tests;
mod views;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cohort_core::policy::document::{Policy, PolicyTarget, Scope};
use cohort_core::policy::wire::{PolicyAdmin, PolicyAdminRequest, PolicyWire};
use cohort_core::rng::{fork, seeded};
use cohort_core::signed::Signed;
use cohort_core::trace::Trace;
use cohort_core::{NodeKeys, PublicIdentity, WallClock};
use rand_core::RngCore;

pub use clients::{Exchange, no_channel};
pub use report::{FleetReport, run_fleet};
pub use views::ServerView;

use crate::clock::EPOCH_UNIX_MS;
use crate::node_host::{
    self, NodeHostContext, SharedFileLog, SharedFiles, SharedRecords, SharedTrace, SharedTraffic,
};
use crate::storage::SimDisk;
use clients::{Ask, Exchanges};
use hosts::{PORT, Tier};
use views::SharedView;

pub const MASTER: &str = "master";
/// The most a message takes on any link.
const MAX_LATENCY: Duration = Duration::from_millis(20);
/// One simulation step; see [`crate::clock::simulation_ticked`].
const TICK: Duration = Duration::from_millis(10);
/// How often [`Fleet::time_until_all`] looks at the agents' files.
const LOOK_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct FleetScenario {
    pub locals: usize,
    pub agents: usize,
    pub seed: u64,
    pub sync_window: Duration,
    pub sync_jitter: Duration,
    pub poll_interval: Duration,
    pub stats_deadline: Duration,
    /// Keep a trace of every server's inputs and outputs (refusals with their details); off for
    /// large runs, where it would cost more than the run.
    pub trace_servers: bool,
    /// Keep every applied digest agents report and every file the agents' hosts write, for
    /// checking that no agent reports a policy it did not apply; off for large runs.
    pub watch_reports: bool,
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
            trace_servers: false,
            watch_reports: false,
        }
    }
}

pub fn local_name(i: usize) -> String {
    format!("local-{i:02}")
}

pub fn agent_name(i: usize) -> String {
    format!("agent-{i:04}")
}

/// The host that runs the agents of local `i`.
pub fn agents_host(i: usize) -> String {
    format!("agents-{i:02}")
}

/// A running fleet. See the module docs.
pub struct Fleet {
    pub scenario: FleetScenario,
    sim: turmoil::Sim<'static>,
    tier: Tier,
    files: SharedFiles,
    file_log: Option<SharedFileLog>,
    records: SharedRecords,
    views: BTreeMap<String, SharedView>,
    /// Stream bytes the master moved, and those the agents' hosts moved.
    master_traffic: SharedTraffic,
    agent_traffic: SharedTraffic,
    trace: Option<SharedTrace>,
    exchanges: Exchanges,
    next_exchange: u64,
    /// Links cut, as (host, host).
    cut: BTreeSet<(String, String)>,
    /// Every agent's file, as (host, path), in agent order.
    agent_files: Vec<(String, String)>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("scenario", &self.scenario)
            .field("elapsed", &self.sim.elapsed())
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// Builds the fleet and runs it for a second, so every host is up and listening.
    pub fn new(scenario: FleetScenario) -> Fleet {
        let mut rng = seeded(scenario.seed);
        let tier = Tier::new(&scenario, &mut rng);
        // Nothing waits on the simulation's own limit: a fleet runs as long as it is asked to.
        let year = Duration::from_secs(365 * 86_400);
        let sim = crate::clock::simulation_ticked(scenario.seed, year, MAX_LATENCY, TICK);
        let agent_files =
            (0..scenario.agents).map(|a| (agents_host(tier.agent_local[a]), hosts::policy_file(a))).collect();
        let mut fleet = Fleet {
            sim,
            tier,
            files: SharedFiles::default(),
            file_log: scenario.watch_reports.then(SharedFileLog::default),
            records: SharedRecords::default(),
            views: BTreeMap::new(),
            master_traffic: SharedTraffic::default(),
            agent_traffic: SharedTraffic::default(),
            trace: scenario.trace_servers.then(|| Arc::new(Mutex::new(Trace::new()))),
            exchanges: Exchanges::default(),
            next_exchange: 1,
            cut: BTreeSet::new(),
            agent_files,
            scenario,
        };
        let servers = std::iter::once(None).chain((0..fleet.scenario.locals).map(Some));
        for local in servers {
            fleet.add_server(local, fork(&mut rng).next_u64());
        }
        for local in 0..fleet.scenario.locals {
            fleet.add_agents(local, &mut rng);
        }
        fleet.run_for(Duration::from_secs(1));
        fleet
    }

    fn add_server(&mut self, local: Option<usize>, seed: u64) {
        let role = self.tier.server_role(&self.scenario, local);
        let name = role.setup.name.clone();
        let keys = role.setup.keys.clone();
        let view = SharedView::default();
        self.views.insert(name.clone(), view.clone());
        let setup = hosts::server_setup(name.clone(), keys.clone(), role, self.records.clone());
        let ctx = NodeHostContext {
            files: self.files.clone(),
            records: self.records.clone(),
            probe: Some(views::server_probe(view, self.scenario.watch_reports)),
            traffic: local.is_none().then(|| self.master_traffic.clone()),
            trace: self.trace.clone(),
            ..NodeHostContext::new(&name, keys, setup, SimDisk::default(), seed)
        };
        self.sim.host(name, move || node_host::run(ctx.clone()));
    }

    fn add_agents(&mut self, local: usize, rng: &mut cohort_core::rng::SeededRng) {
        let agents = self.tier.agent_roles(&self.scenario, local);
        if agents.is_empty() {
            return;
        }
        // The host's own key; each agent presents its own on its link.
        let keys = NodeKeys::generate(rng);
        let host = agents_host(local);
        let ctx = NodeHostContext {
            files: self.files.clone(),
            file_log: self.file_log.clone(),
            traffic: Some(self.agent_traffic.clone()),
            ..NodeHostContext::new(
                &host,
                keys.clone(),
                hosts::agents_setup(keys, agents),
                SimDisk::default(),
                fork(rng).next_u64(),
            )
        };
        self.sim.host(host, move || node_host::run(ctx.clone()));
    }

    /// Simulated time since the fleet was built.
    pub fn elapsed(&self) -> Duration {
        self.sim.elapsed()
    }

    /// The calendar time the fleet's machines read now.
    pub fn wall(&self) -> WallClock {
        WallClock(EPOCH_UNIX_MS.saturating_add(u64::try_from(self.elapsed().as_millis()).unwrap_or(u64::MAX)))
    }

    fn step(&mut self) {
        if let Err(e) = self.sim.step() {
            panic!("the policy fleet (seed {}) failed at {:?}: {e}", self.scenario.seed, self.sim.elapsed());
        }
    }

    /// Runs the fleet for `span` of simulated time.
    pub fn run_for(&mut self, span: Duration) {
        let until = self.elapsed() + span;
        while self.elapsed() < until {
            self.step();
        }
    }

    /// Which local serves each agent.
    pub fn agent_local(&self) -> &[usize] {
        &self.tier.agent_local
    }

    /// Parent of each local (`None` = the master).
    pub fn local_parent(&self) -> &[Option<usize>] {
        &self.tier.local_parent
    }

    /// The keys of a server or agent of the fleet, by name: what an attacker who stole them holds.
    pub fn keys_of(&self, name: &str) -> Option<&NodeKeys> {
        self.tier.keys_of(name)
    }

    /// The operator every server of the fleet lists.
    pub fn operator(&self) -> &NodeKeys {
        &self.tier.operator
    }

    /// What a server's probe last saw of it (while it is down, what it held when it went).
    pub fn server(&self, name: &str) -> ServerView {
        self.views.get(name).map(views::read).unwrap_or_default()
    }

    /// Every record the servers persisted, by host.
    pub fn records(&self) -> SharedRecords {
        self.records.clone()
    }

    /// The refusals `server` logged, with their details (empty unless the scenario traces the
    /// servers).
    pub fn refusals(&self, server: &str) -> Vec<String> {
        let Some(trace) = &self.trace else { return Vec::new() };
        let trace = trace.lock().unwrap_or_else(PoisonError::into_inner);
        trace
            .lines()
            .iter()
            .filter(|l| l.split_whitespace().nth(1) == Some(server) && l.contains("policy input refused"))
            .cloned()
            .collect()
    }

    /// The servers' trace so far, if the scenario keeps one.
    pub fn trace(&self) -> Option<Trace> {
        self.trace.as_ref().map(|t| t.lock().unwrap_or_else(PoisonError::into_inner).clone())
    }

    /// Cuts the link between local `i` and its parent.
    pub fn partition_local(&mut self, i: usize) {
        let pair = (local_name(i), self.tier.parent_name(i));
        self.sim.partition(pair.0.as_str(), pair.1.as_str());
        self.cut.insert(pair);
    }

    /// Mends every cut link.
    pub fn heal(&mut self) {
        for (a, b) in std::mem::take(&mut self.cut) {
            self.sim.repair(a.as_str(), b.as_str());
        }
    }

    /// Local `i` crashes: its host runs nothing until [`Fleet::bring_up`].
    pub fn take_down(&mut self, i: usize) {
        self.sim.crash(local_name(i));
    }

    /// Local `i` boots again, from what it had persisted.
    pub fn bring_up(&mut self, i: usize) {
        self.sim.bounce(local_name(i));
    }

    /// Sends `message` to `server` on a channel that presents `keys`, the server's identity
    /// pinned, and runs the fleet until the first answer, a refusal, or `patience` runs out.
    pub fn send_as(
        &mut self,
        server: &str,
        keys: &NodeKeys,
        message: PolicyWire,
        patience: Duration,
    ) -> Exchange {
        let id = self.next_exchange;
        self.next_exchange += 1;
        let server_identity: PublicIdentity = match self.tier.keys_of(server) {
            Some(k) => k.public(),
            None => panic!("no server named {server}"),
        };
        let ask = Ask {
            id,
            addr: format!("{server}:{PORT}"),
            server: server_identity,
            keys: keys.clone(),
            message,
            patience,
            seed: self.scenario.seed,
        };
        let exchanges = self.exchanges.clone();
        let task = clients::run(ask, exchanges);
        self.sim.client(format!("client-{id}"), task);
        loop {
            if let Some(done) = self.exchanges.lock().unwrap_or_else(PoisonError::into_inner).remove(&id) {
                return done;
            }
            self.step();
        }
    }

    /// `request`, signed by `signer` at wall time `at`.
    pub fn signed_admin(
        signer: &NodeKeys,
        at: WallClock,
        request: PolicyAdmin,
    ) -> Signed<PolicyAdminRequest> {
        match Signed::sign(PolicyAdminRequest { at, request }, signer) {
            Ok(signed) => signed,
            Err(e) => panic!("an admin request could not be signed: {e}"),
        }
    }

    /// The operator's request to `server`, signed now, on the operator's own channel.
    pub fn admin(&mut self, server: &str, request: PolicyAdmin) -> Exchange {
        let signed = Fleet::signed_admin(&self.tier.operator, self.wall(), request);
        let operator = self.tier.operator.clone();
        let patience = self.scenario.stats_deadline + Duration::from_secs(5);
        self.send_as(server, &operator, PolicyWire::Admin(signed), patience)
    }

    /// An operator creates `policy` at `server`.
    pub fn create(&mut self, server: &str, policy: Policy) -> Exchange {
        self.admin(server, PolicyAdmin::Create(policy))
    }

    /// The master's global status: `current` asks every tier now; otherwise what the master
    /// stored at each sync (`since` a wall time, if given).
    pub fn status(&mut self, current: bool, since: Option<WallClock>) -> Exchange {
        self.admin(MASTER, PolicyAdmin::Status { current, since })
    }

    /// Agents whose written policy file sets `key` to `value`.
    pub fn agents_with(&self, key: &str, value: &str) -> usize {
        views::count_setting(&self.files, &self.agent_files, key, value)
    }

    /// Whether agent `a`'s written policy file sets `key` to `value`.
    pub fn agent_has(&self, a: usize, key: &str, value: &str) -> bool {
        self.agent_files
            .get(a)
            .is_some_and(|f| views::count_setting(&self.files, std::slice::from_ref(f), key, value) == 1)
    }

    /// Agents whose written policy file sets `key` to any value.
    pub fn agents_setting(&self, key: &str) -> usize {
        views::count_key(&self.files, &self.agent_files, key)
    }

    /// With reports watched: for each agent, the digests its host wrote in its policy file
    /// (each file's `digest`), in any order.
    pub fn written_digests(&self) -> BTreeMap<String, BTreeSet<[u8; 32]>> {
        let Some(log) = &self.file_log else { return BTreeMap::new() };
        let log = log.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: BTreeMap<String, BTreeSet<[u8; 32]>> = BTreeMap::new();
        for (a, file) in self.agent_files.iter().enumerate() {
            let digests = log
                .iter()
                .filter(|(host, path, _)| (host, path) == (&file.0, &file.1))
                .filter_map(|(_, _, contents)| views::digest_of(contents));
            out.entry(agent_name(a)).or_default().extend(digests);
        }
        out
    }

    /// With reports watched: for each agent, every applied digest any server heard it report.
    pub fn reported_digests(&self) -> BTreeMap<String, BTreeSet<[u8; 32]>> {
        let mut out: BTreeMap<String, BTreeSet<[u8; 32]>> = BTreeMap::new();
        for view in self.views.values() {
            for (agent, digests) in &views::read(view).reported {
                out.entry(agent.clone()).or_default().extend(digests);
            }
        }
        out
    }

    /// Runs until every agent's file sets `key` to `value` (or `limit` passes); returns the time
    /// taken, to within [`LOOK_EVERY`].
    pub fn time_until_all(&mut self, key: &str, value: &str, limit: Duration) -> Option<Duration> {
        let start = self.elapsed();
        loop {
            if self.agents_with(key, value) == self.scenario.agents {
                return Some(self.elapsed() - start);
            }
            if self.elapsed() - start >= limit {
                return None;
            }
            self.run_for(LOOK_EVERY);
        }
    }

    /// Stream bytes that reached the master within `span` of simulated time.
    pub fn bytes_into_master(&self, span: Range<Duration>) -> u64 {
        views::bytes_within(&self.master_traffic, true, span)
    }

    /// Stream bytes every agent sent within `span`: what would reach a master that agents
    /// polled directly.
    pub fn bytes_sent_by_agents(&self, span: Range<Duration>) -> u64 {
        views::bytes_within(&self.agent_traffic, false, span)
    }

    /// A one-parameter policy, unversioned (the server numbers it) and authored by whoever
    /// creates it.
    pub fn policy(id: &str, key: &str, value: &str, scope: Scope) -> Policy {
        Policy {
            id: id.into(),
            version: 1,
            author: String::new(),
            scope,
            target: PolicyTarget::default(),
            params: [(key.to_owned(), value.to_owned())].into(),
            retired: false,
        }
    }
}
