//! Protocol traces as insta snapshots under `snapshots/`, and the determinism they rest on:
//! the same seed replays byte for byte, a different seed does not.

use cohort_core::channel::ChannelConfig;
use cohort_core::trace::Trace;
use cohort_tests::link::{End, Link};

/// A scripted run: handshake, a short message each way, one chunked message, a clean close.
fn handshake_and_exchange(seed: u64) -> Trace {
    let mut link = Link::trusting(seed, ChannelConfig::default());
    link.send(End::Initiator, b"hello bob").expect("queued");
    link.run();
    link.send(End::Responder, b"hello alice").expect("sent");
    link.run();
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    link.send(End::Initiator, &big).expect("sent");
    link.run();
    link.close(End::Initiator);
    link.run();
    link.trace
}

#[test]
fn same_seed_same_trace_and_it_matches_the_snapshot() {
    let first = handshake_and_exchange(1);
    let second = handshake_and_exchange(1);
    assert_eq!(first, second, "one seed must replay byte for byte");
    insta::with_settings!({ snapshot_path => "../../snapshots", prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!("channel_handshake_and_exchange", first.render());
    });
}

#[test]
fn a_different_seed_gives_a_different_trace() {
    assert_ne!(handshake_and_exchange(1).render(), handshake_and_exchange(2).render());
}
