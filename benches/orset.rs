//! `orset/add`: in-place [`OrSet::add`] next to `crdts::Orswot` driven the
//! way crdts documents an add
//! (`let ctx = s.read_ctx().derive_add_ctx(actor); s.apply(s.add(e, ctx))`).
//!
//! Two shapes, 100k adds each: one set receiving 100k distinct elements
//! from 4 actors (`one_set`), and 10k sets receiving 10 adds each, the sets
//! visited round-robin (`10k_sets`). Empty sets are built and filled ones
//! dropped outside the timing. `btreemap_only` is the floor of a
//! `BTreeMap`-based set (which `OrSet` is): a bare insert of each element.

mod common;

use std::collections::BTreeMap;
use std::hint::black_box;

use accrete_monoids::OrSet;
use crdts::{CmRDT, Orswot};
use criterion::{BatchSize, Throughput, criterion_group, criterion_main};

const ADDS: usize = 100_000;
const SETS: usize = 10_000;
const ACTORS: u64 = 4;

/// One add: the set it goes to, the actor, the element.
#[derive(Clone, Copy)]
struct Add {
    set: usize,
    actor: u64,
    element: u64,
}

/// `ADDS` adds of distinct elements; add `i` goes to set `i % sets`, and
/// each set sees the actors in turn (`actor = i % 4` for one set).
fn adds(seed: u64, sets: usize) -> Vec<Add> {
    (0..ADDS)
        .map(|i| Add {
            set: i % sets,
            actor: (i / sets) as u64 % ACTORS,
            element: common::splitmix64(seed.wrapping_add(i as u64)),
        })
        .collect()
}

fn ours(mut sets: Vec<OrSet<u64, u64>>, adds: &[Add]) -> Vec<OrSet<u64, u64>> {
    for a in adds {
        sets[a.set].add(a.actor, a.element);
    }
    sets
}

fn theirs(mut sets: Vec<Orswot<u64, u64>>, adds: &[Add]) -> Vec<Orswot<u64, u64>> {
    for a in adds {
        let set = &mut sets[a.set];
        let ctx = set.read_ctx().derive_add_ctx(a.actor);
        let op = set.add(a.element, ctx);
        set.apply(op);
    }
    sets
}

/// The floor of a `BTreeMap`-based set: a bare insert of the element with
/// a 16-byte value (the size of one dot).
fn btreemap_only(
    mut sets: Vec<BTreeMap<u64, [u64; 2]>>,
    adds: &[Add],
) -> Vec<BTreeMap<u64, [u64; 2]>> {
    for (i, a) in adds.iter().enumerate() {
        sets[a.set].insert(a.element, [a.actor, i as u64]);
    }
    sets
}

fn empty_ours(sets: usize) -> impl FnMut() -> Vec<OrSet<u64, u64>> {
    move || (0..sets).map(|_| OrSet::new()).collect()
}

fn empty_theirs(sets: usize) -> impl FnMut() -> Vec<Orswot<u64, u64>> {
    move || (0..sets).map(|_| Orswot::new()).collect()
}

fn add(c: &mut criterion::Criterion) {
    let seed = common::seed("orset/add elements");
    let mut group = c.benchmark_group("orset/add");
    group.throughput(Throughput::Elements(ADDS as u64));
    for (shape, sets) in [("one_set", 1), ("10k_sets", SETS)] {
        let adds = adds(seed, sets);

        // Every element is present in its set, on both sides.
        let (mine, other) = (
            ours(empty_ours(sets)(), &adds),
            theirs(empty_theirs(sets)(), &adds),
        );
        assert_eq!(mine.iter().map(OrSet::len).sum::<usize>(), ADDS);
        assert_eq!(
            other.iter().map(|s| s.read().val.len()).sum::<usize>(),
            ADDS
        );
        for a in &adds {
            assert!(mine[a.set].contains(&a.element));
            assert!(other[a.set].contains(&a.element).val);
        }

        group.bench_function(format!("{shape}/accrete"), |b| {
            b.iter_batched(
                empty_ours(sets),
                |s| ours(s, black_box(&adds)),
                BatchSize::PerIteration,
            )
        });
        group.bench_function(format!("{shape}/crdts"), |b| {
            b.iter_batched(
                empty_theirs(sets),
                |s| theirs(s, black_box(&adds)),
                BatchSize::PerIteration,
            )
        });
        group.bench_function(format!("{shape}/btreemap_only"), |b| {
            b.iter_batched(
                || vec![BTreeMap::new(); sets],
                |s| btreemap_only(s, black_box(&adds)),
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = add
}
criterion_main!(benches);
