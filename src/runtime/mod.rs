//! The runtime: read models fed from the log, folded into the store.
//!
//! ```no_run
//! use accrete::model::{Deltas, ReadModel};
//! use accrete::monoids::Count;
//! use accrete::Deployment;
//! use accrete::runtime::Runtime;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct PageView { page: String }
//!
//! struct Views;
//! impl ReadModel for Views {
//!     const NAME: &'static str = "views";
//!     type Event = PageView;
//!     type Key = String;
//!     type State = Count;
//!     fn project(&self, e: &PageView, out: &mut Deltas<String, Count>) -> Result<(), String> {
//!         out.push(e.page.clone(), Count::one());
//!         Ok(())
//!     }
//! }
//!
//! # fn main() -> accrete::Result<()> {
//! let runtime = Runtime::open("data")?;
//! runtime.add_model(Views)?;
//! runtime.submit("/pricing", 0, &PageView { page: "/pricing".into() })?;
//! runtime.wait_caught_up::<Views>(std::time::Duration::from_secs(5))?;
//! assert_eq!(runtime.get::<Views>(&"/pricing".to_string())?, Some(Count(1)));
//! # Ok(()) }
//! ```

mod hooks;
pub(crate) mod worker;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use accrete_monoids::Monoid;
use parking_lot::Mutex;

use crate::codec::decode_record;
use crate::deployment::{Deployment, EncodedEvent, Serves};
pub use crate::deployment::{Failing, ModelStats, PartitionStatus, Status};
pub use crate::names::{changes_topic, group_name, hook_group};
pub use worker::Change;
use worker::{Pipeline, Runner, read_records};

use crate::log::{EmbeddedLog, Log, NewRecord, RecordBatch, partition_for, validate_name};
use crate::model::ReadModel;
use crate::store::{DeadLetter, EmbeddedStore};
use crate::{Error, Result};

/// How the runtime runs. The defaults suit one machine.
#[derive(Debug, Clone)]
pub struct Config {
    /// The topic events are submitted to and read from.
    pub events_topic: String,
    /// Its partition count (fixed when the topic is created).
    pub partitions: u32,
    /// The most records a batch of one partition holds: larger batches mean
    /// fewer store writes per event (one write per touched key per batch).
    /// Memory is taken only while a backlog lasts: a batch read full keeps
    /// its memory for the next, and gives it back once a read comes short.
    /// Backfills of long logs go about twice as fast
    /// with 1 048 576 (see `benches/README.md`).
    pub batch_size: usize,
    /// How often an idle worker polls the log for new records. A worker
    /// with records does not wait: it folds whatever is there (up to
    /// `batch_size`), so under load batches grow by themselves.
    pub flush_interval: Duration,
    /// Worker threads per read model; they split the partitions between
    /// them like a consumer group.
    pub workers: usize,
    /// The longest a worker waits before retrying after its batches failed
    /// (the wait doubles from 1 ms while every batch fails).
    pub max_retry_backoff: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            events_topic: "events".into(),
            partitions: 8,
            batch_size: 262_144,
            flush_interval: Duration::from_millis(20),
            workers: std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .min(8),
            max_retry_backoff: Duration::from_secs(2),
        }
    }
}

struct Running {
    pipeline: Arc<dyn Pipeline>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// A running hook: a cluster hook's members, or a node hook's follower.
struct RunningHook {
    /// The hook's name (`None` for a node hook).
    name: Option<&'static str>,
    model: &'static str,
    counters: Arc<crate::hooks::runner::HookCounters>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

struct Inner {
    log: Arc<dyn Log>,
    store: Arc<EmbeddedStore>,
    config: Config,
    /// The source number of events submitted here (see
    /// [`EmbeddedStore::source_id`]).
    source: u32,
    models: Mutex<BTreeMap<&'static str, Running>>,
    /// Each model's counters, kept when it stops: [`Deployment::stats`]
    /// carries on when it is added again, as on a node.
    counters: Mutex<BTreeMap<&'static str, Arc<crate::engine::Counters>>>,
    hooks: Mutex<Vec<RunningHook>>,
    /// Serializes the operations that start and stop pipelines (add, stop,
    /// rebuild, shutdown), so that two of them racing never run two
    /// pipelines of one model.
    ops: Mutex<()>,
    /// The data directory's lock, held while the runtime lives.
    _lock: Option<std::fs::File>,
    read_only: bool,
}

/// The runtime on one machine: a log, a store, and the read models folding
/// the log into the store in background workers.
///
/// Cloning is cheap and shares the runtime. Dropping the last clone stops
/// the workers after their current batch.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Opens (or creates) the embedded default in `dir`: the log in
    /// `dir/log`, the store in `dir/state.redb`, with the default [`Config`].
    ///
    /// # Errors
    ///
    /// I/O and store errors; the store locked by another process.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(dir, Config::default())
    }

    /// Opens the embedded default with a configuration.
    ///
    /// # Errors
    ///
    /// As [`Runtime::open`].
    ///
    /// The directory is locked first (`dir/LOCK`): a second process opening
    /// it fails with [`Error::Locked`] before touching the log or the store.
    /// To look at a directory a service is using, see
    /// [`Runtime::open_read_only`].
    pub fn open_with(dir: impl AsRef<Path>, config: Config) -> Result<Self> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io("creating the data directory", dir, e))?;
        let lock = lock_dir(dir)?;
        let store = EmbeddedStore::open(dir.join("state.redb"))?;
        let log = EmbeddedLog::open(dir.join("log"))?;
        let mut rt = Self::build(Arc::new(log), Arc::new(store), config, false)?;
        Arc::get_mut(&mut rt.inner)
            .expect("a new runtime is not shared")
            ._lock = Some(lock);
        Ok(rt)
    }

    /// Opens a data directory to look at it, while a service may be using
    /// it: the log as it was when opened, the store as of its latest commit
    /// on every read. Reads (`get`, `scan`, `status`, dead letters, hook
    /// history) work; everything that writes (`submit`, `add_model`,
    /// hooks, `rebuild`) fails with [`Error::Usage`].
    ///
    /// # Errors
    ///
    /// The directory holds no accrete data; I/O and store errors.
    pub fn open_read_only(dir: impl AsRef<Path>, config: Config) -> Result<Self> {
        let dir = dir.as_ref();
        let state = dir.join("state.redb");
        if !state.exists() {
            return Err(Error::Usage(format!(
                "{} holds no accrete data (no state.redb)",
                dir.display()
            )));
        }
        let store = EmbeddedStore::open_read_only(state)?;
        let log = EmbeddedLog::open_read_only(dir.join("log"))?;
        Self::build(Arc::new(log), Arc::new(store), config, true)
    }

    /// A runtime over any log and the embedded store.
    ///
    /// # Errors
    ///
    /// Creating the events topic failed.
    pub fn new(log: Arc<dyn Log>, store: Arc<EmbeddedStore>, config: Config) -> Result<Self> {
        let read_only = store.is_read_only();
        Self::build(log, store, config, read_only)
    }

    fn build(
        log: Arc<dyn Log>,
        store: Arc<EmbeddedStore>,
        config: Config,
        read_only: bool,
    ) -> Result<Self> {
        if config.partitions == 0 || config.batch_size == 0 || config.workers == 0 {
            return Err(Error::Usage(
                "partitions, batch_size and workers must be at least 1".into(),
            ));
        }
        if !read_only {
            log.create_topic(&config.events_topic, config.partitions)?;
        }
        let source = store.source_id(&config.events_topic)?;
        let rt = Runtime {
            inner: Arc::new(Inner {
                log,
                store,
                config,
                source,
                models: Mutex::new(BTreeMap::new()),
                counters: Mutex::new(BTreeMap::new()),
                hooks: Mutex::new(Vec::new()),
                ops: Mutex::new(()),
                _lock: None,
                read_only,
            }),
        };
        if !read_only {
            rt.repair_lost_tails()?;
        }
        Ok(rt)
    }

    /// At open, before anything is submitted: every model this store has
    /// folded the events topic for is checked for a log that lost its tail
    /// (new events would otherwise refill the lost offsets and be taken for
    /// the lost ones before the model is even added).
    fn repair_lost_tails(&self) -> Result<()> {
        let mut models: Vec<String> = self
            .inner
            .store
            .written_ends(self.inner.source)?
            .into_iter()
            .map(|(model, _, _)| model)
            .collect();
        models.dedup();
        for model in models {
            self.repair_lost_tail(&model)?;
        }
        Ok(())
    }

    fn writable(&self, what: &str) -> Result<()> {
        if self.inner.read_only {
            return Err(Error::Usage(format!(
                "cannot {what}: the runtime was opened read-only (Runtime::open_read_only)"
            )));
        }
        Ok(())
    }

    /// The log (feature `testing`: accrete's own tests append to it
    /// directly).
    #[cfg(feature = "testing")]
    pub fn log(&self) -> &Arc<dyn Log> {
        &self.inner.log
    }

    /// The store.
    pub fn store(&self) -> &Arc<EmbeddedStore> {
        &self.inner.store
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Finishes a rebuild a crash interrupted: the state was cleared (with
    /// a mark, in the same transaction) but the consumer group may not have
    /// been reset. Resetting it now makes the model fold the log from the
    /// beginning, as the rebuild meant.
    fn finish_rebuild(&self, model: &str) -> Result<()> {
        if self.inner.store.rebuilding(model)? {
            tracing::warn!(
                model,
                "finishing a rebuild that was interrupted: folding the log from the beginning"
            );
            self.inner
                .log
                .reset_group(&group_name(model), &self.inner.config.events_topic)?;
            self.inner.store.finish_rebuild(model)?;
        }
        Ok(())
    }

    /// A log that lost its tail (an unsynced tail lost in a power failure,
    /// a restored backup) will give its offsets to new events again. If the
    /// model's committed position or written end lies beyond the log's end,
    /// they are brought back to it, so that the new events are folded
    /// rather than taken for the lost ones. The lost events' effects stay in
    /// the state (they were folded); the repair is logged loudly.
    fn repair_lost_tail(&self, model: &str) -> Result<()> {
        let c = &self.inner.config;
        let group = group_name(model);
        for p in 0..c.partitions {
            let end = self.inner.log.end_offset(&c.events_topic, p)?;
            let committed = self.inner.log.committed(&group, &c.events_topic, p)?;
            let written = self.inner.store.written_end(model, self.inner.source, p)?;
            if committed <= end && written <= end {
                continue;
            }
            let message = format!(
                "read model `{model}`, partition {p}: the log ends at offset {end}, but the model has folded \
                 up to {} (committed {committed}, written {written}); the log lost its tail (an unsynced tail \
                 lost in a power failure, or a restored backup). New events will get those offsets again: \
                 the model's position is moved back to {end} so that they are folded. The lost events' \
                 effects stay in the state.",
                committed.max(written)
            );
            tracing::error!("{message}");
            if !tracing::dispatcher::has_been_set() {
                eprintln!("accrete: {message}");
            }
            if written > end {
                self.inner
                    .store
                    .lower_written_end(model, self.inner.source, p, end)?;
            }
            if committed > end {
                self.inner.log.commit(&group, &c.events_topic, p, end)?;
            }
        }
        Ok(())
    }

    fn spawn(&self, pipeline: Arc<dyn Pipeline>) -> Running {
        // Failures of the pipeline's earlier run (before a rebuild) are
        // not this run's.
        pipeline.health().clear();
        let stop = Arc::new(AtomicBool::new(false));
        let c = &self.inner.config;
        let workers = c.workers.min(c.partitions as usize).max(1);
        let threads = (0..workers)
            .map(|member| {
                let pipeline = Arc::clone(&pipeline);
                let stop = Arc::clone(&stop);
                let config = c.clone();
                std::thread::Builder::new()
                    .name(format!("accrete-{}-{member}", pipeline.name()))
                    .spawn(move || work(&*pipeline, member, workers, &config, &stop))
                    .expect("spawning a worker thread")
            })
            .collect();
        Running {
            pipeline,
            stop,
            threads,
        }
    }

    fn stop_locked(&self, name: &str) -> Result<()> {
        let running = self.inner.models.lock().remove(name);
        let running = running.ok_or_else(|| Error::Model(name.into(), "is not running".into()))?;
        running.stop.store(true, Ordering::Relaxed);
        for t in running.threads {
            let _ = t.join();
        }
        Ok(())
    }

    /// The size in bytes of a key's stored record: its state, version and
    /// exactly-once bookkeeping (which stays bounded however many events
    /// the key absorbed, forwarded or not). `None` if nothing is stored.
    ///
    /// # Errors
    ///
    /// Store errors.
    pub fn stored_bytes<M: ReadModel>(&self, key: &M::Key) -> Result<Option<usize>> {
        let key = postcard::to_stdvec(key).map_err(|e| Error::Encode {
            what: "key",
            detail: e.to_string(),
        })?;
        Ok(self
            .inner
            .store
            .get_raw_many(M::NAME, &[&key])?
            .pop()
            .flatten()
            .map(|r| r.len()))
    }

    /// Subscribes to a model's changes from now on.
    ///
    /// # Errors
    ///
    /// I/O errors.
    pub fn subscribe<M: ReadModel>(&self) -> Result<Subscription<M>> {
        let topic = changes_topic(M::NAME);
        let partitions = self.inner.log.partitions(&topic)?;
        let positions = (0..partitions)
            .map(|p| self.inner.log.end_offset(&topic, p))
            .collect::<Result<Vec<_>>>()?;
        Ok(Subscription {
            log: Arc::clone(&self.inner.log),
            topic,
            positions,
            batch: RecordBatch::new(),
            _model: std::marker::PhantomData,
        })
    }
}

/// The embedded default serves any state.
impl<S> Serves<S> for Runtime {
    /// Adds a read model and starts folding: from where its consumer group
    /// left off, or from the beginning of the log for a new model (a
    /// backfill, while live events keep arriving).
    ///
    /// # Errors
    ///
    /// A model of that name is already running; invalid name; I/O errors
    /// while publishing changes a crash left behind.
    fn serve<M: ReadModel<State = S>>(&self, model: M) -> Result<()> {
        // 180, so that `materialize-<name>` and `changes.<name>` fit the log's 200.
        crate::names::validate_model_name(M::NAME)?;
        self.writable("add a read model")?;
        let _ops = self.inner.ops.lock();
        if self.inner.models.lock().contains_key(M::NAME) {
            return Err(Error::Model(M::NAME.into(), "is already running".into()));
        }
        let c = &self.inner.config;
        let runner = Runner::new(
            model,
            Arc::clone(&self.inner.log),
            Arc::clone(&self.inner.store),
            &c.events_topic,
            self.inner.source,
            c.partitions,
            Arc::clone(self.inner.counters.lock().entry(M::NAME).or_default()),
        )?;
        self.finish_rebuild(M::NAME)?;
        self.repair_lost_tail(M::NAME)?;
        // Changes a crash left in the outbox are published by the workers
        // before their first batch (retried there, like any failed batch).
        let pipeline: Arc<dyn Pipeline> = Arc::new(runner);
        let running = self.spawn(pipeline);
        self.inner.models.lock().insert(M::NAME, running);
        Ok(())
    }
}

impl Deployment for Runtime {
    /// The source number of the ids this runtime's events topic gives
    /// ([`forward`](crate::Deployment::forward) of such an id is a copy of one of its
    /// own events). Drawn at random when the store first used the topic.
    fn source_id(&self) -> u32 {
        self.inner.source
    }

    /// Appends an event encoded already ([`crate::event::encode`], by this
    /// process or another), as [`submit`](crate::Deployment::submit) would: bytes from
    /// a bridge, a queue, a file. Bytes that do not decode as a model's
    /// event go to that model's dead letters, with the reason; the other
    /// events are not held up.
    ///
    /// # Errors
    ///
    /// As [`submit`](crate::Deployment::submit), less the encoding.
    fn submit_encoded(
        &self,
        key: impl AsRef<[u8]>,
        event_time_ms: i64,
        payload: &[u8],
    ) -> Result<crate::event::EventId> {
        self.writable("submit")?;
        let key = key.as_ref();
        let topic = &self.inner.config.events_topic;
        let partition = partition_for(key, self.inner.config.partitions);
        let offset = self.inner.log.append(
            topic,
            partition,
            &[NewRecord {
                key,
                timestamp: event_time_ms,
                payload,
                origin: None,
            }],
        )?;
        Ok(crate::event::EventId {
            source: self.inner.source,
            partition,
            offset,
        })
    }

    fn append_encoded(&self, events: &[EncodedEvent<'_>]) -> Result<usize> {
        self.writable("submit")?;
        let n = self.inner.config.partitions;
        let mut by_partition: Vec<Vec<NewRecord<'_>>> = (0..n).map(|_| Vec::new()).collect();
        for e in events {
            by_partition[partition_for(e.key, n) as usize].push(NewRecord {
                key: e.key,
                timestamp: e.time_ms,
                payload: e.payload,
                origin: e.origin,
            });
        }
        for (partition, records) in by_partition.iter().enumerate() {
            if !records.is_empty() {
                self.inner.log.append(
                    &self.inner.config.events_topic,
                    partition as u32,
                    records,
                )?;
            }
        }
        Ok(events.len())
    }

    /// Rebuilds a read model from the beginning of the log: stops it,
    /// publishes changes still in its outbox, deletes its state, outbox and
    /// dead letters, resets its consumer group, and starts it again. A
    /// crash midway is finished when the model is next added.
    fn rebuild<M: ReadModel>(&self) -> Result<()> {
        self.writable("rebuild")?;
        let _ops = self.inner.ops.lock();
        let pipeline = {
            let models = self.inner.models.lock();
            let running = models
                .get(M::NAME)
                .ok_or_else(|| Error::Model(M::NAME.into(), "is not running".into()))?;
            Arc::clone(&running.pipeline)
        };
        self.stop_locked(M::NAME)?;
        // Every change that happened is published, even one a rebuild would
        // otherwise delete from the outbox.
        let published = pipeline.recover();
        let rebuilt = published.and_then(|_| {
            crate::failpoint::hit("rebuild_before_clear");
            self.inner.store.clear_model(M::NAME)?;
            crate::failpoint::hit("rebuild_after_clear");
            self.finish_rebuild(M::NAME)
        });
        if let Err(e) = rebuilt {
            if self.inner.store.rebuilding(M::NAME).unwrap_or(true) {
                // Cleared but not reset: running now would fold from the old
                // position into an empty state. Adding the model again
                // finishes the rebuild.
                return Err(Error::Model(
                    M::NAME.into(),
                    format!(
                        "rebuild failed midway ({e}); the model is stopped, add it again (add_model) to \
                         finish the rebuild"
                    ),
                ));
            }
            let running = self.spawn(pipeline);
            self.inner.models.lock().insert(M::NAME, running);
            return Err(e);
        }
        pipeline.forget();
        let running = self.spawn(pipeline);
        self.inner.models.lock().insert(M::NAME, running);
        Ok(())
    }

    fn stop_model(&self, name: &str) -> Result<()> {
        let _ops = self.inner.ops.lock();
        self.stop_locked(name)
    }

    /// Runs a cluster hook on the model's changes: at least once per change
    /// (usually once), through crashes and restarts, on `workers` local
    /// threads that split the changes topic's partitions (one key's runs are
    /// in order). The hook's position is its consumer group
    /// ([`hook_group`]) in the log, committed after the outcomes of a batch
    /// are recorded in the store; a redelivered trigger whose outcome is
    /// recorded is skipped. See [`crate::hooks`].
    ///
    /// A new hook starts from the first change still in the log: it runs
    /// for every key changed so far (the outcomes of a hook of the same name
    /// run before are kept, and skip their triggers).
    ///
    /// ```
    /// use accrete::hooks::{ClusterHook, Trigger};
    /// use accrete::model::{Deltas, ReadModel};
    /// use accrete::monoids::Count;
    /// use accrete::Deployment;
    /// use accrete::runtime::Runtime;
    ///
    /// struct Views;
    /// impl ReadModel for Views {
    ///     const NAME: &'static str = "views";
    ///     type Event = String;
    ///     type Key = String;
    ///     type State = Count;
    ///     fn project(&self, page: &String, out: &mut Deltas<String, Count>) -> Result<(), String> {
    ///         out.push(page.clone(), Count::one());
    ///         Ok(())
    ///     }
    /// }
    ///
    /// /// Says when a page reaches 3 views, once per page.
    /// struct Popular(std::sync::mpsc::Sender<String>);
    /// impl ClusterHook for Popular {
    ///     type Model = Views;
    ///     const NAME: &'static str = "popular";
    ///     const ONCE: bool = true;
    ///     fn fires(&self, views: &Count) -> bool {
    ///         views.0 >= 3
    ///     }
    ///     fn run(&self, t: &Trigger<'_, Views>) -> Result<(), String> {
    ///         self.0.send(t.key.clone()).map_err(|e| e.to_string())
    ///     }
    /// }
    ///
    /// # fn main() -> accrete::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let runtime = Runtime::open(dir.path())?;
    /// runtime.add_model(Views)?;
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// runtime.add_cluster_hook(Popular(tx))?;
    /// for _ in 0..5 {
    ///     runtime.submit("/pricing", 0, &"/pricing".to_string())?;
    /// }
    /// let page = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    /// assert_eq!(page, "/pricing");
    /// # Ok(()) }
    /// ```
    ///
    /// The hook's threads own it: a hook that holds a clone of this
    /// `Runtime` (to read other models) keeps the runtime alive, so call
    /// [`shutdown`](crate::Deployment::shutdown) to stop it. A [`rebuild`](Self::rebuild)
    /// of the model publishes every key again, with versions above the old
    /// ones: the hook runs again for each key, under new idempotency keys
    /// (a `ONCE` hook does not).
    ///
    /// # Errors
    ///
    /// A hook of that name is already running; invalid name; I/O errors.
    fn add_cluster_hook<H: crate::hooks::ClusterHook>(&self, hook: H) -> Result<()> {
        validate_name("hook", H::NAME, 180)?;
        self.writable("add a cluster hook")?;
        let _ops = self.inner.ops.lock();
        let model = <H::Model as ReadModel>::NAME;
        let mut running = self.inner.hooks.lock();
        if running.iter().any(|h| h.name == Some(H::NAME)) {
            return Err(Error::Usage(format!(
                "a cluster hook named `{}` is already running",
                H::NAME
            )));
        }
        let c = &self.inner.config;
        let topic = changes_topic(model);
        self.inner.log.create_topic(&topic, c.partitions)?;
        let members = c.workers.min(c.partitions as usize).max(1);
        let hook = Arc::new(hook);
        let counters = Arc::new(crate::hooks::runner::HookCounters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::with_capacity(members);
        for member in 0..members {
            let member_of = hooks::Member {
                hook: Arc::clone(&hook),
                log: Arc::clone(&self.inner.log),
                store: Arc::clone(&self.inner.store),
                counters: Arc::clone(&counters),
                stop: Arc::clone(&stop),
                partitions: (0..c.partitions)
                    .filter(|p| *p as usize % members == member)
                    .collect(),
                change_partitions: c.partitions,
                idle: c.flush_interval,
            };
            match member_of.spawn(member) {
                Ok(t) => threads.push(t),
                Err(e) => {
                    stop.store(true, Ordering::Release);
                    for t in threads {
                        let _ = t.join();
                    }
                    return Err(e);
                }
            }
        }
        running.push(RunningHook {
            name: Some(H::NAME),
            model,
            counters,
            stop,
            threads,
        });
        Ok(())
    }

    /// Runs `f(key, delta, state)` for each change of the model from now
    /// on, in this process (a node hook: on the embedded default, the
    /// machine is the only node). Not durable: a change published while the
    /// process is down is not seen; for work that must happen, use
    /// [`add_cluster_hook`](crate::Deployment::add_cluster_hook). `state` is read from
    /// the store after the change, so it is at least as new.
    ///
    /// # Errors
    ///
    /// I/O errors.
    fn add_node_hook<M: ReadModel>(
        &self,
        f: impl Fn(&M::Key, &M::State, &M::State) + Send + Sync + 'static,
    ) -> Result<()> {
        self.writable("add a node hook")?;
        let _ops = self.inner.ops.lock();
        let c = &self.inner.config;
        let topic = changes_topic(M::NAME);
        self.inner.log.create_topic(&topic, c.partitions)?;
        let starts = (0..c.partitions)
            .map(|p| self.inner.log.end_offset(&topic, p))
            .collect::<Result<Vec<_>>>()?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = hooks::spawn_node_hook::<M>(
            Arc::clone(&self.inner.log),
            Arc::clone(&self.inner.store),
            starts,
            Arc::clone(&stop),
            c.flush_interval,
            Box::new(f),
        )?;
        self.inner.hooks.lock().push(RunningHook {
            name: None,
            model: M::NAME,
            counters: Arc::default(),
            stop,
            threads: vec![thread],
        });
        Ok(())
    }

    fn get_versioned<M: ReadModel>(&self, key: &M::Key) -> Result<Option<(u64, M::State)>> {
        let key = postcard::to_stdvec(key).map_err(|e| Error::Encode {
            what: "key",
            detail: e.to_string(),
        })?;
        let rec = read_records::<M::State>(&self.inner.store, M::NAME, &[&key])?
            .pop()
            .flatten();
        Ok(rec
            .filter(|rec| !rec.state.is_identity())
            .map(|rec| (rec.version, rec.state)))
    }

    /// The state of a key; `None` if no event touched it or its state is
    /// the identity (the two are the same to a monoid: a store may drop such
    /// keys). `get(..).unwrap_or_default()` reads "zero if none".
    ///
    /// # Errors
    ///
    /// Store errors; a stored record that does not decode as `M::State`.
    fn get<M: ReadModel>(&self, key: &M::Key) -> Result<Option<M::State>> {
        Ok(self.get_versioned::<M>(key)?.map(|(_, s)| s))
    }

    /// Every key's state, in key-byte order, skipping identity states. `f`
    /// returns `false` to stop.
    ///
    /// # Errors
    ///
    /// Store errors; records that do not decode.
    fn scan<M: ReadModel>(&self, mut f: impl FnMut(M::Key, M::State) -> bool) -> Result<()> {
        self.inner.store.scan_raw(M::NAME, None, |k, v| {
            let key: M::Key = postcard::from_bytes(k).map_err(|e| Error::Corrupt {
                what: "stored key",
                detail: e.to_string(),
            })?;
            let state = decode_record::<M::State>(v)?.state;
            Ok(state.is_identity() || f(key, state))
        })
    }

    /// The dead letters of a model.
    ///
    /// # Errors
    ///
    /// Store errors.
    fn dead_letters<M: ReadModel>(&self) -> Result<Vec<DeadLetter>> {
        self.inner.store.dead_letters(M::NAME)
    }

    /// A cluster hook's dead letters: triggers that failed
    /// [`max_attempts`](crate::hooks::ClusterHook::max_attempts) times.
    ///
    /// # Errors
    ///
    /// Store errors.
    fn hook_dead_letters(&self, hook: &str) -> Result<Vec<crate::hooks::HookDeadLetter>> {
        self.inner.store.hook_dead_letters(hook)
    }

    /// What the model's pipeline did in this process since the model was
    /// added (batches, writes, changes, dead letters), as
    /// `cluster::Node::stats` reports it on Kafka +
    /// MongoDB.
    ///
    /// # Errors
    ///
    /// [`Error::Model`] if the model is not running.
    fn stats(&self, model: &str) -> Result<ModelStats> {
        self.inner
            .models
            .lock()
            .get(model)
            .map(|running| running.pipeline.stats())
            .ok_or_else(|| Error::Model(model.into(), "is not running".into()))
    }

    /// Progress of a model by name: committed position, end and lag per
    /// partition, and whether it is failing ([`Status::error`]).
    ///
    /// # Errors
    ///
    /// [`Error::Model`] if no model of that name runs here or ever ran in
    /// this store; I/O errors.
    fn status(&self, model: &str) -> Result<Status> {
        let c = &self.inner.config;
        let error = match self.inner.models.lock().get(model) {
            Some(running) => running.pipeline.health().snapshot(),
            None if self.inner.store.has_model(model)? => None,
            None => {
                return Err(Error::Model(
                    model.into(),
                    "is not known here: no read model of that name runs in this runtime or was ever \
                     stored (add it with add_model)"
                        .into(),
                ));
            }
        };
        let group = group_name(model);
        let partitions = (0..c.partitions)
            .map(|p| {
                let committed = self.inner.log.committed(&group, &c.events_topic, p)?;
                let end = self.inner.log.end_offset(&c.events_topic, p)?;
                Ok(PartitionStatus {
                    partition: p,
                    committed,
                    end,
                    lag: end.saturating_sub(committed),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Status {
            model: model.to_string(),
            partitions,
            error,
            replica_lag: 0,
        })
    }

    /// Waits until a model has folded every event submitted so far.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] on timeout, with the remaining lag and, if the
    /// model is failing, its last error; as [`Runtime::status`].
    fn wait_caught_up<M: ReadModel>(&self, timeout: Duration) -> Result<Status> {
        crate::deployment::wait_caught_up(
            M::NAME,
            timeout,
            Duration::ZERO,
            Duration::from_millis(2),
            || self.status(M::NAME),
        )
    }

    /// What a cluster hook did since it was added to this runtime: runs,
    /// retries, failures, dead letters, duplicates suppressed, coalesced
    /// changes, and change-to-run latency. (Recorded outcomes and dead
    /// letters survive restarts: [`EmbeddedStore::hook_history`],
    /// [`EmbeddedStore::hook_dead_letters`].)
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] if no hook of that name runs here.
    fn hook_stats(&self, hook: &str) -> Result<crate::hooks::HookStats> {
        self.inner
            .hooks
            .lock()
            .iter()
            .find(|h| h.name == Some(hook))
            .map(|h| h.counters.snapshot())
            .ok_or_else(|| Error::Usage(format!("no cluster hook named `{hook}` runs here")))
    }

    /// Changes of the hook's model not yet handled by the hook.
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] if no hook of that name runs here; I/O errors.
    fn hook_lag(&self, hook: &str) -> Result<u64> {
        let model = self
            .inner
            .hooks
            .lock()
            .iter()
            .find(|h| h.name == Some(hook))
            .map(|h| h.model)
            .ok_or_else(|| Error::Usage(format!("no cluster hook named `{hook}` runs here")))?;
        hook_lag(&*self.inner.log, hook, model)
    }

    /// Changes of `model` the cluster hook named `hook` has not handled, as
    /// its consumer group's committed positions say, whether or not the
    /// hook runs in this process: for a tool inspecting a directory (a
    /// runtime opened read-only runs no hook).
    ///
    /// # Errors
    ///
    /// I/O errors; [`Error::InvalidName`] for a name that cannot be one.
    fn hook_lag_of(&self, hook: &str, model: &str) -> Result<u64> {
        crate::names::validate_model_name(model)?;
        hook_lag(&*self.inner.log, hook, model)
    }

    /// Stops every model's workers and every hook, and waits for them.
    fn shutdown(&self) {
        let _ops = self.inner.ops.lock();
        let names: Vec<&'static str> = self.inner.models.lock().keys().copied().collect();
        for name in names {
            let _ = self.stop_locked(name);
        }
        let hooks = std::mem::take(&mut *self.inner.hooks.lock());
        for h in &hooks {
            h.stop.store(true, Ordering::Release);
        }
        for h in hooks {
            for t in h.threads {
                let _ = t.join();
            }
        }
    }
}

/// Locks a data directory for this process: `dir/LOCK`, holding the
/// process id. Released when the file is closed (the runtime dropped, or
/// the process gone, however it ended).
fn lock_dir(dir: &Path) -> Result<std::fs::File> {
    use std::io::{Read, Seek, Write};
    let path = dir.join("LOCK");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io("opening the directory lock", &path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => "process unknown".to_string(),
                pid => format!("process {pid}"),
            };
            return Err(Error::Locked {
                path: dir.to_path_buf(),
                holder,
            });
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(Error::io("locking the data directory", &path, e));
        }
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| write!(file, "{}", std::process::id()))
        .map_err(|e| Error::io("writing the directory lock", &path, e))?;
    Ok(file)
}

/// Changes of `model` the hook's consumer group has not committed.
fn hook_lag(log: &dyn Log, hook: &str, model: &str) -> Result<u64> {
    let topic = changes_topic(model);
    let group = hook_group(hook);
    let mut lag = 0;
    for p in 0..log.partitions(&topic)? {
        let end = log.end_offset(&topic, p)?;
        lag += end.saturating_sub(log.committed(&group, &topic, p)?);
    }
    Ok(lag)
}

impl Drop for Inner {
    fn drop(&mut self) {
        for running in self.models.get_mut().values() {
            running.stop.store(true, Ordering::Relaxed);
        }
        for h in self.hooks.get_mut().iter() {
            h.stop.store(true, Ordering::Release);
        }
        for h in std::mem::take(self.hooks.get_mut()) {
            for t in h.threads {
                let _ = t.join();
            }
        }
        for (_, running) in std::mem::take(self.models.get_mut()) {
            for t in running.threads {
                let _ = t.join();
            }
        }
    }
}

/// A worker: a member of the model's consumer group. Members split the
/// partitions (partition `p` goes to member `p % members`); a partition's
/// lock makes its holder the only processor even while ownership moves.
fn work(
    pipeline: &dyn Pipeline,
    member: usize,
    members: usize,
    config: &Config,
    stop: &AtomicBool,
) {
    let mine: Vec<u32> = (0..config.partitions)
        .filter(|p| *p as usize % members == member)
        .collect();
    let first_backoff = Duration::from_millis(1);
    let mut backoff = first_backoff;
    while !stop.load(Ordering::Relaxed) {
        let mut busy = false;
        let mut failed = false;
        let step = pipeline.step(&mine, config.batch_size);
        // Named in the model's health by its first partition, as its
        // batches are (`Folding::new`).
        let me = mine.first().copied().unwrap_or(0);
        if step.is_ok() {
            pipeline.health().ok(me);
        }
        match step {
            Ok(Some(_)) => busy = true,
            Ok(None) => {
                if let Err(e) = crate::engine::unwound(pipeline.name(), || pipeline.tidy(&mine)) {
                    tracing::warn!(model = pipeline.name(), error = %e, "tidying the outbox failed");
                }
            }
            Err(e) => {
                failed = true;
                pipeline.health().failed(me, pipeline.name(), &e);
                crate::engine::metrics::error(pipeline.name());
                tracing::error!(model = pipeline.name(), partitions = ?mine, error = %e, "batch failed; retrying from the committed positions");
            }
        }
        if busy {
            backoff = first_backoff;
        } else if failed {
            // Nothing moved: back off before retrying.
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(config.max_retry_backoff);
        } else {
            backoff = first_backoff;
            std::thread::sleep(config.flush_interval);
        }
    }
}

/// A model's changes, from the moment of subscribing: poll it.
pub struct Subscription<M: ReadModel> {
    log: Arc<dyn Log>,
    topic: String,
    positions: Vec<u64>,
    batch: RecordBatch,
    _model: std::marker::PhantomData<fn() -> M>,
}

impl<M: ReadModel> Subscription<M> {
    /// The changes published since the last poll, waiting up to `timeout`
    /// for the first. At least once: after a crash a change may come twice,
    /// with the same version.
    ///
    /// # Errors
    ///
    /// I/O errors; a change that does not decode.
    pub fn poll(&mut self, timeout: Duration) -> Result<Vec<Change<M::Key, M::State>>> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut out = Vec::new();
            // Moved only when the whole poll succeeds: an error loses nothing.
            let mut positions = self.positions.clone();
            for (p, pos) in positions.iter_mut().enumerate() {
                self.log
                    .read(&self.topic, p as u32, *pos, 4096, &mut self.batch)?;
                for record in self.batch.iter() {
                    out.push(Change::decode(record.key, record.payload)?);
                }
                if let Some(next) = self.batch.next_offset() {
                    *pos = next;
                }
            }
            self.positions = positions;
            if !out.is_empty() || Instant::now() >= deadline {
                return Ok(out);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}
