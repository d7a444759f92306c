//! The one place production randomness comes from: the OS seeds a ChaCha20 rng, which is then
//! handed to core. Nothing else in cohort reads OS randomness.

use cohort_core::rng::SeededRng;
use rand_core::SeedableRng;

/// A ChaCha20 rng seeded from the operating system.
pub fn os_seeded_rng() -> SeededRng {
    SeededRng::from_entropy()
}
