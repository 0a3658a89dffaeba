//! [`First`] and [`Last`]: the value with the earliest or latest event time.

use crate::{Commutative, Idempotent, Monoid, Semigroup};

macro_rules! stamped {
    ($(#[$doc:meta])* $name:ident, $wins:tt) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
        #[cfg_attr(feature = "serde", serde(transparent))]
        pub struct $name<T> {
            entry: Option<(i64, T)>,
        }

        impl<T> $name<T> {
            /// A value observed at event time `timestamp` (by convention,
            /// milliseconds since the Unix epoch).
            #[inline]
            pub fn new(timestamp: i64, value: T) -> Self {
                $name { entry: Some((timestamp, value)) }
            }

            /// The value, if any was combined.
            #[inline]
            pub fn get(&self) -> Option<&T> {
                self.entry.as_ref().map(|(_, v)| v)
            }

            /// The event time of the value, if any.
            #[inline]
            pub fn timestamp(&self) -> Option<i64> {
                self.entry.as_ref().map(|(t, _)| *t)
            }

            /// The value, consuming `self`.
            #[inline]
            pub fn into_inner(self) -> Option<T> {
                self.entry.map(|(_, v)| v)
            }
        }

        impl<T: Ord + Clone> Semigroup for $name<T> {
            #[inline]
            fn combine(&mut self, other: &Self) {
                if let Some(theirs) = &other.entry {
                    match &self.entry {
                        Some(mine) if !(theirs $wins mine) => {}
                        _ => self.entry = Some(theirs.clone()),
                    }
                }
            }
            #[inline]
            fn combine_owned(&mut self, other: Self) {
                if let Some(theirs) = other.entry {
                    match &self.entry {
                        Some(mine) if !(&theirs $wins mine) => {}
                        _ => self.entry = Some(theirs),
                    }
                }
            }
        }

        impl<T: Ord + Clone> Monoid for $name<T> {
            #[inline]
            fn identity() -> Self {
                $name { entry: None }
            }
            #[inline]
            fn is_identity(&self) -> bool {
                self.entry.is_none()
            }
        }

        impl<T> Default for $name<T> {
            fn default() -> Self {
                $name { entry: None }
            }
        }

        impl<T: Ord + Clone> Commutative for $name<T> {}
        impl<T: Ord + Clone> Idempotent for $name<T> {}

        #[cfg(feature = "laws")]
        impl<T: quickcheck::Arbitrary> quickcheck::Arbitrary for $name<T> {
            fn arbitrary(g: &mut quickcheck::Gen) -> Self {
                // A small time domain, so that ties really happen.
                $name { entry: Option::<(i8, T)>::arbitrary(g).map(|(t, v)| (i64::from(t), v)) }
            }
            fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
                let entry = self.entry.clone().map(|(t, v)| (t as i8, v));
                Box::new(entry.shrink().map(|e| $name { entry: e.map(|(t, v)| (i64::from(t), v)) }))
            }
        }
    };
}

stamped!(
    /// The value with the **latest** event time: "last" by when it happened,
    /// not by when it arrived, so it is commutative.
    ///
    /// - identity: no value ([`Last::default`]);
    /// - laws: commutative, idempotent (a join-semilattice over
    ///   `(timestamp, value)`);
    /// - ties: two values with the same timestamp are broken by the value
    ///   itself (the greater wins), so every replica picks the same one.
    ///
    /// For a register written by several actors, where ties should go to an
    /// actor rather than a value, see [`LastWriteWins`](crate::LastWriteWins).
    ///
    /// # Examples
    ///
    /// ```
    /// use accrete_monoids::{Last, Monoid};
    ///
    /// // Delivered out of order: the later event still wins.
    /// let status = Last::fold([Last::new(20, "shipped"), Last::new(10, "paid")]);
    /// assert_eq!(status.get(), Some(&"shipped"));
    /// assert_eq!(status.timestamp(), Some(20));
    /// ```
    Last, >
);

stamped!(
    /// The value with the **earliest** event time.
    ///
    /// - identity: no value ([`First::default`]);
    /// - laws: commutative, idempotent (a meet-semilattice over
    ///   `(timestamp, value)`);
    /// - ties: the lesser value wins.
    ///
    /// # Examples
    ///
    /// ```
    /// use accrete_monoids::{First, Monoid};
    ///
    /// let signup = First::fold([First::new(1_700, "mobile"), First::new(1_200, "web")]);
    /// assert_eq!(signup.get(), Some(&"web"));
    /// ```
    First, <
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_break_by_value_either_way_round() {
        let a = Last::new(5, "a");
        let b = Last::new(5, "b");
        assert_eq!(a.clone().combined(&b), b.clone().combined(&a));
        assert_eq!(a.combined(&b).get(), Some(&"b"));
        assert_eq!(
            First::new(5, "a").combined(&First::new(5, "b")).get(),
            Some(&"a")
        );
    }
}
