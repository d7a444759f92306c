//! The secure channel between any two parties: a Noise XX handshake (through `snow`) whose peer
//! static key must be in a caller-supplied [`TrustSet`], then length-framed transport messages,
//! with application messages larger than one Noise message split into chunks.
//!
//! Owns the handshake, the trust check, framing, chunking and the size limits. It never touches a
//! socket: bytes in arrive as [`ChannelInput::Received`], bytes out leave as
//! [`ChannelOutput::Transmit`]. It never panics on peer bytes and never holds more than its
//! configured limits; any protocol violation closes it with a typed [`ChannelError`].

pub mod chunk;
pub mod frame;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use snow::{HandshakeState, TransportState};

use crate::identity::{KeyDigest, NodeKeys, PublicIdentity};
use crate::machine::Machine;
use crate::rng::{SeededResolver, SeededRng};
use crate::time::{Instant, Now};
use chunk::{ChunkError, Reassembler, TAG_LEN};
use frame::{FrameDecoder, FrameError, MAX_FRAME_LEN, encode_frame};

/// Both sides send their static key (encrypted) and check the other's against their trust set.
const NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_SHA256";
/// Binds every handshake to this protocol and version: a peer speaking anything else fails.
const PROLOGUE: &[u8] = b"cohort channel v1";

/// The peers a channel will accept, by their X25519 static key. Every connection a listener
/// accepts holds its set: shared, not copied, or a server with thousands of peers would hold
/// thousands of copies of a table of thousands.
#[derive(Debug, Clone, Default)]
pub struct TrustSet {
    by_agreement_key: Arc<BTreeMap<[u8; 32], PublicIdentity>>,
    /// Accept any static key (a gateway facing clients, an exec daemon facing gateways): the
    /// peer is then authenticated by what it presents (a credential, a ticket), and its key is
    /// only a channel binding. The Established identity carries the key and a zero signing key.
    any: bool,
}

impl TrustSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// A trust set that accepts every peer key; see the field's note for when that is right.
    pub fn any_peer() -> Self {
        TrustSet { by_agreement_key: Arc::default(), any: true }
    }

    pub fn insert(&mut self, peer: PublicIdentity) {
        Arc::make_mut(&mut self.by_agreement_key).insert(peer.agreement, peer);
    }

    pub fn lookup(&self, agreement_key: &[u8]) -> Option<PublicIdentity> {
        let key: &[u8; 32] = agreement_key.try_into().ok()?;
        match self.by_agreement_key.get(key) {
            Some(known) => Some(*known),
            None if self.any => Some(PublicIdentity { signing: [0; 32], agreement: *key }),
            None => None,
        }
    }

    pub fn len(&self) -> usize {
        self.by_agreement_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_agreement_key.is_empty()
    }
}

impl FromIterator<PublicIdentity> for TrustSet {
    fn from_iter<I: IntoIterator<Item = PublicIdentity>>(iter: I) -> Self {
        let mut set = TrustSet::new();
        iter.into_iter().for_each(|p| set.insert(p));
        set
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelConfig {
    /// Largest application message either side may send or receive.
    pub max_message_len: usize,
    /// The handshake must finish within this long of the channel's creation.
    pub handshake_timeout: Duration,
    /// Application bytes [`Channel::send`] may queue before the handshake completes.
    pub max_queued_bytes: usize,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            max_message_len: crate::wire::MAX_MESSAGE_LEN,
            handshake_timeout: Duration::from_secs(10),
            max_queued_bytes: crate::wire::MAX_MESSAGE_LEN,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelInput {
    /// Bytes read from the stream, in any split.
    Received(Vec<u8>),
    /// The stream ended (EOF or reset).
    PeerClosed,
    /// The deadline from `poll_timeout` passed.
    Timeout,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelOutput {
    /// Bytes to write to the stream, in order.
    Transmit(Vec<u8>),
    /// The handshake finished with this trusted peer; messages may flow.
    Established(PublicIdentity),
    /// A whole application message from the peer.
    Message(Vec<u8>),
    /// The channel is finished; the driver closes the stream. Always the last output.
    Closed(CloseReason),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer ended the stream cleanly between messages.
    PeerClosed,
    /// [`Channel::close`] was called.
    Local,
    Failed(ChannelError),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error(
        "the peer proved a key (digest {0}) that is not trusted here (not the one expected): this may be the wrong address, \
         a re-keyed node, or someone else answering; check the address and the key you were given \
         (never trust a key because a connection presented it)"
    )]
    UntrustedPeer(String),
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    #[error("bad message chunk: {0}")]
    Chunk(#[from] ChunkError),
    #[error("Noise protocol error: {0}")]
    Noise(String),
    #[error("a frame failed authentication: corrupted, forged or out of order")]
    Decrypt,
    #[error("handshake not finished within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("stream ended before the handshake finished")]
    ClosedDuringHandshake,
    #[error("stream ended inside a chunked message")]
    ClosedMidMessage,
    #[error("the peer sent a handshake payload; cohort's handshake carries none")]
    UnexpectedHandshakePayload,
    #[error("message of {len} bytes is over the {limit}-byte limit")]
    MessageTooLarge { len: usize, limit: usize },
    #[error("{limit} bytes already queued waiting for the handshake")]
    QueueFull { limit: usize },
    #[error("the channel is closed")]
    NotOpen,
    #[error("could not set up Noise: {0}")]
    Setup(String),
}

impl From<snow::Error> for ChannelError {
    fn from(e: snow::Error) -> Self {
        match e {
            snow::Error::Decrypt => ChannelError::Decrypt,
            other => ChannelError::Noise(other.to_string()),
        }
    }
}

enum State {
    Handshake(Box<HandshakeState>),
    Transport(Box<TransportState>),
    Closed,
}

/// One end of a secure channel. See the module docs.
pub struct Channel {
    config: ChannelConfig,
    trust: TrustSet,
    state: State,
    frames: FrameDecoder,
    reassembler: Reassembler,
    outputs: VecDeque<ChannelOutput>,
    queued: Vec<Vec<u8>>,
    queued_bytes: usize,
    handshake_deadline: Option<Instant>,
    peer: Option<PublicIdentity>,
    scratch: Vec<u8>,
    /// Whole frames read so far: whether bytes that arrived finished one.
    frames_read: u64,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Handshake(_) => "handshake",
            State::Transport(_) => "transport",
            State::Closed => "closed",
        };
        f.debug_struct("Channel").field("state", &state).field("peer", &self.peer).finish()
    }
}

impl Channel {
    /// Starts the dialling side; its first handshake message is ready in `poll_output`.
    pub fn initiator(
        now: Instant,
        config: ChannelConfig,
        keys: &NodeKeys,
        trust: TrustSet,
        rng: SeededRng,
    ) -> Result<Channel, ChannelError> {
        let handshake = new_handshake(keys, rng, Side::Initiator)?;
        let mut channel = Channel::new(now, config, trust, handshake);
        channel.write_handshake();
        Ok(channel)
    }

    /// Starts the accepting side; it waits for the initiator's first message.
    pub fn responder(
        now: Instant,
        config: ChannelConfig,
        keys: &NodeKeys,
        trust: TrustSet,
        rng: SeededRng,
    ) -> Result<Channel, ChannelError> {
        let handshake = new_handshake(keys, rng, Side::Responder)?;
        Ok(Channel::new(now, config, trust, handshake))
    }

    fn new(now: Instant, config: ChannelConfig, trust: TrustSet, handshake: HandshakeState) -> Channel {
        Channel {
            config,
            trust,
            state: State::Handshake(Box::new(handshake)),
            frames: FrameDecoder::new(),
            reassembler: Reassembler::new(config.max_message_len),
            outputs: VecDeque::new(),
            queued: Vec::new(),
            queued_bytes: 0,
            handshake_deadline: Some(now + config.handshake_timeout),
            peer: None,
            scratch: Vec::new(),
            frames_read: 0,
        }
    }

    /// Sends one application message, queueing it (bounded) if the handshake is still running.
    pub fn send(&mut self, message: &[u8]) -> Result<(), ChannelError> {
        if message.len() > self.config.max_message_len {
            return Err(ChannelError::MessageTooLarge {
                len: message.len(),
                limit: self.config.max_message_len,
            });
        }
        match self.state {
            State::Closed => Err(ChannelError::NotOpen),
            State::Handshake(_) => {
                let total = self.queued_bytes.saturating_add(message.len());
                if total > self.config.max_queued_bytes {
                    return Err(ChannelError::QueueFull { limit: self.config.max_queued_bytes });
                }
                self.queued_bytes = total;
                self.queued.push(message.to_vec());
                Ok(())
            }
            State::Transport(_) => {
                self.encrypt(message);
                Ok(())
            }
        }
    }

    /// Ends the channel from this side.
    pub fn close(&mut self) {
        if !matches!(self.state, State::Closed) {
            self.finish(CloseReason::Local);
        }
    }

    /// The trusted peer, once the handshake has finished.
    pub fn peer(&self) -> Option<&PublicIdentity> {
        self.peer.as_ref()
    }

    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Transport(_))
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Whole frames read so far.
    pub fn frames_read(&self) -> u64 {
        self.frames_read
    }

    /// Whether part of a frame has arrived and the rest has not.
    pub fn partial_frame(&self) -> bool {
        self.frames.buffered() > 0
    }

    fn handle_received(&mut self, bytes: &[u8]) {
        self.frames.push(bytes);
        loop {
            if matches!(self.state, State::Closed) {
                return;
            }
            let frame = match self.frames.next_frame() {
                Ok(Some(frame)) => frame.to_vec(),
                Ok(None) => return,
                Err(e) => return self.fail(e.into()),
            };
            self.frames_read += 1;
            let step = match self.state {
                State::Handshake(_) => self.read_handshake(&frame),
                State::Transport(_) => self.read_transport(&frame),
                State::Closed => Ok(()),
            };
            if let Err(e) = step {
                return self.fail(e);
            }
        }
    }

    fn read_handshake(&mut self, frame: &[u8]) -> Result<(), ChannelError> {
        let State::Handshake(handshake) = &mut self.state else { return Ok(()) };
        let payload_len = handshake.read_message(frame, grown(&mut self.scratch, frame.len()))?;
        if payload_len != 0 {
            return Err(ChannelError::UnexpectedHandshakePayload);
        }
        if self.peer.is_none()
            && let Some(remote) = handshake.get_remote_static()
        {
            match self.trust.lookup(remote) {
                Some(peer) => self.peer = Some(peer),
                None => {
                    let digest = remote
                        .try_into()
                        .map(|k: &[u8; 32]| hex::encode(&KeyDigest::of_agreement_key(k).0[..8]))
                        .unwrap_or_else(|_| "malformed".to_owned());
                    return Err(ChannelError::UntrustedPeer(digest));
                }
            }
        }
        if handshake.is_my_turn() && !handshake.is_handshake_finished() {
            self.write_handshake();
        }
        self.enter_transport_if_finished()
    }

    fn write_handshake(&mut self) {
        let State::Handshake(handshake) = &mut self.state else { return };
        match handshake.write_message(&[], grown(&mut self.scratch, HANDSHAKE_MESSAGE_MAX)) {
            Ok(len) => {
                let mut wire = Vec::new();
                encode_frame(&self.scratch[..len], &mut wire);
                self.outputs.push_back(ChannelOutput::Transmit(wire));
            }
            Err(e) => self.fail(ChannelError::from(e)),
        }
    }

    fn enter_transport_if_finished(&mut self) -> Result<(), ChannelError> {
        let finished = matches!(&self.state, State::Handshake(h) if h.is_handshake_finished());
        if !finished {
            return Ok(());
        }
        let State::Handshake(handshake) = std::mem::replace(&mut self.state, State::Closed) else {
            return Ok(());
        };
        let transport = handshake.into_transport_mode()?;
        self.state = State::Transport(Box::new(transport));
        self.handshake_deadline = None;
        // The trust check ran when the remote static key arrived; XX always delivers it before
        // the handshake can finish.
        let peer = self.peer.ok_or(ChannelError::ClosedDuringHandshake)?;
        self.outputs.push_back(ChannelOutput::Established(peer));
        for message in std::mem::take(&mut self.queued) {
            self.encrypt(&message);
        }
        self.queued_bytes = 0;
        Ok(())
    }

    fn read_transport(&mut self, frame: &[u8]) -> Result<(), ChannelError> {
        let State::Transport(transport) = &mut self.state else { return Ok(()) };
        let len = transport.read_message(frame, grown(&mut self.scratch, frame.len()))?;
        if let Some(message) = self.reassembler.push(&self.scratch[..len])? {
            self.outputs.push_back(ChannelOutput::Message(message));
        }
        Ok(())
    }

    fn encrypt(&mut self, message: &[u8]) {
        let State::Transport(transport) = &mut self.state else { return };
        let mut wire = Vec::with_capacity(message.len() + message.len() / 64 + 64);
        for chunk in chunk::split(message) {
            match transport.write_message(&chunk, grown(&mut self.scratch, chunk.len() + TAG_LEN)) {
                Ok(len) => encode_frame(&self.scratch[..len], &mut wire),
                Err(e) => return self.fail(ChannelError::from(e)),
            }
        }
        self.outputs.push_back(ChannelOutput::Transmit(wire));
    }

    fn handle_peer_closed(&mut self) {
        let reason = if let Err(e) = self.frames.finish() {
            CloseReason::Failed(e.into())
        } else if matches!(self.state, State::Handshake(_)) {
            CloseReason::Failed(ChannelError::ClosedDuringHandshake)
        } else if self.reassembler.in_progress() {
            CloseReason::Failed(ChannelError::ClosedMidMessage)
        } else {
            CloseReason::PeerClosed
        };
        self.finish(reason);
    }

    fn fail(&mut self, error: ChannelError) {
        self.finish(CloseReason::Failed(error));
    }

    fn finish(&mut self, reason: CloseReason) {
        self.state = State::Closed;
        self.handshake_deadline = None;
        self.queued.clear();
        self.queued_bytes = 0;
        self.outputs.push_back(ChannelOutput::Closed(reason));
    }
}

impl Machine for Channel {
    type Input = ChannelInput;
    type Output = ChannelOutput;

    fn handle(&mut self, now: Now, input: ChannelInput) {
        let now = now.mono;
        if matches!(self.state, State::Closed) {
            return;
        }
        match input {
            ChannelInput::Received(bytes) => self.handle_received(&bytes),
            ChannelInput::PeerClosed => self.handle_peer_closed(),
            ChannelInput::Timeout => {
                if self.handshake_deadline.is_some_and(|deadline| now >= deadline) {
                    self.fail(ChannelError::HandshakeTimeout(self.config.handshake_timeout));
                }
            }
        }
    }

    fn poll_output(&mut self) -> Option<ChannelOutput> {
        self.outputs.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.handshake_deadline
    }
}

/// The largest handshake message this pattern writes (two keys, a tag each, no payload).
const HANDSHAKE_MESSAGE_MAX: usize = 256;

/// `scratch`, at least `len` bytes long. It grows to the largest frame a channel has carried and
/// stays there, so a channel that only ever carries small messages costs little memory: with
/// thousands of agents on one server, a frame-sized buffer each would be most of its memory.
fn grown(scratch: &mut Vec<u8>, len: usize) -> &mut [u8] {
    if scratch.len() < len {
        scratch.resize(len.min(MAX_FRAME_LEN), 0);
    }
    scratch
}

enum Side {
    Initiator,
    Responder,
}

fn new_handshake(keys: &NodeKeys, rng: SeededRng, side: Side) -> Result<HandshakeState, ChannelError> {
    let setup = |e: snow::Error| ChannelError::Setup(e.to_string());
    let params = NOISE_PARAMS.parse().map_err(setup)?;
    let secret = keys.agreement_secret();
    let builder = snow::Builder::with_resolver(params, Box::new(SeededResolver::new(rng)))
        .local_private_key(&secret[..])
        .and_then(|b| b.prologue(PROLOGUE))
        .map_err(setup)?;
    match side {
        Side::Initiator => builder.build_initiator(),
        Side::Responder => builder.build_responder(),
    }
    .map_err(setup)
}

impl crate::trace::TraceEvent for ChannelInput {
    fn describe(&self) -> String {
        match self {
            ChannelInput::Received(bytes) => format!("Received {}", crate::trace::short(bytes)),
            ChannelInput::PeerClosed => "PeerClosed".to_owned(),
            ChannelInput::Timeout => "Timeout".to_owned(),
        }
    }
}

impl crate::trace::TraceEvent for ChannelOutput {
    fn describe(&self) -> String {
        match self {
            ChannelOutput::Transmit(bytes) => format!("Transmit {}", crate::trace::short(bytes)),
            ChannelOutput::Established(peer) => format!("Established peer={}", peer.node_id()),
            ChannelOutput::Message(bytes) => format!("Message {}", crate::trace::short(bytes)),
            ChannelOutput::Closed(CloseReason::Failed(e)) => format!("Closed failed: {e}"),
            ChannelOutput::Closed(reason) => format!("Closed {reason:?}"),
        }
    }
}
