//! Read models: how events become per-key monoid state.

use std::fmt::Debug;
use std::hash::Hash;

use accrete_monoids::{Commutative, Monoid};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A read model: a name, the events it reads, and a projection from each
/// event to zero or more `(key, delta)` pairs. The runtime folds the deltas
/// into the stored state of each key with the monoid's `combine`.
///
/// The state must be a commutative monoid: that is what makes delivery order
/// irrelevant. If it is not idempotent (sums, counts, sketches with counts),
/// the runtime applies each event's effect exactly once by keeping the
/// absorbed event ids with the state; a model whose state is idempotent may
/// turn that off with [`ReadModel::EXACTLY_ONCE`].
///
/// # Examples
///
/// ```
/// use accrete::model::{Deltas, ReadModel};
/// use accrete::monoids::Sum;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Transfer { from: String, to: String, cents: i64 }
///
/// /// Account balances: one event touches two keys.
/// struct Balances;
///
/// impl ReadModel for Balances {
///     const NAME: &'static str = "balances";
///     type Event = Transfer;
///     type Key = String;
///     type State = Sum<i64>;
///
///     fn project(&self, t: &Transfer, out: &mut Deltas<String, Sum<i64>>) -> Result<(), String> {
///         if t.cents <= 0 {
///             return Err(format!("transfer of {} cents", t.cents)); // goes to the dead letters
///         }
///         out.push(t.from.clone(), Sum(-t.cents));
///         out.push(t.to.clone(), Sum(t.cents));
///         Ok(())
///     }
/// }
/// ```
pub trait ReadModel: Send + Sync + 'static {
    /// The model's name: the name of its state, its consumer group and its
    /// changes topic. `[A-Za-z0-9._-]`, stable across deployments.
    const NAME: &'static str;

    /// Whether the runtime keeps absorbed event ids to apply each event
    /// once. Leave it `true` unless the state is idempotent (then
    /// duplicates are harmless and the bookkeeping is wasted).
    const EXACTLY_ONCE: bool = true;

    /// The events: a plain serde type, decoded from the log.
    type Event: DeserializeOwned + Send + 'static;

    /// The key of a piece of state.
    type Key: Serialize + DeserializeOwned + Hash + Eq + Ord + Clone + Debug + Send + Sync + 'static;

    /// The state of one key: a commutative monoid.
    type State: Monoid
        + Commutative
        + Clone
        + PartialEq
        + Debug
        + Serialize
        + DeserializeOwned
        + Send
        + Sync
        + 'static;

    /// What one event contributes: push `(key, delta)` pairs to `out`. An
    /// `Err` sends the event to the dead letters with the message; the
    /// partition moves on.
    ///
    /// # Errors
    ///
    /// A reason, for the dead-letter record.
    fn project(
        &self,
        event: &Self::Event,
        out: &mut Deltas<Self::Key, Self::State>,
    ) -> Result<(), String>;
}

/// The `(key, delta)` pairs one event produces. Reused between events, so
/// projecting allocates nothing per event once warm.
#[derive(Debug)]
pub struct Deltas<K, S> {
    pub(crate) items: Vec<(K, S)>,
}

impl<K, S> Deltas<K, S> {
    /// An empty set of deltas: to call a projection yourself, in a test.
    ///
    /// ```
    /// # use accrete::model::Deltas;
    /// # use accrete::monoids::Count;
    /// let mut out = Deltas::new();
    /// out.push("/docs", Count::one());
    /// assert_eq!(out.iter().count(), 1);
    /// ```
    pub fn new() -> Self {
        Deltas { items: Vec::new() }
    }

    /// Adds a delta for a key.
    pub fn push(&mut self, key: K, delta: S) {
        self.items.push((key, delta));
    }

    /// The deltas pushed so far.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &(K, S)> + '_ {
        self.items.iter()
    }

    /// Takes the deltas out, leaving it empty.
    pub fn drain(&mut self) -> impl Iterator<Item = (K, S)> + '_ {
        self.items.drain(..)
    }

    /// Forgets the deltas.
    pub fn clear(&mut self) {
        self.items.clear();
    }
}

impl<K, S> Default for Deltas<K, S> {
    fn default() -> Self {
        Self::new()
    }
}
