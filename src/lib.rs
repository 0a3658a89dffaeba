//! accrete: read models and hooks as commutative monoids.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub use accrete_monoids as monoids;
