//! Lawful instances for standard types.
//!
//! | type | combine | identity | markers |
//! | --- | --- | --- | --- |
//! | integers | wrapping `+` | `0` | commutative, group |
//! | `()` | nothing | `()` | commutative, idempotent, group |
//! | `Option<S>` for any semigroup `S` | `Some ⊕ Some` combines, `None` absorbs nothing | `None` | as `S` |
//! | tuples of monoids, up to 12 | field-wise | field-wise | when every field has them |
//! | `BTreeMap<K, S>`, `HashMap<K, S>` | key-wise union, values combined | empty | as `S` |
//! | `BTreeSet<T>`, `HashSet<T>` | union | empty | commutative, idempotent |
//! | `Vec<T>`, `String` | concatenation | empty | none: order matters |
//!
//! **Integers wrap.** Addition modulo 2ⁿ is a lawful commutative group, so
//! sums stay exact under any order and retractions work; checked or
//! saturating addition is not associative (for signed types) or has no value
//! on overflow. Pick a width that cannot overflow for your domain (`i64`
//! counts events for 292 years at a billion a second), or use `i128`.
//! Floating-point numbers get no bare instance: `+` on floats is not
//! associative. [`Sum<f64>`](crate::Sum) exists for when approximately
//! associative is good enough.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasher, Hash};

use crate::{Commutative, Group, Idempotent, Monoid, Semigroup};

macro_rules! integer {
    ($($t:ty),* $(,)?) => {$(
        impl Semigroup for $t {
            #[inline]
            fn combine(&mut self, other: &Self) {
                *self = self.wrapping_add(*other);
            }
        }
        impl Monoid for $t {
            #[inline]
            fn identity() -> Self {
                0
            }
            #[inline]
            fn is_identity(&self) -> bool {
                *self == 0
            }
        }
        impl Commutative for $t {}
        impl Group for $t {
            #[inline]
            fn invert(&mut self) {
                *self = self.wrapping_neg();
            }
        }
    )*};
}
integer!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize
);

impl Semigroup for () {
    #[inline]
    fn combine(&mut self, _: &Self) {}
}
impl Monoid for () {
    #[inline]
    fn identity() -> Self {}
    #[inline]
    fn is_identity(&self) -> bool {
        true
    }
}
impl Commutative for () {}
impl Idempotent for () {}
impl Group for () {
    #[inline]
    fn invert(&mut self) {}
}

/// `None` is the identity, so `Option` turns any semigroup into a monoid:
/// `Option<Max<String>>` is the monoid of "the greatest string, if any".
impl<S: Semigroup + Clone> Semigroup for Option<S> {
    #[inline]
    fn combine(&mut self, other: &Self) {
        match (self.as_mut(), other) {
            (_, None) => {}
            (Some(mine), Some(theirs)) => mine.combine(theirs),
            (None, Some(theirs)) => *self = Some(theirs.clone()),
        }
    }

    #[inline]
    fn combine_owned(&mut self, other: Self) {
        match (self.as_mut(), other) {
            (_, None) => {}
            (Some(mine), Some(theirs)) => mine.combine_owned(theirs),
            (None, theirs) => *self = theirs,
        }
    }
}
impl<S: Semigroup + Clone> Monoid for Option<S> {
    #[inline]
    fn identity() -> Self {
        None
    }
    #[inline]
    fn is_identity(&self) -> bool {
        self.is_none()
    }
}
impl<S: Commutative + Clone> Commutative for Option<S> {}
impl<S: Idempotent + Clone> Idempotent for Option<S> {}

macro_rules! tuple {
    ($(($t:ident, $i:tt)),+) => {
        impl<$($t: Semigroup),+> Semigroup for ($($t,)+) {
            #[inline]
            fn combine(&mut self, other: &Self) {
                $(self.$i.combine(&other.$i);)+
            }
            #[inline]
            fn combine_owned(&mut self, other: Self) {
                $(self.$i.combine_owned(other.$i);)+
            }
        }
        impl<$($t: Monoid),+> Monoid for ($($t,)+) {
            #[inline]
            fn identity() -> Self {
                ($($t::identity(),)+)
            }
            #[inline]
            fn is_identity(&self) -> bool {
                $(self.$i.is_identity())&&+
            }
        }
        impl<$($t: Commutative),+> Commutative for ($($t,)+) {}
        impl<$($t: Idempotent),+> Idempotent for ($($t,)+) {}
        impl<$($t: Group),+> Group for ($($t,)+) {
            #[inline]
            fn invert(&mut self) {
                $(self.$i.invert();)+
            }
        }
    };
}
tuple!((A, 0));
tuple!((A, 0), (B, 1));
tuple!((A, 0), (B, 1), (C, 2));
tuple!((A, 0), (B, 1), (C, 2), (D, 3));
tuple!((A, 0), (B, 1), (C, 2), (D, 3), (E, 4));
tuple!((A, 0), (B, 1), (C, 2), (D, 3), (E, 4), (F, 5));
tuple!((A, 0), (B, 1), (C, 2), (D, 3), (E, 4), (F, 5), (G, 6));
tuple!(
    (A, 0),
    (B, 1),
    (C, 2),
    (D, 3),
    (E, 4),
    (F, 5),
    (G, 6),
    (H, 7)
);
tuple!(
    (A, 0),
    (B, 1),
    (C, 2),
    (D, 3),
    (E, 4),
    (F, 5),
    (G, 6),
    (H, 7),
    (I, 8)
);
tuple!(
    (A, 0),
    (B, 1),
    (C, 2),
    (D, 3),
    (E, 4),
    (F, 5),
    (G, 6),
    (H, 7),
    (I, 8),
    (J, 9)
);
tuple!(
    (A, 0),
    (B, 1),
    (C, 2),
    (D, 3),
    (E, 4),
    (F, 5),
    (G, 6),
    (H, 7),
    (I, 8),
    (J, 9),
    (K, 10)
);
tuple!(
    (A, 0),
    (B, 1),
    (C, 2),
    (D, 3),
    (E, 4),
    (F, 5),
    (G, 6),
    (H, 7),
    (I, 8),
    (J, 9),
    (K, 10),
    (L, 11)
);

/// The bodies of `combine` and `combine_owned` for maps: key-wise union,
/// values under the same key combine.
macro_rules! pointwise_map {
    () => {
        fn combine(&mut self, other: &Self) {
            for (k, v) in other {
                match self.get_mut(k) {
                    Some(mine) => mine.combine(v),
                    None => {
                        self.insert(k.clone(), v.clone());
                    }
                }
            }
        }

        fn combine_owned(&mut self, other: Self) {
            for (k, v) in other {
                match self.get_mut(&k) {
                    Some(mine) => mine.combine_owned(v),
                    None => {
                        self.insert(k, v);
                    }
                }
            }
        }
    };
}

/// The bodies of `combine` and `combine_owned` for sets: union, keeping the
/// larger set's allocation.
macro_rules! set_union {
    () => {
        fn combine(&mut self, other: &Self) {
            self.extend(other.iter().cloned());
        }
        fn combine_owned(&mut self, mut other: Self) {
            if other.len() > self.len() {
                std::mem::swap(self, &mut other);
            }
            self.extend(other);
        }
    };
}

/// Key-wise union; values under the same key combine. Entries are kept even
/// when they combine to an identity, so `is_identity` means "no keys"; use
/// [`Map`](crate::Map) for a map that drops identity values.
impl<K: Ord + Clone, S: Semigroup + Clone> Semigroup for BTreeMap<K, S> {
    pointwise_map!();
}
impl<K: Ord + Clone, S: Semigroup + Clone> Monoid for BTreeMap<K, S> {
    fn identity() -> Self {
        BTreeMap::new()
    }
    fn is_identity(&self) -> bool {
        self.is_empty()
    }
}
impl<K: Ord + Clone, S: Commutative + Clone> Commutative for BTreeMap<K, S> {}
impl<K: Ord + Clone, S: Idempotent + Clone> Idempotent for BTreeMap<K, S> {}

/// Key-wise union; values under the same key combine (see the `BTreeMap`
/// instance).
impl<K, S, H> Semigroup for HashMap<K, S, H>
where
    K: Eq + Hash + Clone,
    S: Semigroup + Clone,
    H: BuildHasher + Default,
{
    pointwise_map!();
}
impl<K, S, H> Monoid for HashMap<K, S, H>
where
    K: Eq + Hash + Clone,
    S: Semigroup + Clone,
    H: BuildHasher + Default,
{
    fn identity() -> Self {
        HashMap::default()
    }
    fn is_identity(&self) -> bool {
        self.is_empty()
    }
}
impl<K, S, H> Commutative for HashMap<K, S, H>
where
    K: Eq + Hash + Clone,
    S: Commutative + Clone,
    H: BuildHasher + Default,
{
}
impl<K, S, H> Idempotent for HashMap<K, S, H>
where
    K: Eq + Hash + Clone,
    S: Idempotent + Clone,
    H: BuildHasher + Default,
{
}

/// Union.
impl<T: Ord + Clone> Semigroup for BTreeSet<T> {
    set_union!();
}
impl<T: Ord + Clone> Monoid for BTreeSet<T> {
    fn identity() -> Self {
        BTreeSet::new()
    }
    fn is_identity(&self) -> bool {
        self.is_empty()
    }
}
impl<T: Ord + Clone> Commutative for BTreeSet<T> {}
impl<T: Ord + Clone> Idempotent for BTreeSet<T> {}

/// Union.
impl<T, H> Semigroup for HashSet<T, H>
where
    T: Eq + Hash + Clone,
    H: BuildHasher + Default,
{
    set_union!();
}
impl<T, H> Monoid for HashSet<T, H>
where
    T: Eq + Hash + Clone,
    H: BuildHasher + Default,
{
    fn identity() -> Self {
        HashSet::default()
    }
    fn is_identity(&self) -> bool {
        self.is_empty()
    }
}
impl<T: Eq + Hash + Clone, H: BuildHasher + Default> Commutative for HashSet<T, H> {}
impl<T: Eq + Hash + Clone, H: BuildHasher + Default> Idempotent for HashSet<T, H> {}

/// Concatenation: a monoid, but not commutative. Useful as a counterexample
/// and for logs whose order is meaningful; not usable as a read model state.
impl<T: Clone> Semigroup for Vec<T> {
    fn combine(&mut self, other: &Self) {
        self.extend_from_slice(other);
    }
    fn combine_owned(&mut self, other: Self) {
        self.extend(other);
    }
}
impl<T: Clone> Monoid for Vec<T> {
    fn identity() -> Self {
        Vec::new()
    }
    fn is_identity(&self) -> bool {
        self.is_empty()
    }
}

/// Concatenation: a monoid, but not commutative.
impl Semigroup for String {
    fn combine(&mut self, other: &Self) {
        self.push_str(other);
    }
}
impl Monoid for String {
    fn identity() -> Self {
        String::new()
    }
    fn is_identity(&self) -> bool {
        self.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_wrap_and_invert() {
        let mut x = u8::MAX;
        x.combine(&2);
        assert_eq!(x, 1);
        assert_eq!(5_i32.combined(&3_i32.inverse()), 2);
    }

    #[test]
    fn option_lifts_a_semigroup() {
        let mut a: Option<crate::Max<String>> = None;
        a.combine(&Some(crate::Max("b".to_string())));
        a.combine(&Some(crate::Max("a".to_string())));
        assert_eq!(a, Some(crate::Max("b".to_string())));
    }

    #[test]
    fn maps_combine_pointwise() {
        let mut a = BTreeMap::from([("x", 1_u32), ("y", 2)]);
        a.combine(&BTreeMap::from([("y", 3), ("z", 4)]));
        assert_eq!(a, BTreeMap::from([("x", 1), ("y", 5), ("z", 4)]));
        let mut h: HashMap<&str, u32> = HashMap::from([("x", 1)]);
        h.combine_owned(HashMap::from([("x", 1), ("q", 7)]));
        assert_eq!(h, HashMap::from([("x", 2), ("q", 7)]));
    }

    #[test]
    fn tuples_combine_fieldwise() {
        let t = (1_u32, BTreeSet::from([1]), ()).combined(&(2, BTreeSet::from([2]), ()));
        assert_eq!(t, (3, BTreeSet::from([1, 2]), ()));
        assert!(<(u8, i64)>::identity().is_identity());
    }
}
