//! [`DdSketch`]: quantiles with a relative-error guarantee, and the
//! [`NonFinite`] error for NaN and infinite inputs.

use std::fmt;

use crate::{Commutative, Monoid, Semigroup};

/// A NaN or an infinity was given where a finite number is required.
///
/// Returned by [`DdSketch::insert`], [`Average::try_of`](crate::Average::try_of)
/// and [`Moments::try_of`](crate::Moments::try_of).
///
/// # Examples
///
/// ```
/// use accrete_monoids::DdSketch;
///
/// let mut sketch: DdSketch = DdSketch::default();
/// let err = sketch.insert(f64::NAN).unwrap_err();
/// assert!(err.value().is_nan());
/// assert_eq!(err.to_string(), "expected a finite number, got NaN");
/// assert_eq!(sketch.count(), 0); // nothing was inserted
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NonFinite {
    value: f64,
}

impl NonFinite {
    /// `Ok(x)` if `x` is finite.
    #[inline]
    pub(crate) fn check(x: f64) -> Result<f64, NonFinite> {
        if x.is_finite() {
            Ok(x)
        } else {
            Err(NonFinite { value: x })
        }
    }

    /// The rejected value: NaN, `+∞` or `−∞`.
    #[inline]
    pub const fn value(&self) -> f64 {
        self.value
    }
}

impl fmt::Display for NonFinite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expected a finite number, got {}", self.value)
    }
}

impl std::error::Error for NonFinite {}

/// A bucket: the index of `(γ^(key−1), γ^key]` and how many values fell in it.
type Bucket = (i32, u64);

/// A quantile sketch with relative accuracy α (DDSketch: Masson, Rim & Lee,
/// *DDSketch: A Fast and Fully-Mergeable Quantile Sketch with
/// Relative-Error Guarantees*, VLDB 2019).
///
/// `ALPHA_PERMILLE` is α in thousandths (default 10: α = 1%), `MAX_BUCKETS`
/// bounds the number of buckets (default 2048). Both are part of the type,
/// so any two sketches of one type combine, and
/// [`identity`](Monoid::identity) needs no arguments. Write `DdSketch` for
/// the defaults (`let s: DdSketch = DdSketch::default();`).
///
/// An α outside `(0, 1)` or a bucket limit of zero does not compile:
///
/// ```compile_fail,E0080
/// let sketch: accrete_monoids::DdSketch<1000> = Default::default();
/// ```
///
/// # How it works
///
/// With `γ = (1 + α)/(1 − α)`, a value `x > 0` falls in bucket
/// `k = ⌈log_γ x⌉`, which covers `(γ^(k−1), γ^k]` and reports
/// `(1 − α)·γ^k`: every value in the bucket is within relative error α of
/// that. Negative values go to buckets of `|x|` of their own, zeros (and
/// `−0.0`) to a zero count. Buckets are a sparse sorted list of
/// `(i32 key, u64 count)`, so the sketch stays small: a range of values
/// spanning a factor `R` needs about `ln R / 2α` buckets (α = 1%: from
/// 1 ns to 1 day is about 1,600). It also keeps the exact `count`, `min`
/// and `max`.
///
/// # Guarantee
///
/// The q-quantile is the value of rank `⌊q·(n − 1)⌋` (0-based) among the
/// `n` values in sorted order: the *lower* quantile, so `q = 0` is the
/// minimum, `q = 1` the maximum, and every answer is a rank of the data,
/// never an interpolation. [`quantile`](DdSketch::quantile) returns `x̂`
/// with `|x̂ − x| ≤ α·|x|` for the true q-quantile `x` (exactly `x` for
/// zeros and for `q = 0` and `q = 1`), up to floating-point rounding
/// (about 10⁻¹² relative; more for subnormal values below 2.2·10⁻³⁰⁸),
/// unless the sketch collapsed (below).
///
/// # Collapsing
///
/// When a sketch would hold more than `MAX_BUCKETS` buckets (counting the
/// zero count as one), the buckets of the *lowest values* are merged into
/// the lowest bucket kept. Quantiles whose rank falls in that bucket lose
/// the guarantee (they still lie within `[min, max]`); all higher quantiles
/// keep it. Collapsing keeps every law exact: the kept buckets are always
/// the `MAX_BUCKETS` highest of all the values ever inserted, whatever the
/// order of inserts and merges, so the state is the same as if everything
/// had been inserted into one sketch. Reading a sketch with more buckets
/// than the type allows (a smaller `MAX_BUCKETS` than it was written with)
/// collapses it in the same way.
///
/// # Laws
///
/// - identity: the empty sketch (`count = 0`);
/// - commutative and associative **exactly**: all state is integer counts
///   plus an exact `min` and `max` (there is deliberately no floating-point
///   sum, which would only be approximately associative);
/// - not idempotent: each value counts once per insert.
///
/// # Persisted form
///
/// `{alpha_permille, count, min, max, zero, negative, positive}`, where
/// `negative` and `positive` are lists of `[key, count]`. Reading checks
/// that `alpha_permille` matches the type, that the buckets are sorted with
/// positive counts adding up to `count`, and that `min`/`max` are finite.
///
/// # Examples
///
/// ```
/// use accrete_monoids::{DdSketch, NonFinite, Semigroup};
///
/// # fn main() -> Result<(), NonFinite> {
/// // Two processes each sketch their share of the latencies (ms)…
/// let mut east: DdSketch = DdSketch::default();
/// let mut west: DdSketch = DdSketch::default();
/// for ms in 1..=500 {
///     east.insert(f64::from(ms))?;
///     west.insert(f64::from(ms + 500))?;
/// }
/// // …and the merged sketch answers for all of them.
/// let all = east.clone().combined(&west);
/// assert_eq!(all.count(), 1000);
/// let p99 = all.quantile(0.99).unwrap(); // exact: rank ⌊0.99·999⌋ = 989, the value 990
/// assert!((p99 - 990.0).abs() <= all.relative_accuracy() * 990.0);
/// assert_eq!(all.quantile(1.0), Some(1000.0));
/// assert_eq!((all.min(), all.max()), (Some(1.0), Some(1000.0)));
///
/// assert!(east.insert(f64::NAN).is_err()); // rejected, nothing inserted
/// assert_eq!(east.count(), 500);
///
/// // A coarser sketch: α = 5%.
/// let coarse = DdSketch::<50>::of(42.0)?;
/// assert_eq!(coarse.relative_accuracy(), 0.05);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct DdSketch<const ALPHA_PERMILLE: u16 = 10, const MAX_BUCKETS: usize = 2048> {
    /// How many values: `zero` plus every bucket count.
    count: u64,
    /// The least value (meaningless, and `0.0`, when `count == 0`).
    min: f64,
    /// The greatest value (meaningless, and `0.0`, when `count == 0`).
    max: f64,
    /// How many zeros.
    zero: u64,
    /// Buckets of `|x|` for negative `x`, sorted by key, counts positive.
    negative: Vec<Bucket>,
    /// Buckets of positive `x`, sorted by key, counts positive.
    positive: Vec<Bucket>,
}

impl<const ALPHA_PERMILLE: u16, const MAX_BUCKETS: usize> DdSketch<ALPHA_PERMILLE, MAX_BUCKETS> {
    /// α, checked at compile time to lie strictly between 0 and 1.
    const ALPHA: f64 = {
        assert!(
            ALPHA_PERMILLE >= 1 && ALPHA_PERMILLE <= 999,
            "DdSketch: ALPHA_PERMILLE must be in 1..=999"
        );
        assert!(MAX_BUCKETS >= 1, "DdSketch: MAX_BUCKETS must be at least 1");
        ALPHA_PERMILLE as f64 / 1000.0
    };

    /// The sketch of one value.
    ///
    /// # Errors
    ///
    /// [`NonFinite`] if `x` is NaN or infinite.
    pub fn of(x: f64) -> Result<Self, NonFinite> {
        let mut sketch = Self::identity();
        sketch.insert(x)?;
        Ok(sketch)
    }

    /// Adds one value.
    ///
    /// # Errors
    ///
    /// [`NonFinite`] if `x` is NaN or infinite; the sketch is unchanged.
    #[inline]
    pub fn insert(&mut self, x: f64) -> Result<(), NonFinite> {
        self.insert_n(x, 1)
    }

    /// Adds the value `x`, `n` times (`n = 0` changes nothing).
    ///
    /// # Errors
    ///
    /// [`NonFinite`] if `x` is NaN or infinite; the sketch is unchanged.
    pub fn insert_n(&mut self, x: f64, n: u64) -> Result<(), NonFinite> {
        let x = NonFinite::check(x)?;
        if n == 0 {
            return Ok(());
        }
        let x = if x == 0.0 { 0.0 } else { x }; // −0.0 is 0.0
        if self.count == 0 {
            self.min = x;
            self.max = x;
        } else {
            self.min = self.min.min(x);
            self.max = self.max.max(x);
        }
        self.count = self.count.wrapping_add(n);
        if x > 0.0 {
            add_to_bucket(&mut self.positive, Self::key(x), n);
        } else if x < 0.0 {
            add_to_bucket(&mut self.negative, Self::key(-x), n);
        } else {
            self.zero = self.zero.wrapping_add(n);
        }
        self.collapse();
        Ok(())
    }

    /// The q-quantile (`0 ≤ q ≤ 1`): an estimate `x̂` of the value `x` of
    /// rank `⌊q·(n − 1)⌋` in sorted order with `|x̂ − x| ≤ α·|x|` (see the
    /// [guarantee](DdSketch#guarantee)). `None` if the sketch is empty or
    /// `q` is outside `[0, 1]` or NaN.
    ///
    /// ```
    /// use accrete_monoids::DdSketch;
    ///
    /// let mut s: DdSketch = DdSketch::default();
    /// for x in [-3.0, 0.0, 0.0, 10.0, 1000.0] {
    ///     s.insert(x).unwrap();
    /// }
    /// assert_eq!(s.quantile(0.0), Some(-3.0)); // exact minimum
    /// assert_eq!(s.quantile(0.5), Some(0.0)); // rank 2: zeros are exact
    /// let x = s.quantile(0.75).unwrap(); // rank 3: 10.0
    /// assert!((x - 10.0).abs() <= 0.01 * 10.0);
    /// assert_eq!(s.quantile(1.5), None);
    /// ```
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let last = self.count - 1;
        let rank = ((q * last as f64).floor() as u64).min(last);
        if rank == 0 {
            return Some(self.min);
        }
        if rank == last {
            return Some(self.max);
        }
        let clamp = |v: f64| v.max(self.min).min(self.max);
        let mut seen = 0_u64;
        for &(key, n) in self.negative.iter().rev() {
            seen = seen.wrapping_add(n);
            if seen > rank {
                return Some(clamp(-Self::value(key)));
            }
        }
        seen = seen.wrapping_add(self.zero);
        if seen > rank {
            return Some(clamp(0.0));
        }
        for &(key, n) in &self.positive {
            seen = seen.wrapping_add(n);
            if seen > rank {
                return Some(clamp(Self::value(key)));
            }
        }
        Some(self.max)
    }

    /// How many values were inserted.
    #[inline]
    pub const fn count(&self) -> u64 {
        self.count
    }

    /// Whether no value was inserted.
    #[inline]
    pub const fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The least value inserted (exact), or `None` if empty.
    #[inline]
    pub fn min(&self) -> Option<f64> {
        (self.count != 0).then_some(self.min)
    }

    /// The greatest value inserted (exact), or `None` if empty.
    #[inline]
    pub fn max(&self) -> Option<f64> {
        (self.count != 0).then_some(self.max)
    }

    /// α, the relative accuracy: `ALPHA_PERMILLE / 1000`.
    #[inline]
    pub const fn relative_accuracy(&self) -> f64 {
        Self::ALPHA
    }

    /// How many buckets the sketch holds (the zero count is one when
    /// non-zero); at most `MAX_BUCKETS`. Persisted size is proportional.
    #[inline]
    pub fn bucket_count(&self) -> usize {
        self.negative.len() + self.positive.len() + usize::from(self.zero != 0)
    }

    /// `ln γ`, with `γ − 1 = 2α/(1 − α)`.
    #[inline]
    fn ln_gamma() -> f64 {
        (2.0 * Self::ALPHA / (1.0 - Self::ALPHA)).ln_1p()
    }

    /// The bucket of `x > 0`: `⌈log_γ x⌉`. Finite `x` gives keys well inside
    /// `i32` (about ±3.6·10⁵ at α = 0.1%).
    #[inline]
    fn key(x: f64) -> i32 {
        (x.ln() / Self::ln_gamma()).ceil() as i32
    }

    /// What bucket `key` reports: `(1 − α)·γ^key`, within α of every value
    /// in `(γ^(key−1), γ^key]`. May overflow to `∞` or underflow to `0` at
    /// the ends of the `f64` range; [`quantile`](DdSketch::quantile) clamps
    /// it to `[min, max]`.
    #[inline]
    fn value(key: i32) -> f64 {
        f64::from(key)
            .mul_add(Self::ln_gamma(), (-Self::ALPHA).ln_1p())
            .exp()
    }

    /// Merges the buckets of the lowest values into the lowest bucket kept
    /// until at most `MAX_BUCKETS` remain. Lawful: see the type docs.
    fn collapse(&mut self) {
        let Some(mut excess) = self.bucket_count().checked_sub(MAX_BUCKETS) else {
            return;
        };
        if excess == 0 {
            return;
        }
        let mut mass = 0_u64;
        // In ascending order of value: negatives by descending key (the end
        // of `negative`), the zeros, positives by ascending key.
        let take = excess.min(self.negative.len());
        let keep = self.negative.len() - take;
        mass = sum_counts(mass, &self.negative[keep..]);
        self.negative.truncate(keep);
        excess -= take;
        if excess > 0 && self.zero != 0 {
            mass = mass.wrapping_add(self.zero);
            self.zero = 0;
            excess -= 1;
        }
        let take = excess.min(self.positive.len());
        mass = sum_counts(mass, &self.positive[..take]);
        self.positive.drain(..take);

        if let Some(lowest) = self.negative.last_mut() {
            lowest.1 = lowest.1.wrapping_add(mass);
        } else if self.zero != 0 {
            self.zero = self.zero.wrapping_add(mass);
        } else if let Some(lowest) = self.positive.first_mut() {
            lowest.1 = lowest.1.wrapping_add(mass);
        } else {
            // Unreachable with MAX_BUCKETS ≥ 1; keep the mass rather than lose it.
            self.zero = mass;
        }
    }

    /// Adds everything but the buckets of `other` (both non-empty).
    fn combine_scalars(&mut self, other: &Self) {
        self.count = self.count.wrapping_add(other.count);
        self.zero = self.zero.wrapping_add(other.zero);
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }
}

fn sum_counts(start: u64, buckets: &[Bucket]) -> u64 {
    buckets.iter().fold(start, |acc, b| acc.wrapping_add(b.1))
}

fn add_to_bucket(buckets: &mut Vec<Bucket>, key: i32, n: u64) {
    match buckets.binary_search_by_key(&key, |b| b.0) {
        Ok(i) => buckets[i].1 = buckets[i].1.wrapping_add(n),
        Err(i) => buckets.insert(i, (key, n)),
    }
}

/// Adds the sorted buckets `from` into the sorted buckets `into`, in place:
/// no allocation when `into` already has every key (the steady state) or
/// the capacity for the new ones.
fn merge_buckets(into: &mut Vec<Bucket>, from: &[Bucket]) {
    // Pass 1: add the counts of shared keys, count the new keys.
    let mut missing = 0;
    let mut i = 0;
    for &(key, n) in from {
        while into.get(i).is_some_and(|b| b.0 < key) {
            i += 1;
        }
        match into.get_mut(i) {
            Some(b) if b.0 == key => b.1 = b.1.wrapping_add(n),
            _ => missing += 1,
        }
    }
    if missing == 0 {
        return;
    }
    // Pass 2: merge the new keys in from the back.
    let old = into.len();
    into.resize(old + missing, (0, 0));
    let (mut i, mut w) = (old, old + missing);
    for &(key, n) in from.iter().rev() {
        while i > 0 && into[i - 1].0 > key {
            into[w - 1] = into[i - 1];
            i -= 1;
            w -= 1;
        }
        if i > 0 && into[i - 1].0 == key {
            // Shared key, already added in pass 1.
            into[w - 1] = into[i - 1];
            i -= 1;
        } else {
            into[w - 1] = (key, n);
        }
        w -= 1;
    }
}

impl<const ALPHA_PERMILLE: u16, const MAX_BUCKETS: usize> Semigroup
    for DdSketch<ALPHA_PERMILLE, MAX_BUCKETS>
{
    fn combine(&mut self, other: &Self) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            // Field by field, so the bucket lists reuse their allocations.
            let DdSketch {
                count,
                min,
                max,
                zero,
                negative,
                positive,
            } = other;
            (self.count, self.min, self.max, self.zero) = (*count, *min, *max, *zero);
            self.negative.clone_from(negative);
            self.positive.clone_from(positive);
            return;
        }
        self.combine_scalars(other);
        merge_buckets(&mut self.negative, &other.negative);
        merge_buckets(&mut self.positive, &other.positive);
        self.collapse();
    }

    /// Merges the smaller bucket lists into the larger ones, reusing
    /// whichever allocation is bigger.
    fn combine_owned(&mut self, mut other: Self) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = other;
            return;
        }
        if other.negative.len() > self.negative.len() {
            std::mem::swap(&mut self.negative, &mut other.negative);
        }
        if other.positive.len() > self.positive.len() {
            std::mem::swap(&mut self.positive, &mut other.positive);
        }
        self.combine_scalars(&other);
        merge_buckets(&mut self.negative, &other.negative);
        merge_buckets(&mut self.positive, &other.positive);
        self.collapse();
    }
}

impl<const ALPHA_PERMILLE: u16, const MAX_BUCKETS: usize> Monoid
    for DdSketch<ALPHA_PERMILLE, MAX_BUCKETS>
{
    #[inline]
    fn identity() -> Self {
        let _checked = Self::ALPHA;
        DdSketch {
            count: 0,
            min: 0.0,
            max: 0.0,
            zero: 0,
            negative: Vec::new(),
            positive: Vec::new(),
        }
    }

    #[inline]
    fn is_identity(&self) -> bool {
        self.count == 0
    }
}

impl<const ALPHA_PERMILLE: u16, const MAX_BUCKETS: usize> Default
    for DdSketch<ALPHA_PERMILLE, MAX_BUCKETS>
{
    fn default() -> Self {
        Self::identity()
    }
}

impl<const ALPHA_PERMILLE: u16, const MAX_BUCKETS: usize> Commutative
    for DdSketch<ALPHA_PERMILLE, MAX_BUCKETS>
{
}

#[cfg(feature = "serde")]
mod persisted {
    use super::{Bucket, DdSketch};
    use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};

    #[derive(Serialize)]
    #[serde(rename = "DdSketch")]
    struct Ref<'a> {
        alpha_permille: u16,
        count: u64,
        min: f64,
        max: f64,
        zero: u64,
        negative: &'a [Bucket],
        positive: &'a [Bucket],
    }

    #[derive(Deserialize)]
    #[serde(rename = "DdSketch")]
    struct Owned {
        alpha_permille: u16,
        count: u64,
        min: f64,
        max: f64,
        zero: u64,
        negative: Vec<Bucket>,
        positive: Vec<Bucket>,
    }

    impl<const ALPHA_PERMILLE: u16, const MAX_BUCKETS: usize> Serialize
        for DdSketch<ALPHA_PERMILLE, MAX_BUCKETS>
    {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            Ref {
                alpha_permille: ALPHA_PERMILLE,
                count: self.count,
                min: self.min,
                max: self.max,
                zero: self.zero,
                negative: &self.negative,
                positive: &self.positive,
            }
            .serialize(serializer)
        }
    }

    impl<'de, const ALPHA_PERMILLE: u16, const MAX_BUCKETS: usize> Deserialize<'de>
        for DdSketch<ALPHA_PERMILLE, MAX_BUCKETS>
    {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            let o = Owned::deserialize(deserializer)?;
            if o.alpha_permille != ALPHA_PERMILLE {
                return Err(D::Error::custom(format_args!(
                    "DdSketch: stored with relative accuracy {}‰, read as {}‰",
                    o.alpha_permille, ALPHA_PERMILLE
                )));
            }
            for (side, buckets) in [("negative", &o.negative), ("positive", &o.positive)] {
                if buckets.iter().any(|b| b.1 == 0) {
                    return Err(D::Error::custom(format_args!(
                        "DdSketch: empty {side} bucket"
                    )));
                }
                if buckets.windows(2).any(|w| w[0].0 >= w[1].0) {
                    return Err(D::Error::custom(format_args!(
                        "DdSketch: {side} buckets not in ascending order of key"
                    )));
                }
            }
            let total = o
                .negative
                .iter()
                .chain(&o.positive)
                .try_fold(o.zero, |acc, b| acc.checked_add(b.1));
            if total != Some(o.count) {
                return Err(D::Error::custom(
                    "DdSketch: bucket counts do not add up to count",
                ));
            }
            let (min, max) = if o.count == 0 {
                (0.0, 0.0)
            } else if o.min.is_finite() && o.max.is_finite() && o.min <= o.max {
                // −0.0 is stored as 0.0, so equal states compare equal.
                (o.min + 0.0, o.max + 0.0)
            } else {
                return Err(D::Error::custom(
                    "DdSketch: min and max must be finite, min ≤ max",
                ));
            };
            let mut sketch = DdSketch {
                count: o.count,
                min,
                max,
                zero: o.zero,
                negative: o.negative,
                positive: o.positive,
            };
            sketch.collapse(); // a sketch written with a larger MAX_BUCKETS
            Ok(sketch)
        }
    }
}

#[cfg(feature = "laws")]
impl<const ALPHA_PERMILLE: u16, const MAX_BUCKETS: usize> quickcheck::Arbitrary
    for DdSketch<ALPHA_PERMILLE, MAX_BUCKETS>
{
    /// Up to `g.size()` inserts of a mix of zeros, small integers, uniform
    /// values within ±10⁹ and log-uniform values of both signs from 10⁻⁹ to
    /// 10⁹, mostly once, sometimes up to 2³² times (total count below 2⁶²).
    fn arbitrary(g: &mut quickcheck::Gen) -> Self {
        let mut sketch = Self::identity();
        let inserts = usize::arbitrary(g) % (g.size() + 1);
        for _ in 0..inserts {
            let unit = (u64::arbitrary(g) >> 11) as f64 / (1_u64 << 53) as f64;
            let x = match u8::arbitrary(g) % 6 {
                0 => 0.0,
                1 => f64::from(i8::arbitrary(g) % 16),
                2 => unit.mul_add(2e9, -1e9),
                3 => 10_f64.powf(unit.mul_add(18.0, -9.0)),
                4 => -(10_f64.powf(unit.mul_add(18.0, -9.0))),
                _ => unit * 1000.0,
            };
            let n = match u8::arbitrary(g) % 16 {
                0 => u64::from(u32::arbitrary(g)),
                k => u64::from(k % 4),
            };
            // Every x above is finite: nothing to reject.
            let _finite = sketch.insert_n(x, n);
        }
        sketch
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        crate::laws::shrink_to_identity(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::Rng;

    /// The lower q-quantile of sorted data: rank ⌊q·(n − 1)⌋.
    fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
        let last = sorted.len() - 1;
        sorted[((q * last as f64).floor() as usize).min(last)]
    }

    const QS: [f64; 19] = [
        0.0, 0.001, 0.01, 0.05, 0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9, 0.95,
        0.99, 0.999, 1.0,
    ];

    fn assert_accurate<const A: u16, const M: usize>(
        sketch: &DdSketch<A, M>,
        data: &[f64],
        rng: &mut Rng,
        what: &str,
    ) {
        let mut sorted = data.to_vec();
        sorted.sort_by(f64::total_cmp);
        let alpha = sketch.relative_accuracy();
        let qs = QS.iter().copied().chain((0..200).map(|_| rng.unit()));
        for q in qs {
            let want = exact_quantile(&sorted, q);
            let got = sketch.quantile(q).unwrap();
            assert!(
                (got - want).abs() <= alpha * want.abs() * (1.0 + 1e-12),
                "{what}: q {q}: got {got}, exact {want}, relative error {:e} > α = {alpha}",
                ((got - want) / want).abs()
            );
        }
    }

    fn dataset(kind: u64, n: usize, rng: &mut Rng) -> Vec<f64> {
        (0..n)
            .map(|_| match kind {
                0 => rng.uniform(0.0, 1000.0),
                1 => rng.normal().mul_add(2.0, 1.0).exp(), // lognormal
                2 => rng.uniform(-1e6, 1e6),
                3 => match rng.below(4) {
                    0 => 0.0,
                    1 => -rng.normal().exp(),
                    _ => rng.normal().mul_add(3.0, 0.0).exp(),
                },
                4 => (rng.below(20) as f64 - 10.0) * 0.5, // many ties, zeros
                _ => {
                    10_f64.powf(rng.uniform(-300.0, 300.0))
                        * if rng.below(2) == 0 { 1.0 } else { -1.0 }
                }
            })
            .collect()
    }

    fn sketch_of<const A: u16, const M: usize>(data: &[f64]) -> DdSketch<A, M> {
        let mut s = DdSketch::identity();
        for &x in data {
            s.insert(x).unwrap();
        }
        s
    }

    #[test]
    fn quantiles_within_relative_accuracy() {
        let mut rng = Rng::for_test("ddsketch::quantiles_within_relative_accuracy");
        for kind in 0..6 {
            for n in [1, 2, 3, 10, 1000, 20_000] {
                let data = dataset(kind, n, &mut rng);
                let what = format!("kind {kind}, n {n}");
                assert_accurate(&sketch_of::<10, 1_000_000>(&data), &data, &mut rng, &what);
                assert_accurate(&sketch_of::<1, 1_000_000>(&data), &data, &mut rng, &what);
                assert_accurate(&sketch_of::<50, 1_000_000>(&data), &data, &mut rng, &what);
                if kind != 5 {
                    // Realistic ranges never reach the default bucket limit.
                    let default: DdSketch = sketch_of(&data);
                    assert!(default.bucket_count() < 2048);
                    let unbounded = sketch_of::<10, 1_000_000>(&data);
                    assert_eq!(default.negative, unbounded.negative);
                    assert_eq!(default.positive, unbounded.positive);
                }
            }
        }
    }

    #[test]
    fn merged_shards_equal_inserting_everything() {
        let mut rng = Rng::for_test("ddsketch::merged_shards_equal_inserting_everything");
        for kind in 0..6 {
            let data = dataset(kind, 5000, &mut rng);
            let whole: DdSketch = sketch_of(&data);
            let small_whole: DdSketch<10, 16> = sketch_of(&data);
            let mut shards = vec![Vec::new(); 1 + rng.below(12) as usize];
            for &x in &data {
                let i = rng.below(shards.len() as u64) as usize;
                shards[i].push(x);
            }
            // Merge in a random order, by reference and by value.
            let mut parts: Vec<DdSketch> = shards.iter().map(|s| sketch_of(s)).collect();
            let mut small: Vec<DdSketch<10, 16>> = shards.iter().map(|s| sketch_of(s)).collect();
            while parts.len() > 1 {
                let i = rng.below(parts.len() as u64) as usize;
                let (a, b) = (parts.swap_remove(i), small.swap_remove(i));
                let j = rng.below(parts.len() as u64) as usize;
                if rng.below(2) == 0 {
                    parts[j].combine(&a);
                    small[j].combine(&b);
                } else {
                    parts[j].combine_owned(a);
                    small[j].combine_owned(b);
                }
            }
            assert_eq!(parts[0], whole, "kind {kind}");
            assert_eq!(small[0], small_whole, "kind {kind} (collapsing)");
            assert!(small[0].bucket_count() <= 16);
        }
    }

    #[test]
    fn collapsing_keeps_the_high_quantiles() {
        let mut rng = Rng::for_test("ddsketch::collapsing_keeps_the_high_quantiles");
        let data = dataset(5, 10_000, &mut rng); // spans 10⁻³⁰⁰..10³⁰⁰, both signs
        let s: DdSketch<10, 64> = sketch_of(&data);
        assert_eq!(s.bucket_count(), 64);
        let mut sorted = data.clone();
        sorted.sort_by(f64::total_cmp);
        // The collapsed mass sits in the lowest kept bucket; ranks above it
        // keep the guarantee.
        let lowest = match (s.negative.last(), s.zero, s.positive.first()) {
            (Some(b), _, _) => b.1,
            (None, zero, _) if zero != 0 => zero,
            (None, _, b) => b.map_or(0, |b| b.1),
        };
        assert!(lowest > 1);
        let last = data.len() - 1;
        for i in 0..=1000 {
            let q = f64::from(i) / 1000.0;
            let got = s.quantile(q).unwrap();
            let want = exact_quantile(&sorted, q);
            assert!((sorted[0]..=sorted[last]).contains(&got));
            let rank = ((q * last as f64).floor() as u64).min(last as u64);
            if rank >= lowest || rank == 0 {
                assert!(
                    (got - want).abs() <= 0.01 * want.abs() * (1.0 + 1e-12),
                    "q {q}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn edges() {
        let empty: DdSketch = DdSketch::default();
        assert!(empty.is_identity() && empty.is_empty());
        assert_eq!(
            (empty.quantile(0.5), empty.min(), empty.max(), empty.count()),
            (None, None, None, 0)
        );

        let mut s: DdSketch = DdSketch::of(-0.0).unwrap();
        assert_eq!(s, DdSketch::of(0.0).unwrap());
        for x in [f64::MAX, f64::MIN, f64::MIN_POSITIVE, 5e-324, -5e-324, 1.0] {
            s.insert(x).unwrap();
        }
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let before = s.clone();
            assert_eq!(
                s.insert_n(bad, 3).map_err(|e| e.value().to_bits()),
                Err(bad.to_bits())
            );
            assert_eq!(s, before);
        }
        for q in [f64::NAN, -0.1, 1.1, f64::INFINITY] {
            assert_eq!(s.quantile(q), None);
        }
        for i in 0..=100 {
            let x = s.quantile(f64::from(i) / 100.0).unwrap();
            assert!(x.is_finite() && (f64::MIN..=f64::MAX).contains(&x));
        }
        assert_eq!(s.quantile(0.0), Some(f64::MIN));
        assert_eq!(s.quantile(1.0), Some(f64::MAX));

        let mut t: DdSketch = DdSketch::default();
        t.insert_n(7.0, 0).unwrap();
        assert!(t.is_identity());
        t.insert_n(7.0, 3).unwrap();
        let mut u: DdSketch = DdSketch::default();
        (0..3).for_each(|_| u.insert(7.0).unwrap());
        assert_eq!(t, u);
        assert_eq!(t.quantile(0.5), Some(7.0)); // clamped to [min, max]

        assert_eq!(NonFinite::check(1.0), Ok(1.0));
        assert_eq!(
            NonFinite::check(f64::NEG_INFINITY).unwrap_err().to_string(),
            "expected a finite number, got -inf"
        );
        assert_eq!(DdSketch::<1>::default().relative_accuracy(), 0.001);
    }

    #[test]
    fn one_bucket_sketch_is_lawful() {
        let a: DdSketch<10, 1> = sketch_of(&[-5.0, 0.0, 3.0]);
        let b: DdSketch<10, 1> = sketch_of(&[100.0, -7.0]);
        assert_eq!(a.bucket_count(), 1);
        assert_eq!(
            a.clone().combined(&b),
            sketch_of(&[-5.0, 0.0, 3.0, 100.0, -7.0])
        );
        assert_eq!(a.combined(&b).quantile(1.0), Some(100.0));
    }

    #[cfg(feature = "serde")]
    mod persisted {
        use super::*;

        #[cfg(feature = "laws")]
        #[test]
        fn serde_round_trips() {
            use crate::laws::assert_round_trip;

            let mut rng = Rng::for_test("ddsketch::serde_round_trips");
            let mut v: DdSketch = sketch_of(&dataset(3, 1000, &mut rng));
            v.insert_n(12.5, (1 << 61) + 17).unwrap();
            assert_round_trip(&v);

            let empty = DdSketch::<10>::default();
            assert_eq!(
                serde_json::to_string(&empty).unwrap(),
                r#"{"alpha_permille":10,"count":0,"min":0.0,"max":0.0,"zero":0,"negative":[],"positive":[]}"#
            );
            assert_round_trip(&empty);
        }

        #[test]
        fn persisted_form_is_pinned() {
            let mut s: DdSketch = DdSketch::default();
            for x in [-2.0, 0.0, 1.0, 100.0, 100.5] {
                s.insert(x).unwrap();
            }
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                r#"{"alpha_permille":10,"count":5,"min":-2.0,"max":100.5,"zero":1,"negative":[[35,1]],"positive":[[0,1],[231,2]]}"#
            );
        }

        #[test]
        fn reading_validates() {
            let read =
                |json: &str| serde_json::from_str::<DdSketch>(json).map_err(|e| e.to_string());
            let ok = r#"{"alpha_permille":10,"count":3,"min":1.0,"max":5.0,"zero":0,"negative":[],"positive":[[0,1],[81,2]]}"#;
            assert!(read(ok).is_ok());
            for (bad, why) in [
                (
                    ok.replace(":10,", ":20,"),
                    "relative accuracy 20‰, read as 10‰",
                ),
                (ok.replace("[[0,1],[81,2]]", "[[81,2],[0,1]]"), "ascending"),
                (ok.replace("[[0,1],[81,2]]", "[[0,1],[0,2]]"), "ascending"),
                (
                    ok.replace("[[0,1],[81,2]]", "[[0,0],[81,3]]"),
                    "empty positive bucket",
                ),
                (ok.replace(r#""count":3"#, r#""count":4"#), "add up"),
                (ok.replace(r#""min":1.0"#, r#""min":6.0"#), "min ≤ max"),
                (
                    ok.replace("[[0,1],[81,2]]", "[[0,1],[81,18446744073709551615]]"),
                    "add up",
                ),
            ] {
                let err = read(&bad).unwrap_err();
                assert!(err.contains(why), "{bad}: {err}");
            }
            // A sketch with more buckets than the type allows is collapsed
            // on read, to exactly what the smaller type would have built.
            let data = [1.0, 2.0, 4.0, 8.0, 16.0, -1.0, 0.0];
            let wide: DdSketch = sketch_of(&data);
            let narrow: DdSketch<10, 3> =
                serde_json::from_str(&serde_json::to_string(&wide).unwrap()).unwrap();
            assert_eq!(narrow, sketch_of(&data));
        }
    }
}

#[cfg(all(test, feature = "laws"))]
mod laws {
    use super::*;
    use crate::test_util::check;

    // The laws of these three shapes, exactly (`==`): `ddsketch`,
    // `ddsketch_collapsing` and `ddsketch_one_bucket` in tests/laws.rs.
    macro_rules! semantics {
        ($name:ident, $t:ty) => {
            mod $name {
                use super::*;
                type S = $t;

                #[test]
                fn insert_is_combine_with_a_singleton() {
                    fn prop(start: S, xs: Vec<(i32, u8)>) -> bool {
                        let mut inserted = start.clone();
                        let mut combined = start;
                        for &(x, n) in &xs {
                            let x = f64::from(x) * 0.37;
                            inserted.insert_n(x, u64::from(n)).unwrap();
                            let mut one = S::identity();
                            one.insert_n(x, u64::from(n)).unwrap();
                            combined.combine(&one);
                        }
                        inserted == combined
                    }
                    check(
                        concat!("ddsketch::", stringify!($name), "::insert"),
                        prop as fn(_, _) -> bool,
                    );
                }

                #[test]
                fn arbitrary_stays_bson_safe() {
                    fn prop(a: S) -> bool {
                        a.count() < 1 << 62
                    }
                    check(
                        concat!("ddsketch::", stringify!($name), "::arbitrary"),
                        prop as fn(_) -> bool,
                    );
                }
            }
        };
    }

    semantics!(default, DdSketch);
    semantics!(collapsing, DdSketch<20, 6>);
    semantics!(one_bucket, DdSketch<10, 1>);
}
