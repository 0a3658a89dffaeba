//! [`OrSet`]: an add-wins observed-remove set (delta-state ORSWOT).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};

use crate::dot::{CausalContext, Dot};
use crate::{Commutative, Idempotent, Monoid, Semigroup};

/// An add-wins observed-remove set: the delta-state ORSWOT ("add-wins
/// OR-set without tombstones") of Almeida, Shoker and Baquero, *Delta State
/// Replicated Data Types* (2018).
///
/// Every add is tagged with a fresh [`Dot`]. The state keeps, for each
/// present element, the dots of the adds that made it present, plus a
/// [`CausalContext`]: every dot this state has seen, including those of
/// removed elements. A remove does not leave a per-element tombstone; it
/// leaves the removed dots in the context, which is compact (a version
/// vector plus a small cloud of out-of-order dots).
///
/// - **remove removes what it observed**: an element is present iff it has
///   a dot that no remove has observed. A remove delta carries the dots it
///   observed, so a re-delivered add (same dot) stays removed: **removal
///   does not resurrect on re-delivery**;
/// - **add wins**: an add concurrent with a remove (its dot was not
///   observed by the remove) survives it;
/// - identity: the empty set with an empty context. A remove delta has no
///   elements but is not the identity: its context matters;
/// - laws: commutative and idempotent (a join-semilattice), so any delivery
///   order and any duplication converge to the same state;
/// - canonical form: the context is compacted after every operation and
///   elements without dots are dropped, so `==` is semantic.
///
/// Combine `a ⊕ b`: for each element, keep the dots present in both, the
/// dots of `a` that `b`'s context has not seen and the dots of `b` that
/// `a`'s context has not seen; the context is the union.
///
/// **Dots must be unique per add**: a dot names one add of one element. The
/// in-place operations mint fresh dots; with
/// [`add_with_dot`](Self::add_with_dot) (an event id as the dot), an event
/// that adds several elements must give each its own dot, since removing
/// any element that holds a dot removes every element holding it. Do not
/// mix minted and external dots for the same actor.
///
/// Elements must be `Hash + Ord`. They are kept in a hash map with a
/// randomly seeded hasher (foldhash's `RandomState`: a per-process random
/// seed and a per-map one), so elements chosen by users cannot be made to
/// collide in advance. Iteration order ([`iter`](Self::iter)) is therefore
/// unspecified and differs between processes; everything observable is
/// canonical: serialization, `Debug` and `Hash` list the elements in
/// ascending order, so equal sets serialize to equal bytes, and `==`
/// compares contents.
///
/// Complexity: in-place [`add`](Self::add), [`remove`](Self::remove) and
/// [`contains`](Self::contains) are expected `O(1)`, and `add` allocates
/// only when the map grows. Combining `b` into `a` costs `O(|b|)` when
/// their contexts share no dot (a fresh add delta); otherwise it also scans
/// `a`'s elements for dots `b` has removed (`O(|a|)`), as the state keeps
/// no dot-to-element index. Serialization sorts: `O(n log n)`.
///
/// Serialized as `{"entries": [[element, [dot, ...]], ...], "context":
/// {"clock": [[actor, n], ...], "cloud": [dot, ...]}}` with dots as
/// `{"actor": a, "counter": c}`; deserialization restores the canonical
/// form.
///
/// # Examples
///
/// ```
/// use accrete_monoids::{OrSet, Semigroup};
///
/// // Replica 1 adds "x" and ships the delta to replica 2.
/// let mut r1: OrSet<&str> = OrSet::new();
/// let add_x = r1.add_delta(1, "x");
/// r1.combine(&add_x);
/// let mut r2 = OrSet::new();
/// r2.combine(&add_x);
///
/// // Replica 2 removes "x" while replica 1 concurrently adds it again.
/// let remove_x = r2.remove_delta(&"x");
/// r2.combine(&remove_x);
/// let add_again = r1.add_delta(1, "x");
/// r1.combine(&add_again);
///
/// // Everything reaches everyone, the first add twice.
/// r1.combine(&remove_x);
/// r2.combine(&add_again);
/// r2.combine(&add_x); // re-delivery
/// assert_eq!(r1, r2);
/// assert!(r1.contains(&"x")); // the concurrent add wins
///
/// // Re-delivering an add the remove observed does not resurrect it.
/// let mut r3 = OrSet::new();
/// r3.combine(&add_x);
/// r3.combine(&remove_x);
/// r3.combine(&add_x);
/// assert!(!r3.contains(&"x"));
/// ```
#[derive(Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(
    feature = "serde",
    serde(bound(serialize = "T: Ord + serde::Serialize, A: serde::Serialize"))
)]
pub struct OrSet<T, A = u64> {
    /// Present elements and the dots of their unobserved-by-removes adds;
    /// every dot is in `context`; no empty dot sets.
    #[cfg_attr(feature = "serde", serde(serialize_with = "serialize_entries"))]
    entries: Entries<T, A>,
    context: CausalContext<A>,
}

/// The element map, randomly seeded per map (see [`OrSet`]).
type Entries<T, A> = HashMap<T, Dots<A>, EntryHasher>;

/// foldhash rather than std's SipHash-1-3 `RandomState`: in-place adds
/// about 1.5× and lookups about 4× faster (u64 elements), with seeds as
/// random per process and per map (see DESIGN.md).
type EntryHasher = foldhash::fast::RandomState;

/// The entries in ascending order of element: the canonical order of
/// everything observable (serialization, `Debug`, `Hash`).
fn sorted<T: Ord, A>(entries: &Entries<T, A>) -> Vec<(&T, &Dots<A>)> {
    let mut sorted: Vec<_> = entries.iter().collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
    sorted
}

/// A non-empty, sorted, deduplicated set of dots. The common single-dot
/// case does not allocate.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Dots<A> {
    One(Dot<A>),
    /// At least two dots.
    Many(Vec<Dot<A>>),
}

impl<A> Dots<A> {
    #[inline]
    fn as_slice(&self) -> &[Dot<A>] {
        match self {
            Dots::One(dot) => std::slice::from_ref(dot),
            Dots::Many(dots) => dots,
        }
    }
}

impl<A: Ord> Dots<A> {
    /// The canonical form of a sorted, deduplicated vector; `None` if empty.
    fn from_sorted(mut dots: Vec<Dot<A>>) -> Option<Self> {
        match dots.len() {
            0 => None,
            1 => dots.pop().map(Dots::One),
            _ => Some(Dots::Many(dots)),
        }
    }

    /// Drops the dots `context` has seen; `false` if none is left.
    fn retain_unseen(&mut self, context: &CausalContext<A>) -> bool {
        match self {
            Dots::One(dot) => !context.contains(dot),
            Dots::Many(dots) => {
                dots.retain(|d| !context.contains(d));
                match dots.len() {
                    0 => false,
                    1 => {
                        if let Some(dot) = dots.pop() {
                            *self = Dots::One(dot);
                        }
                        true
                    }
                    _ => true,
                }
            }
        }
    }
}

impl<A: Ord + Clone> Dots<A> {
    /// The dots `context` has not seen; `None` if none.
    fn unseen(&self, context: &CausalContext<A>) -> Option<Self> {
        match self {
            Dots::One(dot) => (!context.contains(dot)).then(|| Dots::One(dot.clone())),
            Dots::Many(dots) => Dots::from_sorted(
                dots.iter()
                    .filter(|d| !context.contains(d))
                    .cloned()
                    .collect(),
            ),
        }
    }

    /// The join of one element's dots: those in both, plus those of each
    /// side the other side's context has not seen.
    fn join(
        mine: &Self,
        my_context: &CausalContext<A>,
        theirs: &Self,
        their_context: &CausalContext<A>,
    ) -> Option<Self> {
        let (a, b) = (mine.as_slice(), theirs.as_slice());
        let mut out = Vec::with_capacity(a.len().max(b.len()));
        let (mut i, mut j) = (0, 0);
        loop {
            match (a.get(i), b.get(j)) {
                (None, None) => break,
                (Some(x), Some(y)) if x == y => {
                    out.push(x.clone());
                    i += 1;
                    j += 1;
                }
                (Some(x), y) if y.is_none_or(|y| x < y) => {
                    if !their_context.contains(x) {
                        out.push(x.clone());
                    }
                    i += 1;
                }
                (_, Some(y)) => {
                    if !my_context.contains(y) {
                        out.push(y.clone());
                    }
                    j += 1;
                }
                // Unreachable: `(Some, None)` is taken by the arm above.
                (Some(_), None) => i += 1,
            }
        }
        Dots::from_sorted(out)
    }
}

impl<A: fmt::Debug> fmt::Debug for Dots<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// The entries ascending, as a map.
impl<T: Ord + fmt::Debug, A: fmt::Debug> fmt::Debug for OrSet<T, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Sorted<'a, T, A>(&'a Entries<T, A>);
        impl<T: Ord + fmt::Debug, A: fmt::Debug> fmt::Debug for Sorted<'_, T, A> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map().entries(sorted(self.0)).finish()
            }
        }
        f.debug_struct("OrSet")
            .field("entries", &Sorted(&self.entries))
            .field("context", &self.context)
            .finish()
    }
}

/// Semantic: the same elements with the same dots, and the same context.
impl<T: Hash + Eq, A: PartialEq> PartialEq for OrSet<T, A> {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries && self.context == other.context
    }
}

impl<T: Hash + Eq, A: Eq> Eq for OrSet<T, A> {}

/// Hashes the entries in ascending order, so that equal sets hash equally.
impl<T: Hash + Ord, A: Hash> Hash for OrSet<T, A> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        sorted(&self.entries).hash(state);
        self.context.hash(state);
    }
}

impl<T, A> Default for OrSet<T, A> {
    fn default() -> Self {
        OrSet::new()
    }
}

impl<T, A> OrSet<T, A> {
    /// The empty set with an empty context: the identity. Allocates
    /// nothing.
    #[inline]
    pub fn new() -> Self {
        OrSet {
            entries: Entries::default(),
            context: CausalContext::new(),
        }
    }

    /// How many elements are present.
    #[inline]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no element is present (the context may not be empty).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The present elements, in no particular order: the order differs
    /// between processes (the map is randomly seeded). Sort them for a
    /// canonical order, as serialization and `Debug` do.
    #[inline]
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &T> + '_ {
        self.entries.keys()
    }

    /// Every dot this state has seen.
    #[inline]
    pub fn context(&self) -> &CausalContext<A> {
        &self.context
    }
}

impl<T: Hash + Ord, A: Ord + Clone> OrSet<T, A> {
    /// Whether `element` is present.
    #[inline]
    pub fn contains<Q>(&self, element: &Q) -> bool
    where
        T: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.contains_key(element)
    }

    /// The dots that keep `element` present, ascending (empty if absent).
    pub fn dots<Q>(&self, element: &Q) -> &[Dot<A>]
    where
        T: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.get(element).map_or(&[], Dots::as_slice)
    }

    /// Adds `element` as `actor`, in place, with the actor's next dot. The
    /// element's earlier dots are superseded (they stay in the context).
    ///
    /// Equals combining [`add_delta`](Self::add_delta). Does nothing if the
    /// actor has used counter `u64::MAX` (unreachable by minting).
    pub fn add(&mut self, actor: A, element: T) {
        if let Some(dot) = self.context.mint(actor) {
            self.entries.insert(element, Dots::One(dot));
        }
    }

    /// The delta of adding `element` as `actor`: the element with a fresh
    /// dot (one past the actor's greatest counter in this state's context),
    /// and a context holding that dot plus the element's currently observed
    /// dots, which the add supersedes (as in the paper's `add` delta
    /// mutator). The identity if the actor has used counter `u64::MAX`.
    pub fn add_delta(&self, actor: A, element: T) -> Self {
        let Some(dot) = self.context.next_dot(actor) else {
            return OrSet::new();
        };
        let mut context: CausalContext<A> = self.dots(&element).iter().cloned().collect();
        context.insert(dot.clone());
        OrSet {
            entries: Entries::from_iter([(element, Dots::One(dot))]),
            context,
        }
    }

    /// The delta of an add tagged with an externally supplied dot (an event
    /// id, say): the element with that dot, and a context of just that dot.
    /// The dot must be unique to this add of this element (see the type's
    /// docs).
    pub fn add_with_dot(dot: Dot<A>, element: T) -> Self {
        let mut context = CausalContext::new();
        context.insert(dot.clone());
        OrSet {
            entries: Entries::from_iter([(element, Dots::One(dot))]),
            context,
        }
    }

    /// Removes `element`, in place: its dots stay in the context, so the
    /// adds they came from cannot bring it back. Returns whether it was
    /// present.
    pub fn remove<Q>(&mut self, element: &Q) -> bool
    where
        T: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.remove(element).is_some()
    }

    /// The delta of removing `element`: no elements, and a context holding
    /// the element's observed dots. The identity if `element` is absent.
    pub fn remove_delta<Q>(&self, element: &Q) -> Self
    where
        T: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        OrSet {
            entries: Entries::default(),
            context: self.dots(element).iter().cloned().collect(),
        }
    }

    /// The canonical form of deserialized (or otherwise untrusted) parts:
    /// dots sorted and deduplicated, repeated elements merged, elements
    /// without dots dropped, and every dot added to the context.
    fn canonical(entries: Vec<(T, Vec<Dot<A>>)>, mut context: CausalContext<A>) -> Self {
        let mut merged: HashMap<T, Vec<Dot<A>>, EntryHasher> = HashMap::default();
        for (element, dots) in entries {
            merged.entry(element).or_default().extend(dots);
        }
        let mut map = Entries::with_capacity_and_hasher(merged.len(), EntryHasher::default());
        for (element, mut dots) in merged {
            dots.sort_unstable();
            dots.dedup();
            context.extend(dots.iter().cloned());
            if let Some(dots) = Dots::from_sorted(dots) {
                map.insert(element, dots);
            }
        }
        OrSet {
            entries: map,
            context,
        }
    }
}

impl<T: Hash + Ord + Clone, A: Ord + Clone> OrSet<T, A> {
    /// The part of combine that needs `other`'s context before the union:
    /// drops from `self` the dots `other` has removed from elements `other`
    /// does not hold. Skipped when the contexts are disjoint.
    fn drop_removed_by(&mut self, other_entries: &Entries<T, A>, other_context: &CausalContext<A>) {
        if self.context.is_disjoint(other_context) {
            return;
        }
        if other_entries.is_empty() {
            // A remove delta: no element to look up.
            self.entries
                .retain(|_, dots| dots.retain_unseen(other_context));
        } else {
            self.entries.retain(|element, dots| {
                other_entries.contains_key(element) || dots.retain_unseen(other_context)
            });
        }
    }
}

/// Per element: the dots in both, plus the dots of each side unseen by the
/// other's context; the contexts unite.
impl<T: Hash + Ord + Clone, A: Ord + Clone> Semigroup for OrSet<T, A> {
    fn combine(&mut self, other: &Self) {
        if other.is_identity() {
            return;
        }
        if self.is_identity() {
            self.clone_from(other);
            return;
        }
        self.drop_removed_by(&other.entries, &other.context);
        for (element, theirs) in &other.entries {
            let emptied = match self.entries.get_mut(element) {
                Some(mine) => {
                    if mine == theirs {
                        continue;
                    }
                    match Dots::join(mine, &self.context, theirs, &other.context) {
                        Some(joined) => {
                            *mine = joined;
                            false
                        }
                        None => true,
                    }
                }
                None => {
                    if let Some(unseen) = theirs.unseen(&self.context) {
                        self.entries.insert(element.clone(), unseen);
                    }
                    false
                }
            };
            if emptied {
                self.entries.remove(element);
            }
        }
        self.context.combine(&other.context);
    }

    fn combine_owned(&mut self, other: Self) {
        if other.is_identity() {
            return;
        }
        if self.is_identity() {
            *self = other;
            return;
        }
        self.drop_removed_by(&other.entries, &other.context);
        let OrSet { entries, context } = other;
        for (element, mut theirs) in entries {
            let emptied = match self.entries.get_mut(&element) {
                Some(mine) => {
                    if *mine == theirs {
                        continue;
                    }
                    match Dots::join(mine, &self.context, &theirs, &context) {
                        Some(joined) => {
                            *mine = joined;
                            false
                        }
                        None => true,
                    }
                }
                None => {
                    if theirs.retain_unseen(&self.context) {
                        self.entries.insert(element, theirs);
                        continue;
                    }
                    false
                }
            };
            if emptied {
                self.entries.remove(&element);
            }
        }
        self.context.combine_owned(context);
    }
}

impl<T: Hash + Ord + Clone, A: Ord + Clone> Monoid for OrSet<T, A> {
    #[inline]
    fn identity() -> Self {
        OrSet::new()
    }
    #[inline]
    fn is_identity(&self) -> bool {
        self.entries.is_empty() && self.context.is_empty()
    }
}

impl<T: Hash + Ord + Clone, A: Ord + Clone> Commutative for OrSet<T, A> {}
impl<T: Hash + Ord + Clone, A: Ord + Clone> Idempotent for OrSet<T, A> {}

#[cfg(feature = "serde")]
impl<A: serde::Serialize> serde::Serialize for Dots<A> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.as_slice())
    }
}

/// Entries as a sequence of pairs (BSON document keys must be strings),
/// ascending, so that equal sets serialize identically.
#[cfg(feature = "serde")]
fn serialize_entries<T, A, S>(entries: &Entries<T, A>, serializer: S) -> Result<S::Ok, S::Error>
where
    T: Ord + serde::Serialize,
    A: serde::Serialize,
    S: serde::Serializer,
{
    serializer.collect_seq(sorted(entries))
}

#[cfg(feature = "serde")]
impl<'de, T, A> serde::Deserialize<'de> for OrSet<T, A>
where
    T: Hash + Ord + serde::Deserialize<'de>,
    A: Ord + Clone + serde::Deserialize<'de>,
{
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(bound(
            deserialize = "T: serde::Deserialize<'de>, A: Ord + Clone + serde::Deserialize<'de>"
        ))]
        struct Repr<T, A> {
            entries: Vec<(T, Vec<Dot<A>>)>,
            context: CausalContext<A>,
        }
        let Repr { entries, context } = Repr::deserialize(deserializer)?;
        Ok(OrSet::canonical(entries, context))
    }
}

#[cfg(feature = "laws")]
impl<T: quickcheck::Arbitrary + Hash + Ord> quickcheck::Arbitrary for OrSet<T, u64> {
    /// Three replicas (actors 0..3) add, remove and exchange states and
    /// deltas; another source adds with external dots (actors 3 and 4).
    fn arbitrary(g: &mut quickcheck::Gen) -> Self {
        use crate::dot::arb;
        let mut replicas: Vec<OrSet<T, u64>> = vec![OrSet::new(); 3];
        for _ in 0..2 * arb::op_count(g) {
            let r = arb::index(g, replicas.len());
            // Sorted: the iteration order differs between runs.
            let mut present: Vec<T> = replicas[r].iter().cloned().collect();
            present.sort_unstable();
            let existing = |g: &mut quickcheck::Gen| match present.len() {
                0 => T::arbitrary(g),
                n => present[arb::index(g, n)].clone(),
            };
            match arb::index(g, 10) {
                0..=2 => replicas[r].add(r as u64, T::arbitrary(g)),
                3 => {
                    let delta = replicas[r].add_delta(r as u64, T::arbitrary(g));
                    replicas[r].combine(&delta);
                }
                4 => {
                    let element = existing(g);
                    replicas[r].remove(&element);
                }
                5 => {
                    let element = existing(g);
                    let delta = replicas[r].remove_delta(&element);
                    let s = arb::index(g, replicas.len());
                    replicas[s].combine(&delta);
                }
                6 => {
                    let dot = Dot::new(3 + arb::index(g, 2) as u64, arb::counter(g));
                    let delta = OrSet::add_with_dot(dot, T::arbitrary(g));
                    replicas[r].combine_owned(delta);
                }
                _ => {
                    let s = replicas[arb::index(g, replicas.len())].clone();
                    replicas[r].combine_owned(s);
                }
            }
        }
        let r = arb::index(g, replicas.len());
        let mut state = replicas.swap_remove(r);
        if bool::arbitrary(g) {
            state.combine_owned(replicas.swap_remove(arb::index(g, replicas.len())));
        }
        state
    }

    /// The identity, and the state with one element removed in place (both
    /// reachable).
    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        if self.is_identity() {
            return quickcheck::empty_shrinker();
        }
        let this = self.clone();
        let mut elements: Vec<T> = self.iter().cloned().collect();
        elements.sort_unstable();
        Box::new(
            std::iter::once(OrSet::new()).chain(elements.into_iter().map(move |e| {
                let mut smaller = this.clone();
                smaller.remove(&e);
                smaller
            })),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dot(actor: u64, counter: u64) -> Dot {
        Dot::new(actor, counter)
    }

    #[test]
    fn add_remove_and_re_add() {
        let mut s = OrSet::new();
        s.add(1, "a");
        s.add(1, "b");
        s.add(2, "a");
        let mut present: Vec<_> = s.iter().copied().collect();
        present.sort_unstable();
        assert_eq!(present, ["a", "b"]);
        assert_eq!(s.dots(&"a"), [dot(2, 1)]);
        assert!(s.remove(&"a"));
        assert!(!s.remove(&"a"));
        assert!(!s.contains(&"a"));
        s.add(1, "a");
        assert!(s.contains(&"a"));
        assert_eq!(s.dots(&"a"), [dot(1, 3)]);
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn in_place_operations_equal_their_deltas() {
        let mut s = OrSet::new();
        for (actor, element) in [(1, 'a'), (2, 'b'), (1, 'a'), (3, 'c'), (2, 'a')] {
            let expected = s.clone().combined(&s.add_delta(actor, element));
            s.add(actor, element);
            assert_eq!(s, expected);
        }
        for element in ['a', 'z', 'c'] {
            let expected = s.clone().combined(&s.remove_delta(&element));
            s.remove(&element);
            assert_eq!(s, expected);
        }
        assert_eq!(s.iter().collect::<Vec<_>>(), [&'b']);
    }

    /// Add, remove (which observed the add) and a duplicate of the add, in
    /// every order: always absent, always the same state.
    #[test]
    fn removal_does_not_resurrect_on_re_delivery() {
        let mut origin = OrSet::new();
        let add = origin.add_delta(1, "x");
        origin.combine(&add);
        let remove = origin.remove_delta(&"x");
        assert!(!remove.is_identity());

        let mut s = OrSet::new();
        s.combine(&add);
        s.combine(&remove);
        s.combine(&add);
        assert!(!s.contains(&"x"));

        let deltas = [add.clone(), remove.clone(), add.clone()];
        let mut results = Vec::new();
        for order in [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ] {
            let mut by_ref = OrSet::new();
            let mut owned = OrSet::new();
            for i in order {
                by_ref.combine(&deltas[i]);
                owned.combine_owned(deltas[i].clone());
            }
            assert!(!by_ref.contains(&"x"), "{order:?}");
            assert_eq!(by_ref, owned);
            results.push(by_ref);
        }
        assert!(results.windows(2).all(|w| w[0] == w[1]));
        assert!(results[0].is_empty());
        assert!(!results[0].is_identity());
    }

    #[test]
    fn external_dots_do_not_resurrect_either() {
        let add = OrSet::add_with_dot(dot(7, 42), "x");
        let mut s = OrSet::new();
        s.combine(&add);
        let remove = s.remove_delta(&"x");
        for order in [[0, 1, 0], [1, 0, 0], [0, 0, 1]] {
            let mut t = OrSet::new();
            for i in order {
                t.combine(if i == 0 { &add } else { &remove });
            }
            assert!(!t.contains(&"x"));
        }
    }

    #[test]
    fn concurrent_add_wins() {
        let mut a = OrSet::new();
        a.add(1, "x");
        let mut b = a.clone();
        b.remove(&"x"); // observed a's add
        a.add(1, "x"); // concurrent re-add, new dot
        assert!(a.clone().combined(&b).contains(&"x"));
        assert!(b.clone().combined(&a).contains(&"x"));

        // Two actors add concurrently; a remove that saw only one of them.
        let p = OrSet::new().combined(&OrSet::add_with_dot(dot(1, 1), 'y'));
        let q = OrSet::add_with_dot(dot(2, 1), 'y');
        let remove = p.remove_delta(&'y');
        let merged = OrSet::fold([q.clone(), remove.clone(), p.clone()]);
        assert_eq!(merged.dots(&'y'), [dot(2, 1)]);
        let removed_all = merged.remove_delta(&'y');
        assert!(!OrSet::fold([p, q, remove, removed_all]).contains(&'y'));
    }

    #[test]
    fn remove_before_add_arrives() {
        let mut origin = OrSet::new();
        origin.add(3, 5_u32);
        let add = origin.clone();
        let remove = origin.remove_delta(&5);
        let s = OrSet::new().combined(&remove).combined(&add);
        assert!(s.is_empty());
        assert_eq!(s, OrSet::new().combined(&add).combined(&remove));
    }

    #[test]
    fn removing_an_absent_element_is_the_identity() {
        let s: OrSet<u8> = OrSet::new();
        assert!(s.remove_delta(&1).is_identity());
    }

    #[test]
    fn re_adds_supersede_old_dots() {
        let mut s = OrSet::new();
        for _ in 0..100 {
            s.add(1, "hot");
            let delta = s.add_delta(2, "hot");
            s.combine(&delta);
        }
        assert_eq!(s.dots(&"hot"), [dot(2, 100)]);
        assert_eq!(
            s.context().clock().collect::<Vec<_>>(),
            [(&1, 100), (&2, 100)]
        );
        assert_eq!(s.context().cloud().count(), 0);
    }

    #[test]
    fn out_of_order_external_dots_compact() {
        let mut s = OrSet::new();
        for counter in [3, 1, 4, 2] {
            s.combine_owned(OrSet::add_with_dot(dot(9, counter), counter));
        }
        assert_eq!(s.len(), 4);
        assert_eq!(s.context().clock().collect::<Vec<_>>(), [(&9, 4)]);
        // Minting continues after the greatest seen counter.
        s.add(9, 5);
        assert_eq!(s.dots(&5), [dot(9, 5)]);
        let mut gap = OrSet::add_with_dot(dot(9, 7), 7);
        gap.add(9, 8);
        assert_eq!(gap.dots(&8), [dot(9, 8)]);
        assert_eq!(gap.context().cloud().count(), 2);
    }

    #[test]
    fn counter_zero_and_saturation_do_not_panic() {
        let mut s = OrSet::add_with_dot(dot(1, 0), "zero");
        s.add(1, "one");
        assert_eq!(s.dots(&"one"), [dot(1, 1)]);
        let remove = s.remove_delta(&"zero");
        assert!(!s.clone().combined(&remove).contains(&"zero"));

        let mut full = OrSet::add_with_dot(dot(1, u64::MAX), "max");
        full.add(1, "ignored");
        assert!(!full.contains(&"ignored"));
        assert!(full.add_delta(1, "ignored").is_identity());
        full.add(2, "fine");
        assert!(full.contains(&"fine"));
    }

    /// Equal sets built in different orders (in maps with different
    /// seeds) look the same from outside: `Debug`, `Hash` and the
    /// serialized form list the elements in ascending order.
    #[test]
    fn observable_forms_are_sorted() {
        use std::hash::{BuildHasher, RandomState};

        let elements = [5_u32, 300, 1, 42, 7, 1_000_000, 0, 64];
        let mut forward = OrSet::new();
        for (i, &e) in elements.iter().enumerate() {
            forward.combine(&OrSet::add_with_dot(dot(1, i as u64 + 1), e));
        }
        let mut backward = OrSet::new();
        for (i, &e) in elements.iter().enumerate().rev() {
            backward.combine_owned(OrSet::add_with_dot(dot(1, i as u64 + 1), e));
        }
        assert_eq!(forward, backward);
        let debug = format!("{forward:?}");
        assert_eq!(debug, format!("{backward:?}"));
        assert!(
            debug.starts_with("OrSet { entries: {0: [Dot { actor: 1, counter: 7 }], 1: "),
            "{debug}"
        );
        let hasher = RandomState::new();
        assert_eq!(hasher.hash_one(&forward), hasher.hash_one(&backward));
        #[cfg(feature = "serde")]
        {
            let json = serde_json::to_string(&forward).unwrap();
            assert_eq!(json, serde_json::to_string(&backward).unwrap());
            assert!(json.starts_with(r#"{"entries":[[0,"#), "{json}");
            assert_eq!(
                postcard::to_stdvec(&forward).unwrap(),
                postcard::to_stdvec(&backward).unwrap()
            );
        }
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serialized_form_and_canonicalization() {
        let mut s = OrSet::new();
        s.add(1, "a".to_string());
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            json,
            r#"{"entries":[["a",[{"actor":1,"counter":1}]]],"context":{"clock":[[1,1]],"cloud":[]}}"#
        );
        // Repeated elements merge, dots join the context, empty ones vanish.
        let messy: OrSet<String> = serde_json::from_str(
            r#"{"entries":[["b",[{"actor":2,"counter":2}]],["a",[]],["b",[{"actor":2,"counter":1},{"actor":2,"counter":2}]]],
                "context":{"clock":[[1,0]],"cloud":[{"actor":1,"counter":1}]}}"#,
        )
        .unwrap();
        assert_eq!(messy.iter().collect::<Vec<_>>(), ["b"]);
        assert_eq!(messy.dots("b"), [dot(2, 1), dot(2, 2)]);
        assert_eq!(
            messy.context().clock().collect::<Vec<_>>(),
            [(&1, 1), (&2, 2)]
        );
    }
}

#[cfg(all(test, feature = "laws"))]
mod laws {
    use super::*;
    use crate::laws::{Laws, assert_round_trip};
    use crate::test_util::{Small, check};

    // `OrSet<u8>` and `OrSet<String>`: tests/laws.rs.
    #[test]
    fn or_set_of_a_small_domain_is_a_semilattice() {
        Laws::<OrSet<Small>>::new("OrSet<Small>")
            .commutative()
            .idempotent()
            .assert();
    }

    #[test]
    fn string_elements_round_trip() {
        let mut s = OrSet::new();
        s.add(1, "x".to_string());
        s.combine(&OrSet::add_with_dot(Dot::new(2, 5), "y".to_string()));
        assert_round_trip(&s);
    }

    /// Dots held by entries are always in the context, and dot sets are
    /// canonical.
    #[test]
    fn states_are_well_formed() {
        fn well_formed(s: &OrSet<Small>) -> bool {
            s.context.is_canonical()
                && s.entries.values().all(|dots| {
                    let slice = dots.as_slice();
                    slice.windows(2).all(|w| w[0] < w[1])
                        && matches!(
                            (dots, slice.len()),
                            (Dots::One(_), 1) | (Dots::Many(_), 2..)
                        )
                        && slice.iter().all(|d| s.context.contains(d))
                })
        }
        fn prop(a: OrSet<Small>, b: OrSet<Small>) -> bool {
            let ab = a.clone().combined(&b);
            let mut owned = a.clone();
            owned.combine_owned(b.clone());
            [a, b, ab, owned].iter().all(well_formed)
        }
        check("or_set::states_are_well_formed", prop as fn(_, _) -> bool);
    }

    /// Observed-remove semantics against an oracle: an element is present
    /// iff some add of it was not observed by any remove.
    #[test]
    fn matches_the_observed_remove_oracle() {
        #[derive(Clone, Debug)]
        enum Op {
            Add(u64, Small),
            Remove(u64, Small),
            Sync(u64, u64),
        }
        impl quickcheck::Arbitrary for Op {
            fn arbitrary(g: &mut quickcheck::Gen) -> Self {
                let (r, s) = (u64::arbitrary(g) % 3, u64::arbitrary(g) % 3);
                match u8::arbitrary(g) % 3 {
                    0 => Op::Add(r, Small::arbitrary(g)),
                    1 => Op::Remove(r, Small::arbitrary(g)),
                    _ => Op::Sync(r, s),
                }
            }
        }
        fn prop(ops: Vec<Op>, keys: Vec<u64>) -> bool {
            use std::collections::BTreeSet;
            // Per replica: the CRDT, and the oracle's (adds seen, removed adds seen).
            type Oracle = (BTreeSet<(Small, u64, usize)>, BTreeSet<(Small, u64, usize)>);
            let mut replicas: Vec<(OrSet<Small>, Oracle)> = vec![Default::default(); 3];
            let mut deltas = Vec::new();
            for (t, op) in ops.iter().enumerate() {
                match *op {
                    Op::Add(r, x) => {
                        let (set, (adds, _)) = &mut replicas[r as usize];
                        let delta = set.add_delta(r, x);
                        set.combine(&delta);
                        adds.insert((x, r, t));
                        deltas.push(delta);
                    }
                    Op::Remove(r, x) => {
                        let (set, (adds, removed)) = &mut replicas[r as usize];
                        let delta = set.remove_delta(&x);
                        set.combine(&delta);
                        removed.extend(adds.iter().filter(|a| a.0 == x).cloned());
                        deltas.push(delta);
                    }
                    Op::Sync(r, s) => {
                        let from = replicas[s as usize].clone();
                        let (set, (adds, removed)) = &mut replicas[r as usize];
                        set.combine(&from.0);
                        adds.extend(from.1.0);
                        removed.extend(from.1.1);
                    }
                }
            }
            let mut all = OrSet::new();
            let (mut adds, mut removed) = (BTreeSet::new(), BTreeSet::new());
            for (set, (a, r)) in &replicas {
                all.combine(set);
                adds.extend(a.iter().cloned());
                removed.extend(r.iter().cloned());
            }
            let oracle: BTreeSet<Small> = adds.difference(&removed).map(|a| a.0).collect();
            let actual: BTreeSet<Small> = all.iter().copied().collect();
            // The deltas alone, in any order, reach the same state.
            let mut order: Vec<usize> = (0..deltas.len()).collect();
            order.sort_by_key(|&i| keys.get(i).copied().unwrap_or(i as u64));
            let from_deltas = OrSet::fold(order.into_iter().map(|i| deltas[i].clone()));
            actual == oracle && from_deltas == all
        }
        check(
            "or_set::matches_the_observed_remove_oracle",
            prop as fn(_, _) -> bool,
        );
    }
}
