//! What the pipeline counts: per read model and partition through the
//! `metrics` facade (install any recorder, see [`crate::observability`];
//! both backends), and per model in [`Counters`] (`Node::stats`,
//! `Runtime::stats`).
//!
//! | metric | kind | labels |
//! | --- | --- | --- |
//! | `accrete_events_in_total` | counter | model, partition |
//! | `accrete_deltas_out_total` | counter | model |
//! | `accrete_duplicates_absorbed_total` | counter | model |
//! | `accrete_dead_letters_total` | counter | model |
//! | `accrete_store_writes_total` | counter | model |
//! | `accrete_changes_published_total` | counter | model |
//! | `accrete_batches_total` | counter | model |
//! | `accrete_batch_errors_total` | counter | model |
//! | `accrete_batch_seconds` | histogram | model |
//!
//! `accrete_batch_seconds` is a batch's time from its fold to its commit;
//! on the embedded log it includes reading the records, which are folded
//! partition by partition as they are read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::fold::BatchOutcome;

/// What one read model's pipeline has done in this process since the
/// model was added.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ModelStats {
    /// Events read from the events topic (each delivery counts).
    pub events: u64,
    /// Batches written.
    pub batches: u64,
    /// Store writes: documents written to MongoDB, or records put or deleted
    /// in the embedded store.
    pub writes: u64,
    /// Changes published.
    pub changes: u64,
    /// Keys found partly applied by an earlier write (after a crash or a
    /// rebalance) and resolved by reading them (Kafka + MongoDB; 0 on the
    /// embedded store, whose batches are one transaction).
    pub conflicts: u64,
    /// Events sent to the dead letters.
    pub dead_letters: u64,
    /// Changes grafted into this node's replica (Kafka + MongoDB).
    pub grafted: u64,
    /// Replica entries re-read from MongoDB because a change overlapped what
    /// the replica had (Kafka + MongoDB).
    pub refetched: u64,
}

/// The counters behind [`ModelStats`].
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) events: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) writes: AtomicU64,
    pub(crate) changes: AtomicU64,
    pub(crate) conflicts: AtomicU64,
    pub(crate) dead_letters: AtomicU64,
    pub(crate) grafted: AtomicU64,
    pub(crate) refetched: AtomicU64,
    /// Whether the batches fail (for the model's status).
    pub(crate) health: crate::deployment::Health,
}

impl Counters {
    /// Counts a committed batch.
    pub(crate) fn batch(&self, o: &BatchOutcome) {
        self.events.fetch_add(o.events, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.writes.fetch_add(o.writes, Ordering::Relaxed);
        self.changes.fetch_add(o.changes, Ordering::Relaxed);
        self.conflicts.fetch_add(o.conflicts, Ordering::Relaxed);
        self.dead_letters
            .fetch_add(o.dead_letters, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> ModelStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ModelStats {
            events: g(&self.events),
            batches: g(&self.batches),
            writes: g(&self.writes),
            changes: g(&self.changes),
            conflicts: g(&self.conflicts),
            dead_letters: g(&self.dead_letters),
            grafted: g(&self.grafted),
            refetched: g(&self.refetched),
        }
    }
}

pub(crate) fn events_in(model: &'static str, partition: u32, events: u64) {
    metrics::counter!("accrete_events_in_total", "model" => model, "partition" => partition.to_string())
        .increment(events);
}

pub(crate) fn batch(model: &'static str, o: &BatchOutcome, took: Duration) {
    metrics::counter!("accrete_deltas_out_total", "model" => model).increment(o.deltas);
    metrics::counter!("accrete_duplicates_absorbed_total", "model" => model)
        .increment(o.duplicates);
    metrics::counter!("accrete_dead_letters_total", "model" => model).increment(o.dead_letters);
    metrics::counter!("accrete_store_writes_total", "model" => model).increment(o.writes);
    metrics::counter!("accrete_changes_published_total", "model" => model).increment(o.changes);
    metrics::counter!("accrete_batches_total", "model" => model).increment(1);
    metrics::histogram!("accrete_batch_seconds", "model" => model).record(took.as_secs_f64());
}

pub(crate) fn error(model: &'static str) {
    metrics::counter!("accrete_batch_errors_total", "model" => model).increment(1);
}
