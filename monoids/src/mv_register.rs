//! [`MultiValue`]: a multi-value register with version vectors.

use std::cmp::Ordering;

use crate::dot::{vv_compare, vv_get, vv_merge_max};
use crate::{Commutative, Idempotent, Monoid, Semigroup};

/// A multi-value register: concurrent writes are all kept, and a write
/// that causally follows others replaces them (like `crdts::MVReg`).
///
/// Each write carries a version vector (its *clock*). A write made by
/// [`write_delta`](Self::write_delta) on a state gets the join of the
/// state's clocks with the writer's entry incremented, so it dominates
/// every write it has seen. Combine keeps the union of the writes minus
/// those whose clock is strictly dominated by another's.
///
/// - identity: the empty register (no write);
/// - laws: commutative and idempotent (a join-semilattice: the maximal
///   elements of a union);
/// - canonical form: writes sorted by value, then clock; no duplicates, no
///   dominated write (so `==` is semantic);
/// - counters saturate: an actor whose clock entry is `u64::MAX` can no
///   longer write ([`write_delta`](Self::write_delta) returns the
///   identity);
/// - serialized as a sequence of `{"value": v, "clock": [[actor, n], ...]}`.
///
/// # Examples
///
/// ```
/// use accrete_monoids::{MultiValue, Semigroup};
///
/// let mut alice = MultiValue::new();
/// alice.write(1_u64, "draft");
/// let mut bob = alice.clone();
///
/// // Concurrent writes: both are kept.
/// alice.write(1, "blue");
/// bob.write(2, "green");
/// let merged = alice.combined(&bob);
/// assert_eq!(merged.values().collect::<Vec<_>>(), [&"blue", &"green"]);
///
/// // A write that has seen both replaces them.
/// let resolved = merged.write_delta(2, "teal");
/// assert_eq!(merged.combined(&resolved).values().collect::<Vec<_>>(), [&"teal"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct MultiValue<T, A = u64> {
    /// Sorted by (value, clock), deduplicated, an antichain of clocks.
    writes: Vec<Entry<T, A>>,
}

/// Field order is the canonical sort order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
struct Entry<T, A> {
    value: T,
    /// A canonical version vector: sorted by actor, no zeros.
    clock: Vec<(A, u64)>,
}

impl<T, A> Default for MultiValue<T, A> {
    fn default() -> Self {
        MultiValue::new()
    }
}

impl<T, A> MultiValue<T, A> {
    /// The empty register.
    #[inline]
    pub const fn new() -> Self {
        MultiValue { writes: Vec::new() }
    }

    /// How many concurrent writes are kept.
    #[inline]
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    /// Whether no write has been seen.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}

impl<T: PartialEq, A> MultiValue<T, A> {
    /// The values of the concurrent writes, ascending and without repeats
    /// (two actors may concurrently write the same value).
    pub fn values(&self) -> impl Iterator<Item = &T> + '_ {
        let mut previous: Option<&T> = None;
        self.writes.iter().map(|w| &w.value).filter(move |v| {
            let repeat = previous == Some(*v);
            previous = Some(*v);
            !repeat
        })
    }
}

impl<T: Ord, A: Ord + Clone> MultiValue<T, A> {
    /// The delta of writing `value` as `actor` after every write in this
    /// state: its clock is the join of the current clocks with `actor`'s
    /// entry incremented. The identity if that entry is already `u64::MAX`.
    pub fn write_delta(&self, actor: A, value: T) -> Self {
        let mut clock: Vec<(A, u64)> = Vec::new();
        for w in &self.writes {
            vv_merge_max(&mut clock, &w.clock);
        }
        let Some(next) = vv_get(&clock, &actor).checked_add(1) else {
            return MultiValue::new();
        };
        match clock.binary_search_by(|(a, _)| a.cmp(&actor)) {
            Ok(i) => clock[i].1 = next,
            Err(i) => clock.insert(i, (actor, next)),
        }
        MultiValue {
            writes: vec![Entry { value, clock }],
        }
    }

    /// Writes `value` as `actor`, replacing every write in this state.
    pub fn write(&mut self, actor: A, value: T) {
        let delta = self.write_delta(actor, value);
        if !delta.writes.is_empty() {
            *self = delta;
        }
    }

    /// Keeps the maximal writes, sorted and deduplicated.
    fn canonicalize(writes: &mut Vec<Entry<T, A>>) {
        if writes.len() > 1 {
            let dominated: Vec<bool> = writes
                .iter()
                .map(|w| {
                    writes
                        .iter()
                        .any(|v| vv_compare(&w.clock, &v.clock) == Some(Ordering::Less))
                })
                .collect();
            let mut flags = dominated.into_iter();
            writes.retain(|_| !flags.next().unwrap_or(false));
        }
        writes.sort_unstable();
        writes.dedup();
    }
}

/// Union of the writes, minus the dominated ones.
impl<T: Ord + Clone, A: Ord + Clone> Semigroup for MultiValue<T, A> {
    fn combine(&mut self, other: &Self) {
        if other.writes.is_empty() || self.writes == other.writes {
            return;
        }
        if self.writes.is_empty() {
            self.writes.clone_from(&other.writes);
            return;
        }
        self.writes.extend(other.writes.iter().cloned());
        MultiValue::canonicalize(&mut self.writes);
    }

    fn combine_owned(&mut self, other: Self) {
        if self.writes.is_empty() {
            *self = other;
            return;
        }
        if other.writes.is_empty() || self.writes == other.writes {
            return;
        }
        self.writes.extend(other.writes);
        MultiValue::canonicalize(&mut self.writes);
    }
}

impl<T: Ord + Clone, A: Ord + Clone> Monoid for MultiValue<T, A> {
    #[inline]
    fn identity() -> Self {
        MultiValue::new()
    }
    #[inline]
    fn is_identity(&self) -> bool {
        self.writes.is_empty()
    }
}

impl<T: Ord + Clone, A: Ord + Clone> Commutative for MultiValue<T, A> {}
impl<T: Ord + Clone, A: Ord + Clone> Idempotent for MultiValue<T, A> {}

#[cfg(feature = "serde")]
impl<'de, T, A> serde::Deserialize<'de> for MultiValue<T, A>
where
    T: Ord + serde::Deserialize<'de>,
    A: Ord + Clone + serde::Deserialize<'de>,
{
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut writes = Vec::<Entry<T, A>>::deserialize(deserializer)?;
        for w in &mut writes {
            crate::dot::vv_canonicalize(&mut w.clock);
        }
        MultiValue::canonicalize(&mut writes);
        Ok(MultiValue { writes })
    }
}

#[cfg(feature = "laws")]
impl<T: quickcheck::Arbitrary + Ord> quickcheck::Arbitrary for MultiValue<T, u64> {
    fn arbitrary(g: &mut quickcheck::Gen) -> Self {
        use crate::dot::arb;
        // A few replicas (actors 0..4) write and exchange states.
        let mut replicas: Vec<MultiValue<T, u64>> = vec![MultiValue::new(); 4];
        for _ in 0..arb::op_count(g) {
            let r = arb::index(g, replicas.len());
            if bool::arbitrary(g) {
                replicas[r].write(r as u64, T::arbitrary(g));
            } else {
                let s = replicas[arb::index(g, replicas.len())].clone();
                replicas[r].combine_owned(s);
            }
        }
        let r = arb::index(g, replicas.len());
        replicas.swap_remove(r)
    }

    /// The identity, and each single write.
    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        let identity = (!self.writes.is_empty()).then(MultiValue::new);
        let singles: Vec<Self> = match self.writes.len() {
            0 | 1 => Vec::new(),
            _ => self
                .writes
                .iter()
                .map(|w| MultiValue {
                    writes: vec![w.clone()],
                })
                .collect(),
        };
        Box::new(identity.into_iter().chain(singles))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causal_writes_replace_concurrent_ones_stay() {
        let mut a = MultiValue::new();
        a.write(1_u64, 10);
        let mut b = a.clone();
        b.write(2, 20);
        // b has seen a's write: it replaces it.
        assert_eq!(a.clone().combined(&b).values().collect::<Vec<_>>(), [&20]);
        a.write(1, 11);
        let both = a.clone().combined(&b);
        assert_eq!(both.values().collect::<Vec<_>>(), [&11, &20]);
        assert_eq!(both.len(), 2);
        let mut c = both.clone();
        c.write(3, 30);
        assert_eq!(c.values().collect::<Vec<_>>(), [&30]);
        assert_eq!(both.combined(&c), c);
    }

    #[test]
    fn equal_concurrent_values_read_once() {
        let base: MultiValue<&str> = MultiValue::new();
        let x = base.write_delta(1, "x");
        let y = base.write_delta(2, "x");
        let merged = x.combined(&y);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged.values().collect::<Vec<_>>(), [&"x"]);
    }

    #[test]
    fn saturated_actor_cannot_write() {
        let r = MultiValue {
            writes: vec![Entry {
                value: 1,
                clock: vec![(1_u64, u64::MAX)],
            }],
        };
        assert!(r.write_delta(1, 2).is_identity());
        assert_eq!(r.write_delta(2, 2).values().collect::<Vec<_>>(), [&2]);
    }

    #[cfg(feature = "serde")]
    #[test]
    fn deserialization_canonicalizes() {
        let r: MultiValue<u8> = serde_json::from_str(
            r#"[{"value":9,"clock":[[1,1]]},{"value":3,"clock":[[2,1],[1,1],[3,0]]},{"value":5,"clock":[[2,2]]}]"#,
        )
        .unwrap();
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"[{"value":3,"clock":[[1,1],[2,1]]},{"value":5,"clock":[[2,2]]}]"#
        );
    }
}

#[cfg(all(test, feature = "laws"))]
mod laws {
    use super::*;
    use crate::laws::Laws;
    use crate::test_util::Small;

    // `MultiValue<u8>`: tests/laws.rs.
    #[test]
    fn multi_value_of_a_small_domain_is_a_semilattice() {
        Laws::<MultiValue<Small>>::new("MultiValue<Small>")
            .commutative()
            .idempotent()
            .assert();
    }
}
