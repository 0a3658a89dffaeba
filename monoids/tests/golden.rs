//! Golden files: the persisted form of every primitive, pinned.
//!
//! `tests/golden/<primitive>.jsonl` holds, for each case, the JSON form and
//! the postcard bytes (the compact binary form stores use). The test checks
//! both directions: today's code encodes each value to exactly the stored
//! form, and decodes the stored form back to an equal value. A change that
//! would silently misread stored state fails here.
//!
//! A deliberate format change: `ACCRETE_BLESS=1 cargo test --test golden`
//! rewrites the files; review the diff, and add a migration note.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::path::PathBuf;

use accrete_monoids::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

struct Golden {
    name: &'static str,
    stored: BTreeMap<String, (Value, String)>,
    produced: Vec<String>,
    failures: Vec<String>,
}

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.jsonl"))
}

fn blessing() -> bool {
    std::env::var_os("ACCRETE_BLESS").is_some()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

impl Golden {
    fn open(name: &'static str) -> Self {
        let mut stored = BTreeMap::new();
        match std::fs::read_to_string(path(name)) {
            Ok(text) => {
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    let v: Value = serde_json::from_str(line).expect("golden line is JSON");
                    let case = v["case"].as_str().expect("case").to_string();
                    let postcard = v["postcard"].as_str().expect("postcard").to_string();
                    stored.insert(case, (v["json"].clone(), postcard));
                }
            }
            Err(e) if !blessing() => panic!(
                "golden file {} is missing ({e}); create it with ACCRETE_BLESS=1 cargo test --test golden",
                path(name).display()
            ),
            Err(_) => {}
        }
        Golden {
            name,
            stored,
            produced: Vec::new(),
            failures: Vec::new(),
        }
    }

    fn case<T: Serialize + DeserializeOwned + PartialEq + Debug>(
        &mut self,
        case: &str,
        value: T,
    ) -> &mut Self {
        let json = serde_json::to_value(&value).expect("JSON encoding");
        let postcard = hex(&postcard::to_stdvec(&value).expect("postcard encoding"));
        let line = serde_json::json!({ "case": case, "json": json, "postcard": postcard });
        self.produced
            .push(serde_json::to_string(&line).expect("line"));
        if blessing() {
            return self;
        }
        let Some((stored_json, stored_postcard)) = self.stored.get(case) else {
            self.failures
                .push(format!("{case}: not in the golden file (bless to add it)"));
            return self;
        };
        if *stored_json != json {
            self.failures.push(format!(
                "{case}: JSON form changed\n    stored: {stored_json}\n    now:    {json}"
            ));
        }
        if *stored_postcard != postcard {
            self.failures.push(format!("{case}: postcard form changed\n    stored: {stored_postcard}\n    now:    {postcard}"));
        }
        match serde_json::from_value::<T>(stored_json.clone()) {
            Ok(back) if back == value => {}
            Ok(back) => self.failures.push(format!(
                "{case}: stored JSON decodes to {back:?}, expected {value:?}"
            )),
            Err(e) => self
                .failures
                .push(format!("{case}: stored JSON no longer decodes: {e}")),
        }
        match postcard::from_bytes::<T>(&unhex(stored_postcard)) {
            Ok(back) if back == value => {}
            Ok(back) => self.failures.push(format!(
                "{case}: stored postcard decodes to {back:?}, expected {value:?}"
            )),
            Err(e) => self
                .failures
                .push(format!("{case}: stored postcard no longer decodes: {e}")),
        }
        self
    }

    fn finish(&mut self) {
        if blessing() {
            std::fs::write(path(self.name), self.produced.join("\n") + "\n")
                .expect("write golden file");
            return;
        }
        let extra: Vec<_> = self
            .stored
            .keys()
            .filter(|k| {
                !self
                    .produced
                    .iter()
                    .any(|l| l.contains(&format!("\"case\":\"{k}\"")))
            })
            .collect();
        assert!(
            extra.is_empty(),
            "{}: stored cases no longer checked: {extra:?}",
            self.name
        );
        assert!(
            self.failures.is_empty(),
            "persisted form of `{}` changed:\n  {}\nIf deliberate: ACCRETE_BLESS=1 cargo test --test golden, and \
             document the migration.",
            self.name,
            self.failures.join("\n  ")
        );
    }
}

fn hll<const P: u8>(items: std::ops::Range<u64>) -> HyperLogLog<P> {
    let mut h = HyperLogLog::new();
    items.for_each(|i| h.insert(&i));
    h
}

#[test]
fn scalars() {
    Golden::open("scalars")
        .case("sum_i64", Sum(-42_i64))
        .case("sum_u64", Sum(7_u64))
        .case("sum_f64", Sum(2.5_f64))
        .case("count", Count(1_000_000))
        .case("max_i64", Max(i64::MIN))
        .case("min_u32", Min(17_u32))
        .case("max_string_opt", Some(Max("zebra".to_string())))
        .case("any", Any(true))
        .case("all", All(false))
        .case("bit_or", BitOr(0b1010_u32))
        .finish();
}

#[test]
fn first_last() {
    Golden::open("first_last")
        .case("last_empty", Last::<String>::default())
        .case("last", Last::new(1_700_000_000_000, "shipped".to_string()))
        .case("first", First::new(-5, 3_u8))
        .finish();
}

#[test]
fn windowed() {
    Golden::open("windowed")
        .case("empty", Windowed::<Count, 60_000>::default())
        .case(
            "counts",
            Windowed::<Count, 60_000>::fold([
                Windowed::at(1_000, Count(2)),
                Windowed::at(125_000, Count(1)),
            ]),
        )
        .case(
            "retained",
            Windowed::<Max<i32>, 10, 2>::fold((0..5).map(|i| Windowed::at(i * 10, Max(i as i32)))),
        )
        .finish();
}

#[test]
fn hyperloglog() {
    Golden::open("hyperloglog")
        .case("empty_p14", HyperLogLog::<14>::new())
        .case("three_p12", hll::<12>(0..3))
        .case("thousand_p4", hll::<4>(0..1000))
        .finish();
}

#[test]
fn count_min() {
    let mut cms = CountMinSketch::<16, 3>::new();
    for (i, item) in ["a", "b", "c", "a"].iter().enumerate() {
        cms.add(item, i as u64 + 1);
    }
    Golden::open("count_min")
        .case("empty", CountMinSketch::<2048, 5>::new())
        .case("small", cms)
        .finish();
}

#[test]
fn bloom() {
    let mut b = Bloom::<128, 3>::new();
    ["x", "y"].iter().for_each(|i| b.insert(i));
    Golden::open("bloom")
        .case("empty", Bloom::<8192, 7>::new())
        .case("two", b)
        .finish();
}

#[test]
fn std_types() {
    Golden::open("std_types")
        .case("tuple", (Sum(1_i32), Max(2_u8)))
        .case("btree_set", BTreeSet::from([3_u16, 1]))
        .case("btree_map", BTreeMap::from([("k".to_string(), Sum(5_i64))]))
        .finish();
}

#[test]
fn summaries() {
    let mut dd = DdSketch::<10>::default();
    for x in [0.0, 1.5, -3.0, 1e6] {
        dd.insert(x).unwrap();
    }
    let mut top = TopK::<String, 3>::default();
    for w in ["a", "b", "a", "c", "d", "a"] {
        top.insert(w.to_string());
    }
    Golden::open("summaries")
        .case("average", Average::of(2.5).combined(&Average::of(4.0)))
        .case("moments", Moments::fold([1.0, 2.0, 4.0].map(Moments::of)))
        .case("ddsketch_empty", DdSketch::<10>::default())
        .case("ddsketch", dd)
        .case("top_k", top)
        .finish();
}

#[test]
fn crdts() {
    let mut or_set = OrSet::<String>::new();
    or_set.add(1, "tea".to_string());
    or_set.add(2, "cake".to_string());
    or_set.add(1, "jam".to_string());
    or_set.remove(&"tea".to_string());
    let mut gc = GCounter::new();
    gc.increment(7, 3);
    gc.increment(2, 1);
    let mut pn = PnCounter::new();
    pn.increment(1, 5);
    pn.decrement(2, 2);
    let mut mv = MultiValue::<String>::new();
    mv.combine(&mv.write_delta(1, "draft".to_string()));
    mv.combine(&MultiValue::new().write_delta(2, "final".to_string()));
    Golden::open("crdts")
        .case("gset", GSet::of([3_u8, 1, 2]))
        .case(
            "two_phase_set",
            TwoPhaseSet::add_delta("a".to_string())
                .combined(&TwoPhaseSet::add_delta("b".to_string()))
                .combined(&TwoPhaseSet::remove_delta("b".to_string())),
        )
        .case("gcounter", gc)
        .case("pncounter", pn)
        .case("or_set", or_set)
        .case("or_set_empty", OrSet::<u8>::new())
        .case(
            "lww",
            LastWriteWins::new(1_700_000_000_000, 3, "blue".to_string()),
        )
        .case("multi_value", mv)
        .case(
            "map",
            Map::from_iter([("a".to_string(), Sum(2_i64)), ("b".to_string(), Sum(-1))]),
        )
        .finish();
}
