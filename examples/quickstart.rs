//! Quickstart: a read model is a commutative monoid, so at-least-once,
//! out-of-order, duplicated delivery still folds to the right answer.
//!
//! Run it with `cargo run --release --example quickstart`.
//!
//! The domain: page views. The read model keeps, per page, the number of
//! views, the distinct visitors, the top referrers, and the latest referrer. We deliver the events the way a real log does: in batches, out
//! of order, with duplicates — and compare with a plain left fold of the
//! distinct events in order.

use std::collections::{BTreeMap, HashMap, HashSet};

use accrete::monoids::{Count, HyperLogLog, KeyedFold, Last, Monoid, TopK};

/// An event: a fact that happened, with the id it got when it first entered
/// the log (the runtime assigns it; here the generator does).
#[derive(Debug, Clone)]
struct PageView {
    id: u64,
    page: &'static str,
    visitor: u64,
    at_ms: i64,
    referrer: &'static str,
}

/// The state of one page. Every field is a monoid, so the struct is one.
#[derive(Monoid, Debug, Clone, PartialEq)]
struct PageStats {
    views: Count,
    visitors: HyperLogLog<12>,
    top_referrers: TopK<&'static str, 3>,
    last_referrer: Last<&'static str>,
}

/// The projection: what one event contributes to its page.
fn project(e: &PageView) -> (&'static str, PageStats) {
    let mut visitors = HyperLogLog::new();
    visitors.insert(&e.visitor);
    let delta = PageStats {
        views: Count::one(),
        visitors,
        top_referrers: TopK::of(e.referrer),
        last_referrer: Last::new(e.at_ms, e.referrer),
    };
    (e.page, delta)
}

const PAGES: [&str; 6] = [
    "/",
    "/pricing",
    "/docs",
    "/blog/monoids",
    "/signup",
    "/careers",
];
/// Skewed, as referrers are: search 50%, direct 25%, social 15%, newsletter 10%.
const REFERRERS: [&str; 20] = [
    "search",
    "search",
    "search",
    "search",
    "search",
    "search",
    "search",
    "search",
    "search",
    "search",
    "direct",
    "direct",
    "direct",
    "direct",
    "direct",
    "social",
    "social",
    "social",
    "newsletter",
    "newsletter",
];

fn main() {
    let seed = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2026);
    let mut rng = SplitMix(seed);

    // 200k page views over an hour, popular pages first.
    let events: Vec<PageView> = (0..200_000)
        .map(|id| {
            let page = PAGES[(rng.below(64) as f64).sqrt() as usize % PAGES.len()];
            PageView {
                id,
                page,
                visitor: rng.below(20_000),
                at_ms: (id as i64) * 18,
                referrer: REFERRERS[rng.below(REFERRERS.len() as u64) as usize],
            }
        })
        .collect();

    // The oracle: a plain left fold of the distinct events, in order.
    let mut oracle: HashMap<&str, PageStats> = HashMap::new();
    for e in &events {
        let (page, delta) = project(e);
        oracle.combine_at(page, delta);
    }

    // At-least-once delivery: 20% of events twice, shuffled, in batches.
    let mut delivery: Vec<&PageView> = events.iter().collect();
    for e in &events {
        if rng.below(5) == 0 {
            delivery.push(e);
        }
    }
    for i in (1..delivery.len()).rev() {
        delivery.swap(i, rng.below(i as u64 + 1) as usize);
    }

    // What the runtime does: pre-aggregate each batch per key in memory,
    // then combine into the stored state, applying each event once (Count
    // and TopK are not idempotent; the runtime keeps absorbed event ids with
    // the state — a plain set stands in for it here).
    let mut stored: HashMap<&str, PageStats> = HashMap::new();
    let mut naive: HashMap<&str, PageStats> = HashMap::new();
    let mut absorbed: HashSet<u64> = HashSet::new();
    let mut batches = 0;
    for batch in delivery.chunks(4_096) {
        let mut pre: HashMap<&str, PageStats> = HashMap::new();
        for e in batch {
            let (page, delta) = project(e);
            naive.combine_at(page, delta.clone());
            if absorbed.insert(e.id) {
                pre.combine_at(page, delta);
            }
        }
        for (page, delta) in pre {
            stored.combine_at(page, delta); // one store write per touched key per batch
        }
        batches += 1;
    }

    println!(
        "{} distinct events delivered as {} deliveries ({} duplicates), shuffled, in {batches} batches\n",
        events.len(),
        delivery.len(),
        delivery.len() - events.len()
    );
    println!(
        "{:<14} {:>7} {:>9}   {:<28} latest referrer",
        "page", "views", "visitors", "top referrers (lower bound)"
    );
    let sorted: BTreeMap<_, _> = stored.iter().collect();
    for (page, s) in sorted {
        let top: Vec<String> = s
            .top_referrers
            .top()
            .iter()
            .take(2)
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        println!(
            "{page:<14} {:>7} {:>9.0}   {:<28} {}",
            s.views.get(),
            s.visitors.estimate(),
            top.join(", "),
            s.last_referrer.get().unwrap_or(&"-"),
        );
    }

    let exact = stored.iter().all(|(page, s)| {
        let o = &oracle[page];
        s.views == o.views && s.visitors == o.visitors && s.last_referrer == o.last_referrer
    });
    let within = stored
        .iter()
        .all(|(page, s)| s.top_referrers.within_bound(&oracle[page].top_referrers));
    let naive_views: u64 = naive.values().map(|s| s.views.get()).sum();
    let naive_visitors_ok = naive
        .iter()
        .all(|(page, s)| s.visitors == oracle[page].visitors);

    println!();
    println!(
        "matches the plain fold of distinct events: {}",
        if exact { "yes, exactly" } else { "NO" }
    );
    println!(
        "top-k within its stated error bound:       {}",
        if within { "yes" } else { "NO" }
    );
    println!(
        "without exactly-once: views {} (+{} double-counted); visitors still exact: {} (HyperLogLog is idempotent)",
        naive_views,
        naive_views - events.len() as u64,
        if naive_visitors_ok { "yes" } else { "no" }
    );
    if !(exact && within && naive_visitors_ok) {
        std::process::exit(1);
    }
}

/// SplitMix64: a tiny deterministic generator, so every run (and `SEED=n`)
/// is reproducible.
struct SplitMix(u64);

impl SplitMix {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    }
}
