//! The policy part of `cohort init`: a master, L local servers (the last behind the first when
//! there are two or more), and an `agents` node hosting A agents spread over the locals, each with
//! its own key. The cluster's operator key administers the tier.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use cohort_core::NodeKeys;
use cohort_core::rng::SeededRng;
use cohort_io_mio::keyfile;
use cohort_io_mio::node_config::{
    AgentsFile, NodeConfig, PolicyAgentConfig, PolicyServerConfig, TierFile, TierOperator, TierServer,
};

use crate::init_args::Args;

fn hex_pair(keys: &NodeKeys) -> (String, String) {
    let p = keys.public();
    (hex::encode(p.signing), hex::encode(p.agreement))
}

fn node(args: &Args) -> NodeConfig {
    // The member-role addresses are unused by a policy-only node.
    let unused = SocketAddr::new(args.host, 0);
    NodeConfig::new(unused, unused, ".".into(), "node.key".into(), "policy")
}

/// Server names: `master`, then `local-00`…
pub fn server_names(locals: usize) -> Vec<String> {
    std::iter::once("master".to_owned()).chain((0..locals).map(|i| format!("local-{i:02}"))).collect()
}

pub fn create(args: &Args, dir: &Path, operator: &NodeKeys, rng: &mut SeededRng) -> anyhow::Result<()> {
    let locals = usize::from(args.policy_locals);
    let agents = usize::from(args.policy_agents);
    let root = dir.join("policy");
    std::fs::create_dir_all(&root)?;
    let names = server_names(locals);
    let keys: Vec<NodeKeys> = names.iter().map(|_| NodeKeys::generate(rng)).collect();
    let parent = |i: usize| -> Option<String> {
        match i {
            0 => None,
            i if locals >= 2 && i == locals => Some(names[1].clone()),
            _ => Some(names[0].clone()),
        }
    };
    let mut servers = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let port = args.policy_port.checked_add(u16::try_from(i)?).context("policy port past 65535")?;
        let (ed25519, x25519) = hex_pair(&keys[i]);
        servers.push(TierServer {
            name: name.clone(),
            address: SocketAddr::new(args.host, port),
            ed25519,
            x25519,
            parent: parent(i),
        });
    }
    let (ed25519, x25519) = hex_pair(operator);
    let tier = TierFile {
        servers: servers.clone(),
        operators: vec![TierOperator { name: "operator".into(), ed25519, x25519 }],
    };
    std::fs::write(root.join("tier.toml"), toml::to_string(&tier)?)?;

    let agent_keys: Vec<NodeKeys> = (0..agents).map(|_| NodeKeys::generate(rng)).collect();
    let agent_local = |a: usize| names[1 + a % locals.max(1)].clone();
    for (i, name) in names.iter().enumerate() {
        let node_dir = root.join(name);
        std::fs::create_dir_all(&node_dir)?;
        keyfile::write_key_file(&node_dir.join("node.key"), &keys[i], false)?;
        let served = (0..agents)
            .filter(|a| locals > 0 && agent_local(*a) == *name)
            .map(|a| {
                let (ed25519, x25519) = hex_pair(&agent_keys[a]);
                TierOperator { name: format!("agent-{a:02}"), ed25519, x25519 }
            })
            .collect();
        std::fs::write(node_dir.join("agents.toml"), toml::to_string(&AgentsFile { agents: served })?)?;
        let mut config = node(args);
        config.policy_server = Some(PolicyServerConfig {
            name: name.clone(),
            listen: servers[i].address,
            tier_file: "../tier.toml".into(),
            agents_file: Some("agents.toml".into()),
            sync_window_s: args.policy_sync_s,
            sync_jitter_s: 0,
        });
        std::fs::write(node_dir.join("node.toml"), config.to_toml())?;
    }
    if agents > 0 && locals > 0 {
        let agents_dir = root.join("agents");
        std::fs::create_dir_all(&agents_dir)?;
        keyfile::write_key_file(&agents_dir.join("node.key"), &NodeKeys::generate(rng), false)?;
        let platforms = [("linux", "6", "web"), ("linux", "6", "db"), ("windows", "11", "desk")];
        let mut config = node(args);
        for (a, k) in agent_keys.iter().enumerate() {
            let name = format!("agent-{a:02}");
            keyfile::write_key_file(&agents_dir.join(format!("{name}.key")), k, false)?;
            let (os, os_version, role) = platforms[a % platforms.len()];
            config.policy_agents.push(PolicyAgentConfig {
                name: name.clone(),
                key_file: format!("{name}.key").into(),
                server: agent_local(a),
                tier_file: "../tier.toml".into(),
                os: os.into(),
                os_version: os_version.into(),
                role: role.into(),
                policy_file: format!("{name}.policy").into(),
                hook: Vec::new(),
                poll_interval_s: args.policy_poll_s.unwrap_or(args.policy_sync_s),
            });
        }
        std::fs::write(agents_dir.join("node.toml"), config.to_toml())?;
    }
    Ok(())
}
