//! `#[derive(Monoid)]`: field-wise laws, markers that follow the fields,
//! and compile errors that name the offending field.

use accrete_monoids::{Commutative, Count, Group, Idempotent, Max, Monoid, Semigroup, Sum};
use std::collections::BTreeSet;

#[derive(Monoid, Debug, Clone, PartialEq)]
#[monoid(commutative, idempotent)]
struct Seen {
    tags: BTreeSet<String>,
    newest: Max<u64>,
}

#[derive(Monoid, Debug, Clone, PartialEq)]
struct Totals(Count, Sum<i64>);

#[derive(Monoid, Debug, Clone, PartialEq)]
#[monoid(group)]
struct Balance {
    cents: Sum<i64>,
    moves: i32,
}

#[derive(Monoid, Debug, Clone, PartialEq)]
struct Generic<T: Ord + Clone> {
    members: BTreeSet<T>,
}

#[derive(Monoid, Debug, Clone, PartialEq)]
struct Nothing;

fn is_commutative<T: Commutative>() {}
fn is_idempotent<T: Idempotent>() {}
fn is_group<T: Group>() {}

#[test]
fn combines_field_by_field() {
    let mut s = Seen::identity();
    assert!(s.is_identity());
    s.combine(&Seen {
        tags: BTreeSet::from(["a".into()]),
        newest: Max(5),
    });
    s.combine_owned(Seen {
        tags: BTreeSet::from(["b".into()]),
        newest: Max(3),
    });
    assert_eq!(s.tags.len(), 2);
    assert_eq!(s.newest, Max(5));
    assert!(!s.is_identity());

    let t = Totals::fold([Totals(Count(1), Sum(5)), Totals(Count(2), Sum(-1))]);
    assert_eq!(t, Totals(Count(3), Sum(4)));

    let b = Balance {
        cents: Sum(10),
        moves: 1,
    }
    .inverse();
    assert_eq!(
        b,
        Balance {
            cents: Sum(-10),
            moves: -1
        }
    );

    let g = Generic::<u8>::fold([
        Generic {
            members: BTreeSet::from([1]),
        },
        Generic {
            members: BTreeSet::from([2]),
        },
    ]);
    assert_eq!(g.members, BTreeSet::from([1, 2]));
    assert!(Nothing::identity().combined(&Nothing).is_identity());
}

#[test]
fn markers_follow_the_fields() {
    is_commutative::<Seen>();
    is_idempotent::<Seen>();
    is_commutative::<Totals>();
    is_group::<Balance>();
    is_commutative::<Generic<u8>>();
    is_idempotent::<Generic<u8>>();
}

#[test]
fn field_wise_names_the_fields_that_differ() {
    use accrete_monoids::FieldWise;

    assert_eq!(Seen::FIELD_NAMES, ["tags", "newest"]);
    assert_eq!(Totals::FIELD_NAMES, ["0", "1"]);
    assert!(Nothing::FIELD_NAMES.is_empty());
    let a = Seen {
        tags: BTreeSet::from(["a".into()]),
        newest: Max(5),
    };
    let b = Seen {
        newest: Max(6),
        ..a.clone()
    };
    let diff = a.differing_fields(&b);
    assert_eq!(diff.len(), 1, "{diff:?}");
    assert_eq!(
        diff[0].to_string(),
        "field `newest` differs: left Max(5), right Max(6)"
    );
    assert!(a.differing_fields(&a).is_empty());
    assert_eq!(
        Totals(Count(1), Sum(2))
            .differing_fields(&Totals(Count(2), Sum(3)))
            .iter()
            .map(|d| d.field)
            .collect::<Vec<_>>(),
        ["0", "1"]
    );
    // Without `laws`, nothing shrinks (and quickcheck is not compiled in).
    #[cfg(not(feature = "laws"))]
    assert!(Totals(Count(4), Sum(-3)).shrink_fields().is_empty());
}

#[test]
fn compile_errors_name_the_field() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}

#[cfg(feature = "laws")]
mod laws {
    use super::*;
    use accrete_monoids::FieldWise;
    use accrete_monoids::laws::{Arbitrary, Gen};

    fn seen(g: &mut Gen) -> Seen {
        Seen {
            tags: BTreeSet::<String>::arbitrary(g),
            newest: Max(u64::arbitrary(g) >> 2),
        }
    }
    fn totals(g: &mut Gen) -> Totals {
        Totals(Count::arbitrary(g), Sum(i64::arbitrary(g)))
    }

    accrete_monoids::laws!(derived_seen: Seen = seen => commutative, idempotent);
    accrete_monoids::laws!(derived_totals: Totals = totals => commutative);

    /// With `laws`, every field whose type is `Arbitrary` shrinks, one field
    /// per candidate; a field of a type parameter does not.
    #[test]
    fn field_wise_shrinks_one_field_at_a_time() {
        let t = Totals(Count(4), Sum(-3));
        let smaller = t.shrink_fields();
        assert!(smaller.contains(&Totals(Count(0), Sum(-3))), "{smaller:?}");
        assert!(smaller.contains(&Totals(Count(4), Sum(0))), "{smaller:?}");
        assert!(
            smaller.iter().all(|s| s.0 == t.0 || s.1 == t.1),
            "{smaller:?}"
        );
        assert!(Totals::identity().shrink_fields().is_empty());

        let g = Generic {
            members: BTreeSet::from([1_u8, 2]),
        };
        assert!(g.shrink_fields().is_empty());
        assert!(Nothing.shrink_fields().is_empty());
    }

    /// `laws!` picks the field-wise shrinker and diff up for a derived struct.
    #[test]
    fn laws_uses_the_field_wise_view() {
        use accrete_monoids::laws::Law;
        // Seen's laws hold: a pinned run passes every case.
        derived_seen::checker()
            .seed(1)
            .tests(32)
            .check_law(Law::Commutativity)
            .unwrap();
    }
}

// Serde for the law harness's round trips, kept out of the way above.
#[cfg(feature = "laws")]
mod serde_impls {
    use super::*;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    impl Serialize for Seen {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            (&self.tags, &self.newest).serialize(s)
        }
    }
    impl<'de> Deserialize<'de> for Seen {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let (tags, newest) = Deserialize::deserialize(d)?;
            Ok(Seen { tags, newest })
        }
    }
    impl Serialize for Totals {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            (&self.0, &self.1).serialize(s)
        }
    }
    impl<'de> Deserialize<'de> for Totals {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let (a, b) = Deserialize::deserialize(d)?;
            Ok(Totals(a, b))
        }
    }
}
