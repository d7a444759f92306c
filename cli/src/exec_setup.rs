//! The exec part of `cohort init`: turns m0 into the gateway (with the audit collector) and m1
//! (m0 in a one-member cluster) into the KDC (a role with its own key, which alone holds the
//! password hashes, in its store, and signs tickets), creates a principal with an Argon2id
//! password hash, and makes the `exec` member host N managed hosts, each with its own key and
//! loopback address. The hosts and the principal's ACL entry go into the genesis configuration.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use anyhow::{Context, bail};
use cohort_core::NodeKeys;
use cohort_core::exec::acl::{AclEntry, Limits};
use cohort_core::exec::directory::{ACL_PREFIX, HOST_PREFIX, ManagedHost, acl_setting};
use cohort_core::exec::kdc::hash_password;
use cohort_core::rng::SeededRng;
use cohort_io_mio::keyfile;
use cohort_io_mio::launch::current_user;
use cohort_io_mio::node_config::{
    ExecHostConfig, GatewayConfig, KdcConfig, KeyRef, NodeConfig, PeerRef, WebConfig,
};
use cohort_io_mio::store::Store;
use rand_core::RngCore;

use crate::init_args::Args;

/// Where the web console listens: on --host, at --web-port (none without it).
pub fn web_address(args: &Args) -> Option<SocketAddr> {
    args.web_port.map(|port| SocketAddr::new(args.host, port))
}

/// Makes the console's self-signed certificate for --host and localhost in `dir` (the key mode
/// 0600), for a demo; an operator replaces both files with their own.
fn write_web_certificate(args: &Args, dir: &Path, listen: SocketAddr) -> anyhow::Result<WebConfig> {
    let names = vec![args.host.to_string(), "localhost".to_owned()];
    let (cert, key) = cohort_io_mio::web_front::self_signed(&names)?;
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("web.crt"), cert).context("could not write the web certificate")?;
    write_private(&dir.join("web.key"), &key)?;
    Ok(WebConfig { listen, cert_file: "web.crt".into(), key_file: "web.key".into(), policy_master: None })
}

/// Points m0's web console at the policy tier's master in `tier_file` (the master lists m0's key
/// as a viewer), so its policy pages have figures to show.
pub fn console_asks_master(dir: &Path, tier_file: &Path) -> anyhow::Result<()> {
    let tier: cohort_io_mio::node_config::TierFile = cohort_io_mio::node_config::load_toml(tier_file)?;
    let master = tier.servers.iter().find(|s| s.parent.is_none()).context("the tier has no master")?;
    let master =
        PeerRef { address: master.address, ed25519: master.ed25519.clone(), x25519: master.x25519.clone() };
    edit_node_config(&dir.join("m0"), |config| {
        if let Some(web) = config.gateway.as_mut().and_then(|g| g.web.as_mut()) {
            web.policy_master = Some(master);
        }
    })
}

/// The SHA-256 fingerprint of the console's certificate in `dir`, if it has one.
pub fn web_fingerprint(dir: &Path) -> Option<String> {
    let pem = std::fs::read_to_string(dir.join("web.crt")).ok()?;
    cohort_io_mio::web_front::fingerprint(&pem)
}

/// Managed host `i`'s address: 127.0.x.y, distinct per host, never 127.0.0.1.
pub fn host_address(i: usize, port: u16) -> SocketAddr {
    let n = i + 1;
    let ip = Ipv4Addr::new(127, 0, 1 + (n / 250) as u8, 1 + (n % 250) as u8);
    SocketAddr::new(IpAddr::V4(ip), port)
}

/// Where the KDC listens: on --host, at --kdc-port (default --exec-port + 1).
pub fn kdc_address(args: &Args) -> SocketAddr {
    SocketAddr::new(args.host, args.kdc_port.unwrap_or(args.exec_port.saturating_add(1)))
}

fn key_ref(keys: &NodeKeys) -> KeyRef {
    let public = keys.public();
    KeyRef { ed25519: hex::encode(public.signing), x25519: hex::encode(public.agreement) }
}

pub fn host_name(i: usize, count: usize) -> String {
    let width = count.to_string().len().max(2);
    format!("h{:0width$}", i + 1)
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("could not create {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// What the exec site will be, decided before the genesis is sealed: its hosts and ACL go into
/// the genesis configuration's settings.
pub struct ExecPlan {
    password: String,
    hosts: Vec<(String, NodeKeys, SocketAddr)>,
    acl: (String, AclEntry),
}

impl ExecPlan {
    pub fn new(args: &Args, dir: &Path, rng: &mut SeededRng) -> anyhow::Result<ExecPlan> {
        let count = usize::from(args.exec_hosts);
        let password = match &args.password_file {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("could not read {}", path.display()))?
                .trim_end_matches('\n')
                .to_owned(),
            None => {
                let mut bytes = [0u8; 12];
                rng.fill_bytes(&mut bytes);
                let password = hex::encode(bytes);
                std::fs::create_dir_all(dir)?;
                write_private(&dir.join(format!("{}.password", args.exec_user)), &format!("{password}\n"))?;
                password
            }
        };
        if password.is_empty() {
            bail!("the password is empty");
        }
        let run_as = match &args.run_as {
            Some(user) => user.clone(),
            None => current_user().context("the current user has no passwd entry; pass --run-as")?,
        };
        let hosts = (0..count)
            .map(|i| (host_name(i, count), NodeKeys::generate(rng), host_address(i, args.exec_port)))
            .collect();
        let entry = AclEntry {
            run_as: [run_as].into(),
            // Any command (a demo site's operator may do anything its user may); `acl set` narrows
            // it to absolute paths.
            commands: ["*".to_owned()].into(),
            shell: false,
            env: BTreeSet::new(),
            copy: ["/tmp".to_owned()].into(),
            // The site's one principal is its operator: it reads the whole trail.
            audit: true,
            limits: Limits::default(),
        };
        Ok(ExecPlan { password, hosts, acl: (args.exec_user.clone(), entry) })
    }

    /// The genesis settings: every managed host and the principal's ACL entry.
    pub fn settings(&self) -> BTreeMap<String, String> {
        let mut settings = BTreeMap::new();
        for (name, keys, address) in &self.hosts {
            let host = ManagedHost { address: address.to_string(), identity: keys.public() };
            settings.insert(format!("{HOST_PREFIX}{name}"), host.to_setting());
        }
        let (principal, entry) = &self.acl;
        settings.insert(format!("{ACL_PREFIX}{principal}"), acl_setting(entry));
        settings
    }

    /// Writes the site: the host keys and roles on the `exec` member, the gateway role on m0,
    /// the KDC (its own key, the principal's hash in its store) on its member. Returns the
    /// KDC's public keys.
    pub fn write(
        &self,
        args: &Args,
        dir: &Path,
        m0: &NodeKeys,
        gateway: SocketAddr,
        rng: &mut SeededRng,
    ) -> anyhow::Result<cohort_core::PublicIdentity> {
        let exec_dir = dir.join(EXEC_MEMBER);
        std::fs::create_dir_all(exec_dir.join("hosts"))?;
        let mut exec_hosts = Vec::new();
        for (name, keys, address) in &self.hosts {
            let key_file = std::path::PathBuf::from("hosts").join(format!("{name}.key"));
            keyfile::write_key_file(&exec_dir.join(&key_file), keys, false)?;
            exec_hosts.push(ExecHostConfig { name: name.clone(), listen: *address, key_file });
        }
        let m0_public = key_ref(m0);
        let m0_dir = dir.join("m0");
        // The KDC lives on another member when there is one, so the gateway's node holds no
        // password hash and no ticket-signing key at all.
        let kdc_dir = dir.join(kdc_member(args));
        let kdc_keys = NodeKeys::generate(rng);
        keyfile::write_key_file(&kdc_dir.join("kdc.key"), &kdc_keys, false)?;
        let kdc = key_ref(&kdc_keys);
        edit_node_config(&exec_dir, |config| {
            config.roles.push("exec".into());
            config.exec_hosts = exec_hosts;
            config.collector = Some(PeerRef {
                address: gateway,
                ed25519: m0_public.ed25519.clone(),
                x25519: m0_public.x25519.clone(),
            });
            config.trusted_kdc = Some(kdc.clone());
        })?;
        let mut store = Store::open(&kdc_dir.join("node.db"))?;
        store.set_principal(&self.acl.0, Some(&hash_password(&self.password, rng)?))?;
        let kdc_addr = kdc_address(args);
        let web = web_address(args).map(|listen| write_web_certificate(args, &m0_dir, listen)).transpose()?;
        edit_node_config(&m0_dir, |config| {
            config.roles.push("gateway".into());
            config.gateway = Some(GatewayConfig {
                listen: gateway,
                kdc: PeerRef { address: kdc_addr, ed25519: kdc.ed25519.clone(), x25519: kdc.x25519.clone() },
                web,
            });
        })?;
        edit_node_config(&kdc_dir, |config| {
            config.roles.push("kdc".into());
            config.kdc =
                Some(KdcConfig { listen: kdc_addr, key_file: "kdc.key".into(), gateways: vec![m0_public] });
        })?;
        Ok(kdc_keys.public())
    }
}

/// The member that hosts the managed hosts' exec daemons: a member, so hosts and ACLs reach it
/// through the configuration agreement.
pub const EXEC_MEMBER: &str = "exec";

/// The member whose node runs the KDC: m1 when there is one, else m0.
pub fn kdc_member(args: &Args) -> &'static str {
    if args.members >= 2 { "m1" } else { "m0" }
}

fn edit_node_config(dir: &Path, edit: impl FnOnce(&mut NodeConfig)) -> anyhow::Result<()> {
    let path = dir.join("node.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("could not read {}", path.display()))?;
    let mut config: NodeConfig =
        toml::from_str(&text).with_context(|| format!("{} does not parse", path.display()))?;
    edit(&mut config);
    std::fs::write(&path, config.to_toml()).with_context(|| format!("could not write {}", path.display()))
}
