//! [`Any`], [`All`] and [`BitOr`]: boolean and bitwise joins.

use crate::{Commutative, Idempotent, Monoid, Semigroup};

/// Whether any value was `true` (logical or).
///
/// - identity: `Any(false)`; laws: commutative, idempotent.
///
/// # Examples
///
/// ```
/// use accrete_monoids::{Any, Monoid};
///
/// assert_eq!(Any::fold([Any(false), Any(true)]), Any(true));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct Any(pub bool);

/// Whether every value was `true` (logical and).
///
/// - identity: `All(true)`; laws: commutative, idempotent.
///
/// # Examples
///
/// ```
/// use accrete_monoids::{All, Monoid};
///
/// assert_eq!(All::fold([All(true), All(false)]), All(false));
/// assert_eq!(All::fold([]), All(true));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct All(pub bool);

impl Default for All {
    fn default() -> Self {
        All(true)
    }
}

/// Bitwise or of flags: each bit is an independent [`Any`].
///
/// - identity: `BitOr(0)`; laws: commutative, idempotent.
///
/// MongoDB pushdown: `$bit: { or: … }`.
///
/// # Examples
///
/// ```
/// use accrete_monoids::{BitOr, Monoid};
///
/// const EMAIL_VERIFIED: u32 = 0b01;
/// const PAID: u32 = 0b10;
/// let flags = BitOr::fold([BitOr(EMAIL_VERIFIED), BitOr(PAID)]);
/// assert_eq!(flags.0, 0b11);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct BitOr<T>(pub T);

macro_rules! join {
    ($ty:ty, $identity:expr, |$a:ident, $b:ident| $op:expr) => {
        impl Semigroup for $ty {
            #[inline]
            fn combine(&mut self, other: &Self) {
                let ($a, $b) = (self.0, other.0);
                self.0 = $op;
            }
        }
        impl Monoid for $ty {
            #[inline]
            fn identity() -> Self {
                $identity
            }
            #[inline]
            fn is_identity(&self) -> bool {
                *self == $identity
            }
        }
        impl Commutative for $ty {}
        impl Idempotent for $ty {}
    };
}

join!(Any, Any(false), |a, b| a | b);
join!(All, All(true), |a, b| a & b);

macro_rules! bit_or {
    ($($t:ty),* $(,)?) => {$(
        join!(BitOr<$t>, BitOr(0), |a, b| a | b);
    )*};
}
bit_or!(u8, u16, u32, u64, u128, i32, i64);

#[cfg(feature = "laws")]
mod arbitrary {
    use super::*;
    use quickcheck::{Arbitrary, Gen};

    impl Arbitrary for Any {
        fn arbitrary(g: &mut Gen) -> Self {
            Any(bool::arbitrary(g))
        }
    }
    impl Arbitrary for All {
        fn arbitrary(g: &mut Gen) -> Self {
            All(bool::arbitrary(g))
        }
    }
    impl<T: Arbitrary> Arbitrary for BitOr<T> {
        fn arbitrary(g: &mut Gen) -> Self {
            BitOr(T::arbitrary(g))
        }
        fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
            Box::new(self.0.shrink().map(BitOr))
        }
    }
}
