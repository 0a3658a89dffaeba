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

use std::collections::{BTreeMap, HashMap, HashSet};

use accrete_monoids::{Monoid, Semigroup};
use parking_lot::Mutex;

use super::{ClusterHook, HookStats, Trigger, idempotency_key};
use crate::model::ReadModel;
pub(crate) use crate::runtime::absorbed::{IdSet, Seen};
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

/// A run decided on and recorded before it starts: if the process dies
/// before its outcome is recorded, the same run (same idempotency key, same
/// delta) is made again, rather than a new run over a grown batch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Plan {
    /// The idempotency key.
    pub(crate) id: String,
    /// The key, encoded.
    pub(crate) key: Vec<u8>,
    /// The newest version the run covers.
    pub(crate) version: u64,
    /// The combined delta of the changes it covers, encoded.
    pub(crate) delta: Vec<u8>,
    /// The earliest publication time among them (ms since the epoch).
    pub(crate) published_ms: i64,
}

/// What a backend gives a hook runner: the states, and the outcome records.
///
/// A backend that knows each change's version (the embedded default) also
/// keeps, per hook and key, the versions already handed to a run
/// ([`covered`](Self::covered)) and the runs planned and not yet recorded
/// ([`planned`](Self::planned)): then a run's delta is exactly the changes
/// no earlier run covered, whatever was redelivered or re-published. The
/// defaults keep neither (every change of a batch goes to its run).
pub(crate) trait HookBackend<M: ReadModel> {
    /// Each key's state and version.
    fn states(&self, keys: &[&M::Key]) -> Result<Vec<Versioned<M::State>>>;
    /// Which of these idempotency keys have a recorded outcome.
    fn recorded(&self, ids: &[String]) -> Result<HashSet<String>>;
    /// Records outcomes (and, for failures, dead letters), all or none, and
    /// forgets their plans.
    fn record(&self, hook: &str, outcomes: &[Outcome]) -> Result<()>;
    /// Per encoded key, the versions already covered by a run (or passed
    /// over because the hook did not fire).
    fn covered(&self, hook: &str, keys: &[&[u8]]) -> Result<Vec<IdSet>> {
        let _ = hook;
        Ok(vec![IdSet::default(); keys.len()])
    }
    /// Records, in one atomic write, the versions now covered per encoded
    /// key and the runs about to be made.
    fn plan(&self, hook: &str, covered: &[(&[u8], &IdSet)], plans: &[Plan]) -> Result<()> {
        let _ = (hook, covered, plans);
        Ok(())
    }
    /// The runs planned and not yet recorded, of the keys `mine` accepts.
    fn planned(&self, hook: &str, mine: &dyn Fn(&[u8]) -> bool) -> Result<Vec<Plan>> {
        let _ = (hook, mine);
        Ok(Vec::new())
    }
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
    /// Changes that carry their version, by version: a change delivered
    /// twice is one entry.
    pub(crate) changes: BTreeMap<u64, S>,
    /// Changes without a version (blind writes on MongoDB), combined.
    pub(crate) unversioned: Option<S>,
    /// The earliest publication time among them (ms since the epoch).
    pub(crate) published_ms: i64,
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
        let p = match self.pending.get_mut(key) {
            Some(p) => {
                p.published_ms = p.published_ms.min(published_ms);
                counters.stats.lock().coalesced += 1;
                count(hook, "accrete_hook_coalesced_total", 1);
                p
            }
            None => self.pending.entry(key.to_vec()).or_insert(Pending {
                changes: BTreeMap::new(),
                unversioned: None,
                published_ms,
            }),
        };
        match version {
            Some(v) => {
                p.changes.entry(v).or_insert(delta);
            }
            None => match &mut p.unversioned {
                Some(acc) => acc.combine_owned(delta),
                slot @ None => *slot = Some(delta),
            },
        }
    }
}

/// The message of a panic, for the dead letter.
fn panic_reason(panic: &(dyn std::any::Any + Send)) -> String {
    format!(
        "the hook panicked: {}",
        crate::runtime::worker::panic_message(panic)
    )
}

/// One run to make: its plan, and the plan's key and delta decoded.
struct Run<H: ClusterHook> {
    plan: Plan,
    key: Key<H>,
    delta: State<H>,
    /// The state read when the run was planned (newer than every change it
    /// covers); `None` for a run a crash left planned: read before it runs.
    state: Option<State<H>>,
}

fn encode<T: serde::Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(value).map_err(|e| Error::Encode {
        what,
        detail: e.to_string(),
    })
}

/// Decides the runs of a batch: per key, the changes no earlier run
/// covered, combined; keys whose state does not fire pass them over. The
/// covered versions and the runs are recorded before anything runs.
fn plan_batch<H: ClusterHook>(
    hook: &H,
    backend: &dyn HookBackend<H::Model>,
    counters: &HookCounters,
    batch: &Batch<State<H>>,
) -> Result<Vec<Run<H>>> {
    let model = <H::Model as ReadModel>::NAME;
    let encoded: Vec<&[u8]> = batch.pending.keys().map(Vec::as_slice).collect();
    let covered = backend.covered(H::NAME, &encoded)?;
    // Per key: what no run covered yet.
    type Fresh<'a, H> = (Key<H>, &'a [u8], State<H>, Option<u64>, IdSet, i64);
    let mut fresh: Vec<Fresh<'_, H>> = Vec::new();
    let mut suppressed = 0;
    for (bytes, mut set) in encoded.iter().zip(covered) {
        let p = &batch.pending[*bytes];
        let key = match crate::event::from_bytes::<Key<H>>(bytes) {
            Ok(key) => key,
            // Not this build's key type (a change from before the model's
            // key type changed): nothing to run it for.
            Err(e) => {
                tracing::error!(hook = H::NAME, error = %e, "undecodable change key skipped");
                continue;
            }
        };
        let mut delta: Option<State<H>> = p.unversioned.clone();
        let mut newest = None;
        for (&version, d) in &p.changes {
            if set.insert(version) != Seen::New {
                continue;
            }
            newest = Some(version);
            match &mut delta {
                Some(acc) => acc.combine(d),
                None => delta = Some(d.clone()),
            }
        }
        let Some(delta) = delta else {
            // Every change of the key ran already: a redelivered trigger.
            suppressed += 1;
            continue;
        };
        fresh.push((key, bytes, delta, newest, set, p.published_ms));
    }
    if suppressed > 0 {
        counters.stats.lock().duplicates_suppressed += suppressed;
        count(
            H::NAME,
            "accrete_hook_duplicates_suppressed_total",
            suppressed,
        );
    }
    let keys: Vec<&Key<H>> = fresh.iter().map(|f| &f.0).collect();
    let states = backend.states(&keys)?;
    let mut runs: Vec<Run<H>> = Vec::new();
    for ((key, bytes, delta, newest, _, published_ms), state) in fresh.iter().zip(states) {
        let Some((state, state_version)) = state else {
            // The change is durable before it is published: the state
            // exists. A missing one was deleted (a rebuild): nothing to do.
            continue;
        };
        if !hook.fires(&state) {
            continue;
        }
        // A run is keyed by the newest change it covers when changes carry
        // versions (each version is covered by one run, so no two runs
        // share a key); otherwise by the state's version.
        let version = newest.unwrap_or(state_version);
        let id = idempotency_key(H::NAME, model, bytes, (!H::ONCE).then_some(version));
        runs.push(Run {
            plan: Plan {
                id,
                key: bytes.to_vec(),
                version,
                delta: encode("hook delta", delta)?,
                published_ms: *published_ms,
            },
            key: key.clone(),
            delta: delta.clone(),
            state: Some(state),
        });
    }
    // Runs recorded already (a `ONCE` hook's, or runs before covered
    // versions were kept) are not planned again.
    let ids: Vec<String> = runs.iter().map(|r| r.plan.id.clone()).collect();
    let recorded = backend.recorded(&ids)?;
    let before = runs.len();
    runs.retain(|r| !recorded.contains(&r.plan.id));
    let skipped = (before - runs.len()) as u64;
    if skipped > 0 {
        counters.stats.lock().duplicates_suppressed += skipped;
        count(H::NAME, "accrete_hook_duplicates_suppressed_total", skipped);
    }
    let covered: Vec<(&[u8], &IdSet)> = fresh.iter().map(|f| (f.1, &f.4)).collect();
    let plans: Vec<Plan> = runs.iter().map(|r| r.plan.clone()).collect();
    backend.plan(H::NAME, &covered, &plans)?;
    Ok(runs)
}

/// The runs a crash left planned but unrecorded, decoded.
fn replanned<H: ClusterHook>(plans: Vec<Plan>) -> Vec<Run<H>> {
    plans
        .into_iter()
        .filter_map(|plan| {
            let key = crate::event::from_bytes::<Key<H>>(&plan.key);
            let delta = crate::event::from_bytes::<State<H>>(&plan.delta);
            match (key, delta) {
                (Ok(key), Ok(delta)) => Some(Run {
                    plan,
                    key,
                    delta,
                    state: None,
                }),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::error!(hook = H::NAME, id = %plan.id, error = %e, "undecodable planned run skipped");
                    None
                }
            }
        })
        .collect()
}

/// Makes the runs, retrying with backoff; returns the outcomes to record,
/// and whether every run was made (`false`: stopped early; the rest stay
/// planned and are made after the restart). On `Err` nothing ran.
fn run_all<H: ClusterHook>(
    hook: &H,
    backend: &dyn HookBackend<H::Model>,
    counters: &HookCounters,
    runs: &[Run<H>],
    stopping: &dyn Fn() -> bool,
) -> Result<(Vec<Outcome>, bool)> {
    // States are read only for runs planned before a crash; the others
    // carry the state their plan read.
    let unread: Vec<&Key<H>> = runs
        .iter()
        .filter(|r| r.state.is_none())
        .map(|r| &r.key)
        .collect();
    let mut read = backend.states(&unread)?.into_iter();
    let mut outcomes = Vec::with_capacity(runs.len());
    for run in runs {
        let state = match &run.state {
            Some(s) => s.clone(),
            None => read
                .next()
                .flatten()
                .map_or_else(<State<H> as Monoid>::identity, |(s, _)| s),
        };
        if stopping() {
            // What ran is recorded; the rest is delivered again.
            return Ok((outcomes, false));
        }
        let latency_ms = (crate::runtime::worker::now_ms() - run.plan.published_ms)
            .clamp(0, i64::from(u32::MAX)) as u32;
        counters.latency(H::NAME, latency_ms);
        let mut attempt = 1;
        let error = loop {
            let trigger = Trigger {
                key: &run.key,
                delta: &run.delta,
                state: &state,
                version: run.plan.version,
                idempotency_key: &run.plan.id,
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
            // Stopped while retrying: not a dead letter; made again.
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
                tracing::warn!(hook = H::NAME, idempotency_key = %run.plan.id, %reason, attempts = attempt,
                    "hook trigger sent to the dead letters");
            }
        }
        outcomes.push(Outcome {
            id: run.plan.id.clone(),
            attempts: attempt,
            error,
            latency_ms,
        });
    }
    Ok((outcomes, true))
}

/// Runs the batch and records its outcomes (all together, before the
/// caller moves its position): first the runs a crash left planned (of the
/// keys `mine` accepts), then the batch's. Reading states or outcomes,
/// planning and recording are retried with backoff; recording without
/// running the hooks again. Returns `true` when every trigger of the batch
/// was handled and recorded: the caller may move its position. `false`
/// means stopping.
pub(crate) fn run_until_recorded<H: ClusterHook>(
    hook: &H,
    backend: &dyn HookBackend<H::Model>,
    counters: &HookCounters,
    batch: &Batch<State<H>>,
    mine: &dyn Fn(&[u8]) -> bool,
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
    let mut first = true;
    loop {
        // Pass 1: what a crash left planned; pass 2: this batch.
        let runs = loop {
            let planned = if first {
                backend.planned(H::NAME, mine).map(replanned::<H>)
            } else {
                plan_batch(hook, backend, counters, batch)
                    .inspect(|_| crate::runtime::failpoint::hit("hook_after_plan"))
            };
            match planned {
                Ok(runs) => break runs,
                Err(e) => {
                    if !wait("planning the hook's runs", &e) {
                        return false;
                    }
                }
            }
        };
        let (outcomes, complete) = loop {
            match run_all(hook, backend, counters, &runs, stopping) {
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
                Ok(()) => break,
                Err(e) => {
                    // The runs happened: only their record is retried. Given
                    // up when stopping, they run again after the restart.
                    if !wait("recording the hook's outcomes", &e) {
                        return false;
                    }
                }
            }
        }
        if !complete {
            return false;
        }
        if !first {
            return true;
        }
        first = false;
    }
}
