//! `cohort init`: creates a cluster on disk: an operator key, one directory per member (key,
//! node.toml, and a database holding the operator-signed genesis configuration), and the
//! operator's `cluster.toml`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use cohort_core::NodeKeys;
use cohort_core::member::MemberInfo;
use cohort_core::member::genesis::{genesis_config, genesis_records};
use cohort_io_mio::entropy::os_seeded_rng;
use cohort_io_mio::keyfile;
use cohort_io_mio::node_config::NodeConfig;
use cohort_io_mio::store::Store;

use crate::cluster_file::{ClusterFile, Endpoint, MemberEntry};
pub use crate::init_args::Args;

/// What `init` made, for callers (the demo) that go on to start it.
#[derive(Debug)]
pub struct Created {
    pub cluster_file: PathBuf,
    pub operator_key: PathBuf,
    pub node_configs: Vec<PathBuf>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let created = create(args)?;
    println!("created cluster `{}` in {}", args.cluster, args.dir.display());
    println!("  operator key  {}", created.operator_key.display());
    println!("  cluster file  {}", created.cluster_file.display());
    for config in &created.node_configs {
        println!("  member        cohort node run --config {}", config.display());
    }
    if args.policy_locals > 0 {
        let policy = args.dir.join("policy");
        println!(
            "  policy tier   master and {}: cohort node run --config {}/NAME/node.toml",
            crate::plural::plural(u64::from(args.policy_locals), "local"),
            policy.display()
        );
        if args.policy_agents > 0 {
            println!(
                "  policy agents {}: cohort node run --config {}/agents/node.toml",
                args.policy_agents,
                policy.display()
            );
        }
    }
    if args.exec_hosts > 0 {
        println!("  gateway       on m0, {}:{}", args.host, args.exec_port);
        if let Some(web) = crate::exec_setup::web_address(args) {
            println!("  web console   https://{web}/ (served by the gateway)");
            if let Some(print) = crate::exec_setup::web_fingerprint(&args.dir.join("m0")) {
                println!("  certificate   self-signed, SHA-256 {print}");
            }
        }
        let kdc = crate::exec_setup::kdc_member(args);
        println!(
            "  kdc           on {kdc} with its own key ({kdc}/kdc.key), {}",
            crate::exec_setup::kdc_address(args)
        );
        println!(
            "  exec hosts    {} managed hosts: cohort node run --config {}",
            args.exec_hosts,
            args.dir.join("exec").join("node.toml").display()
        );
        if args.password_file.is_none() && args.exec_hosts > 0 {
            let file = args.dir.join(format!("{}.password", args.exec_user));
            println!("  principal     {} (password in {}, mode 0600)", args.exec_user, file.display());
        }
    }
    Ok(())
}

/// Member `i` listens for other members on base + i and for operators on base + 100 + i.
const ADMIN_OFFSET: u16 = 100;

/// How many founders `init` makes: the members, and the exec member when there are hosts.
pub fn founders(args: &Args) -> u16 {
    args.members + u16::from(args.exec_hosts > 0)
}

/// Refuses a layout in which two listeners would share an address: the second could never bind.
fn check_addresses(args: &Args, members: &[(SocketAddr, SocketAddr)]) -> anyhow::Result<()> {
    let mut listeners: Vec<(SocketAddr, String)> = Vec::new();
    for (i, (address, admin)) in members.iter().enumerate() {
        listeners.push((*address, format!("member {i}'s listener")));
        listeners.push((*admin, format!("member {i}'s admin listener")));
    }
    if args.exec_hosts > 0 {
        listeners.push((SocketAddr::new(args.host, args.exec_port), "the gateway (--exec-port)".into()));
        listeners.push((crate::exec_setup::kdc_address(args), "the KDC (--kdc-port)".into()));
        if let Some(web) = crate::exec_setup::web_address(args) {
            listeners.push((web, "the web console (--web-port)".into()));
        }
    }
    if args.policy_locals > 0 {
        for i in 0..=args.policy_locals {
            let port = args.policy_port.saturating_add(i);
            listeners.push((SocketAddr::new(args.host, port), format!("policy server {i} (--policy-port)")));
        }
    }
    for (i, (address, what)) in listeners.iter().enumerate() {
        if let Some((_, other)) = listeners[..i].iter().find(|(a, _)| a == address) {
            bail!(
                "{address} would be both {other} and {what}; choose ports that do not overlap (members use \
                 --base-port + i, their admin listeners --base-port + 100 + i)"
            );
        }
    }
    Ok(())
}

pub fn create(args: &Args) -> anyhow::Result<Created> {
    let addresses = (0..founders(args))
        .map(|i| {
            let port = |offset: u16| {
                args.base_port
                    .checked_add(offset + i)
                    .with_context(|| format!("port {} + {} is past 65535", args.base_port, offset + i))
            };
            Ok((SocketAddr::new(args.host, port(0)?), SocketAddr::new(args.host, port(ADMIN_OFFSET)?)))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    create_at(args, &addresses)
}

/// Like [`create`], with each member's (member, admin) addresses given (the demo picks free
/// ports).
pub fn create_at(args: &Args, addresses: &[(SocketAddr, SocketAddr)]) -> anyhow::Result<Created> {
    check_addresses(args, addresses)?;
    if args.dir.exists() && std::fs::read_dir(&args.dir)?.next().is_some() {
        bail!("{} exists and is not empty; choose a new directory", args.dir.display());
    }
    std::fs::create_dir_all(&args.dir).with_context(|| format!("could not create {}", args.dir.display()))?;
    let mut rng = os_seeded_rng();
    let operator = NodeKeys::generate(&mut rng);
    let operator_key = args.dir.join("operator.key");
    keyfile::write_key_file(&operator_key, &operator, false)?;

    if addresses.len() != usize::from(founders(args)) {
        bail!("{} founders need {} address pairs, given {}", founders(args), founders(args), addresses.len());
    }
    let keys: Vec<NodeKeys> = addresses.iter().map(|_| NodeKeys::generate(&mut rng)).collect();
    let mut entries = Vec::new();
    for (i, (member_keys, (address, admin))) in keys.iter().zip(addresses).enumerate() {
        let public = member_keys.public();
        let name = if i < usize::from(args.members) {
            format!("m{i}")
        } else {
            crate::exec_setup::EXEC_MEMBER.to_owned()
        };
        entries.push(MemberEntry {
            name,
            address: *address,
            admin: *admin,
            ed25519: hex::encode(public.signing),
            x25519: hex::encode(public.agreement),
        });
    }
    let infos = keys.iter().zip(&entries).map(|(k, e)| MemberInfo {
        name: e.name.clone(),
        identity: k.public(),
        address: e.address.to_string(),
    });
    let exec = (args.exec_hosts > 0)
        .then(|| crate::exec_setup::ExecPlan::new(args, &args.dir, &mut rng))
        .transpose()?;
    let settings = exec.as_ref().map(|e| e.settings()).unwrap_or_default();
    let config = genesis_config(&args.cluster, "operator", &operator, infos, settings);
    config.validate().context("the genesis configuration is invalid")?;
    let records = genesis_records(&config, &operator, &mut rng).context("could not seal the genesis")?;

    let mut node_configs = Vec::new();
    for (member_keys, entry) in keys.iter().zip(&entries) {
        let dir = args.dir.join(&entry.name);
        std::fs::create_dir_all(&dir)?;
        keyfile::write_key_file(&dir.join("node.key"), member_keys, false)?;
        let node = NodeConfig {
            heartbeat_ms: args.heartbeat_ms,
            // Applications on the member's host read the configuration here, without a key.
            lookup_socket: Some("lookup.sock".into()),
            ..NodeConfig::new(entry.address, entry.admin, ".".into(), "node.key".into(), "member")
        };
        let config_path = dir.join("node.toml");
        std::fs::write(&config_path, node.to_toml())?;
        let record = records.get(&member_keys.node_id()).context("a genesis record per member")?;
        let mut store = Store::open(&dir.join("node.db"))?;
        store.save_member(record, 0)?;
        node_configs.push(config_path);
    }
    let endpoint = |address: SocketAddr, public: cohort_core::PublicIdentity| Endpoint {
        address,
        ed25519: hex::encode(public.signing),
        x25519: hex::encode(public.agreement),
    };
    let (gateway, kdc) = if let Some(exec) = &exec {
        let m0 = keys.first().context("the gateway lives on m0; create at least one member")?;
        let gateway_addr = SocketAddr::new(args.host, args.exec_port);
        let kdc = exec.write(args, &args.dir, m0, gateway_addr, &mut rng)?;
        let kdc_addr = crate::exec_setup::kdc_address(args);
        (Some(endpoint(gateway_addr, m0.public())), Some(endpoint(kdc_addr, kdc)))
    } else {
        (None, None)
    };
    if args.policy_locals > 0 {
        crate::policy_setup::create(
            args,
            &args.dir,
            &operator,
            exec.as_ref().and(keys.first()).map(NodeKeys::public),
            &mut rng,
        )?;
        if exec.is_some() && args.web_port.is_some() {
            crate::exec_setup::console_asks_master(&args.dir, &args.dir.join("policy").join("tier.toml"))?;
        }
    }
    let cluster_file = args.dir.join("cluster.toml");
    let file = ClusterFile { cluster_id: args.cluster.clone(), members: entries, gateway, kdc };
    std::fs::write(&cluster_file, toml::to_string(&file)?)?;
    Ok(Created { cluster_file, operator_key, node_configs })
}
