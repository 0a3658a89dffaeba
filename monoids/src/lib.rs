//! Commutative monoids for read models that converge under at-least-once,
//! out-of-order, duplicated delivery.
//!
//! (Crate docs: see the end of the file for the full overview.)

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod algebra;
pub mod hash;
mod std_impls;

mod bloom;
mod count;
mod count_min;
mod hyperloglog;
mod logic;
mod min_max;
#[cfg(feature = "serde")]
mod sketch_codec;
mod sum;
#[cfg(all(test, feature = "laws"))]
mod test_support;

pub use algebra::{Bounded, Commutative, Group, Idempotent, Monoid, Semigroup, Semilattice};
pub use bloom::Bloom;
pub use count::Count;
pub use count_min::CountMinSketch;
pub use hyperloglog::HyperLogLog;
pub use logic::{All, Any, BitOr};
pub use min_max::{Max, Min};
pub use sum::Sum;
