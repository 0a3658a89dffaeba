//! accrete: read models and hooks as commutative monoids, so that
//! at-least-once, out-of-order, duplicated delivery still converges to the
//! right answer.
//!
//! This crate is the framework; the algebra and the primitives live in
//! [`accrete_monoids`], re-exported here as [`monoids`].
//!
//! # Start here
//!
//! A read model ([`model::ReadModel`]) projects each event to `(key, delta)`
//! pairs; the deltas fold into each key's state, a commutative monoid, so
//! events delivered twice, late or in another order fold to the same
//! answer, each event's effect applied once. A cluster hook
//! ([`hooks::ClusterHook`]) runs for every change of a key's state, at least
//! once. On the embedded default ([`runtime::Runtime`]: a log and a store
//! in one directory):
//!
//! ```
//! use std::time::Duration;
//! use accrete::hooks::{ClusterHook, Trigger};
//! use accrete::model::{Deltas, ReadModel};
//! use accrete::monoids::Sum;
//! use accrete::Deployment;
//! use accrete::runtime::Runtime;
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Paid {
//!     account: String,
//!     cents: i64,
//! }
//!
//! struct Balances;
//! impl ReadModel for Balances {
//!     const NAME: &'static str = "balances";
//!     type Event = Paid;
//!     type Key = String;
//!     type State = Sum<i64>;
//!     fn project(&self, e: &Paid, out: &mut Deltas<String, Sum<i64>>) -> Result<(), String> {
//!         if e.cents == 0 {
//!             // The event goes to the dead letters, with the reason.
//!             return Err("a payment of nothing".into());
//!         }
//!         out.push(e.account.clone(), Sum(e.cents));
//!         Ok(())
//!     }
//! }
//!
//! /// Runs for each change of a balance: the key, the delta, the new state.
//! struct Alert;
//! impl ClusterHook for Alert {
//!     type Model = Balances;
//!     const NAME: &'static str = "alert";
//!     fn run(&self, t: &Trigger<'_, Balances>) -> Result<(), String> {
//!         if t.state.0 > 1_000 {
//!             println!("{} is over 1 000 (idempotency key {})", t.key, t.idempotency_key);
//!         }
//!         Ok(())
//!     }
//! }
//!
//! # fn main() -> accrete::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! let rt = Runtime::open(dir.path())?;
//! rt.add_model(Balances)?;
//! rt.add_cluster_hook(Alert)?;
//! for cents in [700, 400, 0] {
//!     rt.submit("ana", 0, &Paid { account: "ana".into(), cents })?;
//! }
//! rt.wait_caught_up::<Balances>(Duration::from_secs(30))?;
//! assert_eq!(rt.get::<Balances>(&"ana".to_string())?, Some(Sum(1_100)));
//! assert_eq!(rt.dead_letters::<Balances>()?.len(), 1);
//! rt.shutdown();
//! # Ok(())
//! # }
//! ```
//!
//! The same model and hook run on Kafka + MongoDB with `cluster::Node`
//! (features `kafka` and `mongodb`): the calls are those of [`Deployment`],
//! which both implement, so code written against `D: Deployment` runs on
//! either ([`deployment`] shows how).
//! The project's `README.md` has the commands; its `DESIGN.md` opens with
//! the architecture.
//!
//! The algebra alone:
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
pub mod deployment;
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

pub use deployment::{Deployment, Serves};
pub use error::{Error, Result};

/// What most code using accrete imports: `use accrete::prelude::*;`.
pub mod prelude {
    pub use crate::deployment::{Deployment, Serves};
    pub use crate::hooks::{ClusterHook, Trigger};
    pub use crate::model::{Deltas, ReadModel};
}
