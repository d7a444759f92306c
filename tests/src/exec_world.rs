//! An in-memory world for parallel secure execution: a KDC and gateway, N exec daemons with an
//! ACL, an audit collector, and simulated processes, all wired by a message pump. Wall-clock
//! time is a value the test sets. Deterministic from its seed.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use cohort_core::exec::acl::{Acl, AclEntry};
use cohort_core::exec::audit::{AuditCollector, ChainEntry, CollectorInput, CollectorOutput};
use cohort_core::exec::daemon::{DaemonInput, DaemonOutput, ExecDaemon, ExecRequest, HostWire, ProcessEnd};
use cohort_core::exec::gateway::{
    ClientEvent, ClientRequest, ExecCommand, GATEWAY_AUDIT_NAME, Gateway, GatewayInput, GatewayOutput,
};
use cohort_core::exec::kdc::{Kdc, KdcSettings, hash_password};
use cohort_core::exec::ticket::Credential;
use cohort_core::rng::{fork, seeded};
use cohort_core::signed::Signed;
use cohort_core::{Instant, Machine, NodeKeys, Now, PublicIdentity, WallClock};

pub const PASSWORD: &str = "correct horse battery staple";
pub const START_WALL: u64 = 1_900_000_000_000;

/// A process as the simulation runs it: what it prints and how it ends.
fn simulate(argv: &[String]) -> (Vec<u8>, Option<ProcessEnd>) {
    match argv.first().map(String::as_str) {
        Some("echo") => (format!("{}\n", argv[1..].join(" ")).into_bytes(), Some(ProcessEnd::Exited(0))),
        Some("uname") => (b"Linux\n".to_vec(), Some(ProcessEnd::Exited(0))),
        Some("false") => (Vec::new(), Some(ProcessEnd::Exited(1))),
        // Three MiB at once, more than any cap keeps.
        Some("spew") => (vec![b'y'; 3 * 1024 * 1024], Some(ProcessEnd::Exited(0))),
        // Anything else hangs until killed.
        _ => (b"started\n".to_vec(), None),
    }
}

pub struct ExecWorld {
    pub gateway: Gateway,
    pub daemons: Vec<ExecDaemon>,
    pub host_keys: Vec<NodeKeys>,
    pub collector: AuditCollector,
    pub chain: Vec<ChainEntry>,
    pub local_audit: Vec<Vec<cohort_core::exec::audit::AuditRecord>>,
    pub spawned: Vec<Vec<Vec<String>>>,
    pub client_events: BTreeMap<u64, Vec<ClientEvent>>,
    pub client_keys: BTreeMap<u64, [u8; 32]>,
    pub now: Instant,
    pub wall: WallClock,
    /// Hosts that cannot be reached.
    pub down: Vec<usize>,
    /// Whether the collector answers.
    pub collector_up: bool,
    sessions: BTreeMap<u64, usize>,
    pending_acks: VecDeque<(usize, u64)>,
    rng: cohort_core::rng::SeededRng,
    kdc_public: PublicIdentity,
}

impl std::fmt::Debug for ExecWorld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecWorld").field("hosts", &self.daemons.len()).finish_non_exhaustive()
    }
}

pub fn host_name(i: usize) -> String {
    format!("h{:02}", i + 1)
}

impl ExecWorld {
    pub fn new(hosts: usize, seed: u64) -> ExecWorld {
        let mut rng = seeded(seed);
        let kdc_keys = NodeKeys::generate(&mut rng);
        let host_keys: Vec<NodeKeys> = (0..hosts).map(|_| NodeKeys::generate(&mut rng)).collect();
        let mut hash_rng = fork(&mut rng);
        let principals: BTreeMap<String, String> = ["alice", "bob"]
            .iter()
            .map(|p| ((*p).to_owned(), hash_password(PASSWORD, &mut hash_rng).expect("hashes")))
            .collect();
        let host_table: BTreeMap<String, PublicIdentity> =
            host_keys.iter().enumerate().map(|(i, k)| (host_name(i), k.public())).collect();
        let mut signers = host_table.clone();
        signers.insert(GATEWAY_AUDIT_NAME.into(), kdc_keys.public());
        let kdc = Kdc::new(kdc_keys.clone(), principals, host_table, KdcSettings::default(), fork(&mut rng));
        let gateway = Gateway::new(kdc, kdc_keys.clone(), fork(&mut rng));
        let mut acl = Acl::default();
        acl.principals.insert(
            "alice".into(),
            AclEntry {
                run_as: ["alice".to_owned()].into(),
                commands: ["echo", "uname", "false", "sleep", "spew"]
                    .iter()
                    .map(|c| (*c).to_owned())
                    .collect(),
                shell: false,
            },
        );
        let wall = WallClock(START_WALL);
        let daemons = host_keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                ExecDaemon::new(
                    host_name(i),
                    k.clone(),
                    acl.clone(),
                    Default::default(),
                    WallClock(START_WALL - 60_000),
                )
            })
            .collect();
        ExecWorld {
            gateway,
            daemons,
            local_audit: vec![Vec::new(); hosts],
            spawned: vec![Vec::new(); hosts],
            host_keys,
            collector: AuditCollector::new(None, signers),
            chain: Vec::new(),
            client_events: BTreeMap::new(),
            client_keys: BTreeMap::new(),
            now: Instant::from_nanos(1_000_000_000),
            wall,
            down: Vec::new(),
            collector_up: true,
            sessions: BTreeMap::new(),
            pending_acks: VecDeque::new(),
            rng,
            kdc_public: kdc_keys.public(),
        }
    }

    pub fn kdc_public(&self) -> PublicIdentity {
        self.kdc_public
    }

    pub fn new_client_key(&mut self, client: u64) -> [u8; 32] {
        let key = NodeKeys::generate(&mut self.rng).public().agreement;
        self.client_keys.insert(client, key);
        key
    }

    pub fn login(&mut self, client: u64, principal: &str, password: &str) -> Option<Signed<Credential>> {
        let client_key = self.new_client_key(client);
        let request = ClientRequest::Login { principal: principal.into(), password: password.into() };
        self.gateway_in(GatewayInput::Client { client, client_key, request });
        self.pump();
        self.client_events.get(&client)?.iter().find_map(|e| match e {
            ClientEvent::LoggedIn { credential } => Some(credential.clone()),
            _ => None,
        })
    }

    pub fn exec(
        &mut self,
        client: u64,
        client_key: [u8; 32],
        credential: Signed<Credential>,
        hosts: Vec<String>,
        argv: &[&str],
    ) {
        let command = ExecCommand {
            credential,
            hosts,
            run_as: "alice".into(),
            argv: argv.iter().map(|a| (*a).to_owned()).collect(),
            fanout: 8,
            t1_ms: 16_000,
            t2_ms: 32_000,
            t3_ms: 2_000,
            max_output: 1024 * 1024,
        };
        self.gateway_in(GatewayInput::Client {
            client,
            client_key,
            request: ClientRequest::Exec(Box::new(command)),
        });
        self.pump();
    }

    pub fn events(&self, client: u64) -> &[ClientEvent] {
        self.client_events.get(&client).map(Vec::as_slice).unwrap_or_default()
    }

    pub fn gateway_in(&mut self, input: GatewayInput) {
        self.gateway.handle(Now::new(self.now, self.wall), input);
    }

    pub fn daemon_in(&mut self, host: usize, input: DaemonInput) {
        self.daemons[host].handle(Now::new(self.now, self.wall), input);
    }

    /// Sends a request straight to a host's daemon (as an attacker or a test would).
    pub fn direct(&mut self, host: usize, session: u64, request: ExecRequest) {
        self.daemon_in(
            host,
            DaemonInput::Wire { conn: session, message: HostWire::Start(Box::new(request)) },
        );
        self.pump();
    }

    /// Hands the collector a record as if a host had sent it.
    pub fn submit_audit(&mut self, record: Signed<cohort_core::exec::audit::AuditRecord>) {
        let now = Now::new(self.now, self.wall);
        self.collector.handle(now, CollectorInput::Submit { ack: u64::MAX - 1, record });
        self.pump();
    }

    /// Advances both clocks and fires due timers.
    pub fn advance(&mut self, by: Duration) {
        self.now = self.now + by;
        self.wall = WallClock(self.wall.0 + by.as_millis() as u64);
        self.gateway_in(GatewayInput::Timeout);
        for h in 0..self.daemons.len() {
            self.daemon_in(h, DaemonInput::Timeout);
        }
        self.pump();
    }

    /// Moves messages until every machine is quiet.
    pub fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(out) = self.gateway.poll_output() {
                moved = true;
                self.route_gateway(out);
            }
            for h in 0..self.daemons.len() {
                while let Some(out) = self.daemons[h].poll_output() {
                    moved = true;
                    self.route_daemon(h, out);
                }
            }
            while let Some(out) = self.collector.poll_output() {
                moved = true;
                match out {
                    CollectorOutput::Append(entry) => {
                        let index = entry.index;
                        self.chain.push(*entry);
                        self.collector
                            .handle(Now::new(self.now, self.wall), CollectorInput::Persisted { index });
                    }
                    CollectorOutput::Ack { ack, .. } => {
                        if let Some((host, token)) =
                            self.pending_acks.iter().copied().find(|(h, t)| (*h as u64) << 32 | *t == ack)
                        {
                            self.pending_acks.retain(|p| *p != (host, token));
                            self.daemon_in(host, DaemonInput::AuditAcked { token });
                        }
                    }
                    CollectorOutput::Refused { ack, .. } => {
                        self.pending_acks.retain(|(h, t)| (*h as u64) << 32 | *t != ack);
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn route_gateway(&mut self, out: GatewayOutput) {
        match out {
            GatewayOutput::ToClient { client, event } => {
                self.client_events.entry(client).or_default().push(event)
            }
            GatewayOutput::CloseClient { .. } => {}
            GatewayOutput::Audit(record) => {
                if self.collector_up {
                    let now = Now::new(self.now, self.wall);
                    self.collector.handle(now, CollectorInput::Submit { ack: u64::MAX, record });
                }
            }
            GatewayOutput::HostStart { session, host, identity, request } => {
                let Some(index) = (0..self.daemons.len()).find(|i| host_name(*i) == host) else { return };
                assert_eq!(identity, self.host_keys[index].public(), "the gateway pins the host's key");
                if self.down.contains(&index) {
                    let reason = "connection refused".to_owned();
                    self.gateway_in(GatewayInput::HostLost { session, reason });
                    return;
                }
                self.sessions.insert(session, index);
                let message = HostWire::Start(Box::new(request));
                self.daemon_in(index, DaemonInput::Wire { conn: session, message });
            }
            GatewayOutput::HostDone { session } => {
                self.sessions.remove(&session);
            }
            GatewayOutput::HostCancel { session, reason } => {
                if let Some(&host) = self.sessions.get(&session) {
                    self.daemon_in(
                        host,
                        DaemonInput::Wire { conn: session, message: HostWire::Cancel { reason } },
                    );
                }
            }
        }
    }

    fn route_daemon(&mut self, host: usize, out: DaemonOutput) {
        match out {
            DaemonOutput::PersistAudit { token, record } => {
                self.local_audit[host].push(record);
                self.daemon_in(host, DaemonInput::AuditPersisted { token });
            }
            DaemonOutput::SubmitAudit { token, record } => {
                if self.collector_up {
                    self.pending_acks.push_back((host, token));
                    let ack = (host as u64) << 32 | token;
                    self.collector
                        .handle(Now::new(self.now, self.wall), CollectorInput::Submit { ack, record });
                }
            }
            DaemonOutput::Spawn { session, argv, .. } => {
                self.spawned[host].push(argv.clone());
                let (output, end) = simulate(&argv);
                if !output.is_empty() {
                    self.daemon_in(host, DaemonInput::Output { session, stderr: false, bytes: output });
                }
                if let Some(end) = end {
                    self.daemon_in(host, DaemonInput::Exited { session, end });
                }
            }
            DaemonOutput::Kill { session } => {
                self.daemon_in(host, DaemonInput::Exited { session, end: ProcessEnd::Signalled(9) });
            }
            DaemonOutput::Reply { session, event } => {
                if self.sessions.contains_key(&session) {
                    if event.is_final() {
                        self.sessions.remove(&session);
                    }
                    self.gateway_in(GatewayInput::Host { session, event });
                }
            }
            DaemonOutput::Done { .. } => {}
        }
    }

    pub fn total_spawned(&self) -> usize {
        self.spawned.iter().map(Vec::len).sum()
    }
}
