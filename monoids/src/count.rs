//! [`Count`]: how many.

use crate::{Commutative, Monoid, Semigroup};

/// How many things were counted: a sum of non-negative counts.
///
/// - identity: `Count(0)`;
/// - laws: commutative, not idempotent (the runtime applies each event's
///   effect exactly once);
/// - wraps at 2⁶⁴ (unreachable in practice).
///
/// MongoDB pushdown: `$inc`.
///
/// # Examples
///
/// ```
/// use accrete_monoids::{Count, Monoid};
///
/// let views = Count::fold([Count::one(), Count::one(), Count(5)]);
/// assert_eq!(views.get(), 7);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct Count(pub u64);

impl Count {
    /// A count of one: the delta of a single occurrence.
    #[inline]
    pub const fn one() -> Self {
        Count(1)
    }

    /// The count.
    #[inline]
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl Semigroup for Count {
    #[inline]
    fn combine(&mut self, other: &Self) {
        self.0 = self.0.wrapping_add(other.0);
    }
}

impl Monoid for Count {
    #[inline]
    fn identity() -> Self {
        Count(0)
    }
    #[inline]
    fn is_identity(&self) -> bool {
        self.0 == 0
    }
}

impl Commutative for Count {}

#[cfg(feature = "laws")]
impl quickcheck::Arbitrary for Count {
    fn arbitrary(g: &mut quickcheck::Gen) -> Self {
        // Realistic counts: below 2^40, so that sums of many of them still
        // fit BSON's int64 (MongoDB has no unsigned 64-bit integer).
        Count(u64::arbitrary(g) >> 24)
    }
    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        Box::new(self.0.shrink().map(Count))
    }
}
