//! What every backend's cluster-hook runner shares: per-key coalescing of
//! pending changes, the run with retries and dead letters, the recorded
//! outcomes that skip redelivered triggers, and the counters.
//!
//! Besides [`HookStats`], through the `metrics` facade:
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

use std::collections::{HashMap, HashSet};

use accrete_monoids::Semigroup;
use parking_lot::Mutex;

use super::{ClusterHook, HookStats, Trigger, idempotency_key};
use crate::model::ReadModel;
use crate::{Error, Result};

pub(crate) type State<H> = <<H as ClusterHook>::Model as ReadModel>::State;
pub(crate) type Key<H> = <<H as ClusterHook>::Model as ReadModel>::Key;

/// The outcome of one trigger, as recorded.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    /// The idempotency key.
    pub(crate) id: String,
    /// Attempts made (1: the first succeeded).
    pub(crate) attempts: u32,
    /// The last attempt's error, for a dead letter.
    pub(crate) error: Option<String>,
    /// From the change's publication to the start of the run.
    pub(crate) latency_ms: u32,
}

/// A key's state and version, as a hook reads it (`None`: none stored).
pub(crate) type Versioned<S> = Option<(S, u64)>;

/// What a backend gives a hook runner: the states, and the outcome records.
pub(crate) trait HookBackend<M: ReadModel> {
    /// Each key's state and version.
    fn states(&self, keys: &[&M::Key]) -> Result<Vec<Versioned<M::State>>>;
    /// Which of these idempotency keys have a recorded outcome.
    fn recorded(&self, ids: &[String]) -> Result<HashSet<String>>;
    /// Records outcomes (and, for failures, dead letters), all or none.
    fn record(&self, hook: &str, outcomes: &[Outcome]) -> Result<()>;
}

/// Counters and latencies of one hook in this process.
#[derive(Default)]
pub(crate) struct HookCounters {
    stats: Mutex<HookStats>,
    /// Change-to-run latencies (ms), and where the next one goes once full.
    latencies: Mutex<(Vec<u32>, usize)>,
}

/// The most latencies kept for the percentiles (beyond, the newest replace
/// the oldest).
const LATENCIES_KEPT: usize = 1 << 20;

fn count(hook: &'static str, metric: &'static str, n: u64) {
    metrics::counter!(metric, "hook" => hook).increment(n);
}

impl HookCounters {
    pub(crate) fn snapshot(&self) -> HookStats {
        let mut s = self.stats.lock().clone();
        s.latency_ms = median_p99(self.latencies.lock().0.clone());
        s
    }

    fn latency(&self, hook: &'static str, ms: u32) {
        metrics::histogram!("accrete_hook_latency_seconds", "hook" => hook)
            .record(f64::from(ms) / 1000.0);
        let mut guard = self.latencies.lock();
        let (l, next) = &mut *guard;
        if l.len() < LATENCIES_KEPT {
            l.push(ms);
        } else {
            l[*next] = ms;
            *next = (*next + 1) % LATENCIES_KEPT;
        }
    }
}

/// The median and 99th percentile of latencies in ms (0 without any).
pub(crate) fn median_p99(mut l: Vec<u32>) -> (f64, f64) {
    if l.is_empty() {
        return (0.0, 0.0);
    }
    l.sort_unstable();
    let at = |q: f64| f64::from(l[((l.len() - 1) as f64 * q).round() as usize]);
    (at(0.5), at(0.99))
}

/// One key's pending triggers.
pub(crate) struct Pending<S> {
    /// The combined delta.
    pub(crate) delta: S,
    /// The earliest publication time among them (ms since the epoch).
    pub(crate) published_ms: i64,
    /// The newest version among them, when changes carry their version.
    pub(crate) version: Option<u64>,
}

/// The triggers taken in one poll, per encoded key: changes of one key
/// combine (the deltas form a monoid), so a burst runs the hook once.
pub(crate) struct Batch<S> {
    pub(crate) pending: HashMap<Vec<u8>, Pending<S>>,
}

impl<S: Semigroup> Batch<S> {
    pub(crate) fn new() -> Self {
        Batch {
            pending: HashMap::new(),
        }
    }

    /// Adds a change of the key (its postcard bytes), with the version it
    /// produced if the backend knows it.
    pub(crate) fn add(
        &mut self,
        hook: &'static str,
        counters: &HookCounters,
        key: &[u8],
        delta: S,
        published_ms: i64,
        version: Option<u64>,
    ) {
        match self.pending.get_mut(key) {
            Some(p) => {
                p.delta.combine_owned(delta);
                p.published_ms = p.published_ms.min(published_ms);
                p.version = p.version.max(version);
                counters.stats.lock().coalesced += 1;
                count(hook, "accrete_hook_coalesced_total", 1);
            }
            None => {
                self.pending.insert(
                    key.to_vec(),
                    Pending {
                        delta,
                        published_ms,
                        version,
                    },
                );
            }
        }
    }
}

/// The message of a panic, for the dead letter.
fn panic_reason(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .map_or_else(
            || "the hook panicked".into(),
            |m| format!("the hook panicked: {m}"),
        )
}

/// Runs the hook for every key of the batch that fires and whose outcome is
/// not recorded yet, retrying with backoff; returns the outcomes to record,
/// and whether every key was handled (`false`: stopped early). On `Err`
/// nothing ran.
fn run_batch<H: ClusterHook>(
    hook: &H,
    backend: &dyn HookBackend<H::Model>,
    counters: &HookCounters,
    batch: &Batch<State<H>>,
    stopping: &dyn Fn() -> bool,
) -> Result<(Vec<Outcome>, bool)> {
    let model = <H::Model as ReadModel>::NAME;
    type Item<'a, H> = (Key<H>, &'a Vec<u8>, &'a Pending<State<H>>);
    let mut keys: Vec<Item<'_, H>> = Vec::with_capacity(batch.pending.len());
    for (bytes, p) in &batch.pending {
        match postcard::from_bytes::<Key<H>>(bytes) {
            Ok(key) => keys.push((key, bytes, p)),
            // Not this build's key type (a change from before the model's
            // key type changed): nothing to run it for.
            Err(e) => tracing::error!(hook = H::NAME, error = %e, "undecodable change key skipped"),
        }
    }
    let just_keys: Vec<&Key<H>> = keys.iter().map(|(k, _, _)| k).collect();
    let states = backend.states(&just_keys)?;
    let mut runs = Vec::new();
    for ((key, bytes, p), state) in keys.iter().zip(states) {
        let Some((state, version)) = state else {
            // The change is durable before it is published: the state
            // exists. A missing one was deleted (a rebuild): nothing to do.
            continue;
        };
        if !hook.fires(&state) {
            continue;
        }
        // The run is keyed by the newest change it covers when changes carry
        // versions: a later change, even one already visible in this state,
        // gets a run of its own with its delta. Otherwise by the state's.
        let version = p.version.unwrap_or(version);
        let id = idempotency_key(H::NAME, model, bytes, (!H::ONCE).then_some(version));
        runs.push((key, *p, state, version, id));
    }
    let ids: Vec<String> = runs.iter().map(|r| r.4.clone()).collect();
    let recorded = backend.recorded(&ids)?;
    let mut outcomes = Vec::with_capacity(runs.len());
    for (key, p, state, version, id) in runs {
        if recorded.contains(&id) {
            counters.stats.lock().duplicates_suppressed += 1;
            count(H::NAME, "accrete_hook_duplicates_suppressed_total", 1);
            continue;
        }
        if stopping() {
            // What ran is recorded; the rest is delivered again.
            return Ok((outcomes, false));
        }
        let latency_ms = (crate::runtime::worker::now_ms() - p.published_ms)
            .clamp(0, i64::from(u32::MAX)) as u32;
        counters.latency(H::NAME, latency_ms);
        let mut attempt = 1;
        let error = loop {
            let trigger = Trigger {
                key,
                delta: &p.delta,
                state: &state,
                version,
                idempotency_key: &id,
                attempt,
            };
            // A panicking hook is a failed attempt, not a dead node.
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook.run(&trigger)))
                    .unwrap_or_else(|panic| Err(panic_reason(panic.as_ref())));
            match result {
                Ok(()) => break None,
                Err(reason) => {
                    let mut s = counters.stats.lock();
                    s.failures += 1;
                    count(H::NAME, "accrete_hook_failures_total", 1);
                    if attempt >= hook.max_attempts() || stopping() {
                        break Some(reason);
                    }
                    s.retries += 1;
                    count(H::NAME, "accrete_hook_retries_total", 1);
                    drop(s);
                    std::thread::sleep(hook.backoff(attempt));
                    attempt += 1;
                }
            }
        };
        if error.is_some() && attempt < hook.max_attempts() {
            // Stopped while retrying: not a dead letter; delivered again.
            return Ok((outcomes, false));
        }
        let mut s = counters.stats.lock();
        match error {
            None => {
                s.runs += 1;
                count(H::NAME, "accrete_hook_runs_total", 1);
            }
            Some(ref reason) => {
                s.dead_letters += 1;
                count(H::NAME, "accrete_hook_dead_letters_total", 1);
                tracing::warn!(hook = H::NAME, idempotency_key = %id, %reason, attempts = attempt,
                    "hook trigger sent to the dead letters");
            }
        }
        outcomes.push(Outcome {
            id,
            attempts: attempt,
            error,
            latency_ms,
        });
    }
    Ok((outcomes, true))
}

/// Runs the batch and records its outcomes (all together, before the
/// caller moves its position). Reading the states or the recorded outcomes
/// is retried with backoff; so is recording, without running the hooks
/// again. Returns `true` when every trigger of the batch was handled and
/// recorded: the caller may move its position. `false` means stopping.
pub(crate) fn run_until_recorded<H: ClusterHook>(
    hook: &H,
    backend: &dyn HookBackend<H::Model>,
    counters: &HookCounters,
    batch: &Batch<State<H>>,
    stopping: &dyn Fn() -> bool,
) -> bool {
    let mut backoff = std::time::Duration::from_millis(100);
    let mut wait = |what: &str, e: &Error| -> bool {
        tracing::error!(hook = H::NAME, error = %e, retry_in = ?backoff, "{what} failed");
        if stopping() {
            return false;
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(std::time::Duration::from_secs(2));
        true
    };
    let (outcomes, complete) = loop {
        match run_batch(hook, backend, counters, batch, stopping) {
            Ok(done) => break done,
            Err(e) => {
                if !wait("reading the hook's states", &e) {
                    return false;
                }
            }
        }
    };
    loop {
        match backend.record(H::NAME, &outcomes) {
            Ok(()) => return complete,
            Err(e) => {
                // The runs happened: only their record is retried. Given up
                // when stopping, they run again after the restart.
                if !wait("recording the hook's outcomes", &e) {
                    return false;
                }
            }
        }
    }
}
