//! `accrete`: the command-line tool.
//!
//! - `accrete demo`: the quickstart, on the embedded default or (with
//!   `--kafka`/`--mongodb`) on Kafka + MongoDB: one scenario, see `demo.rs`.
//! - `accrete node`: one node of a Kafka + MongoDB cluster.
//! - `accrete inspect`: a model's lag, dead letters, and a key's state.
//! - `accrete rebuild`: re-fold a model from the beginning of the log, with
//!   a progress bar.

use accrete::Deployment;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::domain::{BestSeller, LastSeen, PageVisitors, ProductSales, TopProducts};
use accrete::model::{Deltas, ReadModel};
use accrete::monoids::{Monoid, Semigroup};
use accrete::runtime::{Config, Runtime, Status};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(
    name = "accrete",
    version,
    about = "Read models as commutative monoids: exactly-once effect over at-least-once delivery."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the shop demo: events delivered at least once and out of order,
    /// bytes that are no event, four read models (one added halfway), a
    /// cluster hook, a plain-fold check. On the embedded default, or on
    /// Kafka + MongoDB with `--kafka` and `--mongodb` (or `--config`): the
    /// same scenario and checks.
    Demo {
        /// Where to keep the log and the store (default: a fresh temporary
        /// directory, deleted afterwards).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// How many distinct events (default: 300 000 embedded; 20 000 on
        /// Kafka + MongoDB, where the test servers of `scripts/servers.sh`,
        /// a MongoDB-protocol server written in Python, fold a few hundred
        /// forwarded events a second).
        #[arg(long)]
        events: Option<usize>,
        /// The fraction of events the upstream delivers more than once.
        #[arg(long, default_value_t = 0.15)]
        duplicates: f64,
        /// The random seed (the same seed gives the same events).
        #[arg(long, default_value_t = 2026)]
        seed: u64,
        /// Run on Kafka + MongoDB instead of the embedded default: the
        /// brokers, `host:port[,host:port…]` (needs the features `kafka` and
        /// `mongodb`).
        #[arg(long, requires = "mongodb")]
        kafka: Option<String>,
        /// The MongoDB URI, with `--kafka`.
        #[arg(long, requires = "kafka")]
        mongodb: Option<String>,
        /// A node configuration file (TOML) for the Kafka + MongoDB run;
        /// `--kafka` and `--mongodb` override its addresses.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run one node of a Kafka + MongoDB cluster serving the demo's read
    /// models, until interrupted. Start several (on one machine or many)
    /// with the same configuration: they share the partitions.
    Node {
        /// The node configuration file (TOML); environment variables
        /// (`ACCRETE_KAFKA_BROKERS`, `ACCRETE_MONGODB_URI`, …) override it.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Show a demo model's progress, dead letters, and optionally a key.
    Inspect {
        /// The data directory of a demo run (`accrete demo --dir DIR`).
        #[arg(long)]
        dir: PathBuf,
        /// The read model.
        #[arg(long, default_value = "product_sales")]
        model: String,
        /// A key to show (a product like `sku-001` for product_sales).
        #[arg(long)]
        key: Option<String>,
    },
    /// Rebuild a demo model from the beginning of the log, showing progress.
    Rebuild {
        /// The data directory of a demo run.
        #[arg(long)]
        dir: PathBuf,
        /// The read model.
        #[arg(long, default_value = "product_sales")]
        model: String,
    },
}

/// The demo's distinct events, embedded.
const DEMO_EVENTS: usize = 300_000;
/// The demo's distinct events on Kafka + MongoDB.
const CLUSTER_DEMO_EVENTS: usize = 20_000;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo {
            kafka: Some(kafka),
            mongodb: Some(mongodb),
            config,
            events,
            duplicates,
            seed,
            ..
        } => cluster::demo(
            config.as_deref(),
            Some((&kafka, &mongodb)),
            events.unwrap_or(CLUSTER_DEMO_EVENTS),
            duplicates,
            seed,
        ),
        Command::Demo {
            config: Some(config),
            events,
            duplicates,
            seed,
            ..
        } => cluster::demo(
            Some(&config),
            None,
            events.unwrap_or(CLUSTER_DEMO_EVENTS),
            duplicates,
            seed,
        ),
        Command::Demo {
            dir,
            events,
            duplicates,
            seed,
            ..
        } => demo(dir, events.unwrap_or(DEMO_EVENTS), duplicates, seed),
        Command::Node { config } => cluster::node(config.as_deref()),
        Command::Inspect { dir, model, key } => inspect(&dir, &model, key.as_deref()),
        Command::Rebuild { dir, model } => rebuild(&dir, &model),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type Fallible<T> = Result<T, Box<dyn std::error::Error>>;

mod cluster;
mod demo;
mod domain;

/// The demo's best_seller hook announces products at this many units: 1 000
/// for the default 300 000 events, so that about ten products pass it.
pub(crate) fn best_seller_units(events: usize) -> u64 {
    (events as u64 / 300).max(1)
}

const MODELS: [&str; 4] = [
    ProductSales::NAME,
    PageVisitors::NAME,
    TopProducts::NAME,
    LastSeen::NAME,
];

pub(crate) fn progress(total: u64, message: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>24} [{bar:30}] {pos}/{len} events ({per_sec}, eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(message.to_string());
    bar
}

/// Waits until every named model has caught up, showing their total lag.
fn follow(rt: &Runtime, models: &[&str], message: &str) -> Fallible<()> {
    let total = |rt: &Runtime| -> Fallible<(u64, u64)> {
        let mut done = 0;
        let mut all = 0;
        for m in models {
            let s: Status = rt.status(m)?;
            done += s.partitions.iter().map(|p| p.committed).sum::<u64>();
            all += s.partitions.iter().map(|p| p.end).sum::<u64>();
        }
        Ok((done, all))
    };
    let (_, all) = total(rt)?;
    let bar = progress(all, message);
    loop {
        let (done, all) = total(rt)?;
        bar.set_length(all);
        bar.set_position(done);
        if done == all {
            bar.finish();
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The demo on the embedded default, in `dir` or a fresh temporary
/// directory.
fn demo(dir: Option<PathBuf>, n: usize, duplicates: f64, seed: u64) -> Fallible<ExitCode> {
    let (dir, temporary) = match dir {
        Some(d) => (d, false),
        None => (tempfile_dir()?, true),
    };
    println!(
        "accrete demo: a shop's events, delivered at least once and out of order, folded by four read models"
    );
    println!("data directory: {}\n", dir.display());
    let rt = Runtime::open_with(&dir, Config::default())?;
    let ok = demo::run(&rt, n, duplicates, seed, |_| Ok(true))?;
    rt.shutdown();
    drop(rt);
    if temporary {
        std::fs::remove_dir_all(&dir)?;
        println!(
            "\nKeep a run with `accrete demo --dir DIR`, then try `accrete inspect --dir DIR --key sku-001`"
        );
        println!("and `accrete rebuild --dir DIR --model product_sales`.");
    }
    Ok(exit_code(ok))
}

/// Success when every check passed.
pub(crate) fn exit_code(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

pub(crate) fn check(model: &str, ok: bool, what: &str) -> bool {
    println!("  {} {model} {what}", if ok { "✓" } else { "✗ MISMATCH:" });
    ok
}

/// The oracle: a plain left fold of the distinct events.
pub(crate) fn fold<M: ReadModel>(model: &M, events: &[M::Event]) -> BTreeMap<M::Key, M::State> {
    let mut out: BTreeMap<M::Key, M::State> = BTreeMap::new();
    let mut deltas = Deltas::new();
    for e in events {
        deltas.clear();
        if model.project(e, &mut deltas).is_ok() {
            for (k, d) in deltas.drain() {
                out.entry(k).or_insert_with(M::State::identity).combine(&d);
            }
        }
    }
    out.retain(|_, v| !v.is_identity());
    out
}

fn tempfile_dir() -> Fallible<PathBuf> {
    let dir = std::env::temp_dir().join(format!("accrete-demo-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(dir)
}

fn open_existing(dir: &Path) -> Fallible<Runtime> {
    open_existing_as(dir, false)
}

/// Opens a data directory: read-only to look at it (works while a service
/// uses it), or to write (the directory is locked).
fn open_existing_as(dir: &Path, read_only: bool) -> Fallible<Runtime> {
    if !dir.join("state.redb").exists() {
        return Err(format!(
            "{} holds no accrete data; run `accrete demo --dir {}` first",
            dir.display(),
            dir.display()
        )
        .into());
    }
    if read_only {
        return Ok(Runtime::open_read_only(dir, Config::default())?);
    }
    Ok(Runtime::open(dir)?)
}

fn known(model: &str) -> Fallible<()> {
    if MODELS.contains(&model) {
        Ok(())
    } else {
        Err(format!(
            "unknown read model `{model}`; the demo has {}",
            MODELS.join(", ")
        )
        .into())
    }
}

fn inspect(dir: &Path, model: &str, key: Option<&str>) -> Fallible<ExitCode> {
    known(model)?;
    let rt = open_existing_as(dir, true)?;
    let status = rt.status(model)?;
    println!(
        "read model `{model}`: {}",
        if status.caught_up() {
            "caught up"
        } else {
            "catching up"
        }
    );
    println!("  partition  committed        end    lag");
    for p in &status.partitions {
        println!(
            "  {:>9} {:>10} {:>10} {:>6}",
            p.partition, p.committed, p.end, p.lag
        );
    }
    let dead = rt.store().dead_letters(model)?;
    println!("dead letters: {}", dead.len());
    for d in dead.iter().take(10) {
        println!("  {}: {}", d.event, d.reason);
    }
    if model == ProductSales::NAME {
        let hook = BestSeller::HOOK;
        let lag = rt.hook_lag_of(hook, model)?;
        let h = rt.store().hook_history(hook)?;
        println!(
            "cluster hook `{hook}`: {} runs, {} retries, {} dead letters, {lag} changes not yet handled; \
             change-to-hook latency median {:.0} ms, p99 {:.0} ms",
            h.runs, h.retries, h.dead_letters, h.latency_ms.0, h.latency_ms.1
        );
        for d in rt.store().hook_dead_letters(hook)?.iter().take(10) {
            println!(
                "  {}: {} ({} attempts)",
                d.idempotency_key, d.reason, d.attempts
            );
        }
    }
    if let Some(key) = key {
        let shown = match model {
            "product_sales" => rt
                .get_versioned::<ProductSales>(&key.to_string())?
                .map(|(v, s)| format!("version {v}: {s:?}")),
            "page_visitors" => rt
                .get_versioned::<PageVisitors>(&key.to_string())?
                .map(|(v, h)| format!("version {v}: about {:.0} distinct visitors", h.estimate())),
            "last_seen" => {
                let visitor: u64 = key
                    .parse()
                    .map_err(|_| format!("last_seen keys are visitor numbers, not `{key}`"))?;
                rt.get_versioned::<LastSeen>(&visitor)?
                    .map(|(v, l)| format!("version {v}: {:?}", l.get()))
            }
            _ => rt
                .get_versioned::<TopProducts>(&())?
                .map(|(v, t)| format!("version {v}: {:?}", t.top())),
        };
        println!("key {key}: {}", shown.unwrap_or_else(|| "no state".into()));
    }
    Ok(ExitCode::SUCCESS)
}

fn rebuild(dir: &Path, model: &str) -> Fallible<ExitCode> {
    known(model)?;
    let rt = open_existing(dir)?;
    let started = Instant::now();
    match model {
        "product_sales" => {
            rt.add_model(ProductSales)?;
            rt.rebuild::<ProductSales>()?;
        }
        "page_visitors" => {
            rt.add_model(PageVisitors)?;
            rt.rebuild::<PageVisitors>()?;
        }
        "last_seen" => {
            rt.add_model(LastSeen)?;
            rt.rebuild::<LastSeen>()?;
        }
        _ => {
            rt.add_model(TopProducts)?;
            rt.rebuild::<TopProducts>()?;
        }
    }
    follow(&rt, &[model], &format!("rebuilding {model}"))?;
    rt.shutdown();
    println!(
        "rebuilt `{model}` from the beginning of the log in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
