//! Generations of a model's documents (a rebuild starts the next).

use bson::doc;

use super::*;
use crate::{Error, Result};

impl MongoStore {
    /// The model's current generation (see [`Generation`]).
    ///
    /// # Errors
    ///
    /// [`Error::Mongo`].
    pub(crate) fn generation(&self, model: &str) -> Result<Generation> {
        let n = self
            .coll(MODELS)
            .find_one(doc! { "_id": model })
            .run()
            .map_err(|e| Error::mongo("read the model's generation", e))?
            .and_then(|d| d.get("generation").and_then(as_u64))
            .unwrap_or(0);
        Ok(Generation::new(model, n))
    }

    /// Starts the generation after `current` (a rebuild). Fails when
    /// another rebuild started one meanwhile.
    ///
    /// # Errors
    ///
    /// [`Error::Mongo`]; [`Error::Model`] when the generation moved on.
    pub(crate) fn next_generation(&self, model: &str, current: &Generation) -> Result<Generation> {
        let next = Generation::new(model, current.n + 1);
        let filter = if current.n == 0 {
            doc! { "_id": model, "$or": [ { "generation": { "$exists": false } }, { "generation": 0_i64 } ] }
        } else {
            doc! { "_id": model, "generation": current.n as i64 }
        };
        let done = self
            .coll(MODELS)
            .update_one(
                filter,
                doc! {
                    "$set": { "generation": next.n as i64 },
                    "$max": { "format": i64::from(GENERATIONS_FORMAT) },
                },
            )
            .run()
            .map_err(|e| Error::mongo("start a generation", e))?;
        if done.matched_count == 0 {
            return Err(Error::Model(
                model.into(),
                "another rebuild started meanwhile (its generation is newer): nothing was changed \
                 by this one"
                    .into(),
            ));
        }
        Ok(next)
    }

    /// Drops a generation's state collection and positions (what a rebuild
    /// left behind). A deposed writer still running may write a little of
    /// it again; nothing reads it.
    ///
    /// # Errors
    ///
    /// [`Error::Mongo`].
    pub(crate) fn drop_generation(&self, generation: &Generation) -> Result<()> {
        self.coll(&generation.name)
            .drop()
            .run()
            .map_err(|e| Error::mongo("drop", e))?;
        let positions = [
            generation.name.clone(),
            crate::names::published_key(&generation.name),
        ];
        self.coll(POSITIONS)
            .delete_many(doc! { "model": { "$in": positions.to_vec() } })
            .run()
            .map_err(|e| Error::mongo("delete", e))?;
        Ok(())
    }
}

/// A generation of a model's data on MongoDB. A rebuild cannot clear a
/// collection in place: a deposed writer (a node cut off from its group
/// that can still reach MongoDB) could write a batch into the cleared
/// collection, and its guards would then refuse the re-fold's earlier
/// events. Each generation lives under names of its own instead (its
/// collection, changes topic, consumer groups and positions: see
/// [`crate::names::generation_name`]), so a writer of an older one can only
/// touch what nothing reads any more. The model's record in
/// `accrete.models` names the current one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Generation {
    /// 0 until the first rebuild.
    pub(crate) n: u64,
    /// The name its collection, topics, groups and positions are made of.
    pub(crate) name: String,
}

impl Generation {
    pub(crate) fn new(model: &str, n: u64) -> Self {
        Generation {
            n,
            name: crate::names::generation_name(model, n),
        }
    }

    /// What this generation's versions are counted above (`n` × 2⁴⁰): a
    /// key's version is this plus its document's `v`, so versions (and the
    /// idempotency keys made of them) never repeat and never go down
    /// across a rebuild, even while a deposed writer of the generation
    /// before still counts on (no key is written 2⁴⁰ times).
    pub(crate) fn floor(&self) -> u64 {
        self.n << 40
    }
}
