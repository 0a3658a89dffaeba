//! [`PnCounter`]: a counter that goes up and down: per actor, a grow-only
//! total of increments and one of decrements.

use std::fmt;

use smallvec::SmallVec;

use crate::dot::merge_join;
use crate::gcounter::{Counts, INLINE_ACTORS, position};
use crate::{Commutative, GCounter, Idempotent, Monoid, Semigroup};

/// One actor's `(actor, increments, decrements)`.
type Entry<A> = (A, u64, u64);

/// A counter that can be incremented and decremented: per actor, a
/// grow-only total of increments and one of decrements (two [`GCounter`]s,
/// in effect); the value is their difference.
///
/// - identity: the empty counter (value 0);
/// - laws: commutative and idempotent (a join-semilattice), because each
///   half is;
/// - deltas carry running totals, not increments, exactly as for
///   [`GCounter`] (read its note on what an actor must be);
/// - overflow: each actor's increment and decrement totals saturate at
///   `u64::MAX`; the difference is computed exactly in `i128`
///   ([`value_i128`](Self::value_i128)) and [`value`](Self::value)
///   saturates it to `i64::MIN..=i64::MAX` (never wraps);
/// - representation: one list of `(actor, increments, decrements)` sorted
///   by actor, without entries whose totals are both 0 (canonical, so `==`
///   compares values); up to four actors are stored inline, without a heap
///   allocation, as in [`GCounter`];
/// - serialized as `{"increments": [[actor, total], ...], "decrements": [...]}`
///   (each half as a [`GCounter`] serializes: ascending actors, no zeros).
///
/// # Examples
///
/// ```
/// use accrete_monoids::{Monoid, PnCounter, Semigroup};
///
/// let mut stock = PnCounter::new();
/// stock.increment(1_u64, 10); // warehouse 1 receives 10
/// stock.decrement(2, 3); // shop 2 sells 3
///
/// // A delta from shop 2, delivered twice.
/// let sale = stock.decrement_delta(2, 1);
/// stock.combine(&sale);
/// stock.combine(&sale);
/// assert_eq!(stock.value(), 6);
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PnCounter<A = u64> {
    /// Sorted by actor; no entry whose totals are both 0. Equality and
    /// hashing go through the slice (inline or spilled alike).
    entries: SmallVec<[Entry<A>; INLINE_ACTORS]>,
}

impl<A> Default for PnCounter<A> {
    fn default() -> Self {
        PnCounter::new()
    }
}

impl<A> PnCounter<A> {
    /// The zero counter.
    #[inline]
    pub const fn new() -> Self {
        PnCounter {
            entries: SmallVec::new_const(),
        }
    }

    /// Increments minus decrements, saturated to the range of `i64`.
    #[inline]
    pub fn value(&self) -> i64 {
        let exact = self.value_i128();
        i64::try_from(exact).unwrap_or(if exact < 0 { i64::MIN } else { i64::MAX })
    }

    /// Increments minus decrements, exactly.
    pub fn value_i128(&self) -> i128 {
        let (plus, minus) = self.entries.iter().fold((0_u128, 0_u128), |(p, m), e| {
            (
                p.saturating_add(u128::from(e.1)),
                m.saturating_add(u128::from(e.2)),
            )
        });
        let plus = i128::try_from(plus).unwrap_or(i128::MAX);
        let minus = i128::try_from(minus).unwrap_or(i128::MAX);
        plus.saturating_sub(minus)
    }

    /// One half's `(actor, total)` pairs, ascending by actor, without zeros.
    fn half(&self, up: bool) -> impl Iterator<Item = (&A, u64)> + '_ {
        self.entries
            .iter()
            .map(move |(a, p, m)| (a, if up { *p } else { *m }))
            .filter(|(_, n)| *n > 0)
    }

    /// The number of actors with a non-zero total in one half.
    fn half_len(&self, up: bool) -> usize {
        self.half(up).count()
    }
}

impl<A: Clone> PnCounter<A> {
    /// The increments, per actor: a copy, which allocates only beyond four
    /// actors.
    pub fn increments(&self) -> GCounter<A> {
        self.half_counter(true)
    }

    /// The decrements, per actor: a copy, which allocates only beyond four
    /// actors.
    pub fn decrements(&self) -> GCounter<A> {
        self.half_counter(false)
    }

    fn half_counter(&self, up: bool) -> GCounter<A> {
        let mut counts = Counts::with_capacity(self.half_len(up));
        counts.extend(self.half(up).map(|(a, n)| (a.clone(), n)));
        GCounter::from_canonical(counts)
    }
}

impl<A: Ord> PnCounter<A> {
    /// Adds `by` to `actor`'s increments, saturating at `u64::MAX`. Allocates
    /// only when the actor is new and does not fit: the first four actors
    /// are stored inline.
    #[inline]
    pub fn increment(&mut self, actor: A, by: u64) {
        self.add(actor, by, true);
    }

    /// Adds `by` to `actor`'s decrements, saturating at `u64::MAX`. Allocates
    /// only when the actor is new and does not fit: the first four actors
    /// are stored inline.
    #[inline]
    pub fn decrement(&mut self, actor: A, by: u64) {
        self.add(actor, by, false);
    }

    #[inline]
    fn add(&mut self, actor: A, by: u64, up: bool) {
        if by == 0 {
            return;
        }
        match position(&self.entries, &actor, |(a, _, _)| a) {
            Ok(i) => {
                let (_, plus, minus) = &mut self.entries[i];
                let total = if up { plus } else { minus };
                *total = total.saturating_add(by);
            }
            Err(i) => {
                let entry = if up { (actor, by, 0) } else { (actor, 0, by) };
                self.entries.insert(i, entry);
            }
        }
    }

    /// `actor`'s `(increments, decrements)` (zeros if none).
    fn totals(&self, actor: &A) -> (u64, u64) {
        match position(&self.entries, actor, |(a, _, _)| a) {
            Ok(i) => (self.entries[i].1, self.entries[i].2),
            Err(_) => (0, 0),
        }
    }

    /// The counter holding one actor's totals (the identity if both are 0).
    fn single(actor: A, plus: u64, minus: u64) -> Self {
        let mut entries = SmallVec::new();
        if plus > 0 || minus > 0 {
            entries.push((actor, plus, minus));
        }
        PnCounter { entries }
    }

    /// The delta of `increment(actor, by)` on this state.
    pub fn increment_delta(&self, actor: A, by: u64) -> Self {
        if by == 0 {
            return PnCounter::new();
        }
        let total = self.totals(&actor).0.saturating_add(by);
        PnCounter::single(actor, total, 0)
    }

    /// The delta of `decrement(actor, by)` on this state.
    pub fn decrement_delta(&self, actor: A, by: u64) -> Self {
        if by == 0 {
            return PnCounter::new();
        }
        let total = self.totals(&actor).1.saturating_add(by);
        PnCounter::single(actor, 0, total)
    }

    /// The canonical form of any two lists of `(actor, total)` pairs, the
    /// increments and the decrements: maximum per actor and half.
    #[cfg(feature = "serde")]
    fn from_halves(mut plus: Vec<(A, u64)>, mut minus: Vec<(A, u64)>) -> Self {
        use std::cmp::Ordering;
        crate::dot::vv_canonicalize(&mut plus);
        crate::dot::vv_canonicalize(&mut minus);
        let mut entries = SmallVec::with_capacity(plus.len().max(minus.len()));
        let (mut plus, mut minus) = (plus.into_iter().peekable(), minus.into_iter().peekable());
        loop {
            let order = match (plus.peek(), minus.peek()) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some((a, _)), Some((b, _))) => a.cmp(b),
            };
            let entry = match order {
                Ordering::Less => plus.next().map(|(a, p)| (a, p, 0)),
                Ordering::Greater => minus.next().map(|(a, m)| (a, 0, m)),
                Ordering::Equal => plus
                    .next()
                    .zip(minus.next())
                    .map(|((a, p), (_, m))| (a, p, m)),
            };
            entries.extend(entry);
        }
        PnCounter { entries }
    }
}

/// Maximum per actor, of the increments and of the decrements: each half
/// combines as a [`GCounter`].
impl<A: Ord + Clone> Semigroup for PnCounter<A> {
    #[inline]
    fn combine(&mut self, other: &Self) {
        merge_join(
            &mut self.entries,
            &other.entries,
            |(a, _, _)| a,
            |(_, p, m), (_, q, n)| {
                *p = (*p).max(*q);
                *m = (*m).max(*n);
            },
            |e| Some(e.clone()),
        );
    }

    fn combine_owned(&mut self, mut other: Self) {
        if other.entries.len() > self.entries.len() {
            std::mem::swap(self, &mut other);
        }
        self.combine(&other);
    }
}

impl<A: Ord + Clone> Monoid for PnCounter<A> {
    #[inline]
    fn identity() -> Self {
        PnCounter::new()
    }
    #[inline]
    fn is_identity(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<A: Ord + Clone> Commutative for PnCounter<A> {}
impl<A: Ord + Clone> Idempotent for PnCounter<A> {}

/// As the two halves it represents:
/// `PnCounter { increments: GCounter { counts: [..] }, decrements: .. }`.
impl<A: fmt::Debug> fmt::Debug for PnCounter<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PnCounter")
            .field("increments", &Half(self, true))
            .field("decrements", &Half(self, false))
            .finish()
    }
}

/// One half of a [`PnCounter`], for `Debug` and `Serialize`: `true` for the
/// increments.
struct Half<'a, A>(&'a PnCounter<A>, bool);

impl<A: fmt::Debug> fmt::Debug for Half<'_, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Pairs<'a, A>(&'a Half<'a, A>);
        impl<A: fmt::Debug> fmt::Debug for Pairs<'_, A> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let Half(counter, up) = self.0;
                f.debug_list().entries(counter.half(*up)).finish()
            }
        }
        f.debug_struct("GCounter")
            .field("counts", &Pairs(self))
            .finish()
    }
}

/// A sequence of `[actor, total]` pairs, as [`GCounter`] serializes.
#[cfg(feature = "serde")]
impl<A: serde::Serialize> serde::Serialize for Half<'_, A> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let Half(counter, up) = *self;
        let mut seq = serializer.serialize_seq(Some(counter.half_len(up)))?;
        for pair in counter.half(up) {
            seq.serialize_element(&pair)?;
        }
        seq.end()
    }
}

/// The persisted form of the two-`GCounter` representation, unchanged:
/// a struct `PnCounter { increments, decrements }`, each a sequence of
/// `(actor, total)` pairs (golden files pin it).
#[cfg(feature = "serde")]
impl<A: serde::Serialize> serde::Serialize for PnCounter<A> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("PnCounter", 2)?;
        s.serialize_field("increments", &Half(self, true))?;
        s.serialize_field("decrements", &Half(self, false))?;
        s.end()
    }
}

/// Reads the two halves (each as a [`GCounter`] does: any order, maximum
/// per actor, zeros dropped) and merges them into one list.
#[cfg(feature = "serde")]
impl<'de, A> serde::Deserialize<'de> for PnCounter<A>
where
    A: Ord + serde::Deserialize<'de>,
{
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(rename = "PnCounter")]
        #[serde(bound(deserialize = "A: serde::Deserialize<'de>"))]
        struct Repr<A> {
            increments: Vec<(A, u64)>,
            decrements: Vec<(A, u64)>,
        }
        let Repr {
            increments,
            decrements,
        } = Repr::deserialize(deserializer)?;
        Ok(PnCounter::from_halves(increments, decrements))
    }
}

#[cfg(feature = "laws")]
impl quickcheck::Arbitrary for PnCounter<u64> {
    fn arbitrary(g: &mut quickcheck::Gen) -> Self {
        use crate::dot::arb;
        let mut counter = PnCounter::new();
        for _ in 0..arb::op_count(g) {
            let (actor, by) = (arb::actor(g), arb::amount(g));
            match arb::index(g, 4) {
                0 => counter.increment(actor, by),
                1 => counter.decrement(actor, by),
                2 => counter.combine(&counter.increment_delta(actor, by)),
                _ => counter.combine(&counter.decrement_delta(actor, by)),
            }
        }
        counter
    }
    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        let pairs = |up| self.half(up).map(|(a, n)| (*a, n)).collect::<Vec<_>>();
        Box::new(
            (pairs(true), pairs(false))
                .shrink()
                .map(|(plus, minus)| PnCounter::from_halves(plus, minus)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The semilattice laws: `pncounter` in tests/laws.rs.

    #[test]
    fn counts_up_and_down() {
        let mut c = PnCounter::new();
        c.increment(1_u64, 5);
        c.decrement(1, 7);
        c.decrement(2, 1);
        assert_eq!(c.value(), -3);
        assert_eq!(c.increments().value(), 5);
        assert_eq!(c.decrements().value(), 8);
        let d = c.increment_delta(1, 1);
        assert_eq!(d.increments().get(&1), 6);
        c.combine(&d);
        c.combine(&d);
        assert_eq!(c.value(), -2);
    }

    #[test]
    fn value_saturates_and_value_i128_is_exact() {
        let mut c = PnCounter::new();
        c.increment(1_u64, u64::MAX);
        c.increment(2, u64::MAX);
        assert_eq!(c.value(), i64::MAX);
        assert_eq!(c.value_i128(), 2 * i128::from(u64::MAX));
        let mut d = PnCounter::new();
        d.decrement(1_u64, u64::MAX);
        assert_eq!(d.value(), i64::MIN);
        assert_eq!(d.value_i128(), -i128::from(u64::MAX));
        d.increment(1, 10);
        assert_eq!(d.value(), i64::MIN);
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serialized_form() {
        let mut c = PnCounter::new();
        c.increment(1_u64, 2);
        c.decrement(3, 4);
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"increments":[[1,2]],"decrements":[[3,4]]}"#
        );
    }

    #[test]
    fn halves_deltas_and_debug() {
        let mut c = PnCounter::new();
        c.decrement(2_u64, 1);
        c.increment(1, 5);
        c.decrement(1, 7);
        c.increment(3, 0);
        assert_eq!(c.increments(), GCounter::delta(1, 5));
        assert_eq!(
            c.decrements(),
            [(1, 7), (2, 1)].into_iter().collect::<GCounter>()
        );
        assert_eq!(
            format!("{c:?}"),
            "PnCounter { increments: GCounter { counts: [(1, 5)] }, \
             decrements: GCounter { counts: [(1, 7), (2, 1)] } }"
        );
        // A delta carries one half's new total for one actor, nothing else.
        let d = c.decrement_delta(1, 2);
        assert!(d.increments().is_identity());
        assert_eq!(d.decrements(), GCounter::delta(1, 9));
        assert!(c.increment_delta(2, 0).is_identity());
        assert_eq!(c.increment_delta(2, 3).increments(), GCounter::delta(2, 3));
        assert_eq!(PnCounter::<u64>::new().increments(), GCounter::new());
    }

    fn hash_of<T: std::hash::Hash>(value: &T) -> u64 {
        use std::hash::BuildHasher;
        std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default().hash_one(value)
    }

    /// The persisted form of the former representation, two `GCounter`s.
    #[cfg(feature = "serde")]
    #[derive(serde::Serialize)]
    #[serde(rename = "PnCounter")]
    struct TwoCounters {
        increments: GCounter,
        decrements: GCounter,
    }

    #[cfg(feature = "serde")]
    fn as_two_counters(c: &PnCounter) -> TwoCounters {
        TwoCounters {
            increments: c.increments(),
            decrements: c.decrements(),
        }
    }

    /// Past four actors the entries move to the heap; a list that fits
    /// again (decoded, or collected from duplicates) is stored inline.
    /// Either way equality, hashing and the persisted form (that of two
    /// `GCounter`s) depend on the totals only.
    #[cfg(feature = "serde")]
    #[test]
    fn spilling_and_back_keeps_equality_and_serialization_canonical() {
        // Grown one actor at a time, in scrambled order: spills at the
        // fifth. Even actors only increment, 3 only decrements, 1, 5 and 7
        // do both.
        let mut grown = PnCounter::new();
        for (i, actor) in [5_u64, 2, 7, 0, 3, 6, 1, 4].into_iter().enumerate() {
            if actor != 3 {
                grown.increment(actor, actor + 1);
            }
            if actor % 2 == 1 {
                grown.decrement(actor, 10 * actor);
            }
            assert_eq!(grown.entries.spilled(), i >= INLINE_ACTORS, "{i}");
        }
        let json = concat!(
            r#"{"increments":[[0,1],[1,2],[2,3],[4,5],[5,6],[6,7],[7,8]],"#,
            r#""decrements":[[1,10],[3,30],[5,50],[7,70]]}"#
        );
        assert_eq!(serde_json::to_string(&grown).unwrap(), json);
        assert_eq!(
            serde_json::to_string(&as_two_counters(&grown)).unwrap(),
            json
        );
        assert_eq!(
            postcard::to_allocvec(&grown).unwrap(),
            postcard::to_allocvec(&as_two_counters(&grown)).unwrap()
        );
        assert_eq!(grown.value(), 32 - 160);

        // The same state by merging inline parts, borrowed and owned, and
        // by decoding either form.
        let (mut low, mut high) = (PnCounter::new(), PnCounter::new());
        for actor in 0..8 {
            let part = if actor < 4 { &mut low } else { &mut high };
            part.increment(actor, grown.increments().get(&actor));
            part.decrement(actor, grown.decrements().get(&actor));
        }
        assert!(!low.entries.spilled() && !high.entries.spilled());
        let merged = low.clone().combined(&high);
        let mut owned = low.clone();
        owned.combine_owned(high.clone());
        let decoded: PnCounter = serde_json::from_str(json).unwrap();
        let bytes = postcard::to_allocvec(&grown).unwrap();
        let from_postcard: PnCounter = postcard::from_bytes(&bytes).unwrap();
        for other in [&merged, &owned, &decoded, &from_postcard] {
            assert!(other.entries.spilled());
            assert_eq!(*other, grown);
            assert_eq!(hash_of(other), hash_of(&grown));
            assert_eq!(postcard::to_allocvec(other).unwrap(), bytes);
        }

        // Back: non-canonical halves (duplicates, zeros, any order) that
        // come down to three actors are stored inline.
        let back: PnCounter = serde_json::from_str(
            r#"{"increments":[[2,1],[1,0],[2,3],[0,4],[5,0]],"decrements":[[1,2],[0,0],[1,1],[5,0]]}"#,
        )
        .unwrap();
        assert!(!back.entries.spilled());
        let mut small = PnCounter::new();
        small.increment(0_u64, 4);
        small.decrement(1, 2);
        small.increment(2, 3);
        assert_eq!(back, small);
        assert_eq!(
            serde_json::to_string(&back).unwrap(),
            r#"{"increments":[[0,4],[2,3]],"decrements":[[1,2]]}"#
        );

        // The same entries on the heap: still equal, same hash and bytes.
        let mut entries = SmallVec::with_capacity(2 * INLINE_ACTORS);
        entries.extend(small.entries.iter().copied());
        let heap = PnCounter { entries };
        assert!(heap.entries.spilled());
        assert_eq!(heap, small);
        assert_eq!(hash_of(&heap), hash_of(&small));
        assert_eq!(
            postcard::to_allocvec(&heap).unwrap(),
            postcard::to_allocvec(&small).unwrap()
        );
        assert!(!heap.clone().entries.spilled());
    }
}

#[cfg(all(test, feature = "laws"))]
mod laws {
    use super::*;
    use crate::laws::Laws;
    use quickcheck::Arbitrary;

    /// The semilattice laws and round trips with up to 12 actors, so that
    /// counters spill past the inline capacity (`Arbitrary` uses 4).
    #[test]
    fn laws_hold_past_the_inline_capacity() {
        Laws::<PnCounter>::new("pncounter::many_actors")
            .commutative()
            .idempotent()
            .generator(|g| {
                let mut counter = PnCounter::new();
                for _ in 0..usize::arbitrary(g) % 24 {
                    let actor = u64::arbitrary(g) % 12;
                    let by = u64::arbitrary(g) % 10;
                    match usize::arbitrary(g) % 4 {
                        0 => counter.increment(actor, by),
                        1 => counter.decrement(actor, by),
                        2 => counter.combine(&counter.increment_delta(actor, by)),
                        _ => counter.combine(&counter.decrement_delta(actor, by)),
                    }
                }
                counter
            })
            .assert();
    }
}
