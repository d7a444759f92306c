//! Drives a core [`Node`] on real sockets, files, child processes and SQLite, inside the process's
//! event loop. Owns the mapping only: each node output becomes a socket, write, file, process or
//! row, and each readiness event becomes a node input. It never decides who may connect, what a
//! message means or what to report: the node does.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::Path;

use cohort_core::Machine;
use cohort_core::node::{
    AuditRange, AuditRows, ChildId, ConnId, Input, Level, ListenerId, Node, Output, PersistId, Record,
};
use mio::event::Event;
use mio::net::{TcpListener, TcpStream};

use crate::sockets::{ListenSocket, StreamSocket, bind_local};
use mio::{Interest, Token};
use tracing::{debug, info, warn};

use crate::child::Stream;
use crate::clock::Clock;
use crate::commands::Commands;
use crate::error::NodeError;
use crate::launch::SpawnRequest;
use crate::place::place_file;
use crate::reactor::{Role, Slot};
use crate::store::Store;
use crate::web_front::WebFront;
use std::sync::Arc;

/// Bytes read from one connection per wake-up, so one busy peer cannot starve the rest.
const READ_BUDGET: usize = 256 * 1024;

#[derive(Debug, Clone, Copy)]
enum Source {
    /// The web front has requests or news of its connections.
    Web,
    Listener(ListenerId),
    Conn(ConnId),
    /// The spawner announced commands it started (or could not).
    Spawner,
}

#[derive(Debug)]
struct Socket {
    stream: StreamSocket,
    token: Token,
    outgoing: Vec<u8>,
    /// The node closed it: write what is queued, then drop it.
    closing: bool,
    /// Stopped reading at the budget with bytes waiting: read again next turn.
    more_to_read: bool,
}

/// A node on the loop. See the module docs.
pub struct NodeDriver {
    name: &'static str,
    node: Node,
    slot: Slot,
    clock: Clock,
    store: Store,
    listeners: BTreeMap<ListenerId, ListenSocket>,
    /// The group the local lookup socket is given.
    local_group: Option<u32>,
    sockets: BTreeMap<ConnId, Socket>,
    /// Streams with bytes queued since the last write: written once the node has no more
    /// outputs, so a burst of messages to one peer leaves in one system call.
    unflushed: BTreeSet<ConnId>,
    /// Records the node handed out, kept together once it yields nothing more (group commit).
    ready: Vec<(PersistId, Record)>,
    /// Started before any socket, so the commands it starts copy a small descriptor table.
    commands: Commands,
    sources: BTreeMap<Token, Source>,
    next_token: usize,
    next_inbound: u64,
    /// The certificate the web front serves, if the configuration gives one.
    web_tls: Option<Arc<rustls::ServerConfig>>,
    web: Option<WebFront>,
    /// When the figures last went to the metrics recorder.
    metrics_published: Option<std::time::Instant>,
}

impl std::fmt::Debug for NodeDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeDriver").field("name", &self.name).field("sockets", &self.sockets.len()).finish()
    }
}

impl NodeDriver {
    /// Drives `node` (already started with the same `clock`), keeping its records in `store`.
    pub fn new(
        name: &'static str,
        node: Node,
        clock: Clock,
        store: Store,
        slot: Slot,
        local_group: Option<u32>,
        web_tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Result<Self, NodeError> {
        let mut driver = NodeDriver {
            name,
            node,
            slot,
            clock,
            store,
            listeners: BTreeMap::new(),
            local_group,
            sockets: BTreeMap::new(),
            unflushed: BTreeSet::new(),
            ready: Vec::new(),
            commands: Commands::start()?,
            sources: BTreeMap::new(),
            next_token: 1,
            next_inbound: 1,
            web_tls,
            web: None,
            metrics_published: None,
        };
        let token = driver.token(Source::Spawner);
        if let Some(news) = driver.commands.news() {
            driver.slot.registry().register(news, token, Interest::READABLE)?;
        }
        driver.settle()?;
        Ok(driver)
    }

    fn feed(&mut self, input: Input) {
        let now = self.clock.now();
        self.node.handle(now, input);
    }

    fn token(&mut self, source: Source) -> Token {
        let token = self.slot.token(self.next_token);
        self.next_token += 1;
        self.sources.insert(token, source);
        token
    }

    /// Carries out one node output. Errors are only what the process cannot go on after.
    fn carry_out(&mut self, output: Output) -> Result<(), NodeError> {
        match output {
            Output::Listen { listener, addr } => {
                let mut socket = TcpListener::bind(parse_addr("listen on", &addr)?)
                    .map_err(|source| NodeError::Bind { what: "listen on", addr, source })?;
                let token = self.token(Source::Listener(listener));
                self.slot.registry().register(&mut socket, token, Interest::READABLE)?;
                self.listeners.insert(listener, ListenSocket::Tcp(socket));
            }
            Output::ListenLocal { listener, path } => {
                let what = "open the lookup socket at";
                let mut socket = bind_local(Path::new(&path), self.local_group)
                    .map_err(|source| NodeError::Bind { what, addr: path.clone(), source })?;
                let token = self.token(Source::Listener(listener));
                self.slot.registry().register(&mut socket, token, Interest::READABLE)?;
                info!(%path, "lookup socket open");
                self.listeners.insert(listener, ListenSocket::Unix(socket));
            }
            Output::ListenWeb { addr, limits } => {
                let tls = self.web_tls.clone().ok_or(NodeError::NoWebCertificate)?;
                let what = "serve the web console on";
                let mut front = WebFront::start(parse_addr(what, &addr)?, limits, tls)
                    .map_err(|source| NodeError::Bind { what, addr: addr.clone(), source })?;
                let token = self.token(Source::Web);
                self.slot.registry().register(front.wake_source(), token, Interest::READABLE)?;
                info!(addr = %front.local_addr(), "web console listening");
                self.web = Some(front);
            }
            Output::WebRespond { request, response } => {
                if let Some(gone) = self.web.as_mut().and_then(|w| w.respond(request, *response)) {
                    self.feed(gone);
                }
            }
            Output::WebChunk { request, bytes, last } => {
                if let Some(front) = &mut self.web {
                    front.chunk(request, bytes, last);
                }
            }
            Output::Inspect { id, path, read } => {
                let facts = crate::inspect::inspect(Path::new(&path), read);
                self.feed(Input::Inspected { id, facts });
            }
            Output::ReadAudit { read, range } => {
                let rows = self.read_audit(range).map_err(|e| e.to_string());
                self.feed(Input::AuditRead { read, rows });
            }
            Output::Connect { conn, addr } => {
                match addr.parse::<SocketAddr>().map(|a| TcpStream::connect(a).and_then(StreamSocket::tcp)) {
                    Ok(Ok(stream)) => self.adopt(conn, stream),
                    Ok(Err(e)) => self.feed(Input::Closed { conn, error: Some(e.to_string()) }),
                    Err(_) => {
                        self.feed(Input::Closed { conn, error: Some(format!("`{addr}` is not IP:PORT")) })
                    }
                }
            }
            Output::Transmit { conn, bytes } => {
                if let Some(socket) = self.sockets.get_mut(&conn) {
                    socket.outgoing.extend_from_slice(&bytes);
                    self.unflushed.insert(conn);
                }
            }
            Output::Close { conn } => {
                if let Some(socket) = self.sockets.get_mut(&conn) {
                    socket.closing = true;
                    self.unflushed.insert(conn);
                }
            }
            // Kept once the node has no more to give: see `keep_ready`.
            Output::Persist { id, record } => self.ready.push((id, record)),
            Output::WriteFile { id, path, contents } => {
                let outcome = write_atomically(Path::new(&path), &contents).map_err(|e| e.to_string());
                self.feed(Input::FileWritten { id, outcome });
            }
            Output::PlaceFile { id, path, contents, mode, owner } => {
                let outcome = place_file(&path, &contents, mode, &owner).map_err(|e| e.to_string());
                self.feed(Input::FileWritten { id, outcome });
            }
            // What the command's environment holds is core's (`env`); the account it is
            // filled in with is looked up by the spawner. The node hears `ChildStarted` when
            // the spawner announces it: the loop goes on meanwhile.
            Output::Spawn { child, argv, run_as, env, stdin } => {
                let tokens = (self.slot.token(self.next_token), self.slot.token(self.next_token + 1));
                self.next_token += 2;
                let request = SpawnRequest { argv, run_as, env, stdin };
                if let Some(failed) = self.commands.spawn(child, request, tokens) {
                    self.feed(failed);
                }
            }
            Output::Kill { child } => {
                if let Some(exited) = self.commands.kill(child) {
                    self.feed(exited);
                }
            }
            Output::PauseChild { child } => self.commands.pause(child, self.slot.registry()),
            Output::ResumeChild { child } => self.commands.resume(child, self.slot.registry()),
            Output::Log(event) => match event.level() {
                Level::Warn => warn!(node = self.name, "{event}"),
                Level::Info => info!(node = self.name, "{event}"),
                Level::Debug => debug!(node = self.name, "{event}"),
            },
        }
        Ok(())
    }

    fn adopt(&mut self, conn: ConnId, mut stream: StreamSocket) {
        let token = self.token(Source::Conn(conn));
        if let Err(e) =
            self.slot.registry().register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
        {
            self.sources.remove(&token);
            return self.feed(Input::Closed { conn, error: Some(e.to_string()) });
        }
        let socket = Socket { stream, token, outgoing: Vec::new(), closing: false, more_to_read: false };
        self.sockets.insert(conn, socket);
    }

    fn accept(&mut self, listener: ListenerId) {
        loop {
            let Some(socket) = self.listeners.get(&listener) else { return };
            match socket.accept() {
                Ok(stream) => {
                    let conn = ConnId::inbound(self.next_inbound);
                    self.next_inbound += 1;
                    self.adopt(conn, stream);
                    self.feed(Input::Accepted { listener, conn });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => return warn!(error = %e, "accept failed"),
            }
        }
    }

    /// Writes what the socket takes; a finished close drops the socket.
    fn flush(&mut self, conn: ConnId) {
        let Some(socket) = self.sockets.get_mut(&conn) else { return };
        let mut written = 0;
        let failure = loop {
            if socket.outgoing.len() == written {
                break None;
            }
            match socket.stream.write(&socket.outgoing[written..]) {
                Ok(0) => break Some("the peer stopped accepting bytes".to_owned()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Some(e.to_string()),
            }
        };
        socket.outgoing.drain(..written);
        let done = socket.closing && socket.outgoing.is_empty();
        if written > 0 {
            self.feed(Input::Written { conn, bytes: written });
        }
        if let Some(error) = failure {
            self.drop_socket(conn);
            self.feed(Input::Closed { conn, error: Some(error) });
        } else if done {
            self.drop_socket(conn);
        }
    }

    fn drop_socket(&mut self, conn: ConnId) {
        if let Some(mut socket) = self.sockets.remove(&conn) {
            let _ = self.slot.registry().deregister(&mut socket.stream);
            socket.stream.shutdown();
            self.sources.remove(&socket.token);
        }
    }

    fn read(&mut self, conn: ConnId) {
        let mut buf = [0u8; 16 * 1024];
        let mut total = 0;
        loop {
            let Some(socket) = self.sockets.get_mut(&conn) else { return };
            match socket.stream.read(&mut buf) {
                Ok(0) => {
                    self.drop_socket(conn);
                    return self.feed(Input::Closed { conn, error: None });
                }
                Ok(n) => {
                    total += n;
                    if total >= READ_BUDGET {
                        socket.more_to_read = true;
                    }
                    self.feed(Input::Received { conn, bytes: buf[..n].to_vec() });
                    if total >= READ_BUDGET {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.drop_socket(conn);
                    return self.feed(Input::Closed { conn, error: Some(e.to_string()) });
                }
            }
        }
    }

    fn read_pipe(&mut self, child: ChildId, stream: Stream) {
        if let Some(output) = self.commands.read(child, stream, READ_BUDGET) {
            self.feed(output);
        }
        self.reap();
    }

    /// Reports the commands that exited.
    fn reap(&mut self) {
        for exited in self.commands.reap() {
            self.feed(exited);
        }
    }

    /// Takes in what the spawner announced.
    fn take_started(&mut self) -> Result<(), NodeError> {
        for heard in self.commands.take_started(self.slot.registry())? {
            self.feed(heard);
        }
        Ok(())
    }

    /// Makes every record the node handed out durable in one commit, then tells the node, in
    /// the order it made them. Durable before the node hears so: the commit returns only once
    /// synced.
    fn keep_ready(&mut self) -> Result<(), NodeError> {
        let (ids, records): (Vec<PersistId>, Vec<Record>) =
            std::mem::take(&mut self.ready).into_iter().unzip();
        self.store.keep_all(&records, self.clock.now().wall.unix_millis())?;
        for id in ids {
            self.feed(Input::Persisted { id });
        }
        Ok(())
    }

    fn read_audit(&self, range: AuditRange) -> Result<AuditRows, crate::store::StoreError> {
        Ok(match range {
            AuditRange::Newest { before, count } => {
                AuditRows { rows: self.store.chain_newest(before, count)?, checkpoints: Vec::new() }
            }
            AuditRange::Whole => {
                AuditRows { rows: self.store.load_chain()?, checkpoints: self.store.load_checkpoints()? }
            }
        })
    }

    /// Carries out outputs until the node has none, reading again where a budget stopped.
    fn settle(&mut self) -> Result<(), NodeError> {
        loop {
            while let Some(output) = self.node.poll_output() {
                self.carry_out(output)?;
            }
            if !self.ready.is_empty() {
                self.keep_ready()?;
                continue;
            }
            let unflushed = std::mem::take(&mut self.unflushed);
            if !unflushed.is_empty() {
                for conn in unflushed {
                    self.flush(conn);
                }
                continue;
            }
            let again: Vec<ConnId> = self
                .sockets
                .iter_mut()
                .filter_map(|(c, s)| std::mem::take(&mut s.more_to_read).then_some(*c))
                .collect();
            if again.is_empty() {
                self.publish_metrics();
                return Ok(());
            }
            for conn in again {
                self.read(conn);
            }
        }
    }

    /// Copies the node's figures to the metrics recorder, at most every [`METRICS_EVERY`]: a
    /// scrape every few seconds needs no fresher figures, and a busy loop turns thousands of
    /// times a second.
    fn publish_metrics(&mut self) {
        let now = std::time::Instant::now();
        if self.metrics_published.is_some_and(|at| now.duration_since(at) < METRICS_EVERY) {
            return;
        }
        self.metrics_published = Some(now);
        crate::metrics::publish(&self.node.metrics(self.clock.now().wall));
    }
}

const METRICS_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

fn parse_addr(what: &'static str, addr: &str) -> Result<SocketAddr, NodeError> {
    addr.parse().map_err(|_| NodeError::Bind {
        what,
        addr: addr.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "not IP:PORT"),
    })
}

/// Replaces `path` with `contents`: a temporary file beside it, synced, then renamed over, so a
/// reader never sees half a file.
fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let staging = path.with_extension("tmp");
    let mut file = std::fs::File::create(&staging)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&staging, path)
}

impl Role for NodeDriver {
    fn name(&self) -> &'static str {
        self.name
    }

    fn settle(&mut self) -> Result<(), NodeError> {
        NodeDriver::settle(self)
    }

    fn next_wake(&self) -> Option<std::time::Instant> {
        let deadline = self.node.poll_timeout().map(|d| self.clock.wake_at(d));
        // Children whose pipes closed may not have exited yet: look again soon.
        if self.commands.awaiting_exit() {
            let soon = std::time::Instant::now() + std::time::Duration::from_millis(10);
            return Some(deadline.map_or(soon, |d| d.min(soon)));
        }
        deadline
    }

    fn handle_event(&mut self, event: &Event) -> Result<(), NodeError> {
        match self.sources.get(&event.token()).copied() {
            Some(Source::Listener(listener)) => self.accept(listener),
            Some(Source::Conn(conn)) => {
                let error = self.sockets.get(&conn).and_then(|s| match s.stream.take_error() {
                    Ok(Some(e)) | Err(e) => Some(e.to_string()),
                    Ok(None) => None,
                });
                if let Some(error) = error {
                    self.drop_socket(conn);
                    self.feed(Input::Closed { conn, error: Some(error) });
                } else {
                    if event.is_readable() {
                        self.read(conn);
                    }
                    if event.is_writable() {
                        self.flush(conn);
                    }
                }
            }
            Some(Source::Spawner) => self.take_started()?,
            Some(Source::Web) => {
                let inputs = self.web.as_mut().map(WebFront::take_inputs).unwrap_or_default();
                for input in inputs {
                    self.feed(input);
                }
            }
            None => {
                if let Some((child, stream)) = self.commands.pipe(event.token()) {
                    self.read_pipe(child, stream);
                }
            }
        }
        Ok(())
    }

    fn fire_timeouts(&mut self) -> Result<(), NodeError> {
        self.reap();
        if self.node.poll_timeout().is_some_and(|t| t <= self.clock.now().mono) {
            self.feed(Input::Timeout);
        }
        Ok(())
    }

    fn drain(&mut self) {
        self.feed(Input::Drain);
    }

    fn drained(&self) -> bool {
        self.node.is_drained()
    }

    fn stop(&mut self) {
        if let Some(front) = &mut self.web {
            front.stop();
        }
        self.commands.stop();
        info!(node = self.name, "stopped");
    }
}
