//! The store: where grafted state lives.
//!
//! [`EmbeddedStore`] keeps it in one local file; the MongoDB backend
//! (feature `mongodb`) keeps it in a collection.

mod embedded;
#[cfg(feature = "mongodb")]
#[cfg_attr(
    not(feature = "kafka"),
    allow(
        dead_code,
        reason = "the write protocol serves the cluster (features kafka and mongodb)"
    )
)]
pub mod mongo;
#[cfg(feature = "mongodb")]
pub mod pushdown;

pub(crate) use embedded::ModelWrite;
pub use embedded::{DeadLetter, EmbeddedStore};
