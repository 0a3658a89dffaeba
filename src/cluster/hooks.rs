//! A node's runner of one cluster hook: a consumer group on the model's
//! changes topic; per poll, pending changes coalesce per key, each key's
//! hook runs against the state read from MongoDB, the outcome is recorded,
//! and only then is the input position advanced (see
//! [`crate::hooks::runner`] for what every backend shares, and the metrics).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::Message;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::placement::{Audit, Placement};
use super::{CHANGE_FORMAT, Shared};
use crate::hooks::ClusterHook;
use crate::hooks::runner::{
    Batch, HookBackend, HookCounters, Outcome, State, Versioned, run_until_recorded,
};
use crate::model::ReadModel;
use crate::store::mongo::{MongoStore, Written, key_id};
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
        self.record_outcomes(hook, outcomes)
    }
}

struct Ctx {
    placement: Arc<Placement>,
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
    }
}

pub(super) fn start<H: ClusterHook>(
    hook: H,
    shared: Arc<Shared>,
    counters: Arc<HookCounters>,
) -> Result<JoinHandle<()>> {
    let config = &shared.config;
    let model = <H::Model as ReadModel>::NAME;
    let topic = config.changes_topic(model);
    let reader = format!("hook:{}", H::NAME);
    let placement = Arc::new(Placement::new(
        shared.store.clone(),
        reader.clone(),
        topic.clone(),
    ));
    let consumer = config.kafka.consumer(
        &format!("{}.hook.{}", config.group_prefix, H::NAME),
        Ctx {
            placement: placement.clone(),
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
    while !stopping() {
        let mut batch = Batch::new();
        let mut ends: HashMap<u32, u64> = HashMap::new();
        super::placement::drain(&consumer, 10_000, H::NAME, |msg| {
            let p = msg.partition() as u32;
            let offset = msg.offset() as u64;
            if !placement.accept(p, offset) {
                return;
            }
            ends.insert(p, offset + 1);
            let published_ms = msg.timestamp().to_millis().unwrap_or(0);
            match decode::<State<H>>(msg.payload().unwrap_or_default()) {
                Ok(change) => batch.add(
                    H::NAME,
                    &counters,
                    msg.key().unwrap_or_default(),
                    change.delta,
                    published_ms,
                    // Blind writes do not learn the version they made.
                    None,
                ),
                Err(e) => {
                    tracing::error!(hook = H::NAME, error = %e, "undecodable change skipped");
                }
            }
        });
        placement.reseek(&consumer);
        audit.check(&consumer);
        if ends.is_empty() {
            continue;
        }
        if !run_until_recorded(
            &hook,
            &shared.store,
            &counters,
            &batch,
            &|_| true,
            &stopping,
        ) {
            break;
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

fn decode<S: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<Written<S>> {
    match payload.split_first() {
        // With a stack budget: the bytes come from the broker.
        Some((&CHANGE_FORMAT, rest)) => crate::event::take_from_bytes(rest)
            .map(|(change, _)| change)
            .map_err(|detail| Error::Corrupt {
                what: "change",
                detail,
            }),
        _ => Err(Error::Corrupt {
            what: "change",
            detail: "unknown change format".into(),
        }),
    }
}
