//! The oracle test with real process kills.
//!
//! The parent writes events to the embedded log on disk (natively, and as
//! upstream copies carrying their original ids), then runs the runtime in a
//! child process — this same test binary, re-executed — and kills it: at a
//! failpoint (`ACCRETE_FAILPOINT`: abort before the store write, between
//! the store write and the change publication, between publication and the
//! offset commit, after the commit, inside an operator's rebuild) or with
//! SIGKILL at a random moment. It
//! restarts the child, appending more events between runs, until a run
//! finishes. The state in the store must then equal the plain left fold of
//! the distinct events, exactly, and every version of every key must be on
//! the changes topic.

mod common;

use accrete::Deployment;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use accrete::event::EventId;
use accrete::log::{EmbeddedLog, Log, NewRecord, partition_for};
use accrete::runtime::{Config, Runtime};
use common::*;

const CHILD: &str = "ACCRETE_CRASH_CHILD";

fn config(partitions: u32, batch_size: usize, workers: usize) -> Config {
    Config {
        partitions,
        batch_size,
        workers,
        flush_interval: Duration::from_millis(1),
        max_retry_backoff: Duration::from_millis(5),
        ..Config::default()
    }
}

/// The child: run the three models until they have folded the whole log.
fn child(dir: &str) {
    let arg = |name: &str| std::env::var(name).unwrap().parse::<usize>().unwrap();
    let cfg = config(
        arg("ACCRETE_CRASH_PARTITIONS") as u32,
        arg("ACCRETE_CRASH_BATCH"),
        arg("ACCRETE_CRASH_WORKERS"),
    );
    let rt = Runtime::open_with(dir, cfg).expect("child: open");
    rt.add_model(Balances).unwrap();
    rt.add_model(Receipts).unwrap();
    rt.add_model(Visitors).unwrap();
    if std::env::var_os("ACCRETE_CRASH_REBUILD").is_some() {
        // An operator's rebuild, killed midway when the plan says so.
        rt.rebuild::<Balances>().unwrap();
    }
    let timeout = Duration::from_secs(60);
    rt.wait_caught_up::<Balances>(timeout).unwrap();
    rt.wait_caught_up::<Receipts>(timeout).unwrap();
    rt.wait_caught_up::<Visitors>(timeout).unwrap();
    rt.shutdown();
}

fn append(dir: &Path, cfg: &Config, events: &[Payment], delivery: &[(usize, Option<EventId>)]) {
    let log = EmbeddedLog::open(dir.join("log")).unwrap();
    log.create_topic(&cfg.events_topic, cfg.partitions).unwrap();
    for (i, origin) in delivery {
        let e = &events[*i];
        let key = e.from.to_le_bytes();
        let payload = accrete::event::encode(e).unwrap();
        let record = NewRecord {
            key: &key,
            timestamp: e.at_ms,
            payload: &payload,
            origin: *origin,
        };
        log.append(
            &cfg.events_topic,
            partition_for(&key, cfg.partitions),
            &[record],
        )
        .unwrap();
    }
}

/// One seed: returns how many times the child was killed.
fn run(seed: u64) -> usize {
    let mut rng = Rng(seed);
    let cfg = config(
        1 + rng.below(6) as u32,
        1 + rng.below(200) as usize,
        1 + rng.below(3) as usize,
    );
    let n = 100 + rng.below(500) as usize;
    let accounts = 1 + rng.below(30) as u16;
    let events = payments(&mut rng, n, accounts);
    let delivery = at_least_once(&mut rng, events.len(), 0.4);
    let ctx = format!("seed {seed}: {n} events, {cfg:?}");

    let dir = tempfile::tempdir().unwrap();
    let (first, rest) = delivery.split_at(delivery.len() / 2);
    append(dir.path(), &cfg, &events, first);

    let exe = std::env::current_exe().unwrap();
    let mut kills = 0;
    let mut rebuilds = 0;
    let mut rest = Some(rest);
    let mut last_stderr = String::new();
    for attempt in 0.. {
        if attempt == 40 {
            let kept = dir.keep();
            panic!(
                "{ctx}: the child never finished; its last run:\n{last_stderr}\nits data is kept in {}; run the \
                 child by hand: {CHILD}={} ACCRETE_CRASH_PARTITIONS={} ACCRETE_CRASH_BATCH={} ACCRETE_CRASH_WORKERS={} \
                 {} crash_recovery_matches_the_oracle --exact --nocapture",
                kept.display(),
                kept.display(),
                cfg.partitions,
                cfg.batch_size,
                cfg.workers,
                exe.display()
            );
        }
        let mut cmd = Command::new(&exe);
        cmd.args([
            "crash_recovery_matches_the_oracle",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, dir.path())
        .env("ACCRETE_CRASH_PARTITIONS", cfg.partitions.to_string())
        .env("ACCRETE_CRASH_BATCH", cfg.batch_size.to_string())
        .env("ACCRETE_CRASH_WORKERS", cfg.workers.to_string())
        .env_remove("ACCRETE_FAILPOINT")
        .env_remove("ACCRETE_CRASH_REBUILD")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // The last attempts run clean, so the seed always finishes.
        let plan = attempt < 8 && rng.chance(0.8);
        let sigkill = plan && rng.chance(0.3);
        // Some runs rebuild `balances` (and may be killed inside it).
        let rebuild = rng.chance(0.25);
        rebuilds += usize::from(rebuild);
        if rebuild {
            cmd.env("ACCRETE_CRASH_REBUILD", "1");
        }
        if plan && !sigkill {
            cmd.env("ACCRETE_FAILPOINT", common::failpoint(&mut rng, rebuild, 6));
        }
        let mut child = cmd.spawn().unwrap();
        if sigkill {
            std::thread::sleep(Duration::from_millis(rng.below(60)));
            let _ = child.kill(); // SIGKILL
        }
        let output = child.wait_with_output().unwrap();
        let status = output.status;
        last_stderr = format!(
            "{status}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if let Some(rest) = rest.take() {
            // Live events arrive between runs.
            append(dir.path(), &cfg, &events, rest);
            kills += usize::from(!status.success());
            continue;
        }
        if status.success() {
            break;
        }
        kills += 1;
    }

    let rt = Runtime::open_with(dir.path(), cfg.clone()).unwrap();
    let ctx = format!("{ctx}, after {kills} kills");
    assert_matches_the_oracle(&rt, &events, &ctx);

    assert_every_change_published(&rt, rt.log().as_ref(), rebuilds, &ctx);
    assert_eq!(
        rt.dead_letters::<Balances>().unwrap().len(),
        events.iter().filter(|e| e.cents == 0).count(),
        "{ctx}"
    );
    kills
}

#[test]
fn crash_recovery_matches_the_oracle() {
    if let Ok(dir) = std::env::var(CHILD) {
        child(&dir);
        return;
    }
    let started = Instant::now();
    let mut kills = 0;
    let seeds = seeds("crash", 40);
    for &seed in &seeds {
        let result = std::panic::catch_unwind(|| run(seed));
        match result {
            Ok(k) => kills += k,
            Err(panic) => {
                eprintln!("FAILED: replay with ACCRETE_SEED={seed} cargo test --test crash");
                std::panic::resume_unwind(panic);
            }
        }
    }
    eprintln!(
        "crash: {} seeds, {kills} child processes killed, {:?}",
        seeds.len(),
        started.elapsed()
    );
    assert!(
        kills > 0 || seeds.len() < 5,
        "the crash test killed no child: the failpoints are not reached"
    );
}
