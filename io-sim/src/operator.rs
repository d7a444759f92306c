//! A simulated operator or client: opens a channel to a node (Noise over turmoil's TCP, the
//! node's key pinned, the caller's key presented), sends requests and reads answers, the way
//! `cohort admin`, `cohort policy` and `cohort exec` do on real sockets. Owns nothing but the
//! bytes of that exchange.

use std::collections::VecDeque;
use std::time::Duration;

use cohort_core::channel::{Channel, ChannelConfig, ChannelInput, ChannelOutput, TrustSet};
use cohort_core::rng::SeededRng;
use cohort_core::{Machine, NodeKeys, PublicIdentity, wire};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turmoil::net::TcpStream;

use crate::clock::now;

/// Sends `request` to the node at `addr` and returns the first answer, or why there was none.
pub async fn ask<Req: Serialize, Resp: DeserializeOwned>(
    addr: &str,
    member: PublicIdentity,
    keys: &NodeKeys,
    request: &Req,
    rng: SeededRng,
    patience: Duration,
) -> Result<Resp, String> {
    let mut answers = converse(addr, member, keys, request, rng, patience, |_: &Resp| true).await?;
    answers.pop().ok_or_else(|| format!("no answer from {addr}"))
}

/// Sends `request` and collects answers until `last` says one ends the exchange (or the peer
/// closes): a client reading a run's streamed results.
pub async fn converse<Req: Serialize, Resp: DeserializeOwned>(
    addr: &str,
    member: PublicIdentity,
    keys: &NodeKeys,
    request: &Req,
    rng: SeededRng,
    patience: Duration,
    last: impl Fn(&Resp) -> bool,
) -> Result<Vec<Resp>, String> {
    let exchange = async {
        let mut conversation = Conversation::open(addr, member, keys, rng).await?;
        conversation.send(request)?;
        let mut answers = Vec::new();
        loop {
            match conversation.receive::<Resp>().await {
                Ok(Some(answer)) => {
                    let done = last(&answer);
                    answers.push(answer);
                    if done {
                        return Ok(answers);
                    }
                }
                Ok(None) if !answers.is_empty() => return Ok(answers),
                Ok(None) => {
                    let reason = conversation.closed.take().unwrap_or_default();
                    return Err(format!("the channel closed: {reason}"));
                }
                Err(e) => return Err(e),
            }
        }
    };
    tokio::time::timeout(patience, exchange)
        .await
        .map_err(|_| format!("no answer from {addr} in {patience:?}"))?
}

/// One open channel to a node, for exchanges of more than one request: a client that sends
/// several messages on one connection, or stops reading half way.
pub struct Conversation {
    stream: TcpStream,
    channel: Channel,
    received: VecDeque<Vec<u8>>,
    /// Why the channel closed, once it has.
    closed: Option<String>,
}

impl std::fmt::Debug for Conversation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conversation").field("closed", &self.closed).finish_non_exhaustive()
    }
}

impl Conversation {
    /// Connects to `addr` and starts the handshake (it completes as messages flow).
    pub async fn open(
        addr: &str,
        peer: PublicIdentity,
        keys: &NodeKeys,
        rng: SeededRng,
    ) -> Result<Conversation, String> {
        let stream = TcpStream::connect(addr).await.map_err(|e| format!("connect to {addr}: {e}"))?;
        let trust: TrustSet = [peer].into_iter().collect();
        let channel = Channel::initiator(now().mono, ChannelConfig::default(), keys, trust, rng)
            .map_err(|e| e.to_string())?;
        Ok(Conversation { stream, channel, received: VecDeque::new(), closed: None })
    }

    /// Queues `message`; it leaves with the next [`Conversation::receive`] or
    /// [`Conversation::flush`].
    pub fn send<M: Serialize>(&mut self, message: &M) -> Result<(), String> {
        let bytes = wire::encode(message).map_err(|e| e.to_string())?;
        self.channel.send(&bytes).map_err(|e| e.to_string())
    }

    /// Queues `bytes` as one message, as they are (a message a caller built itself).
    pub fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.channel.send(bytes).map_err(|e| e.to_string())
    }

    /// Writes whatever the channel has to send.
    pub async fn flush(&mut self) -> Result<(), String> {
        while let Some(out) = self.channel.poll_output() {
            match out {
                ChannelOutput::Transmit(bytes) => {
                    self.stream.write_all(&bytes).await.map_err(|e| e.to_string())?
                }
                ChannelOutput::Message(bytes) => self.received.push_back(bytes),
                ChannelOutput::Closed(reason) => self.closed = Some(format!("{reason:?}")),
                ChannelOutput::Established(_) => {}
            }
        }
        Ok(())
    }

    /// The next message from the node, `None` once the channel closed; sends what is queued
    /// first.
    pub async fn receive<M: DeserializeOwned>(&mut self) -> Result<Option<M>, String> {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            self.flush().await?;
            if let Some(bytes) = self.received.pop_front() {
                return wire::decode(&bytes).map(Some).map_err(|e| e.to_string());
            }
            if self.closed.is_some() {
                return Ok(None);
            }
            let n = self.stream.read(&mut buf).await.map_err(|e| e.to_string())?;
            let input = if n == 0 {
                ChannelInput::PeerClosed
            } else {
                ChannelInput::Received(buf.get(..n).unwrap_or_default().to_vec())
            };
            self.channel.handle(now(), input);
        }
    }
}
