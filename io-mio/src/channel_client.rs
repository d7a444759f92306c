//! A blocking channel client for the CLI: dials an address, runs the Noise handshake through
//! core's channel machine with the peer's key pinned, then sends and receives wire-encoded
//! messages, each wait bounded by a deadline. It never accepts a message from a key it did not pin.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant as StdInstant};

use cohort_core::channel::{Channel, ChannelConfig, ChannelInput, ChannelOutput, CloseReason, TrustSet};
use cohort_core::{Instant, Machine, NodeKeys, PublicIdentity, wire};

use crate::clock::Clock;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::entropy::os_seeded_rng;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("could not connect to {addr}: {source}; is the node up there?")]
    Connect { addr: SocketAddr, source: std::io::Error },
    #[error("connection to {addr} failed: {source}")]
    Io { addr: SocketAddr, source: std::io::Error },
    #[error("no answer from {addr} within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("{addr} closed the channel: {reason}")]
    Closed { addr: SocketAddr, reason: String },
    #[error("{addr} sent a message that does not decode: {message}")]
    BadMessage { addr: SocketAddr, message: String },
    #[error("channel error: {0}")]
    Channel(String),
}

/// One open channel to a pinned peer.
#[derive(Debug)]
pub struct ChannelClient {
    addr: SocketAddr,
    stream: TcpStream,
    channel: Channel,
    clock: Clock,
    buf: Vec<u8>,
    /// Messages received but not yet returned by `recv`.
    inbox: std::collections::VecDeque<Vec<u8>>,
}

impl ChannelClient {
    pub fn connect(
        addr: SocketAddr,
        peer: PublicIdentity,
        keys: &NodeKeys,
        timeout: Duration,
    ) -> Result<ChannelClient, ClientError> {
        let clock = Clock::start();
        let stream = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|source| ClientError::Connect { addr, source })?;
        stream.set_nodelay(true).map_err(|source| ClientError::Io { addr, source })?;
        let trust: TrustSet = [peer].into_iter().collect();
        let config = ChannelConfig { handshake_timeout: timeout, ..ChannelConfig::default() };
        let channel = Channel::initiator(Instant::ZERO, config, keys, trust, os_seeded_rng())
            .map_err(|e| ClientError::Channel(e.to_string()))?;
        Ok(ChannelClient { addr, stream, channel, clock, buf: vec![0; 64 * 1024], inbox: Default::default() })
    }

    /// Queues a message; it goes out with the next [`ChannelClient::recv`] (or once the
    /// handshake finishes).
    pub fn send<T: Serialize>(&mut self, message: &T) -> Result<(), ClientError> {
        let bytes = wire::encode(message).map_err(|e| ClientError::Channel(e.to_string()))?;
        self.channel.send(&bytes).map_err(|e| ClientError::Channel(e.to_string()))?;
        self.flush()
    }

    /// Writes what the channel has to send; keeps received messages in the inbox.
    fn flush(&mut self) -> Result<(), ClientError> {
        let addr = self.addr;
        while let Some(output) = self.channel.poll_output() {
            match output {
                ChannelOutput::Transmit(bytes) => {
                    self.stream.write_all(&bytes).map_err(|source| ClientError::Io { addr, source })?
                }
                ChannelOutput::Established(_) => {}
                ChannelOutput::Message(bytes) => self.inbox.push_back(bytes),
                ChannelOutput::Closed(reason) => {
                    let reason = match reason {
                        CloseReason::Failed(e) => e.to_string(),
                        CloseReason::PeerClosed => {
                            "the peer hung up (is this key allowed to connect?)".into()
                        }
                        CloseReason::Local => "closed locally".into(),
                    };
                    // Messages that arrived before the close are still delivered first.
                    if self.inbox.is_empty() {
                        return Err(ClientError::Closed { addr, reason });
                    }
                }
            }
        }
        Ok(())
    }

    /// Waits up to `timeout` for the next message.
    pub fn recv<T: DeserializeOwned>(&mut self, timeout: Duration) -> Result<T, ClientError> {
        let addr = self.addr;
        let deadline = StdInstant::now() + timeout;
        loop {
            self.flush()?;
            if let Some(bytes) = self.inbox.pop_front() {
                return wire::decode(&bytes)
                    .map_err(|e| ClientError::BadMessage { addr, message: e.to_string() });
            }
            let left = deadline.saturating_duration_since(StdInstant::now());
            if left.is_zero() {
                return Err(ClientError::Timeout { addr, timeout });
            }
            self.stream.set_read_timeout(Some(left)).map_err(|source| ClientError::Io { addr, source })?;
            let now = self.clock.now();
            match self.stream.read(&mut self.buf) {
                Ok(0) => self.channel.handle(now, ChannelInput::PeerClosed),
                Ok(n) => {
                    let bytes = self.buf[..n].to_vec();
                    self.channel.handle(now, ChannelInput::Received(bytes));
                }
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    return Err(ClientError::Timeout { addr, timeout });
                }
                Err(source) => return Err(ClientError::Io { addr, source }),
            }
        }
    }
}
