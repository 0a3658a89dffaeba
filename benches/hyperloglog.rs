//! `hyperloglog/insert` and `hyperloglog/merge`: [`HyperLogLog`] next to the
//! `hyperloglogplus` crate's `HyperLogLogPF` (Flajolet) and
//! `HyperLogLogPlus` (Heule et al.), at precisions 12 and 14.
//!
//! Both sides hash with [`StableHasher`] (theirs through
//! `BuildHasherDefault<StableHasher>`), so hashing costs the same.

mod common;

use std::hash::BuildHasherDefault;
use std::hint::black_box;

use accrete_monoids::hash::StableHasher;
use accrete_monoids::{HyperLogLog, Semigroup};
use criterion::{BenchmarkGroup, BenchmarkId, Throughput, criterion_group, criterion_main};
use hyperloglogplus::{HyperLogLog as _, HyperLogLogPF, HyperLogLogPlus};

type Stable = BuildHasherDefault<StableHasher>;
type Pf = HyperLogLogPF<u64, Stable>;
type Plus = HyperLogLogPlus<u64, Stable>;
type Group<'a> = BenchmarkGroup<'a, criterion::measurement::WallTime>;

const INSERTS: usize = 1_000_000;
const MERGED: usize = 100_000;

/// `n` distinct items.
fn items(seed: u64, n: usize) -> Vec<u64> {
    (0..n as u64)
        .map(|i| common::splitmix64(seed.wrapping_add(i)))
        .collect()
}

fn ours<const P: u8>(items: &[u64]) -> HyperLogLog<P> {
    let mut sketch = HyperLogLog::new();
    for item in items {
        sketch.insert(item);
    }
    sketch
}

fn pf(precision: u8, items: &[u64]) -> Pf {
    let mut sketch = Pf::new(precision, Stable::default()).expect("valid precision");
    for item in items {
        sketch.insert(item);
    }
    sketch
}

fn plus(precision: u8, items: &[u64]) -> Plus {
    let mut sketch = Plus::new(precision, Stable::default()).expect("valid precision");
    for item in items {
        sketch.insert(item);
    }
    sketch
}

/// Within three standard errors of `exact`.
fn assert_close<const P: u8>(what: &str, estimate: f64, exact: usize) {
    let bound = 3.0 * HyperLogLog::<P>::relative_error() * exact as f64;
    assert!(
        (estimate - exact as f64).abs() <= bound,
        "{what} P={P}: estimate {estimate} for {exact} distinct items (3σ = {bound})"
    );
}

fn insert<const P: u8>(group: &mut Group<'_>, items: &[u64]) {
    assert_close::<P>("accrete", ours::<P>(items).estimate(), items.len());
    assert_close::<P>("HyperLogLogPF", pf(P, items).count(), items.len());
    assert_close::<P>("HyperLogLogPlus", plus(P, items).count(), items.len());

    group.bench_with_input(
        BenchmarkId::new("accrete", format!("p{P}")),
        items,
        |b, items| b.iter(|| ours::<P>(black_box(items))),
    );
    group.bench_with_input(
        BenchmarkId::new("hyperloglogplus_pf", format!("p{P}")),
        items,
        |b, items| b.iter(|| pf(P, black_box(items))),
    );
    group.bench_with_input(
        BenchmarkId::new("hyperloglogplus_plus", format!("p{P}")),
        items,
        |b, items| b.iter(|| plus(P, black_box(items))),
    );
}

fn merge<const P: u8>(group: &mut Group<'_>, left: &[u64], right: &[u64]) {
    group.throughput(Throughput::Elements(1 << P));

    let (a, b) = (ours::<P>(left), ours::<P>(right));
    let all: Vec<u64> = left.iter().chain(right).copied().collect();
    // The merge is the sketch of the union, register for register.
    assert_eq!(a.clone().combined(&b), ours::<P>(&all));
    // Merges are idempotent (both crates'), so every iteration merges `b`
    // into the same warm target and does the same register-wise work; a
    // fresh clone per iteration would time cold caches, not the merge.
    group.bench_function(BenchmarkId::new("accrete", format!("p{P}")), |bench| {
        let mut target = a.clone();
        bench.iter(|| target.combine(black_box(&b)))
    });

    let (a, b) = (pf(P, left), pf(P, right));
    let mut merged = a.clone();
    merged.merge(&b).expect("same precision");
    assert_close::<P>("HyperLogLogPF merge", merged.count(), all.len());
    group.bench_function(
        BenchmarkId::new("hyperloglogplus_pf", format!("p{P}")),
        |bench| {
            let mut target = a.clone();
            bench.iter(|| target.merge(black_box(&b)).expect("same precision"))
        },
    );

    let (a, b) = (plus(P, left), plus(P, right));
    let mut merged = a.clone();
    merged.merge(&b).expect("same precision");
    assert_close::<P>("HyperLogLogPlus merge", merged.count(), all.len());
    group.bench_function(
        BenchmarkId::new("hyperloglogplus_plus", format!("p{P}")),
        |bench| {
            let mut target = a.clone();
            bench.iter(|| target.merge(black_box(&b)).expect("same precision"))
        },
    );
}

fn hyperloglog(c: &mut criterion::Criterion) {
    let seed = common::seed("hyperloglog items");
    let inserted = items(seed, INSERTS);
    // Two disjoint halves for the merges.
    let merged = items(seed ^ 0x5eed, 2 * MERGED);
    let (left, right) = merged.split_at(MERGED);

    let mut group = c.benchmark_group("hyperloglog/insert");
    group.throughput(Throughput::Elements(INSERTS as u64));
    insert::<12>(&mut group, &inserted);
    insert::<14>(&mut group, &inserted);
    group.finish();

    // Throughput in registers merged (2^P per merge).
    let mut group = c.benchmark_group("hyperloglog/merge");
    merge::<12>(&mut group, left, right);
    merge::<14>(&mut group, left, right);
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = hyperloglog
}
criterion_main!(benches);
