//! `gcounter/per_key` and `pncounter/per_key`: 1M in-place updates of a
//! per-key counter (100k keys, 4 actors, actor = i % 4), [`GCounter`] and
//! [`PnCounter`] next to `crdts::GCounter` and `crdts::PNCounter` driven
//! the way crdts documents (`let op = c.inc(actor); c.apply(op)`).
//!
//! Two key distributions: `uniform` (the working set, 100k heap-allocated
//! counters, does not fit in cache) and `zipf` (exponent 1.0: hot keys stay
//! in cache). Both sides use the same map and hasher (FxHash). The empty
//! map is built and the filled one dropped outside the timing. `map_only`
//! is the floor: the same map lookups updating a plain `i64` per key.

mod common;

use std::collections::HashMap;
use std::hint::black_box;

use accrete_monoids::{GCounter, PnCounter};
use common::Zipf;
use crdts::CmRDT;
use criterion::{BatchSize, SamplingMode, Throughput, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rustc_hash::FxBuildHasher;

const UPDATES: usize = 1_000_000;
const KEYS: usize = 100_000;
const ACTORS: u64 = 4;

type Map<V> = HashMap<u64, V, FxBuildHasher>;

/// One update: the key, the actor (`i % 4`), and whether it increments
/// (always, for the grow-only counter).
#[derive(Clone, Copy)]
struct Update {
    key: u64,
    actor: u64,
    up: bool,
}

/// Uniform or Zipf keys; half of the updates decrement if `decrements`.
fn updates(zipf: bool, decrements: bool) -> Vec<Update> {
    let input = format!("counter updates (zipf: {zipf}, decrements: {decrements})");
    let mut rng = StdRng::seed_from_u64(common::seed(&input));
    let skew = Zipf::new(KEYS, 1.0);
    (0..UPDATES as u64)
        .map(|i| {
            let key = if zipf {
                skew.sample(&mut rng) as u64
            } else {
                rng.random_range(0..KEYS as u64)
            };
            Update {
                key: key.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                actor: i % ACTORS,
                up: !decrements || rng.random_bool(0.5),
            }
        })
        .collect()
}

/// The value per key, by plain counting; also the `map_only` floor.
fn map_only(mut map: Map<i64>, updates: &[Update]) -> Map<i64> {
    for u in updates {
        *map.entry(u.key).or_insert(0) += if u.up { 1 } else { -1 };
    }
    map
}

fn ours_g(mut map: Map<GCounter>, updates: &[Update]) -> Map<GCounter> {
    for u in updates {
        map.entry(u.key).or_default().increment(u.actor, 1);
    }
    map
}

fn theirs_g(mut map: Map<crdts::GCounter<u64>>, updates: &[Update]) -> Map<crdts::GCounter<u64>> {
    for u in updates {
        let counter = map.entry(u.key).or_default();
        let op = counter.inc(u.actor);
        counter.apply(op);
    }
    map
}

fn ours_pn(mut map: Map<PnCounter>, updates: &[Update]) -> Map<PnCounter> {
    for u in updates {
        let counter = map.entry(u.key).or_default();
        if u.up {
            counter.increment(u.actor, 1);
        } else {
            counter.decrement(u.actor, 1);
        }
    }
    map
}

fn theirs_pn(
    mut map: Map<crdts::PNCounter<u64>>,
    updates: &[Update],
) -> Map<crdts::PNCounter<u64>> {
    for u in updates {
        let counter = map.entry(u.key).or_default();
        let op = if u.up {
            counter.inc(u.actor)
        } else {
            counter.dec(u.actor)
        };
        counter.apply(op);
    }
    map
}

/// Times `run` from an empty map; the map is built and dropped untimed.
fn bench<V>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: String,
    updates: &[Update],
    run: fn(Map<V>, &[Update]) -> Map<V>,
) {
    group.bench_function(id, |b| {
        b.iter_batched(
            Map::default,
            |map| run(map, black_box(updates)),
            BatchSize::PerIteration,
        )
    });
}

fn gcounter(c: &mut criterion::Criterion) {
    let mut group = c.benchmark_group("gcounter/per_key");
    group
        .throughput(Throughput::Elements(UPDATES as u64))
        .sampling_mode(SamplingMode::Flat);
    for (shape, zipf) in [("uniform", false), ("zipf", true)] {
        let updates = updates(zipf, false);

        let expected = map_only(Map::default(), &updates);
        let ours = ours_g(Map::default(), &updates);
        let theirs = theirs_g(Map::default(), &updates);
        assert_eq!(ours.len(), expected.len());
        assert_eq!(theirs.len(), expected.len());
        let total: u64 = ours.values().map(GCounter::value).sum();
        assert_eq!(total, UPDATES as u64);
        for (key, &n) in &expected {
            assert_eq!(ours[key].value() as i64, n);
            assert_eq!(theirs[key].read().to_string(), n.to_string());
        }

        bench(&mut group, format!("{shape}/accrete"), &updates, ours_g);
        bench(&mut group, format!("{shape}/crdts"), &updates, theirs_g);
        bench(&mut group, format!("{shape}/map_only"), &updates, map_only);
    }
    group.finish();
}

fn pncounter(c: &mut criterion::Criterion) {
    let mut group = c.benchmark_group("pncounter/per_key");
    group
        .throughput(Throughput::Elements(UPDATES as u64))
        .sampling_mode(SamplingMode::Flat);
    for (shape, zipf) in [("uniform", false), ("zipf", true)] {
        let updates = updates(zipf, true);

        let expected = map_only(Map::default(), &updates);
        let ours = ours_pn(Map::default(), &updates);
        let theirs = theirs_pn(Map::default(), &updates);
        assert_eq!(ours.len(), expected.len());
        assert_eq!(theirs.len(), expected.len());
        for (key, &n) in &expected {
            assert_eq!(ours[key].value(), n);
            assert_eq!(theirs[key].read().to_string(), n.to_string());
        }

        bench(&mut group, format!("{shape}/accrete"), &updates, ours_pn);
        bench(&mut group, format!("{shape}/crdts"), &updates, theirs_pn);
        bench(&mut group, format!("{shape}/map_only"), &updates, map_only);
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = gcounter, pncounter
}
criterion_main!(benches);
