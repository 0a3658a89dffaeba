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
fn compile_errors_name_the_field() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}

#[cfg(feature = "laws")]
mod laws {
    use super::*;
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
