//! Events a model could not fold, kept for the operator.

use bson::doc;

use super::*;
use crate::event::EventId;
use crate::model::ReadModel;
use crate::{Error, Result};

impl MongoStore {
    /// Keeps dead letters, idempotently (one per model and event id).
    pub(crate) fn dead_letters_put(&self, model: &str, letters: &[DeadLetter]) -> Result<()> {
        self.upsert_all(
            "write dead letters",
            letters.iter().map(|l| {
                let id = format!(
                    "{model}/{}/{}/{}",
                    l.event.source, l.event.partition, l.event.offset
                );
                (
                    DEAD_LETTERS,
                    doc! { "_id": id },
                    doc! { "$setOnInsert": {
                        "model": model,
                        "source": l.event.source as i64,
                        "partition": l.event.partition as i64,
                        "offset": l.event.offset as i64,
                        "reason": &l.reason,
                        "payload": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: l.payload.clone() },
                        "at": bson::DateTime::now(),
                    }},
                )
            }),
        )
    }

    /// The model's dead letters, oldest first.
    ///
    /// # Errors
    ///
    /// [`Error::Mongo`], or [`Error::Corrupt`] for a malformed record.
    pub fn dead_letters<M: ReadModel>(&self) -> Result<Vec<DeadLetter>> {
        let cursor = self
            .coll(DEAD_LETTERS)
            .find(doc! { "model": M::NAME })
            .sort(doc! { "at": 1, "_id": 1 })
            .run()
            .map_err(|e| Error::mongo("find", e))?;
        let mut out = Vec::new();
        for doc in cursor {
            let doc = doc.map_err(|e| Error::mongo("find", e))?;
            let corrupt = |what: &str| Error::Corrupt {
                what: "dead letter",
                detail: format!("field `{what}` missing or malformed in {doc}"),
            };
            out.push(DeadLetter {
                event: EventId {
                    source: doc.get_i64("source").map_err(|_| corrupt("source"))? as u32,
                    partition: doc.get_i64("partition").map_err(|_| corrupt("partition"))? as u32,
                    offset: doc.get_i64("offset").map_err(|_| corrupt("offset"))? as u64,
                },
                reason: doc
                    .get_str("reason")
                    .map_err(|_| corrupt("reason"))?
                    .to_string(),
                payload: doc
                    .get_binary_generic("payload")
                    .map_err(|_| corrupt("payload"))?
                    .clone(),
            });
        }
        Ok(out)
    }
}
