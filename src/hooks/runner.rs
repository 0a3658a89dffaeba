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

use super::{ClusterHook, HookStats, Trigger, idempotency_key, key_text};
pub(crate) use crate::ids::{Covers, IdSet};
use crate::model::ReadModel;
use crate::{Error, Result};

pub(crate) type State<H> = <<H as ClusterHook>::Model as ReadModel>::State;
pub(crate) type Key<H> = <<H as ClusterHook>::Model as ReadModel>::Key;

/// The outcome of one trigger, as recorded.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    /// The idempotency key.
    pub(crate) id: String,
    /// The key, encoded.
    #[cfg_attr(not(feature = "mongodb"), allow(dead_code))] // read by the MongoDB store
    pub(crate) key: Vec<u8>,
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
    /// The version of the state the plan read (a plan made again after a
    /// crash reads the state, and its version, again).
    pub(crate) version: u64,
    /// The combined delta of the changes it covers, encoded.
    pub(crate) delta: Vec<u8>,
    /// The earliest publication time among them (ms since the epoch).
    pub(crate) published_ms: i64,
}

/// Inclusive spans of ids that identify a change: its version on the
/// embedded default (`[(v, v)]`), the event ranges it covers on Kafka +
/// MongoDB (see [`event_span`]).
pub(crate) type Spans = Vec<(u64, u64)>;

/// The events `[from, end)` of an events partition as a span of ids (the
/// partition in the top 24 bits, the offset in the low 40); `None` for an
/// empty range or one beyond the id space.
#[cfg_attr(not(feature = "mongodb"), allow(dead_code))] // read by the MongoDB store
pub(crate) fn event_span(partition: u32, from: u64, end: u64) -> Option<(u64, u64)> {
    const OFFSET_BITS: u32 = 40;
    if end <= from || end > 1 << OFFSET_BITS || partition >= 1 << (64 - OFFSET_BITS) {
        return None;
    }
    let base = u64::from(partition) << OFFSET_BITS;
    Some((base | from, base | (end - 1)))
}

/// Event-range spans as text: `p3:100-136+p5:7-9` (partition, then
/// `[from, end)`), adjacent spans joined.
fn describe_event_spans(spans: &[(u64, u64)]) -> String {
    let mut sorted: Vec<(u64, u64)> = spans.to_vec();
    sorted.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (f, l) in sorted {
        match merged.last_mut() {
            Some((_, last)) if last.checked_add(1).is_some_and(|n| n >= f) => {
                *last = (*last).max(l)
            }
            _ => merged.push((f, l)),
        }
    }
    let mask = (1_u64 << 40) - 1;
    merged
        .iter()
        .map(|(f, l)| format!("p{}:{}-{}", f >> 40, f & mask, (l & mask) + 1))
        .collect::<Vec<_>>()
        .join("+")
}

/// A hook's coverage of one key: the change spans already handed to a run
/// (or passed over because the hook did not fire), and the stamp the
/// backend checks when the coverage is written back (`None`: the backend
/// writes it under a lock of its own).
#[derive(Debug, Clone, Default)]
pub(crate) struct Coverage {
    pub(crate) set: IdSet,
    #[cfg_attr(not(feature = "mongodb"), allow(dead_code))] // read by the MongoDB store
    pub(crate) stamp: Option<u64>,
}

/// What planning writes for one key: its coverage now, and the run to make
/// (if the hook fires).
pub(crate) struct KeyPlan<'a> {
    /// The key, encoded.
    pub(crate) key: &'a [u8],
    /// The coverage as read (its stamp) with the batch's changes added.
    pub(crate) coverage: &'a Coverage,
    /// The changes topic's partition the key's changes come from, if the
    /// backend has partitions to own.
    #[cfg_attr(not(feature = "mongodb"), allow(dead_code))] // read by the MongoDB store
    pub(crate) partition: Option<u32>,
    pub(crate) run: Option<&'a Plan>,
}

/// What a backend gives a hook runner: the states, the coverage of each key
/// (which changes a run already covered), the runs planned and not yet
/// recorded, and the outcome records. A run's delta is exactly the changes
/// of its key that no earlier run covered, whatever was redelivered or
/// re-published; coverage and plans are written before anything runs.
pub(crate) trait HookBackend<M: ReadModel> {
    /// Each key's state and version.
    fn states(&self, keys: &[&M::Key]) -> Result<Vec<Versioned<M::State>>>;
    /// Which of these idempotency keys have a recorded outcome.
    fn recorded(&self, ids: &[String]) -> Result<HashSet<String>>;
    /// Records outcomes (and, for failures, dead letters), keeping any
    /// recorded earlier, and forgets their plans.
    fn record(&self, hook: &str, outcomes: &[Outcome]) -> Result<()>;
    /// Whether a change's spans are its version (`true`) or the event
    /// ranges it covers.
    fn spans_are_versions(&self) -> bool;
    /// What a run's idempotency key names after the hook: the model, or
    /// where a rebuild's runs cover the same spans again (event ranges),
    /// the generation of its data, so that they get keys of their own.
    fn scope(&self) -> &str {
        M::NAME
    }
    /// Per encoded key, what runs covered.
    fn covered(&self, hook: &str, keys: &[&[u8]]) -> Result<Vec<Coverage>>;
    /// Writes the keys' coverage and runs. Returns the keys whose write lost
    /// a race (another node planned them since they were read): none of
    /// their runs may be made; their changes are planned again.
    fn plan(&self, hook: &str, keys: &[KeyPlan<'_>]) -> Result<HashSet<Vec<u8>>>;
    /// The runs planned at least `min_age` ago and not yet recorded, of the
    /// keys `mine` accepts (by encoded key, and changes partition where the
    /// backend keeps it).
    fn planned(
        &self,
        hook: &str,
        min_age: std::time::Duration,
        mine: &dyn Fn(&[u8], Option<u32>) -> bool,
    ) -> Result<Vec<Plan>>;
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
    /// Changes by their spans: a change delivered twice is one entry.
    pub(crate) changes: BTreeMap<Spans, S>,
    /// The earliest publication time among them (ms since the epoch).
    pub(crate) published_ms: i64,
    /// The changes topic's partition they came from, if the backend has
    /// partitions to own.
    pub(crate) partition: Option<u32>,
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

    /// Adds a change of the key (its postcard bytes), identified by its
    /// spans.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add(
        &mut self,
        hook: &'static str,
        counters: &HookCounters,
        key: &[u8],
        delta: S,
        published_ms: i64,
        spans: Spans,
        partition: Option<u32>,
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
                published_ms,
                partition,
            }),
        };
        p.changes.entry(spans).or_insert(delta);
    }
}

/// The message of a panic, for the dead letter.
fn panic_reason(panic: &(dyn std::any::Any + Send)) -> String {
    format!("the hook panicked: {}", crate::error::panic_message(panic))
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

/// The runs decided for a batch, and whether some keys lost a planning race
/// (their changes are planned again once these runs are recorded).
struct Planned<H: ClusterHook> {
    runs: Vec<Run<H>>,
    lost: bool,
}

/// Decides the runs of a batch: per key, the changes no earlier run
/// covered, combined; keys whose state does not fire pass them over. The
/// coverage and the runs are written before anything runs.
fn plan_batch<H: ClusterHook>(
    hook: &H,
    backend: &dyn HookBackend<H::Model>,
    counters: &HookCounters,
    batch: &Batch<State<H>>,
) -> Result<Planned<H>> {
    // A `ONCE` hook's run is keyed by the model: once, whatever rebuilds.
    let scope = if H::ONCE {
        <H::Model as ReadModel>::NAME
    } else {
        backend.scope()
    };
    let versions = backend.spans_are_versions();
    let encoded: Vec<&[u8]> = batch.pending.keys().map(Vec::as_slice).collect();
    let covered = backend.covered(H::NAME, &encoded)?;
    struct Fresh<'a, H: ClusterHook> {
        key: Key<H>,
        bytes: &'a [u8],
        delta: State<H>,
        spans: Spans,
        coverage: Coverage,
        pending: &'a Pending<State<H>>,
    }
    let mut fresh: Vec<Fresh<'_, H>> = Vec::new();
    let mut suppressed = 0;
    let mut overlapping = 0;
    // Event spans below a key's coverage horizon (a key whose coverage
    // outgrew `IdSet::MAX_RANGES` and folded its lowest half, which can
    // span whole events partitions): cannot tell, so they run (at least
    // once), and their ids are checked against the recorded outcomes.
    let mut unknown = false;
    let counts = |c: &Covers| match c {
        Covers::New | Covers::Partial => true,
        Covers::BelowHorizon(_) => !versions,
        Covers::Duplicate => false,
    };
    for (bytes, mut coverage) in encoded.iter().zip(covered) {
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
        let mut delta: Option<State<H>> = None;
        let mut spans = Spans::new();
        for (change, d) in &p.changes {
            // A change is new when none of its spans was covered; one that
            // was covered in part (re-published, after crashes, over other
            // boundaries) runs whole, and is counted.
            let mut covers = Vec::with_capacity(change.len());
            for &(first, last) in change {
                covers.push(coverage.set.insert_span(first, last));
            }
            if !covers.iter().any(counts) {
                continue;
            }
            if covers.iter().any(|c| matches!(c, Covers::BelowHorizon(_))) {
                unknown = true;
            } else if !covers.iter().all(|c| *c == Covers::New) {
                overlapping += 1;
                tracing::warn!(
                    hook = H::NAME,
                    ?change,
                    "a change overlaps what earlier runs covered in part: it runs whole"
                );
            }
            spans.extend_from_slice(change);
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
        fresh.push(Fresh {
            key,
            bytes,
            delta,
            spans,
            coverage,
            pending: p,
        });
    }
    {
        let mut s = counters.stats.lock();
        s.duplicates_suppressed += suppressed;
        s.overlapping += overlapping;
    }
    if suppressed > 0 {
        count(
            H::NAME,
            "accrete_hook_duplicates_suppressed_total",
            suppressed,
        );
    }
    if overlapping > 0 {
        count(H::NAME, "accrete_hook_overlapping_total", overlapping);
    }
    let keys: Vec<&Key<H>> = fresh.iter().map(|f| &f.key).collect();
    let states = backend.states(&keys)?;
    let mut runs: Vec<Option<Run<H>>> = Vec::with_capacity(fresh.len());
    for (f, state) in fresh.iter().zip(states) {
        let Some((state, state_version)) = state else {
            // The change is durable before it is published: the state
            // exists. A missing one was deleted (a rebuild): nothing to do.
            runs.push(None);
            continue;
        };
        if !hook.fires(&state) {
            runs.push(None);
            continue;
        }
        // A run is keyed by what it covers: the newest version (each
        // version is covered by one run), or the event ranges (each event
        // of the key is covered by one run). No two runs share a key.
        let covers = if versions {
            let newest = f.spans.iter().map(|s| s.1).max().unwrap_or(state_version);
            newest.to_string()
        } else {
            describe_event_spans(&f.spans)
        };
        let id = idempotency_key(
            H::NAME,
            scope,
            &key_text(&f.key, f.bytes),
            (!H::ONCE).then_some(covers.as_str()),
        );
        runs.push(Some(Run {
            plan: Plan {
                id,
                key: f.bytes.to_vec(),
                version: state_version,
                delta: encode("hook delta", &f.delta)?,
                published_ms: f.pending.published_ms,
            },
            key: f.key.clone(),
            delta: f.delta.clone(),
            state: Some(state),
        }));
    }
    // Runs recorded already (a `ONCE` hook's) are not planned again. A
    // run keyed by event ranges cannot have been: its coverage, written
    // with its plan, would have made its changes duplicates.
    let recorded = if H::ONCE || versions || unknown {
        let ids: Vec<String> = runs.iter().flatten().map(|r| r.plan.id.clone()).collect();
        backend.recorded(&ids)?
    } else {
        HashSet::new()
    };
    let mut skipped = 0;
    for slot in &mut runs {
        if slot.as_ref().is_some_and(|r| recorded.contains(&r.plan.id)) {
            *slot = None;
            skipped += 1;
        }
    }
    if skipped > 0 {
        counters.stats.lock().duplicates_suppressed += skipped;
        count(H::NAME, "accrete_hook_duplicates_suppressed_total", skipped);
    }
    let plans: Vec<KeyPlan<'_>> = fresh
        .iter()
        .zip(&runs)
        .map(|(f, run)| KeyPlan {
            key: f.bytes,
            coverage: &f.coverage,
            partition: f.pending.partition,
            run: run.as_ref().map(|r| &r.plan),
        })
        .collect();
    let lost = backend.plan(H::NAME, &plans)?;
    drop(plans);
    let runs = runs
        .into_iter()
        .flatten()
        .filter(|r| !lost.contains(&r.plan.key))
        .collect();
    Ok(Planned {
        runs,
        lost: !lost.is_empty(),
    })
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
        let (state, version) = match &run.state {
            Some(s) => (s.clone(), run.plan.version),
            None => read
                .next()
                .flatten()
                // No state stored (deleted by a rebuild): the identity,
                // whose version is 0.
                .unwrap_or_else(|| (<State<H> as Monoid>::identity(), 0)),
        };
        if stopping() {
            // What ran is recorded; the rest is delivered again.
            return Ok((outcomes, false));
        }
        let latency_ms =
            (crate::event::now_ms() - run.plan.published_ms).clamp(0, i64::from(u32::MAX)) as u32;
        counters.latency(H::NAME, latency_ms);
        let mut attempt = 1;
        let error = loop {
            let trigger = Trigger {
                key: &run.key,
                delta: &run.delta,
                state: &state,
                version,
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
            key: run.plan.key.clone(),
            attempts: attempt,
            error,
            latency_ms,
        });
    }
    Ok((outcomes, true))
}

/// Runs the batch and records its outcomes (all together, before the
/// caller moves its position): first, if `leftovers` (a minimum age), the
/// runs a crash left planned (of the keys `mine` accepts), then the batch's (planned again
/// while some keys lose a planning race to another node). Reading states
/// or outcomes, planning and recording are retried with backoff; recording
/// without running the hooks again. Returns `true` when every trigger of
/// the batch was handled and recorded: the caller may move its position.
/// `false` means stopping.
pub(crate) fn run_until_recorded<H: ClusterHook>(
    hook: &H,
    backend: &dyn HookBackend<H::Model>,
    counters: &HookCounters,
    batch: &Batch<State<H>>,
    leftovers: Option<std::time::Duration>,
    mine: &dyn Fn(&[u8], Option<u32>) -> bool,
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
    let mut first = leftovers.is_some();
    loop {
        // Pass 1: what a crash left planned; then this batch.
        let (runs, done, lost) = loop {
            let planned = if first {
                leftover_runs(backend, leftovers.unwrap_or_default(), mine)
                    .map(|(runs, done)| (runs, done, false))
            } else {
                crate::failpoint::fault("hook_plan")
                    .and_then(|()| plan_batch(hook, backend, counters, batch))
                    .inspect(|_| crate::failpoint::hit("hook_after_plan"))
                    .map(|p| (p.runs, Vec::new(), p.lost))
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
        let (mut outcomes, complete) = loop {
            match run_all(hook, backend, counters, &runs, stopping) {
                Ok(done) => break done,
                Err(e) => {
                    if !wait("reading the hook's states", &e) {
                        return false;
                    }
                }
            }
        };
        outcomes.extend(done);
        loop {
            match crate::failpoint::fault("hook_record")
                .and_then(|()| backend.record(H::NAME, &outcomes))
            {
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
        if !first && !lost {
            return true;
        }
        first = false;
    }
}

/// The runs a crash left planned, of the keys `mine` accepts, but those
/// whose outcome was recorded already (a backend that records outcomes and
/// forgets plans in two writes may die in between): those come back as
/// outcomes to record again, which forgets their plans.
fn leftover_runs<H: ClusterHook>(
    backend: &dyn HookBackend<H::Model>,
    min_age: std::time::Duration,
    mine: &dyn Fn(&[u8], Option<u32>) -> bool,
) -> Result<(Vec<Run<H>>, Vec<Outcome>)> {
    let plans = backend.planned(H::NAME, min_age, mine)?;
    if plans.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let ids: Vec<String> = plans.iter().map(|p| p.id.clone()).collect();
    let recorded = backend.recorded(&ids)?;
    let (done, open): (Vec<Plan>, Vec<Plan>) =
        plans.into_iter().partition(|p| recorded.contains(&p.id));
    let done = done
        .into_iter()
        .map(|p| Outcome {
            id: p.id,
            key: p.key,
            attempts: 0,
            error: None,
            latency_ms: 0,
        })
        .collect();
    Ok((replanned::<H>(open), done))
}
