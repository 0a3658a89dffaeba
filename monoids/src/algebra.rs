//! The algebra: [`Semigroup`], [`Monoid`], [`Group`] and the law markers
//! [`Commutative`] and [`Idempotent`].
//!
//! Every method that matters updates in place: `combine(&mut self, &other)`
//! is the primary operation, and everything else (`combined`,
//! `combine_owned`, `combine_all`, [`Monoid::fold`]) is a convenience or a
//! fast path defined in terms of it. The law harness
//! ([`laws`](crate#the-law-harness), feature `laws`) checks that every fast
//! path agrees with the plain fold.

/// An associative, in-place binary operation.
///
/// Laws (checked by the harness):
/// - associativity: `(a ⊕ b) ⊕ c == a ⊕ (b ⊕ c)`;
/// - `combine_owned` and `combined` equal `combine`;
/// - `combine_all(items)` equals combining the items one by one, in order.
///
/// # Examples
///
/// ```
/// use accrete_monoids::{Semigroup, Sum};
///
/// let mut total = Sum(2_u64);
/// total.combine(&Sum(3));
/// assert_eq!(total, Sum(5));
/// assert_eq!(Sum(1_u64).combined(&Sum(1)), Sum(2));
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a semigroup: accrete does not know how to combine two of them",
    label = "no `combine` for `{Self}`",
    note = "wrap the value in a primitive that says how values combine: `Sum<T>`, `Count`, `Max<T>`, `Min<T>`, \
            `LastWriteWins<T>`, `GSet<T>`, `HyperLogLog`, … or implement `Semigroup` for it"
)]
pub trait Semigroup: Sized {
    /// Combines `other` into `self`: `self = self ⊕ other`.
    fn combine(&mut self, other: &Self);

    /// Combines an owned `other` into `self`. Types that can reuse `other`'s
    /// allocation (sets, maps, sketches) override this to avoid a clone.
    #[inline]
    fn combine_owned(&mut self, other: Self) {
        self.combine(&other);
    }

    /// By-value form: `self ⊕ other`.
    #[inline]
    #[must_use]
    fn combined(mut self, other: &Self) -> Self {
        self.combine(other);
        self
    }

    /// Combines every item into `self`, in order. The batch fast path:
    /// types override it when a batch can be merged more cheaply than one
    /// item at a time. Law: equal to a left fold of `combine_owned`.
    #[inline]
    fn combine_all<I>(&mut self, items: I)
    where
        I: IntoIterator<Item = Self>,
    {
        for item in items {
            self.combine_owned(item);
        }
    }
}

/// A [`Semigroup`] with an identity element.
///
/// Laws (checked by the harness): `identity() ⊕ a == a == a ⊕ identity()`
/// and `identity().is_identity()`.
///
/// # Examples
///
/// ```
/// use accrete_monoids::{Monoid, Max};
///
/// let best = Max::fold([Max(3_i64), Max(9), Max(4)]);
/// assert_eq!(best, Max(9));
/// assert!(Max::<i64>::identity().is_identity());
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a monoid: it has no identity element",
    label = "no `identity()` for `{Self}`",
    note = "unbounded types such as `Max<String>` become monoids inside `Option`: `Option<Max<String>>`"
)]
pub trait Monoid: Semigroup {
    /// The identity element: combining it changes nothing.
    fn identity() -> Self;

    /// Whether `self` is the identity. A store may drop keys whose state
    /// has fallen back to the identity, and the runtime skips identity
    /// deltas without writing.
    fn is_identity(&self) -> bool;

    /// Folds any number of values, starting from the identity.
    #[inline]
    fn fold<I>(items: I) -> Self
    where
        I: IntoIterator<Item = Self>,
    {
        let mut acc = Self::identity();
        acc.combine_all(items);
        acc
    }
}

/// Law marker: `a ⊕ b == b ⊕ a`.
///
/// A commutative monoid folds to the same state whatever order the events
/// arrive in. Read models in accrete require it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not claim commutativity (a ⊕ b == b ⊕ a)",
    label = "the result would depend on delivery order",
    note = "read models need commutative state; `Last`-by-arrival values are not, `LastWriteWins` (by timestamp) is"
)]
pub trait Commutative: Semigroup {}

/// Law marker: `a ⊕ a == a`.
///
/// A commutative, idempotent monoid is a join-semilattice (a state-based
/// CRDT): duplicated deliveries are harmless, so the runtime may skip the
/// exactly-once bookkeeping for it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not claim idempotence (a ⊕ a == a)",
    label = "a duplicate delivery would change the result",
    note = "counts and sums are not idempotent; the runtime applies their effects exactly once instead"
)]
pub trait Idempotent: Semigroup {}

/// A [`Monoid`] where every element has an inverse: `a ⊕ a⁻¹ == identity`.
///
/// Groups allow retractions: undoing an effect by combining its inverse.
///
/// # Examples
///
/// ```
/// use accrete_monoids::{Group, Monoid, Semigroup, Sum};
///
/// let mut balance = Sum(10_i64);
/// balance.combine(&Sum(4).inverse());
/// assert_eq!(balance, Sum(6));
/// ```
pub trait Group: Monoid {
    /// Replaces `self` with its inverse.
    fn invert(&mut self);

    /// By-value form of [`invert`](Group::invert).
    #[inline]
    #[must_use]
    fn inverse(mut self) -> Self {
        self.invert();
        self
    }
}

/// A join-semilattice: a commutative, idempotent monoid. Blanket-implemented.
pub trait Semilattice: Monoid + Commutative + Idempotent {}
impl<T: Monoid + Commutative + Idempotent> Semilattice for T {}

/// Types with a least and a greatest value: the identities of
/// [`Max`](crate::Max) and [`Min`](crate::Min).
pub trait Bounded {
    /// The least value.
    const MIN: Self;
    /// The greatest value.
    const MAX: Self;
}

macro_rules! bounded {
    ($($t:ty),* $(,)?) => {$(
        impl Bounded for $t {
            const MIN: Self = <$t>::MIN;
            const MAX: Self = <$t>::MAX;
        }
    )*};
}
bounded!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, char
);

impl Bounded for bool {
    const MIN: Self = false;
    const MAX: Self = true;
}

impl Bounded for () {
    const MIN: Self = ();
    const MAX: Self = ();
}
