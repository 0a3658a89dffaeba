//! [`CountMinSketch`]: how often each item occurred, approximately.

use std::fmt;
use std::hash::Hash;

use crate::cells;
use crate::hash::{second_hash, stable_hash};
use crate::{Commutative, Monoid, Semigroup};

/// Approximate per-item counts in fixed memory (a Count-Min sketch).
///
/// `D` rows of `W` counters. Adding `count` to an item adds it to one
/// counter per row, chosen by double hashing its
/// [stable hash](crate::hash::stable_hash) `h`: row `i` uses counter
/// `(h + i·h₂) mod W`, where `h₂` is a second hash derived from `h`. An
/// item's estimate is the least of its `D` counters.
///
/// - identity: the empty sketch, which allocates nothing; the `W·D` counters
///   (`8·W·D` bytes: 80 KiB for the defaults) are allocated on the first
///   nonzero add;
/// - laws: `combine` adds counters element-wise, so the sketch is
///   commutative but **not idempotent** (a duplicated delivery counts
///   twice; the runtime applies each event's effect exactly once). The merge
///   of sketches equals the sketch of all their adds, exactly;
/// - error: an estimate never underestimates, and with probability at least
///   `1 - e^(-D)` ([`delta`](Self::delta)) it overestimates by at most
///   `(e / W) · total` ([`epsilon`](Self::epsilon) times
///   [`total`](Self::total)). For the defaults (`W = 2048`, `D = 5`): within
///   0.13 % of the total, with probability 99.3 %. The bound assumes
///   independent rows; double hashing makes two items collide in every row
///   with probability about `1/W²` rather than `1/W^D`;
/// - counters and the total wrap at 2⁶⁴ (which keeps `combine` lawful); the
///   bounds hold while the total stays below that;
/// - `W` must be a power of two and `D` at least 1, checked at compile time
///   (a build error where the type is used; `cargo check` alone does not
///   evaluate it).
///
/// Placement depends on [`stable_hash`], which is part of the persisted
/// format. The serialized form records `W` and `D` and stores counters as
/// varints, skipping zeros, so small sketches are small.
///
/// # Examples
///
/// ```
/// use accrete_monoids::{CountMinSketch, Monoid, Semigroup};
///
/// let mut morning: CountMinSketch = CountMinSketch::new();
/// morning.add("/home", 120);
/// morning.add("/pricing", 7);
/// let mut evening: CountMinSketch = CountMinSketch::new();
/// evening.add("/home", 30);
///
/// let day = morning.combined(&evening);
/// assert_eq!(day.total(), 157);
/// let home = day.estimate("/home");
/// assert!(home >= 150); // never an underestimate
/// assert!(home as f64 <= 150.0 + <CountMinSketch>::epsilon() * day.total() as f64);
/// assert_eq!(day.estimate("/never-seen"), 0); // with high probability
/// ```
///
/// `W` must be a power of two:
///
/// ```compile_fail
/// let sketch = accrete_monoids::CountMinSketch::<1000, 4>::new();
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CountMinSketch<const W: usize = 2048, const D: usize = 5> {
    /// `None` for the identity; otherwise `D` rows of `W` counters, row-major,
    /// not all zero (so derived equality is semantic).
    counters: Option<Box<[u64]>>,
    /// The sum of all counts added (mod 2⁶⁴): the sum of every row.
    total: u64,
}

impl<const W: usize, const D: usize> CountMinSketch<W, D> {
    /// The number of counters, `W·D`. Using it checks at compile time that
    /// `W` is a power of two and `D ≥ 1`.
    pub const COUNTERS: usize = {
        assert!(
            W.is_power_of_two(),
            "CountMinSketch width W must be a power of two"
        );
        assert!(D >= 1, "CountMinSketch depth D must be at least 1");
        W * D
    };

    /// The empty sketch (the identity). Allocates nothing.
    #[inline]
    #[must_use]
    pub const fn new() -> Self {
        let _: usize = Self::COUNTERS; // the compile-time check of `W` and `D`
        CountMinSketch {
            counters: None,
            total: 0,
        }
    }

    /// Adds `count` occurrences of an item, placed by its [`stable_hash`].
    #[inline]
    pub fn add<T: Hash + ?Sized>(&mut self, item: &T, count: u64) {
        self.add_hash(stable_hash(item), count);
    }

    /// Adds `count` occurrences of an item by its 64-bit hash: the fast path
    /// for callers that already hold a [`stable_hash`]. Adding 0 changes
    /// nothing.
    #[inline]
    pub fn add_hash(&mut self, hash: u64, count: u64) {
        if count == 0 {
            return;
        }
        let step = second_hash(hash);
        let counters = self
            .counters
            .get_or_insert_with(|| vec![0; Self::COUNTERS].into_boxed_slice());
        let mut h = hash;
        for row in counters.chunks_exact_mut(W) {
            let counter = &mut row[(h & (W as u64 - 1)) as usize];
            *counter = counter.wrapping_add(count);
            h = h.wrapping_add(step);
        }
        self.total = self.total.wrapping_add(count);
        self.normalise();
    }

    /// The estimated count of an item: at least its true count, and with
    /// probability `1 - e^(-D)` at most `(e / W) · total` more.
    #[inline]
    pub fn estimate<T: Hash + ?Sized>(&self, item: &T) -> u64 {
        self.estimate_hash(stable_hash(item))
    }

    /// [`estimate`](Self::estimate) by the item's 64-bit hash.
    #[inline]
    pub fn estimate_hash(&self, hash: u64) -> u64 {
        let Some(counters) = &self.counters else {
            return 0;
        };
        let step = second_hash(hash);
        let mut h = hash;
        let mut least = u64::MAX;
        for row in counters.chunks_exact(W) {
            least = least.min(row[(h & (W as u64 - 1)) as usize]);
            h = h.wrapping_add(step);
        }
        least
    }

    /// The sum of all counts added (wrapping at 2⁶⁴).
    #[inline]
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Whether nothing was added (the identity).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.counters.is_none()
    }

    /// The relative error bound `ε = e / W`: with probability `1 - δ`, an
    /// estimate exceeds the true count by at most `ε · total`.
    ///
    /// ```
    /// use accrete_monoids::CountMinSketch;
    ///
    /// assert!((<CountMinSketch>::epsilon() - 0.001_327).abs() < 1e-6);
    /// assert!((<CountMinSketch>::delta() - 0.006_738).abs() < 1e-6);
    /// ```
    pub fn epsilon() -> f64 {
        let _: usize = Self::COUNTERS;
        std::f64::consts::E / W as f64
    }

    /// The failure probability `δ = e^(-D)` of the bound of
    /// [`epsilon`](Self::epsilon).
    pub fn delta() -> f64 {
        let _: usize = Self::COUNTERS;
        (-(D as f64)).exp()
    }

    /// The counters, `D` rows of `W`, row-major; `None` for the empty
    /// sketch (all counters zero).
    #[inline]
    pub fn counters(&self) -> Option<&[u64]> {
        self.counters.as_deref()
    }

    /// Drops the counters if they all wrapped to zero, keeping the identity
    /// unique. Every row sums to `total`, so only a zero total needs a look.
    #[inline]
    fn normalise(&mut self) {
        if self.total == 0
            && self
                .counters
                .as_deref()
                .is_some_and(|c| c.iter().all(|&c| c == 0))
        {
            self.counters = None;
        }
    }
}

/// Counter-wise wrapping addition.
impl<const W: usize, const D: usize> Semigroup for CountMinSketch<W, D> {
    #[inline]
    fn combine(&mut self, other: &Self) {
        if other.is_empty() {
            return;
        }
        cells::combine(&mut self.counters, other.counters.as_deref(), add_into);
        self.total = self.total.wrapping_add(other.total);
        self.normalise();
    }

    #[inline]
    fn combine_owned(&mut self, other: Self) {
        if other.is_empty() {
            return;
        }
        cells::combine_owned(&mut self.counters, other.counters, add_into);
        self.total = self.total.wrapping_add(other.total);
        self.normalise();
    }
}

#[inline]
fn add_into(counter: &mut u64, theirs: u64) {
    *counter = counter.wrapping_add(theirs);
}

impl<const W: usize, const D: usize> Monoid for CountMinSketch<W, D> {
    #[inline]
    fn identity() -> Self {
        Self::new()
    }

    #[inline]
    fn is_identity(&self) -> bool {
        self.is_empty()
    }
}

impl<const W: usize, const D: usize> Commutative for CountMinSketch<W, D> {}

impl<const W: usize, const D: usize> Default for CountMinSketch<W, D> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const W: usize, const D: usize> fmt::Debug for CountMinSketch<W, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nonzero = self
            .counters
            .as_deref()
            .map_or(0, |c| c.iter().filter(|&&c| c != 0).count());
        f.debug_struct("CountMinSketch")
            .field("width", &W)
            .field("depth", &D)
            .field("total", &self.total)
            .field("nonzero_counters", &nonzero)
            .finish()
    }
}

/// Serialized as bytes (see the type docs): empty for the identity,
/// otherwise a tag, `W`, `D` and the counters. The total is not stored: it
/// is recomputed as the sum of a row.
#[cfg(feature = "serde")]
impl<const W: usize, const D: usize> serde::Serialize for CountMinSketch<W, D> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        crate::sketch_codec::serialize::<crate::sketch_codec::VarintCells, _>(
            &[("W", W as u64), ("D", D as u64)],
            self.counters.as_deref(),
            serializer,
        )
    }
}

#[cfg(feature = "serde")]
impl<'de, const W: usize, const D: usize> serde::Deserialize<'de> for CountMinSketch<W, D> {
    fn deserialize<D2: serde::Deserializer<'de>>(deserializer: D2) -> Result<Self, D2::Error> {
        use crate::sketch_codec::{DecodeError, VarintCells, deserialize};
        use serde::de::Error;

        let counters = deserialize::<VarintCells, _>(
            "CountMinSketch",
            &[("W", W as u64), ("D", D as u64)],
            Self::COUNTERS,
            deserializer,
        )?;
        let Some(counters) = counters else {
            return Ok(Self::new());
        };
        let row_sum = |row: &[u64]| row.iter().fold(0_u64, |sum, &c| sum.wrapping_add(c));
        let mut rows = counters.chunks_exact(W);
        let total = rows.next().map_or(0, row_sum);
        if rows.any(|row| row_sum(row) != total) {
            let reason = "rows do not all sum to the same total";
            return Err(D2::Error::custom(DecodeError::new(
                "CountMinSketch",
                reason,
            )));
        }
        let mut sketch = CountMinSketch {
            counters: Some(counters),
            total,
        };
        sketch.normalise();
        Ok(sketch)
    }
}

/// Realistic small sketches: up to `g.size()` adds of counts below 2³² to
/// items from a small domain or raw hashes. Every counter and the total stay far below
/// 2⁶² (BSON integers are signed 64-bit), even after combining many.
#[cfg(feature = "laws")]
impl<const W: usize, const D: usize> quickcheck::Arbitrary for CountMinSketch<W, D> {
    fn arbitrary(g: &mut quickcheck::Gen) -> Self {
        let mut sketch = Self::new();
        for hash in cells::arbitrary_hashes(g) {
            sketch.add_hash(hash, u64::from(u32::arbitrary(g)));
        }
        sketch
    }

    /// The empty sketch (zeroing single counters would break the rows'
    /// shared total).
    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        crate::laws::shrink_to_identity(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Zipf-like stream: item `i` (from 1) occurs `⌈10_000 / i⌉` times.
    fn zipf(items: u64) -> Vec<(u64, u64)> {
        (1..=items).map(|i| (i, 10_000_u64.div_ceil(i))).collect()
    }

    #[test]
    fn never_underestimates_and_respects_the_bound() {
        let stream = zipf(20_000);
        let mut sketch: CountMinSketch = CountMinSketch::new();
        for &(item, count) in &stream {
            sketch.add(&item, count);
        }
        let total: u64 = stream.iter().map(|&(_, c)| c).sum();
        assert_eq!(sketch.total(), total);
        let slack = <CountMinSketch>::epsilon() * total as f64;
        let mut beyond = 0;
        for &(item, count) in &stream {
            let estimate = sketch.estimate(&item);
            assert!(estimate >= count, "item {item}: {estimate} < {count}");
            if (estimate - count) as f64 > slack {
                beyond += 1;
            }
        }
        // The bound may fail for a fraction δ = e^-5 ≈ 0.7 % of items.
        let allowed = (<CountMinSketch>::delta() * stream.len() as f64).ceil() as usize;
        assert!(
            beyond <= allowed,
            "{beyond} items beyond the bound, {allowed} allowed"
        );
    }

    #[test]
    fn merging_equals_adding_everything() {
        let mut all = CountMinSketch::<256, 4>::new();
        let mut left = CountMinSketch::<256, 4>::new();
        let mut right = CountMinSketch::<256, 4>::new();
        for (item, count) in zipf(2_000) {
            all.add(&item, count);
            if item % 3 == 0 { &mut left } else { &mut right }.add(&item, count);
        }
        assert_eq!(left.clone().combined(&right), all);
        assert_eq!(right.combined(&left), all);
    }

    #[test]
    fn identity_is_cheap_and_canonical() {
        let empty: CountMinSketch = CountMinSketch::new();
        assert!(empty.counters().is_none());
        assert!(empty.is_identity());
        let mut zero = CountMinSketch::<64, 3>::new();
        zero.add("x", 0);
        assert!(zero.is_identity());
        // Counts that wrap back to zero leave the identity, not zeros.
        zero.add("x", u64::MAX);
        zero.add("x", 1);
        assert!(zero.is_identity());
        assert_eq!(zero, CountMinSketch::default());
        let mut a = CountMinSketch::<64, 3>::new();
        a.add("y", 1 << 63);
        assert!(a.clone().combined(&a).is_identity());
        assert_eq!(a.estimate("y"), 1 << 63);
        assert_eq!(a.counters().map(<[u64]>::len), Some(64 * 3));
    }

    #[test]
    fn rows_use_double_hashing() {
        let mut sketch = CountMinSketch::<16, 3>::new();
        let h = 0x1234_5678_9abc_def5_u64;
        sketch.add_hash(h, 2);
        let step = second_hash(h);
        let counters = sketch.counters().unwrap();
        for i in 0..3_u64 {
            let index = (h.wrapping_add(i.wrapping_mul(step)) & 15) as usize;
            assert_eq!(counters[i as usize * 16 + index], 2);
        }
        assert_eq!(counters.iter().sum::<u64>(), 6);
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serializes_compactly_and_checks_rows() {
        let empty: CountMinSketch = CountMinSketch::new();
        assert_eq!(serde_json::to_string(&empty).unwrap(), "[]");
        let mut one = CountMinSketch::<16, 2>::new();
        one.add_hash(3, 300); // row 0: counter 3; row 1: counter (3 + step) % 16
        let bytes = postcard::to_stdvec(&one).unwrap();
        assert!(bytes.len() <= 1 + 3 + 2 * 3, "{bytes:?}");
        let back: CountMinSketch<16, 2> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, one);
        assert_eq!(back.total(), 300);
        // Rows with different sums are corrupt.
        let err = serde_json::from_str::<CountMinSketch<16, 2>>("[2,16,2,0,5,0,6]").unwrap_err();
        assert!(err.to_string().contains("same total"), "{err}");
        let err = serde_json::from_str::<CountMinSketch<16, 2>>("[2,32,2,0,5]").unwrap_err();
        assert!(
            err.to_string()
                .contains("stored with W = 32 but read as W = 16"),
            "{err}"
        );
        // Counters above i64::MAX are fine: they are bytes, not integers.
        let mut big = CountMinSketch::<16, 2>::new();
        big.add("x", u64::MAX - 1);
        let back: CountMinSketch<16, 2> =
            bson::deserialize_from_bson(bson::serialize_to_bson(&big).unwrap()).unwrap();
        assert_eq!(back, big);
    }

    #[cfg(feature = "laws")]
    mod laws {
        use super::*;
        use crate::laws::assert_round_trip as assert_round_trips;

        // The laws of `CountMinSketch` and `CountMinSketch<8, 2>`, round
        // trips of arbitrary sketches included: `count_min` and
        // `count_min_small` in tests/laws.rs.

        #[test]
        fn is_not_idempotent() {
            let mut a = CountMinSketch::<8, 2>::new();
            a.add("x", 1);
            assert_ne!(a.clone().combined(&a), a);
        }

        #[test]
        fn round_trips_through_json_postcard_and_bson() {
            let mut dense = CountMinSketch::<64, 4>::new();
            for (item, count) in zipf(5_000) {
                dense.add(&item, count);
            }
            dense.add("huge", u64::MAX / 3);
            assert_round_trips(&dense);
        }
    }
}
