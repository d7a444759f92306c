//! A cluster's first configuration: signed by an operator and sealed for each founding member.
//! Owns turning one configuration into each member's starting [`MemberRecord`]. It never invents
//! members or operators; the caller lists them.

use std::collections::BTreeMap;

use super::block::{Author, BlockError, ConfigBlock};
use super::config::{ClusterConfig, MemberInfo, OperatorInfo, Version};
use super::io::{MemberRecord, StoredConfig};
use crate::identity::{NodeId, NodeKeys};
use crate::rng::SeededRng;

/// The genesis configuration (version 1, authored by `operator`) for `members`.
pub fn genesis_config(
    cluster_id: &str,
    operator_name: &str,
    operator: &NodeKeys,
    members: impl IntoIterator<Item = MemberInfo>,
    settings: BTreeMap<String, String>,
) -> ClusterConfig {
    let op = OperatorInfo { name: operator_name.to_owned(), identity: operator.public() };
    ClusterConfig {
        cluster_id: cluster_id.to_owned(),
        version: Version { counter: 1, author: op.id() },
        members: members.into_iter().map(|m| (m.identity.node_id(), m)).collect(),
        operators: [(op.id(), op)].into_iter().collect(),
        settings,
        sections: BTreeMap::new(),
        applied_requests: Vec::new(),
    }
}

/// Seals `config` under the operator's signature and gives each member its starting record,
/// holding the whole block (each entry opens only for its own member).
pub fn genesis_records(
    config: &ClusterConfig,
    operator: &NodeKeys,
    rng: &mut SeededRng,
) -> Result<BTreeMap<NodeId, MemberRecord>, BlockError> {
    let block = ConfigBlock::seal(config, Author::Operator(operator.public().signing), operator, rng)?;
    let mut records = BTreeMap::new();
    for (id, member) in &config.members {
        if !block.lists(&member.identity.key_digest()) {
            return Err(BlockError::NoEntry);
        }
        let active = StoredConfig { block: block.clone(), config: config.clone() };
        records.insert(*id, MemberRecord { boot_epoch: 0, active, staged: None });
    }
    Ok(records)
}
