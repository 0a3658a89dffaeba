//! [`Bloom`]: whether an item was probably seen.

use std::fmt;
use std::hash::Hash;

use crate::cells;
use crate::hash::{second_hash, stable_hash};
use crate::{Commutative, Idempotent, Monoid, Semigroup};

/// A set membership filter with no false negatives and a small, tunable
/// rate of false positives (a Bloom filter).
///
/// `BITS` bits; inserting an item sets `K` of them, chosen by double hashing
/// its [stable hash](crate::hash::stable_hash) `h`: probe `i` sets bit
/// `(h + i·h₂) mod BITS`, where `h₂` is a second hash derived from `h`. An
/// item is "contained" if all its `K` bits are set.
///
/// - identity: the empty filter, which allocates nothing; the bits
///   (`BITS / 8` bytes: 1 KiB for the defaults) are allocated on the first
///   insert;
/// - laws: `combine` is the bitwise or, so the filter is commutative and
///   idempotent (a join-semilattice): duplicated and reordered deliveries
///   are harmless, and the merge of filters equals the filter of the union
///   of their items, exactly;
/// - error: [`contains`](Self::contains) is never wrong for an inserted item;
///   for an item never inserted it returns `true` with probability about
///   `(1 - e^(-K·n/BITS))^K` after `n` distinct inserts
///   ([`false_positive_rate`](Self::false_positive_rate)). The defaults
///   (`BITS = 8192`, `K = 7`) give 1 % at `n ≈ 850`. For a target rate `p`
///   and `n` items, choose `BITS ≈ -n·ln p / (ln 2)²` and `K ≈ (BITS/n)·ln 2`;
/// - `BITS` must be a power of two, at least 64, and `K ≥ 1`, checked at
///   compile time (a build error where the type is used; `cargo check` alone
///   does not evaluate it).
///
/// Placement depends on [`stable_hash`], which is part of the persisted
/// format. The serialized form records `BITS` and `K`; the bit words are
/// stored little-endian as bytes (BSON has no unsigned 64-bit integer), and
/// zero words are skipped, so sparse filters are small.
///
/// # Examples
///
/// ```
/// use accrete_monoids::{Bloom, Monoid, Semigroup};
///
/// let mut seen: Bloom = Bloom::new();
/// seen.insert("order-17");
/// let mut elsewhere: Bloom = Bloom::new();
/// elsewhere.insert("order-42");
///
/// seen.combine(&elsewhere);
/// assert!(seen.contains("order-17") && seen.contains("order-42"));
/// assert!(!seen.contains("order-99")); // false positives are rare
/// assert!(<Bloom>::false_positive_rate(850) < 0.01);
/// ```
///
/// `BITS` must be a power of two:
///
/// ```compile_fail
/// let filter = accrete_monoids::Bloom::<1000, 3>::new();
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Bloom<const BITS: usize = 8192, const K: usize = 7> {
    /// `None` for the identity; otherwise `BITS / 64` words, bit `b` in word
    /// `b / 64` at position `b % 64`, not all zero (so derived equality is
    /// semantic).
    words: Option<Box<[u64]>>,
}

impl<const BITS: usize, const K: usize> Bloom<BITS, K> {
    /// The number of 64-bit words, `BITS / 64`. Using it checks at compile
    /// time that `BITS` is a power of two, at least 64, and `K ≥ 1`.
    pub const WORDS: usize = {
        assert!(
            BITS.is_power_of_two() && BITS >= 64,
            "Bloom size BITS must be a power of two, at least 64"
        );
        assert!(K >= 1, "Bloom hash count K must be at least 1");
        BITS / 64
    };

    /// The empty filter (the identity). Allocates nothing.
    #[inline]
    #[must_use]
    pub const fn new() -> Self {
        let _: usize = Self::WORDS; // the compile-time check of `BITS` and `K`
        Bloom { words: None }
    }

    /// Inserts an item, placed by its [`stable_hash`].
    #[inline]
    pub fn insert<T: Hash + ?Sized>(&mut self, item: &T) {
        self.insert_hash(stable_hash(item));
    }

    /// Inserts an item by its 64-bit hash: the fast path for callers that
    /// already hold a [`stable_hash`].
    #[inline]
    pub fn insert_hash(&mut self, hash: u64) {
        let step = second_hash(hash);
        let words = self
            .words
            .get_or_insert_with(|| vec![0; Self::WORDS].into_boxed_slice());
        let mut h = hash;
        for _ in 0..K {
            let bit = h & (BITS as u64 - 1);
            words[(bit >> 6) as usize] |= 1 << (bit & 63);
            h = h.wrapping_add(step);
        }
    }

    /// Whether the item may have been inserted: always `true` if it was;
    /// `true` with probability about
    /// [`false_positive_rate`](Self::false_positive_rate) if not.
    #[inline]
    pub fn contains<T: Hash + ?Sized>(&self, item: &T) -> bool {
        self.contains_hash(stable_hash(item))
    }

    /// [`contains`](Self::contains) by the item's 64-bit hash.
    #[inline]
    pub fn contains_hash(&self, hash: u64) -> bool {
        let Some(words) = &self.words else {
            return false;
        };
        let step = second_hash(hash);
        let mut h = hash;
        for _ in 0..K {
            let bit = h & (BITS as u64 - 1);
            if words[(bit >> 6) as usize] & (1 << (bit & 63)) == 0 {
                return false;
            }
            h = h.wrapping_add(step);
        }
        true
    }

    /// The expected false positive rate after `n_inserted` distinct items:
    /// `(1 - e^(-K·n/BITS))^K`, with `BITS` bits and `K` probes. Under
    /// at-least-once delivery `n` is rarely known exactly; see
    /// [`current_false_positive_rate`](Self::current_false_positive_rate).
    ///
    /// ```
    /// use accrete_monoids::Bloom;
    ///
    /// assert_eq!(<Bloom>::false_positive_rate(0), 0.0);
    /// let p = Bloom::<8192, 7>::false_positive_rate(1_000);
    /// assert!((p - 0.0207).abs() < 0.0005, "{p}");
    /// ```
    pub fn false_positive_rate(n_inserted: u64) -> f64 {
        let _: usize = Self::WORDS;
        let k = K as f64;
        let fill = 1.0 - (-k * n_inserted as f64 / BITS as f64).exp();
        fill.powf(k)
    }

    /// The false positive rate of this filter as it stands:
    /// `(ones / BITS)^K`, the probability that `K` random bits are all set.
    /// Needs no count of inserts, so it stays right when duplicates and
    /// merges make that count unknown.
    pub fn current_false_positive_rate(&self) -> f64 {
        (self.count_ones() as f64 / BITS as f64).powf(K as f64)
    }

    /// The number of bits set.
    pub fn count_ones(&self) -> u64 {
        self.words
            .as_deref()
            .map_or(0, |w| w.iter().map(|w| u64::from(w.count_ones())).sum())
    }

    /// Whether nothing was inserted (the identity).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.words.is_none()
    }

    /// The `BITS / 64` words of the bitset (bit `b` is bit `b % 64` of word
    /// `b / 64`), or `None` for the empty filter (all bits zero).
    #[inline]
    pub fn words(&self) -> Option<&[u64]> {
        self.words.as_deref()
    }
}

/// Word-wise or.
impl<const BITS: usize, const K: usize> Semigroup for Bloom<BITS, K> {
    #[inline]
    fn combine(&mut self, other: &Self) {
        cells::combine(&mut self.words, other.words.as_deref(), |a, b| *a |= b);
    }

    #[inline]
    fn combine_owned(&mut self, other: Self) {
        cells::combine_owned(&mut self.words, other.words, |a, b| *a |= b);
    }
}

impl<const BITS: usize, const K: usize> Monoid for Bloom<BITS, K> {
    #[inline]
    fn identity() -> Self {
        Self::new()
    }

    #[inline]
    fn is_identity(&self) -> bool {
        self.is_empty()
    }
}

impl<const BITS: usize, const K: usize> Commutative for Bloom<BITS, K> {}
impl<const BITS: usize, const K: usize> Idempotent for Bloom<BITS, K> {}

impl<const BITS: usize, const K: usize> Default for Bloom<BITS, K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const BITS: usize, const K: usize> fmt::Debug for Bloom<BITS, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bloom")
            .field("bits", &BITS)
            .field("k", &K)
            .field("ones", &self.count_ones())
            .finish()
    }
}

/// Serialized as bytes (see the type docs): empty for the identity,
/// otherwise a tag, `BITS`, `K` and the words, little-endian.
#[cfg(feature = "serde")]
impl<const BITS: usize, const K: usize> serde::Serialize for Bloom<BITS, K> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        crate::sketch_codec::serialize::<crate::sketch_codec::WordCells, _>(
            &[("BITS", BITS as u64), ("K", K as u64)],
            self.words.as_deref(),
            serializer,
        )
    }
}

#[cfg(feature = "serde")]
impl<'de, const BITS: usize, const K: usize> serde::Deserialize<'de> for Bloom<BITS, K> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let words = crate::sketch_codec::deserialize::<crate::sketch_codec::WordCells, _>(
            "Bloom",
            &[("BITS", BITS as u64), ("K", K as u64)],
            Self::WORDS,
            deserializer,
        )?;
        Ok(Bloom { words })
    }
}

/// Realistic small filters: up to `g.size()` items from a small domain (so
/// that arbitrary filters overlap), plus raw edge-case hashes.
#[cfg(feature = "laws")]
impl<const BITS: usize, const K: usize> quickcheck::Arbitrary for Bloom<BITS, K> {
    fn arbitrary(g: &mut quickcheck::Gen) -> Self {
        let mut filter = Self::new();
        for hash in cells::arbitrary_hashes(g) {
            filter.insert_hash(hash);
        }
        filter
    }

    /// The empty filter, then each half of the nonzero words.
    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        let candidates = cells::shrink(&self.words).into_iter();
        Box::new(candidates.map(|words| Bloom { words }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter_of<const BITS: usize, const K: usize>(items: std::ops::Range<u64>) -> Bloom<BITS, K> {
        let mut filter = Bloom::new();
        for i in items {
            filter.insert(&i);
        }
        filter
    }

    #[test]
    fn no_false_negatives() {
        let filter: Bloom = filter_of(0..2_000);
        assert!((0..2_000_u64).all(|i| filter.contains(&i)));
        assert!("abc".chars().all(|c| !Bloom::<64, 2>::new().contains(&c)));
    }

    fn observed_rate<const BITS: usize, const K: usize>(n: u64) -> (f64, f64) {
        let filter: Bloom<BITS, K> = filter_of(0..n);
        let probes = 200_000_u64;
        let hits = (n..n + probes).filter(|i| filter.contains(i)).count();
        let expected = Bloom::<BITS, K>::false_positive_rate(n);
        let observed = hits as f64 / probes as f64;
        // The exact rate of this filter, from its fill, agrees closely.
        let current = filter.current_false_positive_rate();
        assert!(
            (current - expected).abs() < 0.1 * expected,
            "{current} vs {expected}"
        );
        (observed, expected)
    }

    #[test]
    fn false_positive_rate_matches_the_formula() {
        for (observed, expected) in [
            observed_rate::<8192, 7>(500),
            observed_rate::<8192, 7>(1_000),
            observed_rate::<8192, 3>(2_000),
            observed_rate::<65536, 5>(8_000),
        ] {
            // 200 000 probes: a binomial standard deviation of under 5 % of
            // the rate here; allow 15 %.
            assert!(
                (observed - expected).abs() < 0.15 * expected,
                "observed {observed}, expected {expected}"
            );
        }
    }

    #[test]
    fn merging_halves_equals_inserting_all() {
        let all: Bloom = filter_of(0..1_000);
        let left: Bloom = filter_of(0..500);
        let right: Bloom = filter_of(500..1_000);
        assert_eq!(left.clone().combined(&right), all);
        assert_eq!(Bloom::fold([right, left.clone(), left]), all);
    }

    #[test]
    fn identity_is_cheap_and_canonical() {
        let empty: Bloom = Bloom::new();
        assert!(empty.words().is_none());
        assert!(empty.is_identity());
        assert_eq!(empty.count_ones(), 0);
        assert_eq!(empty.current_false_positive_rate(), 0.0);
        let mut one: Bloom = Bloom::new();
        one.insert("x");
        assert!(!one.is_identity());
        assert!((1..=7).contains(&one.count_ones()));
        assert_eq!(one.words().map(<[u64]>::len), Some(128));
        assert_eq!(empty.clone().combined(&one), one);
    }

    #[test]
    fn probes_use_double_hashing() {
        let mut filter = Bloom::<128, 3>::new();
        let h = 0x0fed_cba9_8765_4321_u64;
        filter.insert_hash(h);
        let step = second_hash(h);
        let mut expected = [0_u64; 2];
        for i in 0..3_u64 {
            let bit = h.wrapping_add(i.wrapping_mul(step)) & 127;
            expected[(bit / 64) as usize] |= 1 << (bit % 64);
        }
        assert_eq!(filter.words(), Some(&expected[..]));
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serializes_as_bytes() {
        let empty: Bloom = Bloom::new();
        assert_eq!(serde_json::to_string(&empty).unwrap(), "[]");
        let mut high = Bloom::<128, 1>::new();
        high.insert_hash(63 + 64); // bit 63 of word 1: above i64::MAX
        assert_eq!(
            serde_json::to_string(&high).unwrap(),
            "[2,128,1,1,1,0,0,0,0,0,0,0,128]"
        );
        let doc = bson::serialize_to_bson(&high).unwrap();
        assert!(matches!(doc, bson::Bson::Binary(_)), "{doc:?}");
        let err =
            serde_json::from_str::<Bloom<128, 2>>("[2,128,1,1,1,0,0,0,0,0,0,0,128]").unwrap_err();
        assert!(
            err.to_string()
                .contains("stored with K = 1 but read as K = 2"),
            "{err}"
        );
    }

    #[cfg(feature = "laws")]
    mod laws {
        use super::*;
        use crate::laws::assert_round_trip as assert_round_trips;

        // The laws of `Bloom` and `Bloom<64, 2>`, round trips of arbitrary
        // filters included: `bloom` and `bloom_small` in tests/laws.rs.

        #[test]
        fn round_trips_through_json_postcard_and_bson() {
            assert_round_trips(&filter_of::<8192, 7>(0..5_000));
            assert_round_trips(&filter_of::<1024, 1>(0..3));
        }
    }
}
