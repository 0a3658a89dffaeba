//! [`AutomergeDoc`]: an Automerge document whose merge is `combine`.

use automerge::{Automerge, ChangeHash};

use crate::{Commutative, Idempotent, Monoid, Semigroup};

/// An [Automerge](https://automerge.org) document as a monoid: `combine` is
/// Automerge's merge, so a read model can hold rich JSON-like state (maps,
/// lists, text, counters) edited concurrently by many writers.
///
/// - identity: the empty document (no changes);
/// - laws: commutative, idempotent: a document is a set of changes and merge
///   is their union, so equality compares the change sets (their heads), not
///   the actors or the in-memory layout;
/// - persisted form: Automerge's compressed binary `save()` format (a BSON
///   binary in MongoDB).
///
/// A change that cannot be applied (an actor that reused a sequence number
/// for two different changes, which only a buggy writer produces) is skipped;
/// the rest of the merge still applies. [`AutomergeDoc::merge_checked`]
/// reports such errors instead.
///
/// # Examples
///
/// ```
/// use accrete_monoids::{AutomergeDoc, Monoid, Semigroup};
/// use automerge::{transaction::Transactable, ActorId, ReadDoc, ROOT};
///
/// let mut a = AutomergeDoc::identity();
/// a.edit(ActorId::from(&[1][..]), |tx| tx.put(ROOT, "title", "draft")).unwrap();
/// let mut b = AutomergeDoc::identity();
/// b.edit(ActorId::from(&[2][..]), |tx| tx.put(ROOT, "owner", "ana")).unwrap();
///
/// let merged = a.clone().combined(&b);
/// assert_eq!(merged, b.combined(&a)); // commutative
/// assert!(merged.doc().get(ROOT, "title").unwrap().is_some());
/// assert!(merged.doc().get(ROOT, "owner").unwrap().is_some());
/// ```
#[derive(Clone, Default)]
pub struct AutomergeDoc {
    doc: Automerge,
}

impl AutomergeDoc {
    /// Wraps a document.
    pub fn new(doc: Automerge) -> Self {
        AutomergeDoc { doc }
    }

    /// The document.
    pub fn doc(&self) -> &Automerge {
        &self.doc
    }

    /// The document, mutably: to make changes with your own transactions.
    pub fn doc_mut(&mut self) -> &mut Automerge {
        &mut self.doc
    }

    /// The document, consuming the wrapper.
    pub fn into_inner(self) -> Automerge {
        self.doc
    }

    /// Makes one change as `actor` and commits it.
    ///
    /// # Errors
    ///
    /// Whatever the edit returns; the change is then rolled back.
    pub fn edit<T>(
        &mut self,
        actor: automerge::ActorId,
        f: impl FnOnce(
            &mut automerge::transaction::Transaction<'_>,
        ) -> Result<T, automerge::AutomergeError>,
    ) -> Result<T, automerge::AutomergeError> {
        self.doc.set_actor(actor);
        let mut tx = self.doc.transaction();
        match f(&mut tx) {
            Ok(value) => {
                tx.commit();
                Ok(value)
            }
            Err(e) => {
                tx.rollback();
                Err(e)
            }
        }
    }

    /// Merges `other` into `self`, reporting a change that could not be
    /// applied.
    ///
    /// # Errors
    ///
    /// [`automerge::AutomergeError`] from the first change that failed; the
    /// changes before it are applied.
    pub fn merge_checked(&mut self, other: &Self) -> Result<(), automerge::AutomergeError> {
        let changes = self.doc.get_changes_added(&other.doc);
        self.doc.apply_changes(changes)
    }

    /// The change hashes at the tips of the history, sorted.
    pub fn heads(&self) -> Vec<ChangeHash> {
        let mut heads = self.doc.get_heads();
        heads.sort_unstable();
        heads
    }
}

impl std::fmt::Debug for AutomergeDoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AutomergeDoc")
            .field("heads", &self.heads())
            .finish()
    }
}

impl PartialEq for AutomergeDoc {
    fn eq(&self, other: &Self) -> bool {
        self.heads() == other.heads()
    }
}
impl Eq for AutomergeDoc {}

impl Semigroup for AutomergeDoc {
    fn combine(&mut self, other: &Self) {
        let changes = self.doc.get_changes_added(&other.doc);
        if self.doc.apply_changes(changes.clone()).is_err() {
            // Apply what can be applied, one change at a time.
            for change in changes {
                let _ = self.doc.apply_changes([change]);
            }
        }
    }
}

impl Monoid for AutomergeDoc {
    fn identity() -> Self {
        AutomergeDoc::default()
    }
    fn is_identity(&self) -> bool {
        self.doc.get_heads().is_empty()
    }
}

impl Commutative for AutomergeDoc {}
impl Idempotent for AutomergeDoc {}

#[cfg(feature = "serde")]
impl serde::Serialize for AutomergeDoc {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.doc.save())
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for AutomergeDoc {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Bytes;
        impl<'de> serde::de::Visitor<'de> for Bytes {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("the bytes of a saved Automerge document")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(b) = seq.next_element()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        let bytes = d.deserialize_bytes(Bytes)?;
        let doc = Automerge::load(&bytes).map_err(|e| {
            serde::de::Error::custom(format!("not a valid Automerge document: {e}"))
        })?;
        Ok(AutomergeDoc { doc })
    }
}

#[cfg(feature = "laws")]
impl quickcheck::Arbitrary for AutomergeDoc {
    fn arbitrary(g: &mut quickcheck::Gen) -> Self {
        use automerge::transaction::Transactable;
        // Every generated document is its own writer (a fresh actor), editing
        // a few shared keys, so merges of different documents conflict.
        // Real writers never reuse an actor's sequence numbers; neither do we.
        let mut doc = AutomergeDoc::identity();
        static WRITERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let writer = WRITERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let actor = automerge::ActorId::from(&writer.to_le_bytes()[..]);
        for _ in 0..usize::arbitrary(g) % 4 {
            let key = ["a", "b", "c"][usize::arbitrary(g) % 3];
            let value = i64::from(i16::arbitrary(g));
            let _ = doc.edit(actor.clone(), |tx| tx.put(automerge::ROOT, key, value));
        }
        doc
    }
}
