//! [`Moments`]: count, mean and variance, merged stably.

use std::cmp::Ordering;

use crate::{Commutative, Monoid, NonFinite, Semigroup};

/// Count, mean and variance of the values combined, merged with the
/// numerically stable update of Chan, Golub & LeVeque (1979), the parallel
/// form of Welford's algorithm.
///
/// The state is `count`, `mean` and `m2 = Σ(xᵢ − mean)²`. Combining two
/// states with `δ = mean_b − mean_a` gives
///
/// ```text
/// count = n_a + n_b
/// mean  = mean_a + δ·n_b/count
/// m2    = m2_a + m2_b + δ²·n_a·n_b/count
/// ```
///
/// Unlike the textbook `Σx²/n − mean²`, which cancels catastrophically when
/// the mean is large relative to the spread (timestamps, prices around 10⁹:
/// the answer can be negative), this only ever subtracts means and adds
/// non-negative terms.
///
/// - identity: no values (`count = 0`); [`mean`](Moments::mean) and the
///   variances are then `None`;
/// - laws: commutative *exactly* (the two operands are put in a canonical
///   order before merging, so `a ⊕ b` and `b ⊕ a` are bit-for-bit equal),
///   identity exact; **associative only approximately** (floating-point
///   rounding). The law harness compares with
///   [`approx_eq`](Moments::approx_eq);
/// - not idempotent: the runtime applies each event's effect exactly once;
/// - error bound: the mean is accurate to a few units of rounding relative
///   to the largest magnitude of the values; the variance to a few units of
///   rounding times its condition number `κ = (|mean| + σ)/σ` (so merging
///   is as accurate as one-pass Welford, and far better than `Σx²` when
///   `κ` is large);
/// - the count wraps at 2⁶⁴ (unreachable in practice);
/// - non-finite values: [`of`](Moments::of) accepts any `f64` and a NaN or
///   an infinity propagates as in `f64` arithmetic. Use
///   [`try_of`](Moments::try_of) to reject them at the boundary.
///
/// # Examples
///
/// ```
/// use accrete_monoids::{Moments, Monoid, Semigroup};
///
/// let mut left = Moments::identity();
/// for x in [2.0, 4.0, 4.0, 4.0] {
///     left.insert(x);
/// }
/// let right = Moments::fold([5.0, 5.0, 7.0, 9.0].map(Moments::of));
///
/// let all = left.combined(&right);
/// assert_eq!(all.count(), 8);
/// assert_eq!(all.mean(), Some(5.0));
/// assert_eq!(all.variance(), Some(4.0)); // population
/// assert_eq!(all.std_dev(), Some(2.0));
/// assert_eq!(all.sample_variance(), Some(32.0 / 7.0));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "MomentsFields"))]
pub struct Moments {
    count: u64,
    mean: f64,
    m2: f64,
}

/// The persisted fields of [`Moments`], checked before they become one: a
/// count of 0 with a nonzero mean or `m2` is no value's (`combine` would
/// take it for the identity without it being one; the fuzzer found it).
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
#[serde(rename = "Moments")]
struct MomentsFields {
    count: u64,
    mean: f64,
    m2: f64,
}

#[cfg(feature = "serde")]
impl TryFrom<MomentsFields> for Moments {
    type Error = &'static str;

    fn try_from(f: MomentsFields) -> Result<Self, Self::Error> {
        if f.count == 0 && (f.mean != 0.0 || f.m2 != 0.0) {
            return Err("Moments with a count of 0 must have a mean and m2 of 0");
        }
        Ok(Moments {
            count: f.count,
            mean: f.mean,
            m2: f.m2,
        })
    }
}

impl Moments {
    /// The moments of one value.
    #[inline]
    pub const fn of(x: f64) -> Self {
        Moments {
            count: 1,
            mean: x,
            m2: 0.0,
        }
    }

    /// The moments of one value, rejecting NaN and infinities.
    ///
    /// # Errors
    ///
    /// [`NonFinite`] if `x` is NaN or infinite.
    #[inline]
    pub fn try_of(x: f64) -> Result<Self, NonFinite> {
        NonFinite::check(x).map(Moments::of)
    }

    /// Adds one value: `self.combine(&Moments::of(x))` (Welford's update).
    #[inline]
    pub fn insert(&mut self, x: f64) {
        self.combine(&Moments::of(x));
    }

    /// How many values were combined.
    #[inline]
    pub const fn count(&self) -> u64 {
        self.count
    }

    /// The mean, or `None` if no value was combined.
    #[inline]
    pub fn mean(&self) -> Option<f64> {
        (self.count != 0).then_some(self.mean)
    }

    /// The population variance `Σ(xᵢ − mean)²/n`, or `None` if no value was
    /// combined.
    #[inline]
    pub fn variance(&self) -> Option<f64> {
        (self.count != 0).then(|| self.m2 / self.count as f64)
    }

    /// The sample variance `Σ(xᵢ − mean)²/(n − 1)` (Bessel's correction), or
    /// `None` if fewer than two values were combined.
    #[inline]
    pub fn sample_variance(&self) -> Option<f64> {
        (self.count > 1).then(|| self.m2 / (self.count - 1) as f64)
    }

    /// The population standard deviation: the square root of
    /// [`variance`](Moments::variance).
    #[inline]
    pub fn std_dev(&self) -> Option<f64> {
        self.variance().map(f64::sqrt)
    }

    /// The sample standard deviation: the square root of
    /// [`sample_variance`](Moments::sample_variance).
    #[inline]
    pub fn sample_std_dev(&self) -> Option<f64> {
        self.sample_variance().map(f64::sqrt)
    }

    /// Equality up to floating-point rounding, scaled by how well the
    /// values determine each quantity: the counts are equal, and
    ///
    /// - the means differ by at most `rel_tol·S`, where
    ///   `S = max|mean| + √m2` bounds the magnitude of every value combined;
    /// - the `m2`s differ by at most `rel_tol·m2·(1 + κ)`, where
    ///   `κ = S/σ` is the condition number of the variance.
    ///
    /// With `rel_tol` standing in for the unit roundoff, these are the
    /// error bounds of the merge, so this is the equivalence the law
    /// harness uses for `Moments`. It is reflexive and symmetric, not
    /// transitive; states holding NaN never compare equal.
    ///
    /// ```
    /// use accrete_monoids::{Moments, Monoid, Semigroup};
    ///
    /// let xs = [0.1, 0.2, 0.3, 0.4].map(Moments::of);
    /// let left = xs[0].combined(&xs[1]).combined(&xs[2].combined(&xs[3]));
    /// let right = Moments::fold(xs);
    /// assert!(left.approx_eq(&right, 1e-12));
    /// assert!(!left.approx_eq(&Moments::of(0.25), 1e-12));
    /// ```
    pub fn approx_eq(&self, other: &Self, rel_tol: f64) -> bool {
        if self.count != other.count {
            return false;
        }
        if self == other {
            return true;
        }
        let finite = [self.mean, self.m2, other.mean, other.m2]
            .iter()
            .all(|v| v.is_finite());
        if !finite {
            return false;
        }
        let m2 = self.m2.max(other.m2).max(0.0);
        let scale = self.mean.abs().max(other.mean.abs()) + m2.sqrt();
        let n = self.count as f64;
        (self.mean - other.mean).abs() <= rel_tol * scale
            && (self.m2 - other.m2).abs() <= rel_tol * (m2 + scale * (n * m2).sqrt())
    }

    /// Whether `self` goes first in the canonical merge order: the larger
    /// count first (the more accurate base for the update), ties broken by
    /// the bits of the mean and `m2`. Merging in a fixed order makes
    /// `combine` exactly commutative.
    fn goes_first(&self, other: &Self) -> bool {
        other
            .count
            .cmp(&self.count)
            .then_with(|| self.mean.total_cmp(&other.mean))
            .then_with(|| self.m2.total_cmp(&other.m2))
            != Ordering::Greater
    }

    /// Chan–Golub–LeVeque merge of two non-empty states.
    fn merge(a: &Self, b: &Self) -> Self {
        let count = a.count.wrapping_add(b.count);
        let delta = b.mean - a.mean;
        let delta_wb = delta * (b.count as f64 / count as f64);
        Moments {
            count,
            mean: a.mean + delta_wb,
            m2: (a.m2 + b.m2) + delta * delta_wb * a.count as f64,
        }
    }
}

impl Semigroup for Moments {
    #[inline]
    fn combine(&mut self, other: &Self) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *other;
            return;
        }
        *self = if self.goes_first(other) {
            Moments::merge(self, other)
        } else {
            Moments::merge(other, self)
        };
    }
}

impl Monoid for Moments {
    #[inline]
    fn identity() -> Self {
        Moments {
            count: 0,
            mean: 0.0,
            m2: 0.0,
        }
    }

    #[inline]
    fn is_identity(&self) -> bool {
        self.count == 0
    }
}

impl Commutative for Moments {}

#[cfg(feature = "laws")]
impl quickcheck::Arbitrary for Moments {
    /// The identity, one value, or a summary of up to 2⁴⁰ values; means
    /// within ±10⁹ and standard deviations from 10⁻³ to 10⁹.
    fn arbitrary(g: &mut quickcheck::Gen) -> Self {
        let mean = unit_float(g).mul_add(2e9, -1e9);
        match u8::arbitrary(g) % 8 {
            0 => Moments::identity(),
            1..=3 => Moments::of(mean),
            _ => {
                let count = 2 + (u64::arbitrary(g) >> 24);
                let sigma = 10_f64.powf(unit_float(g).mul_add(12.0, -3.0));
                Moments {
                    count,
                    mean,
                    m2: count as f64 * sigma * sigma,
                }
            }
        }
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        if self.is_identity() {
            quickcheck::empty_shrinker()
        } else {
            let smaller = [Moments::identity(), Moments::of(self.mean)];
            let me = *self;
            Box::new(smaller.into_iter().filter(move |s| *s != me))
        }
    }
}

/// Uniform in `[0, 1)` (quickcheck's own `f64` includes NaN and infinities).
#[cfg(feature = "laws")]
fn unit_float(g: &mut quickcheck::Gen) -> f64 {
    use quickcheck::Arbitrary as _;
    (u64::arbitrary(g) >> 11) as f64 / (1_u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::Rng;

    /// One-pass Welford, written independently of `Moments`: the reference.
    fn welford(xs: &[f64]) -> (u64, f64, f64) {
        let (mut n, mut mean, mut m2) = (0_u64, 0.0_f64, 0.0_f64);
        for &x in xs {
            n += 1;
            let delta = x - mean;
            mean += delta / n as f64;
            m2 += delta * (x - mean);
        }
        (n, mean, m2 / n as f64)
    }

    fn rel_err(got: f64, want: f64) -> f64 {
        ((got - want) / want).abs()
    }

    #[test]
    fn textbook_values() {
        let m = Moments::fold([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0].map(Moments::of));
        assert_eq!(m.count(), 8);
        assert_eq!(m.mean(), Some(5.0));
        assert_eq!(m.variance(), Some(4.0));
        assert_eq!(m.std_dev(), Some(2.0));
        assert_eq!(m.sample_variance(), Some(32.0 / 7.0));
        assert_eq!(m.sample_std_dev(), Some((32.0_f64 / 7.0).sqrt()));

        let one = Moments::of(3.5);
        assert_eq!(
            (one.mean(), one.variance(), one.sample_variance()),
            (Some(3.5), Some(0.0), None)
        );
        let none = Moments::identity();
        assert_eq!(
            (none.mean(), none.variance(), none.std_dev()),
            (None, None, None)
        );
        assert_eq!(Moments::default(), none);
        assert!(none.is_identity() && !one.is_identity());
        assert!(Moments::try_of(f64::INFINITY).is_err());
        assert_eq!(Moments::try_of(1.0), Ok(Moments::of(1.0)));
    }

    #[test]
    fn insert_equals_combine_of() {
        let mut inserted = Moments::identity();
        let mut combined = Moments::identity();
        for x in [3.0, -1.5, 1e6, 0.25] {
            inserted.insert(x);
            combined.combine(&Moments::of(x));
        }
        assert_eq!(inserted, combined);
    }

    #[test]
    fn merge_order_is_canonical() {
        let a = Moments::fold([1.0, 2.0, 3.0].map(Moments::of));
        let b = Moments::fold([0.1, 0.7].map(Moments::of));
        let c = Moments::fold([0.3, 0.9].map(Moments::of));
        assert_eq!(a.combined(&b), b.combined(&a));
        assert_eq!(b.combined(&c), c.combined(&b)); // equal counts
    }

    /// Values around 10⁹ with a spread of a few units: `Σx²/n − mean²`
    /// loses every significant digit, the merge keeps them.
    #[test]
    fn stable_for_large_mean_small_variance() {
        let mut rng = Rng::for_test("moments::stable_for_large_mean_small_variance");
        const N: usize = 100_000;
        // xᵢ = 10⁹ + kᵢ/8: exactly representable, and the exact variance
        // follows from the integers kᵢ.
        let ks: Vec<i64> = (0..N).map(|_| rng.below(81) as i64 - 40).collect();
        let xs: Vec<f64> = ks.iter().map(|&k| 1e9 + k as f64 / 8.0).collect();
        let (sum_k, sum_k2) = ks.iter().fold((0_i128, 0_i128), |(s, s2), &k| {
            (s + i128::from(k), s2 + i128::from(k) * i128::from(k))
        });
        let n = N as i128;
        let exact_variance = (n * sum_k2 - sum_k * sum_k) as f64 / (n * n * 64) as f64;

        let naive = {
            let (s, s2) = xs.iter().fold((0.0, 0.0), |(s, s2), x| (s + x, s2 + x * x));
            s2 / N as f64 - (s / N as f64).powi(2)
        };
        assert!(
            rel_err(naive, exact_variance) > 0.1,
            "naive Σx² is expected to fail here: {naive} vs {exact_variance}"
        );

        let one_pass = Moments::fold(xs.iter().copied().map(Moments::of));
        let chunked = Moments::fold(
            xs.chunks(1000)
                .map(|c| Moments::fold(c.iter().copied().map(Moments::of))),
        );
        for (name, m) in [("one pass", one_pass), ("chunked", chunked)] {
            let err = rel_err(m.variance().unwrap(), exact_variance);
            eprintln!(
                "{name}: variance {:?}, exact {exact_variance}, relative error {err:e}",
                m.variance()
            );
            assert!(err < 1e-6, "{name}: relative error {err:e}");
            assert_eq!(m.count(), N as u64);
        }
    }

    /// Merge `parts` pairwise in a random binary tree.
    fn random_tree(mut parts: Vec<Moments>, rng: &mut Rng) -> Moments {
        while parts.len() > 1 {
            let i = rng.below(parts.len() as u64) as usize;
            let a = parts.swap_remove(i);
            let j = rng.below(parts.len() as u64) as usize;
            parts[j].combine(&a);
        }
        parts.pop().unwrap_or_default()
    }

    fn random_chunks(xs: &[f64], rng: &mut Rng) -> Vec<Moments> {
        let mut parts = Vec::new();
        let mut rest = xs;
        while !rest.is_empty() {
            let take = (1 + rng.below(300) as usize).min(rest.len());
            let (chunk, tail) = rest.split_at(take);
            let mut m = Moments::identity();
            chunk.iter().for_each(|&x| m.insert(x));
            parts.push(m);
            rest = tail;
        }
        parts
    }

    #[test]
    fn random_trees_agree_with_one_pass_welford() {
        let mut rng = Rng::for_test("moments::random_trees_agree_with_one_pass_welford");
        for round in 0..20 {
            let n = 1 + rng.below(20_000) as usize;
            let xs: Vec<f64> = (0..n)
                .map(|_| match rng.below(3) {
                    0 => 100.0 + 15.0 * rng.normal(),
                    1 => rng.normal().mul_add(2.0, 3.0).exp(),
                    _ => rng.uniform(-1e3, 1e3),
                })
                .collect();
            let (count, mean, variance) = welford(&xs);
            let merged = random_tree(random_chunks(&xs, &mut rng), &mut rng);
            assert_eq!(merged.count(), count);
            let mean_err = rel_err(merged.mean().unwrap(), mean);
            let var_err = if n > 1 {
                rel_err(merged.variance().unwrap(), variance)
            } else {
                0.0
            };
            assert!(
                mean_err < 1e-9 && var_err < 1e-9,
                "round {round}: n {n}, mean {mean_err:e}, variance {var_err:e}"
            );
        }
    }

    #[test]
    fn random_trees_agree_with_welford_near_1e9() {
        let mut rng = Rng::for_test("moments::random_trees_agree_with_welford_near_1e9");
        let xs: Vec<f64> = (0..50_000).map(|_| 1e9 + rng.normal()).collect();
        let (_, mean, variance) = welford(&xs);
        let mut worst = 0.0_f64;
        for _ in 0..10 {
            let merged = random_tree(random_chunks(&xs, &mut rng), &mut rng);
            assert!(rel_err(merged.mean().unwrap(), mean) < 1e-12);
            worst = worst.max(rel_err(merged.variance().unwrap(), variance));
        }
        eprintln!("near 1e9: worst relative variance difference from Welford {worst:e}");
        // κ ≈ 10⁹: both are accurate to ~κ·2⁻⁵³ ≈ 10⁻⁷, nowhere near 10⁻⁹.
        assert!(worst < 1e-6, "{worst:e}");
    }
}

#[cfg(all(test, feature = "laws"))]
mod laws {
    use super::*;
    use crate::laws::assert_round_trip;
    use crate::test_util::check;

    // The laws: `moments` in tests/laws.rs, within 1e-9, and exactly where
    // they hold exactly (`exact_laws_of_approximate_types`).

    #[test]
    fn serde_round_trips() {
        let mut v = Moments::fold([1.5, -2.25, 1e9 + 0.1].map(Moments::of));
        v.combine(&Moments {
            count: (1 << 62) - 1,
            mean: 3.0,
            m2: 1e20,
        });
        let json = serde_json::to_string(&v).unwrap();
        assert!(
            json.starts_with(r#"{"count":4611686018427387906,"mean":"#),
            "{json}"
        );
        assert_round_trip(&v);
    }

    #[test]
    fn arbitrary_stays_bson_safe() {
        fn prop(a: Moments) -> bool {
            a.count() < 1 << 62 && a.mean.is_finite() && a.m2.is_finite() && a.mean.abs() <= 1e9
        }
        check("moments::arbitrary", prop as fn(_) -> bool);
    }
}
