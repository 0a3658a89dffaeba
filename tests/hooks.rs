//! Hooks on the embedded default: coalescing, the state a hook sees,
//! retries and dead letters, no run for a write that changed nothing,
//! threshold hooks, node hooks, and at-least-once through real process
//! kills (the child is this test binary, re-executed).

mod common;

use accrete::Deployment;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use accrete::hooks::{ClusterHook, Trigger};
use accrete::model::{Deltas, ReadModel};
use accrete::monoids::{GSet, Max, Sum};
use accrete::runtime::{Config, Runtime, changes_topic, hook_group};
use accrete::testing::HOOK_FAILPOINTS;
use common::{Rng, seeds_with};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// An event: a value for a key.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Hit {
    key: u16,
    value: i64,
}

/// Sums of the values (all positive here, so a state is at least the sum of
/// every delta a hook has seen).
struct Totals;
impl ReadModel for Totals {
    const NAME: &'static str = "totals";
    type Event = Hit;
    type Key = u16;
    type State = Sum<i64>;
    fn project(&self, h: &Hit, out: &mut Deltas<u16, Sum<i64>>) -> Result<(), String> {
        out.push(h.key, Sum(h.value));
        Ok(())
    }
}

/// The largest value per key.
struct Peaks;
impl ReadModel for Peaks {
    const NAME: &'static str = "peaks";
    const EXACTLY_ONCE: bool = false;
    type Event = Hit;
    type Key = u16;
    type State = Max<i64>;
    fn project(&self, h: &Hit, out: &mut Deltas<u16, Max<i64>>) -> Result<(), String> {
        out.push(h.key, Max(h.value));
        Ok(())
    }
}

/// The distinct values per key: a semilattice.
struct Tags;
impl ReadModel for Tags {
    const NAME: &'static str = "tags";
    const EXACTLY_ONCE: bool = false;
    type Event = Hit;
    type Key = u16;
    type State = GSet<i64>;
    fn project(&self, h: &Hit, out: &mut Deltas<u16, GSet<i64>>) -> Result<(), String> {
        out.push(h.key, GSet::of([h.value]));
        Ok(())
    }
}

/// One hook run, as the hook saw it.
#[derive(Debug, Clone)]
struct Run<S> {
    key: u16,
    delta: S,
    state: S,
    version: u64,
    idempotency_key: String,
    attempt: u32,
}

type Runs<S> = Arc<Mutex<Vec<Run<S>>>>;

fn record<M: ReadModel<Key = u16>>(runs: &Runs<M::State>, t: &Trigger<'_, M>) {
    runs.lock().push(Run {
        key: *t.key,
        delta: t.delta.clone(),
        state: t.state.clone(),
        version: t.version,
        idempotency_key: t.idempotency_key.to_string(),
        attempt: t.attempt,
    });
}

/// Records every run of the totals.
struct Audit(Runs<Sum<i64>>);
impl ClusterHook for Audit {
    type Model = Totals;
    const NAME: &'static str = "audit";
    fn run(&self, t: &Trigger<'_, Totals>) -> Result<(), String> {
        record(&self.0, t);
        Ok(())
    }
}

fn config() -> Config {
    Config {
        partitions: 4,
        workers: 2,
        batch_size: 64,
        flush_interval: Duration::from_millis(2),
        max_retry_backoff: Duration::from_millis(5),
        ..Config::default()
    }
}

/// Waits until the model has folded everything and the hook has handled
/// every change, twice in a row.
fn settle<M: ReadModel>(rt: &Runtime, hook: &str) {
    rt.wait_caught_up::<M>(Duration::from_secs(30)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut clean = 0;
    while clean < 2 {
        assert!(
            Instant::now() < deadline,
            "hook `{hook}` still {} changes behind after 30 s",
            rt.hook_lag(hook).unwrap()
        );
        if rt.hook_lag(hook).unwrap() == 0 {
            clean += 1;
        } else {
            clean = 0;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn submit(rt: &Runtime, hits: &[Hit]) {
    let keys: Vec<[u8; 2]> = hits.iter().map(|h| h.key.to_be_bytes()).collect();
    rt.submit_batch(keys.iter().zip(hits).map(|(k, h)| (k, 0, h)))
        .unwrap();
}

fn sums(hits: &[Hit]) -> BTreeMap<u16, i64> {
    let mut out = BTreeMap::new();
    for h in hits {
        *out.entry(h.key).or_default() += h.value;
    }
    out
}

/// A burst of changes of one key runs the hook once, with the combined
/// delta, against the latest state; live changes then run it with a state
/// at least as new as each change, and the deltas of all runs add up to the
/// final state (every change acted on, none twice).
#[test]
fn a_burst_coalesces_and_the_hook_sees_the_state_that_triggered_it() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open_with(dir.path(), config()).unwrap();
    rt.add_model(Totals).unwrap();
    let mut rng = Rng(7);
    let burst: Vec<Hit> = (0..3_000)
        .map(|_| Hit {
            key: rng.below(3) as u16,
            value: 1 + rng.below(100) as i64,
        })
        .collect();
    submit(&rt, &burst);
    rt.wait_caught_up::<Totals>(Duration::from_secs(30))
        .unwrap();
    let changes: u64 = (0..4)
        .map(|p| rt.log().end_offset(&changes_topic("totals"), p).unwrap())
        .sum();
    assert!(changes > 3, "batches of 64 publish many changes per key");

    // The hook starts from the first change: the whole burst is pending.
    let runs: Runs<Sum<i64>> = Arc::default();
    rt.add_cluster_hook(Audit(runs.clone())).unwrap();
    settle::<Totals>(&rt, "audit");
    let expected = sums(&burst);
    {
        let runs = runs.lock();
        assert_eq!(runs.len(), 3, "one run per key for the burst: {runs:?}");
        for r in runs.iter() {
            assert_eq!(r.delta, r.state, "the delta combines the whole burst");
            assert_eq!(r.state.0, expected[&r.key]);
        }
    }
    let stats = rt.hook_stats("audit").unwrap();
    assert_eq!(stats.coalesced, changes - 3, "{stats:?}");
    assert_eq!(stats.runs, 3);

    // Live: every run sees a state at least as new as its changes.
    let mut all = burst.clone();
    for round in 0..30 {
        let hits: Vec<Hit> = (0..1 + rng.below(40))
            .map(|_| Hit {
                key: rng.below(5) as u16,
                value: 1 + rng.below(100) as i64,
            })
            .collect();
        submit(&rt, &hits);
        all.extend(hits);
        if round % 3 == 0 {
            std::thread::sleep(Duration::from_millis(rng.below(20)));
        }
    }
    settle::<Totals>(&rt, "audit");
    let runs = runs.lock();
    let mut seen: BTreeMap<u16, i64> = BTreeMap::new();
    let mut versions: BTreeMap<u16, u64> = BTreeMap::new();
    let mut covered: BTreeMap<u16, u64> = BTreeMap::new();
    for r in runs.iter() {
        let total = seen.entry(r.key).or_default();
        *total += r.delta.0;
        assert!(
            r.state.0 >= *total,
            "key {}: state {} is older than the changes run so far ({total})",
            r.key,
            r.state.0
        );
        // The version is the state's: it never goes down for a key.
        let v = versions.entry(r.key).or_default();
        assert!(r.version >= *v, "a key's runs see versions in order");
        *v = r.version;
        assert_eq!(r.attempt, 1);
        // Readable: the key as JSON, the newest version the run covers,
        // which the state includes; one key's runs cover newer and newer
        // versions.
        let prefix = format!("audit/totals/{}/", serde_json::to_string(&r.key).unwrap());
        let covers: u64 = r
            .idempotency_key
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("idempotency key {}", r.idempotency_key))
            .parse()
            .unwrap();
        assert!(
            covers <= r.version,
            "run {} sees version {}",
            r.idempotency_key,
            r.version
        );
        let c = covered.entry(r.key).or_default();
        assert!(covers > *c, "one key's runs are in order");
        *c = covers;
    }
    assert_eq!(seen, sums(&all), "every change ran once, none twice");
    assert_eq!(rt.hook_stats("audit").unwrap().duplicates_suppressed, 0);
    let history = rt.store().hook_history("audit").unwrap();
    assert_eq!((history.runs, history.dead_letters), (runs.len() as u64, 0));
}

/// Fails key 1 twice, then succeeds; always fails key 2; others succeed.
struct Flaky(Runs<Sum<i64>>);
impl ClusterHook for Flaky {
    type Model = Totals;
    const NAME: &'static str = "flaky";
    fn run(&self, t: &Trigger<'_, Totals>) -> Result<(), String> {
        record(&self.0, t);
        match *t.key {
            1 if t.attempt < 3 => Err(format!("503 on attempt {}", t.attempt)),
            2 => Err("the payment API said no".into()),
            3 if t.attempt == 1 => panic!("a bug in the hook"),
            _ => Ok(()),
        }
    }
    fn max_attempts(&self) -> u32 {
        4
    }
    fn backoff(&self, _: u32) -> Duration {
        Duration::from_millis(1)
    }
}

#[test]
fn failing_hooks_retry_then_dead_letter_while_other_keys_flow() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open_with(dir.path(), config()).unwrap();
    rt.add_model(Totals).unwrap();
    let runs: Runs<Sum<i64>> = Arc::default();
    rt.add_cluster_hook(Flaky(runs.clone())).unwrap();
    let hits: Vec<Hit> = (1..=10).map(|key| Hit { key, value: 5 }).collect();
    submit(&rt, &hits);
    settle::<Totals>(&rt, "flaky");
    // Later changes of other keys still run.
    submit(&rt, &[Hit { key: 9, value: 1 }]);
    settle::<Totals>(&rt, "flaky");

    let runs = runs.lock();
    let attempts = |key: u16| runs.iter().filter(|r| r.key == key).count();
    assert_eq!(attempts(1), 3, "two failures, then success");
    assert_eq!(attempts(2), 4, "every attempt fails");
    assert_eq!(attempts(3), 2, "a panic is a failed attempt");
    assert_eq!(attempts(9), 2, "key 9 ran for both changes");
    for key in 4..=10 {
        assert!(attempts(key) >= 1, "key {key} ran");
    }
    let dead = rt.store().hook_dead_letters("flaky").unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].reason, "the payment API said no");
    assert_eq!(dead[0].attempts, 4);
    assert!(
        dead[0].idempotency_key.starts_with("flaky/totals/2/"),
        "{}",
        dead[0].idempotency_key
    );
    let stats = rt.hook_stats("flaky").unwrap();
    assert_eq!(stats.dead_letters, 1);
    let history = rt.store().hook_history("flaky").unwrap();
    assert_eq!(
        (history.runs, history.retries, history.dead_letters),
        (10, 2 + 3 + 1, 1),
        "the recorded outcomes say the same"
    );
    assert_eq!(stats.failures, 2 + 4 + 1);
    assert_eq!(stats.retries, 2 + 3 + 1);
    assert_eq!(stats.runs, 10, "keys 1, 3..=10 and key 9 again");
}

/// Counts the runs of the peaks.
struct PeakAlert(Runs<Max<i64>>);
impl ClusterHook for PeakAlert {
    type Model = Peaks;
    const NAME: &'static str = "peak-alert";
    fn run(&self, t: &Trigger<'_, Peaks>) -> Result<(), String> {
        record(&self.0, t);
        Ok(())
    }
}

#[test]
fn no_hook_runs_for_a_write_that_changed_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open_with(dir.path(), config()).unwrap();
    rt.add_model(Peaks).unwrap();
    let runs: Runs<Max<i64>> = Arc::default();
    rt.add_cluster_hook(PeakAlert(runs.clone())).unwrap();
    submit(&rt, &[Hit { key: 1, value: 10 }]);
    settle::<Peaks>(&rt, "peak-alert");
    assert_eq!(runs.lock().len(), 1);
    // A smaller value into a Max changes nothing: no change, no run.
    submit(&rt, &[Hit { key: 1, value: 5 }, Hit { key: 1, value: 10 }]);
    settle::<Peaks>(&rt, "peak-alert");
    assert_eq!(runs.lock().len(), 1, "{:?}", runs.lock());
    submit(&rt, &[Hit { key: 1, value: 20 }]);
    settle::<Peaks>(&rt, "peak-alert");
    let runs = runs.lock();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1].state, Max(20));
}

/// Fires once a key has three distinct tags.
struct ThreeTags(Runs<GSet<i64>>);
impl ClusterHook for ThreeTags {
    type Model = Tags;
    const NAME: &'static str = "three-tags";
    const ONCE: bool = true;
    fn fires(&self, tags: &GSet<i64>) -> bool {
        tags.len() >= 3
    }
    fn run(&self, t: &Trigger<'_, Tags>) -> Result<(), String> {
        record(&self.0, t);
        Ok(())
    }
}

#[test]
fn a_threshold_hook_fires_once_per_key_even_when_redelivered() {
    let dir = tempfile::tempdir().unwrap();
    let runs: Runs<GSet<i64>> = Arc::default();
    {
        let rt = Runtime::open_with(dir.path(), config()).unwrap();
        rt.add_model(Tags).unwrap();
        rt.add_cluster_hook(ThreeTags(runs.clone())).unwrap();
        let mut rng = Rng(11);
        for _ in 0..40 {
            let hits: Vec<Hit> = (0..1 + rng.below(3))
                .map(|_| Hit {
                    key: rng.below(4) as u16,
                    value: rng.below(6) as i64,
                })
                .collect();
            submit(&rt, &hits);
            std::thread::sleep(Duration::from_millis(rng.below(5)));
        }
        settle::<Tags>(&rt, "three-tags");
        let runs = runs.lock();
        let mut keys: Vec<u16> = runs.iter().map(|r| r.key).collect();
        keys.sort_unstable();
        assert_eq!(keys, vec![0, 1, 2, 3], "once per key: {runs:?}");
        for r in runs.iter() {
            assert!(r.state.len() >= 3);
            assert!(r.idempotency_key.ends_with("/once"));
        }
    }
    // Every change delivered again (the hook's group forgotten): the
    // recorded outcomes skip them all.
    let rt = Runtime::open_with(dir.path(), config()).unwrap();
    rt.log()
        .reset_group(&hook_group("three-tags"), &changes_topic("tags"))
        .unwrap();
    rt.add_model(Tags).unwrap();
    rt.add_cluster_hook(ThreeTags(runs.clone())).unwrap();
    settle::<Tags>(&rt, "three-tags");
    assert_eq!(runs.lock().len(), 4, "no run again");
    let stats = rt.hook_stats("three-tags").unwrap();
    assert_eq!(stats.runs, 0);
    assert_eq!(stats.duplicates_suppressed, 4, "{stats:?}");
}

#[test]
fn node_hooks_see_every_change_with_a_state_at_least_as_new() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open_with(dir.path(), config()).unwrap();
    rt.add_model(Totals).unwrap();
    let seen: Arc<Mutex<BTreeMap<u16, (i64, i64)>>> = Arc::default();
    let s = seen.clone();
    rt.add_node_hook::<Totals>(move |key, delta, state| {
        let mut seen = s.lock();
        let (deltas, last) = seen.entry(*key).or_default();
        *deltas += delta.0;
        assert!(state.0 >= *deltas, "the state holds the change");
        *last = state.0;
    })
    .unwrap();
    let mut rng = Rng(3);
    let mut all = Vec::new();
    for _ in 0..20 {
        let hits: Vec<Hit> = (0..1 + rng.below(30))
            .map(|_| Hit {
                key: rng.below(6) as u16,
                value: 1 + rng.below(9) as i64,
            })
            .collect();
        submit(&rt, &hits);
        all.extend(hits);
    }
    rt.wait_caught_up::<Totals>(Duration::from_secs(30))
        .unwrap();
    let expected = sums(&all);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now: BTreeMap<u16, i64> = seen.lock().iter().map(|(k, (d, _))| (*k, *d)).collect();
        if now == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node hook saw {now:?}, expected {expected:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    for (key, (_, last)) in seen.lock().iter() {
        assert_eq!(*last, expected[key]);
    }
}

// ---- at least once through real process kills ----

const CHILD: &str = "ACCRETE_HOOKS_CHILD";

/// Appends each run, `key version state`, to a file (the "external
/// system"), synced before the run returns.
struct Journal(std::sync::Mutex<std::fs::File>);
impl ClusterHook for Journal {
    type Model = Totals;
    const NAME: &'static str = "journal";
    fn run(&self, t: &Trigger<'_, Totals>) -> Result<(), String> {
        use std::io::Write;
        let mut f = self.0.lock().unwrap();
        // One write per line: a kill cannot tear it (`writeln!` may issue
        // several writes, and a torn line would merge with the next run's).
        let line = format!(
            "{} {} {} {} {}\n",
            t.key, t.version, t.state.0, t.delta.0, t.idempotency_key
        );
        f.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
        f.sync_data().map_err(|e| e.to_string())
    }
}

fn child(dir: &str) {
    let dir = Path::new(dir);
    let rt = Runtime::open_with(dir.join("rt"), config()).expect("child: open");
    rt.add_model(Totals).unwrap();
    let journal = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("journal"))
        .unwrap();
    rt.add_cluster_hook(Journal(std::sync::Mutex::new(journal)))
        .unwrap();
    settle::<Totals>(&rt, "journal");
    rt.shutdown();
}

/// The cluster hook through SIGKILLs and aborts between its runs and its
/// commit: every key's final version ran (so every change was acted on);
/// duplicates are counted.
#[test]
fn cluster_hooks_run_at_least_once_through_kills() {
    if let Ok(dir) = std::env::var(CHILD) {
        return child(&dir);
    }
    for seed in seeds_with(
        "cluster_hooks_run_at_least_once_through_kills",
        "ACCRETE_HOOK_SEEDS",
        3,
    ) {
        let ctx = format!("seed {seed} (replay: ACCRETE_SEED={seed})");
        let mut rng = Rng(seed);
        let dir = tempfile::tempdir().unwrap();
        let mut all = Vec::new();
        let rounds = 3 + rng.below(4);
        let mut kills = 0;
        for round in 0..rounds {
            {
                let rt = Runtime::open_with(dir.path().join("rt"), config()).unwrap();
                let hits: Vec<Hit> = (0..1 + rng.below(800))
                    .map(|_| Hit {
                        key: rng.below(50) as u16,
                        value: 1 + rng.below(100) as i64,
                    })
                    .collect();
                submit(&rt, &hits);
                all.extend(hits);
            }
            let last = round + 1 == rounds;
            let mut cmd = Command::new(std::env::current_exe().unwrap());
            cmd.args([
                "cluster_hooks_run_at_least_once_through_kills",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, dir.path())
            .env_remove("ACCRETE_FAILPOINT")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
            let abort = !last && rng.chance(0.5);
            if abort {
                let at = HOOK_FAILPOINTS[rng.below(HOOK_FAILPOINTS.len() as u64) as usize];
                cmd.env("ACCRETE_FAILPOINT", format!("{at}:{}", 1 + rng.below(3)));
            }
            let mut child = cmd.spawn().unwrap();
            if last {
                let status = child.wait().unwrap();
                assert!(status.success(), "{ctx}: the last run failed: {status}");
            } else if abort {
                let status = child.wait().unwrap();
                kills += usize::from(!status.success());
            } else {
                std::thread::sleep(Duration::from_millis(rng.below(300)));
                let _ = child.kill();
                let _ = child.wait();
                kills += 1;
            }
        }
        // Final states and versions.
        let rt = Runtime::open_with(dir.path().join("rt"), config()).unwrap();
        let expected = sums(&all);
        let mut finals = BTreeMap::new();
        for (key, total) in &expected {
            let (version, state) = rt.get_versioned::<Totals>(key).unwrap().unwrap();
            assert_eq!(state.0, *total, "{ctx}: key {key}");
            finals.insert(*key, version);
        }
        let journal = std::fs::read_to_string(dir.path().join("journal")).unwrap_or_default();
        let mut ran: BTreeMap<(u16, u64), usize> = BTreeMap::new();
        // Per idempotency key: the key and the delta of its run.
        let mut runs_by_id: BTreeMap<String, (u16, i64)> = BTreeMap::new();
        for line in journal.lines() {
            let mut parts = line.split(' ');
            let key: u16 = parts.next().unwrap().parse().unwrap();
            let version: u64 = parts.next().unwrap().parse().unwrap();
            let state: i64 = parts.next().unwrap().parse().unwrap();
            let delta: i64 = parts.next().unwrap().parse().unwrap();
            let id = parts.next().unwrap().to_string();
            assert!(
                state <= expected[&key],
                "{ctx}: a run saw a state beyond the fold"
            );
            *ran.entry((key, version)).or_default() += 1;
            // A re-run repeats its idempotency key with the same delta.
            let first = *runs_by_id.entry(id.clone()).or_insert((key, delta));
            assert_eq!(
                first,
                (key, delta),
                "{ctx}: run {id} ran again with another delta"
            );
        }
        // Per key, the deltas of distinct runs add up to the state exactly:
        // no change's delta reached two runs, none reached no run.
        let mut delta_sums: BTreeMap<u16, i64> = BTreeMap::new();
        for (key, delta) in runs_by_id.values() {
            *delta_sums.entry(*key).or_default() += delta;
        }
        assert_eq!(
            delta_sums, expected,
            "{ctx}: per key, the deltas of distinct runs do not add up to the state"
        );
        for (key, version) in &finals {
            assert!(
                ran.contains_key(&(*key, *version)),
                "{ctx}: key {key}'s last change (version {version}) never ran the hook"
            );
        }
        let duplicates: usize = ran.values().map(|n| n - 1).sum();
        eprintln!(
            "{ctx}: {} events, {rounds} runs, {kills} killed, {} hook runs, {duplicates} duplicates",
            all.len(),
            ran.values().sum::<usize>()
        );
    }
}

/// A rebuild re-publishes every key with versions above the old ones: the
/// hook runs again for each (new idempotency keys), none is suppressed.
#[test]
fn after_a_rebuild_versions_keep_growing_and_hooks_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open_with(dir.path(), config()).unwrap();
    rt.add_model(Totals).unwrap();
    let runs: Runs<Sum<i64>> = Arc::default();
    rt.add_cluster_hook(Audit(runs.clone())).unwrap();
    for round in 0..5 {
        let hits: Vec<Hit> = (0..4)
            .map(|key| Hit {
                key,
                value: round + 1,
            })
            .collect();
        submit(&rt, &hits);
        settle::<Totals>(&rt, "audit");
    }
    let before: BTreeMap<u16, u64> = runs.lock().iter().map(|r| (r.key, r.version)).collect();
    assert_eq!(before.values().copied().collect::<Vec<_>>(), vec![5; 4]);
    rt.rebuild::<Totals>().unwrap();
    settle::<Totals>(&rt, "audit");
    let runs = runs.lock();
    for key in 0..4 {
        let (version, state) = rt.get_versioned::<Totals>(&key).unwrap().unwrap();
        assert_eq!(state, Sum(15));
        assert!(
            version > before[&key],
            "key {key}: version {version} after a rebuild"
        );
        assert!(
            runs.iter()
                .any(|r| r.key == key && r.version == version && r.state == state),
            "key {key} ran again after the rebuild"
        );
    }
    assert_eq!(rt.hook_stats("audit").unwrap().duplicates_suppressed, 0);
}
