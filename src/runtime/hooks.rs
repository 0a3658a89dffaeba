//! Hooks on the embedded default. One machine is the whole cluster: a
//! cluster hook's "nodes" are local worker threads splitting the changes
//! topic's partitions (a key's changes stay on one partition, so one key's
//! runs are in order), reading from the hook's consumer group in the log
//! and committing only after the batch's outcomes are recorded in the store.
//! Node hooks follow the changes topic from when they were added.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use accrete_monoids::Monoid;

use super::worker::read_records;
use crate::codec::decode_change;
use crate::hooks::ClusterHook;
use crate::hooks::member::{ChangeRecord, ChangeSource, run_member};
use crate::hooks::runner::{
    Coverage, HookBackend, HookCounters, KeyPlan, Outcome, Plan, Versioned,
};
use crate::log::{Log, RecordBatch};
use crate::model::ReadModel;
use crate::names::hook_group;
use crate::store::EmbeddedStore;
use crate::{Error, Result};

impl<M: ReadModel> HookBackend<M> for EmbeddedStore {
    fn states(&self, keys: &[&M::Key]) -> Result<Vec<Versioned<M::State>>> {
        let encoded = keys
            .iter()
            .map(|key| {
                postcard::to_stdvec(key).map_err(|e| Error::Encode {
                    what: "key",
                    detail: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let encoded: Vec<&[u8]> = encoded.iter().map(Vec::as_slice).collect();
        Ok(read_records::<M::State>(self, M::NAME, &encoded)?
            .into_iter()
            .map(|rec| rec.map(|rec| (rec.state, rec.version)))
            .collect())
    }

    fn recorded(&self, ids: &[String]) -> Result<HashSet<String>> {
        self.hook_outcomes_recorded(ids)
    }

    fn record(&self, hook: &str, outcomes: &[Outcome]) -> Result<()> {
        self.record_hook_outcomes(hook, outcomes)
    }

    // Coverage and plans are kept per hook *and model*: a hook name may be
    // used again for another model (idempotency keys and consumer groups
    // carry the model too).
    fn spans_are_versions(&self) -> bool {
        true
    }

    fn covered(&self, hook: &str, keys: &[&[u8]]) -> Result<Vec<Coverage>> {
        Ok(self
            .hook_covered(&format!("{hook}/{}", M::NAME), keys)?
            .into_iter()
            .map(|set| Coverage { set, stamp: None })
            .collect())
    }

    /// One transaction: no other writer plans these keys (a key's changes
    /// stay on one partition, which one member reads).
    fn plan(&self, hook: &str, keys: &[KeyPlan<'_>]) -> Result<HashSet<Vec<u8>>> {
        let covered: Vec<_> = keys.iter().map(|k| (k.key, &k.coverage.set)).collect();
        let plans: Vec<Plan> = keys.iter().filter_map(|k| k.run.cloned()).collect();
        self.plan_hook_runs(&format!("{hook}/{}", M::NAME), &covered, &plans)?;
        Ok(HashSet::new())
    }

    /// Plans here are only ever a crashed process's (the directory has one
    /// process): any age.
    fn planned(
        &self,
        hook: &str,
        _min_age: Duration,
        mine: &dyn Fn(&[u8], Option<u32>) -> bool,
    ) -> Result<Vec<Plan>> {
        // Plans are keyed by idempotency key: `<hook>/<model>/…`.
        self.hook_plans(&format!("{hook}/{}", M::NAME), &|key| mine(key, None))
    }
}

/// What one hook member needs.
pub(crate) struct Member<H> {
    pub(crate) hook: Arc<H>,
    pub(crate) log: Arc<dyn Log>,
    pub(crate) store: Arc<EmbeddedStore>,
    pub(crate) counters: Arc<HookCounters>,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) partitions: Vec<u32>,
    /// The changes topic's partition count.
    pub(crate) change_partitions: u32,
    pub(crate) idle: Duration,
}

/// The most changes one member takes per partition and round.
const MAX_PER_READ: usize = 4_096;

impl<H: ClusterHook> Member<H> {
    pub(crate) fn spawn(self, member: usize) -> Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name(format!("accrete-hook-{}-{member}", H::NAME))
            .spawn(move || {
                let stopping = || self.stop.load(Ordering::Acquire);
                let mut source = LogChanges {
                    log: &*self.log,
                    topic: super::changes_topic(<H::Model as ReadModel>::NAME),
                    group: hook_group(H::NAME),
                    positions: vec![None; self.partitions.len()],
                    ends: Vec::new(),
                    records: RecordBatch::new(),
                    partitions: &self.partitions,
                    change_partitions: self.change_partitions,
                    idle: self.idle,
                };
                run_member(
                    &*self.hook,
                    &*self.store,
                    &self.counters,
                    &mut source,
                    &stopping,
                );
            })
            .map_err(|e| Error::io("spawn a hook thread", ".", e))
    }
}

/// A hook member's partitions of the changes topic in the embedded log,
/// read from the hook's consumer group.
struct LogChanges<'a> {
    log: &'a dyn Log,
    topic: String,
    group: String,
    /// Per owned partition: where the next read starts, once known.
    positions: Vec<Option<u64>>,
    /// What the last read reached: `(index, partition, end)`.
    ends: Vec<(usize, u32, u64)>,
    records: RecordBatch,
    partitions: &'a [u32],
    /// The changes topic's partition count.
    change_partitions: u32,
    idle: Duration,
}

impl ChangeSource for LogChanges<'_> {
    fn read(&mut self, f: &mut dyn FnMut(ChangeRecord<'_>)) -> Result<usize> {
        self.ends.clear();
        let mut taken = 0;
        for (i, &p) in self.partitions.iter().enumerate() {
            let from = match self.positions[i] {
                Some(at) => at,
                None => {
                    *self.positions[i].insert(self.log.committed(&self.group, &self.topic, p)?)
                }
            };
            self.log
                .read(&self.topic, p, from, MAX_PER_READ, &mut self.records)?;
            for r in self.records.iter() {
                f(ChangeRecord {
                    partition: p,
                    key: r.key,
                    payload: r.payload,
                    published_ms: r.timestamp,
                });
                taken += 1;
            }
            if let Some(end) = self.records.next_offset() {
                self.ends.push((i, p, end));
            }
        }
        Ok(taken)
    }

    /// Plans here are only ever a crashed process's (the directory has one
    /// process): looked for before every batch, whatever their age.
    fn leftovers(&mut self, taken: usize) -> Option<Duration> {
        (taken > 0).then_some(Duration::ZERO)
    }

    fn owns(&self, key: &[u8], _: Option<u32>) -> bool {
        self.partitions
            .contains(&crate::log::partition_for(key, self.change_partitions))
    }

    fn commit(&mut self) {
        for (i, p, end) in self.ends.drain(..) {
            match self.log.commit(&self.group, &self.topic, p, end) {
                Ok(()) => self.positions[i] = Some(end),
                Err(e) => {
                    // Read again from the committed position: the recorded
                    // outcomes skip what already ran.
                    tracing::error!(group = %self.group, error = %e, "could not commit the hook's position");
                    self.positions[i] = None;
                }
            }
        }
    }

    fn idle(&mut self) {
        std::thread::sleep(self.idle);
    }
}

/// A node hook: `(key, delta, state after)`.
pub(crate) type NodeHookFn<M> = Box<
    dyn Fn(&<M as ReadModel>::Key, &<M as ReadModel>::State, &<M as ReadModel>::State)
        + Send
        + Sync,
>;

/// Follows a model's changes from `starts` and calls `f` for each, with the
/// state read from the store (at least as new as the change).
pub(crate) fn spawn_node_hook<M: ReadModel>(
    log: Arc<dyn Log>,
    store: Arc<EmbeddedStore>,
    starts: Vec<u64>,
    stop: Arc<AtomicBool>,
    idle: Duration,
    f: NodeHookFn<M>,
) -> Result<JoinHandle<()>> {
    let topic = super::changes_topic(M::NAME);
    std::thread::Builder::new()
        .name(format!("accrete-node-hook-{}", M::NAME))
        .spawn(move || {
            let mut positions = starts;
            let mut records = RecordBatch::new();
            while !stop.load(Ordering::Acquire) {
                let mut any = false;
                for (p, at) in positions.iter_mut().enumerate() {
                    if let Err(e) = log.read(&topic, p as u32, *at, MAX_PER_READ, &mut records) {
                        tracing::error!(model = M::NAME, error = %e, "node hook: reading changes failed");
                        continue;
                    }
                    for r in records.iter() {
                        let (key, delta) = match decode_change::<M::Key, M::State>(r.key, r.payload) {
                            Ok((key, (_, written))) => (key, written.delta),
                            Err(e) => {
                                tracing::error!(model = M::NAME, error = %e, "node hook: undecodable change skipped");
                                continue;
                            }
                        };
                        let state = read_records::<M::State>(&store, M::NAME, &[r.key])
                            .ok()
                            .and_then(|mut v| v.pop().flatten())
                            .map_or_else(M::State::identity, |rec| rec.state);
                        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            f(&key, &delta, &state)
                        }))
                        .is_err()
                        {
                            tracing::error!(model = M::NAME, "a node hook panicked");
                        }
                    }
                    if let Some(end) = records.next_offset() {
                        *at = end;
                        any = true;
                    }
                }
                if !any {
                    std::thread::sleep(idle);
                }
            }
        })
        .map_err(|e| Error::io("spawn a node hook thread", ".", e))
}
