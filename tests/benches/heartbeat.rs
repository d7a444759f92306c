//! Receiving a member heartbeat: the bytes of a signed `Status` as they come off a member channel,
//! decoded with `MemberMessage::from_wire` (version byte, envelope, body, recipient bound) and
//! checked with `Signed::verify` against the sender's identity, the two steps the member machine
//! takes on receipt before it looks at sequence numbers and versions.
//!
//! Floor: one raw ed25519-dalek `verify_strict` (the check `PublicIdentity::verify` makes) of a
//! signature over a message as long as the Status's signing bytes. Everything above the floor is
//! the decode and the re-encoding of the signed bytes.

mod common;

use std::hint::black_box;

use cohort_core::member::{MemberMessage, Status, Version};
use cohort_core::rng::seeded;
use cohort_core::signed::{Signed, signing_bytes};
use cohort_core::{KeyDigest, NodeKeys, PublicIdentity};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::{Signer, SigningKey};

/// Roster sizes: a small cluster, and a large one (each Status names every other member).
const RECIPIENTS: [usize; 2] = [4, 64];

/// A signed Status from a member of a cluster of `recipients + 1`, as it travels, with the
/// sender's identity and the length of the bytes its signature covers.
fn status_on_the_wire(recipients: usize) -> (Vec<u8>, PublicIdentity, usize) {
    let mut rng = seeded(19);
    let sender = NodeKeys::generate(&mut rng);
    let recipients: Vec<KeyDigest> =
        (0..recipients).map(|_| NodeKeys::generate(&mut rng).public().key_digest()).collect();
    let author = sender.node_id();
    let status = Status {
        cluster_id: "bench-cluster".to_owned(),
        sender: author,
        active: Version { counter: 41, author },
        staged: Some(Version { counter: 42, author }),
        seq: (3 << 32) | 1_234,
        recipients,
    };
    let signed_len = signing_bytes(&status).expect("encodes").len();
    let signed = Signed::sign(status, &sender).expect("signs");
    let wire = MemberMessage::Status(signed).to_wire().expect("encodes");
    (wire, sender.public(), signed_len)
}

fn heartbeat(c: &mut Criterion) {
    let mut group = c.benchmark_group("heartbeat");
    group.throughput(Throughput::Elements(1));
    for recipients in RECIPIENTS {
        let (wire, sender, signed_len) = status_on_the_wire(recipients);
        println!(
            "heartbeat: {recipients} recipients: {} bytes on the wire, {signed_len} signed bytes",
            wire.len()
        );
        let label = format!("{recipients}_recipients");

        group.bench_with_input(BenchmarkId::new("status_decode_verify", &label), &wire, |b, wire| {
            b.iter(|| {
                let signed = match MemberMessage::from_wire(black_box(wire)) {
                    Ok(MemberMessage::Status(signed)) => signed,
                    other => panic!("not a Status: {other:?}"),
                };
                signed.verify(&sender).expect("verifies");
                signed
            })
        });

        let key = SigningKey::from_bytes(&[7; 32]);
        let verifying = key.verifying_key();
        let message = vec![0x5a; signed_len];
        let signature = key.sign(&message);
        group.bench_with_input(BenchmarkId::new("floor_ed25519_verify", &label), &message, |b, message| {
            b.iter(|| verifying.verify_strict(black_box(message), black_box(&signature)).expect("verifies"))
        });
    }
    group.finish();
}

criterion_group! { name = benches; config = common::quick(); targets = heartbeat }
criterion_main!(benches);
