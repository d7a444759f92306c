//! Moving 64 KiB application messages over cohort's secure channel, end to end in memory: the
//! sender's `Channel::send` (chunking, one Noise transport message per chunk, length framing)
//! and the receiver's `Channel::handle(Received)` (frame decoding, Noise decryption,
//! reassembly) until the whole message comes out as `ChannelOutput::Message`. The channels are
//! established once (a real Noise XX handshake) before the measurement; the stream is handed
//! over in one piece.
//!
//! Floor: a raw ChaCha20-Poly1305 (the `chacha20poly1305` crate snow uses) seal and open of the
//! same 64 KiB in place. A 64 KiB message takes two Noise messages on the channel (one chunk
//! carries at most 65,518 bytes), so the channel pays two AEAD setups to the floor's one.

mod common;

use std::hint::black_box;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use cohort_core::channel::{Channel, ChannelConfig, ChannelInput, ChannelOutput};
use cohort_core::rng::{fork, seeded};
use cohort_core::{Instant, Machine, NodeKeys, Now};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const MESSAGE_LEN: usize = 64 * 1024;

/// Hands every `Transmit` of `from` to `to`; whether anything moved.
fn pump(from: &mut Channel, to: &mut Channel) -> bool {
    let mut moved = false;
    while let Some(output) = from.poll_output() {
        match output {
            ChannelOutput::Transmit(bytes) => {
                to.handle(Now::ZERO, ChannelInput::Received(bytes));
                moved = true;
            }
            ChannelOutput::Established(_) => {}
            other => panic!("unexpected output during the handshake: {other:?}"),
        }
    }
    moved
}

/// Two channel ends that finished their handshake and trust each other.
fn established_pair() -> (Channel, Channel) {
    let mut rng = seeded(19);
    let a = NodeKeys::generate(&mut rng);
    let b = NodeKeys::generate(&mut rng);
    let config = ChannelConfig::default();
    let mut initiator =
        Channel::initiator(Instant::ZERO, config, &a, [b.public()].into_iter().collect(), fork(&mut rng))
            .expect("initiator");
    let mut responder =
        Channel::responder(Instant::ZERO, config, &b, [a.public()].into_iter().collect(), fork(&mut rng))
            .expect("responder");
    while pump(&mut initiator, &mut responder) | pump(&mut responder, &mut initiator) {}
    assert!(initiator.is_established() && responder.is_established(), "handshake finished");
    (initiator, responder)
}

fn channel(c: &mut Criterion) {
    let mut group = c.benchmark_group("channel");
    group.throughput(Throughput::Bytes(MESSAGE_LEN as u64));
    let message: Vec<u8> = (0..MESSAGE_LEN).map(|i| (i as u8).wrapping_mul(31)).collect();

    let (mut sender, mut receiver) = established_pair();
    group.bench_with_input(BenchmarkId::new("send_receive", "64KiB"), &message, |b, message| {
        b.iter(|| {
            sender.send(black_box(message)).expect("sends");
            let stream = match sender.poll_output() {
                Some(ChannelOutput::Transmit(stream)) => stream,
                other => panic!("expected the frames: {other:?}"),
            };
            receiver.handle(Now::ZERO, ChannelInput::Received(stream));
            match receiver.poll_output() {
                Some(ChannelOutput::Message(received)) => received,
                other => panic!("expected the message: {other:?}"),
            }
        })
    });

    let cipher = ChaCha20Poly1305::new(Key::from_slice(&[9; 32]));
    let nonce = Nonce::from_slice(&[0; 12]);
    let mut buffer = message.clone();
    group.bench_function(BenchmarkId::new("floor_chacha20poly1305_seal_open", "64KiB"), |b| {
        b.iter(|| {
            let tag = cipher.encrypt_in_place_detached(nonce, b"", black_box(&mut buffer)).expect("seals");
            cipher.decrypt_in_place_detached(nonce, b"", black_box(&mut buffer), &tag).expect("opens");
        })
    });
    assert_eq!(buffer, message, "the floor's buffer round-tripped");
    group.finish();
}

criterion_group! { name = benches; config = common::quick(); targets = channel }
criterion_main!(benches);
