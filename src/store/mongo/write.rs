//! The guarded write of a folded batch (see the module docs of
//! [`store::mongo`](super)).

use std::collections::HashMap;

use bson::{Bson, Document, doc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::*;
use crate::codec::{Range, Written};
use crate::error::DOCUMENT_REFUSED;
use crate::monoids::Monoid;
use crate::{Error, Result};

impl MongoStore {
    /// The states and versions of keys in a generation (the versions
    /// counted above its floor), by `_id`.
    pub(crate) fn get_many<K, S>(
        &self,
        generation: &Generation,
        keys: &[K],
    ) -> Result<HashMap<String, (S, u64)>>
    where
        K: Serialize,
        S: Monoid + Serialize + DeserializeOwned,
    {
        let mut out = HashMap::new();
        let ids: Vec<Bson> = keys.iter().map(key_id).collect::<Result<_>>()?;
        for chunk in ids.chunks(10_000) {
            // From the primary: at least as new as every published change.
            let cursor = self
                .states(&generation.name)
                .find(doc! { "_id": { "$in": chunk.to_vec() } })
                .selection_criteria(mongodb::options::SelectionCriteria::ReadPreference(
                    mongodb::options::ReadPreference::Primary,
                ))
                .run()
                .map_err(|e| Error::mongo("find", e))?;
            for d in cursor {
                let d = d.map_err(|e| Error::mongo("find", e))?;
                let id = d.get("_id").cloned().unwrap_or(Bson::Null).to_string();
                let v = d.get("v").and_then(as_u64).unwrap_or(0);
                out.insert(id, (decode_state::<S>(d.get("s"))?, generation.floor() + v));
            }
        }
        Ok(out)
    }
}

/// One key's write in a batch: its pre-aggregated delta and the partition
/// ranges its events came from.
pub(crate) struct KeyWrite<K, S> {
    pub(crate) key: K,
    pub(crate) delta: S,
    pub(crate) ranges: Vec<Range>,
    /// The key may have no document yet (the writer's replica does not
    /// know it): the write tries an insert first.
    pub(crate) maybe_new: bool,
}

/// What a batch write did.
pub(crate) struct BatchWrite<K, S> {
    pub(crate) changes: Vec<(K, Written<S>)>,
    /// Documents written (one per touched key, plus retries).
    pub(crate) writes: u64,
    /// Keys whose events were partly applied before (recovery).
    pub(crate) conflicts: u64,
    /// Of those, keys whose earlier writes were published again as this
    /// batch's cut of them (their document did not log them): a hook may
    /// see such a change overlap one it ran.
    pub(crate) recut: u64,
    /// Keys that cannot be written, with the reason: a key or state without
    /// a BSON form, a stored state that does not decode, a document the
    /// server refuses. Nothing of their deltas in this batch is applied; the
    /// runtime sends their events to the dead letters.
    pub(crate) rejected: Vec<(K, String)>,
}

impl<K, S> BatchWrite<K, S> {
    fn empty() -> Self {
        BatchWrite {
            changes: Vec::new(),
            writes: 0,
            conflicts: 0,
            recut: 0,
            rejected: Vec::new(),
        }
    }
}

/// For keys found partly applied: the guard positions per partition, to
/// split the batch's events at.
pub(crate) type Guards<K> = HashMap<K, Vec<(u32, u64)>>;

/// The deltas of the batch's events for some keys, split at each key's
/// guard positions: `(before, since)`.
pub(crate) type Split<K, S> = HashMap<K, (S, S)>;

fn guard_field(partition: u32) -> String {
    format!("p.{partition}")
}

/// How many of its latest guarded writes of each events partition a state
/// document keeps, in field `w.<partition>`: each as the change it
/// published (postcard bytes of [`Written`]; a write of several partitions
/// is in each of their logs), so that a writer that finds a key partly
/// applied by another (a crashed node, or one that does not yet know it lost
/// the partition) publishes those very changes again, with their own
/// boundaries and deltas, rather than its own cut of them. Two changes of a
/// key are then either the same change or cover disjoint events, and a hook
/// that skips what it covered runs every event's delta exactly once (see
/// `hooks::runner`). Kept per partition: one log for the whole key was
/// rolled over by the other partitions' writes before a crashed writer's
/// successor read it (CI, session 7). An idempotent write (no guard) is not
/// logged: it clears the log, and a key found partly applied after one is
/// published as the writer's own cut, as before. 16, not 4: with 4, two
/// members holding one partition at once (tansu) wrote a key more than 4
/// times inside one window in CI (session 8, seed 9922759817778824730, 1 in
/// 2 replays), the log could not vouch, and the hook's deltas were off.
const WRITES_KEPT: i32 = 16;

/// A write's entry in its document's logs.
fn logged<S: Serialize>(change: &Written<S>) -> Result<Bson> {
    let bytes = postcard::to_stdvec(change).map_err(|e| Error::Encode {
        what: "change",
        detail: e.to_string(),
    })?;
    Ok(Bson::Binary(bson::Binary {
        subtype: bson::spec::BinarySubtype::Generic,
        bytes,
    }))
}

/// The logs of a document a write creates: its entry in each of its
/// partitions' logs.
fn new_logs(ranges: &[Range], entry: &Bson) -> Document {
    let mut w = Document::new();
    for r in ranges {
        w.insert(r.partition.to_string(), vec![entry.clone()]);
    }
    w
}

/// Adds to `ops` the push of a write's entry to each of its partitions'
/// logs (keeping the latest [`WRITES_KEPT`]) and the count of logged writes
/// (`wn`, which equals the version `v` while every write that changed the
/// document was logged), and marks a document this write creates as logging
/// every write since (`c`).
fn log_write(ops: &mut Document, ranges: &[Range], entry: Bson) {
    let mut u = Update::default();
    for r in ranges {
        u.push(
            "$push",
            &format!("w.{}", r.partition),
            Bson::Document(doc! { "$each": [entry.clone()], "$slice": -WRITES_KEPT }),
        );
    }
    u.push("$setOnInsert", "c", Bson::Boolean(true));
    u.push("$inc", "wn", Bson::Int64(1));
    u.merge_into(ops);
}

/// The logged writes of `doc` that applied events of `ranges` at or beyond
/// their start, on the partitions where the document's guard is beyond it:
/// the changes to publish again for a key found partly applied. `None` when
/// the logs cannot say (a document from before writes were logged, one
/// written since by a build that does not log, or one whose partition log
/// dropped a write in the window): the caller publishes its own cut of them
/// instead.
fn logged_writes<S: DeserializeOwned>(
    doc: &Document,
    ranges: &[Range],
    guards: &HashMap<u32, u64>,
) -> Option<Vec<Written<S>>> {
    // Every write that changed the document since its creation was logged
    // (a build that does not log, before format 1, bumps `v` alone; an
    // idempotent write clears `c`): else the logs cannot vouch.
    let wn = doc.get("wn").and_then(as_u64);
    if !doc.get_bool("c").unwrap_or(false) || wn.is_none() || wn != doc.get("v").and_then(as_u64) {
        return None;
    }
    let logs = doc.get_document("w").ok()?;
    let mut out: Vec<Written<S>> = Vec::new();
    for r in ranges {
        if guards.get(&r.partition).is_none_or(|g| *g <= r.from) {
            continue;
        }
        // A partition without a log: no logged write touched it, yet its
        // guard moved: cannot say.
        let log = logs.get_array(r.partition.to_string()).ok()?;
        let mut entries: Vec<Written<S>> = Vec::with_capacity(log.len());
        for e in log {
            let Bson::Binary(b) = e else { return None };
            entries.push(crate::event::from_bytes(&b.bytes).ok()?);
        }
        let on = |e: &Written<S>| {
            e.ranges
                .iter()
                .find(|x| x.partition == r.partition)
                .copied()
        };
        // A partition's writes are logged in offset order: a log never
        // rolled over, or one whose oldest write starts at or before the
        // batch's start, holds every write since.
        let whole = log.len() < WRITES_KEPT as usize;
        if !whole && !entries.iter().filter_map(on).any(|x| x.from <= r.from) {
            return None;
        }
        for e in entries {
            if on(&e).is_some_and(|x| x.end > r.from) && !out.iter().any(|o| o.ranges == e.ranges) {
                out.push(e);
            }
        }
    }
    Some(out)
}

/// The documents of a bulk write the server did not apply, by index.
#[derive(Default)]
pub(super) struct Refused {
    /// Refused as duplicate keys: a guard or condition that did not hold.
    pub(super) duplicates: std::collections::HashSet<usize>,
    /// Refused for what they are (the server's message): an `_id` or value
    /// it does not accept, an operator it cannot apply to the stored value.
    pub(super) failed: HashMap<usize, String>,
}

/// Sorts out a bulk write's answer. A failure of the whole write (the
/// network, a write concern) is an error, to retry the batch.
pub(super) fn refused(
    result: mongodb::error::Result<mongodb::results::SummaryBulkWriteResult>,
) -> Result<Refused> {
    let Err(e) = result else {
        return Ok(Refused::default());
    };
    match *e.kind {
        mongodb::error::ErrorKind::BulkWrite(ref bw) if bw.write_concern_errors.is_empty() => {
            sort_errors(
                "bulk write",
                bw.write_errors
                    .iter()
                    .map(|(i, w)| (*i, w.code, &w.message)),
            )
        }
        _ => Err(Error::mongo("bulk write", e)),
    }
}

/// Whether a single write failed with "duplicate key" (E11000).
pub(super) fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    matches!(
        *e.kind,
        mongodb::error::ErrorKind::Write(mongodb::error::WriteFailure::WriteError(ref w))
            if w.code == 11000
    )
}

/// Write errors by index: "duplicate key" (E11000) apart from the documents
/// refused for what they are ([`DOCUMENT_REFUSED`]); any other write error
/// fails the whole write, to retry.
pub(super) fn sort_errors<'a>(
    what: &'static str,
    errors: impl Iterator<Item = (usize, i32, &'a String)>,
) -> Result<Refused> {
    let mut out = Refused::default();
    for (index, code, message) in errors {
        if code == 11000 {
            out.duplicates.insert(index);
        } else if DOCUMENT_REFUSED.contains(&code) {
            out.failed.insert(
                index,
                format!("the server refused the write ({code}): {message}"),
            );
        } else {
            return Err(Error::mongo_msg(
                what,
                format!(
                    "write error {code} (retried: it says nothing about the document): {message}"
                ),
            ));
        }
    }
    Ok(out)
}

/// Writes one batch: one update per key, pushdown where the state has one,
/// read-modify-write otherwise; keys whose guard shows the batch partly
/// applied are read, and `split` recomputes their deltas around the guard.
pub(crate) fn write_batch<K, S>(
    store: &MongoStore,
    model: &str,
    exactly_once: bool,
    keys: Vec<KeyWrite<K, S>>,
    split: &mut dyn FnMut(&Guards<K>) -> Split<K, S>,
) -> Result<BatchWrite<K, S>>
where
    K: Serialize + DeserializeOwned + Clone + Eq + std::hash::Hash,
    S: Pushdown + Serialize + DeserializeOwned + Clone + PartialEq,
{
    // In requests of at most `WRITE_CHUNK` documents: each request's time
    // stays bounded on a slow server (the batch's is bounded by its size,
    // see `cluster::pace`). Keys are independent: a failed chunk fails the
    // batch, which is retried whole, and the guards make the written
    // chunks' second application a no-op.
    let mut out = BatchWrite::empty();
    let mut keys = keys.into_iter();
    loop {
        let chunk: Vec<KeyWrite<K, S>> = keys.by_ref().take(WRITE_CHUNK).collect();
        if chunk.is_empty() {
            return Ok(out);
        }
        let w = write_chunk(store, model, exactly_once, chunk, split)?;
        out.changes.extend(w.changes);
        out.writes += w.writes;
        out.conflicts += w.conflicts;
        out.recut += w.recut;
        out.rejected.extend(w.rejected);
    }
}

/// The most documents one write request carries.
const WRITE_CHUNK: usize = 1_000;

fn write_chunk<K, S>(
    store: &MongoStore,
    model: &str,
    exactly_once: bool,
    keys: Vec<KeyWrite<K, S>>,
    split: &mut dyn FnMut(&Guards<K>) -> Split<K, S>,
) -> Result<BatchWrite<K, S>>
where
    K: Serialize + DeserializeOwned + Clone + Eq + std::hash::Hash,
    S: Pushdown + Serialize + DeserializeOwned + Clone + PartialEq,
{
    let coll = store.states(model);
    let ns = coll.namespace();
    let mut out = BatchWrite::empty();
    // A key without an `_id` is rejected here: nothing below fails on one.
    let mut valid = Vec::with_capacity(keys.len());
    for kw in keys {
        match key_id(&kw.key) {
            Ok(_) => valid.push(kw),
            Err(e) => out
                .rejected
                .push((kw.key, format!("the key cannot be a document `_id`: {e}"))),
        }
    }
    let keys = insert_new(&coll, valid, &mut out)?;
    // (key write, idempotent, whether a refusal means "changes nothing").
    let mut blind: Vec<(KeyWrite<K, S>, bool, bool)> = Vec::new();
    let mut unchanged: Vec<KeyWrite<K, S>> = Vec::new();
    let mut rmw: Vec<KeyWrite<K, S>> = Vec::new();
    let mut models = Vec::new();
    for kw in keys {
        let mut update = Update::default();
        if !kw.delta.push_down("s", &mut update) {
            rmw.push(kw);
            continue;
        }
        let condition = kw.delta.changes_when("s");
        let idempotent = condition.is_some() || !exactly_once;
        // Conditions of the operators (an `$inc` that must not overflow): a
        // write they refuse is read, combined and written back.
        let fits = update.take_conditions();
        let nothing_to_change = condition.is_some() && fits.is_empty();
        let mut filter = doc! { "_id": key_id(&kw.key)? };
        let mut ops = doc! { "$inc": { "v": 1_i64 } };
        if let Some(c) = condition {
            filter.extend(c);
        }
        filter.extend(fits);
        if !idempotent {
            let mut set = Document::new();
            for r in &kw.ranges {
                filter.insert(
                    guard_field(r.partition),
                    doc! { "$not": { "$gt": r.from as i64 } },
                );
                set.insert(guard_field(r.partition), r.end as i64);
            }
            ops.insert("$set", set);
        } else {
            // No guard in the filter (applying twice is applying once), but
            // the positions still record that a write changed the state, so
            // that a refused copy can tell it may not have been published.
            let mut positions = Update::default();
            for r in &kw.ranges {
                positions.push("$max", &guard_field(r.partition), Bson::Int64(r.end as i64));
            }
            positions.merge_into(&mut ops);
        }
        update.merge_into(&mut ops);
        if idempotent {
            let mut unlog = Update::default();
            unlog.push("$unset", "w", Bson::String(String::new()));
            unlog.push("$unset", "c", Bson::String(String::new()));
            unlog.push("$unset", "wn", Bson::String(String::new()));
            unlog.merge_into(&mut ops);
        } else {
            log_write(
                &mut ops,
                &kw.ranges,
                logged(&Written {
                    ranges: kw.ranges.clone(),
                    idempotent,
                    delta: kw.delta.clone(),
                })?,
            );
        }
        models.push(WriteModel::UpdateOne(
            UpdateOneModel::builder()
                .namespace(ns.clone())
                .filter(filter)
                .update(ops)
                .upsert(true)
                .build(),
        ));
        blind.push((kw, idempotent, nothing_to_change));
    }
    if !models.is_empty() {
        out.writes += models.len() as u64;
        let refused = refused(store.client.bulk_write(models).ordered(false).run())?;
        for (i, (kw, idempotent, nothing_to_change)) in blind.into_iter().enumerate() {
            // Refused for what it is (an operator the server cannot apply to
            // the stored value): read-modify-write sets the state instead.
            if refused.failed.contains_key(&i) {
                rmw.push(kw);
                continue;
            }
            match (refused.duplicates.contains(&i), nothing_to_change) {
                // Applied: the filter (with its change condition) matched.
                (false, _) => out.changes.push((
                    kw.key,
                    Written {
                        ranges: kw.ranges,
                        idempotent,
                        delta: kw.delta,
                    },
                )),
                // An idempotent delta that would change nothing: perhaps
                // because an earlier attempt at these events applied it and
                // died before publishing. Checked below.
                (true, true) => unchanged.push(kw),
                // The guard refused (this batch was partly applied), or the
                // operators' conditions (an `$inc` would overflow).
                (true, false) => rmw.push(kw),
            }
        }
    }
    republish_unchanged(&coll, unchanged, &mut out)?;
    read_modify_write(store, &coll, rmw, split, &mut out)?;
    Ok(out)
}

/// Inserts the documents of the keys that may be new, as the write of a
/// missing document would leave them (`s` the delta, `v` 1, the guards at
/// the batch's ends); returns the keys to write the usual way: those known
/// to exist and those whose insert found a document already.
///
/// An insert cannot apply anything twice (it fails on any document), and
/// the server does it for a fraction of an update's cost: a backfill's
/// first write of each key is one. The pushdown law covers the result, as
/// it checks pushdown on a state stored in its serialized form.
fn insert_new<K, S>(
    coll: &Collection<Document>,
    keys: Vec<KeyWrite<K, S>>,
    out: &mut BatchWrite<K, S>,
) -> Result<Vec<KeyWrite<K, S>>>
where
    K: Serialize,
    S: Serialize + Clone,
{
    let (new, mut rest): (Vec<_>, Vec<_>) = keys.into_iter().partition(|kw| kw.maybe_new);
    if new.is_empty() {
        return Ok(rest);
    }
    let mut docs = Vec::with_capacity(new.len());
    let mut inserted = Vec::with_capacity(new.len());
    for kw in new {
        let s = match state_bson(&kw.delta) {
            Ok(s) => s,
            Err(e) => {
                out.rejected.push((kw.key, e.to_string()));
                continue;
            }
        };
        docs.push(new_document(&kw, s)?);
        inserted.push(kw);
    }
    if docs.is_empty() {
        return Ok(rest);
    }
    out.writes += docs.len() as u64;
    let refused = match coll.insert_many(docs).ordered(false).run() {
        Ok(_) => Refused::default(),
        Err(e) => match *e.kind {
            mongodb::error::ErrorKind::InsertMany(ref im) if im.write_concern_error.is_none() => {
                sort_errors(
                    "insert",
                    im.write_errors
                        .iter()
                        .flatten()
                        .map(|w| (w.index, w.code, &w.message)),
                )?
            }
            _ => return Err(Error::mongo("insert", e)),
        },
    };
    for (i, kw) in inserted.into_iter().enumerate() {
        if let Some(reason) = refused.failed.get(&i) {
            out.rejected.push((kw.key, reason.clone()));
            continue;
        }
        if refused.duplicates.contains(&i) {
            rest.push(kw);
            continue;
        }
        // The key's first change: published guarded, as read-modify-write
        // does (replicas apply it once by its ranges whatever the state).
        out.changes.push((
            kw.key,
            Written {
                ranges: kw.ranges,
                idempotent: false,
                delta: kw.delta,
            },
        ));
    }
    Ok(rest)
}

/// A key's document as its first write makes it: its delta as the state
/// (`s`, its BSON form), version 1, the guards at the batch's ends, the
/// write logged.
pub(super) fn new_document<K: Serialize, S: Serialize + Clone>(
    kw: &KeyWrite<K, S>,
    s: Bson,
) -> Result<Document> {
    let mut guards = Document::new();
    for r in &kw.ranges {
        guards.insert(r.partition.to_string(), r.end as i64);
    }
    let entry = logged(&Written {
        ranges: kw.ranges.clone(),
        idempotent: false,
        delta: kw.delta.clone(),
    })?;
    Ok(
        doc! { "_id": key_id(&kw.key)?, "s": s, "v": 1_i64, "p": guards, "w": new_logs(&kw.ranges, &entry), "c": true, "wn": 1_i64 },
    )
}

/// Idempotent deltas that changed nothing: if a write covering part of
/// their events changed the document (its positions are beyond the batch
/// start), that write's change may never have been published (its node died
/// in between): publish the delta again, as idempotent. Replicas apply it
/// harmlessly; hooks see it as a duplicate of that version.
fn republish_unchanged<K, S>(
    coll: &Collection<Document>,
    keys: Vec<KeyWrite<K, S>>,
    out: &mut BatchWrite<K, S>,
) -> Result<()>
where
    K: Serialize,
{
    if keys.is_empty() {
        return Ok(());
    }
    let ids: Vec<Bson> = keys.iter().map(|k| key_id(&k.key)).collect::<Result<_>>()?;
    let mut docs: HashMap<String, HashMap<u32, u64>> = HashMap::new();
    for chunk in ids.chunks(10_000) {
        let cursor = coll
            .find(doc! { "_id": { "$in": chunk.to_vec() } })
            .projection(doc! { "p": 1 })
            .run()
            .map_err(|e| Error::mongo("find", e))?;
        for d in cursor {
            let d = d.map_err(|e| Error::mongo("find", e))?;
            let id = d.get("_id").cloned().unwrap_or(Bson::Null).to_string();
            docs.insert(id, positions(&d));
        }
    }
    for (kw, id) in keys.into_iter().zip(ids) {
        let Some(pos) = docs.get(&id.to_string()) else {
            continue;
        };
        let touched = kw
            .ranges
            .iter()
            .any(|r| pos.get(&r.partition).is_some_and(|g| *g > r.from));
        if touched {
            out.changes.push((
                kw.key,
                Written {
                    ranges: kw.ranges,
                    idempotent: true,
                    delta: kw.delta,
                },
            ));
        }
    }
    Ok(())
}

/// A key's changes to publish again, and whether they are this batch's cut
/// (the document's logs could not vouch for them).
type Again<S> = (Vec<Written<S>>, bool);

fn publish_again<K: Clone, S>(out: &mut BatchWrite<K, S>, key: &K, (changes, cut): Again<S>) {
    if cut {
        out.recut += 1;
    }
    out.changes
        .extend(changes.into_iter().map(|w| (key.clone(), w)));
}

/// Reads the documents, keeps each key's events at or beyond its guards,
/// combines in process, writes with the version as the condition; retries
/// keys another writer changed meanwhile.
fn read_modify_write<K, S>(
    store: &MongoStore,
    coll: &Collection<Document>,
    mut keys: Vec<KeyWrite<K, S>>,
    split: &mut dyn FnMut(&Guards<K>) -> Split<K, S>,
    out: &mut BatchWrite<K, S>,
) -> Result<()>
where
    K: Serialize + DeserializeOwned + Clone + Eq + std::hash::Hash,
    S: Pushdown + Serialize + DeserializeOwned + Clone + PartialEq,
{
    let ns = coll.namespace();
    for attempt in 0.. {
        if keys.is_empty() {
            return Ok(());
        }
        if attempt > 50 {
            return Err(Error::mongo_msg(
                "write",
                format!(
                    "{} keys of {} still conflict after 50 attempts: is a process that lost its \
                     partitions still writing?",
                    keys.len(),
                    coll.name()
                ),
            ));
        }
        let mut ids = Vec::with_capacity(keys.len());
        for kw in &keys {
            ids.push(key_id(&kw.key)?);
        }
        let mut docs: HashMap<String, Document> = HashMap::new();
        for chunk in ids.chunks(10_000) {
            let cursor = coll
                .find(doc! { "_id": { "$in": chunk.to_vec() } })
                .run()
                .map_err(|e| Error::mongo("find", e))?;
            for d in cursor {
                let d = d.map_err(|e| Error::mongo("find", e))?;
                let id = d.get("_id").cloned().unwrap_or(Bson::Null);
                docs.insert(id.to_string(), d);
            }
        }
        // Keys with a guard beyond their batch start: recompute their deltas.
        let mut guards: Guards<K> = HashMap::new();
        for (kw, id) in keys.iter().zip(&ids) {
            if let Some(d) = docs.get(&id.to_string()) {
                let pos = positions(d);
                let beyond: Vec<(u32, u64)> = kw
                    .ranges
                    .iter()
                    .filter_map(|r| {
                        pos.get(&r.partition)
                            .filter(|g| **g > r.from)
                            .map(|g| (r.partition, *g))
                    })
                    .collect();
                if !beyond.is_empty() {
                    guards.insert(kw.key.clone(), beyond);
                }
            }
        }
        let mut splits = if guards.is_empty() {
            HashMap::new()
        } else {
            out.conflicts += guards.len() as u64;
            split(&guards)
        };
        let mut models = Vec::new();
        let mut pending = Vec::new();
        for (kw, id) in keys.into_iter().zip(ids) {
            let doc = docs.get(&id.to_string());
            let pos = doc.map(positions).unwrap_or_default();
            let stored = match doc.map(|d| decode_state::<S>(d.get("s"))).transpose() {
                Ok(stored) => stored,
                Err(e) => {
                    out.rejected.push((kw.key, e.to_string()));
                    continue;
                }
            };
            let version = doc.and_then(|d| d.get("v")).and_then(as_u64);
            // The changes to publish again for this key, once its write is
            // settled (a retry reads the document again and decides anew:
            // published now, they could overlap the next attempt's in part).
            let mut again: Again<S> = (Vec::new(), false);
            let delta = match splits.remove(&kw.key) {
                Some((before, since)) => {
                    // What a crashed or deposed writer applied may never
                    // have been published: publish it again (replicas and
                    // hooks drop what they have by its ranges), as the very
                    // changes it wrote where the document logs them, else as
                    // this batch's cut of them.
                    if let Some(logged) = doc.and_then(|d| logged_writes::<S>(d, &kw.ranges, &pos))
                    {
                        again.0 = logged;
                    } else if !before.is_identity() {
                        again.1 = true;
                        let ranges = kw
                            .ranges
                            .iter()
                            .filter_map(|r| {
                                let g = pos.get(&r.partition).copied().unwrap_or(0);
                                (g > r.from).then_some(Range {
                                    end: g.min(r.end),
                                    ..*r
                                })
                            })
                            .collect();
                        again.0.push(Written {
                            ranges,
                            idempotent: false,
                            delta: before,
                        });
                    }
                    since
                }
                None => kw.delta.clone(),
            };
            // Each partition's part covers [guard, end): what the document
            // does not have yet (nothing of the key lies in [guard, from)).
            let ranges: Vec<Range> = kw
                .ranges
                .iter()
                .filter_map(|r| {
                    let g = pos.get(&r.partition).copied().unwrap_or(0);
                    (g < r.end).then_some(Range { from: g, ..*r })
                })
                .collect();
            if ranges.is_empty() || delta.is_identity() {
                publish_again(out, &kw.key, again);
                continue;
            }
            let state = stored.unwrap_or_else(S::identity);
            let mut next = state.clone();
            next.combine(&delta);
            let changed = next != state;
            let s = match state_bson(&next) {
                Ok(s) => s,
                Err(e) => {
                    publish_again(out, &kw.key, again);
                    out.rejected.push((kw.key, e.to_string()));
                    continue;
                }
            };
            let mut guards = Document::new();
            for r in &ranges {
                guards.insert(guard_field(r.partition), r.end as i64);
            }
            let entry = logged(&Written {
                ranges: ranges.clone(),
                idempotent: false,
                delta: delta.clone(),
            })?;
            let (filter, update) = match version {
                Some(v) => {
                    // Guards only grow: a deposed writer's write that changed
                    // nothing must not move them back.
                    let mut update = doc! { "$max": guards };
                    if changed {
                        update.insert("$set", doc! { "s": s });
                        update.insert("$inc", doc! { "v": 1_i64 });
                        log_write(&mut update, &ranges, entry);
                    }
                    (doc! { "_id": id.clone(), "v": v as i64 }, update)
                }
                // No document yet: the upsert inserts, or answers "duplicate
                // key" if another writer inserted first.
                None => {
                    let mut set = guards;
                    set.insert("s", s);
                    set.insert("v", 1_i64);
                    set.insert("w", new_logs(&ranges, &entry));
                    set.insert("c", true);
                    set.insert("wn", 1_i64);
                    (
                        doc! { "_id": id.clone(), "v": { "$exists": false } },
                        doc! { "$set": set },
                    )
                }
            };
            models.push(WriteModel::UpdateOne(
                UpdateOneModel::builder()
                    .namespace(ns.clone())
                    .filter(filter)
                    .update(update)
                    .upsert(true)
                    .build(),
            ));
            pending.push((kw, changed, ranges, delta, again));
        }
        let mut retry = Vec::new();
        if !models.is_empty() {
            out.writes += models.len() as u64;
            let refused = refused(store.client.bulk_write(models).ordered(false).run())?;
            for (i, (kw, changed, ranges, delta, again)) in pending.into_iter().enumerate() {
                if refused.duplicates.contains(&i) {
                    retry.push(kw);
                    continue;
                }
                publish_again(out, &kw.key, again);
                if let Some(reason) = refused.failed.get(&i) {
                    out.rejected.push((kw.key, reason.clone()));
                } else if changed {
                    out.changes.push((
                        kw.key,
                        Written {
                            ranges,
                            idempotent: false,
                            delta,
                        },
                    ));
                }
            }
        }
        keys = retry;
    }
    Ok(())
}
