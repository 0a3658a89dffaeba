//! Helpers for randomized tests: a seeded generator and a seeded quickcheck.
//!
//! Every randomized test prints its seed; re-run a failure with
//! `ACCRETE_SEED=<seed> cargo test …`.

use std::hash::{BuildHasher, RandomState};

/// The seed for one randomized test: `ACCRETE_SEED` if set, else fresh.
/// Printed, so a failure can be replayed.
pub(crate) fn seed(test: &str) -> u64 {
    let seed = std::env::var("ACCRETE_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| RandomState::new().hash_one(test));
    eprintln!("{test}: seed {seed} (replay with ACCRETE_SEED={seed})");
    seed
}

/// The generator of the randomized tests: the crate's one SplitMix64.
pub(crate) use crate::hash::SplitMix64 as Rng;

impl Rng {
    /// A generator seeded by [`seed`].
    pub(crate) fn for_test(test: &str) -> Self {
        Rng::new(seed(test))
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1_u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    pub(crate) fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Standard normal (Box–Muller).
    pub(crate) fn normal(&mut self) -> f64 {
        let u = 1.0 - self.unit(); // (0, 1]
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// A quickcheck runner whose generator is seeded by [`seed`]; honours
/// `QUICKCHECK_TESTS` and `QUICKCHECK_GENERATOR_SIZE`.
#[cfg(feature = "laws")]
pub(crate) fn quickcheck(test: &str) -> quickcheck::QuickCheck {
    let size = std::env::var("QUICKCHECK_GENERATOR_SIZE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    quickcheck::QuickCheck::new().rng(quickcheck::Gen::from_size_and_seed(size, seed(test)))
}
