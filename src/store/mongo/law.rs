//! The pushdown law, checked against a real server.

use bson::{Document, doc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::*;
use crate::names::RESERVED_PREFIX;
use crate::{Error, Result};

impl MongoStore {
    /// The pushdown law, checked against this server: for each
    /// `(state, delta)`, stores `state` in `collection` (or no document at
    /// all for the identity), applies `delta`'s pushdown as the runtime
    /// does, reads the document back, and compares it with
    /// `state.combined(delta)`; where the delta has a change condition,
    /// also checks that the write matched exactly when the state changed.
    /// A write refused by its operators' [conditions](Update::require) (an
    /// `$inc` that would overflow) is finished as the runtime does, by
    /// read-modify-write, and not counted as pushed down.
    /// Run it on your own `#[derive(Pushdown)]` types. Empties `collection`
    /// first. Returns how many cases were pushed down.
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] describing the first case that disagrees;
    /// [`Error::InvalidName`] for one of accrete's own collections (a name
    /// starting with `accrete.`) or a read model's, which it would empty;
    /// or [`Error::Mongo`].
    pub fn check_pushdown<S>(
        &self,
        collection: &str,
        cases: impl IntoIterator<Item = (S, S)>,
    ) -> Result<usize>
    where
        S: Pushdown + Serialize + DeserializeOwned + Clone + PartialEq + std::fmt::Debug,
    {
        let reserved = format!("{}{RESERVED_PREFIX}", self.prefix);
        if collection.starts_with(RESERVED_PREFIX) || collection.starts_with(&reserved) {
            return Err(Error::InvalidName {
                kind: "collection",
                name: collection.into(),
                reason: "it is one of accrete's own (names starting with `accrete.`), which the \
                         check would empty: give it a collection of its own",
            });
        }
        if let Some(model) = collection.strip_prefix(&self.prefix) {
            let recorded = self
                .coll(MODELS)
                .find_one(doc! { "_id": model })
                .run()
                .map_err(|e| Error::mongo("read the models", e))?;
            if recorded.is_some() {
                return Err(Error::InvalidName {
                    kind: "collection",
                    name: collection.into(),
                    reason: "it holds a read model's state, which the check would empty: give it \
                             a collection of its own",
                });
            }
        }
        let coll = self.db.collection::<Document>(collection);
        coll.delete_many(doc! {})
            .run()
            .map_err(|e| Error::mongo("delete", e))?;
        let mut n = 0;
        for (i, (state, delta)) in cases.into_iter().enumerate() {
            let id = i as i64;
            if !state.is_identity() {
                let s = state_bson(&state)?;
                coll.insert_one(doc! { "_id": id, "s": s, "v": 1_i64 })
                    .run()
                    .map_err(|e| Error::mongo("insert", e))?;
            }
            let mut update = Update::default();
            if !delta.push_down("s", &mut update) {
                continue;
            }
            let condition = delta.changes_when("s");
            let fits = update.take_conditions();
            let conditional = !fits.is_empty();
            let mut filter = doc! { "_id": id };
            if let Some(c) = &condition {
                filter.extend(c.clone());
            }
            filter.extend(fits);
            let mut ops = doc! { "$inc": { "v": 1_i64 } };
            update.merge_into(&mut ops);
            let matched = match coll.update_one(filter, ops.clone()).upsert(true).run() {
                Ok(_) => true,
                Err(e) if is_duplicate_key(&e) => false,
                Err(e) => return Err(Error::mongo_with("update", format!("{e} for {ops}"), e)),
            };
            if !matched && conditional {
                // The fallback: combine in process, set the result.
                let s = state_bson(&state.clone().combined(&delta))?;
                coll.update_one(doc! { "_id": id }, doc! { "$set": { "s": s } })
                    .upsert(true)
                    .run()
                    .map_err(|e| Error::mongo("update", e))?;
            }
            let stored = coll
                .find_one(doc! { "_id": id })
                .run()
                .map_err(|e| Error::mongo("find", e))?;
            let got: S = decode_state(stored.as_ref().and_then(|d| d.get("s")))?;
            let want = state.clone().combined(&delta);
            let fail = |what: &str| {
                Err(Error::Usage(format!(
                    "pushdown law broken ({what}): state {state:?}, delta {delta:?}, update {ops}: \
                     stored {got:?}, combine gives {want:?}"
                )))
            };
            if got != want {
                return fail("stored result differs from combine");
            }
            if !matched && conditional {
                continue;
            }
            if condition.is_some() && matched != (want != state) {
                return fail(if matched {
                    "the change condition matched a write that changed nothing"
                } else {
                    "the change condition refused a write that changed the state"
                });
            }
            if condition.is_none() && !matched {
                return fail("an unconditional write did not apply");
            }
            n += 1;
        }
        Ok(n)
    }
}
