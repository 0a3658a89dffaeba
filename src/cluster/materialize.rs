//! A node's materializer of one read model: consume a batch, pre-aggregate
//! per key, one MongoDB write per touched key, publish the changes, commit.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use accrete_monoids::{Monoid, Semigroup};
use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::placement::{Audit, Placement};
use super::replica::Replica;
use super::{Counters, Shared};
use crate::codec::{Range, encode_change, encode_key};
use crate::engine::{Applied, ChangeFeed, Input, Positions, StateStore, run_batch, unwound};
use crate::event::EventId;
use crate::fold::{BatchOutcome, Work};
use crate::log::kafka::Producer;
use crate::log::{READ_BYTES, RecordBatch};
use crate::model::{Deltas, ReadModel};
use crate::store::DeadLetter;
use crate::store::mongo::{Generation, Guards, KeyWrite, Split, write_batch};
use crate::store::pushdown::Pushdown;
use crate::{Error, Result};

/// The events received for one partition and not yet written.
struct Buffer {
    batch: RecordBatch,
}

/// What the consumer loop and the rebalance callback share.
struct Batcher<M: ReadModel> {
    model: Arc<M>,
    /// The generation of the model's data this materializer writes.
    generation: Generation,
    shared: Arc<Shared>,
    counters: Arc<Counters>,
    producer: Producer,
    changes_topic: String,
    source: u32,
    /// The node's replica of the model: which keys have a document already.
    replica: Arc<Replica<M>>,
    buffers: HashMap<u32, Buffer>,
    buffered: usize,
    oldest: Option<Instant>,
}

struct Ctx<M: ReadModel> {
    batcher: Arc<Mutex<Batcher<M>>>,
    placement: Arc<Placement>,
    topic: String,
    /// The events topic's ends, per partition, as fetch responses report
    /// them: how far behind the consumer is.
    high: Arc<Vec<AtomicU64>>,
}

impl<M: ReadModel> ClientContext for Ctx<M> {
    crate::log::kafka::log_through_tracing!();
    fn stats(&self, statistics: rdkafka::Statistics) {
        super::replica::record_ends(&statistics, &self.topic, &self.high);
    }
}

impl<M: ReadModel> ConsumerContext for Ctx<M>
where
    M::State: Pushdown,
{
    /// Places newly assigned partitions (see [`placement`](super::placement)).
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let placement = self.placement.clone();
        super::placement::rebalance(consumer, err, tpl, &placement, |tpl| {
            self.pre_rebalance(consumer, &Rebalance::Revoke(tpl));
        });
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let revoked: Vec<u32> = tpl
            .elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition() as u32)
            .collect();
        let mut b = self.batcher.lock();
        // Write, publish and commit what is held for the partitions leaving,
        // before they go: the next owner starts where this one ended.
        let lost = consumer.assignment_lost();
        let result = if lost {
            Err(Error::kafka_msg(
                "rebalance",
                "assignment lost: the group moved on without this node",
            ))
        } else {
            b.flush(Some(&revoked), &|tpl| {
                consumer.commit(tpl, CommitMode::Sync)
            })
        };
        if let Err(e) = &result {
            tracing::warn!(model = M::NAME, ?revoked, error = %e,
                "could not write before the partitions were revoked; their next owner reads them again");
        }
        for p in revoked {
            if let Some(buf) = b.buffers.remove(&p) {
                b.buffered -= buf.batch.len();
            }
        }
        if b.buffered == 0 {
            // What failed went with the partitions: nothing here fails now.
            b.counters.health.clear();
        } else if let Err(e) = &result {
            b.counters.health.failed(0, M::NAME, e);
        }
    }
}

type CommitFn<'a> = dyn Fn(&TopicPartitionList) -> rdkafka::error::KafkaResult<()> + 'a;

impl<M: ReadModel> Batcher<M>
where
    M::State: Pushdown,
{
    /// Whether to read no more before a write: `limit` events, or as many
    /// bytes as an embedded read holds (large records: not the pace's
    /// events times their size).
    fn full(&self, limit: usize) -> bool {
        self.buffered >= limit
            || self
                .buffers
                .values()
                .map(|b| b.batch.bytes())
                .sum::<usize>()
                >= READ_BYTES
    }

    /// Writes the buffered partitions (`only` those, if given), publishes
    /// their changes, commits: one run of the pipeline ([`run_batch`]). On
    /// error the buffers stay, to retry.
    fn flush(&mut self, only: Option<&[u32]>, commit: &CommitFn<'_>) -> Result<()> {
        let Batcher {
            model,
            generation,
            shared,
            counters,
            producer,
            changes_topic,
            source,
            replica,
            buffers,
            buffered,
            oldest,
        } = self;
        let mut inputs: Vec<Input<'_>> = buffers
            .iter_mut()
            .filter(|(p, b)| !b.batch.is_empty() && only.is_none_or(|o| o.contains(p)))
            .map(|(p, b)| {
                let from = b.batch.iter().next().map_or(0, |r| r.offset);
                Input {
                    partition: *p,
                    from,
                    batch: &mut b.batch,
                    written_end: 0,
                    // Filled by polls, a batch at a time: it gives its
                    // memory back after each flush.
                    full: false,
                }
            })
            .collect();
        if inputs.is_empty() {
            return Ok(());
        }
        let events: usize = inputs.iter().map(|i| i.batch.len()).sum();
        // Also flushed from the rebalance callback, inside librdkafka: a
        // panic there would abort the process.
        unwound(M::NAME, || {
            run_batch(
                &**model,
                *source,
                &mut inputs,
                &mut MongoStep {
                    shared,
                    replica,
                    source: *source,
                    generation,
                },
                &mut KafkaFeed {
                    producer,
                    topic: changes_topic,
                    shared,
                    generation: &generation.name,
                },
                &mut MongoPositions {
                    shared,
                    generation: &generation.name,
                    commit,
                },
                counters,
            )
        })?;
        *buffered -= events;
        if *buffered == 0 {
            *oldest = None;
        }
        Ok(())
    }
}

/// MongoDB's side of one batch of a model.
struct MongoStep<'a, M: ReadModel> {
    shared: &'a Shared,
    replica: &'a Replica<M>,
    source: u32,
    generation: &'a Generation,
}

impl<M: ReadModel> StateStore<M> for MongoStep<'_, M>
where
    M::State: Pushdown,
{
    /// Nothing: a change whose publication failed is published again by
    /// the retry, which finds its write applied and its log in the document.
    type Receipt = ();

    /// Decides, for every forwarded record, whether it is the copy of its
    /// event that applies (claimed in MongoDB, see
    /// [`MongoStore::claim_origins`](crate::store::mongo::MongoStore)): that
    /// copy is then folded as an event of this topic (exactly once by the
    /// per-key guard), and every other copy is marked as a copy of it, which
    /// [`aggregate`](crate::fold::aggregate) skips. A copy of one of this
    /// topic's own events is left as it is: `aggregate` skips it too.
    fn prepare(&mut self, inputs: &mut [Input<'_>]) -> Result<()> {
        let source = self.source;
        let mut claims = Vec::new();
        for input in inputs.iter() {
            for e in &input.batch.entries {
                if let Some(origin) = e.origin.filter(|o| o.source != source) {
                    claims.push((origin, (input.partition, e.offset)));
                }
            }
        }
        if claims.is_empty() {
            return Ok(());
        }
        let winners = self.shared.store.claim_origins(source, &claims)?;
        let mut decided = claims.into_iter().zip(winners);
        for input in inputs.iter_mut() {
            for e in &mut input.batch.entries {
                if e.origin.is_none_or(|o| o.source == source) {
                    continue;
                }
                let Some(((_, native), (wp, wo))) = decided.next() else {
                    break;
                };
                debug_assert_eq!(native, (input.partition, e.offset));
                e.origin = if (wp, wo) == native {
                    None
                } else {
                    Some(EventId {
                        source,
                        partition: wp,
                        offset: wo,
                    })
                };
            }
        }
        Ok(())
    }

    /// Merges the partitions' works per key (a key touched from several
    /// partitions is written once, guarded per partition), writes them
    /// (see [`write_batch`]), and sends the events of keys that cannot be
    /// written to the dead letters.
    fn apply(
        &mut self,
        model: &M,
        inputs: &[Input<'_>],
        works: Vec<Work<M::Key, M::State>>,
        mut dead: Vec<DeadLetter>,
        outcome: &mut BatchOutcome,
    ) -> Result<Applied<()>> {
        let store = &self.shared.store;
        store.dead_letters_put(M::NAME, &dead)?;
        let mut merged: HashMap<M::Key, (M::State, Vec<Range>), foldhash::fast::RandomState> =
            HashMap::default();
        for work in works {
            let range = Range {
                partition: work.partition,
                from: work.from,
                end: work.end,
            };
            // After `prepare`, every copy that applies is native here.
            for (key, pending) in work.pending {
                let Some(delta) = pending.fresh else { continue };
                match merged.get_mut(&key) {
                    Some((acc, ranges)) => {
                        acc.combine_owned(delta);
                        ranges.push(range);
                    }
                    None => {
                        merged.insert(key, (delta, vec![range]));
                    }
                }
            }
        }
        let merged: Vec<_> = merged
            .into_iter()
            .filter(|(_, (d, _))| !d.is_identity())
            .collect();
        // Keys the replica has not seen are tried as inserts first (cheap for
        // the server; an existing document refuses it and the key is updated
        // as usual). A replica behind only costs a refused insert.
        let known = self.replica.has_each(merged.iter().map(|(key, _)| key));
        let keys: Vec<KeyWrite<M::Key, M::State>> = merged
            .into_iter()
            .zip(known)
            .map(|((key, (delta, ranges)), known)| KeyWrite {
                key,
                delta,
                ranges,
                maybe_new: !known,
            })
            .collect();
        let mut split = |guards: &Guards<M::Key>| split_at_guards(model, inputs, guards);
        let written = write_batch(
            store,
            &self.generation.name,
            M::EXACTLY_ONCE,
            keys,
            &mut split,
        )?;
        if written.recut > 0 {
            tracing::warn!(
                model = M::NAME,
                keys = written.recut,
                "keys found partly applied without a log of the writes that did it: their \
                 changes are published again as this batch cuts them (a hook may run part of \
                 one twice)"
            );
        }
        // Keys that cannot be written (no `_id`, a state without a BSON
        // form, a document the server refuses): their events go to the dead
        // letters, and the rest of the batch is published and committed.
        if !written.rejected.is_empty() {
            let letters = dead_letters_of(model, self.source, inputs, &written.rejected);
            tracing::warn!(
                model = M::NAME,
                keys = written.rejected.len(),
                events = letters.len(),
                "keys that cannot be written: their events go to the dead letters"
            );
            store.dead_letters_put(M::NAME, &letters)?;
            dead.extend(letters);
        }
        outcome.writes = written.writes;
        outcome.conflicts = written.conflicts;
        outcome.dead_letters = dead.len() as u64;
        outcome.changes = written.changes.len() as u64;
        let mut changes = Vec::with_capacity(written.changes.len());
        for (key, change) in &written.changes {
            let mut payload = Vec::new();
            // The version is not learnt here (most writes are blind).
            encode_change(0, change, &mut payload)?;
            changes.push((encode_key(key)?, payload));
        }
        Ok(Applied {
            changes,
            receipt: (),
        })
    }

    fn published(&mut self, (): ()) {}

    fn unpublished(&mut self, _: Applied<()>) {}
}

/// The model's changes topic, through the node's producer.
struct KafkaFeed<'a> {
    producer: &'a Producer,
    topic: &'a str,
    shared: &'a Shared,
    generation: &'a str,
}

impl ChangeFeed for KafkaFeed<'_> {
    fn publish(&mut self, changes: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        for (key, payload) in changes {
            self.producer.send(self.topic, None, key, payload, None)?;
        }
        self.producer.flush(Duration::from_secs(60))?;
        // Where the changes topic ends, as delivered: brokers have been seen
        // to under-report it, and replicas measure their lag against it.
        let published = self.producer.take_ends();
        self.shared
            .store
            .advance_positions(&super::published_key(self.generation), &published)
    }
}

/// The model's positions in MongoDB (what a node resumes from), then the
/// consumer group's offsets (for tools that read them).
struct MongoPositions<'a, 'c> {
    shared: &'a Shared,
    generation: &'a str,
    commit: &'a CommitFn<'c>,
}

impl Positions for MongoPositions<'_, '_> {
    fn commit(&mut self, ends: &[(u32, u64)]) -> Result<()> {
        let mut tpl = TopicPartitionList::new();
        for (p, end) in ends {
            tpl.add_partition_offset(
                &self.shared.config.events_topic,
                *p as i32,
                Offset::Offset(*end as i64),
            )
            .map_err(|e| Error::kafka("commit", e))?;
        }
        self.shared.store.advance_positions(self.generation, ends)?;
        if let Err(e) = (self.commit)(&tpl) {
            tracing::warn!(model = self.generation, error = %e, "offset commit failed (positions are kept in MongoDB)");
        }
        Ok(())
    }
}

/// The dead letters of the buffered events that project a delta onto a
/// rejected key, one per event, saying which key and why.
fn dead_letters_of<M: ReadModel>(
    model: &M,
    source: u32,
    inputs: &[Input<'_>],
    rejected: &[(M::Key, String)],
) -> Vec<DeadLetter> {
    let rejected: HashMap<&M::Key, &String> = rejected.iter().map(|(k, r)| (k, r)).collect();
    let mut out = Vec::new();
    let mut deltas = Deltas::new();
    for input in inputs {
        let p = input.partition;
        for record in input.batch.iter() {
            if !project_applied(model, &record, &mut deltas) {
                continue;
            }
            let Some((key, reason)) = deltas
                .drain()
                .find_map(|(key, _)| rejected.get_key_value(&key).map(|(k, r)| (*k, *r)))
            else {
                continue;
            };
            out.push(DeadLetter {
                event: crate::event::EventId {
                    source,
                    partition: p,
                    offset: record.offset,
                },
                reason: format!(
                    "the write of key {key:?} failed: {reason} (the event's deltas for other keys \
                     were applied)"
                ),
                payload: record.payload.to_vec(),
            });
        }
    }
    out
}

/// Recomputes, for keys found partly applied, the deltas of the buffered
/// events before and since each key's guard, in one pass over the batch.
/// Projects a record of a batch again into `deltas`, if [`aggregate`]
/// applied it: not a copy of an event applied elsewhere (after
/// `resolve_copies`, only those keep an origin), not an event that does
/// not decode or whose projection fails or panics (dead letters already).
fn project_applied<M: ReadModel>(
    model: &M,
    record: &crate::log::Record<'_>,
    deltas: &mut Deltas<M::Key, M::State>,
) -> bool {
    if record.origin.is_some() {
        return false;
    }
    let Ok(event) = crate::event::decode::<M::Event>(record.payload) else {
        return false;
    };
    deltas.clear();
    let projected = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        model.project(&event, deltas)
    }));
    matches!(projected, Ok(Ok(())))
}

fn split_at_guards<M: ReadModel>(
    model: &M,
    inputs: &[Input<'_>],
    guards: &Guards<M::Key>,
) -> Split<M::Key, M::State> {
    let mut out: Split<M::Key, M::State> = HashMap::new();
    let mut deltas = Deltas::new();
    for input in inputs {
        let p = input.partition;
        for record in input.batch.iter() {
            if !project_applied(model, &record, &mut deltas) {
                continue;
            }
            for (key, delta) in deltas.drain() {
                let Some(g) = guards.get(&key) else { continue };
                let guard = g.iter().find(|(gp, _)| *gp == p).map_or(0, |(_, g)| *g);
                let (before, since) = out
                    .entry(key)
                    .or_insert_with(|| (M::State::identity(), M::State::identity()));
                if record.offset < guard {
                    before.combine_owned(delta);
                } else {
                    since.combine_owned(delta);
                }
            }
        }
    }
    out
}

/// A materializer's parts for one generation of the model's data.
struct Parts<M: ReadModel>
where
    M::State: Pushdown,
{
    consumer: BaseConsumer<Ctx<M>>,
    batcher: Arc<Mutex<Batcher<M>>>,
    placement: Arc<Placement>,
    audit: Audit,
    pace: super::pace::Pace,
}

/// Makes a materializer's parts for `generation`: its consumer joins the
/// generation's group and starts each partition at the generation's
/// positions.
fn open<M: ReadModel>(
    model: Arc<M>,
    generation: Generation,
    shared: &Arc<Shared>,
    counters: Arc<Counters>,
    replica: Arc<Replica<M>>,
) -> Result<Parts<M>>
where
    M::State: Pushdown,
{
    let config = &shared.config;
    let topic = config.events_topic.clone();
    let group = config.materialize_group(&generation.name);
    let reader = generation.name.clone();
    let batcher = Arc::new(Mutex::new(Batcher {
        model,
        producer: config.kafka.producer()?,
        changes_topic: config.changes_topic(&generation.name),
        generation,
        source: shared.source,
        replica,
        shared: shared.clone(),
        counters,
        buffers: HashMap::new(),
        buffered: 0,
        oldest: None,
    }));
    let placement = Arc::new(Placement::new(
        shared.store.clone(),
        config,
        reader.clone(),
        topic.clone(),
    ));
    let high: Arc<Vec<AtomicU64>> =
        Arc::new((0..config.partitions).map(|_| AtomicU64::new(0)).collect());
    let consumer = config.kafka.consumer(
        &group,
        Ctx {
            batcher: batcher.clone(),
            placement: placement.clone(),
            topic: topic.clone(),
            high,
        },
        true,
    )?;
    consumer
        .subscribe(&[&topic])
        .map_err(|e| Error::kafka("subscribe", e))?;
    let audit = Audit::new(
        shared.store.clone(),
        reader,
        config.node_id.clone(),
        topic,
        config.partitions,
    );
    let pace = super::pace::Pace::new(
        FIRST_BATCH,
        SMALLEST_BATCH,
        config.batch_size,
        super::pace::batch_target(config.kafka.max_poll_interval()),
    );
    Ok(Parts {
        consumer,
        batcher,
        placement,
        audit,
        pace,
    })
}

/// Starts a materializer; it stops (writing, publishing and committing
/// what it holds, then leaving the group) when the node stops or `stop` is
/// set. When a rebuild starts a new generation of the model's data, it
/// drops what it holds, leaves the old generation's group and starts over
/// in the new one; `generation` says which one it writes.
pub(super) fn start<M: ReadModel>(
    model: M,
    shared: Arc<Shared>,
    counters: Arc<Counters>,
    replica: Arc<Replica<M>>,
    stop: Arc<AtomicBool>,
    generation: Arc<AtomicU64>,
) -> Result<JoinHandle<()>>
where
    M::State: Pushdown,
{
    let model = Arc::new(model);
    let current = shared.store.generation(M::NAME)?;
    generation.store(current.n, Ordering::Release);
    let parts = open(
        model.clone(),
        current.clone(),
        &shared,
        counters.clone(),
        replica.clone(),
    )?;
    let interval = shared.config.flush_interval();
    std::thread::Builder::new()
        .name(format!("accrete-materialize-{}", M::NAME))
        .spawn(move || {
            super::generation::follow(
                M::NAME,
                (current, parts),
                &|| shared.stop.load(Ordering::Acquire) || stop.load(Ordering::Acquire),
                &|e| counters.health.failed(0, M::NAME, e),
                |parts, _| run(parts, &shared, &stop, interval),
                |next| {
                    open(
                        model.clone(),
                        next.clone(),
                        &shared,
                        counters.clone(),
                        replica.clone(),
                    )
                },
                |next| {
                    generation.store(next.n, Ordering::Release);
                    counters.health.ok(0);
                },
            );
        })
        .map_err(|e| Error::io("spawn a materializer thread", ".", e))
}

/// The longest a batch waits to fill while its consumer is behind (or
/// `flush_interval`, if longer).
const BEHIND_HOLD: Duration = Duration::from_secs(5);

/// How often an idle materializer passes holes at the ends of its
/// partitions (see [`Placement::settle`]).
const SETTLE_EVERY: Duration = Duration::from_millis(500);

/// Stores, for partitions with nothing held, the consumer's position where
/// it passed a hole at the end (transaction markers): otherwise the model
/// would stay that many records behind the topic's end.
fn settle<M: ReadModel>(
    consumer: &BaseConsumer<Ctx<M>>,
    batcher: &Mutex<Batcher<M>>,
    placement: &Placement,
    shared: &Shared,
) where
    M::State: Pushdown,
{
    // Partitions with something buffered, noted first: the probe takes a
    // while, not under the lock.
    let busy: Vec<u32> = batcher
        .lock()
        .buffers
        .iter()
        .filter(|(_, buf)| !buf.batch.is_empty())
        .map(|(p, _)| *p)
        .collect();
    let ends = placement.settle(consumer, |p| !busy.contains(&p));
    if ends.is_empty() {
        return;
    }
    let reader = batcher.lock().generation.name.clone();
    if let Err(e) = shared.store.advance_positions(&reader, &ends) {
        tracing::warn!(model = M::NAME, error = %e, "could not store positions past a hole");
    }
}

/// The events of the first batch (or `batch_size`, if smaller): from there
/// the limit doubles while batches are quick (see [`super::pace`]), so a
/// restart against a slow store never starts with a batch it cannot write
/// before the group gives up on the node.
const FIRST_BATCH: usize = 500;

/// The fewest events a batch is limited to, however slow the store.
const SMALLEST_BATCH: usize = 16;

/// Runs the materializer's loop over one generation until it stops
/// (`None`) or a rebuild starts a newer one (returned).
fn run<M: ReadModel>(
    parts: Parts<M>,
    shared: &Arc<Shared>,
    stop: &AtomicBool,
    interval: Duration,
) -> Option<Generation>
where
    M::State: Pushdown,
{
    let Parts {
        consumer,
        batcher,
        placement,
        mut audit,
        mut pace,
    } = parts;
    let shared = shared.clone();
    let current = batcher.lock().generation.n;
    let mut checked = Instant::now();
    let mut rebuilt = None;
    let commit = |tpl: &TopicPartitionList| consumer.commit(tpl, CommitMode::Sync);
    let hold = interval.max(BEHIND_HOLD);
    let mut backoff = Duration::from_millis(50);
    let mut failing_until: Option<Instant> = None;
    let mut settled_at = Instant::now();
    let counters = batcher.lock().counters.clone();
    loop {
        if let Some(next) = super::generation::newer(&shared, M::NAME, current, &mut checked) {
            // What is held belongs to the old generation: the new one reads
            // every event again. Dropped before leaving the group, so that
            // the revocation writes nothing.
            let mut b = batcher.lock();
            b.buffers.clear();
            b.buffered = 0;
            b.oldest = None;
            rebuilt = Some(next);
            break;
        }
        let stopping = shared.stop.load(Ordering::Acquire) || stop.load(Ordering::Acquire);
        let full = batcher.lock().full(pace.limit());
        let read = !full && !stopping;
        if read && let Err(e) = crate::failpoint::fault("log_read") {
            // As a fetch error: the consumer reads on.
            tracing::warn!(model = M::NAME, error = %e, "consumer error");
        } else if read {
            match consumer.poll(Duration::from_millis(20)) {
                Some(Ok(msg)) => {
                    placement.take(&msg, |r| {
                        let mut b = batcher.lock();
                        let buf = b.buffers.entry(r.partition).or_insert_with(|| Buffer {
                            batch: RecordBatch::new(),
                        });
                        buf.batch
                            .push(r.offset, r.key, r.timestamp_ms, r.payload, r.origin);
                        b.buffered += 1;
                        b.oldest.get_or_insert_with(Instant::now);
                    });
                    // Drain what has arrived before deciding to write.
                    continue;
                }
                Some(Err(e)) => tracing::warn!(model = M::NAME, error = %e, "consumer error"),
                None => {
                    if settled_at.elapsed() >= SETTLE_EVERY {
                        settled_at = Instant::now();
                        settle(&consumer, &batcher, &placement, &shared);
                    }
                }
            }
        }
        placement.reseek(&consumer);
        audit.check(&consumer);
        let due = {
            let b = batcher.lock();
            b.buffered > 0
                && (b.full(pace.limit())
                    || stopping
                    || b.oldest.is_some_and(|t| {
                        let waited = t.elapsed();
                        // Behind (a backfill, a restart), the next events
                        // are on the broker already: fill the batch rather
                        // than write a part of it at each pause of the
                        // fetches, for at most `hold`.
                        waited >= interval
                            && (waited >= hold || !placement.behind(&consumer.context().high))
                    }))
        };
        if due && failing_until.is_none_or(|t| Instant::now() >= t) {
            let mut b = batcher.lock();
            let events = b.buffered;
            let started = Instant::now();
            let flushed = b.flush(None, &commit);
            drop(b);
            match flushed {
                Ok(()) => {
                    pace.observe(events, started.elapsed());
                    counters.health.ok(0);
                    backoff = Duration::from_millis(50);
                    failing_until = None;
                }
                Err(e) => {
                    tracing::error!(model = M::NAME, error = %e, retry_in = ?backoff, "batch write failed");
                    counters.health.failed(0, M::NAME, &e);
                    failing_until = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    if stopping {
                        break;
                    }
                }
            }
        } else if stopping && !due {
            break;
        } else if let Some(t) = failing_until.filter(|_| stopping || full) {
            // A failed batch waiting out its backoff with nothing to read
            // (stopping, or the batch full): one more try once it has
            // passed (no polls meanwhile; before, a full batch spun here).
            std::thread::sleep(t.saturating_duration_since(Instant::now()));
        }
    }
    super::placement::leave_group(&consumer);
    audit.release();
    rebuilt
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monoids::Sum;

    struct Total;
    impl ReadModel for Total {
        const NAME: &'static str = "total";
        type Event = i64;
        type Key = String;
        type State = Sum<i64>;
        fn project(&self, n: &i64, out: &mut Deltas<String, Sum<i64>>) -> Result<(), String> {
            if *n == 13 {
                panic!("unlucky");
            }
            out.push("k".into(), Sum(*n));
            Ok(())
        }
    }

    /// A key found partly applied is split again from the buffered
    /// records: a copy of a forwarded event that applies elsewhere (it
    /// keeps its origin after `resolve_copies`) must stay out, and a
    /// panicking projection must not take the materializer down.
    #[test]
    fn a_partly_applied_key_is_split_without_skipped_copies() {
        let mut batch = RecordBatch::new();
        let enc = |n: i64| crate::event::encode(&n).unwrap();
        batch.push(10, b"k", 0, &enc(1), None);
        let elsewhere = EventId {
            source: 7,
            partition: 1,
            offset: 3,
        };
        batch.push(11, b"k", 0, &enc(100), Some(elsewhere));
        batch.push(12, b"k", 0, &enc(13), None);
        batch.push(13, b"k", 0, &enc(20), None);
        let inputs = [Input {
            partition: 0,
            from: 10,
            batch: &mut batch,
            written_end: 0,
            full: false,
        }];
        let guards: Guards<String> = HashMap::from([("k".to_string(), vec![(0, 12)])]);
        let split = split_at_guards(&Total, &inputs, &guards);
        assert_eq!(split["k"], (Sum(1), Sum(20)));
    }
}
