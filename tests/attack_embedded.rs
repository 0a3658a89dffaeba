//! Adversarial tests of the embedded default's worker (`Runtime`), written
//! by a helper attacking the public API only: a worker folds each of its
//! partitions' next batch into one reused read buffer, writes all of them
//! in one store transaction, publishes, then commits. The attacks:
//!
//! - many partitions per worker with skewed record sizes (a few payloads
//!   of hundreds of KB to a few MB among many tiny ones), batch sizes and
//!   worker counts changed across reopenings of the same directory;
//! - forwarded copies of one upstream id routed to different partitions,
//!   some twice in one call, some held back past a restart, our own ids
//!   forwarded back, ids at the extremes of `u32`/`u64`;
//! - hostile inputs: payloads that do not decode, projections that refuse,
//!   empty and very long routing and model keys, event times at
//!   `i64::MIN`/`i64::MAX`;
//! - operators racing a producer: `add_model` (a backfill), `rebuild`,
//!   `stop_model` then `add_model`, `shutdown` then `add_model`;
//! - the runtime in a child process (this test binary, re-executed), killed
//!   with SIGKILL at random moments, aborted at the pipeline's failpoints,
//!   or run with injected faults, with events appended between runs.
//!
//! Every check compares each model, through `scan` and `get`, with the
//! oracle (the plain left fold of the distinct events), and its dead
//! letters with the distinct bad events, one each. Each test prints its
//! seeds; `ACCRETE_SEED=<seed>` replays one (the operations it draws; the
//! threads' and the kills' timing is the machine's), `ACCRETE_ATTACK_SEEDS=<n>`
//! sets how many run (`ACCRETE_KILL_SEEDS` for the kill test).
//!
//! Finding (session 15, mended): a batch whose keys and payloads passed
//! 4 GiB (`batch_size` records of a partition's backlog: the default
//! 262 144 once records average 16 KiB, or 65 records of the 64 MiB
//! maximum) panicked in `RecordBatch::iter` (its record starts were
//! `u32`), which ended the worker thread: the model stopped folding those
//! partitions, with no error in its status, and did so again after every
//! restart. Now a read stops at `accrete::log::READ_BYTES`, record starts
//! are 64-bit, and a panicking batch is a failing batch in the status.
//! `batch_over_4_gib` (ignored: it writes 4.4 GB) shows it folds.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use accrete::Deployment;
use accrete::deployment::EncodedEvent;
use accrete::event::{EventId, encode, source_id};
use accrete::model::{Deltas, ReadModel};
use accrete::monoids::{Count, GSet, Max, Min, Sum};
use accrete::runtime::{Config, Runtime};
use common::{Rng, oracle, seeds_with};
use serde::{Deserialize, Serialize};

const PARTITIONS: u32 = 16;
const TIMEOUT: Duration = Duration::from_secs(60);

/// An event: an amount for a key, a time, and padding that makes some
/// records large.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Entry {
    id: u64,
    key: String,
    amount: i64,
    at_ms: i64,
    pad: String,
}

/// The sum of the amounts per key; refuses an amount of 0 (a dead letter).
struct Totals;
impl ReadModel for Totals {
    const NAME: &'static str = "totals";
    type Event = Entry;
    type Key = String;
    type State = Sum<i64>;
    fn project(&self, e: &Entry, out: &mut Deltas<String, Sum<i64>>) -> Result<(), String> {
        if e.amount == 0 {
            return Err(format!("entry {} has no amount", e.id));
        }
        out.push(e.key.clone(), Sum(e.amount));
        Ok(())
    }
}

/// Per key and over all keys: how many entries, their earliest and latest
/// times, and the padding bytes (a large payload decoded wrongly shows).
#[derive(accrete::monoids::Monoid, Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Stats {
    count: Count,
    earliest: Min<i64>,
    latest: Max<i64>,
    padding: Sum<u64>,
}

/// The key that [`Spread`] gives every entry besides its own.
const ALL: &str = "#all";

struct Spread;
impl ReadModel for Spread {
    const NAME: &'static str = "spread";
    type Event = Entry;
    type Key = String;
    type State = Stats;
    fn project(&self, e: &Entry, out: &mut Deltas<String, Stats>) -> Result<(), String> {
        let stats = Stats {
            count: Count(1),
            earliest: Min(e.at_ms),
            latest: Max(e.at_ms),
            padding: Sum(e.pad.len() as u64),
        };
        out.push(e.key.clone(), stats.clone());
        out.push(ALL.to_string(), stats);
        Ok(())
    }
}

/// The ids per key: a set, so not exactly-once (duplicates are harmless).
struct Ids;
impl ReadModel for Ids {
    const NAME: &'static str = "ids";
    const EXACTLY_ONCE: bool = false;
    type Event = Entry;
    type Key = String;
    type State = GSet<u64>;
    fn project(&self, e: &Entry, out: &mut Deltas<String, GSet<u64>>) -> Result<(), String> {
        out.push(e.key.clone(), GSet::of([e.id]));
        Ok(())
    }
}

const MODELS: [&str; 3] = [Totals::NAME, Spread::NAME, Ids::NAME];

fn config(batch_size: usize, workers: usize) -> Config {
    Config {
        partitions: PARTITIONS,
        batch_size,
        workers,
        flush_interval: Duration::from_millis(1),
        max_retry_backoff: Duration::from_millis(5),
        ..Config::default()
    }
}

/// A batch size and a worker count (1 or 2 workers hold 8 or 16
/// partitions each).
fn draw_config(rng: &mut Rng) -> Config {
    let batch = [1, 2, 7, 64, 4096, 1 << 20][rng.below(6) as usize];
    let workers = [1, 1, 2, 2, 3, 16][rng.below(6) as usize];
    config(batch, workers)
}

fn try_add(rt: &Runtime, model: &str) -> accrete::Result<()> {
    match model {
        "totals" => rt.add_model(Totals),
        "spread" => rt.add_model(Spread),
        "ids" => rt.add_model(Ids),
        _ => unreachable!("no model {model}"),
    }
}

fn add(rt: &Runtime, model: &str) {
    try_add(rt, model).unwrap_or_else(|e| panic!("adding {model}: {e}"));
}

/// A forwarded copy: its routing key, time, payload and upstream id, and
/// the entry it encodes (none: its payload does not decode).
#[derive(Clone)]
struct Forwarded {
    key: Vec<u8>,
    time_ms: i64,
    payload: Vec<u8>,
    id: EventId,
    entry: Option<Entry>,
}

/// The history of one seed: the events delivered so far (each distinct
/// event once, whatever the copies), the bad events each model must hold
/// one dead letter for, and forwarded copies held back for later calls.
struct World {
    rng: Rng,
    next_id: u64,
    upstream: u32,
    /// Distinct events delivered, by id.
    delivered: BTreeMap<u64, Entry>,
    /// Dead letters of every model: payloads that do not decode.
    undecodable: BTreeMap<EventId, Vec<u8>>,
    /// Dead letters of `Totals` only: entries with no amount.
    refused: BTreeMap<EventId, Vec<u8>>,
    /// Forwarded copies not yet delivered.
    held: Vec<Forwarded>,
    /// Native events with their ids, to forward back.
    natives: Vec<(EventId, Entry)>,
    /// Whether large payloads are drawn.
    large: bool,
    /// What the producer did, by operation.
    ops: BTreeMap<&'static str, usize>,
    /// Large payloads drawn.
    large_payloads: usize,
}

impl World {
    fn new(seed: u64, large: bool) -> Self {
        World {
            rng: Rng(seed),
            next_id: 0,
            upstream: source_id("attack-upstream"),
            delivered: BTreeMap::new(),
            undecodable: BTreeMap::new(),
            refused: BTreeMap::new(),
            held: Vec::new(),
            natives: Vec::new(),
            large,
            ops: BTreeMap::new(),
            large_payloads: 0,
        }
    }

    fn model_key(&mut self) -> String {
        match self.rng.below(40) {
            0 => String::new(),
            1 => "L".repeat(20_000 + self.rng.below(50_000) as usize),
            2 => "ключ-🔑".into(),
            n => format!("k{}", n % 23),
        }
    }

    fn routing_key(&mut self) -> Vec<u8> {
        match self.rng.below(60) {
            0 => Vec::new(),
            1 => vec![0xFF; 1 << 20],
            n => format!("r{}-{}", n, self.rng.below(1000)).into_bytes(),
        }
    }

    fn time(&mut self) -> i64 {
        match self.rng.below(20) {
            0 => i64::MIN,
            1 => i64::MAX,
            2 => 0,
            _ => self.rng.below(1 << 40) as i64 - (1 << 39),
        }
    }

    /// A new entry; `refusable` lets it carry no amount.
    fn entry(&mut self, refusable: bool) -> Entry {
        let id = self.next_id;
        self.next_id += 1;
        let amount = if refusable && self.rng.chance(0.1) {
            0
        } else {
            let a = 1 + self.rng.below(1000) as i64;
            if self.rng.chance(0.3) { -a } else { a }
        };
        let pad = if self.large && self.rng.chance(0.02) {
            // 200 KB to 3 MB.
            self.large_payloads += 1;
            let len = 200_000 + self.rng.below(2_800_000) as usize;
            let c = char::from(b'a' + (id % 26) as u8);
            std::iter::repeat_n(c, len).collect()
        } else {
            "x".repeat(self.rng.below(24) as usize)
        };
        Entry {
            id,
            key: self.model_key(),
            amount,
            at_ms: self.time(),
            pad,
        }
    }

    fn upstream_id(&self, id: u64) -> EventId {
        EventId {
            source: self.upstream,
            partition: (id % 3) as u32,
            offset: id,
        }
    }

    /// Bytes that are not an `Entry`.
    fn garbage(&mut self) -> Vec<u8> {
        match self.rng.below(5) {
            0 => Vec::new(),
            1 => vec![accrete::event::EVENT_FORMAT],
            2 => {
                let mut bytes = encode(&self.entry(false)).unwrap();
                bytes.push(7); // a trailing byte
                bytes
            }
            3 => encode(&(1_u8, "not an entry")).unwrap(),
            _ => {
                let mut bytes: Vec<u8> = (0..1 + self.rng.below(300))
                    .map(|_| self.rng.next() as u8)
                    .collect();
                // Not the format byte: random bytes could be an `Entry`.
                bytes[0] &= 0x7F;
                bytes
            }
        }
    }

    /// Records a copy of `e` as delivered with the id `id` (`Totals`
    /// refuses it if it has no amount; the other models apply it).
    fn deliver(&mut self, e: &Entry, id: EventId) {
        if e.amount == 0 {
            self.refused.insert(id, encode(e).unwrap());
        }
        self.delivered.entry(e.id).or_insert_with(|| e.clone());
    }

    /// One operation of a producer.
    fn step(&mut self, rt: &Runtime) {
        let op = self.operation(rt);
        *self.ops.entry(op).or_default() += 1;
    }

    /// What the producer did, for the log of a seed.
    fn summary(&self) -> String {
        format!(
            "{} distinct events ({} large), {} dead letters in totals; operations {:?}",
            self.delivered.len(),
            self.large_payloads,
            self.dead_letters(Totals::NAME).len(),
            self.ops
        )
    }

    /// One operation of a producer; returns its name.
    fn operation(&mut self, rt: &Runtime) -> &'static str {
        match self.rng.below(100) {
            0..35 => {
                let entries: Vec<Entry> = (0..1 + self.rng.below(40))
                    .map(|_| self.entry(false))
                    .collect();
                let keys: Vec<Vec<u8>> = entries.iter().map(|_| self.routing_key()).collect();
                let times: Vec<i64> = entries.iter().map(|_| self.time()).collect();
                let n = rt
                    .submit_batch(
                        entries
                            .iter()
                            .zip(&keys)
                            .zip(&times)
                            .map(|((e, k), t)| (k, *t, e)),
                    )
                    .unwrap();
                assert_eq!(n, entries.len());
                for e in entries {
                    self.delivered.insert(e.id, e);
                }
                "submit_batch"
            }
            35..50 => {
                let e = self.entry(true);
                let (key, time) = (self.routing_key(), self.time());
                let id = rt.submit(&key, time, &e).unwrap();
                self.deliver(&e, id);
                self.natives.push((id, e));
                "submit"
            }
            50..75 => {
                self.forward(rt);
                "forward"
            }
            75..82 => {
                let payload = self.garbage();
                let (key, time) = (self.routing_key(), self.time());
                let id = rt.submit_encoded(&key, time, &payload).unwrap();
                self.undecodable.insert(id, payload);
                "submit_encoded garbage"
            }
            82..88 => {
                // A bad upstream event, forwarded one to three times.
                let id = self.next_id;
                self.next_id += 1;
                let origin = self.upstream_id(id);
                let payload = self.garbage();
                let copies = 1 + self.rng.below(3);
                for _ in 0..copies {
                    let (key, time_ms) = (self.routing_key(), self.time());
                    self.held.push(Forwarded {
                        key,
                        time_ms,
                        payload: payload.clone(),
                        id: origin,
                        entry: None,
                    });
                }
                self.flush_some(rt);
                "forward garbage"
            }
            88..94 if !self.natives.is_empty() => {
                // Our own events forwarded back: copies, never applied again.
                let picks: Vec<(EventId, Entry)> = (0..1 + self.rng.below(3))
                    .map(|_| {
                        self.natives[self.rng.below(self.natives.len() as u64) as usize].clone()
                    })
                    .collect();
                let keys: Vec<Vec<u8>> = picks.iter().map(|_| self.routing_key()).collect();
                rt.forward(picks.iter().zip(&keys).map(|((id, e), k)| (k, 0, e, *id)))
                    .unwrap();
                "forward own ids back"
            }
            _ => {
                // Ids at the extremes, each from a source of its own (so
                // no upstream partition spreads over the horizon).
                let e = self.entry(true);
                let id = EventId {
                    source: self.rng.next() as u32 | 1,
                    partition: [0, u32::MAX, self.rng.next() as u32][self.rng.below(3) as usize],
                    offset: [0, u64::MAX, u64::MAX - 4096, self.rng.next()]
                        [self.rng.below(4) as usize],
                };
                if id.source == rt.source_id() || id.source == self.upstream {
                    return "skipped";
                }
                let key = self.routing_key();
                let copies = 1 + self.rng.below(2) as usize;
                let items = vec![(&key, i64::MAX, &e, id); copies];
                rt.forward(items).unwrap();
                self.deliver(&e, id);
                "forward extreme ids"
            }
        }
    }

    /// New upstream events, forwarded one to three times each over random
    /// routing keys (so partitions), some copies twice in the same call,
    /// some held back for a later call (after a restart, perhaps).
    fn forward(&mut self, rt: &Runtime) {
        for _ in 0..1 + self.rng.below(10) {
            let e = self.entry(true);
            let id = self.upstream_id(e.id);
            let payload = encode(&e).unwrap();
            for _ in 0..1 + self.rng.below(3) {
                let (key, time_ms) = (self.routing_key(), self.time());
                self.held.push(Forwarded {
                    key,
                    time_ms,
                    payload: payload.clone(),
                    id,
                    entry: Some(e.clone()),
                });
            }
        }
        self.flush_some(rt);
    }

    /// Delivers a random part of the held copies in one call, some of
    /// them twice, in random order.
    fn flush_some(&mut self, rt: &Runtime) {
        self.rng.shuffle(&mut self.held);
        let n = self.rng.below(self.held.len() as u64 + 1) as usize;
        let mut call: Vec<_> = self.held.split_off(self.held.len() - n);
        let twice: Vec<_> = call
            .iter()
            .filter(|_| self.rng.chance(0.15))
            .cloned()
            .collect();
        call.extend(twice);
        self.rng.shuffle(&mut call);
        self.send(rt, &call);
    }

    /// Delivers every held copy.
    fn flush_all(&mut self, rt: &Runtime) {
        let call = std::mem::take(&mut self.held);
        self.send(rt, &call);
    }

    fn send(&mut self, rt: &Runtime, call: &[Forwarded]) {
        if call.is_empty() {
            return;
        }
        let events: Vec<EncodedEvent<'_>> = call
            .iter()
            .map(|f| EncodedEvent {
                key: &f.key,
                time_ms: f.time_ms,
                payload: &f.payload,
                origin: Some(f.id),
            })
            .collect();
        assert_eq!(rt.append_encoded(&events).unwrap(), call.len());
        for f in call {
            match &f.entry {
                Some(e) => self.deliver(e, f.id),
                None => {
                    self.undecodable.insert(f.id, f.payload.clone());
                }
            }
        }
    }

    /// The dead letters a model must hold: `(id, payload)` sorted.
    fn dead_letters(&self, model: &str) -> Vec<(EventId, Vec<u8>)> {
        let mut out: BTreeMap<EventId, Vec<u8>> = self.undecodable.clone();
        if model == Totals::NAME {
            out.extend(self.refused.clone());
        }
        out.into_iter().collect()
    }

    fn events(&self) -> Vec<Entry> {
        self.delivered.values().cloned().collect()
    }
}

/// Asserts a model against the oracle through `scan` and `get`, and its
/// dead letters against the bad events.
fn check_model<M: ReadModel<Event = Entry, Key = String>>(
    rt: &Runtime,
    model: &M,
    world: &World,
    ctx: &str,
) {
    rt.wait_caught_up::<M>(TIMEOUT)
        .unwrap_or_else(|e| panic!("{ctx}: {} did not catch up: {e}", M::NAME));
    let expected = oracle(model, &world.events());
    let mut scanned = BTreeMap::new();
    rt.scan::<M>(|k, v| {
        scanned.insert(k, v);
        true
    })
    .unwrap();
    if scanned != expected {
        let wrong: Vec<_> = expected
            .keys()
            .chain(scanned.keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|k| expected.get(*k) != scanned.get(*k))
            .take(5)
            .map(|k| {
                (
                    k.chars().take(20).collect::<String>(),
                    expected.get(k),
                    scanned.get(k),
                )
            })
            .collect();
        panic!(
            "{ctx}: {} differs from the oracle by scan (key, expected, got): {wrong:?}",
            M::NAME
        );
    }
    for (k, v) in &expected {
        assert_eq!(
            rt.get::<M>(k).unwrap().as_ref(),
            Some(v),
            "{ctx}: {} get of key {:?}",
            M::NAME,
            k.chars().take(20).collect::<String>()
        );
    }
    assert_eq!(
        rt.get::<M>(&"never-touched".to_string()).unwrap(),
        None,
        "{ctx}: {}",
        M::NAME
    );
    let got: Vec<(EventId, Vec<u8>)> = rt
        .dead_letters::<M>()
        .unwrap()
        .into_iter()
        .map(|d| (d.event, d.payload))
        .collect();
    let want = world.dead_letters(M::NAME);
    if got != want {
        let ids = |v: &[(EventId, Vec<u8>)]| v.iter().map(|(id, _)| *id).collect::<BTreeSet<_>>();
        let (got_ids, want_ids) = (ids(&got), ids(&want));
        panic!(
            "{ctx}: {} dead letters: {} expected, {} held; missing {:?}, unexpected {:?} (or a payload differs)",
            M::NAME,
            want.len(),
            got.len(),
            want_ids.difference(&got_ids).take(5).collect::<Vec<_>>(),
            got_ids.difference(&want_ids).take(5).collect::<Vec<_>>(),
        );
    }
}

fn check_all(rt: &Runtime, world: &World, ctx: &str) {
    check_model(rt, &Totals, world, ctx);
    check_model(rt, &Spread, world, ctx);
    check_model(rt, &Ids, world, ctx);
}

/// Runs `f` for every seed, naming the seed of a failure.
fn for_seeds(test: &str, seeds: &[u64], mut f: impl FnMut(u64)) {
    for &seed in seeds {
        let started = Instant::now();
        if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(seed))) {
            eprintln!(
                "{test} FAILED: replay with ACCRETE_SEED={seed} cargo test --all-features --test attack_embedded {test} -- --nocapture"
            );
            std::panic::resume_unwind(panic);
        }
        eprintln!("{test}: seed {seed} passed in {:?}", started.elapsed());
    }
}

/// Sessions on one directory, each with its own batch size and worker
/// count, the producer running while the workers fold; `spread` and `ids`
/// are added in a later session than `totals` (a backfill over records
/// large and small). Checked after every session.
#[test]
fn skewed_records_across_restarts() {
    for_seeds(
        "skewed_records_across_restarts",
        &seeds_with("skewed_records_across_restarts", "ACCRETE_ATTACK_SEEDS", 3),
        |seed| {
            let mut world = World::new(seed, true);
            let dir = tempfile::tempdir().unwrap();
            let sessions = 3 + world.rng.below(3);
            let late = 1 + world.rng.below(sessions - 1);
            for session in 0..sessions {
                let cfg = draw_config(&mut world.rng);
                let ctx = format!(
                    "seed {seed}, session {session}: batch {}, workers {}",
                    cfg.batch_size, cfg.workers
                );
                let rt = Runtime::open_with(dir.path(), cfg).unwrap();
                add(&rt, Totals::NAME);
                if session >= late {
                    add(&rt, Spread::NAME);
                    add(&rt, Ids::NAME);
                }
                for _ in 0..30 + world.rng.below(60) {
                    world.step(&rt);
                }
                if session + 1 == sessions {
                    world.flush_all(&rt);
                }
                if session >= late {
                    check_all(&rt, &world, &ctx);
                } else {
                    check_model(&rt, &Totals, &world, &ctx);
                }
            }
            eprintln!("seed {seed}: {sessions} sessions, {}", world.summary());
        },
    );
}

/// One operator action on `rt`, given the models running (kept up to
/// date); returns its name.
fn operate(rt: &Runtime, rng: &mut Rng, running: &mut BTreeSet<&'static str>) -> String {
    let pick = |rng: &mut Rng| MODELS[rng.below(MODELS.len() as u64) as usize];
    match rng.below(5) {
        0 => {
            let m = pick(rng);
            if running.insert(m) {
                add(rt, m);
                format!("add_model {m}")
            } else {
                let again = try_add(rt, m);
                assert!(
                    matches!(again, Err(accrete::Error::Model(..))),
                    "adding {m}, running already: {again:?}"
                );
                format!("add_model {m} (running)")
            }
        }
        1 => {
            let m = pick(rng);
            let result = match m {
                "totals" => rt.rebuild::<Totals>(),
                "spread" => rt.rebuild::<Spread>(),
                _ => rt.rebuild::<Ids>(),
            };
            assert_eq!(
                result.is_ok(),
                running.contains(m),
                "rebuild {m}: {result:?}"
            );
            format!("rebuild {m}")
        }
        2 => {
            let m = pick(rng);
            let stopped = rt.stop_model(m);
            assert_eq!(stopped.is_ok(), running.contains(m), "stop_model {m}");
            std::thread::sleep(Duration::from_millis(rng.below(20)));
            add(rt, m);
            running.insert(m);
            format!("stop_model then add_model {m}")
        }
        3 => {
            rt.shutdown();
            std::thread::sleep(Duration::from_millis(rng.below(20)));
            let again: Vec<&'static str> = running.iter().copied().collect();
            for m in again {
                add(rt, m);
            }
            "shutdown then add_model".into()
        }
        _ => {
            std::thread::sleep(Duration::from_millis(rng.below(30)));
            "pause".into()
        }
    }
}

/// A producer thread submits and forwards while an operator thread adds,
/// rebuilds, stops and restarts models and shuts the runtime down.
#[test]
fn operators_race_a_producer() {
    for_seeds(
        "operators_race_a_producer",
        &seeds_with("operators_race_a_producer", "ACCRETE_ATTACK_SEEDS", 4),
        |seed| {
            let mut world = World::new(seed, true);
            let mut operator_rng = Rng(seed ^ 0x5eed);
            let cfg = draw_config(&mut world.rng);
            let ctx = format!(
                "seed {seed}: batch {}, workers {}",
                cfg.batch_size, cfg.workers
            );
            let dir = tempfile::tempdir().unwrap();
            let rt = Runtime::open_with(dir.path(), cfg).unwrap();
            add(&rt, Totals::NAME);
            let done = AtomicBool::new(false);
            let mut actions = Vec::new();
            std::thread::scope(|s| {
                let producer = s.spawn(|| {
                    for _ in 0..150 + world.rng.below(150) {
                        world.step(&rt);
                    }
                    world.flush_all(&rt);
                    done.store(true, Ordering::SeqCst);
                });
                let mut running = BTreeSet::from([Totals::NAME]);
                while !done.load(Ordering::SeqCst) && actions.len() < 60 {
                    actions.push(operate(&rt, &mut operator_rng, &mut running));
                }
                for m in MODELS {
                    if running.insert(m) {
                        add(&rt, m);
                    }
                }
                producer.join().unwrap();
            });
            check_all(&rt, &world, &format!("{ctx}, after {actions:?}"));
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for a in &actions {
                *counts.entry(a.as_str()).or_default() += 1;
            }
            eprintln!("{ctx}: {}; operator actions {counts:?}", world.summary());
        },
    );
}

const CHILD: &str = "ACCRETE_ATTACK_CHILD";

/// The child: runs every model over the directory until it has folded the
/// whole log (perhaps rebuilding `totals` first).
fn child(dir: &str) {
    let arg = |name: &str| std::env::var(name).unwrap().parse::<usize>().unwrap();
    let cfg = config(arg("ACCRETE_ATTACK_BATCH"), arg("ACCRETE_ATTACK_WORKERS"));
    let rt = Runtime::open_with(dir, cfg).expect("child: open");
    for m in MODELS {
        add(&rt, m);
    }
    if std::env::var_os("ACCRETE_ATTACK_REBUILD").is_some() {
        rt.rebuild::<Totals>().unwrap();
    }
    rt.wait_caught_up::<Totals>(TIMEOUT).unwrap();
    rt.wait_caught_up::<Spread>(TIMEOUT).unwrap();
    rt.wait_caught_up::<Ids>(TIMEOUT).unwrap();
    rt.shutdown();
}

/// Runs the child once over `dir`; returns whether it finished.
fn run_child(dir: &Path, rng: &mut Rng, clean: bool) -> bool {
    let cfg = draw_config(rng);
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "killed_mid_stream",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD, dir)
    .env("ACCRETE_ATTACK_BATCH", cfg.batch_size.to_string())
    .env("ACCRETE_ATTACK_WORKERS", cfg.workers.to_string())
    .env_remove("ACCRETE_FAILPOINT")
    .env_remove("ACCRETE_FAULTS")
    .env_remove("ACCRETE_ATTACK_REBUILD")
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let rebuild = rng.chance(0.2);
    if rebuild {
        cmd.env("ACCRETE_ATTACK_REBUILD", "1");
    }
    let mut sigkill_after = None;
    if !clean {
        match rng.below(10) {
            0..4 => sigkill_after = Some(Duration::from_millis(rng.below(400))),
            4..7 => {
                cmd.env("ACCRETE_FAILPOINT", common::failpoint(rng, rebuild, 12));
            }
            7..9 => {
                cmd.env(
                    "ACCRETE_FAULTS",
                    "log_read:3,store_write:5,store_write_applied:4,publish:3,commit:2",
                );
            }
            _ => {}
        }
    }
    let mut child = cmd.spawn().unwrap();
    if let Some(after) = sigkill_after {
        std::thread::sleep(after);
        let _ = child.kill();
    }
    child.wait().unwrap().success()
}

/// The runtime runs in a child process, killed at random moments (SIGKILL,
/// or an abort at a failpoint of the pipeline or of a rebuild), or run
/// with injected faults; events are appended between runs, forwarded
/// copies held back across them. Once a run finishes, every model must
/// equal the oracle.
#[test]
fn killed_mid_stream() {
    if let Ok(dir) = std::env::var(CHILD) {
        child(&dir);
        return;
    }
    let seeds = seeds_with("killed_mid_stream", "ACCRETE_KILL_SEEDS", 2);
    let mut kills = 0;
    for_seeds("killed_mid_stream", &seeds, |seed| {
        let mut world = World::new(seed, true);
        let dir = tempfile::tempdir().unwrap();
        let rounds = 4 + world.rng.below(4);
        for round in 0..rounds {
            {
                let rt = Runtime::open_with(dir.path(), config(64, 1)).unwrap();
                for _ in 0..20 + world.rng.below(40) {
                    world.step(&rt);
                }
                if round + 1 == rounds {
                    world.flush_all(&rt);
                }
            }
            let mut finished = run_child(dir.path(), &mut world.rng, false);
            kills += usize::from(!finished);
            let mut attempts = 0;
            while round + 1 == rounds && !finished {
                attempts += 1;
                assert!(attempts < 20, "seed {seed}: the child never finished");
                finished = run_child(dir.path(), &mut world.rng, attempts > 4);
                kills += usize::from(!finished);
            }
        }
        let rt = Runtime::open_with(dir.path(), draw_config(&mut world.rng)).unwrap();
        for m in MODELS {
            add(&rt, m);
        }
        check_all(&rt, &world, &format!("seed {seed}, after {rounds} rounds"));
        eprintln!("seed {seed}: {rounds} rounds, {}", world.summary());
    });
    eprintln!("killed_mid_stream: {kills} children killed");
    assert!(
        kills > 0 || seeds.len() < 2,
        "no child was killed: the attack did not attack"
    );
}

/// One partition's batch holding more than 4 GiB of keys and payloads
/// (132 records of 33 MB, read in one batch as a backlog is with the
/// default batch size once records average 16 KiB): every record must be
/// folded once. Needs about 4.4 GB of disk and 5 GB of memory, so it runs
/// only when asked: `cargo test --all-features --test attack_embedded --
/// --ignored batch_over_4_gib`.
#[test]
#[ignore = "writes 4.4 GB (`cargo test --release --all-features --test attack_embedded -- --ignored`)"]
fn batch_over_4_gib() {
    const RECORDS: u64 = 132;
    const PAD: usize = 33_000_000;
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        partitions: 1,
        ..config(1 << 20, 1)
    };
    let rt = Runtime::open_with(dir.path(), cfg).unwrap();
    let pad = "p".repeat(PAD);
    let mut events = Vec::new();
    for id in 0..RECORDS {
        let e = Entry {
            id,
            key: format!("k{}", id % 7),
            amount: 1 + id as i64,
            at_ms: id as i64,
            pad: pad.clone(),
        };
        rt.submit(b"k", 0, &e).unwrap();
        events.push(Entry {
            pad: String::new(),
            ..e
        });
    }
    // The whole backlog is there before the model starts: one batch.
    rt.add_model(Totals).unwrap();
    rt.add_model(Spread).unwrap();
    let status = rt.wait_caught_up::<Totals>(Duration::from_secs(90));
    assert!(status.is_ok(), "totals never caught up: {status:?}");
    let status = rt.wait_caught_up::<Spread>(Duration::from_secs(90));
    assert!(status.is_ok(), "spread never caught up: {status:?}");
    let mut world = World::new(0, false);
    world.delivered = events.into_iter().map(|e| (e.id, e)).collect();
    check_model(&rt, &Totals, &world, "a batch over 4 GiB");
    let all = rt.get::<Spread>(&ALL.to_string()).unwrap().unwrap();
    assert_eq!(
        (all.count, all.padding),
        (Count(RECORDS), Sum(RECORDS * PAD as u64)),
        "spread over a batch over 4 GiB"
    );
}
