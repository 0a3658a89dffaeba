//! Forwarded events against the same events submitted natively, side by
//! side in one run (issue #10's bookkeeping bound): 1M events over 10 hot
//! keys, a `Sum` read model, durable commits.
//!
//! - **native**: the events entered this log (`submit_batch`);
//! - **forwarded, in order**: the same events re-appended with their
//!   upstream ids (`forward`: 4 upstream partitions, offsets in order);
//! - **forwarded, out of order**: the same, shuffled within windows of
//!   4 096 (upstream at-least-once delivery), 10% of them delivered twice.
//!
//! Each path runs in a fresh directory on events already in the log (a
//! backlog). Prints events/s, the ratio to native, and the stored record
//! size per key (which stays bounded: forwarded ids are kept once per model
//! and upstream partition, not per key); asserts every state equals the
//! fold.
//!
//! `cargo bench --bench forward` (`ACCRETE_BENCH_EVENTS` sets the count).

use accrete::Deployment;
use std::sync::Arc;
use std::time::{Duration, Instant};

use accrete::event::{EventId, source_id};
use accrete::log::{EmbeddedLog, Log, NewRecord, partition_for};
use accrete::model::{Deltas, ReadModel};
use accrete::monoids::Sum;
use accrete::runtime::{Config, Runtime};
use accrete::store::EmbeddedStore;
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

const KEYS: u64 = 10;
const PARTITIONS: u32 = 8;

struct Path {
    name: &'static str,
    events: u64,
    took: Duration,
    record_bytes: usize,
}

/// Appends the deliveries (`(event index, upstream id)`) to a fresh log,
/// then folds them and checks the result.
fn run(
    name: &'static str,
    sales: &[Sale],
    deliveries: &[(usize, Option<EventId>)],
    expected: &[u64],
) -> Path {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(EmbeddedLog::open(dir.path().join("log")).unwrap());
    log.create_topic("events", PARTITIONS).unwrap();
    /// Per partition: key, payload, upstream id.
    type Encoded = Vec<(Vec<u8>, Vec<u8>, Option<EventId>)>;
    let mut parts: Vec<Encoded> = vec![Vec::new(); PARTITIONS as usize];
    for (i, origin) in deliveries {
        let s = &sales[*i];
        let key = s.product.to_le_bytes().to_vec();
        parts[partition_for(&key, PARTITIONS) as usize].push((
            key,
            accrete::event::encode(s).unwrap(),
            *origin,
        ));
    }
    for (p, records) in parts.iter().enumerate() {
        for chunk in records.chunks(100_000) {
            let batch: Vec<NewRecord<'_>> = chunk
                .iter()
                .map(|(k, v, o)| NewRecord {
                    key: k,
                    timestamp: 0,
                    payload: v,
                    origin: *o,
                })
                .collect();
            log.append("events", p as u32, &batch).unwrap();
        }
    }
    let store = Arc::new(EmbeddedStore::open(dir.path().join("state.redb")).unwrap());
    let started = Instant::now();
    let rt = Runtime::new(
        log,
        store,
        Config {
            partitions: PARTITIONS,
            batch_size: 262_144,
            ..Config::default()
        },
    )
    .unwrap();
    rt.add_model(Revenue).unwrap();
    rt.wait_caught_up::<Revenue>(Duration::from_secs(3_600))
        .unwrap();
    let took = started.elapsed();
    rt.shutdown();
    let mut record_bytes = 0;
    for (k, want) in expected.iter().enumerate() {
        let got = rt.get::<Revenue>(&(k as u64)).unwrap();
        assert_eq!(got, Some(Sum(*want)), "{name}: key {k}");
        record_bytes = record_bytes.max(rt.stored_bytes::<Revenue>(&(k as u64)).unwrap().unwrap());
    }
    Path {
        name,
        events: deliveries.len() as u64,
        took,
        record_bytes,
    }
}

fn main() {
    let n: u64 = std::env::var("ACCRETE_BENCH_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let seed = 7_u64;
    println!(
        "forward bench: {n} events over {KEYS} hot keys, {PARTITIONS} partitions, seed {seed}"
    );
    let mut x = seed;
    let mut next = || {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        accrete::monoids::hash::stable_hash(&x)
    };
    let sales: Vec<Sale> = (0..n)
        .map(|i| Sale {
            product: next() % KEYS,
            cents: 1 + i % 1000,
        })
        .collect();
    let mut expected = vec![0_u64; KEYS as usize];
    for s in &sales {
        expected[s.product as usize] += s.cents;
    }
    let upstream = source_id("upstream");
    let id = |i: usize| EventId {
        source: upstream,
        partition: (i % 4) as u32,
        offset: (i / 4) as u64,
    };

    let native: Vec<(usize, Option<EventId>)> = (0..sales.len()).map(|i| (i, None)).collect();
    let in_order: Vec<(usize, Option<EventId>)> =
        (0..sales.len()).map(|i| (i, Some(id(i)))).collect();
    let mut out_of_order = in_order.clone();
    for window in out_of_order.chunks_mut(4_096) {
        for i in (1..window.len()).rev() {
            window.swap(i, (next() % (i as u64 + 1)) as usize);
        }
    }
    let copies: Vec<(usize, Option<EventId>)> = out_of_order
        .iter()
        .filter(|_| next() % 10 == 0)
        .copied()
        .collect();
    // The copies arrive a little later, interleaved.
    let mut with_copies = Vec::with_capacity(out_of_order.len() + copies.len());
    let mut c = copies.into_iter();
    for (i, d) in out_of_order.into_iter().enumerate() {
        with_copies.push(d);
        if i % 10 == 9
            && let Some(copy) = c.next()
        {
            with_copies.push(copy);
        }
    }
    with_copies.extend(c);

    let paths = [
        run("native (submitted here)", &sales, &native, &expected),
        run("forwarded, in order", &sales, &in_order, &expected),
        run(
            "forwarded, out of order, 10% twice",
            &sales,
            &with_copies,
            &expected,
        ),
    ];
    let base = paths[0].events as f64 / paths[0].took.as_secs_f64();
    println!();
    println!("| path | deliveries | time | events/s | of native | largest record |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for p in &paths {
        let rate = p.events as f64 / p.took.as_secs_f64();
        println!(
            "| {} | {} | {:.2}s | {rate:.0} | {:.0}% | {} bytes |",
            p.name,
            p.events,
            p.took.as_secs_f64(),
            100.0 * rate / base,
            p.record_bytes
        );
    }
}
