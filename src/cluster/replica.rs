//! A node's replica of one read model: loaded from MongoDB, grafted from
//! the changes topic.
//!
//! Each entry keeps, per events partition, the end of the last range it
//! holds (as the stored document's guard does). A change whose ranges all
//! start at or after the entry's positions is grafted (combined in); one
//! whose ranges all end at or before them is a copy and is dropped; anything
//! else (a change re-published after a crash that overlaps what the replica
//! has) makes the replica read the key's document again, which holds every
//! published change since changes are published after their write.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use accrete_monoids::Semigroup;
use bson::doc;
use parking_lot::RwLock;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::placement::{Placement, READ_BACK};
use super::{Counters, Shared};
use crate::codec::Written;
use crate::model::ReadModel;
use crate::store::mongo::{Generation, decode_doc, key_id, positions};
use crate::{Error, Result};

struct Entry<S> {
    state: S,
    positions: Vec<(u32, u64)>,
}

impl<S> Entry<S> {
    fn position(&self, partition: u32) -> u64 {
        self.positions
            .iter()
            .find(|(p, _)| *p == partition)
            .map_or(0, |(_, e)| *e)
    }

    fn advance(&mut self, partition: u32, end: u64) {
        match self.positions.iter_mut().find(|(p, _)| *p == partition) {
            Some((_, e)) => *e = (*e).max(end),
            None => self.positions.push((partition, end)),
        }
    }
}

/// A node hook: `(key, delta, state after)`.
pub(crate) type NodeHook<M> = Box<
    dyn Fn(&<M as ReadModel>::Key, &<M as ReadModel>::State, &<M as ReadModel>::State)
        + Send
        + Sync,
>;

/// The in-memory copy of a model on one node.
pub(crate) struct Replica<M: ReadModel> {
    entries: RwLock<HashMap<M::Key, Entry<M::State>>>,
    hooks: RwLock<Vec<NodeHook<M>>>,
}

impl<M: ReadModel> Replica<M> {
    pub(crate) fn add_hook(&self, hook: NodeHook<M>) {
        self.hooks.write().push(hook);
    }

    fn has_hooks(&self) -> bool {
        !self.hooks.read().is_empty()
    }

    /// Runs the node hooks for a grafted change.
    fn run_hooks(&self, key: &M::Key, delta: &M::State) {
        let hooks = self.hooks.read();
        if hooks.is_empty() {
            return;
        }
        let Some(state) = self.get(key) else { return };
        for h in hooks.iter() {
            // A panicking node hook must not stop the replica.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h(key, delta, &state)))
                .is_err()
            {
                tracing::error!(model = M::NAME, "a node hook panicked");
            }
        }
    }

    /// Whether the replica has each key (under one lock): a key it has not
    /// seen may have no document yet.
    pub(crate) fn has_each<'a>(&self, keys: impl Iterator<Item = &'a M::Key>) -> Vec<bool> {
        let entries = self.entries.read();
        keys.map(|k| entries.contains_key(k)).collect()
    }

    pub(crate) fn get(&self, key: &M::Key) -> Option<M::State> {
        self.entries.read().get(key).map(|e| e.state.clone())
    }

    pub(crate) fn snapshot(&self) -> Vec<(M::Key, M::State)> {
        let entries = self.entries.read();
        let sorted: BTreeMap<&M::Key, &M::State> =
            entries.iter().map(|(k, e)| (k, &e.state)).collect();
        sorted
            .into_iter()
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect()
    }

    /// Reads documents (from the primary: at least as new as every
    /// published change) and replaces their entries. With `requested`,
    /// those keys are being re-read: one without a document (its model was
    /// dropped) leaves the replica; without, the whole model is read and
    /// replaces every entry (once read: a failed load leaves the replica as
    /// it was). Returns how many documents were read.
    fn load(
        &self,
        shared: &Shared,
        generation: &str,
        filter: bson::Document,
        requested: Option<&[&M::Key]>,
    ) -> Result<usize> {
        let cursor = shared
            .store
            .states(generation)
            .find(filter)
            .selection_criteria(mongodb::options::SelectionCriteria::ReadPreference(
                mongodb::options::ReadPreference::Primary,
            ))
            .run()
            .map_err(|e| Error::mongo("load replica", e))?;
        // Read everything first: reads of the replica wait only for the swap.
        let mut found = Vec::new();
        for doc in cursor {
            let doc = doc.map_err(|e| Error::mongo("load replica", e))?;
            let (key, state) = decode_doc::<M::Key, M::State>(&doc)?;
            found.push((key, state, positions(&doc)));
        }
        let n = found.len();
        let mut entries = self.entries.write();
        match requested {
            Some(keys) => {
                for key in keys {
                    entries.remove(*key);
                }
            }
            None => entries.clear(),
        }
        for (key, state, positions) in found {
            entries.insert(
                key,
                Entry {
                    state,
                    positions: positions.into_iter().collect(),
                },
            );
        }
        Ok(n)
    }

    /// Grafts one change; returns `false` when the key must be read again.
    fn graft(&self, key: M::Key, change: Written<M::State>) -> Graft {
        let mut entries = self.entries.write();
        let entry = entries.entry(key).or_insert_with(|| Entry {
            state: <M::State as accrete_monoids::Monoid>::identity(),
            positions: Vec::new(),
        });
        if change.idempotent {
            entry.state.combine_owned(change.delta);
            // As the document's positions do (`$max`).
            for r in &change.ranges {
                entry.advance(r.partition, r.end);
            }
            return Graft::Applied;
        }
        let fresh = change
            .ranges
            .iter()
            .all(|r| r.from >= entry.position(r.partition));
        let seen = change
            .ranges
            .iter()
            .all(|r| r.end <= entry.position(r.partition));
        if seen {
            return Graft::Seen;
        }
        if !fresh {
            return Graft::Refetch;
        }
        entry.state.combine_owned(change.delta);
        for r in &change.ranges {
            entry.advance(r.partition, r.end);
        }
        Graft::Applied
    }
}

/// What grafting a change did.
enum Graft {
    Applied,
    /// The replica has it already.
    Seen,
    /// It overlaps what the replica has: read the key again.
    Refetch,
}

/// Loads the replica and starts following the changes topic from the end
/// offsets it had before the load. When a rebuild starts a new generation
/// of the model's data, the replica empties, loads the new generation and
/// follows its changes topic instead.
pub(super) fn start<M: ReadModel>(
    shared: Arc<Shared>,
    counters: Arc<Counters>,
) -> Result<(Arc<Replica<M>>, Tracked, JoinHandle<()>)> {
    let partitions = shared.config.partitions as usize;
    let replica = Arc::new(Replica::<M> {
        entries: RwLock::new(HashMap::new()),
        hooks: RwLock::new(Vec::new()),
    });
    let tracked = Tracked {
        position: Arc::new((0..partitions).map(|_| AtomicU64::new(0)).collect()),
        high: Arc::new((0..partitions).map(|_| AtomicU64::new(0)).collect()),
        generation: Arc::new(AtomicU64::new(0)),
    };
    let generation = shared.store.generation(M::NAME)?;
    let following = open(&shared, &replica, &tracked, &generation)?;
    let thread = {
        let replica = replica.clone();
        let tracked = tracked.clone();
        std::thread::Builder::new()
            .name(format!("accrete-replica-{}", M::NAME))
            .spawn(move || {
                super::generation::follow(
                    M::NAME,
                    (generation, following),
                    &|| shared.stop.load(Ordering::Acquire),
                    &|e| counters.health.failed(0, M::NAME, e),
                    |following, generation| {
                        follow(
                            following,
                            &replica,
                            &tracked.position,
                            &shared,
                            &counters,
                            generation,
                        )
                    },
                    |generation| open(&shared, &replica, &tracked, generation),
                    |_| {},
                );
            })
            .map_err(|e| Error::io("spawn a replica thread", ".", e))?
    };
    Ok((replica, tracked, thread))
}

/// The replica's consumer of one generation's changes topic.
struct Following {
    consumer: BaseConsumer<Ends>,
    placement: Placement,
}

/// Empties the replica, loads `generation` from MongoDB and assigns a
/// consumer of its changes topic from the ends it had before the load.
fn open<M: ReadModel>(
    shared: &Arc<Shared>,
    replica: &Replica<M>,
    tracked: &Tracked,
    generation: &Generation,
) -> Result<Following> {
    let config = &shared.config;
    let topic = config.changes_topic(&generation.name);
    config.kafka.create_topic(&topic, config.partitions)?;
    // Changes before these offsets are in MongoDB already (published after
    // their write): load, then follow from here.
    let starts = config.kafka.end_offsets(&topic, config.partitions)?;
    let loaded = replica.load(shared, &generation.name, doc! {}, None)?;
    tracing::info!(
        model = M::NAME,
        keys = loaded,
        generation = generation.n,
        "replica loaded from MongoDB"
    );
    for (slot, s) in tracked.high.iter().zip(&starts) {
        slot.store(*s, Ordering::Release);
    }
    for (slot, s) in tracked.position.iter().zip(&starts) {
        slot.store(*s, Ordering::Release);
    }
    let mut client = config.kafka.client_config();
    config.kafka.fetch_defaults(&mut client);
    let consumer: BaseConsumer<Ends> = client
        .set(
            "group.id",
            crate::names::cluster_replica_group(&config.group_prefix, &config.node_id),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("statistics.interval.ms", "250")
        .create_with_context(Ends {
            topic: topic.clone(),
            high: tracked.high.clone(),
        })
        .map_err(|e| Error::kafka("create consumer", e))?;
    // A little before: some brokers skip records when a fetch starts inside
    // a record batch (see placement). Changes read again are dropped as
    // seen.
    let placement = Placement::new(shared.store.clone(), config, String::new(), topic.clone());
    let mut tpl = TopicPartitionList::new();
    for (p, at) in starts.iter().enumerate() {
        placement.start_at(p as u32, *at);
        tpl.add_partition_offset(
            &topic,
            p as i32,
            Offset::Offset(at.saturating_sub(READ_BACK) as i64),
        )
        .map_err(|e| Error::kafka("assign", e))?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| Error::kafka("assign", e))?;
    tracked.generation.store(generation.n, Ordering::Release);
    Ok(Following {
        consumer,
        placement,
    })
}

/// Where a replica stands on the changes topic, per partition: the next
/// offset it will graft, and the highest end the broker reported in fetch
/// responses (some brokers under-report ends when asked directly).
#[derive(Clone)]
pub(crate) struct Tracked {
    pub(crate) position: Arc<Vec<AtomicU64>>,
    pub(crate) high: Arc<Vec<AtomicU64>>,
    /// The generation of the model's data the replica follows.
    pub(crate) generation: Arc<AtomicU64>,
}

/// Learns the changes topic's ends from the consumer's statistics (the
/// ends of fetch responses).
struct Ends {
    topic: String,
    high: Arc<Vec<AtomicU64>>,
}

impl rdkafka::ClientContext for Ends {
    crate::log::kafka::log_through_tracing!();
    fn stats(&self, statistics: rdkafka::Statistics) {
        record_ends(&statistics, &self.topic, &self.high);
    }
}

/// Raises `high` to the ends of `topic`'s partitions reported in a
/// consumer's statistics (the high watermarks of its fetch responses: never
/// beyond the true ends, so a stale one only understates them).
pub(super) fn record_ends(statistics: &rdkafka::Statistics, topic: &str, high: &[AtomicU64]) {
    if let Some(t) = statistics.topics.get(topic) {
        for (p, part) in &t.partitions {
            if let (Ok(p), true) = (usize::try_from(*p), part.hi_offset > 0)
                && let Some(slot) = high.get(p)
            {
                slot.fetch_max(part.hi_offset as u64, Ordering::AcqRel);
            }
        }
    }
}

impl rdkafka::consumer::ConsumerContext for Ends {}

/// Follows one generation's changes until the node stops (`None`) or a
/// rebuild starts a newer generation (returned).
fn follow<M: ReadModel>(
    Following {
        consumer,
        placement,
    }: Following,
    replica: &Replica<M>,
    position: &[AtomicU64],
    shared: &Shared,
    counters: &Counters,
    generation: &Generation,
) -> Option<Generation> {
    let mut refetch: Vec<(M::Key, Option<M::State>)> = Vec::new();
    let mut advanced: Vec<(usize, u64)> = Vec::new();
    let mut checked = std::time::Instant::now();
    while !shared.stop.load(Ordering::Acquire) {
        if let Some(next) = super::generation::newer(shared, M::NAME, generation.n, &mut checked) {
            return Some(next);
        }
        // Take what has arrived (up to a bound), then re-read the keys that
        // need it in one query, then publish the new positions.
        super::placement::drain(&consumer, 10_000, M::NAME, |msg| {
            // Only the next record of each partition (after what the
            // consumer skipped): earlier ones are read again after a
            // placement.
            placement.take(msg, |r| {
                advanced.push((r.partition as usize, r.offset + 1));
                let decoded = decode::<M>(r.key, r.payload);
                match decoded {
                    Ok((key, change)) => {
                        counters.grafted.fetch_add(1, Ordering::Relaxed);
                        // The delta is kept only for node hooks to see.
                        let delta = replica.has_hooks().then(|| change.delta.clone());
                        let outcome = replica.graft(key.clone(), change);
                        match (outcome, delta) {
                            (Graft::Applied, Some(delta)) => replica.run_hooks(&key, &delta),
                            (Graft::Applied | Graft::Seen, _) => {}
                            (Graft::Refetch, delta) => refetch.push((key, delta)),
                        }
                    }
                    Err(e) => {
                        tracing::error!(model = M::NAME, error = %e, "undecodable change skipped")
                    }
                }
            });
        });
        if !refetch.is_empty() {
            let ids: Result<Vec<_>> = refetch.iter().map(|(key, _)| key_id(key)).collect();
            let keys: Vec<&M::Key> = refetch.iter().map(|(key, _)| key).collect();
            let result = ids.and_then(|ids| {
                replica.load(
                    shared,
                    &generation.name,
                    doc! { "_id": { "$in": ids } },
                    Some(&keys),
                )
            });
            match result {
                Ok(found) => {
                    let distinct = refetch
                        .iter()
                        .map(|(k, _)| k)
                        .collect::<std::collections::HashSet<_>>()
                        .len();
                    if found < distinct {
                        // Published changes are written first: only a
                        // dropped model explains this.
                        tracing::warn!(
                            model = M::NAME,
                            keys = distinct,
                            found,
                            "keys to re-read are missing from MongoDB"
                        );
                    }
                    counters
                        .refetched
                        .fetch_add(refetch.len() as u64, Ordering::Relaxed);
                    // The replica now holds these changes: node hooks run.
                    for (key, delta) in refetch.drain(..) {
                        if let Some(delta) = delta {
                            replica.run_hooks(&key, &delta);
                        }
                    }
                }
                Err(e) => {
                    // Positions are not advanced: the replica is not yet as
                    // new as these changes. Try again.
                    tracing::warn!(model = M::NAME, error = %e, "replica could not re-read keys");
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
            }
        }
        placement.reseek(&consumer);
        for (p, next) in advanced.drain(..) {
            if let Some(slot) = position.get(p) {
                slot.fetch_max(next, Ordering::AcqRel);
            }
        }
    }
    None
}

fn decode<M: ReadModel>(key: &[u8], payload: &[u8]) -> Result<(M::Key, Written<M::State>)> {
    crate::codec::decode_change(key, payload).map(|(key, (_, written))| (key, written))
}

#[cfg(test)]
mod tests {
    //! Issue #10, item 6: changes of one key published by two writers can
    //! reach the changes topic in either order (each node publishes after
    //! its own write, nothing orders two nodes' publications, and cluster
    //! changes carry no version). The replica grafts by per-partition ranges
    //! into a commutative state, so either order gives the same replica.
    use super::*;
    use crate::codec::Range;
    use crate::model::Deltas;
    use crate::monoids::Sum;

    struct Totals;

    impl ReadModel for Totals {
        const NAME: &'static str = "totals";
        type Event = i64;
        type Key = String;
        type State = Sum<i64>;
        fn project(
            &self,
            e: &i64,
            out: &mut Deltas<String, Sum<i64>>,
        ) -> std::result::Result<(), String> {
            out.push("k".into(), Sum(*e));
            Ok(())
        }
    }

    fn replica() -> Replica<Totals> {
        Replica {
            entries: RwLock::new(HashMap::new()),
            hooks: RwLock::new(Vec::new()),
        }
    }

    fn change(partition: u32, from: u64, end: u64, delta: i64) -> Written<Sum<i64>> {
        Written {
            ranges: vec![Range {
                partition,
                from,
                end,
            }],
            idempotent: false,
            delta: Sum(delta),
        }
    }

    fn state(r: &Replica<Totals>) -> (Option<Sum<i64>>, Vec<(u32, u64)>) {
        let entries = r.entries.read();
        let e = entries.get("k");
        let mut positions = e.map(|e| e.positions.clone()).unwrap_or_default();
        positions.sort();
        (e.map(|e| e.state), positions)
    }

    /// Node A writes the key from partition 0 (version 1), node B from
    /// partition 1 (version 2); B's change is published first.
    #[test]
    fn changes_of_one_key_from_two_writers_graft_alike_in_either_order() {
        let a = change(0, 0, 10, 5);
        let b = change(1, 0, 4, 7);
        let in_order = replica();
        assert!(matches!(
            in_order.graft("k".into(), a.clone()),
            Graft::Applied
        ));
        assert!(matches!(
            in_order.graft("k".into(), b.clone()),
            Graft::Applied
        ));
        let reordered = replica();
        assert!(matches!(reordered.graft("k".into(), b), Graft::Applied));
        assert!(matches!(reordered.graft("k".into(), a), Graft::Applied));
        assert_eq!(state(&in_order), state(&reordered));
        assert_eq!(state(&in_order).0, Some(Sum(12)));
    }

    /// One partition: a deposed writer's late change (its successor read the
    /// batch again and republished it before its own) is dropped as seen.
    #[test]
    fn a_late_change_of_a_deposed_writer_is_dropped_as_seen() {
        let r = replica();
        // The successor: the deposed writer's part again, then its own.
        assert!(matches!(
            r.graft("k".into(), change(0, 0, 10, 5)),
            Graft::Applied
        ));
        assert!(matches!(
            r.graft("k".into(), change(0, 10, 20, 3)),
            Graft::Applied
        ));
        // The deposed writer's own publication, late.
        assert!(matches!(
            r.graft("k".into(), change(0, 0, 10, 5)),
            Graft::Seen
        ));
        assert_eq!(state(&r), (Some(Sum(8)), vec![(0, 20)]));
    }
}
