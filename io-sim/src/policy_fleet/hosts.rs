//! The fleet's shape, mapped onto turmoil hosts: who is whose parent, which local serves which
//! agent, every key, and the node setup each host boots with (a policy server per server host,
//! all the agents of one local on one host of their own). Owns that mapping only; the roles'
//! rules are core's, and a restarted server is handed back what it had persisted, as io-mio
//! hands back what SQLite kept.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError};

use cohort_core::node::{ConnLimits, NodeSetup, PolicyAgentRole, PolicyServerRole, Record};
use cohort_core::policy::document::{Platform, SignedPolicy, Superseded};
use cohort_core::policy::report::Aggregate;
use cohort_core::policy::server::ServerSetup;
use cohort_core::rng::SeededRng;
use cohort_core::{NodeKeys, PublicIdentity, WallClock};

use super::{FleetScenario, MASTER, agent_name, local_name};
use crate::node_host::{SetupFn, SharedRecords};

/// Where every policy server listens.
pub(super) const PORT: u16 = 7400;

/// The agents' platforms, dealt round-robin so every local serves all three.
fn platforms() -> [Platform; 3] {
    [
        Platform::new("linux", "6", "web"),
        Platform::new("linux", "6", "db"),
        Platform::new("windows", "11", "desk"),
    ]
}

/// Every key of the fleet and who sits where.
#[derive(Debug, Clone)]
pub(super) struct Tier {
    pub master: NodeKeys,
    pub locals: Vec<NodeKeys>,
    pub agents: Vec<NodeKeys>,
    pub operator: NodeKeys,
    /// Parent of each local (`None` = the master).
    pub local_parent: Vec<Option<usize>>,
    /// Which local serves each agent.
    pub agent_local: Vec<usize>,
}

impl Tier {
    pub fn new(scenario: &FleetScenario, rng: &mut SeededRng) -> Tier {
        let master = NodeKeys::generate(rng);
        let locals = (0..scenario.locals).map(|_| NodeKeys::generate(rng)).collect();
        let agents = (0..scenario.agents).map(|_| NodeKeys::generate(rng)).collect();
        let operator = NodeKeys::generate(rng);
        // The last local sits behind the first, when there are two or more.
        let local_parent = (0..scenario.locals)
            .map(|i| (scenario.locals >= 2 && i == scenario.locals - 1).then_some(0))
            .collect();
        let agent_local = (0..scenario.agents).map(|i| i % scenario.locals).collect();
        Tier { master, locals, agents, operator, local_parent, agent_local }
    }

    /// The keys a server or agent of the fleet holds, by name.
    pub fn keys_of(&self, name: &str) -> Option<&NodeKeys> {
        if name == MASTER {
            return Some(&self.master);
        }
        if let Some(i) = name.strip_prefix("local-").and_then(|n| n.parse::<usize>().ok()) {
            return self.locals.get(i);
        }
        let agent = name.strip_prefix("agent-").and_then(|n| n.parse::<usize>().ok())?;
        self.agents.get(agent)
    }

    /// The name of a local's parent server.
    pub fn parent_name(&self, local: usize) -> String {
        self.local_parent.get(local).copied().flatten().map_or_else(|| MASTER.to_owned(), local_name)
    }

    fn parent_keys(&self, local: usize) -> &NodeKeys {
        match self.local_parent.get(local).copied().flatten() {
            Some(p) => &self.locals[p],
            None => &self.master,
        }
    }

    /// The locals directly below `parent` (`None` = the master).
    fn children_of(&self, parent: Option<usize>) -> BTreeMap<String, PublicIdentity> {
        (0..self.locals.len())
            .filter(|i| self.local_parent[*i] == parent)
            .map(|i| (local_name(i), self.locals[i].public()))
            .collect()
    }

    fn signers(&self) -> BTreeMap<String, PublicIdentity> {
        let locals = self.locals.iter().enumerate().map(|(i, k)| (local_name(i), k.public()));
        locals.chain([(MASTER.to_owned(), self.master.public())]).collect()
    }

    /// The policy server `local` runs (`None` = the master), before anything was stored.
    pub fn server_role(&self, scenario: &FleetScenario, local: Option<usize>) -> PolicyServerRole {
        let (name, keys, parent, parent_addr, agents) = match local {
            None => (MASTER.to_owned(), self.master.clone(), None, None, BTreeMap::new()),
            Some(i) => {
                let parent = self.parent_name(i);
                let agents = (0..self.agents.len())
                    .filter(|a| self.agent_local[*a] == i)
                    .map(|a| (agent_name(a), self.agents[a].public()))
                    .collect();
                let addr = format!("{parent}:{PORT}");
                (
                    local_name(i),
                    self.locals[i].clone(),
                    Some((parent, self.parent_keys(i).public())),
                    Some(addr),
                    agents,
                )
            }
        };
        PolicyServerRole {
            listen: format!("0.0.0.0:{PORT}"),
            setup: ServerSetup {
                name,
                keys,
                parent,
                children: self.children_of(local),
                agents,
                signers: self.signers(),
                operators: vec![self.operator.public()],
                viewers: Vec::new(),
                sync_window: scenario.sync_window,
                sync_jitter: scenario.sync_jitter,
                stats_deadline: scenario.stats_deadline,
                alerts: cohort_core::policy::alerts::AlertRules::default(),
            },
            parent_addr,
            stored: Vec::new(),
            superseded: Vec::new(),
            latest: Vec::new(),
            history: Vec::new(),
            alerts: Vec::new(),
            alert_hook: Vec::new(),
            limits: ConnLimits::default(),
        }
    }

    /// The agents local `local` serves, as one host runs them.
    pub fn agent_roles(&self, scenario: &FleetScenario, local: usize) -> Vec<PolicyAgentRole> {
        let plats = platforms();
        let server = local_name(local);
        (0..self.agents.len())
            .filter(|a| self.agent_local[*a] == local)
            .map(|a| PolicyAgentRole {
                name: agent_name(a),
                keys: self.agents[a].clone(),
                platform: plats[a % plats.len()].clone(),
                server: server.clone(),
                server_addr: format!("{server}:{PORT}"),
                server_identity: self.locals[local].public(),
                poll_interval: scenario.poll_interval,
                policy_file: policy_file(a),
                hook: Vec::new(),
                detect_platform: false,
            })
            .collect()
    }
}

/// Where agent `a` writes its effective policy, on its agents' host.
pub(super) fn policy_file(agent: usize) -> String {
    format!("/etc/cohort/{}.policy", agent_name(agent))
}

/// A server host's setup: its role, with whatever the host persisted before a restart.
pub(super) fn server_setup(
    host: String,
    keys: NodeKeys,
    role: PolicyServerRole,
    records: SharedRecords,
) -> SetupFn {
    Arc::new(move |_| {
        let Kept { stored, superseded, latest } = kept(&records, &host);
        let role = PolicyServerRole { stored, superseded, latest, ..role.clone() };
        NodeSetup { policy_server: Some(role), ..NodeSetup::new(keys.clone()) }
    })
}

/// One local's agents on one host.
pub(super) fn agents_setup(keys: NodeKeys, agents: Vec<PolicyAgentRole>) -> SetupFn {
    Arc::new(move |_| NodeSetup { policy_agents: agents.clone(), ..NodeSetup::new(keys.clone()) })
}

/// What a server host persisted before a restart.
struct Kept {
    stored: Vec<SignedPolicy>,
    superseded: Vec<Superseded>,
    latest: Vec<(String, WallClock, Aggregate)>,
}

/// What `host` persisted: every policy version in the order stored, and the latest aggregate
/// from each child (what io-mio reads back from SQLite at a restart).
fn kept(records: &SharedRecords, host: &str) -> Kept {
    let records = records.lock().unwrap_or_else(PoisonError::into_inner);
    let mut stored = Vec::new();
    let mut superseded = Vec::new();
    let mut latest: BTreeMap<String, (WallClock, Aggregate)> = BTreeMap::new();
    for (_, record) in records.iter().filter(|(h, _)| h == host) {
        match record {
            Record::Policy(policy) => stored.push(policy.clone()),
            Record::PolicySuperseded(lost) => superseded.push(lost.clone()),
            Record::PolicyHistory { from, at, aggregate } => {
                latest.insert(from.clone(), (*at, aggregate.clone()));
            }
            _ => {}
        }
    }
    let latest = latest.into_iter().map(|(from, (at, aggregate))| (from, at, aggregate)).collect();
    Kept { stored, superseded, latest }
}
