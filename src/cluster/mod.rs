//! Several nodes sharing the work: Apache Kafka as the log, MongoDB as the
//! store (features `kafka` and `mongodb`).
//!
//! A [`Node`] is one process of the cluster. For each read model it serves:
//!
//! - a **materializer** in the consumer group `<prefix>.materialize.<model>`
//!   on the events topic: the group gives each partition to one node. It
//!   pre-aggregates a batch per key, writes each touched key once to MongoDB
//!   (a blind pushdown upsert where the state has a [`Pushdown`], otherwise
//!   read-modify-write), publishes the changes to `<events>.changes.<model>`,
//!   and only then commits its input offsets. Before a partition is revoked
//!   in a rebalance it writes, publishes and commits what it holds for it.
//! - a **replica**: an in-memory copy of the model, loaded from MongoDB at
//!   start and grafted from the changes topic, which every node reads in
//!   full. [`Node::get`] reads it.
//!
//! The exactly-once guard rides in each key's document (see
//! [`store::mongo`](crate::store::mongo)); the design's reasoning is in
//! `DESIGN.md` ("The cluster").
//!
//! ```no_run
//! use accrete::Deployment;
//! use accrete::cluster::{Node, NodeConfig};
//! # use accrete::model::{Deltas, ReadModel};
//! # use accrete::monoids::Sum;
//! # #[derive(serde::Serialize, serde::Deserialize)]
//! # struct Sale { product: String, cents: i64 }
//! # struct Revenue;
//! # impl ReadModel for Revenue {
//! #     const NAME: &'static str = "revenue";
//! #     type Event = Sale;
//! #     type Key = String;
//! #     type State = Sum<i64>;
//! #     fn project(&self, s: &Sale, out: &mut Deltas<String, Sum<i64>>) -> Result<(), String> {
//! #         out.push(s.product.clone(), Sum(s.cents));
//! #         Ok(())
//! #     }
//! # }
//! # fn main() -> accrete::Result<()> {
//! let node = Node::start(NodeConfig::load(None)?)?;
//! node.add_model(Revenue)?;
//! node.submit("book", 0, &Sale { product: "book".into(), cents: 1200 })?;
//! node.flush()?;
//! node.wait_caught_up::<Revenue>(std::time::Duration::from_secs(30))?;
//! assert_eq!(node.get::<Revenue>(&"book".to_string())?, Some(Sum(1200)));
//! node.shutdown();
//! # Ok(())
//! # }
//! ```

mod config;
mod generation;
mod hooks;
mod materialize;
mod pace;
mod placement;
mod replica;

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use accrete_monoids::Monoid;
use parking_lot::Mutex;

pub use config::NodeConfig;

use crate::deployment::{Deployment, EncodedEvent, PartitionStatus, Serves, Status};
use crate::event::EventId;
use crate::log::kafka::{Outgoing, Producer};
use crate::model::ReadModel;
use crate::store::mongo::MongoStore;
use crate::store::pushdown::Pushdown;
use crate::{Error, Result};

pub use crate::engine::ModelStats;
/// What a node's pipeline of one model did: [`ModelStats`], by its
/// earlier name.
pub type NodeStats = ModelStats;
pub(crate) use crate::engine::Counters;

/// The shared parts of a node.
pub(crate) struct Shared {
    pub(crate) config: NodeConfig,
    pub(crate) store: MongoStore,
    pub(crate) stop: AtomicBool,
    /// The source number of the events topic's ids (see
    /// [`Node::source_id`]).
    pub(crate) source: u32,
    /// The models' generations, as last read (see `generation`).
    pub(crate) generations: generation::Generations,
}

/// One served model: its replica (typed, behind `Any`) and counters.
struct Served {
    name: &'static str,
    replica: Arc<dyn Any + Send + Sync>,
    counters: Arc<Counters>,
    /// The replica's position and the ends it has seen.
    replica_position: replica::Tracked,
    /// The materializer's thread and its stop flag, while it runs here
    /// (`None` once stopped: `stop_model`, `shutdown`).
    materializer: Option<(JoinHandle<()>, Arc<AtomicBool>)>,
    /// The generation of the model's data the materializer writes.
    generation: Arc<AtomicU64>,
    /// The replica's thread (it keeps serving reads and node hooks after
    /// `stop_model`; `None` once the node is shut down).
    replica_thread: Option<JoinHandle<()>>,
}

/// A cluster hook running on this node: its name, its model's name, its
/// counters and its thread.
type RunningHook = (
    &'static str,
    &'static str,
    Arc<crate::hooks::runner::HookCounters>,
    Option<JoinHandle<()>>,
);

/// One process of a cluster. See the [module docs](self).
pub struct Node {
    shared: Arc<Shared>,
    producer: Producer,
    served: Mutex<Vec<Served>>,
    hooks: Mutex<Vec<RunningHook>>,
    /// Orders the operations that start things against `shutdown`.
    ops: Mutex<()>,
}

impl Node {
    /// Connects to MongoDB and Kafka and creates the events topic if needed.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for bad settings, [`Error::Mongo`] or
    /// [`Error::Kafka`] (with a hint) when a server cannot be reached,
    /// [`Error::TopicMismatch`] when the events topic exists with another
    /// partition count.
    pub fn start(config: NodeConfig) -> Result<Node> {
        config.validate()?;
        let store = MongoStore::connect(&config.mongodb)?;
        config
            .kafka
            .create_topic(&config.events_topic, config.partitions)?;
        let producer = config.kafka.producer()?;
        let source = store.source_id(&config.events_topic)?;
        tracing::info!(node = %config.node_id, brokers = %config.kafka.brokers, "node started");
        Ok(Node {
            shared: Arc::new(Shared {
                config,
                store,
                stop: AtomicBool::new(false),
                source,
                generations: generation::Generations::default(),
            }),
            producer,
            served: Mutex::new(Vec::new()),
            hooks: Mutex::new(Vec::new()),
            ops: Mutex::new(()),
        })
    }

    /// The node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.shared.config
    }

    /// The MongoDB store, to read what is stored directly.
    pub fn store(&self) -> &MongoStore {
        &self.shared.store
    }

    /// Waits until every submitted event is acknowledged by the broker.
    ///
    /// # Errors
    ///
    /// [`Error::Kafka`] with the first delivery failure.
    pub fn flush(&self) -> Result<()> {
        self.producer.flush(Duration::from_secs(60))
    }

    /// Takes the lock of the operations that start things. After a
    /// `shutdown` (which holds it throughout, so every thread it stopped
    /// has ended) the node starts afresh: what it served and ran is
    /// forgotten, and what is added now runs.
    fn operate(&self) -> parking_lot::MutexGuard<'_, ()> {
        let ops = self.ops.lock();
        if self.shared.stop.load(Ordering::Acquire) {
            self.served.lock().clear();
            self.hooks.lock().clear();
            self.shared.stop.store(false, Ordering::Release);
        }
        ops
    }

    fn replica<M: ReadModel>(&self) -> Result<Arc<replica::Replica<M>>> {
        let served = self.served.lock();
        let s = served.iter().find(|s| s.name == M::NAME).ok_or_else(|| {
            Error::Model(
                M::NAME.into(),
                "is not served by this node (add_model)".into(),
            )
        })?;
        s.replica
            .clone()
            .downcast::<replica::Replica<M>>()
            .map_err(|_| Error::Model(M::NAME.into(), "is served with another type".into()))
    }

    /// Every key and state of this node's replica, sorted by key.
    ///
    /// # Errors
    ///
    /// [`Error::Model`] if the model is not served here.
    pub fn replica_snapshot<M: ReadModel>(&self) -> Result<Vec<(M::Key, M::State)>> {
        Ok(self.replica::<M>()?.snapshot())
    }

    /// Events of the events topic that the model's consumer group (on any
    /// node) has not yet materialized. Works on a node that does not serve
    /// the model.
    ///
    /// # Errors
    ///
    /// [`Error::Kafka`] when the broker cannot be asked.
    pub fn lag(&self, model: &str) -> Result<u64> {
        let config = &self.shared.config;
        let kafka = &config.kafka;
        let p = config.partitions;
        let ends = kafka.end_offsets(&config.events_topic, p)?;
        let generation = self.shared.store.generation(model)?;
        let committed = self.shared.store.positions(&generation.name, p)?;
        Ok(ends
            .iter()
            .zip(&committed)
            .map(|(e, c)| e.saturating_sub(*c))
            .sum())
    }

    /// How many events of the events topic the model has folded, over all
    /// partitions and nodes (the sum of the positions kept in MongoDB; the
    /// topic's offsets start at 0 and have no holes).
    ///
    /// # Errors
    ///
    /// [`Error::Mongo`].
    pub fn folded(&self, model: &str) -> Result<u64> {
        let p = self.shared.config.partitions;
        let generation = self.shared.store.generation(model)?;
        Ok(self
            .shared
            .store
            .positions(&generation.name, p)?
            .iter()
            .sum())
    }

    /// Where a generation's changes topic ends, per partition: the higher
    /// of what the broker reports and what the materializers' producers had
    /// delivered (kept in MongoDB; some brokers under-report ends).
    fn changes_end(&self, generation: &str) -> Result<Vec<u64>> {
        let config = &self.shared.config;
        let p = config.partitions;
        let reported = config
            .kafka
            .end_offsets(&config.changes_topic(generation), p)?;
        let delivered = self.shared.store.positions(&published_key(generation), p)?;
        Ok(reported
            .iter()
            .zip(&delivered)
            .map(|(r, d)| (*r).max(*d))
            .collect())
    }
}

/// Kafka + MongoDB writes a state through its MongoDB pushdown.
impl<S: Pushdown + Send + Sync + 'static> Serves<S> for Node {
    /// Starts serving a read model on this node: its materializer joins the
    /// model's consumer group, its replica loads from MongoDB and follows the
    /// changes. A new model backfills from the start of the events topic
    /// while live events arrive.
    ///
    /// # Errors
    ///
    /// [`Error::Model`] if the model is already served, or the errors of
    /// creating its changes topic and loading its replica.
    fn serve<M: ReadModel<State = S>>(&self, model: M) -> Result<()> {
        crate::names::validate_model_name(M::NAME)?;
        let _ops = self.operate();
        let mut served = self.served.lock();
        if let Some(s) = served.iter_mut().find(|s| s.name == M::NAME) {
            if s.materializer.is_some() {
                return Err(Error::Model(
                    M::NAME.into(),
                    "is already served by this node".into(),
                ));
            }
            // Stopped by `stop_model`: the replica still runs; the
            // materializer starts again from the positions it left.
            let replica = s
                .replica
                .clone()
                .downcast::<replica::Replica<M>>()
                .map_err(|_| Error::Model(M::NAME.into(), "is served with another type".into()))?;
            let stop = Arc::new(AtomicBool::new(false));
            let thread = materialize::start::<M>(
                model,
                self.shared.clone(),
                s.counters.clone(),
                replica,
                stop.clone(),
                s.generation.clone(),
            )?;
            s.materializer = Some((thread, stop));
            return Ok(());
        }
        let config = &self.shared.config;
        let changes = config.changes_topic(M::NAME);
        config.kafka.create_topic(&changes, config.partitions)?;
        self.shared.store.prepare(M::NAME)?;
        let counters = Arc::new(Counters::default());
        let (replica, position, replica_thread) =
            replica::start::<M>(self.shared.clone(), counters.clone())?;
        let stop = Arc::new(AtomicBool::new(false));
        let generation = Arc::new(AtomicU64::new(0));
        let materializer = materialize::start::<M>(
            model,
            self.shared.clone(),
            counters.clone(),
            replica.clone(),
            stop.clone(),
            generation.clone(),
        );
        // Kept even when the materializer did not start: the replica runs
        // (and `shutdown` joins it); adding the model again starts the
        // materializer.
        let (materializer, started) = match materializer {
            Ok(thread) => (Some((thread, stop)), Ok(())),
            Err(e) => (None, Err(e)),
        };
        served.push(Served {
            name: M::NAME,
            replica,
            counters,
            replica_position: position,
            materializer,
            generation,
            replica_thread: Some(replica_thread),
        });
        started
    }
}

impl Deployment for Node {
    /// Runs a cluster hook on this node's share of the model's changes (see
    /// [`hooks`](crate::hooks)). Start it on every node that should take part:
    /// the hook's consumer group spreads the keys over them.
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] if a hook of that name runs here already, or the
    /// errors of creating the changes topic.
    fn add_cluster_hook<H: crate::hooks::ClusterHook>(&self, hook: H) -> Result<()> {
        crate::log::validate_name("group", H::NAME, 150)?;
        let _ops = self.operate();
        let mut hooks = self.hooks.lock();
        if hooks.iter().any(|(n, ..)| *n == H::NAME) {
            return Err(Error::Usage(format!(
                "a cluster hook named `{}` is already running",
                H::NAME
            )));
        }
        let config = &self.shared.config;
        let model = <H::Model as ReadModel>::NAME;
        config
            .kafka
            .create_topic(&config.changes_topic(model), config.partitions)?;
        let counters = Arc::new(crate::hooks::runner::HookCounters::default());
        let thread = hooks::start(hook, self.shared.clone(), counters.clone())?;
        hooks.push((H::NAME, model, counters, Some(thread)));
        Ok(())
    }

    /// Runs `f(key, delta, state)` on this node whenever its replica of the
    /// model is grafted with a change: `delta` is the change, `state` the
    /// replica's state after it. Every node serving the model runs its own
    /// node hooks. Keep `f` quick: it runs on the replica's thread.
    ///
    /// # Errors
    ///
    /// [`Error::Model`] if the model is not served here.
    fn add_node_hook<M: ReadModel>(
        &self,
        f: impl Fn(&M::Key, &M::State, &M::State) + Send + Sync + 'static,
    ) -> Result<()> {
        let _ops = self.operate();
        self.replica::<M>()?.add_hook(Box::new(f));
        Ok(())
    }

    /// What a cluster hook did on this node.
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] if no hook of that name runs here.
    fn hook_stats(&self, hook: &str) -> Result<crate::hooks::HookStats> {
        self.hooks
            .lock()
            .iter()
            .find(|(n, ..)| *n == hook)
            .map(|(_, _, c, _)| c.snapshot())
            .ok_or_else(|| Error::Usage(format!("no cluster hook named `{hook}` runs here")))
    }

    /// What a cluster hook running on this node has still to do (over all
    /// nodes): see [`hook_lag_of`](crate::Deployment::hook_lag_of), which any node can
    /// ask about any hook.
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] if no hook of that name runs here; [`Error::Kafka`]
    /// or [`Error::Mongo`].
    fn hook_lag(&self, hook: &str) -> Result<u64> {
        let model = self
            .hooks
            .lock()
            .iter()
            .find(|(n, ..)| *n == hook)
            .map(|(_, m, ..)| *m)
            .ok_or_else(|| Error::Usage(format!("no cluster hook named `{hook}` runs here")))?;
        self.hook_lag_of(hook, model)
    }

    /// What the cluster hook `hook` on `model` has still to do, over all
    /// nodes, asked from any node (one that does not run it too): the
    /// changes it has not yet taken, plus the runs planned and not yet
    /// recorded. A run that a killed node had planned is made by the
    /// partition's next holder once the plan is 30 s old, so after a kill
    /// the lag can stay above 0 for up to a minute and a half: 0 means
    /// every change has reached a recorded run.
    ///
    /// # Errors
    ///
    /// [`Error::Kafka`] or [`Error::Mongo`].
    fn hook_lag_of(&self, hook: &str, model: &str) -> Result<u64> {
        let p = self.shared.config.partitions;
        let generation = self.shared.store.generation(model)?;
        let ends = self.changes_end(&generation.name)?;
        let done = self
            .shared
            .store
            .positions(&crate::names::hook_reader(hook, &generation.name), p)?;
        let untaken: u64 = ends
            .iter()
            .zip(&done)
            .map(|(e, d)| e.saturating_sub(*d))
            .sum();
        let planned = self
            .shared
            .store
            .hook_plans_open(&format!("{hook}/{}", generation.name))?;
        Ok(untaken + planned)
    }

    fn append_encoded(&self, events: &[EncodedEvent<'_>]) -> Result<usize> {
        let sent = self.producer.send_all_and_wait(
            &self.shared.config.events_topic,
            events.iter().map(|e| Outgoing {
                key: e.key,
                payload: e.payload,
                timestamp: Some(e.time_ms),
                origin: e.origin,
            }),
        )?;
        Ok(sent.len())
    }

    /// Submits bytes encoded already, as
    /// [`Runtime::submit_encoded`](crate::Deployment::submit_encoded)
    /// does on the embedded default.
    ///
    /// # Errors
    ///
    /// As [`submit`](crate::Deployment::submit), less the encoding.
    fn submit_encoded(
        &self,
        key: impl AsRef<[u8]>,
        event_time_ms: i64,
        payload: &[u8],
    ) -> Result<EventId> {
        let sent = self.producer.send_all_and_wait(
            &self.shared.config.events_topic,
            [Outgoing {
                key: key.as_ref(),
                payload,
                timestamp: Some(event_time_ms),
                origin: None,
            }],
        )?;
        let (partition, offset) = sent[0];
        Ok(EventId {
            source: self.shared.source,
            partition,
            offset,
        })
    }

    /// The source number of the event ids this deployment's events topic
    /// gives (dead letters carry them; [`forward`](crate::Deployment::forward) of such an
    /// id is a copy of one of this topic's own events). Drawn at random
    /// when the first node used the topic, kept in MongoDB.
    fn source_id(&self) -> u32 {
        self.shared.source
    }

    /// The state of `key` and its version, as MongoDB holds them (not this
    /// node's replica). Works on a node that does not serve the model.
    ///
    /// # Errors
    ///
    /// [`Error::Mongo`]; a stored state that does not decode.
    fn get_versioned<M: ReadModel>(&self, key: &M::Key) -> Result<Option<(u64, M::State)>> {
        let store = &self.shared.store;
        // Read again when a rebuild moved on meanwhile: what was read may be
        // a dropped generation's, which a deposed writer wrote again.
        let mut generation = store.generation(M::NAME)?;
        let found = loop {
            let found = store.get_many::<&M::Key, M::State>(&generation, &[key])?;
            let now = store.generation(M::NAME)?;
            if now == generation {
                break found;
            }
            generation = now;
        };
        Ok(found
            .into_values()
            .next()
            .filter(|(s, _)| !s.is_identity())
            .map(|(s, v)| (v, s)))
    }

    /// The state of `key` in this node's replica: at least as new as every
    /// change the replica has grafted. After [`shutdown`](crate::Deployment::shutdown)
    /// the replica no longer follows, and this reads MongoDB, as
    /// [`get_versioned`](crate::Deployment::get_versioned) does.
    ///
    /// # Errors
    ///
    /// [`Error::Model`] if the model is not served here; after `shutdown`,
    /// [`Error::Mongo`].
    fn get<M: ReadModel>(&self, key: &M::Key) -> Result<Option<M::State>> {
        let replica = self.replica::<M>()?;
        if self.shared.stop.load(Ordering::Acquire) {
            return Ok(self.get_versioned::<M>(key)?.map(|(_, state)| state));
        }
        Ok(replica.get(key))
    }

    /// Calls `f` with every key and state of the model as MongoDB holds
    /// them (not this node's replica), in key order, until it returns
    /// `false`: [`Runtime::scan`](crate::Deployment::scan) on Kafka +
    /// MongoDB. Works on a node that does not serve the model.
    ///
    /// # Errors
    ///
    /// [`Error::Mongo`]; a stored state that does not decode.
    fn scan<M: ReadModel>(&self, f: impl FnMut(M::Key, M::State) -> bool) -> Result<()> {
        self.shared.store.scan::<M>(f)
    }

    /// The model's dead letters: events it could not apply, with the
    /// reason and the payload.
    ///
    /// # Errors
    ///
    /// [`Error::Mongo`].
    fn dead_letters<M: ReadModel>(&self) -> Result<Vec<crate::store::DeadLetter>> {
        self.shared.store.dead_letters::<M>()
    }

    /// A cluster hook's dead letters: triggers that failed
    /// [`max_attempts`](crate::hooks::ClusterHook::max_attempts) times.
    ///
    /// # Errors
    ///
    /// [`Error::Mongo`].
    fn hook_dead_letters(&self, hook: &str) -> Result<Vec<crate::hooks::HookDeadLetter>> {
        self.shared.store.hook_dead_letters(hook)
    }

    /// What this node did for the model.
    ///
    /// # Errors
    ///
    /// [`Error::Model`] if the model is not served here.
    fn stats(&self, model: &str) -> Result<NodeStats> {
        let served = self.served.lock();
        served
            .iter()
            .find(|s| s.name == model && s.materializer.is_some())
            .map(|s| s.counters.snapshot())
            .ok_or_else(|| Error::Model(model.into(), "is not running on this node".into()))
    }

    fn stop_model(&self, name: &str) -> Result<()> {
        let _ops = self.operate();
        // Taken out under the lock, joined outside it: reads of the
        // replica go on while the last batch is written.
        let running = self
            .served
            .lock()
            .iter_mut()
            .find(|s| s.name == name)
            .and_then(|s| s.materializer.take());
        let (thread, stop) =
            running.ok_or_else(|| Error::Model(name.into(), "is not running".into()))?;
        stop.store(true, Ordering::Release);
        let _ = thread.join();
        // A stopped model is not failing (as on the embedded runtime).
        if let Some(s) = self.served.lock().iter().find(|s| s.name == name) {
            s.counters.health.clear();
        }
        Ok(())
    }

    fn rebuild<M: ReadModel>(&self) -> Result<()> {
        let ops = self.operate();
        let (materializer, replica) = self
            .served
            .lock()
            .iter()
            .find(|s| s.name == M::NAME && s.materializer.is_some())
            .map(|s| (s.generation.clone(), s.replica_position.generation.clone()))
            .ok_or_else(|| Error::Model(M::NAME.into(), "is not running".into()))?;
        let store = &self.shared.store;
        let config = &self.shared.config;
        let current = store.generation(M::NAME)?;
        // Its changes topic first: the nodes that move to it subscribe.
        let name = crate::names::generation_name(M::NAME, current.n + 1);
        config
            .kafka
            .create_topic(&config.changes_topic(&name), config.partitions)?;
        // The crash points the embedded rebuild has, at the same steps:
        // before the state starts anew, and after.
        crate::failpoint::hit("rebuild_before_clear");
        let next = store.next_generation(M::NAME, &current)?;
        crate::failpoint::hit("rebuild_after_clear");
        self.shared.generations.started(M::NAME, &next);
        tracing::info!(
            model = M::NAME,
            generation = next.n,
            "rebuild: a new generation started"
        );
        // The generation is recorded: the wait for this node to move to it
        // holds no lock, so that a stop or a shutdown of a node that cannot
        // move (MongoDB failing) is not held up by it.
        drop(ops);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while materializer.load(Ordering::Acquire) < next.n
            || replica.load(Ordering::Acquire) < next.n
        {
            let stopped =
                self.shared.stop.load(Ordering::Acquire)
                    || !self.served.lock().iter().any(|s| {
                        s.materializer.is_some() && Arc::ptr_eq(&s.generation, &materializer)
                    });
            if stopped {
                return Err(Error::Model(
                    M::NAME.into(),
                    format!(
                        "was stopped on this node while it moved to generation {} of its data: \
                         the rebuild is made, and the nodes that serve the model fold it (adding \
                         it here again does too)",
                        next.n
                    ),
                ));
            }
            if std::time::Instant::now() >= deadline {
                // Not a timeout to retry: the rebuild is made, and another
                // would start over.
                return Err(Error::Model(
                    M::NAME.into(),
                    format!(
                        "the rebuild started generation {} of its data, but this node has not \
                         moved to it within a minute (it goes on trying; see its log): do not \
                         rebuild again, wait for its status to catch up",
                        next.n
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // What the previous generations left (a deposed writer may have
        // written a little of the one before again since it was dropped).
        for n in current.n.saturating_sub(1)..=current.n {
            let old = crate::store::mongo::Generation::new(M::NAME, n);
            if let Err(e) = store.drop_generation(&old) {
                tracing::warn!(model = M::NAME, generation = n, error = %e,
                    "could not drop a generation a rebuild ended (it is not read)");
            }
        }
        Ok(())
    }

    /// Lag of the model's consumer group and of this node's replica.
    ///
    /// # Errors
    ///
    /// [`Error::Model`] if the model is not served here, [`Error::Kafka`]
    /// when the broker cannot be asked.
    fn status(&self, model: &str) -> Result<Status> {
        // An unknown model is an error of its own, before any broker is
        // asked about topics it does not have.
        let (tracked, error) = self
            .served
            .lock()
            .iter()
            .find(|s| s.name == model)
            .map(|s| (s.replica_position.clone(), s.counters.health.snapshot()))
            .ok_or_else(|| {
                Error::Model(
                    model.into(),
                    "is not served by this node (add it with add_model)".into(),
                )
            })?;
        let config = &self.shared.config;
        let ends = config
            .kafka
            .end_offsets(&config.events_topic, config.partitions)?;
        let generation = self.shared.store.generation(model)?;
        let committed = self
            .shared
            .store
            .positions(&generation.name, config.partitions)?;
        let partitions = (0..config.partitions)
            .zip(ends.iter().zip(&committed))
            .map(|(partition, (&end, &committed))| PartitionStatus {
                partition,
                committed,
                end,
                lag: end.saturating_sub(committed),
            })
            .collect();
        let changes_end = self.changes_end(&generation.name)?;
        let replica_lag = if tracked.generation.load(Ordering::Acquire) < generation.n {
            // The replica has yet to leave the generation a rebuild ended:
            // it is behind by every change of the new one (and at least
            // one, until it has moved).
            changes_end.iter().sum::<u64>().max(1)
        } else {
            changes_end
                .iter()
                .zip(tracked.position.iter().zip(tracked.high.iter()))
                .map(|(e, (c, h))| {
                    (*e).max(h.load(Ordering::Acquire))
                        .saturating_sub(c.load(Ordering::Acquire))
                })
                .sum()
        };
        Ok(Status {
            model: model.to_string(),
            partitions,
            error,
            replica_lag,
        })
    }

    /// Caught up twice, further apart than a fetch's long poll: ends
    /// learnt from fetch responses are then fresh. "Submitted so far"
    /// means acknowledged by the broker: call [`Node::flush`] first after
    /// submits that were not waited for.
    fn wait_caught_up<M: ReadModel>(&self, timeout: Duration) -> Result<Status> {
        crate::deployment::wait_caught_up(
            M::NAME,
            timeout,
            Duration::from_millis(600),
            Duration::from_millis(50),
            || self.status(M::NAME),
        )
    }

    /// Stops this node: each materializer writes, publishes and commits what
    /// it holds and leaves its group (its partitions move to other nodes).
    fn shutdown(&self) {
        let _ops = self.ops.lock();
        self.shared.stop.store(true, Ordering::Release);
        let _ = self.producer.flush(Duration::from_secs(30));
        // The threads are taken out under the locks and joined outside
        // them: a node hook or a read waiting on a lock never blocks a join.
        let hooks: Vec<JoinHandle<()>> = self
            .hooks
            .lock()
            .iter_mut()
            .filter_map(|(.., t)| t.take())
            .collect();
        for t in hooks {
            let _ = t.join();
        }
        // The node's stop flag is set: each ends after its last batch.
        let threads: Vec<JoinHandle<()>> = self
            .served
            .lock()
            .iter_mut()
            .flat_map(|s| {
                [
                    s.materializer.take().map(|(t, _)| t),
                    s.replica_thread.take(),
                ]
            })
            .flatten()
            .collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown();
    }
}

pub(crate) use crate::names::published_key;
