//! The admin client for the CLI: one request, one answer, over a channel to a node whose key is
//! pinned.

use std::net::SocketAddr;
use std::time::Duration;

use cohort_core::admin::{AdminRequest, AdminResponse};
use cohort_core::{NodeKeys, PublicIdentity};

use crate::channel_client::ChannelClient;
pub use crate::channel_client::ClientError as AdminClientError;

/// Sends `request` to the node at `addr`, whose identity is `node`, as `keys`.
pub fn request(
    addr: SocketAddr,
    node: PublicIdentity,
    keys: &NodeKeys,
    request: &AdminRequest,
    timeout: Duration,
) -> Result<AdminResponse, AdminClientError> {
    let mut client = ChannelClient::connect(addr, node, keys, timeout)?;
    client.send(request)?;
    client.recv(timeout)
}
