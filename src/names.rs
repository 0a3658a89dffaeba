//! Every name accrete gives a topic, a consumer group, a position record or
//! a MongoDB collection, in one place. The two backends name things
//! differently (the embedded log was first; the cluster's names carry a
//! prefix so that several deployments share one broker); both are kept as
//! they are, since data written under them must still be found.

/// The changes topic of a model, on the embedded log.
pub fn changes_topic(model: &str) -> String {
    format!("changes.{model}")
}

/// The consumer group that materializes a model, on the embedded log.
pub fn group_name(model: &str) -> String {
    format!("materialize-{model}")
}

/// The consumer group of a cluster hook, on the embedded log.
pub fn hook_group(hook: &str) -> String {
    format!("hook-{hook}")
}

#[cfg(all(feature = "kafka", feature = "mongodb"))]
/// The changes topic of a model on Kafka: beside its events topic.
pub(crate) fn cluster_changes_topic(events_topic: &str, model: &str) -> String {
    format!("{events_topic}.changes.{model}")
}

#[cfg(all(feature = "kafka", feature = "mongodb"))]
/// The Kafka consumer group that materializes a model.
pub(crate) fn cluster_materialize_group(prefix: &str, model: &str) -> String {
    format!("{prefix}.materialize.{model}")
}

#[cfg(all(feature = "kafka", feature = "mongodb"))]
/// The Kafka consumer group of a cluster hook on generation `n` of its
/// model's changes (the first generation's is `<prefix>.hook.<hook>`, as
/// before generations existed). A hook's name is unique in a deployment
/// (its positions are kept under it), and names its model.
pub(crate) fn cluster_hook_group(prefix: &str, hook: &str, n: u64) -> String {
    if n == 0 {
        format!("{prefix}.hook.{hook}")
    } else {
        format!("{prefix}.hook-g{n}.{hook}")
    }
}

#[cfg(all(feature = "kafka", feature = "mongodb"))]
/// The group id of a cluster's probe consumers (`cluster::placement`):
/// librdkafka wants one to assign partitions; they never join it nor
/// commit.
pub(crate) fn cluster_probe_group(prefix: &str) -> String {
    format!("{prefix}.probe")
}

#[cfg(all(feature = "kafka", feature = "mongodb"))]
/// The Kafka consumer group of one node's replicas.
pub(crate) fn cluster_replica_group(prefix: &str, node: &str) -> String {
    format!("{prefix}.replica.{node}")
}

#[cfg(all(feature = "kafka", feature = "mongodb"))]
/// Under which reader a cluster hook's positions on a generation's changes
/// topic are kept in MongoDB (a model's positions are kept under its
/// generation's name). The first generation's is `hook:<hook>`, as before
/// generations existed.
pub(crate) fn hook_reader(hook: &str, generation: &str) -> String {
    if generation.starts_with(RESERVED_PREFIX) {
        format!("hook:{hook}/{generation}")
    } else {
        format!("hook:{hook}")
    }
}

#[cfg(feature = "mongodb")]
/// The name a generation of a model's data lives under on Kafka + MongoDB:
/// its collection, changes topic, consumer group and positions. The first
/// (0) is the model's own name; a rebuild's are `accrete.g<n>.<model>`,
/// which no model can be named (`accrete.` is refused), so no generation's
/// names meet another model's.
pub(crate) fn generation_name(model: &str, n: u64) -> String {
    if n == 0 {
        model.to_owned()
    } else {
        format!("{RESERVED_PREFIX}g{n}.{model}")
    }
}

#[cfg(feature = "mongodb")]
/// Under which reader the ends of a model's changes topic, as delivered to
/// its materializers' producers, are kept with the positions.
pub(crate) fn published_key(model: &str) -> String {
    format!("changes:{model}")
}

/// The prefix of accrete's own collections and tables, refused for read
/// models: a model named `accrete.origins` would share the collection of
/// the claims of forwarded copies (found by an attack test, session 9).
pub(crate) const RESERVED_PREFIX: &str = "accrete.";

/// Checks a read model's name, the same on every backend: the log's name
/// rules (at most 180 characters, so that its topics and groups fit), and
/// none of accrete's own names.
pub(crate) fn validate_model_name(name: &str) -> crate::Result<()> {
    crate::log::validate_name("read model", name, 180)?;
    if name.starts_with(RESERVED_PREFIX) {
        return Err(crate::Error::InvalidName {
            kind: "read model",
            name: name.to_owned(),
            reason: "names starting with `accrete.` are accrete's own (its MongoDB collections)",
        });
    }
    Ok(())
}

/// MongoDB collections accrete keeps beside the models' own (each under
/// `MongoConfig::collection_prefix`; a model's state is the collection
/// named as the model).
#[cfg(feature = "mongodb")]
pub(crate) mod mongo {
    /// The dead letters.
    pub(crate) const DEAD_LETTERS: &str = "accrete.dead_letters";
    /// Per reader and events partition, the next offset to fold.
    pub(crate) const POSITIONS: &str = "accrete.positions";
    /// The recorded outcome of every hook run, by idempotency key.
    pub(crate) const HOOK_OUTCOMES: &str = "accrete.hook_outcomes";
    /// Hook triggers that failed every attempt.
    pub(crate) const HOOK_DEAD_LETTERS: &str = "accrete.hook_dead_letters";
    /// Which partitions each node's consumer holds, per reader (see
    /// `cluster::placement::Audit`).
    pub(crate) const MEMBERS: &str = "accrete.members";
    /// Per hook, model and key: the changes runs covered, and the runs
    /// planned and not yet recorded.
    pub(crate) const HOOK_RUNS: &str = "accrete.hook_runs";
    /// Per model, the format of its documents.
    pub(crate) const MODELS: &str = "accrete.models";
    /// Per events topic, the source number of its event ids.
    pub(crate) const SOURCES: &str = "accrete.sources";
    /// Per events topic and forwarded event id, the copy that applies.
    pub(crate) const ORIGINS: &str = "accrete.origins";
}
