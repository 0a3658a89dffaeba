//! [`GSet`]: a grow-only set.

use std::borrow::Borrow;
use std::collections::BTreeSet;

use crate::{Commutative, Idempotent, Monoid, Semigroup};

/// A grow-only set: elements can be added, never removed.
///
/// - combine: union; identity: the empty set;
/// - laws: commutative and idempotent (a join-semilattice), so delivery
///   order and duplicates do not matter;
/// - serialized as a sequence of elements, ascending.
///
/// A delta is simply the set of elements an event adds:
/// [`GSet::of`]`([x])`.
///
/// # Examples
///
/// ```
/// use accrete_monoids::{GSet, Monoid, Semigroup};
///
/// let mut tags = GSet::of(["rust"]);
/// tags.combine(&GSet::of(["crdt", "rust"]));
/// tags.insert("monoid");
/// assert!(tags.contains("crdt"));
/// assert_eq!(tags.iter().copied().collect::<Vec<_>>(), ["crdt", "monoid", "rust"]);
///
/// // Any order, any duplicates: the same set.
/// let a = GSet::fold([GSet::of([1]), GSet::of([2]), GSet::of([1])]);
/// let b = GSet::fold([GSet::of([2]), GSet::of([1])]);
/// assert_eq!(a, b);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
#[cfg_attr(
    feature = "serde",
    serde(bound(deserialize = "T: Ord + serde::Deserialize<'de>"))
)]
pub struct GSet<T> {
    elements: BTreeSet<T>,
}

impl<T> Default for GSet<T> {
    fn default() -> Self {
        GSet::new()
    }
}

impl<T> GSet<T> {
    /// The empty set.
    #[inline]
    pub const fn new() -> Self {
        GSet {
            elements: BTreeSet::new(),
        }
    }

    /// How many elements.
    #[inline]
    pub fn len(&self) -> usize {
        self.elements.len()
    }

    /// Whether the set is empty (the identity).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }

    /// The elements, ascending.
    #[inline]
    pub fn iter(&self) -> std::collections::btree_set::Iter<'_, T> {
        self.elements.iter()
    }

    /// The elements as a `BTreeSet`.
    #[inline]
    pub fn into_inner(self) -> BTreeSet<T> {
        self.elements
    }
}

impl<T: Ord> GSet<T> {
    /// The set of the given elements: the delta of an event adding them.
    pub fn of<I: IntoIterator<Item = T>>(elements: I) -> Self {
        GSet {
            elements: elements.into_iter().collect(),
        }
    }

    /// Adds an element; returns whether it was new.
    #[inline]
    pub fn insert(&mut self, element: T) -> bool {
        self.elements.insert(element)
    }

    /// Whether `element` is in the set.
    #[inline]
    pub fn contains<Q>(&self, element: &Q) -> bool
    where
        T: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.elements.contains(element)
    }
}

impl<T: Ord> FromIterator<T> for GSet<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        GSet::of(iter)
    }
}

impl<T: Ord> Extend<T> for GSet<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, iter: I) {
        self.elements.extend(iter);
    }
}

impl<T> IntoIterator for GSet<T> {
    type Item = T;
    type IntoIter = std::collections::btree_set::IntoIter<T>;
    fn into_iter(self) -> Self::IntoIter {
        self.elements.into_iter()
    }
}

impl<'a, T> IntoIterator for &'a GSet<T> {
    type Item = &'a T;
    type IntoIter = std::collections::btree_set::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.elements.iter()
    }
}

/// Union.
impl<T: Ord + Clone> Semigroup for GSet<T> {
    fn combine(&mut self, other: &Self) {
        if self.elements.is_empty() {
            self.elements.clone_from(&other.elements);
            return;
        }
        for element in &other.elements {
            if !self.elements.contains(element) {
                self.elements.insert(element.clone());
            }
        }
    }

    fn combine_owned(&mut self, mut other: Self) {
        if other.elements.len() > self.elements.len() {
            std::mem::swap(self, &mut other);
        }
        self.elements.extend(other.elements);
    }
}

impl<T: Ord + Clone> Monoid for GSet<T> {
    #[inline]
    fn identity() -> Self {
        GSet::new()
    }
    #[inline]
    fn is_identity(&self) -> bool {
        self.elements.is_empty()
    }
}

impl<T: Ord + Clone> Commutative for GSet<T> {}
impl<T: Ord + Clone> Idempotent for GSet<T> {}

#[cfg(feature = "laws")]
impl<T: quickcheck::Arbitrary + Ord> quickcheck::Arbitrary for GSet<T> {
    fn arbitrary(g: &mut quickcheck::Gen) -> Self {
        let n = crate::dot::arb::op_count(g);
        let mut set = GSet::new();
        for _ in 0..n {
            set.insert(T::arbitrary(g));
        }
        set
    }
    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        let elements: Vec<T> = self.elements.iter().cloned().collect();
        Box::new(elements.shrink().map(GSet::of))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_and_queries() {
        let mut s = GSet::of([3, 1]);
        assert!(!s.insert(1));
        assert!(s.insert(2));
        s.combine(&GSet::of([5]));
        s.combine_owned(GSet::of([0, 9, 8, 7]));
        assert_eq!(s.len(), 8);
        assert!(s.contains(&9) && !s.contains(&4));
        assert_eq!(
            s.iter().copied().collect::<Vec<_>>(),
            [0, 1, 2, 3, 5, 7, 8, 9]
        );
        assert!(GSet::<u8>::new().is_identity());
        let strings = GSet::of(["a".to_string()]);
        assert!(strings.contains("a"));
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serializes_as_a_sequence() {
        let s = GSet::of(["b", "a"]);
        assert_eq!(serde_json::to_string(&s).unwrap(), r#"["a","b"]"#);
        let back: GSet<u32> = serde_json::from_str("[3,1,3]").unwrap();
        assert_eq!(back, GSet::of([1, 3]));
    }
}

#[cfg(all(test, feature = "laws"))]
mod laws {
    use super::*;
    use crate::laws::{Laws, assert_round_trip};
    use crate::test_util::Small;

    // `GSet<u8>` and `GSet<u32>`: tests/laws.rs.
    #[test]
    fn gset_of_a_small_domain_is_a_semilattice() {
        Laws::<GSet<Small>>::new("GSet<Small>")
            .commutative()
            .idempotent()
            .assert();
    }

    #[test]
    fn strings_round_trip() {
        assert_round_trip(&GSet::of(["x".to_string(), "y".to_string()]));
    }
}
