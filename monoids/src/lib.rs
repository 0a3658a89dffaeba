//! Commutative monoids for read models that converge under at-least-once,
//! out-of-order, duplicated delivery.
//!
//! (Crate docs: see the end of the file for the full overview.)

#![deny(missing_docs)]
#![forbid(unsafe_code)]

// Lets `#[derive(Monoid)]` name this crate `::accrete_monoids` everywhere,
// inside it included.
extern crate self as accrete_monoids;

/// `#[derive(Monoid)]`: field-wise [`Semigroup`] and [`Monoid`] for structs
/// whose fields are monoids, plus [`Commutative`], [`Idempotent`] and
/// [`Group`] whenever every field has them.
///
/// `#[monoid(commutative)]` (or `idempotent`, `group`) *requires* the law:
/// a field that lacks it is a compile error pointing at that field.
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
pub mod hash;
mod std_impls;

#[cfg(feature = "automerge")]
mod automerge_doc;
mod count;
mod first_last;
mod logic;
mod min_max;
#[cfg(feature = "serde")]
mod serde_pairs;
mod sum;
mod windowed;

pub use algebra::{Bounded, Commutative, Group, Idempotent, Monoid, Semigroup, Semilattice};
#[cfg(feature = "automerge")]
#[cfg_attr(docsrs, doc(cfg(feature = "automerge")))]
pub use automerge_doc::AutomergeDoc;
pub use count::Count;
pub use first_last::{First, Last};
pub use logic::{All, Any, BitOr};
pub use min_max::{Max, Min};
pub use sum::Sum;
pub use windowed::Windowed;

#[cfg(feature = "laws")]
#[cfg_attr(docsrs, doc(cfg(feature = "laws")))]
pub mod laws;
