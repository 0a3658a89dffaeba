//! [`MongoStore`]: read-model state in MongoDB, one document per
//! (read model, key), written once per touched key per batch.
//!
//! # The document format, version 1 ([`DOCUMENT_FORMAT`])
//!
//! This is the one description of what accrete keeps in MongoDB; a reader
//! in another language needs nothing else. The BSON of representative
//! documents is pinned by golden files (`tests/fixtures/bson`, checked by
//! this module's tests).
//!
//! Each read model has a collection named after it (`Balances::NAME`; after
//! a rebuild, after its generation), with one document per key:
//!
//! ```text
//! { _id: <key>, s: <state>, v: <version>, p: { "<partition>": <end offset> },
//!   w: { "<partition>": [ <logged write>, … ] }, c: true, wn: <logged writes> }
//! ```
//!
//! - `_id` is the key's BSON form: a string, an integer (`Int32` or `Int64`
//!   as serde gives it; a `u64` above `i64::MAX` has none, and its events go
//!   to the dead letters), or a document for a struct or map key. A tuple or
//!   sequence key, which MongoDB refuses as an array `_id`, is a document of
//!   its elements by position: `("shop", 7)` is `{"0": "shop", "1": 7}`.
//!   Field names starting with `$` are refused (dead letters).
//! - `s` is the state's BSON form, as serde gives it (the form the law
//!   harness checks). Fields and map entries no write has touched may be
//!   missing: read them as the identity's.
//! - `v` counts the writes that changed the state (`Int64`).
//! - `p` is the exactly-once guard: for each events partition, the end of
//!   the last batch whose events for this key are in `s`. Every event of that
//!   partition below it is applied, none at or beyond it.
//! - `w` logs, per events partition, the latest guarded writes that
//!   touched it (at most 4 each), each as the postcard bytes of the change
//!   it published (`Binary`); `wn` counts the logged
//!   writes (equal to `v` while every write was logged), and `c: true`
//!   marks a document created by a write that logged. All three are
//!   accrete's bookkeeping for re-publishing a write a crashed node did not
//!   publish; other readers ignore them. Absent from documents written
//!   before format 1 (or after an idempotent write).
//!
//! The collection `accrete.models` holds `{_id: <model>, format: <n>,
//! generation: <g>}`: the newest format written to the model's collection,
//! and which generation of its data is current. A build refuses to serve a
//! model written in a newer format than it knows. Format 0 (no record) is
//! format 1 without `w` and `c`; format 1 reads it. Generation 0 (no
//! `generation`) lives in the collection named as the model; each rebuild
//! starts the next, `g`, in the collection `accrete.g<g>.<model>` (see
//! [`rebuild`](crate::Deployment::rebuild)), whose versions are read as `g` × 2⁴⁰ + `v`.
//!
//! The other collections, all under [`MongoConfig::collection_prefix`]:
//! `accrete.positions` (`{_id: "<reader>/<partition>", model, partition,
//! next}`: where each reader resumes), `accrete.dead_letters`,
//! `accrete.hook_outcomes` and `accrete.hook_dead_letters` (by idempotency
//! key), `accrete.hook_runs` (per hook, model and key: what runs covered and
//! the runs planned, see `hooks::runner`), `accrete.members`,
//! `accrete.sources` (`{_id: <events topic>, s}`: the source number of the
//! ids the topic's events carry) and `accrete.origins` (`{_id:
//! "<source>/<origin id>", p, o}`: which copy of a forwarded event applies,
//! see `Node::forward` in the cluster module).
//!
//! # The write
//!
//! A write of a batch `[from, end)` of partition `P` is one update whose
//! filter carries the guard (`p.P <= from`) and whose operators set
//! `p.P = end`: the guard and the effect are one single-document write, so
//! no multi-document transaction is needed. If the guard does not hold (the
//! batch was partly applied before a crash, or another node wrote the key),
//! the upsert answers "duplicate key", and the runtime reads the document,
//! keeps the events at or beyond `p.P`, and writes again with the version as
//! the condition. States with a [`Pushdown`] write blindly (no read);
//! others read, combine, and write with the version as the condition.

use std::collections::HashMap;
use std::time::Duration;

use bson::{Bson, Document, doc};
use mongodb::options::{ClientOptions, UpdateOneModel, WriteModel};
use mongodb::sync::{Client, Collection, Database};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::DeadLetter;
use super::pushdown::{Pushdown, Update};
use crate::codec::{Range, Written};
use crate::error::DOCUMENT_REFUSED;
use crate::event::EventId;
use crate::hooks::runner::{Coverage, IdSet, KeyPlan, Plan};
use crate::model::ReadModel;
use crate::monoids::Monoid;
use crate::{Error, Result};

/// Where the state lives: a MongoDB URI (TLS and authentication go in the
/// URI, as the driver reads them) and a database.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MongoConfig {
    /// `mongodb://…` or `mongodb+srv://…`, e.g.
    /// `mongodb://user:pass@db1,db2/?replicaSet=rs0&tls=true`.
    pub uri: String,
    /// The database holding the read models' collections.
    pub database: String,
    /// Put in front of every collection name accrete uses: each read
    /// model's (named after the model), `accrete.positions`,
    /// `accrete.dead_letters`, `accrete.hook_outcomes`,
    /// `accrete.hook_dead_letters`, `accrete.hook_runs`, `accrete.members` and
    /// `accrete.models`. Empty by default; e.g. `"shop_"` to
    /// share a database with other applications.
    pub collection_prefix: String,
}

impl Default for MongoConfig {
    fn default() -> Self {
        MongoConfig {
            uri: "mongodb://127.0.0.1:27017".into(),
            database: "accrete".into(),
            collection_prefix: String::new(),
        }
    }
}

/// The MongoDB store: one collection per read model (named after it), and
/// `accrete.positions`, `accrete.dead_letters`, `accrete.hook_outcomes`,
/// `accrete.hook_dead_letters`, `accrete.members`; all under
/// [`MongoConfig::collection_prefix`].
#[derive(Clone)]
pub struct MongoStore {
    client: Client,
    db: Database,
    /// In front of every collection name.
    prefix: String,
}

use crate::names::mongo::{
    DEAD_LETTERS, HOOK_DEAD_LETTERS, HOOK_OUTCOMES, HOOK_RUNS, MEMBERS, MODELS, ORIGINS, POSITIONS,
    SOURCES,
};

/// Documents per request when claiming forwarded ids.
const CLAIM_CHUNK: usize = 1_000;

/// The version of the state documents' format this build writes and reads
/// (see the [module docs](self)).
pub const DOCUMENT_FORMAT: u32 = 1;

/// The format a model is recorded in once rebuilt on a cluster: its
/// documents are as in [`DOCUMENT_FORMAT`], but under its generation's
/// names, which a build from before generations would not read (it would
/// serve the dropped first generation), so such a build refuses it.
pub const GENERATIONS_FORMAT: u32 = 2;

pub use crate::hooks::HookDeadLetter;
use crate::hooks::runner::Outcome;

impl MongoStore {
    /// Connects and checks that the server answers (within 10 s unless the
    /// URI sets `serverSelectionTimeoutMS`).
    ///
    /// # Errors
    ///
    /// [`Error::Mongo`] with the URI (without its password) when the URI is
    /// malformed or no server answers.
    pub fn connect(config: &MongoConfig) -> Result<Self> {
        let shown = redact(&config.uri);
        let mut options = ClientOptions::parse(&config.uri)
            .run()
            .map_err(|e| Error::mongo_with("connect", format!("bad URI {shown}: {e}"), e))?;
        if options.server_selection_timeout.is_none() {
            options.server_selection_timeout = Some(Duration::from_secs(10));
        }
        options.app_name.get_or_insert_with(|| "accrete".into());
        let client = Client::with_options(options)
            .map_err(|e| Error::mongo_with("connect", format!("{shown}: {e}"), e))?;
        let db = client.database(&config.database);
        db.run_command(doc! { "ping": 1 }).run().map_err(|e| {
            Error::mongo_with(
                "connect",
                format!(
                    "no MongoDB server answers at {shown}: {e} (is it running? \
                     `scripts/servers.sh start` starts one for development)"
                ),
                e,
            )
        })?;
        Ok(MongoStore {
            client,
            db,
            prefix: config.collection_prefix.clone(),
        })
    }

    /// The driver's client, to share its connection pool.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.db
    }

    pub(crate) fn states(&self, model: &str) -> Collection<Document> {
        self.coll(model)
    }

    /// A collection of accrete's, under the configured prefix.
    fn coll(&self, name: &str) -> Collection<Document> {
        self.db.collection(&format!("{}{name}", self.prefix))
    }

    /// Creates what the model's collections need and records their format.
    /// The state collection is keyed by `_id`; the dead letters get an index
    /// by model and time.
    ///
    /// # Errors
    ///
    /// [`Error::Mongo`] when the server refuses; [`Error::Model`] when the
    /// model's documents are in a newer format than this build knows.
    pub fn prepare(&self, model: &str) -> Result<()> {
        let models = self.coll(MODELS);
        let found = models
            .find_one(doc! { "_id": model })
            .run()
            .map_err(|e| Error::mongo("read the model's format", e))?
            .and_then(|d| d.get("format").and_then(as_u64))
            .unwrap_or(0);
        if found > u64::from(GENERATIONS_FORMAT) {
            return Err(Error::Model(
                model.into(),
                format!(
                    "its documents in MongoDB are in format {found}, written by a newer accrete; \
                     this build knows format {GENERATIONS_FORMAT}: upgrade this node, or rebuild the \
                     model into another database"
                ),
            ));
        }
        models
            .update_one(
                doc! { "_id": model },
                doc! { "$max": { "format": i64::from(DOCUMENT_FORMAT) } },
            )
            .upsert(true)
            .run()
            .map_err(|e| Error::mongo("record the model's format", e))?;
        let index = mongodb::IndexModel::builder()
            .keys(doc! { "model": 1, "at": 1 })
            .build();
        self.coll(DEAD_LETTERS)
            .create_index(index)
            .run()
            .map_err(|e| Error::mongo("create index", e))?;
        // No index on the planned runs (`plans.id`): sweeps (every minute)
        // and `hook_lag` scan a hook's documents, and an index on the array
        // that every plan and record rewrites cost more than it saved
        // (measured on SecantusDB: the hook's steady latency 2.7 s → 10 s).
        Ok(())
    }

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

    /// The stored state of `key`, or `None` when no event touched it.
    ///
    /// # Errors
    ///
    /// [`Error::Mongo`], or [`Error::Corrupt`] when the stored form does not
    /// decode as `M::State` (did the state type change? rebuild the model).
    pub fn get<M: ReadModel>(&self, key: &M::Key) -> Result<Option<M::State>> {
        let id = key_id(key)?;
        let doc = self
            .states(&self.generation(M::NAME)?.name)
            .find_one(doc! { "_id": id })
            .run()
            .map_err(|e| Error::mongo("find", e))?;
        doc.map(|d| decode_state::<M::State>(d.get("s")))
            .transpose()
    }

    /// Calls `f` with every key and state of the model, in `_id` order,
    /// until it returns `false`.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub fn scan<M: ReadModel>(&self, mut f: impl FnMut(M::Key, M::State) -> bool) -> Result<()>
    where
        M::Key: DeserializeOwned,
    {
        let cursor = self
            .states(&self.generation(M::NAME)?.name)
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .run()
            .map_err(|e| Error::mongo("find", e))?;
        for doc in cursor {
            let doc = doc.map_err(|e| Error::mongo("find", e))?;
            let (key, state) = decode_doc::<M::Key, M::State>(&doc)?;
            if !f(key, state) {
                break;
            }
        }
        Ok(())
    }

    /// Deletes the model's current state, positions and dead letters (for
    /// a test: a running cluster rebuilds with
    /// [`rebuild`](crate::Deployment::rebuild)).
    ///
    /// # Errors
    ///
    /// [`Error::Mongo`].
    pub fn drop_model(&self, model: &str) -> Result<()> {
        self.drop_generation(&self.generation(model)?)?;
        self.coll(DEAD_LETTERS)
            .delete_many(doc! { "model": model })
            .run()
            .map_err(|e| Error::mongo("delete", e))?;
        Ok(())
    }

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

    /// Upserts `(collection, filter, update)` triples in one unordered bulk
    /// write.
    /// An upsert of one document of accrete's collection `coll`, for a
    /// bulk write.
    fn upsert(&self, coll: &str, filter: Document, update: Document) -> WriteModel {
        WriteModel::UpdateOne(
            UpdateOneModel::builder()
                .namespace(self.coll(coll).namespace())
                .filter(filter)
                .update(update)
                .upsert(true)
                .build(),
        )
    }

    fn upsert_all(
        &self,
        what: &'static str,
        ops: impl IntoIterator<Item = (&'static str, Document, Document)>,
    ) -> Result<()> {
        let models: Vec<WriteModel> = ops
            .into_iter()
            .map(|(coll, filter, update)| self.upsert(coll, filter, update))
            .collect();
        if models.is_empty() {
            return Ok(());
        }
        self.client
            .bulk_write(models)
            .ordered(false)
            .run()
            .map_err(|e| Error::mongo(what, e))?;
        Ok(())
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

    /// Which of these idempotency keys have a recorded outcome.
    pub(crate) fn outcomes_recorded(
        &self,
        ids: &[String],
    ) -> Result<std::collections::HashSet<String>> {
        let mut out = std::collections::HashSet::new();
        for chunk in ids.chunks(10_000) {
            let cursor = self
                .coll(HOOK_OUTCOMES)
                .find(doc! { "_id": { "$in": chunk.to_vec() } })
                .projection(doc! { "_id": 1 })
                .run()
                .map_err(|e| Error::mongo("read hook outcomes", e))?;
            for d in cursor {
                let d = d.map_err(|e| Error::mongo("read hook outcomes", e))?;
                if let Ok(id) = d.get_str("_id") {
                    out.insert(id.to_string());
                }
            }
        }
        Ok(out)
    }

    /// Per encoded key, what a hook's runs covered (`hook` is
    /// `<hook>/<model>`), with the stamp a plan checks: 0 for a key without
    /// a document yet.
    pub(crate) fn hook_covered(&self, hook: &str, keys: &[&[u8]]) -> Result<Vec<Coverage>> {
        let ids: Vec<String> = keys.iter().map(|k| hook_run_id(hook, k)).collect();
        let mut found: HashMap<String, Coverage> = HashMap::new();
        for chunk in ids.chunks(10_000) {
            let cursor = self
                .coll(HOOK_RUNS)
                .find(doc! { "_id": { "$in": chunk.to_vec() } })
                .projection(doc! { "stamp": 1, "cover": 1 })
                .run()
                .map_err(|e| Error::mongo("read hook coverage", e))?;
            for d in cursor {
                let d = d.map_err(|e| Error::mongo("read hook coverage", e))?;
                let corrupt = |detail: String| Error::Corrupt {
                    what: "hook coverage",
                    detail,
                };
                let id = d.get_str("_id").map_err(|e| corrupt(e.to_string()))?;
                let stamp = d.get("stamp").and_then(as_u64).unwrap_or(0);
                let set = match d.get("cover") {
                    Some(Bson::Binary(b)) => crate::event::from_bytes(&b.bytes)
                        .map_err(|e| corrupt(format!("{e} in {id}")))?,
                    _ => IdSet::default(),
                };
                found.insert(
                    id.to_string(),
                    Coverage {
                        set,
                        stamp: Some(stamp),
                    },
                );
            }
        }
        Ok(ids
            .iter()
            .map(|id| {
                found.remove(id).unwrap_or(Coverage {
                    set: IdSet::default(),
                    stamp: Some(0),
                })
            })
            .collect())
    }

    /// Writes each key's coverage and planned run, each on the condition
    /// that its stamp is still the one read: returns the keys another node
    /// planned meanwhile (nothing of theirs is written).
    pub(crate) fn plan_hook_runs(
        &self,
        hook: &str,
        keys: &[KeyPlan<'_>],
    ) -> Result<std::collections::HashSet<Vec<u8>>> {
        let ns = self.coll(HOOK_RUNS).namespace();
        let mut models = Vec::with_capacity(keys.len());
        for k in keys {
            let stamp = k.coverage.stamp.unwrap_or(0) as i64;
            let cover = postcard::to_stdvec(&k.coverage.set).map_err(|e| Error::Encode {
                what: "hook coverage",
                detail: e.to_string(),
            })?;
            let mut set = doc! {
                "stamp": stamp + 1,
                "h": hook,
                "cover": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: cover },
            };
            if let Some(p) = k.partition {
                set.insert("part", i64::from(p));
            }
            let mut update = doc! { "$set": set };
            if let Some(plan) = k.run {
                let bytes = postcard::to_stdvec(plan).map_err(|e| Error::Encode {
                    what: "hook plan",
                    detail: e.to_string(),
                })?;
                update.insert(
                    "$push",
                    doc! { "plans": { "id": &plan.id, "at": bson::DateTime::now(), "plan": bson::Binary {
                        subtype: bson::spec::BinarySubtype::Generic, bytes,
                    } } },
                );
            }
            models.push(WriteModel::UpdateOne(
                UpdateOneModel::builder()
                    .namespace(ns.clone())
                    .filter(doc! { "_id": hook_run_id(hook, k.key), "stamp": stamp })
                    .update(update)
                    .upsert(true)
                    .build(),
            ));
        }
        if models.is_empty() {
            return Ok(std::collections::HashSet::new());
        }
        let refused = refused(self.client.bulk_write(models).ordered(false).run())?;
        if let Some((_, reason)) = refused.failed.iter().next() {
            return Err(Error::mongo_msg("write hook plans", reason));
        }
        Ok(refused
            .duplicates
            .iter()
            .map(|&i| keys[i].key.to_vec())
            .collect())
    }

    /// A hook's runs planned at least `min_age` ago and not yet recorded,
    /// of the keys `mine` accepts (by encoded key and changes partition).
    pub(crate) fn hook_plans(
        &self,
        hook: &str,
        min_age: Duration,
        mine: &dyn Fn(&[u8], Option<u32>) -> bool,
    ) -> Result<Vec<Plan>> {
        let before = bson::DateTime::from_millis(
            bson::DateTime::now().timestamp_millis() - min_age.as_millis() as i64,
        );
        let mut out = Vec::new();
        self.with_plans(hook, doc! { "part": 1, "plans": 1 }, |d, plans| {
            let part = d.get("part").and_then(as_u64).map(|p| p as u32);
            for p in plans {
                let Some(p) = p.as_document() else { continue };
                if p.get_datetime("at").is_ok_and(|at| *at > before) {
                    continue;
                }
                let Some(Bson::Binary(b)) = p.get("plan") else {
                    continue;
                };
                let plan: Plan =
                    crate::event::from_bytes(&b.bytes).map_err(|e| Error::Corrupt {
                        what: "hook plan",
                        detail: e,
                    })?;
                if mine(&plan.key, part) {
                    out.push(plan);
                }
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Calls `f` with each document of a hook (`<hook>/<model>`) in
    /// `accrete.hook_runs` that has planned runs, and its plans (the fields
    /// of `projection`).
    fn with_plans(
        &self,
        hook: &str,
        projection: Document,
        mut f: impl FnMut(&Document, &bson::Array) -> Result<()>,
    ) -> Result<()> {
        let cursor = self
            .coll(HOOK_RUNS)
            .find(doc! { "h": hook, "plans.id": { "$exists": true } })
            .projection(projection)
            .run()
            .map_err(|e| Error::mongo("read hook plans", e))?;
        for d in cursor {
            let d = d.map_err(|e| Error::mongo("read hook plans", e))?;
            if let Ok(plans) = d.get_array("plans") {
                f(&d, plans)?;
            }
        }
        Ok(())
    }

    /// How many runs of a hook (`<hook>/<model>`) are planned and not yet
    /// recorded, over all keys.
    pub(crate) fn hook_plans_open(&self, hook: &str) -> Result<u64> {
        let mut open = 0;
        self.with_plans(hook, doc! { "plans.id": 1 }, |_, plans| {
            open += plans.len() as u64;
            Ok(())
        })?;
        Ok(open)
    }

    /// Records runs' outcomes (and, for failures, their dead letters) and
    /// forgets their plans, in one ordered request (a failure part way
    /// leaves plans whose outcomes are recorded: they are not run again).
    pub(crate) fn record_outcomes(
        &self,
        hook: &str,
        model: &str,
        outcomes: &[Outcome],
    ) -> Result<()> {
        // One ordered request: the outcomes (and dead letters) first, then
        // the plans' removal, so that no plan goes without its outcome.
        let now = bson::DateTime::now();
        let runs = format!("{hook}/{model}");
        let mut models = Vec::with_capacity(outcomes.len() * 2);
        for o in outcomes {
            if let Some(reason) = &o.error {
                models.push(self.upsert(
                    HOOK_DEAD_LETTERS,
                    doc! { "_id": &o.id },
                    doc! { "$setOnInsert": {
                        "hook": hook, "reason": reason, "attempts": o.attempts as i64, "at": now,
                    }},
                ));
            }
            models.push(self.upsert(
                HOOK_OUTCOMES,
                doc! { "_id": &o.id },
                doc! { "$setOnInsert": {
                    "hook": hook, "ok": o.error.is_none(), "attempts": o.attempts as i64, "at": now,
                    "latency_ms": o.latency_ms as i64,
                }},
            ));
        }
        let ns = self.coll(HOOK_RUNS).namespace();
        for o in outcomes {
            models.push(WriteModel::UpdateOne(
                UpdateOneModel::builder()
                    .namespace(ns.clone())
                    .filter(doc! { "_id": hook_run_id(&runs, &o.key) })
                    .update(doc! { "$pull": { "plans": { "id": &o.id } } })
                    .build(),
            ));
        }
        if models.is_empty() {
            return Ok(());
        }
        self.client
            .bulk_write(models)
            .ordered(true)
            .run()
            .map_err(|e| Error::mongo("write hook outcomes", e))?;
        Ok(())
    }

    /// A hook's dead letters, oldest first.
    ///
    /// # Errors
    ///
    /// [`Error::Mongo`].
    pub fn hook_dead_letters(&self, hook: &str) -> Result<Vec<HookDeadLetter>> {
        let cursor = self
            .coll(HOOK_DEAD_LETTERS)
            .find(doc! { "hook": hook })
            .sort(doc! { "at": 1, "_id": 1 })
            .run()
            .map_err(|e| Error::mongo("read hook dead letters", e))?;
        let mut out = Vec::new();
        for d in cursor {
            let d = d.map_err(|e| Error::mongo("read hook dead letters", e))?;
            out.push(HookDeadLetter {
                hook: hook.to_string(),
                idempotency_key: d.get_str("_id").unwrap_or_default().to_string(),
                reason: d.get_str("reason").unwrap_or_default().to_string(),
                attempts: d.get("attempts").and_then(as_u64).unwrap_or(0) as u32,
            });
        }
        Ok(out)
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
    /// [`Error::Usage`] describing the first case that disagrees, or
    /// [`Error::Mongo`].
    pub fn check_pushdown<S>(
        &self,
        collection: &str,
        cases: impl IntoIterator<Item = (S, S)>,
    ) -> Result<usize>
    where
        S: Pushdown + Serialize + DeserializeOwned + Clone + PartialEq + std::fmt::Debug,
    {
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

/// The URI without its password, for messages.
/// The `_id` of a key's hook-run document: `<hook>/<model>/<key in hex>`.
fn hook_run_id(hook: &str, key: &[u8]) -> String {
    let mut id = String::with_capacity(hook.len() + 1 + key.len() * 2);
    id.push_str(hook);
    id.push('/');
    for b in key {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

fn redact(uri: &str) -> String {
    match (uri.find("://"), uri.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &uri[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &uri[..scheme + 3], &uri[at..]),
                None => uri.to_string(),
            }
        }
        _ => uri.to_string(),
    }
}

/// A key as the document's `_id`: its BSON form, except that a sequence
/// (a tuple, a `Vec`, an array), which MongoDB refuses as `_id`, becomes a
/// document of its elements by position: `("shop", 7)` is stored as
/// `{"0": "shop", "1": 7}`. Strings, integers and documents (structs, maps)
/// are stored as they serialize.
///
/// # Errors
///
/// [`Error::Encode`] for a key without a BSON form (a `u64` above
/// `i64::MAX`), or one MongoDB refuses as `_id` (a field name starting with
/// `$`): the runtime sends its events to the dead letters.
pub(crate) fn key_id<K: Serialize>(key: &K) -> Result<Bson> {
    let id = bson::serialize_to_bson(key).map_err(|e| Error::Encode {
        what: "key",
        detail: format!("{e} (keys must have a BSON form: no u64 above i64::MAX)"),
    })?;
    let id = match id {
        Bson::Array(items) => Bson::Document(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| (i.to_string(), v))
                .collect(),
        ),
        other => other,
    };
    if let Some(field) = dollar_field(&id) {
        return Err(Error::Encode {
            what: "key",
            detail: format!(
                "its BSON form {id} has the field name `{field}`: MongoDB refuses `$`-prefixed \
                 field names in an `_id`"
            ),
        });
    }
    Ok(id)
}

/// A field name starting with `$` anywhere in `value`'s documents.
fn dollar_field(value: &Bson) -> Option<&str> {
    match value {
        Bson::Document(d) => d.iter().find_map(|(k, v)| {
            if k.starts_with('$') {
                Some(k.as_str())
            } else {
                dollar_field(v)
            }
        }),
        Bson::Array(items) => items.iter().find_map(dollar_field),
        _ => None,
    }
}

/// A stored `_id` as the key: as [`key_id`] made it (a document of the
/// elements by position, for a sequence key), or an array (as sequence keys
/// were stored before).
pub(crate) fn decode_key<K: DeserializeOwned>(id: &Bson) -> Result<K> {
    let first = match bson::deserialize_from_bson::<K>(id.clone()) {
        Ok(key) => return Ok(key),
        Err(e) => e,
    };
    if let Bson::Document(d) = id
        && d.keys().enumerate().all(|(i, k)| *k == i.to_string())
        && let Ok(key) =
            bson::deserialize_from_bson::<K>(Bson::Array(d.values().cloned().collect()))
    {
        return Ok(key);
    }
    Err(Error::Corrupt {
        what: "stored key",
        detail: format!("{first} in {id}"),
    })
}

/// The stored state: its BSON form laid over the identity's, so that fields
/// and entries no write has touched yet read as the identity's.
pub(crate) fn decode_state<S: Monoid + Serialize + DeserializeOwned>(
    stored: Option<&Bson>,
) -> Result<S> {
    let Some(stored) = stored else {
        return Ok(S::identity());
    };
    let mut base = bson::serialize_to_bson(&S::identity()).map_err(|e| Error::Encode {
        what: "state",
        detail: e.to_string(),
    })?;
    overlay(&mut base, stored);
    bson::deserialize_from_bson(base).map_err(|e| Error::Corrupt {
        what: "stored state",
        detail: format!("{e} in {stored} (did the state type change? rebuild the read model)"),
    })
}

fn overlay(base: &mut Bson, top: &Bson) {
    match (base, top) {
        (Bson::Document(b), Bson::Document(t)) => {
            for (k, v) in t {
                match b.get_mut(k) {
                    Some(existing) => overlay(existing, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, t) => *b = t.clone(),
    }
}

pub(crate) fn decode_doc<K: DeserializeOwned, S: Monoid + Serialize + DeserializeOwned>(
    doc: &Document,
) -> Result<(K, S)> {
    let key = decode_key(doc.get("_id").unwrap_or(&Bson::Null))?;
    Ok((key, decode_state(doc.get("s"))?))
}

/// The guard positions of a state document: partition to end offset.
pub(crate) fn positions(doc: &Document) -> HashMap<u32, u64> {
    let mut out = HashMap::new();
    if let Ok(p) = doc.get_document("p") {
        for (k, v) in p {
            if let (Ok(partition), Some(end)) = (k.parse::<u32>(), as_u64(v)) {
                out.insert(partition, end);
            }
        }
    }
    out
}

fn as_u64(v: &Bson) -> Option<u64> {
    match v {
        Bson::Int64(n) => u64::try_from(*n).ok(),
        Bson::Int32(n) => u64::try_from(*n).ok(),
        Bson::Double(f) if *f >= 0.0 => Some(*f as u64),
        _ => None,
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
struct Refused {
    /// Refused as duplicate keys: a guard or condition that did not hold.
    duplicates: std::collections::HashSet<usize>,
    /// Refused for what they are (the server's message): an `_id` or value
    /// it does not accept, an operator it cannot apply to the stored value.
    failed: HashMap<usize, String>,
}

/// Sorts out a bulk write's answer. A failure of the whole write (the
/// network, a write concern) is an error, to retry the batch.
fn refused(
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
fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    matches!(
        *e.kind,
        mongodb::error::ErrorKind::Write(mongodb::error::WriteFailure::WriteError(ref w))
            if w.code == 11000
    )
}

/// Write errors by index: "duplicate key" (E11000) apart from the documents
/// refused for what they are ([`DOCUMENT_REFUSED`]); any other write error
/// fails the whole write, to retry.
fn sort_errors<'a>(
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

/// A state's stored (BSON) form.
fn state_bson<S: Serialize>(state: &S) -> Result<Bson> {
    bson::serialize_to_bson(state).map_err(|e| Error::Encode {
        what: "state",
        detail: format!("{e} (the state must have a BSON form)"),
    })
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
fn new_document<K: Serialize, S: Serialize + Clone>(
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

#[cfg(test)]
mod tests {
    //! The guard against a real server (`ACCRETE_MONGODB_URI`).
    use super::*;
    use crate::monoids::Sum;

    fn store(name: &str) -> MongoStore {
        let uri = std::env::var("ACCRETE_MONGODB_URI")
            .unwrap_or_else(|_| "mongodb://127.0.0.1:27017".into());
        let s = MongoStore::connect(&MongoConfig {
            uri,
            database: format!("accrete_unit_{name}_{}", std::process::id()),
            ..MongoConfig::default()
        })
        .expect("these tests need a MongoDB-protocol server (scripts/servers.sh start)");
        s.database().drop().run().unwrap();
        s
    }

    /// `(partition, from, end)` triples as ranges.
    fn ranges(r: &[(u32, u64, u64)]) -> Vec<Range> {
        r.iter()
            .map(|&(partition, from, end)| Range {
                partition,
                from,
                end,
            })
            .collect()
    }

    fn kw(
        key: &str,
        delta: i64,
        r: &[(u32, u64, u64)],
        maybe_new: bool,
    ) -> KeyWrite<String, Sum<i64>> {
        KeyWrite {
            maybe_new,
            key: key.into(),
            delta: Sum(delta),
            ranges: ranges(r),
        }
    }

    fn get(s: &MongoStore, key: &str) -> i64 {
        let d = s
            .states("m")
            .find_one(doc! { "_id": key })
            .run()
            .unwrap()
            .unwrap();
        decode_state::<Sum<i64>>(d.get("s")).unwrap().0
    }

    #[test]
    fn key_ids_keep_scalars_and_turn_sequences_into_documents() {
        // Scalars and documents: as they serialize (the stored form of
        // existing models does not change).
        assert_eq!(key_id(&"a").unwrap(), Bson::String("a".into()));
        assert_eq!(key_id(&7_u64).unwrap(), Bson::Int64(7));
        assert_eq!(key_id(&-3_i32).unwrap(), Bson::Int32(-3));
        assert_eq!(key_id(&(i64::MAX as u64)).unwrap(), Bson::Int64(i64::MAX));
        let mut map = std::collections::BTreeMap::new();
        map.insert("0".to_string(), 1_i32);
        map.insert("1".to_string(), 2_i32);
        assert_eq!(
            key_id(&map).unwrap(),
            Bson::Document(doc! { "0": 1, "1": 2 })
        );
        // Sequences, which MongoDB refuses as `_id`: documents by position;
        // nested sequences stay arrays (MongoDB accepts them there).
        let pair = ("shop".to_string(), 7_u32);
        assert_eq!(
            key_id(&pair).unwrap(),
            Bson::Document(doc! { "0": "shop", "1": 7_i64 })
        );
        let nested = (vec![1_i64, 2], "x".to_string());
        assert_eq!(
            key_id(&nested).unwrap(),
            Bson::Document(doc! { "0": [1_i64, 2_i64], "1": "x" })
        );
        assert_eq!(key_id(&Vec::<i64>::new()).unwrap(), Bson::Document(doc! {}));
        // Read back, from the new form and from arrays (the form before).
        let back = |id: Bson| decode_key::<(String, u32)>(&id).unwrap();
        assert_eq!(back(key_id(&pair).unwrap()), pair);
        assert_eq!(back(Bson::Array(vec!["shop".into(), Bson::Int64(7)])), pair);
        assert_eq!(
            decode_key::<(Vec<i64>, String)>(&key_id(&nested).unwrap()).unwrap(),
            nested
        );
        assert_eq!(
            decode_key::<Vec<i64>>(&key_id(&Vec::<i64>::new()).unwrap()).unwrap(),
            Vec::<i64>::new()
        );
        assert_eq!(
            decode_key::<Option<(String, u32)>>(&key_id(&Some(pair.clone())).unwrap()).unwrap(),
            Some(pair)
        );
        // A map whose keys look like positions stays a map.
        assert_eq!(
            decode_key::<std::collections::BTreeMap<String, i32>>(&key_id(&map).unwrap()).unwrap(),
            map
        );
        // No `_id` at all: an error naming the cause.
        let e = key_id(&u64::MAX).unwrap_err().to_string();
        assert!(e.contains("i64::MAX"), "{e}");
        let mut dollar = std::collections::BTreeMap::new();
        dollar.insert("$gt".to_string(), 1_i32);
        let e = key_id(&("a", dollar)).unwrap_err().to_string();
        assert!(e.contains("$gt"), "{e}");
    }

    /// A key without an `_id` and a state without a BSON form are
    /// rejected, with the reason; the other keys of the batch apply.
    /// Only errors about the document park its key in the dead letters; a
    /// write conflict, a stepping-down primary, a shutdown or an unknown
    /// code fail the batch, which is retried whole.
    #[test]
    fn write_errors_that_may_pass_fail_the_batch_instead_of_parking_the_key() {
        let m = "message".to_string();
        let r = sort_errors("w", [(0, 11000, &m), (1, 14, &m), (2, 52, &m)].into_iter()).unwrap();
        assert!(r.duplicates.contains(&0));
        assert!(r.failed.contains_key(&1) && r.failed.contains_key(&2));
        for code in [1, 8, 50, 91, 112, 189, 262, 10107, 11600, 13435, 424242] {
            let e = sort_errors("w", [(0, 11000, &m), (1, code, &m)].into_iter())
                .err()
                .unwrap_or_else(|| panic!("code {code} must fail the write"));
            assert!(e.to_string().contains(&code.to_string()), "{e}");
        }
    }

    #[test]
    fn keys_that_cannot_be_written_are_rejected_and_the_rest_applies() {
        for maybe_new in [true, false] {
            let s = store(&format!("rejected_{maybe_new}"));
            let kw = |key: u64, delta: u64| KeyWrite {
                maybe_new,
                key,
                delta: Sum(delta),
                ranges: vec![Range {
                    partition: 0,
                    from: 0,
                    end: 3,
                }],
            };
            let mut no_split = |_: &Guards<u64>| -> Split<u64, Sum<u64>> { HashMap::new() };
            let w = write_batch(
                &s,
                "m",
                true,
                vec![kw(1, 5), kw(u64::MAX, 1), kw(2, u64::MAX)],
                &mut no_split,
            )
            .unwrap();
            let mut rejected: Vec<_> = w.rejected.iter().map(|(k, _)| *k).collect();
            rejected.sort();
            assert_eq!(rejected, vec![2, u64::MAX], "{:?}", w.rejected);
            assert!(
                w.rejected
                    .iter()
                    .all(|(_, r)| r.contains("i64::MAX") || r.contains("BSON")),
                "{:?}",
                w.rejected
            );
            assert_eq!(w.changes.len(), 1);
            assert_eq!(w.changes[0].0, 1);
            let d = s
                .states("m")
                .find_one(doc! { "_id": 1_i64 })
                .run()
                .unwrap()
                .unwrap();
            assert_eq!(decode_state::<Sum<u64>>(d.get("s")).unwrap(), Sum(5));
            s.database().drop().run().unwrap();
        }
    }

    #[test]
    fn a_batch_written_twice_is_applied_once() {
        written_twice("twice", false);
    }

    /// The same through the insert-first path: every key is tried as new,
    /// the inserts of existing keys are refused and go on to the guard.
    #[test]
    fn a_batch_written_twice_is_applied_once_when_inserts_go_first() {
        written_twice("twice_new", true);
    }

    fn written_twice(name: &str, maybe_new: bool) {
        let kw =
            |key: &str, delta: i64, ranges: &[(u32, u64, u64)]| kw(key, delta, ranges, maybe_new);
        let s = store(name);
        let mut no_split = |_: &Guards<String>| -> Split<String, Sum<i64>> {
            HashMap::from([("a".to_string(), (Sum(5), Sum(0)))])
        };
        let w = write_batch(
            &s,
            "m",
            true,
            vec![kw("a", 5, &[(0, 0, 10)])],
            &mut no_split,
        )
        .unwrap();
        assert_eq!(w.changes.len(), 1);
        assert_eq!(get(&s, "a"), 5);
        let w = write_batch(
            &s,
            "m",
            true,
            vec![kw("a", 5, &[(0, 0, 10)])],
            &mut no_split,
        )
        .unwrap();
        assert_eq!(get(&s, "a"), 5, "the second write is refused by the guard");
        assert_eq!(w.conflicts, 1);
        // Republished: the part applied before, covering [0, 10).
        assert_eq!(w.changes.len(), 1);
        assert_eq!(w.changes[0].1.ranges[0].end, 10);
        // A batch overlapping the applied one: only the part since the guard.
        let mut split = |g: &Guards<String>| -> Split<String, Sum<i64>> {
            assert_eq!(g["a"], vec![(0, 10)]);
            HashMap::from([("a".to_string(), (Sum(3), Sum(4)))])
        };
        write_batch(&s, "m", true, vec![kw("a", 7, &[(0, 5, 15)])], &mut split).unwrap();
        assert_eq!(get(&s, "a"), 9);
        // Two partitions in one write; one of them already applied.
        write_batch(&s, "m", true, vec![kw("b", 1, &[(1, 0, 4)])], &mut no_split).unwrap();
        let mut split = |g: &Guards<String>| -> Split<String, Sum<i64>> {
            assert_eq!(g["b"], vec![(1, 4)]);
            HashMap::from([("b".to_string(), (Sum(1), Sum(10)))])
        };
        write_batch(
            &s,
            "m",
            true,
            vec![kw("b", 11, &[(1, 0, 4), (2, 0, 8)])],
            &mut split,
        )
        .unwrap();
        assert_eq!(get(&s, "b"), 11);
        s.database().drop().run().unwrap();
    }

    /// The BSON of representative documents, byte for byte, against the
    /// files in `tests/fixtures/bson` (the documented format: a change
    /// must be deliberate, and bump [`DOCUMENT_FORMAT`] if old readers would
    /// misread it). `ACCRETE_BLESS=1` writes the files anew. Each file is
    /// also read back into its key and state.
    #[test]
    fn documents_match_their_golden_bson() {
        use crate::monoids::{Max, OrSet};
        fn check<K, S>(name: &str, key: K, delta: S, r: &[(u32, u64, u64)])
        where
            K: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
            S: Serialize + DeserializeOwned + Clone + PartialEq + std::fmt::Debug + Monoid,
        {
            let kw = KeyWrite {
                key,
                delta,
                ranges: ranges(r),
                maybe_new: true,
            };
            let d = new_document(&kw, state_bson(&kw.delta).unwrap()).unwrap();
            let bytes = bson::serialize_to_vec(&d).unwrap();
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/bson")
                .join(format!("{name}.bson"));
            if std::env::var_os("ACCRETE_BLESS").is_some() {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &bytes).unwrap();
            }
            let golden = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (ACCRETE_BLESS=1 writes it)", path.display()));
            let read: Document = bson::deserialize_from_slice(&golden).unwrap();
            assert_eq!(
                bytes, golden,
                "{name}: the document's BSON changed: {d} where the golden file has {read}"
            );
            let (k, s) = decode_doc::<K, S>(&read).unwrap();
            assert_eq!((k, s), (kw.key, kw.delta), "{name}: read back");
        }
        check("sum_u64_key", 42_u64, Sum(-1_250_i64), &[(3, 100, 137)]);
        check(
            "tuple_key_two_partitions",
            ("shop \"north\".$1".to_string(), 7_u32),
            Sum(5_i64),
            &[(0, 10, 20), (5, 7, 9)],
        );
        check(
            "string_key_max",
            "alice".to_string(),
            Max(99_i64),
            &[(1, 0, 1)],
        );
        let mut set = OrSet::<String>::new();
        set.add(1, "red".to_string());
        check("orset", 7_i32, set, &[(2, 40, 41)]);
    }

    /// A model records its documents' format (and a rebuild the format of
    /// generations); a build refuses a model written in a newer one, saying
    /// what to do; a rebuild racing another changes nothing.
    #[test]
    fn a_model_in_a_newer_format_is_refused() {
        let s = store("format");
        s.prepare("m").unwrap();
        let models = s.coll(MODELS);
        let format = |s: &MongoStore| {
            s.coll(MODELS)
                .find_one(doc! { "_id": "m" })
                .run()
                .unwrap()
                .unwrap()
                .get_i64("format")
                .unwrap()
        };
        assert_eq!(format(&s), i64::from(DOCUMENT_FORMAT));
        // A rebuild records the format a build from before generations
        // refuses; this build serves it.
        let first = s.generation("m").unwrap();
        let next = s.next_generation("m", &first).unwrap();
        assert_eq!(
            (first.n, next.n, next.name.as_str()),
            (0, 1, "accrete.g1.m")
        );
        assert_eq!(format(&s), i64::from(GENERATIONS_FORMAT));
        s.prepare("m").unwrap();
        assert_eq!(s.generation("m").unwrap(), next);
        let raced = s.next_generation("m", &first).unwrap_err().to_string();
        assert!(raced.contains("another rebuild"), "{raced}");
        models
            .update_one(doc! { "_id": "m" }, doc! { "$set": { "format": 99_i64 } })
            .run()
            .unwrap();
        let e = s.prepare("m").unwrap_err().to_string();
        assert!(e.contains("format 99") && e.contains("upgrade"), "{e}");
        assert_eq!(format(&s), 99, "a refused prepare writes nothing");
        s.database().drop().run().unwrap();
    }

    /// A writer that finds a key partly applied by another (crashed, or
    /// deposed and still writing) publishes the other's change again as it
    /// was written, boundaries and delta, not its own cut of it: two changes
    /// of a key are the same change or disjoint. A document from before
    /// writes were logged gets the cut, counted.
    #[test]
    fn a_partly_applied_key_republishes_the_changes_that_applied_it() {
        for maybe_new in [false, true] {
            let s = store(&format!("logged_{maybe_new}"));
            // Writes key `a`'s batch `r`, whose part already applied (by the
            // document's guard) is `before` and the rest `since`; returns
            // what it published, as (ranges, delta), and how many keys it
            // had to cut.
            let write = |r: &[(u32, u64, u64)], before: i64, since: i64| {
                let mut split = |_: &Guards<String>| -> Split<String, Sum<i64>> {
                    HashMap::from([("a".to_string(), (Sum(before), Sum(since)))])
                };
                let w = write_batch(
                    &s,
                    "m",
                    true,
                    vec![kw("a", before + since, r, maybe_new)],
                    &mut split,
                )
                .unwrap();
                let published: Vec<(Vec<Range>, i64)> = w
                    .changes
                    .iter()
                    .map(|(_, c)| (c.ranges.clone(), c.delta.0))
                    .collect();
                (published, w.recut)
            };
            // X writes events [10, 20) and [20, 30) of partition 0 (and,
            // in the second write, [0, 6) of partition 1) and dies before
            // publishing.
            write(&[(0, 10, 20)], 0, 5);
            write(&[(0, 20, 30), (1, 0, 6)], 0, 6);
            // Y reads partition 0 from 10 in batches of other boundaries:
            // [10, 25) is all applied; [25, 40) applied up to 30.
            let (again, recut) = write(&[(0, 10, 25)], 8, 0);
            assert_eq!(get(&s, "a"), 11);
            assert_eq!(recut, 0);
            assert_eq!(
                again,
                vec![
                    (ranges(&[(0, 10, 20)]), 5),
                    (ranges(&[(0, 20, 30), (1, 0, 6)]), 6)
                ],
                "X's changes, as X wrote them"
            );
            let (published, _) = write(&[(0, 25, 40)], 2, 4);
            assert_eq!(get(&s, "a"), 15);
            assert_eq!(
                published,
                vec![
                    (ranges(&[(0, 20, 30), (1, 0, 6)]), 6),
                    (ranges(&[(0, 30, 40)]), 4)
                ],
                "X's second change again, then Y's own part since the guard"
            );
            // A write by a build that does not log (it bumps `v` alone):
            // the log can no longer vouch for the window; the cut, counted.
            s.states("m")
                .update_one(doc! { "_id": "a" }, doc! { "$inc": { "v": 1_i64 } })
                .run()
                .unwrap();
            assert_eq!(write(&[(0, 35, 40)], 4, 0).1, 1);
            // Without a log (a document written before writes were logged):
            // the cut, counted.
            s.states("m")
                .update_one(doc! { "_id": "a" }, doc! { "$unset": { "w": "", "c": "" } })
                .run()
                .unwrap();
            let (published, recut) = write(&[(0, 35, 40)], 4, 0);
            assert_eq!(recut, 1);
            assert_eq!(published, vec![(ranges(&[(0, 35, 40)]), 4)]);
            assert_eq!(get(&s, "a"), 15);
            s.database().drop().run().unwrap();
        }
    }

    /// Two writers claiming the same forwarded ids at once, each with its
    /// own copy (partly claimed before, in chunks of `CLAIM_CHUNK`), get
    /// the same winner for every id: the one stored, theirs where their
    /// insert went in, the other's read back where it was refused.
    #[test]
    fn writers_racing_for_the_same_claims_get_one_answer() {
        let s = store("claims_race");
        let id = |i: u64| EventId {
            source: 7,
            partition: (i % 3) as u32,
            offset: i,
        };
        let n = CLAIM_CHUNK as u64 * 2 + 17;
        // A third of them claimed before, by neither.
        let earlier: Vec<_> = (0..n)
            .filter(|i| i.is_multiple_of(3))
            .map(|i| (id(i), (9, i)))
            .collect();
        s.claim_origins(1, &earlier).unwrap();
        for round in 0..3 {
            let mine: Vec<_> = (0..n).map(|i| (id(i), (1, i + round))).collect();
            let theirs: Vec<_> = (0..n).rev().map(|i| (id(i), (2, i + round))).collect();
            let (a, b) = std::thread::scope(|t| {
                let a = t.spawn(|| s.claim_origins(1, &mine).unwrap());
                let b = t.spawn(|| s.claim_origins(1, &theirs).unwrap());
                (a.join().unwrap(), b.join().unwrap())
            });
            let mut b = b;
            b.reverse();
            assert_eq!(a, b, "round {round}: one answer for both");
            for (i, w) in a.iter().enumerate() {
                let i = i as u64;
                if i.is_multiple_of(3) {
                    assert_eq!(*w, (9, i), "claimed before the race");
                } else if round == 0 {
                    assert!(*w == (1, i) || *w == (2, i), "{i}: {w:?}");
                } else {
                    assert_eq!(*w, (a[i as usize].0, i), "{i}: stays as claimed");
                }
            }
            // What is stored is what both were told.
            assert_eq!(s.claim_origins(1, &mine).unwrap(), a, "round {round}");
        }
        s.database().drop().run().unwrap();
    }
}
