//! [`Map`]: key-wise combine that forgets keys whose value is the identity.

use std::borrow::Borrow;
use std::collections::BTreeMap;

use crate::{Commutative, Idempotent, Monoid, Semigroup};

/// A map whose values are monoids: combine merges key by key, and a key
/// whose value combines to the identity is dropped.
///
/// A missing key *means* the identity, so the map never stores one; its
/// form is canonical and `==` is semantic:
/// `{a: Sum(5)} ⊕ {a: Sum(-5)} == {}`. (The plain `BTreeMap` instance keeps
/// such keys.)
///
/// - identity: the empty map;
/// - laws: those of `M`: commutative if `M` is, idempotent if `M` is;
/// - serialized as a sequence of `[key, value]` pairs, ascending by key
///   (BSON documents need string keys, so no map).
///
/// # Examples
///
/// ```
/// use accrete_monoids::{Map, Monoid, Semigroup, Sum};
///
/// let mut balances = Map::singleton("alice", Sum(5_i64));
/// balances.update("bob", Sum(3));
/// balances.combine(&Map::singleton("alice", Sum(-5)));
/// assert_eq!(balances.get("alice"), None); // back to the identity: gone
/// assert_eq!(balances.get("bob"), Some(&Sum(3)));
/// assert_eq!(balances.len(), 1);
///
/// let cancelled = Map::singleton('a', Sum(5_i64)).combined(&Map::singleton('a', Sum(-5)));
/// assert!(cancelled.is_identity());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Map<K, M> {
    /// No identity values.
    entries: BTreeMap<K, M>,
}

impl<K, M> Default for Map<K, M> {
    fn default() -> Self {
        Map::new()
    }
}

impl<K, M> Map<K, M> {
    /// The empty map.
    #[inline]
    pub const fn new() -> Self {
        Map {
            entries: BTreeMap::new(),
        }
    }

    /// How many keys have a non-identity value.
    #[inline]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map is empty (the identity).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, ascending by key.
    #[inline]
    pub fn iter(&self) -> std::collections::btree_map::Iter<'_, K, M> {
        self.entries.iter()
    }

    /// The keys, ascending.
    #[inline]
    pub fn keys(&self) -> std::collections::btree_map::Keys<'_, K, M> {
        self.entries.keys()
    }

    /// The entries as a `BTreeMap` (without identity values).
    #[inline]
    pub fn into_inner(self) -> BTreeMap<K, M> {
        self.entries
    }
}

impl<K: Ord, M> Map<K, M> {
    /// The value under `key`; `None` means the identity.
    #[inline]
    pub fn get<Q>(&self, key: &Q) -> Option<&M>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.entries.get(key)
    }
}

impl<K: Ord, M: Monoid> Map<K, M> {
    /// A map with one entry (empty if `value` is the identity): the delta of
    /// an event touching one key.
    pub fn singleton(key: K, value: M) -> Self {
        let mut map = Map::new();
        if !value.is_identity() {
            map.entries.insert(key, value);
        }
        map
    }

    /// Combines `delta` into the value under `key`, dropping the key if the
    /// result is the identity.
    pub fn update(&mut self, key: K, delta: M) {
        use std::collections::btree_map::Entry;
        match self.entries.entry(key) {
            Entry::Occupied(mut entry) => {
                entry.get_mut().combine_owned(delta);
                if entry.get().is_identity() {
                    entry.remove();
                }
            }
            Entry::Vacant(entry) => {
                if !delta.is_identity() {
                    entry.insert(delta);
                }
            }
        }
    }
}

impl<K: Ord, M: Monoid> FromIterator<(K, M)> for Map<K, M> {
    /// Combines the values of repeated keys, in order.
    fn from_iter<I: IntoIterator<Item = (K, M)>>(iter: I) -> Self {
        let mut map = Map::new();
        for (key, value) in iter {
            map.update(key, value);
        }
        map
    }
}

impl<'a, K, M> IntoIterator for &'a Map<K, M> {
    type Item = (&'a K, &'a M);
    type IntoIter = std::collections::btree_map::Iter<'a, K, M>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter()
    }
}

impl<K, M> IntoIterator for Map<K, M> {
    type Item = (K, M);
    type IntoIter = std::collections::btree_map::IntoIter<K, M>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

/// Key-wise combine; keys whose value becomes the identity are dropped.
impl<K: Ord + Clone, M: Monoid + Clone> Semigroup for Map<K, M> {
    fn combine(&mut self, other: &Self) {
        for (key, theirs) in &other.entries {
            match self.entries.get_mut(key) {
                Some(mine) => {
                    mine.combine(theirs);
                    if mine.is_identity() {
                        self.entries.remove(key);
                    }
                }
                None => {
                    if !theirs.is_identity() {
                        self.entries.insert(key.clone(), theirs.clone());
                    }
                }
            }
        }
    }

    fn combine_owned(&mut self, other: Self) {
        if self.entries.is_empty() {
            *self = other;
            return;
        }
        for (key, theirs) in other.entries {
            self.update(key, theirs);
        }
    }
}

impl<K: Ord + Clone, M: Monoid + Clone> Monoid for Map<K, M> {
    #[inline]
    fn identity() -> Self {
        Map::new()
    }
    #[inline]
    fn is_identity(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<K: Ord + Clone, M: Monoid + Commutative + Clone> Commutative for Map<K, M> {}
impl<K: Ord + Clone, M: Monoid + Idempotent + Clone> Idempotent for Map<K, M> {}

#[cfg(feature = "serde")]
impl<K: serde::Serialize, M: serde::Serialize> serde::Serialize for Map<K, M> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.entries.iter())
    }
}

#[cfg(feature = "serde")]
impl<'de, K, M> serde::Deserialize<'de> for Map<K, M>
where
    K: Ord + serde::Deserialize<'de>,
    M: Monoid + serde::Deserialize<'de>,
{
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let pairs = Vec::<(K, M)>::deserialize(deserializer)?;
        Ok(pairs.into_iter().collect())
    }
}

#[cfg(feature = "laws")]
impl<K, M> quickcheck::Arbitrary for Map<K, M>
where
    K: quickcheck::Arbitrary + Ord,
    M: quickcheck::Arbitrary + Monoid,
{
    fn arbitrary(g: &mut quickcheck::Gen) -> Self {
        let mut map = Map::new();
        for _ in 0..crate::dot::arb::op_count(g) {
            map.update(K::arbitrary(g), M::arbitrary(g));
        }
        map
    }
    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        let pairs: Vec<(K, M)> = self
            .entries
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Box::new(pairs.shrink().map(|pairs| pairs.into_iter().collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Max, Sum};

    #[test]
    fn drops_identity_values() {
        let mut m = Map::singleton("a", Sum(5_i64));
        m.combine(&Map::singleton("a", Sum(-5)));
        assert_eq!(m, Map::new());
        assert!(Map::singleton("z", Sum(0_i64)).is_empty());
        m.update("b", Sum(1));
        m.update("b", Sum(0));
        m.update("c", Sum(0));
        assert_eq!(m.iter().collect::<Vec<_>>(), [(&"b", &Sum(1))]);
        m.combine_owned(Map::singleton("b", Sum(-1)));
        assert!(m.is_identity());
    }

    #[test]
    fn combines_key_wise() {
        let a: Map<&str, Max<u8>> = [("x", Max(1)), ("y", Max(7)), ("x", Max(3))]
            .into_iter()
            .collect();
        let b = Map::singleton("x", Max(2)).combined(&Map::singleton("z", Max(9)));
        let ab = a.combined(&b);
        assert_eq!(ab.keys().copied().collect::<Vec<_>>(), ["x", "y", "z"]);
        assert_eq!(ab.get("x"), Some(&Max(3)));
        assert_eq!(ab.len(), 3);
        assert_eq!(ab.into_inner().len(), 3);
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serializes_as_pairs() {
        let m: Map<u64, Sum<i64>> = [(2, Sum(-1)), (1, Sum(4))].into_iter().collect();
        assert_eq!(serde_json::to_string(&m).unwrap(), "[[1,4],[2,-1]]");
        let back: Map<u64, Sum<i64>> = serde_json::from_str("[[2,-1],[1,4],[3,0],[1,-4]]").unwrap();
        assert_eq!(back, Map::singleton(2, Sum(-1)));
    }
}

#[cfg(all(test, feature = "laws"))]
mod laws {
    use super::*;
    use crate::laws::{Laws, assert_round_trip};
    use crate::test_util::Small;
    use crate::{GCounter, GSet, Sum};

    #[test]
    fn map_of_sums_is_a_commutative_monoid() {
        Laws::<Map<Small, Sum<i64>>>::new("Map<Small, Sum<i64>>")
            .commutative()
            .assert();
    }

    #[test]
    fn map_of_semilattices_is_a_semilattice() {
        Laws::<Map<Small, GSet<Small>>>::new("Map<Small, GSet<Small>>")
            .commutative()
            .idempotent()
            .assert();
        Laws::<Map<Small, GCounter>>::new("Map<Small, GCounter>")
            .commutative()
            .idempotent()
            .assert();
    }

    #[test]
    fn string_keys_round_trip() {
        assert_round_trip(&Map::singleton("k".to_string(), Sum(3_i64)));
    }
}
