//! The pipeline of one read model: read a batch of a partition, decode,
//! project, pre-aggregate per key, write one update per touched key (with
//! the exactly-once bookkeeping) in one transaction, publish the changes,
//! commit the input position.

use std::collections::HashMap;
use std::sync::Arc;

use accrete_monoids::{Monoid, Semigroup};
use parking_lot::{Mutex, MutexGuard};
use serde::{Deserialize, Serialize};

use crate::codec::{
    Range, StoredRecord, Written, decode_record, encode_change, encode_key, encode_record,
};
use crate::engine::{
    Applied, ChangeFeed, Counters, Folding, Input, Positions, StateStore, release, unwound,
    write_batch,
};
use crate::fold::{BatchOutcome, Copy, Work};
use crate::ids::{Absorbed, CHUNK_OFFSETS, ForwardedIds, MAX_CHUNKS, Seen};
use crate::log::{Log, NewRecord, READ_BYTES, RecordBatch, partition_for};
use crate::model::ReadModel;
use crate::names::{changes_topic, group_name};
use crate::store::{DeadLetter, EmbeddedStore, ModelWrite};
use crate::{Error, Result};

/// The records of encoded keys, decoded (`None`: nothing stored), read in
/// one transaction.
pub(crate) fn read_records<S: serde::de::DeserializeOwned>(
    store: &EmbeddedStore,
    model: &str,
    keys: &[&[u8]],
) -> Result<Vec<Option<StoredRecord<S>>>> {
    store
        .get_raw_many(model, keys)?
        .into_iter()
        .map(|bytes| bytes.as_deref().map(decode_record).transpose())
        .collect()
}

/// A change published for a key: the combined delta of one write and the
/// version it produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change<K, S> {
    /// The key whose state changed.
    pub key: K,
    /// What the write combined into the state.
    pub delta: S,
    /// The key's version after the write (1 for the first); 0 on Kafka +
    /// MongoDB, whose writes are mostly blind and do not learn it.
    pub version: u64,
}

impl<K: serde::de::DeserializeOwned, S: serde::de::DeserializeOwned> Change<K, S> {
    /// Decodes a record of a changes topic (its key and payload), as
    /// either backend publishes it: for a consumer of the changes topic
    /// outside accrete. The payload's format is described in `DESIGN.md`.
    ///
    /// ```
    /// use accrete::runtime::Change;
    /// use accrete::monoids::Sum;
    ///
    /// // Not a change: a clear error rather than a panic.
    /// let e = Change::<String, Sum<i64>>::decode(b"\x01k", b"\x05").unwrap_err();
    /// assert!(e.to_string().contains("unknown change format"));
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`]: bytes that are not a change of these key and
    /// state types.
    pub fn decode(key: &[u8], payload: &[u8]) -> Result<Self> {
        let (key, (version, written)) = crate::codec::decode_change(key, payload)?;
        Ok(Change {
            key,
            delta: written.delta,
            version,
        })
    }
}

/// The changes of one batch, `(key, (version, delta))` encoded, and the
/// outbox row that holds them until they are published.
pub(crate) struct Outbox {
    seq: u64,
    changes: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Per-partition state of a model's pipeline; its mutex makes the holder
/// the partition's only processor.
pub(crate) struct PartitionState {
    /// The next offset to read, once known.
    position: Option<u64>,
    /// The end of the last batch written for this partition: events at or
    /// beyond it cannot be absorbed yet.
    written_end: Option<u64>,
    /// The worker's outbox bookkeeping (kept by its first partition).
    outbox: OutboxState,
    /// The worker's read buffer, each of its partitions read into it in
    /// turn (kept by its first partition).
    buffer: RecordBatch,
}

/// What a worker knows of its outbox rows.
#[derive(Default)]
pub(crate) struct OutboxState {
    /// Outbox sequences published and not yet deleted.
    published: Vec<u64>,
    /// Changes written whose publication failed: published before the next
    /// batch.
    unpublished: Option<Outbox>,
}

/// Type-erased pipeline of one read model.
pub(crate) trait Pipeline: Send + Sync {
    fn name(&self) -> &'static str;
    /// Processes the next batch of each of `partitions` (the worker's own)
    /// in one store transaction: `Ok(None)` when none has anything new.
    fn step(&self, partitions: &[u32], max: usize) -> Result<Option<BatchOutcome>>;
    /// Publishes what a crash left in the outbox.
    fn recover(&self) -> Result<usize>;
    /// Forgets cached positions (after a reset).
    fn forget(&self);
    /// Deletes published outbox entries when idle.
    fn tidy(&self, partitions: &[u32]) -> Result<()>;
    /// What the pipeline has done since the model was added.
    fn stats(&self) -> crate::engine::ModelStats;
    /// Whether its batches fail.
    fn health(&self) -> &crate::deployment::Health;
}

pub(crate) struct Runner<M: ReadModel> {
    model: M,
    log: Arc<dyn Log>,
    store: Arc<EmbeddedStore>,
    events_topic: String,
    source: u32,
    changes_topic: String,
    change_partitions: u32,
    group: String,
    partitions: Vec<Mutex<PartitionState>>,
    /// Whether the outbox a crash left has been published (by the first
    /// step of any worker).
    recovered: Mutex<bool>,
    /// The source numbers of this store's other events topics.
    own_sources: Vec<u32>,
    counters: Arc<Counters>,
}

impl<M: ReadModel> Runner<M> {
    pub(crate) fn new(
        model: M,
        log: Arc<dyn Log>,
        store: Arc<EmbeddedStore>,
        events_topic: &str,
        source: u32,
        partitions: u32,
        counters: Arc<Counters>,
    ) -> Result<Self> {
        let changes_topic = changes_topic(M::NAME);
        log.create_topic(&changes_topic, partitions)?;
        let own_sources = store
            .own_sources()?
            .into_iter()
            .filter(|s| *s != source)
            .collect();
        Ok(Runner {
            model,
            log,
            store,
            events_topic: events_topic.to_string(),
            source,
            changes_topic,
            change_partitions: partitions,
            group: group_name(M::NAME),
            partitions: (0..partitions)
                .map(|_| {
                    Mutex::new(PartitionState {
                        position: None,
                        written_end: None,
                        outbox: OutboxState::default(),
                        buffer: RecordBatch::new(),
                    })
                })
                .collect(),
            recovered: Mutex::new(false),
            own_sources,
            counters,
        })
    }

    /// One transaction for a step: every touched key once per partition
    /// batch, the forwarded ids, the dead letters, the written ends, one
    /// outbox row.
    fn write(
        &self,
        works: Vec<Work<M::Key, M::State>>,
        mut dead: Vec<DeadLetter>,
        published: &[u64],
        outcome: &mut BatchOutcome,
    ) -> Result<Option<Outbox>> {
        self.store.write(|txn| {
            let mut w = ModelWrite::open(txn, M::NAME)?;
            w.remove_changes(published)?;
            let mut changes = Vec::new();
            let mut rec_buf = Vec::new();
            for Work {
                partition,
                from,
                end,
                pending,
                copies,
            } in works
            {
                // Forwarded events: each id checked once against the
                // model's forwarded ids (one event, one effect, whatever
                // keys it touches), in log order.
                let mut pending = pending;
                let mut ids = ForwardedIds::default();
                // The decision for the event at this log offset (its other
                // deltas follow it; a copy right after it is another event).
                let mut last: Option<(u64, Seen)> = None;
                for copy in copies {
                    let seen = match last {
                        Some((offset, seen)) if offset == copy.offset => seen,
                        _ => {
                            // An id this store gave out on another of its
                            // events topics: applied if the model folded that
                            // topic past it (natively, so not in the bitmap).
                            let folded = self.own_sources.contains(&copy.id.source)
                                && copy.id.offset
                                    < w.written_end(copy.id.source, copy.id.partition)?;
                            let seen = if folded {
                                Seen::Duplicate
                            } else {
                                ids.insert(&w, copy.id)?
                            };
                            match seen {
                                Seen::New => {}
                                Seen::Duplicate => outcome.duplicates += 1,
                                Seen::BelowHorizon(horizon) => {
                                    dead.push(self.below_horizon(partition, &copy, horizon));
                                }
                            }
                            last = Some((copy.offset, seen));
                            seen
                        }
                    };
                    if seen == Seen::New
                        && let Some(p) = pending.get_mut(&copy.key)
                    {
                        p.copies.push((copy.id, copy.delta));
                    }
                }
                ids.save(&mut w)?;
                // Keys in byte order: the B-tree is written front to back.
                let mut items = Vec::with_capacity(pending.len());
                for (key, p) in pending {
                    items.push((encode_key(&key)?, p));
                }
                items.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                for (key_buf, p) in items {
                    let mut delta = p.fresh;
                    let copies = p.copies;
                    if delta.as_ref().is_none_or(Monoid::is_identity) && copies.is_empty() {
                        continue;
                    }
                    let stored = w.get(&key_buf, |bytes| {
                        bytes.map(decode_record::<M::State>).transpose()
                    })??;
                    let existed = stored.is_some();
                    let mut rec = stored.unwrap_or_else(|| StoredRecord {
                        version: w.version_floor(),
                        absorbed: Absorbed::default(),
                        state: M::State::identity(),
                    });
                    for (id, d) in copies {
                        // Records written before forwarded ids were kept
                        // per model list them per key.
                        if rec.absorbed.contains(id) {
                            outcome.duplicates += 1;
                            continue;
                        }
                        match &mut delta {
                            Some(acc) => acc.combine_owned(d),
                            None => delta = Some(d),
                        }
                    }
                    let Some(delta) = delta.filter(|d| !d.is_identity()) else {
                        continue;
                    };
                    let before = rec.state.clone();
                    rec.state.combine(&delta);
                    if rec.state == before {
                        // A write that changed nothing (a `Max` that did not
                        // grow): no write, no change.
                        continue;
                    }
                    rec.version += 1;
                    if !M::EXACTLY_ONCE && rec.state.is_identity() {
                        if existed {
                            w.delete(&key_buf)?;
                            outcome.writes += 1;
                        }
                    } else {
                        encode_record(&rec, &mut rec_buf)?;
                        w.put(&key_buf, &rec_buf)?;
                        outcome.writes += 1;
                    }
                    let written = Written {
                        ranges: vec![Range {
                            partition,
                            from,
                            end,
                        }],
                        idempotent: false,
                        delta,
                    };
                    let mut bytes = Vec::new();
                    encode_change(rec.version, &written, &mut bytes)?;
                    changes.push((key_buf, bytes));
                }
                w.set_written_end(self.source, partition, end)?;
            }
            outcome.dead_letters = dead.len() as u64;
            for letter in &dead {
                w.dead_letter(letter)?;
            }
            outcome.changes = changes.len() as u64;
            if changes.is_empty() {
                return Ok(None);
            }
            // One outbox row per batch, not per change.
            let row = postcard::to_stdvec(&changes).map_err(|e| Error::Encode {
                what: "outbox",
                detail: e.to_string(),
            })?;
            Ok(Some(Outbox {
                seq: w.push_change(&row)?,
                changes,
            }))
        })
    }

    /// The dead letter of a forwarded event whose id lies below its source
    /// partition's deduplication horizon: its payload read back from the log.
    fn below_horizon(
        &self,
        partition: u32,
        copy: &Copy<M::Key, M::State>,
        horizon: u64,
    ) -> DeadLetter {
        let mut batch = RecordBatch::new();
        let payload = match self
            .log
            .read(&self.events_topic, partition, copy.offset, 1, &mut batch)
        {
            Ok(()) => batch
                .iter()
                .next()
                .map(|r| r.payload.to_vec())
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        DeadLetter {
            event: copy.id,
            reason: format!(
                "forwarded id {} lies below offset {horizon}, its source partition's deduplication horizon \
                 (ids spread over more than {} offsets are forgotten, lowest first): it may or may not have \
                 been applied; resubmit it if it was not",
                copy.id,
                MAX_CHUNKS * CHUNK_OFFSETS
            ),
            payload,
        }
    }

    /// Reads the next batch of each locked partition, folding each as it is
    /// read into the worker's one buffer (the embedded store does not read
    /// the records again), then writes, publishes and commits them as one
    /// batch ([`write_batch`]); the worker's outbox bookkeeping is
    /// `outbox`, its read buffer `buffer`.
    fn step_locked(
        &self,
        guards: &mut [(u32, MutexGuard<'_, PartitionState>)],
        max: usize,
        outbox: &mut OutboxState,
        buffer: &mut RecordBatch,
    ) -> Result<Option<BatchOutcome>> {
        // Once a batch (a pass per partition would fail every pass of a
        // worker holding as many partitions as the fault's period).
        crate::failpoint::fault("log_read")?;
        // The worker's first partition names it in the model's health.
        let mut folding = Folding::new(guards.first().map_or(0, |(p, _)| *p));
        let mut ends = Vec::with_capacity(guards.len());
        let mut full = false;
        for (partition, st) in guards.iter_mut() {
            let partition = *partition;
            let st = &mut **st;
            let from = match st.position {
                Some(p) => p,
                None => *st.position.insert(self.log.committed(
                    &self.group,
                    &self.events_topic,
                    partition,
                )?),
            };
            let written_end = match st.written_end {
                Some(w) => w,
                None => *st.written_end.insert(self.store.written_end(
                    M::NAME,
                    self.source,
                    partition,
                )?),
            };
            self.log
                .read(&self.events_topic, partition, from, max, buffer)?;
            let Some(end) = buffer.next_offset() else {
                continue;
            };
            ends.push((partition, end));
            let input = Input {
                partition,
                from,
                full: buffer.len() >= max || buffer.bytes() >= READ_BYTES,
                batch: buffer,
                written_end,
            };
            full |= input.full;
            folding.fold(&self.model, self.source, &input);
        }
        release(buffer, full);
        if folding.is_empty() {
            return Ok(None);
        }
        let mut store = StoreStep {
            runner: self,
            outbox,
        };
        let outcome = write_batch(
            &self.model,
            &[],
            folding,
            &mut store,
            &mut LogFeed(self),
            &mut LogPositions(self),
            &self.counters,
        )?;
        for (partition, end) in ends {
            let st = &mut guards
                .iter_mut()
                .find(|(p, _)| *p == partition)
                .expect("a locked partition")
                .1;
            st.written_end = st.written_end.max(Some(end));
            st.position = Some(end);
        }
        Ok(Some(outcome))
    }

    /// Appends changes to the changes topic, grouped by partition.
    fn publish(&self, changes: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        let mut by_partition: HashMap<u32, Vec<NewRecord<'_>>> = HashMap::new();
        let now = crate::event::now_ms();
        for (key, payload) in changes {
            by_partition
                .entry(partition_for(key, self.change_partitions))
                .or_default()
                .push(NewRecord {
                    key,
                    timestamp: now,
                    payload,
                    origin: None,
                });
        }
        for (p, records) in by_partition {
            self.log.append(&self.changes_topic, p, &records)?;
        }
        Ok(())
    }

    /// Publishes the changes of a batch whose publication failed, before
    /// the worker's next batch.
    fn publish_unpublished(&self, outbox: &mut OutboxState) -> Result<()> {
        if let Some(row) = outbox.unpublished.take() {
            if let Err(e) = self.publish(&row.changes) {
                outbox.unpublished = Some(row);
                return Err(e);
            }
            outbox.published.push(row.seq);
        }
        Ok(())
    }
}

/// The embedded store's side of one step: one transaction, and the
/// worker's outbox rows.
struct StoreStep<'a, M: ReadModel> {
    runner: &'a Runner<M>,
    outbox: &'a mut OutboxState,
}

impl<M: ReadModel> StateStore<M> for StoreStep<'_, M> {
    /// The outbox row holding the changes.
    type Receipt = Option<u64>;

    fn apply(
        &mut self,
        _model: &M,
        _inputs: &[Input<'_>],
        works: Vec<Work<M::Key, M::State>>,
        dead: Vec<DeadLetter>,
        outcome: &mut BatchOutcome,
    ) -> Result<Applied<Option<u64>>> {
        // Rows published since the last write are deleted in this one.
        let row = self
            .runner
            .write(works, dead, &self.outbox.published, outcome)?;
        self.outbox.published.clear();
        Ok(match row {
            Some(row) => Applied {
                changes: row.changes,
                receipt: Some(row.seq),
            },
            None => Applied {
                changes: Vec::new(),
                receipt: None,
            },
        })
    }

    fn published(&mut self, receipt: Option<u64>) {
        self.outbox.published.extend(receipt);
    }

    fn unpublished(&mut self, applied: Applied<Option<u64>>) {
        if let Some(seq) = applied.receipt {
            self.outbox.unpublished = Some(Outbox {
                seq,
                changes: applied.changes,
            });
        }
    }
}

/// The embedded log's changes topic of a model.
struct LogFeed<'a, M: ReadModel>(&'a Runner<M>);

impl<M: ReadModel> ChangeFeed for LogFeed<'_, M> {
    fn publish(&mut self, changes: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        self.0.publish(changes)
    }
}

/// The model's consumer group in the embedded log.
struct LogPositions<'a, M: ReadModel>(&'a Runner<M>);

impl<M: ReadModel> Positions for LogPositions<'_, M> {
    fn commit(&mut self, ends: &[(u32, u64)]) -> Result<()> {
        let r = self.0;
        for (partition, end) in ends {
            r.log.commit(&r.group, &r.events_topic, *partition, *end)?;
        }
        Ok(())
    }
}

impl<M: ReadModel> Pipeline for Runner<M> {
    fn name(&self) -> &'static str {
        M::NAME
    }

    fn step(&self, partitions: &[u32], max: usize) -> Result<Option<BatchOutcome>> {
        let Some(&first) = partitions.first() else {
            return Ok(None);
        };
        // Locks in the order given; a worker's partitions are its own, so
        // the order is always the same.
        let mut guards: Vec<(u32, MutexGuard<'_, PartitionState>)> = partitions
            .iter()
            .map(|&p| (p, self.partitions[p as usize].lock()))
            .collect();
        // The first partition's state keeps the worker's outbox bookkeeping.
        debug_assert_eq!(guards[0].0, first);
        let mut outbox = std::mem::take(&mut guards[0].1.outbox);
        let mut buffer = std::mem::take(&mut guards[0].1.buffer);
        // A panic fails the step (its status says so) rather than ending
        // the worker. A change written and not yet published when one hit
        // (a bug in accrete's own append) stays in the outbox, published
        // at the next start: the outbox is not published again meanwhile,
        // since the other workers hold receipts of its rows.
        let result = unwound(M::NAME, || {
            {
                let mut recovered = self.recovered.lock();
                if !*recovered {
                    self.recover()?;
                    *recovered = true;
                }
            }
            self.publish_unpublished(&mut outbox)
                .and_then(|()| self.step_locked(&mut guards, max, &mut outbox, &mut buffer))
        });
        guards[0].1.outbox = outbox;
        guards[0].1.buffer = buffer;
        if result.is_err() {
            // Start over from what is durable: the committed positions and
            // the store's written ends.
            for (_, st) in &mut guards {
                st.position = None;
                st.written_end = None;
            }
        }
        result
    }

    fn recover(&self) -> Result<usize> {
        let leftovers = self.store.outbox(M::NAME)?;
        if leftovers.is_empty() {
            return Ok(0);
        }
        let mut changes = 0;
        for (_, row) in &leftovers {
            let batch: Vec<(Vec<u8>, Vec<u8>)> =
                postcard::from_bytes(row).map_err(|e| Error::Corrupt {
                    what: "outbox row",
                    detail: e.to_string(),
                })?;
            self.publish(&batch)?;
            changes += batch.len();
        }
        let seqs: Vec<u64> = leftovers.iter().map(|(s, _)| *s).collect();
        self.store
            .write(|txn| ModelWrite::open(txn, M::NAME)?.remove_changes(&seqs))?;
        tracing::info!(
            model = M::NAME,
            changes,
            "published changes a crash left in the outbox"
        );
        Ok(changes)
    }

    fn forget(&self) {
        for p in &self.partitions {
            let mut st = p.lock();
            st.position = None;
            st.written_end = None;
            // `recover` published what was unpublished before the rebuild
            // cleared the outbox.
            st.outbox = OutboxState::default();
        }
    }

    fn stats(&self) -> crate::engine::ModelStats {
        self.counters.snapshot()
    }

    fn health(&self) -> &crate::deployment::Health {
        &self.counters.health
    }

    fn tidy(&self, partitions: &[u32]) -> Result<()> {
        let Some(&first) = partitions.first() else {
            return Ok(());
        };
        let mut st = self.partitions[first as usize].lock();
        if st.outbox.published.is_empty() {
            return Ok(());
        }
        let seqs = std::mem::take(&mut st.outbox.published);
        self.store
            .write(|txn| ModelWrite::open(txn, M::NAME)?.remove_changes(&seqs))
    }
}
