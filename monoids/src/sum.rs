//! [`Sum`]: addition.

use crate::{Commutative, Group, Monoid, Semigroup};

/// The sum of the values combined.
///
/// - identity: `Sum(0)`;
/// - laws: commutative; a [`Group`] (negation) for signed integers and floats;
///   not idempotent, so the runtime applies each event's effect exactly once;
/// - integers wrap on overflow (addition modulo 2ⁿ stays lawful: see the
///   [crate docs](crate#integers-wrap));
/// - `Sum<f64>` and `Sum<f32>` are only *approximately* associative (floating
///   point rounding); the law harness checks them with a tolerance.
///
/// MongoDB pushdown: `$inc`.
///
/// # Examples
///
/// ```
/// use accrete_monoids::{Monoid, Sum};
///
/// let revenue = Sum::fold([Sum(1999_i64), Sum(500), Sum(-500)]);
/// assert_eq!(revenue.0, 1999);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct Sum<T>(pub T);

impl<T> Sum<T> {
    /// The sum so far.
    #[inline]
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Sum<T> {
    #[inline]
    fn from(value: T) -> Self {
        Sum(value)
    }
}

macro_rules! sum_int {
    ($($t:ty),* $(,)?) => {$(
        impl Semigroup for Sum<$t> {
            #[inline]
            fn combine(&mut self, other: &Self) {
                self.0 = self.0.wrapping_add(other.0);
            }
            #[inline]
            fn combine_all<I: IntoIterator<Item = Self>>(&mut self, items: I) {
                let mut acc = self.0;
                for item in items {
                    acc = acc.wrapping_add(item.0);
                }
                self.0 = acc;
            }
        }
        impl Monoid for Sum<$t> {
            #[inline]
            fn identity() -> Self {
                Sum(0)
            }
            #[inline]
            fn is_identity(&self) -> bool {
                self.0 == 0
            }
        }
        impl Commutative for Sum<$t> {}
        impl Group for Sum<$t> {
            #[inline]
            fn invert(&mut self) {
                self.0 = self.0.wrapping_neg();
            }
        }
    )*};
}
sum_int!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize
);

macro_rules! sum_float {
    ($($t:ty),* $(,)?) => {$(
        impl Semigroup for Sum<$t> {
            #[inline]
            fn combine(&mut self, other: &Self) {
                self.0 += other.0;
            }
        }
        impl Monoid for Sum<$t> {
            #[inline]
            fn identity() -> Self {
                Sum(0.0)
            }
            #[inline]
            fn is_identity(&self) -> bool {
                self.0 == 0.0
            }
        }
        impl Commutative for Sum<$t> {}
        impl Group for Sum<$t> {
            #[inline]
            fn invert(&mut self) {
                self.0 = -self.0;
            }
        }
    )*};
}
sum_float!(f32, f64);

#[cfg(feature = "laws")]
impl<T: quickcheck::Arbitrary> quickcheck::Arbitrary for Sum<T> {
    fn arbitrary(g: &mut quickcheck::Gen) -> Self {
        Sum(T::arbitrary(g))
    }
    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        Box::new(self.0.shrink().map(Sum))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_and_wraps() {
        assert_eq!(Sum(u8::MAX).combined(&Sum(1)), Sum(0));
        let mut s = Sum(0_i64);
        s.combine_all((1..=100).map(Sum));
        assert_eq!(s, Sum(5050));
        assert!(Sum(0.0_f64).is_identity());
    }
}
