//! The security-policy roles a node configuration asks for, read from its files (tier, agents,
//! keys) and from the node's store (what a server kept before a restart), and started as a core
//! node on the loop. Owns reading configuration only: every rule is the node's.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use cohort_core::PublicIdentity;
use cohort_core::node::{ConnLimits, Node, NodeSetup, PolicyAgentRole, PolicyServerRole};
use cohort_core::policy::document::Platform;
use cohort_core::policy::server::ServerSetup;

use crate::clock::Clock;
use crate::driver::NodeDriver;
use crate::entropy::os_seeded_rng;
use crate::keyfile;
use crate::node::NodeError;
use crate::node_config::{AgentsFile, NodeConfig, NodeConfigError, TierFile, load_toml, parse_key};
use crate::reactor::Slot;
use crate::store::Store;

fn identity(path: &Path, ed: &str, x: &str) -> Result<PublicIdentity, NodeConfigError> {
    Ok(PublicIdentity { signing: parse_key(path, "ed25519", ed)?, agreement: parse_key(path, "x25519", x)? })
}

/// Starts the policy server and agents `config` names, driven on the loop's `slot`.
pub fn start(config: &NodeConfig, slot: Slot) -> Result<NodeDriver, NodeError> {
    let keys = keyfile::read_key_file(&config.key_file)?;
    let store = Store::open(&config.database())?;
    let mut setup = NodeSetup::default();
    if let Some(sc) = &config.policy_server {
        let tier: TierFile = load_toml(&sc.tier_file)?;
        let mut ids = BTreeMap::new();
        for s in &tier.servers {
            ids.insert(
                s.name.clone(),
                (identity(&sc.tier_file, &s.ed25519, &s.x25519)?, s.address, s.parent.clone()),
            );
        }
        let me = tier.servers.iter().find(|s| s.name == sc.name).ok_or_else(|| NodeConfigError::Parse {
            path: sc.tier_file.clone(),
            message: format!("no server `{}` in the tier file", sc.name),
        })?;
        let parent = me.parent.as_ref().and_then(|p| ids.get(p).map(|(id, addr, _)| (p.clone(), *id, *addr)));
        let children = ids
            .iter()
            .filter(|(_, (_, _, p))| p.as_deref() == Some(sc.name.as_str()))
            .map(|(n, (id, _, _))| (n.clone(), *id))
            .collect();
        let mut agents = BTreeMap::new();
        if let Some(path) = &sc.agents_file {
            let file: AgentsFile = load_toml(path)?;
            for a in &file.agents {
                agents.insert(a.name.clone(), identity(path, &a.ed25519, &a.x25519)?);
            }
        }
        let operators = tier
            .operators
            .iter()
            .map(|o| identity(&sc.tier_file, &o.ed25519, &o.x25519))
            .collect::<Result<Vec<_>, _>>()?;
        setup.policy_server = Some(PolicyServerRole {
            listen: sc.listen.to_string(),
            setup: ServerSetup {
                name: sc.name.clone(),
                keys: keys.clone(),
                parent: parent.clone().map(|(name, id, _)| (name, id)),
                children,
                agents,
                signers: ids.iter().map(|(n, (id, _, _))| (n.clone(), *id)).collect(),
                operators,
                sync_window: Duration::from_secs(sc.sync_window_s.max(1)),
                sync_jitter: Duration::from_secs(sc.sync_jitter_s),
                stats_deadline: Duration::from_secs(5),
            },
            parent_addr: parent.map(|(_, _, addr)| addr.to_string()),
            stored: store.load_policies()?,
            latest: store.latest_policy_history()?,
            limits: ConnLimits::default(),
        });
    }
    for ac in &config.policy_agents {
        let tier: TierFile = load_toml(&ac.tier_file)?;
        let server =
            tier.servers.iter().find(|s| s.name == ac.server).ok_or_else(|| NodeConfigError::Parse {
                path: ac.tier_file.clone(),
                message: format!("agent `{}` names unknown server `{}`", ac.name, ac.server),
            })?;
        setup.policy_agents.push(PolicyAgentRole {
            name: ac.name.clone(),
            keys: keyfile::read_key_file(&ac.key_file)?,
            platform: Platform::new(&ac.os, &ac.os_version, &ac.role),
            server: ac.server.clone(),
            server_addr: server.address.to_string(),
            server_identity: identity(&ac.tier_file, &server.ed25519, &server.x25519)?,
            poll_interval: Duration::from_secs(ac.poll_interval_s.max(1)),
            policy_file: ac.policy_file.to_string_lossy().into_owned(),
            hook: ac.hook.clone(),
        });
    }
    let clock = Clock::start();
    let node = Node::new(clock.now(), setup, os_seeded_rng());
    if let Some(server) = node.policy_server() {
        tracing::info!(name = %server.name(), policies = server.policies().count(), "policy server up");
    }
    NodeDriver::new("policy", node, clock, store, slot)
}
