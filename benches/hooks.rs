//! Cluster hooks on the embedded default, side by side in one run:
//!
//! - **read changes only**: a [`Subscription`](accrete::runtime::Subscription)
//!   polling the changes topic and decoding each change, doing nothing: the
//!   most any hook runner could do;
//! - **no-op cluster hook, backlog**: the same changes, already published,
//!   handled by a cluster hook that does nothing: each run reads the key's
//!   state, checks its recorded outcome, runs, records the outcome durably
//!   and commits (hooks/s);
//! - **steady state**: events submitted at a fixed rate with the hook
//!   running: change-to-hook latency (median, p99).
//!
//! `cargo bench --bench hooks` (`ACCRETE_BENCH_KEYS`, default 100 000
//! distinct keys, each changed once; `ACCRETE_BENCH_RATE` events/s, default
//! 2 000, for `ACCRETE_BENCH_SECONDS`, default 10).

use accrete::Deployment;
use std::time::{Duration, Instant};

use accrete::hooks::{ClusterHook, Trigger};
use accrete::model::{Deltas, ReadModel};
use accrete::monoids::Sum;
use accrete::runtime::{Config, Runtime};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Sale {
    key: u64,
    cents: i64,
}

struct Revenue;
impl ReadModel for Revenue {
    const NAME: &'static str = "revenue";
    type Event = Sale;
    type Key = u64;
    type State = Sum<i64>;
    fn project(&self, s: &Sale, out: &mut Deltas<u64, Sum<i64>>) -> Result<(), String> {
        out.push(s.key, Sum(s.cents));
        Ok(())
    }
}

struct Noop;
impl ClusterHook for Noop {
    type Model = Revenue;
    const NAME: &'static str = "noop";
    fn run(&self, _: &Trigger<'_, Revenue>) -> Result<(), String> {
        Ok(())
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config() -> Config {
    Config {
        flush_interval: Duration::from_millis(2),
        ..Config::default()
    }
}

fn submit(rt: &Runtime, sales: &[Sale]) {
    let keys: Vec<[u8; 8]> = sales.iter().map(|s| s.key.to_le_bytes()).collect();
    rt.submit_batch(keys.iter().zip(sales).map(|(k, s)| (k, 0, s)))
        .unwrap();
}

fn wait_hook(rt: &Runtime, hook: &str) {
    while rt.hook_lag(hook).unwrap() > 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let keys = env("ACCRETE_BENCH_KEYS", 100_000);
    let rate = env("ACCRETE_BENCH_RATE", 2_000);
    let seconds = env("ACCRETE_BENCH_SECONDS", 10);
    let c = config();
    println!(
        "hooks bench (embedded): {keys} keys changed once each, {} partitions, {} workers",
        c.partitions, c.workers
    );

    // The backlog: one change per key, published before the hook starts.
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open_with(dir.path(), c.clone()).unwrap();
    rt.add_model(Revenue).unwrap();
    let subscription = rt.subscribe::<Revenue>();
    let sales: Vec<Sale> = (0..keys).map(|key| Sale { key, cents: 1 }).collect();
    submit(&rt, &sales);
    rt.wait_caught_up::<Revenue>(Duration::from_secs(600))
        .unwrap();
    let published: u64 = (0..c.partitions)
        .map(|p| {
            rt.log()
                .end_offset(&accrete::runtime::changes_topic(Revenue::NAME), p)
                .unwrap()
        })
        .sum();

    // (a) Read and decode the changes, nothing more.
    let mut subscription = subscription.unwrap();
    let started = Instant::now();
    let mut read = 0_u64;
    while read < published {
        read += subscription.poll(Duration::from_millis(100)).unwrap().len() as u64;
    }
    let read_rate = read as f64 / started.elapsed().as_secs_f64();
    println!("  read changes only (Subscription::poll):  {read_rate:>10.0} changes/s");

    // (b) The no-op cluster hook over the backlog.
    let started = Instant::now();
    rt.add_cluster_hook(Noop).unwrap();
    wait_hook(&rt, Noop::NAME);
    let took = started.elapsed().as_secs_f64();
    let stats = rt.hook_stats(Noop::NAME).unwrap();
    assert_eq!(stats.runs, keys, "one run per key");
    let hook_rate = stats.runs as f64 / took;
    println!(
        "  no-op cluster hook over the backlog:      {hook_rate:>10.0} hooks/s ({:.1}x slower than reading; each run reads the state and records its outcome durably)",
        read_rate / hook_rate
    );
    rt.shutdown();
    drop(rt);

    // (c) Steady state: a fixed rate of events, the hook keeping up.
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open_with(dir.path(), c).unwrap();
    rt.add_model(Revenue).unwrap();
    rt.add_cluster_hook(Noop).unwrap();
    let tick = Duration::from_millis(10);
    let per_tick = (rate / 100).max(1);
    let started = Instant::now();
    let mut next = started;
    let mut key = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        let batch: Vec<Sale> = (0..per_tick)
            .map(|_| {
                key = (key + 7_919) % keys;
                Sale { key, cents: 1 }
            })
            .collect();
        submit(&rt, &batch);
        next += tick;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    rt.wait_caught_up::<Revenue>(Duration::from_secs(600))
        .unwrap();
    wait_hook(&rt, Noop::NAME);
    let stats = rt.hook_stats(Noop::NAME).unwrap();
    println!(
        "  steady state, {rate} events/s for {seconds} s: {} runs ({} changes coalesced), change-to-hook latency median {:.0} ms, p99 {:.0} ms",
        stats.runs, stats.coalesced, stats.latency_ms.0, stats.latency_ms.1
    );
    rt.shutdown();
}
