//! [`Min`] and [`Max`]: the least and the greatest value seen.

use crate::{Bounded, Commutative, Idempotent, Monoid, Semigroup};

macro_rules! extremum {
    ($(#[$doc:meta])* $name:ident, $keep:tt, $identity:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
        #[cfg_attr(feature = "serde", serde(transparent))]
        pub struct $name<T>(pub T);

        impl<T> $name<T> {
            /// The value.
            #[inline]
            pub fn into_inner(self) -> T {
                self.0
            }
        }

        impl<T: Ord + Clone> Semigroup for $name<T> {
            #[inline]
            fn combine(&mut self, other: &Self) {
                if other.0 $keep self.0 {
                    self.0.clone_from(&other.0);
                }
            }
            #[inline]
            fn combine_owned(&mut self, other: Self) {
                if other.0 $keep self.0 {
                    self.0 = other.0;
                }
            }
        }

        impl<T: Ord + Clone + Bounded> Monoid for $name<T> {
            #[inline]
            fn identity() -> Self {
                $name(T::$identity)
            }
            #[inline]
            fn is_identity(&self) -> bool {
                self.0 == T::$identity
            }
        }

        impl<T: Ord + Clone + Bounded> Default for $name<T> {
            fn default() -> Self {
                Self::identity()
            }
        }

        impl<T: Ord + Clone> Commutative for $name<T> {}
        impl<T: Ord + Clone> Idempotent for $name<T> {}

        impl<T> From<T> for $name<T> {
            #[inline]
            fn from(value: T) -> Self {
                $name(value)
            }
        }

        #[cfg(feature = "laws")]
        impl<T: quickcheck::Arbitrary> quickcheck::Arbitrary for $name<T> {
            fn arbitrary(g: &mut quickcheck::Gen) -> Self {
                $name(T::arbitrary(g))
            }
            fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
                Box::new(self.0.shrink().map($name))
            }
        }
    };
}

extremum!(
    /// The greatest value seen.
    ///
    /// - identity: `Max(T::MIN)` for [`Bounded`] types (integers, `char`,
    ///   `bool`); for unbounded types such as `String`, use
    ///   `Option<Max<T>>`, whose identity is `None`;
    /// - laws: commutative and idempotent (a join-semilattice), so duplicates
    ///   are harmless and no exactly-once bookkeeping is needed.
    ///
    /// MongoDB pushdown: `$max`.
    ///
    /// # Examples
    ///
    /// ```
    /// use accrete_monoids::{Max, Monoid, Semigroup};
    ///
    /// let mut high = Max(3_i64);
    /// high.combine(&Max(7));
    /// high.combine(&Max(7)); // a duplicate changes nothing
    /// assert_eq!(high, Max(7));
    ///
    /// let newest: Option<Max<String>> = Monoid::fold([Some(Max("a".into())), None, Some(Max("c".into()))]);
    /// assert_eq!(newest, Some(Max("c".to_string())));
    /// ```
    Max, >, MIN
);

extremum!(
    /// The least value seen.
    ///
    /// - identity: `Min(T::MAX)` for [`Bounded`] types; for unbounded types
    ///   use `Option<Min<T>>`;
    /// - laws: commutative and idempotent (a meet-semilattice).
    ///
    /// MongoDB pushdown: `$min`.
    ///
    /// # Examples
    ///
    /// ```
    /// use accrete_monoids::{Min, Monoid};
    ///
    /// let fastest = Min::fold([Min(120_u32), Min(87), Min(95)]);
    /// assert_eq!(fastest, Min(87));
    /// ```
    Min, <, MAX
);
