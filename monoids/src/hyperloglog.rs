//! [`HyperLogLog`]: how many distinct items, approximately.

use std::fmt;
use std::hash::Hash;

use crate::cells;
use crate::hash::stable_hash;
use crate::{Commutative, Idempotent, Monoid, Semigroup};

/// The approximate number of distinct items inserted (a HyperLogLog sketch).
///
/// `2^P` one-byte registers; an item's [stable hash](crate::hash::stable_hash)
/// picks a register with its top `P` bits, and the register keeps the
/// largest "rank" seen (one plus the number of leading zeros of the
/// remaining bits).
///
/// - identity: the empty sketch, which allocates nothing; the registers
///   (`2^P` bytes) are allocated on the first insert;
/// - laws: `combine` is the register-wise maximum, so the sketch is
///   commutative and idempotent (a join-semilattice): duplicated and
///   reordered deliveries are harmless, and the merge of sketches equals the
///   sketch of the union of their items, exactly;
/// - error: the estimate's relative standard error is about
///   `1.04 / √(2^P)` ([`relative_error`](Self::relative_error)): 0.81 % at
///   the default `P = 14`, so 99.7 % of estimates fall within ±2.4 %. Small
///   cardinalities are close to exact;
/// - precision `P` is checked at compile time: `4 ≤ P ≤ 18` (a build error
///   where the type is used; `cargo check` alone does not evaluate it).
///
/// | `P` | memory | relative error |
/// | --- | --- | --- |
/// | 10 | 1 KiB | 3.25 % |
/// | 12 | 4 KiB | 1.63 % |
/// | 14 | 16 KiB | 0.81 % |
/// | 16 | 64 KiB | 0.41 % |
/// | 18 | 256 KiB | 0.20 % |
///
/// The estimator is Ertl's improved raw estimator ("New cardinality
/// estimation algorithms for HyperLogLog sketches", 2017, as in Redis): like
/// HyperLogLog++ it needs no large-range correction with 64-bit hashes, and
/// it is unbiased from 0 to far beyond 2^P items without HyperLogLog++'s
/// empirical bias tables (it reduces to linear counting when most registers
/// are empty).
///
/// Register placement depends on [`stable_hash`], which is part of the
/// persisted format: sketches built by different processes and releases
/// merge correctly. The serialized form records `P`, and sketches with few
/// nonzero registers are stored sparsely; reading a sketch stored with a
/// different `P` is an error, not a silent misreading.
///
/// # Examples
///
/// ```
/// use accrete_monoids::{HyperLogLog, Monoid, Semigroup};
///
/// let mut monday: HyperLogLog = HyperLogLog::new();
/// let mut tuesday: HyperLogLog = HyperLogLog::new();
/// for user in 0..1_000_u32 {
///     monday.insert(&user);
/// }
/// for user in 500..2_000_u32 {
///     tuesday.insert(&user);
///     tuesday.insert(&user); // duplicates change nothing
/// }
/// let week = monday.combined(&tuesday);
/// let estimate = week.estimate();
/// let bound = 3.0 * <HyperLogLog>::relative_error() * 2_000.0;
/// assert!((estimate - 2_000.0).abs() < bound, "{estimate}");
///
/// assert!(HyperLogLog::<12>::identity().is_empty());
/// assert_eq!(HyperLogLog::<12>::new().estimate(), 0.0);
/// ```
///
/// A precision outside `4..=18` does not compile:
///
/// ```compile_fail
/// let sketch = accrete_monoids::HyperLogLog::<3>::new();
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct HyperLogLog<const P: u8 = 14> {
    /// `None` for the identity; otherwise `2^P` registers, at least one of
    /// them nonzero (so derived equality is semantic).
    registers: Option<Box<[u8]>>,
}

/// `1 / (2 ln 2)`: the bias constant of the estimator as `m → ∞`.
const ALPHA_INF: f64 = 0.721_347_520_444_481_7;

impl<const P: u8> HyperLogLog<P> {
    /// The number of registers, `2^P`. Using it checks at compile time that
    /// `4 ≤ P ≤ 18`.
    pub const REGISTERS: usize = {
        assert!(
            P >= 4 && P <= 18,
            "HyperLogLog precision P must be in 4..=18"
        );
        1 << P
    };

    /// The largest rank a register can hold: `64 - P + 1`.
    const MAX_RANK: u8 = 65 - P;

    /// The empty sketch (the identity). Allocates nothing.
    #[inline]
    #[must_use]
    pub const fn new() -> Self {
        let _: usize = Self::REGISTERS; // the compile-time check of `P`
        HyperLogLog { registers: None }
    }

    /// Inserts an item, placed by its [`stable_hash`].
    #[inline]
    pub fn insert<T: Hash + ?Sized>(&mut self, item: &T) {
        self.insert_hash(stable_hash(item));
    }

    /// Inserts an item by its 64-bit hash: the fast path for callers that
    /// already hold a [`stable_hash`]. The hash must be well mixed (every
    /// bit uniform); sketches merge only if all of them hash the same way.
    #[inline]
    pub fn insert_hash(&mut self, hash: u64) {
        let index = (hash >> (64 - P)) as usize;
        // A sentinel bit just below the remaining 64 - P bits caps the rank
        // at 64 - P + 1 without a branch.
        let rank = ((hash << P) | (1 << (P - 1))).leading_zeros() as u8 + 1;
        debug_assert!(rank <= Self::MAX_RANK);
        let registers = self
            .registers
            .get_or_insert_with(|| vec![0; Self::REGISTERS].into_boxed_slice());
        let register = &mut registers[index];
        *register = (*register).max(rank);
    }

    /// The estimated number of distinct items inserted; `0.0` for the empty
    /// sketch. Costs one pass over the registers.
    pub fn estimate(&self) -> f64 {
        let Some(registers) = &self.registers else {
            return 0.0;
        };
        let m = Self::REGISTERS as f64;
        let q = usize::from(64 - P);
        // Histogram of register values; 4 partial ones break the dependency
        // between consecutive increments of the same bucket.
        let mut partial = [[0_u32; 64]; 4];
        let mut chunks = registers.chunks_exact(4);
        for chunk in &mut chunks {
            for (histogram, &r) in partial.iter_mut().zip(chunk) {
                histogram[usize::from(r & 63)] += 1;
            }
        }
        for &r in chunks.remainder() {
            partial[0][usize::from(r & 63)] += 1;
        }
        let count = |k: usize| f64::from(partial.iter().map(|h| h[k]).sum::<u32>());
        let mut z = m * tau((m - count(q + 1)) / m);
        for k in (1..=q).rev() {
            z = 0.5 * (z + count(k));
        }
        z += m * sigma(count(0) / m);
        ALPHA_INF * m * m / z
    }

    /// The relative standard error of [`estimate`](Self::estimate):
    /// `1.04 / √(2^P)`. About 68 % of estimates are within this fraction of
    /// the true count, 95 % within twice and 99.7 % within three times it.
    ///
    /// ```
    /// use accrete_monoids::HyperLogLog;
    ///
    /// assert!((<HyperLogLog>::relative_error() - 0.008_125).abs() < 1e-9);
    /// assert!((HyperLogLog::<12>::relative_error() - 0.01625).abs() < 1e-9);
    /// ```
    pub fn relative_error() -> f64 {
        1.04 / (Self::REGISTERS as f64).sqrt()
    }

    /// Whether nothing was inserted (the identity).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.registers.is_none()
    }

    /// The `2^P` registers, or `None` for the empty sketch (all registers
    /// zero). Register `i` holds the largest rank among items whose hash has
    /// `i` as its top `P` bits; ranks are at most `64 - P + 1`.
    #[inline]
    pub fn registers(&self) -> Option<&[u8]> {
        self.registers.as_deref()
    }
}

/// Ertl's σ(x) = x + Σ_{k≥1} x^(2^k)·2^(k-1).
fn sigma(mut x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let mut y = 1.0;
    let mut z = x;
    loop {
        x *= x;
        let previous = z;
        z += x * y;
        y += y;
        if z == previous {
            return z;
        }
    }
}

/// Ertl's τ(x) = (1 - x - Σ_{k≥1} (1 - x^(2^-k))²·2^-k) / 3.
fn tau(mut x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let mut y = 1.0;
    let mut z = 1.0 - x;
    loop {
        x = x.sqrt();
        let previous = z;
        y *= 0.5;
        z -= (1.0 - x) * (1.0 - x) * y;
        if z == previous {
            return z / 3.0;
        }
    }
}

/// Register-wise maximum.
impl<const P: u8> Semigroup for HyperLogLog<P> {
    #[inline]
    fn combine(&mut self, other: &Self) {
        cells::combine(&mut self.registers, other.registers.as_deref(), max_into);
    }

    #[inline]
    fn combine_owned(&mut self, other: Self) {
        cells::combine_owned(&mut self.registers, other.registers, max_into);
    }
}

#[inline]
fn max_into(register: &mut u8, theirs: u8) {
    *register = (*register).max(theirs);
}

impl<const P: u8> Monoid for HyperLogLog<P> {
    #[inline]
    fn identity() -> Self {
        Self::new()
    }

    #[inline]
    fn is_identity(&self) -> bool {
        self.is_empty()
    }
}

impl<const P: u8> Commutative for HyperLogLog<P> {}
impl<const P: u8> Idempotent for HyperLogLog<P> {}

impl<const P: u8> Default for HyperLogLog<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const P: u8> fmt::Debug for HyperLogLog<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nonzero = self
            .registers
            .as_deref()
            .map_or(0, |r| r.iter().filter(|&&r| r != 0).count());
        f.debug_struct("HyperLogLog")
            .field("precision", &P)
            .field("nonzero_registers", &nonzero)
            .field("estimate", &self.estimate())
            .finish()
    }
}

/// Serialized as bytes (see the type docs): empty for the identity,
/// otherwise a tag, `P`, and the registers, dense or sparse.
#[cfg(feature = "serde")]
impl<const P: u8> serde::Serialize for HyperLogLog<P> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        crate::sketch_codec::serialize::<crate::sketch_codec::ByteCells, _>(
            &[("P", u64::from(P))],
            self.registers.as_deref(),
            serializer,
        )
    }
}

#[cfg(feature = "serde")]
impl<'de, const P: u8> serde::Deserialize<'de> for HyperLogLog<P> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use crate::sketch_codec::{ByteCells, DecodeError, deserialize};
        use serde::de::Error;

        let registers = deserialize::<ByteCells, _>(
            "HyperLogLog",
            &[("P", u64::from(P))],
            Self::REGISTERS,
            deserializer,
        )?;
        if let Some(rank) = registers.iter().flatten().find(|&&r| r > Self::MAX_RANK) {
            let reason = format!("register holds rank {rank}, above {}", Self::MAX_RANK);
            return Err(D::Error::custom(DecodeError::new("HyperLogLog", reason)));
        }
        Ok(HyperLogLog { registers })
    }
}

/// Realistic small sketches: up to `g.size()` items from a small domain
/// (so that arbitrary sketches overlap), plus raw edge-case hashes.
#[cfg(feature = "laws")]
impl<const P: u8> quickcheck::Arbitrary for HyperLogLog<P> {
    fn arbitrary(g: &mut quickcheck::Gen) -> Self {
        let mut sketch = Self::new();
        for hash in cells::arbitrary_hashes(g) {
            sketch.insert_hash(hash);
        }
        sketch
    }

    /// The empty sketch, then each half of the nonzero registers.
    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        let candidates = cells::shrink(&self.registers).into_iter();
        Box::new(candidates.map(|registers| HyperLogLog { registers }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sketch_of<const P: u8>(items: std::ops::Range<u64>) -> HyperLogLog<P> {
        let mut sketch = HyperLogLog::new();
        for i in items {
            sketch.insert(&i);
        }
        sketch
    }

    fn assert_accurate<const P: u8>(n: u64) {
        let estimate = sketch_of::<P>(0..n).estimate();
        let bound = 3.0 * HyperLogLog::<P>::relative_error() * n as f64;
        let error = (estimate - n as f64).abs();
        assert!(
            error <= bound,
            "P={P} n={n}: estimate {estimate}, error {error} > 3σ = {bound}"
        );
    }

    #[test]
    fn estimates_within_three_standard_errors() {
        for n in [0, 1, 10, 1_000, 100_000] {
            assert_accurate::<12>(n);
            assert_accurate::<14>(n);
        }
        for n in [5_000, 10_000, 20_000, 40_000, 80_000, 1_000_000] {
            assert_accurate::<12>(n);
        }
    }

    #[test]
    fn small_cardinalities_are_nearly_exact() {
        for n in 1..=20 {
            let estimate = sketch_of::<14>(0..n).estimate();
            assert!((estimate - n as f64).abs() < 0.5, "n={n}: {estimate}");
        }
    }

    #[test]
    fn merging_halves_equals_inserting_all() {
        let all = sketch_of::<12>(0..20_000);
        let left = sketch_of::<12>(0..10_000);
        let right = sketch_of::<12>(10_000..20_000);
        assert_eq!(left.clone().combined(&right), all);
        assert_eq!(right.combined(&left), all);
        // Overlapping halves and duplicates too.
        let a = sketch_of::<12>(0..15_000);
        let b = sketch_of::<12>(5_000..20_000);
        assert_eq!(HyperLogLog::fold([a.clone(), b, a]), all);
    }

    #[test]
    fn identity_is_cheap_and_canonical() {
        let empty: HyperLogLog = HyperLogLog::new();
        assert!(empty.registers().is_none());
        assert!(empty.is_identity());
        assert_eq!(empty, HyperLogLog::default());
        let mut one: HyperLogLog = HyperLogLog::new();
        one.insert("x");
        assert!(!one.is_identity());
        assert_eq!(one.registers().map(<[u8]>::len), Some(1 << 14));
        assert_ne!(one, empty);
        assert_eq!(empty.clone().combined(&one), one);
        assert_eq!(one.clone().combined(&empty), one);
    }

    #[test]
    fn rank_is_capped_and_index_uses_top_bits() {
        let mut sketch = HyperLogLog::<4>::new();
        sketch.insert_hash(0); // register 0, all remaining bits zero
        sketch.insert_hash(u64::MAX); // register 15, rank 1
        sketch.insert_hash(0x1000_0000_0000_0000 | 1); // register 1, rank 60
        let registers = sketch.registers().unwrap();
        assert_eq!(registers[0], 61);
        assert_eq!(registers[15], 1);
        assert_eq!(registers[1], 60);
        assert_eq!(registers.iter().filter(|&&r| r != 0).count(), 3);
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serializes_compactly() {
        let empty: HyperLogLog = HyperLogLog::new();
        assert_eq!(serde_json::to_string(&empty).unwrap(), "[]");
        assert_eq!(postcard::to_stdvec(&empty).unwrap(), [0]);
        let mut one: HyperLogLog = HyperLogLog::new();
        one.insert_hash(0x0006_0000_0000_0000); // register 1, rank 1
        assert_eq!(serde_json::to_string(&one).unwrap(), "[2,14,1,1]");
        let full = sketch_of::<14>(0..200_000);
        assert_eq!(postcard::to_stdvec(&full).unwrap().len(), 3 + 2 + (1 << 14));
        let back: HyperLogLog<12> = serde_json::from_str("[2,12,1,1]").unwrap();
        assert_eq!(back.registers().unwrap()[1], 1);
    }

    #[cfg(feature = "serde")]
    #[test]
    fn rejects_other_precisions_and_impossible_ranks() {
        let err = serde_json::from_str::<HyperLogLog<12>>("[2,14,1,1]").unwrap_err();
        assert!(
            err.to_string()
                .contains("stored with P = 14 but read as P = 12"),
            "{err}"
        );
        let err = serde_json::from_str::<HyperLogLog<14>>("[2,14,1,52]").unwrap_err();
        assert!(err.to_string().contains("rank 52, above 51"), "{err}");
        // All-zero registers read back as the identity.
        let mut dense = vec![1_u8, 4];
        dense.extend([0; 16]);
        let json = serde_json::to_string(&dense).unwrap();
        assert!(
            serde_json::from_str::<HyperLogLog<4>>(&json)
                .unwrap()
                .is_identity()
        );
    }

    #[cfg(feature = "laws")]
    mod laws {
        use super::*;
        use crate::laws::assert_round_trip as assert_round_trips;

        // The laws of `HyperLogLog` and `HyperLogLog<4>`, round trips of
        // arbitrary sketches included: `hyperloglog` and `hyperloglog_p4`
        // in tests/laws.rs.

        #[test]
        fn round_trips_through_json_postcard_and_bson() {
            assert_round_trips(&HyperLogLog::<14>::new());
            assert_round_trips(&sketch_of::<14>(0..100_000));
            assert_round_trips(&sketch_of::<18>(0..100));
        }
    }
}
