//! [`Dot`] and [`CausalContext`]: the causality bookkeeping shared by the
//! dotted CRDTs ([`OrSet`](crate::OrSet)), plus the sorted version-vector
//! helpers used by [`GCounter`](crate::GCounter) and
//! [`MultiValue`](crate::MultiValue).

use std::cmp::Ordering;
use std::fmt;
use std::ops::DerefMut;

use smallvec::SmallVec;

use crate::{Commutative, Idempotent, Monoid, Semigroup};

/// One event of one actor: the `counter`-th event created by `actor`.
///
/// Counters minted by this crate start at 1. A dot supplied from outside
/// (for example an event id, see [`OrSet::add_with_dot`](crate::OrSet::add_with_dot))
/// may have any counter; counter 0 is accepted, but a [`CausalContext`]
/// can only compact the contiguous range `1..=n`, so a dot with counter 0
/// stays in its dot cloud forever. Prefer `offset + 1` for 0-based ids.
///
/// Dots order by actor, then counter.
///
/// # Examples
///
/// ```
/// use accrete_monoids::Dot;
///
/// let dot = Dot::new(7_u64, 1);
/// assert_eq!((dot.actor, dot.counter), (7, 1));
/// assert!(Dot::new(1_u64, 9) < Dot::new(2, 1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Dot<A = u64> {
    /// Who created the event.
    pub actor: A,
    /// The actor's sequence number for the event.
    pub counter: u64,
}

impl<A> Dot<A> {
    /// The `counter`-th event of `actor`.
    #[inline]
    pub const fn new(actor: A, counter: u64) -> Self {
        Dot { actor, counter }
    }
}

/// A set of [`Dot`]s, stored compactly: a version vector (for each actor,
/// the contiguous range of counters `1..=n`) plus a *dot cloud* for the
/// dots that arrived out of order (beyond a gap).
///
/// The representation is canonical: after every operation each actor's
/// range is extended as far as the cloud allows, and the cloud holds no dot
/// the range covers. Two contexts therefore compare equal exactly when they
/// contain the same dots.
///
/// - combine: set union; identity: the empty context;
/// - laws: commutative and idempotent (a join-semilattice).
///
/// # Examples
///
/// ```
/// use accrete_monoids::{CausalContext, Dot, Semigroup};
///
/// let mut seen: CausalContext = [Dot::new(1, 1), Dot::new(1, 3)].into_iter().collect();
/// assert!(seen.contains(&Dot::new(1, 3)));
/// assert!(!seen.contains(&Dot::new(1, 2)));
///
/// // Dot 2 fills the gap: the cloud compacts into the range 1..=3.
/// seen.combine(&[Dot::new(1, 2)].into_iter().collect());
/// assert_eq!(seen, [Dot::new(1, 3), Dot::new(1, 2), Dot::new(1, 1)].into_iter().collect());
/// assert_eq!(seen.max_counter(&1), 3);
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct CausalContext<A = u64> {
    /// Sorted by actor; no zero entries. `(a, n)`: dots `(a, 1..=n)`.
    clock: Vec<(A, u64)>,
    /// Sorted, deduplicated, and disjoint from (and not adjacent to) `clock`.
    cloud: Vec<Dot<A>>,
}

impl<A: fmt::Debug> fmt::Debug for CausalContext<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CausalContext")
            .field("clock", &self.clock)
            .field("cloud", &self.cloud)
            .finish()
    }
}

impl<A> Default for CausalContext<A> {
    fn default() -> Self {
        CausalContext {
            clock: Vec::new(),
            cloud: Vec::new(),
        }
    }
}

impl<A> CausalContext<A> {
    /// The empty context.
    #[inline]
    pub const fn new() -> Self {
        CausalContext {
            clock: Vec::new(),
            cloud: Vec::new(),
        }
    }

    /// Whether the context holds no dot.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.clock.is_empty() && self.cloud.is_empty()
    }

    /// The compact part: for each actor (ascending), `n` such that the dots
    /// `1..=n` are all in the context.
    pub fn clock(&self) -> impl Iterator<Item = (&A, u64)> + '_ {
        self.clock.iter().map(|(a, n)| (a, *n))
    }

    /// The dots beyond a gap in their actor's range, ascending.
    pub fn cloud(&self) -> impl Iterator<Item = &Dot<A>> + '_ {
        self.cloud.iter()
    }
}

impl<A: Ord> CausalContext<A> {
    /// Whether `dot` is in the context.
    #[inline]
    pub fn contains(&self, dot: &Dot<A>) -> bool {
        let n = vv_get(&self.clock, &dot.actor);
        (dot.counter != 0 && dot.counter <= n)
            || self.cloud_position(&dot.actor, dot.counter).is_ok()
    }

    /// The greatest counter of `actor` in the context (0 if none).
    pub fn max_counter(&self, actor: &A) -> u64 {
        let n = vv_get(&self.clock, actor);
        let end = self.cloud.partition_point(|d| d.actor <= *actor);
        match end.checked_sub(1).and_then(|i| self.cloud.get(i)) {
            Some(d) if d.actor == *actor => n.max(d.counter),
            _ => n,
        }
    }

    #[inline]
    fn cloud_position(&self, actor: &A, counter: u64) -> Result<usize, usize> {
        self.cloud
            .binary_search_by(|d| d.actor.cmp(actor).then(d.counter.cmp(&counter)))
    }

    /// Whether `self` holds any dot `(actor, c)` with `1 <= c <= n`.
    fn overlaps_range(&self, actor: &A, n: u64) -> bool {
        if n == 0 {
            return false;
        }
        if vv_get(&self.clock, actor) >= 1 {
            return true;
        }
        let first = match self.cloud_position(actor, 1) {
            Ok(_) => return true,
            Err(i) => i,
        };
        self.cloud
            .get(first)
            .is_some_and(|d| d.actor == *actor && d.counter <= n)
    }

    /// Whether the representation is canonical (see the type's docs).
    #[cfg(all(test, feature = "laws"))]
    pub(crate) fn is_canonical(&self) -> bool {
        self.clock.windows(2).all(|w| w[0].0 < w[1].0)
            && self.clock.iter().all(|(_, n)| *n > 0)
            && self.cloud.windows(2).all(|w| w[0] < w[1])
            && self.cloud.iter().all(|d| {
                let n = vv_get(&self.clock, &d.actor);
                d.counter == 0 || d.counter > n.saturating_add(1)
            })
    }

    /// Whether the two contexts share no dot.
    pub(crate) fn is_disjoint(&self, other: &Self) -> bool {
        let (small, big) =
            if self.clock.len() + self.cloud.len() <= other.clock.len() + other.cloud.len() {
                (self, other)
            } else {
                (other, self)
            };
        small.clock.iter().all(|(a, n)| !big.overlaps_range(a, *n))
            && small.cloud.iter().all(|d| !big.contains(d))
    }
}

impl<A: Ord + Clone> CausalContext<A> {
    /// Adds one dot, keeping the representation canonical.
    pub fn insert(&mut self, dot: Dot<A>) {
        match self.clock.binary_search_by(|(a, _)| a.cmp(&dot.actor)) {
            Ok(i) => {
                let n = self.clock[i].1;
                if dot.counter != 0 && dot.counter <= n {
                    return;
                }
                if n.checked_add(1) == Some(dot.counter) {
                    self.clock[i].1 = dot.counter;
                    self.absorb_cloud(i);
                    return;
                }
            }
            Err(i) => {
                if dot.counter == 1 {
                    self.clock.insert(i, (dot.actor, 1));
                    self.absorb_cloud(i);
                    return;
                }
            }
        }
        if let Err(j) = self.cloud_position(&dot.actor, dot.counter) {
            self.cloud.insert(j, dot);
        }
    }

    /// Extends `clock[i]` with the cloud dots that have become contiguous.
    fn absorb_cloud(&mut self, i: usize) {
        while let Some((actor, n)) = self.clock.get(i) {
            let Some(next) = n.checked_add(1) else { return };
            match self.cloud_position(actor, next) {
                Ok(j) => {
                    self.cloud.remove(j);
                    self.clock[i].1 = next;
                }
                Err(_) => return,
            }
        }
    }

    /// The next dot for `actor`: one past the greatest counter seen for it.
    /// `None` when that counter is `u64::MAX`.
    pub fn next_dot(&self, actor: A) -> Option<Dot<A>> {
        let counter = self.max_counter(&actor).checked_add(1)?;
        Some(Dot { actor, counter })
    }

    /// Mints [`next_dot`](Self::next_dot) and inserts it: the in-place fast
    /// path of an add.
    pub(crate) fn mint(&mut self, actor: A) -> Option<Dot<A>> {
        // The actor's cloud dots, if any, end just before `end`.
        let end = self.cloud.partition_point(|d| d.actor <= actor);
        let cloud_max = match end.checked_sub(1).and_then(|i| self.cloud.get(i)) {
            Some(d) if d.actor == actor => Some(d.counter),
            _ => None,
        };
        let position = self.clock.binary_search_by(|(a, _)| a.cmp(&actor));
        let n = match position {
            Ok(i) => self.clock[i].1,
            Err(_) => 0,
        };
        let counter = n.max(cloud_max.unwrap_or(0)).checked_add(1)?;
        if n.checked_add(1) == Some(counter) {
            // No cloud dot above the range (at most the never-compacted
            // counter 0): the new dot extends the range.
            match position {
                Ok(i) => self.clock[i].1 = counter,
                Err(i) => self.clock.insert(i, (actor.clone(), counter)),
            }
        } else {
            // A gap lies below the actor's cloud dots: the new dot, greater
            // than all of them, goes right after them.
            self.cloud.insert(
                end,
                Dot {
                    actor: actor.clone(),
                    counter,
                },
            );
        }
        Some(Dot { actor, counter })
    }

    /// Restores the canonical form after the cloud or the clock changed in
    /// bulk. Expects `cloud` sorted and deduplicated and `clock` canonical.
    fn compact(&mut self) {
        if self.cloud.is_empty() {
            return;
        }
        let cloud = std::mem::take(&mut self.cloud);
        let mut kept = Vec::new();
        let mut started: Vec<(A, u64)> = Vec::new();
        let mut dots = cloud.into_iter().peekable();
        while let Some(first) = dots.peek() {
            let actor = first.actor.clone();
            let position = self.clock.binary_search_by(|(a, _)| a.cmp(&actor));
            let mut n = match position {
                Ok(i) => self.clock[i].1,
                Err(_) => 0,
            };
            while let Some(dot) = dots.next_if(|d| d.actor == actor) {
                if dot.counter != 0 && dot.counter <= n {
                    continue;
                }
                if n.checked_add(1) == Some(dot.counter) {
                    n = dot.counter;
                    continue;
                }
                kept.push(dot);
            }
            match position {
                Ok(i) => self.clock[i].1 = n,
                Err(_) if n > 0 => started.push((actor, n)),
                Err(_) => {}
            }
        }
        vv_merge_max(&mut self.clock, &started);
        self.cloud = kept;
    }

    /// Builds the canonical form of any clock and cloud.
    fn canonical(mut clock: Vec<(A, u64)>, mut cloud: Vec<Dot<A>>) -> Self {
        vv_canonicalize(&mut clock);
        cloud.sort_unstable();
        cloud.dedup();
        let mut ctx = CausalContext { clock, cloud };
        ctx.compact();
        ctx
    }
}

impl<A: Ord + Clone> FromIterator<Dot<A>> for CausalContext<A> {
    fn from_iter<I: IntoIterator<Item = Dot<A>>>(iter: I) -> Self {
        CausalContext::canonical(Vec::new(), iter.into_iter().collect())
    }
}

impl<A: Ord + Clone> Extend<Dot<A>> for CausalContext<A> {
    fn extend<I: IntoIterator<Item = Dot<A>>>(&mut self, iter: I) {
        for dot in iter {
            self.insert(dot);
        }
    }
}

/// Union.
impl<A: Ord + Clone> Semigroup for CausalContext<A> {
    fn combine(&mut self, other: &Self) {
        if other.is_empty() {
            return;
        }
        if self.is_empty() {
            self.clone_from(other);
            return;
        }
        vv_merge_max(&mut self.clock, &other.clock);
        if self.cloud.is_empty() && other.cloud.is_empty() {
            return;
        }
        if !other.cloud.is_empty() {
            self.cloud = merge_sorted(std::mem::take(&mut self.cloud), other.cloud.iter().cloned());
        }
        self.compact();
    }

    fn combine_owned(&mut self, mut other: Self) {
        if self.clock.len() + self.cloud.len() < other.clock.len() + other.cloud.len() {
            std::mem::swap(self, &mut other);
        }
        if other.is_empty() {
            return;
        }
        vv_merge_max(&mut self.clock, &other.clock);
        if self.cloud.is_empty() && other.cloud.is_empty() {
            return;
        }
        if !other.cloud.is_empty() {
            self.cloud = merge_sorted(std::mem::take(&mut self.cloud), other.cloud);
        }
        self.compact();
    }
}

impl<A: Ord + Clone> Monoid for CausalContext<A> {
    #[inline]
    fn identity() -> Self {
        CausalContext::new()
    }
    #[inline]
    fn is_identity(&self) -> bool {
        self.is_empty()
    }
}

impl<A: Ord + Clone> Commutative for CausalContext<A> {}
impl<A: Ord + Clone> Idempotent for CausalContext<A> {}

#[cfg(feature = "serde")]
impl<'de, A> serde::Deserialize<'de> for CausalContext<A>
where
    A: Ord + Clone + serde::Deserialize<'de>,
{
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(bound(deserialize = "A: serde::Deserialize<'de>"))]
        struct Repr<A> {
            clock: Vec<(A, u64)>,
            cloud: Vec<Dot<A>>,
        }
        let Repr { clock, cloud } = Repr::deserialize(deserializer)?;
        Ok(CausalContext::canonical(clock, cloud))
    }
}

#[cfg(feature = "laws")]
impl quickcheck::Arbitrary for CausalContext<u64> {
    fn arbitrary(g: &mut quickcheck::Gen) -> Self {
        let n = arb::op_count(g);
        (0..n)
            .map(|_| Dot::new(arb::actor(g), arb::counter(g)))
            .collect()
    }
}

#[cfg(feature = "laws")]
impl quickcheck::Arbitrary for Dot<u64> {
    fn arbitrary(g: &mut quickcheck::Gen) -> Self {
        Dot::new(arb::actor(g), arb::counter(g))
    }
}

/// Merges two sorted, deduplicated sequences into one.
pub(crate) fn merge_sorted<T: Ord>(mine: Vec<T>, theirs: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut theirs = theirs.into_iter().peekable();
    let mut out = Vec::with_capacity(mine.len() + theirs.size_hint().0);
    for x in mine {
        while let Some(y) = theirs.next_if(|y| *y < x) {
            out.push(y);
        }
        if theirs.peek() == Some(&x) {
            theirs.next();
        }
        out.push(x);
    }
    out.extend(theirs);
    out
}

// ---------------------------------------------------------------------------
// Sorted version vectors: `Vec<(A, u64)>` sorted by actor, no zero entries.
// ---------------------------------------------------------------------------

/// The entry of `actor` (0 if absent).
#[inline]
pub(crate) fn vv_get<A: Ord>(vv: &[(A, u64)], actor: &A) -> u64 {
    match vv.binary_search_by(|(a, _)| a.cmp(actor)) {
        Ok(i) => vv[i].1,
        Err(_) => 0,
    }
}

/// Pointwise maximum, in place. Allocates only when `theirs` has actors
/// `mine` lacks (and, for inline storage, only beyond its capacity).
pub(crate) fn vv_merge_max<A: Ord + Clone, S: Entries<(A, u64)>>(
    mine: &mut S,
    theirs: &[(A, u64)],
) {
    merge_join(
        mine,
        theirs,
        |(a, _)| a,
        |(_, m), (_, n)| {
            if *n > *m {
                *m = *n;
            }
        },
        |(a, n)| (*n > 0).then(|| (a.clone(), *n)),
    );
}

/// The storage of a sorted list of entries: a `Vec`, or a [`SmallVec`] that
/// keeps its first few entries inline.
pub(crate) trait Entries<T>:
    Default + DerefMut<Target = [T]> + IntoIterator<Item = T>
{
    /// Empty, with room for `capacity` entries.
    fn with_capacity(capacity: usize) -> Self;
    /// Appends an entry.
    fn push(&mut self, entry: T);
}

impl<T> Entries<T> for Vec<T> {
    #[inline]
    fn with_capacity(capacity: usize) -> Self {
        Vec::with_capacity(capacity)
    }
    #[inline]
    fn push(&mut self, entry: T) {
        Vec::push(self, entry);
    }
}

impl<T: smallvec::Array> Entries<T::Item> for SmallVec<T> {
    #[inline]
    fn with_capacity(capacity: usize) -> Self {
        SmallVec::with_capacity(capacity)
    }
    #[inline]
    fn push(&mut self, entry: T::Item) {
        SmallVec::push(self, entry);
    }
}

/// Joins `theirs` into `mine`, both sorted by `key` without duplicate keys:
/// an entry whose key `mine` has is joined into `mine`'s with `join`; any
/// other entry is inserted as `fresh(entry)` (skipped if `None`). Allocates
/// only when `theirs` has keys `mine` lacks.
pub(crate) fn merge_join<T, K: Ord + ?Sized, S: Entries<T>>(
    mine: &mut S,
    theirs: &[T],
    key: impl Fn(&T) -> &K,
    join: impl Fn(&mut T, &T),
    fresh: impl Fn(&T) -> Option<T>,
) {
    let mut missing = 0_usize;
    let mut i = 0;
    for entry in theirs {
        let k = key(entry);
        while mine.get(i).is_some_and(|m| key(m) < k) {
            i += 1;
        }
        match mine.get_mut(i) {
            Some(m) if key(m) == k => {
                join(m, entry);
                i += 1;
            }
            _ => missing += 1,
        }
    }
    if missing == 0 {
        return;
    }
    let old = std::mem::take(mine);
    let mut out = S::with_capacity(old.len() + missing);
    let mut old = old.into_iter().peekable();
    for entry in theirs {
        let k = key(entry);
        while let Some(m) = old.next_if(|m| key(m) < k) {
            out.push(m);
        }
        match old.next_if(|m| key(m) == k) {
            Some(m) => out.push(m), // already joined
            None => {
                if let Some(new) = fresh(entry) {
                    out.push(new);
                }
            }
        }
    }
    for m in old {
        out.push(m);
    }
    *mine = out;
}

/// Sorts, keeps the maximum of duplicate actors, drops zeros.
pub(crate) fn vv_canonicalize<A: Ord>(vv: &mut Vec<(A, u64)>) {
    vv.sort_unstable_by(|(a, n), (b, m)| a.cmp(b).then(m.cmp(n)));
    vv.dedup_by(|later, earlier| later.0 == earlier.0);
    vv.retain(|(_, n)| *n > 0);
}

/// The pointwise partial order: `Some(Less)` when `a` is dominated by `b`.
pub(crate) fn vv_compare<A: Ord>(a: &[(A, u64)], b: &[(A, u64)]) -> Option<Ordering> {
    let (mut a_bigger, mut b_bigger) = (false, false);
    let (mut i, mut j) = (0, 0);
    loop {
        match (a.get(i), b.get(j)) {
            (None, None) => break,
            (Some(_), None) => {
                a_bigger = true;
                break;
            }
            (None, Some(_)) => {
                b_bigger = true;
                break;
            }
            (Some((x, n)), Some((y, m))) => match x.cmp(y) {
                Ordering::Less => {
                    a_bigger |= *n > 0;
                    i += 1;
                }
                Ordering::Greater => {
                    b_bigger |= *m > 0;
                    j += 1;
                }
                Ordering::Equal => {
                    a_bigger |= n > m;
                    b_bigger |= m > n;
                    i += 1;
                    j += 1;
                }
            },
        }
        if a_bigger && b_bigger {
            return None;
        }
    }
    match (a_bigger, b_bigger) {
        (false, false) => Some(Ordering::Equal),
        (true, false) => Some(Ordering::Greater),
        (false, true) => Some(Ordering::Less),
        (true, true) => None,
    }
}

/// Sum of the entries, saturating at `u128::MAX` (unreachable).
pub(crate) fn vv_total<A>(vv: &[(A, u64)]) -> u128 {
    vv.iter()
        .fold(0_u128, |acc, (_, n)| acc.saturating_add(u128::from(*n)))
}

/// Generators for `Arbitrary` instances: small actor domains so that
/// concurrency and collisions happen, and every number below 2⁶² so that it
/// fits BSON's int64.
#[cfg(feature = "laws")]
pub(crate) mod arb {
    use quickcheck::{Arbitrary, Gen};

    /// Largest count an `Arbitrary` state may reach, with margin: 2⁶² − 1.
    pub(crate) const LIMIT: u64 = (1 << 62) - 1;

    /// An actor in `0..4`.
    pub(crate) fn actor(g: &mut Gen) -> u64 {
        g.choose(&[0, 1, 2, 3]).copied().unwrap_or(0)
    }

    /// How many operations to apply when building a value.
    pub(crate) fn op_count(g: &mut Gen) -> usize {
        usize::arbitrary(g) % (g.size().clamp(1, 24) + 1)
    }

    /// An index below `len` (`len > 0`).
    pub(crate) fn index(g: &mut Gen, len: usize) -> usize {
        usize::arbitrary(g) % len.max(1)
    }

    /// A counter: mostly small (so that dots collide and ranges compact),
    /// sometimes 0, sometimes large.
    pub(crate) fn counter(g: &mut Gen) -> u64 {
        match usize::arbitrary(g) % 8 {
            0 => 0,
            1 => u64::arbitrary(g) & LIMIT,
            _ => 1 + u64::arbitrary(g) % 6,
        }
    }

    /// An increment: mostly small, sometimes large, below 2⁵² so that a
    /// total of [`op_count`] increments stays below 2⁶².
    pub(crate) fn amount(g: &mut Gen) -> u64 {
        match usize::arbitrary(g) % 4 {
            0 => u64::arbitrary(g) >> 12,
            _ => u64::arbitrary(g) % 10,
        }
    }

    /// A timestamp: often tied, sometimes large.
    pub(crate) fn timestamp(g: &mut Gen) -> u64 {
        match usize::arbitrary(g) % 4 {
            0 => u64::arbitrary(g) & LIMIT,
            _ => u64::arbitrary(g) % 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(dots: &[(u64, u64)]) -> CausalContext {
        dots.iter().map(|&(a, c)| Dot::new(a, c)).collect()
    }

    #[test]
    fn compacts_contiguous_dots() {
        let c = ctx(&[(1, 1), (1, 2), (1, 4), (2, 2)]);
        assert_eq!(c.clock, vec![(1, 2)]);
        assert_eq!(c.cloud, vec![Dot::new(1, 4), Dot::new(2, 2)]);
        let mut d = c.clone();
        d.insert(Dot::new(1, 3));
        assert_eq!(d.clock, vec![(1, 4)]);
        d.insert(Dot::new(2, 1));
        assert_eq!(d.clock, vec![(1, 4), (2, 2)]);
        assert!(d.cloud.is_empty());
        assert_eq!(d, ctx(&[(2, 1), (2, 2), (1, 4), (1, 3), (1, 2), (1, 1)]));
    }

    #[test]
    fn union_compacts() {
        let mut a = ctx(&[(1, 1), (1, 3)]);
        a.combine(&ctx(&[(1, 2), (1, 5)]));
        assert_eq!(a.clock, vec![(1, 3)]);
        assert_eq!(a.cloud, vec![Dot::new(1, 5)]);
        let mut b = ctx(&[(1, 5)]);
        b.combine_owned(ctx(&[(1, 1), (1, 2), (1, 3), (1, 4)]));
        assert_eq!(b.clock, vec![(1, 5)]);
        assert!(b.cloud.is_empty());
    }

    #[test]
    fn counter_zero_stays_in_the_cloud() {
        let c = ctx(&[(1, 0), (1, 1)]);
        assert!(c.contains(&Dot::new(1, 0)));
        assert!(c.contains(&Dot::new(1, 1)));
        assert_eq!(c.cloud, vec![Dot::new(1, 0)]);
        assert!(!CausalContext::new().contains(&Dot::new(1, 0)));
    }

    #[test]
    fn next_dot_and_mint_agree() {
        for dots in [
            vec![],
            vec![(1, 1)],
            vec![(1, 3)],
            vec![(1, 0)],
            vec![(1, 0), (1, 1)],
            vec![(1, 1), (1, 5), (2, 9)],
            vec![(0, 2), (2, 1)],
        ] {
            let mut c = ctx(&dots);
            let next = c.next_dot(1);
            let minted = c.mint(1);
            assert_eq!(next, minted, "{dots:?}");
            let mut expected = ctx(&dots);
            expected.extend(next);
            assert_eq!(c, expected, "{dots:?}");
        }
    }

    #[test]
    fn counters_saturate_without_panicking() {
        let mut c = ctx(&[(1, u64::MAX)]);
        assert_eq!(c.next_dot(1), None);
        assert_eq!(c.mint(1), None);
        c.insert(Dot::new(1, u64::MAX - 1));
        assert_eq!(c.max_counter(&1), u64::MAX);
    }

    #[test]
    fn disjointness() {
        let a = ctx(&[(1, 1), (1, 2), (2, 5)]);
        assert!(a.is_disjoint(&ctx(&[(1, 3), (2, 4)])));
        assert!(!a.is_disjoint(&ctx(&[(1, 2)])));
        assert!(!a.is_disjoint(&ctx(&[(2, 1), (2, 2), (2, 3), (2, 4), (2, 5)])));
        assert!(!ctx(&[(2, 1), (2, 2), (2, 3), (2, 4), (2, 5)]).is_disjoint(&a));
        assert!(ctx(&[(2, 1)]).is_disjoint(&a));
    }

    #[test]
    fn version_vectors() {
        let mut v = vec![(3_u64, 1), (1, 0), (1, 4), (3, 7)];
        vv_canonicalize(&mut v);
        assert_eq!(v, vec![(1, 4), (3, 7)]);
        vv_merge_max(&mut v, &[(1, 2), (2, 5)]);
        assert_eq!(v, vec![(1, 4), (2, 5), (3, 7)]);
        assert_eq!(vv_compare(&[(1, 1)], &v), Some(Ordering::Less));
        assert_eq!(vv_compare(&v, &v), Some(Ordering::Equal));
        assert_eq!(vv_compare(&[(1, 9)], &v), None);
        assert_eq!(vv_compare::<u64>(&[], &[]), Some(Ordering::Equal));
        assert_eq!(vv_total(&v), 16);
    }
}

#[cfg(all(test, feature = "laws"))]
mod laws {
    use super::*;
    use crate::test_util::{check, verdict};

    // The semilattice laws of `CausalContext`: `causal_context` in
    // tests/laws.rs.

    #[test]
    fn operations_keep_the_form_canonical() {
        fn prop(a: CausalContext, b: CausalContext, dots: Vec<Dot>) -> quickcheck::TestResult {
            let mut inserted = a.clone();
            let mut minted = a.clone();
            for d in &dots {
                inserted.insert(*d);
                minted.mint(d.actor);
            }
            let mut owned = a.clone();
            owned.combine_owned(b.clone());
            let all = [&a, &b, &a.clone().combined(&b), &owned, &inserted, &minted];
            let ok = all.iter().all(|c| c.is_canonical());
            verdict(ok, (a, b, dots))
        }
        check(
            "dot::operations_keep_the_form_canonical",
            prop as fn(_, _, _) -> quickcheck::TestResult,
        );
    }

    #[test]
    fn contains_agrees_with_a_set_oracle() {
        fn prop(dots: Vec<Dot>, probes: Vec<Dot>) -> quickcheck::TestResult {
            let ctx: CausalContext = dots.iter().copied().collect();
            let set: std::collections::BTreeSet<Dot> = dots.iter().copied().collect();
            let ok = probes
                .iter()
                .chain(set.iter())
                .all(|d| ctx.contains(d) == set.contains(d));
            verdict(ok, (dots, probes, ctx))
        }
        check(
            "dot::contains_agrees_with_a_set_oracle",
            prop as fn(_, _) -> quickcheck::TestResult,
        );
    }
}
