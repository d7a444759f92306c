//! One simulated host running the core [`Node`]: the same machine a real process runs, on
//! turmoil's simulated TCP and UDP, a simulated disk that loses unsynced writes on a crash, and
//! turmoil's clock. The loop carries out every output, then waits (biased) for what a socket task
//! reports or the node's next deadline. It owns the mapping only; every rule is the node's.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cohort_core::member::MemberRecord;
use cohort_core::node::{ConnId, Event, Input, Node, NodeSetup, Output, Record};
use cohort_core::rng::{SeededRng, fork, seeded};
use cohort_core::{Machine, NodeKeys};
use rand_core::RngCore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use turmoil::net::tcp::OwnedWriteHalf;
use turmoil::net::{TcpListener, TcpStream, UdpSocket};

use crate::clock::now;
use crate::observer::Observer;
use crate::storage::SimDisk;

/// A simulated fsync: a crash inside this window loses the write.
const SYNC_DELAY: Duration = Duration::from_millis(2);

/// Builds a host's roles from what its disk holds at boot.
pub type SetupFn = Arc<dyn Fn(Option<MemberRecord>) -> NodeSetup + Send + Sync>;

/// Everything a host needs, shared with the harness so it survives the host's crashes.
#[derive(Clone)]
pub struct NodeHostContext {
    pub keys: NodeKeys,
    pub setup: SetupFn,
    pub disk: SimDisk,
    pub observer: Observer,
    pub seed: u64,
    /// Probability that any one datagram this host sends is lost.
    pub loss: f64,
    /// Incremented at each boot so a restarted host draws fresh (still seeded) randomness.
    pub boots: Arc<Mutex<u64>>,
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
    let mut node = Node::new(now(), (ctx.setup)(record), fork(&mut rng));
    let (tx, mut rx) = unbounded_channel::<Report>();
    let inbound = Arc::new(AtomicU64::new(1));
    let mut writers: BTreeMap<ConnId, UnboundedSender<Vec<u8>>> = BTreeMap::new();
    let mut udp: Option<Arc<UdpSocket>> = None;
    let mut kept: Vec<Record> = Vec::new();
    loop {
        while let Some(output) = node.poll_output() {
            match output {
                Output::BindDatagram { addr } => {
                    let socket = Arc::new(UdpSocket::bind(("0.0.0.0", port(&addr)?)).await?);
                    tokio::spawn(receive_datagrams(socket.clone(), tx.clone()));
                    udp = Some(socket);
                }
                Output::SendDatagram { addr, bytes } => {
                    ctx.observer.sent(me, bytes.len());
                    let roll = f64::from(loss_rng.next_u32()) / f64::from(u32::MAX);
                    if let Some(socket) = udp.as_ref().filter(|_| roll >= ctx.loss) {
                        // A send to an unknown or unreachable host is like a lost datagram.
                        let _ = socket.send_to(&bytes, addr.as_str()).await;
                    }
                }
                Output::Listen { listener, addr } => {
                    let socket = TcpListener::bind(("0.0.0.0", port(&addr)?)).await?;
                    tokio::spawn(accept(socket, listener, inbound.clone(), tx.clone()));
                }
                Output::Connect { conn, addr } => {
                    let (bytes_tx, bytes_rx) = unbounded_channel();
                    writers.insert(conn, bytes_tx);
                    tokio::spawn(dial(conn, addr, bytes_rx, tx.clone()));
                }
                Output::Transmit { conn, bytes } => {
                    if let Some(writer) = writers.get(&conn) {
                        let _ = writer.send(bytes);
                    }
                }
                // Dropping the sender lets the writer finish what it holds, then shut down.
                Output::Close { conn } => drop(writers.remove(&conn)),
                Output::Persist { id, record } => {
                    match record {
                        Record::Member(record) => {
                            ctx.disk.write(*record);
                            tokio::time::sleep(SYNC_DELAY).await;
                            ctx.disk.sync();
                        }
                        other => kept.push(other),
                    }
                    node.handle(now(), Input::Persisted { id });
                }
                Output::WriteFile { id, .. } => {
                    node.handle(now(), Input::FileWritten { id, outcome: Ok(()) });
                }
                Output::Spawn { child, .. } => {
                    let reason = "this simulated host runs no commands".to_owned();
                    node.handle(now(), Input::ChildFailed { child, reason });
                }
                Output::Kill { .. } | Output::PauseChild { .. } | Output::ResumeChild { .. } => {}
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
                Some(Report::Input(input)) => {
                    if let Input::Datagram { bytes } = &input {
                        ctx.observer.delivered(me, bytes);
                    }
                    node.handle(now(), input);
                }
                None => return Err("the host's socket tasks all ended".into()),
            },
            () = tokio::time::sleep(wait) => node.handle(now(), Input::Timeout),
        }
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
        Event::Staged { version } => ctx.observer.staged(me, *version),
        _ => {}
    }
}

async fn receive_datagrams(socket: Arc<UdpSocket>, tx: UnboundedSender<Report>) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok((len, _)) = socket.recv_from(&mut buf).await {
        let bytes = buf.get(..len).unwrap_or_default().to_vec();
        if tx.send(Report::Input(Input::Datagram { bytes })).is_err() {
            return;
        }
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
