//! Pushdown combine: a state's `combine` expressed as MongoDB update
//! operators, so that a write is one blind upsert whose server-side effect
//! equals the in-process [`Semigroup::combine`](crate::monoids::Semigroup).
//!
//! | state | stored form | operator |
//! | --- | --- | --- |
//! | [`Sum`], [`Count`] | a number | `$inc` |
//! | [`Max`], [`Any`] | a value | `$max` |
//! | [`Min`], [`All`] | a value | `$min` |
//! | [`GSet`] | an array | `$addToSet` with `$each` |
//! | [`BitOr`] | an integer | `$bit: {or: …}` |
//! | `HashMap<String, V>`, `BTreeMap<String, V>` | a document | `V`'s operator at `path.key` |
//! | a struct with `#[derive(Pushdown)]` | a document | each field's operator at `path.field` |
//!
//! Concurrent writers need no read-modify-write: the server applies each
//! operator atomically, and these operators commute like the monoids they
//! stand for. `tests/mongodb.rs` checks, against a real server, that the
//! stored result of every pushdown equals `combine` (the pushdown law).
//!
//! Two exceptions fall back to read-modify-write, per delta: a map key that
//! MongoDB cannot use as a path (empty, containing `.`, or starting with
//! `$`), and an integer `$inc` that would leave the range of the integer
//! type ([`Sum`] wraps; MongoDB refuses an `i64` overflow and widens an
//! `i32` to an `i64`). The latter is decided by the server: an integer
//! `$inc` carries a [condition](Update::require) that the stored value is
//! far enough from the bound, and a write whose condition does not hold is
//! read, combined in process (wrapping) and written back.
//!
//! ```
//! use accrete::monoids::{Max, Sum};
//! use accrete::store::pushdown::{Pushdown, Update};
//!
//! let mut update = Update::default();
//! assert!(Sum(3i64).push_down("s.total", &mut update));
//! assert!(Max(7i64).push_down("s.peak", &mut update));
//! assert_eq!(
//!     update.to_document().to_string(),
//!     r#"{ "$inc": { "s.total": 3 }, "$max": { "s.peak": 7 } }"#
//! );
//! // A `Max` that does not grow changes nothing: the write carries the
//! // condition under which it changes the stored value.
//! assert!(Max(7i64).changes_when("s.peak").is_some());
//! assert!(Sum(3i64).changes_when("s.total").is_none());
//! ```

use std::collections::{BTreeMap, HashMap};

pub use accrete_mongodb_derive::Pushdown;
pub use bson::Document;
use bson::{Bson, doc};

use crate::monoids::{All, Any, BitOr, Count, GSet, Max, Min, Monoid, Sum};

/// Update operators being built for one document: operator name to
/// `{path: value}`, and the conditions under which they apply as `combine`
/// does (a filter on the stored document).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Update {
    ops: BTreeMap<&'static str, Document>,
    conditions: Document,
}

impl Update {
    /// Adds `{op: {path: value}}`.
    pub fn push(&mut self, op: &'static str, path: &str, value: Bson) {
        self.ops
            .entry(op)
            .or_default()
            .insert(path.to_string(), value);
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Adds a condition on the stored document, `{path: condition}`: the
    /// operators equal `combine` only where it holds (an `$inc` that must
    /// not overflow). A write whose conditions do not hold is not applied;
    /// the runtime then reads, combines in process and writes back.
    pub fn require(&mut self, path: &str, condition: Document) {
        self.conditions.insert(path.to_string(), condition);
    }

    /// The conditions added by [`require`](Self::require), as a filter
    /// (empty when there are none), taken out of `self`.
    pub fn take_conditions(&mut self) -> Document {
        std::mem::take(&mut self.conditions)
    }

    /// The update document, e.g. `{$inc: {"s.a": 1}, $max: {"s.b": 2}}`.
    pub fn to_document(&self) -> Document {
        let mut d = Document::new();
        for (op, fields) in &self.ops {
            d.insert(*op, fields.clone());
        }
        d
    }

    /// Moves the operators into `target` (merging fields of the same
    /// operator).
    pub fn merge_into(self, target: &mut Document) {
        for (op, fields) in self.ops {
            match target.get_mut(op) {
                Some(Bson::Document(existing)) => existing.extend(fields),
                _ => {
                    target.insert(op, fields);
                }
            }
        }
    }
}

/// A state whose `combine` MongoDB can apply itself. See the [module
/// docs](self) for the supported states, and derive it for structs with
/// `#[derive(Pushdown)]`.
///
/// The contract, checked against a real server by the pushdown law: for a
/// stored form `bson(s)` at `path`, applying the operators that
/// `delta.push_down(path, …)` adds yields `bson(s.combined(delta))`; and,
/// when [`changes_when`](Pushdown::changes_when) returns a filter, the filter
/// matches the stored document exactly when `s.combined(delta) != s`.
pub trait Pushdown: Monoid {
    /// Adds to `update` the operators whose effect on the stored form at
    /// `path` is `combine(self)`. Returns `false` when this delta cannot be
    /// pushed down (the runtime then reads, combines and writes); `update`
    /// is then to be discarded.
    fn push_down(&self, path: &str, update: &mut Update) -> bool;

    /// For an idempotent delta (applying it twice equals applying it once,
    /// like a `$max`): a filter matching exactly the stored documents the
    /// write would change. `None` when the write always changes the state
    /// (a nonzero `$inc`): such a delta is not idempotent, and the runtime
    /// guards it with the exactly-once check instead.
    fn changes_when(&self, path: &str) -> Option<Document>;
}

/// Whether a map key can be a MongoDB field name inside a dotted path.
fn usable_key(key: &str) -> bool {
    !key.is_empty() && !key.contains('.') && !key.starts_with('$') && !key.contains('\0')
}

fn to_bson<T: serde::Serialize + ?Sized>(value: &T) -> Option<Bson> {
    bson::serialize_to_bson(value).ok()
}

/// An integer `$inc` of `delta` at `path`, for a type whose values lie in
/// `[min, max]`: applied by the server only when the stored value stays in
/// range (`$not` so that a missing field, which reads as 0, matches). Out of
/// range, [`Sum`] wraps where MongoDB would refuse (`i64`) or widen (`i32`
/// to `i64`, `u32` past `u32::MAX`): the write falls back to
/// read-modify-write.
fn int_inc(delta: i128, min: i128, max: i128, path: &str, update: &mut Update) -> bool {
    let Ok(v) = i64::try_from(delta) else {
        // An `$inc` of more than i64::MAX cannot be written.
        return false;
    };
    let value = match i32::try_from(v) {
        Ok(v32) if min >= i128::from(i32::MIN) && max <= i128::from(i32::MAX) => Bson::Int32(v32),
        _ => Bson::Int64(v),
    };
    // The bound, in the form the value is stored in.
    let bound = |b: i128| match value {
        Bson::Int32(_) => Bson::Int32(b as i32),
        _ => Bson::Int64(b as i64),
    };
    update.push("$inc", path, value.clone());
    if delta > 0 {
        update.require(path, doc! { "$not": { "$gt": bound(max - delta) } });
    } else if delta < 0 {
        update.require(path, doc! { "$not": { "$lt": bound(min - delta) } });
    }
    true
}

macro_rules! int_sum_pushdown {
    // `$max`: the largest value the stored form holds (a `u64` is stored
    // as an `i64`).
    ($($t:ty => $max:expr),* $(,)?) => {$(
        impl Pushdown for Sum<$t> {
            fn push_down(&self, path: &str, update: &mut Update) -> bool {
                int_inc(i128::from(self.0), i128::from(<$t>::MIN), $max, path, update)
            }
            fn changes_when(&self, _path: &str) -> Option<Document> {
                None
            }
        }
    )*};
}
int_sum_pushdown! {
    i32 => i128::from(i32::MAX),
    u32 => i128::from(u32::MAX),
    i64 => i128::from(i64::MAX),
    u64 => i128::from(i64::MAX),
}

impl Pushdown for Sum<f64> {
    fn push_down(&self, path: &str, update: &mut Update) -> bool {
        update.push("$inc", path, Bson::Double(self.0));
        true
    }
    fn changes_when(&self, _path: &str) -> Option<Document> {
        None
    }
}

impl Pushdown for Count {
    fn push_down(&self, path: &str, update: &mut Update) -> bool {
        Sum(self.0).push_down(path, update)
    }
    fn changes_when(&self, _path: &str) -> Option<Document> {
        None
    }
}

/// `$max`/`$min`-like operators: idempotent, changing the stored value only
/// when it is missing or on the wrong side of the delta.
fn order_pushdown<T: serde::Serialize>(
    op: &'static str,
    value: &T,
    path: &str,
    update: &mut Update,
) -> bool {
    match to_bson(value) {
        Some(v) => {
            update.push(op, path, v);
            true
        }
        None => false,
    }
}

fn order_condition<T: serde::Serialize>(
    no_change: &'static str,
    value: &T,
    path: &str,
) -> Option<Document> {
    let v = to_bson(value)?;
    Some(doc! { path: { "$not": { no_change: v } } })
}

macro_rules! order_impls {
    ($($ty:ident<$t:ident> => $op:literal, $keep:literal;)*) => {$(
        impl<$t> Pushdown for $ty<$t>
        where
            $ty<$t>: Monoid,
            $t: serde::Serialize,
        {
            fn push_down(&self, path: &str, update: &mut Update) -> bool {
                order_pushdown($op, &self.0, path, update)
            }
            fn changes_when(&self, path: &str) -> Option<Document> {
                order_condition($keep, &self.0, path)
            }
        }
    )*};
}
order_impls! {
    Max<T> => "$max", "$gte";
    Min<T> => "$min", "$lte";
}

impl Pushdown for Any {
    fn push_down(&self, path: &str, update: &mut Update) -> bool {
        order_pushdown("$max", &self.0, path, update)
    }
    fn changes_when(&self, path: &str) -> Option<Document> {
        order_condition("$gte", &self.0, path)
    }
}

impl Pushdown for All {
    fn push_down(&self, path: &str, update: &mut Update) -> bool {
        order_pushdown("$min", &self.0, path, update)
    }
    fn changes_when(&self, path: &str) -> Option<Document> {
        order_condition("$lte", &self.0, path)
    }
}

impl<T> Pushdown for GSet<T>
where
    GSet<T>: Monoid,
    T: serde::Serialize,
{
    fn push_down(&self, path: &str, update: &mut Update) -> bool {
        let Some(items) = self.iter().map(to_bson).collect::<Option<Vec<_>>>() else {
            return false;
        };
        update.push("$addToSet", path, doc! { "$each": items }.into());
        true
    }
    fn changes_when(&self, path: &str) -> Option<Document> {
        let items = self.iter().map(to_bson).collect::<Option<Vec<_>>>()?;
        Some(doc! { path: { "$not": { "$all": items } } })
    }
}

macro_rules! bit_pushdown {
    ($($t:ty),*) => {$(
        impl Pushdown for BitOr<$t> {
            fn push_down(&self, path: &str, update: &mut Update) -> bool {
                update.push("$bit", path, doc! { "or": Bson::from(self.0 as i64) }.into());
                true
            }
            fn changes_when(&self, path: &str) -> Option<Document> {
                Some(doc! { path: { "$not": { "$bitsAllSet": self.0 as i64 } } })
            }
        }
    )*};
}
// Types whose every value fits an i64, so the stored bits are exact.
bit_pushdown!(u8, u16, u32, i32, i64);

/// Pushes each entry down at `path.key`; `None` if a key cannot be a path.
/// Entries holding the identity are pushed too: combining a standard map
/// inserts them (`{"fr": Sum(0)}` into `{}` gives `{"fr": Sum(0)}`), and the
/// operators create the field with that value.
fn map_push_down<'a, V: Pushdown + 'a>(
    entries: impl Iterator<Item = (&'a String, &'a V)>,
    path: &str,
    update: &mut Update,
) -> bool {
    for (key, value) in entries {
        if !usable_key(key) || !value.push_down(&format!("{path}.{key}"), update) {
            return false;
        }
    }
    true
}

/// Combines the parts' conditions: `None` if any non-identity part always
/// changes the state, otherwise "any part changes it".
pub fn any_changes<'a>(parts: impl IntoIterator<Item = Option<Document>> + 'a) -> Option<Document> {
    let mut conditions = Vec::new();
    for part in parts {
        conditions.push(Bson::Document(part?));
    }
    match conditions.len() {
        1 => match conditions.pop() {
            Some(Bson::Document(d)) => Some(d),
            _ => None,
        },
        // An identity delta changes nothing: a filter that matches nothing.
        0 => Some(doc! { "_id": { "$exists": false } }),
        _ => Some(doc! { "$or": conditions }),
    }
}

macro_rules! map_impls {
    ($($map:ident $(, $s:ident)?;)*) => {$(
        impl<V: Pushdown $(, $s: std::hash::BuildHasher + Default + Clone)?> Pushdown for $map<String, V $(, $s)?>
        where
            $map<String, V $(, $s)?>: Monoid,
        {
            fn push_down(&self, path: &str, update: &mut Update) -> bool {
                map_push_down(self.iter(), path, update)
            }
            fn changes_when(&self, path: &str) -> Option<Document> {
                // An identity entry changes a map that lacks its key.
                any_changes(
                    self.iter()
                        .map(|(k, v)| v.changes_when(&format!("{path}.{k}"))),
                )
            }
        }
    )*};
}
map_impls! {
    HashMap, S;
    BTreeMap;
}

/// What `#[derive(Pushdown)]` expands to for each field: skips identity
/// fields, pushes the others down at `path.name`.
#[doc(hidden)]
pub fn field_push_down<V: Pushdown>(
    value: &V,
    path: &str,
    name: &str,
    update: &mut Update,
) -> bool {
    value.is_identity() || value.push_down(&format!("{path}.{name}"), update)
}

/// What `#[derive(Pushdown)]` expands to for each field's condition.
#[doc(hidden)]
pub fn field_changes_when<V: Pushdown>(
    value: &V,
    path: &str,
    name: &str,
) -> Option<Option<Document>> {
    if value.is_identity() {
        return None;
    }
    Some(value.changes_when(&format!("{path}.{name}")))
}

/// States MongoDB has no operator for: every write of them reads, combines
/// in process, and writes back under the version condition.
macro_rules! read_modify_write {
    ($( [$($g:tt)*] $ty:ty ),* $(,)?) => {$(
        impl<$($g)*> Pushdown for $ty where $ty: Monoid {
            fn push_down(&self, _path: &str, _update: &mut Update) -> bool {
                false
            }
            fn changes_when(&self, _path: &str) -> Option<Document> {
                None
            }
        }
    )*};
}
read_modify_write! {
    [] crate::monoids::Average,
    [] crate::monoids::Moments,
    [const BITS: usize, const K: usize] crate::monoids::Bloom<BITS, K>,
    [const W: usize, const D: usize] crate::monoids::CountMinSketch<W, D>,
    [const A: u16, const B: usize] crate::monoids::DdSketch<A, B>,
    [const P: u8] crate::monoids::HyperLogLog<P>,
    [A] crate::monoids::GCounter<A>,
    [A] crate::monoids::PnCounter<A>,
    [T] crate::monoids::LastWriteWins<T>,
    [K, M] crate::monoids::Map<K, M>,
    [T, A] crate::monoids::MultiValue<T, A>,
    [T, A] crate::monoids::OrSet<T, A>,
    [T, const K: usize] crate::monoids::TopK<T, K>,
    [T] crate::monoids::TwoPhaseSet<T>,
    [M, const WIDTH: u64, const RETAIN: u64] crate::monoids::Windowed<M, WIDTH, RETAIN>,
    [T] crate::monoids::First<T>,
    [T] crate::monoids::Last<T>,
    [T] Option<T>,
}

#[cfg(feature = "automerge")]
read_modify_write! { [] crate::monoids::AutomergeDoc }

/// Declares that your own state type has no MongoDB pushdown: its writes
/// read, combine in process and write back. Needed once per type to serve it
/// from a cluster node.
///
/// ```
/// # use accrete::monoids::{Monoid, Semigroup, Commutative};
/// #[derive(Clone, PartialEq, Debug, Default, serde::Serialize, serde::Deserialize)]
/// struct Latest(u64);
/// impl Semigroup for Latest { fn combine(&mut self, o: &Self) { self.0 = self.0.max(o.0) } }
/// impl Monoid for Latest {
///     fn identity() -> Self { Latest(0) }
///     fn is_identity(&self) -> bool { self.0 == 0 }
/// }
/// impl Commutative for Latest {}
/// accrete::no_pushdown!(Latest);
/// ```
#[macro_export]
macro_rules! no_pushdown {
    ($($ty:ty),* $(,)?) => {$(
        impl $crate::store::pushdown::Pushdown for $ty {
            fn push_down(&self, _: &str, _: &mut $crate::store::pushdown::Update) -> bool {
                false
            }
            fn changes_when(&self, _: &str) -> ::core::option::Option<$crate::store::pushdown::Document> {
                None
            }
        }
    )*};
}
