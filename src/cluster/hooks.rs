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
use rdkafka::message::Message;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::Shared;
use super::placement::{Audit, Placement};
use crate::codec::decode_change_payload;
use crate::hooks::ClusterHook;
use crate::hooks::runner::{
    Batch, Coverage, HookBackend, HookCounters, KeyPlan, Outcome, Plan, State, Versioned,
    event_span, run_until_recorded,
};
use crate::model::ReadModel;
use crate::store::mongo::{MongoStore, key_id};
use crate::{Error, Result};

impl<M: ReadModel> HookBackend<M> for MongoStore {
    fn states(&self, keys: &[&M::Key]) -> Result<Vec<Versioned<M::State>>> {
        let mut found = self.get_many::<&M::Key, M::State>(M::NAME, keys)?;
        keys.iter()
            .map(|k| Ok(found.remove(&key_id(k)?.to_string())))
            .collect()
    }

    fn recorded(&self, ids: &[String]) -> Result<HashSet<String>> {
        self.outcomes_recorded(ids)
    }

    fn record(&self, hook: &str, outcomes: &[Outcome]) -> Result<()> {
        self.record_outcomes(hook, M::NAME, outcomes)
    }

    fn spans_are_versions(&self) -> bool {
        false
    }

    // Kept per hook *and model*, as on the embedded default.
    fn covered(&self, hook: &str, keys: &[&[u8]]) -> Result<Vec<Coverage>> {
        self.hook_covered(&format!("{hook}/{}", M::NAME), keys)
    }

    /// One conditional write per key (its stamp): two nodes that both
    /// believe they hold a partition (a rebalance in flight) never both run
    /// a change; the loser plans it again and finds it covered.
    fn plan(&self, hook: &str, keys: &[KeyPlan<'_>]) -> Result<HashSet<Vec<u8>>> {
        self.plan_hook_runs(&format!("{hook}/{}", M::NAME), keys)
    }

    fn planned(
        &self,
        hook: &str,
        min_age: Duration,
        mine: &dyn Fn(&[u8], Option<u32>) -> bool,
    ) -> Result<Vec<Plan>> {
        self.hook_plans(&format!("{hook}/{}", M::NAME), min_age, mine)
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

pub(super) fn start<H: ClusterHook>(
    hook: H,
    shared: Arc<Shared>,
    counters: Arc<HookCounters>,
) -> Result<JoinHandle<()>> {
    let config = &shared.config;
    let model = <H::Model as ReadModel>::NAME;
    let topic = config.changes_topic(model);
    let reader = crate::names::hook_reader(H::NAME);
    let placement = Arc::new(Placement::new(
        shared.store.clone(),
        reader.clone(),
        topic.clone(),
    ));
    let consumer = config.kafka.consumer(
        &crate::names::cluster_hook_group(&config.group_prefix, H::NAME),
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
    std::thread::Builder::new()
        .name(format!("accrete-hook-{}", H::NAME))
        .spawn(move || {
            run(
                hook, consumer, placement, audit, reader, topic, shared, counters,
            )
        })
        .map_err(|e| Error::io("spawn a hook thread", ".", e))
}

#[allow(clippy::too_many_arguments)]
fn run<H: ClusterHook>(
    hook: H,
    consumer: BaseConsumer<Ctx>,
    placement: Arc<Placement>,
    mut audit: Audit,
    reader: String,
    topic: String,
    shared: Arc<Shared>,
    counters: Arc<HookCounters>,
) {
    let stopping = || shared.stop.load(Ordering::Acquire);
    let mut next_sweep = Instant::now() + SWEEP_EVERY;
    let mut pace = super::pace::Pace::new(
        FIRST_POLL,
        1,
        LARGEST_POLL,
        super::pace::batch_target(shared.config.kafka.max_poll_interval()),
    );
    while !stopping() {
        let mut batch = Batch::new();
        let mut ends: HashMap<u32, u64> = HashMap::new();
        let mut taken = 0;
        super::placement::drain(&consumer, pace.limit(), H::NAME, |msg| {
            taken += 1;
            let p = msg.partition() as u32;
            let offset = msg.offset() as u64;
            if !placement.accept(p, offset) {
                return;
            }
            ends.insert(p, offset + 1);
            let published_ms = msg.timestamp().to_millis().unwrap_or(0);
            match decode_change_payload::<State<H>>(msg.payload().unwrap_or_default()) {
                // A change is identified by the event ranges it covers.
                Ok((_, change)) => batch.add(
                    H::NAME,
                    &counters,
                    msg.key().unwrap_or_default(),
                    change.delta,
                    published_ms,
                    change
                        .ranges
                        .iter()
                        .filter_map(|r| event_span(r.partition, r.from, r.end))
                        .collect(),
                    Some(p),
                ),
                Err(e) => {
                    tracing::error!(hook = H::NAME, error = %e, "undecodable change skipped");
                }
            }
        });
        placement.reseek(&consumer);
        audit.check(&consumer);
        // Now and then (and soon after an assignment), the runs a former
        // holder of these partitions planned and did not record are made
        // first, once they are old enough that no live node is making them:
        // a new member's assignment can arrive while the former holder is
        // still running what it planned (seen on tansu), and taking fresh
        // plans then ran them twice.
        let assigned = consumer.context().assigned.swap(false, Ordering::AcqRel);
        if assigned {
            next_sweep = next_sweep.min(Instant::now() + ORPHANED_PLAN);
        }
        let leftovers = (Instant::now() >= next_sweep).then(|| {
            next_sweep = Instant::now() + SWEEP_EVERY;
            ORPHANED_PLAN
        });
        if ends.is_empty() && leftovers.is_none() {
            continue;
        }
        let held: HashSet<u32> = consumer
            .assignment()
            .map(|a| {
                a.elements_for_topic(&topic)
                    .iter()
                    .map(|e| e.partition() as u32)
                    .collect()
            })
            .unwrap_or_default();
        let mine = |_: &[u8], p: Option<u32>| p.is_some_and(|p| held.contains(&p));
        let started = Instant::now();
        let recorded = run_until_recorded(
            &hook,
            &shared.store,
            &counters,
            &batch,
            leftovers,
            &mine,
            &stopping,
        );
        pace.observe(taken, started.elapsed());
        if !recorded {
            break;
        }
        if ends.is_empty() {
            continue;
        }
        let ends: Vec<(u32, u64)> = ends.into_iter().collect();
        if let Err(e) = shared.store.advance_positions(&reader, &ends) {
            // Not advanced: the triggers are delivered again; their recorded
            // outcomes skip them.
            tracing::error!(hook = H::NAME, error = %e, "could not record the hook's position");
            continue;
        }
        let mut tpl = TopicPartitionList::new();
        for (p, end) in &ends {
            let _ = tpl.add_partition_offset(&topic, *p as i32, Offset::Offset(*end as i64));
        }
        if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(hook = H::NAME, error = %e, "offset commit failed (positions are kept in MongoDB)");
        }
    }
    consumer.unsubscribe();
    audit.release();
}
