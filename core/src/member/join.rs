//! Joining: what a new node starts from before the change that adds it has reached it. An
//! operator exports a [`JoinAnchor`] from any member (the cluster id, the active version's signed
//! header, the roster and the operators, all of which the operator may read anyway); the new node
//! checks it and starts from a record whose active configuration is that roster with no settings
//! and no entry of its own. It is not a member of that configuration, so it answers no lookup
//! and authors nothing until it has fetched, verified and installed a version that lists it.
//! Owns the anchor and its checks; it never makes a node a member (only a signed change does).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::block::{ConfigBlock, SignedHeader, TrustedAuthors, verify_header};
use super::config::{ClusterConfig, MemberInfo, OperatorInfo, Version};
use super::io::{MemberRecord, StoredConfig};
use crate::identity::NodeId;

/// What a new node needs to know to join: public to the operator, verified by the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinAnchor {
    pub cluster_id: String,
    pub version: Version,
    pub header: SignedHeader,
    pub members: Vec<MemberInfo>,
    pub operators: Vec<OperatorInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error("the join file is for version {file}, but its header is for {header}")]
    VersionMismatch { file: Version, header: Version },
    #[error("the join file's header does not check out against its own roster: {0}")]
    Header(#[from] super::block::BlockError),
    #[error("this node ({0}) is already in the roster; start it from its own directory instead")]
    AlreadyMember(NodeId),
    #[error("the join file lists no members")]
    NoMembers,
}

impl JoinAnchor {
    /// The anchor of `active`, as a member exports it.
    pub fn of(active: &StoredConfig) -> JoinAnchor {
        let config = &active.config;
        JoinAnchor {
            cluster_id: config.cluster_id.clone(),
            version: config.version,
            header: active.block.header.clone(),
            members: config.members.values().cloned().collect(),
            operators: config.operators.values().cloned().collect(),
        }
    }

    /// The record node `me` starts from: checked that the header is this version's and signed
    /// by a member or operator the anchor lists, and that `me` is not a member yet.
    pub fn joiner_record(&self, me: NodeId) -> Result<MemberRecord, JoinError> {
        if self.members.is_empty() {
            return Err(JoinError::NoMembers);
        }
        if self.header.body.version != self.version {
            return Err(JoinError::VersionMismatch { file: self.version, header: self.header.body.version });
        }
        let members: BTreeMap<NodeId, MemberInfo> =
            self.members.iter().map(|m| (m.identity.node_id(), m.clone())).collect();
        if members.contains_key(&me) {
            return Err(JoinError::AlreadyMember(me));
        }
        let operators: BTreeMap<NodeId, OperatorInfo> =
            self.operators.iter().map(|o| (o.id(), o.clone())).collect();
        let trusted = TrustedAuthors {
            members: members.iter().map(|(id, m)| (*id, m.identity)).collect(),
            operators: operators.iter().map(|(id, o)| (*id, o.signing())).collect(),
        };
        verify_header(&self.cluster_id, &self.header, &trusted)?;
        let config = ClusterConfig {
            cluster_id: self.cluster_id.clone(),
            version: self.version,
            members,
            operators,
            settings: BTreeMap::new(),
            sections: BTreeMap::new(),
            applied_requests: Vec::new(),
        };
        // The anchor holds no body and no entries: this node serves nothing from it.
        let block = ConfigBlock { header: self.header.clone(), body: Vec::new(), entries: BTreeMap::new() };
        Ok(MemberRecord { boot_epoch: 0, active: StoredConfig { block, config }, staged: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::NodeKeys;
    use crate::member::genesis::{genesis_config, genesis_records};
    use crate::rng::seeded;

    fn anchor() -> (JoinAnchor, NodeKeys) {
        let mut rng = seeded(3);
        let operator = NodeKeys::generate(&mut rng);
        let m0 = NodeKeys::generate(&mut rng);
        let info = MemberInfo { name: "m0".into(), identity: m0.public(), address: "127.0.0.1:7100".into() };
        let config = genesis_config("c", "ops", &operator, [info], BTreeMap::new());
        let records = genesis_records(&config, &operator, &mut rng).expect("seals");
        let record = records.get(&m0.node_id()).expect("m0's record");
        (JoinAnchor::of(&record.active), m0)
    }

    #[test]
    fn a_joiner_starts_outside_the_roster_with_no_settings_and_no_entry() {
        let (anchor, _) = anchor();
        let joiner = NodeKeys::generate(&mut seeded(9)).node_id();
        let record = anchor.joiner_record(joiner).expect("a record");
        assert!(!record.active.config.is_member(&joiner));
        assert!(record.active.config.settings.is_empty());
        assert!(record.active.block.entries.is_empty());
        assert_eq!(record.active.version(), anchor.version);
    }

    #[test]
    fn an_anchor_whose_header_its_roster_did_not_sign_is_refused() {
        let (mut anchor, m0) = anchor();
        let joiner = NodeKeys::generate(&mut seeded(9)).node_id();
        assert_eq!(anchor.joiner_record(m0.node_id()), Err(JoinError::AlreadyMember(m0.node_id())));
        // The operators swapped for a stranger: the genesis header's signer is no longer listed.
        let stranger = NodeKeys::generate(&mut seeded(10));
        anchor.operators = vec![OperatorInfo { name: "x".into(), identity: stranger.public() }];
        assert!(matches!(anchor.joiner_record(joiner), Err(JoinError::Header(_))));
    }
}
