//! What a driver and a [`Node`](super::Node) say to each other: the ids that name sockets,
//! stored records, files and child processes, the [`Input`]s a driver observes and the
//! [`Output`]s it carries out. Owns no state and decides nothing.

use std::fmt;

pub use crate::child_env::ChildEnvironment;
use crate::exec::audit::{AuditRecord, ChainEntry, Checkpoint};
pub use crate::exec::audit_view::{AuditRange, AuditRows};
use crate::exec::daemon::ProcessEnd;
use crate::identity::NodeId;
use crate::member::{MemberRecord, Version};
use crate::policy::alerts::Alert;
pub use crate::policy::checks::FileFacts;
use crate::policy::document::{SignedPolicy, Superseded};
use crate::policy::report::Aggregate;
use crate::policy::server::Rejection;
use crate::signed::Signed;
use crate::time::WallClock;
use crate::web::{RequestId, WebLimits, WebRequest, WebResponse};

/// One stream connection. Inbound ids come from the driver (the high bit set, see
/// [`ConnId::inbound`]), outbound ids from the node's [`Output::Connect`], so the two never meet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

impl ConnId {
    const INBOUND: u64 = 1 << 63;

    /// The driver's `n`th accepted connection.
    pub const fn inbound(n: u64) -> ConnId {
        ConnId(n | Self::INBOUND)
    }

    pub const fn is_inbound(self) -> bool {
        self.0 & Self::INBOUND != 0
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = if self.is_inbound() { "in" } else { "out" };
        write!(f, "{side}#{}", self.0 & !Self::INBOUND)
    }
}

/// A listening socket the node asked for with [`Output::Listen`] or [`Output::ListenLocal`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListenerId(pub u32);

impl ListenerId {
    const LOCAL: u32 = 1 << 31;

    /// The node's `n`th local (plain, same-host) listener.
    pub const fn local(n: u32) -> ListenerId {
        ListenerId(n | Self::LOCAL)
    }

    /// Whether this listener is a local one: its connections carry no channel.
    pub const fn is_local(self) -> bool {
        self.0 & Self::LOCAL != 0
    }
}

/// A record handed to the driver to keep; answered by [`Input::Persisted`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PersistId(pub u64);

/// A file write; answered by [`Input::FileWritten`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileId(pub u64);

/// A read of the audit trail; answered by [`Input::AuditRead`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AuditReadId(pub u64);

/// A child process; its life is reported by the `Child*` inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChildId(pub u64);

/// What a driver observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// `listener` accepted a connection, which the driver names `conn` ([`ConnId::inbound`]).
    Accepted {
        listener: ListenerId,
        conn: ConnId,
    },
    /// Bytes read from `conn`, in any split.
    Received {
        conn: ConnId,
        bytes: Vec<u8>,
    },
    /// The driver wrote `bytes` more of what `conn` was given to the socket.
    Written {
        conn: ConnId,
        bytes: usize,
    },
    /// `conn` ended: end of stream, a reset, or (for an outbound one) the connect failed.
    Closed {
        conn: ConnId,
        error: Option<String>,
    },
    /// The record `id` is durable.
    Persisted {
        id: PersistId,
    },
    FileWritten {
        id: FileId,
        outcome: Result<(), String>,
    },
    ChildStarted {
        child: ChildId,
    },
    /// The child could not be started.
    ChildFailed {
        child: ChildId,
        reason: String,
    },
    ChildOutput {
        child: ChildId,
        stderr: bool,
        bytes: Vec<u8>,
    },
    ChildExited {
        child: ChildId,
        end: ProcessEnd,
    },
    /// A browser's or script's request, parsed by the driver's HTTPS front from the listener of
    /// [`Output::ListenWeb`]; answered by one [`Output::WebRespond`].
    WebRequest {
        request: RequestId,
        web: Box<WebRequest>,
    },
    /// The front handed `bytes` more of `request`'s streamed answer to its connection.
    WebSent {
        request: RequestId,
        bytes: usize,
    },
    /// The browser went away before `request` was answered in full; nothing more about it
    /// reaches the driver's front.
    WebGone {
        request: RequestId,
    },
    /// The file `Inspect` asked about: `Ok(None)` when nothing is at the path.
    Inspected {
        id: FileId,
        facts: Result<Option<FileFacts>, String>,
    },
    /// What the read `read` found in the audit trail, or why the store could not read it.
    AuditRead {
        read: AuditReadId,
        rows: Result<AuditRows, String>,
    },
    /// The process was asked to stop (SIGTERM): refuse new exec work (new connections to the
    /// gateway, the KDC and the hosts are closed at once) and let what runs finish; the driver
    /// stops when [`Node::is_drained`](super::Node::is_drained) says so, or at its deadline.
    Drain,
    /// The deadline from `poll_timeout` passed.
    Timeout,
}

/// What a driver does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Listen on `addr` (`IP:PORT`); a failure to bind is fatal for the process.
    Listen { listener: ListenerId, addr: String },
    /// Listen on the Unix socket at `path` for applications on this host (no channel: whoever
    /// may open the socket may ask); its connections come as `Accepted` on `listener`, their
    /// bytes plain. A failure to bind is fatal for the process.
    ListenLocal { listener: ListenerId, path: String },
    /// Serve HTTPS on `addr` (`IP:PORT`) with the node's certificate, holding every browser to
    /// `limits`; each request comes as [`Input::WebRequest`]. A failure to bind is fatal.
    ListenWeb { addr: String, limits: WebLimits },
    /// The answer to `request`: whole, or (when it says `streamed`) followed by `WebChunk`s.
    WebRespond { request: RequestId, response: Box<WebResponse> },
    /// More of a streamed answer, to be reported with `WebSent` as the connection takes it; the
    /// last one ends the answer.
    WebChunk { request: RequestId, bytes: Vec<u8>, last: bool },
    /// Look at the file at `path` (following links): its kind, permission bits, owner and group
    /// (with their names), size, and with `read` its first 1 MiB; then answer `Inspected`.
    Inspect { id: FileId, path: String, read: bool },
    /// Read `range` of the audit trail this node keeps, then answer `AuditRead`.
    ReadAudit { read: AuditReadId, range: AuditRange },
    /// Open a stream to `addr`; bytes for `conn` may follow at once and wait for the connect.
    Connect { conn: ConnId, addr: String },
    /// Write `bytes` to `conn`, in order, after everything given before; report with `Written`.
    Transmit { conn: ConnId, bytes: Vec<u8> },
    /// Write what is queued for `conn`, then close it. No input about it follows.
    Close { conn: ConnId },
    /// Keep `record` durably, then answer `Persisted`. Until then the node yields only further
    /// `Persist`s, which the driver may make durable together with this one (see the crate docs).
    Persist { id: PersistId, record: Record },
    /// Replace the file at `path` with `contents` atomically, then answer `FileWritten`.
    WriteFile { id: FileId, path: String, contents: Vec<u8> },
    /// Write `contents` whole at `path`, new or in place of the file there, atomically (a
    /// temporary file beside it, synced, renamed over), with permission bits `mode`, owned by
    /// `owner` (a user other than this process's needs root), following no symbolic link: a
    /// directory on the path that is a link fails the write, a link at `path` is replaced (its
    /// target untouched). Answer `FileWritten`.
    PlaceFile { id: FileId, path: String, contents: Vec<u8>, mode: u32, owner: String },
    /// Start `argv` (no shell) as `run_as` (this process's user when `None`), in its own process
    /// group, in the environment and working directory `env` resolves to with the facts of
    /// `run_as`'s account (see [`ChildEnvironment::resolve`]), with `stdin` (then end of file) on
    /// its standard input; answer `ChildStarted` or `ChildFailed`.
    Spawn { child: ChildId, argv: Vec<String>, run_as: Option<String>, env: ChildEnvironment, stdin: Vec<u8> },
    /// Kill the child's whole process group.
    Kill { child: ChildId },
    /// Stop reading the child's output for now: it blocks once its pipe fills, which is how a
    /// slow reader at the far end slows the command instead of filling memory.
    PauseChild { child: ChildId },
    /// Read the child's output again.
    ResumeChild { child: ChildId },
    /// Something a person may want to read in the log.
    Log(Event),
}

/// What the driver keeps for the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// The member's whole durable state.
    Member(Box<MemberRecord>),
    /// The next entry of the collector's audit chain, and the collector's signed checkpoint of
    /// the chain up to it when it completes a stretch: both durable in one write, or neither.
    AuditEntry { entry: Box<ChainEntry>, checkpoint: Option<Box<Signed<Checkpoint>>> },
    /// An exec host's own copy of an audit record, kept before the collector is asked.
    LocalAudit(AuditRecord),
    /// A verified policy version this server now holds (served again after a restart).
    Policy(SignedPolicy),
    /// A policy version that lost a conflict, kept as history.
    PolicySuperseded(Superseded),
    /// An alert the master raised.
    PolicyAlert(Alert),
    /// One sync's aggregate from a child, at the master: the historical status.
    PolicyHistory { from: String, at: WallClock, aggregate: Aggregate },
    /// A KDC principal's new Argon2id hash, or its removal (`None`).
    Principal { name: String, hash: Option<String> },
}

/// How much a log line matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
}

/// A log line, typed so tests and traces can match on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An inbound connection was refused at accept: too many open, or mid-handshake.
    Refused {
        listener: &'static str,
        conn: ConnId,
        open: usize,
        handshaking: usize,
    },
    /// A peer had more than its share of connections open; the newest was closed.
    PerPeerLimit {
        conn: ConnId,
        peer: String,
    },
    /// A connection ended with an error (the channel's or the socket's).
    ConnFailed {
        conn: ConnId,
        error: String,
    },
    /// The peer's key is no longer one this listener trusts (a removed member, a swapped key):
    /// its open connection was closed.
    NoLongerTrusted {
        listener: &'static str,
        conn: ConnId,
        peer: String,
    },
    /// A frame begun was not whole in time (a peer sending a byte at a time): closed.
    SlowFrame {
        conn: ConnId,
        timeout_ms: u64,
    },
    /// An inbound connection said nothing in time and was closed.
    Silent {
        conn: ConnId,
    },
    /// The peer did not read what it was sent; it was dropped rather than buffered without end.
    NotReading {
        conn: ConnId,
        backlog: usize,
    },
    /// A message that could not be decoded or did not belong on its connection.
    BadMessage {
        conn: ConnId,
        error: String,
    },
    /// A link to `peer` is down; the next attempt waits `retry_ms`.
    LinkDown {
        peer: String,
        retry_ms: u64,
    },
    /// A message for a peer with no open channel was dropped (it is resent by its protocol).
    Undeliverable {
        to: String,
    },
    Staged {
        version: Version,
        /// The member it was fetched from, by name (`None`: authored here).
        from: Option<String>,
    },
    Installed {
        version: Version,
    },
    /// A member's valid Status was taken: what it advertised.
    Heard {
        from: NodeId,
        active: Version,
        staged: Option<Version>,
    },
    /// The installed configuration does not list this node: it was removed.
    OutsideRoster {
        version: Version,
    },
    MemberDropped {
        reason: String,
    },
    ChangeAccepted {
        version: Version,
    },
    ChangeRejected {
        reason: String,
    },
    AuditRefused {
        reason: String,
    },
    /// A record the chain holds already came again (a lost answer, or a replay): not appended.
    AuditDuplicate {
        host: String,
        index: u64,
    },
    /// A setting of the installed configuration the exec roles could not read; left out.
    BadSetting {
        error: String,
    },
    PolicyStored {
        id: String,
        version: u64,
    },
    /// The master raised an alert.
    PolicyAlert {
        id: u64,
        kind: &'static str,
        detail: String,
    },
    /// An alert's hook did not start or did not end well.
    AlertHookFailed {
        alert: u64,
        reason: String,
    },
    /// Two servers edited one policy between syncs; `lost` gave way to `by`.
    PolicySuperseded {
        id: String,
        lost: String,
        by: String,
    },
    PolicyRejected(Rejection),
    PolicyApplied {
        agent: String,
        digest: String,
    },
    PolicyApplyFailed {
        agent: String,
        error: String,
    },
    /// An agent's policy server left its last `unanswered` polls unanswered (said when that
    /// begins, then again every so many polls while it lasts).
    PolicyServerUnreachable {
        agent: String,
        server: String,
        unanswered: u32,
        /// When the server last answered; `None`: never, since the agent started.
        last_heard: Option<WallClock>,
    },
    /// The server answered again after `unanswered` polls without an answer.
    PolicyServerReachable {
        agent: String,
        server: String,
        unanswered: u32,
    },
    /// A browser left more than its share of a streamed answer unread: its run was ended.
    WebNotReading {
        request: RequestId,
        unread: usize,
    },
    /// A web console cookie for a session its user logged out was presented again.
    WebSessionLoggedOut {
        principal: String,
    },
    /// The node began to drain, with this much still running.
    Draining {
        work: RunningWork,
    },
}

/// Exec work in progress on a node, as a drain waits for it and a scrape reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunningWork {
    pub runs: usize,
    pub sessions: usize,
    pub processes: usize,
    pub placements: usize,
    pub audit_in_flight: usize,
}

impl Event {
    pub fn level(&self) -> Level {
        match self {
            Event::Refused { .. }
            | Event::PerPeerLimit { .. }
            | Event::NoLongerTrusted { .. }
            | Event::SlowFrame { .. }
            | Event::NotReading { .. }
            | Event::BadMessage { .. }
            | Event::PolicyRejected(_)
            | Event::AuditRefused { .. }
            | Event::AuditDuplicate { .. }
            | Event::BadSetting { .. }
            | Event::PolicyApplyFailed { .. }
            | Event::PolicyServerUnreachable { .. }
            | Event::PolicySuperseded { .. }
            | Event::PolicyAlert { .. }
            | Event::AlertHookFailed { .. }
            | Event::WebNotReading { .. }
            | Event::WebSessionLoggedOut { .. }
            | Event::OutsideRoster { .. } => Level::Warn,
            Event::LinkDown { .. }
            | Event::Staged { .. }
            | Event::Installed { .. }
            | Event::ChangeAccepted { .. }
            | Event::ChangeRejected { .. }
            | Event::PolicyStored { .. }
            | Event::PolicyServerReachable { .. }
            | Event::PolicyApplied { .. }
            | Event::Draining { .. } => Level::Info,
            Event::ConnFailed { .. }
            | Event::Silent { .. }
            | Event::Undeliverable { .. }
            | Event::Heard { .. }
            | Event::MemberDropped { .. } => Level::Debug,
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Refused { listener, conn, open, handshaking } => write!(
                f,
                "{listener} connection refused: too many open ({conn}; {open} open, {handshaking} in handshake)"
            ),
            Event::PerPeerLimit { conn, peer } => {
                write!(f, "connection {conn} closed: {peer} has too many connections open")
            }
            Event::ConnFailed { conn, error } => write!(f, "connection {conn} failed: {error}"),
            Event::NoLongerTrusted { listener, conn, peer } => {
                write!(f, "{listener} connection {conn} closed: {peer}'s key is no longer trusted here")
            }
            Event::Silent { conn } => write!(f, "connection {conn} closed: it sent nothing in time"),
            Event::SlowFrame { conn, timeout_ms } => write!(
                f,
                "connection {conn} closed: a frame it began was not whole within {timeout_ms} ms (too slow)"
            ),
            Event::NotReading { conn, backlog } => {
                write!(f, "connection {conn} dropped: the peer is not reading ({backlog} bytes waiting)")
            }
            Event::BadMessage { conn, error } => write!(f, "connection {conn} closed: {error}"),
            Event::LinkDown { peer, retry_ms } => write!(f, "link to {peer} down; retrying in {retry_ms} ms"),
            Event::Draining { work } => write!(
                f,
                "draining: new exec connections are closed; waiting for {} runs, {} host sessions, {} processes, {} file placements and {} audit records in flight",
                work.runs, work.sessions, work.processes, work.placements, work.audit_in_flight
            ),
            Event::Undeliverable { to } => write!(f, "no channel to {to}; message dropped"),
            Event::Staged { version, from: None } => {
                write!(f, "configuration {version} staged (authored here)")
            }
            Event::Staged { version, from: Some(from) } => {
                write!(f, "configuration {version} staged (fetched from {from})")
            }
            Event::Installed { version } => write!(f, "configuration {version} installed"),
            Event::Heard { from, active, staged } => match staged {
                Some(staged) => write!(f, "{from} announces active {active}, staged {staged}"),
                None => write!(f, "{from} announces active {active}"),
            },
            Event::OutsideRoster { version } => write!(
                f,
                "installed {version}, which does not list this node: it was removed from the cluster and serves nothing"
            ),
            Event::MemberDropped { reason } => write!(f, "member message dropped: {reason}"),
            Event::ChangeAccepted { version } => write!(f, "operator change accepted as {version}"),
            Event::ChangeRejected { reason } => write!(f, "operator change rejected: {reason}"),
            Event::AuditRefused { reason } => write!(f, "audit record refused: {reason}"),
            Event::AuditDuplicate { host, index } => write!(
                f,
                "audit record from `{host}` came again (a lost answer or a replay); the chain holds it at {index}, not appended twice"
            ),
            Event::BadSetting { error } => write!(f, "configuration setting left out: {error}"),
            Event::PolicyStored { id, version } => write!(f, "policy {id} v{version} stored"),
            Event::PolicyAlert { id, kind, detail } => write!(f, "policy alert {id} ({kind}): {detail}"),
            Event::AlertHookFailed { alert, reason } => {
                write!(f, "the hook for policy alert {alert} failed: {reason}")
            }
            Event::PolicySuperseded { id, lost, by } => write!(
                f,
                "policy {id}: {lost} was edited at the same version as {by} and lost to it; kept as superseded"
            ),
            Event::PolicyRejected(rejection) => {
                write!(f, "policy input refused ({}): {rejection}", rejection.kind.as_str())
            }
            Event::PolicyApplied { agent, digest } => write!(f, "{agent}: policy {digest} applied"),
            Event::PolicyApplyFailed { agent, error } => write!(f, "{agent}: policy not applied: {error}"),
            Event::PolicyServerUnreachable { agent, server, unanswered, last_heard } => {
                let polls = if *unanswered == 1 { "poll" } else { "polls" };
                let last = match last_heard {
                    Some(at) => {
                        format!("it last answered at {} UTC", crate::exec::audit_view::utc_text(at.0))
                    }
                    None => "it has not answered since the agent started".to_owned(),
                };
                write!(
                    f,
                    "{agent}: cannot reach its policy server {server}: no answer to its last {unanswered} {polls} ({last}); keeping the policy applied and trying again at each poll"
                )
            }
            Event::PolicyServerReachable { agent, server, unanswered } => {
                let polls = if *unanswered == 1 { "poll" } else { "polls" };
                write!(
                    f,
                    "{agent}: its policy server {server} answers again, after {unanswered} unanswered {polls}"
                )
            }
            Event::WebNotReading { request, unread } => {
                write!(f, "{request}: run ended: the browser left {unread} bytes of results unread")
            }
            Event::WebSessionLoggedOut { principal } => write!(
                f,
                "web console: a cookie for {principal}'s logged-out session was presented again and refused"
            ),
        }
    }
}
