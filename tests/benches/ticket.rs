//! Issuing service tickets at the KDC: `Kdc::answer` on a `KdcRequest::Tickets` (what the node's
//! KDC slot calls for a gateway's request once it is decoded), for one host and for a batch of
//! 16. The KDC checks the credential's Ed25519 signature once per request, then for each host
//! draws a session key, signs the ticket body (Ed25519) and seals the signed body to the host's
//! X25519 key (HPKE base mode, X25519-HKDF-SHA256, ChaCha20-Poly1305). The request is built
//! outside the measurement.
//!
//! Floor: the raw primitives an issue cannot avoid, from ed25519-dalek and hpke on inputs of the
//! same sizes: one `verify_strict` of the credential, then per ticket one Ed25519 `sign` of the
//! ticket body's signing bytes and one HPKE `single_shot_seal` of the signed body.

use std::collections::BTreeMap;
mod common;

use std::hint::black_box;

use cohort_core::exec::kdc::{Kdc, KdcSettings, hash_password};
use cohort_core::exec::ticket::{Credential, TicketBody};
use cohort_core::exec::wire::{KdcReply, KdcRequest};
use cohort_core::rng::{SeededRng, fork, seeded};
use cohort_core::signed::{Signed, signing_bytes};
use cohort_core::{NodeKeys, PublicIdentity, WallClock};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::{Signer, SigningKey};
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem, OpModeS};

const NOW: WallClock = WallClock(1_750_000_000_000);
const BATCHES: [usize; 2] = [1, 16];
/// HPKE's ChaCha20-Poly1305 tag.
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

/// The sizes the floor works on: the credential's signing bytes, the ticket body's signing
/// bytes, and the HPKE plaintext (the signed body), read off a ticket the KDC issued.
fn sizes(site: &mut Site) -> (usize, usize, usize) {
    let credential = signing_bytes(&site.credential.body).expect("encodes").len();
    let reply = site.kdc.answer(NOW, request(&site.credential, site.client_key, 1));
    let KdcReply::Tickets { grants } = reply else { panic!("no tickets: {reply:?}") };
    let granted = grants.into_iter().next().and_then(|g| g.ticket.ok()).expect("a ticket");
    let body = TicketBody {
        principal: site.credential.body.principal.clone(),
        host: host_name(1),
        issued: NOW,
        expires: granted.expires,
        session_key: granted.session_key,
    };
    let body = signing_bytes(&body).expect("encodes").len();
    let sealed = granted.ticket.sealed.ciphertext.len() - TAG_LEN;
    (credential, body, sealed)
}

struct Floor {
    key: SigningKey,
    credential: Vec<u8>,
    credential_signature: ed25519_dalek::Signature,
    body: Vec<u8>,
    plaintext: Vec<u8>,
    recipients: Vec<(<X25519HkdfSha256 as Kem>::PublicKey, Vec<u8>)>,
    rng: SeededRng,
}

impl Floor {
    fn new(site: &Site, (credential, body, plaintext): (usize, usize, usize)) -> Floor {
        let key = SigningKey::from_bytes(&[7; 32]);
        let credential = vec![0x11; credential];
        let credential_signature = key.sign(&credential);
        let recipients = site
            .hosts
            .iter()
            .map(|(name, identity)| {
                let pk = <X25519HkdfSha256 as Kem>::PublicKey::from_bytes(&identity.agreement).expect("key");
                let mut info = b"cohort service ticket v1\0".to_vec();
                info.extend_from_slice(name.as_bytes());
                (pk, info)
            })
            .collect();
        Floor {
            key,
            credential,
            credential_signature,
            body: vec![0x22; body],
            plaintext: vec![0x33; plaintext],
            recipients,
            rng: seeded(7),
        }
    }

    /// One credential check, then a signature and a seal for each of `hosts` tickets.
    fn issue(&mut self, hosts: usize) {
        let verifying = self.key.verifying_key();
        verifying.verify_strict(black_box(&self.credential), &self.credential_signature).expect("verifies");
        for (pk, info) in self.recipients.iter().take(hosts) {
            black_box(self.key.sign(black_box(&self.body)));
            let sealed = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256, _>(
                &OpModeS::Base,
                pk,
                info,
                black_box(&self.plaintext),
                b"",
                &mut self.rng,
            )
            .expect("seals");
            black_box(sealed);
        }
    }
}

fn ticket(c: &mut Criterion) {
    let mut site = site();
    let sizes = sizes(&mut site);
    println!(
        "ticket: credential signing bytes {}, ticket body signing bytes {}, sealed plaintext {} bytes",
        sizes.0, sizes.1, sizes.2
    );
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
        group.bench_function(BenchmarkId::new("floor_verify_sign_hpke_seal", &label), |b| {
            b.iter(|| floor.issue(hosts))
        });
    }
    group.finish();
}

criterion_group! { name = benches; config = common::quick(); targets = ticket }
criterion_main!(benches);
