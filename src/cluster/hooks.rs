//! A node's runner of one cluster hook: a consumer group on the model's
//! changes topic; per poll, pending changes coalesce per key, each key's
//! hook runs against the state read from MongoDB, the outcome is recorded,
//! and only then is the input position advanced.
//!
//! Besides [`HookStats`] (`Node::hook_stats`), through the `metrics` facade:
//!
//! | metric | kind | labels |
//! | --- | --- | --- |
//! | `accrete_hook_runs_total` | counter | hook |
//! | `accrete_hook_retries_total` | counter | hook |
//! | `accrete_hook_failures_total` | counter | hook |
//! | `accrete_hook_dead_letters_total` | counter | hook |
//! | `accrete_hook_duplicates_suppressed_total` | counter | hook |
//! | `accrete_hook_coalesced_total` | counter | hook |
//! | `accrete_hook_latency_seconds` | histogram (change published → run) | hook |

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use accrete_monoids::Semigroup;
use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::Message;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::placement::Placement;
use super::{CHANGE_FORMAT, Shared};
use crate::hooks::{ClusterHook, HookStats, Trigger, idempotency_key};
use crate::model::ReadModel;
use crate::store::mongo::{Written, key_id};
use crate::{Error, Result};

type State<H> = <<H as ClusterHook>::Model as ReadModel>::State;
type Key<H> = <<H as ClusterHook>::Model as ReadModel>::Key;

/// Counters and latencies of one hook on this node.
#[derive(Default)]
pub(crate) struct HookCounters {
    stats: Mutex<HookStats>,
    latencies: Mutex<Vec<u32>>,
}

fn count(hook: &'static str, what: &'static str, n: u64) {
    let name = match what {
        "runs" => "accrete_hook_runs_total",
        "retries" => "accrete_hook_retries_total",
        "failures" => "accrete_hook_failures_total",
        "dead_letters" => "accrete_hook_dead_letters_total",
        "duplicates" => "accrete_hook_duplicates_suppressed_total",
        _ => "accrete_hook_coalesced_total",
    };
    metrics::counter!(name, "hook" => hook).increment(n);
}

impl HookCounters {
    pub(crate) fn snapshot(&self) -> HookStats {
        let mut s = self.stats.lock().clone();
        let mut l = self.latencies.lock().clone();
        if !l.is_empty() {
            l.sort_unstable();
            let at = |q: f64| f64::from(l[((l.len() - 1) as f64 * q).round() as usize]);
            s.latency_ms = (at(0.5), at(0.99));
        }
        s
    }
}

struct Ctx {
    placement: Arc<Placement>,
}

impl ClientContext for Ctx {}

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

/// One key's pending triggers.
struct Pending<S> {
    delta: S,
    /// The earliest publication time among them.
    published_ms: i64,
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
    )?;
    consumer
        .subscribe(&[&topic])
        .map_err(|e| Error::kafka("subscribe", e))?;
    std::thread::Builder::new()
        .name(format!("accrete-hook-{}", H::NAME))
        .spawn(move || run(hook, consumer, placement, reader, topic, shared, counters))
        .map_err(|e| Error::io("spawn a hook thread", ".", e))
}

#[allow(clippy::too_many_arguments)]
fn run<H: ClusterHook>(
    hook: H,
    consumer: BaseConsumer<Ctx>,
    placement: Arc<Placement>,
    reader: String,
    topic: String,
    shared: Arc<Shared>,
    counters: Arc<HookCounters>,
) {
    while !shared.stop.load(Ordering::Acquire) {
        let mut pending: HashMap<Vec<u8>, Pending<State<H>>> = HashMap::new();
        let mut ends: HashMap<u32, u64> = HashMap::new();
        super::placement::drain(&consumer, 10_000, H::NAME, |msg| {
            let p = msg.partition() as u32;
            let offset = msg.offset() as u64;
            if !placement.accept(p, offset) {
                return;
            }
            ends.insert(p, offset + 1);
            let published_ms = msg.timestamp().to_millis().unwrap_or(0);
            let change = match decode::<State<H>>(msg.payload().unwrap_or_default()) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(hook = H::NAME, error = %e, "undecodable change skipped");
                    return;
                }
            };
            let key = msg.key().unwrap_or_default().to_vec();
            match pending.get_mut(&key) {
                Some(p) => {
                    p.delta.combine_owned(change.delta);
                    p.published_ms = p.published_ms.min(published_ms);
                    counters.stats.lock().coalesced += 1;
                    count(H::NAME, "coalesced", 1);
                }
                None => {
                    pending.insert(
                        key,
                        Pending {
                            delta: change.delta,
                            published_ms,
                        },
                    );
                }
            }
        });
        placement.reseek(&consumer);
        if ends.is_empty() {
            continue;
        }
        // Runs until it succeeds: a batch whose outcomes cannot be recorded
        // is run again (the recorded outcomes make that cheap).
        let mut backoff = Duration::from_millis(100);
        loop {
            match run_batch(&hook, &shared, &counters, &pending) {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!(hook = H::NAME, error = %e, retry_in = ?backoff, "hook batch failed");
                    if shared.stop.load(Ordering::Acquire) {
                        return;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
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
}

fn run_batch<H: ClusterHook>(
    hook: &H,
    shared: &Shared,
    counters: &HookCounters,
    pending: &HashMap<Vec<u8>, Pending<State<H>>>,
) -> Result<()> {
    let model = <H::Model as ReadModel>::NAME;
    type Item<'a, H> = (Key<H>, &'a Vec<u8>, &'a Pending<State<H>>);
    let mut keys: Vec<Item<'_, H>> = Vec::with_capacity(pending.len());
    for (bytes, p) in pending {
        let key: Key<H> = postcard::from_bytes(bytes).map_err(|e| Error::Corrupt {
            what: "change key",
            detail: e.to_string(),
        })?;
        keys.push((key, bytes, p));
    }
    let just_keys: Vec<&Key<H>> = keys.iter().map(|(k, _, _)| k).collect();
    let states = shared
        .store
        .get_many::<&Key<H>, State<H>>(model, &just_keys)?;
    let mut runs = Vec::new();
    for (key, bytes, p) in &keys {
        let Some((state, version)) = states.get(&key_id(key)?.to_string()) else {
            // The change is durable before it is published: the document
            // exists. A missing one was deleted (a rebuild): nothing to do.
            continue;
        };
        if !hook.fires(state) {
            continue;
        }
        let id = idempotency_key(H::NAME, model, bytes, (!H::ONCE).then_some(*version));
        runs.push((key, p, state, *version, id));
    }
    let ids: Vec<String> = runs.iter().map(|r| r.4.clone()).collect();
    let recorded = shared.store.outcomes_recorded(&ids)?;
    // Recorded together after the batch's runs, before the position moves.
    let mut outcomes = Vec::with_capacity(runs.len());
    for (key, p, state, version, id) in runs {
        if recorded.contains(&id) {
            counters.stats.lock().duplicates_suppressed += 1;
            count(H::NAME, "duplicates", 1);
            continue;
        }
        let latency = (crate::runtime::worker::now_ms() - p.published_ms).max(0);
        counters
            .latencies
            .lock()
            .push(latency.min(i64::from(u32::MAX)) as u32);
        let mut attempt = 1;
        let error = loop {
            let trigger = Trigger {
                key,
                delta: &p.delta,
                state,
                version,
                idempotency_key: &id,
                attempt,
            };
            // A panicking hook is a failed attempt, not a dead node.
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook.run(&trigger)))
                    .unwrap_or_else(|panic| {
                        Err(panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .map_or_else(
                                || "the hook panicked".into(),
                                |m| format!("the hook panicked: {m}"),
                            ))
                    });
            match result {
                Ok(()) => break None,
                Err(reason) => {
                    let mut s = counters.stats.lock();
                    s.failures += 1;
                    count(H::NAME, "failures", 1);
                    if attempt >= hook.max_attempts() {
                        break Some(reason);
                    }
                    s.retries += 1;
                    count(H::NAME, "retries", 1);
                    drop(s);
                    std::thread::sleep(hook.backoff(attempt));
                    attempt += 1;
                }
            }
        };
        let mut s = counters.stats.lock();
        match error {
            None => {
                s.runs += 1;
                count(H::NAME, "runs", 1);
            }
            Some(ref reason) => {
                s.dead_letters += 1;
                count(H::NAME, "dead_letters", 1);
                tracing::warn!(hook = H::NAME, idempotency_key = %id, %reason, attempts = attempt,
                    "hook trigger sent to the dead letters");
            }
        }
        outcomes.push((id, attempt, error));
    }
    shared.store.record_outcomes(H::NAME, &outcomes)
}

fn decode<S: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<Written<S>> {
    match payload.split_first() {
        Some((&CHANGE_FORMAT, rest)) => postcard::from_bytes(rest).map_err(|e| Error::Corrupt {
            what: "change",
            detail: e.to_string(),
        }),
        _ => Err(Error::Corrupt {
            what: "change",
            detail: "unknown change format".into(),
        }),
    }
}
