//! One channel connection inside an event loop (admin, client, gateway-to-host, audit link): a
//! non-blocking TCP stream, core's channel machine, and a bounded queue of bytes waiting to be
//! written. It never buffers more than its limit for a
//! peer that does not read, and never reads more than a fair share per wake-up.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use cohort_core::channel::{Channel, ChannelInput};
use cohort_core::{Machine, Now};
use mio::net::TcpStream;

/// Bytes queued for one peer before it is judged stalled and dropped.
pub const MAX_QUEUED_WRITE: usize = 1024 * 1024;
/// Bytes read from one connection per wake-up, so one busy peer cannot starve the rest.
const READ_BUDGET: usize = 256 * 1024;

#[derive(Debug)]
pub struct ChannelConn {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub channel: Channel,
    outgoing: Vec<u8>,
    /// The single admin request in flight, if any: answers go back in order, one at a time.
    pub awaiting: Option<u64>,
    /// Stopped reading at the budget with bytes still waiting: read again next pass.
    pub more_to_read: bool,
    /// The write queue overflowed once. Every later frame is refused too: the peer decrypts
    /// frames in order, so sending one after a dropped one would read as forgery, not as a
    /// slow reader.
    stalled: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Read what there was; the socket would block now.
    Drained,
    /// Hit the per-wake budget; more may be waiting.
    Budget,
    Eof,
}

impl ChannelConn {
    pub fn new(stream: TcpStream, peer: SocketAddr, channel: Channel) -> ChannelConn {
        ChannelConn {
            stream,
            peer,
            channel,
            outgoing: Vec::new(),
            awaiting: None,
            more_to_read: false,
            stalled: false,
        }
    }

    /// Reads what the socket has (up to the budget) into the channel.
    pub fn read(&mut self, now: Now) -> io::Result<ReadOutcome> {
        let mut buf = [0u8; 16 * 1024];
        let mut total = 0;
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    self.channel.handle(now, ChannelInput::PeerClosed);
                    return Ok(ReadOutcome::Eof);
                }
                Ok(n) => {
                    self.channel.handle(now, ChannelInput::Received(buf[..n].to_vec()));
                    total += n;
                    if total >= READ_BUDGET || self.channel.is_closed() {
                        return Ok(ReadOutcome::Budget);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(ReadOutcome::Drained),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Handles a readiness event: a socket error (a failed non-blocking connect shows up this
    /// way), reading what arrived, writing what is queued. Any failure ends the stream for the
    /// channel, which then reports `Closed`. Returns the socket error's text, if there was one.
    pub fn service(&mut self, now: Now, readable: bool, writable: bool) -> Option<String> {
        if let Ok(Some(e)) | Err(e) = self.stream.take_error() {
            tracing::debug!(peer = %self.peer, error = %e, "connection failed");
            self.channel.handle(now, ChannelInput::PeerClosed);
            return Some(e.to_string());
        }
        if readable {
            match self.read(now) {
                Ok(ReadOutcome::Budget) => self.more_to_read = true,
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(peer = %self.peer, error = %e, "read failed");
                    self.channel.handle(now, ChannelInput::PeerClosed);
                }
            }
        }
        if writable && let Err(e) = self.flush() {
            tracing::debug!(peer = %self.peer, error = %e, "write failed");
            self.channel.handle(now, ChannelInput::PeerClosed);
        }
        None
    }

    /// Queues bytes; false if the peer has let too much pile up, then and ever after.
    pub fn queue(&mut self, bytes: &[u8]) -> bool {
        if self.stalled || self.outgoing.len() + bytes.len() > MAX_QUEUED_WRITE {
            self.stalled = true;
            return false;
        }
        self.outgoing.extend_from_slice(bytes);
        true
    }

    /// Writes what the socket takes. Returns whether bytes remain queued.
    pub fn flush(&mut self) -> io::Result<bool> {
        while !self.outgoing.is_empty() {
            match self.stream.write(&self.outgoing) {
                Ok(0) => {
                    return Err(io::Error::new(io::ErrorKind::WriteZero, "peer stopped accepting bytes"));
                }
                Ok(n) => {
                    self.outgoing.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }
}
