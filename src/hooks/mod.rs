//! Hooks: code run on a read model's changes.
//!
//! - A **cluster hook** ([`ClusterHook`]) runs on one node of the cluster for
//!   each change, at least once and usually once, through node failures: a
//!   consumer group on the model's changes topic (partitioned by key, so one
//!   key's runs are in order on one node at a time) gives each node its
//!   share, and a node records its input position only after the hook has
//!   finished.
//! - A **node hook** runs on every node, when that node's replica of the
//!   model is grafted with a change (`cluster::Node::add_node_hook`).
//!
//! Both backends run them: [`Runtime::add_cluster_hook`] on the embedded
//! default (local worker threads are the "nodes"; positions in the embedded
//! log, outcomes in the store), `cluster::Node::add_cluster_hook` on Kafka +
//! MongoDB.
//!
//! Triggers are level-based: the changes of one key that are pending
//! together combine (the deltas form a monoid), so a burst of changes runs
//! the hook once, against the latest state. A hook reads the state from the
//! store, which holds every published change (a change is published only
//! after its write is durable), so it always sees at least the state that
//! triggered it. A write that changed nothing publishes no change and runs
//! no hook.
//!
//! Each run gets an [`idempotency key`](Trigger::idempotency_key):
//! `(hook, model, key, what the run covers)`. Pass it to the external system. The outcome
//! of every run is recorded under it, and a redelivered trigger whose
//! outcome is recorded is skipped. A hook that fails is retried with
//! backoff. After [`max_attempts`](ClusterHook::max_attempts) failures the
//! trigger becomes a dead letter with the reason, and the partition moves on.
//!
//! **Threshold hooks** fire when a monotone predicate over an idempotent
//! state becomes true, such as "distinct visitors ≥ 1000" or "the set holds
//! X". Over a semilattice such a predicate flips at most once, so "fire once
//! when crossed" is well defined in any delivery order: implement
//! [`fires`](ClusterHook::fires) and set [`ONCE`](ClusterHook::ONCE).
//!
//! [`Runtime::add_cluster_hook`]: crate::Deployment::add_cluster_hook

pub(crate) mod member;
pub(crate) mod runner;

use std::time::Duration;

use crate::model::ReadModel;

/// What a hook run gets.
#[derive(Debug)]
pub struct Trigger<'a, M: ReadModel> {
    /// The key whose state changed.
    pub key: &'a M::Key,
    /// The combined delta of the changes this run covers.
    pub delta: &'a M::State,
    /// The key's state, at least as new as every change this run covers.
    pub state: &'a M::State,
    /// The version of `state`: the count of the key's writes, on both
    /// backends (a rebuild carries on above the old versions).
    /// `state` includes every change this run covers, so a key's runs see
    /// versions that never go down; two runs can see the same one, when
    /// the state was read after both's changes (with different deltas). So
    /// order states by it (an external system keeps the highest version it
    /// was sent), and tell runs apart by
    /// [`idempotency_key`](Self::idempotency_key), never by the version.
    pub version: u64,
    /// `<hook>/<model>/<key>/<what the run covers>`: the newest version of
    /// the changes it covers on the embedded default, their event ranges
    /// (`p3:100-136`) on Kafka + MongoDB, or `once` for a hook that fires
    /// once per key. Stable across redeliveries of the same trigger; no two
    /// runs share one. Give it to the external system as its idempotency
    /// key.
    pub idempotency_key: &'a str,
    /// 1 for the first attempt.
    pub attempt: u32,
}

/// Code run on one node of the cluster per change of a read model.
///
/// ```
/// use accrete::hooks::{ClusterHook, Trigger};
/// # use accrete::model::{Deltas, ReadModel};
/// # use accrete::monoids::Sum;
/// # struct Balances;
/// # impl ReadModel for Balances {
/// #     const NAME: &'static str = "balances";
/// #     type Event = (String, i64);
/// #     type Key = String;
/// #     type State = Sum<i64>;
/// #     fn project(&self, e: &(String, i64), out: &mut Deltas<String, Sum<i64>>) -> Result<(), String> {
/// #         out.push(e.0.clone(), Sum(e.1));
/// #         Ok(())
/// #     }
/// # }
///
/// /// Warns once an account goes below zero.
/// struct Overdrawn;
/// impl ClusterHook for Overdrawn {
///     type Model = Balances;
///     const NAME: &'static str = "overdrawn";
///     fn fires(&self, state: &Sum<i64>) -> bool {
///         state.0 < 0
///     }
///     fn run(&self, t: &Trigger<'_, Balances>) -> Result<(), String> {
///         // e.g. POST to a notification service with t.idempotency_key
///         println!("{} is overdrawn: {}", t.key, t.state.0);
///         Ok(())
///     }
/// }
/// ```
pub trait ClusterHook: Send + Sync + 'static {
    /// The read model whose changes trigger the hook.
    type Model: ReadModel;

    /// The hook's name: its consumer group, its outcomes and dead letters.
    /// `[A-Za-z0-9._-]`, stable across deployments.
    const NAME: &'static str;

    /// With `true`, the hook runs at most once per key (successfully): for
    /// threshold hooks over idempotent states.
    const ONCE: bool = false;

    /// Whether the hook runs for this state (default: always). For a
    /// threshold hook, the monotone predicate.
    fn fires(&self, state: &<Self::Model as ReadModel>::State) -> bool {
        let _ = state;
        true
    }

    /// Acts on the change. `Err` retries, after
    /// [`backoff`](Self::backoff), up to [`max_attempts`](Self::max_attempts).
    ///
    /// # Errors
    ///
    /// The reason, kept with the dead letter when attempts run out.
    fn run(&self, trigger: &Trigger<'_, Self::Model>) -> Result<(), String>;

    /// Attempts before the trigger goes to the dead letters (default 5).
    fn max_attempts(&self) -> u32 {
        5
    }

    /// The wait before attempt `attempt + 1` (default 50 ms, doubling, at
    /// most 2 s).
    fn backoff(&self, attempt: u32) -> Duration {
        Duration::from_millis(50u64.saturating_mul(1 << attempt.min(6))).min(Duration::from_secs(2))
    }
}

/// A hook trigger that failed every attempt, kept with the reason (the
/// hook's input moved on).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HookDeadLetter {
    /// The hook.
    pub hook: String,
    /// The idempotency key of the trigger.
    pub idempotency_key: String,
    /// The last attempt's error.
    pub reason: String,
    /// How many attempts were made.
    pub attempts: u32,
}

/// What a hook's recorded outcomes say: unlike [`HookStats`], this
/// survives restarts (`accrete inspect` shows it).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct HookHistory {
    /// Runs that succeeded.
    pub runs: u64,
    /// Attempts that failed and were retried.
    pub retries: u64,
    /// Triggers sent to the dead letters.
    pub dead_letters: u64,
    /// Milliseconds from a change's publication to the start of its run:
    /// median, 99th percentile (0 without runs).
    pub latency_ms: (f64, f64),
}

/// What a cluster hook did on one node since it started.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct HookStats {
    /// Runs that succeeded.
    pub runs: u64,
    /// Attempts that failed and were retried.
    pub retries: u64,
    /// Attempts that failed (retried or not).
    pub failures: u64,
    /// Triggers sent to the dead letters.
    pub dead_letters: u64,
    /// Redelivered triggers skipped because their outcome was recorded.
    pub duplicates_suppressed: u64,
    /// Changes that overlapped what earlier runs covered only in part (a
    /// change re-published after crashes over other event boundaries): they
    /// ran whole, so part of their delta reached a run before.
    pub overlapping: u64,
    /// Changes coalesced into another pending change of the same key.
    pub coalesced: u64,
    /// Milliseconds from a change's publication to the start of its run:
    /// median, 99th percentile (0 without runs).
    pub latency_ms: (f64, f64),
}

/// The idempotency key of a run: `<hook>/<model>/<key>/<what it covers>`,
/// the key as [`key_text`] writes it, and what the run covers (the newest
/// version on the embedded default, the event ranges `p3:100-136` on Kafka +
/// MongoDB), or `once` for a hook that runs once per key.
pub(crate) fn idempotency_key(hook: &str, model: &str, key: &str, covers: Option<&str>) -> String {
    format!("{hook}/{model}/{key}/{}", covers.unwrap_or("once"))
}

/// A key as text: its JSON form where it has one (`"alice"`, `["shop",7]`),
/// else `0x` and its encoded bytes in hex.
pub(crate) fn key_text<K: serde::Serialize>(key: &K, bytes: &[u8]) -> String {
    serde_json::to_string(key).unwrap_or_else(|_| {
        let mut hex = String::with_capacity(2 + bytes.len() * 2);
        hex.push_str("0x");
        for b in bytes {
            hex.push_str(&format!("{b:02x}"));
        }
        hex
    })
}

#[cfg(test)]
mod tests {
    use super::{idempotency_key, key_text};

    #[test]
    fn idempotency_keys_are_readable_stable_and_distinct() {
        let k = key_text(&("shop", 7), &[]);
        assert_eq!(k, r#"["shop",7]"#);
        let a = idempotency_key("h", "m", &k, Some("3"));
        assert_eq!(a, r#"h/m/["shop",7]/3"#);
        assert_ne!(a, idempotency_key("h", "m", &k, Some("4")));
        assert_ne!(
            a,
            idempotency_key("h", "m", &key_text(&"shop", &[]), Some("3"))
        );
        assert_eq!(idempotency_key("h", "m", "\"a\"", None), "h/m/\"a\"/once");
        // No JSON form (a map with tuple keys): the bytes in hex.
        let map: std::collections::BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
        assert_eq!(key_text(&map, &[1, 0xab]), "0x01ab");
    }
}
