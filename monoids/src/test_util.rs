//! Helpers for the crate's randomized unit tests: a seeded generator, a
//! seeded quickcheck runner for semantic properties, and a small element
//! type. The generic laws (identity, associativity, commutativity,
//! idempotence, folds, round trips, convergence) are not checked here but
//! by the public harness, [`crate::laws`].
//!
//! Every randomized test prints its seed; re-run one with the same seed,
//! as for the harness:
//!
//! ```text
//! ACCRETE_LAWS_SEED=<seed> cargo test -p accrete-monoids --all-features <test name>
//! ```
//!
//! [`check`] also honours `ACCRETE_LAWS_TESTS` (or quickcheck's
//! `QUICKCHECK_TESTS`) and `QUICKCHECK_GENERATOR_SIZE`.

use std::hash::{BuildHasher, RandomState};

/// The generator of the randomized tests: the crate's one SplitMix64.
pub(crate) use crate::hash::SplitMix64 as Rng;

fn env_u64(var: &str) -> Option<u64> {
    std::env::var(var).ok()?.trim().parse().ok()
}

/// The seed for one randomized test: `ACCRETE_LAWS_SEED` if set, else
/// fresh. Printed, so a failure can be replayed.
pub(crate) fn seed(test: &str) -> u64 {
    let seed = env_u64("ACCRETE_LAWS_SEED").unwrap_or_else(|| RandomState::new().hash_one(test));
    eprintln!("{test}: seed {seed} (replay with ACCRETE_LAWS_SEED={seed})");
    seed
}

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

#[cfg(feature = "laws")]
pub(crate) use property::{Small, check, verdict};

#[cfg(feature = "laws")]
mod property {
    use std::fmt::Debug;

    use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult, Testable};

    /// Checks a semantic property with quickcheck, its generator seeded by
    /// [`seed`](super::seed) (so the whole run replays), at generator size
    /// 100 unless `QUICKCHECK_GENERATOR_SIZE` says otherwise.
    pub(crate) fn check<F: Testable>(test: &str, property: F) {
        let size = super::env_u64("QUICKCHECK_GENERATOR_SIZE").map_or(100, |s| s as usize);
        let mut runner = QuickCheck::new().rng(Gen::from_size_and_seed(size, super::seed(test)));
        if let Some(tests) = super::env_u64("ACCRETE_LAWS_TESTS") {
            runner = runner.tests(tests);
        }
        runner.quickcheck(property);
    }

    /// Passes, or fails showing the arguments (quickcheck 1.1 only prints
    /// the arguments of failures it managed to shrink).
    pub(crate) fn verdict(ok: bool, arguments: impl Debug) -> TestResult {
        if ok {
            TestResult::passed()
        } else {
            TestResult::error(format!("arguments: {arguments:#?}"))
        }
    }

    /// An element type with six values, so that sets and maps collide.
    #[derive(
        Debug,
        Clone,
        Copy,
        PartialEq,
        Eq,
        PartialOrd,
        Ord,
        Hash,
        serde::Serialize,
        serde::Deserialize,
    )]
    pub(crate) struct Small(pub(crate) u8);

    impl Arbitrary for Small {
        fn arbitrary(g: &mut Gen) -> Self {
            Small(u8::arbitrary(g) % 6)
        }
        fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
            Box::new(self.0.shrink().map(Small))
        }
    }
}
