//! [`Windowed`]: a monoid per tumbling event-time window.

use std::collections::BTreeMap;

use crate::{Commutative, Idempotent, Monoid, Semigroup};

/// One `M` per tumbling window of event time: "orders per minute",
/// "distinct visitors per hour".
///
/// - `WIDTH`: the window length in event-time units (milliseconds by
///   convention: the default is one minute); a window starts at a multiple
///   of `WIDTH`, so every replica cuts time the same way;
/// - `RETAIN`: how many windows to keep, counting back from the newest window
///   seen (default: all). Pruning depends only on the newest window, which is
///   itself a join, so retention keeps every law: a value that one replica
///   has pruned is pruned in the final state too;
/// - identity: no windows; windows whose value falls back to the identity
///   are dropped, so equality is semantic;
/// - laws: associative and with identity always; commutative and idempotent
///   exactly when `M` is.
///
/// Late events are fine (they land in their own window, whenever they
/// arrive), unless their window is already older than the retention.
///
/// # Examples
///
/// ```
/// use accrete_monoids::{Count, Monoid, Windowed};
///
/// type PerMinute = Windowed<Count, 60_000>;
/// let orders = PerMinute::fold([
///     Windowed::at(1_000, Count(1)),
///     Windowed::at(61_000, Count(1)),
///     Windowed::at(59_999, Count(1)), // late, same first minute
/// ]);
/// assert_eq!(orders.get(30_000), Some(&Count(2)));
/// assert_eq!(orders.get(60_000), Some(&Count(1)));
/// assert_eq!(orders.latest(), Some((60_000, &Count(1))));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Windowed<M, const WIDTH: u64 = 60_000, const RETAIN: u64 = { u64::MAX }> {
    windows: BTreeMap<i64, M>,
    /// The newest window ever combined, with retention only. A join of its
    /// own: it never moves back, even when a window's value cancels out (a
    /// `Sum` going back to zero), which keeps pruning associative.
    newest: Option<i64>,
}

impl<M: Monoid + Clone, const WIDTH: u64, const RETAIN: u64> Windowed<M, WIDTH, RETAIN> {
    const VALID: () = assert!(
        WIDTH > 0 && WIDTH <= i64::MAX as u64 && RETAIN > 0,
        "Windowed needs 0 < WIDTH <= i64::MAX and RETAIN > 0"
    );

    /// The start of the window that holds event time `timestamp`.
    #[inline]
    pub fn window_start(timestamp: i64) -> i64 {
        let () = Self::VALID;
        let width = WIDTH as i64;
        timestamp.div_euclid(width).saturating_mul(width)
    }

    /// `value` in the window of `timestamp`: the delta of one event.
    pub fn at(timestamp: i64, value: M) -> Self {
        let mut out = Self::default();
        if !value.is_identity() {
            out.windows.insert(Self::window_start(timestamp), value);
            out.prune();
        }
        out
    }

    /// The value of the window that holds `timestamp`.
    pub fn get(&self, timestamp: i64) -> Option<&M> {
        self.windows.get(&Self::window_start(timestamp))
    }

    /// The newest window: its start and its value.
    pub fn latest(&self) -> Option<(i64, &M)> {
        self.windows.last_key_value().map(|(k, v)| (*k, v))
    }

    /// Windows in time order, as `(start, value)`.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (i64, &M)> + '_ {
        self.windows.iter().map(|(k, v)| (*k, v))
    }

    /// How many windows hold a value.
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// Whether no window holds a value.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// Drops windows older than the retention, counted from the newest.
    fn prune(&mut self) {
        if RETAIN == u64::MAX {
            return;
        }
        let newest = match (self.newest, self.windows.keys().next_back()) {
            (Some(a), Some(&b)) => a.max(b),
            (a, b) => match a.or(b.copied()) {
                Some(n) => n,
                None => return,
            },
        };
        self.newest = Some(newest);
        let span = (RETAIN - 1).saturating_mul(WIDTH).min(i64::MAX as u64) as i64;
        let oldest_kept = newest.saturating_sub(span);
        if self.windows.keys().next().is_some_and(|&k| k < oldest_kept) {
            self.windows = self.windows.split_off(&oldest_kept);
        }
    }

    /// Rebuilds the canonical form from arbitrary `(timestamp, value)` pairs.
    fn from_pairs(pairs: impl IntoIterator<Item = (i64, M)>) -> Self {
        let mut out = Self::default();
        for (ts, value) in pairs {
            out.combine_owned(Self::at(ts, value));
        }
        out
    }
}

impl<M: Monoid + Clone, const WIDTH: u64, const RETAIN: u64> Semigroup
    for Windowed<M, WIDTH, RETAIN>
{
    fn combine(&mut self, other: &Self) {
        self.newest = self.newest.max(other.newest);
        for (start, value) in &other.windows {
            match self.windows.get_mut(start) {
                Some(mine) => {
                    mine.combine(value);
                    if mine.is_identity() {
                        self.windows.remove(start);
                    }
                }
                None => {
                    self.windows.insert(*start, value.clone());
                }
            }
        }
        self.prune();
    }

    fn combine_owned(&mut self, other: Self) {
        self.newest = self.newest.max(other.newest);
        for (start, value) in other.windows {
            match self.windows.get_mut(&start) {
                Some(mine) => {
                    mine.combine_owned(value);
                    if mine.is_identity() {
                        self.windows.remove(&start);
                    }
                }
                None => {
                    self.windows.insert(start, value);
                }
            }
        }
        self.prune();
    }
}

impl<M: Monoid + Clone, const WIDTH: u64, const RETAIN: u64> Monoid for Windowed<M, WIDTH, RETAIN> {
    fn identity() -> Self {
        Self::default()
    }
    fn is_identity(&self) -> bool {
        self.windows.is_empty() && self.newest.is_none()
    }
}

impl<M, const WIDTH: u64, const RETAIN: u64> Default for Windowed<M, WIDTH, RETAIN> {
    fn default() -> Self {
        Windowed {
            windows: BTreeMap::new(),
            newest: None,
        }
    }
}

impl<M: Monoid + Commutative + Clone, const W: u64, const R: u64> Commutative
    for Windowed<M, W, R>
{
}
impl<M: Monoid + Idempotent + Clone, const W: u64, const R: u64> Idempotent for Windowed<M, W, R> {}

/// The persisted form: `{"windows": [[start, value], …], "newest": start}`
/// (`newest` is `null` without a retention). Every field is always written:
/// postcard, the compact binary form, is not self-describing.
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
struct Persisted<M> {
    #[serde(deserialize_with = "crate::serde_pairs::deserialize")]
    #[serde(bound(deserialize = "M: serde::Deserialize<'de>"))]
    windows: BTreeMap<i64, M>,
    #[serde(default)]
    newest: Option<i64>,
}

#[cfg(feature = "serde")]
impl<M: serde::Serialize + Clone, const W: u64, const R: u64> serde::Serialize
    for Windowed<M, W, R>
{
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct Ref<'a, M: serde::Serialize> {
            #[serde(serialize_with = "crate::serde_pairs::serialize")]
            windows: &'a BTreeMap<i64, M>,
            newest: Option<i64>,
        }
        Ref {
            windows: &self.windows,
            newest: self.newest,
        }
        .serialize(s)
    }
}

/// Decoding re-canonicalizes: misaligned starts are moved into their window,
/// identity values dropped, and the retention applied.
#[cfg(feature = "serde")]
impl<'de, M, const W: u64, const R: u64> serde::Deserialize<'de> for Windowed<M, W, R>
where
    M: Monoid + Clone + serde::Deserialize<'de>,
{
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let p: Persisted<M> = serde::Deserialize::deserialize(d)?;
        let mut out = Self::from_pairs(p.windows);
        if R != u64::MAX {
            out.newest = out.newest.max(p.newest.map(Self::window_start));
            out.prune();
        }
        Ok(out)
    }
}

#[cfg(feature = "laws")]
impl<M, const W: u64, const R: u64> quickcheck::Arbitrary for Windowed<M, W, R>
where
    M: Monoid + Clone + quickcheck::Arbitrary,
{
    fn arbitrary(g: &mut quickcheck::Gen) -> Self {
        let pairs: Vec<(i8, M)> = quickcheck::Arbitrary::arbitrary(g);
        // Timestamps spread over a few windows either side of zero.
        Self::from_pairs(
            pairs
                .into_iter()
                .map(|(t, m)| (i64::from(t) * (W as i64 / 16).max(1), m)),
        )
    }
    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        let pairs: Vec<(i64, M)> = self.windows.clone().into_iter().collect();
        let newest = self.newest;
        Box::new(pairs.shrink().map(move |p| {
            let mut out = Self::from_pairs(p);
            out.newest = out.newest.max(newest);
            out.prune();
            out
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Count, Max, Sum};

    #[test]
    fn negative_time_floors() {
        assert_eq!(Windowed::<Count, 10>::window_start(-1), -10);
        assert_eq!(Windowed::<Count, 10>::window_start(9), 0);
    }

    #[test]
    fn retention_keeps_the_newest_windows_whatever_the_order() {
        type Last3 = Windowed<Max<u8>, 10, 3>;
        let deltas: Vec<Last3> = (0..10)
            .map(|i| Windowed::at(i * 10, Max(i as u8)))
            .collect();
        let forward = Last3::fold(deltas.clone());
        let backward = Last3::fold(deltas.into_iter().rev());
        assert_eq!(forward, backward);
        assert_eq!(
            forward.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            vec![70, 80, 90]
        );
    }

    #[test]
    fn a_cancelled_newest_window_still_bounds_retention() {
        type Last2 = Windowed<Sum<i32>, 10, 2>;
        let (a, b, c) = (
            Last2::at(90, Sum(1)),
            Last2::at(90, Sum(-1)),
            Last2::at(0, Sum(5)),
        );
        let left = a.clone().combined(&b).combined(&c);
        let right = a.combined(&b.combined(&c));
        assert_eq!(left, right);
        assert!(left.is_empty() && !left.is_identity());
    }

    #[test]
    fn identity_windows_vanish() {
        let w = Windowed::<Sum<i32>, 10>::at(5, Sum(3)).combined(&Windowed::at(7, Sum(-3)));
        assert!(w.is_identity());
    }
}
