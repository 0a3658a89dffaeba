//! The pushdown law against a real MongoDB-protocol server: for every state
//! with a pushdown, the stored result of the blind update equals the
//! in-process `combine`, and the change condition matches exactly the
//! writes that change the state.
//!
//! The server comes from `ACCRETE_MONGODB_URI` (default
//! `mongodb://127.0.0.1:27017`; `scripts/servers.sh start` starts one). When
//! no server answers, the test fails and says so.
#![cfg(feature = "mongodb")]

mod common;

use std::collections::{BTreeMap, HashMap};

use accrete::monoids::{All, Any, BitOr, Count, GSet, Max, Min, Monoid, Sum};
use accrete::store::mongo::{MongoConfig, MongoStore};
use accrete::store::pushdown::Pushdown;
use common::{Rng, seeds_with};

/// A database of its own per law: the tests run in parallel.
fn store(law: &str) -> MongoStore {
    let uri =
        std::env::var("ACCRETE_MONGODB_URI").unwrap_or_else(|_| "mongodb://127.0.0.1:27017".into());
    let database = format!("accrete_pushdown_{law}_{}", std::process::id());
    MongoStore::connect(&MongoConfig {
        uri: uri.clone(),
        database,
        ..MongoConfig::default()
    })
    .unwrap_or_else(|e| {
        panic!(
            "the pushdown law needs a MongoDB-protocol server at {uri} (ACCRETE_MONGODB_URI): {e}"
        )
    })
}

/// A derived domain struct: every field has a pushdown.
#[derive(
    Clone,
    Debug,
    PartialEq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    accrete::monoids::Monoid,
    Pushdown,
)]
struct PageStats {
    views: Count,
    peak: Max<i64>,
    first_seen: Min<i64>,
    tags: GSet<String>,
    by_country: HashMap<String, Sum<i64>>,
    flags: BitOr<u32>,
}

fn word(rng: &mut Rng) -> String {
    ["a", "b", "c", "de", "fr", "uk", "x.y", "$z", ""][rng.below(9) as usize].to_string()
}

fn small(rng: &mut Rng) -> i64 {
    rng.below(2_000) as i64 - 1_000
}

fn maybe<S: Monoid>(rng: &mut Rng, f: impl Fn(&mut Rng) -> S) -> S {
    if rng.chance(0.2) {
        S::identity()
    } else {
        f(rng)
    }
}

/// Runs the law on `n` random (state, delta) pairs for each seed.
fn law<S>(name: &str, make: impl Fn(&mut Rng) -> S)
where
    S: Pushdown
        + serde::Serialize
        + serde::de::DeserializeOwned
        + Clone
        + PartialEq
        + std::fmt::Debug,
{
    let store = store(name);
    for seed in seeds_with(name, "ACCRETE_PUSHDOWN_SEEDS", 3) {
        let mut rng = Rng(seed);
        let cases: Vec<(S, S)> = (0..60)
            .map(|_| {
                let state = maybe(&mut rng, &make);
                // Sometimes a delta that changes nothing for idempotent states.
                let delta = if rng.chance(0.15) {
                    state.clone()
                } else {
                    make(&mut rng)
                };
                (state, delta)
            })
            .filter(|(_, d)| !d.is_identity())
            .collect();
        let n = store
            .check_pushdown(name, cases)
            .unwrap_or_else(|e| panic!("{name}, seed {seed} (replay: ACCRETE_SEED={seed}): {e}"));
        assert!(n > 0, "{name}: no case was pushed down");
    }
    store.database().drop().run().unwrap();
}

#[test]
fn sums_and_counts() {
    law("sum_i64", |r| Sum(small(r) << 20));
    law("sum_i32", |r| Sum(small(r) as i32));
    law("sum_u32", |r| Sum(r.below(1 << 20) as u32));
    law("sum_u64", |r| Sum(r.below(1 << 40)));
    law("sum_f64", |r| Sum(small(r) as f64 / 8.0));
    law("count", |r| Count(r.below(1 << 40)));
}

#[test]
fn orders() {
    law("max_i64", |r| Max(small(r)));
    law("min_i64", |r| Min(small(r)));
    law("any", |r| Any(r.chance(0.5)));
    law("all", |r| All(r.chance(0.5)));
}

#[test]
fn sets_and_bits() {
    law("gset_string", |r| {
        GSet::of((0..r.below(4)).map(|_| word(r)))
    });
    law("gset_i64", |r| {
        GSet::of((0..r.below(4)).map(|_| small(r) % 8))
    });
    law("bitor_u8", |r| BitOr(r.below(256) as u8));
    law("bitor_u32", |r| BitOr(r.next() as u32));
    law("bitor_i64", |r| BitOr(r.next() as i64 & i64::MAX));
}

#[test]
fn maps_and_derived_structs() {
    // Keys such as "x.y", "$z" and "" cannot be paths: those deltas fall
    // back to read-modify-write, and the law holds for the rest.
    law("hashmap_sum", |r| {
        (0..r.below(4))
            .map(|_| (word(r), Sum(small(r))))
            .collect::<HashMap<_, _>>()
    });
    law("btreemap_max", |r| {
        (0..r.below(4))
            .map(|_| (word(r), Max(small(r))))
            .collect::<BTreeMap<_, _>>()
    });
    law("derived_struct", |r| PageStats {
        views: maybe(r, |r| Count(r.below(100))),
        peak: maybe(r, |r| Max(small(r))),
        first_seen: maybe(r, |r| Min(small(r))),
        tags: maybe(r, |r| GSet::of([word(r)])),
        by_country: maybe(r, |r| [(word(r), Sum(small(r)))].into_iter().collect()),
        flags: maybe(r, |r| BitOr(r.below(16) as u32)),
    });
}

#[test]
fn an_unreachable_server_is_a_clear_error() {
    let e = MongoStore::connect(&MongoConfig {
        uri: "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300".into(),
        database: "x".into(),
        ..MongoConfig::default()
    })
    .err()
    .expect("nothing listens on port 1");
    let text = e.to_string();
    assert!(
        text.contains("no MongoDB server answers at mongodb://127.0.0.1:1"),
        "{text}"
    );
    assert!(text.contains("scripts/servers.sh start"), "{text}");
}
