//! A blocking admin client for the CLI: dials a node's admin address, runs the Noise handshake
//! through core's channel machine with the node's key pinned, sends one request and waits for its
//! answer, all under one deadline. It never trusts an answer from a key it did not pin.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant as StdInstant};

use cohort_core::admin::{AdminRequest, AdminResponse};
use cohort_core::channel::{Channel, ChannelConfig, ChannelInput, ChannelOutput, CloseReason, TrustSet};
use cohort_core::{Instant, Machine, NodeKeys, PublicIdentity, wire};

use crate::entropy::os_seeded_rng;

#[derive(Debug, thiserror::Error)]
pub enum AdminClientError {
    #[error("could not connect to {addr}: {source}; is `cohort node run` up there?")]
    Connect { addr: SocketAddr, source: std::io::Error },
    #[error("connection to {addr} failed: {source}")]
    Io { addr: SocketAddr, source: std::io::Error },
    #[error("no answer from {addr} within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("{addr} closed the channel: {reason}")]
    Closed { addr: SocketAddr, reason: String },
    #[error("{addr} sent an answer that does not decode: {message}")]
    BadAnswer { addr: SocketAddr, message: String },
    #[error("could not set up the channel: {0}")]
    Channel(String),
}

/// Sends `request` to the node at `addr`, whose identity is `node`, as `keys`.
pub fn request(
    addr: SocketAddr,
    node: PublicIdentity,
    keys: &NodeKeys,
    request: &AdminRequest,
    timeout: Duration,
) -> Result<AdminResponse, AdminClientError> {
    let started = StdInstant::now();
    let now = || Instant::from_nanos(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX));
    let io = |source| AdminClientError::Io { addr, source };
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|source| AdminClientError::Connect { addr, source })?;
    stream.set_nodelay(true).map_err(io)?;
    let trust: TrustSet = [node].into_iter().collect();
    let config = ChannelConfig { handshake_timeout: timeout, ..ChannelConfig::default() };
    let mut channel = Channel::initiator(now(), config, keys, trust, os_seeded_rng())
        .map_err(|e| AdminClientError::Channel(e.to_string()))?;
    let body = wire::encode(request).map_err(|e| AdminClientError::Channel(e.to_string()))?;
    channel.send(&body).map_err(|e| AdminClientError::Channel(e.to_string()))?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while let Some(output) = channel.poll_output() {
            match output {
                ChannelOutput::Transmit(bytes) => stream.write_all(&bytes).map_err(io)?,
                ChannelOutput::Established(_) => {}
                ChannelOutput::Message(bytes) => {
                    return wire::decode(&bytes)
                        .map_err(|e| AdminClientError::BadAnswer { addr, message: e.to_string() });
                }
                ChannelOutput::Closed(reason) => {
                    let reason = match reason {
                        CloseReason::Failed(e) => e.to_string(),
                        CloseReason::PeerClosed => {
                            "the node hung up (is this key allowed to connect?)".into()
                        }
                        CloseReason::Local => "closed locally".into(),
                    };
                    return Err(AdminClientError::Closed { addr, reason });
                }
            }
        }
        let left = timeout.checked_sub(started.elapsed()).filter(|d| !d.is_zero());
        let Some(left) = left else { return Err(AdminClientError::Timeout { addr, timeout }) };
        stream.set_read_timeout(Some(left)).map_err(io)?;
        match stream.read(&mut buf) {
            Ok(0) => channel.handle(now(), ChannelInput::PeerClosed),
            Ok(n) => channel.handle(now(), ChannelInput::Received(buf[..n].to_vec())),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(AdminClientError::Timeout { addr, timeout });
            }
            Err(e) => return Err(io(e)),
        }
    }
}
