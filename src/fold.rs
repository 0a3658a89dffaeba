//! The fold, written once for every backend: decode a partition's batch,
//! project each event, and pre-aggregate the deltas per key, setting aside
//! what cannot be applied (dead letters) and what must be checked against
//! the store first (forwarded copies).

use std::collections::HashMap;

use accrete_monoids::{Monoid, Semigroup};

use crate::error::panic_message;
use crate::event::EventId;
use crate::log::RecordBatch;
use crate::model::{Deltas, ReadModel};
use crate::store::DeadLetter;

/// One delta of an event forwarded with its original id
/// (`Runtime::forward`), applied only if the model has not applied the id
/// before. An event's deltas are consecutive.
pub(crate) struct Copy<K, S> {
    pub(crate) id: EventId,
    /// Its offset in this log (to read its payload back for a dead letter).
    pub(crate) offset: u64,
    pub(crate) key: K,
    pub(crate) delta: S,
}

/// One partition's batch, aggregated, waiting for the step's transaction.
pub(crate) struct Work<K, S> {
    pub(crate) partition: u32,
    /// The batch's events are those of `[from, end)`.
    pub(crate) from: u64,
    pub(crate) end: u64,
    pub(crate) pending: FoldMap<K, S>,
    /// Forwarded events, checked against the model's forwarded ids in the
    /// write. Rare: empty unless events are forwarded.
    pub(crate) copies: Vec<Copy<K, S>>,
}

/// The deltas of one key in one batch.
pub(crate) struct Pending<S> {
    /// Deltas of events that cannot be duplicates, pre-combined.
    pub(crate) fresh: Option<S>,
    /// Deltas of forwarded events the write found new, with their ids.
    pub(crate) copies: Vec<(EventId, S)>,
}

/// The pre-aggregation map: a fast hasher, seeded per process so that keys
/// chosen by users cannot flood it.
pub(crate) type FoldMap<K, S> = HashMap<K, Pending<S>, foldhash::fast::RandomState>;

/// What one batch did, for metrics and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchOutcome {
    pub(crate) events: u64,
    pub(crate) deltas: u64,
    pub(crate) duplicates: u64,
    pub(crate) dead_letters: u64,
    pub(crate) writes: u64,
    pub(crate) changes: u64,
    /// Keys found partly applied by an earlier write.
    pub(crate) conflicts: u64,
}

/// Decode, project, pre-aggregate one partition batch. Events at their
/// native position combine right away, unless they lie below `written_end`
/// (re-read after a crash: a batch's keys and its written end are one
/// atomic write, so every offset below the highest end written is
/// absorbed). Forwarded copies go to `work.copies`, checked in the write.
#[allow(clippy::too_many_arguments)]
pub(crate) fn aggregate<M: ReadModel>(
    model: &M,
    source: u32,
    partition: u32,
    batch: &RecordBatch,
    written_end: u64,
    work: &mut Work<M::Key, M::State>,
    dead: &mut Vec<DeadLetter>,
    outcome: &mut BatchOutcome,
) {
    let mut deltas = Deltas::new();
    for record in batch.iter() {
        outcome.events += 1;
        // A copy re-appended into the log it first entered: its original is
        // in this log and is (or was) applied at its native position, so the
        // copy is always a duplicate.
        if record.origin.is_some_and(|o| o.source == source) {
            outcome.duplicates += 1;
            continue;
        }
        let native = record.origin.is_none();
        if M::EXACTLY_ONCE && native && record.offset < written_end {
            outcome.duplicates += 1;
            continue;
        }
        let id = record.origin.unwrap_or(EventId {
            source,
            partition,
            offset: record.offset,
        });
        let event: M::Event = match crate::event::decode(record.payload) {
            Ok(e) => e,
            Err(reason) => {
                dead_letter::<M>(
                    id,
                    format!("undecodable event: {reason}"),
                    record.payload,
                    dead,
                );
                continue;
            }
        };
        deltas.items.clear();
        // A panicking projection is a bad event, not a dead worker.
        let projected = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            model.project(&event, &mut deltas)
        }))
        .unwrap_or_else(|panic| Err(format!("it panicked: {}", panic_message(panic.as_ref()))));
        if let Err(reason) = projected {
            deltas.items.clear();
            dead_letter::<M>(
                id,
                format!("projection failed: {reason}"),
                record.payload,
                dead,
            );
            continue;
        }
        if !M::EXACTLY_ONCE || native {
            for (key, delta) in deltas.items.drain(..) {
                if delta.is_identity() {
                    continue;
                }
                outcome.deltas += 1;
                match work.pending.entry(key) {
                    std::collections::hash_map::Entry::Occupied(mut e) => {
                        match &mut e.get_mut().fresh {
                            Some(acc) => acc.combine_owned(delta),
                            slot @ None => *slot = Some(delta),
                        }
                    }
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(Pending {
                            fresh: Some(delta),
                            copies: Vec::new(),
                        });
                    }
                }
            }
        } else {
            // One event may push several deltas for one key (a transfer to
            // the same account): one effect, checked once.
            collapse_by_key(&mut deltas.items);
            for (key, delta) in deltas.items.drain(..) {
                if delta.is_identity() {
                    continue;
                }
                outcome.deltas += 1;
                work.pending.entry(key.clone()).or_insert(Pending {
                    fresh: None,
                    copies: Vec::new(),
                });
                work.copies.push(Copy {
                    id,
                    offset: record.offset,
                    key,
                    delta,
                });
            }
        }
    }
}

fn dead_letter<M: ReadModel>(
    id: EventId,
    reason: String,
    payload: &[u8],
    dead: &mut Vec<DeadLetter>,
) {
    tracing::warn!(model = M::NAME, event = %id, %reason, "event sent to the dead letters");
    dead.push(DeadLetter {
        event: id,
        reason,
        payload: payload.to_vec(),
    });
}

/// Combines the deltas of one event that share a key (few per event: a
/// quadratic scan beats hashing).
fn collapse_by_key<K: PartialEq, S: Semigroup>(items: &mut Vec<(K, S)>) {
    let mut i = 0;
    while i < items.len() {
        if let Some(j) = items[..i].iter().position(|(k, _)| *k == items[i].0) {
            let (_, d) = items.remove(i);
            items[j].1.combine_owned(d);
        } else {
            i += 1;
        }
    }
}
