//! Test-only law checks for the CRDT primitives: commutative-monoid and
//! semilattice laws, convergence under permutation and duplication, and
//! serialization round trips through serde_json, postcard and BSON.
//!
//! Every check prints its seed; rerun one with `QUICKCHECK_SEED=<seed>`.
//! `QUICKCHECK_TESTS` sets the number of cases.

use std::fmt::Debug;
use std::hash::{BuildHasher, RandomState};

use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult, Testable};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Commutative, Idempotent, Monoid};

/// Runs one property with a printed (or given) seed.
pub(crate) fn check<F: Testable>(name: &str, property: F) {
    let seed = std::env::var("QUICKCHECK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| RandomState::new().hash_one(name));
    eprintln!("{name}: QUICKCHECK_SEED={seed}");
    let size = std::env::var("QUICKCHECK_GENERATOR_SIZE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    QuickCheck::new()
        .rng(Gen::from_size_and_seed(size, seed))
        .quickcheck(property);
}

/// An element type with six values, so that sets and maps collide.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub(crate) struct Small(pub(crate) u8);

impl Arbitrary for Small {
    fn arbitrary(g: &mut Gen) -> Self {
        Small(u8::arbitrary(g) % 6)
    }
    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        Box::new(self.0.shrink().map(Small))
    }
}

/// Passes, or fails showing the arguments (quickcheck 1.1 only prints the
/// arguments of failures it managed to shrink).
pub(crate) fn verdict(ok: bool, arguments: impl Debug) -> TestResult {
    if ok {
        TestResult::passed()
    } else {
        TestResult::error(format!("arguments: {arguments:#?}"))
    }
}

/// What the law checks need of a type.
pub(crate) trait Lawful:
    Monoid + Commutative + Default + Arbitrary + Debug + PartialEq + Serialize + DeserializeOwned
{
}
impl<T> Lawful for T where
    T: Monoid
        + Commutative
        + Default
        + Arbitrary
        + Debug
        + PartialEq
        + Serialize
        + DeserializeOwned
{
}

/// The laws of a commutative monoid (duplicates are not harmless).
pub(crate) fn commutative_monoid<T: Lawful>(name: &str) {
    check(
        &format!("{name}: associative"),
        associative::<T> as fn(T, T, T) -> TestResult,
    );
    check(
        &format!("{name}: commutative"),
        commutative::<T> as fn(T, T) -> TestResult,
    );
    check(
        &format!("{name}: identity"),
        identity::<T> as fn(T) -> TestResult,
    );
    check(
        &format!("{name}: by-value forms"),
        by_value_forms::<T> as fn(T, T) -> TestResult,
    );
    check(
        &format!("{name}: combine_all = fold"),
        combine_all_is_fold::<T> as fn(T, Vec<T>) -> TestResult,
    );
    check(
        &format!("{name}: any order converges"),
        any_order::<T> as fn(Vec<T>, Vec<u64>) -> TestResult,
    );
    check(
        &format!("{name}: serialization round trips"),
        round_trips::<T> as fn(T) -> TestResult,
    );
}

/// The laws of a join-semilattice: a commutative monoid where duplicates
/// are harmless.
pub(crate) fn semilattice<T: Lawful + Idempotent>(name: &str) {
    commutative_monoid::<T>(name);
    check(
        &format!("{name}: idempotent"),
        idempotent::<T> as fn(T, T) -> TestResult,
    );
    check(
        &format!("{name}: any order and duplication converges"),
        any_order_and_duplication::<T> as fn(Vec<T>, Vec<usize>, Vec<u64>) -> TestResult,
    );
}

fn associative<T: Lawful>(a: T, b: T, c: T) -> TestResult {
    let left = a.clone().combined(&b).combined(&c);
    let right = a.clone().combined(&b.clone().combined(&c));
    verdict(left == right, (a, b, c, left, right))
}

fn commutative<T: Lawful>(a: T, b: T) -> TestResult {
    let (ab, ba) = (a.clone().combined(&b), b.clone().combined(&a));
    verdict(ab == ba, (a, b, ab, ba))
}

fn idempotent<T: Lawful>(a: T, b: T) -> TestResult {
    let ab = a.clone().combined(&b);
    let ok = a.clone().combined(&a) == a
        && ab.clone().combined(&b) == ab
        && ab.clone().combined(&a) == ab;
    verdict(ok, (a, b, ab))
}

fn identity<T: Lawful>(a: T) -> TestResult {
    let e = T::identity();
    let ok = e.is_identity()
        && T::default() == e
        && e.clone().combined(&a) == a
        && a.clone().combined(&e) == a
        && a.is_identity() == (a == e);
    verdict(ok, a)
}

fn by_value_forms<T: Lawful>(a: T, b: T) -> TestResult {
    let mut by_ref = a.clone();
    by_ref.combine(&b);
    let mut owned = a.clone();
    owned.combine_owned(b.clone());
    let mut owned_rev = b.clone();
    owned_rev.combine_owned(a.clone());
    let ok = by_ref == owned && by_ref == a.clone().combined(&b) && by_ref == owned_rev;
    verdict(ok, (a, b, by_ref, owned, owned_rev))
}

fn combine_all_is_fold<T: Lawful>(start: T, items: Vec<T>) -> TestResult {
    let mut fold = start.clone();
    for item in &items {
        fold.combine(item);
    }
    let mut all = start.clone();
    all.combine_all(items.clone());
    let ok = all == fold
        && T::fold(items.iter().cloned())
            == items.iter().fold(T::identity(), |acc, x| acc.combined(x));
    verdict(ok, (start, items, all, fold))
}

/// Reorders `items` by the random `keys`.
fn permuted<T: Clone>(items: &[T], keys: &[u64]) -> Vec<T> {
    let mut keyed: Vec<(u64, usize)> = (0..items.len())
        .map(|i| (keys.get(i).copied().unwrap_or(i as u64), i))
        .collect();
    keyed.sort_unstable();
    keyed.into_iter().map(|(_, i)| items[i].clone()).collect()
}

fn any_order<T: Lawful>(items: Vec<T>, keys: Vec<u64>) -> TestResult {
    let (in_order, reordered) = (T::fold(items.clone()), T::fold(permuted(&items, &keys)));
    verdict(in_order == reordered, (items, keys, in_order, reordered))
}

fn any_order_and_duplication<T: Lawful>(
    items: Vec<T>,
    duplicates: Vec<usize>,
    keys: Vec<u64>,
) -> TestResult {
    let mut delivered = items.clone();
    if !items.is_empty() {
        delivered.extend(duplicates.iter().map(|i| items[i % items.len()].clone()));
    }
    let (once, delivered) = (T::fold(items.clone()), T::fold(permuted(&delivered, &keys)));
    verdict(
        once == delivered,
        (items, duplicates, keys, once, delivered),
    )
}

#[derive(serde::Serialize)]
struct WrapRef<'a, T> {
    v: &'a T,
}

#[derive(serde::Deserialize)]
struct Wrap<T> {
    v: T,
}

fn round_trips<T: Lawful>(a: T) -> TestResult {
    match round_trip_errors(&a) {
        Ok(()) => TestResult::passed(),
        Err(e) => TestResult::error(e),
    }
}

/// Round-trips `a` through serde_json, postcard and BSON.
pub(crate) fn round_trip_errors<T>(a: &T) -> Result<(), String>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let json = serde_json::to_string(a).map_err(|e| format!("json: {e}"))?;
    let back: T = serde_json::from_str(&json).map_err(|e| format!("json {json}: {e}"))?;
    if &back != a {
        return Err(format!("json {json} read back as {back:?}"));
    }
    let bytes = postcard::to_allocvec(a).map_err(|e| format!("postcard: {e}"))?;
    let back: T = postcard::from_bytes(&bytes).map_err(|e| format!("postcard: {e}"))?;
    if &back != a {
        return Err(format!("postcard read back as {back:?}"));
    }
    let doc = bson::serialize_to_document(&WrapRef { v: a }).map_err(|e| format!("bson: {e}"))?;
    let back: Wrap<T> =
        bson::deserialize_from_document(doc.clone()).map_err(|e| format!("bson {doc}: {e}"))?;
    if &back.v != a {
        return Err(format!("bson {doc} read back as {:?}", back.v));
    }
    Ok(())
}
