//! [`FieldWise`]: what `#[derive(Monoid)]` tells the law harness about a
//! struct's fields, so that a counterexample shrinks one field at a time and
//! a failure names the fields that differ.
//!
//! The trait and its derived impl compile without the `laws` feature and
//! without quickcheck: the derived [`shrink_fields`](FieldWise::shrink_fields)
//! finds nothing to shrink then. With `laws` on (in your tests), every field
//! whose type implements quickcheck's `Arbitrary` shrinks.

/// Field-wise access to a struct. `#[derive(Monoid)]` implements it; the
/// law harness (`laws!`, feature `laws`) uses it for every
/// type that implements it.
///
/// # Examples
///
/// ```
/// use accrete_monoids::{Count, FieldWise, Max, Monoid};
///
/// #[derive(Monoid, Debug, Clone, PartialEq)]
/// struct Shipment {
///     parcels: Count,
///     heaviest: Max<u32>,
/// }
///
/// assert_eq!(Shipment::FIELD_NAMES, ["parcels", "heaviest"]);
/// let a = Shipment { parcels: Count(2), heaviest: Max(7) };
/// let b = Shipment { parcels: Count(2), heaviest: Max(9) };
/// let diff = a.differing_fields(&b);
/// assert_eq!(diff.len(), 1);
/// assert_eq!(diff[0].to_string(), "field `heaviest` differs: left Max(7), right Max(9)");
/// ```
pub trait FieldWise: Sized {
    /// The field names in declaration order (`"0"`, `"1"`, … for a tuple
    /// struct).
    const FIELD_NAMES: &'static [&'static str];

    /// Smaller values: each candidate shrinks one field and keeps the
    /// others. The derived impl shrinks every field whose type implements
    /// quickcheck's `Arbitrary` when `accrete-monoids` is built with the
    /// `laws` feature, and needs `Self: Clone`; otherwise (and by default) there
    /// are none. Fields of a generic type parameter do not shrink.
    fn shrink_fields(&self) -> Vec<Self> {
        Vec::new()
    }

    /// The fields whose values differ (by `==`), both sides `Debug`-formatted.
    /// The derived impl compares every field whose type implements
    /// `PartialEq` and `Debug`; by default, none.
    fn differing_fields(&self, other: &Self) -> Vec<FieldDiff> {
        let _ = other;
        Vec::new()
    }
}

/// One field in which two values differ: see
/// [`FieldWise::differing_fields`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDiff {
    /// The field's name (its index for a tuple struct).
    pub field: &'static str,
    /// The left value, `Debug`-formatted.
    pub left: String,
    /// The right value, `Debug`-formatted.
    pub right: String,
}

impl std::fmt::Display for FieldDiff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "field `{}` differs: left {}, right {}",
            self.field, self.left, self.right
        )
    }
}

/// Support for the derived impls: "autoref specialization" probes, which
/// pick a field-wise behaviour when the field's type allows it and fall back
/// to nothing otherwise. Not public API.
#[doc(hidden)]
pub mod __private {
    use std::fmt::Debug;

    /// Wraps a reference for method probing: `(&&Probe(x)).method()` finds
    /// the impl on `&Probe` (bounded) before the one on `Probe` (fallback).
    pub struct Probe<'a, T>(pub &'a T);

    /// Shrinks through `Arbitrary` (only with the `laws` feature).
    pub trait ShrinkArbitrary<T> {
        /// Smaller values of the field.
        fn __accrete_shrink(&self) -> Box<dyn Iterator<Item = T>>;
    }
    #[cfg(feature = "laws")]
    impl<T: quickcheck::Arbitrary> ShrinkArbitrary<T> for &Probe<'_, T> {
        fn __accrete_shrink(&self) -> Box<dyn Iterator<Item = T>> {
            self.0.shrink()
        }
    }
    /// A field that cannot shrink.
    pub trait ShrinkNone<T> {
        /// No smaller values.
        fn __accrete_shrink(&self) -> std::iter::Empty<T>;
    }
    impl<T> ShrinkNone<T> for Probe<'_, T> {
        fn __accrete_shrink(&self) -> std::iter::Empty<T> {
            std::iter::empty()
        }
    }

    /// Clones a value that is `Clone`.
    pub trait CloneSome<T> {
        /// `Some(clone)`.
        fn __accrete_clone(&self) -> Option<T>;
    }
    impl<T: Clone> CloneSome<T> for &Probe<'_, T> {
        fn __accrete_clone(&self) -> Option<T> {
            Some(self.0.clone())
        }
    }
    /// A value that is not `Clone`.
    pub trait CloneNone<T> {
        /// `None`.
        fn __accrete_clone(&self) -> Option<T>;
    }
    impl<T> CloneNone<T> for Probe<'_, T> {
        fn __accrete_clone(&self) -> Option<T> {
            None
        }
    }

    /// Compares a field that is `PartialEq + Debug`.
    pub trait DiffDebug<T> {
        /// Both sides formatted, if they differ.
        fn __accrete_diff(&self, other: &T) -> Option<(String, String)>;
    }
    impl<T: PartialEq + Debug> DiffDebug<T> for &Probe<'_, T> {
        fn __accrete_diff(&self, other: &T) -> Option<(String, String)> {
            (self.0 != other).then(|| (format!("{:?}", self.0), format!("{other:?}")))
        }
    }
    /// A field that cannot be compared or shown.
    pub trait DiffNone<T> {
        /// `None`.
        fn __accrete_diff(&self, other: &T) -> Option<(String, String)>;
    }
    impl<T> DiffNone<T> for Probe<'_, T> {
        fn __accrete_diff(&self, _: &T) -> Option<(String, String)> {
            None
        }
    }
}
