//! Nodes on an in-memory network: every output carried out at once (connects paired with the
//! listener at the address, bytes delivered whole, persists and file writes answered), time
//! advanced to the next deadline. Enough to check what the node itself decides.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use super::*;
use crate::channel::{Channel, ChannelConfig, ChannelInput, ChannelOutput, TrustSet};
use crate::identity::{NodeKeys, PublicIdentity};
use crate::rng::seeded;
use crate::signed::Signed;
use crate::time::WallClock;
use crate::wire;

mod policy_tier;

/// An operator's end of a channel: a bare channel the test drives.
struct Client {
    channel: Channel,
    conn: ConnId,
    received: Vec<Vec<u8>>,
    closed: bool,
}

enum End {
    Node(Box<Node>),
    Client(Box<Client>),
}

struct Net {
    ends: Vec<End>,
    listening: BTreeMap<String, (usize, ListenerId)>,
    pairs: BTreeMap<(usize, ConnId), (usize, ConnId)>,
    inputs: VecDeque<(usize, Input)>,
    next_inbound: u64,
    now: Now,
    files: BTreeMap<String, Vec<u8>>,
    unwritable: BTreeSet<String>,
    persisted: Vec<(usize, Record)>,
    /// Records the end being settled handed out and not yet answered: answered together once
    /// it yields nothing more (group commit, as the real driver does).
    ready: Vec<PersistId>,
    logs: Vec<(usize, Event)>,
    /// What the ends asked of a web front.
    web: Vec<(usize, Output)>,
}

impl Net {
    fn new() -> Net {
        Net {
            ends: Vec::new(),
            listening: BTreeMap::new(),
            pairs: BTreeMap::new(),
            inputs: VecDeque::new(),
            next_inbound: 1,
            now: Now::new(Instant::from_nanos(1), WallClock(1_900_000_000_000)),
            files: BTreeMap::new(),
            unwritable: BTreeSet::new(),
            persisted: Vec::new(),
            ready: Vec::new(),
            logs: Vec::new(),
            web: Vec::new(),
        }
    }

    fn add(&mut self, setup: NodeSetup, seed: u64) -> usize {
        self.ends.push(End::Node(Box::new(Node::new(self.now, setup, seeded(seed)))));
        self.settle();
        self.ends.len() - 1
    }

    fn node(&self, i: usize) -> &Node {
        match &self.ends[i] {
            End::Node(node) => node,
            End::Client(_) => panic!("end {i} is a client"),
        }
    }

    /// Opens a channel as `keys` to whatever listens at `addr`, trusting `peer`.
    fn client(&mut self, addr: &str, keys: &NodeKeys, peer: PublicIdentity) -> usize {
        let trust: TrustSet = [peer].into_iter().collect();
        let channel = Channel::initiator(self.now.mono, ChannelConfig::default(), keys, trust, seeded(77))
            .expect("a channel");
        let index = self.ends.len();
        let conn = ConnId(1);
        self.ends.push(End::Client(Box::new(Client { channel, conn, received: Vec::new(), closed: false })));
        self.connect(index, conn, addr);
        self.settle();
        index
    }

    fn send(&mut self, client: usize, bytes: &[u8]) {
        // A channel the listener refused is closed already: the send goes nowhere.
        if let End::Client(c) = &mut self.ends[client]
            && !c.channel.is_closed()
        {
            c.channel.send(bytes).expect("sends");
        }
        self.settle();
    }

    fn connect(&mut self, from: usize, conn: ConnId, addr: &str) {
        match self.listening.get(addr).copied() {
            Some((to, listener)) => {
                let inbound = ConnId::inbound(self.next_inbound);
                self.next_inbound += 1;
                self.pairs.insert((from, conn), (to, inbound));
                self.pairs.insert((to, inbound), (from, conn));
                self.inputs.push_back((to, Input::Accepted { listener, conn: inbound }));
            }
            None => self.deliver_close(from, conn, Some("connection refused".into())),
        }
    }

    /// Breaks every connection end `i` has, as a reset would: both sides see it closed.
    fn break_connections(&mut self, i: usize) {
        let theirs: Vec<((usize, ConnId), (usize, ConnId))> =
            self.pairs.iter().filter(|((from, _), _)| *from == i).map(|(a, b)| (*a, *b)).collect();
        for ((from, conn), (to, peer)) in theirs {
            self.pairs.remove(&(from, conn));
            self.pairs.remove(&(to, peer));
            self.deliver_close(from, conn, Some("connection reset".into()));
            self.deliver_close(to, peer, Some("connection reset".into()));
        }
        self.settle();
    }

    fn deliver_close(&mut self, to: usize, conn: ConnId, error: Option<String>) {
        self.inputs.push_back((to, Input::Closed { conn, error }));
    }

    /// Carries out one end's output.
    fn carry_out(&mut self, i: usize, out: Output) {
        match out {
            Output::Listen { listener, addr } => {
                self.listening.insert(addr, (i, listener));
            }
            Output::ListenLocal { listener, path } => {
                self.listening.insert(path, (i, listener));
            }
            Output::Connect { conn, addr } => self.connect(i, conn, &addr),
            Output::Transmit { conn, bytes } => {
                self.inputs.push_back((i, Input::Written { conn, bytes: bytes.len() }));
                if let Some(&(to, peer)) = self.pairs.get(&(i, conn)) {
                    self.inputs.push_back((to, Input::Received { conn: peer, bytes }));
                }
            }
            Output::Close { conn } => {
                if let Some((to, peer)) = self.pairs.remove(&(i, conn)) {
                    self.pairs.remove(&(to, peer));
                    self.deliver_close(to, peer, None);
                }
            }
            Output::Persist { id, record } => {
                self.persisted.push((i, record));
                self.ready.push(id);
            }
            Output::WriteFile { id, path, contents } | Output::PlaceFile { id, path, contents, .. } => {
                let outcome = if self.unwritable.contains(&path) {
                    Err("permission denied".to_owned())
                } else {
                    self.files.insert(path, contents);
                    Ok(())
                };
                self.inputs.push_back((i, Input::FileWritten { id, outcome }));
            }
            Output::Spawn { child, .. } => self.inputs.push_back((i, Input::ChildStarted { child })),
            Output::Kill { .. } | Output::PauseChild { .. } | Output::ResumeChild { .. } => {}
            Output::Log(event) => self.logs.push((i, event)),
            Output::Inspect { id, path, read } => {
                let facts = self.files.get(&path).map(|bytes| crate::policy::checks::FileFacts {
                    is_file: true,
                    mode: 0o644,
                    size: bytes.len() as u64,
                    content: read.then(|| bytes.clone()),
                    ..Default::default()
                });
                self.inputs.push_back((i, Input::Inspected { id, facts: Ok(facts) }));
            }
            Output::ReadAudit { read, range } => {
                let kept = self.persisted.iter().filter(|(at, _)| *at == i).filter_map(|(_, r)| match r {
                    Record::AuditEntry { entry, checkpoint } => Some((&**entry, checkpoint.as_deref())),
                    _ => None,
                });
                let rows = Ok(crate::exec::audit_view::AuditRows::select(kept, range));
                self.inputs.push_back((i, Input::AuditRead { read, rows }));
            }
            out @ (Output::ListenWeb { .. } | Output::WebRespond { .. } | Output::WebChunk { .. }) => {
                self.web.push((i, out))
            }
        }
    }

    /// Runs until no end has anything to do.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..self.ends.len() {
                loop {
                    let out = match &mut self.ends[i] {
                        End::Node(node) => node.poll_output(),
                        End::Client(c) => client_output(c),
                    };
                    let Some(out) = out else {
                        // Every record gathered is durable at once; then the node goes on.
                        let ready = std::mem::take(&mut self.ready);
                        if ready.is_empty() {
                            break;
                        }
                        for id in ready {
                            self.feed(i, Input::Persisted { id });
                        }
                        continue;
                    };
                    assert!(
                        self.ready.is_empty() || matches!(out, Output::Persist { .. }),
                        "end {i} yielded {out:?} before its records {:?} were durable",
                        self.ready
                    );
                    moved = true;
                    self.carry_out(i, out);
                }
            }
            while let Some((i, input)) = self.inputs.pop_front() {
                moved = true;
                self.feed(i, input);
            }
            if !moved {
                return;
            }
        }
    }

    fn feed(&mut self, i: usize, input: Input) {
        let now = self.now;
        match &mut self.ends[i] {
            End::Node(node) => node.handle(now, input),
            End::Client(c) => match input {
                Input::Received { bytes, .. } => c.channel.handle(now, ChannelInput::Received(bytes)),
                Input::Closed { .. } => c.channel.handle(now, ChannelInput::PeerClosed),
                _ => {}
            },
        }
    }

    /// Advances time by `span`, firing every deadline on the way.
    fn run_for(&mut self, span: Duration) {
        let until = self.now.mono + span;
        loop {
            self.settle();
            let next = self
                .ends
                .iter()
                .filter_map(|e| match e {
                    End::Node(node) => node.poll_timeout(),
                    End::Client(_) => None,
                })
                .min();
            match next {
                Some(t) if t <= until => {
                    self.now = self.now.with_mono(t.max(self.now.mono));
                    for i in 0..self.ends.len() {
                        let due =
                            matches!(&self.ends[i], End::Node(n) if n.poll_timeout().is_some_and(|d| d <= t));
                        if due {
                            self.feed(i, Input::Timeout);
                        }
                    }
                }
                _ => break,
            }
        }
        self.now = self.now.with_mono(until);
        self.settle();
    }
}

fn client_output(c: &mut Client) -> Option<Output> {
    loop {
        match c.channel.poll_output()? {
            ChannelOutput::Transmit(bytes) => return Some(Output::Transmit { conn: c.conn, bytes }),
            ChannelOutput::Message(bytes) => c.received.push(bytes),
            ChannelOutput::Established(_) => {}
            ChannelOutput::Closed(_) => {
                c.closed = true;
                return Some(Output::Close { conn: c.conn });
            }
        }
    }
}

/// A one-member cluster on the in-memory network, with its operator.
fn lone_member() -> (Net, usize, NodeKeys, NodeKeys, crate::member::Version) {
    use crate::member::genesis::{genesis_config, genesis_records};
    use crate::member::{MemberInfo, MemberSettings};
    let mut rng = seeded(5);
    let operator = NodeKeys::generate(&mut rng);
    let keys = NodeKeys::generate(&mut rng);
    let info = MemberInfo { name: "m0".into(), identity: keys.public(), address: "10.0.0.9:7000".into() };
    let config = genesis_config("t", "ops", &operator, [info], BTreeMap::new());
    let mut records = genesis_records(&config, &operator, &mut rng).expect("seals");
    let record = records.remove(&keys.node_id()).expect("a record for m0");
    let mut net = Net::new();
    let role = MemberRole {
        record,
        settings: MemberSettings::default(),
        listen: "10.0.0.9:7000".into(),
        admin_listen: "10.0.0.9:7001".into(),
        admin_limits: ConnLimits::default(),
        lookup_socket: Some("/run/cohort/lookup.sock".into()),
    };
    let node = net.add(NodeSetup { member: Some(role), ..NodeSetup::new(keys.clone()) }, 1);
    (net, node, keys, operator, config.version)
}

/// Requests pipelined on one admin connection are answered in order, each in full: the member
/// answers a change or lookup in the same step it takes it, so the second never finds the first
/// pending (the one-at-a-time guard is for answers that would come later).
#[test]
fn requests_pipelined_on_one_admin_connection_are_answered_in_order() {
    use crate::admin::{AdminRequest, AdminResponse};
    use crate::member::{Change, ChangeRequest};
    let (mut net, _, keys, operator, base) = lone_member();
    let client = net.client("10.0.0.9:7001", &operator, keys.public());
    let change = ChangeRequest {
        cluster_id: "t".into(),
        base,
        changes: vec![Change::Set { key: "dns".into(), value: "10.0.0.53".into() }],
        operator: operator.public().signing,
    };
    let change = AdminRequest::Change(Signed::sign(change, &operator).expect("signs"));
    // Both leave together, so the second is on the node before the first is answered.
    if let End::Client(c) = &mut net.ends[client] {
        for request in [&change, &AdminRequest::Status] {
            c.channel.send(&wire::encode(request).expect("encodes")).expect("sends");
        }
    }
    net.run_for(Duration::from_secs(2));
    let End::Client(c) = &net.ends[client] else { panic!("a client") };
    let answers: Vec<AdminResponse> = c.received.iter().map(|b| wire::decode(b).expect("decodes")).collect();
    assert_eq!(answers.len(), 2, "{answers:#?}");
    assert!(matches!(answers[0], AdminResponse::ChangeAccepted { .. }), "{answers:?}");
    assert!(matches!(&answers[1], AdminResponse::Status(_)), "{answers:?}");
}

/// Feeds `input` and carries out what the node says until it is quiet (persists answered),
/// returning the bytes it sent on `conn` and whether it closed it.
fn exchange(node: &mut Node, now: Now, input: Input, conn: ConnId) -> (Vec<u8>, bool) {
    let (mut sent, mut closed) = (Vec::new(), false);
    let mut inputs = VecDeque::from([input]);
    while let Some(input) = inputs.pop_front() {
        node.handle(now, input);
        while let Some(out) = node.poll_output() {
            match out {
                Output::Persist { id, .. } => inputs.push_back(Input::Persisted { id }),
                Output::Transmit { conn: c, bytes } if c == conn => sent.extend(bytes),
                Output::Close { conn: c } if c == conn => closed = true,
                _ => {}
            }
        }
    }
    (sent, closed)
}

/// The local lookup service answers the host's applications line by line from the active
/// configuration, names what it cannot read, and closes a connection that sends an overlong
/// line; a connection the service does not know never reaches the channel layer.
#[test]
fn the_local_lookup_service_answers_lines_from_the_active_configuration() {
    let (net, node, ..) = lone_member();
    let End::Node(node) = net.ends.into_iter().nth(node).expect("the node") else { panic!("a node") };
    let mut node = *node;
    let now = net.now;
    let listener = ListenerId::local(0);
    let conn = ConnId::inbound(900);
    assert_eq!(exchange(&mut node, now, Input::Accepted { listener, conn }, conn), (Vec::new(), false));
    let ask = |node: &mut Node, line: &[u8]| {
        let (bytes, closed) = exchange(node, now, Input::Received { conn, bytes: line.to_vec() }, conn);
        (String::from_utf8(bytes).expect("utf-8"), closed)
    };
    let (version, _) = ask(&mut node, b"version\n");
    assert!(
        version.starts_with("{\"version\":\"1@") && version.ends_with(",\"syncing\":false}\n"),
        "{version}"
    );
    let (two, _) = ask(&mut node, b"get --all\nget nosuch\n");
    let lines: Vec<&str> = two.lines().collect();
    assert_eq!(lines.len(), 2, "one answer per request, in order: {two}");
    assert!(lines[0].contains("\"settings\":{}"), "{two}");
    assert!(lines[1].contains("\"key\":\"nosuch\",\"value\":null"), "{two}");
    let (error, closed) = ask(&mut node, b"rm -rf /\n");
    assert!(error.contains("\"error\":\"cannot read `rm -rf /`") && !closed, "{error}");
    let (error, closed) = ask(&mut node, &[b'x'; 2000]);
    assert!(error.contains("longer than 1024 bytes") && closed, "{error}");
    // After the close the connection is gone: its bytes are the channel layer's no more.
    let (nothing, _) = ask(&mut node, b"version\n");
    assert_eq!(nothing, "");
}

/// Who may open the admin channel follows the installed configuration: an operator added by a
/// change is admitted once it installs, and not before.
#[test]
fn an_operator_added_by_a_change_may_open_the_admin_channel_once_it_installs() {
    use crate::admin::{AdminRequest, AdminResponse};
    use crate::member::{Change, ChangeRequest, OperatorInfo};
    let (mut net, _, keys, operator, base) = lone_member();
    let newcomer = NodeKeys::generate(&mut seeded(44));
    let ask_status = |net: &mut Net, who: &NodeKeys| -> Vec<AdminResponse> {
        let client = net.client("10.0.0.9:7001", who, keys.public());
        net.send(client, &wire::encode(&AdminRequest::Status).expect("encodes"));
        net.run_for(Duration::from_millis(100));
        let End::Client(c) = &net.ends[client] else { panic!("a client") };
        c.received.iter().map(|b| wire::decode(b).expect("decodes")).collect()
    };
    assert!(ask_status(&mut net, &newcomer).is_empty(), "not an operator yet: no channel");
    let change = ChangeRequest {
        cluster_id: "t".into(),
        base,
        changes: vec![Change::AddOperator(OperatorInfo { name: "new".into(), identity: newcomer.public() })],
        operator: operator.public().signing,
    };
    let client = net.client("10.0.0.9:7001", &operator, keys.public());
    let change = AdminRequest::Change(Signed::sign(change, &operator).expect("signs"));
    net.send(client, &wire::encode(&change).expect("encodes"));
    net.run_for(Duration::from_secs(3));
    let answers = ask_status(&mut net, &newcomer);
    assert!(matches!(answers.as_slice(), [AdminResponse::Status(_)]), "{answers:?}");
}

/// The `Ready` hand-off: while a record is unanswered, later records go ahead of everything else
/// (so a driver can commit them together), records keep their order, and nothing else leaves
/// until every record handed out is durable.
#[test]
fn while_a_record_is_unanswered_only_later_records_leave() {
    let keys = NodeKeys::generate(&mut seeded(3));
    let mut node = Node::new(Now::ZERO, NodeSetup::new(keys), seeded(4));
    while node.poll_output().is_some() {}
    let record = |name: &str| Record::Principal { name: name.into(), hash: None };
    let (a, b) = (node.ids.persist(), node.ids.persist());
    let sent = Output::Transmit { conn: ConnId(7), bytes: vec![1] };
    node.outputs.extend([
        Output::Persist { id: a, record: record("a") },
        sent.clone(),
        Output::Persist { id: b, record: record("b") },
    ]);
    assert_eq!(node.poll_output(), Some(Output::Persist { id: a, record: record("a") }));
    assert_eq!(node.poll_output(), Some(Output::Persist { id: b, record: record("b") }));
    assert_eq!(node.poll_output(), None, "nothing but records while two are unanswered");
    node.handle(Now::ZERO, Input::Persisted { id: a });
    assert_eq!(node.poll_output(), None, "`b` is still unanswered");
    node.handle(Now::ZERO, Input::Persisted { id: b });
    assert_eq!(node.poll_output(), Some(sent));
    assert_eq!(node.poll_output(), None);
}

fn web_get(path: &str) -> Box<crate::web::WebRequest> {
    Box::new(crate::web::WebRequest {
        method: crate::web::Method::Get,
        path: path.into(),
        query: String::new(),
        headers: Vec::new(),
        body: Vec::new(),
        peer: "192.0.2.1".into(),
    })
}

/// A gateway with a console asks for its HTTPS listener and answers a web request with a page;
/// a node without one answers every web request with a refusal, never silence.
#[test]
fn the_console_is_served_by_a_gateway_node_and_refused_elsewhere() {
    use crate::web::{RequestId, WebLimits};
    let mut rng = seeded(8);
    let (gw, kdc) = (NodeKeys::generate(&mut rng), NodeKeys::generate(&mut rng));
    let mut net = Net::new();
    let web = WebRole { listen: "10.0.0.1:8443".into(), limits: WebLimits::default(), policy_master: None };
    let role = GatewayRole {
        listen: "10.0.0.1:7100".into(),
        keys: gw.clone(),
        kdc_addr: "10.0.0.2:7200".into(),
        kdc: kdc.public(),
        chain_tail: None,
        limits: ConnLimits::default(),
        web: Some(web),
    };
    let gateway = net.add(NodeSetup { gateway: Some(role), ..NodeSetup::new(gw) }, 2);
    let bare = net.add(NodeSetup::new(NodeKeys::generate(&mut rng)), 3);
    assert!(
        net.web
            .iter()
            .any(|(i, o)| *i == gateway
                && matches!(o, Output::ListenWeb { addr, .. } if addr == "10.0.0.1:8443")),
        "the gateway asks for its web listener: {:?}",
        net.web
    );
    for (end, status) in [(gateway, 200), (bare, 404)] {
        net.web.clear();
        let request = RequestId(end as u64 + 1);
        net.inputs.push_back((end, Input::WebRequest { request, web: web_get("/login") }));
        net.settle();
        let answered: Vec<u16> = net
            .web
            .iter()
            .filter_map(|(i, o)| match o {
                Output::WebRespond { request: r, response } if *i == end && *r == request => {
                    Some(response.status)
                }
                _ => None,
            })
            .collect();
        assert_eq!(answered, vec![status], "end {end}");
    }
}
