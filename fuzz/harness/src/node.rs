//! The whole node machine under a fuzzer. One node plays a gateway (with the audit collector), a
//! KDC and two managed hosts, whose audit link leads back to its own gateway; its own outbound
//! connections reach its own listeners. The fuzzer's input is read (with `arbitrary`) as a
//! sequence of what a driver may observe: peers dialling any listener with an operator's key, the
//! gateway's or a stranger's, then sending whole messages on their channel (a login, a run, any
//! bytes) or raw bytes beside it, hanging up; time passing; records made durable; children
//! starting, writing, exiting; files written. After every step the harness checks what the
//! simulation checks: nothing is sent while a record waits to be durable, no command runs
//! without a durable `Run` record the ACL allows, the audit chain verifies, the node settles, and
//! the same steps give the same outputs twice.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use cohort_core::channel::{Channel, ChannelConfig, ChannelInput, ChannelOutput, TrustSet};
use cohort_core::exec::acl::{Acl, AclEntry};
use cohort_core::exec::audit::{AuditDecision, ChainEntry, verify_chain};
use cohort_core::exec::daemon::{DaemonSettings, ProcessEnd};
use cohort_core::exec::directory::{ExecDirectory, ManagedHost};
use cohort_core::exec::kdc::{Kdc, KdcSettings};
use cohort_core::exec::task::Task;
use cohort_core::exec::wire::{ClientEvent, ClientRequest, ExecCommand, GatewayReply, GatewayWire};
use cohort_core::node::{
    AuditLinkRole, AuditRows, ConnId, ConnLimits, ExecHostRole, GatewayRole, Input, KdcRole, ListenerId,
    Node, NodeSetup, Output, PersistId, Record, WebRole,
};
use cohort_core::rng::{fork, seeded};
use cohort_core::web::{Method, RequestId, WebLimits, WebRequest};
use cohort_core::{Machine, NodeKeys, Now, PublicIdentity, WallClock};

/// The password of the one principal, `alice`.
const PASSWORD: &str = "fuzz";
/// Steps one input may take, and node inputs one step may cause, before the run counts as hung.
const MAX_STEPS: usize = 64;
const MAX_INPUTS_PER_STEP: usize = 20_000;

/// What a driver may observe, as the fuzzer chooses it.
#[derive(Arbitrary, Debug)]
enum Step {
    /// A peer dials listener `listener` (of the node's, in the order it listened) with key
    /// `key`: 0 an operator's, 1 the gateway's (the one the KDC admits), else a stranger's.
    Dial {
        listener: u8,
        key: u8,
    },
    /// Peer `peer` sends a whole message on its channel.
    Send {
        peer: u8,
        message: Message,
    },
    /// Bytes on peer `peer`'s stream as they are, beside its channel.
    Raw {
        peer: u8,
        bytes: Vec<u8>,
    },
    Hangup {
        peer: u8,
    },
    Wait {
        ms: u16,
    },
    /// The driver makes durable every record the node handed out.
    Persist,
    Child {
        which: u8,
        event: ChildStep,
    },
    FileDone {
        which: u8,
        ok: bool,
    },
    /// A browser's or script's request to the web console, as the HTTPS front parsed it.
    Web(WebCall),
    /// The front hands on, or loses, an answer it was given.
    WebEnd {
        which: u8,
        gone: bool,
    },
}

/// A web request: one of the console's paths (or any), any query, body and cookie, with the
/// session cookie the last login set when `with_session`.
#[derive(Arbitrary, Debug)]
struct WebCall {
    post: bool,
    path: u8,
    other_path: String,
    query: String,
    body: Vec<u8>,
    form: bool,
    cookie: Option<String>,
    with_session: bool,
}

const WEB_PATHS: [&str; 17] = [
    "/",
    "/login",
    "/logout",
    "/status",
    "/policy",
    "/audit",
    "/audit/verify",
    "/cancel",
    "/api/login",
    "/api/exec",
    "/api/expand",
    "/api/status",
    "/api/audit",
    "/api/audit/verify",
    "/api/policy",
    "/api/policy/history",
    "/api/runs/1",
];

#[derive(Arbitrary, Debug)]
enum Message {
    Login {
        right_password: bool,
    },
    /// A run of one of a few commands on some of the hosts, with the credential a login gave.
    Exec {
        command: u8,
        hosts: u8,
    },
    Bytes(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum ChildStep {
    Started,
    Output(Vec<u8>),
    Exited(i8),
    Failed,
}

/// Feeds the fuzzer's bytes to the node machine twice and compares what came out.
pub fn node(data: &[u8]) {
    let Ok(steps) = read_steps(data) else { return };
    let first = run(&steps);
    let second = run(&steps);
    assert!(first.log == second.log, "the same inputs gave different outputs");
}

fn read_steps(data: &[u8]) -> arbitrary::Result<Vec<Step>> {
    let mut input = Unstructured::new(data);
    let mut steps = Vec::new();
    while !input.is_empty() && steps.len() < MAX_STEPS {
        steps.push(Step::arbitrary(&mut input)?);
    }
    Ok(steps)
}

/// The fixed cast: the node's keys and what it plays.
struct Cast {
    node: NodeKeys,
    gateway: NodeKeys,
    kdc: NodeKeys,
    hosts: Vec<NodeKeys>,
    operator: NodeKeys,
    stranger: NodeKeys,
    /// The key each listener address presents.
    presents: BTreeMap<String, PublicIdentity>,
}

fn cast() -> Cast {
    let mut rng = seeded(7);
    let mut key = || NodeKeys::generate(&mut rng);
    let (node, gateway, kdc, operator, stranger) = (key(), key(), key(), key(), key());
    let hosts = vec![key(), key()];
    let mut presents = BTreeMap::new();
    presents.insert("gw:7000".to_owned(), gateway.public());
    presents.insert("gw:7001".to_owned(), kdc.public());
    for (i, host) in hosts.iter().enumerate() {
        presents.insert(format!("h{}:7100", i + 1), host.public());
    }
    Cast { node, gateway, kdc, hosts, operator, stranger, presents }
}

fn setup(cast: &Cast) -> NodeSetup {
    let hosts: BTreeMap<String, ManagedHost> = cast
        .hosts
        .iter()
        .enumerate()
        .map(|(i, k)| {
            (format!("h{}", i + 1), ManagedHost { address: format!("h{}:7100", i + 1), identity: k.public() })
        })
        .collect();
    let mut acl = Acl::default();
    let entry = AclEntry {
        run_as: ["alice".to_owned()].into(),
        commands: ["/usr/bin/echo".to_owned(), "/usr/bin/sleep".to_owned()].into(),
        ..AclEntry::default()
    };
    acl.principals.insert("alice".into(), entry);
    let table = hosts.iter().map(|(n, h)| (n.clone(), h.identity)).collect();
    let principals = [("alice".to_owned(), cheap_hash())].into();
    NodeSetup {
        kdc: Some(KdcRole {
            listen: "gw:7001".into(),
            kdc: Kdc::new(cast.kdc.clone(), principals, table, KdcSettings::default(), seeded(8)),
            gateways: vec![cast.gateway.public()],
            limits: ConnLimits::default(),
        }),
        gateway: Some(GatewayRole {
            listen: "gw:7000".into(),
            keys: cast.gateway.clone(),
            kdc_addr: "gw:7001".into(),
            kdc: cast.kdc.public(),
            chain_tail: None,
            limits: ConnLimits::default(),
            web: Some(WebRole {
                listen: "gw:8443".into(),
                limits: WebLimits::default(),
                policy_master: None,
            }),
        }),
        exec_hosts: cast
            .hosts
            .iter()
            .enumerate()
            .map(|(i, k)| ExecHostRole {
                name: format!("h{}", i + 1),
                keys: k.clone(),
                kdc: cast.kdc.public(),
                listen: format!("h{}:7100", i + 1),
                settings: DaemonSettings::default(),
                limits: ConnLimits::default(),
            })
            .collect(),
        audit_link: Some(AuditLinkRole { addr: "gw:7000".into(), collector: cast.gateway.public() }),
        exec_directory: ExecDirectory { hosts, acl, ..ExecDirectory::default() },
        ..NodeSetup::new(cast.node.clone())
    }
}

/// `PASSWORD` hashed with the least work Argon2 allows: the KDC checks a password with the
/// parameters its stored hash names, and a fuzzer must not spend its time there.
fn cheap_hash() -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let params = argon2::Params::new(8, 1, 1, None).expect("valid parameters");
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(&[7; 16]).expect("a salt");
    argon.hash_password(PASSWORD.as_bytes(), &salt).expect("hashes").to_string()
}

/// A peer the harness plays: its end of a connection to one of the node's listeners.
struct Peer {
    conn: ConnId,
    channel: Channel,
}

/// The driver the harness plays, with what the checks need.
struct World {
    node: Node,
    now: Now,
    /// Listeners by address, and in the order the node opened them.
    listeners: Vec<(String, ListenerId)>,
    peers: Vec<Peer>,
    /// The node's own connections to its own listeners: each end's other end.
    wires: BTreeMap<ConnId, ConnId>,
    next_inbound: u64,
    inputs: VecDeque<Input>,
    waiting: Vec<PersistId>,
    kept: Vec<Record>,
    chain: Vec<ChainEntry>,
    children: Vec<cohort_core::node::ChildId>,
    files: Vec<cohort_core::node::FileId>,
    spawned: usize,
    credential: Option<cohort_core::signed::Signed<cohort_core::exec::ticket::Credential>>,
    /// Web requests handed in, and answered but not yet sent or lost.
    next_request: u64,
    answering: Vec<RequestId>,
    /// The last session cookie a web answer set (`name=value`).
    session: Option<String>,
    rng: cohort_core::rng::SeededRng,
    /// Every output, written out: what two runs are compared by.
    log: Vec<String>,
}

/// Runs `steps` from a fresh node; the harness as the run left it.
fn run(steps: &[Step]) -> World {
    let cast = cast();
    let now = Now::new(cohort_core::Instant::ZERO, WallClock::from_unix_millis(1_800_000_000_000));
    let node = Node::new(now, setup(&cast), seeded(9));
    let mut world = World {
        node,
        now,
        listeners: Vec::new(),
        peers: Vec::new(),
        wires: BTreeMap::new(),
        next_inbound: 1,
        inputs: VecDeque::new(),
        waiting: Vec::new(),
        kept: Vec::new(),
        chain: Vec::new(),
        children: Vec::new(),
        files: Vec::new(),
        spawned: 0,
        credential: None,
        next_request: 1,
        answering: Vec::new(),
        session: None,
        rng: seeded(10),
        log: Vec::new(),
    };
    world.settle();
    for step in steps {
        world.step(&cast, step);
        world.settle();
    }
    world
}

impl World {
    fn step(&mut self, cast: &Cast, step: &Step) {
        match step {
            Step::Dial { listener, key } => {
                let Some((addr, listener)) = pick(&self.listeners, *listener).cloned() else { return };
                let keys = match key % 3 {
                    0 => &cast.operator,
                    1 => &cast.gateway,
                    _ => &cast.stranger,
                };
                let Some(presents) = cast.presents.get(&addr) else { return };
                let trust: TrustSet = [*presents].into_iter().collect();
                let config = ChannelConfig {
                    max_message_len: 4 << 20,
                    handshake_timeout: Duration::from_secs(5),
                    max_queued_bytes: 4 << 20,
                };
                let Ok(channel) = Channel::initiator(self.now.mono, config, keys, trust, fork(&mut self.rng))
                else {
                    return;
                };
                let conn = self.inbound();
                self.inputs.push_back(Input::Accepted { listener, conn });
                self.peers.push(Peer { conn, channel });
                self.pump_peer(self.peers.len() - 1);
            }
            Step::Send { peer, message } => {
                let Some(i) = index(self.peers.len(), *peer) else { return };
                let bytes = self.message(message);
                let _ = self.peers[i].channel.send(&bytes);
                self.pump_peer(i);
            }
            Step::Raw { peer, bytes } => {
                let Some(i) = index(self.peers.len(), *peer) else { return };
                self.inputs.push_back(Input::Received { conn: self.peers[i].conn, bytes: bytes.clone() });
            }
            Step::Hangup { peer } => {
                let Some(i) = index(self.peers.len(), *peer) else { return };
                let gone = self.peers.remove(i);
                self.inputs.push_back(Input::Closed { conn: gone.conn, error: None });
            }
            Step::Wait { ms } => {
                self.now = self.now.after(Duration::from_millis(u64::from(*ms)));
                if self.node.poll_timeout().is_some_and(|at| at <= self.now.mono) {
                    self.inputs.push_back(Input::Timeout);
                }
            }
            Step::Persist => {
                for id in std::mem::take(&mut self.waiting) {
                    self.inputs.push_back(Input::Persisted { id });
                }
            }
            Step::Child { which, event } => {
                let Some(i) = index(self.children.len(), *which) else { return };
                let child = self.children[i];
                let input = match event {
                    ChildStep::Started => Input::ChildStarted { child },
                    ChildStep::Output(bytes) => {
                        Input::ChildOutput { child, stderr: false, bytes: bytes.clone() }
                    }
                    ChildStep::Exited(code) => {
                        self.children.remove(i);
                        Input::ChildExited { child, end: ProcessEnd::Exited(i32::from(*code)) }
                    }
                    ChildStep::Failed => {
                        self.children.remove(i);
                        Input::ChildFailed { child, reason: "no such program".into() }
                    }
                };
                self.inputs.push_back(input);
            }
            Step::Web(call) => {
                let request = RequestId(self.next_request);
                self.next_request += 1;
                let web = self.web_request(call);
                self.inputs.push_back(Input::WebRequest { request, web: Box::new(web) });
            }
            Step::WebEnd { which, gone } => {
                let Some(i) = index(self.answering.len(), *which) else { return };
                let request = self.answering.remove(i);
                self.inputs.push_back(if *gone {
                    Input::WebGone { request }
                } else {
                    Input::WebSent { request, bytes: 1024 }
                });
            }
            Step::FileDone { which, ok } => {
                let Some(i) = index(self.files.len(), *which) else { return };
                let id = self.files.remove(i);
                let outcome = if *ok { Ok(()) } else { Err("disk full".into()) };
                self.inputs.push_back(Input::FileWritten { id, outcome });
            }
        }
    }

    fn message(&mut self, message: &Message) -> Vec<u8> {
        let request = match message {
            Message::Bytes(bytes) => return bytes.clone(),
            Message::Login { right_password } => ClientRequest::Login {
                principal: "alice".into(),
                password: if *right_password { PASSWORD.into() } else { "wrong".into() },
            },
            Message::Exec { command, hosts } => {
                let Some(credential) = self.credential.clone() else { return vec![0] };
                let argv: &[&str] = match command % 3 {
                    0 => &["/usr/bin/echo", "hi"],
                    1 => &["/usr/bin/sleep", "100"],
                    _ => &["/usr/bin/rm", "-rf", "/"],
                };
                let hosts = ["h1", "h2", "h[1-2]", "h9"][usize::from(hosts % 4)];
                ClientRequest::Exec(Box::new(ExecCommand {
                    credential,
                    hosts: vec![hosts.into()],
                    exclude: Vec::new(),
                    run_as: "alice".into(),
                    task: Task::Run {
                        argv: argv.iter().map(|a| (*a).to_owned()).collect(),
                        stdin: Vec::new(),
                        env: Vec::new(),
                    },
                    fanout: 2,
                    t1_ms: 1_000,
                    t2_ms: 2_000,
                    t3_ms: 500,
                    max_output: 1 << 16,
                    connect_timeout_ms: 1_000,
                }))
            }
        };
        cohort_core::wire::encode(&GatewayWire::Client(request)).expect("a client request encodes")
    }

    fn web_request(&self, call: &WebCall) -> WebRequest {
        let path = match WEB_PATHS.get(usize::from(call.path)) {
            Some(path) => (*path).to_owned(),
            None => call.other_path.clone(),
        };
        let mut headers = Vec::new();
        if call.form {
            headers.push(("content-type".to_owned(), b"application/x-www-form-urlencoded".to_vec()));
        }
        let session = self.session.as_deref().filter(|_| call.with_session);
        let cookies: Vec<&str> = [call.cookie.as_deref(), session].into_iter().flatten().collect();
        if !cookies.is_empty() {
            headers.push(("cookie".to_owned(), cookies.join("; ").into_bytes()));
        }
        WebRequest {
            method: if call.post { Method::Post } else { Method::Get },
            path,
            query: call.query.clone(),
            headers,
            body: call.body.clone(),
            peer: "192.0.2.1".into(),
        }
    }

    fn inbound(&mut self) -> ConnId {
        let conn = ConnId::inbound(self.next_inbound);
        self.next_inbound += 1;
        conn
    }

    /// Moves what peer `i`'s channel has for the node, and reads what it heard.
    fn pump_peer(&mut self, i: usize) {
        let Some(peer) = self.peers.get_mut(i) else { return };
        let conn = peer.conn;
        while let Some(out) = peer.channel.poll_output() {
            match out {
                ChannelOutput::Transmit(bytes) => self.inputs.push_back(Input::Received { conn, bytes }),
                ChannelOutput::Message(bytes) => {
                    if let Ok(GatewayReply::Client(ClientEvent::LoggedIn { credential })) =
                        cohort_core::wire::decode::<GatewayReply>(&bytes)
                    {
                        self.credential = Some(credential);
                    }
                }
                ChannelOutput::Established(_) | ChannelOutput::Closed(_) => {}
            }
        }
    }

    /// Carries out outputs and feeds the inputs they lead to until there are none.
    fn settle(&mut self) {
        for _ in 0..MAX_INPUTS_PER_STEP {
            while let Some(output) = self.node.poll_output() {
                self.carry_out(output);
            }
            let Some(input) = self.inputs.pop_front() else { return };
            self.node.handle(self.now, input);
        }
        panic!("the node did not settle within {MAX_INPUTS_PER_STEP} inputs");
    }

    fn carry_out(&mut self, output: Output) {
        self.log.push(format!("{output:?}"));
        let holds_back = !matches!(output, Output::Persist { .. } | Output::Log(_));
        assert!(
            !holds_back || self.waiting.is_empty(),
            "{output:?} came out while a record waited to be durable"
        );
        match output {
            Output::Listen { listener, addr } => self.listeners.push((addr, listener)),
            Output::Connect { conn, addr } => match self.listeners.iter().find(|(a, _)| *a == addr) {
                Some(&(_, listener)) => {
                    let far = self.inbound();
                    self.wires.insert(conn, far);
                    self.wires.insert(far, conn);
                    self.inputs.push_back(Input::Accepted { listener, conn: far });
                }
                None => self.inputs.push_back(Input::Closed { conn, error: Some("refused".into()) }),
            },
            Output::Transmit { conn, bytes } => {
                if let Some(&far) = self.wires.get(&conn) {
                    self.inputs.push_back(Input::Written { conn, bytes: bytes.len() });
                    self.inputs.push_back(Input::Received { conn: far, bytes });
                } else if let Some(i) = self.peers.iter().position(|p| p.conn == conn) {
                    self.inputs.push_back(Input::Written { conn, bytes: bytes.len() });
                    self.peers[i].channel.handle(self.now, ChannelInput::Received(bytes));
                    self.pump_peer(i);
                }
            }
            Output::Close { conn } => {
                if let Some(far) = self.wires.remove(&conn) {
                    self.wires.remove(&far);
                    self.inputs.push_back(Input::Closed { conn: far, error: None });
                }
                self.peers.retain(|p| p.conn != conn);
            }
            Output::Persist { id, record } => {
                if let Record::AuditEntry { entry, .. } = &record {
                    self.chain.push((**entry).clone());
                    if let Err(e) = verify_chain(&self.chain) {
                        panic!("the audit chain broke: {e}");
                    }
                }
                self.waiting.push(id);
                self.kept.push(record);
            }
            Output::Spawn { child, argv, run_as, .. } => {
                self.spawned += 1;
                let runs = self
                    .kept
                    .iter()
                    .filter(|r| {
                        matches!(r, Record::LocalAudit(a) if a.decision == AuditDecision::Run
                            && a.argv == argv && Some(a.run_as.as_str()) == run_as.as_deref())
                    })
                    .count();
                let all_runs = self
                    .kept
                    .iter()
                    .filter(|r| matches!(r, Record::LocalAudit(a) if a.decision == AuditDecision::Run))
                    .count();
                assert!(
                    runs > 0 && all_runs >= self.spawned,
                    "{argv:?} spawned without a durable Run record"
                );
                assert!(
                    argv.first().is_some_and(|p| p != "/usr/bin/rm"),
                    "a command the ACL denies ran: {argv:?}"
                );
                self.children.push(child);
            }
            Output::Kill { child } => {
                if let Some(i) = self.children.iter().position(|c| *c == child) {
                    self.children.remove(i);
                    self.inputs.push_back(Input::ChildExited { child, end: ProcessEnd::Signalled(9) });
                }
            }
            Output::WriteFile { id, .. } | Output::PlaceFile { id, .. } => self.files.push(id),
            Output::ReadAudit { read, .. } => {
                let rows = AuditRows { rows: Vec::new(), checkpoints: Vec::new() };
                self.inputs.push_back(Input::AuditRead { read, rows: Ok(rows) });
            }
            Output::WebRespond { request, response } => {
                let set = response.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"));
                if let Some(cookie) = set.filter_map(|(_, v)| v.split(';').next()).find(|c| !c.ends_with('='))
                {
                    self.session = Some(cookie.to_owned());
                }
                self.answering.push(request);
            }
            Output::ListenLocal { .. }
            | Output::ListenWeb { .. }
            | Output::WebChunk { .. }
            | Output::Inspect { .. }
            | Output::PauseChild { .. }
            | Output::ResumeChild { .. }
            | Output::Log(_) => {}
        }
    }
}

fn index(len: usize, choice: u8) -> Option<usize> {
    (len > 0).then(|| usize::from(choice) % len)
}

fn pick<T>(items: &[T], choice: u8) -> Option<&T> {
    index(items.len(), choice).and_then(|i| items.get(i))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An operator logs in, then (on a new connection: the gateway answers one request per
    /// connection) runs `command` on `hosts`, with records made durable as time passes.
    fn login_then_run(command: u8, hosts: u8) -> Vec<Step> {
        let mut steps = vec![
            Step::Dial { listener: 0, key: 0 },
            Step::Send { peer: 0, message: Message::Login { right_password: true } },
            Step::Persist,
            Step::Dial { listener: 0, key: 0 },
            Step::Send { peer: 0, message: Message::Exec { command, hosts } },
        ];
        steps.extend((0..8).flat_map(|_| [Step::Persist, Step::Wait { ms: 10 }]));
        steps
    }

    /// The harness reaches the deepest path there is: an operator logs in, runs a command on a
    /// host, and the host spawns it once its record is durable here and in the chain.
    #[test]
    fn a_login_and_a_run_reach_a_spawn_under_every_check() {
        let mut steps = login_then_run(0, 0);
        let ran = run(&steps);
        assert_eq!(ran.spawned, 1, "{:#?}", ran.log);
        steps.push(Step::Child { which: 0, event: ChildStep::Exited(0) });
        steps.extend((0..4).flat_map(|_| [Step::Persist, Step::Wait { ms: 10 }]));
        let again = run(&steps);
        assert!(again.log.len() > ran.log.len());
    }

    /// A run the ACL does not grant is refused before anything spawns.
    #[test]
    fn a_denied_command_never_spawns() {
        assert_eq!(run(&login_then_run(2, 2)).spawned, 0);
    }

    /// Web requests reach the console and are answered, with or without a cookie.
    #[test]
    fn web_requests_are_answered() {
        let call = |path: u8, cookie: Option<&str>| {
            Step::Web(WebCall {
                post: false,
                path,
                other_path: String::new(),
                query: String::new(),
                body: Vec::new(),
                form: false,
                cookie: cookie.map(str::to_owned),
                with_session: false,
            })
        };
        let steps = [call(0, None), call(3, Some("cohort_session=forged")), call(200, None)];
        let world = run(&steps);
        assert_eq!(world.answering.len(), 3, "{:#?}", world.log);
    }
}
