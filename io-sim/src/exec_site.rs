//! A parallel-execution site on the one turmoil host driver: a gateway node (its KDC and audit
//! collector inside, and a one-member cluster whose installed configuration gives it its groups)
//! and one exec node playing N managed hosts that run simulated commands. A scenario scripts a
//! client ([`SiteClient`]: log in, run, walk away from a run, talk to a host directly as an
//! attacker would) and reads back what the nodes kept ([`SiteRun`]). Owns the wiring and what it
//! observes; every rule is the nodes'.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cohort_core::exec::acl::{Acl, AclEntry};
use cohort_core::exec::audit::{AuditRecord, ChainEntry};
use cohort_core::exec::daemon::DaemonSettings;
use cohort_core::exec::directory::{
    ACL_PREFIX, ExecDirectory, GROUP_PREFIX, HOST_PREFIX, ManagedHost, acl_setting,
};
use cohort_core::exec::gateway::{ClientEvent, HeldState};
use cohort_core::exec::kdc::{Kdc, KdcSettings, hash_password};
use cohort_core::member::genesis::{genesis_config, genesis_records};
use cohort_core::member::{MemberInfo, MemberSettings};
use cohort_core::node::{
    AuditLinkRole, ConnLimits, ExecHostRole, GatewayRole, KdcRole, MemberRole, NodeSetup, Record, WebRole,
};
use cohort_core::rng::{fork, seeded};
use cohort_core::trace::Trace;
use cohort_core::web::WebLimits;
use cohort_core::{NodeKeys, PublicIdentity};

use crate::browser::SimWeb;
use crate::node_host::{self, NodeHostContext, Probe, SetupFn, SharedRecords, SharedTrace};
use crate::observer::Observer;
use crate::storage::SimDisk;

/// Every principal's password.
pub const PASSWORD: &str = "correct horse battery staple";
pub const GATEWAY_PORT: u16 = 7300;
/// The KDC's port, on its own simulated machine `kdc`.
pub const KDC_PORT: u16 = 7400;
/// The web console's port on the gateway's machine.
pub const WEB_PORT: u16 = 8443;
/// Where the simulated commands are, as an ACL names them: `/usr/bin/echo`.
pub const SIM_BIN: &str = "/usr/bin";
const MEMBER_PORT: u16 = 7290;
const ADMIN_PORT: u16 = 7291;
/// A host that exists and listens on nothing: connecting to it is refused.
const VOID: &str = "void";
/// A machine that accepts connections and never answers.
const MUTE: &str = "mute";

mod client;

pub use client::{Login, SiteClient};

/// `h01`, `h02`, …: the name of managed host `i`.
pub fn host_name(i: usize) -> String {
    format!("h{:02}", i + 1)
}

fn host_port(i: usize) -> u16 {
    7301 + u16::try_from(i).unwrap_or(u16::MAX - 7301)
}

/// What a site is made of.
#[derive(Debug, Clone)]
pub struct SiteSpec {
    pub hosts: usize,
    pub seed: u64,
    /// The ACL every host holds.
    pub acl: Acl,
    /// Principals the KDC knows, all with [`PASSWORD`].
    pub principals: Vec<String>,
    pub kdc: KdcSettings,
    /// Hosts the gateway knows whose address answers nothing.
    pub down: BTreeSet<usize>,
    /// Hosts whose address accepts a connection and then never says a word.
    pub mute: BTreeSet<usize>,
    /// When false the exec node sends its audit records where no collector listens.
    pub collector_reachable: bool,
    /// `group.NAME` settings of the configuration the gateway's member installs.
    pub groups: BTreeMap<String, String>,
    /// Simulated time the scenario may take.
    pub limit: Duration,
    /// When false the gateway asks for the KDC where nothing listens.
    pub kdc_reachable: bool,
    /// The gateway's machine crashes at `.0` and comes back `.1` later.
    pub gateway_outage: Option<(Duration, Duration)>,
    /// Hosts the exec node's installed configuration no longer lists (the gateway's and the
    /// KDC's still do): their daemons must refuse on their own.
    pub unlisted: BTreeSet<usize>,
    /// Whether the gateway serves the web console (browsers: [`SiteClient::browser`]).
    pub web: bool,
}

impl SiteSpec {
    /// `hosts` hosts; alice may run the simulated commands (see [`crate::processes`]) as alice,
    /// each named by its absolute path under [`SIM_BIN`] (`/usr/bin/echo`); bob is a principal
    /// with no ACL entry.
    pub fn new(hosts: usize, seed: u64) -> SiteSpec {
        let mut acl = Acl::default();
        let commands = ["echo", "uname", "false", "sleep", "hang", "say", "tick", "spew", "when", "mixed"];
        acl.principals.insert(
            "alice".into(),
            AclEntry {
                run_as: ["alice".to_owned()].into(),
                commands: commands.iter().map(|c| format!("{SIM_BIN}/{c}")).collect(),
                shell: false,
                ..AclEntry::default()
            },
        );
        SiteSpec {
            hosts,
            seed,
            acl,
            principals: vec!["alice".into(), "bob".into()],
            kdc: KdcSettings::default(),
            down: BTreeSet::new(),
            mute: BTreeSet::new(),
            collector_reachable: true,
            groups: BTreeMap::new(),
            limit: Duration::from_secs(300),
            kdc_reachable: true,
            gateway_outage: None,
            unlisted: BTreeSet::new(),
            web: false,
        }
    }
}

/// What the probes read from the nodes' roles, as of the last input each handled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SiteState {
    pub gateway: HeldState,
    /// Records the collector refused.
    pub collector_refused: u64,
    /// Sessions open across the exec node's hosts.
    pub host_sessions: usize,
    /// Messages the hosts refused as out of protocol.
    pub host_protocol_errors: u64,
}

/// What a scenario leaves behind.
#[derive(Debug)]
pub struct SiteRun {
    pub trace: Trace,
    /// The first invariant broken during the run.
    pub violation: Option<String>,
    /// What the client script returned.
    pub script: Result<(), String>,
    /// The argv of every command spawned, in order (from the trace).
    pub spawned: Vec<String>,
    /// Every file a copy placed, as the trace shows it (`#id PATH mode M owner U SIZE#DIGEST`).
    pub placed: Vec<String>,
    /// The records each host made durable before acting.
    pub local_audit: Vec<AuditRecord>,
    /// The collector's chain.
    pub chain: Vec<ChainEntry>,
    pub state: SiteState,
}

impl SiteRun {
    /// The reason of the last denial `host` recorded.
    pub fn denial(&self, host: &str) -> Option<&str> {
        self.local_audit.iter().rev().filter(|r| r.host == host).find_map(|r| match &r.decision {
            cohort_core::exec::audit::AuditDecision::Denied { reason } => Some(reason.as_str()),
            _ => None,
        })
    }

    /// Whether the chain holds a denial whose reason contains `needle`.
    pub fn denied_in_chain(&self, needle: &str) -> bool {
        self.chain.iter().any(|e| {
            matches!(&e.record.decision, cohort_core::exec::audit::AuditDecision::Denied { reason } if reason.contains(needle))
        })
    }
}

/// Each host's result among a run's events, by host name.
pub fn host_results(events: &[ClientEvent]) -> Vec<cohort_core::exec::gateway::HostResult> {
    let mut results: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Host(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    results.sort_by(|a, b| a.host.cmp(&b.host));
    results
}

/// A built site, ready for one client script.
pub struct Site {
    sim: turmoil::Sim<'static>,
    gateway_outage: Option<(Duration, Duration)>,
    client: SiteClient,
    pub host_keys: Vec<NodeKeys>,
    trace: SharedTrace,
    records: SharedRecords,
    observer: Observer,
    state: Arc<Mutex<SiteState>>,
}

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Site").field("hosts", &self.host_keys.len()).finish_non_exhaustive()
    }
}

impl Site {
    pub fn new(spec: &SiteSpec) -> Result<Site, String> {
        let mut rng = seeded(spec.seed);
        let gw_keys = NodeKeys::generate(&mut rng);
        let exec_keys = NodeKeys::generate(&mut rng);
        // The KDC's own key, on its own machine: the gateway never holds it.
        let kdc_keys = NodeKeys::generate(&mut rng);
        let operator = NodeKeys::generate(&mut rng);
        let host_keys: Vec<NodeKeys> = (0..spec.hosts).map(|_| NodeKeys::generate(&mut rng)).collect();
        let names: Vec<String> = (0..spec.hosts).map(host_name).collect();
        let table: BTreeMap<String, PublicIdentity> =
            names.iter().cloned().zip(host_keys.iter().map(NodeKeys::public)).collect();
        let mut hash_rng = fork(&mut rng);
        let principals: BTreeMap<String, String> = spec
            .principals
            .iter()
            .map(|p| Ok((p.clone(), hash_password(PASSWORD, &mut hash_rng).map_err(|e| e.to_string())?)))
            .collect::<Result<_, String>>()?;
        let hosts: BTreeMap<String, ManagedHost> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let machine = if spec.down.contains(&i) {
                    VOID
                } else if spec.mute.contains(&i) {
                    MUTE
                } else {
                    "exec"
                };
                let host = ManagedHost {
                    address: format!("{machine}:{}", host_port(i)),
                    identity: host_keys[i].public(),
                };
                (name.clone(), host)
            })
            .collect();
        // What the configuration says: the gateway's member installs it from the genesis; the
        // KDC and exec nodes, which are not members here, are given it.
        let directory = ExecDirectory {
            hosts: hosts.clone(),
            acl: spec.acl.clone(),
            groups: spec.groups.clone(),
            ..ExecDirectory::default()
        };
        let trace: SharedTrace = Arc::new(Mutex::new(Trace::new()));
        let records = SharedRecords::default();
        let observer = Observer::default();
        let state = Arc::new(Mutex::new(SiteState::default()));
        let mut sim = crate::clock::simulation(spec.seed, spec.limit, Duration::from_millis(5));

        // The gateway's node: gateway, collector, and a one-member cluster for its groups.
        let mut settings: BTreeMap<String, String> =
            spec.groups.iter().map(|(g, set)| (format!("{GROUP_PREFIX}{g}"), set.clone())).collect();
        for (name, host) in &hosts {
            settings.insert(format!("{HOST_PREFIX}{name}"), host.to_setting());
        }
        for (principal, entry) in &spec.acl.principals {
            settings.insert(format!("{ACL_PREFIX}{principal}"), acl_setting(entry));
        }
        let me = MemberInfo {
            name: "gw".into(),
            identity: gw_keys.public(),
            address: format!("gw:{MEMBER_PORT}"),
        };
        let config = genesis_config("site", "ops", &operator, [me], settings);
        let record = genesis_records(&config, &operator, &mut rng)
            .map_err(|e| e.to_string())?
            .remove(&gw_keys.node_id())
            .ok_or("no genesis record for the gateway")?;
        let gw = gw_keys.clone();
        let kdc_public = kdc_keys.public();
        let kdc_machine = if spec.kdc_reachable { "kdc" } else { VOID };
        let web_role = spec.web.then(|| WebRole {
            listen: format!("0.0.0.0:{WEB_PORT}"),
            limits: WebLimits::default(),
            policy_master: None,
        });
        let web = spec.web.then(SimWeb::default);
        let setup: SetupFn = Arc::new(move |stored| NodeSetup {
            member: stored.map(|record| MemberRole {
                record,
                settings: MemberSettings::default(),
                listen: format!("0.0.0.0:{MEMBER_PORT}"),
                admin_listen: format!("0.0.0.0:{ADMIN_PORT}"),
                admin_limits: ConnLimits::default(),
                lookup_socket: None,
            }),
            gateway: Some(GatewayRole {
                listen: format!("0.0.0.0:{GATEWAY_PORT}"),
                keys: gw.clone(),
                kdc_addr: format!("{kdc_machine}:{KDC_PORT}"),
                kdc: kdc_public,
                chain_tail: None,
                limits: ConnLimits::default(),
                web: web_role.clone(),
            }),
            ..NodeSetup::new(gw.clone())
        });
        let seen = state.clone();
        let probe: Probe = Arc::new(move |node| {
            let mut state = seen.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(gateway) = node.gateway() {
                state.gateway = gateway.held_state();
            }
            if let Some(collector) = node.collector() {
                state.collector_refused = collector.refused();
            }
        });
        let ctx = NodeHostContext {
            trace: Some(trace.clone()),
            records: records.clone(),
            observer: observer.clone(),
            probe: Some(probe),
            web: web.clone(),
            ..NodeHostContext::new("gw", gw_keys.clone(), setup, SimDisk::with_record(record), spec.seed ^ 1)
        };
        sim.host("gw", move || node_host::run(ctx.clone()));

        // The KDC's node: the KDC alone, answering the gateway only.
        let (kdc_principals, kdc_hosts, kdc_settings) = (principals.clone(), table.clone(), spec.kdc);
        let kdc_rng = fork(&mut rng);
        let (kk, gateway_public, kdc_directory) = (kdc_keys.clone(), gw_keys.public(), directory.clone());
        let setup: SetupFn = Arc::new(move |_| NodeSetup {
            kdc: Some(KdcRole {
                listen: format!("0.0.0.0:{KDC_PORT}"),
                kdc: Kdc::new(
                    kk.clone(),
                    kdc_principals.clone(),
                    kdc_hosts.clone(),
                    kdc_settings,
                    kdc_rng.clone(),
                ),
                gateways: vec![gateway_public],
                limits: ConnLimits::default(),
            }),
            exec_directory: kdc_directory.clone(),
            ..NodeSetup::new(kk.clone())
        });
        let ctx = NodeHostContext {
            trace: Some(trace.clone()),
            records: records.clone(),
            observer: observer.clone(),
            ..NodeHostContext::new("kdc", kdc_keys.clone(), setup, SimDisk::default(), spec.seed ^ 3)
        };
        sim.host("kdc", move || node_host::run(ctx.clone()));

        // The exec node playing every managed host.
        let roles: Vec<ExecHostRole> = names
            .iter()
            .enumerate()
            .map(|(i, name)| ExecHostRole {
                name: name.clone(),
                keys: host_keys[i].clone(),
                kdc: kdc_keys.public(),
                listen: format!("0.0.0.0:{}", host_port(i)),
                settings: DaemonSettings::default(),
                limits: ConnLimits::default(),
            })
            .collect();
        let machine = if spec.collector_reachable { "gw" } else { VOID };
        let audit = AuditLinkRole { addr: format!("{machine}:{GATEWAY_PORT}"), collector: gw_keys.public() };
        let ek = exec_keys.clone();
        let mut exec_directory = directory.clone();
        for i in &spec.unlisted {
            exec_directory.hosts.remove(&host_name(*i));
        }
        let setup: SetupFn = Arc::new(move |_| NodeSetup {
            exec_hosts: roles.clone(),
            audit_link: Some(audit.clone()),
            exec_directory: exec_directory.clone(),
            ..NodeSetup::new(ek.clone())
        });
        let seen = state.clone();
        let probe: Probe = Arc::new(move |node| {
            let mut state = seen.lock().unwrap_or_else(PoisonError::into_inner);
            state.host_sessions = node.exec_daemons().map(|d| d.sessions()).sum();
            state.host_protocol_errors = node.exec_daemons().map(|d| d.protocol_errors()).sum();
        });
        let ctx = NodeHostContext {
            trace: Some(trace.clone()),
            records: records.clone(),
            observer: observer.clone(),
            probe: Some(probe),
            ..NodeHostContext::new("exec", exec_keys, setup, SimDisk::default(), spec.seed ^ 2)
        };
        sim.host("exec", move || node_host::run(ctx.clone()));
        // Registered so that connecting there is refused rather than unknown.
        sim.host(VOID, || async { std::future::pending::<turmoil::Result>().await });
        let mute_ports: Vec<u16> = spec.mute.iter().map(|i| host_port(*i)).collect();
        sim.host(MUTE, move || {
            let ports = mute_ports.clone();
            async move {
                for port in ports {
                    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", port)).await?;
                    tokio::spawn(async move {
                        let mut held = Vec::new();
                        while let Ok((stream, _)) = listener.accept().await {
                            held.push(stream);
                        }
                    });
                }
                std::future::pending::<turmoil::Result>().await
            }
        });

        // The test's own copy of the KDC: what an attacker holding the KDC's key could mint.
        let client_kdc = Kdc::new(kdc_keys.clone(), principals, table, spec.kdc, fork(&mut rng));
        let client = SiteClient {
            gateway: gw_keys.public(),
            hosts: host_keys.iter().map(NodeKeys::public).collect(),
            kdc: Arc::new(Mutex::new(client_kdc)),
            rng: Arc::new(Mutex::new(fork(&mut rng))),
            web,
        };
        let gateway_outage = spec.gateway_outage;
        Ok(Site { sim, gateway_outage, client, host_keys, trace, records, observer, state })
    }

    /// For tests: builds the site for `spec`, runs `script` as its client with 3 s to settle,
    /// and panics (failing the calling test) if an invariant broke or the script failed.
    pub fn run_checked<F>(spec: &SiteSpec, script: impl FnOnce(SiteClient) -> F) -> SiteRun
    where
        F: Future<Output = Result<(), String>> + 'static,
    {
        let site = Site::new(spec).expect("the site builds");
        let run = site.run(Duration::from_secs(3), script);
        assert_eq!(run.violation, None, "an invariant broke");
        assert_eq!(run.script, Ok(()), "the client script failed");
        run
    }

    /// Runs `script` as the site's client (after the nodes have had half a second to start),
    /// then lets the site settle for `settle`, and returns what the nodes kept.
    pub fn run<F>(mut self, settle: Duration, script: impl FnOnce(SiteClient) -> F) -> SiteRun
    where
        F: Future<Output = Result<(), String>> + 'static,
    {
        let outcome = Arc::new(Mutex::new(None::<Result<(), String>>));
        let done = outcome.clone();
        let future = script(self.client.clone());
        self.sim.client("client", async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let result = future.await;
            *done.lock().unwrap_or_else(PoisonError::into_inner) = Some(result);
            tokio::time::sleep(settle).await;
            Ok(())
        });
        let mut down = false;
        loop {
            if let Some((at, span)) = self.gateway_outage {
                let now = self.sim.elapsed();
                if !down && now >= at {
                    self.sim.crash("gw");
                    down = true;
                } else if down && now >= at + span {
                    self.sim.bounce("gw");
                    self.gateway_outage = None;
                }
            }
            match self.sim.step() {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => {
                    self.observer
                        .report_violation(self.sim.elapsed(), format!("the simulation stopped: {e}"));
                    break;
                }
            }
        }
        let trace = self.trace.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let spawned = trace
            .lines()
            .iter()
            .filter_map(|l| l.split_once("-> Spawn ").map(|(_, rest)| rest.to_owned()))
            .collect();
        let placed = trace
            .lines()
            .iter()
            .filter_map(|l| l.split_once("-> PlaceFile ").map(|(_, rest)| rest.to_owned()))
            .collect();
        let records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        let local_audit = records
            .iter()
            .filter_map(|(_, r)| match r {
                Record::LocalAudit(a) => Some(a.clone()),
                _ => None,
            })
            .collect();
        let chain = records
            .iter()
            .filter_map(|(_, r)| match r {
                Record::AuditEntry { entry: e, .. } => Some((**e).clone()),
                _ => None,
            })
            .collect();
        let script = outcome
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .unwrap_or_else(|| Err("the client script never finished".into()));
        SiteRun {
            trace,
            violation: self.observer.violation(),
            script,
            spawned,
            placed,
            local_audit,
            chain,
            state: self.state.lock().unwrap_or_else(PoisonError::into_inner).clone(),
        }
    }
}
