//! `accrete demo`: the shop quickstart, written once. The backend is chosen
//! by flags: the embedded default (a data directory), or Kafka + MongoDB
//! (`--kafka`, `--mongodb`, `--config`). Both run the same scenario (events
//! delivered at least once and out of order, bytes that are no event, a
//! model added halfway through, a cluster hook) and the same checks against
//! the plain fold of the distinct events.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::domain::{
    BestSeller, LastSeen, PageVisitors, ProductSales, Sales, TopProducts, at_least_once,
    shop_events,
};
use accrete::model::ReadModel;
use accrete::{Deployment, Serves};

use crate::{Fallible, MODELS, best_seller_units, check, fold, progress};

/// A deployment that can serve the shop's four read models: the embedded
/// default, or a Kafka + MongoDB node.
pub(crate) trait Shop:
    Deployment
    + Serves<<ProductSales as ReadModel>::State>
    + Serves<<PageVisitors as ReadModel>::State>
    + Serves<<LastSeen as ReadModel>::State>
    + Serves<<TopProducts as ReadModel>::State>
{
}

impl<D> Shop for D where
    D: Deployment
        + Serves<<ProductSales as ReadModel>::State>
        + Serves<<PageVisitors as ReadModel>::State>
        + Serves<<LastSeen as ReadModel>::State>
        + Serves<<TopProducts as ReadModel>::State>
{
}

/// Records of the events topic the model has folded, over all partitions.
fn folded(at: &impl Deployment, model: &str) -> accrete::Result<u64> {
    Ok(at
        .status(model)?
        .partitions
        .iter()
        .map(|p| p.committed)
        .sum())
}

fn stored<M: ReadModel>(at: &impl Deployment) -> Fallible<BTreeMap<M::Key, M::State>> {
    let mut out = BTreeMap::new();
    at.scan::<M>(|k, v| {
        out.insert(k, v);
        true
    })?;
    Ok(out)
}

/// Bytes that are no event at all, as a buggy or hostile producer sends.
const GARBAGE: &[u8] = b"\xff\xfegarbage";

/// The events per `forward` call.
const CHUNK: usize = 20_000;

/// Runs the demo on `at`: `n` distinct events, a fraction `duplicates` of
/// them delivered more than once, shuffled. `extra_checks` adds what only
/// one backend has to check. Returns whether every check passed.
pub(crate) fn run<D: Shop>(
    at: &D,
    n: usize,
    duplicates: f64,
    seed: u64,
    extra_checks: impl FnOnce(&BTreeMap<String, Sales>) -> Fallible<bool>,
) -> Fallible<bool> {
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
            let partitions = at.status(ProductSales::NAME)?.partitions.len();
            for p in 0..partitions {
                at.submit_encoded(format!("garbage-{p}"), 0, GARBAGE)?;
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
            .map(|m| folded(at, m))
            .collect::<accrete::Result<Vec<u64>>>()?;
        bar.set_position(folded.iter().sum());
        if folded.iter().all(|f| *f >= records) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // What is folded is also readable where it is read (a node's replica).
    at.wait_caught_up::<ProductSales>(Duration::from_secs(120))?;
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
    let sales = stored::<ProductSales>(at)?;
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

    let visitors = stored::<PageVisitors>(at)?;
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

    let last = stored::<LastSeen>(at)?;
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
    ok &= extra_checks(&sales)?;

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
    Ok(ok)
}
