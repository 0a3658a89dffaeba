//! Commutative monoids for read models that converge under at-least-once,
//! out-of-order, duplicated delivery.
//!
//! (Crate docs: see the end of the file for the full overview.)

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod algebra;
pub mod hash;
mod std_impls;

mod count;
mod logic;
mod min_max;
mod sum;

// CRDTs: state-based, delta-friendly join-semilattices (and `Map`).
#[cfg(all(test, feature = "laws"))]
mod crdt_laws;
mod dot;
mod gcounter;
mod gset;
mod lww;
mod map;
mod mv_register;
mod or_set;
mod pncounter;
mod two_phase_set;

pub use algebra::{Bounded, Commutative, Group, Idempotent, Monoid, Semigroup, Semilattice};
pub use count::Count;
pub use logic::{All, Any, BitOr};
pub use min_max::{Max, Min};
pub use sum::Sum;

pub use dot::{CausalContext, Dot};
pub use gcounter::GCounter;
pub use gset::GSet;
pub use lww::LastWriteWins;
pub use map::Map;
pub use mv_register::MultiValue;
pub use or_set::OrSet;
pub use pncounter::PnCounter;
pub use two_phase_set::TwoPhaseSet;
