//! What crosses the exec channels: client ↔ gateway (requests, streamed events), gateway ↔ KDC
//! (one login or one batch of tickets per connection), exec host → collector (signed audit
//! records and their acknowledgements, on the gateway's listener), and gateway ↔ exec host
//! (start, cancel, host events, each naming its session: one channel carries many sessions and
//! stays open across runs). It never carries a secret in the clear: the channel is Noise, and
//! tickets are sealed to their host.

use serde::{Deserialize, Serialize};

use super::audit::AuditRecord;
pub use super::task::{CopyFile, MAX_STDIN, Task};
use super::ticket::{Credential, SealedAuthenticator, ServiceTicket};
use crate::signed::{Signed, SignedKind};
use crate::time::WallClock;

impl SignedKind for AuditRecord {
    const DOMAIN: &'static str = "audit-record";
}

/// To the gateway's listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GatewayWire {
    Client(ClientRequest),
    /// An exec host's record, signed with the host's key, for the collector.
    AuditSubmit {
        ack: u64,
        record: Signed<AuditRecord>,
    },
}

/// From the gateway's listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GatewayReply {
    Client(ClientEvent),
    /// The record `ack` is durable in the chain.
    AuditAck {
        ack: u64,
    },
    AuditRefused {
        ack: u64,
        reason: String,
    },
}

/// From a gateway to the KDC: one request per connection, answered with one [`KdcReply`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KdcRequest {
    /// A client's login, passed through; the credential is bound to `client_key`.
    Login { principal: String, password: String, client_key: [u8; 32] },
    /// Service tickets for `hosts`, under a credential presented by `client_key`.
    Tickets { credential: Signed<Credential>, client_key: [u8; 32], hosts: Vec<String> },
    /// An operator's command on the principals, signed with the key that opened the channel.
    Principals(Signed<PrincipalCommand>),
}

impl std::fmt::Debug for KdcRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // Never a password in a log or a trace.
            KdcRequest::Login { principal, .. } => write!(f, "Login {{ principal: {principal:?}, .. }}"),
            KdcRequest::Tickets { credential, hosts, .. } => {
                write!(f, "Tickets {{ principal: {:?}, hosts: {} }}", credential.body.principal, hosts.len())
            }
            KdcRequest::Principals(command) => write!(f, "Principals({:?})", command.body.op),
        }
    }
}

/// From the KDC to a gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KdcReply {
    LoggedIn {
        credential: Signed<Credential>,
    },
    /// `public` may be shown to the client (it does not say which part was wrong); `reason`
    /// is for the gateway's audit trail.
    LoginRefused {
        public: String,
        reason: String,
    },
    /// One grant per host asked for, in the order asked.
    Tickets {
        grants: Vec<TicketGrant>,
    },
    /// The request as a whole was refused (a bad or expired credential, too many hosts).
    Refused {
        reason: String,
    },
    /// The answer to an operator's principal command.
    Principals(PrincipalReply),
}

/// A ticket for one host, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketGrant {
    pub host: String,
    pub ticket: Result<GrantedTicket, String>,
}

/// A service ticket with the session key the gateway makes its authenticator with. It travels
/// only inside the gateway↔KDC channel and lives at the gateway only for the run.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantedTicket {
    pub ticket: ServiceTicket,
    pub session_key: [u8; 32],
    pub expires: crate::time::WallClock,
}

impl std::fmt::Debug for GrantedTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantedTicket")
            .field("host", &self.ticket.host)
            .field("expires", &self.expires)
            .finish()
    }
}

/// From a gateway to an exec host. `session` is the gateway's number for the session, unique
/// on the channel while the session lasts: the host answers under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostWire {
    Start { session: u64, request: Box<ExecRequest> },
    Cancel { session: u64, reason: String },
}

/// From an exec host to a gateway: one event of session `session`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFrame {
    pub session: u64,
    pub event: HostEvent,
}

/// What a gateway sends a host to run one command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    pub ticket: ServiceTicket,
    pub authenticator: SealedAuthenticator,
    pub run_as: String,
    /// What the host does, `%h` already substituted; the authenticator covers all of it.
    pub task: Task,
    /// Bytes of each stream the host sends back; the rest is counted and dropped.
    pub max_output: u64,
}

/// What a host tells the gateway about a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostEvent {
    /// The host has the request (sent before any check): the gateway's connect timeout ends
    /// here, so a host that died while its channel sat open is found as soon as a fresh one.
    Received,
    Started,
    Output {
        stderr: bool,
        bytes: Vec<u8>,
    },
    /// Output beyond the run's cap that the host dropped since its last `Dropped` (sent every
    /// 64 KiB dropped, so the alarm rules still see output, and once more before the final
    /// event).
    Dropped {
        stdout: u64,
        stderr: u64,
    },
    Exited {
        code: i32,
    },
    Signalled {
        signal: i32,
    },
    /// Refused before anything ran; the reason is safe to show the user.
    Denied {
        reason: String,
    },
    /// Ended by a cancel (alarm, or the client went away).
    Killed {
        reason: String,
    },
}

impl HostEvent {
    /// Whether this event ends the session (nothing follows it).
    pub fn is_final(&self) -> bool {
        !matches!(
            self,
            HostEvent::Received | HostEvent::Started | HostEvent::Output { .. } | HostEvent::Dropped { .. }
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecCommand {
    pub credential: Signed<Credential>,
    pub hosts: Vec<String>,
    /// Node sets to leave out of `hosts` (pdsh's and clush's `-x`), expanded the same way.
    pub exclude: Vec<String>,
    pub run_as: String,
    /// What every host does: run a command (with what it reads on standard input, as pdsh and
    /// clush forward theirs) or place files.
    pub task: Task,
    pub fanout: u32,
    pub t1_ms: u64,
    pub t2_ms: u64,
    pub t3_ms: u64,
    /// Bytes of each stream kept per host; the gateway holds it to its own ceiling.
    pub max_output: u64,
    /// How long a host may take to accept the gateway's channel before it is reported
    /// unreachable (pdsh's `-t`); the gateway holds it to [`CONNECT_TIMEOUT_MS`].
    pub connect_timeout_ms: u64,
}

/// The bounds of a run's connect timeout, in milliseconds.
pub const CONNECT_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 100..=60_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientRequest {
    Login { principal: String, password: String },
    Exec(Box<ExecCommand>),
}

/// One host's outcome as the client receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostResult {
    pub host: String,
    pub outcome: HostOutcome,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Output beyond the cap, counted and not kept: shown as a marker after the output.
    pub cut_bytes: u64,
    pub started_ms: Option<u64>,
    pub ended_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostOutcome {
    Exited(i32),
    Signalled(i32),
    KilledByAlarm(String),
    Denied(String),
    Unreachable(String),
    Failed(String),
}

/// A part of a request the gateway held to the principal's ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ceiling {
    Fanout {
        asked: u32,
        granted: u32,
    },
    /// T1 + T2: how long a host's command may run.
    Time {
        asked_ms: u64,
        granted_ms: u64,
    },
}

impl std::fmt::Display for Ceiling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ceiling::Fanout { asked, granted } => write!(f, "fan-out {asked} lowered to {granted}"),
            Ceiling::Time { asked_ms, granted_ms } => {
                write!(f, "T1+T2 {}s lowered to {}s", asked_ms / 1000, granted_ms / 1000)
            }
        }
    }
}

/// The gateway lowered a request to `principal`'s ceilings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lowered {
    pub principal: String,
    pub ceilings: Vec<Ceiling>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientEvent {
    LoggedIn {
        credential: Signed<Credential>,
    },
    Refused {
        reason: String,
    },
    Accepted {
        hosts: u32,
    },
    /// Sent after `Accepted` when the run got less than it asked for.
    Lowered(Lowered),
    Host(HostResult),
    Finished,
}

/// One change to the principals, or a listing.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PrincipalOp {
    Add { name: String, password: String },
    Passwd { name: String, password: String },
    Remove { name: String },
    List,
}

impl std::fmt::Debug for PrincipalOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never a password in a log or a trace.
        match self {
            PrincipalOp::Add { name, .. } => write!(f, "Add {{ name: {name:?}, .. }}"),
            PrincipalOp::Passwd { name, .. } => write!(f, "Passwd {{ name: {name:?}, .. }}"),
            PrincipalOp::Remove { name } => write!(f, "Remove {{ name: {name:?} }}"),
            PrincipalOp::List => write!(f, "List"),
        }
    }
}

/// What an operator signs: the operation, when, and a nonce (so two identical commands differ).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrincipalCommand {
    pub op: PrincipalOp,
    pub at: WallClock,
    pub nonce: [u8; 16],
}

impl SignedKind for PrincipalCommand {
    const DOMAIN: &'static str = "kdc-principal-command";
}

/// The KDC's answer to a principal command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PrincipalReply {
    Done { message: String },
    Listed { names: Vec<String> },
    Refused { reason: String },
}
