//! Which copy of a forwarded event applies.

use std::collections::HashMap;

use bson::{Document, doc};

use super::*;
use crate::event::EventId;
use crate::{Error, Result};

/// Documents per request when claiming forwarded ids.
pub(super) const CLAIM_CHUNK: usize = 1_000;

impl MongoStore {
    /// Decides which copy of each forwarded event applies. `claims` holds,
    /// per record of the events topic `source` that carries an origin, the
    /// origin and the record's own `(partition, offset)`; the answer holds,
    /// per claim, the `(partition, offset)` of the copy that applies: the
    /// first one claimed, by whichever node got there first, forever. Only
    /// that copy is folded (at its own position, by the per-key guard, so
    /// exactly once); every other copy is skipped as a copy of it. A claim
    /// is made before its copy is written, and a crash in between leaves
    /// the claim pointing at a record that is read again.
    ///
    /// # Errors
    ///
    /// [`Error::Mongo`].
    pub(crate) fn claim_origins(
        &self,
        source: u32,
        claims: &[(EventId, (u32, u64))],
    ) -> Result<Vec<(u32, u64)>> {
        let coll = self.coll(ORIGINS);
        let id = |origin: &EventId| format!("{source:08x}/{origin}");
        let mut winners: HashMap<String, (u32, u64)> = HashMap::with_capacity(claims.len());
        // The claims already made, read into `winners`.
        let read = |ids: Vec<String>, winners: &mut HashMap<String, (u32, u64)>| -> Result<()> {
            let cursor = coll
                .find(doc! { "_id": { "$in": ids } })
                .run()
                .map_err(|e| Error::mongo("read forwarded ids' claims", e))?;
            for d in cursor {
                let d = d.map_err(|e| Error::mongo("read forwarded ids' claims", e))?;
                let (Ok(key), Some(p), Some(o)) = (
                    d.get_str("_id"),
                    d.get("p").and_then(as_u64),
                    d.get("o").and_then(as_u64),
                ) else {
                    return Err(Error::Corrupt {
                        what: "claim of a forwarded id",
                        detail: format!("in {ORIGINS}, not {{_id, p, o}}: {d}"),
                    });
                };
                winners.insert(key.to_string(), (p as u32, o));
            }
            Ok(())
        };
        for chunk in claims.chunks(CLAIM_CHUNK) {
            let mut seen = std::collections::HashSet::with_capacity(chunk.len());
            let unique: Vec<&(EventId, (u32, u64))> = chunk
                .iter()
                .filter(|(origin, _)| seen.insert(*origin))
                .collect();
            // Most copies were claimed already (by another model of the
            // topic, or an earlier batch): read first, and insert only the
            // claims not made yet. Inserting every one and ignoring the
            // refusals cost the server one error per claim made before.
            read(
                unique.iter().map(|(origin, _)| id(origin)).collect(),
                &mut winners,
            )?;
            let inserted: Vec<(String, (u32, u64))> = unique
                .iter()
                .filter(|(origin, _)| !winners.contains_key(&id(origin)))
                .map(|(origin, native)| (id(origin), *native))
                .collect();
            if inserted.is_empty() {
                continue;
            }
            let docs: Vec<Document> = inserted
                .iter()
                .map(|(id, (p, o))| doc! { "_id": id, "p": i64::from(*p), "o": *o as i64 })
                .collect();
            // Claims are only ever inserted: one that went in is the one
            // that applies. Those another writer made in between (a
            // duplicate `_id`) are read back: the one answer every model
            // gets.
            let mut refused = vec![false; inserted.len()];
            match coll.insert_many(docs).ordered(false).run() {
                Ok(_) => {}
                Err(e) => match *e.kind {
                    mongodb::error::ErrorKind::InsertMany(ref im)
                        if im.write_concern_error.is_none()
                            && im.write_errors.iter().flatten().all(|w| w.code == 11000) =>
                    {
                        match &im.write_errors {
                            Some(errors) => {
                                for w in errors {
                                    if let Some(r) = refused.get_mut(w.index) {
                                        *r = true;
                                    }
                                }
                            }
                            // Refused, but not said which: read them all.
                            None => refused.fill(true),
                        }
                    }
                    _ => return Err(Error::mongo("claim forwarded ids", e)),
                },
            }
            let mut taken = Vec::new();
            for ((id, native), refused) in inserted.into_iter().zip(refused) {
                if refused {
                    taken.push(id);
                } else {
                    winners.insert(id, native);
                }
            }
            if !taken.is_empty() {
                read(taken, &mut winners)?;
            }
        }
        claims
            .iter()
            .map(|(origin, _)| {
                winners.get(&id(origin)).copied().ok_or_else(|| {
                    Error::mongo_msg(
                        "claim forwarded ids",
                        format!("the claim of {origin} was made, then not found"),
                    )
                })
            })
            .collect()
    }
}
