//! accrete: read models and hooks as commutative monoids, so that
//! at-least-once, out-of-order, duplicated delivery still converges to the
//! right answer.
//!
//! This crate is the framework; the algebra and the primitives live in
//! [`accrete_monoids`], re-exported here as [`monoids`]. The runtime (events,
//! read models, the embedded log and store, Kafka and MongoDB backends, hooks)
//! is being built on top of it; see the project's `DESIGN.md`.
//!
//! ```
//! use accrete::monoids::{Count, KeyedFold, Monoid};
//! use std::collections::HashMap;
//!
//! let mut views: HashMap<&str, Count> = HashMap::new();
//! for page in ["/", "/docs", "/"] {
//!     views.combine_at(page, Count::one());
//! }
//! assert_eq!(views["/"], Count(2));
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

// Lets `#[derive(Monoid)]` name `::accrete::monoids` inside this crate too.
extern crate self as accrete;

pub use accrete_monoids as monoids;

#[cfg(all(feature = "kafka", feature = "mongodb"))]
pub mod cluster;
pub(crate) mod codec;
pub(crate) mod engine;
pub mod error;
pub mod event;
pub(crate) mod failpoint;
pub(crate) mod fold;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod hooks;
pub(crate) mod ids;
pub mod log;
pub mod model;
pub mod names;
pub mod observability;
pub mod runtime;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::{Error, Result};
