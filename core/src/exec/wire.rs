//! What crosses the exec channels: client ↔ gateway (requests, streamed events), exec host →
//! collector (signed audit records and their acknowledgements, on the gateway's listener), and
//! gateway ↔ exec host (start, cancel, host events). It never carries a secret in the clear: the
//! channel is Noise, and tickets are sealed to their host.

use serde::{Deserialize, Serialize};

use super::audit::AuditRecord;
use super::daemon::ExecRequest;
use super::gateway::{ClientEvent, ClientRequest};
use crate::signed::{Signed, SignedKind};

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

/// From a gateway to an exec host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostWire {
    Start(Box<ExecRequest>),
    Cancel { reason: String },
}
