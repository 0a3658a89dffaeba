//! Law and round-trip checks shared by the unit tests of the sketches.
//!
//! Test-only; `QUICKCHECK_TESTS` sets the number of cases.

use std::fmt::Debug;

use quickcheck::{Arbitrary, QuickCheck};
use serde::{Serialize, de::DeserializeOwned};

use crate::{Commutative, Idempotent, Monoid};

fn associative<T: Monoid + Clone + PartialEq>(a: T, b: T, c: T) -> bool {
    let left = a.clone().combined(&b).combined(&c);
    let right = a.combined(&b.combined(&c));
    left == right
}

fn identity_both_sides<T: Monoid + Clone + PartialEq>(a: T) -> bool {
    let left = T::identity().combined(&a);
    let right = a.clone().combined(&T::identity());
    T::identity().is_identity()
        && left == a
        && right == a
        && a.is_identity() == (a == T::identity())
}

fn fast_paths_agree<T: Monoid + Clone + PartialEq>(a: T, b: T, c: T) -> bool {
    let mut fold = a.clone();
    fold.combine(&b);
    fold.combine(&c);
    let mut owned = a.clone();
    owned.combine_owned(b.clone());
    owned.combine_owned(c.clone());
    let mut all = a.clone();
    all.combine_all([b.clone(), c.clone()]);
    let from_identity = T::fold([a, b, c]);
    fold == owned && fold == all && fold == from_identity
}

fn commutative<T: Monoid + Commutative + Clone + PartialEq>(a: T, b: T) -> bool {
    a.clone().combined(&b) == b.combined(&a)
}

fn idempotent<T: Monoid + Idempotent + Clone + PartialEq>(a: T) -> bool {
    a.clone().combined(&a) == a
}

/// Associativity, identity on both sides, `is_identity`, the fast paths
/// (`combine_owned`, `combine_all`, `fold`) and commutativity.
pub(crate) fn commutative_monoid_laws<T>()
where
    T: Monoid + Commutative + Arbitrary + Debug + PartialEq,
{
    QuickCheck::new().quickcheck(associative::<T> as fn(T, T, T) -> bool);
    QuickCheck::new().quickcheck(identity_both_sides::<T> as fn(T) -> bool);
    QuickCheck::new().quickcheck(fast_paths_agree::<T> as fn(T, T, T) -> bool);
    QuickCheck::new().quickcheck(commutative::<T> as fn(T, T) -> bool);
}

/// [`commutative_monoid_laws`] plus idempotence.
pub(crate) fn semilattice_laws<T>()
where
    T: Monoid + Commutative + Idempotent + Arbitrary + Debug + PartialEq,
{
    commutative_monoid_laws::<T>();
    QuickCheck::new().quickcheck(idempotent::<T> as fn(T) -> bool);
}

#[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
struct Wrapper<T> {
    v: T,
}

/// Round-trips one value through JSON, postcard and a BSON document.
pub(crate) fn assert_round_trips<T>(value: &T)
where
    T: Serialize + DeserializeOwned + Debug + PartialEq + Clone,
{
    let json = serde_json::to_string(value).expect("to JSON");
    let back: T = serde_json::from_str(&json).expect("from JSON");
    assert_eq!(&back, value, "JSON: {json}");

    let bytes = postcard::to_stdvec(value).expect("to postcard");
    let back: T = postcard::from_bytes(&bytes).expect("from postcard");
    assert_eq!(&back, value, "postcard");

    let wrapped = Wrapper { v: value.clone() };
    let doc = bson::serialize_to_document(&wrapped).expect("to BSON");
    let back: Wrapper<T> = bson::deserialize_from_document(doc.clone()).expect("from BSON");
    assert_eq!(back, wrapped, "BSON document");
    let raw = bson::serialize_to_vec(&wrapped).expect("to raw BSON");
    let back: Wrapper<T> = bson::deserialize_from_slice(&raw).expect("from raw BSON");
    assert_eq!(back, wrapped, "raw BSON");
}

fn round_trips<T>(value: T) -> bool
where
    T: Serialize + DeserializeOwned + Debug + PartialEq + Clone,
{
    assert_round_trips(&value);
    true
}

/// [`assert_round_trips`] on arbitrary values.
pub(crate) fn serde_round_trips<T>()
where
    T: Serialize + DeserializeOwned + Arbitrary + Debug + PartialEq,
{
    QuickCheck::new().quickcheck(round_trips::<T> as fn(T) -> bool);
}
