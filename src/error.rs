//! [`Error`]: one error type for the framework, a variant per failed operation.

use std::path::PathBuf;

/// What went wrong, named after the operation that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file of the embedded log or store could not be read or written.
    #[error("{what} at {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A topic was used before it was created.
    #[error("topic `{0}` does not exist; create it first (Log::create_topic)")]
    UnknownTopic(String),
    /// A partition number beyond the topic's partition count.
    #[error("topic `{topic}` has {partitions} partitions; partition {partition} does not exist")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// Its partition count.
        partitions: u32,
        /// The partition asked for.
        partition: u32,
    },
    /// A topic, consumer-group or read-model name that cannot be used: names
    /// become file and table names, so they are restricted to a safe alphabet.
    #[error(
        "invalid {kind} name {name:?}: {reason} (use at most 200 characters (180 for a read model) from A-Z, a-z, 0-9, `.`, `_`, `-`; not `.` or `..`)"
    )]
    InvalidName {
        /// What the name is for: `"topic"`, `"group"` or `"read model"`.
        kind: &'static str,
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A topic was created again with a different partition count.
    #[error("topic `{topic}` exists with {existing} partitions, not {requested}")]
    TopicMismatch {
        /// The topic.
        topic: String,
        /// Its partition count on disk.
        existing: u32,
        /// The count asked for.
        requested: u32,
    },
    /// Stored data is damaged or of an unknown format.
    #[error("corrupt {what}: {detail}")]
    Corrupt {
        /// What was being read.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// The embedded store failed.
    #[error("store {op} failed: {source}")]
    Store {
        /// The store operation.
        op: &'static str,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Encoding a state, change or event failed.
    #[error("encoding {what} failed: {detail}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// A read model name was used twice, or is not registered.
    #[error("read model `{0}`: {1}")]
    Model(String, String),
    /// The runtime was asked to do something in a state that does not allow it.
    #[error("{0}")]
    Usage(String),
    /// Another process has the data directory open.
    #[error(
        "{} is in use by another process ({holder}); stop it first, or open the directory read-only \
         (`Runtime::open_read_only`, `accrete inspect`) to look at it while it runs",
        path.display()
    )]
    Locked {
        /// The directory.
        path: PathBuf,
        /// Who holds it, as the lock file says (a process id), if known.
        holder: String,
    },
    /// Something did not happen within the time allowed.
    #[error("{0}")]
    Timeout(String),
    /// The Kafka log failed (feature `kafka`).
    #[error("kafka {op} failed: {detail}")]
    Kafka {
        /// The operation.
        op: &'static str,
        /// The broker's or client's message, with a hint where one helps.
        detail: String,
    },
    /// The MongoDB store failed (feature `mongodb`).
    #[error("mongodb {op} failed: {detail}")]
    Mongo {
        /// The operation.
        op: &'static str,
        /// The server's or driver's message, with a hint where one helps.
        detail: String,
    },
    /// A configuration file or variable could not be used.
    #[error("configuration {source_name}: {detail}")]
    Config {
        /// Where the setting came from: a file path or a variable name.
        source_name: String,
        /// What is wrong.
        detail: String,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether trying the same call again later may succeed: I/O, the
    /// store, the broker or the database failing, a timeout, a directory
    /// another process holds. Bad input, bad configuration, misuse and
    /// corrupt data are not: they fail the same way until something is
    /// changed.
    ///
    /// ```
    /// use accrete::Error;
    /// assert!(Error::Timeout("not caught up".into()).is_retriable());
    /// assert!(!Error::Usage("no such model".into()).is_retriable());
    /// ```
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            Error::Io { .. }
                | Error::Store { .. }
                | Error::Timeout(_)
                | Error::Locked { .. }
                | Error::Kafka { .. }
                | Error::Mongo { .. }
        )
    }

    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }

    #[cfg(feature = "kafka")]
    pub(crate) fn kafka(op: &'static str, detail: impl std::fmt::Display) -> Self {
        Error::Kafka {
            op,
            detail: detail.to_string(),
        }
    }

    #[cfg(feature = "mongodb")]
    pub(crate) fn mongo(op: &'static str, detail: impl std::fmt::Display) -> Self {
        Error::Mongo {
            op,
            detail: detail.to_string(),
        }
    }

    pub(crate) fn store(
        op: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Store {
            op,
            source: Box::new(source),
        }
    }
}

/// The message of a panic.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}
