//! [`Average`]: the arithmetic mean, as a sum and a count.

use crate::{Commutative, Monoid, NonFinite, Semigroup};

/// The arithmetic mean of the values combined, kept as their sum and count.
///
/// - identity: no values (`sum = 0`, `count = 0`); [`mean`](Average::mean)
///   is then `None`;
/// - laws: commutative (exactly: IEEE addition is commutative), identity
///   exact; **associative only approximately**: floating-point addition
///   rounds, so `(a ⊕ b) ⊕ c` and `a ⊕ (b ⊕ c)` can differ in the last bits
///   of the sum. The law harness compares with [`approx_eq`](Average::approx_eq);
/// - not idempotent: the runtime applies each event's effect exactly once;
/// - error bound: whatever the merge order, the computed sum of `n` parts
///   differs from the exact sum by at most `(n − 1)·2⁻⁵³·Σ|partᵢ|`, so the
///   mean is accurate to about `n·10⁻¹⁶` relative to the mean *magnitude*
///   of the values. When the values cancel (a mean near zero of large
///   values of both signs) that is a large error *relative to the mean*;
/// - the count wraps at 2⁶⁴ (unreachable in practice);
/// - non-finite values: [`of`](Average::of) accepts any `f64` and a NaN or
///   an infinity propagates as in `f64` arithmetic, poisoning the state for
///   good (and JSON cannot store it). Use [`try_of`](Average::try_of) to
///   reject them at the boundary.
///
/// MongoDB pushdown: `$inc` on both fields.
///
/// # Examples
///
/// ```
/// use accrete_monoids::{Average, Monoid, Semigroup};
///
/// let mut latency = Average::of(120.0);
/// latency.combine(&Average::of(80.0));
/// latency.combine(&Average::weighted(100.0, 2)); // 100.0, seen twice
/// assert_eq!(latency.count(), 4);
/// assert_eq!(latency.mean(), Some(100.0));
///
/// assert_eq!(Average::identity().mean(), None);
/// assert!(Average::try_of(f64::NAN).is_err());
/// ```
#[derive(Debug, Clone, Copy, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Average {
    sum: f64,
    count: u64,
}

/// Equal sums and counts, where a NaN sum equals a NaN sum: a poisoned
/// state is equal to itself, so the identity law holds for it
/// (`identity ⊕ a == a`) and a write that leaves it as it was is not a
/// change. (The `sketches` fuzz target found a stored NaN sum that changed
/// when combined into the identity.)
impl PartialEq for Average {
    fn eq(&self, other: &Self) -> bool {
        self.count == other.count
            && (self.sum == other.sum || (self.sum.is_nan() && other.sum.is_nan()))
    }
}

impl Average {
    /// The average of one value.
    #[inline]
    pub const fn of(x: f64) -> Self {
        Average { sum: x, count: 1 }
    }

    /// The average of one value, rejecting NaN and infinities.
    ///
    /// # Errors
    ///
    /// [`NonFinite`] if `x` is NaN or infinite.
    #[inline]
    pub fn try_of(x: f64) -> Result<Self, NonFinite> {
        NonFinite::check(x).map(Average::of)
    }

    /// The value `x` seen `n` times (`n = 0` gives the identity).
    #[inline]
    pub fn weighted(x: f64, n: u64) -> Self {
        if n == 0 {
            Average::identity()
        } else {
            Average {
                sum: x * n as f64,
                count: n,
            }
        }
    }

    /// The mean, or `None` if no value was combined.
    #[inline]
    pub fn mean(&self) -> Option<f64> {
        (self.count != 0).then(|| self.sum / self.count as f64)
    }

    /// How many values were combined.
    #[inline]
    pub const fn count(&self) -> u64 {
        self.count
    }

    /// The sum of the values combined.
    #[inline]
    pub const fn sum(&self) -> f64 {
        self.sum
    }

    /// Equality up to floating-point rounding: the counts are equal and the
    /// sums differ by at most `rel_tol` times the larger magnitude.
    ///
    /// This is the equivalence the law harness uses for `Average`
    /// (associativity holds only up to rounding). It is reflexive and
    /// symmetric but not transitive. NaN sums never compare equal.
    ///
    /// ```
    /// use accrete_monoids::{Average, Monoid};
    ///
    /// let once = Average::weighted(0.1, 3);
    /// let folded = Average::fold([Average::of(0.1), Average::of(0.1), Average::of(0.1)]);
    /// assert!(once.approx_eq(&folded, 1e-12));
    /// assert!(!once.approx_eq(&Average::weighted(0.1, 4), 1e-12));
    /// ```
    pub fn approx_eq(&self, other: &Self, rel_tol: f64) -> bool {
        self.count == other.count && close(self.sum, other.sum, rel_tol)
    }
}

/// `a` and `b` are equal, or differ by at most `rel_tol` times the larger
/// magnitude.
fn close(a: f64, b: f64, rel_tol: f64) -> bool {
    a == b || (a - b).abs() <= rel_tol * a.abs().max(b.abs())
}

impl Semigroup for Average {
    #[inline]
    fn combine(&mut self, other: &Self) {
        // Into the identity, the other value exactly: `0.0 + x` is not `x`
        // bit for bit when `x` is `-0.0` or a signalling NaN (quieted).
        if self.is_identity() {
            *self = *other;
            return;
        }
        self.sum += other.sum;
        self.count = self.count.wrapping_add(other.count);
    }

    #[inline]
    fn combine_all<I>(&mut self, items: I)
    where
        I: IntoIterator<Item = Self>,
    {
        let (mut sum, mut count) = (self.sum, self.count);
        for item in items {
            sum += item.sum;
            count = count.wrapping_add(item.count);
        }
        *self = Average { sum, count };
    }
}

impl Monoid for Average {
    #[inline]
    fn identity() -> Self {
        Average { sum: 0.0, count: 0 }
    }

    #[inline]
    fn is_identity(&self) -> bool {
        self.count == 0 && self.sum == 0.0
    }
}

impl Commutative for Average {}

#[cfg(feature = "laws")]
impl quickcheck::Arbitrary for Average {
    /// The identity, one value, or one value seen up to 2¹⁶ times; values
    /// within ±10⁹, so the sums are finite and tolerance checks meaningful.
    fn arbitrary(g: &mut quickcheck::Gen) -> Self {
        let x = moderate_float(g);
        match u8::arbitrary(g) % 8 {
            0 => Average::identity(),
            1..=4 => Average::of(x),
            _ => Average::weighted(x, u64::from(u16::arbitrary(g))),
        }
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        if self.is_identity() {
            quickcheck::empty_shrinker()
        } else {
            let one = self.mean().map_or(Average::identity(), Average::of);
            let smaller = [Average::identity(), one];
            let me = *self;
            Box::new(smaller.into_iter().filter(move |s| *s != me))
        }
    }
}

/// Uniform within ±10⁹ (quickcheck's own `f64` includes NaN and infinities).
#[cfg(feature = "laws")]
fn moderate_float(g: &mut quickcheck::Gen) -> f64 {
    use quickcheck::Arbitrary;
    let unit = (u64::arbitrary(g) >> 11) as f64 / (1_u64 << 53) as f64;
    (2.0 * unit - 1.0) * 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_average_equals_itself_and_keeps_the_identity_law() {
        let nan = Average::of(f64::NAN);
        assert_eq!(nan, nan);
        assert_eq!(Average::identity().combined(&nan), nan);
        assert_ne!(nan, Average::of(1.0));
        assert_ne!(Average::of(f64::NAN), Average::weighted(f64::NAN, 2));
        // Bit for bit, too: a signalling NaN and a negative zero survive.
        let signalling = Average::of(f64::from_bits(0xFFF7_FF01_FFFF_FE02));
        let into = Average::identity().combined(&signalling);
        assert_eq!(into.sum().to_bits(), signalling.sum().to_bits());
        let negative_zero = Average::identity().combined(&Average::of(-0.0));
        assert!(negative_zero.sum().is_sign_negative());
    }

    #[test]
    fn mean_and_count() {
        let avg = Average::fold([
            Average::of(1.0),
            Average::of(2.0),
            Average::weighted(4.5, 2),
        ]);
        assert_eq!(avg.count(), 4);
        assert_eq!(avg.sum(), 12.0);
        assert_eq!(avg.mean(), Some(3.0));
        assert_eq!(Average::default(), Average::identity());
        assert_eq!(Average::weighted(f64::INFINITY, 0), Average::identity());
        assert!(Average::identity().is_identity());
        assert!(!Average::of(0.0).is_identity());
    }

    #[test]
    fn non_finite_is_rejected_by_try_of_and_propagates_through_of() {
        assert_eq!(Average::try_of(2.5), Ok(Average::of(2.5)));
        assert!(Average::try_of(f64::NAN).is_err());
        assert!(Average::try_of(f64::NEG_INFINITY).is_err());
        let poisoned = Average::of(1.0).combined(&Average::of(f64::NAN));
        assert!(poisoned.mean().is_some_and(f64::is_nan));
        assert!(!poisoned.approx_eq(&poisoned, 1.0));
    }

    #[test]
    fn combine_all_equals_fold() {
        let items: Vec<_> = (0..100).map(|i| Average::of(f64::from(i) * 0.1)).collect();
        let mut fast = Average::of(3.0);
        fast.combine_all(items.clone());
        let mut slow = Average::of(3.0);
        for item in &items {
            slow.combine(item);
        }
        assert_eq!(fast, slow);
    }

    #[test]
    fn float_rounding_breaks_exact_associativity() {
        let (a, b, c) = (Average::of(0.1), Average::of(0.2), Average::of(0.3));
        let left = a.combined(&b).combined(&c);
        let right = a.combined(&b.combined(&c));
        assert_ne!(
            left, right,
            "0.1 + 0.2 + 0.3 rounds differently by association"
        );
        assert!(left.approx_eq(&right, 1e-15));
    }
}

#[cfg(all(test, feature = "laws"))]
mod laws {
    use super::*;
    use crate::laws::assert_round_trip;
    use crate::test_util::check;

    // The laws: `average` in tests/laws.rs, within 1e-9, and exactly where
    // they hold exactly (`exact_laws_of_approximate_types`).

    #[test]
    fn serde_round_trips() {
        let v = Average::weighted(-12.25, 1 << 61);
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"sum":-2.824657686286775e+19,"count":2305843009213693952}"#
        );
        assert_round_trip(&v);
    }

    #[test]
    fn arbitrary_stays_bson_safe() {
        fn prop(a: Average) -> bool {
            a.count() < 1 << 62 && a.sum().is_finite() && a.sum().abs() <= 1e9 * 65_536.0
        }
        check("average::arbitrary", prop as fn(_) -> bool);
    }
}
