//! [`GCounter`]: a grow-only counter with one running total per actor.

use smallvec::SmallVec;

use crate::dot::{vv_merge_max, vv_total};
use crate::{Commutative, Idempotent, Monoid, Semigroup};

/// How many actors a [`GCounter`] or a [`PnCounter`](crate::PnCounter)
/// holds without a heap allocation.
pub(crate) const INLINE_ACTORS: usize = 4;

/// A counter's `(actor, total)` pairs: inline up to [`INLINE_ACTORS`].
pub(crate) type Counts<A> = SmallVec<[(A, u64); INLINE_ACTORS]>;

/// The position of `actor` in `entries` (sorted by `key`, distinct), or
/// where it would be inserted. Up to [`INLINE_ACTORS`] entries it scans
/// linearly: on a counter that is not in cache, the scan's loads are
/// independent, while a binary search chains load, compare and select
/// (with four actors, the scan measured 10–20 % faster on the updates
/// of `benches/counters.rs`).
#[inline]
pub(crate) fn position<T, A: Ord>(
    entries: &[T],
    actor: &A,
    key: impl Fn(&T) -> &A,
) -> Result<usize, usize> {
    if entries.len() > INLINE_ACTORS {
        return entries.binary_search_by(|e| key(e).cmp(actor));
    }
    for (i, e) in entries.iter().enumerate() {
        match key(e).cmp(actor) {
            std::cmp::Ordering::Less => {}
            std::cmp::Ordering::Equal => return Ok(i),
            std::cmp::Ordering::Greater => return Err(i),
        }
    }
    Err(entries.len())
}

/// The small vector of `items`: inline when they fit, else `items`' own
/// buffer (no copy).
pub(crate) fn small_from_vec<T, const N: usize>(items: Vec<T>) -> SmallVec<[T; N]> {
    if items.len() <= N {
        items.into_iter().collect()
    } else {
        SmallVec::from_vec(items)
    }
}

/// A grow-only counter: each actor keeps its own running total, combine
/// takes the maximum per actor, and the value is the sum of the totals.
///
/// - identity: the empty counter (value 0);
/// - laws: commutative and idempotent (a join-semilattice): re-delivering a
///   state or a delta changes nothing;
/// - representation: a list of `(actor, total)` sorted by actor, without
///   zero totals (canonical, so `==` compares values); small actor counts
///   are the norm, so up to four actors are stored inline, in the counter
///   itself (no heap allocation: a map of per-key counters holds them in
///   its own slots), and only a fifth actor moves the list to the heap;
///   combine is a linear merge and [`increment`](Self::increment) a search
///   (linear up to four actors, binary beyond) that allocates only when a
///   new actor does not fit;
/// - overflow: an actor's total saturates at `u64::MAX` (which keeps the
///   max-merge lawful), and [`value`](Self::value) saturates at `u64::MAX`;
///   note that BSON (MongoDB) stores only totals up to `i64::MAX`.
///
/// **A delta carries a new running total, not an increment.**
/// [`GCounter::delta`]`(actor, new_total)` overrides nothing smaller and is
/// harmless to re-deliver. Two *different* events that both emit
/// `delta(actor, 1)` count once, not twice: an actor must be something
/// whose total only the actor itself advances (a process, a partition, a
/// device). To count events under at-least-once delivery use
/// [`Count`](crate::Count), which the runtime applies exactly once.
///
/// Serialized as a sequence of `[actor, total]` pairs (BSON documents need
/// string keys, so no map).
///
/// # Examples
///
/// ```
/// use accrete_monoids::{GCounter, Monoid, Semigroup};
///
/// // Two devices count page views locally.
/// let mut phone = GCounter::new();
/// phone.increment(1_u64, 3);
/// let mut laptop = GCounter::new();
/// laptop.increment(2_u64, 5);
///
/// // Exchange states in any order, any number of times.
/// let mut merged = phone.clone();
/// merged.combine(&laptop);
/// merged.combine(&phone);
/// assert_eq!(merged.value(), 8);
///
/// // A delta carries the actor's new total.
/// merged.combine(&GCounter::delta(1, 4));
/// assert_eq!(merged.value(), 9);
/// assert_eq!(merged.get(&1), 4);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GCounter<A = u64> {
    /// Sorted by actor, no zero totals. Equality and hashing go through the
    /// slice, so inline and spilled storage of the same pairs are equal.
    counts: Counts<A>,
}

impl<A> Default for GCounter<A> {
    fn default() -> Self {
        GCounter::new()
    }
}

impl<A> GCounter<A> {
    /// The zero counter.
    #[inline]
    pub const fn new() -> Self {
        GCounter {
            counts: SmallVec::new_const(),
        }
    }

    /// The sum of all actors' totals, saturating at `u64::MAX`.
    #[inline]
    pub fn value(&self) -> u64 {
        u64::try_from(self.total()).unwrap_or(u64::MAX)
    }

    /// The exact sum (saturating at `u128::MAX`, unreachable).
    #[inline]
    pub(crate) fn total(&self) -> u128 {
        vv_total(&self.counts)
    }

    /// The actors and their totals, ascending by actor; no zero totals.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&A, u64)> + '_ {
        self.counts.iter().map(|(a, n)| (a, *n))
    }

    /// How many actors have a non-zero total.
    #[inline]
    pub fn actors(&self) -> usize {
        self.counts.len()
    }

    /// A counter of pairs already in canonical form: sorted by actor,
    /// distinct actors, no zero totals (not checked).
    pub(crate) fn from_canonical(counts: Counts<A>) -> Self {
        debug_assert!(counts.iter().all(|(_, n)| *n > 0));
        GCounter { counts }
    }
}

impl<A: Ord> GCounter<A> {
    /// The delta that raises `actor`'s total to `new_total` (the identity
    /// when `new_total` is 0).
    pub fn delta(actor: A, new_total: u64) -> Self {
        let mut counts = Counts::new();
        if new_total > 0 {
            counts.push((actor, new_total));
        }
        GCounter { counts }
    }

    /// `actor`'s total (0 if none).
    #[inline]
    pub fn get(&self, actor: &A) -> u64 {
        match position(&self.counts, actor, |(a, _)| a) {
            Ok(i) => self.counts[i].1,
            Err(_) => 0,
        }
    }

    /// Adds `by` to `actor`'s total, saturating at `u64::MAX`. Allocates
    /// only when the actor is new and does not fit: the first four actors
    /// are stored inline.
    #[inline]
    pub fn increment(&mut self, actor: A, by: u64) {
        if by == 0 {
            return;
        }
        match position(&self.counts, &actor, |(a, _)| a) {
            Ok(i) => {
                let total = &mut self.counts[i].1;
                *total = total.saturating_add(by);
            }
            Err(i) => self.counts.insert(i, (actor, by)),
        }
    }

    /// The delta of `increment(actor, by)` on this state: `actor`'s new
    /// total.
    pub fn increment_delta(&self, actor: A, by: u64) -> Self {
        if by == 0 {
            return GCounter::new();
        }
        let total = self.get(&actor).saturating_add(by);
        GCounter::delta(actor, total)
    }

    /// The canonical form of any list of `(actor, total)` pairs: sorted,
    /// maximum per actor, no zeros.
    pub(crate) fn from_pairs(mut counts: Vec<(A, u64)>) -> Self {
        crate::dot::vv_canonicalize(&mut counts);
        GCounter {
            counts: small_from_vec(counts),
        }
    }
}

impl<A: Ord> FromIterator<(A, u64)> for GCounter<A> {
    /// Collects `(actor, total)` pairs, keeping the maximum per actor.
    fn from_iter<I: IntoIterator<Item = (A, u64)>>(iter: I) -> Self {
        GCounter::from_pairs(iter.into_iter().collect())
    }
}

/// Maximum per actor.
impl<A: Ord + Clone> Semigroup for GCounter<A> {
    #[inline]
    fn combine(&mut self, other: &Self) {
        vv_merge_max(&mut self.counts, &other.counts);
    }

    fn combine_owned(&mut self, mut other: Self) {
        if other.counts.len() > self.counts.len() {
            std::mem::swap(self, &mut other);
        }
        vv_merge_max(&mut self.counts, &other.counts);
    }
}

impl<A: Ord + Clone> Monoid for GCounter<A> {
    #[inline]
    fn identity() -> Self {
        GCounter::new()
    }
    #[inline]
    fn is_identity(&self) -> bool {
        self.counts.is_empty()
    }
}

impl<A: Ord + Clone> Commutative for GCounter<A> {}
impl<A: Ord + Clone> Idempotent for GCounter<A> {}

/// The pairs as a sequence, the same as a `Vec<(actor, total)>` (the
/// persisted form; golden files pin it).
#[cfg(feature = "serde")]
impl<A: serde::Serialize> serde::Serialize for GCounter<A> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.counts.iter())
    }
}

#[cfg(feature = "serde")]
impl<'de, A> serde::Deserialize<'de> for GCounter<A>
where
    A: Ord + serde::Deserialize<'de>,
{
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let pairs = Vec::<(A, u64)>::deserialize(deserializer)?;
        Ok(GCounter::from_pairs(pairs))
    }
}

#[cfg(feature = "laws")]
impl quickcheck::Arbitrary for GCounter<u64> {
    fn arbitrary(g: &mut quickcheck::Gen) -> Self {
        use crate::dot::arb;
        let mut counter = GCounter::new();
        for _ in 0..arb::op_count(g) {
            if bool::arbitrary(g) {
                counter.increment(arb::actor(g), arb::amount(g));
            } else {
                let actor = arb::actor(g);
                let delta = counter.increment_delta(actor, arb::amount(g));
                counter.combine(&delta);
            }
        }
        counter
    }
    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        Box::new(self.counts.to_vec().shrink().map(GCounter::from_pairs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increments_and_merges() {
        let mut c = GCounter::new();
        c.increment(3_u64, 2);
        c.increment(1, 1);
        c.increment(3, 4);
        c.increment(2, 0);
        assert_eq!(c.iter().collect::<Vec<_>>(), [(&1, 1), (&3, 6)]);
        assert_eq!(c.value(), 7);
        c.combine(&GCounter::from_iter([(1, 5), (2, 2), (3, 1)]));
        assert_eq!(c.iter().collect::<Vec<_>>(), [(&1, 5), (&2, 2), (&3, 6)]);
        assert_eq!(c.actors(), 3);
        assert_eq!(GCounter::delta(9_u64, 0), GCounter::new());
        assert_eq!(c.increment_delta(1, 2), GCounter::delta(1, 7));
        assert!(c.increment_delta(1, 0).is_identity());
    }

    #[test]
    fn increment_matches_its_delta() {
        let mut c: GCounter = [(1, 4), (2, 7)].into_iter().collect();
        for (actor, by) in [(1, 3), (5, 2), (2, 0)] {
            let expected = c.clone().combined(&c.increment_delta(actor, by));
            c.increment(actor, by);
            assert_eq!(c, expected);
        }
    }

    #[test]
    fn saturates_instead_of_overflowing() {
        let mut c = GCounter::new();
        c.increment(1_u64, u64::MAX);
        c.increment(1, 5);
        assert_eq!(c.get(&1), u64::MAX);
        c.increment(2, 5);
        assert_eq!(c.value(), u64::MAX);
        assert_eq!(c.total(), u128::from(u64::MAX) + 5);
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serializes_as_pairs_and_canonicalizes() {
        let c: GCounter = [(2, 5), (1, 3)].into_iter().collect();
        assert_eq!(serde_json::to_string(&c).unwrap(), "[[1,3],[2,5]]");
        let back: GCounter = serde_json::from_str("[[2,5],[1,0],[2,9],[1,3]]").unwrap();
        assert_eq!(back, [(1, 3), (2, 9)].into_iter().collect());
        let named: GCounter<String> = serde_json::from_str(r#"[["b",1],["a",2]]"#).unwrap();
        assert_eq!(named.get(&"a".to_string()), 2);
    }

    fn hash_of<T: std::hash::Hash>(value: &T) -> u64 {
        use std::hash::BuildHasher;
        std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default().hash_one(value)
    }

    /// Past four actors the pairs move to the heap; a list that fits again
    /// (decoded, or collected from duplicates) is stored inline. Either way
    /// equality, hashing and the persisted form depend on the pairs only.
    #[cfg(feature = "serde")]
    #[test]
    fn spilling_and_back_keeps_equality_and_serialization_canonical() {
        // Grown one actor at a time, in scrambled order: spills at the fifth.
        let mut grown = GCounter::new();
        for (i, actor) in [5_u64, 2, 7, 0, 3, 6, 1, 4].into_iter().enumerate() {
            grown.increment(actor, actor + 1);
            assert_eq!(grown.counts.spilled(), i >= INLINE_ACTORS, "{i}");
        }
        let json = "[[0,1],[1,2],[2,3],[3,4],[4,5],[5,6],[6,7],[7,8]]";
        assert_eq!(serde_json::to_string(&grown).unwrap(), json);

        // The same state by merging inline halves, borrowed and owned, and
        // by decoding.
        let low: GCounter = (0..4).map(|a| (a, a + 1)).collect();
        let high: GCounter = (4..8).map(|a| (a, a + 1)).collect();
        assert!(!low.counts.spilled() && !high.counts.spilled());
        let merged = low.clone().combined(&high);
        let mut owned = high.clone();
        owned.combine_owned(low.clone());
        let decoded: GCounter = serde_json::from_str(json).unwrap();
        for other in [&merged, &owned, &decoded] {
            assert!(other.counts.spilled());
            assert_eq!(*other, grown);
            assert_eq!(hash_of(other), hash_of(&grown));
            assert_eq!(
                postcard::to_allocvec(other).unwrap(),
                postcard::to_allocvec(&grown).unwrap()
            );
        }

        // Back: eight encoded pairs that canonicalize to three actors are
        // stored inline, and equal the counter grown inline.
        let back: GCounter =
            serde_json::from_str("[[2,3],[1,0],[2,1],[0,1],[1,2],[0,0],[2,2],[1,1]]").unwrap();
        assert!(!back.counts.spilled());
        let small: GCounter = [(0, 1), (1, 2), (2, 3)].into_iter().collect();
        assert_eq!(back, small);
        assert_eq!(serde_json::to_string(&back).unwrap(), "[[0,1],[1,2],[2,3]]");

        // The same pairs spilled to the heap are still equal to, hash as and
        // serialize as the inline ones.
        let mut counts = Counts::with_capacity(2 * INLINE_ACTORS);
        counts.extend(small.counts.iter().copied());
        let heap = GCounter::from_canonical(counts);
        assert!(heap.counts.spilled());
        assert_eq!(heap, small);
        assert_eq!(hash_of(&heap), hash_of(&small));
        assert_eq!(
            postcard::to_allocvec(&heap).unwrap(),
            postcard::to_allocvec(&small).unwrap()
        );
        // A clone of it fits inline again.
        assert!(!heap.clone().counts.spilled());
    }
}

#[cfg(all(test, feature = "laws"))]
mod laws {
    use super::*;
    use crate::test_util::{check, verdict};

    // The semilattice laws of `GCounter`: `gcounter` in tests/laws.rs.

    #[test]
    fn value_is_the_sum_of_the_maxima() {
        fn prop(a: GCounter, b: GCounter) -> quickcheck::TestResult {
            let merged = a.clone().combined(&b);
            let expected: u64 = (0..4).map(|actor| a.get(&actor).max(b.get(&actor))).sum();
            verdict(merged.value() == expected, (a, b, merged))
        }
        check(
            "gcounter::value_is_the_sum_of_the_maxima",
            prop as fn(_, _) -> quickcheck::TestResult,
        );
    }

    /// The semilattice laws and round trips with up to 12 actors, so that
    /// counters spill past the inline capacity (`Arbitrary` uses 4).
    #[test]
    fn laws_hold_past_the_inline_capacity() {
        use crate::laws::Laws;
        use quickcheck::Arbitrary;
        Laws::<GCounter>::new("gcounter::many_actors")
            .commutative()
            .idempotent()
            .generator(|g| {
                let mut counter = GCounter::new();
                for _ in 0..usize::arbitrary(g) % 24 {
                    let actor = u64::arbitrary(g) % 12;
                    if bool::arbitrary(g) {
                        counter.increment(actor, u64::arbitrary(g) % 10);
                    } else {
                        counter.combine(&GCounter::delta(actor, u64::arbitrary(g) % 20));
                    }
                }
                counter
            })
            .assert();
    }
}
