//! The secure channel end to end in memory: handshake, a 5 MiB exchange, trust refusal,
//! tamper detection, size limits and hostile bytes.

use std::time::Duration;

use cohort_core::channel::frame::{FrameError, MAX_FRAME_LEN};
use cohort_core::channel::{
    Channel, ChannelConfig, ChannelError, ChannelInput, ChannelOutput, CloseReason, TrustSet,
};
use cohort_core::rng::seeded;
use cohort_core::{Instant, Machine, NodeKeys, Now};
use cohort_tests::link::{End, Link, Parties};
use proptest::prelude::*;

const FIVE_MIB: usize = 5 * 1024 * 1024;
/// Message sizes for the bit-flip runs: each takes two chunks, so continuation frames are covered.
const FLIP_A_LEN: usize = 70_000;
const FLIP_B_LEN: usize = 66_000;

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt)).collect()
}

#[test]
fn handshake_then_a_5_mib_message_each_way() {
    let mut link = Link::trusting(1, ChannelConfig::default());
    let big_a = pattern(FIVE_MIB, 1);
    let big_b = pattern(FIVE_MIB, 2);
    link.send(End::Initiator, &big_a).expect("queued before the handshake");
    link.run();
    assert_eq!(link.seen_initiator.established, Some(Parties::from_seed(1).responder.public()));
    assert_eq!(link.seen_responder.established, Some(Parties::from_seed(1).initiator.public()));
    link.send(End::Responder, &big_b).expect("sent");
    link.run();
    assert_eq!(link.seen_responder.messages, vec![big_a]);
    assert_eq!(link.seen_initiator.messages, vec![big_b]);
    // 5 MiB needs many Noise messages: the exchange really was chunked.
    assert!(link.frames_in_flight() > 2 * FIVE_MIB / MAX_FRAME_LEN);
    link.close(End::Initiator);
    link.run();
    assert_eq!(link.seen_responder.closed, Some(CloseReason::PeerClosed));
}

#[test]
fn a_peer_whose_static_key_is_not_trusted_is_refused() {
    let parties = Parties::from_seed(2);
    let stranger = NodeKeys::generate(&mut seeded(99)).public();
    // The responder trusts someone else: it refuses the initiator.
    let mut link = Link::new(
        2,
        &parties,
        [parties.responder.public()].into_iter().collect(),
        [stranger].into_iter().collect(),
        ChannelConfig::default(),
    );
    link.send(End::Initiator, b"let me in").expect("queued");
    link.run();
    assert!(matches!(link.seen_responder.failure(), Some(ChannelError::UntrustedPeer(_))));
    assert!(link.seen_responder.messages.is_empty());
    assert_eq!(link.seen_responder.established, None);
    assert!(link.seen_initiator.closed.is_some(), "the initiator sees the stream end");

    // The initiator trusts nobody: it refuses the responder before sending its own identity.
    let mut link = Link::new(
        2,
        &parties,
        TrustSet::new(),
        [parties.initiator.public()].into_iter().collect(),
        ChannelConfig::default(),
    );
    link.run();
    assert!(matches!(link.seen_initiator.failure(), Some(ChannelError::UntrustedPeer(_))));
    assert_eq!(link.seen_responder.established, None);
}

/// Flips bit `bit` of frame `target` in flight, in a run that handshakes, sends a chunked
/// message each way, and ends the streams. Returns whether either end noticed.
fn flip_detected(target: usize, bit: usize) -> bool {
    let mut link = Link::trusting(3, ChannelConfig::default()).with_tamper(Box::new(move |index, frame| {
        if index == target {
            let bit = bit % (frame.len() * 8);
            frame[bit / 8] ^= 1 << (bit % 8);
        }
    }));
    let a = pattern(FLIP_A_LEN, 7);
    let b = pattern(FLIP_B_LEN, 9);
    link.send(End::Initiator, &a).expect("queued");
    link.run();
    let _ = link.send(End::Responder, &b);
    link.run();
    // End both streams: a frame left waiting for bytes that never come is caught here.
    link.feed(End::Initiator, ChannelInput::PeerClosed);
    link.feed(End::Responder, ChannelInput::PeerClosed);
    link.run();
    let delivered_intact = link.seen_responder.messages == vec![a] && link.seen_initiator.messages == vec![b];
    let failed = link.seen_initiator.failure().is_some() || link.seen_responder.failure().is_some();
    assert!(
        failed || !delivered_intact || target >= link.frames_in_flight(),
        "frame {target} bit {bit}: not detected"
    );
    failed
}

#[test]
fn one_flipped_bit_in_any_frame_is_detected() {
    // Frames: 3 handshake, 2 chunks of a, 2 chunks of b.
    let clean = {
        let mut link = Link::trusting(3, ChannelConfig::default());
        link.send(End::Initiator, &pattern(FLIP_A_LEN, 7)).expect("queued");
        link.run();
        link.send(End::Responder, &pattern(FLIP_B_LEN, 9)).expect("sent");
        link.run();
        link.frames_in_flight()
    };
    assert_eq!(clean, 7);
    let mut runs = 0;
    for frame in 0..clean {
        // Every bit of the length prefix and the first 32 bytes, then a spread over the rest.
        let bits = (0..32 + 256).chain((288..MAX_FRAME_LEN * 8).step_by(8191));
        for bit in bits {
            assert!(flip_detected(frame, bit), "flip of bit {bit} in frame {frame} went unnoticed");
            runs += 1;
        }
    }
    assert!(runs > 2000);
}

#[test]
fn an_oversized_length_prefix_is_rejected_before_allocating() {
    let parties = Parties::from_seed(4);
    let trust: TrustSet = [parties.initiator.public()].into_iter().collect();
    let mut responder =
        Channel::responder(Instant::ZERO, ChannelConfig::default(), &parties.responder, trust, seeded(4))
            .expect("builds");
    // A 4 GiB length prefix and nothing else.
    responder.handle(Now::ZERO, ChannelInput::Received(u32::MAX.to_be_bytes().to_vec()));
    assert_eq!(
        responder.poll_output(),
        Some(ChannelOutput::Closed(CloseReason::Failed(ChannelError::Frame(FrameError::Oversized {
            len: u64::from(u32::MAX),
            max: MAX_FRAME_LEN
        }))))
    );
    assert!(responder.is_closed());
}

#[test]
fn a_message_over_the_limit_is_refused_on_both_sides() {
    let config = ChannelConfig { max_message_len: 100_000, ..ChannelConfig::default() };
    let mut link = Link::trusting(5, config);
    link.run();
    assert_eq!(
        link.send(End::Initiator, &pattern(100_001, 0)),
        Err(ChannelError::MessageTooLarge { len: 100_001, limit: 100_000 })
    );
    // A peer with a bigger limit sends more than this end accepts: refused, not buffered.
    let parties = Parties::from_seed(6);
    let trust_i: TrustSet = [parties.responder.public()].into_iter().collect();
    let trust_r: TrustSet = [parties.initiator.public()].into_iter().collect();
    let mut link = Link::new(6, &parties, trust_i, trust_r, config);
    let big = ChannelConfig::default();
    link.initiator = Channel::initiator(
        Instant::ZERO,
        big,
        &parties.initiator,
        [parties.responder.public()].into_iter().collect(),
        seeded(60),
    )
    .expect("builds");
    link.send(End::Initiator, &pattern(300_000, 0)).expect("queued");
    link.run();
    assert!(matches!(link.seen_responder.failure(), Some(ChannelError::Chunk(_))));
    assert!(link.seen_responder.messages.is_empty());
}

#[test]
fn an_unfinished_handshake_times_out() {
    let parties = Parties::from_seed(7);
    let trust: TrustSet = [parties.initiator.public()].into_iter().collect();
    let config = ChannelConfig { handshake_timeout: Duration::from_secs(5), ..ChannelConfig::default() };
    let mut responder =
        Channel::responder(Instant::ZERO, config, &parties.responder, trust, seeded(7)).expect("builds");
    let deadline = responder.poll_timeout().expect("a handshake deadline");
    assert_eq!(deadline, Instant::ZERO + Duration::from_secs(5));
    responder.handle(Now::ZERO.after(Duration::from_secs(4)), ChannelInput::Timeout);
    assert_eq!(responder.poll_output(), None, "not before the deadline");
    responder.handle(Now::ZERO.with_mono(deadline), ChannelInput::Timeout);
    assert_eq!(
        responder.poll_output(),
        Some(ChannelOutput::Closed(CloseReason::Failed(ChannelError::HandshakeTimeout(
            Duration::from_secs(5)
        ))))
    );
    assert_eq!(responder.poll_timeout(), None);
}

#[test]
fn truncated_streams_are_errors() {
    let mut link = Link::trusting(8, ChannelConfig::default());
    link.run();
    link.send(End::Initiator, &pattern(200_000, 3)).expect("sent");
    // Deliver only part of the transmission, then end the stream.
    let Some(ChannelOutput::Transmit(bytes)) = link.initiator.poll_output() else {
        panic!("expected a transmission")
    };
    link.feed(End::Responder, ChannelInput::Received(bytes[..bytes.len() / 2].to_vec()));
    link.feed(End::Responder, ChannelInput::PeerClosed);
    link.run();
    assert!(matches!(link.seen_responder.failure(), Some(ChannelError::Frame(FrameError::Truncated { .. }))));
}

fn responder_for_fuzz() -> Channel {
    let parties = Parties::from_seed(9);
    let trust: TrustSet = [parties.initiator.public()].into_iter().collect();
    Channel::responder(Instant::ZERO, ChannelConfig::default(), &parties.responder, trust, seeded(9))
        .expect("builds")
}

fn drain(channel: &mut Channel) -> Vec<ChannelOutput> {
    std::iter::from_fn(|| channel.poll_output()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Random bytes in random pieces at a responder: never a panic, never an established channel
    /// or a message, and at most one Closed, always last.
    #[test]
    fn random_bytes_never_panic_the_channel(pieces in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..8), close in any::<bool>()) {
        let mut responder = responder_for_fuzz();
        let mut outputs = Vec::new();
        for piece in pieces {
            responder.handle(Now::ZERO, ChannelInput::Received(piece));
            outputs.extend(drain(&mut responder));
        }
        if close {
            responder.handle(Now::ZERO, ChannelInput::PeerClosed);
            outputs.extend(drain(&mut responder));
        }
        prop_assert!(!outputs.iter().any(|o| matches!(o, ChannelOutput::Established(_) | ChannelOutput::Message(_))));
        let closes = outputs.iter().filter(|o| matches!(o, ChannelOutput::Closed(_))).count();
        prop_assert!(closes <= 1);
        if closes == 1 {
            prop_assert!(matches!(outputs.last(), Some(ChannelOutput::Closed(_))));
        }
    }

    /// Random bytes after a real handshake (the attacker owns the stream mid-session): errors only.
    #[test]
    fn random_bytes_after_the_handshake_are_errors(garbage in prop::collection::vec(any::<u8>(), 1..2000)) {
        let mut link = Link::trusting(10, ChannelConfig::default());
        link.run();
        link.feed(End::Responder, ChannelInput::Received(garbage));
        link.feed(End::Responder, ChannelInput::PeerClosed);
        link.run();
        prop_assert!(link.seen_responder.messages.is_empty());
        prop_assert!(link.seen_responder.failure().is_some());
    }

    /// Frame decoder on its own: any bytes, any split, no panic, and every frame it yields fits.
    #[test]
    fn the_frame_decoder_survives_anything(bytes in prop::collection::vec(any::<u8>(), 0..4096), split in 0usize..4096) {
        let mut decoder = cohort_core::channel::frame::FrameDecoder::new();
        let split = split.min(bytes.len());
        for part in [&bytes[..split], &bytes[split..]] {
            decoder.push(part);
            while let Ok(Some(frame)) = decoder.next_frame() {
                prop_assert!(!frame.is_empty() && frame.len() <= MAX_FRAME_LEN);
            }
        }
        let _ = decoder.finish();
    }
}

/// 100 MiB through one channel, as 25 messages of 4 MiB each sent back to back (the size a host's
/// output and a client's results travel in): everything arrives, in order, byte for byte.
#[test]
fn a_hundred_mib_cross_one_channel_intact_and_in_order() {
    use sha2::{Digest, Sha256};
    const MESSAGE: usize = 4 * 1024 * 1024;
    let mut link = Link::trusting(11, ChannelConfig::default());
    let mut sent = Sha256::new();
    for i in 0..25u8 {
        let message = pattern(MESSAGE, i);
        sent.update(&message);
        link.send(End::Initiator, &message).expect("sent");
        // Delivered as it goes, as a reading peer would take it.
        link.run();
    }
    let received = &link.seen_responder.messages;
    assert_eq!(received.len(), 25);
    let mut got = Sha256::new();
    for message in received {
        got.update(message);
    }
    assert_eq!(received.iter().map(Vec::len).sum::<usize>(), 100 * 1024 * 1024);
    assert_eq!(got.finalize(), sent.finalize(), "the bytes that arrived are the bytes sent");
}
