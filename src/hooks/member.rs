//! A cluster hook's member, written once for every backend: read the
//! changes of the partitions this member owns, coalesce them per key, run
//! the hook ([`run_until_recorded`]), and only then commit the read
//! position. What differs per backend is where the changes come from
//! ([`ChangeSource`]) and where outcomes are kept ([`HookBackend`]).

use std::time::{Duration, Instant};

use super::ClusterHook;
use super::runner::{
    Batch, HookBackend, HookCounters, Spans, State, event_span, run_until_recorded,
};
use crate::Result;
use crate::codec::decode_change_payload;

/// One record of a changes topic, as a source hands it over.
pub(crate) struct ChangeRecord<'a> {
    pub(crate) partition: u32,
    pub(crate) key: &'a [u8],
    pub(crate) payload: &'a [u8],
    /// When the change was published (ms since the epoch).
    pub(crate) published_ms: i64,
}

/// Where a hook member's changes come from: a backend's reader of the
/// model's changes topic, with its own idea of which partitions it owns.
pub(crate) trait ChangeSource {
    /// Reads what is there for the owned partitions, passing each record to
    /// `f` (a consumer waits briefly in its poll; a pulled log does not).
    /// Returns how many records were passed.
    fn read(&mut self, f: &mut dyn FnMut(ChangeRecord<'_>)) -> Result<usize>;

    /// After a read of `taken` records: whether to make the runs a crashed
    /// or departed member planned and did not record, and how old such a
    /// plan must be (`None`: not now).
    fn leftovers(&mut self, taken: usize) -> Option<Duration>;

    /// Whether a key's plans are this member's (the key encoded; the
    /// changes topic's partition, where known).
    fn owns(&self, key: &[u8], partition: Option<u32>) -> bool;

    /// A read's runs are recorded; they took `took`.
    fn ran(&mut self, _took: Duration) {}

    /// Records the read position: every record read so far is handled.
    /// A failure is the source's to log and recover from (the records come
    /// again, and their recorded outcomes skip them).
    fn commit(&mut self);

    /// Nothing was read, or the read failed: waits before the next.
    fn idle(&mut self) {}
}

/// Runs one member of `hook` until `stopping`.
pub(crate) fn run_member<H: ClusterHook>(
    hook: &H,
    backend: &dyn HookBackend<H::Model>,
    counters: &HookCounters,
    source: &mut dyn ChangeSource,
    stopping: &dyn Fn() -> bool,
) {
    let versions = backend.spans_are_versions();
    while !stopping() {
        let mut batch = Batch::<State<H>>::new();
        let taken = match source.read(&mut |r| add_change::<H>(&mut batch, counters, versions, r)) {
            Ok(taken) => taken,
            Err(e) => {
                tracing::error!(hook = H::NAME, error = %e, "reading changes failed; retrying");
                std::thread::sleep(Duration::from_millis(100));
                source.idle();
                continue;
            }
        };
        let leftovers = source.leftovers(taken);
        if taken == 0 && leftovers.is_none() {
            source.idle();
            continue;
        }
        let started = Instant::now();
        let owns = |key: &[u8], p: Option<u32>| source.owns(key, p);
        let recorded =
            run_until_recorded(hook, backend, counters, &batch, leftovers, &owns, stopping);
        source.ran(started.elapsed());
        if !recorded {
            return;
        }
        if taken > 0 {
            crate::failpoint::hit("hook_before_commit");
            source.commit();
        }
    }
}

/// Adds a published change to the batch, identified by its version (where
/// the backend's spans are versions) or by the event ranges it covers.
fn add_change<H: ClusterHook>(
    batch: &mut Batch<State<H>>,
    counters: &HookCounters,
    versions: bool,
    r: ChangeRecord<'_>,
) {
    match decode_change_payload::<State<H>>(r.payload) {
        Ok((version, written)) => {
            let spans: Spans = if versions {
                vec![(version, version)]
            } else {
                written
                    .ranges
                    .iter()
                    .filter_map(|x| event_span(x.partition, x.from, x.end))
                    .collect()
            };
            // The key stays encoded: the runner decodes each key once per
            // batch.
            batch.add(
                H::NAME,
                counters,
                r.key,
                written.delta,
                r.published_ms,
                spans,
                Some(r.partition),
            );
        }
        // A change from before the state type changed (then the model was
        // rebuilt): nothing to run.
        Err(e) => tracing::error!(hook = H::NAME, partition = r.partition, error = %e,
            "undecodable change skipped"),
    }
}
