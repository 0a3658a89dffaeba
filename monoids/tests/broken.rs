//! The harness must catch broken monoids, with a minimal counterexample, a
//! base seed that replays the whole run and a case seed that replays the
//! failing case.
#![cfg(feature = "laws")]

use accrete_monoids::laws::{Arbitrary, Gen, Law, LawFailure, Laws};
use accrete_monoids::{Commutative, Count, Idempotent, Max, Monoid, Semigroup, laws};
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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
    let base = failure.base_seed.expect("a run, not a single case");
    assert!(
        shown.contains(&format!("replay the run:  ACCRETE_LAWS_SEED={base} ")),
        "{shown}"
    );
    assert!(
        shown.contains(&format!(
            "replay the case: ACCRETE_LAWS_CASE={} ",
            failure.case_seed
        )),
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
fn a_failing_case_seed_replays_the_same_case() {
    let laws = Laws::<LastByArrival>::new("replay").commutative();
    let first = laws.check_law(Law::Commutativity).unwrap_err();
    let again = Laws::<LastByArrival>::new("replay")
        .commutative()
        .case(first.case_seed)
        .check_law(Law::Commutativity)
        .unwrap_err();
    assert_eq!(
        (first.case_seed, &first.input),
        (again.case_seed, &again.input)
    );
    // A single case is not a run: there is no base seed to replay.
    assert_eq!(again.base_seed, None);
    assert!(again.replay_run().is_none(), "{again}");
}

/// Max, except that two values of 200 or more combine to the one that
/// arrived last: a broken commutativity that a single case misses about 19
/// times in 20, and a run of 256 cases finds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RarelyOrdered(u8);

impl Semigroup for RarelyOrdered {
    fn combine(&mut self, other: &Self) {
        if self.0 >= 200 && other.0 >= 200 {
            self.0 = other.0;
        } else {
            self.0 = self.0.max(other.0);
        }
    }
}
impl Monoid for RarelyOrdered {
    fn identity() -> Self {
        RarelyOrdered(0)
    }
    fn is_identity(&self) -> bool {
        self.0 == 0
    }
}
impl Commutative for RarelyOrdered {} // the false claim
impl Arbitrary for RarelyOrdered {
    fn arbitrary(g: &mut Gen) -> Self {
        RarelyOrdered(u8::arbitrary(g))
    }
    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        Box::new(self.0.shrink().map(RarelyOrdered))
    }
}

fn rarely_ordered(seed: u64) -> Laws<RarelyOrdered> {
    Laws::<RarelyOrdered>::new("rarely_ordered")
        .commutative()
        .tests(256)
        .seed(seed)
}

#[test]
fn a_pinned_base_seed_runs_every_case() {
    let drawn = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&drawn);
    Laws::<Max<u8>>::with_generator("counted", move |g| {
        counter.fetch_add(1, Ordering::Relaxed);
        Max(u8::arbitrary(g))
    })
    .seed(7)
    .tests(50)
    .check_law(Law::Identity)
    .unwrap();
    // One value per identity case: the pinned seed ran the whole run.
    assert_eq!(drawn.load(Ordering::Relaxed), 50);
}

#[test]
fn a_pinned_base_seed_finds_a_broken_commutativity_over_the_whole_run() {
    for seed in [0, 1, 2, 3, 42, u64::MAX] {
        let failure = rarely_ordered(seed)
            .check_law(Law::Commutativity)
            .expect_err("a run of 256 cases finds the broken pair");
        assert_eq!(failure.base_seed, Some(seed), "{failure}");
        assert!(failure.case < 256, "{failure}");
        // Shrunk to two values of at least 200.
        assert!(failure.input.starts_with("[RarelyOrdered(2"), "{failure}");
    }
}

#[test]
fn the_same_base_seed_gives_the_same_failure_twice() {
    for seed in [5, 1_000_003] {
        let first = rarely_ordered(seed)
            .check_law(Law::Commutativity)
            .unwrap_err();
        let again = rarely_ordered(seed)
            .check_law(Law::Commutativity)
            .unwrap_err();
        assert_eq!(
            (
                first.base_seed,
                first.case,
                first.case_seed,
                &first.input,
                &first.detail,
                first.shrinks
            ),
            (
                again.base_seed,
                again.case,
                again.case_seed,
                &again.input,
                &again.detail,
                again.shrinks
            )
        );
        assert_eq!(first.to_string(), again.to_string());
        // And the failing case alone, from its case seed, fails the same way.
        let alone = rarely_ordered(seed)
            .case(first.case_seed)
            .check_law(Law::Commutativity)
            .unwrap_err();
        assert_eq!(
            (alone.case_seed, &alone.input),
            (first.case_seed, &first.input)
        );
    }
}

/// Runs only when `replay_from_the_environment` starts this test binary
/// again with `ACCRETE_LAWS_REPLAY_TARGET=1`: a run that reads its seeds from
/// the environment, as a user's replay command does.
#[test]
fn replay_target() {
    if std::env::var_os("ACCRETE_LAWS_REPLAY_TARGET").is_none() {
        return;
    }
    Laws::<RarelyOrdered>::new("rarely_ordered")
        .commutative()
        .tests(256)
        .assert_law(Law::Commutativity);
}

fn run_replay_target(env: &[(&str, String)]) -> String {
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "replay_target", "--test-threads=1"])
        .env("ACCRETE_LAWS_REPLAY_TARGET", "1")
        .env_remove("ACCRETE_LAWS_SEED")
        .env_remove("ACCRETE_LAWS_CASE");
    for (var, value) in env {
        command.env(var, value);
    }
    let output = command.output().unwrap();
    assert!(!output.status.success(), "the replayed run must fail");
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

#[test]
fn replay_from_the_environment() {
    let expected = rarely_ordered(11)
        .check_law(Law::Commutativity)
        .unwrap_err();
    // `ACCRETE_LAWS_SEED` pins the whole run: the same failure, twice.
    for _ in 0..2 {
        let output = run_replay_target(&[("ACCRETE_LAWS_SEED", "11".into())]);
        assert!(output.contains(&expected.to_string()), "{output}");
    }
    // `ACCRETE_LAWS_CASE` replays the failing case alone.
    let output = run_replay_target(&[("ACCRETE_LAWS_CASE", expected.case_seed.to_string())]);
    assert!(
        output.contains(&format!(
            "counterexample (after {} shrinks): {}",
            expected.shrinks, expected.input
        )),
        "{output}"
    );
    assert!(output.contains("one case"), "{output}");
}

thread_local! {
    /// Breaks [`Flaky`] in the current thread only: the `laws!` tests of
    /// `Shipment` run in their own threads and pass.
    static FLAKY_BROKEN: Cell<bool> = const { Cell::new(false) };
}

/// A `Max<u8>` that, when broken, keeps the last non-zero value instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Flaky(u8);

impl Semigroup for Flaky {
    fn combine(&mut self, other: &Self) {
        if FLAKY_BROKEN.with(Cell::get) {
            if other.0 != 0 {
                self.0 = other.0;
            }
        } else {
            self.0 = self.0.max(other.0);
        }
    }
}
impl Monoid for Flaky {
    fn identity() -> Self {
        Flaky(0)
    }
    fn is_identity(&self) -> bool {
        self.0 == 0
    }
}
impl Commutative for Flaky {}
impl Arbitrary for Flaky {
    fn arbitrary(g: &mut Gen) -> Self {
        Flaky(u8::arbitrary(g))
    }
    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        Box::new(self.0.shrink().map(Flaky))
    }
}

/// A derived struct, tested with the README's one line (a generator, as
/// from an integration test where `Arbitrary` cannot be implemented).
#[derive(Monoid, Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Shipment {
    parcels: Count,
    total: Flaky,
    heaviest: Max<u32>,
}

fn shipment(g: &mut Gen) -> Shipment {
    Shipment {
        parcels: Count::arbitrary(g),
        total: Flaky::arbitrary(g),
        heaviest: Max(u32::arbitrary(g)),
    }
}

laws!(shipment: Shipment = shipment => commutative);
// A second module whose name starts with the first: the replay command
// must not run it too.
laws!(shipment_shrunk: Shipment = shipment => commutative);

/// Resets [`FLAKY_BROKEN`] when the test ends, passing or not.
struct Broken;
impl Broken {
    fn flaky() -> Self {
        FLAKY_BROKEN.with(|b| b.set(true));
        Broken
    }
}
impl Drop for Broken {
    fn drop(&mut self) {
        FLAKY_BROKEN.with(|b| b.set(false));
    }
}

#[test]
fn a_derived_struct_shrinks_field_by_field_and_names_the_field() {
    let _broken = Broken::flaky();
    let failure = shipment::checker()
        .seed(3)
        .check_law(Law::Commutativity)
        .unwrap_err();
    // Every field shrunk: the innocent ones to their identity, the broken
    // one to the smallest pair that still fails.
    let one = |total: u8| {
        format!("Shipment {{ parcels: Count(0), total: Flaky({total}), heaviest: Max(0) }}")
    };
    assert!(
        [
            format!("[{}, {}]", one(1), one(2)),
            format!("[{}, {}]", one(2), one(1))
        ]
        .contains(&failure.input),
        "{failure}"
    );
    assert!(
        failure
            .detail
            .contains("field `total` differs: left Flaky("),
        "{failure}"
    );
    assert!(!failure.detail.contains("field `parcels`"), "{failure}");
    assert!(!failure.detail.contains("field `heaviest`"), "{failure}");
}

#[test]
fn the_replay_command_names_exactly_one_test() {
    let _broken = Broken::flaky();
    let failure = shipment::checker()
        .seed(3)
        .check_law(Law::Commutativity)
        .unwrap_err();
    assert_eq!(failure.test(), Some("shipment::commutativity"));
    let base = failure.base_seed.unwrap();
    assert_eq!(
        failure.replay_run().unwrap(),
        format!(
            "ACCRETE_LAWS_SEED={base} cargo test -p accrete-monoids -- --exact shipment::commutativity"
        )
    );
    assert!(
        failure.to_string().contains(&format!(
            "replay the case: ACCRETE_LAWS_CASE={} cargo test -p accrete-monoids -- --exact \
             shipment::commutativity",
            failure.case_seed
        )),
        "{failure}"
    );
    // libtest agrees: that filter selects one test of this binary, not
    // `shipment_shrunk::commutativity`.
    let listed = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--list", "--exact", "shipment::commutativity"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    let tests: Vec<&str> = listed.lines().filter(|l| l.ends_with(": test")).collect();
    assert_eq!(tests, ["shipment::commutativity: test"], "{listed}");
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
