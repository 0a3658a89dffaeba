//! Shared by the runtime tests: a domain with several read models, seeds,
//! and the oracle (the plain left fold of the distinct events).
#![allow(dead_code, unreachable_pub)]

use accrete::Deployment;
use std::collections::BTreeMap;

use accrete::model::{Deltas, ReadModel};
use accrete::monoids::{Count, GSet, Max, Monoid, Semigroup, Sum};
use serde::{Deserialize, Serialize};

/// A payment between two accounts, seen by a visitor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payment {
    pub id: u64,
    pub from: u16,
    pub to: u16,
    pub cents: i64,
    pub visitor: u32,
    pub at_ms: i64,
}

/// Balances: one event touches two keys; a sum, so exactly once matters.
pub struct Balances;
impl ReadModel for Balances {
    const NAME: &'static str = "balances";
    type Event = Payment;
    type Key = u16;
    type State = Sum<i64>;
    fn project(&self, p: &Payment, out: &mut Deltas<u16, Sum<i64>>) -> Result<(), String> {
        if p.cents == 0 {
            return Err(format!("payment {} moves no money", p.id));
        }
        out.push(p.from, Sum(-p.cents));
        out.push(p.to, Sum(p.cents));
        Ok(())
    }
}

/// Per receiving account: how many payments, the largest, the latest time.
#[derive(accrete::monoids::Monoid, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "mongodb", derive(accrete::store::pushdown::Pushdown))]
pub struct Received {
    pub count: Count,
    pub largest: Max<i64>,
    pub latest_ms: Max<i64>,
}

pub struct Receipts;
impl ReadModel for Receipts {
    const NAME: &'static str = "receipts";
    type Event = Payment;
    type Key = u16;
    type State = Received;
    fn project(&self, p: &Payment, out: &mut Deltas<u16, Received>) -> Result<(), String> {
        out.push(
            p.to,
            Received {
                count: Count::one(),
                largest: Max(p.cents),
                latest_ms: Max(p.at_ms),
            },
        );
        Ok(())
    }
}

/// Visitors per account: a set, idempotent, so no exactly-once bookkeeping.
pub struct Visitors;
impl ReadModel for Visitors {
    const NAME: &'static str = "visitors";
    const EXACTLY_ONCE: bool = false;
    type Event = Payment;
    type Key = u16;
    type State = GSet<u32>;
    fn project(&self, p: &Payment, out: &mut Deltas<u16, GSet<u32>>) -> Result<(), String> {
        out.push(p.from, GSet::of([p.visitor]));
        Ok(())
    }
}

/// Per paying account, cents by visitor: a map with no MongoDB operator,
/// so the cluster writes it by read-modify-write.
pub struct SpendByVisitor;
impl ReadModel for SpendByVisitor {
    const NAME: &'static str = "spend_by_visitor";
    type Event = Payment;
    type Key = u16;
    type State = accrete::monoids::Map<u32, Sum<i64>>;
    fn project(
        &self,
        p: &Payment,
        out: &mut Deltas<u16, accrete::monoids::Map<u32, Sum<i64>>>,
    ) -> Result<(), String> {
        out.push(
            p.from,
            accrete::monoids::Map::singleton(p.visitor, Sum(p.cents)),
        );
        Ok(())
    }
}

/// Per label and receiving account, keyed by a tuple whose strings hold
/// what stores trip over: quotes, dots, dollars, braces. Two distinct keys
/// must never be confused anywhere (writes, read-modify-write, replicas).
pub struct Shapes;
impl ReadModel for Shapes {
    const NAME: &'static str = "shapes";
    type Event = Payment;
    type Key = (String, u16);
    type State = Sum<i64>;
    fn project(
        &self,
        p: &Payment,
        out: &mut Deltas<(String, u16), Sum<i64>>,
    ) -> Result<(), String> {
        const LABELS: [&str; 7] = [
            "plain",
            "a.b",
            "$dollar",
            "{\"brace\": 1}",
            "quote\"d",
            "dot.$.mix",
            "",
        ];
        let label = LABELS[p.visitor as usize % LABELS.len()];
        out.push((label.to_string(), p.to), Sum(p.cents));
        Ok(())
    }
}

/// The oracle: a plain left fold of the distinct events, in order.
pub fn oracle<M: ReadModel>(model: &M, events: &[M::Event]) -> BTreeMap<M::Key, M::State> {
    let mut out: BTreeMap<M::Key, M::State> = BTreeMap::new();
    let mut deltas = Deltas::new();
    for e in events {
        deltas.clear();
        if model.project(e, &mut deltas).is_err() {
            continue;
        }
        for (k, d) in deltas.drain() {
            out.entry(k).or_insert_with(M::State::identity).combine(&d);
        }
    }
    out.retain(|_, v| !v.is_identity());
    out
}

/// Random payments; every 97th moves no money (a projection error).
pub fn payments(rng: &mut Rng, n: usize, accounts: u16) -> Vec<Payment> {
    (0..n as u64)
        .map(|id| Payment {
            id,
            from: rng.below(u64::from(accounts)) as u16,
            to: rng.below(u64::from(accounts)) as u16,
            cents: if id % 97 == 13 {
                0
            } else {
                1 + rng.below(10_000) as i64
            },
            visitor: rng.below(50) as u32,
            at_ms: rng.below(1_000_000) as i64,
        })
        .collect()
}

/// SplitMix64.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i as u64 + 1) as usize);
        }
    }
}

/// The seeds to run: `ACCRETE_SEED` runs one; otherwise `count` fresh ones
/// (`ACCRETE_SEEDS` overrides the count). Each is printed.
pub fn seeds(test: &str, count: u64) -> Vec<u64> {
    seeds_with(test, "ACCRETE_SEEDS", count)
}

/// As [`seeds`], with the count from the variable `var` (tests whose seeds
/// take seconds each have their own).
pub fn seeds_with(test: &str, var: &str, count: u64) -> Vec<u64> {
    if let Some(seed) = std::env::var("ACCRETE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![seed];
    }
    let count = std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(count);
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!(
        "{test}: {count} seeds from base {base} ({var} sets how many); replay one with ACCRETE_SEED=<seed>"
    );
    (0..count)
        .map(|i| Rng(base ^ i.wrapping_mul(0x2545_f491_4f6c_dd1d)).next())
        .collect()
}

/// Every key's stored state.
pub fn stored<M: ReadModel>(rt: &accrete::runtime::Runtime) -> BTreeMap<M::Key, M::State> {
    let mut out = BTreeMap::new();
    rt.scan::<M>(|k, v| {
        out.insert(k, v);
        true
    })
    .unwrap();
    out
}

/// Asserts that every version of every key of `Balances` reached the changes
/// topic (at least once). After up to `rebuilds` rebuilds a key's versions
/// jump: every key restarts above one common floor (the highest version any
/// key had), so the versions a key never had are gaps that end at a floor
/// shared by every key; any other gap is a change that was never published.
pub fn assert_every_change_published(
    rt: &accrete::runtime::Runtime,
    log: &dyn accrete::log::Log,
    rebuilds: usize,
    ctx: &str,
) {
    let topic = accrete::runtime::changes_topic(Balances::NAME);
    let mut seen = std::collections::BTreeSet::new();
    let mut batch = accrete::log::RecordBatch::new();
    for p in 0..log.partitions(&topic).unwrap() {
        log.read(&topic, p, 0, usize::MAX, &mut batch).unwrap();
        for r in batch.iter() {
            let change =
                accrete::runtime::Change::<u16, Sum<i64>>::decode(r.key, r.payload).unwrap();
            seen.insert((change.key, change.version));
        }
    }
    let mut floors = std::collections::BTreeSet::new();
    for key in stored::<Balances>(rt).keys() {
        let (version, _) = rt.get_versioned::<Balances>(key).unwrap().unwrap();
        assert!(
            seen.contains(&(*key, version)),
            "{ctx}: the newest change ({version}) of key {key} was never published"
        );
        for v in 1..version {
            if !seen.contains(&(*key, v)) && seen.contains(&(*key, v + 1)) {
                floors.insert(v);
            }
        }
    }
    assert!(
        floors.len() <= rebuilds,
        "{ctx}: changes never published (gaps in versions ending at {floors:?}, after at most {rebuilds} rebuilds)"
    );
}

/// How a log receives `n` events: each appended once or more, in random
/// order. A fraction `upstream` of them come from an upstream log, carrying
/// their upstream id, one to three copies each (at-least-once upstream); the
/// others enter here, once (their duplicates come from redelivery).
pub fn at_least_once(
    rng: &mut Rng,
    n: usize,
    upstream: f64,
) -> Vec<(usize, Option<accrete::event::EventId>)> {
    let source = accrete::event::source_id("upstream");
    let mut delivery = Vec::new();
    for i in 0..n {
        if rng.chance(upstream) {
            let id = accrete::event::EventId {
                source,
                partition: (i % 3) as u32,
                offset: i as u64,
            };
            for _ in 0..1 + rng.below(3) {
                delivery.push((i, Some(id)));
            }
        } else {
            delivery.push((i, None));
        }
    }
    rng.shuffle(&mut delivery);
    delivery
}

/// Asserts that every read model's stored state equals the plain left fold
/// of the distinct events.
pub fn assert_matches_the_oracle(rt: &accrete::runtime::Runtime, events: &[Payment], ctx: &str) {
    assert_eq!(
        stored::<Balances>(rt),
        oracle(&Balances, events),
        "{ctx}: balances"
    );
    assert_eq!(
        stored::<Receipts>(rt),
        oracle(&Receipts, events),
        "{ctx}: receipts"
    );
    assert_eq!(
        stored::<Visitors>(rt),
        oracle(&Visitors, events),
        "{ctx}: visitors"
    );
}

/// A log wrapping another whose behaviour a test scripts: reads capped to
/// fewer records than asked (the `Log` trait allows it), reads, commits and
/// group resets that fail on demand.
pub struct Scripted {
    pub inner: std::sync::Arc<dyn accrete::log::Log>,
    /// Reads of the events topic return at most this many records (0: no cap).
    pub read_cap: std::sync::atomic::AtomicUsize,
    /// The next this-many reads of the events topic fail.
    pub failing_reads: std::sync::atomic::AtomicU64,
    /// Every read of the events topic fails while set.
    pub reads_broken: std::sync::atomic::AtomicBool,
    /// Commits fail while set.
    pub commits_fail: std::sync::atomic::AtomicBool,
    /// Group resets fail while set.
    pub resets_fail: std::sync::atomic::AtomicBool,
}

impl Scripted {
    pub fn new(inner: std::sync::Arc<dyn accrete::log::Log>) -> Self {
        Scripted {
            inner,
            read_cap: 0.into(),
            failing_reads: 0.into(),
            reads_broken: false.into(),
            commits_fail: false.into(),
            resets_fail: false.into(),
        }
    }
}

fn injected(what: &str) -> accrete::Error {
    accrete::Error::Io {
        what: "injected failure",
        path: what.into(),
        source: std::io::Error::other(format!("injected {what} failure")),
    }
}

impl accrete::log::Log for Scripted {
    fn create_topic(&self, topic: &str, partitions: u32) -> accrete::Result<()> {
        self.inner.create_topic(topic, partitions)
    }
    fn partitions(&self, topic: &str) -> accrete::Result<u32> {
        self.inner.partitions(topic)
    }
    fn append(
        &self,
        topic: &str,
        partition: u32,
        records: &[accrete::log::NewRecord<'_>],
    ) -> accrete::Result<u64> {
        self.inner.append(topic, partition, records)
    }
    fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
        batch: &mut accrete::log::RecordBatch,
    ) -> accrete::Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        if !topic.starts_with("changes.") {
            if self.reads_broken.load(SeqCst) {
                return Err(injected("read"));
            }
            if self
                .failing_reads
                .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(injected("read"));
            }
        }
        let cap = self.read_cap.load(SeqCst);
        let max = if cap > 0 && !topic.starts_with("changes.") {
            max.min(cap)
        } else {
            max
        };
        self.inner.read(topic, partition, from, max, batch)
    }
    fn end_offset(&self, topic: &str, partition: u32) -> accrete::Result<u64> {
        self.inner.end_offset(topic, partition)
    }
    fn committed(&self, group: &str, topic: &str, partition: u32) -> accrete::Result<u64> {
        self.inner.committed(group, topic, partition)
    }
    fn commit(&self, group: &str, topic: &str, partition: u32, offset: u64) -> accrete::Result<()> {
        if self.commits_fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(injected("commit"));
        }
        self.inner.commit(group, topic, partition, offset)
    }
    fn reset_group(&self, group: &str, topic: &str) -> accrete::Result<()> {
        if self.resets_fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(injected("reset"));
        }
        self.inner.reset_group(group, topic)
    }
}

/// A payment whose visitor and time follow its id.
pub fn payment(id: u64, from: u16, to: u16, cents: i64) -> Payment {
    Payment {
        id,
        from,
        to,
        cents,
        visitor: id as u32,
        at_ms: id as i64,
    }
}

/// Polls `done` until it holds; panics after 30 s, naming `what`.
pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Copies a directory tree (a backup of a data directory).
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// An `ACCRETE_FAILPOINT` plan: one of the pipeline's crash points (or a
/// rebuild's, when the run rebuilds), at its first pass for a rebuild's and
/// at one of the first `most` passes for the pipeline's.
pub fn failpoint(rng: &mut Rng, rebuild: bool, most: u64) -> String {
    use accrete::testing::{FAILPOINTS, REBUILD_FAILPOINTS};
    let points: Vec<&str> = FAILPOINTS
        .iter()
        .chain(if rebuild {
            &REBUILD_FAILPOINTS[..]
        } else {
            &[]
        })
        .copied()
        .collect();
    let point = points[rng.below(points.len() as u64) as usize];
    let nth = if point.starts_with("rebuild") {
        1
    } else {
        1 + rng.below(most)
    };
    format!("{point}:{nth}")
}
