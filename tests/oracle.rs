//! The oracle test, in process: random events, delivered at least once
//! (upstream duplicates re-appended with their original id), in random
//! order, over random partition counts, batch sizes and worker counts,
//! through a log that fails reads, appends and commits at random (so batches
//! are redelivered after their state was written) — the stored state must
//! equal the plain left fold of the distinct events, exactly.
//!
//! Real process kills: `tests/crash.rs`.

mod common;

use accrete::Deployment;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use accrete::log::{Log, NewRecord, RecordBatch, partition_for};
use accrete::runtime::{Config, Runtime};
use accrete::store::EmbeddedStore;
use accrete::testing::MemoryLog;
use accrete::{Error, Result};
use common::*;

/// A log that fails a fraction of calls, like a flaky disk or broker.
struct FlakyLog {
    inner: MemoryLog,
    seed: AtomicU64,
    failure_rate: f64,
    failures: AtomicU64,
}

impl FlakyLog {
    fn roll(&self, what: &str) -> Result<()> {
        let mut rng = Rng(self
            .seed
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed));
        if rng.chance(self.failure_rate) {
            self.failures.fetch_add(1, Ordering::Relaxed);
            return Err(Error::Usage(format!("injected {what} failure")));
        }
        Ok(())
    }
}

impl Log for FlakyLog {
    fn create_topic(&self, topic: &str, partitions: u32) -> Result<()> {
        self.inner.create_topic(topic, partitions)
    }
    fn partitions(&self, topic: &str) -> Result<u32> {
        self.inner.partitions(topic)
    }
    fn append(&self, topic: &str, partition: u32, records: &[NewRecord<'_>]) -> Result<u64> {
        if topic.starts_with("changes.") {
            self.roll("publish")?;
        }
        self.inner.append(topic, partition, records)
    }
    fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
        batch: &mut RecordBatch,
    ) -> Result<()> {
        self.roll("read")?;
        self.inner.read(topic, partition, from, max, batch)
    }
    fn end_offset(&self, topic: &str, partition: u32) -> Result<u64> {
        self.inner.end_offset(topic, partition)
    }
    fn committed(&self, group: &str, topic: &str, partition: u32) -> Result<u64> {
        self.inner.committed(group, topic, partition)
    }
    fn commit(&self, group: &str, topic: &str, partition: u32, offset: u64) -> Result<()> {
        self.roll("commit")?;
        self.inner.commit(group, topic, partition, offset)
    }
    fn reset_group(&self, group: &str, topic: &str) -> Result<()> {
        self.inner.reset_group(group, topic)
    }
}

fn run(seed: u64) {
    let mut rng = Rng(seed);
    let partitions = 1 + rng.below(6) as u32;
    let config = Config {
        partitions,
        batch_size: 1 + rng.below(300) as usize,
        flush_interval: Duration::from_millis(1),
        workers: 1 + rng.below(3) as usize,
        max_retry_backoff: Duration::from_millis(5),
        ..Config::default()
    };
    let n = 50 + rng.below(600) as usize;
    let accounts = 1 + rng.below(40) as u16;
    let events = payments(&mut rng, n, accounts);
    let failure_rate = [0.0, 0.05, 0.2][rng.below(3) as usize];
    let ctx = format!("seed {seed}: {n} events, {config:?}, failure rate {failure_rate}");

    // Half the events come from an upstream log with at-least-once delivery.
    let delivery = at_least_once(&mut rng, events.len(), 0.5);

    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(FlakyLog {
        inner: MemoryLog::new(),
        seed: AtomicU64::new(seed),
        failure_rate,
        failures: AtomicU64::new(0),
    });
    let store = Arc::new(EmbeddedStore::open(dir.path().join("state.redb")).unwrap());
    let rt = Runtime::new(log.clone(), store, config.clone()).unwrap();
    rt.add_model(Balances).unwrap();
    rt.add_model(Visitors).unwrap();

    // Submit in chunks while the models run; add a third model midway (a
    // backfill that must converge like the others).
    let topic = &config.events_topic;
    let mut backfilling = false;
    for (chunk_no, chunk) in delivery.chunks(1 + rng.below(100) as usize).enumerate() {
        for (i, origin) in chunk {
            let e = &events[*i];
            let key = e.from.to_le_bytes();
            let payload = accrete::event::encode(e).unwrap();
            let record = NewRecord {
                key: &key,
                timestamp: e.at_ms,
                payload: &payload,
                origin: *origin,
            };
            log.inner
                .append(topic, partition_for(&key, partitions), &[record])
                .unwrap();
        }
        if chunk_no == 2 {
            rt.add_model(Receipts).unwrap();
            backfilling = true;
        }
    }
    if !backfilling {
        // Fewer than three chunks: the backfill starts after the last one.
        rt.add_model(Receipts).unwrap();
    }

    let timeout = Duration::from_secs(60);
    rt.wait_caught_up::<Balances>(timeout)
        .unwrap_or_else(|e| panic!("{ctx}: {e}"));
    rt.wait_caught_up::<Visitors>(timeout)
        .unwrap_or_else(|e| panic!("{ctx}: {e}"));
    rt.wait_caught_up::<Receipts>(timeout)
        .unwrap_or_else(|e| panic!("{ctx}: {e}"));

    assert_matches_the_oracle(&rt, &events, &ctx);

    // Every write that changed a key published a change: versions 1..=v of
    // every key are on the changes topic (at least once).
    assert_every_change_published(&rt, &log.inner, 0, &ctx);

    // Every projection error is one dead letter (per event id, however
    // often it was delivered), with the projection's reason and the payload.
    let dead = rt.dead_letters::<Balances>().unwrap();
    let zero: Vec<&Payment> = events.iter().filter(|e| e.cents == 0).collect();
    assert_eq!(dead.len(), zero.len(), "{ctx}: dead letters {dead:?}");
    for letter in &dead {
        assert!(
            letter.reason.contains("moves no money"),
            "{ctx}: {letter:?}"
        );
        let e: Payment = postcard::from_bytes(&letter.payload).unwrap();
        assert_eq!(e.cents, 0, "{ctx}");
    }
    assert!(rt.dead_letters::<Visitors>().unwrap().is_empty(), "{ctx}");
    rt.shutdown();
}

#[test]
fn stored_state_equals_the_plain_fold_of_distinct_events() {
    for seed in seeds("oracle", 100) {
        let result = std::panic::catch_unwind(|| run(seed));
        if let Err(panic) = result {
            eprintln!("FAILED: replay with ACCRETE_SEED={seed} cargo test --test oracle");
            std::panic::resume_unwind(panic);
        }
    }
}
