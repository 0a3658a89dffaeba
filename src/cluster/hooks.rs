//! A node's runner of one cluster hook: a consumer group on the model's
//! changes topic; per poll, pending changes coalesce per key, each key's
//! hook runs against the state read from MongoDB, the outcome is recorded,
//! and only then is the input position advanced (see
//! [`crate::hooks::runner`] for what every backend shares, and the metrics).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::Shared;
use super::placement::{Audit, Placement};
use crate::hooks::ClusterHook;
use crate::hooks::member::{ChangeRecord, ChangeSource, run_member};
use crate::hooks::runner::{
    Coverage, HookBackend, HookCounters, KeyPlan, Outcome, Plan, Versioned,
};
use crate::model::ReadModel;
use crate::store::mongo::{Generation, MongoStore, key_id};
use crate::{Error, Result};

/// A hook's view of one generation of its model's data in MongoDB: the
/// generation's states (versions above its floor), and the coverage and
/// plans kept per hook and generation (a rebuild's re-folded changes are
/// new to the hook, as on the embedded default).
struct GenerationStore<'a> {
    store: &'a MongoStore,
    generation: &'a Generation,
}

impl GenerationStore<'_> {
    fn runs(&self, hook: &str) -> String {
        format!("{hook}/{}", self.generation.name)
    }
}

impl<M: ReadModel> HookBackend<M> for GenerationStore<'_> {
    fn states(&self, keys: &[&M::Key]) -> Result<Vec<Versioned<M::State>>> {
        // A key may be asked for more than once (several plans a crash
        // left for one key): each gets the state.
        let found = self
            .store
            .get_many::<&M::Key, M::State>(self.generation, keys)?;
        // Read after a rebuild moved on, the states may be a dropped
        // generation's: none is used (the member moves within a second).
        if self.store.generation(M::NAME)?.n != self.generation.n {
            return Err(Error::Model(
                M::NAME.into(),
                "a rebuild started a new generation of its data: this hook member moves to it"
                    .into(),
            ));
        }
        keys.iter()
            .map(|k| Ok(found.get(&key_id(k)?.to_string()).cloned()))
            .collect()
    }

    fn recorded(&self, ids: &[String]) -> Result<HashSet<String>> {
        self.store.outcomes_recorded(ids)
    }

    fn record(&self, hook: &str, outcomes: &[Outcome]) -> Result<()> {
        self.store
            .record_outcomes(hook, &self.generation.name, outcomes)
    }

    fn spans_are_versions(&self) -> bool {
        false
    }

    fn scope(&self) -> &str {
        &self.generation.name
    }

    // Kept per hook *and model*, as on the embedded default.
    fn covered(&self, hook: &str, keys: &[&[u8]]) -> Result<Vec<Coverage>> {
        self.store.hook_covered(&self.runs(hook), keys)
    }

    /// One conditional write per key (its stamp): two nodes that both
    /// believe they hold a partition (a rebalance in flight) never both run
    /// a change; the loser plans it again and finds it covered.
    fn plan(&self, hook: &str, keys: &[KeyPlan<'_>]) -> Result<HashSet<Vec<u8>>> {
        self.store.plan_hook_runs(&self.runs(hook), keys)
    }

    fn planned(
        &self,
        hook: &str,
        min_age: Duration,
        mine: &dyn Fn(&[u8], Option<u32>) -> bool,
    ) -> Result<Vec<Plan>> {
        self.store.hook_plans(&self.runs(hook), min_age, mine)
    }
}

struct Ctx {
    placement: Arc<Placement>,
    /// Set when partitions were assigned: runs their last holder planned
    /// and did not record are looked for.
    assigned: std::sync::atomic::AtomicBool,
}

impl ClientContext for Ctx {
    crate::log::kafka::log_through_tracing!();
}

impl ConsumerContext for Ctx {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        // Each poll's triggers are run before the next poll: nothing is held
        // when partitions leave.
        super::placement::rebalance(consumer, err, tpl, &self.placement, |_| {});
        if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS {
            self.assigned.store(true, Ordering::Release);
        }
    }
}

/// How old a planned run must be before another node makes it: beyond any
/// run a live node is making (a run is recorded right after it is made).
const ORPHANED_PLAN: Duration = Duration::from_secs(30);

/// How often a node looks for orphaned plans of its partitions.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The changes taken in one poll, at first and at most: between the two,
/// the limit adapts so that a poll's runs take a tenth of the consumer's
/// `max.poll.interval.ms` (see [`super::pace`]); a slow hook or store never
/// makes the node leave the hook's group.
const FIRST_POLL: usize = 50;
const LARGEST_POLL: usize = 10_000;

/// Starts a node's member of a cluster hook. When a rebuild starts a new
/// generation of the model's data, the member leaves the old generation's
/// changes and follows the new one's (from its start: every key changed
/// again).
pub(super) fn start<H: ClusterHook>(
    hook: H,
    shared: Arc<Shared>,
    counters: Arc<HookCounters>,
) -> Result<JoinHandle<()>> {
    let model = <H::Model as ReadModel>::NAME;
    let generation = shared.store.generation(model)?;
    let parts = open::<H>(&shared, &generation)?;
    std::thread::Builder::new()
        .name(format!("accrete-hook-{}", H::NAME))
        .spawn(move || {
            super::generation::follow(
                H::NAME,
                (generation, parts),
                &|| shared.stop.load(Ordering::Acquire),
                &|_| {},
                |parts, generation| run(&hook, parts, &shared, &counters, generation),
                |generation| open::<H>(&shared, generation),
                |_| {},
            );
        })
        .map_err(|e| Error::io("spawn a hook thread", ".", e))
}

/// A member's consumer of one generation's changes topic.
struct Parts {
    consumer: BaseConsumer<Ctx>,
    placement: Arc<Placement>,
    audit: Audit,
    reader: String,
    topic: String,
}

fn open<H: ClusterHook>(shared: &Shared, generation: &Generation) -> Result<Parts> {
    let config = &shared.config;
    let topic = config.changes_topic(&generation.name);
    config.kafka.create_topic(&topic, config.partitions)?;
    let reader = crate::names::hook_reader(H::NAME, &generation.name);
    let placement = Arc::new(Placement::new(
        shared.store.clone(),
        config,
        reader.clone(),
        topic.clone(),
    ));
    let consumer = config.kafka.consumer(
        &crate::names::cluster_hook_group(&config.group_prefix, H::NAME, generation.n),
        Ctx {
            placement: placement.clone(),
            assigned: std::sync::atomic::AtomicBool::new(true),
        },
        false,
    )?;
    consumer
        .subscribe(&[&topic])
        .map_err(|e| Error::kafka("subscribe", e))?;
    let audit = Audit::new(
        shared.store.clone(),
        reader.clone(),
        config.node_id.clone(),
        topic.clone(),
        config.partitions,
    );
    Ok(Parts {
        consumer,
        placement,
        audit,
        reader,
        topic,
    })
}

/// Runs the member on one generation until the node stops (`None`) or a
/// rebuild starts a newer generation (returned).
fn run<H: ClusterHook>(
    hook: &H,
    Parts {
        consumer,
        placement,
        audit,
        reader,
        topic,
    }: Parts,
    shared: &Shared,
    counters: &HookCounters,
    generation: &Generation,
) -> Option<Generation> {
    let model = <H::Model as ReadModel>::NAME;
    let checked = std::cell::Cell::new(Instant::now());
    let rebuilt: std::cell::RefCell<Option<Generation>> = std::cell::RefCell::new(None);
    let stopping = || {
        if shared.stop.load(Ordering::Acquire) || rebuilt.borrow().is_some() {
            return true;
        }
        let mut at = checked.get();
        let next = super::generation::newer(shared, model, generation.n, &mut at);
        checked.set(at);
        let found = next.is_some();
        *rebuilt.borrow_mut() = next;
        found
    };
    let pace = super::pace::Pace::new(
        FIRST_POLL,
        1,
        LARGEST_POLL,
        super::pace::batch_target(shared.config.kafka.max_poll_interval()),
    );
    let mut source = KafkaChanges {
        hook: H::NAME,
        consumer,
        placement,
        audit,
        reader,
        topic,
        shared,
        pace,
        polled: 0,
        ends: HashMap::new(),
        held: HashSet::new(),
        next_sweep: Instant::now() + SWEEP_EVERY,
    };
    let backend = GenerationStore {
        store: &shared.store,
        generation,
    };
    run_member(hook, &backend, counters, &mut source, &stopping);
    super::placement::leave_group(&source.consumer);
    source.audit.release();
    rebuilt.into_inner()
}

/// A node's share of the changes topic, through the hook's consumer group:
/// the partitions placed on this node, positions kept in MongoDB.
struct KafkaChanges<'a> {
    hook: &'static str,
    consumer: BaseConsumer<Ctx>,
    placement: Arc<Placement>,
    audit: Audit,
    reader: String,
    topic: String,
    shared: &'a Shared,
    pace: super::pace::Pace,
    /// Messages the last read polled (accepted or not): what the pace
    /// measures.
    polled: usize,
    /// Where each partition's read reached.
    ends: HashMap<u32, u64>,
    /// The partitions the consumer holds, as of the last read.
    held: HashSet<u32>,
    next_sweep: Instant,
}

impl ChangeSource for KafkaChanges<'_> {
    fn read(&mut self, f: &mut dyn FnMut(ChangeRecord<'_>)) -> Result<usize> {
        self.polled = 0;
        let mut taken = 0;
        let (placement, ends, polled) = (&self.placement, &mut self.ends, &mut self.polled);
        super::placement::drain(&self.consumer, self.pace.limit(), self.hook, |msg| {
            *polled += 1;
            placement.take(msg, |r| {
                ends.insert(r.partition, r.offset + 1);
                f(ChangeRecord {
                    partition: r.partition,
                    key: r.key,
                    payload: r.payload,
                    published_ms: r.timestamp_ms,
                });
                taken += 1;
            });
        });
        self.placement.reseek(&self.consumer);
        self.audit.check(&self.consumer);
        self.held = self
            .consumer
            .assignment()
            .map(|a| {
                a.elements_for_topic(&self.topic)
                    .iter()
                    .map(|e| e.partition() as u32)
                    .collect()
            })
            .unwrap_or_default();
        Ok(taken)
    }

    /// Now and then (and soon after an assignment), the runs a former
    /// holder of these partitions planned and did not record are made
    /// first, once they are old enough that no live node is making them: a
    /// new member's assignment can arrive while the former holder is still
    /// running what it planned (seen on tansu), and taking fresh plans then
    /// ran them twice.
    fn leftovers(&mut self, _taken: usize) -> Option<Duration> {
        let assigned = self
            .consumer
            .context()
            .assigned
            .swap(false, Ordering::AcqRel);
        if assigned {
            self.next_sweep = self.next_sweep.min(Instant::now() + ORPHANED_PLAN);
        }
        (Instant::now() >= self.next_sweep).then(|| {
            self.next_sweep = Instant::now() + SWEEP_EVERY;
            ORPHANED_PLAN
        })
    }

    fn owns(&self, _: &[u8], partition: Option<u32>) -> bool {
        partition.is_some_and(|p| self.held.contains(&p))
    }

    fn ran(&mut self, took: Duration) {
        self.pace.observe(self.polled, took);
    }

    fn commit(&mut self) {
        let ends: Vec<(u32, u64)> = self.ends.drain().collect();
        if let Err(e) = self.shared.store.advance_positions(&self.reader, &ends) {
            // Not advanced: the triggers are delivered again; their recorded
            // outcomes skip them.
            tracing::error!(hook = self.hook, error = %e, "could not record the hook's position");
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (p, end) in &ends {
            let _ = tpl.add_partition_offset(&self.topic, *p as i32, Offset::Offset(*end as i64));
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(hook = self.hook, error = %e, "offset commit failed (positions are kept in MongoDB)");
        }
    }
}
