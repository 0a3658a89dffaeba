//! Where each reader resumes, which node holds which partitions, and the
//! source numbers of event topics.

use bson::doc;

use super::*;
use crate::{Error, Result};

impl MongoStore {
    /// The next offset of `partition` that `model` must fold: every record
    /// below it is written and its changes published. `None` before the
    /// first batch.
    ///
    /// # Errors
    ///
    /// [`Error::Mongo`].
    pub fn position(&self, model: &str, partition: u32) -> Result<Option<u64>> {
        let doc = self
            .coll(POSITIONS)
            .find_one(doc! { "_id": format!("{model}/{partition}") })
            .run()
            .map_err(|e| Error::mongo("read position", e))?;
        Ok(doc.and_then(|d| d.get("next").and_then(as_u64)))
    }

    /// Every partition's position for `model` (0 where none).
    ///
    /// # Errors
    ///
    /// [`Error::Mongo`].
    pub fn positions(&self, model: &str, partitions: u32) -> Result<Vec<u64>> {
        let mut out = vec![0; partitions as usize];
        let cursor = self
            .coll(POSITIONS)
            .find(doc! { "model": model })
            .run()
            .map_err(|e| Error::mongo("read positions", e))?;
        for d in cursor {
            let d = d.map_err(|e| Error::mongo("read positions", e))?;
            let p = d.get("partition").and_then(as_u64).unwrap_or(u64::MAX) as usize;
            if let (Some(slot), Some(next)) = (out.get_mut(p), d.get("next").and_then(as_u64)) {
                *slot = next;
            }
        }
        Ok(out)
    }

    /// Advances positions (never backwards).
    pub(crate) fn advance_positions(&self, model: &str, ends: &[(u32, u64)]) -> Result<()> {
        self.upsert_all(
            "write positions",
            ends.iter().map(|(p, end)| {
                (
                    POSITIONS,
                    doc! { "_id": format!("{model}/{p}") },
                    doc! {
                        "$max": { "next": *end as i64 },
                        "$set": { "model": model, "partition": *p as i64 },
                    },
                )
            }),
        )
    }

    /// Records that `node`'s consumer for `reader` holds `partitions`, as of
    /// `at_ms` (its clock).
    pub(crate) fn claim(
        &self,
        reader: &str,
        node: &str,
        partitions: &[u32],
        at_ms: i64,
    ) -> Result<()> {
        let held: Vec<i64> = partitions.iter().map(|p| i64::from(*p)).collect();
        self.coll(MEMBERS)
            .update_one(
                doc! { "_id": format!("{reader}/{node}") },
                doc! { "$set": { "reader": reader, "node": node, "partitions": held, "at": at_ms } },
            )
            .upsert(true)
            .run()
            .map_err(|e| Error::mongo("record the held partitions", e))?;
        Ok(())
    }

    /// The partitions each node holds for `reader`, from claims made at or
    /// after `since_ms`: `(node, partitions)`.
    pub(crate) fn claims(&self, reader: &str, since_ms: i64) -> Result<Vec<(String, Vec<u32>)>> {
        let cursor = self
            .coll(MEMBERS)
            .find(doc! { "reader": reader, "at": { "$gte": since_ms } })
            .run()
            .map_err(|e| Error::mongo("read the held partitions", e))?;
        let mut out = Vec::new();
        for d in cursor {
            let d = d.map_err(|e| Error::mongo("read the held partitions", e))?;
            let node = d.get_str("node").unwrap_or_default().to_string();
            let partitions = d
                .get_array("partitions")
                .map(|a| a.iter().filter_map(as_u64).map(|p| p as u32).collect())
                .unwrap_or_default();
            out.push((node, partitions));
        }
        Ok(out)
    }

    /// Withdraws `node`'s claim for `reader` (it is leaving).
    pub(crate) fn release(&self, reader: &str, node: &str) -> Result<()> {
        self.coll(MEMBERS)
            .delete_one(doc! { "_id": format!("{reader}/{node}") })
            .run()
            .map_err(|e| Error::mongo("release the held partitions", e))?;
        Ok(())
    }

    /// The source number of the event ids of `topic` on this database:
    /// drawn at random the first time a node uses the topic (never the
    /// name's hash, so that an export from another deployment whose topic
    /// has the same name is not taken for copies of this one's events), and
    /// the same for every node from then on.
    ///
    /// # Errors
    ///
    /// [`Error::Mongo`].
    pub fn source_id(&self, topic: &str) -> Result<u32> {
        let sources = self.coll(SOURCES);
        let read = || -> Result<Option<u32>> {
            Ok(sources
                .find_one(doc! { "_id": topic })
                .run()
                .map_err(|e| Error::mongo("read the topic's source number", e))?
                .and_then(|d| d.get("s").and_then(as_u64))
                .and_then(|s| u32::try_from(s).ok()))
        };
        if let Some(s) = read()? {
            return Ok(s);
        }
        let hashed = crate::event::source_id(topic);
        let drawn = std::iter::repeat_with(crate::event::random_u32)
            .find(|s| *s != hashed)
            .unwrap_or(hashed ^ 1);
        // Two nodes may draw at once: the first insert wins, both read it.
        match sources
            .update_one(
                doc! { "_id": topic },
                doc! { "$setOnInsert": { "s": i64::from(drawn) } },
            )
            .upsert(true)
            .run()
        {
            Ok(_) => {}
            Err(e) if is_duplicate_key(&e) => {}
            Err(e) => return Err(Error::mongo("record the topic's source number", e)),
        }
        read()?.ok_or_else(|| {
            Error::mongo_msg(
                "read the topic's source number",
                format!("{topic}: recorded, then not found"),
            )
        })
    }
}
