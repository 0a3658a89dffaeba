//! Every primitive through the law harness, one line each.
#![cfg(feature = "laws")]

use accrete_monoids::*;
use std::collections::{BTreeMap, BTreeSet};

laws!(sum_i64: Sum<i64> => commutative, group);
laws!(sum_u32: Sum<u32> => commutative, group);
laws!(sum_f64: Sum<f64> = |g| Sum(f64::from(i32::arbitrary(g)) / 8.0) => commutative, group; eq_by = close_sum);
laws!(count: Count => commutative);
laws!(max_i64: Max<i64> => commutative, idempotent);
laws!(min_u32: Min<u32> => commutative, idempotent);
laws!(max_string: Option<Max<String>> => commutative, idempotent);
laws!(any: Any => commutative, idempotent);
laws!(all: All => commutative, idempotent);
laws!(bit_or: BitOr<u32> => commutative, idempotent);

// Standard types.
laws!(i32_add: i32 => commutative, group);
laws!(unit: () => commutative, idempotent, group);
laws!(tuple3: (Sum<i64>, Max<u8>, BTreeSet<u8>) => commutative);
// BSON document keys are strings: integer-keyed std maps cannot go to MongoDB as
// they are (`Map` serializes as pairs and can).
laws!(btree_map_int_keys: BTreeMap<u8, Sum<i32>> => commutative; no_bson);
laws!(btree_map: BTreeMap<String, Sum<i32>> => commutative);
laws!(btree_set: BTreeSet<u16> => commutative, idempotent);
laws!(hash_set: std::collections::HashSet<u16> => commutative, idempotent);
laws!(hash_map: std::collections::HashMap<String, Max<i16>> => commutative, idempotent);
laws!(vec_concat: Vec<u8>);
// The options `seed` (a pinned base seed: the same run every time) and
// `shrinker` (smaller values of one value).
laws!(sum_pinned: Sum<i16> = |g| Sum(i16::arbitrary(g)) => commutative, group;
      seed = 42, tests = 64, shrinker = |s: &Sum<i16>| s.0.shrink().map(Sum));

fn close_sum(a: &Sum<f64>, b: &Sum<f64>) -> bool {
    (a.0 - b.0).abs() <= 1e-9 * a.0.abs().max(b.0.abs()).max(1.0)
}
laws!(last: Last<u8> => commutative, idempotent);
laws!(first: First<String> => commutative, idempotent);
laws!(windowed_count: Windowed<Count, 100> => commutative);
laws!(windowed_max_retain: Windowed<Max<i8>, 10, 3> => commutative, idempotent);
laws!(windowed_sum_retain: Windowed<Sum<i16>, 10, 2> => commutative);

#[cfg(feature = "automerge")]
laws!(automerge_doc: AutomergeDoc => commutative, idempotent; tests = 64);

// Sketches: small shapes so that merges collide, and the defaults.
laws!(hyperloglog_p4: HyperLogLog<4> => commutative, idempotent);
laws!(hyperloglog: HyperLogLog => commutative, idempotent);
laws!(count_min_small: CountMinSketch<8, 2> => commutative);
laws!(count_min: CountMinSketch => commutative);
laws!(bloom_small: Bloom<64, 2> => commutative, idempotent);
laws!(bloom: Bloom => commutative, idempotent);

// Summaries. Floating point is associative only up to rounding, and
// Misra–Gries merges only within the stated error bound: say so with eq_by.
laws!(average: Average => commutative; eq_by = |a: &Average, b: &Average| a.approx_eq(b, 1e-9));
laws!(moments: Moments => commutative; eq_by = |a: &Moments, b: &Moments| a.approx_eq(b, 1e-9));
laws!(ddsketch: DdSketch => commutative);
laws!(ddsketch_collapsing: DdSketch<20, 6> => commutative);
laws!(ddsketch_one_bucket: DdSketch<10, 1> => commutative);
laws!(top_k: TopK<u8, 3> => commutative; eq_by = TopK::within_bound);
laws!(top_k_1: TopK<u8, 1> => commutative; eq_by = TopK::within_bound);

/// Only associativity (and so convergence under batching) needs the
/// equivalence: these laws hold bit for bit.
#[test]
fn exact_laws_of_approximate_types() {
    use accrete_monoids::laws::{Arbitrary, Law, Laws, Subject};

    fn exact<T: Subject + Arbitrary + PartialEq + Commutative>(name: &str) {
        let checker = Laws::<T>::new(name).commutative();
        for law in [
            Law::Commutativity,
            Law::Identity,
            Law::OwnedVsBorrowed,
            Law::CombineAll,
        ] {
            checker.assert_law(law);
        }
    }
    exact::<Average>("average_exact");
    exact::<Moments>("moments_exact");
    exact::<TopK<u8, 3>>("top_k_exact");
}
laws!(top_k_strings: TopK<String> => commutative; eq_by = TopK::within_bound);

// CRDTs.
laws!(gset: GSet<u8> => commutative, idempotent);
laws!(gset_u32: GSet<u32> => commutative, idempotent);
laws!(two_phase_set: TwoPhaseSet<u8> => commutative, idempotent);
laws!(gcounter: GCounter => commutative, idempotent);
laws!(pncounter: PnCounter => commutative, idempotent);
laws!(or_set: OrSet<u8> => commutative, idempotent);
laws!(or_set_strings: OrSet<String, u64> => commutative, idempotent);
laws!(causal_context: CausalContext => commutative, idempotent);
laws!(last_write_wins: LastWriteWins<u8> => commutative, idempotent);
laws!(last_write_wins_string: LastWriteWins<String> => commutative, idempotent);
laws!(multi_value: MultiValue<u8> => commutative, idempotent);
laws!(map_of_sums: Map<String, Sum<i32>> => commutative);
laws!(map_of_max: Map<u8, Max<u8>> => commutative, idempotent);

/// `Default` is the identity wherever a primitive implements it.
#[test]
fn default_is_the_identity() {
    fn check<T: Default + Monoid + PartialEq + std::fmt::Debug>() {
        assert_eq!(
            T::default(),
            T::identity(),
            "{}",
            std::any::type_name::<T>()
        );
        assert!(T::default().is_identity(), "{}", std::any::type_name::<T>());
    }
    check::<Sum<i64>>();
    check::<Count>();
    check::<Max<i64>>();
    check::<Min<u32>>();
    check::<Any>();
    check::<All>();
    check::<BitOr<u32>>();
    check::<First<String>>();
    check::<Last<u8>>();
    check::<Windowed<Count, 100>>();
    check::<HyperLogLog>();
    check::<CountMinSketch<8, 2>>();
    check::<Bloom<64, 2>>();
    check::<Average>();
    check::<Moments>();
    check::<TopK<u8, 3>>();
    check::<GSet<u8>>();
    check::<TwoPhaseSet<u8>>();
    check::<GCounter>();
    check::<PnCounter>();
    check::<OrSet<u8>>();
    check::<CausalContext>();
    check::<LastWriteWins<u8>>();
    check::<MultiValue<u8>>();
    check::<Map<String, Sum<i32>>>();
}
