//! Commutative monoids for read models that converge under at-least-once,
//! out-of-order, duplicated delivery.
//!
//! (Crate docs: see the end of the file for the full overview.)

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod algebra;
pub mod hash;
mod std_impls;

mod average;
mod count;
mod ddsketch;
mod logic;
mod min_max;
mod moments;
mod sum;
mod top_k;

#[cfg(test)]
mod test_util;

pub use algebra::{Bounded, Commutative, Group, Idempotent, Monoid, Semigroup, Semilattice};
pub use average::Average;
pub use count::Count;
pub use ddsketch::{DdSketch, NonFinite};
pub use logic::{All, Any, BitOr};
pub use min_max::{Max, Min};
pub use moments::Moments;
pub use sum::Sum;
pub use top_k::TopK;
