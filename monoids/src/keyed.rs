//! [`KeyedFold`]: folding deltas into a per-key map of monoids, in place.

use std::collections::btree_map::{self, BTreeMap};
use std::collections::hash_map::{self, HashMap};
use std::hash::{BuildHasher, Hash};

use crate::Semigroup;

/// Folds a delta into the state of one key: the inner loop of every read
/// model ("pre-aggregate per key in memory").
///
/// One hash lookup per delta, no allocation when the key exists, and the
/// delta moved in (so sets and sketches reuse its memory). The runtime uses
/// it for pre-aggregation; it is as fast as a hand-written
/// `*map.entry(k).or_insert(0) += v` loop (see `benches/`).
///
/// # Examples
///
/// ```
/// use accrete_monoids::{KeyedFold, Sum};
/// use std::collections::HashMap;
///
/// let mut revenue: HashMap<&str, Sum<i64>> = HashMap::new();
/// for (product, cents) in [("tea", 350), ("cake", 420), ("tea", 350)] {
///     revenue.combine_at(product, Sum(cents));
/// }
/// assert_eq!(revenue["tea"], Sum(700));
/// ```
pub trait KeyedFold<K, M> {
    /// `self[key] = self[key] ⊕ delta`, inserting `delta` for a new key.
    fn combine_at(&mut self, key: K, delta: M);

    /// Folds every `(key, delta)` pair.
    fn combine_all_at<I: IntoIterator<Item = (K, M)>>(&mut self, deltas: I) {
        for (key, delta) in deltas {
            self.combine_at(key, delta);
        }
    }
}

impl<K: Eq + Hash, M: Semigroup, H: BuildHasher> KeyedFold<K, M> for HashMap<K, M, H> {
    #[inline]
    fn combine_at(&mut self, key: K, delta: M) {
        match self.entry(key) {
            hash_map::Entry::Occupied(mut e) => e.get_mut().combine_owned(delta),
            hash_map::Entry::Vacant(e) => {
                e.insert(delta);
            }
        }
    }
}

impl<K: Ord, M: Semigroup> KeyedFold<K, M> for BTreeMap<K, M> {
    #[inline]
    fn combine_at(&mut self, key: K, delta: M) {
        match self.entry(key) {
            btree_map::Entry::Occupied(mut e) => e.get_mut().combine_owned(delta),
            btree_map::Entry::Vacant(e) => {
                e.insert(delta);
            }
        }
    }
}
