//! A simulated operator: opens the admin channel to a member (Noise over turmoil's TCP, the
//! member's key pinned, the operator's key presented), sends one request and reads one answer,
//! the way `cohort admin` does on real sockets. Owns nothing but the bytes of that exchange.

use std::time::Duration;

use cohort_core::admin::{AdminRequest, AdminResponse};
use cohort_core::channel::{Channel, ChannelConfig, ChannelInput, ChannelOutput, TrustSet};
use cohort_core::rng::SeededRng;
use cohort_core::{Machine, NodeKeys, PublicIdentity, wire};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turmoil::net::TcpStream;

use crate::clock::now;

/// Sends `request` to the admin channel at `addr` and returns the answer, or why there was none.
pub async fn ask(
    addr: &str,
    member: PublicIdentity,
    keys: &NodeKeys,
    request: &AdminRequest,
    rng: SeededRng,
    patience: Duration,
) -> Result<AdminResponse, String> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| format!("connect to {addr}: {e}"))?;
    let trust: TrustSet = [member].into_iter().collect();
    let mut channel = Channel::initiator(now().mono, ChannelConfig::default(), keys, trust, rng)
        .map_err(|e| e.to_string())?;
    let bytes = wire::encode(request).map_err(|e| e.to_string())?;
    channel.send(&bytes).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 16 * 1024];
    let exchange = async {
        loop {
            while let Some(out) = channel.poll_output() {
                match out {
                    ChannelOutput::Transmit(bytes) => {
                        stream.write_all(&bytes).await.map_err(|e| e.to_string())?
                    }
                    ChannelOutput::Message(bytes) => return wire::decode(&bytes).map_err(|e| e.to_string()),
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
        .map_err(|_| format!("no answer from {addr} in {patience:?}"))?
}
