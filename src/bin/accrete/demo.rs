//! `accrete demo`: the shop quickstart, written once. The backend is chosen
//! by flags: the embedded default (a data directory), or Kafka + MongoDB
//! (`--kafka`, `--mongodb`, `--config`). Both run the same scenario (events
//! delivered at least once and out of order, bytes that are no event, a
//! model added halfway through, a cluster hook) and the same checks against
//! the plain fold of the distinct events.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::domain::{
    BestSeller, LastSeen, PageVisitors, ProductSales, Sales, TopProducts, at_least_once,
    shop_events,
};
use accrete::event::EventId;
use accrete::hooks::{ClusterHook, HookStats};
use accrete::model::ReadModel;
use accrete::runtime::{ModelStats, Runtime};
use accrete::store::DeadLetter;

use crate::{Fallible, MODELS, best_seller_units, check, fold, progress};

/// What a backend needs of a model's state to serve it: a MongoDB pushdown
/// on Kafka + MongoDB, nothing on the embedded default alone.
#[cfg(all(feature = "kafka", feature = "mongodb"))]
pub(crate) trait Servable: accrete::store::pushdown::Pushdown {}
#[cfg(all(feature = "kafka", feature = "mongodb"))]
impl<T: accrete::store::pushdown::Pushdown> Servable for T {}
/// What a backend needs of a model's state to serve it.
#[cfg(not(all(feature = "kafka", feature = "mongodb")))]
pub(crate) trait Servable {}
#[cfg(not(all(feature = "kafka", feature = "mongodb")))]
impl<T> Servable for T {}

/// Where the demo runs.
pub(crate) enum Deployment {
    /// The embedded log and store in a directory.
    Embedded {
        rt: Runtime,
        dir: PathBuf,
        /// A fresh directory, deleted afterwards.
        temporary: bool,
    },
    /// One node of a Kafka + MongoDB cluster.
    #[cfg(all(feature = "kafka", feature = "mongodb"))]
    Cluster(accrete::cluster::Node),
}

impl Deployment {
    fn add_model<M: ReadModel>(&self, model: M) -> accrete::Result<()>
    where
        M::State: Servable,
    {
        match self {
            Deployment::Embedded { rt, .. } => rt.add_model(model),
            #[cfg(all(feature = "kafka", feature = "mongodb"))]
            Deployment::Cluster(c) => c.add_model(model),
        }
    }

    fn add_cluster_hook<H: ClusterHook>(&self, hook: H) -> accrete::Result<()>
    where
        <H::Model as ReadModel>::State: Servable,
    {
        match self {
            Deployment::Embedded { rt, .. } => rt.add_cluster_hook(hook),
            #[cfg(all(feature = "kafka", feature = "mongodb"))]
            Deployment::Cluster(c) => c.add_cluster_hook(hook),
        }
    }

    fn forward<'a, E: serde::Serialize + 'a, K: AsRef<[u8]>>(
        &self,
        events: impl IntoIterator<Item = (K, i64, &'a E, EventId)>,
    ) -> accrete::Result<usize> {
        match self {
            Deployment::Embedded { rt, .. } => rt.forward(events),
            #[cfg(all(feature = "kafka", feature = "mongodb"))]
            Deployment::Cluster(c) => c.forward(events),
        }
    }

    fn partitions(&self) -> u32 {
        match self {
            Deployment::Embedded { rt, .. } => rt.config().partitions,
            #[cfg(all(feature = "kafka", feature = "mongodb"))]
            Deployment::Cluster(c) => c.config().partitions,
        }
    }

    /// Appends bytes that are no event at all to an events partition, as a
    /// buggy or hostile producer would.
    /// Bytes that are no event at all, submitted as one.
    fn submit_garbage(&self, key: &str) -> Fallible<()> {
        const GARBAGE: &[u8] = b"\xff\xfegarbage";
        match self {
            Deployment::Embedded { rt, .. } => {
                rt.submit_encoded(key, 0, GARBAGE)?;
            }
            #[cfg(all(feature = "kafka", feature = "mongodb"))]
            Deployment::Cluster(c) => {
                c.submit_encoded(key, 0, GARBAGE)?;
            }
        }
        Ok(())
    }

    /// Records of the events topic the model has folded, over all
    /// partitions.
    fn folded(&self, model: &str) -> accrete::Result<u64> {
        match self {
            Deployment::Embedded { rt, .. } => Ok(rt
                .status(model)?
                .partitions
                .iter()
                .map(|p| p.committed)
                .sum()),
            #[cfg(all(feature = "kafka", feature = "mongodb"))]
            Deployment::Cluster(c) => c.folded(model),
        }
    }

    /// Waits until what is folded is also readable everywhere it is read
    /// (a node's replica).
    #[cfg_attr(
        not(all(feature = "kafka", feature = "mongodb")),
        allow(clippy::extra_unused_type_parameters)
    )]
    fn settle<M: ReadModel>(&self) -> accrete::Result<()> {
        match self {
            Deployment::Embedded { .. } => Ok(()),
            #[cfg(all(feature = "kafka", feature = "mongodb"))]
            Deployment::Cluster(c) => c.wait_caught_up::<M>(Duration::from_secs(120)).map(|_| ()),
        }
    }

    fn stored<M: ReadModel>(&self) -> Fallible<BTreeMap<M::Key, M::State>> {
        let mut out = BTreeMap::new();
        let each = |k, v| {
            out.insert(k, v);
            true
        };
        match self {
            Deployment::Embedded { rt, .. } => rt.scan::<M>(each)?,
            #[cfg(all(feature = "kafka", feature = "mongodb"))]
            Deployment::Cluster(c) => c.scan::<M>(each)?,
        }
        Ok(out)
    }

    fn get<M: ReadModel>(&self, key: &M::Key) -> accrete::Result<Option<M::State>> {
        match self {
            Deployment::Embedded { rt, .. } => rt.get::<M>(key),
            #[cfg(all(feature = "kafka", feature = "mongodb"))]
            Deployment::Cluster(c) => c.get::<M>(key),
        }
    }

    fn dead_letters<M: ReadModel>(&self) -> accrete::Result<Vec<DeadLetter>> {
        match self {
            Deployment::Embedded { rt, .. } => rt.dead_letters::<M>(),
            #[cfg(all(feature = "kafka", feature = "mongodb"))]
            Deployment::Cluster(c) => c.dead_letters::<M>(),
        }
    }

    fn hook_lag(&self, hook: &str) -> accrete::Result<u64> {
        match self {
            Deployment::Embedded { rt, .. } => rt.hook_lag(hook),
            #[cfg(all(feature = "kafka", feature = "mongodb"))]
            Deployment::Cluster(c) => c.hook_lag(hook),
        }
    }

    fn hook_stats(&self, hook: &str) -> accrete::Result<HookStats> {
        match self {
            Deployment::Embedded { rt, .. } => rt.hook_stats(hook),
            #[cfg(all(feature = "kafka", feature = "mongodb"))]
            Deployment::Cluster(c) => c.hook_stats(hook),
        }
    }

    fn stats(&self, model: &str) -> accrete::Result<ModelStats> {
        match self {
            Deployment::Embedded { rt, .. } => rt.stats(model),
            #[cfg(all(feature = "kafka", feature = "mongodb"))]
            Deployment::Cluster(c) => c.stats(model),
        }
    }

    /// A check only one backend has: a node's replica of product_sales
    /// equals what MongoDB holds.
    fn extra_checks(&self, _sales: &BTreeMap<String, Sales>) -> Fallible<bool> {
        match self {
            Deployment::Embedded { .. } => Ok(true),
            #[cfg(all(feature = "kafka", feature = "mongodb"))]
            Deployment::Cluster(c) => {
                let replica = c.replica_snapshot::<ProductSales>()?;
                let held: Vec<(String, Sales)> =
                    _sales.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                Ok(check(
                    "product_sales",
                    replica == held,
                    "in this node's replica equals MongoDB",
                ))
            }
        }
    }

    fn finish(self) -> Fallible<()> {
        match self {
            Deployment::Embedded { rt, dir, temporary } => {
                rt.shutdown();
                drop(rt);
                if temporary {
                    std::fs::remove_dir_all(&dir)?;
                    println!(
                        "\nKeep a run with `accrete demo --dir DIR`, then try `accrete inspect --dir DIR --key sku-001`"
                    );
                    println!("and `accrete rebuild --dir DIR --model product_sales`.");
                }
            }
            #[cfg(all(feature = "kafka", feature = "mongodb"))]
            Deployment::Cluster(c) => {
                println!(
                    "\nRun more nodes on the same topic with `accrete node --config FILE` (see README); \
                     the demo's topic and database are left in place for inspection."
                );
                c.shutdown();
            }
        }
        Ok(())
    }
}

/// The events per `forward` call.
const CHUNK: usize = 20_000;

/// Runs the demo on `at`: `n` distinct events, a fraction `duplicates` of
/// them delivered more than once, shuffled.
pub(crate) fn run(at: Deployment, n: usize, duplicates: f64, seed: u64) -> Fallible<ExitCode> {
    let events = shop_events(n, seed);
    let delivery = at_least_once(n, duplicates, 2_000, seed);
    let started = Instant::now();

    // Three models run from the start; the fourth is added halfway through,
    // while events keep arriving: a backfill, with no two-phase deploy.
    at.add_model(ProductSales)?;
    at.add_model(PageVisitors)?;
    at.add_model(LastSeen)?;
    // A cluster hook: announce each product once when it passes a mark.
    let best_seller = BestSeller {
        units: best_seller_units(n),
        ..BestSeller::default()
    };
    let announced = best_seller.announced.clone();
    at.add_cluster_hook(best_seller)?;
    let mut garbage = 0_u64;
    let mut backfilled = false;
    let bar = progress(delivery.len() as u64, "submitting");
    for (chunk_no, chunk) in delivery.chunks(CHUNK).enumerate() {
        // The upstream's deliveries, with the ids the events got there.
        at.forward(chunk.iter().map(|(index, id)| {
            let e = &events[*index];
            (e.routing_key(), e.at_ms(), e, *id)
        }))?;
        if chunk_no == 1 {
            // Bad input: bytes that are no event at all, one per partition
            // (on average: they go where their keys hash).
            for p in 0..at.partitions() {
                at.submit_garbage(&format!("garbage-{p}"))?;
                garbage += 1;
            }
        }
        bar.inc(chunk.len() as u64);
        if chunk_no == delivery.len() / CHUNK / 2 {
            at.add_model(TopProducts)?;
            backfilled = true;
        }
    }
    if !backfilled {
        at.add_model(TopProducts)?;
    }
    bar.finish();
    let records = delivery.len() as u64 + garbage;
    let bar = progress(records * MODELS.len() as u64, "folding");
    loop {
        let folded = MODELS
            .iter()
            .map(|m| at.folded(m))
            .collect::<accrete::Result<Vec<u64>>>()?;
        bar.set_position(folded.iter().sum());
        if folded.iter().all(|f| *f >= records) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    at.settle::<ProductSales>()?;
    bar.finish();
    let took = started.elapsed();

    let copies = delivery.len() - n;
    println!(
        "\n{n} distinct events, {copies} duplicate deliveries, shuffled in windows of 2000, {garbage} undecodable \
         records;\nsubmitted live and folded by four read models in {:.1}s\n",
        took.as_secs_f64()
    );

    // The read models, next to the plain left fold of the distinct events.
    let mut ok = true;
    let sales = at.stored::<ProductSales>()?;
    let expected = fold(&ProductSales, &events);
    let mut best: Vec<(&String, &Sales)> = sales.iter().collect();
    best.sort_by_key(|(_, s)| std::cmp::Reverse(s.revenue_cents.0));
    println!("product_sales (top 5 by revenue)      orders    units      revenue");
    for (product, s) in best.iter().take(5) {
        println!(
            "  {product:<34} {:>7} {:>8} {:>12.2}",
            s.orders.0,
            s.units.0,
            s.revenue_cents.0 as f64 / 100.0
        );
    }
    ok &= check(
        "product_sales",
        sales == expected,
        "equals the plain fold, exactly (each order counted once)",
    );

    let visitors = at.stored::<PageVisitors>()?;
    let expected = fold(&PageVisitors, &events);
    let mut pages: Vec<(&String, f64)> = visitors.iter().map(|(p, h)| (p, h.estimate())).collect();
    pages.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!("\npage_visitors (top 3)                 distinct visitors (HyperLogLog, ±1.6%)");
    for (page, estimate) in pages.iter().take(3) {
        println!("  {page:<34} {estimate:>8.0}");
    }
    ok &= check(
        "page_visitors",
        visitors == expected,
        "equals the plain fold, exactly (duplicates are harmless)",
    );

    let top = at.get::<TopProducts>(&())?.unwrap_or_default();
    let expected = fold(&TopProducts, &events).remove(&()).unwrap_or_default();
    println!("\ntop_products (added halfway: a backfill while events arrived)");
    for (product, units) in top.top().iter().take(5) {
        println!("  {product:<34} ≥ {units} units");
    }
    ok &= check(
        "top_products",
        top.within_bound(&expected),
        &format!(
            "within its error bound of the plain fold (± {} units)",
            top.error_bound()
        ),
    );

    let last = at.stored::<LastSeen>()?;
    let expected = fold(&LastSeen, &events);
    println!(
        "\nlast_seen: {} visitors, e.g. visitor 42 last viewed {:?}",
        last.len(),
        last.get(&42).and_then(|l| l.get())
    );
    ok &= check(
        "last_seen",
        last == expected,
        "equals the plain fold, exactly (latest by event time, not arrival)",
    );
    ok &= at.extra_checks(&sales)?;

    // The hook: once per product that passed the mark, no more, no less.
    let deadline = Instant::now() + Duration::from_secs(120);
    while at.hook_lag(BestSeller::HOOK)? > 0 {
        if Instant::now() > deadline {
            return Err("the best_seller hook did not catch up within 120 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let announced = announced.lock().map_err(|_| "poisoned")?.clone();
    let mut passed: Vec<&String> = sales
        .iter()
        .filter(|(_, s)| s.units.0 >= best_seller_units(n))
        .map(|(p, _)| p)
        .collect();
    passed.sort();
    let mut fired: Vec<&String> = announced.iter().map(|(p, _)| p).collect();
    fired.sort();
    let stats = at.hook_stats(BestSeller::HOOK)?;
    println!(
        "\nbest_seller hook (fires once per product at {} units): {} announcements, \
         {} changes coalesced, change-to-hook latency median {:.0} ms, p99 {:.0} ms",
        best_seller_units(n),
        announced.len(),
        stats.coalesced,
        stats.latency_ms.0,
        stats.latency_ms.1
    );
    if let Some((product, key)) = announced.first() {
        println!("  e.g. {product} (idempotency key {key})");
    }
    ok &= check(
        "best_seller",
        fired == passed,
        "announced exactly the products past the mark, each once",
    );

    let dead = at.dead_letters::<ProductSales>()?;
    println!(
        "\ndead letters of product_sales: {} (undecodable records and zero-unit orders), e.g.",
        dead.len()
    );
    for d in dead.iter().take(2) {
        println!("  {}: {}", d.event, d.reason);
    }
    println!("\nwhat each model's pipeline did here:");
    for m in MODELS {
        let s = at.stats(m)?;
        println!(
            "  {m:<14} {} records read, {} batches, {} store writes ({:.3} per record), {} changes",
            s.events,
            s.batches,
            s.writes,
            s.writes as f64 / s.events.max(1) as f64,
            s.changes
        );
    }
    at.finish()?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
