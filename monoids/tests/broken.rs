//! The harness must catch broken monoids, with a minimal counterexample and
//! a seed that replays the failing case.
#![cfg(feature = "laws")]

use accrete_monoids::laws::{Arbitrary, Gen, Law, LawFailure, Laws};
use accrete_monoids::{Commutative, Idempotent, Monoid, Semigroup};
use serde::{Deserialize, Serialize};

/// "Last by arrival": keeps whatever came last. Associative with an
/// identity, but the answer depends on delivery order: not commutative.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct LastByArrival(Option<u8>);

impl Semigroup for LastByArrival {
    fn combine(&mut self, other: &Self) {
        if other.0.is_some() {
            self.0 = other.0;
        }
    }
}
impl Monoid for LastByArrival {
    fn identity() -> Self {
        LastByArrival(None)
    }
    fn is_identity(&self) -> bool {
        self.0.is_none()
    }
}
impl Commutative for LastByArrival {} // the false claim
impl Arbitrary for LastByArrival {
    fn arbitrary(g: &mut Gen) -> Self {
        LastByArrival(Option::arbitrary(g))
    }
    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        Box::new(self.0.shrink().map(LastByArrival))
    }
}

/// A counter that claims duplicates are harmless.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct DuplicateCounting(u32);

impl Semigroup for DuplicateCounting {
    fn combine(&mut self, other: &Self) {
        self.0 = self.0.wrapping_add(other.0);
    }
}
impl Monoid for DuplicateCounting {
    fn identity() -> Self {
        DuplicateCounting(0)
    }
    fn is_identity(&self) -> bool {
        self.0 == 0
    }
}
impl Commutative for DuplicateCounting {}
impl Idempotent for DuplicateCounting {} // the false claim
impl Arbitrary for DuplicateCounting {
    fn arbitrary(g: &mut Gen) -> Self {
        DuplicateCounting(u32::arbitrary(g) % 1000)
    }
    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        Box::new(self.0.shrink().map(DuplicateCounting))
    }
}

/// The "average" that halves on every combine: commutative, not associative.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RunningHalf(Option<i32>);

impl Semigroup for RunningHalf {
    fn combine(&mut self, other: &Self) {
        self.0 = match (self.0, other.0) {
            (Some(a), Some(b)) => Some(a.wrapping_add(b) / 2),
            (a, b) => a.or(b),
        };
    }
}
impl Monoid for RunningHalf {
    fn identity() -> Self {
        RunningHalf(None)
    }
    fn is_identity(&self) -> bool {
        self.0.is_none()
    }
}
impl Commutative for RunningHalf {}
impl Arbitrary for RunningHalf {
    fn arbitrary(g: &mut Gen) -> Self {
        RunningHalf(Option::<i16>::arbitrary(g).map(i32::from))
    }
    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        Box::new(self.0.shrink().map(RunningHalf))
    }
}

/// Max with a "touched" flag that `==` ignores but `is_identity` reads: a
/// value equal to the identity that says it is not.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TouchedMax {
    value: u8,
    touched: bool,
}

impl PartialEq for TouchedMax {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}
impl Semigroup for TouchedMax {
    fn combine(&mut self, other: &Self) {
        self.value = self.value.max(other.value);
        self.touched |= other.touched;
    }
}
impl Monoid for TouchedMax {
    fn identity() -> Self {
        TouchedMax {
            value: 0,
            touched: false,
        }
    }
    fn is_identity(&self) -> bool {
        self.value == 0 && !self.touched
    }
}
impl Arbitrary for TouchedMax {
    fn arbitrary(g: &mut Gen) -> Self {
        TouchedMax {
            value: u8::arbitrary(g) % 4,
            touched: bool::arbitrary(g),
        }
    }
}

/// A sum whose batch path forgets what `self` held: right from the
/// identity, wrong from anything else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct BatchForgets(u32);

impl Semigroup for BatchForgets {
    fn combine(&mut self, other: &Self) {
        self.0 = self.0.wrapping_add(other.0);
    }
    fn combine_all<I: IntoIterator<Item = Self>>(&mut self, items: I) {
        self.0 = items.into_iter().fold(0, |sum, x| sum.wrapping_add(x.0));
    }
}
impl Monoid for BatchForgets {
    fn identity() -> Self {
        BatchForgets(0)
    }
    fn is_identity(&self) -> bool {
        self.0 == 0
    }
}
impl Arbitrary for BatchForgets {
    fn arbitrary(g: &mut Gen) -> Self {
        BatchForgets(u32::arbitrary(g) % 1000)
    }
    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        Box::new(self.0.shrink().map(BatchForgets))
    }
}

fn expect_failure<T>(laws: &Laws<T>, law: Law) -> LawFailure
where
    T: accrete_monoids::laws::Subject,
{
    let failure = laws
        .check_law(law)
        .expect_err("the harness must reject a broken monoid");
    assert_eq!(failure.law, law);
    let shown = failure.to_string();
    assert!(
        shown.contains(&format!("ACCRETE_LAWS_SEED={}", failure.seed)),
        "{shown}"
    );
    failure
}

#[test]
fn last_by_arrival_is_not_commutative() {
    let laws = Laws::<LastByArrival>::new("last_by_arrival")
        .commutative()
        .tests(500);
    let failure = expect_failure(&laws, Law::Commutativity);
    // Minimal: two different present values, shrunk towards zero (either order).
    assert!(
        [
            "[LastByArrival(Some(0)), LastByArrival(Some(1))]",
            "[LastByArrival(Some(1)), LastByArrival(Some(0))]"
        ]
        .contains(&failure.input.as_str()),
        "{failure}"
    );
    // It does satisfy associativity and identity: the harness must not cry wolf.
    laws.check_law(Law::Associativity).unwrap();
    laws.check_law(Law::Identity).unwrap();
    // Convergence under reordering fails too, and `check` reports it.
    expect_failure(&laws, Law::Convergence);
    assert!(laws.check().is_err());
}

#[test]
fn counter_claimed_idempotent_is_caught() {
    let laws = Laws::<DuplicateCounting>::new("duplicate_counting")
        .commutative()
        .idempotent()
        .tests(500);
    let failure = expect_failure(&laws, Law::Idempotence);
    assert_eq!(failure.input, "[DuplicateCounting(1)]", "{failure}");
    let failure = expect_failure(&laws, Law::Convergence);
    // Shrunk to a single delta that a duplicate delivery double-counts.
    assert_eq!(
        failure.input.matches("DuplicateCounting(").count(),
        1,
        "{failure}"
    );
    laws.check_law(Law::Commutativity).unwrap();
}

#[test]
fn running_half_is_not_associative() {
    let laws = Laws::<RunningHalf>::new("running_half")
        .commutative()
        .tests(500);
    let failure = expect_failure(&laws, Law::Associativity);
    assert!(failure.input.starts_with("[RunningHalf(Some("), "{failure}");
    assert!(failure.detail.contains("(a ⊕ b) ⊕ c"), "{failure}");
    laws.check_law(Law::Commutativity).unwrap();
}

#[test]
fn a_failing_seed_replays_the_same_case() {
    let laws = Laws::<LastByArrival>::new("replay").commutative();
    let first = laws.check_law(Law::Commutativity).unwrap_err();
    let again = Laws::<LastByArrival>::new("replay")
        .commutative()
        .seed(first.seed)
        .check_law(Law::Commutativity)
        .unwrap_err();
    assert_eq!((first.seed, &first.input), (again.seed, &again.input));
}

#[test]
fn unclaimed_laws_are_errors_not_passes() {
    let failure = Laws::<Vec<u8>>::new("vec")
        .check_law(Law::Commutativity)
        .unwrap_err();
    assert!(failure.detail.contains("not told"), "{failure}");
}

#[test]
fn non_commutative_monoids_still_pass_their_own_laws() {
    // Concatenation is an honest monoid: only its claimed laws are checked.
    Laws::<Vec<u8>>::new("vec").tests(64).assert();
    Laws::<String>::new("string").tests(64).assert();
}

#[test]
fn is_identity_must_agree_with_equality() {
    let laws = Laws::<TouchedMax>::new("touched_max").tests(500);
    let failure = expect_failure(&laws, Law::Identity);
    assert!(
        failure.detail.contains("is_identity() is false"),
        "{failure}"
    );
    // Under an approximate equivalence only the "only if" direction holds.
    Laws::<TouchedMax>::new("touched_max_eq_by")
        .eq_by(|a, b| a == b)
        .tests(500)
        .check_law(Law::Identity)
        .unwrap();
}

#[test]
fn a_batch_path_that_forgets_self_is_caught() {
    let laws = Laws::<BatchForgets>::new("batch_forgets").tests(500);
    let failure = expect_failure(&laws, Law::CombineAll);
    assert!(failure.detail.contains("into x"), "{failure}");
}
