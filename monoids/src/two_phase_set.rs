//! [`TwoPhaseSet`]: a set with permanent removal (tombstones).

use std::borrow::Borrow;
use std::collections::BTreeSet;

use crate::{Commutative, Idempotent, Monoid, Semigroup};

/// A two-phase set: an element is present iff it was added and never
/// removed. A removal is permanent: **a removed element can never come
/// back**, whatever adds arrive later (remove wins, and the tombstone is
/// kept forever). Use [`OrSet`](crate::OrSet) when elements must be
/// re-addable.
///
/// Because a tombstone also covers adds that arrive *after* it, the set
/// converges under any delivery order: a remove event processed before
/// its add still wins.
///
/// - state: the added elements and the removed ones (tombstones); combine:
///   union of both; identity: empty;
/// - canonical form: an element with a tombstone is not stored among the
///   added ones (it could never be observed), so `==` compares what is
///   observable plus the tombstones;
/// - laws: commutative and idempotent (a join-semilattice);
/// - serialized as `{"added": [...], "removed": [...]}`.
///
/// # Examples
///
/// ```
/// use accrete_monoids::{Monoid, Semigroup, TwoPhaseSet};
///
/// let mut seats = TwoPhaseSet::new();
/// seats.add("12A");
/// seats.combine(&TwoPhaseSet::add_delta("12B"));
/// seats.combine(&TwoPhaseSet::remove_delta("12A"));
/// assert!(seats.contains("12B"));
/// assert!(!seats.contains("12A"));
///
/// // Removed for good: a later (or re-delivered) add does not bring it back.
/// seats.add("12A");
/// assert!(!seats.contains("12A"));
///
/// // Order does not matter: the remove may arrive first.
/// let late = TwoPhaseSet::fold([TwoPhaseSet::remove_delta(1), TwoPhaseSet::add_delta(1)]);
/// assert!(late.is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct TwoPhaseSet<T> {
    /// Added and not removed.
    added: BTreeSet<T>,
    /// Tombstones.
    removed: BTreeSet<T>,
}

impl<T> Default for TwoPhaseSet<T> {
    fn default() -> Self {
        TwoPhaseSet::new()
    }
}

impl<T> TwoPhaseSet<T> {
    /// The empty set, with no tombstones.
    #[inline]
    pub const fn new() -> Self {
        TwoPhaseSet {
            added: BTreeSet::new(),
            removed: BTreeSet::new(),
        }
    }

    /// How many elements are present.
    #[inline]
    pub fn len(&self) -> usize {
        self.added.len()
    }

    /// Whether no element is present (tombstones may exist).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
    }

    /// The present elements, ascending.
    #[inline]
    pub fn iter(&self) -> std::collections::btree_set::Iter<'_, T> {
        self.added.iter()
    }

    /// The tombstones (elements removed for good), ascending.
    #[inline]
    pub fn removed(&self) -> std::collections::btree_set::Iter<'_, T> {
        self.removed.iter()
    }
}

impl<T: Ord> TwoPhaseSet<T> {
    /// The delta of adding `element`.
    pub fn add_delta(element: T) -> Self {
        TwoPhaseSet {
            added: BTreeSet::from([element]),
            removed: BTreeSet::new(),
        }
    }

    /// The delta of removing `element`: a tombstone.
    pub fn remove_delta(element: T) -> Self {
        TwoPhaseSet {
            added: BTreeSet::new(),
            removed: BTreeSet::from([element]),
        }
    }

    /// Adds `element`, unless it has been removed. Returns whether it is now
    /// present and was not before.
    pub fn add(&mut self, element: T) -> bool {
        !self.removed.contains(&element) && self.added.insert(element)
    }

    /// Removes `element` for good (also if it was never added). Returns
    /// whether it was present.
    pub fn remove(&mut self, element: T) -> bool {
        let present = self.added.remove(&element);
        self.removed.insert(element);
        present
    }

    /// Whether `element` is present.
    #[inline]
    pub fn contains<Q>(&self, element: &Q) -> bool
    where
        T: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.added.contains(element)
    }

    /// Whether `element` has been removed for good.
    #[inline]
    pub fn is_removed<Q>(&self, element: &Q) -> bool
    where
        T: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.removed.contains(element)
    }

    /// The canonical form of any added and removed sets.
    fn canonical(mut added: BTreeSet<T>, removed: BTreeSet<T>) -> Self {
        if !removed.is_empty() {
            added.retain(|x| !removed.contains(x));
        }
        TwoPhaseSet { added, removed }
    }
}

/// Union of the added and the removed elements.
impl<T: Ord + Clone> Semigroup for TwoPhaseSet<T> {
    fn combine(&mut self, other: &Self) {
        for x in &other.removed {
            if !self.removed.contains(x) {
                self.added.remove(x);
                self.removed.insert(x.clone());
            }
        }
        for x in &other.added {
            if !self.removed.contains(x) && !self.added.contains(x) {
                self.added.insert(x.clone());
            }
        }
    }

    fn combine_owned(&mut self, other: Self) {
        for x in other.removed {
            self.added.remove(&x);
            self.removed.insert(x);
        }
        for x in other.added {
            if !self.removed.contains(&x) {
                self.added.insert(x);
            }
        }
    }
}

impl<T: Ord + Clone> Monoid for TwoPhaseSet<T> {
    #[inline]
    fn identity() -> Self {
        TwoPhaseSet::new()
    }
    #[inline]
    fn is_identity(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

impl<T: Ord + Clone> Commutative for TwoPhaseSet<T> {}
impl<T: Ord + Clone> Idempotent for TwoPhaseSet<T> {}

#[cfg(feature = "serde")]
impl<'de, T> serde::Deserialize<'de> for TwoPhaseSet<T>
where
    T: Ord + serde::Deserialize<'de>,
{
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(bound(deserialize = "T: Ord + serde::Deserialize<'de>"))]
        struct Repr<T> {
            added: BTreeSet<T>,
            removed: BTreeSet<T>,
        }
        let Repr { added, removed } = Repr::deserialize(deserializer)?;
        Ok(TwoPhaseSet::canonical(added, removed))
    }
}

#[cfg(feature = "laws")]
impl<T: quickcheck::Arbitrary + Ord> quickcheck::Arbitrary for TwoPhaseSet<T> {
    fn arbitrary(g: &mut quickcheck::Gen) -> Self {
        use crate::dot::arb;
        let mut set = TwoPhaseSet::new();
        for _ in 0..arb::op_count(g) {
            match arb::index(g, 3) {
                0 | 1 => {
                    set.add(T::arbitrary(g));
                }
                _ => {
                    // Remove a present element or an arbitrary one.
                    let present: Vec<T> = set.iter().cloned().collect();
                    let target = match present.len() {
                        0 => T::arbitrary(g),
                        n if bool::arbitrary(g) => present[arb::index(g, n)].clone(),
                        _ => T::arbitrary(g),
                    };
                    set.remove(target);
                }
            }
        }
        set
    }
    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        let parts = (
            self.added.iter().cloned().collect::<Vec<T>>(),
            self.removed.iter().cloned().collect::<Vec<T>>(),
        );
        Box::new(parts.shrink().map(|(added, removed)| {
            TwoPhaseSet::canonical(added.into_iter().collect(), removed.into_iter().collect())
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removal_is_permanent() {
        let mut s = TwoPhaseSet::new();
        assert!(s.add(1));
        assert!(!s.add(1));
        assert!(s.remove(1));
        assert!(!s.add(1));
        assert!(!s.contains(&1));
        assert!(s.is_removed(&1));
        assert!(!s.remove(2)); // never added: a tombstone anyway
        s.combine(&TwoPhaseSet::add_delta(2));
        assert!(s.is_empty());
        assert!(!s.is_identity());
        assert_eq!(s.removed().copied().collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn every_order_of_add_remove_and_duplicate_agrees() {
        let deltas = [
            TwoPhaseSet::add_delta('x'),
            TwoPhaseSet::remove_delta('x'),
            TwoPhaseSet::add_delta('x'),
            TwoPhaseSet::add_delta('y'),
        ];
        let expected = TwoPhaseSet::fold(deltas.clone());
        assert_eq!(expected.iter().collect::<Vec<_>>(), [&'y']);
        for order in [[0, 1, 2, 3], [2, 1, 0, 3], [1, 0, 3, 2], [3, 1, 2, 0]] {
            assert_eq!(
                TwoPhaseSet::fold(order.map(|i| deltas[i].clone())),
                expected
            );
        }
    }

    #[cfg(feature = "serde")]
    #[test]
    fn deserialization_canonicalizes() {
        let s: TwoPhaseSet<u8> =
            serde_json::from_str(r#"{"added":[1,2],"removed":[2,3]}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"added":[1],"removed":[2,3]}"#
        );
    }
}

#[cfg(all(test, feature = "laws"))]
mod laws {
    use super::*;
    use crate::laws::Laws;
    use crate::test_util::Small;

    // `TwoPhaseSet<u8>`: tests/laws.rs.
    #[test]
    fn two_phase_set_of_a_small_domain_is_a_semilattice() {
        Laws::<TwoPhaseSet<Small>>::new("TwoPhaseSet<Small>")
            .commutative()
            .idempotent()
            .assert();
    }
}
