//! Cluster members on simulated hosts, from a genesis configuration: the keys, each node's
//! starting record, and the host context that runs the core node with a member role on the one
//! turmoil host driver. Shared by every member scenario so they build members one way. It only
//! provisions, as an operator would; it never acts for a member once the member runs.

use std::collections::BTreeMap;
use std::sync::Arc;

use cohort_core::NodeKeys;
use cohort_core::member::block::BlockError;
use cohort_core::member::genesis::{genesis_config, genesis_records};
use cohort_core::member::{ClusterConfig, JoinAnchor, MemberInfo, MemberRecord, MemberSettings};
use cohort_core::node::{ConnLimits, MemberRole, NodeSetup};
use cohort_core::rng::SeededRng;

use crate::node_host::{NodeHostContext, SetupFn};
use crate::storage::SimDisk;

/// Other members' channels arrive here on every simulated member.
pub const MEMBER_PORT: u16 = 7000;
/// Operators open the admin channel here.
pub const ADMIN_PORT: u16 = 7001;

/// Node `i`'s host name, also its name in the roster and in traces.
pub fn host_name(i: usize) -> String {
    format!("m{i}")
}

/// Where node `i`'s admin channel listens.
pub fn admin_addr(i: usize) -> String {
    format!("{}:{ADMIN_PORT}", host_name(i))
}

/// A cluster's first configuration and every node's starting record.
#[derive(Debug, Clone)]
pub struct Genesis {
    pub operator: NodeKeys,
    /// The founding members first, then the joiners (nodes not in the genesis roster).
    pub keys: Vec<NodeKeys>,
    pub founders: usize,
    pub config: ClusterConfig,
    /// What each node's disk holds at its first boot, in the order of `keys`.
    pub records: Vec<MemberRecord>,
}

impl Genesis {
    /// Draws the operator's key, then `founders + joiners` node keys, then seals the genesis
    /// configuration for the founders, all from `rng` in that order (a scenario's replay rests on
    /// it). A joiner is provisioned as an operator would: with the genesis header as its trust
    /// anchor and no entry of its own, waiting for the change that adds it.
    pub fn new(
        cluster_id: &str,
        founders: usize,
        joiners: usize,
        rng: &mut SeededRng,
    ) -> Result<Genesis, BlockError> {
        let operator = NodeKeys::generate(rng);
        let keys: Vec<NodeKeys> = (0..founders + joiners).map(|_| NodeKeys::generate(rng)).collect();
        let infos = keys.iter().take(founders).enumerate().map(|(i, k)| member_info(i, k));
        let config = genesis_config(cluster_id, "ops", &operator, infos, BTreeMap::new());
        let sealed = genesis_records(&config, &operator, rng)?;
        let mut records = Vec::with_capacity(keys.len());
        for k in &keys {
            let record = match sealed.get(&k.node_id()) {
                Some(record) => record.clone(),
                // A joiner starts as `cohort join` starts it: from an anchor a founder exports.
                None => {
                    let founder = sealed.values().next().ok_or(BlockError::NoEntry)?;
                    JoinAnchor::of(&founder.active)
                        .joiner_record(k.node_id())
                        .map_err(|e| BlockError::Encode(format!("joiner record: {e}")))?
                }
            };
            records.push(record);
        }
        Ok(Genesis { operator, keys, founders, config, records })
    }

    /// Node `i`'s roster entry, as an add-member change names it.
    pub fn info(&self, i: usize) -> Option<MemberInfo> {
        self.keys.get(i).map(|k| member_info(i, k))
    }

    /// The host context that runs node `i` as a member from its starting record, on a disk of its
    /// own; the caller adds what it observes with (observer, trace, probe, loss).
    pub fn context(&self, i: usize, settings: MemberSettings, seed: u64) -> Option<NodeHostContext> {
        let keys = self.keys.get(i)?.clone();
        let record = self.records.get(i)?.clone();
        let setup = member_setup(keys.clone(), settings);
        Some(NodeHostContext::new(&host_name(i), keys, setup, SimDisk::with_record(record), seed))
    }
}

fn member_info(i: usize, keys: &NodeKeys) -> MemberInfo {
    MemberInfo {
        name: host_name(i),
        identity: keys.public(),
        address: format!("{}:{MEMBER_PORT}", host_name(i)),
    }
}

/// A node that runs the member role from whatever its disk holds at boot.
fn member_setup(keys: NodeKeys, settings: MemberSettings) -> SetupFn {
    Arc::new(move |record| NodeSetup {
        member: record.map(|record| MemberRole {
            record,
            settings,
            listen: format!("0.0.0.0:{MEMBER_PORT}"),
            admin_listen: format!("0.0.0.0:{ADMIN_PORT}"),
            admin_limits: ConnLimits::default(),
            lookup_socket: None,
        }),
        ..NodeSetup::new(keys.clone())
    })
}
