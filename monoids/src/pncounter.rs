//! [`PnCounter`]: a counter that goes up and down, as two [`GCounter`]s.

use crate::{Commutative, GCounter, Idempotent, Monoid, Semigroup};

/// A counter that can be incremented and decremented: one [`GCounter`] for
/// the increments and one for the decrements; the value is their
/// difference.
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
/// - serialized as `{"increments": [[actor, total], ...], "decrements": [...]}`.
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
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(bound(
        serialize = "A: serde::Serialize",
        deserialize = "A: Ord + serde::Deserialize<'de>"
    ))
)]
pub struct PnCounter<A = u64> {
    increments: GCounter<A>,
    decrements: GCounter<A>,
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
            increments: GCounter::new(),
            decrements: GCounter::new(),
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
        let plus = i128::try_from(self.increments.total()).unwrap_or(i128::MAX);
        let minus = i128::try_from(self.decrements.total()).unwrap_or(i128::MAX);
        plus.saturating_sub(minus)
    }

    /// The increments, per actor.
    #[inline]
    pub fn increments(&self) -> &GCounter<A> {
        &self.increments
    }

    /// The decrements, per actor.
    #[inline]
    pub fn decrements(&self) -> &GCounter<A> {
        &self.decrements
    }
}

impl<A: Ord> PnCounter<A> {
    /// Adds `by` to `actor`'s increments.
    #[inline]
    pub fn increment(&mut self, actor: A, by: u64) {
        self.increments.increment(actor, by);
    }

    /// Adds `by` to `actor`'s decrements.
    #[inline]
    pub fn decrement(&mut self, actor: A, by: u64) {
        self.decrements.increment(actor, by);
    }

    /// The delta of `increment(actor, by)` on this state.
    pub fn increment_delta(&self, actor: A, by: u64) -> Self {
        PnCounter {
            increments: self.increments.increment_delta(actor, by),
            decrements: GCounter::new(),
        }
    }

    /// The delta of `decrement(actor, by)` on this state.
    pub fn decrement_delta(&self, actor: A, by: u64) -> Self {
        PnCounter {
            increments: GCounter::new(),
            decrements: self.decrements.increment_delta(actor, by),
        }
    }
}

/// Each half combines as a [`GCounter`].
impl<A: Ord + Clone> Semigroup for PnCounter<A> {
    #[inline]
    fn combine(&mut self, other: &Self) {
        self.increments.combine(&other.increments);
        self.decrements.combine(&other.decrements);
    }

    fn combine_owned(&mut self, other: Self) {
        self.increments.combine_owned(other.increments);
        self.decrements.combine_owned(other.decrements);
    }
}

impl<A: Ord + Clone> Monoid for PnCounter<A> {
    #[inline]
    fn identity() -> Self {
        PnCounter::new()
    }
    #[inline]
    fn is_identity(&self) -> bool {
        self.increments.is_identity() && self.decrements.is_identity()
    }
}

impl<A: Ord + Clone> Commutative for PnCounter<A> {}
impl<A: Ord + Clone> Idempotent for PnCounter<A> {}

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
        Box::new(
            (self.increments.clone(), self.decrements.clone())
                .shrink()
                .map(|(increments, decrements)| PnCounter {
                    increments,
                    decrements,
                }),
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
}
