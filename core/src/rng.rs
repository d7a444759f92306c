//! Seeded randomness. Owns the machine's [`SeededRng`] and the bridge that lets `snow` draw its
//! ephemeral keys from it, so the same seed gives byte-identical handshakes.
//! It must never reach for OS randomness: the driver seeds it (from the OS in production, from the
//! simulation seed in tests).

use std::sync::{Arc, Mutex, PoisonError};

use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore, SeedableRng};
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};

/// The machine's source of randomness: ChaCha20 from a seed chosen by the driver.
pub type SeededRng = ChaCha20Rng;

/// A rng from a 64-bit seed (simulation and tests).
pub fn seeded(seed: u64) -> SeededRng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// A child rng whose seed is drawn from `parent`: independent streams that stay reproducible.
pub fn fork(parent: &mut impl RngCore) -> SeededRng {
    let mut seed = <ChaCha20Rng as SeedableRng>::Seed::default();
    parent.fill_bytes(&mut seed);
    ChaCha20Rng::from_seed(seed)
}

/// A duration drawn uniformly from `[0, max)` (zero when `max` is zero): schedule jitter.
pub fn uniform_duration(rng: &mut impl RngCore, max: std::time::Duration) -> std::time::Duration {
    let max_ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    if max_ms == 0 {
        std::time::Duration::ZERO
    } else {
        std::time::Duration::from_millis(rng.next_u64() % max_ms)
    }
}

/// A `snow` resolver whose randomness comes from a seeded master rng.
///
/// snow asks for a rng once per `build_*`/`generate_keypair` through `&self`, so the master sits
/// behind a lock and each request forks a child seed from it. DH, hash and cipher come from
/// snow's own default resolver.
#[derive(Debug, Clone)]
pub struct SeededResolver {
    master: Arc<Mutex<SeededRng>>,
}

impl SeededResolver {
    pub fn new(master: SeededRng) -> Self {
        SeededResolver { master: Arc::new(Mutex::new(master)) }
    }
}

impl CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        // A poisoned lock only means another holder panicked mid-draw; the rng state is still a
        // valid ChaCha state, so keep going rather than refuse every later handshake.
        let mut master = self.master.lock().unwrap_or_else(PoisonError::into_inner);
        Some(Box::new(NoiseRandom(fork(&mut *master))))
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

struct NoiseRandom(SeededRng);

impl Random for NoiseRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

/// Marker that the bridge is a cryptographic rng (ChaCha20 is).
const _: fn() = || {
    fn is_crypto<T: CryptoRng>() {}
    is_crypto::<SeededRng>();
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_different_seed_different_stream() {
        let (mut a, mut b, mut c) = (seeded(7), seeded(7), seeded(8));
        let (x, y, z) = (a.next_u64(), b.next_u64(), c.next_u64());
        assert_eq!(x, y);
        assert_ne!(x, z);
    }

    #[test]
    fn forks_are_reproducible_and_distinct_from_the_parent() {
        let mut p1 = seeded(1);
        let mut p2 = seeded(1);
        let mut c1 = fork(&mut p1);
        let mut c2 = fork(&mut p2);
        assert_eq!(c1.next_u64(), c2.next_u64());
        assert_ne!(fork(&mut p1).next_u64(), c1.next_u64());
    }
}
