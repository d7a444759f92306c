//! A simulated operator or client: opens a channel to a node (Noise over turmoil's TCP, the
//! node's key pinned, the caller's key presented), sends one request and reads answers, the way
//! `cohort admin`, `cohort policy` and `cohort exec` do on real sockets. Owns nothing but the
//! bytes of that exchange.

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
    let mut stream = TcpStream::connect(addr).await.map_err(|e| format!("connect to {addr}: {e}"))?;
    let trust: TrustSet = [member].into_iter().collect();
    let mut channel = Channel::initiator(now().mono, ChannelConfig::default(), keys, trust, rng)
        .map_err(|e| e.to_string())?;
    let bytes = wire::encode(request).map_err(|e| e.to_string())?;
    channel.send(&bytes).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut answers = Vec::new();
    let exchange = async {
        loop {
            while let Some(out) = channel.poll_output() {
                match out {
                    ChannelOutput::Transmit(bytes) => {
                        stream.write_all(&bytes).await.map_err(|e| e.to_string())?
                    }
                    ChannelOutput::Message(bytes) => {
                        let answer: Resp = wire::decode(&bytes).map_err(|e| e.to_string())?;
                        let done = last(&answer);
                        answers.push(answer);
                        if done {
                            return Ok::<(), String>(());
                        }
                    }
                    ChannelOutput::Closed(_) if !answers.is_empty() => return Ok(()),
                    ChannelOutput::Closed(reason) => return Err(format!("the channel closed: {reason:?}")),
                    ChannelOutput::Established(_) => {}
                }
            }
            let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
            let input = if n == 0 {
                ChannelInput::PeerClosed
            } else {
                ChannelInput::Received(buf.get(..n).unwrap_or_default().to_vec())
            };
            channel.handle(now(), input);
        }
    };
    tokio::time::timeout(patience, exchange)
        .await
        .map_err(|_| format!("no answer from {addr} in {patience:?}"))??;
    Ok(answers)
}
