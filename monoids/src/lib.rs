//! Commutative monoids for read models that converge under at-least-once,
//! out-of-order, duplicated delivery.
//!
//! # Overview
//!
//! A read model's state in accrete is a **monoid**: a type with an identity
//! and an associative, in-place [`combine`](Semigroup::combine). When the
//! monoid is also [`Commutative`], every delivery order folds to the same
//! state; when it is [`Idempotent`] too (a join-semilattice: `Max`, sets,
//! HyperLogLog, OR-sets), duplicate deliveries are harmless. States that are
//! not idempotent (sums, counts, sketches with counts) get exactly-once
//! application from the runtime instead.
//!
//! ```
//! use accrete_monoids::{Count, HyperLogLog, Max, Monoid, Semigroup};
//!
//! #[derive(Monoid, Debug, Clone, PartialEq)]
//! struct PageStats {
//!     views: Count,
//!     visitors: HyperLogLog<12>,
//!     last_view_ms: Max<i64>,
//! }
//!
//! // The delta of one page view…
//! fn view(visitor: &str, at_ms: i64) -> PageStats {
//!     let mut visitors = HyperLogLog::new();
//!     visitors.insert(visitor);
//!     PageStats { views: Count::one(), visitors, last_view_ms: Max(at_ms) }
//! }
//!
//! // …folded in any order gives the same state.
//! let a = PageStats::fold([view("ana", 10), view("bo", 30), view("ana", 20)]);
//! let b = PageStats::fold([view("ana", 20), view("ana", 10), view("bo", 30)]);
//! assert_eq!(a, b);
//! assert_eq!(a.views, Count(3));
//! assert_eq!(a.visitors.estimate().round(), 2.0);
//! ```
//!
//! # The algebra
//!
//! | trait | what it gives |
//! | --- | --- |
//! | [`Semigroup`] | `combine(&mut self, &other)` (primary), `combine_owned`, `combined`, the batch fast path `combine_all` |
//! | [`Monoid`] | `identity()`, `is_identity()`, `fold` |
//! | [`Commutative`], [`Idempotent`] | law markers the runtime and the harness read; [`Semilattice`] = monoid + both |
//! | [`Group`] | `invert`: retractions, for sums |
//!
//! Standard types have lawful instances (integers wrap; `Option<S>` adds an
//! identity to any semigroup; tuples, maps and sets combine point-wise): see
//! the table in [`std_impls`](crate#standard-types).
//!
//! # Primitives
//!
//! | primitive | state | laws | notes |
//! | --- | --- | --- | --- |
//! | [`Sum`], [`Count`] | a number | C, group | exactly once by the runtime |
//! | [`Min`], [`Max`] | an extreme | C, I | `Option<Max<String>>` for unbounded types |
//! | [`First`], [`Last`] | the value with the earliest/latest event time | C, I | ties broken by value |
//! | [`Any`], [`All`], [`BitOr`] | booleans, flags | C, I | |
//! | [`Windowed`] | a monoid per tumbling event-time window | as its content | optional retention |
//! | [`Map`] | a monoid per key | as its values | drops keys that fall back to identity |
//! | [`GSet`], [`TwoPhaseSet`] | grow-only set; set with permanent removal | C, I | |
//! | [`OrSet`] | add-wins observed-remove set (delta-state ORSWOT) | C, I | removal never resurrects on re-delivery |
//! | [`GCounter`], [`PnCounter`] | per-actor counters (state-based CRDTs) | C, I | deltas carry running totals |
//! | [`LastWriteWins`] | register, latest `(timestamp, actor)` wins | C, I | |
//! | [`MultiValue`] | register keeping concurrent writes (version vectors) | C, I | |
//! | [`HyperLogLog`] | distinct count | C, I | error 1.04/√2ᴾ |
//! | [`CountMinSketch`] | frequencies | C | overestimates by at most e/W·N with probability 1−e⁻ᴰ |
//! | [`Bloom`] | membership | C, I | no false negatives |
//! | [`TopK`] | heavy hitters (Misra–Gries) | C, associative within its bound | `f − N/(K+1) ≤ estimate ≤ f` |
//! | [`DdSketch`] | quantiles | C | relative error α (1% by default) |
//! | [`Average`] | mean | C, approximately associative (floats) | |
//! | [`Moments`] | count, mean, variance | C, approximately associative (floats) | stable parallel merge (Chan et al.) |
//! | `AutomergeDoc` (feature `automerge`) | an Automerge document | C, I | merge is combine |
//!
//! C: [`Commutative`], I: [`Idempotent`]. Every primitive documents its
//! identity, its laws, its error bounds where it is approximate, and has a
//! runnable example; every persisted form is pinned by golden files.
//!
//! # Standard types
//!
//! Integers add (wrapping: addition modulo 2ⁿ is a lawful group, and
//! checked or saturating addition is not associative), `()` is trivial,
//! `Option<S>` lifts a semigroup, tuples up to 12 and maps combine
//! point-wise, sets take the union, and `Vec`/`String` concatenate (a monoid,
//! but not commutative).
//!
//! # The law harness
//!
//! With the `laws` feature, `laws!` checks a type in one line, including
//! convergence under reordering, duplication and batching:
//!
//! ```
//! # #[cfg(feature = "laws")]
//! # mod checks {
//! use accrete_monoids::{laws, Max, Sum};
//!
//! laws!(max_i64: Max<i64> => commutative, idempotent);
//! laws!(sum_i64: Sum<i64> => commutative, group);
//! # }
//! # fn main() {}
//! ```
//!
//! On a `#[derive(Monoid)]` struct the same line shrinks a counterexample
//! field by field and names the fields that differ ([`FieldWise`]). A
//! failure prints the commands that replay its whole run
//! (`ACCRETE_LAWS_SEED`) and its failing case alone (`ACCRETE_LAWS_CASE`).
//! See the `laws` module (feature `laws`).
//!
//! # Crate features
//!
//! - `serde` (default): `Serialize`/`Deserialize` for every primitive.
//! - `derive` (default): `#[derive(Monoid)]`.
//! - `laws`: the law harness and `quickcheck::Arbitrary` for every
//!   primitive. Not default: a test library is never a runtime dependency.
//! - `automerge`: `AutomergeDoc`.

#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

// Lets `#[derive(Monoid)]` name this crate `::accrete_monoids` everywhere,
// inside it included.
extern crate self as accrete_monoids;

/// `#[derive(Monoid)]`: field-wise [`Semigroup`] and [`Monoid`] for structs
/// whose fields are monoids, plus [`Commutative`], [`Idempotent`] and
/// [`Group`] whenever every field has them.
///
/// `#[monoid(commutative)]` (or `idempotent`, `group`) *requires* the law:
/// a field that lacks it is a compile error pointing at that field. A field
/// that is not a monoid at all is a compile error that suggests a primitive.
///
/// It also implements [`FieldWise`], through which the law harness shrinks a
/// counterexample field by field and names the fields that differ. That impl
/// involves quickcheck only when this crate is built with `laws` (in your
/// tests); otherwise it shrinks nothing.
///
/// # Examples
///
/// ```
/// use accrete_monoids::{Count, Max, Monoid, Semigroup, Sum};
///
/// #[derive(Monoid, Debug, Clone, PartialEq)]
/// #[monoid(commutative)]
/// struct PageStats {
///     views: Count,
///     revenue_cents: Sum<i64>,
///     last_seen_ms: Max<u64>,
/// }
///
/// let mut page = PageStats::identity();
/// page.combine(&PageStats { views: Count(1), revenue_cents: Sum(499), last_seen_ms: Max(1_700) });
/// page.combine(&PageStats { views: Count(1), revenue_cents: Sum(0), last_seen_ms: Max(1_200) });
/// assert_eq!(page.views, Count(2));
/// assert_eq!(page.last_seen_ms, Max(1_700));
/// ```
#[cfg(feature = "derive")]
pub use accrete_derive::Monoid;

mod algebra;
mod fields;
pub mod hash;
mod std_impls;

#[cfg(feature = "automerge")]
mod automerge_doc;
mod average;
mod bloom;
mod cells;
mod count;
mod count_min;
mod ddsketch;
mod dot;
mod first_last;
mod gcounter;
mod gset;
mod hyperloglog;
mod keyed;
mod logic;
mod lww;
mod map;
mod min_max;
mod moments;
mod mv_register;
mod or_set;
mod pncounter;
#[cfg(feature = "serde")]
mod serde_pairs;
#[cfg(feature = "serde")]
mod sketch_codec;
mod sum;
#[cfg(test)]
mod test_util;
mod top_k;
mod two_phase_set;
mod windowed;

pub use algebra::{Bounded, Commutative, Group, Idempotent, Monoid, Semigroup, Semilattice};
#[cfg(feature = "automerge")]
#[cfg_attr(docsrs, doc(cfg(feature = "automerge")))]
pub use automerge_doc::AutomergeDoc;
pub use average::Average;
pub use bloom::Bloom;
pub use count::Count;
pub use count_min::CountMinSketch;
pub use ddsketch::{DdSketch, NonFinite};
pub use dot::{CausalContext, Dot};
#[doc(hidden)]
pub use fields::__private as __field_probes;
pub use fields::{FieldDiff, FieldWise};
pub use first_last::{First, Last};
pub use gcounter::GCounter;
pub use gset::GSet;
pub use hyperloglog::HyperLogLog;
pub use keyed::KeyedFold;
pub use logic::{All, Any, BitOr};
pub use lww::LastWriteWins;
pub use map::Map;
pub use min_max::{Max, Min};
pub use moments::Moments;
pub use mv_register::MultiValue;
pub use or_set::OrSet;
pub use pncounter::PnCounter;
pub use sum::Sum;
pub use top_k::TopK;
pub use two_phase_set::TwoPhaseSet;
pub use windowed::Windowed;

#[cfg(feature = "laws")]
#[cfg_attr(docsrs, doc(cfg(feature = "laws")))]
pub mod laws;
