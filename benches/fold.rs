//! `fold/map_sum`: per-key folding through [`KeyedFold::combine_at`] next to
//! the hand-written `*map.entry(k).or_insert(0) += v` loop it claims to match.
//!
//! 10M `(key, value)` events over 100k Zipf-distributed keys (exponent 1.0),
//! the same hasher (FxHash, which has no per-process seed) on both sides.

mod common;

use std::collections::HashMap;
use std::hint::black_box;

use accrete_monoids::{KeyedFold, Sum};
use criterion::{SamplingMode, Throughput, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use common::Zipf;
use rustc_hash::FxBuildHasher;

const EVENTS: usize = 10_000_000;
const KEYS: usize = 100_000;
const ZIPF_EXPONENT: f64 = 1.0;

/// The events: rank `r` becomes key `r · φ` (a bijection), so hot keys are
/// not small consecutive integers.
fn events() -> Vec<(u64, u64)> {
    let mut rng = StdRng::seed_from_u64(common::seed("fold/map_sum events"));
    let zipf = Zipf::new(KEYS, ZIPF_EXPONENT);
    (0..EVENTS)
        .map(|_| {
            let key = (zipf.sample(&mut rng) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            (key, rng.random_range(1..=1_000))
        })
        .collect()
}

fn api(events: &[(u64, u64)]) -> HashMap<u64, Sum<u64>, FxBuildHasher> {
    let mut map = HashMap::default();
    for &(key, value) in events {
        map.combine_at(key, Sum(value));
    }
    map
}

fn api_combine_all_at(events: &[(u64, u64)]) -> HashMap<u64, Sum<u64>, FxBuildHasher> {
    let mut map = HashMap::default();
    map.combine_all_at(events.iter().map(|&(key, value)| (key, Sum(value))));
    map
}

fn hand_written(events: &[(u64, u64)]) -> HashMap<u64, u64, FxBuildHasher> {
    let mut map = HashMap::default();
    for &(key, value) in events {
        *map.entry(key).or_insert(0) += value;
    }
    map
}

fn map_sum(c: &mut criterion::Criterion) {
    let events = events();

    // The three agree, key by key, with each other and with the total.
    let expected = hand_written(&events);
    let total: u64 = events.iter().map(|&(_, v)| v).sum();
    assert_eq!(expected.values().sum::<u64>(), total);
    let distinct = expected.len();
    println!("fold/map_sum: {EVENTS} events, {distinct} distinct keys of {KEYS}");
    for actual in [api(&events), api_combine_all_at(&events)] {
        assert_eq!(actual.len(), distinct);
        for (key, sum) in &actual {
            assert_eq!(expected[key], sum.0);
        }
    }

    let mut group = c.benchmark_group("fold/map_sum");
    group
        .throughput(Throughput::Elements(EVENTS as u64))
        .sampling_mode(SamplingMode::Flat);
    group.bench_function("api", |b| b.iter(|| api(black_box(&events))));
    group.bench_function("api_combine_all_at", |b| {
        b.iter(|| api_combine_all_at(black_box(&events)))
    });
    group.bench_function("hand_written", |b| {
        b.iter(|| hand_written(black_box(&events)))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = map_sum
}
criterion_main!(benches);
