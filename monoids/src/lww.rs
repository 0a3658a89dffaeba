//! [`LastWriteWins`]: a register keeping the latest write.

use crate::{Commutative, Idempotent, Monoid, Semigroup};

/// A last-write-wins register: of all writes seen, keeps the one with the
/// greatest `(timestamp, actor)`; on a tie of both, the greatest value, so
/// that combine never depends on delivery order.
///
/// - identity: the empty register (no write, [`get`](Self::get) is `None`);
/// - laws: commutative and idempotent (a join-semilattice: it is the
///   maximum under the total order `(timestamp, actor, value)`);
/// - a write with a smaller timestamp than the current one is ignored, so
///   timestamps must come from the events (event time or a log offset),
///   not from the clock of the process that happens to apply them;
/// - serialized as `null` or `{"timestamp": t, "actor": a, "value": v}`
///   (keep timestamps below 2⁶³ for BSON).
///
/// # Examples
///
/// ```
/// use accrete_monoids::{LastWriteWins, Monoid, Semigroup};
///
/// let mut email = LastWriteWins::new(100, 1, "old@example.com");
/// email.combine(&LastWriteWins::new(250, 2, "new@example.com"));
/// email.combine(&LastWriteWins::new(180, 1, "stale@example.com")); // arrives late
/// assert_eq!(email.get(), Some(&"new@example.com"));
///
/// email.set(300, 1, "newest@example.com");
/// assert_eq!(email.timestamp(), Some(300));
/// assert_eq!(LastWriteWins::<String>::identity().get(), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct LastWriteWins<T> {
    write: Option<Write<T>>,
}

/// Field order is the comparison order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
struct Write<T> {
    timestamp: u64,
    actor: u64,
    value: T,
}

impl<T> Default for LastWriteWins<T> {
    fn default() -> Self {
        LastWriteWins::empty()
    }
}

impl<T> LastWriteWins<T> {
    /// The empty register: the identity.
    #[inline]
    pub const fn empty() -> Self {
        LastWriteWins { write: None }
    }

    /// A register holding one write: the delta of that write.
    #[inline]
    pub const fn new(timestamp: u64, actor: u64, value: T) -> Self {
        LastWriteWins {
            write: Some(Write {
                timestamp,
                actor,
                value,
            }),
        }
    }

    /// The latest value, if any.
    #[inline]
    pub fn get(&self) -> Option<&T> {
        self.write.as_ref().map(|w| &w.value)
    }

    /// The timestamp of the latest write, if any.
    #[inline]
    pub fn timestamp(&self) -> Option<u64> {
        self.write.as_ref().map(|w| w.timestamp)
    }

    /// The actor of the latest write, if any.
    #[inline]
    pub fn actor(&self) -> Option<u64> {
        self.write.as_ref().map(|w| w.actor)
    }

    /// The latest value, if any.
    #[inline]
    pub fn into_inner(self) -> Option<T> {
        self.write.map(|w| w.value)
    }
}

impl<T: Ord> LastWriteWins<T> {
    /// Writes `value`, unless a later write is already there. Returns
    /// whether the register changed.
    pub fn set(&mut self, timestamp: u64, actor: u64, value: T) -> bool {
        let write = Write {
            timestamp,
            actor,
            value,
        };
        if self.write.as_ref().is_none_or(|current| write > *current) {
            self.write = Some(write);
            true
        } else {
            false
        }
    }
}

/// The greater write by `(timestamp, actor, value)`.
impl<T: Ord + Clone> Semigroup for LastWriteWins<T> {
    #[inline]
    fn combine(&mut self, other: &Self) {
        if self.loses_to(other) {
            self.write.clone_from(&other.write);
        }
    }

    #[inline]
    fn combine_owned(&mut self, other: Self) {
        if self.loses_to(&other) {
            self.write = other.write;
        }
    }
}

impl<T: Ord> LastWriteWins<T> {
    /// Whether `other` holds a write greater than ours.
    #[inline]
    fn loses_to(&self, other: &Self) -> bool {
        other
            .write
            .as_ref()
            .is_some_and(|theirs| self.write.as_ref().is_none_or(|mine| theirs > mine))
    }
}

impl<T: Ord + Clone> Monoid for LastWriteWins<T> {
    #[inline]
    fn identity() -> Self {
        LastWriteWins::empty()
    }
    #[inline]
    fn is_identity(&self) -> bool {
        self.write.is_none()
    }
}

impl<T: Ord + Clone> Commutative for LastWriteWins<T> {}
impl<T: Ord + Clone> Idempotent for LastWriteWins<T> {}

#[cfg(feature = "laws")]
impl<T: quickcheck::Arbitrary + Ord> quickcheck::Arbitrary for LastWriteWins<T> {
    fn arbitrary(g: &mut quickcheck::Gen) -> Self {
        use crate::dot::arb;
        let mut register = LastWriteWins::empty();
        for _ in 0..arb::op_count(g) % 4 {
            register.set(arb::timestamp(g), arb::actor(g), T::arbitrary(g));
        }
        register
    }
    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        match &self.write {
            None => quickcheck::empty_shrinker(),
            Some(w) => {
                let (timestamp, actor) = (w.timestamp, w.actor);
                Box::new(
                    std::iter::once(LastWriteWins::empty()).chain(
                        w.value
                            .shrink()
                            .map(move |value| LastWriteWins::new(timestamp, actor, value)),
                    ),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_break_by_actor_then_value() {
        let a = LastWriteWins::new(5, 1, "a");
        let b = LastWriteWins::new(5, 2, "b");
        assert_eq!(a.clone().combined(&b).get(), Some(&"b"));
        assert_eq!(b.clone().combined(&a).get(), Some(&"b"));
        let c = LastWriteWins::new(5, 2, "c");
        assert_eq!(b.clone().combined(&c), c.clone().combined(&b));
        assert_eq!(b.combined(&c).get(), Some(&"c"));
        assert_eq!(a.actor(), Some(1));
    }

    #[test]
    fn set_ignores_older_writes() {
        let mut r = LastWriteWins::empty();
        assert!(r.set(10, 0, 1));
        assert!(!r.set(9, 7, 2));
        assert!(!r.set(10, 0, 1));
        assert!(r.set(10, 1, 0));
        assert_eq!(r.into_inner(), Some(0));
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serialized_form() {
        let r = LastWriteWins::new(3, 1, "x");
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"timestamp":3,"actor":1,"value":"x"}"#
        );
        assert_eq!(
            serde_json::to_string(&LastWriteWins::<u8>::empty()).unwrap(),
            "null"
        );
    }
}

#[cfg(all(test, feature = "laws"))]
mod laws {
    use super::*;
    use crate::laws::Laws;
    use crate::test_util::Small;

    // `LastWriteWins<u8>` and `LastWriteWins<String>`: tests/laws.rs.
    #[test]
    fn lww_of_a_small_domain_is_a_semilattice() {
        Laws::<LastWriteWins<Small>>::new("LastWriteWins<Small>")
            .commutative()
            .idempotent()
            .assert();
    }
}
