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
//!   touched it (at most 16 each), each as the postcard bytes of the change
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

mod dead_letters;
mod documents;
mod generation;
mod hooks;
mod law;
mod origins;
mod positions;
mod write;

use std::time::Duration;

use bson::{Document, doc};
use mongodb::options::{Acknowledgment, ClientOptions, UpdateOneModel, WriteModel};
use mongodb::sync::{Client, Collection, Database};

use serde::de::DeserializeOwned;

use super::DeadLetter;
use super::pushdown::{Pushdown, Update};
use crate::model::ReadModel;
use crate::names::mongo::{
    DEAD_LETTERS, HOOK_DEAD_LETTERS, HOOK_OUTCOMES, HOOK_RUNS, MEMBERS, MODELS, ORIGINS, POSITIONS,
    SOURCES,
};
use crate::{Error, Result};
use documents::{as_u64, decode_state, state_bson};
use write::{is_duplicate_key, refused};

pub use crate::hooks::HookDeadLetter;
pub(crate) use documents::{decode_doc, key_id, positions};
pub(crate) use generation::Generation;
#[cfg(feature = "kafka")]
pub(crate) use write::{Guards, KeyWrite, Split, write_batch};

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

/// The version of the state documents' format this build writes and reads
/// (see the [module docs](self)).
pub const DOCUMENT_FORMAT: u32 = 1;

/// The format a model is recorded in once rebuilt on a cluster: its
/// documents are as in [`DOCUMENT_FORMAT`], but under its generation's
/// names, which a build from before generations would not read (it would
/// serve the dropped first generation), so such a build refuses it.
pub const GENERATIONS_FORMAT: u32 = 2;

impl MongoStore {
    /// Connects and checks that the server answers (within 10 s unless the
    /// URI sets `serverSelectionTimeoutMS`).
    ///
    /// # Errors
    ///
    /// [`Error::Mongo`] with the URI (without its password) when the URI is
    /// malformed or no server answers; [`Error::Config`] when it asks for
    /// unacknowledged writes (`w=0`): exactly once rests on the server's
    /// answer to each write (a guard that did not hold, a claim already
    /// made), and with `w=0` there is none.
    pub fn connect(config: &MongoConfig) -> Result<Self> {
        let shown = redact(&config.uri);
        let mut options = ClientOptions::parse(&config.uri)
            .run()
            .map_err(|e| Error::mongo_with("connect", format!("bad URI {shown}: {e}"), e))?;
        let unacknowledged = options
            .write_concern
            .as_ref()
            .is_some_and(|c| c.w == Some(Acknowledgment::Nodes(0)));
        if unacknowledged {
            return Err(Error::Config {
                source_name: format!("MongoDB URI {shown}"),
                detail: "w=0 (unacknowledged writes) cannot keep exactly once: accrete learns \
                         from each write's answer whether its guard held; remove `w=0` (the \
                         default, w=1, or `w=majority`)"
                    .into(),
            });
        }
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
        crate::names::validate_model_name(model)?;
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
    /// [`Error::InvalidName`] for a name no model can have (one of
    /// accrete's own collections); [`Error::Mongo`].
    pub fn drop_model(&self, model: &str) -> Result<()> {
        crate::names::validate_model_name(model)?;
        self.drop_generation(&self.generation(model)?)?;
        self.coll(DEAD_LETTERS)
            .delete_many(doc! { "model": model })
            .run()
            .map_err(|e| Error::mongo("delete", e))?;
        Ok(())
    }

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

    /// Upserts `(collection, filter, update)` triples in one unordered bulk
    /// write.
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
}

/// The URI without its password, for messages.
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

#[cfg(test)]
mod tests;
