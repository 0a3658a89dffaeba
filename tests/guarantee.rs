//! Regression tests for the holes in exactly-once that a review reproduced
//! on the embedded default with the public API (issue #10). Each failed
//! before its fix.

mod common;

use accrete::Deployment;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use accrete::Error;
use accrete::event::{EventId, source_id};
use accrete::log::{Log, NewRecord};
use accrete::model::{Deltas, ReadModel};
use accrete::monoids::Sum;
use accrete::runtime::{Config, Runtime};
use accrete::store::EmbeddedStore;
use accrete::testing::MemoryLog;
use common::*;
use serde::{Deserialize, Serialize};

const WAIT: Duration = Duration::from_secs(30);

fn config(partitions: u32, batch_size: usize) -> Config {
    Config {
        partitions,
        batch_size,
        workers: 1,
        flush_interval: Duration::from_millis(1),
        max_retry_backoff: Duration::from_millis(5),
        ..Config::default()
    }
}

/// Hole 1: a batch written but not committed, then a restart with a smaller
/// batch (or a log that returns fewer records than asked) stored a smaller
/// "written end"; after the next failed step the rest of the old batch was
/// applied a second time (a sum of 1 900 for 1 000 events).
#[test]
fn the_written_end_never_goes_backwards() {
    let memory: Arc<dyn Log> = Arc::new(MemoryLog::new());
    let log = Arc::new(Scripted::new(memory));
    let dir = tempfile::tempdir().unwrap();
    let events: Vec<Payment> = (0..1000).map(|i| payment(i, 1, 2, 1)).collect();
    {
        // Run 1: the whole batch is written, its commit fails.
        log.commits_fail.store(true, SeqCst);
        let store = Arc::new(EmbeddedStore::open(dir.path().join("state.redb")).unwrap());
        let rt = Runtime::new(log.clone(), store, config(1, 1000)).unwrap();
        rt.submit_batch(events.iter().map(|e| (b"k".as_slice(), 0, e)))
            .unwrap();
        rt.add_model(Balances).unwrap();
        wait_for("the batch to be written", || {
            rt.get::<Balances>(&2).unwrap() == Some(Sum(1000))
        });
        rt.shutdown();
    }
    // Run 2: commits work, reads return at most 100 records, and the reads
    // after the first fail (a failed step re-reads the written end).
    log.commits_fail.store(false, SeqCst);
    log.read_cap.store(100, SeqCst);
    let store = Arc::new(EmbeddedStore::open(dir.path().join("state.redb")).unwrap());
    let rt = Runtime::new(log.clone(), store, config(1, 100)).unwrap();
    rt.add_model(Balances).unwrap();
    wait_for("the first short batch", || {
        rt.status(Balances::NAME).unwrap().partitions[0].committed >= 100
    });
    log.failing_reads.store(3, SeqCst);
    rt.wait_caught_up::<Balances>(WAIT).unwrap();
    assert_eq!(rt.get::<Balances>(&2).unwrap(), Some(Sum(1000)));
    assert_eq!(rt.get::<Balances>(&1).unwrap(), Some(Sum(-1000)));
}

/// Hole 2: `forward` from an upstream topic with the same name as ours (an
/// export replayed into a fresh runtime, both topics called `events`)
/// dropped every event silently.
#[test]
fn forwarding_from_a_topic_of_the_same_name_applies_every_event() {
    let upstream_dir = tempfile::tempdir().unwrap();
    let upstream = Runtime::open_with(upstream_dir.path(), config(2, 100)).unwrap();
    let events: Vec<Payment> = (0..200).map(|i| payment(i, (i % 5) as u16, 9, 3)).collect();
    let ids: Vec<EventId> = events
        .iter()
        .map(|e| upstream.submit(e.from.to_le_bytes(), 0, e).unwrap())
        .collect();
    assert_ne!(ids[0].source, source_id("events"));

    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open_with(dir.path(), config(2, 100)).unwrap();
    rt.add_model(Balances).unwrap();
    // Every event twice (upstream at-least-once delivery).
    for _ in 0..2 {
        rt.forward(
            events
                .iter()
                .zip(&ids)
                .map(|(e, id)| (e.from.to_le_bytes(), 0, e, *id)),
        )
        .unwrap();
    }
    rt.wait_caught_up::<Balances>(WAIT).unwrap();
    assert_eq!(stored::<Balances>(&rt), oracle(&Balances, &events));
    assert!(rt.dead_letters::<Balances>().unwrap().is_empty());

    // Ids this runtime gave out itself, forwarded back: copies, skipped.
    let own = rt.submit(b"x", 0, &payment(1000, 7, 8, 5)).unwrap();
    rt.forward([(b"x", 0, &payment(1000, 7, 8, 5), own)])
        .unwrap();
    rt.wait_caught_up::<Balances>(WAIT).unwrap();
    assert_eq!(rt.get::<Balances>(&8).unwrap(), Some(Sum(5)));
}

/// Hole 3: a second process opening a live directory opened (and repaired
/// the torn tail of) the log before the store's lock refused it, cutting
/// appends in flight.
#[test]
fn a_second_open_of_a_live_directory_fails_before_touching_anything() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open_with(dir.path(), config(1, 100)).unwrap();
    rt.add_model(Balances).unwrap();
    for i in 0..50 {
        rt.submit(b"k", 0, &payment(i, 1, 2, 1)).unwrap();
    }
    rt.wait_caught_up::<Balances>(WAIT).unwrap();
    // An append in flight: half a frame at the partition's end.
    let part = dir.path().join("log/topics/events/0.log");
    let len = std::fs::metadata(&part).unwrap().len();
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&part)
            .unwrap();
        f.write_all(&[0x40, 0, 0, 0, 1, 2]).unwrap();
    }
    let second = Runtime::open_with(dir.path(), config(1, 100)).unwrap_err();
    assert!(matches!(second, Error::Locked { .. }), "{second}");
    let message = second.to_string();
    assert!(
        message.contains(&std::process::id().to_string()),
        "names the holder: {message}"
    );
    assert_eq!(
        std::fs::metadata(&part).unwrap().len(),
        len + 6,
        "the second open cut the live log"
    );

    // Read-only inspection works while the service runs, and writes nothing.
    let ro = Runtime::open_read_only(dir.path(), config(1, 100)).unwrap();
    assert_eq!(ro.get::<Balances>(&2).unwrap(), Some(Sum(50)));
    assert!(ro.status(Balances::NAME).unwrap().caught_up());
    assert!(ro.submit(b"k", 0, &payment(99, 1, 2, 1)).is_err());
    assert!(ro.add_model(Balances).is_err());
    assert_eq!(std::fs::metadata(&part).unwrap().len(), len + 6);
    // The live runtime goes on (its next append overwrites the half frame)
    // and the read-only store follows its commits.
    rt.submit(b"k", 0, &payment(51, 1, 2, 1)).unwrap();
    rt.wait_caught_up::<Balances>(WAIT).unwrap();
    assert_eq!(ro.get::<Balances>(&2).unwrap(), Some(Sum(51)));
    drop(rt);
    let rt = Runtime::open_with(dir.path(), config(1, 100)).unwrap();
    rt.add_model(Balances).unwrap();
    rt.wait_caught_up::<Balances>(WAIT).unwrap();
    assert_eq!(rt.get::<Balances>(&2).unwrap(), Some(Sum(51)));
}

/// Hole 4: an interrupted rebuild (an error or crash between clearing the
/// state and resetting the consumer group) left an empty store that said it
/// was caught up.
#[test]
fn an_interrupted_rebuild_is_finished_not_lost() {
    let memory: Arc<dyn Log> = Arc::new(MemoryLog::new());
    let log = Arc::new(Scripted::new(memory));
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path().join("state.redb")).unwrap());
    let rt = Runtime::new(log.clone(), store, config(2, 50)).unwrap();
    rt.add_model(Balances).unwrap();
    let mut rng = Rng(7);
    let events = payments(&mut rng, 300, 10);
    rt.submit_batch(events.iter().map(|e| (e.from.to_le_bytes(), 0, e)))
        .unwrap();
    rt.wait_caught_up::<Balances>(WAIT).unwrap();
    assert_eq!(stored::<Balances>(&rt), oracle(&Balances, &events));

    log.resets_fail.store(true, SeqCst);
    let failed = rt.rebuild::<Balances>().unwrap_err().to_string();
    assert!(failed.contains("add it again"), "{failed}");
    log.resets_fail.store(false, SeqCst);
    // The model is stopped (its state cleared) until it is added again.
    assert_eq!(rt.get::<Balances>(&events[0].to).unwrap(), None);
    rt.add_model(Balances).unwrap();
    rt.wait_caught_up::<Balances>(WAIT).unwrap();
    assert_eq!(stored::<Balances>(&rt), oracle(&Balances, &events));
}

/// Hole 5: `rebuild` racing `add_model` of the same model ran two pipelines
/// over the same partitions; every later event counted twice, and shutdown
/// could not stop the orphan.
#[test]
fn rebuild_racing_add_model_runs_one_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open_with(dir.path(), config(4, 20)).unwrap();
    rt.add_model(Balances).unwrap();
    let mut rng = Rng(11);
    let events = payments(&mut rng, 400, 8);
    let (first, second) = events.split_at(200);
    rt.submit_batch(first.iter().map(|e| (e.from.to_le_bytes(), 0, e)))
        .unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..20 {
                rt.rebuild::<Balances>().unwrap();
            }
        });
        s.spawn(|| {
            for _ in 0..200 {
                // Refused while running; may slip in while a rebuild has
                // stopped the model, which must then not start a second one.
                let _ = rt.add_model(Balances);
            }
        });
    });
    rt.submit_batch(second.iter().map(|e| (e.from.to_le_bytes(), 0, e)))
        .unwrap();
    rt.wait_caught_up::<Balances>(WAIT).unwrap();
    assert_eq!(stored::<Balances>(&rt), oracle(&Balances, &events));
    // Shutdown stops every pipeline: nothing folds afterwards.
    rt.shutdown();
    rt.submit(b"late", 0, &payment(9999, 1, 2, 77)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(stored::<Balances>(&rt), oracle(&Balances, &events));
}

/// A recursive event type: a hostile payload nests it deeply.
#[derive(Debug, Serialize, Deserialize)]
enum Tree {
    Leaf(i64),
    Node(Box<Tree>),
}

impl Tree {
    fn sum(&self) -> i64 {
        let mut t = self;
        loop {
            match t {
                Tree::Leaf(v) => return *v,
                Tree::Node(inner) => t = inner,
            }
        }
    }
}

struct Trees;
impl ReadModel for Trees {
    const NAME: &'static str = "trees";
    type Event = Tree;
    type Key = u8;
    type State = Sum<i64>;
    fn project(&self, t: &Tree, out: &mut Deltas<u8, Sum<i64>>) -> Result<(), String> {
        let v = t.sum();
        assert!(v != 13, "the projection panics on 13");
        out.push(0, Sum(v));
        Ok(())
    }
}

/// Hole 7: a panicking projection killed its worker (the partition stalled
/// while the runtime looked alive); a deeply nested payload overflowed the
/// stack and aborted the process on every restart; a forwarded id with
/// offset `u64::MAX` overflowed.
#[test]
fn bad_events_become_dead_letters_and_the_partition_moves_on() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open_with(dir.path(), config(1, 100)).unwrap();
    rt.add_model(Trees).unwrap();
    rt.submit(b"t", 0, &Tree::Leaf(1)).unwrap();
    let panics = rt.submit(b"t", 0, &Tree::Leaf(13)).unwrap();
    // A payload nested a million levels deep (never built as a value: its
    // encoding is a million `Node` tags then a leaf).
    let mut deep = vec![accrete::event::EVENT_FORMAT];
    deep.extend(std::iter::repeat_n(1_u8, 1_000_000));
    deep.extend([0, 2]);
    let deep_at = rt
        .log()
        .append(
            "events",
            0,
            &[NewRecord {
                key: b"t",
                timestamp: 0,
                payload: &deep,
                origin: None,
            }],
        )
        .unwrap();
    let extreme = EventId {
        source: source_id("upstream"),
        partition: 0,
        offset: u64::MAX,
    };
    rt.forward([
        (b"t", 0, &Tree::Leaf(100), extreme),
        (b"t", 0, &Tree::Leaf(100), extreme),
    ])
    .unwrap();
    rt.submit(b"t", 0, &Tree::Node(Box::new(Tree::Leaf(1000))))
        .unwrap();
    rt.wait_caught_up::<Trees>(WAIT).unwrap();
    assert_eq!(rt.get::<Trees>(&0).unwrap(), Some(Sum(1101)));
    let dead = rt.dead_letters::<Trees>().unwrap();
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!(dead[0].event, panics);
    assert!(
        dead[0].reason.contains("panicked") && dead[0].reason.contains("panics on 13"),
        "{}",
        dead[0].reason
    );
    assert_eq!(dead[1].event.offset, deep_at);
    assert!(
        dead[1].reason.contains("nested too deeply"),
        "{}",
        dead[1].reason
    );
    // The process survives a restart with the same log.
    drop(rt);
    let rt = Runtime::open_with(dir.path(), config(1, 100)).unwrap();
    rt.add_model(Trees).unwrap();
    rt.wait_caught_up::<Trees>(WAIT).unwrap();
    assert_eq!(rt.get::<Trees>(&0).unwrap(), Some(Sum(1101)));
}

/// Hole 8: each non-adjacent forwarded id added a range to the key's
/// record, rewritten on every write (463 KB after 40 000 events).
#[test]
fn forwarded_bookkeeping_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open_with(dir.path(), config(1, 1000)).unwrap();
    rt.add_model(Balances).unwrap();
    let upstream = source_id("upstream");
    let p = payment(0, 1, 2, 1);
    // Every other upstream offset: the gaps never close.
    for chunk in 0..40 {
        let batch: Vec<_> = (0..1000_u64)
            .map(|i| {
                let id = EventId {
                    source: upstream,
                    partition: 3,
                    offset: (chunk * 1000 + i) * 2,
                };
                (b"k", 0, &p, id)
            })
            .collect();
        rt.forward(batch).unwrap();
    }
    rt.wait_caught_up::<Balances>(WAIT).unwrap();
    assert_eq!(rt.get::<Balances>(&2).unwrap(), Some(Sum(40_000)));
    let bytes = rt.stored_bytes::<Balances>(&2).unwrap().unwrap();
    assert!(bytes < 64, "the key's record is {bytes} bytes");
    // Ids spread over more 4 096-offset chunks than are kept (1 024): the
    // oldest are forgotten (bounded), and a copy of one of them cannot be
    // told from a new event any more: a dead letter, never a second
    // application.
    let spread: Vec<_> = (0..1100_u64)
        .map(|i| {
            let id = EventId {
                source: upstream,
                partition: 3,
                offset: 100_000_000 + i * 4096,
            };
            (b"k", 0, &p, id)
        })
        .collect();
    rt.forward(spread).unwrap();
    rt.wait_caught_up::<Balances>(WAIT).unwrap();
    let old = EventId {
        source: upstream,
        partition: 3,
        offset: 0,
    };
    rt.forward([(b"k", 0, &p, old)]).unwrap();
    rt.wait_caught_up::<Balances>(WAIT).unwrap();
    assert_eq!(rt.get::<Balances>(&2).unwrap(), Some(Sum(41_100)));
    let dead = rt.dead_letters::<Balances>().unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].reason.contains("horizon"), "{}", dead[0].reason);
}

/// Hole 9: with committed offsets beyond the log's end (a lost unsynced
/// tail, a restored backup), new events at re-used offsets were skipped
/// and status said lag 0.
#[test]
fn a_log_that_lost_its_tail_loses_no_new_event() {
    let dir = tempfile::tempdir().unwrap();
    let backup = tempfile::tempdir().unwrap();
    let mut rng = Rng(5);
    let events = payments(&mut rng, 300, 6);
    {
        let rt = Runtime::open_with(dir.path(), config(2, 50)).unwrap();
        rt.add_model(Balances).unwrap();
        rt.submit_batch(events[..100].iter().map(|e| (e.from.to_le_bytes(), 0, e)))
            .unwrap();
        rt.wait_caught_up::<Balances>(WAIT).unwrap();
        rt.shutdown();
        copy_dir(&dir.path().join("log"), &backup.path().join("log"));
    }
    {
        let rt = Runtime::open_with(dir.path(), config(2, 50)).unwrap();
        rt.add_model(Balances).unwrap();
        rt.submit_batch(
            events[100..200]
                .iter()
                .map(|e| (e.from.to_le_bytes(), 0, e)),
        )
        .unwrap();
        rt.wait_caught_up::<Balances>(WAIT).unwrap();
        rt.shutdown();
    }
    // The log goes back to the backup; the state keeps all 200 events.
    std::fs::remove_dir_all(dir.path().join("log")).unwrap();
    copy_dir(&backup.path().join("log"), &dir.path().join("log"));
    let rt = Runtime::open_with(dir.path(), config(2, 50)).unwrap();
    rt.add_model(Balances).unwrap();
    rt.submit_batch(events[200..].iter().map(|e| (e.from.to_le_bytes(), 0, e)))
        .unwrap();
    rt.wait_caught_up::<Balances>(WAIT).unwrap();
    assert_eq!(stored::<Balances>(&rt), oracle(&Balances, &events));
}

/// Hole 10: a worker failing every batch retried forever, invisibly:
/// nothing in `Status`, nothing printed, `wait_caught_up` a bare timeout.
#[test]
fn a_model_that_cannot_progress_says_so() {
    let memory: Arc<dyn Log> = Arc::new(MemoryLog::new());
    let log = Arc::new(Scripted::new(memory));
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path().join("state.redb")).unwrap());
    let rt = Runtime::new(log.clone(), store, config(1, 50)).unwrap();
    rt.add_model(Balances).unwrap();
    log.reads_broken.store(true, SeqCst);
    rt.submit(b"k", 0, &payment(1, 1, 2, 5)).unwrap();
    wait_for("the failure to show", || {
        rt.status(Balances::NAME).unwrap().error.is_some()
    });
    let failing = rt.status(Balances::NAME).unwrap().error.unwrap();
    assert!(
        failing.last_error.contains("injected read failure"),
        "{failing:?}"
    );
    let timeout = rt
        .wait_caught_up::<Balances>(Duration::from_millis(50))
        .unwrap_err();
    assert!(matches!(timeout, Error::Timeout(_)), "{timeout}");
    assert!(
        timeout.to_string().contains("injected read failure"),
        "{timeout}"
    );
    log.reads_broken.store(false, SeqCst);
    rt.wait_caught_up::<Balances>(WAIT).unwrap();
    assert_eq!(rt.status(Balances::NAME).unwrap().error, None);
    let unknown = rt.status("no_such_model").unwrap_err().to_string();
    assert!(
        unknown.contains("no_such_model") && unknown.contains("not known"),
        "{unknown}"
    );
}
