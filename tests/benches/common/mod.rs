//! What every benchmark here shares: criterion's settings, short enough that the whole
//! `cargo bench -p cohort-tests` runs in a few minutes on two cores.

use std::time::Duration;

use criterion::Criterion;

/// One second of warm-up, three of measurement, 50 samples.
pub fn quick() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
}
