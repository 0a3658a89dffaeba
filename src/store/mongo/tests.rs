//! The guard against a real server (`ACCRETE_MONGODB_URI`).
use std::collections::HashMap;

use bson::Bson;
use serde::Serialize;

use super::documents::decode_key;
use super::origins::CLAIM_CHUNK;
use super::write::{Guards, KeyWrite, Split, new_document, sort_errors, write_batch};
use super::*;
use crate::codec::Range;
use crate::event::EventId;
use crate::monoids::Monoid;
use crate::monoids::Sum;

fn store(name: &str) -> MongoStore {
    let uri =
        std::env::var("ACCRETE_MONGODB_URI").unwrap_or_else(|_| "mongodb://127.0.0.1:27017".into());
    let s = MongoStore::connect(&MongoConfig {
        uri,
        database: format!("accrete_unit_{name}_{}", std::process::id()),
        ..MongoConfig::default()
    })
    .expect("these tests need a MongoDB-protocol server (scripts/servers.sh start)");
    s.database().drop().run().unwrap();
    s
}

/// `(partition, from, end)` triples as ranges.
fn ranges(r: &[(u32, u64, u64)]) -> Vec<Range> {
    r.iter()
        .map(|&(partition, from, end)| Range {
            partition,
            from,
            end,
        })
        .collect()
}

fn kw(key: &str, delta: i64, r: &[(u32, u64, u64)], maybe_new: bool) -> KeyWrite<String, Sum<i64>> {
    KeyWrite {
        maybe_new,
        key: key.into(),
        delta: Sum(delta),
        ranges: ranges(r),
    }
}

fn get(s: &MongoStore, key: &str) -> i64 {
    let d = s
        .states("m")
        .find_one(doc! { "_id": key })
        .run()
        .unwrap()
        .unwrap();
    decode_state::<Sum<i64>>(d.get("s")).unwrap().0
}

#[test]
fn key_ids_keep_scalars_and_turn_sequences_into_documents() {
    // Scalars and documents: as they serialize (the stored form of
    // existing models does not change).
    assert_eq!(key_id(&"a").unwrap(), Bson::String("a".into()));
    assert_eq!(key_id(&7_u64).unwrap(), Bson::Int64(7));
    assert_eq!(key_id(&-3_i32).unwrap(), Bson::Int32(-3));
    assert_eq!(key_id(&(i64::MAX as u64)).unwrap(), Bson::Int64(i64::MAX));
    let mut map = std::collections::BTreeMap::new();
    map.insert("0".to_string(), 1_i32);
    map.insert("1".to_string(), 2_i32);
    assert_eq!(
        key_id(&map).unwrap(),
        Bson::Document(doc! { "0": 1, "1": 2 })
    );
    // Sequences, which MongoDB refuses as `_id`: documents by position;
    // nested sequences stay arrays (MongoDB accepts them there).
    let pair = ("shop".to_string(), 7_u32);
    assert_eq!(
        key_id(&pair).unwrap(),
        Bson::Document(doc! { "0": "shop", "1": 7_i64 })
    );
    let nested = (vec![1_i64, 2], "x".to_string());
    assert_eq!(
        key_id(&nested).unwrap(),
        Bson::Document(doc! { "0": [1_i64, 2_i64], "1": "x" })
    );
    assert_eq!(key_id(&Vec::<i64>::new()).unwrap(), Bson::Document(doc! {}));
    // Read back, from the new form and from arrays (the form before).
    let back = |id: Bson| decode_key::<(String, u32)>(&id).unwrap();
    assert_eq!(back(key_id(&pair).unwrap()), pair);
    assert_eq!(back(Bson::Array(vec!["shop".into(), Bson::Int64(7)])), pair);
    assert_eq!(
        decode_key::<(Vec<i64>, String)>(&key_id(&nested).unwrap()).unwrap(),
        nested
    );
    assert_eq!(
        decode_key::<Vec<i64>>(&key_id(&Vec::<i64>::new()).unwrap()).unwrap(),
        Vec::<i64>::new()
    );
    assert_eq!(
        decode_key::<Option<(String, u32)>>(&key_id(&Some(pair.clone())).unwrap()).unwrap(),
        Some(pair)
    );
    // A map whose keys look like positions stays a map.
    assert_eq!(
        decode_key::<std::collections::BTreeMap<String, i32>>(&key_id(&map).unwrap()).unwrap(),
        map
    );
    // No `_id` at all: an error naming the cause.
    let e = key_id(&u64::MAX).unwrap_err().to_string();
    assert!(e.contains("i64::MAX"), "{e}");
    let mut dollar = std::collections::BTreeMap::new();
    dollar.insert("$gt".to_string(), 1_i32);
    let e = key_id(&("a", dollar)).unwrap_err().to_string();
    assert!(e.contains("$gt"), "{e}");
}

/// A key without an `_id` and a state without a BSON form are
/// rejected, with the reason; the other keys of the batch apply.
/// Only errors about the document park its key in the dead letters; a
/// write conflict, a stepping-down primary, a shutdown or an unknown
/// code fail the batch, which is retried whole.
#[test]
fn write_errors_that_may_pass_fail_the_batch_instead_of_parking_the_key() {
    let m = "message".to_string();
    let r = sort_errors("w", [(0, 11000, &m), (1, 14, &m), (2, 52, &m)].into_iter()).unwrap();
    assert!(r.duplicates.contains(&0));
    assert!(r.failed.contains_key(&1) && r.failed.contains_key(&2));
    for code in [1, 8, 50, 91, 112, 189, 262, 10107, 11600, 13435, 424242] {
        let e = sort_errors("w", [(0, 11000, &m), (1, code, &m)].into_iter())
            .err()
            .unwrap_or_else(|| panic!("code {code} must fail the write"));
        assert!(e.to_string().contains(&code.to_string()), "{e}");
    }
}

#[test]
fn keys_that_cannot_be_written_are_rejected_and_the_rest_applies() {
    for maybe_new in [true, false] {
        let s = store(&format!("rejected_{maybe_new}"));
        let kw = |key: u64, delta: u64| KeyWrite {
            maybe_new,
            key,
            delta: Sum(delta),
            ranges: vec![Range {
                partition: 0,
                from: 0,
                end: 3,
            }],
        };
        let mut no_split = |_: &Guards<u64>| -> Split<u64, Sum<u64>> { HashMap::new() };
        let w = write_batch(
            &s,
            "m",
            true,
            vec![kw(1, 5), kw(u64::MAX, 1), kw(2, u64::MAX)],
            &mut no_split,
        )
        .unwrap();
        let mut rejected: Vec<_> = w.rejected.iter().map(|(k, _)| *k).collect();
        rejected.sort();
        assert_eq!(rejected, vec![2, u64::MAX], "{:?}", w.rejected);
        assert!(
            w.rejected
                .iter()
                .all(|(_, r)| r.contains("i64::MAX") || r.contains("BSON")),
            "{:?}",
            w.rejected
        );
        assert_eq!(w.changes.len(), 1);
        assert_eq!(w.changes[0].0, 1);
        let d = s
            .states("m")
            .find_one(doc! { "_id": 1_i64 })
            .run()
            .unwrap()
            .unwrap();
        assert_eq!(decode_state::<Sum<u64>>(d.get("s")).unwrap(), Sum(5));
        s.database().drop().run().unwrap();
    }
}

#[test]
fn a_batch_written_twice_is_applied_once() {
    written_twice("twice", false);
}

/// The same through the insert-first path: every key is tried as new,
/// the inserts of existing keys are refused and go on to the guard.
#[test]
fn a_batch_written_twice_is_applied_once_when_inserts_go_first() {
    written_twice("twice_new", true);
}

fn written_twice(name: &str, maybe_new: bool) {
    let kw = |key: &str, delta: i64, ranges: &[(u32, u64, u64)]| kw(key, delta, ranges, maybe_new);
    let s = store(name);
    let mut no_split = |_: &Guards<String>| -> Split<String, Sum<i64>> {
        HashMap::from([("a".to_string(), (Sum(5), Sum(0)))])
    };
    let w = write_batch(
        &s,
        "m",
        true,
        vec![kw("a", 5, &[(0, 0, 10)])],
        &mut no_split,
    )
    .unwrap();
    assert_eq!(w.changes.len(), 1);
    assert_eq!(get(&s, "a"), 5);
    let w = write_batch(
        &s,
        "m",
        true,
        vec![kw("a", 5, &[(0, 0, 10)])],
        &mut no_split,
    )
    .unwrap();
    assert_eq!(get(&s, "a"), 5, "the second write is refused by the guard");
    assert_eq!(w.conflicts, 1);
    // Republished: the part applied before, covering [0, 10).
    assert_eq!(w.changes.len(), 1);
    assert_eq!(w.changes[0].1.ranges[0].end, 10);
    // A batch overlapping the applied one: only the part since the guard.
    let mut split = |g: &Guards<String>| -> Split<String, Sum<i64>> {
        assert_eq!(g["a"], vec![(0, 10)]);
        HashMap::from([("a".to_string(), (Sum(3), Sum(4)))])
    };
    write_batch(&s, "m", true, vec![kw("a", 7, &[(0, 5, 15)])], &mut split).unwrap();
    assert_eq!(get(&s, "a"), 9);
    // Two partitions in one write; one of them already applied.
    write_batch(&s, "m", true, vec![kw("b", 1, &[(1, 0, 4)])], &mut no_split).unwrap();
    let mut split = |g: &Guards<String>| -> Split<String, Sum<i64>> {
        assert_eq!(g["b"], vec![(1, 4)]);
        HashMap::from([("b".to_string(), (Sum(1), Sum(10)))])
    };
    write_batch(
        &s,
        "m",
        true,
        vec![kw("b", 11, &[(1, 0, 4), (2, 0, 8)])],
        &mut split,
    )
    .unwrap();
    assert_eq!(get(&s, "b"), 11);
    s.database().drop().run().unwrap();
}

/// The BSON of representative documents, byte for byte, against the
/// files in `tests/fixtures/bson` (the documented format: a change
/// must be deliberate, and bump [`DOCUMENT_FORMAT`] if old readers would
/// misread it). `ACCRETE_BLESS=1` writes the files anew. Each file is
/// also read back into its key and state.
#[test]
fn documents_match_their_golden_bson() {
    use crate::monoids::{Max, OrSet};
    fn check<K, S>(name: &str, key: K, delta: S, r: &[(u32, u64, u64)])
    where
        K: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
        S: Serialize + DeserializeOwned + Clone + PartialEq + std::fmt::Debug + Monoid,
    {
        let kw = KeyWrite {
            key,
            delta,
            ranges: ranges(r),
            maybe_new: true,
        };
        let d = new_document(&kw, state_bson(&kw.delta).unwrap()).unwrap();
        let bytes = bson::serialize_to_vec(&d).unwrap();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/bson")
            .join(format!("{name}.bson"));
        if std::env::var_os("ACCRETE_BLESS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let golden = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (ACCRETE_BLESS=1 writes it)", path.display()));
        let read: Document = bson::deserialize_from_slice(&golden).unwrap();
        assert_eq!(
            bytes, golden,
            "{name}: the document's BSON changed: {d} where the golden file has {read}"
        );
        let (k, s) = decode_doc::<K, S>(&read).unwrap();
        assert_eq!((k, s), (kw.key, kw.delta), "{name}: read back");
    }
    check("sum_u64_key", 42_u64, Sum(-1_250_i64), &[(3, 100, 137)]);
    check(
        "tuple_key_two_partitions",
        ("shop \"north\".$1".to_string(), 7_u32),
        Sum(5_i64),
        &[(0, 10, 20), (5, 7, 9)],
    );
    check(
        "string_key_max",
        "alice".to_string(),
        Max(99_i64),
        &[(1, 0, 1)],
    );
    let mut set = OrSet::<String>::new();
    set.add(1, "red".to_string());
    check("orset", 7_i32, set, &[(2, 40, 41)]);
}

/// A model records its documents' format (and a rebuild the format of
/// generations); a build refuses a model written in a newer one, saying
/// what to do; a rebuild racing another changes nothing.
#[test]
fn a_model_in_a_newer_format_is_refused() {
    let s = store("format");
    s.prepare("m").unwrap();
    let models = s.coll(MODELS);
    let format = |s: &MongoStore| {
        s.coll(MODELS)
            .find_one(doc! { "_id": "m" })
            .run()
            .unwrap()
            .unwrap()
            .get_i64("format")
            .unwrap()
    };
    assert_eq!(format(&s), i64::from(DOCUMENT_FORMAT));
    // A rebuild records the format a build from before generations
    // refuses; this build serves it.
    let first = s.generation("m").unwrap();
    let next = s.next_generation("m", &first).unwrap();
    assert_eq!(
        (first.n, next.n, next.name.as_str()),
        (0, 1, "accrete.g1.m")
    );
    assert_eq!(format(&s), i64::from(GENERATIONS_FORMAT));
    s.prepare("m").unwrap();
    assert_eq!(s.generation("m").unwrap(), next);
    let raced = s.next_generation("m", &first).unwrap_err().to_string();
    assert!(raced.contains("another rebuild"), "{raced}");
    models
        .update_one(doc! { "_id": "m" }, doc! { "$set": { "format": 99_i64 } })
        .run()
        .unwrap();
    let e = s.prepare("m").unwrap_err().to_string();
    assert!(e.contains("format 99") && e.contains("upgrade"), "{e}");
    assert_eq!(format(&s), 99, "a refused prepare writes nothing");
    s.database().drop().run().unwrap();
}

/// A writer that finds a key partly applied by another (crashed, or
/// deposed and still writing) publishes the other's change again as it
/// was written, boundaries and delta, not its own cut of it: two changes
/// of a key are the same change or disjoint. A document from before
/// writes were logged gets the cut, counted.
#[test]
fn a_partly_applied_key_republishes_the_changes_that_applied_it() {
    for maybe_new in [false, true] {
        let s = store(&format!("logged_{maybe_new}"));
        // Writes key `a`'s batch `r`, whose part already applied (by the
        // document's guard) is `before` and the rest `since`; returns
        // what it published, as (ranges, delta), and how many keys it
        // had to cut.
        let write = |r: &[(u32, u64, u64)], before: i64, since: i64| {
            let mut split = |_: &Guards<String>| -> Split<String, Sum<i64>> {
                HashMap::from([("a".to_string(), (Sum(before), Sum(since)))])
            };
            let w = write_batch(
                &s,
                "m",
                true,
                vec![kw("a", before + since, r, maybe_new)],
                &mut split,
            )
            .unwrap();
            let published: Vec<(Vec<Range>, i64)> = w
                .changes
                .iter()
                .map(|(_, c)| (c.ranges.clone(), c.delta.0))
                .collect();
            (published, w.recut)
        };
        // X writes events [10, 20) and [20, 30) of partition 0 (and,
        // in the second write, [0, 6) of partition 1) and dies before
        // publishing.
        write(&[(0, 10, 20)], 0, 5);
        write(&[(0, 20, 30), (1, 0, 6)], 0, 6);
        // Y reads partition 0 from 10 in batches of other boundaries:
        // [10, 25) is all applied; [25, 40) applied up to 30.
        let (again, recut) = write(&[(0, 10, 25)], 8, 0);
        assert_eq!(get(&s, "a"), 11);
        assert_eq!(recut, 0);
        assert_eq!(
            again,
            vec![
                (ranges(&[(0, 10, 20)]), 5),
                (ranges(&[(0, 20, 30), (1, 0, 6)]), 6)
            ],
            "X's changes, as X wrote them"
        );
        let (published, _) = write(&[(0, 25, 40)], 2, 4);
        assert_eq!(get(&s, "a"), 15);
        assert_eq!(
            published,
            vec![
                (ranges(&[(0, 20, 30), (1, 0, 6)]), 6),
                (ranges(&[(0, 30, 40)]), 4)
            ],
            "X's second change again, then Y's own part since the guard"
        );
        // A write by a build that does not log (it bumps `v` alone):
        // the log can no longer vouch for the window; the cut, counted.
        s.states("m")
            .update_one(doc! { "_id": "a" }, doc! { "$inc": { "v": 1_i64 } })
            .run()
            .unwrap();
        assert_eq!(write(&[(0, 35, 40)], 4, 0).1, 1);
        // Without a log (a document written before writes were logged):
        // the cut, counted.
        s.states("m")
            .update_one(doc! { "_id": "a" }, doc! { "$unset": { "w": "", "c": "" } })
            .run()
            .unwrap();
        let (published, recut) = write(&[(0, 35, 40)], 4, 0);
        assert_eq!(recut, 1);
        assert_eq!(published, vec![(ranges(&[(0, 35, 40)]), 4)]);
        assert_eq!(get(&s, "a"), 15);
        s.database().drop().run().unwrap();
    }
}

/// Two writers claiming the same forwarded ids at once, each with its
/// own copy (partly claimed before, in chunks of `CLAIM_CHUNK`), get
/// the same winner for every id: the one stored, theirs where their
/// insert went in, the other's read back where it was refused.
#[test]
fn writers_racing_for_the_same_claims_get_one_answer() {
    let s = store("claims_race");
    let id = |i: u64| EventId {
        source: 7,
        partition: (i % 3) as u32,
        offset: i,
    };
    let n = CLAIM_CHUNK as u64 * 2 + 17;
    // A third of them claimed before, by neither.
    let earlier: Vec<_> = (0..n)
        .filter(|i| i.is_multiple_of(3))
        .map(|i| (id(i), (9, i)))
        .collect();
    s.claim_origins(1, &earlier).unwrap();
    for round in 0..3 {
        let mine: Vec<_> = (0..n).map(|i| (id(i), (1, i + round))).collect();
        let theirs: Vec<_> = (0..n).rev().map(|i| (id(i), (2, i + round))).collect();
        let (a, b) = std::thread::scope(|t| {
            let a = t.spawn(|| s.claim_origins(1, &mine).unwrap());
            let b = t.spawn(|| s.claim_origins(1, &theirs).unwrap());
            (a.join().unwrap(), b.join().unwrap())
        });
        let mut b = b;
        b.reverse();
        assert_eq!(a, b, "round {round}: one answer for both");
        for (i, w) in a.iter().enumerate() {
            let i = i as u64;
            if i.is_multiple_of(3) {
                assert_eq!(*w, (9, i), "claimed before the race");
            } else if round == 0 {
                assert!(*w == (1, i) || *w == (2, i), "{i}: {w:?}");
            } else {
                assert_eq!(*w, (a[i as usize].0, i), "{i}: stays as claimed");
            }
        }
        // What is stored is what both were told.
        assert_eq!(s.claim_origins(1, &mine).unwrap(), a, "round {round}");
    }
    s.database().drop().run().unwrap();
}

#[test]
fn unacknowledged_writes_are_refused_before_connecting() {
    // No server at this port: the URI is refused before any is asked.
    for uri in [
        "mongodb://127.0.0.1:1/?w=0",
        "mongodb://user:secret@127.0.0.1:1/?w=0&journal=false",
    ] {
        let config = MongoConfig {
            uri: uri.into(),
            ..MongoConfig::default()
        };
        let Err(Error::Config {
            source_name,
            detail,
        }) = MongoStore::connect(&config)
        else {
            panic!("{uri}: w=0 was not refused as a configuration error");
        };
        assert!(detail.contains("w=0"), "{detail}");
        assert!(
            !source_name.contains("secret"),
            "the password is shown: {source_name}"
        );
    }
}

#[test]
fn accretes_own_collections_are_not_dropped_or_emptied() {
    let s = store("own_names");
    // A claim of a forwarded copy, which neither call may touch.
    let claim = [(
        EventId {
            source: 9,
            partition: 0,
            offset: 1,
        },
        (0, 5),
    )];
    assert_eq!(s.claim_origins(1, &claim).unwrap(), vec![(0, 5)]);
    for name in ["accrete.origins", "accrete.models", "accrete.g1.balances"] {
        let dropped = s.drop_model(name);
        assert!(
            matches!(dropped, Err(Error::InvalidName { .. })),
            "drop_model({name}): {dropped:?}"
        );
        let checked = s.check_pushdown(name, [(Sum(1_i64), Sum(2))]);
        assert!(
            matches!(
                checked,
                Err(Error::InvalidName {
                    kind: "collection",
                    ..
                })
            ),
            "check_pushdown({name}): {checked:?}"
        );
        let prepared = s.prepare(name);
        assert!(
            matches!(prepared, Err(Error::InvalidName { .. })),
            "prepare({name}): {prepared:?}"
        );
    }
    let other = [(
        EventId {
            source: 9,
            partition: 0,
            offset: 1,
        },
        (3, 7),
    )];
    assert_eq!(
        s.claim_origins(1, &other).unwrap(),
        vec![(0, 5)],
        "the first claim survives"
    );
    // Nor is a read model's.
    s.prepare("balances").unwrap();
    let checked = s.check_pushdown("balances", [(Sum(1_i64), Sum(2))]);
    assert!(
        matches!(
            checked,
            Err(Error::InvalidName {
                kind: "collection",
                ..
            })
        ),
        "check_pushdown(balances): {checked:?}"
    );
    // An ordinary collection is still checked.
    assert_eq!(
        s.check_pushdown("law_check", [(Sum(1_i64), Sum(2))])
            .unwrap(),
        1
    );
    s.database().drop().run().unwrap();
}
