//! Shared by every bench: one fixed, printed seed and short measurements
//! (the suite must finish in minutes on two shared, noisy cores).

use std::time::Duration;

use criterion::Criterion;
use rand::RngExt;
use rand::rngs::StdRng;

/// The seed of every generated input. Printed by [`seed`] so a run can be
/// reproduced; change it here to try other inputs.
const SEED: u64 = 0xacc2_e7e5_0000_0001;

/// The seed, printed once per bench binary with the name of the input it
/// generates.
pub(crate) fn seed(input: &str) -> u64 {
    println!("{input}: seed {SEED:#018x}");
    SEED
}

/// 10 samples, 1 s warm-up, 3 s measurement.
pub(crate) fn criterion() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

/// SplitMix64's output function: a bijection on `u64`, so distinct inputs
/// give distinct, well-spread items.
#[allow(dead_code)] // not every bench needs distinct items
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Zipf over ranks `0..n` by inverse CDF: a binary search in the
/// precomputed cumulative weights `Σ 1/k^s`.
#[allow(dead_code)] // not every bench draws skewed keys
pub(crate) struct Zipf {
    cdf: Vec<f64>,
}

#[allow(dead_code)]
impl Zipf {
    pub(crate) fn new(n: usize, exponent: f64) -> Self {
        let mut total = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|k| {
                total += (k as f64).powf(-exponent);
                total
            })
            .collect();
        for c in &mut cdf {
            *c /= total;
        }
        Zipf { cdf }
    }

    pub(crate) fn sample(&self, rng: &mut StdRng) -> usize {
        let u: f64 = rng.random();
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1)
    }
}
