//! [`TopK`]: the most frequent items (mergeable Misra–Gries heavy hitters).

use std::borrow::Borrow;
use std::cmp::Ordering;

use crate::{Commutative, Monoid, Semigroup};

/// The most frequent items, with counts that are never too high and at
/// most `total/(K + 1)` too low: a Misra–Gries summary with the merge of
/// Agarwal, Cormode, Huang, Phillips, Wei & Yi, *Mergeable Summaries*
/// (PODS 2012).
///
/// The summary keeps at most `K` counters (item → count) and the total
/// count `N` of everything inserted. Combining adds the counters
/// item-wise; if more than `K` remain, the `(K + 1)`-th largest count is
/// subtracted from every counter and those left at zero are dropped.
/// Inserting is combining with a single counter, which is the classic
/// Misra–Gries update.
///
/// # Guarantee
///
/// For every item with true count `f`,
/// `f − N/(K + 1) ≤ estimate ≤ f` (the estimate is 0 for untracked
/// items), whatever the order of inserts and merges. So every item with
/// `f > N/(K + 1)` is tracked, and [`top`](TopK::top) contains all of them.
/// [`error_bound`](TopK::error_bound) is `⌊N/(K + 1)⌋`.
///
/// # Laws
///
/// - identity: nothing counted (no counters, `total = 0`);
/// - commutative **exactly**: item-wise addition is commutative and the
///   pruning depends only on the multiset of counts;
/// - **approximately associative**: which counters survive depends on the
///   merge tree, so `(a ⊕ b) ⊕ c` and `a ⊕ (b ⊕ c)` can differ. Every
///   association is within the guarantee above, hence within
///   `N/(K + 1)` of the other; [`within_bound`](TopK::within_bound) is the
///   equivalence the law harness uses. (Example, `K = 1`: `{x: 2}`,
///   `{y: 1}`, `{z: 1}` give `{}` one way and `{x: 2}` the other.)
/// - not idempotent: each insert counts once.
///
/// Items are kept in a `Vec` sorted by `T`'s order, so the state and its
/// persisted form are deterministic; `T`'s `Ord` must be a total order
/// consistent with `Eq`. Counts add with wrapping at 2⁶⁴ (unreachable in
/// practice).
///
/// # Persisted form
///
/// `{counters: [[item, count], …], total}`, items in ascending order.
/// Reading checks the order, that counts are positive and add up to at
/// most `total`; a summary stored with more than `K` counters (a larger
/// `K`) is pruned to `K` as a merge would, which keeps the guarantee for
/// `K`.
///
/// # Examples
///
/// ```
/// use accrete_monoids::{Semigroup, TopK};
///
/// let mut east: TopK<String, 3> = TopK::default();
/// for page in ["/home", "/home", "/cart", "/home", "/faq"] {
///     east.insert(page.to_string());
/// }
/// let west = TopK::with_count("/cart".to_string(), 4);
///
/// let mut all = east.combined(&west);
/// assert_eq!(all.total(), 9);
/// let top: Vec<_> = all.top().into_iter().map(|(p, n)| (p.as_str(), n)).collect();
/// assert_eq!(top, [("/cart", 5), ("/home", 3), ("/faq", 1)]);
///
/// // A fourth item: every counter drops by the 4th largest count (1).
/// all.insert("/about".to_string());
/// assert_eq!(all.estimate("/cart"), 4); // true count 5
/// assert_eq!(all.estimate("/home"), 2); // true count 3
/// assert_eq!(all.estimate("/faq"), 0); // true count 1
/// assert_eq!(all.error_bound(), 10 / 4); // every estimate is at most 2 low
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct TopK<T, const K: usize = 10> {
    /// Sorted by item, counts positive, at most `K`.
    counters: Vec<(T, u64)>,
    /// How many items were counted, tracked or not.
    total: u64,
}

impl<T: Ord + Clone, const K: usize> TopK<T, K> {
    /// One occurrence of `item`.
    #[inline]
    pub fn of(item: T) -> Self {
        Self::with_count(item, 1)
    }

    /// `n` occurrences of `item` (`n = 0` gives the identity).
    pub fn with_count(item: T, n: u64) -> Self {
        let counters = if n == 0 || K == 0 {
            Vec::new()
        } else {
            vec![(item, n)]
        };
        TopK { counters, total: n }
    }

    /// Counts one occurrence of `item`.
    #[inline]
    pub fn insert(&mut self, item: T) {
        self.insert_n(item, 1);
    }

    /// Counts `n` occurrences of `item`: `self.combine(&TopK::with_count(item, n))`,
    /// without allocating once `K` counters exist.
    pub fn insert_n(&mut self, item: T, n: u64) {
        if n == 0 {
            return;
        }
        self.total = self.total.wrapping_add(n);
        match self.counters.binary_search_by(|(t, _)| t.cmp(&item)) {
            Ok(i) => self.counters[i].1 = self.counters[i].1.wrapping_add(n),
            Err(i) if self.counters.len() < K => self.counters.insert(i, (item, n)),
            Err(_) => {
                // K + 1 counters: the (K + 1)-th largest is the smallest.
                let smallest = self.counters.iter().map(|c| c.1).min().unwrap_or(n);
                let c = smallest.min(n);
                self.counters.retain_mut(|(_, count)| {
                    *count -= c;
                    *count > 0
                });
                let slot = (n > c).then(|| self.counters.binary_search_by(|(t, _)| t.cmp(&item)));
                if let Some(Err(i)) = slot {
                    self.counters.insert(i, (item, n - c));
                }
            }
        }
    }

    /// The estimated count of `item`: at most its true count `f`, at least
    /// `f − error_bound()`. 0 if `item` is not tracked.
    pub fn estimate<Q>(&self, item: &Q) -> u64
    where
        T: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.counters
            .binary_search_by(|(t, _)| t.borrow().cmp(item))
            .map_or(0, |i| self.counters[i].1)
    }

    /// The tracked items and their estimated counts, by count descending
    /// then item ascending. Contains every item whose true count exceeds
    /// [`error_bound`](TopK::error_bound).
    pub fn top(&self) -> Vec<(&T, u64)> {
        let mut top: Vec<(&T, u64)> = self.counters.iter().map(|(t, n)| (t, *n)).collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        top
    }

    /// How many occurrences were counted, tracked or not: `N`.
    #[inline]
    pub const fn total(&self) -> u64 {
        self.total
    }

    /// `⌊N/(K + 1)⌋`: how far below its true count an estimate can be.
    #[inline]
    pub const fn error_bound(&self) -> u64 {
        self.total / (K as u64).saturating_add(1)
    }

    /// Whether `self` and `other` summarize the same stream as far as the
    /// guarantee can tell: the same [`total`](TopK::total), and every
    /// item's estimates differ by at most [`error_bound`](TopK::error_bound).
    ///
    /// Two summaries of the same items, merged in different trees, are
    /// always within bound of each other (both estimates lie in
    /// `[f − N/(K + 1), f]`), so this is the equivalence the law harness
    /// uses for associativity. It is reflexive and symmetric, not
    /// transitive.
    ///
    /// ```
    /// use accrete_monoids::{Semigroup, TopK};
    ///
    /// let (a, b, c) = (TopK::<char, 1>::with_count('x', 2), TopK::of('y'), TopK::of('z'));
    /// let left = a.clone().combined(&b).combined(&c);
    /// let right = a.combined(&b.combined(&c));
    /// assert_ne!(left, right); // not associative…
    /// assert!(left.within_bound(&right)); // …but within the bound
    /// ```
    pub fn within_bound(&self, other: &Self) -> bool {
        if self.total != other.total {
            return false;
        }
        let bound = self.error_bound();
        let (mut a, mut b) = (
            self.counters.iter().peekable(),
            other.counters.iter().peekable(),
        );
        loop {
            let (x, y) = match (a.peek(), b.peek()) {
                (None, None) => return true,
                (Some(_), None) => (a.next().map_or(0, |c| c.1), 0),
                (None, Some(_)) => (0, b.next().map_or(0, |c| c.1)),
                (Some(p), Some(q)) => match p.0.cmp(&q.0) {
                    Ordering::Less => (a.next().map_or(0, |c| c.1), 0),
                    Ordering::Greater => (0, b.next().map_or(0, |c| c.1)),
                    Ordering::Equal => (a.next().map_or(0, |c| c.1), b.next().map_or(0, |c| c.1)),
                },
            };
            if x.abs_diff(y) > bound {
                return false;
            }
        }
    }

    /// Restores the invariants after counters were appended: at most `K`
    /// (subtract the `(K + 1)`-th largest count, drop the zeros) and sorted
    /// by item. In place: no allocation.
    fn prune_and_sort(&mut self, sorted: bool) {
        if self.counters.len() > K {
            self.counters
                .select_nth_unstable_by(K, |a, b| b.1.cmp(&a.1));
            let c = self.counters[K].1;
            self.counters.retain_mut(|(_, count)| {
                *count = count.saturating_sub(c);
                *count > 0
            });
        } else if sorted {
            return;
        }
        self.counters.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    }
}

impl<T: Ord + Clone, const K: usize> Semigroup for TopK<T, K> {
    fn combine(&mut self, other: &Self) {
        self.total = self.total.wrapping_add(other.total);
        let old = self.counters.len();
        let mut i = 0;
        for (item, n) in &other.counters {
            while i < old && self.counters[i].0 < *item {
                i += 1;
            }
            if i < old && self.counters[i].0 == *item {
                self.counters[i].1 = self.counters[i].1.wrapping_add(*n);
            } else {
                self.counters.push((item.clone(), *n));
            }
        }
        self.prune_and_sort(self.counters.len() == old);
    }

    /// Moves `other`'s items instead of cloning them.
    fn combine_owned(&mut self, other: Self) {
        if self.counters.is_empty() && self.total == 0 {
            *self = other;
            return;
        }
        self.total = self.total.wrapping_add(other.total);
        let old = self.counters.len();
        let mut i = 0;
        for (item, n) in other.counters {
            while i < old && self.counters[i].0 < item {
                i += 1;
            }
            if i < old && self.counters[i].0 == item {
                self.counters[i].1 = self.counters[i].1.wrapping_add(n);
            } else {
                self.counters.push((item, n));
            }
        }
        self.prune_and_sort(self.counters.len() == old);
    }
}

impl<T: Ord + Clone, const K: usize> Monoid for TopK<T, K> {
    #[inline]
    fn identity() -> Self {
        TopK {
            counters: Vec::new(),
            total: 0,
        }
    }

    #[inline]
    fn is_identity(&self) -> bool {
        self.total == 0 && self.counters.is_empty()
    }
}

impl<T: Ord + Clone, const K: usize> Default for TopK<T, K> {
    fn default() -> Self {
        Self::identity()
    }
}

impl<T: Ord + Clone, const K: usize> Commutative for TopK<T, K> {}

#[cfg(feature = "serde")]
impl<'de, T, const K: usize> serde::Deserialize<'de> for TopK<T, K>
where
    T: Ord + Clone + serde::Deserialize<'de>,
{
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;

        #[derive(serde::Deserialize)]
        #[serde(rename = "TopK")]
        struct Owned<T> {
            counters: Vec<(T, u64)>,
            total: u64,
        }

        let Owned { counters, total } = Owned::<T>::deserialize(deserializer)?;
        if counters.iter().any(|c| c.1 == 0) {
            return Err(D::Error::custom("TopK: a counter is zero"));
        }
        if counters.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(D::Error::custom(
                "TopK: counters not in ascending order of item",
            ));
        }
        let tracked = counters
            .iter()
            .try_fold(0_u64, |acc, c| acc.checked_add(c.1));
        if tracked.is_none_or(|t| t > total) {
            return Err(D::Error::custom("TopK: counters add up to more than total"));
        }
        let mut top = TopK { counters, total };
        top.prune_and_sort(true); // a summary written with a larger K
        Ok(top)
    }
}

#[cfg(feature = "laws")]
impl<T, const K: usize> quickcheck::Arbitrary for TopK<T, K>
where
    T: quickcheck::Arbitrary + Ord + Clone,
{
    /// A stream of up to `g.size()` inserts drawn from a pool of up to
    /// `2K + 3` items (so some are heavy and pruning happens), each counted
    /// 1–8 times, sometimes up to 2¹⁶ (total far below 2⁶²).
    fn arbitrary(g: &mut quickcheck::Gen) -> Self {
        let pool_size = 1 + usize::arbitrary(g) % K.saturating_mul(2).saturating_add(3);
        let pool: Vec<T> = (0..pool_size).map(|_| T::arbitrary(g)).collect();
        let mut top = Self::identity();
        for _ in 0..usize::arbitrary(g) % (g.size() + 1) {
            let n = match u8::arbitrary(g) % 16 {
                0 => u64::from(u16::arbitrary(g)),
                k => u64::from(k % 8 + 1),
            };
            if let Some(item) = g.choose(&pool) {
                top.insert_n(item.clone(), n);
            }
        }
        top
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        crate::laws::shrink_to_identity(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::Rng;
    use std::collections::BTreeMap;

    /// Checks `f − N/(K + 1) ≤ estimate ≤ f` for every item of `exact`
    /// (and that untracked items are the only ones missing from `top`).
    fn assert_guarantee<T: Ord + Clone + std::fmt::Debug, const K: usize>(
        s: &TopK<T, K>,
        exact: &BTreeMap<T, u64>,
    ) {
        let total: u64 = exact.values().sum();
        assert_eq!(s.total(), total);
        assert!(s.counters.len() <= K);
        for (item, &f) in exact {
            let est = s.estimate(item);
            assert!(
                est <= f && f - est <= s.error_bound(),
                "{item:?}: f {f}, estimate {est}, bound {}",
                s.error_bound()
            );
            if f > s.error_bound() {
                assert!(
                    s.top().iter().any(|(t, _)| *t == item),
                    "heavy {item:?} missing"
                );
            }
        }
        for (item, _) in &s.counters {
            assert!(exact.contains_key(item), "{item:?} was never inserted");
        }
    }

    #[test]
    fn concrete_non_associative_triple() {
        let a = TopK::<char, 1>::with_count('x', 2);
        let b = TopK::of('y');
        let c = TopK::of('z');
        let left = a.clone().combined(&b).combined(&c); // {x:1} then {x:1, z:1} → {}
        let right = a.clone().combined(&b.clone().combined(&c)); // {} then {x:2}
        assert_eq!(left.top(), []);
        assert_eq!(right.top(), [(&'x', 2)]);
        assert_ne!(left, right);
        assert_eq!((left.total(), right.total(), left.error_bound()), (4, 4, 2));
        // Both within the guarantee for the true counts x:2, y:1, z:1.
        let exact = BTreeMap::from([('x', 2), ('y', 1), ('z', 1)]);
        assert_guarantee(&left, &exact);
        assert_guarantee(&right, &exact);
        assert!(left.within_bound(&right));
        // Commutativity still holds exactly.
        assert_eq!(a.clone().combined(&b), b.combined(&a));
    }

    #[test]
    fn insert_is_misra_gries() {
        let mut s: TopK<u8, 2> = TopK::default();
        for x in [1, 2, 1, 3, 1, 2, 4] {
            s.insert(x);
        }
        // 1,2 → {1:1,2:1}; 1 → {1:2,2:1}; 3 → all −1 → {1:1}; 1 → {1:2};
        // 2 → {1:2,2:1}; 4 → all −1 → {1:1}.
        assert_eq!(s.top(), [(&1, 1)]);
        assert_eq!((s.total(), s.error_bound()), (7, 2));
        // insert_n is combine with a single counter.
        let mut t: TopK<u8, 2> = TopK::fold([TopK::with_count(1, 5), TopK::with_count(2, 3)]);
        let mut u = t.clone();
        t.insert_n(3, 4);
        u.combine(&TopK::with_count(3, 4));
        assert_eq!(t, u);
        assert_eq!(t.top(), [(&1, 2), (&3, 1)]);
    }

    #[test]
    fn top_is_sorted_by_count_then_item() {
        let s: TopK<&str, 5> = TopK::fold([
            TopK::with_count("b", 2),
            TopK::with_count("c", 5),
            TopK::with_count("a", 2),
            TopK::with_count("d", 1),
        ]);
        assert_eq!(s.top(), [(&"c", 5), (&"a", 2), (&"b", 2), (&"d", 1)]);
        assert_eq!(s.estimate("zzz"), 0);
    }

    #[test]
    fn edge_cases() {
        let id: TopK<u32> = TopK::identity();
        assert!(id.is_identity() && TopK::<u32>::default() == id);
        assert_eq!(TopK::<u32>::with_count(7, 0), id);
        let mut s = id.clone();
        s.insert_n(7, 0);
        assert_eq!(s, id);

        // K = 0 tracks nothing; every estimate is 0 ≥ f − N.
        let z: TopK<u32, 0> = TopK::fold([TopK::of(1), TopK::with_count(2, 5)]);
        assert_eq!((z.top(), z.total(), z.error_bound()), (vec![], 6, 6));

        // Counts near 2⁶² (BSON's int64).
        let big: TopK<u32, 2> = TopK::fold([
            TopK::with_count(1, 1 << 61),
            TopK::with_count(2, (1 << 61) - 1),
            TopK::with_count(3, 5),
        ]);
        assert_eq!(big.top(), [(&1, (1 << 61) - 5), (&2, (1 << 61) - 6)]);
    }

    #[test]
    fn random_merge_trees_keep_the_guarantee() {
        let mut rng = Rng::for_test("top_k::random_merge_trees_keep_the_guarantee");
        for _ in 0..50 {
            // Zipf-like: item i with weight ∝ 1/(i + 1).
            let alphabet = 2 + rng.below(60);
            let n = rng.below(5000) as usize;
            let stream: Vec<u64> = (0..n)
                .map(|_| {
                    let u = rng.unit();
                    ((alphabet as f64).powf(u) - 1.0) as u64
                })
                .collect();
            let mut exact = BTreeMap::new();
            stream
                .iter()
                .for_each(|&x| *exact.entry(x).or_insert(0) += 1);

            let mut parts: Vec<TopK<u64, 5>> = Vec::new();
            for chunk in stream.chunks(1 + rng.below(200) as usize) {
                let mut s = TopK::identity();
                chunk.iter().for_each(|&x| s.insert(x));
                parts.push(s);
            }
            let mut whole: TopK<u64, 5> = TopK::identity();
            stream.iter().for_each(|&x| whole.insert(x));
            assert_guarantee(&whole, &exact);
            while parts.len() > 1 {
                let a = parts.swap_remove(rng.below(parts.len() as u64) as usize);
                let j = rng.below(parts.len() as u64) as usize;
                if rng.below(2) == 0 {
                    parts[j].combine(&a);
                } else {
                    parts[j].combine_owned(a);
                }
            }
            let merged = parts.pop().unwrap_or_default();
            assert_guarantee(&merged, &exact);
            assert!(merged.within_bound(&whole));
        }
    }

    #[cfg(feature = "serde")]
    mod persisted {
        use super::*;

        #[cfg(feature = "laws")]
        #[test]
        fn serde_round_trips() {
            let v: TopK<String, 3> =
                TopK::fold(["a", "b", "a", "c", "d", "a"].map(|s| TopK::of(s.to_string())))
                    .combined(&TopK::with_count("e".into(), (1 << 62) - 1));
            assert_eq!(
                serde_json::to_string(&v).unwrap(),
                r#"{"counters":[["a",2],["e",4611686018427387903]],"total":4611686018427387909}"#
            );
            crate::laws::assert_round_trip(&v);
        }

        #[test]
        fn reading_validates() {
            let read = |json: &str| {
                serde_json::from_str::<TopK<String, 3>>(json).map_err(|e| e.to_string())
            };
            assert!(read(r#"{"counters":[["a",2],["b",1]],"total":5}"#).is_ok());
            for (bad, why) in [
                (r#"{"counters":[["b",2],["a",1]],"total":5}"#, "ascending"),
                (r#"{"counters":[["a",2],["a",1]],"total":5}"#, "ascending"),
                (r#"{"counters":[["a",0]],"total":5}"#, "zero"),
                (
                    r#"{"counters":[["a",4],["b",2]],"total":5}"#,
                    "more than total",
                ),
            ] {
                let err = read(bad).unwrap_err();
                assert!(err.contains(why), "{bad}: {err}");
            }
            // Written with a larger K: pruned as a merge would.
            let wide = r#"{"counters":[["a",5],["b",4],["c",3],["d",2],["e",1]],"total":20}"#;
            let narrow: TopK<String, 3> = serde_json::from_str(wide).unwrap();
            assert_eq!(
                narrow.top(),
                [
                    (&"a".to_string(), 3),
                    (&"b".to_string(), 2),
                    (&"c".to_string(), 1)
                ]
            );
        }
    }
}

#[cfg(all(test, feature = "laws"))]
mod laws {
    use super::*;
    use crate::test_util::check;
    use std::collections::BTreeMap;

    type T3 = TopK<u8, 3>;

    // The laws: `top_k` and `top_k_1` in tests/laws.rs, within the
    // bound, and exactly where they hold exactly
    // (`exact_laws_of_approximate_types`).

    #[test]
    fn insert_n_is_combine_with_a_counter() {
        fn prop(start: T3, xs: Vec<(u8, u8)>) -> bool {
            let mut inserted = start.clone();
            let mut combined = start;
            for &(x, n) in &xs {
                inserted.insert_n(x % 8, u64::from(n));
                combined.combine(&TopK::with_count(x % 8, u64::from(n)));
            }
            inserted == combined
        }
        check("top_k::insert_n", prop as fn(_, _) -> bool);
    }

    type Stream = Vec<(u8, u16)>;

    fn summarize<const K: usize>(stream: &Stream) -> TopK<u8, K> {
        let mut s = TopK::identity();
        for &(x, n) in stream {
            s.insert_n(x % 12, u64::from(n % 64));
        }
        s
    }

    fn within_guarantee<const K: usize>(s: &TopK<u8, K>, streams: &[&Stream]) -> bool {
        let mut exact: BTreeMap<u8, u64> = BTreeMap::new();
        for &(x, n) in streams.iter().flat_map(|s| s.iter()) {
            *exact.entry(x % 12).or_default() += u64::from(n % 64);
        }
        let total: u64 = exact.values().sum();
        s.total() == total
            && (0..12).all(|x| {
                let f = exact.get(&x).copied().unwrap_or(0);
                let est = s.estimate(&x);
                est <= f && f - est <= total / (K as u64 + 1)
            })
    }

    fn both_associations<const K: usize>(a: &Stream, b: &Stream, c: &Stream) -> bool {
        let (sa, sb, sc) = (summarize::<K>(a), summarize::<K>(b), summarize::<K>(c));
        let left = sa.clone().combined(&sb).combined(&sc);
        let right = sa.combined(&sb.combined(&sc));
        within_guarantee(&left, &[a, b, c])
            && within_guarantee(&right, &[a, b, c])
            && left.within_bound(&right)
    }

    #[test]
    fn both_associations_meet_the_guarantee_against_exact_counts() {
        fn prop(a: Stream, b: Stream, c: Stream) -> bool {
            both_associations::<1>(&a, &b, &c)
                && both_associations::<2>(&a, &b, &c)
                && both_associations::<3>(&a, &b, &c)
                && both_associations::<5>(&a, &b, &c)
        }
        check("top_k::guarantee", prop as fn(_, _, _) -> bool);
    }

    #[test]
    fn arbitrary_stays_bson_safe() {
        fn prop(a: T3) -> bool {
            a.total() < 1 << 62 && a.counters.len() <= 3
        }
        check("top_k::arbitrary", prop as fn(_) -> bool);
    }
}
