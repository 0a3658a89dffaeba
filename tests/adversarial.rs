//! Adversarial review of the exactly-once guarantees on the embedded
//! default, through the public API only. Tests marked `BUG` break a
//! guarantee DESIGN.md states (and fail until it is fixed); the others are
//! attacks that held, kept as cheap regression tests.

mod common;

use accrete::Deployment;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use accrete::event::{EventId, source_id};
use accrete::hooks::{ClusterHook, Trigger};
use accrete::log::Log;
use accrete::model::ReadModel;
use accrete::monoids::Sum;
use accrete::runtime::{Config, Runtime};
use accrete::store::EmbeddedStore;
use accrete::testing::MemoryLog;
use common::*;

const WAIT: Duration = Duration::from_secs(30);

fn config(topic: &str, partitions: u32, batch_size: usize, workers: usize) -> Config {
    Config {
        events_topic: topic.into(),
        partitions,
        batch_size,
        workers,
        flush_interval: Duration::from_millis(1),
        max_retry_backoff: Duration::from_millis(5),
    }
}

// ---------------------------------------------------------------------------
// Bugs
// ---------------------------------------------------------------------------

/// Was a bug until fixed in session 5 (guarantee: "Exactly once: what is stored" / "The written end only
/// grows"): the written end is kept per model and partition, not per events
/// topic. A directory reopened with another `events_topic` (the way to get
/// more partitions: the count of a topic is fixed) keeps the old topic's
/// written ends, and every native event of the new topic below them is
/// skipped as "absorbed" without ever having been folded. Events submitted
/// before `add_model` (a service accepting writes as soon as it opens) keep
/// the new topic's end at or above the old written end, so the lost-tail
/// repair does not trigger either; status says lag 0.
///
/// Expected: both topics' 200 events folded; got: the new topic's first 100
/// skipped.
#[test]
fn a_new_events_topic_is_not_skipped_by_the_old_topics_written_end() {
    let dir = tempfile::tempdir().unwrap();
    let events: Vec<Payment> = (0..200).map(|i| payment(i, 1, 2, 1)).collect();
    {
        let rt = Runtime::open_with(dir.path(), config("events", 1, 1000, 1)).unwrap();
        rt.add_model(Balances).unwrap();
        rt.submit_batch(events[..100].iter().map(|e| (b"k".as_slice(), 0, e)))
            .unwrap();
        rt.wait_caught_up::<Balances>(WAIT).unwrap();
        rt.shutdown();
    }
    let rt = Runtime::open_with(dir.path(), config("events-v2", 1, 1000, 1)).unwrap();
    rt.submit_batch(events[100..].iter().map(|e| (b"k".as_slice(), 0, e)))
        .unwrap();
    rt.add_model(Balances).unwrap();
    rt.wait_caught_up::<Balances>(WAIT).unwrap();
    assert_eq!(
        stored::<Balances>(&rt),
        oracle(&Balances, &events),
        "the new topic's events below the old topic's written end were skipped"
    );
}

/// Was a bug until fixed in session 5 (guarantee: "Forwarded ids, once per model" and `forward`'s docs:
/// "Ids this runtime gave out (from submit) forwarded back are copies of its
/// own events: skipped"): after moving to a new events topic (to get more
/// partitions), replaying the old topic's events into the new one with the
/// ids `submit` returned applies every one of them a second time. The old
/// topic's source number is no longer recognized as "ours" (only the
/// current topic's is), and the forwarded-id bitmap never recorded them
/// (they were applied at their native position).
///
/// Expected: balances unchanged (200 copies of applied events); got: doubled.
#[test]
fn own_ids_from_a_previous_topic_forwarded_back_are_not_applied_again() {
    let dir = tempfile::tempdir().unwrap();
    let events: Vec<Payment> = (0..200).map(|i| payment(i, (i % 4) as u16, 9, 1)).collect();
    let ids: Vec<EventId>;
    {
        let rt = Runtime::open_with(dir.path(), config("events", 2, 1000, 1)).unwrap();
        rt.add_model(Balances).unwrap();
        ids = events
            .iter()
            .map(|e| rt.submit(e.from.to_le_bytes(), 0, e).unwrap())
            .collect();
        rt.wait_caught_up::<Balances>(WAIT).unwrap();
        rt.shutdown();
    }
    // A migration to a new topic (same partition count: the changes topic
    // keeps its own), the old events replayed into
    // it with their ids (add_model first, so the old written ends are
    // brought down by the lost-tail repair and do not hide anything).
    let rt = Runtime::open_with(dir.path(), config("events-v2", 2, 1000, 2)).unwrap();
    rt.add_model(Balances).unwrap();
    rt.forward(
        events
            .iter()
            .zip(&ids)
            .map(|(e, id)| (e.from.to_le_bytes(), 0, e, *id)),
    )
    .unwrap();
    rt.wait_caught_up::<Balances>(WAIT).unwrap();
    assert_eq!(
        stored::<Balances>(&rt),
        oracle(&Balances, &events),
        "ids this store gave out under its previous topic were applied again"
    );
}

/// Was a bug until fixed in session 5 (guarantee: "Source numbers belong to the store, not to the topic's
/// name"): the source number of a topic first used on a store that already
/// has written ends is the legacy hash of the topic's name (the "store
/// written before" test looks at the written ends of any topic, not at
/// whether this store predates source numbers). Events forwarded from an
/// upstream runtime's topic of the same name (ids with
/// `source_id(name)`, as any store written before used) are then taken for
/// copies of our own and dropped whole, silently: no dead letter, lag 0.
///
/// Expected: 50 forwarded events applied; got: none.
#[test]
fn a_second_topic_on_a_used_store_gets_a_random_source() {
    let dir = tempfile::tempdir().unwrap();
    {
        let rt = Runtime::open_with(dir.path(), config("events", 1, 1000, 1)).unwrap();
        rt.add_model(Balances).unwrap();
        rt.submit(b"k", 0, &payment(0, 1, 2, 5)).unwrap();
        rt.wait_caught_up::<Balances>(WAIT).unwrap();
        rt.shutdown();
    }
    let rt = Runtime::open_with(dir.path(), config("orders", 1, 1000, 1)).unwrap();
    rt.add_model(Balances).unwrap();
    let upstream: Vec<Payment> = (0..50).map(|i| payment(100 + i, 3, 4, 1)).collect();
    rt.forward(upstream.iter().enumerate().map(|(i, e)| {
        let id = EventId {
            source: source_id("orders"),
            partition: 0,
            offset: i as u64,
        };
        (b"k".as_slice(), 0, e, id)
    }))
    .unwrap();
    rt.wait_caught_up::<Balances>(WAIT).unwrap();
    let mut all = vec![payment(0, 1, 2, 5)];
    all.extend(upstream);
    assert_eq!(
        stored::<Balances>(&rt),
        oracle(&Balances, &all),
        "events forwarded from an upstream topic named like our new topic were dropped silently"
    );
}

/// Was a bug until fixed in session 5 (guarantee: "A log that lost its tail"): the repair only looks at
/// whether the committed position or written end lies beyond the log's
/// end when the model starts. A service that accepts submits as soon as it
/// opens (before `add_model`) refills the lost offsets first; the end is
/// then back at (or beyond) the old written end, nothing is repaired, and
/// the new events at the re-used offsets are skipped as absorbed (status:
/// lag 0).
///
/// Expected: all 300 events folded; got: the 100 submitted after the
/// restore skipped.
#[test]
fn a_lost_tail_refilled_before_the_model_starts_loses_no_event() {
    let dir = tempfile::tempdir().unwrap();
    let backup = tempfile::tempdir().unwrap();
    let events: Vec<Payment> = (0..300).map(|i| payment(i, 1, 2, 1 + i as i64)).collect();
    {
        let rt = Runtime::open_with(dir.path(), config("events", 1, 50, 1)).unwrap();
        rt.add_model(Balances).unwrap();
        rt.submit_batch(events[..100].iter().map(|e| (b"k".as_slice(), 0, e)))
            .unwrap();
        rt.wait_caught_up::<Balances>(WAIT).unwrap();
        rt.shutdown();
        copy_dir(&dir.path().join("log"), &backup.path().join("log"));
        rt.submit_batch(events[100..200].iter().map(|e| (b"k".as_slice(), 0, e)))
            .unwrap();
        rt.add_model(Balances).unwrap();
        rt.wait_caught_up::<Balances>(WAIT).unwrap();
        rt.shutdown();
    }
    std::fs::remove_dir_all(dir.path().join("log")).unwrap();
    copy_dir(&backup.path().join("log"), &dir.path().join("log"));
    let rt = Runtime::open_with(dir.path(), config("events", 1, 50, 1)).unwrap();
    rt.submit_batch(events[200..].iter().map(|e| (b"k".as_slice(), 0, e)))
        .unwrap();
    rt.add_model(Balances).unwrap();
    rt.wait_caught_up::<Balances>(WAIT).unwrap();
    assert_eq!(
        stored::<Balances>(&rt),
        oracle(&Balances, &events),
        "events at offsets the lost tail had used were skipped"
    );
}

/// Records every run of a hook: (key, version, delta, idempotency key).
type Runs = Arc<Mutex<Vec<(u16, u64, i64, String)>>>;

struct SumBalances(Runs);
impl ClusterHook for SumBalances {
    type Model = Balances;
    const NAME: &'static str = "notify";
    fn run(&self, t: &Trigger<'_, Balances>) -> Result<(), String> {
        self.0
            .lock()
            .unwrap()
            .push((*t.key, t.version, t.delta.0, t.idempotency_key.to_string()));
        Ok(())
    }
}

struct CountReceipts(Runs);
impl ClusterHook for CountReceipts {
    type Model = Receipts;
    const NAME: &'static str = "notify";
    fn run(&self, t: &Trigger<'_, Receipts>) -> Result<(), String> {
        self.0.lock().unwrap().push((
            *t.key,
            t.version,
            t.delta.count.0 as i64,
            t.idempotency_key.to_string(),
        ));
        Ok(())
    }
}

/// Was a bug until fixed in session 5 (guarantee: "A run covers changes, not a batch" / a new cluster hook
/// "runs once for every key changed so far"): the versions a hook covered
/// are kept per hook *name* and key (`hook_covered`: `<hook>/<key>`), while
/// idempotency keys, consumer groups and outcomes include the model. A hook
/// name reused for another model (one at a time, as `add_cluster_hook`
/// allows: a renamed or replaced hook) finds the other model's versions
/// covered for every key whose encoding coincides, and never runs for
/// those changes.
///
/// Expected: the receipts hook runs for every receipts key; got: keys the
/// balances hook covered are silently passed over.
#[test]
fn a_hook_name_reused_for_another_model_runs_for_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let events: Vec<Payment> = (0..40)
        .map(|i| payment(i, (i % 4) as u16, (i % 4) as u16 + 4, 1))
        .collect();
    {
        let rt = Runtime::open_with(dir.path(), config("events", 2, 1000, 1)).unwrap();
        rt.add_model(Balances).unwrap();
        rt.submit_batch(events.iter().map(|e| (e.from.to_le_bytes(), 0, e)))
            .unwrap();
        rt.wait_caught_up::<Balances>(WAIT).unwrap();
        let runs: Runs = Arc::default();
        rt.add_cluster_hook(SumBalances(runs.clone())).unwrap();
        wait_for("the balances hook", || {
            rt.hook_lag("notify").unwrap() == 0 && !runs.lock().unwrap().is_empty()
        });
        rt.shutdown();
    }
    let rt = Runtime::open_with(dir.path(), config("events", 2, 1000, 1)).unwrap();
    rt.add_model(Receipts).unwrap();
    rt.wait_caught_up::<Receipts>(WAIT).unwrap();
    let runs: Runs = Arc::default();
    rt.add_cluster_hook(CountReceipts(runs.clone())).unwrap();
    wait_for("the receipts hook to drain", || {
        rt.hook_lag("notify").unwrap() == 0
    });
    std::thread::sleep(Duration::from_millis(100));
    let mut per_key: BTreeMap<u16, i64> = BTreeMap::new();
    for (k, _, d, _) in runs.lock().unwrap().iter() {
        *per_key.entry(*k).or_default() += d;
    }
    let expected: BTreeMap<u16, i64> = stored::<Receipts>(&rt)
        .into_iter()
        .map(|(k, v)| (k, v.count.0 as i64))
        .collect();
    assert_eq!(
        per_key, expected,
        "the receipts hook skipped changes the balances hook of the same name had covered"
    );
}

// ---------------------------------------------------------------------------
// Attacks that held (regression tests)
// ---------------------------------------------------------------------------

/// One upstream id forwarded under several routing keys (so into several of
/// our partitions, folded by different workers), several times, interleaved
/// with native submits and own ids forwarded back: applied once.
#[test]
fn one_forwarded_id_routed_to_every_partition_applies_once() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open_with(dir.path(), config("events", 4, 7, 2)).unwrap();
    rt.add_model(Balances).unwrap();
    rt.add_model(Receipts).unwrap();
    let upstream = source_id("upstream");
    let mut rng = Rng(11);
    let mut distinct = Vec::new();
    for round in 0..3u64 {
        for i in 0..60u64 {
            let e = payment(i, (i % 5) as u16, 7 + (i % 3) as u16, 1 + i as i64);
            if round == 0 {
                distinct.push(e.clone());
            }
            let id = EventId {
                source: upstream,
                partition: (i % 2) as u32,
                offset: [i, u64::MAX - i][(i % 3 == 0) as usize],
            };
            let key = rng.next().to_le_bytes();
            rt.forward([(key, 0, &e, id)]).unwrap();
            if i % 10 == 0 {
                let n = payment(1000 + round * 100 + i, 20, 21, 3);
                let own = rt.submit(rng.next().to_le_bytes(), 0, &n).unwrap();
                distinct.push(n.clone());
                rt.forward([(rng.next().to_le_bytes(), 0, &n, own)])
                    .unwrap();
            }
        }
    }
    rt.wait_caught_up::<Balances>(WAIT).unwrap();
    rt.wait_caught_up::<Receipts>(WAIT).unwrap();
    assert_eq!(stored::<Balances>(&rt), oracle(&Balances, &distinct));
    assert_eq!(stored::<Receipts>(&rt), oracle(&Receipts, &distinct));
    assert!(rt.dead_letters::<Balances>().unwrap().is_empty());
}

/// Restarts with other batch sizes and worker counts over a log whose reads
/// are short and whose commits fail in some runs (each run's end is a
/// kill-like drop): every event once.
#[test]
fn restarts_with_other_settings_over_a_misbehaving_log() {
    let memory: Arc<dyn Log> = Arc::new(MemoryLog::new());
    let log = Arc::new(Scripted::new(memory));
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(3);
    let events = payments(&mut rng, 500, 9);
    let upstream = source_id("upstream");
    let mut submitted = Vec::new();
    for (run, (batch, workers, cap, commits_fail)) in [
        (500, 3, 0, true),
        (7, 1, 3, false),
        (1000, 2, 0, true),
        (2, 4, 0, false),
        (64, 2, 5, false),
    ]
    .into_iter()
    .enumerate()
    {
        log.read_cap.store(cap, SeqCst);
        log.commits_fail.store(commits_fail, SeqCst);
        let store = Arc::new(EmbeddedStore::open(dir.path().join("state.redb")).unwrap());
        let rt = Runtime::new(log.clone(), store, config("events", 4, batch, workers)).unwrap();
        rt.add_model(Balances).unwrap();
        rt.add_model(Receipts).unwrap();
        let chunk = &events[run * 100..(run + 1) * 100];
        // Half native, half forwarded (twice, once as a later copy).
        for (i, e) in chunk.iter().enumerate() {
            if i % 2 == 0 {
                rt.submit(e.from.to_le_bytes(), 0, e).unwrap();
            } else {
                let id = EventId {
                    source: upstream,
                    partition: (e.id % 3) as u32,
                    offset: e.id,
                };
                rt.forward([
                    (e.to.to_le_bytes(), 0, e, id),
                    (e.from.to_le_bytes(), 0, e, id),
                ])
                .unwrap();
            }
            submitted.push(e.clone());
        }
        if commits_fail {
            // Let some batches be written (never committed), then "crash".
            std::thread::sleep(Duration::from_millis(50));
        } else {
            rt.wait_caught_up::<Balances>(WAIT).unwrap();
            rt.wait_caught_up::<Receipts>(WAIT).unwrap();
            assert_eq!(stored::<Balances>(&rt), oracle(&Balances, &submitted));
        }
        drop(rt);
    }
    log.read_cap.store(0, SeqCst);
    let store = Arc::new(EmbeddedStore::open(dir.path().join("state.redb")).unwrap());
    let rt = Runtime::new(log.clone(), store, config("events", 4, 33, 3)).unwrap();
    rt.add_model(Balances).unwrap();
    rt.add_model(Receipts).unwrap();
    rt.wait_caught_up::<Balances>(WAIT).unwrap();
    rt.wait_caught_up::<Receipts>(WAIT).unwrap();
    assert_eq!(stored::<Balances>(&rt), oracle(&Balances, &submitted));
    assert_eq!(stored::<Receipts>(&rt), oracle(&Receipts, &submitted));
}

/// rebuild, stop_model, add_model and shutdown racing on threads while
/// events arrive: at the end (every model added again) the oracle.
#[test]
fn operator_actions_racing_on_threads() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Arc::new(Runtime::open_with(dir.path(), config("events", 4, 16, 2)).unwrap());
    rt.add_model(Balances).unwrap();
    let mut rng = Rng(77);
    let events = payments(&mut rng, 600, 8);
    let writer = {
        let rt = rt.clone();
        let events = events.clone();
        std::thread::spawn(move || {
            for e in &events {
                rt.submit(e.from.to_le_bytes(), 0, e).unwrap();
            }
        })
    };
    let ops: Vec<_> = (0..3)
        .map(|t| {
            let rt = rt.clone();
            std::thread::spawn(move || {
                for i in 0..15 {
                    let _ = match (t + i) % 4 {
                        0 => rt.rebuild::<Balances>(),
                        1 => rt.stop_model(Balances::NAME),
                        2 => rt.add_model(Balances),
                        _ => {
                            rt.shutdown();
                            Ok(())
                        }
                    };
                }
            })
        })
        .collect();
    writer.join().unwrap();
    for t in ops {
        t.join().unwrap();
    }
    let _ = rt.add_model(Balances);
    rt.wait_caught_up::<Balances>(WAIT).unwrap();
    assert_eq!(stored::<Balances>(&rt), oracle(&Balances, &events));
    assert_every_change_published(&rt, &**rt.log(), 1000, "racing operators");
}

/// A read-only open and a refused second open while the service runs; the
/// read-only runtime refuses every write.
#[test]
fn read_only_and_second_opens_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open_with(dir.path(), config("events", 2, 10, 1)).unwrap();
    rt.add_model(Balances).unwrap();
    let events: Vec<Payment> = (0..100).map(|i| payment(i, 1, 2, 1)).collect();
    rt.submit_batch(events.iter().map(|e| (b"k".as_slice(), 0, e)))
        .unwrap();
    assert!(matches!(
        Runtime::open_with(dir.path(), config("events", 2, 10, 1)),
        Err(accrete::Error::Locked { .. })
    ));
    let ro = Runtime::open_read_only(dir.path(), config("events", 2, 10, 1)).unwrap();
    assert!(ro.submit(b"k", 0, &events[0]).is_err());
    assert!(ro.add_model(Balances).is_err());
    assert!(ro.rebuild::<Balances>().is_err());
    rt.wait_caught_up::<Balances>(WAIT).unwrap();
    let _ = ro.status(Balances::NAME);
    drop(ro);
    assert_eq!(stored::<Balances>(&rt), oracle(&Balances, &events));
}

/// Hook deltas summed per key across kill-like drops (the runtime dropped
/// while the hook has a backlog), with a panicking run now and then: per
/// key, the deltas of distinct runs add up to the state, and a repeated
/// idempotency key repeats its delta.
#[test]
fn hook_deltas_add_up_across_drops() {
    struct Flaky(Runs, Arc<std::sync::atomic::AtomicU64>);
    impl ClusterHook for Flaky {
        type Model = Balances;
        const NAME: &'static str = "flaky";
        fn run(&self, t: &Trigger<'_, Balances>) -> Result<(), String> {
            if self.1.fetch_add(1, SeqCst) % 7 == 3 {
                panic!("flaky hook");
            }
            self.0.lock().unwrap().push((
                *t.key,
                t.version,
                t.delta.0,
                t.idempotency_key.to_string(),
            ));
            Ok(())
        }
        fn max_attempts(&self) -> u32 {
            100
        }
        fn backoff(&self, _: u32) -> Duration {
            Duration::from_millis(1)
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let runs: Runs = Arc::default();
    let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut rng = Rng(5);
    let events = payments(&mut rng, 400, 6);
    for (run, chunk) in events.chunks(100).enumerate() {
        let rt =
            Runtime::open_with(dir.path(), config("events", 3, 1 + run * 13, 1 + run % 2)).unwrap();
        rt.add_model(Balances).unwrap();
        rt.add_cluster_hook(Flaky(runs.clone(), calls.clone()))
            .unwrap();
        rt.submit_batch(chunk.iter().map(|e| (e.from.to_le_bytes(), 0, e)))
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        drop(rt);
    }
    let rt = Runtime::open_with(dir.path(), config("events", 3, 50, 2)).unwrap();
    rt.add_model(Balances).unwrap();
    rt.add_cluster_hook(Flaky(runs.clone(), calls.clone()))
        .unwrap();
    rt.wait_caught_up::<Balances>(WAIT).unwrap();
    wait_for("the hook to drain", || rt.hook_lag("flaky").unwrap() == 0);
    std::thread::sleep(Duration::from_millis(100));
    rt.shutdown();
    let mut by_id: BTreeMap<String, (u16, i64)> = BTreeMap::new();
    for (k, _, d, id) in runs.lock().unwrap().iter() {
        if let Some(prev) = by_id.insert(id.clone(), (*k, *d)) {
            assert_eq!(prev, (*k, *d), "{id} repeated with another delta");
        }
    }
    let mut per_key: BTreeMap<u16, i64> = BTreeMap::new();
    for (k, d) in by_id.values() {
        *per_key.entry(*k).or_default() += d;
    }
    let state: BTreeMap<u16, i64> = stored::<Balances>(&rt)
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    per_key.retain(|_, v| *v != 0);
    assert_eq!(per_key, state);
    assert_eq!(
        state,
        oracle(&Balances, &events)
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect()
    );
    assert!(rt.store().hook_dead_letters("flaky").unwrap().is_empty());
}

/// A bad event (its projection fails, or panics) forwarded several times
/// under several routing keys, and the same bad event submitted natively
/// and re-read after a restart with a smaller batch: one dead letter per
/// distinct event, the partition moves on, nothing else changes.
#[test]
fn bad_events_forwarded_and_redelivered_are_one_dead_letter_each() {
    struct Panicky;
    impl ReadModel for Panicky {
        const NAME: &'static str = "panicky";
        type Event = Payment;
        type Key = u16;
        type State = Sum<i64>;
        fn project(
            &self,
            p: &Payment,
            out: &mut accrete::model::Deltas<u16, Sum<i64>>,
        ) -> Result<(), String> {
            if p.cents == 13 {
                panic!("unlucky payment {}", p.id);
            }
            out.push(p.to, Sum(p.cents));
            Ok(())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let bad_zero = payment(1, 1, 2, 0);
    let bad_panic = payment(2, 1, 2, 13);
    let good = payment(3, 1, 2, 7);
    let upstream = source_id("upstream");
    let id = |o| EventId {
        source: upstream,
        partition: 0,
        offset: o,
    };
    {
        let rt = Runtime::open_with(dir.path(), config("events", 4, 100, 2)).unwrap();
        rt.add_model(Balances).unwrap();
        rt.add_model(Panicky).unwrap();
        for key in 0u32..6 {
            rt.forward([
                (key.to_le_bytes(), 0, &bad_zero, id(10)),
                (key.to_le_bytes(), 0, &bad_panic, id(11)),
                (key.to_le_bytes(), 0, &good, id(12)),
            ])
            .unwrap();
        }
        rt.submit(b"n", 0, &bad_panic).unwrap();
        rt.submit(b"n", 0, &bad_zero).unwrap();
        rt.wait_caught_up::<Balances>(WAIT).unwrap();
        rt.wait_caught_up::<Panicky>(WAIT).unwrap();
        rt.shutdown();
    }
    let rt = Runtime::open_with(dir.path(), config("events", 4, 1, 3)).unwrap();
    rt.add_model(Balances).unwrap();
    rt.add_model(Panicky).unwrap();
    rt.wait_caught_up::<Balances>(WAIT).unwrap();
    rt.wait_caught_up::<Panicky>(WAIT).unwrap();
    // Balances: the two zero payments (forwarded, native) are bad.
    assert_eq!(rt.dead_letters::<Balances>().unwrap().len(), 2);
    // Panicky: the two unlucky ones.
    assert_eq!(rt.dead_letters::<Panicky>().unwrap().len(), 2);
    let expected = oracle(
        &Balances,
        &[good.clone(), bad_panic.clone(), bad_panic.clone()],
    );
    assert_eq!(stored::<Balances>(&rt), expected);
    assert_eq!(rt.get::<Panicky>(&2).unwrap(), Some(Sum(7)));
    assert!(rt.status(Balances::NAME).unwrap().error.is_none());
}
