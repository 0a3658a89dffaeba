//! [`NodeConfig`]: from code, from a TOML file, from environment variables.

use std::path::Path;
use std::time::Duration;

use crate::log::kafka::KafkaConfig;
use crate::store::mongo::MongoConfig;
use crate::{Error, Result};

/// Everything a node needs to join a cluster. Every field has a default
/// that works against `scripts/servers.sh start` on this machine.
///
/// A TOML file names the same fields:
///
/// ```toml
/// events_topic = "shop-events"
/// partitions = 12
///
/// [kafka]
/// brokers = "kafka-1:9092,kafka-2:9092"
/// [kafka.properties]
/// "security.protocol" = "SASL_SSL"
/// "sasl.mechanisms" = "SCRAM-SHA-512"
/// "sasl.username" = "accrete"
///
/// [mongodb]
/// uri = "mongodb://db-1,db-2/?replicaSet=rs0&tls=true"
/// database = "shop"
/// ```
///
/// and environment variables override both (see [`NodeConfig::apply_env`]).
///
/// ```
/// use accrete::cluster::NodeConfig;
///
/// let config = NodeConfig::from_toml(
///     r#"
///     partitions = 12
///     [kafka]
///     brokers = "kafka-1:9092"
///     "#,
///     "example.toml",
/// )
/// .unwrap();
/// assert_eq!(config.partitions, 12);
/// assert_eq!(config.mongodb.database, "accrete");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// The brokers and client properties.
    pub kafka: KafkaConfig,
    /// The MongoDB URI and database.
    pub mongodb: MongoConfig,
    /// The topic events are submitted to.
    pub events_topic: String,
    /// Its partition count, used when accrete creates the topic (an existing
    /// topic must have this many).
    pub partitions: u32,
    /// Consumer groups are `<group_prefix>.materialize.<model>`.
    pub group_prefix: String,
    /// This node's name, in logs and in its replica's consumer group.
    /// Defaults to `<hostname>-<pid>`.
    pub node_id: String,
    /// The most events pre-aggregated before a write, per node and model.
    /// A batch's size also adapts to the store: the first holds at most
    /// 500 events, and the limit doubles while batches are written within
    /// a tenth of the consumers' `max.poll.interval.ms` (30 s by default)
    /// and shrinks to fit it when they are not, so a slow MongoDB never
    /// makes a node miss its polls and leave its consumer group.
    pub batch_size: usize,
    /// The longest a received event waits before its batch is written, in
    /// milliseconds, once the node has read everything the broker holds.
    /// While it is behind (a backfill, a restart), a batch waits to fill up
    /// to `batch_size`, for at most 5 s or this, if longer.
    pub flush_interval_ms: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "node".into());
        NodeConfig {
            kafka: KafkaConfig::default(),
            mongodb: MongoConfig::default(),
            events_topic: "events".into(),
            partitions: 12,
            group_prefix: "accrete".into(),
            node_id: format!("{host}-{}", std::process::id()),
            batch_size: 100_000,
            flush_interval_ms: 100,
        }
    }
}

impl NodeConfig {
    /// The defaults, then `file` if given, then the environment.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the file or variable that is wrong.
    pub fn load(file: Option<&Path>) -> Result<Self> {
        let mut config = match file {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        config.apply_env()?;
        Ok(config)
    }

    /// Reads a TOML file; missing fields take their defaults.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the file cannot be read or parsed, or names an
    /// unknown field.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            source_name: path.display().to_string(),
            detail: e.to_string(),
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Parses TOML text; `name` says where it came from in errors.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] with the parser's message (line and column).
    pub fn from_toml(text: &str, name: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::Config {
            source_name: name.into(),
            detail: e.to_string(),
        })
    }

    /// Overrides fields from the environment:
    ///
    /// | variable | field |
    /// | --- | --- |
    /// | `ACCRETE_KAFKA_BROKERS` | `kafka.brokers` |
    /// | `ACCRETE_KAFKA_PROPERTY_<NAME>` | `kafka.properties`: `<NAME>` lowercased, `_` read as `.` (`ACCRETE_KAFKA_PROPERTY_SASL_USERNAME` sets `sasl.username`) |
    /// | `ACCRETE_MONGODB_URI` | `mongodb.uri` |
    /// | `ACCRETE_MONGODB_DATABASE` | `mongodb.database` |
    /// | `ACCRETE_MONGODB_COLLECTION_PREFIX` | `mongodb.collection_prefix` |
    /// | `ACCRETE_EVENTS_TOPIC` | `events_topic` |
    /// | `ACCRETE_PARTITIONS` | `partitions` |
    /// | `ACCRETE_GROUP_PREFIX` | `group_prefix` |
    /// | `ACCRETE_NODE_ID` | `node_id` |
    /// | `ACCRETE_BATCH_SIZE` | `batch_size` |
    /// | `ACCRETE_FLUSH_INTERVAL_MS` | `flush_interval_ms` |
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming a variable whose number does not parse.
    pub fn apply_env(&mut self) -> Result<()> {
        self.apply_vars(std::env::vars())
    }

    /// [`apply_env`](Self::apply_env) over given variables (for tests and
    /// for callers with their own source of settings).
    ///
    /// # Errors
    ///
    /// As [`apply_env`](Self::apply_env).
    pub fn apply_vars(&mut self, vars: impl IntoIterator<Item = (String, String)>) -> Result<()> {
        fn number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T>
        where
            T::Err: std::fmt::Display,
        {
            value.trim().parse().map_err(|e| Error::Config {
                source_name: name.into(),
                detail: format!("{value:?} is not a number: {e}"),
            })
        }
        for (name, value) in vars {
            match name.as_str() {
                "ACCRETE_KAFKA_BROKERS" => self.kafka.brokers = value,
                "ACCRETE_MONGODB_URI" => self.mongodb.uri = value,
                "ACCRETE_MONGODB_DATABASE" => self.mongodb.database = value,
                "ACCRETE_MONGODB_COLLECTION_PREFIX" => self.mongodb.collection_prefix = value,
                "ACCRETE_EVENTS_TOPIC" => self.events_topic = value,
                "ACCRETE_PARTITIONS" => self.partitions = number(&name, &value)?,
                "ACCRETE_GROUP_PREFIX" => self.group_prefix = value,
                "ACCRETE_NODE_ID" => self.node_id = value,
                "ACCRETE_BATCH_SIZE" => self.batch_size = number(&name, &value)?,
                "ACCRETE_FLUSH_INTERVAL_MS" => self.flush_interval_ms = number(&name, &value)?,
                other => {
                    if let Some(prop) = other.strip_prefix("ACCRETE_KAFKA_PROPERTY_") {
                        let prop = prop.to_ascii_lowercase().replace('_', ".");
                        self.kafka.properties.insert(prop, value);
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks the settings before anything connects.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] or [`Error::InvalidName`] saying which field is
    /// wrong.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, detail: &str| Error::Config {
            source_name: field.into(),
            detail: detail.into(),
        };
        crate::log::validate_name("topic", &self.events_topic, 200)?;
        crate::log::validate_name("group", &self.group_prefix, 150)?;
        if self.partitions == 0 {
            return Err(bad("partitions", "must be at least 1"));
        }
        if self.batch_size == 0 {
            return Err(bad("batch_size", "must be at least 1"));
        }
        let prefix = &self.mongodb.collection_prefix;
        if prefix.contains(['$', '\0']) || prefix.starts_with("system.") {
            return Err(bad(
                "mongodb.collection_prefix",
                "cannot hold `$` or NUL or start with `system.` (MongoDB collection names)",
            ));
        }
        if self.kafka.brokers.trim().is_empty() {
            return Err(bad(
                "kafka.brokers",
                "is empty: give host:port[,host:port…]",
            ));
        }
        Ok(())
    }

    pub(crate) fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms.max(1))
    }

    /// The changes topic of a model.
    pub fn changes_topic(&self, model: &str) -> String {
        crate::names::cluster_changes_topic(&self.events_topic, model)
    }

    /// The consumer group that materializes a model.
    pub fn materialize_group(&self, model: &str) -> String {
        crate::names::cluster_materialize_group(&self.group_prefix, model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_the_file() {
        let mut c = NodeConfig::from_toml(
            "partitions = 3\n[kafka]\nbrokers = \"a:1\"\n[kafka.properties]\n\"linger.ms\" = \"7\"\n",
            "t.toml",
        )
        .unwrap();
        c.apply_vars([
            ("ACCRETE_KAFKA_BROKERS".to_string(), "b:2".to_string()),
            ("ACCRETE_KAFKA_PROPERTY_SASL_USERNAME".into(), "me".into()),
            ("ACCRETE_PARTITIONS".into(), "5".into()),
            ("ACCRETE_MONGODB_COLLECTION_PREFIX".into(), "shop_".into()),
            ("UNRELATED".into(), "x".into()),
        ])
        .unwrap();
        assert_eq!(c.kafka.brokers, "b:2");
        assert_eq!(c.partitions, 5);
        assert_eq!(c.kafka.properties["sasl.username"], "me");
        assert_eq!(c.kafka.properties["linger.ms"], "7");
        assert_eq!(c.mongodb.collection_prefix, "shop_");
        c.validate().unwrap();
        c.mongodb.collection_prefix = "a$b".into();
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("collection_prefix"), "{e}");
    }

    #[test]
    fn errors_name_the_culprit() {
        let e = NodeConfig::from_toml("partitons = 3", "node.toml").unwrap_err();
        assert!(
            e.to_string().contains("node.toml") && e.to_string().contains("partitons"),
            "{e}"
        );
        let e = NodeConfig::default()
            .apply_vars([("ACCRETE_PARTITIONS".to_string(), "twelve".to_string())])
            .unwrap_err();
        assert!(e.to_string().contains("ACCRETE_PARTITIONS"), "{e}");
        let c = NodeConfig {
            partitions: 0,
            ..NodeConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("partitions"));
    }
}
