//! The one public face of accrete: [`Deployment`], the calls a service makes
//! on whichever backend runs its read models and hooks.
//!
//! Both backends implement it: [`Runtime`](crate::runtime::Runtime) (the
//! embedded log and store, the default) and `cluster::Node` (Kafka +
//! MongoDB, features `kafka` and `mongodb`). The same calls have the same
//! names, arguments, return types and errors on both; code written against
//! `D: Deployment` runs on either (the `accrete demo` binary is written so).
//! What only one backend has stays on its type: `Runtime::rebuild`,
//! `Runtime::subscribe`; `Node::flush`, `Node::replica_snapshot`.
//!
//! ```
//! use accrete::Deployment;
//! use accrete::model::{Deltas, ReadModel};
//! use accrete::monoids::Sum;
//! use std::time::Duration;
//!
//! struct Balances;
//! impl ReadModel for Balances {
//!     const NAME: &'static str = "balances";
//!     type Event = (String, i64);
//!     type Key = String;
//!     type State = Sum<i64>;
//!     fn project(&self, e: &(String, i64), out: &mut Deltas<String, Sum<i64>>) -> Result<(), String> {
//!         out.push(e.0.clone(), Sum(e.1));
//!         Ok(())
//!     }
//! }
//!
//! /// Works on the embedded default and on a Kafka + MongoDB node alike.
//! fn pay<D: Deployment + accrete::Serves<Sum<i64>>>(d: &D) -> accrete::Result<Option<Sum<i64>>> {
//!     d.add_model(Balances)?;
//!     d.submit("ana", 0, &("ana".to_string(), 700))?;
//!     d.wait_caught_up::<Balances>(Duration::from_secs(30))?;
//!     d.get::<Balances>(&"ana".to_string())
//! }
//!
//! # fn main() -> accrete::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! let rt = accrete::runtime::Runtime::open(dir.path())?;
//! assert_eq!(pay(&rt)?, Some(Sum(700)));
//! # rt.shutdown();
//! # Ok(())
//! # }
//! ```

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

use crate::event::EventId;
use crate::hooks::{ClusterHook, HookDeadLetter, HookStats};
use crate::model::ReadModel;
use crate::store::DeadLetter;
use crate::{Error, Result};

pub use crate::engine::ModelStats;

/// Whether a backend can serve a read model whose state is `S`. The
/// embedded default serves any state; Kafka + MongoDB needs the state's
/// MongoDB pushdown (`Pushdown`, derivable; feature `mongodb`).
#[diagnostic::on_unimplemented(
    message = "this backend cannot serve a read model whose state is `{S}`",
    note = "Kafka + MongoDB writes a state through its MongoDB pushdown: implement or derive \
            `Pushdown` (feature `mongodb`) for `{S}`"
)]
pub trait Serves<S> {
    /// Starts serving `model` ([`Deployment::add_model`] calls it).
    #[doc(hidden)]
    fn serve<M: ReadModel<State = S>>(&self, model: M) -> Result<()>;
}

/// An event encoded already, for [`Deployment::append_encoded`].
#[derive(Debug, Clone, Copy)]
pub struct EncodedEvent<'a> {
    /// Routes the event to a partition (one key's events stay in order).
    pub key: &'a [u8],
    /// The event's time, in milliseconds since the epoch.
    pub time_ms: i64,
    /// The event, as [`crate::event::encode`] writes it.
    pub payload: &'a [u8],
    /// The id it got in the log it first entered (a forwarded copy, see
    /// [`Deployment::forward`]); `None` for a new event.
    pub origin: Option<EventId>,
}

/// The calls a service makes on a deployment of read models and hooks: the
/// same on every backend. Bring it into scope (`use accrete::Deployment;`)
/// to call them.
///
/// Errors are the same on both backends: an unknown model is
/// [`Error::Model`], an unknown hook [`Error::Usage`], a wait that runs out
/// [`Error::Timeout`]; the backend's own errors ([`Error::Io`],
/// `Error::Kafka`, `Error::Mongo`) keep the client's error as their source.
pub trait Deployment {
    /// The source number of the ids this deployment's events topic gives
    /// (dead letters carry them; [`forward`](Self::forward) of such an id is
    /// a copy of one of this topic's own events). Drawn at random when the
    /// topic was first used, and kept.
    fn source_id(&self) -> u32;

    /// Appends an event encoded already ([`crate::event::encode`], by this
    /// process or another): bytes from a bridge, a queue, a file. Bytes
    /// that do not decode as a model's event go to that model's dead
    /// letters, with the reason; the other events are not held up. Returns
    /// once the event is durable, with its id.
    ///
    /// # Errors
    ///
    /// The log's errors, nothing appended then: [`Error::Io`] on the
    /// embedded default; `Error::Kafka` when the producer or the broker
    /// refuses, [`Error::Timeout`] when no acknowledgement comes, on Kafka
    /// + MongoDB. [`Error::Usage`] on a runtime opened read-only.
    fn submit_encoded(
        &self,
        key: impl AsRef<[u8]>,
        event_time_ms: i64,
        payload: &[u8],
    ) -> Result<EventId>;

    /// Appends events encoded already, each with its origin if it is a
    /// forwarded copy; returns how many, once all are durable.
    ///
    /// # Errors
    ///
    /// The log's errors; some of the events may have been appended.
    fn append_encoded(&self, events: &[EncodedEvent<'_>]) -> Result<usize>;

    /// Submits one event: encodes it, routes it by `key` to a partition,
    /// appends it durably. Returns its id.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`]; the log's errors. Nothing is appended then.
    fn submit<E: Serialize>(
        &self,
        key: impl AsRef<[u8]>,
        event_time_ms: i64,
        event: &E,
    ) -> Result<EventId> {
        let payload = crate::event::encode(event)?;
        self.submit_encoded(key, event_time_ms, &payload)
    }

    /// Submits many events at once (each routed by its key); returns how
    /// many.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] (nothing appended); the log's errors (some of the
    /// events may have been appended).
    fn submit_batch<'a, E, K>(
        &self,
        events: impl IntoIterator<Item = (K, i64, &'a E)>,
    ) -> Result<usize>
    where
        E: Serialize + 'a,
        K: AsRef<[u8]>,
    {
        append(self, events.into_iter().map(|(k, t, e)| (k, t, e, None)))
    }

    /// Appends events that first entered another log, keeping the ids they
    /// got there: a replay from an export, a stream forwarded from upstream
    /// with at-least-once delivery. However many copies of one event are
    /// forwarded, in whatever order, each read model applies it once. Ids
    /// this deployment gave out, forwarded back, are copies of its own
    /// events: skipped.
    ///
    /// How the ids applied are kept: on the embedded default per model and
    /// upstream `(source, partition)`, exactly for any order within 4M
    /// offsets (1 024 chunks of 4 096); beyond that the lowest are
    /// forgotten, and a copy arriving below them goes to the dead letters
    /// with the reason (never applied twice, never dropped silently). On
    /// Kafka + MongoDB the first copy a node reads is claimed in MongoDB
    /// (`accrete.origins`) as the one that applies; the id travels in the
    /// record's `accrete-origin` header (16 bytes: source, partition,
    /// offset, big-endian), so any producer can forward.
    ///
    /// # Errors
    ///
    /// As [`submit_batch`](Self::submit_batch).
    fn forward<'a, E, K>(
        &self,
        events: impl IntoIterator<Item = (K, i64, &'a E, EventId)>,
    ) -> Result<usize>
    where
        E: Serialize + 'a,
        K: AsRef<[u8]>,
    {
        append(
            self,
            events.into_iter().map(|(k, t, e, id)| (k, t, e, Some(id))),
        )
    }

    /// Adds a read model and starts folding: from where it left off, or
    /// from the beginning of the events for a new model (a backfill, while
    /// live events keep arriving).
    ///
    /// # Errors
    ///
    /// [`Error::Model`] if it runs here already; [`Error::InvalidName`];
    /// the backend's errors.
    fn add_model<M: ReadModel>(&self, model: M) -> Result<()>
    where
        Self: Serves<M::State>,
    {
        self.serve(model)
    }

    /// Stops a read model in this process after its current batch (it
    /// writes, publishes and commits what it holds). Reads, hooks and node
    /// hooks go on; adding the model again starts it from where it
    /// stopped. On a cluster, the other nodes serving it take its
    /// partitions.
    ///
    /// # Errors
    ///
    /// [`Error::Model`] if the model is not running here.
    fn stop_model(&self, name: &str) -> Result<()>;

    /// Rebuilds a read model from the beginning of the events, while it
    /// runs and live events keep arriving: its state, changes and
    /// positions start anew, the model folds every event again and catches
    /// up (see [`status`](Self::status)). Reads see the state refold
    /// meanwhile. Versions go on above every version given before, so
    /// hooks run again for every key with fresh idempotency keys where
    /// those are made of versions (a `ONCE` hook does not run again).
    /// Dead letters stay one per event.
    ///
    /// On the embedded runtime the model stops, its store is cleared and
    /// it starts again. On a cluster the rebuild starts a new *generation*
    /// of the model's data under names of its own (collection, changes
    /// topic, groups, positions: a node cut off from its group cannot
    /// write into it); every node serving the model moves its
    /// materializer, replica and cluster hooks to it within a second or
    /// so, this one before `rebuild` returns, and the previous
    /// generation's collection and positions are dropped (its changes
    /// topic is left to the broker's retention). Run it once every node is
    /// on a build that knows generations: a rebuilt model is recorded in a
    /// format older builds refuse to serve.
    ///
    /// # Errors
    ///
    /// [`Error::Model`] if the model is not running here, or on a cluster
    /// when another rebuild started a generation meanwhile (this one
    /// changed nothing) or this node did not move to the new generation
    /// within a minute (the rebuild is made; the node goes on trying: do
    /// not rebuild again) or was stopped or shut down while it moved (the
    /// rebuild is made; the wait holds no lock); the backend's errors.
    fn rebuild<M: ReadModel>(&self) -> Result<()>;

    /// Runs a cluster hook on the model's changes: at least once per change
    /// (usually once), through crashes and restarts (see [`crate::hooks`]).
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] if a hook of that name runs here already;
    /// [`Error::InvalidName`]; the backend's errors.
    fn add_cluster_hook<H: ClusterHook>(&self, hook: H) -> Result<()>;

    /// Runs `f(key, delta, state)` in this process for each change of the
    /// model from now on: not durable, for caches and notifications. `state`
    /// is at least as new as the change.
    ///
    /// # Errors
    ///
    /// The backend's errors ([`Error::Model`] on a node that does not serve
    /// the model).
    fn add_node_hook<M: ReadModel>(
        &self,
        f: impl Fn(&M::Key, &M::State, &M::State) + Send + Sync + 'static,
    ) -> Result<()>;

    /// The state of a key; `None` if no event touched it or its state is
    /// the identity (the two are the same to a monoid).
    /// `get(..).unwrap_or_default()` reads "zero if none". The embedded
    /// runtime reads its store; a node reads its replica (at least as new
    /// as every change it has grafted), and MongoDB after `shutdown`, when
    /// its replica no longer follows.
    ///
    /// # Errors
    ///
    /// The store's errors; a state that does not decode; on a node,
    /// [`Error::Model`] if the model is not served there.
    fn get<M: ReadModel>(&self, key: &M::Key) -> Result<Option<M::State>>;

    /// The state of a key with its version, as stored: the count of the
    /// key's writes (a rebuild carries on above the old ones), the version
    /// [`Trigger::version`](crate::hooks::Trigger::version) gives hooks;
    /// `None` as for [`get`](Self::get). On a node this reads MongoDB, not
    /// the replica.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    fn get_versioned<M: ReadModel>(&self, key: &M::Key) -> Result<Option<(u64, M::State)>>;

    /// Calls `f` with every key and state of the model as stored, in key
    /// order (identity states skipped), until it returns `false`.
    ///
    /// # Errors
    ///
    /// The store's errors; a state that does not decode.
    fn scan<M: ReadModel>(&self, f: impl FnMut(M::Key, M::State) -> bool) -> Result<()>;

    /// The model's dead letters: events it could not apply, with the
    /// reason and the payload.
    ///
    /// # Errors
    ///
    /// The store's errors.
    fn dead_letters<M: ReadModel>(&self) -> Result<Vec<DeadLetter>>;

    /// A cluster hook's dead letters: triggers that failed
    /// [`max_attempts`](crate::hooks::ClusterHook::max_attempts) times.
    ///
    /// # Errors
    ///
    /// The store's errors.
    fn hook_dead_letters(&self, hook: &str) -> Result<Vec<HookDeadLetter>>;

    /// What the model's pipeline did in this process since the model was
    /// first added: the counts carry on through a
    /// [`stop_model`](Self::stop_model) and an add again, and through a
    /// [`rebuild`](Self::rebuild) (they only grow, as metrics want).
    ///
    /// # Errors
    ///
    /// [`Error::Model`] if the model does not run here.
    fn stats(&self, model: &str) -> Result<ModelStats>;

    /// Where a model stands: per partition, how far it has folded the
    /// events; whether it is failing; on a node, what its replica has yet
    /// to graft.
    ///
    /// # Errors
    ///
    /// [`Error::Model`] if the model is not known here; the backend's
    /// errors.
    fn status(&self, model: &str) -> Result<Status>;

    /// Waits until the model has folded every event submitted so far (and,
    /// on a node, its replica has grafted every change).
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`], with the lag and the model's last error if it is
    /// failing; as [`status`](Self::status).
    fn wait_caught_up<M: ReadModel>(&self, timeout: Duration) -> Result<Status>;

    /// What a cluster hook did in this process since it was added: runs,
    /// retries, failures, dead letters, duplicates suppressed, coalesced
    /// changes, change-to-run latency.
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] if no hook of that name runs here.
    fn hook_stats(&self, hook: &str) -> Result<HookStats>;

    /// What a cluster hook running here has still to do: changes it has
    /// not handled (over every process running it).
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] if no hook of that name runs here; the backend's
    /// errors.
    fn hook_lag(&self, hook: &str) -> Result<u64>;

    /// As [`hook_lag`](Self::hook_lag), for any hook on any model, whether
    /// it runs here or not: for a tool inspecting a deployment.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`]; the backend's errors.
    fn hook_lag_of(&self, hook: &str, model: &str) -> Result<u64>;

    /// Stops every model and hook in this process after their current
    /// batch, and waits for them. Reads and submits still work afterwards,
    /// and models and hooks added afterwards start again, from where they
    /// left off (an operator's restart within the process).
    fn shutdown(&self);
}

/// Encodes events, then appends them in one call.
fn append<'a, D, E, K>(
    d: &D,
    events: impl IntoIterator<Item = (K, i64, &'a E, Option<EventId>)>,
) -> Result<usize>
where
    D: Deployment + ?Sized,
    E: Serialize + 'a,
    K: AsRef<[u8]>,
{
    let encoded = events
        .into_iter()
        .map(|(k, t, e, origin)| Ok((k, t, crate::event::encode(e)?, origin)))
        .collect::<Result<Vec<_>>>()?;
    let events: Vec<EncodedEvent<'_>> = encoded
        .iter()
        .map(|(key, time_ms, payload, origin)| EncodedEvent {
            key: key.as_ref(),
            time_ms: *time_ms,
            payload,
            origin: *origin,
        })
        .collect();
    d.append_encoded(&events)
}

/// One partition's progress for a read model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PartitionStatus {
    /// The partition.
    pub partition: u32,
    /// The next offset the model will read.
    pub committed: u64,
    /// The offset the next event will get.
    pub end: u64,
    /// Events not yet folded: `end - committed`.
    pub lag: u64,
}

/// Where a read model stands, from this process's point of view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// The read model.
    pub model: String,
    /// Per partition of the events topic.
    pub partitions: Vec<PartitionStatus>,
    /// Set while the model cannot make progress in this process: its
    /// batches fail (and are retried with backoff). `None` when the last
    /// batch succeeded.
    pub error: Option<Failing>,
    /// Changes this node's replica has not yet grafted (Kafka + MongoDB;
    /// always 0 on the embedded default, which has no replica).
    pub replica_lag: u64,
}

impl Status {
    /// Events not yet folded, over all partitions.
    pub fn lag(&self) -> u64 {
        self.partitions.iter().map(|p| p.lag).sum()
    }

    /// Whether the model has folded every event in the log (lag 0 on every
    /// partition) and the replica, if any, has every change.
    pub fn caught_up(&self) -> bool {
        self.lag() == 0 && self.replica_lag == 0
    }
}

/// Why a read model is not making progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failing {
    /// The last batch's error.
    pub last_error: String,
    /// Batches failed in a row.
    pub failures: u64,
    /// How long it has been failing, in milliseconds.
    pub for_ms: u64,
}

/// The health of a running model's pipeline, shared with it: per member
/// (an embedded worker, keyed by its first partition; a node's one
/// materializer, 0), so that one member's success does not hide another's
/// failure (an idle worker cleared a stuck one's error: session 15).
#[derive(Default)]
pub(crate) struct Health {
    failing: Mutex<std::collections::BTreeMap<u32, (String, u64, Instant)>>,
}

impl Health {
    /// A batch of `member` failed (it is retried).
    pub(crate) fn failed(&self, member: u32, model: &'static str, error: &Error) {
        let mut f = self.failing.lock();
        let first = f.is_empty();
        let (message, failures, _) = f
            .entry(member)
            .or_insert_with(|| (String::new(), 0, Instant::now()));
        *message = error.to_string();
        *failures += 1;
        if first && !tracing::dispatcher::has_been_set() {
            // Not silent without a tracing subscriber: one line when a model
            // starts failing (status() and the metrics say the rest).
            eprintln!(
                "accrete: read model `{model}` cannot make progress, retrying: {error} \
                 (install a tracing subscriber for details; status() shows the state)"
            );
        }
    }

    /// A batch of `member` succeeded.
    pub(crate) fn ok(&self, member: u32) {
        self.failing.lock().remove(&member);
    }

    /// Nothing fails any more (the pipeline starts afresh, or stopped).
    pub(crate) fn clear(&self) {
        self.failing.lock().clear();
    }

    /// The member failing longest: its last error, its failures in a row,
    /// and for how long.
    pub(crate) fn snapshot(&self) -> Option<Failing> {
        let f = self.failing.lock();
        f.values()
            .min_by_key(|(_, _, since)| *since)
            .map(|(m, n, since)| Failing {
                last_error: m.clone(),
                failures: *n,
                for_ms: since.elapsed().as_millis() as u64,
            })
    }
}

/// Polls `status` until the model is caught up, twice at least `settle`
/// apart (`Duration::ZERO`: once), or `timeout` passes: the one
/// [`Deployment::wait_caught_up`].
pub(crate) fn wait_caught_up(
    model: &str,
    timeout: Duration,
    settle: Duration,
    poll: Duration,
    status: impl Fn() -> Result<Status>,
) -> Result<Status> {
    let deadline = Instant::now() + timeout;
    let mut seen_at: Option<Instant> = None;
    loop {
        let s = status()?;
        if s.caught_up() {
            let first = *seen_at.get_or_insert_with(Instant::now);
            if first.elapsed() >= settle {
                return Ok(s);
            }
        } else {
            seen_at = None;
        }
        if Instant::now() >= deadline {
            let failing = match &s.error {
                Some(f) => format!(
                    "; it cannot make progress: {} batches failed in a row over {} ms, the last with: {}",
                    f.failures, f.for_ms, f.last_error
                ),
                None => String::new(),
            };
            let replica = match s.replica_lag {
                0 => String::new(),
                n => format!(", {n} changes not grafted by this node's replica"),
            };
            return Err(Error::Timeout(format!(
                "read model `{model}` did not catch up within {timeout:?}: {} events not folded{replica}{failing} \
                 (is a process serving it running?)",
                s.lag()
            )));
        }
        std::thread::sleep(poll);
    }
}
