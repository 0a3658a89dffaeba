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

pub use embedded::EmbeddedStore;
pub(crate) use embedded::ModelWrite;

use serde::{Deserialize, Serialize};

use crate::event::EventId;

/// An event that could not be applied, kept with the reason instead of
/// stopping its partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The event's id.
    pub event: EventId,
    /// Why it could not be applied: a decoding error or the projection's
    /// message.
    pub reason: String,
    /// The event as it was in the log, to inspect or resubmit.
    pub payload: Vec<u8>,
}
