//! End to end on the embedded default, side by side in one run:
//!
//! - **decode only**: read every event from the log and decode it: the
//!   practical limit of any consumer;
//! - **accrete**: a `Sum` read model over 100k Zipf-distributed keys, folded
//!   from the log and durably written (one store write per touched key per
//!   batch, exactly-once bookkeeping included);
//! - **naive, durable**: one store transaction per event (read, add, write,
//!   fsync), measured on a prefix of the events;
//! - **naive, batched**: one store write per event, committed per batch
//!   (what accrete does minus pre-aggregation);
//! - **hand-rolled**: the consumer a competent user writes instead of
//!   accrete: read a batch, decode, pre-aggregate per key, one store read
//!   and write per touched key in one durable transaction, then commit the
//!   position (at-least-once: no exactly-once bookkeeping, no changes
//!   published), on as many threads as accrete has workers.
//!
//! `cargo bench --bench runtime` (`ACCRETE_BENCH_EVENTS` sets the count,
//! default 4M; `ACCRETE_BENCH_BATCH` the batch size, default 1 048 576: a backlog is
//! already in the log, so this is a backfill; `ACCRETE_BENCH_ONLY=accrete` skips the naive writers, for
//! profiling). Prints events/s and the ratios; asserts that accrete's state
//! equals the fold it measures against.

use accrete::Deployment;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use accrete::log::{EmbeddedLog, Log, NewRecord, RecordBatch, partition_for};
use accrete::model::{Deltas, ReadModel};
use accrete::monoids::Sum;
use accrete::runtime::{Config, Runtime};
use accrete::store::EmbeddedStore;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Sale {
    product: u64,
    cents: u64,
}

struct Revenue;
impl ReadModel for Revenue {
    const NAME: &'static str = "revenue";
    type Event = Sale;
    type Key = u64;
    type State = Sum<u64>;
    fn project(&self, s: &Sale, out: &mut Deltas<u64, Sum<u64>>) -> Result<(), String> {
        out.push(s.product, Sum(s.cents));
        Ok(())
    }
}

const KEYS: u64 = 100_000;
const PARTITIONS: u32 = 8;
const TOPIC: &str = "events";

/// Zipf(1.0) over `KEYS` by inverse CDF on a precomputed table.
fn zipf_table() -> Vec<f64> {
    let mut cdf = Vec::with_capacity(KEYS as usize);
    let mut acc = 0.0;
    for k in 1..=KEYS {
        acc += 1.0 / k as f64;
        cdf.push(acc);
    }
    cdf.iter().map(|c| c / acc).collect()
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn main() {
    let batch_size: usize = std::env::var("ACCRETE_BENCH_BATCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_048_576);
    let n: u64 = std::env::var("ACCRETE_BENCH_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4_000_000);
    let seed = 42_u64;
    println!("runtime bench: {n} events, {KEYS} Zipf keys, {PARTITIONS} partitions, seed {seed}");
    println!(
        "(accrete: batch size {batch_size}, {} workers, durable commits)",
        Config::default().workers
    );
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(EmbeddedLog::open(dir.path().join("log")).unwrap());
    log.create_topic(TOPIC, PARTITIONS).unwrap();

    // Events, binary-encoded, already in the log (not timed).
    let cdf = zipf_table();
    let mut x = seed;
    let mut expected: HashMap<u64, u64> = HashMap::new();
    let mut parts: Vec<Vec<(Vec<u8>, Vec<u8>)>> = vec![Vec::new(); PARTITIONS as usize];
    for i in 0..n {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let u = (accrete::monoids::hash::stable_hash(&x) >> 11) as f64 / (1_u64 << 53) as f64;
        let product = cdf.partition_point(|c| *c < u) as u64;
        let sale = Sale {
            product,
            cents: 1 + i % 1000,
        };
        *expected.entry(product).or_default() += sale.cents;
        let key = product.to_le_bytes().to_vec();
        parts[partition_for(&key, PARTITIONS) as usize]
            .push((key, accrete::event::encode(&sale).unwrap()));
        if parts.iter().map(Vec::len).sum::<usize>() >= 100_000 || i + 1 == n {
            for (p, records) in parts.iter_mut().enumerate() {
                append(&*log, TOPIC, p as u32, records);
                records.clear();
            }
        }
    }

    // (a) Decode only.
    let started = Instant::now();
    let mut batch = RecordBatch::new();
    let mut checksum = 0_u64;
    for p in 0..PARTITIONS {
        let mut from = 0;
        loop {
            log.read(TOPIC, p, from, 65_536, &mut batch).unwrap();
            let Some(next) = batch.next_offset() else {
                break;
            };
            for r in batch.iter() {
                let sale: Sale = accrete::event::decode(r.payload).unwrap();
                checksum = checksum.wrapping_add(sale.cents);
            }
            from = next;
        }
    }
    let decode = started.elapsed();
    assert_eq!(checksum, expected.values().sum::<u64>());

    // (b) accrete, end to end.
    let store = Arc::new(EmbeddedStore::open(dir.path().join("state.redb")).unwrap());
    let config = Config {
        partitions: PARTITIONS,
        batch_size,
        ..Config::default()
    };
    let started = Instant::now();
    let rt = Runtime::new(log.clone(), store, config).unwrap();
    rt.add_model(Revenue).unwrap();
    rt.wait_caught_up::<Revenue>(Duration::from_secs(3_600))
        .unwrap();
    let accrete = started.elapsed();
    rt.shutdown();
    let mut folded = 0;
    rt.scan::<Revenue>(|k, v| {
        assert_eq!(Some(&v.0), expected.get(&k), "key {k}");
        folded += 1;
        true
    })
    .unwrap();
    assert_eq!(folded, expected.len());

    if std::env::var("ACCRETE_BENCH_ONLY").is_ok_and(|v| v == "accrete") {
        println!(
            "accrete end to end: {:.0} events/s ({:.2}s); decode only: {:.0} events/s",
            rate(n, accrete),
            accrete.as_secs_f64(),
            rate(n, decode)
        );
        return;
    }

    // (c) Naive: one durable transaction per event, on a prefix.
    let naive_n = (n / 200).clamp(1_000, 20_000);
    let db = Database::create(dir.path().join("naive.redb")).unwrap();
    let table: TableDefinition<u64, u64> = TableDefinition::new("revenue");
    log.read(TOPIC, 0, 0, naive_n as usize, &mut batch).unwrap();
    let started = Instant::now();
    for r in batch.iter() {
        let sale: Sale = accrete::event::decode(r.payload).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(table).unwrap();
            let old = t.get(sale.product).unwrap().map_or(0, |v| v.value());
            t.insert(sale.product, old + sale.cents).unwrap();
        }
        txn.commit().unwrap();
    }
    let naive = started.elapsed();
    let naive_n = batch.len() as u64;

    // (d) Naive, batched: one write per event, one durable commit per batch.
    let db = Database::create(dir.path().join("naive-batched.redb")).unwrap();
    let started = Instant::now();
    let mut events = 0;
    for p in 0..PARTITIONS {
        let mut from = 0;
        loop {
            log.read(TOPIC, p, from, 262_144, &mut batch).unwrap();
            let Some(next) = batch.next_offset() else {
                break;
            };
            let mut txn = db.begin_write().unwrap();
            txn.set_durability(Durability::Immediate).unwrap();
            {
                let mut t = txn.open_table(table).unwrap();
                for r in batch.iter() {
                    let sale: Sale = accrete::event::decode(r.payload).unwrap();
                    let old = t.get(sale.product).unwrap().map_or(0, |v| v.value());
                    t.insert(sale.product, old + sale.cents).unwrap();
                    events += 1;
                }
            }
            txn.commit().unwrap();
            from = next;
        }
    }
    let batched = started.elapsed();
    assert_eq!(events, n);

    // (e) Hand-rolled: pre-aggregated, at-least-once, no changes; the
    // workers split the partitions as accrete's do.
    let workers = Config::default().workers.min(PARTITIONS as usize).max(1);
    let check = |db: &Database| {
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(table).unwrap();
        for (k, v) in &expected {
            assert_eq!(t.get(*k).unwrap().map(|v| v.value()), Some(*v), "key {k}");
        }
    };
    let run_hand_rolled = |name: &str, publish: bool| {
        let db = Database::create(dir.path().join(format!("{name}.redb"))).unwrap();
        let started = Instant::now();
        std::thread::scope(|scope| {
            for member in 0..workers {
                let (db, log) = (&db, &*log);
                std::thread::Builder::new()
                    .name(name.into())
                    .spawn_scoped(scope, move || {
                        hand_rolled(db, log, member, workers, batch_size, publish)
                    })
                    .unwrap();
            }
        });
        let took = started.elapsed();
        check(&db);
        took
    };
    let hand = run_hand_rolled("hand-rolled", false);

    // (f) Hand-rolled, and each batch's changes appended to a log: where
    // accrete's changes cost goes.
    log.create_topic(HAND_CHANGES, PARTITIONS).unwrap();
    let hand_changes = run_hand_rolled("hand-rolled-changes", true);

    let (d, a, nv, b, h, hc) = (
        rate(n, decode),
        rate(n, accrete),
        rate(naive_n, naive),
        rate(n, batched),
        rate(n, hand),
        rate(n, hand_changes),
    );
    println!();
    println!("| path | events | time | events/s | accrete is |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    println!(
        "| decode only (the limit) | {n} | {:.2}s | {d:.0} | {:.0}% of it |",
        decode.as_secs_f64(),
        100.0 * a / d
    );
    println!(
        "| **accrete, end to end** | {n} | {:.2}s | {a:.0} | |",
        accrete.as_secs_f64()
    );
    println!(
        "| hand-rolled: pre-aggregated, at-least-once, no changes | {n} | {:.2}s | {h:.0} | {:.2}× its rate |",
        hand.as_secs_f64(),
        a / h
    );
    println!(
        "| hand-rolled, and its changes appended to a log | {n} | {:.2}s | {hc:.0} | {:.2}× its rate |",
        hand_changes.as_secs_f64(),
        a / hc
    );
    println!(
        "| naive: a durable transaction per event | {naive_n} | {:.2}s | {nv:.0} | {:.0}× faster |",
        naive.as_secs_f64(),
        a / nv
    );
    println!(
        "| naive: a write per event, batched commits | {n} | {:.2}s | {b:.0} | {:.1}× faster |",
        batched.as_secs_f64(),
        a / b
    );
}

/// The topic the hand-rolled consumer appends its changes to.
const HAND_CHANGES: &str = "hand-rolled-changes";

/// What a competent user writes instead of accrete: per batch of a
/// partition, decode, pre-aggregate per key, one read and one write per
/// touched key in one durable transaction, then commit the position (a
/// crash between the two applies the batch twice: at-least-once). With
/// `publish`, each touched key's change is appended to a log before the
/// position is committed.
fn hand_rolled(
    db: &Database,
    log: &dyn Log,
    member: usize,
    members: usize,
    max: usize,
    publish: bool,
) {
    let table: TableDefinition<u64, u64> = TableDefinition::new("revenue");
    let group = if publish {
        "hand-rolled-changes"
    } else {
        "hand-rolled"
    };
    let mut changes: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut batch = RecordBatch::new();
    let mut sums: HashMap<u64, u64> = HashMap::new();
    for p in (0..PARTITIONS).filter(|p| *p as usize % members == member) {
        loop {
            let from = log.committed(group, TOPIC, p).unwrap();
            log.read(TOPIC, p, from, max, &mut batch).unwrap();
            let Some(next) = batch.next_offset() else {
                break;
            };
            sums.clear();
            for r in batch.iter() {
                let sale: Sale = accrete::event::decode(r.payload).unwrap();
                *sums.entry(sale.product).or_default() += sale.cents;
            }
            let mut txn = db.begin_write().unwrap();
            txn.set_durability(Durability::Immediate).unwrap();
            {
                let mut t = txn.open_table(table).unwrap();
                changes.clear();
                for (product, cents) in &sums {
                    let old = t.get(*product).unwrap().map_or(0, |v| v.value());
                    t.insert(*product, old + cents).unwrap();
                    if publish {
                        // The key, and what the write added.
                        changes
                            .push((product.to_le_bytes().to_vec(), cents.to_le_bytes().to_vec()));
                    }
                }
            }
            txn.commit().unwrap();
            if publish {
                append(log, HAND_CHANGES, p, &changes);
            }
            log.commit(group, TOPIC, p, next).unwrap();
        }
    }
}

/// Appends `(key, payload)` records to a partition.
fn append(log: &dyn Log, topic: &str, partition: u32, records: &[(Vec<u8>, Vec<u8>)]) {
    let batch: Vec<NewRecord<'_>> = records
        .iter()
        .map(|(k, v)| NewRecord {
            key: k,
            timestamp: 0,
            payload: v,
            origin: None,
        })
        .collect();
    log.append(topic, partition, &batch).unwrap();
}
