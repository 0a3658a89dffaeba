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
//! Options follow a semicolon and map to builder methods of [`Laws`]:
//! `eq_by = f` ([`Laws::eq_by`]: an equivalence for approximate types),
//! `no_bson` ([`Laws::no_bson`]), `tests = n`, `size = n`. A type without
//! an [`Arbitrary`] impl (your own struct, tested from an integration test
//! where the orphan rule forbids the impl) takes a generator after `=`.
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
//! # Seeds, case counts and shrinking
//!
//! Each law runs `ACCRETE_LAWS_TESTS` cases (default 256; quickcheck's
//! `QUICKCHECK_TESTS` is honoured too). Every run prints its base seed to
//! stderr; a failure names the exact case seed and shrinks the input to a
//! minimal counterexample first. Re-run one case with
//! `ACCRETE_LAWS_SEED=<seed> cargo test <name>`.

use std::fmt::{self, Debug};
use std::panic::{AssertUnwindSafe, catch_unwind};

pub use quickcheck::{self, Arbitrary, Gen};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::hash::SplitMix64;
use crate::{Commutative, Group, Idempotent, Monoid};

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

/// A law that does not hold, with a shrunk counterexample.
#[derive(Debug, Clone)]
pub struct LawFailure {
    /// The name the harness was given (usually the test module).
    pub name: String,
    /// The law that failed.
    pub law: Law,
    /// The seed of the failing case: `ACCRETE_LAWS_SEED=<seed>` re-runs it.
    pub seed: u64,
    /// The shrunk input, `Debug`-formatted.
    pub input: String,
    /// What was observed: both sides of the equation, or a panic message.
    pub detail: String,
    /// How many shrinking steps were taken from the first failing input.
    pub shrinks: usize,
}

impl fmt::Display for LawFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "law `{}` does not hold for `{}`\n  counterexample (after {} shrinks): {}\n  {}\n  \
             re-run this case: ACCRETE_LAWS_SEED={} cargo test {}",
            self.law,
            self.name,
            self.shrinks,
            self.input,
            self.detail.replace('\n', "\n  "),
            self.seed,
            self.name
        )
    }
}

impl std::error::Error for LawFailure {}

type Generate<T> = Box<dyn Fn(&mut Gen) -> T>;
type Shrink<T> = Box<dyn Fn(&T) -> Box<dyn Iterator<Item = T>>>;
type Equivalent<T> = Box<dyn Fn(&T, &T) -> bool>;

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
}

impl<T: Subject + Arbitrary + PartialEq> Laws<T> {
    /// A checker that draws values from `T`'s [`Arbitrary`] impl and
    /// compares with `==`.
    pub fn new(name: impl Into<String>) -> Self {
        Self::with_generator(name, T::arbitrary).shrinker(|t: &T| t.shrink())
    }
}

impl<T: Subject + PartialEq> Laws<T> {
    /// A checker with a custom generator (no shrinking of single values;
    /// sequences still shrink by dropping elements). Use it for types that
    /// do not implement [`Arbitrary`], such as a struct from your library
    /// tested in an integration test (the orphan rule forbids the impl there).
    pub fn with_generator(
        name: impl Into<String>,
        generate: impl Fn(&mut Gen) -> T + 'static,
    ) -> Self {
        Laws {
            name: name.into(),
            generate: Box::new(generate),
            shrink: Box::new(|_| Box::new(std::iter::empty())),
            eq: Box::new(|a, b| a == b),
            exact: true,
            invert: None,
            commutative: false,
            idempotent: false,
            bson: true,
            tests: env_u64("ACCRETE_LAWS_TESTS")
                .or_else(|| env_u64("QUICKCHECK_TESTS"))
                .unwrap_or(256),
            size: env_u64("ACCRETE_LAWS_SIZE").map_or(16, |s| s as usize),
            seed: env_u64("ACCRETE_LAWS_SEED"),
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

    /// Replaces the generator.
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

    /// The number of cases per law (overrides the environment).
    pub fn tests(mut self, tests: u64) -> Self {
        self.tests = tests;
        self
    }

    /// The size parameter of the generator: lengths of generated sequences.
    pub fn size(mut self, size: usize) -> Self {
        self.size = size;
        self
    }

    /// Pins the base seed (overrides `ACCRETE_LAWS_SEED`).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
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
        let single = self.seed.is_some();
        let base = self.seed.unwrap_or_else(fresh_seed);
        let tests = if single { 1 } else { self.tests.max(1) };
        eprintln!(
            "accrete laws: `{}` {law}: {tests} case(s), base seed {base} (ACCRETE_LAWS_SEED re-runs a case)",
            self.name
        );
        for case in 0..tests {
            let seed = if single {
                base
            } else {
                splitmix(base.wrapping_add(case))
            };
            let mut g = Gen::from_size_and_seed(self.size, seed);
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
            seed: 0,
            input: String::new(),
            detail: "the checker was not told the type claims this law (call .commutative(), .idempotent() or \
                     .group())"
                .into(),
            shrinks: 0,
        }
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
        seed: u64,
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
                    (self.shrink)(&input[i]).map(move |smaller| {
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
        seed: u64,
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
                out.extend((self.shrink)(x).map(|smaller| {
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
        seed: u64,
        input: String,
        detail: String,
        shrinks: usize,
    ) -> LawFailure {
        LawFailure {
            name: self.name.clone(),
            law,
            seed,
            input,
            detail,
            shrinks,
        }
    }

    fn same(&self, what: &str, left: &T, right: &T) -> Result<(), String> {
        if (self.eq)(left, right) {
            Ok(())
        } else {
            Err(format!("{what}\n  left:  {left:?}\n  right: {right:?}"))
        }
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

fn splitmix(x: u64) -> u64 {
    SplitMix64::new(x).next_u64()
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

            fn checker() -> $crate::laws::Laws<$ty> {
                $base $(.$marker())* $(.$opt($($val)?))*
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
