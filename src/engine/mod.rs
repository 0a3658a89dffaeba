//! The one pipeline of a read model, written once for every backend: the
//! records of the partitions a worker owns → decode, project,
//! pre-aggregate ([`aggregate`]) → the state store applies the folded batch
//! exactly once and returns its changes → the change feed publishes them →
//! the input positions are committed. [`run_batch`] is that sequence, with
//! its crash points and its metrics; the backends implement the three
//! traits it is written against:
//!
//! | trait | embedded | Kafka + MongoDB |
//! | --- | --- | --- |
//! | [`StateStore`] | redb: records with absorbed ranges, forwarded ids and written ends, and an outbox row, in one transaction | MongoDB: claims of forwarded copies, one guarded document write per touched key, logged writes |
//! | [`ChangeFeed`] | the embedded log's changes topic | the changes topic, through the producer, its ends stored as delivered |
//! | [`Positions`] | the model's consumer group in the embedded log | positions in MongoDB, then the consumer group's offsets |
//!
//! Reading the records (which partitions a worker owns, when a batch is
//! due) is the backends' own: the embedded workers pull from the log, a
//! node's materializer is fed by its consumer and by rebalances.

pub(crate) mod metrics;

use std::time::Instant;

use crate::Result;
use crate::failpoint;
use crate::fold::{BatchOutcome, FoldMap, Work, aggregate};
use crate::log::RecordBatch;
use crate::model::ReadModel;
use crate::store::DeadLetter;

pub(crate) use metrics::Counters;
pub use metrics::ModelStats;

/// One partition's records, read and not yet folded.
pub(crate) struct Input<'a> {
    pub(crate) partition: u32,
    /// The batch's first offset: its events are `[from, batch end)`.
    pub(crate) from: u64,
    pub(crate) batch: &'a mut RecordBatch,
    /// Native events below this offset are applied already (the embedded
    /// store's written end; 0 where the store guards per key instead).
    pub(crate) written_end: u64,
    /// The read filled the batch to its limit: the reader is behind and
    /// reads as large a batch next, so the batch keeps its memory.
    pub(crate) full: bool,
}

/// The changes a write made, encoded (`(key, payload)`, see
/// [`crate::codec::encode_change`]), and what the store wants back once
/// they are published.
pub(crate) struct Applied<R> {
    pub(crate) changes: Vec<(Vec<u8>, Vec<u8>)>,
    pub(crate) receipt: R,
}

/// A state store's side of one model's pipeline: applies a folded batch
/// exactly once, whatever was applied before (a crash, another member
/// holding the partition a moment ago), and returns the changes the batch
/// made. Nothing is published before `apply` returns, so a published
/// change is always durable.
pub(crate) trait StateStore<M: ReadModel> {
    /// Handed back once the changes are published (the embedded outbox
    /// row, to delete).
    type Receipt;

    /// Decisions on the raw records before they are folded (which copy of
    /// a forwarded event applies, on MongoDB). Called by [`run_batch`]
    /// only: a store that prepares must be run with it.
    fn prepare(&mut self, _inputs: &mut [Input<'_>]) -> Result<()> {
        Ok(())
    }

    /// Writes the batch: every work's keys, the dead letters, the
    /// bookkeeping that makes a second apply of the same records a no-op.
    /// Sets `outcome`'s `writes`, `changes`, `dead_letters`, `conflicts`.
    /// `inputs` are the records when the backend holds them all
    /// ([`run_batch`]); the embedded worker folds each partition as it reads
    /// it into one buffer and passes none, as its store needs only the
    /// works.
    fn apply(
        &mut self,
        model: &M,
        inputs: &[Input<'_>],
        works: Vec<Work<M::Key, M::State>>,
        dead: Vec<DeadLetter>,
        outcome: &mut BatchOutcome,
    ) -> Result<Applied<Self::Receipt>>;

    /// The changes are published.
    fn published(&mut self, receipt: Self::Receipt);

    /// Publishing failed: the store keeps what it needs to publish them
    /// again (or relies on its own recovery to).
    fn unpublished(&mut self, applied: Applied<Self::Receipt>);
}

/// Where a model's changes go.
pub(crate) trait ChangeFeed {
    /// Publishes encoded `(key, payload)` changes (perhaps none), durably,
    /// before it returns.
    fn publish(&mut self, changes: &[(Vec<u8>, Vec<u8>)]) -> Result<()>;
}

/// Where a model's input positions are kept.
pub(crate) trait Positions {
    /// Records that each `(partition, end)` was read up to `end`.
    fn commit(&mut self, ends: &[(u32, u64)]) -> Result<()>;
}

/// A batch being folded, one partition's records at a time: the works
/// folded so far, the dead letters, what the fold did.
pub(crate) struct Folding<K, S> {
    /// Whose batch it is, for the model's health (see `Health`).
    member: u32,
    started: Instant,
    works: Vec<Work<K, S>>,
    dead: Vec<DeadLetter>,
    outcome: BatchOutcome,
    /// Events read per partition, for the metrics once committed.
    events_in: Vec<(u32, u64)>,
}

impl<K, S> Folding<K, S> {
    /// An empty batch of `member`; its time starts now.
    pub(crate) fn new(member: u32) -> Self {
        Folding {
            member,
            started: Instant::now(),
            works: Vec::new(),
            dead: Vec::new(),
            outcome: BatchOutcome::default(),
            events_in: Vec::new(),
        }
    }

    /// Decodes, projects and pre-aggregates one partition's records (none:
    /// nothing). Afterwards the records are needed again only by a store
    /// that reads them in [`StateStore::apply`].
    pub(crate) fn fold<M>(&mut self, model: &M, source: u32, input: &Input<'_>)
    where
        M: ReadModel<Key = K, State = S>,
    {
        let Some(end) = input.batch.next_offset() else {
            return;
        };
        let span = tracing::debug_span!(
            "batch",
            model = M::NAME,
            partition = input.partition,
            from = input.from,
            end
        );
        let _enter = span.enter();
        let before = self.outcome.events;
        let mut work = Work {
            partition: input.partition,
            from: input.from,
            end,
            pending: FoldMap::default(),
            copies: Vec::new(),
        };
        aggregate(
            model,
            source,
            input.partition,
            input.batch,
            input.written_end,
            &mut work,
            &mut self.dead,
            &mut self.outcome,
        );
        self.events_in
            .push((input.partition, self.outcome.events - before));
        self.works.push(work);
    }

    /// Whether no partition had records.
    pub(crate) fn is_empty(&self) -> bool {
        self.works.is_empty()
    }
}

/// Folds one batch of each input through the pipeline: aggregate, apply,
/// publish, commit. `Ok(None)` when no input has records. On error nothing
/// is committed: the records are read again, and the store's bookkeeping
/// makes the second apply exact.
#[cfg_attr(
    not(all(feature = "kafka", feature = "mongodb")),
    expect(
        dead_code,
        reason = "only Kafka + MongoDB holds every partition's records"
    )
)]
pub(crate) fn run_batch<M, S, F, P>(
    model: &M,
    source: u32,
    inputs: &mut [Input<'_>],
    store: &mut S,
    feed: &mut F,
    positions: &mut P,
    counters: &Counters,
) -> Result<Option<BatchOutcome>>
where
    M: ReadModel,
    S: StateStore<M>,
    F: ChangeFeed,
    P: Positions,
{
    if inputs.iter().all(|i| i.batch.is_empty()) {
        return Ok(None);
    }
    let mut folding = Folding::new(0);
    store.prepare(inputs)?;
    for input in inputs.iter() {
        folding.fold(model, source, input);
    }
    let outcome = write_batch(model, inputs, folding, store, feed, positions, counters)?;
    for input in inputs.iter_mut() {
        release(input.batch, input.full);
    }
    Ok(Some(outcome))
}

/// Runs one batch of `model`, a panic in it (a bug, in accrete or in the
/// model's code outside `project`) turned into an error: the batch fails
/// and is retried from what is durable, as after a crash, and the model's
/// status says why, rather than its worker ending in silence (an attack,
/// session 15: a read past 4 GiB panicked and the model stopped folding
/// with no error shown).
pub(crate) fn unwound<T>(model: &str, batch: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(batch)).unwrap_or_else(|panic| {
        Err(crate::Error::Model(
            model.into(),
            format!(
                "a batch panicked ({}); it is retried from the committed positions. This is a \
                 bug: please report it with the log",
                crate::error::panic_message(&*panic)
            ),
        ))
    })
}

/// Empties a batch after its fold. A backfill's large batches keep their
/// memory while the reader is behind (`full`: faulting it in again per
/// batch cost a tenth of the step), and give it back once a read comes
/// short.
pub(crate) fn release(batch: &mut RecordBatch, full: bool) {
    if full {
        batch.clear();
    } else {
        batch.clear_and_shrink(4 << 20);
    }
}

/// The rest of the pipeline for a folded batch: apply, publish, commit.
/// `inputs` are the batch's records where the store reads them again in
/// `apply` (held by [`run_batch`]); a backend whose store does not may
/// fold each partition as it reads it into one buffer and pass none.
pub(crate) fn write_batch<M, S, F, P>(
    model: &M,
    inputs: &[Input<'_>],
    folding: Folding<M::Key, M::State>,
    store: &mut S,
    feed: &mut F,
    positions: &mut P,
    counters: &Counters,
) -> Result<BatchOutcome>
where
    M: ReadModel,
    S: StateStore<M>,
    F: ChangeFeed,
    P: Positions,
{
    let Folding {
        member,
        started,
        works,
        dead,
        mut outcome,
        events_in,
    } = folding;
    let ends: Vec<(u32, u64)> = works.iter().map(|w| (w.partition, w.end)).collect();
    let aggregated = started.elapsed();

    failpoint::hit("before_store_write");
    failpoint::fault("store_write")?;
    let applied = store.apply(model, inputs, works, dead, &mut outcome)?;
    failpoint::hit("after_store_write");
    if let Err(e) = failpoint::fault("store_write_applied") {
        store.unpublished(applied);
        return Err(e);
    }
    let stored = started.elapsed();

    // Called even with no changes: a feed may have deliveries of an earlier
    // batch to wait for (the Kafka producer's).
    if let Err(e) = failpoint::fault("publish").and_then(|()| feed.publish(&applied.changes)) {
        store.unpublished(applied);
        return Err(e);
    }
    store.published(applied.receipt);
    failpoint::hit("after_publish");
    let sent = started.elapsed();

    // In the model's stats and health before the commit, so that a caller
    // who sees the positions committed (`wait_caught_up`) sees the batch
    // counted and the model healthy. If
    // the commit fails the records are read again and counted again: the
    // stats count deliveries.
    counters.batch(&outcome);
    counters.health.ok(member);
    failpoint::fault("commit")?;
    positions.commit(&ends)?;
    failpoint::hit("after_commit");

    // In the metrics once the batch is committed.
    for (partition, events) in events_in {
        metrics::events_in(M::NAME, partition, events);
    }
    let took = started.elapsed();
    metrics::batch(M::NAME, &outcome, took);
    tracing::debug!(model = M::NAME, events = outcome.events, writes = outcome.writes,
        changes = outcome.changes, ?aggregated, ?stored, ?sent, elapsed = ?took, "batch written");
    Ok(outcome)
}
