//! The law harness: property checks that a type really is the monoid it
//! claims to be, including **convergence under delivery faults**.
//!
//! Feature `laws` (not default: add it to your `[dev-dependencies]`).
//!
//! # One line per type
//!
//! ```
//! use accrete_monoids::{laws, Max, Sum};
//!
//! // Expands to a module of #[test]s: identity, associativity, combine_all,
//! // owned_vs_borrowed, serde_round_trip, convergence, plus one test per
//! // law marker named after the arrow.
//! laws!(max_i64: Max<i64> => commutative, idempotent);
//! laws!(sum_i32: Sum<i32> => commutative, group);
//! # fn main() {}
//! ```
//!
//! A marker after the arrow must be implemented by the type
//! ([`Commutative`], [`Idempotent`], [`Group`]): the harness checks what the
//! type *claims*, and refuses to compile a check the type does not claim.
//!
//! `laws!(name: …)` expands to `mod name { … }` with one `#[test]` per law,
//! named by [`Law::test_name`]: `name::identity`, `name::associativity`,
//! `name::commutativity`, … It also has a `pub(super) fn checker()` that
//! returns the configured [`Laws`], for tests of your own.
//!
//! Options follow a semicolon and map to builder methods of [`Laws`]:
//! `eq_by = f` ([`Laws::eq_by`]: an equivalence for approximate types),
//! `no_bson` ([`Laws::no_bson`]), `tests = n` ([`Laws::tests`]), `size = n`
//! ([`Laws::size`]), `seed = n` ([`Laws::seed`]) and `shrinker = f`
//! ([`Laws::shrinker`]: `f(&value)` returns an iterator of smaller values,
//! tried before the field-wise ones). A type without an [`Arbitrary`] impl
//! (your own struct, tested from an integration test where the orphan rule
//! forbids the impl) takes a generator after `=`.
//!
//! ```
//! use accrete_monoids::{laws, Sum};
//!
//! fn close(a: &Sum<f64>, b: &Sum<f64>) -> bool {
//!     (a.0 - b.0).abs() <= 1e-9 * a.0.abs().max(b.0.abs()).max(1.0)
//! }
//! laws!(sum_f64: Sum<f64> = |g| Sum(f64::from(i32::arbitrary(g))) => commutative; eq_by = close);
//! # fn main() {}
//! ```
//!
//! # What is checked
//!
//! | law | property |
//! | --- | --- |
//! | [`Law::Identity`] | `e ⊕ a == a == a ⊕ e`, `e.is_identity()`, and `a.is_identity()` if and only if `a == e` (only if, under [`eq_by`](Laws::eq_by)) |
//! | [`Law::Associativity`] | `(a ⊕ b) ⊕ c == a ⊕ (b ⊕ c)` |
//! | [`Law::Commutativity`] | `a ⊕ b == b ⊕ a` (marker `Commutative`) |
//! | [`Law::Idempotence`] | `a ⊕ a == a` (marker `Idempotent`) |
//! | [`Law::Inverse`] | `a ⊕ a⁻¹ == e` (trait `Group`) |
//! | [`Law::CombineAll`] | `combine_all(xs)` equals combining one at a time, from the identity and from a non-identity start; `Monoid::fold` too |
//! | [`Law::OwnedVsBorrowed`] | `combine_owned` and `combined` equal `combine` |
//! | [`Law::SerdeRoundTrip`] | JSON, postcard (the compact binary form) and BSON (MongoDB) decode to an equal value |
//! | [`Law::Convergence`] | folding a delivery of the deltas — permuted if commutative, with duplicates if idempotent, cut into random batches that are pre-aggregated — equals the plain left fold |
//!
//! # Derived structs
//!
//! A `#[derive(Monoid)]` struct needs no more than the one line, even with
//! a generator: the derive implements [`FieldWise`], and
//! `laws!` then calls [`Laws::field_wise`]. A counterexample shrinks one
//! field at a time (every field whose type implements [`Arbitrary`], as all
//! the primitives do under this feature), and a failed equation says which
//! fields differ:
//!
//! ```text
//! law `commutativity` does not hold for `shipment`
//!   case 0 of the run with base seed 3 (case seed 6907659034911495900)
//!   counterexample (after 12 shrinks): [Shipment { parcels: Count(0), total: Flaky(1), heaviest: Max(0) }, Shipment { parcels: Count(0), total: Flaky(2), heaviest: Max(0) }]
//!   a ⊕ b == b ⊕ a
//!     left:  Shipment { parcels: Count(0), total: Flaky(2), heaviest: Max(0) }
//!     right: Shipment { parcels: Count(0), total: Flaky(1), heaviest: Max(0) }
//!     field `total` differs: left Flaky(2), right Flaky(1)
//!   replay the run:  ACCRETE_LAWS_SEED=3 cargo test -p my-crate -- --exact shipment::commutativity
//!   replay the case: ACCRETE_LAWS_CASE=6907659034911495900 cargo test -p my-crate -- --exact shipment::commutativity
//! ```
//!
//! Fields whose type is a type parameter of a generic struct do not shrink.
//!
//! # Seeds, case counts and shrinking
//!
//! Each law runs a *run* of `ACCRETE_LAWS_TESTS` cases (default 256;
//! quickcheck's `QUICKCHECK_TESTS` is honoured too) at generator size
//! `ACCRETE_LAWS_SIZE` (default 16). A run has a base seed, printed to
//! stderr: fresh each time, or pinned by `ACCRETE_LAWS_SEED=<base seed>` or
//! [`Laws::seed`] (`seed = n` in `laws!`). Case `i` draws its values from a
//! seed derived from the base seed and `i`, so a pinned base seed makes the
//! whole run — every case, and the failure if there is one — the same every
//! time.
//!
//! A failure shrinks the input to a minimal counterexample and prints two
//! commands, with the exact test path (`--exact name::law`, so that
//! `name_other::law` does not run too):
//!
//! - `ACCRETE_LAWS_SEED=<base seed> cargo test -p <package> -- --exact <test>`
//!   replays the whole run, which fails at the same case with the same
//!   counterexample;
//! - `ACCRETE_LAWS_CASE=<case seed> cargo test -p <package> -- --exact <test>`
//!   runs the failing case alone ([`Laws::case`]). `ACCRETE_LAWS_CASE` wins
//!   over `ACCRETE_LAWS_SEED`.
//!
//! Both carry `ACCRETE_LAWS_TESTS`/`ACCRETE_LAWS_SIZE` when the run took a
//! non-default value from them; add the `--features` your tests need.
//! Replays are deterministic as long as your generator, `combine` and
//! shrinker are (a `HashSet`'s iteration order, for one, is not).

// A `LawFailure` is a test's verdict, returned once per failing law:
// boxing it would only make the public API clumsier.
#![allow(clippy::result_large_err)]

use std::fmt::{self, Debug};
use std::panic::{AssertUnwindSafe, catch_unwind};

pub use quickcheck::{self, Arbitrary, Gen};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::hash::SplitMix64;
use crate::{Commutative, FieldDiff, FieldWise, Group, Idempotent, Monoid};

/// The laws the harness knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Law {
    /// Left and right identity, and `is_identity` agrees with `identity`.
    Identity,
    /// `(a ⊕ b) ⊕ c == a ⊕ (b ⊕ c)`.
    Associativity,
    /// `a ⊕ b == b ⊕ a`.
    Commutativity,
    /// `a ⊕ a == a`.
    Idempotence,
    /// `a ⊕ a⁻¹ == identity`.
    Inverse,
    /// `combine_all` and `fold` equal combining one at a time.
    CombineAll,
    /// `combine_owned` and `combined` equal `combine`.
    OwnedVsBorrowed,
    /// JSON, postcard and BSON round trips give an equal value.
    SerdeRoundTrip,
    /// Any permutation (if commutative), duplication (if idempotent) and
    /// batching of the deltas folds to the plain left fold.
    Convergence,
}

impl Law {
    /// The name of the `#[test]` that [`laws!`](crate::laws!) generates for
    /// this law, inside the module it is given: `identity`,
    /// `associativity`, `commutativity`, `idempotence`, `inverse`,
    /// `combine_all`, `owned_vs_borrowed`, `serde_round_trip`,
    /// `convergence`.
    pub fn test_name(self) -> &'static str {
        match self {
            Law::Identity => "identity",
            Law::Associativity => "associativity",
            Law::Commutativity => "commutativity",
            Law::Idempotence => "idempotence",
            Law::Inverse => "inverse",
            Law::CombineAll => "combine_all",
            Law::OwnedVsBorrowed => "owned_vs_borrowed",
            Law::SerdeRoundTrip => "serde_round_trip",
            Law::Convergence => "convergence",
        }
    }
}

impl fmt::Display for Law {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Law::Identity => "identity",
            Law::Associativity => "associativity",
            Law::Commutativity => "commutativity",
            Law::Idempotence => "idempotence",
            Law::Inverse => "inverse",
            Law::CombineAll => "combine_all equals fold",
            Law::OwnedVsBorrowed => "owned equals borrowed",
            Law::SerdeRoundTrip => "serde round trip",
            Law::Convergence => "convergence under delivery faults",
        })
    }
}

/// A law that does not hold, with a shrunk counterexample and the commands
/// that replay it.
#[derive(Debug, Clone)]
pub struct LawFailure {
    /// The name the harness was given (usually the test module).
    pub name: String,
    /// The law that failed.
    pub law: Law,
    /// The base seed of the run that failed: `ACCRETE_LAWS_SEED=<base_seed>`
    /// (or [`Laws::seed`]) replays the whole run, every case before the
    /// failing one included. `None` when the run replayed a single case
    /// ([`Laws::case`], `ACCRETE_LAWS_CASE`), or the law was not claimed.
    pub base_seed: Option<u64>,
    /// The index of the failing case in its run (0 for the first case).
    pub case: u64,
    /// The seed of the failing case: `ACCRETE_LAWS_CASE=<case_seed>` (or
    /// [`Laws::case`]) replays that case alone.
    pub case_seed: u64,
    /// The shrunk input, `Debug`-formatted.
    pub input: String,
    /// What was observed: both sides of the equation (and, for a
    /// [`FieldWise`] type, the fields that differ), or a panic message.
    pub detail: String,
    /// How many shrinking steps were taken from the first failing input.
    pub shrinks: usize,
    replay: Box<Replay>,
}

/// What the replay commands need besides the seeds.
#[derive(Debug, Clone, Default)]
struct Replay {
    /// The package and the test's path, without the crate name
    /// ([`Laws::test_module`]).
    test: Option<(String, String)>,
    /// `ACCRETE_LAWS_TESTS` / `ACCRETE_LAWS_SIZE` values that came from the
    /// environment and are not the defaults: the replay needs them too.
    env: Vec<(&'static str, u64)>,
}

impl LawFailure {
    /// The `#[test]` to re-run, as libtest names it (`module::law`), when the
    /// checker knows it ([`Laws::test_module`]; [`laws!`](crate::laws!) sets
    /// it).
    pub fn test(&self) -> Option<&str> {
        self.replay.test.as_ref().map(|(_, test)| test.as_str())
    }

    /// The command that replays the whole failing run, every case in order,
    /// ending at the same failure: `ACCRETE_LAWS_SEED=<base seed> cargo test
    /// -p <package> -- --exact <test>`. `None` if the run was itself a
    /// single-case replay.
    pub fn replay_run(&self) -> Option<String> {
        let base = self.base_seed?;
        let mut env = format!("ACCRETE_LAWS_SEED={base}");
        for (var, value) in &self.replay.env {
            env.push_str(&format!(" {var}={value}"));
        }
        Some(self.command(&env))
    }

    /// The command that replays the failing case alone:
    /// `ACCRETE_LAWS_CASE=<case seed> cargo test -p <package> -- --exact
    /// <test>`.
    pub fn replay_case(&self) -> String {
        let mut env = format!("ACCRETE_LAWS_CASE={}", self.case_seed);
        for (var, value) in &self.replay.env {
            if *var == "ACCRETE_LAWS_SIZE" {
                env.push_str(&format!(" {var}={value}"));
            }
        }
        self.command(&env)
    }

    fn command(&self, env: &str) -> String {
        match &self.replay.test {
            Some((package, test)) => format!("{env} cargo test -p {package} -- --exact {test}"),
            None => format!(
                "{env} cargo test -- --exact <the test that runs `{}`>",
                self.name
            ),
        }
    }
}

impl fmt::Display for LawFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "law `{}` does not hold for `{}`", self.law, self.name)?;
        match self.base_seed {
            Some(base) => write!(
                f,
                "\n  case {} of the run with base seed {base} (case seed {})",
                self.case, self.case_seed
            )?,
            None => write!(f, "\n  case seed {}", self.case_seed)?,
        }
        write!(
            f,
            "\n  counterexample (after {} shrinks): {}\n  {}",
            self.shrinks,
            self.input,
            self.detail.replace('\n', "\n  ")
        )?;
        if let Some(run) = self.replay_run() {
            write!(f, "\n  replay the run:  {run}")?;
        }
        write!(f, "\n  replay the case: {}", self.replay_case())
    }
}

impl std::error::Error for LawFailure {}

type Generate<T> = Box<dyn Fn(&mut Gen) -> T>;
type Shrink<T> = Box<dyn Fn(&T) -> Box<dyn Iterator<Item = T>>>;
type Equivalent<T> = Box<dyn Fn(&T, &T) -> bool>;

/// One case of a run: which run, where in it, and its seed.
#[derive(Debug, Clone, Copy)]
struct Case {
    base: Option<u64>,
    index: u64,
    seed: u64,
}

/// The defaults of `ACCRETE_LAWS_TESTS` and `ACCRETE_LAWS_SIZE`.
const DEFAULT_TESTS: u64 = 256;
const DEFAULT_SIZE: usize = 16;

/// What a type must be for the harness to check it.
pub trait Subject: Monoid + Clone + Debug + Serialize + DeserializeOwned + 'static {}
impl<T: Monoid + Clone + Debug + Serialize + DeserializeOwned + 'static> Subject for T {}

/// A law checker for one type: a builder, then [`check`](Laws::check),
/// [`check_law`](Laws::check_law) or [`assert_law`](Laws::assert_law).
///
/// # Examples
///
/// ```
/// use accrete_monoids::laws::{Law, Laws};
/// use accrete_monoids::Max;
///
/// let laws = Laws::<Max<u8>>::new("max_u8").commutative().idempotent();
/// laws.check().expect("Max is a semilattice");
///
/// // Vec concatenation is a monoid, but not commutative: the harness says so
/// // with a minimal counterexample.
/// let failure = Laws::<Vec<u8>>::new("vec").check_law(Law::Associativity);
/// assert!(failure.is_ok());
/// ```
pub struct Laws<T: Subject> {
    name: String,
    generate: Generate<T>,
    shrink: Shrink<T>,
    /// [`FieldWise::shrink_fields`], for types that implement it.
    field_shrink: Option<fn(&T) -> Vec<T>>,
    /// [`FieldWise::differing_fields`], for types that implement it.
    field_diff: Option<fn(&T, &T) -> Vec<FieldDiff>>,
    eq: Equivalent<T>,
    /// Whether `eq` is `==` (no [`eq_by`](Laws::eq_by)).
    exact: bool,
    invert: Option<fn(&mut T)>,
    commutative: bool,
    idempotent: bool,
    bson: bool,
    tests: u64,
    size: usize,
    seed: Option<u64>,
    case: Option<u64>,
    /// Set from the environment, not by the builder: a replay needs it.
    tests_from_env: bool,
    size_from_env: bool,
    test: Option<(String, String)>,
}

impl<T: Subject + Arbitrary + PartialEq> Laws<T> {
    /// A checker that draws values from `T`'s [`Arbitrary`] impl and
    /// compares with `==`.
    pub fn new(name: impl Into<String>) -> Self {
        Self::with_generator(name, T::arbitrary).shrinker(|t: &T| t.shrink())
    }
}

impl<T: Subject + PartialEq> Laws<T> {
    /// A checker with a custom generator. Single values do not shrink
    /// unless you add a [`shrinker`](Laws::shrinker) or the type is
    /// [`FieldWise`] ([`field_wise`](Laws::field_wise): every
    /// `#[derive(Monoid)]` struct; [`laws!`](crate::laws!) does this for
    /// you); sequences still shrink by dropping elements. Use it for types
    /// that do not implement [`Arbitrary`], such as a struct from your
    /// library tested in an integration test (the orphan rule forbids the
    /// impl there).
    pub fn with_generator(
        name: impl Into<String>,
        generate: impl Fn(&mut Gen) -> T + 'static,
    ) -> Self {
        let env_tests = env_u64("ACCRETE_LAWS_TESTS").or_else(|| env_u64("QUICKCHECK_TESTS"));
        let env_size = env_u64("ACCRETE_LAWS_SIZE");
        Laws {
            name: name.into(),
            generate: Box::new(generate),
            shrink: Box::new(|_| Box::new(std::iter::empty())),
            field_shrink: None,
            field_diff: None,
            eq: Box::new(|a, b| a == b),
            exact: true,
            invert: None,
            commutative: false,
            idempotent: false,
            bson: true,
            tests: env_tests.unwrap_or(DEFAULT_TESTS),
            size: env_size.map_or(DEFAULT_SIZE, |s| s as usize),
            seed: env_u64("ACCRETE_LAWS_SEED"),
            case: env_u64("ACCRETE_LAWS_CASE"),
            tests_from_env: env_tests.is_some_and(|t| t != DEFAULT_TESTS),
            size_from_env: env_size.is_some_and(|s| s != DEFAULT_SIZE as u64),
            test: None,
        }
    }
}

impl<T: Subject> Laws<T> {
    /// Claims commutativity: checks [`Law::Commutativity`] and lets
    /// [`Law::Convergence`] permute deliveries.
    pub fn commutative(mut self) -> Self
    where
        T: Commutative,
    {
        self.commutative = true;
        self
    }

    /// Claims idempotence: checks [`Law::Idempotence`] and lets
    /// [`Law::Convergence`] duplicate deliveries.
    pub fn idempotent(mut self) -> Self
    where
        T: Idempotent,
    {
        self.idempotent = true;
        self
    }

    /// Checks [`Law::Inverse`] too.
    pub fn group(mut self) -> Self
    where
        T: Group,
    {
        self.invert = Some(T::invert);
        self
    }

    /// Shrinks counterexamples field by field and names the fields that
    /// differ when a law fails, through the type's [`FieldWise`] impl (every
    /// `#[derive(Monoid)]` struct has one). Field-wise candidates come after
    /// those of the [`shrinker`](Laws::shrinker), if any.
    /// [`laws!`](crate::laws!) calls this for every type that implements
    /// [`FieldWise`].
    pub fn field_wise(mut self) -> Self
    where
        T: FieldWise,
    {
        self.field_shrink = Some(T::shrink_fields);
        self.field_diff = Some(T::differing_fields);
        self
    }

    /// Names the `#[test]`s that run this checker, for the replay commands
    /// of a failure: `package` is the Cargo package (`env!("CARGO_PKG_NAME")`)
    /// and `module` the module whose function `law.test_name()` runs each law
    /// (`module_path!()`, crate name first, as [`laws!`](crate::laws!)
    /// passes them). Without it, a failure's replay command leaves the test
    /// to you.
    pub fn test_module(mut self, package: &str, module: &str) -> Self {
        self.test = Some((package.to_owned(), module.to_owned()));
        self
    }

    /// Replaces the generator (and drops the [`shrinker`](Laws::shrinker),
    /// which was for the old generator's values; [`field_wise`](Laws::field_wise)
    /// shrinking stays).
    pub fn generator(mut self, generate: impl Fn(&mut Gen) -> T + 'static) -> Self {
        self.generate = Box::new(generate);
        self.shrink = Box::new(|_| Box::new(std::iter::empty()));
        self
    }

    /// Sets how single values shrink.
    pub fn shrinker<I>(mut self, shrink: impl Fn(&T) -> I + 'static) -> Self
    where
        I: Iterator<Item = T> + 'static,
    {
        self.shrink = Box::new(move |t| Box::new(shrink(t)));
        self
    }

    /// Compares with an equivalence instead of `==`: for approximate types
    /// (floating point, summaries whose merge is associative only within a
    /// stated bound). Every law, the round trips included, then holds up to
    /// this equivalence.
    pub fn eq_by(mut self, eq: impl Fn(&T, &T) -> bool + 'static) -> Self {
        self.eq = Box::new(eq);
        self.exact = false;
        self
    }

    /// Skips the BSON leg of [`Law::SerdeRoundTrip`]. BSON has no unsigned
    /// 64-bit integer, so a type that may hold values above `i64::MAX`
    /// cannot be stored in MongoDB as is; say so with this, deliberately.
    pub fn no_bson(mut self) -> Self {
        self.bson = false;
        self
    }

    /// The number of cases per law (overrides `ACCRETE_LAWS_TESTS` and
    /// `QUICKCHECK_TESTS`).
    pub fn tests(mut self, tests: u64) -> Self {
        self.tests = tests;
        self.tests_from_env = false;
        self
    }

    /// The size parameter of the generator: lengths of generated sequences
    /// (overrides `ACCRETE_LAWS_SIZE`).
    pub fn size(mut self, size: usize) -> Self {
        self.size = size;
        self.size_from_env = false;
        self
    }

    /// Pins the base seed of every run (overrides `ACCRETE_LAWS_SEED`): all
    /// [`tests`](Laws::tests) cases run, case `i` with a seed derived from
    /// the base seed and `i`, so the whole run — and its failure, if any —
    /// is the same every time.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Runs a single case with this case seed instead of a run (overrides
    /// `ACCRETE_LAWS_CASE`, and wins over [`seed`](Laws::seed)): replays the
    /// failing case that a [`LawFailure`] names, without the cases before it.
    pub fn case(mut self, case_seed: u64) -> Self {
        self.case = Some(case_seed);
        self
    }

    /// The laws this checker will run, given what the type claims.
    pub fn laws(&self) -> Vec<Law> {
        let mut laws = vec![Law::Identity, Law::Associativity];
        if self.commutative {
            laws.push(Law::Commutativity);
        }
        if self.idempotent {
            laws.push(Law::Idempotence);
        }
        if self.invert.is_some() {
            laws.push(Law::Inverse);
        }
        laws.extend([
            Law::CombineAll,
            Law::OwnedVsBorrowed,
            Law::SerdeRoundTrip,
            Law::Convergence,
        ]);
        laws
    }

    /// Runs every law the type claims; the first failure is returned.
    pub fn check(&self) -> Result<(), LawFailure> {
        self.laws()
            .into_iter()
            .try_for_each(|law| self.check_law(law))
    }

    /// Runs every law the type claims; panics with the counterexample.
    #[track_caller]
    pub fn assert(&self) {
        if let Err(failure) = self.check() {
            panic!("{failure}");
        }
    }

    /// Runs one law; panics with the counterexample.
    #[track_caller]
    pub fn assert_law(&self, law: Law) {
        if let Err(failure) = self.check_law(law) {
            panic!("{failure}");
        }
    }

    /// Runs one law. A law the type does not claim (commutativity without
    /// [`commutative`](Laws::commutative), …) is an error, not a pass.
    pub fn check_law(&self, law: Law) -> Result<(), LawFailure> {
        let base = match self.case {
            Some(case_seed) => {
                eprintln!(
                    "accrete laws: `{}` {law}: one case, case seed {case_seed} (ACCRETE_LAWS_CASE)",
                    self.name
                );
                None
            }
            None => {
                let base = self.seed.unwrap_or_else(fresh_seed);
                eprintln!(
                    "accrete laws: `{}` {law}: {} cases, base seed {base} \
                     (ACCRETE_LAWS_SEED={base} replays this run)",
                    self.name,
                    self.tests.max(1)
                );
                Some(base)
            }
        };
        let cases = if base.is_some() { self.tests.max(1) } else { 1 };
        for index in 0..cases {
            let seed = match (base, self.case) {
                (Some(base), _) => case_seed(base, index),
                (None, replayed) => replayed.unwrap_or_default(),
            };
            let seed = Case { base, index, seed };
            let mut g = Gen::from_size_and_seed(self.size, seed.seed);
            let outcome = match law {
                Law::Identity => self.run(law, seed, self.gen_values::<1>(&mut g), |[a]| {
                    self.identity(a)
                }),
                Law::Associativity => {
                    self.run(law, seed, self.gen_values::<3>(&mut g), |[a, b, c]| {
                        self.associativity(a, b, c)
                    })
                }
                Law::Commutativity => {
                    self.claimed(law, self.commutative)?;
                    self.run(law, seed, self.gen_values::<2>(&mut g), |[a, b]| {
                        self.commutativity(a, b)
                    })
                }
                Law::Idempotence => {
                    self.claimed(law, self.idempotent)?;
                    self.run(law, seed, self.gen_values::<1>(&mut g), |[a]| {
                        self.idempotence(a)
                    })
                }
                Law::Inverse => {
                    let invert = self.invert.ok_or_else(|| self.unclaimed(law))?;
                    self.run(law, seed, self.gen_values::<1>(&mut g), |[a]| {
                        self.inverse(a, invert)
                    })
                }
                Law::CombineAll => self.run_seq(law, seed, &mut g, |xs, _| self.combine_all(xs)),
                Law::OwnedVsBorrowed => {
                    self.run(law, seed, self.gen_values::<2>(&mut g), |[a, b]| {
                        self.owned_vs_borrowed(a, b)
                    })
                }
                Law::SerdeRoundTrip => self.run(law, seed, self.gen_values::<1>(&mut g), |[a]| {
                    self.round_trip(a)
                }),
                Law::Convergence => {
                    self.run_seq(law, seed, &mut g, |xs, salt| self.convergence(xs, salt))
                }
            };
            outcome?;
        }
        Ok(())
    }

    fn claimed(&self, law: Law, claimed: bool) -> Result<(), LawFailure> {
        if claimed {
            Ok(())
        } else {
            Err(self.unclaimed(law))
        }
    }

    fn unclaimed(&self, law: Law) -> LawFailure {
        LawFailure {
            name: self.name.clone(),
            law,
            base_seed: None,
            case: 0,
            case_seed: 0,
            input: String::new(),
            detail: "the checker was not told the type claims this law (call .commutative(), .idempotent() or \
                     .group())"
                .into(),
            shrinks: 0,
            replay: Box::new(self.replay(law)),
        }
    }

    fn replay(&self, law: Law) -> Replay {
        let mut env = Vec::new();
        if self.tests_from_env {
            env.push(("ACCRETE_LAWS_TESTS", self.tests));
        }
        if self.size_from_env {
            env.push(("ACCRETE_LAWS_SIZE", self.size as u64));
        }
        let test = self.test.as_ref().map(|(package, module)| {
            // libtest names a test by its path without the crate name.
            let path = module.split_once("::").map_or("", |(_, rest)| rest);
            let test = if path.is_empty() {
                law.test_name().to_owned()
            } else {
                format!("{path}::{}", law.test_name())
            };
            (package.clone(), test)
        });
        Replay { test, env }
    }

    /// Smaller values of one value: the shrinker's, then the field-wise ones.
    fn shrink_value(&self, value: &T) -> Vec<T> {
        let mut out: Vec<T> = (self.shrink)(value).collect();
        if let Some(fields) = self.field_shrink {
            out.extend(fields(value));
        }
        out
    }

    fn gen_values<const N: usize>(&self, g: &mut Gen) -> [T; N] {
        std::array::from_fn(|_| (self.generate)(g))
    }

    fn gen_seq(&self, g: &mut Gen) -> Vec<T> {
        let len = usize::arbitrary(g) % (self.size.max(1) * 2 + 1);
        (0..len).map(|_| (self.generate)(g)).collect()
    }

    /// Runs a property over `N` values, shrinking one component at a time.
    fn run<const N: usize>(
        &self,
        law: Law,
        seed: Case,
        input: [T; N],
        prop: impl Fn(&[T; N]) -> Result<(), String>,
    ) -> Result<(), LawFailure> {
        let prop = |input: &[T; N]| guarded(|| prop(input));
        let Err(detail) = prop(&input) else {
            return Ok(());
        };
        let shrink = |input: &[T; N]| -> Vec<[T; N]> {
            (0..N)
                .flat_map(|i| {
                    self.shrink_value(&input[i])
                        .into_iter()
                        .map(move |smaller| {
                            let mut next = input.clone();
                            next[i] = smaller;
                            next
                        })
                })
                .collect()
        };
        let (input, detail, shrinks) = minimize(input, detail, shrink, prop);
        Err(self.failure(law, seed, format!("{input:?}"), detail, shrinks))
    }

    /// Runs a property over a sequence, shrinking by dropping and shrinking
    /// elements. `salt` drives the delivery faults and is kept while shrinking.
    fn run_seq(
        &self,
        law: Law,
        seed: Case,
        g: &mut Gen,
        prop: impl Fn(&[T], u64) -> Result<(), String>,
    ) -> Result<(), LawFailure> {
        let input = (self.gen_seq(g), u64::arbitrary(g));
        let prop = |(xs, salt): &(Vec<T>, u64)| guarded(|| prop(xs, *salt));
        let Err(detail) = prop(&input) else {
            return Ok(());
        };
        // Smaller sequences first (halves, quarters, … single elements), each
        // with the original fault pattern and a few others, since dropping an
        // element shifts which deliveries the salt duplicates and reorders;
        // then smaller elements.
        let shrink = |(xs, salt): &(Vec<T>, u64)| -> Vec<(Vec<T>, u64)> {
            let mut out = Vec::new();
            let mut chunk = xs.len() / 2;
            while chunk > 0 {
                for start in (0..xs.len()).step_by(chunk) {
                    let mut next = xs.clone();
                    next.drain(start..(start + chunk).min(xs.len()));
                    out.extend([*salt, 0, 1, 2, 3].map(|s| (next.clone(), s)));
                }
                chunk /= 2;
            }
            for (i, x) in xs.iter().enumerate() {
                out.extend(self.shrink_value(x).into_iter().map(|smaller| {
                    let mut next = xs.clone();
                    next[i] = smaller;
                    (next, *salt)
                }));
            }
            out
        };
        let ((input, salt), detail, shrinks) = minimize(input, detail, shrink, prop);
        Err(self.failure(
            law,
            seed,
            format!("{input:?} (fault salt {salt})"),
            detail,
            shrinks,
        ))
    }

    fn failure(
        &self,
        law: Law,
        case: Case,
        input: String,
        detail: String,
        shrinks: usize,
    ) -> LawFailure {
        LawFailure {
            name: self.name.clone(),
            law,
            base_seed: case.base,
            case: case.index,
            case_seed: case.seed,
            input,
            detail,
            shrinks,
            replay: Box::new(self.replay(law)),
        }
    }

    fn same(&self, what: &str, left: &T, right: &T) -> Result<(), String> {
        if (self.eq)(left, right) {
            return Ok(());
        }
        let mut detail = format!("{what}\n  left:  {left:?}\n  right: {right:?}");
        if let Some(diff) = self.field_diff {
            for field in diff(left, right) {
                detail.push_str(&format!("\n  {field}"));
            }
        }
        Err(detail)
    }

    fn identity(&self, a: &T) -> Result<(), String> {
        let e = T::identity();
        if !e.is_identity() {
            return Err(format!("identity().is_identity() is false for {e:?}"));
        }
        if a.is_identity() && !(self.eq)(a, &e) {
            return Err(format!(
                "is_identity() is true for {a:?}, which is not equal to identity() {e:?}"
            ));
        }
        // Under an approximate `eq_by`, a value close to the identity need
        // not be the identity.
        if self.exact && !a.is_identity() && (self.eq)(a, &e) {
            return Err(format!(
                "is_identity() is false for {a:?}, which equals identity() {e:?}"
            ));
        }
        self.same("e ⊕ a == a", &e.clone().combined(a), a)?;
        self.same("a ⊕ e == a", &a.clone().combined(&e), a)
    }

    fn associativity(&self, a: &T, b: &T, c: &T) -> Result<(), String> {
        let left = a.clone().combined(b).combined(c);
        let right = a.clone().combined(&b.clone().combined(c));
        self.same("(a ⊕ b) ⊕ c == a ⊕ (b ⊕ c)", &left, &right)
    }

    fn commutativity(&self, a: &T, b: &T) -> Result<(), String> {
        self.same(
            "a ⊕ b == b ⊕ a",
            &a.clone().combined(b),
            &b.clone().combined(a),
        )
    }

    fn idempotence(&self, a: &T) -> Result<(), String> {
        self.same("a ⊕ a == a", &a.clone().combined(a), a)
    }

    fn inverse(&self, a: &T, invert: fn(&mut T)) -> Result<(), String> {
        let mut inv = a.clone();
        invert(&mut inv);
        self.same(
            "a ⊕ a⁻¹ == identity",
            &a.clone().combined(&inv),
            &T::identity(),
        )?;
        self.same("a⁻¹ ⊕ a == identity", &inv.combined(a), &T::identity())
    }

    fn combine_all(&self, xs: &[T]) -> Result<(), String> {
        let mut one_by_one = T::identity();
        for x in xs {
            one_by_one.combine(x);
        }
        let mut batch = T::identity();
        batch.combine_all(xs.iter().cloned());
        self.same(
            "combine_all(xs) == combining one at a time",
            &batch,
            &one_by_one,
        )?;
        // A batch path may treat an empty `self` specially: start from
        // the first element too.
        if let Some((start, rest)) = xs.split_first() {
            let mut one_by_one = start.clone();
            for x in rest {
                one_by_one.combine(x);
            }
            let mut batch = start.clone();
            batch.combine_all(rest.iter().cloned());
            self.same(
                "x.combine_all(xs) == combining one at a time into x",
                &batch,
                &one_by_one,
            )?;
        }
        self.same(
            "Monoid::fold(xs) == combining one at a time",
            &T::fold(xs.iter().cloned()),
            &one_by_one,
        )
    }

    fn owned_vs_borrowed(&self, a: &T, b: &T) -> Result<(), String> {
        let mut borrowed = a.clone();
        borrowed.combine(b);
        let mut owned = a.clone();
        owned.combine_owned(b.clone());
        self.same("combine_owned(b) == combine(&b)", &owned, &borrowed)?;
        self.same(
            "a.combined(&b) == combine(&b)",
            &a.clone().combined(b),
            &borrowed,
        )
    }

    fn round_trip(&self, a: &T) -> Result<(), String> {
        let json = serde_json::to_string(a).map_err(|e| format!("JSON encoding failed: {e}"))?;
        let back: T = serde_json::from_str(&json)
            .map_err(|e| format!("JSON decoding failed: {e}\n  json: {json}"))?;
        self.same("JSON round trip", a, &back)?;

        let bytes = postcard::to_stdvec(a).map_err(|e| format!("postcard encoding failed: {e}"))?;
        let back: T =
            postcard::from_bytes(&bytes).map_err(|e| format!("postcard decoding failed: {e}"))?;
        self.same("postcard round trip", a, &back)?;

        if self.bson {
            #[derive(Serialize, serde::Deserialize)]
            struct Doc<V> {
                v: V,
            }
            let doc = bson::serialize_to_document(&Doc { v: a }).map_err(|e| {
                format!("BSON encoding failed: {e} (MongoDB cannot store this value; use no_bson if intended)")
            })?;
            let back: Doc<T> = bson::deserialize_from_document(doc.clone())
                .map_err(|e| format!("BSON decoding failed: {e}\n  doc: {doc}"))?;
            self.same("BSON round trip", a, &back.v)?;
        }
        Ok(())
    }

    /// The runtime's view of a read model: deltas delivered in some order,
    /// possibly more than once, cut into batches that are pre-aggregated in
    /// memory and then combined into the stored state.
    fn convergence(&self, xs: &[T], salt: u64) -> Result<(), String> {
        let oracle = xs.iter().fold(T::identity(), |acc, x| acc.combined(x));
        let mut rng = SplitMix64::new(salt);
        let mut delivery: Vec<&T> = xs.iter().collect();
        if self.idempotent {
            for _ in 0..rng.below(xs.len() as u64 + 1) {
                let dup = delivery[rng.below(xs.len() as u64) as usize];
                delivery.push(dup);
            }
        }
        if self.commutative {
            for i in (1..delivery.len()).rev() {
                delivery.swap(i, rng.below(i as u64 + 1) as usize);
            }
        }
        let mut stored = T::identity();
        let mut rest = &delivery[..];
        while !rest.is_empty() {
            let take = 1 + rng.below(rest.len() as u64) as usize;
            let (batch, tail) = rest.split_at(take);
            let mut pre = T::identity();
            pre.combine_all(batch.iter().map(|x| (*x).clone()));
            stored.combine_owned(pre);
            rest = tail;
        }
        let faults = match (self.commutative, self.idempotent) {
            (true, true) => "permuted, duplicated and batched",
            (true, false) => "permuted and batched",
            (false, true) => "duplicated and batched",
            (false, false) => "batched",
        };
        self.same(
            &format!("delivery {faults} == plain left fold"),
            &stored,
            &oracle,
        )
    }
}

/// Checks that one value survives the JSON, postcard and BSON round trips
/// with `==`: for values a generator rarely reaches (a full sketch, a
/// large map).
///
/// # Panics
///
/// With the encoding that failed and both values.
#[track_caller]
pub fn assert_round_trip<T: Subject + PartialEq>(value: &T) {
    let laws = Laws::<T>::with_generator("assert_round_trip", |_| T::identity());
    if let Err(detail) = laws.round_trip(value) {
        panic!("round trip failed for {value:?}: {detail}");
    }
}

/// The shrinker of values that shrink only to the identity (summaries whose
/// parts cannot shrink on their own).
pub(crate) fn shrink_to_identity<T: Monoid + 'static>(value: &T) -> Box<dyn Iterator<Item = T>> {
    if value.is_identity() {
        quickcheck::empty_shrinker()
    } else {
        quickcheck::single_shrinker(T::identity())
    }
}

/// Greedy shrinking: take the first smaller input that still fails, until
/// none does.
fn minimize<I>(
    mut input: I,
    mut detail: String,
    shrink: impl Fn(&I) -> Vec<I>,
    prop: impl Fn(&I) -> Result<(), String>,
) -> (I, String, usize) {
    let mut steps = 0;
    'outer: while steps < 1_000 {
        for candidate in shrink(&input) {
            if let Err(d) = prop(&candidate) {
                input = candidate;
                detail = d;
                steps += 1;
                continue 'outer;
            }
        }
        break;
    }
    (input, detail, steps)
}

/// Turns a panic inside a property into a failure with its message.
fn guarded(prop: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    catch_unwind(AssertUnwindSafe(prop)).unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic".into());
        Err(format!("panicked: {msg}"))
    })
}

fn env_u64(var: &str) -> Option<u64> {
    std::env::var(var).ok()?.trim().parse().ok()
}

fn fresh_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// The seed of case `index` of the run with base seed `base`.
fn case_seed(base: u64, index: u64) -> u64 {
    SplitMix64::new(base.wrapping_add(index)).next_u64()
}

/// Support for [`laws!`](crate::laws!): picks [`Laws::field_wise`] for the types that
/// implement [`FieldWise`]. Not public API.
#[doc(hidden)]
pub mod __private {
    use super::{FieldWise, Laws, Subject};
    use std::marker::PhantomData;

    /// Wraps a type for method probing: `(&&TypeProbe::<T>::new()).m()`
    /// finds the impl on `&TypeProbe` (bounded) before the fallback.
    pub struct TypeProbe<T>(PhantomData<T>);

    impl<T> TypeProbe<T> {
        /// The probe.
        #[allow(clippy::new_without_default)]
        pub fn new() -> Self {
            TypeProbe(PhantomData)
        }
    }

    /// A [`FieldWise`] type: shrink and diff field by field.
    pub trait FieldWiseSome<T: Subject> {
        /// `laws.field_wise()`.
        fn __accrete_field_wise(&self, laws: Laws<T>) -> Laws<T>;
    }
    impl<T: Subject + FieldWise> FieldWiseSome<T> for &TypeProbe<T> {
        fn __accrete_field_wise(&self, laws: Laws<T>) -> Laws<T> {
            laws.field_wise()
        }
    }

    /// Any other type.
    pub trait FieldWiseNone<T: Subject> {
        /// `laws` unchanged.
        fn __accrete_field_wise(&self, laws: Laws<T>) -> Laws<T>;
    }
    impl<T: Subject> FieldWiseNone<T> for TypeProbe<T> {
        fn __accrete_field_wise(&self, laws: Laws<T>) -> Laws<T> {
            laws
        }
    }
}

/// Expands to a module of `#[test]`s checking a type's laws. See the
/// [module docs](mod@crate::laws).
#[macro_export]
macro_rules! laws {
    ($name:ident : $ty:ty = $gen:expr $(=> $($marker:ident),* $(,)?)? $(; $($opt:ident $(= $val:expr)?),* $(,)?)?) => {
        $crate::__laws_module!($name, $ty,
            $crate::laws::Laws::<$ty>::with_generator(stringify!($name), $gen)
            $(, $($marker),*)? ; $($($opt $(= $val)?),*)?);
    };
    ($name:ident : $ty:ty $(=> $($marker:ident),* $(,)?)? $(; $($opt:ident $(= $val:expr)?),* $(,)?)?) => {
        $crate::__laws_module!($name, $ty,
            $crate::laws::Laws::<$ty>::new(stringify!($name))
            $(, $($marker),*)? ; $($($opt $(= $val)?),*)?);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __laws_module {
    ($name:ident, $ty:ty, $base:expr $(, $marker:ident)* ; $($opt:ident $(= $val:expr)?),*) => {
        #[allow(non_snake_case)]
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[allow(unused_imports)]
            use $crate::laws::Arbitrary as _;

            /// The configured checker: field-wise for a `FieldWise` type,
            /// named after the tests below for the replay commands.
            pub(super) fn checker() -> $crate::laws::Laws<$ty> {
                #[allow(unused_imports)]
                use $crate::laws::__private::{FieldWiseNone as _, FieldWiseSome as _};
                let base = $base.test_module(env!("CARGO_PKG_NAME"), module_path!());
                (&&$crate::laws::__private::TypeProbe::<$ty>::new())
                    .__accrete_field_wise(base)
                    $(.$marker())* $(.$opt($($val)?))*
            }

            #[test]
            fn identity() {
                checker().assert_law($crate::laws::Law::Identity);
            }
            #[test]
            fn associativity() {
                checker().assert_law($crate::laws::Law::Associativity);
            }
            #[test]
            fn combine_all() {
                checker().assert_law($crate::laws::Law::CombineAll);
            }
            #[test]
            fn owned_vs_borrowed() {
                checker().assert_law($crate::laws::Law::OwnedVsBorrowed);
            }
            #[test]
            fn serde_round_trip() {
                checker().assert_law($crate::laws::Law::SerdeRoundTrip);
            }
            #[test]
            fn convergence() {
                checker().assert_law($crate::laws::Law::Convergence);
            }
            $($crate::__laws_marker_test!($marker);)*
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __laws_marker_test {
    (commutative) => {
        #[test]
        fn commutativity() {
            checker().assert_law($crate::laws::Law::Commutativity);
        }
    };
    (idempotent) => {
        #[test]
        fn idempotence() {
            checker().assert_law($crate::laws::Law::Idempotence);
        }
    };
    (group) => {
        #[test]
        fn inverse() {
            checker().assert_law($crate::laws::Law::Inverse);
        }
    };
}
