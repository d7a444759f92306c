//! An in-memory link between two [`Channel`]s: what one transmits the other receives, in order,
//! with an optional tamper hook on every frame in flight and a [`Trace`] of the run.

use cohort_core::channel::frame::PREFIX_LEN;
use cohort_core::channel::{
    Channel, ChannelConfig, ChannelError, ChannelInput, ChannelOutput, CloseReason, TrustSet,
};
use cohort_core::rng::{fork, seeded};
use cohort_core::trace::Trace;
use cohort_core::{Instant, Machine, NodeKeys, Now, PublicIdentity};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Initiator,
    Responder,
}

/// What one end has reported so far.
#[derive(Debug, Default)]
pub struct Seen {
    pub established: Option<PublicIdentity>,
    pub messages: Vec<Vec<u8>>,
    pub closed: Option<CloseReason>,
}

impl Seen {
    pub fn failure(&self) -> Option<&ChannelError> {
        match &self.closed {
            Some(CloseReason::Failed(e)) => Some(e),
            _ => None,
        }
    }
}

/// Called with the running index of each frame in flight (both directions, from 0) and the
/// frame's bytes, length prefix included.
pub type Tamper = Box<dyn FnMut(usize, &mut Vec<u8>)>;

pub struct Link {
    pub initiator: Channel,
    pub responder: Channel,
    pub seen_initiator: Seen,
    pub seen_responder: Seen,
    pub trace: Trace,
    pub now: Instant,
    frames_in_flight: usize,
    tamper: Option<Tamper>,
}

/// Keys for a two-party run, all drawn from one seed.
#[derive(Debug)]
pub struct Parties {
    pub initiator: NodeKeys,
    pub responder: NodeKeys,
}

impl Parties {
    pub fn from_seed(seed: u64) -> Parties {
        let mut rng = seeded(seed);
        Parties { initiator: NodeKeys::generate(&mut rng), responder: NodeKeys::generate(&mut rng) }
    }
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("initiator", &self.initiator)
            .field("responder", &self.responder)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

impl Link {
    /// Both ends trusting each other.
    pub fn trusting(seed: u64, config: ChannelConfig) -> Link {
        let parties = Parties::from_seed(seed);
        let trust_i: TrustSet = [parties.responder.public()].into_iter().collect();
        let trust_r: TrustSet = [parties.initiator.public()].into_iter().collect();
        Link::new(seed, &parties, trust_i, trust_r, config)
    }

    pub fn new(
        seed: u64,
        parties: &Parties,
        trust_i: TrustSet,
        trust_r: TrustSet,
        config: ChannelConfig,
    ) -> Link {
        let mut rng = seeded(seed ^ 0x5eed);
        let now = Instant::ZERO;
        let initiator = Channel::initiator(now, config, &parties.initiator, trust_i, fork(&mut rng))
            .expect("initiator builds");
        let responder = Channel::responder(now, config, &parties.responder, trust_r, fork(&mut rng))
            .expect("responder builds");
        Link {
            initiator,
            responder,
            seen_initiator: Seen::default(),
            seen_responder: Seen::default(),
            trace: Trace::new(),
            now,
            frames_in_flight: 0,
            tamper: None,
        }
    }

    pub fn with_tamper(mut self, tamper: Tamper) -> Link {
        self.tamper = Some(tamper);
        self
    }

    pub fn advance(&mut self, by: std::time::Duration) {
        self.now = self.now + by;
    }

    pub fn send(&mut self, from: End, message: &[u8]) -> Result<(), ChannelError> {
        self.trace.note(self.now, name(from), &format!("app sends {}", cohort_core::trace::short(message)));
        self.end(from).send(message)
    }

    pub fn close(&mut self, end: End) {
        self.trace.note(self.now, name(end), "app closes");
        self.end(end).close();
    }

    /// Feeds `input` to one end, tracing it.
    pub fn feed(&mut self, to: End, input: ChannelInput) {
        self.trace.input(self.now, name(to), &input);
        let now = self.now;
        self.end(to).handle(Now::ZERO.with_mono(now), input);
    }

    /// Moves bytes both ways until neither end has anything more to say. A `Closed` output makes
    /// the other end see the stream end.
    pub fn run(&mut self) {
        loop {
            let moved_i = self.drain(End::Initiator);
            let moved_r = self.drain(End::Responder);
            if !moved_i && !moved_r {
                return;
            }
        }
    }

    fn drain(&mut self, from: End) -> bool {
        let mut moved = false;
        while let Some(out) = self.end(from).poll_output() {
            moved = true;
            self.trace.output(self.now, name(from), &out);
            match out {
                ChannelOutput::Transmit(bytes) => {
                    let bytes = self.tampered(bytes);
                    self.feed(other(from), ChannelInput::Received(bytes));
                }
                ChannelOutput::Established(peer) => self.seen(from).established = Some(peer),
                ChannelOutput::Message(m) => self.seen(from).messages.push(m),
                ChannelOutput::Closed(reason) => {
                    self.seen(from).closed = Some(reason);
                    self.feed(other(from), ChannelInput::PeerClosed);
                }
            }
        }
        moved
    }

    /// Counts the frames in flight and applies the tamper hook to each. The bytes are our own
    /// channel's output, so the length prefixes are well formed.
    fn tampered(&mut self, bytes: Vec<u8>) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len());
        let mut rest = &bytes[..];
        while let Some(prefix) = rest.first_chunk::<PREFIX_LEN>() {
            let len = u32::from_be_bytes(*prefix) as usize;
            let (frame, tail) = rest.split_at((PREFIX_LEN + len).min(rest.len()));
            match self.tamper.as_mut() {
                Some(tamper) => {
                    let mut frame = frame.to_vec();
                    tamper(self.frames_in_flight, &mut frame);
                    out.extend_from_slice(&frame);
                }
                None => out.extend_from_slice(frame),
            }
            self.frames_in_flight += 1;
            rest = tail;
        }
        out
    }

    /// Frames that have crossed the link so far.
    pub fn frames_in_flight(&self) -> usize {
        self.frames_in_flight
    }

    fn end(&mut self, end: End) -> &mut Channel {
        match end {
            End::Initiator => &mut self.initiator,
            End::Responder => &mut self.responder,
        }
    }

    fn seen(&mut self, end: End) -> &mut Seen {
        match end {
            End::Initiator => &mut self.seen_initiator,
            End::Responder => &mut self.seen_responder,
        }
    }
}

fn name(end: End) -> &'static str {
    match end {
        End::Initiator => "alice",
        End::Responder => "bob",
    }
}

fn other(end: End) -> End {
    match end {
        End::Initiator => End::Responder,
        End::Responder => End::Initiator,
    }
}
