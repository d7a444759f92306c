//! The roles a node configuration asks for (member, gateway with its KDC and collector, exec
//! hosts, policy server and agents), read from its files and from the node's store, and started
//! as one core node on the loop. Owns reading configuration only: every rule is the node's.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use cohort_core::exec::daemon::DaemonSettings;
use cohort_core::exec::kdc::{Kdc, KdcSettings};
use cohort_core::member::MemberSettings;
use cohort_core::node::{
    AuditLinkRole, ConnLimits, ExecHostRole, GatewayRole, KdcRole, MemberRole, Node, NodeSetup,
    PolicyAgentRole, PolicyMaster, PolicyServerRole, WebRole,
};
use cohort_core::policy::alerts::MAX_ALERTS;
use cohort_core::policy::document::Platform;
use cohort_core::policy::platform::UNKNOWN;
use cohort_core::policy::server::{MAX_HISTORY_POINTS, ServerSetup};
use cohort_core::rng::fork;
use cohort_core::web::WebLimits;
use cohort_core::{NodeKeys, PublicIdentity};

use crate::clock::Clock;
use crate::driver::NodeDriver;
use crate::entropy::os_seeded_rng;
use crate::error::NodeError;
use crate::keyfile;
use crate::node_config::{
    AgentsFile, AlertsConfig, NodeConfig, NodeConfigError, TierFile, load_toml, parse_key,
};
use crate::reactor::Slot;
use crate::store::Store;

fn identity(path: &Path, ed: &str, x: &str) -> Result<PublicIdentity, NodeConfigError> {
    Ok(PublicIdentity { signing: parse_key(path, "ed25519", ed)?, agreement: parse_key(path, "x25519", x)? })
}

/// The group id `group` names: a number, or a name from the system's group database.
fn group_id(group: &str) -> Result<u32, NodeError> {
    if let Ok(gid) = group.parse() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(found)) => Ok(found.gid.as_raw()),
        Ok(None) | Err(_) => Err(NodeError::UnknownGroup { group: group.to_owned() }),
    }
}

/// Starts every role `config` names as one node, driven on the loop's `slot`.
pub fn start(config: &NodeConfig, slot: Slot) -> Result<NodeDriver, NodeError> {
    let keys = keyfile::read_key_file(&config.key_file)?;
    let store = Store::open(&config.database())?;
    let mut rng = os_seeded_rng();
    let mut setup = NodeSetup::new(keys.clone());
    if config.has_role("member") {
        let record = store.load_member()?.ok_or_else(|| NodeError::NoState { path: config.database() })?;
        tracing::info!(node = %keys.node_id(), listen = %config.listen, admin = %config.admin_listen,
            active = %record.active.version(), "member starting");
        setup.member = Some(MemberRole {
            record,
            settings: MemberSettings { heartbeat: config.heartbeat(), ..MemberSettings::default() },
            listen: config.listen.to_string(),
            admin_listen: config.admin_listen.to_string(),
            admin_limits: ConnLimits {
                max_open: 256,
                max_handshaking: config.admin_max_handshaking,
                handshake_timeout: config.admin_handshake_timeout(),
                // A change request carries the whole change: up to the largest configuration.
                max_message: cohort_core::member::messages::MAX_MEMBER_MESSAGE,
                max_backlog: 2 * cohort_core::member::messages::MAX_MEMBER_MESSAGE,
                ..ConnLimits::default()
            },
            lookup_socket: config.lookup_socket.as_ref().map(|p| p.display().to_string()),
        });
    }
    if config.has_role("gateway") || config.has_role("kdc") || config.has_role("exec") {
        exec_roles(config, &keys, &store, &mut rng, &mut setup)?;
    }
    if config.has_role("policy") {
        policy_roles(config, &keys, &store, &mut setup)?;
    }
    let clock = Clock::start();
    let node = Node::new(clock.now(), setup, fork(&mut rng));
    let local_group = config.lookup_group.as_deref().map(group_id).transpose()?;
    // Read before the node asks for the listener, so a bad certificate stops the start.
    let web_tls = match config.gateway.as_ref().and_then(|g| g.web.as_ref()) {
        Some(web) => Some(crate::web_front::server_config(&web.cert_file, &web.key_file)?),
        None => None,
    };
    NodeDriver::new("node", node, clock, store, slot, local_group, web_tls)
}

fn exec_roles(
    config: &NodeConfig,
    keys: &NodeKeys,
    store: &Store,
    rng: &mut cohort_core::rng::SeededRng,
    setup: &mut NodeSetup,
) -> Result<(), NodeError> {
    let limits = ConnLimits { max_message: 4 * 1024 * 1024, ..ConnLimits::default() };
    // Hosts, ACLs and limits come from the member's installed configuration (the node hands
    // them to these roles at start and at every install); principals from the store.
    if let Some(k) = &config.kdc {
        let kdc_keys = keyfile::read_key_file(&k.key_file)?;
        let gateways = k
            .gateways
            .iter()
            .map(|g| identity(&config.key_file, &g.ed25519, &g.x25519))
            .collect::<Result<Vec<_>, _>>()?;
        let principals = store.load_principals()?;
        tracing::info!(listen = %k.listen, kdc = %kdc_keys.node_id(), principals = principals.len(), "kdc starting");
        setup.kdc = Some(KdcRole {
            listen: k.listen.to_string(),
            kdc: Kdc::new(kdc_keys, principals, BTreeMap::new(), KdcSettings::default(), fork(rng)),
            gateways,
            limits,
        });
    }
    let web_role = |path: &std::path::Path, web: &crate::node_config::WebConfig| {
        let policy_master = match &web.policy_master {
            None => None,
            Some(m) => Some(PolicyMaster {
                addr: m.address.to_string(),
                identity: identity(path, &m.ed25519, &m.x25519)?,
            }),
        };
        Ok::<_, NodeError>(WebRole {
            listen: web.listen.to_string(),
            limits: WebLimits::default(),
            policy_master,
        })
    };
    if let Some(gw) = &config.gateway {
        let kdc = identity(&config.key_file, &gw.kdc.ed25519, &gw.kdc.x25519)?;
        let chain_tail = store.last_chain_entry()?;
        tracing::info!(listen = %gw.listen, kdc = %gw.kdc.address, "gateway starting");
        setup.gateway = Some(GatewayRole {
            listen: gw.listen.to_string(),
            keys: keys.clone(),
            kdc_addr: gw.kdc.address.to_string(),
            kdc,
            chain_tail,
            limits,
            web: gw.web.as_ref().map(|web| web_role(&config.key_file, web)).transpose()?,
        });
    }
    if let (Some(c), Some(kdc)) = (&config.collector, &config.trusted_kdc) {
        let path = config.key_file.clone();
        let collector = PublicIdentity {
            signing: parse_key(&path, "collector ed25519", &c.ed25519)?,
            agreement: parse_key(&path, "collector x25519", &c.x25519)?,
        };
        setup.audit_link = Some(AuditLinkRole { addr: c.address.to_string(), collector });
        let kdc = identity(&path, &kdc.ed25519, &kdc.x25519)?;
        for h in &config.exec_hosts {
            setup.exec_hosts.push(ExecHostRole {
                name: h.name.clone(),
                keys: keyfile::read_key_file(&h.key_file)?,
                kdc,
                listen: h.listen.to_string(),
                settings: DaemonSettings::default(),
                limits,
            });
        }
    }
    Ok(())
}

fn policy_roles(
    config: &NodeConfig,
    keys: &NodeKeys,
    store: &Store,
    setup: &mut NodeSetup,
) -> Result<(), NodeError> {
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
                viewers: sc.viewer_identities(&config.key_file)?,
                sync_window: Duration::from_secs(sc.sync_window_s.max(1)),
                sync_jitter: Duration::from_secs(sc.sync_jitter_s),
                stats_deadline: Duration::from_secs(5),
                alerts: sc.alerts.as_ref().map(AlertsConfig::rules).unwrap_or_default(),
            },
            parent_addr: parent.map(|(_, _, addr)| addr.to_string()),
            stored: store.load_policies()?,
            superseded: store.load_superseded()?,
            latest: store.latest_policy_history()?,
            history: store.policy_history(MAX_HISTORY_POINTS)?,
            alerts: store.load_alerts(MAX_ALERTS)?,
            alert_hook: sc.alerts.as_ref().map(|a| a.hook.clone()).unwrap_or_default(),
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
        // The distribution and version are read from the machine unless both are declared.
        let declared = match (&ac.os, &ac.os_version) {
            (Some(os), Some(version)) => Some(Platform::new(os, version, &ac.role)),
            (None, None) => None,
            _ => {
                return Err(NodeConfigError::Parse {
                    path: config.data_dir.join("node.toml"),
                    message: format!(
                        "agent `{}` declares only one of os and os_version: declare both, or neither to have them read from /etc/os-release",
                        ac.name
                    ),
                }
                .into());
            }
        };
        setup.policy_agents.push(PolicyAgentRole {
            name: ac.name.clone(),
            keys: keyfile::read_key_file(&ac.key_file)?,
            detect_platform: declared.is_none(),
            platform: declared.unwrap_or_else(|| Platform::new(UNKNOWN, UNKNOWN, &ac.role)),
            server: ac.server.clone(),
            server_addr: server.address.to_string(),
            server_identity: identity(&ac.tier_file, &server.ed25519, &server.x25519)?,
            poll_interval: Duration::from_secs(ac.poll_interval_s.max(1)),
            policy_file: ac.policy_file.to_string_lossy().into_owned(),
            hook: ac.hook.clone(),
        });
    }
    Ok(())
}
