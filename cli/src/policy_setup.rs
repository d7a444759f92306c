//! The policy part of `cohort init`: a master, L local servers (the last behind the first when
//! there are two or more), and an `agents` node hosting A agents spread over the locals, each with
//! its own key. The cluster's operator key administers the tier; the exec gateway's key (m0's),
//! when there is one, may read the master's status and history for the web console.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use cohort_core::rng::SeededRng;
use cohort_core::{NodeKeys, PublicIdentity};
use cohort_io_mio::keyfile;
use cohort_io_mio::node_config::{
    AgentsFile, AlertsConfig, KeyRef, NodeConfig, PolicyAgentConfig, PolicyServerConfig, TierFile,
    TierOperator, TierServer,
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

/// Writes the tier under `dir/policy`. `viewer` is the exec gateway's identity (m0's node key)
/// when init made one: the master lists it as a viewer, so the console on the gateway may read
/// global status and history and nothing else; the locals list no viewer (only the master
/// answers those).
pub fn create(
    args: &Args,
    dir: &Path,
    operator: &NodeKeys,
    viewer: Option<PublicIdentity>,
    rng: &mut SeededRng,
) -> anyhow::Result<()> {
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
            viewers: viewer
                .filter(|_| parent(i).is_none())
                .map(|v| KeyRef { ed25519: hex::encode(v.signing), x25519: hex::encode(v.agreement) })
                .into_iter()
                .collect(),
            // The master alerts on what an operator would want paged for; edit the thresholds
            // or add `hook = ["/path/to/notify"]` (the alert arrives as JSON on its stdin).
            alerts: parent(i).is_none().then(|| AlertsConfig {
                compliance_below_pct: Some(80),
                silent_polls: Some(3),
                high_severity: true,
                hook: Vec::new(),
            }),
        });
        std::fs::write(node_dir.join("node.toml"), config.to_toml())?;
    }
    if agents > 0 && locals > 0 {
        let agents_dir = root.join("agents");
        std::fs::create_dir_all(&agents_dir)?;
        keyfile::write_key_file(&agents_dir.join("node.key"), &NodeKeys::generate(rng), false)?;
        // Each agent reads its distribution and version from this machine's /etc/os-release;
        // the roles spread the agents over three platforms.
        let roles = ["web", "db", "desk"];
        let mut config = node(args);
        for (a, k) in agent_keys.iter().enumerate() {
            let name = format!("agent-{a:02}");
            keyfile::write_key_file(&agents_dir.join(format!("{name}.key")), k, false)?;
            let role = roles[a % roles.len()];
            config.policy_agents.push(PolicyAgentConfig {
                name: name.clone(),
                key_file: format!("{name}.key").into(),
                server: agent_local(a),
                tier_file: "../tier.toml".into(),
                os: None,
                os_version: None,
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

#[cfg(test)]
mod tests {
    use clap::Parser;
    use cohort_io_mio::node_config::NodeConfig;

    use super::*;

    /// `cohort init`'s arguments, parsed as the command line gives them.
    #[derive(Debug, Parser)]
    struct Init {
        #[command(flatten)]
        args: Args,
    }

    fn args(dir: &Path, extra: &[&str]) -> Args {
        let dir = dir.to_str().expect("a UTF-8 temporary path");
        let base = ["init", "--dir", dir, "--members", "1", "--policy-locals", "2", "--policy-agents", "2"];
        Init::try_parse_from(base.iter().chain(extra)).expect("parses").args
    }

    fn viewers(dir: &Path, server: &str) -> Vec<PublicIdentity> {
        let path = dir.join("policy").join(server).join("node.toml");
        let config = NodeConfig::load(&path).expect("loads");
        config.policy_server.expect("a policy server").viewer_identities(&path).expect("valid keys")
    }

    #[test]
    fn the_gateways_identity_is_a_viewer_at_the_master_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut rng = cohort_core::rng::seeded(1);
        let operator = NodeKeys::generate(&mut rng);
        let gateway = NodeKeys::generate(&mut rng).public();
        create(&args(dir.path(), &[]), dir.path(), &operator, Some(gateway), &mut rng).expect("created");
        assert_eq!(viewers(dir.path(), "master"), [gateway]);
        for local in &server_names(2)[1..] {
            assert!(viewers(dir.path(), local).is_empty(), "{local} lists no viewer");
        }
    }

    #[test]
    fn without_a_gateway_the_master_lists_no_viewer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut rng = cohort_core::rng::seeded(2);
        let operator = NodeKeys::generate(&mut rng);
        create(&args(dir.path(), &[]), dir.path(), &operator, None, &mut rng).expect("created");
        assert!(viewers(dir.path(), "master").is_empty());
        let text = std::fs::read_to_string(dir.path().join("policy/master/node.toml")).expect("reads");
        assert!(!text.contains("viewers"), "{text}");
    }

    /// Through `cohort init` itself: with exec hosts the gateway is on m0, and m0's key is the
    /// viewer the master lists.
    #[test]
    fn init_with_a_gateway_lists_m0_as_the_masters_viewer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("cluster");
        let args = args(&root, &["--exec-hosts", "1", "--base-port", "17100", "--policy-port", "17500"]);
        crate::init::create(&args).expect("init");
        let m0 = keyfile::read_key_file(&root.join("m0").join("node.key")).expect("m0's key");
        assert_eq!(viewers(&root, "master"), [m0.public()]);
        assert!(viewers(&root, "local-00").is_empty());
    }
}
