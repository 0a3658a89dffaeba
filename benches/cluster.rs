//! End to end on Kafka + MongoDB, side by side in one run:
//!
//! - accrete: produce → consume → pre-aggregate → one pushdown upsert per
//!   touched key per batch → changes topic → commit, with 1 and 3 node
//!   processes;
//! - a naive consumer: the same events, one MongoDB upsert (`$inc`) per
//!   event, committed per poll batch.
//!
//! `cargo bench --features kafka,mongodb --bench cluster` against
//! `scripts/servers.sh start` (or `ACCRETE_KAFKA_BROKERS`,
//! `ACCRETE_MONGODB_URI`). `ACCRETE_BENCH_EVENTS` (default 1 000 000),
//! `ACCRETE_BENCH_KEYS` (100 000), `ACCRETE_BENCH_NAIVE_EVENTS` (the naive
//! consumer runs on a prefix, default 20 000: at one round trip per event
//! the whole million would take too long; its rate is per event either way),
//! `ACCRETE_BENCH_HOOK_EVENTS` (the hook burst, 200 000),
//! `ACCRETE_BENCH_HOOK_RATE` and `ACCRETE_BENCH_SECONDS` (the hook's steady
//! state: 500 events/s for 20 s), `ACCRETE_BENCH_ROUNDS` (rounds of the naive
//! consumer then accrete, 3; the median ratio is reported),
//! `ACCRETE_BENCH_ONLY` (a comma list of `produce`, `hooks`, `steady`,
//! `naive`, `accrete1`, `accrete3`, `forward1`) and `ACCRETE_BENCH_LOG` (the
//! nodes' debug log on stderr).
//!
//! `forward1`: one node on the same events forwarded with upstream ids
//! (`Deployment::forward`), one in seven delivered twice: the forwarded
//! path (claims of copies in MongoDB), next to the native one of the same
//! round.

use accrete::Deployment;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use accrete::cluster::{Node, NodeConfig};
use accrete::event::EventId;
use accrete::hooks::ClusterHook;
use accrete::model::{Deltas, ReadModel};
use accrete::monoids::Sum;
use accrete::store::mongo::MongoStore;
use mongodb::bson::doc;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Sale {
    key: u32,
    cents: i64,
}

struct Revenue;
impl ReadModel for Revenue {
    const NAME: &'static str = "revenue";
    type Event = Sale;
    type Key = u32;
    type State = Sum<i64>;
    fn project(&self, s: &Sale, out: &mut Deltas<u32, Sum<i64>>) -> Result<(), String> {
        out.push(s.key, Sum(s.cents));
        Ok(())
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(tag: &str) -> NodeConfig {
    let mut c = NodeConfig::load(None).expect("config from the environment");
    let id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    c.events_topic = format!("bench-{tag}-{id}");
    c.group_prefix = format!("bench-{tag}-{id}");
    c.mongodb.database = format!("bench_{tag}_{id}");
    c.partitions = 12;
    c
}

/// A node process of the 3-node run: serves until `<dir>/stop` appears.
fn child(dir: &str) {
    log_if_asked();
    let dir = PathBuf::from(dir);
    let config = NodeConfig::load(Some(&dir.join("config.toml"))).unwrap();
    let node = Node::start(config).unwrap();
    node.add_model(Revenue).unwrap();
    while !dir.join("stop").exists() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = node.stats(Revenue::NAME).unwrap();
    std::fs::write(
        dir.join(format!("stats-{}", std::process::id())),
        format!("{} {}", s.events, s.writes),
    )
    .unwrap();
    node.shutdown();
}

fn events(n: u64, keys: u64) -> Vec<Sale> {
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Sale {
                key: (x % keys) as u32,
                cents: 1 + (x >> 40) as i64 % 1000,
            }
        })
        .collect()
}

/// The upstream id of event `i` in the forwarded run: an upstream topic
/// of 4 partitions.
fn upstream_id(i: usize) -> EventId {
    EventId {
        source: 0x7e57_0001,
        partition: (i % 4) as u32,
        offset: (i / 4) as u64,
    }
}

/// accrete with `nodes` node processes (1: in this process), on events
/// already in the topic, as the naive consumer: returns distinct events/s
/// from the nodes' start until every record is folded, and writes per
/// record. `forwarded`: every event is forwarded with an upstream id
/// (`Deployment::forward`), and one in seven is delivered a second time
/// after all the others, so each copy goes through the claims in MongoDB.
fn accrete(sales: &[Sale], nodes: usize, forwarded: bool) -> (f64, f64) {
    let tag = if forwarded { "forward" } else { "accrete" };
    let mut config = config(&format!("{tag}{nodes}"));
    // A backfill: large batches, few writes per event.
    config.batch_size = env("ACCRETE_BENCH_BATCH", 500_000) as usize;
    let submitter = Node::start(config.clone()).unwrap();
    let records = if forwarded {
        let copies: Vec<usize> = (0..sales.len())
            .chain((0..sales.len()).filter(|i| i % 7 == 0))
            .collect();
        submitter
            .forward(
                copies
                    .iter()
                    .map(|&i| (sales[i].key.to_le_bytes(), 0, &sales[i], upstream_id(i))),
            )
            .unwrap()
    } else {
        submitter
            .submit_batch(sales.iter().map(|s| (s.key.to_le_bytes(), 0, s)))
            .unwrap()
    };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut children: Vec<Child> = Vec::new();
    let local;
    if nodes == 1 {
        local = Some(Node::start(config.clone()).unwrap());
        local.as_ref().unwrap().add_model(Revenue).unwrap();
    } else {
        local = None;
        let text = format!(
            "events_topic = {:?}\npartitions = {}\ngroup_prefix = {:?}\nbatch_size = {}\n[kafka]\nbrokers = {:?}\n[mongodb]\nuri = {:?}\ndatabase = {:?}\n",
            config.events_topic,
            config.partitions,
            config.group_prefix,
            config.batch_size,
            config.kafka.brokers,
            config.mongodb.uri,
            config.mongodb.database
        );
        std::fs::write(dir.path().join("config.toml"), text).unwrap();
        for _ in 0..nodes {
            children.push(
                Command::new(std::env::current_exe().unwrap())
                    .env("ACCRETE_BENCH_CHILD", dir.path())
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap(),
            );
        }
    }
    while submitter.folded(Revenue::NAME).unwrap() < records as u64 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed().as_secs_f64();
    let (events, writes) = match &local {
        Some(node) => {
            let s = node.stats(Revenue::NAME).unwrap();
            (s.events, s.writes)
        }
        None => {
            std::fs::write(dir.path().join("stop"), b"").unwrap();
            for c in &mut children {
                c.wait().unwrap();
            }
            let mut totals = (0, 0);
            for entry in std::fs::read_dir(dir.path()).unwrap() {
                let entry = entry.unwrap();
                if entry.file_name().to_string_lossy().starts_with("stats-") {
                    let text = std::fs::read_to_string(entry.path()).unwrap();
                    let mut it = text.split(' ').map(|v| v.parse::<u64>().unwrap());
                    totals.0 += it.next().unwrap();
                    totals.1 += it.next().unwrap();
                }
            }
            totals
        }
    };
    // Exact, or the figure means nothing.
    let store = MongoStore::connect(&config.mongodb).unwrap();
    let mut total = 0i64;
    store
        .scan::<Revenue>(|_, v| {
            total += v.0;
            true
        })
        .unwrap();
    assert_eq!(
        total,
        sales.iter().map(|s| s.cents).sum::<i64>(),
        "accrete's result is exact"
    );
    store.database().drop().run().unwrap();
    if let Some(n) = local {
        n.shutdown();
    }
    submitter.shutdown();
    (
        sales.len() as f64 / took,
        writes as f64 / events.max(1) as f64,
    )
}

/// A no-op cluster hook on every change: hooks/s and change-to-hook
/// latency. It notes each run's idempotency key, to count the runs that
/// repeated one (duplicates).
struct Count;
impl accrete::hooks::ClusterHook for Count {
    type Model = Revenue;
    const NAME: &'static str = "count";
    fn run(&self, t: &accrete::hooks::Trigger<'_, Revenue>) -> Result<(), String> {
        SEEN.lock().unwrap().insert(t.idempotency_key.to_string());
        Ok(())
    }
}

/// The idempotency keys the hook ran, for the duplicate count.
static SEEN: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Runs that repeated an idempotency key, since the last call.
fn duplicates(runs: u64) -> u64 {
    let mut seen = SEEN.lock().unwrap();
    let distinct = seen.len() as u64;
    seen.clear();
    runs.saturating_sub(distinct)
}

/// Waits until `events` are folded and the hook has taken every change
/// (runs, coalesced and suppressed reach the changes published); returns
/// the changes.
fn wait_hooked(node: &Node, events: u64) -> u64 {
    node.flush().unwrap();
    while node.folded(Revenue::NAME).unwrap() < events {
        std::thread::sleep(Duration::from_millis(20));
    }
    loop {
        // Read again each time: a batch's changes are counted after its
        // positions move, so `folded` can be complete before they are.
        let changes = node.stats(Revenue::NAME).unwrap().changes;
        let h = node.hook_stats(Count::NAME).unwrap();
        if h.runs + h.coalesced + h.duplicates_suppressed >= changes
            && node.hook_lag_of(Count::NAME, Revenue::NAME).unwrap() == 0
        {
            return changes;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The hook's figures; stops the node and drops its database.
fn finish(node: Node, config: &NodeConfig) -> accrete::hooks::HookStats {
    let h = node.hook_stats(Count::NAME).unwrap();
    node.shutdown();
    MongoStore::connect(&config.mongodb)
        .unwrap()
        .database()
        .drop()
        .run()
        .unwrap();
    h
}

fn hooks(sales: &[Sale]) -> (f64, (f64, f64), u64, u64, u64) {
    let config = config("hooks");
    let node = Node::start(config.clone()).unwrap();
    node.add_model(Revenue).unwrap();
    node.add_cluster_hook(Count).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let started = Instant::now();
    node.submit_batch(sales.iter().map(|s| (s.key.to_le_bytes(), 0, s)))
        .unwrap();
    let changes = wait_hooked(&node, sales.len() as u64);
    let took = started.elapsed().as_secs_f64();
    let h = finish(node, &config);
    (
        h.runs as f64 / took,
        h.latency_ms,
        h.runs,
        changes,
        duplicates(h.runs),
    )
}

/// Steady state: events at a fixed rate for a while, the no-op hook
/// keeping up: change-to-hook latency (median, p99) and the runs.
fn hooks_steady(rate: u64, seconds: u64, keys: u64) -> ((f64, f64), u64, u64) {
    let config = config("steady");
    let node = Node::start(config.clone()).unwrap();
    node.add_model(Revenue).unwrap();
    node.add_cluster_hook(Count).unwrap();
    // Let the consumer groups form before the clock starts.
    std::thread::sleep(Duration::from_secs(6));
    let tick = Duration::from_millis(10);
    let per_tick = (rate / 100).max(1);
    let started = Instant::now();
    let mut next = started;
    let mut key = 0_u64;
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        let tick_sales: Vec<Sale> = (0..per_tick)
            .map(|_| {
                key = (key + 7_919) % keys;
                Sale {
                    key: key as u32,
                    cents: 1,
                }
            })
            .collect();
        node.submit_batch(tick_sales.iter().map(|s| (s.key.to_le_bytes(), 0, s)))
            .unwrap();
        sent += tick_sales.len() as u64;
        next += tick;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    wait_hooked(&node, sent);
    let h = finish(node, &config);
    (h.latency_ms, h.runs, duplicates(h.runs))
}

/// The naive consumer: one upsert per event.
fn naive(sales: &[Sale]) -> f64 {
    let config = config("naive");
    let submitter = Node::start(config.clone()).unwrap();
    submitter
        .submit_batch(sales.iter().map(|s| (s.key.to_le_bytes(), 0, s)))
        .unwrap();
    let store = MongoStore::connect(&config.mongodb).unwrap();
    let coll = store
        .database()
        .collection::<mongodb::bson::Document>("revenue");
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("group.id", format!("{}-naive", config.group_prefix))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&config.events_topic]).unwrap();
    let started = Instant::now();
    let mut seen = 0;
    while seen < sales.len() {
        let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let msg = msg.unwrap();
        let sale: Sale = accrete::event::decode(msg.payload().unwrap()).unwrap();
        coll.update_one(
            doc! { "_id": sale.key as i64 },
            doc! { "$inc": { "s": sale.cents } },
        )
        .upsert(true)
        .run()
        .unwrap();
        consumer.commit_message(&msg, CommitMode::Async).unwrap();
        seen += 1;
    }
    let took = started.elapsed().as_secs_f64();
    store.database().drop().run().unwrap();
    submitter.shutdown();
    seen as f64 / took
}

/// How fast the producer puts events into the topic (the node's `submit`).
fn produce(sales: &[Sale]) -> f64 {
    let config = config("produce");
    let node = Node::start(config.clone()).unwrap();
    let started = Instant::now();
    node.submit_batch(sales.iter().map(|s| (s.key.to_le_bytes(), 0, s)))
        .unwrap();
    let rate = sales.len() as f64 / started.elapsed().as_secs_f64();
    node.shutdown();
    rate
}

/// The debug log on stderr, with `ACCRETE_BENCH_LOG`.
fn log_if_asked() {
    if std::env::var_os("ACCRETE_BENCH_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .try_init();
    }
}

fn main() {
    if let Ok(dir) = std::env::var("ACCRETE_BENCH_CHILD") {
        return child(&dir);
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    log_if_asked();
    let only = std::env::var("ACCRETE_BENCH_ONLY").ok();
    let runs = |part: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|p| p == part))
    };
    let n = env("ACCRETE_BENCH_EVENTS", 1_000_000);
    let keys = env("ACCRETE_BENCH_KEYS", 100_000);
    let naive_n = env("ACCRETE_BENCH_NAIVE_EVENTS", 20_000).min(n);
    let sales = events(n, keys);
    println!("cluster bench: {n} events over {keys} keys, 12 partitions, Sum<i64> per key");
    if runs("produce") {
        let produced = produce(&sales);
        println!(
            "  producing the events (Node::submit, idempotent producer): {produced:>10.0} events/s"
        );
    }
    if runs("hooks") {
        let hook_events = env("ACCRETE_BENCH_HOOK_EVENTS", 200_000).min(n) as usize;
        let (rate, (median, p99), runs, changes, dups) = hooks(&sales[..hook_events]);
        println!(
            "  cluster hook (no-op) over {hook_events} events: {runs} runs for {changes} changes ({dups} duplicates), {rate:>8.0} hooks/s end to end, change-to-hook latency median {median:.0} ms, p99 {p99:.0} ms"
        );
    }
    if runs("steady") {
        let steady_rate = env("ACCRETE_BENCH_HOOK_RATE", 500);
        let steady_secs = env("ACCRETE_BENCH_SECONDS", 20);
        let ((median, p99), runs, dups) = hooks_steady(steady_rate, steady_secs, keys);
        println!(
            "  cluster hook (no-op), steady {steady_rate} events/s for {steady_secs} s: {runs} runs ({dups} duplicates), change-to-hook latency median {median:.0} ms, p99 {p99:.0} ms"
        );
    }
    // The ratio: the naive consumer and accrete alternate, each round
    // measuring both, so that a slow spell of the shared machine lands on
    // both sides of one round's ratio; the median round is reported.
    let rounds = env("ACCRETE_BENCH_ROUNDS", 3).max(1);
    let node_counts: Vec<usize> = [1, 3]
        .into_iter()
        .filter(|n| runs(&format!("accrete{n}")))
        .collect();
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); node_counts.len()];
    for round in 1..=rounds {
        let naive_rate = if runs("naive") {
            let rate = naive(&sales[..naive_n as usize]);
            println!(
                "  round {round}: naive consumer (one upsert per event, {naive_n} events): {rate:>10.0} events/s, 1.000 writes/event"
            );
            Some(rate)
        } else {
            None
        };
        let mut native_rate = None;
        for (i, &nodes) in node_counts.iter().enumerate() {
            let (rate, wpe) = accrete(&sales, nodes, false);
            if nodes == 1 {
                native_rate = Some(rate);
            }
            match naive_rate {
                Some(naive_rate) => {
                    ratios[i].push(rate / naive_rate);
                    println!(
                        "  round {round}: accrete, {nodes} node process(es): {rate:>10.0} events/s, {wpe:.3} writes/event, {:.1}x the naive consumer",
                        rate / naive_rate
                    );
                }
                None => println!(
                    "  round {round}: accrete, {nodes} node process(es): {rate:>10.0} events/s, {wpe:.3} writes/event"
                ),
            }
        }
        if runs("forward1") {
            let (rate, wpe) = accrete(&sales, 1, true);
            let of_native = native_rate
                .map(|n| format!(", {:.0}% of the native events' rate", 100.0 * rate / n))
                .unwrap_or_default();
            println!(
                "  round {round}: accrete, 1 node, every event forwarded (1 in 7 twice): {rate:>10.0} distinct events/s, {wpe:.3} writes/record{of_native}"
            );
        }
    }
    for (i, &nodes) in node_counts.iter().enumerate() {
        let r = &mut ratios[i];
        if r.is_empty() {
            continue;
        }
        r.sort_by(f64::total_cmp);
        let shown: Vec<String> = r.iter().map(|x| format!("{x:.1}x")).collect();
        println!(
            "  accrete, {nodes} node process(es) vs the naive consumer over {} round(s): median {:.1}x (min {:.1}x; all: {})",
            r.len(),
            r[r.len() / 2],
            r[0],
            shown.join(", ")
        );
    }
}
