//! Issuing service tickets at the KDC: `Kdc::answer` on a `KdcRequest::Tickets` (what the node's
//! KDC slot calls for a gateway's request once it is decoded), for one host and for a batch of
//! 16. The KDC checks the credential's Ed25519 signature once per request, then for each host
//! draws a session key and seals the ticket body under the key it shares with that host
//! (XChaCha20-Poly1305; the key itself is derived at a host's first ticket and kept, so the
//! measurement, after warm-up, holds none of that X25519). The request is built outside the
//! measurement.
//!
//! Floor: the raw primitives an issue cannot avoid, from ed25519-dalek and chacha20poly1305 on
//! inputs of the same sizes: one `verify_strict` of the credential, then per ticket one
//! XChaCha20-Poly1305 seal of a plaintext the size of the encoded body.

use std::collections::BTreeMap;
mod common;

use std::hint::black_box;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use cohort_core::exec::kdc::{Kdc, KdcSettings, hash_password};
use cohort_core::exec::ticket::Credential;
use cohort_core::exec::wire::{KdcReply, KdcRequest};
use cohort_core::rng::{SeededRng, fork, seeded};
use cohort_core::signed::{Signed, signing_bytes};
use cohort_core::{NodeKeys, PublicIdentity, WallClock};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::{Signer, SigningKey};
use rand_core::RngCore;

const NOW: WallClock = WallClock(1_750_000_000_000);
const BATCHES: [usize; 2] = [1, 16];
/// XChaCha20-Poly1305's tag.
const TAG_LEN: usize = 16;

fn host_name(i: usize) -> String {
    format!("web{i:02}")
}

struct Site {
    kdc: Kdc,
    credential: Signed<Credential>,
    client_key: [u8; 32],
    hosts: BTreeMap<String, PublicIdentity>,
}

/// A KDC with one principal and 16 hosts, and a credential from a real login.
fn site() -> Site {
    let mut rng = seeded(19);
    let kdc_keys = NodeKeys::generate(&mut rng);
    let hosts: BTreeMap<String, PublicIdentity> =
        (1..=16).map(|i| (host_name(i), NodeKeys::generate(&mut rng).public())).collect();
    let principals =
        BTreeMap::from([("alice".to_owned(), hash_password("bench", &mut rng).expect("hashes"))]);
    let mut kdc = Kdc::new(kdc_keys, principals, hosts.clone(), KdcSettings::default(), fork(&mut rng));
    let client_key = NodeKeys::generate(&mut rng).public().agreement;
    let credential = kdc.login(NOW, "alice", "bench", client_key).expect("logs in");
    Site { kdc, credential, client_key, hosts }
}

/// A gateway's request for tickets to the first `hosts` hosts.
fn request(credential: &Signed<Credential>, client_key: [u8; 32], hosts: usize) -> KdcRequest {
    KdcRequest::Tickets {
        credential: credential.clone(),
        client_key,
        hosts: (1..=hosts).map(host_name).collect(),
    }
}

/// The sizes the floor works on: the credential's signing bytes and the sealed plaintext (the
/// encoded ticket body), read off a ticket the KDC issued.
fn sizes(site: &mut Site) -> (usize, usize) {
    let credential = signing_bytes(&site.credential.body).expect("encodes").len();
    let reply = site.kdc.answer(NOW, request(&site.credential, site.client_key, 1));
    let KdcReply::Tickets { grants } = reply else { panic!("no tickets: {reply:?}") };
    let granted = grants.into_iter().next().and_then(|g| g.ticket.ok()).expect("a ticket");
    let sealed = granted.ticket.ciphertext.len() - TAG_LEN;
    (credential, sealed)
}

struct Floor {
    key: SigningKey,
    credential: Vec<u8>,
    credential_signature: ed25519_dalek::Signature,
    plaintext: Vec<u8>,
    /// One cipher per host, as the KDC keeps one key per host, and each host's name as its
    /// associated data.
    recipients: Vec<(XChaCha20Poly1305, Vec<u8>)>,
    rng: SeededRng,
}

impl Floor {
    fn new(site: &Site, (credential, plaintext): (usize, usize)) -> Floor {
        let key = SigningKey::from_bytes(&[7; 32]);
        let credential = vec![0x11; credential];
        let credential_signature = key.sign(&credential);
        let recipients = site
            .hosts
            .keys()
            .enumerate()
            .map(|(i, name)| {
                let cipher = XChaCha20Poly1305::new_from_slice(&[i as u8; 32]).expect("a 32-byte key");
                let mut aad = b"cohort service ticket v2\0".to_vec();
                aad.extend_from_slice(name.as_bytes());
                (cipher, aad)
            })
            .collect();
        Floor {
            key,
            credential,
            credential_signature,
            plaintext: vec![0x33; plaintext],
            recipients,
            rng: seeded(7),
        }
    }

    /// One credential check, then a session key and a seal for each of `hosts` tickets.
    fn issue(&mut self, hosts: usize) {
        let verifying = self.key.verifying_key();
        verifying.verify_strict(black_box(&self.credential), &self.credential_signature).expect("verifies");
        for (cipher, aad) in self.recipients.iter().take(hosts) {
            let mut session_key = [0u8; 32];
            self.rng.fill_bytes(&mut session_key);
            let mut nonce = [0u8; 24];
            self.rng.fill_bytes(&mut nonce);
            let payload = Payload { msg: black_box(&self.plaintext), aad };
            black_box((session_key, cipher.encrypt(XNonce::from_slice(&nonce), payload).expect("seals")));
        }
    }
}

fn ticket(c: &mut Criterion) {
    let mut site = site();
    let sizes = sizes(&mut site);
    println!("ticket: credential signing bytes {}, sealed plaintext {} bytes", sizes.0, sizes.1);
    let mut floor = Floor::new(&site, sizes);
    let Site { mut kdc, credential, client_key, .. } = site;
    let mut group = c.benchmark_group("ticket");
    for hosts in BATCHES {
        group.throughput(Throughput::Elements(hosts as u64));
        let label = format!("{hosts}_hosts");
        group.bench_function(BenchmarkId::new("kdc_answer", &label), |b| {
            b.iter_batched(
                || request(&credential, client_key, hosts),
                |request| match kdc.answer(NOW, request) {
                    KdcReply::Tickets { grants } if grants.iter().all(|g| g.ticket.is_ok()) => grants,
                    other => panic!("not issued: {other:?}"),
                },
                BatchSize::SmallInput,
            )
        });
        group.bench_function(BenchmarkId::new("floor_verify_aead_seal", &label), |b| {
            b.iter(|| floor.issue(hosts))
        });
    }
    group.finish();
}

criterion_group! { name = benches; config = common::quick(); targets = ticket }
criterion_main!(benches);
