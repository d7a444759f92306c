//! One simulated host running the core [`Node`]: the same machine a real process runs, on
//! turmoil's simulated TCP, a simulated disk that loses unsynced writes on a crash, and
//! turmoil's clock. The loop carries out every output, then waits (biased) for what a socket task
//! reports or the node's next deadline. It owns the mapping only; every rule is the node's.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cohort_core::exec::acl::Acl;
use cohort_core::exec::daemon::ProcessEnd;
use cohort_core::member::MemberRecord;
use cohort_core::node::ChildId;
use cohort_core::node::{ConnId, Event, Input, Node, NodeSetup, Output, Record};
use cohort_core::policy::checks::FileFacts;
use cohort_core::rng::{SeededRng, fork, seeded};
use cohort_core::trace::Trace;
use cohort_core::{Machine, NodeKeys};
use rand_core::RngCore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::watch;
use turmoil::net::tcp::OwnedWriteHalf;
use turmoil::net::{TcpListener, TcpStream};

use crate::browser::{SimWeb, WebAnswers, WebCall};
use crate::clock::now;
use crate::exec_invariants::{
    Watched, check_audited_before_spawn, check_chain, check_permitted, check_placed,
};
use crate::observer::Observer;
use crate::processes::{Behaviour, behaviour};
use crate::storage::SimDisk;

/// A simulated fsync: a crash inside this window loses the write.
const SYNC_DELAY: Duration = Duration::from_millis(2);

/// Builds a host's roles from what its disk holds at boot.
pub type SetupFn = Arc<dyn Fn(Option<MemberRecord>) -> NodeSetup + Send + Sync>;
/// A trace several hosts write into, one line per node input and output.
pub type SharedTrace = Arc<Mutex<Trace>>;
/// Files the hosts wrote, by host name and path.
pub type SharedFiles = Arc<Mutex<BTreeMap<(String, String), Vec<u8>>>>;
/// Every file write the hosts made, in order, as (host, path, contents): what a scenario checks
/// a claim of having written something against.
pub type SharedFileLog = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;
/// Records the hosts kept besides the member's (policies, history, audit), by host name.
pub type SharedRecords = Arc<Mutex<Vec<(String, Record)>>>;
/// Looks at the node after every input it handled, for what a scenario reads back from its
/// roles (counters, held state). It may only read.
pub type Probe = Arc<dyn Fn(&Node) + Send + Sync>;
/// Every stream byte count a host moved, when, and which way: what a scenario measures traffic
/// by (bytes reaching a server per cycle) without looking inside the channels.
pub type SharedTraffic = Arc<Mutex<Vec<TrafficSample>>>;

/// Every byte the hosts that share it put on the wire, in order: what someone capturing the
/// network would hold.
pub type SharedCapture = Arc<Mutex<Vec<u8>>>;

/// Bytes one host received from or handed to one connection at one simulated instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrafficSample {
    pub at: Duration,
    pub conn: ConnId,
    pub inbound: bool,
    pub bytes: usize,
}

/// Everything a host needs, shared with the harness so it survives the host's crashes.
#[derive(Clone)]
pub struct NodeHostContext {
    /// The host's name in traces and in what it leaves behind.
    pub name: String,
    pub keys: NodeKeys,
    pub setup: SetupFn,
    pub disk: SimDisk,
    pub observer: Observer,
    pub seed: u64,
    /// Probability that any one write this host makes breaks its connection (loss on a stream).
    pub loss: f64,
    /// Incremented at each boot so a restarted host draws fresh (still seeded) randomness.
    pub boots: Arc<Mutex<u64>>,
    pub trace: Option<SharedTrace>,
    pub files: SharedFiles,
    /// When set, every file write is appended here too.
    pub file_log: Option<SharedFileLog>,
    pub records: SharedRecords,
    pub probe: Option<Probe>,
    pub traffic: Option<SharedTraffic>,
    pub capture: Option<SharedCapture>,
    /// Where browsers reach this host's web console, if it serves one.
    pub web: Option<SimWeb>,
}

impl NodeHostContext {
    pub fn new(name: &str, keys: NodeKeys, setup: SetupFn, disk: SimDisk, seed: u64) -> NodeHostContext {
        NodeHostContext {
            name: name.to_owned(),
            keys,
            setup,
            disk,
            observer: Observer::default(),
            seed,
            loss: 0.0,
            boots: Arc::new(Mutex::new(0)),
            trace: None,
            files: SharedFiles::default(),
            file_log: None,
            records: SharedRecords::default(),
            probe: None,
            traffic: None,
            capture: None,
            web: None,
        }
    }

    fn watched(&self) -> Watched<'_> {
        Watched { name: &self.name, records: &self.records, observer: &self.observer }
    }

    fn input(&self, input: &Input) {
        if let Some(trace) = &self.trace {
            trace.lock().unwrap_or_else(PoisonError::into_inner).input(now().mono, &self.name, input);
        }
    }

    fn count(&self, conn: ConnId, inbound: bool, bytes: usize) {
        if let Some(traffic) = &self.traffic {
            let sample = TrafficSample { at: turmoil::elapsed(), conn, inbound, bytes };
            traffic.lock().unwrap_or_else(PoisonError::into_inner).push(sample);
        }
    }

    fn output(&self, output: &Output) {
        if let Some(trace) = &self.trace {
            trace.lock().unwrap_or_else(PoisonError::into_inner).output(now().mono, &self.name, output);
        }
    }
}

/// Feeds one input, tracing it, and lets the probe look at the result.
fn feed(ctx: &NodeHostContext, node: &mut Node, input: Input) {
    ctx.input(&input);
    node.handle(now(), input);
    if let Some(probe) = &ctx.probe {
        probe(node);
    }
}

impl std::fmt::Debug for NodeHostContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHostContext").field("node", &self.keys.node_id()).finish_non_exhaustive()
    }
}

/// What the socket tasks tell the host loop.
enum Report {
    Input(Input),
    /// An accepted connection's write half, to keep before any input about it.
    Adopt(ConnId, OwnedWriteHalf),
    /// A browser's request.
    Web(WebCall),
}

/// The port in `IP:PORT` or `host:PORT`.
fn port(addr: &str) -> Result<u16, String> {
    addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).ok_or_else(|| format!("`{addr}` has no port"))
}

pub async fn run(ctx: NodeHostContext) -> turmoil::Result {
    let boot = {
        let mut boots = ctx.boots.lock().unwrap_or_else(PoisonError::into_inner);
        *boots += 1;
        *boots
    };
    let mut rng = seeded(ctx.seed ^ boot.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut loss_rng: SeededRng = fork(&mut rng);
    let record = ctx.disk.recover();
    let me = ctx.keys.node_id();
    if let Some(record) = &record {
        ctx.observer.booted(me, record, turmoil::elapsed());
    }
    let setup = (ctx.setup)(record);
    // The ACL each host this node plays holds, for the invariant that nothing denied runs.
    let acls: BTreeMap<String, Acl> =
        setup.exec_hosts.iter().map(|h| (h.name.clone(), setup.exec_directory.acl.clone())).collect();
    let mut node = Node::new(now(), setup, fork(&mut rng));
    if let Some(probe) = &ctx.probe {
        probe(&node);
    }
    let (tx, mut rx) = unbounded_channel::<Report>();
    let inbound = Arc::new(AtomicU64::new(1));
    let mut writers: BTreeMap<ConnId, UnboundedSender<Vec<u8>>> = BTreeMap::new();
    // Each running command's task, and the switch that holds its output back while paused.
    let mut children: BTreeMap<ChildId, (tokio::task::JoinHandle<()>, watch::Sender<bool>)> = BTreeMap::new();
    let mut spawned = 0usize;
    // Where each web request's answer goes.
    let mut answers = WebAnswers::default();
    loop {
        while let Some(output) = node.poll_output() {
            ctx.output(&output);
            match output {
                Output::Listen { listener, addr } => {
                    let socket = TcpListener::bind(("0.0.0.0", port(&addr)?)).await?;
                    tokio::spawn(accept(socket, listener, inbound.clone(), tx.clone()));
                }
                // Simulated hosts run no local applications: the lookup service's rules are
                // tested on the node itself.
                Output::ListenLocal { .. } => {}
                Output::ListenWeb { .. } => {
                    if let Some(web) = &ctx.web {
                        tokio::spawn(forward_web(web.listen(), tx.clone()));
                    }
                }
                Output::WebRespond { request, response } => {
                    if let Some(input) = answers.respond(request, response) {
                        feed(&ctx, &mut node, input);
                    }
                }
                Output::WebChunk { request, bytes, last } => {
                    if let Some(input) = answers.chunk(request, bytes, last) {
                        feed(&ctx, &mut node, input);
                    }
                }
                Output::Connect { conn, addr } => {
                    let (bytes_tx, bytes_rx) = unbounded_channel();
                    writers.insert(conn, bytes_tx);
                    tokio::spawn(dial(conn, addr, bytes_rx, tx.clone()));
                }
                Output::Transmit { conn, bytes } => {
                    ctx.count(conn, false, bytes.len());
                    ctx.observer.sent(me, bytes.len());
                    if let Some(capture) = &ctx.capture {
                        capture.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(&bytes);
                    }
                    let roll = f64::from(loss_rng.next_u32()) / f64::from(u32::MAX);
                    if roll < ctx.loss {
                        // Loss on a stream: the connection breaks, and what it carried is gone.
                        if writers.remove(&conn).is_some() {
                            let error = Some("simulated loss broke the connection".to_owned());
                            feed(&ctx, &mut node, Input::Closed { conn, error });
                        }
                    } else if let Some(writer) = writers.get(&conn) {
                        let _ = writer.send(bytes);
                    }
                }
                // Dropping the sender lets the writer finish what it holds, then shut down.
                Output::Close { conn } => drop(writers.remove(&conn)),
                Output::Persist { id, record } => {
                    if let Record::AuditEntry { entry, .. } = &record {
                        check_chain(&ctx.watched(), entry);
                    }
                    match record {
                        Record::Member(record) => {
                            ctx.disk.write(*record);
                            tokio::time::sleep(SYNC_DELAY).await;
                            ctx.disk.sync();
                        }
                        other => ctx
                            .records
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push((ctx.name.clone(), other)),
                    }
                    feed(&ctx, &mut node, Input::Persisted { id });
                }
                Output::ReadAudit { read, range } => {
                    let records = ctx.records.lock().unwrap_or_else(PoisonError::into_inner);
                    let rows = Ok(crate::storage::audit_rows(&records, &ctx.name, range));
                    drop(records);
                    feed(&ctx, &mut node, Input::AuditRead { read, rows });
                }
                Output::Inspect { id, path, read } => {
                    let files = ctx.files.lock().unwrap_or_else(PoisonError::into_inner);
                    let facts = files.get(&(ctx.name.clone(), path)).map(|bytes| simulated_file(bytes, read));
                    drop(files);
                    feed(&ctx, &mut node, Input::Inspected { id, facts: Ok(facts) });
                }
                Output::WriteFile { id, path, contents } => {
                    if let Some(log) = &ctx.file_log {
                        let entry = (ctx.name.clone(), path.clone(), contents.clone());
                        log.lock().unwrap_or_else(PoisonError::into_inner).push(entry);
                    }
                    ctx.files
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert((ctx.name.clone(), path), contents);
                    feed(&ctx, &mut node, Input::FileWritten { id, outcome: Ok(()) });
                }
                Output::PlaceFile { id, path, contents, owner, .. } => {
                    check_placed(&ctx.watched(), &acls, &path, &contents, &owner);
                    ctx.files
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert((ctx.name.clone(), path), contents);
                    feed(&ctx, &mut node, Input::FileWritten { id, outcome: Ok(()) });
                }
                Output::Spawn { child, argv, run_as, env, stdin } => {
                    // Only a node that plays managed hosts runs exec sessions; an agent's check
                    // commands answer to no ACL.
                    if !acls.is_empty() {
                        spawned += 1;
                        check_audited_before_spawn(&ctx.watched(), spawned);
                        check_permitted(&ctx.watched(), &acls, &argv, run_as.as_deref(), &env);
                    }
                    feed(&ctx, &mut node, Input::ChildStarted { child });
                    let (pause, paused) = watch::channel(false);
                    let task = tokio::spawn(simulate(child, behaviour(&argv, &stdin), paused, tx.clone()));
                    children.insert(child, (task, pause));
                }
                Output::Kill { child } => {
                    if let Some((task, _)) = children.remove(&child) {
                        task.abort();
                        feed(&ctx, &mut node, Input::ChildExited { child, end: ProcessEnd::Signalled(9) });
                    }
                }
                // A paused command writes nothing more until resumed, as one blocked on a full pipe.
                Output::PauseChild { child } => {
                    if let Some((_, pause)) = children.get(&child) {
                        pause.send_replace(true);
                    }
                }
                Output::ResumeChild { child } => {
                    if let Some((_, pause)) = children.get(&child) {
                        pause.send_replace(false);
                    }
                }
                Output::Log(event) => observe(&ctx, &node, &event),
            }
        }
        let wait = node
            .poll_timeout()
            .map_or(Duration::from_secs(3600), |t| t.since_start().saturating_sub(turmoil::elapsed()));
        tokio::select! {
            biased;
            report = rx.recv() => match report {
                Some(Report::Adopt(conn, write)) => {
                    let (bytes_tx, bytes_rx) = unbounded_channel();
                    writers.insert(conn, bytes_tx);
                    tokio::spawn(write_out(conn, write, bytes_rx, tx.clone()));
                }
                Some(Report::Web(call)) => {
                    // A browser that closes its end is heard as a closed connection is.
                    let (request, answer, gone) = (call.request, call.answer.clone(), tx.clone());
                    tokio::spawn(async move {
                        answer.closed().await;
                        let _ = gone.send(Report::Input(Input::WebGone { request }));
                    });
                    let input = answers.take(call);
                    feed(&ctx, &mut node, input);
                }
                Some(Report::Input(input)) => {
                    match &input {
                        Input::Received { conn, bytes } => ctx.count(*conn, true, bytes.len()),
                        Input::ChildExited { child, .. } => drop(children.remove(child)),
                        _ => {}
                    }
                    feed(&ctx, &mut node, input);
                }
                None => return Err("the host's socket tasks all ended".into()),
            },
            () = tokio::time::sleep(wait) => feed(&ctx, &mut node, Input::Timeout),
        }
    }
}

/// Hands the browsers' requests to the host loop while it lives.
async fn forward_web(mut calls: UnboundedReceiver<WebCall>, tx: UnboundedSender<Report>) {
    while let Some(call) = calls.recv().await {
        if tx.send(Report::Web(call)).is_err() {
            return;
        }
    }
}

/// A file the simulated host wrote, as a driver would report it: root's, mode 0644.
fn simulated_file(bytes: &[u8], read: bool) -> FileFacts {
    FileFacts {
        is_file: true,
        mode: 0o644,
        owner: Some("root".into()),
        group: Some("root".into()),
        size: bytes.len() as u64,
        content: read.then(|| bytes.to_vec()),
        ..FileFacts::default()
    }
}

/// Plays one command: its output and its end, as a process would report them.
async fn simulate(
    child: ChildId,
    behaviour: Behaviour,
    mut paused: watch::Receiver<bool>,
    tx: UnboundedSender<Report>,
) {
    let send = |input| tx.send(Report::Input(input)).is_ok();
    match behaviour {
        Behaviour::Script { outputs, end } => {
            let mut at = Duration::ZERO;
            // Output before the end when both fall at one instant, as a process writes then exits.
            let mut steps: Vec<(Duration, Option<Vec<u8>>)> =
                outputs.into_iter().map(|(t, bytes)| (t, Some(bytes))).collect();
            if let Some((t, _)) = &end {
                steps.push((*t, None));
            }
            steps.sort_by_key(|(t, bytes)| (*t, bytes.is_none()));
            for (t, bytes) in steps {
                // No zero sleeps: each would yield and reorder the run for nothing.
                if t > at {
                    tokio::time::sleep(t - at).await;
                    at = t;
                }
                let input = match bytes {
                    Some(bytes) if bytes.is_empty() => continue,
                    Some(bytes) => {
                        if paused.wait_for(|p| !p).await.is_err() {
                            return;
                        }
                        Input::ChildOutput { child, stderr: false, bytes }
                    }
                    None => match &end {
                        Some((_, end)) => Input::ChildExited { child, end: *end },
                        None => return,
                    },
                };
                if !send(input) {
                    return;
                }
            }
            // A command without an end hangs until it is killed (its task aborted).
            if end.is_none() {
                std::future::pending::<()>().await;
            }
        }
        Behaviour::Chatters { chunk, every } => loop {
            tokio::time::sleep(every).await;
            if paused.wait_for(|p| !p).await.is_err() {
                return;
            }
            if !send(Input::ChildOutput { child, stderr: false, bytes: chunk.clone() }) {
                return;
            }
        },
    }
}

/// What the invariants watch, from the node's log and state.
fn observe(ctx: &NodeHostContext, node: &Node, event: &Event) {
    let me = ctx.keys.node_id();
    match event {
        Event::Installed { .. } => {
            if let Some(member) = node.member() {
                ctx.observer.installed(me, member.active(), turmoil::elapsed());
            }
        }
        Event::ChangeAccepted { version } => ctx.observer.change_accepted(*version, turmoil::elapsed()),
        Event::Staged { version, .. } => {
            if let Some(staged) = node.member().and_then(|m| m.staged()).filter(|s| s.version() == *version) {
                ctx.observer.staged(me, staged, turmoil::elapsed());
            }
        }
        Event::Heard { from, active, staged } => ctx.observer.heard(me, *from, *active, *staged),
        _ => {}
    }
}

async fn accept(
    socket: TcpListener,
    listener: cohort_core::node::ListenerId,
    next: Arc<AtomicU64>,
    tx: UnboundedSender<Report>,
) {
    while let Ok((stream, _)) = socket.accept().await {
        let conn = ConnId::inbound(next.fetch_add(1, Ordering::Relaxed));
        let (read, write) = stream.into_split();
        // Adopted first, accepted next, read after: the host loop hears them in this order.
        let adopted = tx.send(Report::Adopt(conn, write));
        let accepted = tx.send(Report::Input(Input::Accepted { listener, conn }));
        if adopted.is_err() || accepted.is_err() {
            return;
        }
        tokio::spawn(read_in(conn, read, tx.clone()));
    }
}

async fn dial(conn: ConnId, addr: String, bytes: UnboundedReceiver<Vec<u8>>, tx: UnboundedSender<Report>) {
    match TcpStream::connect(addr.as_str()).await {
        Ok(stream) => {
            let (read, write) = stream.into_split();
            tokio::spawn(read_in(conn, read, tx.clone()));
            write_out(conn, write, bytes, tx).await;
        }
        Err(e) => {
            let _ = tx.send(Report::Input(Input::Closed { conn, error: Some(e.to_string()) }));
        }
    }
}

async fn read_in(conn: ConnId, mut read: turmoil::net::tcp::OwnedReadHalf, tx: UnboundedSender<Report>) {
    let mut buf = vec![0u8; 16 * 1024];
    let end = loop {
        match read.read(&mut buf).await {
            Ok(0) => break None,
            Ok(n) => {
                let bytes = buf.get(..n).unwrap_or_default().to_vec();
                if tx.send(Report::Input(Input::Received { conn, bytes })).is_err() {
                    return;
                }
            }
            Err(e) => break Some(e.to_string()),
        }
    };
    let _ = tx.send(Report::Input(Input::Closed { conn, error: end }));
}

async fn write_out(
    conn: ConnId,
    mut write: OwnedWriteHalf,
    mut bytes: UnboundedReceiver<Vec<u8>>,
    tx: UnboundedSender<Report>,
) {
    while let Some(chunk) = bytes.recv().await {
        if let Err(e) = write.write_all(&chunk).await {
            let _ = tx.send(Report::Input(Input::Closed { conn, error: Some(e.to_string()) }));
            return;
        }
        let _ = tx.send(Report::Input(Input::Written { conn, bytes: chunk.len() }));
    }
    let _ = write.shutdown().await;
}
