//! The store: where grafted state lives.
//!
//! [`EmbeddedStore`] keeps it in one local file; the MongoDB backend
//! (feature `mongodb`) keeps it in a collection.

mod embedded;
#[cfg(feature = "mongodb")]
pub mod mongo;
#[cfg(feature = "mongodb")]
pub mod pushdown;

pub(crate) use embedded::ModelWrite;
pub use embedded::{DeadLetter, EmbeddedStore};
