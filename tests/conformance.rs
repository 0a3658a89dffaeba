//! The backend conformance suite (issue #11): one set of scenarios, written
//! once against [`Backend`], run against every backend. The embedded
//! default runs in every `cargo test`; Kafka + MongoDB (features `kafka`
//! and `mongodb`) runs against the real servers `scripts/test.sh` starts,
//! and fails, saying so, when they do not answer.
//!
//! `Backend` is a thin adapter over the two public faces (`Runtime`,
//! `Node`); where the faces differ the adapter says how, and each such
//! difference is a step of issue #11 still to take.
//!
//! Scenarios (per backend):
//! - `the_oracle_with_copies_and_bad_events`: native events, upstream events
//!   forwarded in one to three copies in a scrambled order, copies of the
//!   backend's own events forwarded back, events the projection refuses,
//!   hostile payloads: every model equals the oracle, every bad event is one
//!   dead letter per model.
//! - `hooks_run_every_change_and_deltas_add_up`: a cluster hook runs each
//!   key's changes; per key, the deltas of its distinct runs add up to the
//!   state, and a repeated run repeats the same delta.
//! - `hook_names_are_checked_alike`: a second hook of one name, and an
//!   unknown hook, are `Error::Usage`.
//! - `a_write_that_changes_nothing_runs_no_hook`: an idempotent state sent
//!   what it holds publishes nothing, so its hook does not run.
//! - `status_of_an_unknown_model_is_an_error`: `Error::Model`, not a lag.
//! - `a_model_added_later_backfills_to_the_oracle`: a model added while
//!   events arrive ends equal to the oracle.
//! - `stats_count_what_the_pipeline_did`: records read, writes, changes,
//!   dead letters, as `stats` reports them; an unknown model is an error.
//! - `a_failing_hook_is_retried_then_dead_lettered`: a hook failing for one
//!   key is retried up to `max_attempts`, then dead-lettered with the
//!   reason; other keys run after a failure.
//! - `a_model_named_like_accretes_own_is_refused`: `Error::InvalidName`.
//!
//! And one scenario in child processes (`crashes::*`): the backend killed
//! at each of the pipeline's and the hook member's crash points
//! (`ACCRETE_FAILPOINT`) and SIGKILLed at random moments, events arriving
//! between the runs; the state ends equal to the oracle and the deltas of
//! the hook's distinct runs add up to it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use accrete::event::{EventId, source_id};
use accrete::hooks::{ClusterHook, HookStats, Trigger};
use accrete::model::ReadModel;
use accrete::store::DeadLetter;
use accrete::{Error, Result};
use common::{Balances, Payment, Receipts, Rng, Visitors, oracle, payments, seeds_with};
use serde::de::DeserializeOwned;

/// What the cluster needs of a state (its MongoDB pushdown); nothing on the
/// embedded backend alone.
#[cfg(feature = "mongodb")]
trait Stored: accrete::store::pushdown::Pushdown {}
#[cfg(feature = "mongodb")]
impl<T: accrete::store::pushdown::Pushdown> Stored for T {}
#[cfg(not(feature = "mongodb"))]
trait Stored {}
#[cfg(not(feature = "mongodb"))]
impl<T> Stored for T {}

/// One backend, as the scenarios use it.
trait Backend {
    fn add_model<M: ReadModel>(&self, model: M) -> Result<()>
    where
        M::State: Stored;
    fn submit(&self, event: &Payment) -> Result<()>;
    fn forward(&self, event: &Payment, id: EventId) -> Result<()>;
    /// Bytes appended to the events topic as they are, not as an event.
    fn submit_encoded(&self, key: &[u8], payload: &[u8]);
    fn source_id(&self) -> u32;
    /// Everything submitted is folded into `M`.
    fn caught_up<M: ReadModel>(&self);
    fn state<M: ReadModel>(&self) -> BTreeMap<M::Key, M::State>
    where
        M::Key: DeserializeOwned + Ord;
    fn dead_letters<M: ReadModel>(&self) -> Vec<DeadLetter>;
    fn add_cluster_hook<H: ClusterHook>(&self, hook: H) -> Result<()>
    where
        <H::Model as ReadModel>::State: Stored;
    fn hook_lag(&self, hook: &str) -> Result<u64>;
    fn hook_stats(&self, hook: &str) -> Result<HookStats>;
    /// The model's lag, from its status.
    fn status(&self, model: &str) -> Result<u64>;
    /// What the model's pipeline did in this process.
    fn stats(&self, model: &str) -> Result<accrete::runtime::ModelStats>;
    fn hook_dead_letters(&self, hook: &str) -> Vec<accrete::hooks::HookDeadLetter>;
}

const TIMEOUT: Duration = Duration::from_secs(90);

fn key(e: &Payment) -> [u8; 2] {
    e.from.to_le_bytes()
}

// ---- the embedded backend ----

struct Embedded {
    rt: accrete::runtime::Runtime,
    /// The directory, when this instance made it (removed on drop).
    _dir: Option<tempfile::TempDir>,
}

impl Embedded {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut b = Embedded::attach(&dir.path().to_string_lossy());
        b._dir = Some(dir);
        b
    }
}

impl Crashable for Embedded {
    fn fresh(_tag: &str, scratch: &Path) -> String {
        scratch.join("data").to_string_lossy().into_owned()
    }
    fn attach(at: &str) -> Self {
        let config = accrete::runtime::Config {
            partitions: 4,
            flush_interval: Duration::from_millis(2),
            ..accrete::runtime::Config::default()
        };
        let rt = accrete::runtime::Runtime::open_with(at, config).unwrap();
        Embedded { rt, _dir: None }
    }
    fn remove(_at: &str) {
        // Inside the scenario's scratch directory, removed with it.
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        self.rt.shutdown();
    }
}

impl Backend for Embedded {
    fn add_model<M: ReadModel>(&self, model: M) -> Result<()> {
        self.rt.add_model(model)
    }
    fn submit(&self, e: &Payment) -> Result<()> {
        self.rt.submit(key(e), e.at_ms, e).map(|_| ())
    }
    fn forward(&self, e: &Payment, id: EventId) -> Result<()> {
        self.rt.forward([(key(e), e.at_ms, e, id)]).map(|_| ())
    }
    fn submit_encoded(&self, key: &[u8], payload: &[u8]) {
        self.rt.submit_encoded(key, 0, payload).unwrap();
    }
    fn source_id(&self) -> u32 {
        self.rt.source_id()
    }
    fn caught_up<M: ReadModel>(&self) {
        self.rt.wait_caught_up::<M>(TIMEOUT).unwrap();
    }
    fn state<M: ReadModel>(&self) -> BTreeMap<M::Key, M::State>
    where
        M::Key: Ord,
    {
        common::stored::<M>(&self.rt)
    }
    fn dead_letters<M: ReadModel>(&self) -> Vec<DeadLetter> {
        self.rt.dead_letters::<M>().unwrap()
    }
    fn add_cluster_hook<H: ClusterHook>(&self, hook: H) -> Result<()> {
        self.rt.add_cluster_hook(hook)
    }
    fn hook_lag(&self, hook: &str) -> Result<u64> {
        self.rt.hook_lag(hook)
    }
    fn hook_stats(&self, hook: &str) -> Result<HookStats> {
        self.rt.hook_stats(hook)
    }
    fn status(&self, model: &str) -> Result<u64> {
        self.rt.status(model).map(|s| s.lag())
    }
    fn stats(&self, model: &str) -> Result<accrete::runtime::ModelStats> {
        self.rt.stats(model)
    }
    fn hook_dead_letters(&self, hook: &str) -> Vec<accrete::hooks::HookDeadLetter> {
        self.rt.hook_dead_letters(hook).unwrap()
    }
}

// ---- Kafka + MongoDB ----

#[cfg(all(feature = "kafka", feature = "mongodb"))]
mod cluster_backend {
    use super::*;
    use accrete::cluster::{Node, NodeConfig};

    pub(super) struct Cluster {
        pub(super) node: Node,
        /// Whether this instance made its database (dropped on drop).
        owned: bool,
    }

    impl Cluster {
        pub(super) fn new(tag: &str) -> Self {
            let mut c = Cluster::attach(&Cluster::fresh(tag, Path::new(".")));
            c.owned = true;
            c
        }
    }

    impl Crashable for Cluster {
        fn fresh(tag: &str, _scratch: &Path) -> String {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            format!(
                "conf-{}-{}-{}",
                tag.replace(['_', ':'], "-"),
                std::process::id(),
                nanos % 1_000_000_000_000
            )
        }
        fn remove(name: &str) {
            let c = Cluster::attach(name);
            c.node.shutdown();
            let _ = c.node.store().database().drop().run();
        }
        fn attach(name: &str) -> Self {
            let brokers =
                std::env::var("ACCRETE_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
            let uri = std::env::var("ACCRETE_MONGODB_URI")
                .unwrap_or_else(|_| "mongodb://127.0.0.1:27017".into());
            let name = name.to_string();
            let mut c = NodeConfig::default();
            c.kafka.brokers = brokers;
            c.mongodb.uri = uri;
            c.mongodb.database = name.replace('-', "_").chars().take(60).collect();
            c.events_topic = format!("{name}.events");
            c.group_prefix = name;
            c.partitions = 4;
            c.flush_interval_ms = 20;
            let node = Node::start(c).unwrap_or_else(|e| {
                panic!(
                    "the Kafka + MongoDB conformance tests need the servers (`scripts/servers.sh \
                     start`, or ACCRETE_KAFKA_BROKERS and ACCRETE_MONGODB_URI): {e}"
                )
            });
            Cluster { node, owned: false }
        }
    }

    impl Drop for Cluster {
        fn drop(&mut self) {
            self.node.shutdown();
            if self.owned {
                let _ = self.node.store().database().drop().run();
            }
        }
    }

    impl Backend for Cluster {
        fn add_model<M: ReadModel>(&self, model: M) -> Result<()>
        where
            M::State: Stored,
        {
            self.node.add_model(model)
        }
        fn submit(&self, e: &Payment) -> Result<()> {
            self.node.submit(key(e), e.at_ms, e).map(|_| ())
        }
        fn forward(&self, e: &Payment, id: EventId) -> Result<()> {
            self.node.forward([(key(e), e.at_ms, e, id)]).map(|_| ())
        }
        fn submit_encoded(&self, key: &[u8], payload: &[u8]) {
            self.node.submit_encoded(key, 0, payload).unwrap();
        }
        fn source_id(&self) -> u32 {
            self.node.source_id()
        }
        fn caught_up<M: ReadModel>(&self) {
            self.node.flush().unwrap();
            self.node.wait_caught_up::<M>(TIMEOUT).unwrap();
        }
        fn state<M: ReadModel>(&self) -> BTreeMap<M::Key, M::State>
        where
            M::Key: DeserializeOwned + Ord,
        {
            let mut out = BTreeMap::new();
            self.node
                .scan::<M>(|k, s| {
                    out.insert(k, s);
                    true
                })
                .unwrap();
            out
        }
        fn dead_letters<M: ReadModel>(&self) -> Vec<DeadLetter> {
            self.node.dead_letters::<M>().unwrap()
        }
        fn add_cluster_hook<H: ClusterHook>(&self, hook: H) -> Result<()>
        where
            <H::Model as ReadModel>::State: Stored,
        {
            self.node.add_cluster_hook(hook)
        }
        fn hook_lag(&self, hook: &str) -> Result<u64> {
            self.node.hook_lag(hook)
        }
        fn hook_stats(&self, hook: &str) -> Result<HookStats> {
            self.node.hook_stats(hook)
        }
        fn status(&self, model: &str) -> Result<u64> {
            self.node.status(model).map(|s| s.lag)
        }
        fn stats(&self, model: &str) -> Result<accrete::runtime::ModelStats> {
            self.node.stats(model)
        }
        fn hook_dead_letters(&self, hook: &str) -> Vec<accrete::hooks::HookDeadLetter> {
            self.node.hook_dead_letters(hook).unwrap()
        }
    }
}

// ---- the scenarios ----

fn the_oracle_with_copies_and_bad_events<B: Backend>(b: &B) {
    let seed = seeds_with("conformance", "ACCRETE_CONFORMANCE_SEEDS", 1)[0];
    let mut rng = Rng(seed);
    b.add_model(Balances).unwrap();
    b.add_model(Receipts).unwrap();
    b.add_model(Visitors).unwrap();
    let events = payments(&mut rng, 400, 25);
    let (native, upstream) = events.split_at(250);
    for e in native {
        b.submit(e).unwrap();
    }
    // Upstream events, each in one to three copies, scrambled.
    let from = source_id("conformance-upstream");
    let mut copies = Vec::new();
    for (i, e) in upstream.iter().enumerate() {
        let id = EventId {
            source: from,
            partition: (i % 3) as u32,
            offset: if i == 5 { u64::MAX } else { i as u64 * 3 },
        };
        for _ in 0..1 + rng.below(3) {
            copies.push((e, id));
        }
    }
    rng.shuffle(&mut copies);
    for (e, id) in &copies {
        b.forward(e, *id).unwrap();
    }
    // Copies of this backend's own events, forwarded back: skipped.
    let own = b.source_id();
    for (i, e) in native.iter().take(5).enumerate() {
        let id = EventId {
            source: own,
            partition: 0,
            offset: i as u64,
        };
        b.forward(e, id).unwrap();
    }
    // Hostile payloads: not events at all.
    b.submit_encoded(b"x", &[0xFF; 40]);
    b.submit_encoded(b"y", b"not an event");
    let garbage = 2;
    b.caught_up::<Balances>();
    b.caught_up::<Receipts>();
    b.caught_up::<Visitors>();
    let ctx = format!("seed {seed}");
    assert_eq!(
        b.state::<Balances>(),
        oracle(&Balances, &events),
        "{ctx}: balances"
    );
    assert_eq!(
        b.state::<Receipts>(),
        oracle(&Receipts, &events),
        "{ctx}: receipts"
    );
    assert_eq!(
        b.state::<Visitors>(),
        oracle(&Visitors, &events),
        "{ctx}: visitors"
    );
    let refused = events.iter().filter(|e| e.cents == 0).count();
    assert!(
        refused > 0,
        "{ctx}: the scenario has events the projection refuses"
    );
    assert_eq!(
        b.dead_letters::<Balances>().len(),
        refused + garbage,
        "{ctx}"
    );
    assert_eq!(b.dead_letters::<Receipts>().len(), garbage, "{ctx}");
    assert_eq!(b.dead_letters::<Visitors>().len(), garbage, "{ctx}");
}

/// A hook run, as the journal saw it.
type Run = (u16, i64, String);

struct Journal(Arc<Mutex<Vec<Run>>>);
impl ClusterHook for Journal {
    type Model = Balances;
    const NAME: &'static str = "journal";
    fn run(&self, t: &Trigger<'_, Balances>) -> std::result::Result<(), String> {
        self.0
            .lock()
            .unwrap()
            .push((*t.key, t.delta.0, t.idempotency_key.to_string()));
        Ok(())
    }
}

fn hooks_run_every_change_and_deltas_add_up<B: Backend>(b: &B) {
    let seed = seeds_with("conformance", "ACCRETE_CONFORMANCE_SEEDS", 1)[0];
    let mut rng = Rng(seed);
    let runs = Arc::new(Mutex::new(Vec::new()));
    b.add_model(Balances).unwrap();
    b.add_cluster_hook(Journal(runs.clone())).unwrap();
    let events = payments(&mut rng, 300, 15);
    // Two waves: each key changes more than once.
    for wave in events.chunks(150) {
        for e in wave {
            b.submit(e).unwrap();
        }
        b.caught_up::<Balances>();
    }
    let deadline = Instant::now() + TIMEOUT;
    while b.hook_lag(Journal::NAME).unwrap() > 0 {
        assert!(
            Instant::now() < deadline,
            "seed {seed}: the hook never caught up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let state = b.state::<Balances>();
    let runs = runs.lock().unwrap().clone();
    let mut by_id: BTreeMap<&str, (u16, i64)> = BTreeMap::new();
    for (key, delta, id) in &runs {
        if let Some(seen) = by_id.insert(id, (*key, *delta)) {
            assert_eq!(
                seen,
                (*key, *delta),
                "seed {seed}: run {id} repeated differently"
            );
        }
    }
    let mut sums: BTreeMap<u16, i64> = BTreeMap::new();
    for (key, delta) in by_id.values() {
        *sums.entry(*key).or_default() += delta;
    }
    let keys: BTreeSet<u16> = state.keys().copied().collect();
    assert_eq!(
        sums.keys().copied().collect::<BTreeSet<_>>(),
        keys,
        "seed {seed}: every key's changes ran the hook"
    );
    for (key, s) in &state {
        assert_eq!(
            sums[key], s.0,
            "seed {seed}: key {key}: the deltas run add up to the state"
        );
    }
    assert!(b.hook_stats(Journal::NAME).unwrap().runs > 0);
}

fn hook_names_are_checked_alike<B: Backend>(b: &B) {
    b.add_model(Balances).unwrap();
    b.add_cluster_hook(Journal(Arc::default())).unwrap();
    let again = b.add_cluster_hook(Journal(Arc::default()));
    assert!(matches!(again, Err(Error::Usage(_))), "{again:?}");
    let lag = b.hook_lag("no-such-hook");
    assert!(matches!(lag, Err(Error::Usage(_))), "{lag:?}");
    let stats = b.hook_stats("no-such-hook");
    assert!(matches!(stats, Err(Error::Usage(_))), "{stats:?}");
}

/// Runs of a hook on `Visitors` (an idempotent set per account).
struct SeenVisitors(Arc<Mutex<Vec<(u16, u64)>>>);
impl ClusterHook for SeenVisitors {
    type Model = Visitors;
    const NAME: &'static str = "seen_visitors";
    fn run(&self, t: &Trigger<'_, Visitors>) -> std::result::Result<(), String> {
        self.0.lock().unwrap().push((*t.key, t.delta.len() as u64));
        Ok(())
    }
}

fn wait_hook<B: Backend>(b: &B, hook: &str) {
    let deadline = Instant::now() + TIMEOUT;
    while b.hook_lag(hook).unwrap() > 0 {
        assert!(
            Instant::now() < deadline,
            "the hook `{hook}` never caught up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A write that changes no state publishes no change: an idempotent state
/// sent what it holds already runs no hook.
fn a_write_that_changes_nothing_runs_no_hook<B: Backend>(b: &B) {
    let runs = Arc::new(Mutex::new(Vec::new()));
    b.add_model(Visitors).unwrap();
    b.add_cluster_hook(SeenVisitors(runs.clone())).unwrap();
    let pay = |id: u64, from: u16, visitor: u32| Payment {
        id,
        from,
        to: 0,
        cents: 1,
        visitor,
        at_ms: 0,
    };
    for (i, from) in (0..5_u16).enumerate() {
        b.submit(&pay(i as u64, from, 7)).unwrap();
    }
    b.caught_up::<Visitors>();
    wait_hook(b, SeenVisitors::NAME);
    let first = runs.lock().unwrap().len();
    assert!(
        first >= 5,
        "every account's first visitor ran the hook ({first} runs)"
    );
    // The same visitors again: the sets do not change.
    for (i, from) in (0..5_u16).enumerate() {
        b.submit(&pay(100 + i as u64, from, 7)).unwrap();
    }
    b.caught_up::<Visitors>();
    wait_hook(b, SeenVisitors::NAME);
    // A new visitor for one account: one change more.
    b.submit(&pay(200, 3, 8)).unwrap();
    b.caught_up::<Visitors>();
    wait_hook(b, SeenVisitors::NAME);
    let runs = runs.lock().unwrap().clone();
    let keys: BTreeSet<u16> = runs[first..].iter().map(|(k, _)| *k).collect();
    assert_eq!(
        keys,
        BTreeSet::from([3]),
        "after the first wave only the account with a new visitor ran the hook: {runs:?}"
    );
}

/// `status` of a model that does not exist is an error, not a lag.
fn status_of_an_unknown_model_is_an_error<B: Backend>(b: &B) {
    b.add_model(Balances).unwrap();
    let status = b.status("no_such_model");
    assert!(matches!(status, Err(Error::Model(..))), "{status:?}");
    assert!(b.status(Balances::NAME).is_ok());
}

/// A model added while events keep arriving folds the log from its
/// beginning: it ends equal to the oracle, as the model that ran throughout.
fn a_model_added_later_backfills_to_the_oracle<B: Backend>(b: &B) {
    let seed = seeds_with("conformance", "ACCRETE_CONFORMANCE_SEEDS", 1)[0];
    let mut rng = Rng(seed);
    let events = payments(&mut rng, 300, 20);
    b.add_model(Balances).unwrap();
    let (before, after) = events.split_at(200);
    for e in before {
        b.submit(e).unwrap();
    }
    b.caught_up::<Balances>();
    b.add_model(Receipts).unwrap();
    for e in after {
        b.submit(e).unwrap();
    }
    b.caught_up::<Balances>();
    b.caught_up::<Receipts>();
    assert_eq!(
        b.state::<Receipts>(),
        oracle(&Receipts, &events),
        "seed {seed}: the model added later"
    );
    assert_eq!(
        b.state::<Balances>(),
        oracle(&Balances, &events),
        "seed {seed}: the model that ran throughout"
    );
}

/// What a model's pipeline counts: every record read, the writes and
/// changes, each refused event as one dead letter.
fn stats_count_what_the_pipeline_did<B: Backend>(b: &B) {
    let seed = seeds_with("conformance", "ACCRETE_CONFORMANCE_SEEDS", 1)[0];
    let mut rng = Rng(seed);
    let events = payments(&mut rng, 200, 10);
    b.add_model(Balances).unwrap();
    for e in &events {
        b.submit(e).unwrap();
    }
    b.caught_up::<Balances>();
    let s = b.stats(Balances::NAME).unwrap();
    let refused = events.iter().filter(|e| e.cents == 0).count() as u64;
    let keys = b.state::<Balances>().len() as u64;
    assert_eq!(s.events, events.len() as u64, "seed {seed}: {s:?}");
    assert_eq!(s.dead_letters, refused, "seed {seed}: {s:?}");
    assert!(s.batches >= 1, "seed {seed}: {s:?}");
    assert!(
        s.writes >= keys && s.changes >= keys,
        "seed {seed}: {keys} keys: {s:?}"
    );
    let unknown = b.stats("no_such_model");
    assert!(matches!(unknown, Err(Error::Model(..))), "{unknown:?}");
}

/// A hook that fails for one key: retried, then a dead letter saying why,
/// while every other key's change runs (after one failure each).
struct Flaky {
    attempts: Arc<Mutex<BTreeMap<u16, u32>>>,
}
impl ClusterHook for Flaky {
    type Model = Balances;
    const NAME: &'static str = "flaky";
    fn max_attempts(&self) -> u32 {
        3
    }
    fn backoff(&self, _attempt: u32) -> Duration {
        Duration::from_millis(5)
    }
    fn run(&self, t: &Trigger<'_, Balances>) -> std::result::Result<(), String> {
        let mut attempts = self.attempts.lock().unwrap();
        let n = attempts.entry(*t.key).or_default();
        *n += 1;
        if *t.key == 7 {
            return Err(format!("account 7 is frozen (attempt {})", t.attempt));
        }
        if t.attempt == 1 {
            return Err("a first attempt fails".into());
        }
        Ok(())
    }
}

fn a_failing_hook_is_retried_then_dead_lettered<B: Backend>(b: &B) {
    let attempts = Arc::new(Mutex::new(BTreeMap::new()));
    b.add_model(Balances).unwrap();
    b.add_cluster_hook(Flaky {
        attempts: attempts.clone(),
    })
    .unwrap();
    let pay = |id: u64, from: u16| Payment {
        id,
        from,
        to: 0,
        cents: 5,
        visitor: 1,
        at_ms: 0,
    };
    for from in [3_u16, 7, 9] {
        b.submit(&pay(u64::from(from), from)).unwrap();
    }
    b.caught_up::<Balances>();
    wait_hook(b, Flaky::NAME);
    let attempts = attempts.lock().unwrap().clone();
    assert_eq!(attempts.get(&7), Some(&3), "{attempts:?}");
    let dead = b.hook_dead_letters(Flaky::NAME);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].attempts, 3, "{dead:?}");
    assert!(
        dead[0].reason.contains("account 7 is frozen (attempt 3)"),
        "{dead:?}"
    );
    for key in [3_u16, 9] {
        assert!(
            attempts.get(&key).is_some_and(|n| *n >= 2),
            "key {key} ran after its failure: {attempts:?}"
        );
    }
    let stats = b.hook_stats(Flaky::NAME).unwrap();
    assert_eq!(stats.dead_letters, 1, "{stats:?}");
    assert!(stats.retries >= 4, "{stats:?}");
}

/// A read model named like one of accrete's own collections.
struct Rogue;
impl ReadModel for Rogue {
    const NAME: &'static str = "accrete.origins";
    type Event = Payment;
    type Key = u16;
    type State = accrete::monoids::Sum<i64>;
    fn project(
        &self,
        p: &Payment,
        out: &mut accrete::model::Deltas<u16, accrete::monoids::Sum<i64>>,
    ) -> std::result::Result<(), String> {
        out.push(p.to, accrete::monoids::Sum(p.cents));
        Ok(())
    }
}

/// accrete's own names are refused for read models, on every backend (on
/// MongoDB such a model shared the collection of the claims of forwarded
/// copies: found by `tests/attack.rs`).
fn a_model_named_like_accretes_own_is_refused<B: Backend>(b: &B) {
    let refused = b.add_model(Rogue);
    assert!(
        matches!(&refused, Err(Error::InvalidName { name, .. }) if name == "accrete.origins"),
        "{refused:?}"
    );
    b.add_model(Balances).unwrap();
}

// ---- crashes: the backend in child processes, killed ----

/// A backend whose data outlives the process serving it: the crash
/// scenario serves it in child processes (this test binary, run again) and
/// kills them.
trait Crashable: Backend + Sized {
    /// A new place for the backend's data (a directory under `scratch`; a
    /// database and topics named after `tag`).
    fn fresh(tag: &str, scratch: &Path) -> String;
    /// The backend on the data at `at` (left in place when dropped).
    fn attach(at: &str) -> Self;
    /// Removes what `fresh` named.
    fn remove(at: &str);
}

/// Set in a child process: where its backend's data is.
const CHILD: &str = "ACCRETE_CONFORMANCE_CHILD";
/// Set in a child process: the file its hook appends its runs to.
const JOURNAL: &str = "ACCRETE_CONFORMANCE_JOURNAL";

/// A hook that appends each run to a file: what it did survives the
/// process that ran it.
struct FileJournal(PathBuf);
impl ClusterHook for FileJournal {
    type Model = Balances;
    const NAME: &'static str = "journal";
    fn run(&self, t: &Trigger<'_, Balances>) -> std::result::Result<(), String> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.0)
            .map_err(|e| e.to_string())?;
        writeln!(f, "{} {} {}", t.key, t.delta.0, t.idempotency_key).map_err(|e| e.to_string())
    }
}

/// A child's life: serve `Balances` and its hook until both are caught up
/// (or a failpoint aborts the process first).
fn serve<B: Crashable>(at: &str) {
    let b = B::attach(at);
    b.add_model(Balances).unwrap();
    b.add_cluster_hook(FileJournal(std::env::var(JOURNAL).unwrap().into()))
        .unwrap();
    b.caught_up::<Balances>();
    wait_hook(&b, FileJournal::NAME);
}

/// Runs `test` in a child process serving the backend at `at`; with
/// `failpoint`, the child aborts there; with `kill_after`, it is SIGKILLed
/// then if still running. Returns whether it died rather than finished.
fn run_child(
    test: &str,
    at: &str,
    scratch: &Path,
    failpoint: Option<&str>,
    kill_after: Option<Duration>,
    ctx: &str,
) -> bool {
    use std::os::unix::process::ExitStatusExt;
    let log_path = scratch.join("child.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, at)
        .env(JOURNAL, scratch.join("journal"))
        .env_remove("ACCRETE_FAILPOINT")
        .stdout(std::process::Stdio::null())
        .stderr(log);
    if let Some(f) = failpoint {
        cmd.env("ACCRETE_FAILPOINT", f);
    }
    let mut child = cmd.spawn().unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if kill_after.is_some_and(|t| started.elapsed() >= t) {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        if started.elapsed() > Duration::from_secs(180) {
            let _ = child.kill();
            panic!(
                "{ctx}: the child did not finish in 180 s; its log: {}",
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    match status.signal() {
        // A failpoint's abort, or the kill.
        Some(6 | 9) => true,
        _ => {
            let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(30).collect();
            assert!(
                status.success(),
                "{ctx}: the child failed ({status}); the end of its log:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
            false
        }
    }
}

/// The backend killed at every crash point of the pipeline and of the hook
/// member, and SIGKILLed at random moments, events arriving between the
/// runs: the state ends equal to the oracle, and per key the deltas of the
/// hook's distinct runs add up to it (a run repeated after a kill repeats
/// the same delta).
fn killed_at_every_crash_point<B: Crashable>(test: &str) {
    if let Ok(at) = std::env::var(CHILD) {
        return serve::<B>(&at);
    }
    use accrete::testing::{FAILPOINTS, HOOK_FAILPOINTS};
    let seed = seeds_with(test, "ACCRETE_CONFORMANCE_SEEDS", 1)[0];
    let ctx = format!("{test}, seed {seed} (replay: ACCRETE_SEED={seed})");
    let mut rng = Rng(seed);
    let scratch = tempfile::tempdir().unwrap();
    let at = B::fresh(test, scratch.path());
    let events = payments(&mut rng, 1_000, 20);
    let points: Vec<String> = FAILPOINTS
        .iter()
        .chain(HOOK_FAILPOINTS.iter())
        .map(|p| format!("{p}:{}", 1 + rng.below(3)))
        .collect();
    let waves: Vec<&[Payment]> = events.chunks(events.len() / (points.len() + 3)).collect();
    let submit = |wave: &[Payment]| {
        let b = B::attach(&at);
        for e in wave {
            b.submit(e).unwrap();
        }
    };
    let mut died = 0;
    let mut waves = waves.into_iter();
    for point in &points {
        submit(waves.next().unwrap());
        died += usize::from(run_child(
            test,
            &at,
            scratch.path(),
            Some(point),
            None,
            &ctx,
        ));
    }
    for _ in 0..2 {
        submit(waves.next().unwrap());
        let after = Duration::from_millis(300 + rng.below(1_500));
        died += usize::from(run_child(
            test,
            &at,
            scratch.path(),
            None,
            Some(after),
            &ctx,
        ));
    }
    for wave in waves {
        submit(wave);
    }
    assert!(
        died >= points.len() / 2,
        "{ctx}: only {died} of the runs were killed: the crash points must be reached"
    );
    // The last run, here, to the end.
    let journal = scratch.path().join("journal");
    let b = B::attach(&at);
    b.add_model(Balances).unwrap();
    b.add_cluster_hook(FileJournal(journal.clone())).unwrap();
    b.caught_up::<Balances>();
    wait_hook(&b, FileJournal::NAME);
    let state = b.state::<Balances>();
    assert_eq!(state, oracle(&Balances, &events), "{ctx}: balances");
    let runs = std::fs::read_to_string(&journal).unwrap();
    let mut by_id: BTreeMap<&str, (u16, i64)> = BTreeMap::new();
    for line in runs.lines() {
        let mut parts = line.split(' ');
        let (Some(key), Some(delta), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
            panic!("{ctx}: a journal line cut short: {line:?}");
        };
        let run = (key.parse().unwrap(), delta.parse().unwrap());
        if let Some(seen) = by_id.insert(id, run) {
            assert_eq!(seen, run, "{ctx}: run {id} repeated differently");
        }
    }
    let mut sums: BTreeMap<u16, i64> = BTreeMap::new();
    for (key, delta) in by_id.values() {
        *sums.entry(*key).or_default() += delta;
    }
    for (key, s) in &state {
        assert_eq!(
            sums.get(key).copied().unwrap_or(0),
            s.0,
            "{ctx}: key {key}: the deltas of the hook's runs add up to the state"
        );
    }
    eprintln!(
        "{ctx}: {} of {} runs killed, {} hook runs ({} distinct)",
        died,
        points.len() + 2,
        runs.lines().count(),
        by_id.len()
    );
    drop(b);
    B::remove(&at);
}

/// The crash scenario, once per backend (child processes: not in the
/// macro, whose scenarios take a backend made in this process).
mod crashes {
    #[test]
    fn embedded() {
        super::killed_at_every_crash_point::<super::Embedded>("crashes::embedded");
    }

    #[cfg(all(feature = "kafka", feature = "mongodb"))]
    #[test]
    fn kafka_mongodb() {
        let _one = (std::env::var_os(super::CHILD).is_none()).then(super::one_at_a_time);
        super::killed_at_every_crash_point::<super::cluster_backend::Cluster>(
            "crashes::kafka_mongodb",
        );
    }
}

/// Each scenario, once per backend.
macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        mod embedded {
            $(
                #[test]
                fn $scenario() {
                    super::$scenario(&super::Embedded::new());
                }
            )*
        }
        #[cfg(all(feature = "kafka", feature = "mongodb"))]
        mod kafka_mongodb {
            $(
                #[test]
                fn $scenario() {
                    let _one = super::one_at_a_time();
                    super::$scenario(&super::cluster_backend::Cluster::new(stringify!($scenario)));
                }
            )*
        }
    };
}

/// The cluster scenarios run one at a time (two cores, one broker).
#[cfg(all(feature = "kafka", feature = "mongodb"))]
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

conformance!(
    the_oracle_with_copies_and_bad_events,
    hooks_run_every_change_and_deltas_add_up,
    hook_names_are_checked_alike,
    a_write_that_changes_nothing_runs_no_hook,
    status_of_an_unknown_model_is_an_error,
    a_model_added_later_backfills_to_the_oracle,
    stats_count_what_the_pipeline_did,
    a_failing_hook_is_retried_then_dead_lettered,
    a_model_named_like_accretes_own_is_refused,
);
