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
        /// What the name is for: `"topic"`, `"group"`, `"read model"` or
        /// `"collection"`.
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
    /// The Kafka log failed (feature `kafka`). The client's error, where
    /// there is one, is the [`source`](std::error::Error::source) (an
    /// `rdkafka::error::KafkaError`); `Error::kafka_code` reads its code.
    #[error("kafka {op} failed: {detail}")]
    #[non_exhaustive]
    Kafka {
        /// The operation.
        op: &'static str,
        /// The broker's or client's message, with a hint where one helps.
        detail: String,
        /// The client's error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The MongoDB store failed (feature `mongodb`). The driver's error,
    /// where there is one, is the [`source`](std::error::Error::source) (a
    /// `mongodb::error::Error`); `Error::mongo_code` reads the server's
    /// code.
    #[error("mongodb {op} failed: {detail}")]
    #[non_exhaustive]
    Mongo {
        /// The operation.
        op: &'static str,
        /// The server's or driver's message, with a hint where one helps.
        detail: String,
        /// The driver's error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
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
        match self {
            Error::Io { .. } | Error::Store { .. } | Error::Timeout(_) | Error::Locked { .. } => {
                true
            }
            Error::Kafka { .. } => !self.kafka_refused_for_good(),
            Error::Mongo { .. } => !self.mongo_refused_for_good(),
            _ => false,
        }
    }

    /// A Kafka error no retry cures: a fatal client error, or the broker
    /// refusing the request itself (authentication, authorization, an
    /// invalid setting or record).
    fn kafka_refused_for_good(&self) -> bool {
        #[cfg(feature = "kafka")]
        {
            use rdkafka::types::RDKafkaErrorCode as C;
            matches!(
                self.kafka_code(),
                Some(
                    C::Fatal
                        | C::Authentication
                        | C::SaslAuthenticationFailed
                        | C::TopicAuthorizationFailed
                        | C::GroupAuthorizationFailed
                        | C::ClusterAuthorizationFailed
                        | C::InvalidConfig
                        | C::InvalidRecord
                        | C::MessageSizeTooLarge
                        | C::InvalidArgument
                )
            )
        }
        #[cfg(not(feature = "kafka"))]
        false
    }

    /// A MongoDB error no retry cures: the server refusing the document
    /// itself ([`DOCUMENT_REFUSED`]), or refusing this client (failed
    /// authentication, not authorized). A duplicate key is not among them:
    /// two upserts racing on one `_id` succeed when retried.
    fn mongo_refused_for_good(&self) -> bool {
        #[cfg(feature = "mongodb")]
        {
            let Error::Mongo {
                source: Some(source),
                ..
            } = self
            else {
                return false;
            };
            // A refused login comes as its own kind, the server's code
            // inside it.
            if source
                .downcast_ref::<mongodb::error::Error>()
                .is_some_and(|e| {
                    matches!(*e.kind, mongodb::error::ErrorKind::Authentication { .. })
                })
            {
                return true;
            }
            // Unauthorized, AuthenticationFailed.
            self.mongo_code()
                .is_some_and(|c| matches!(c, 13 | 18) || DOCUMENT_REFUSED.contains(&c))
        }
        #[cfg(not(feature = "mongodb"))]
        false
    }

    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }

    /// A Kafka client error, kept as the source.
    #[cfg(feature = "kafka")]
    pub(crate) fn kafka(op: &'static str, e: rdkafka::error::KafkaError) -> Self {
        Error::Kafka {
            op,
            detail: e.to_string(),
            source: Some(Box::new(e)),
        }
    }

    /// A Kafka client error with more said (a topic, a hint), kept as the
    /// source.
    #[cfg(feature = "kafka")]
    pub(crate) fn kafka_with(
        op: &'static str,
        detail: String,
        e: rdkafka::error::KafkaError,
    ) -> Self {
        Error::Kafka {
            op,
            detail,
            source: Some(Box::new(e)),
        }
    }

    /// A Kafka failure that has no client error (a refused setting, a
    /// broker's answer read by hand).
    #[cfg(feature = "kafka")]
    pub(crate) fn kafka_msg(op: &'static str, detail: impl std::fmt::Display) -> Self {
        Error::Kafka {
            op,
            detail: detail.to_string(),
            source: None,
        }
    }

    /// A MongoDB driver error, kept as the source.
    #[cfg(feature = "mongodb")]
    pub(crate) fn mongo(op: &'static str, e: mongodb::error::Error) -> Self {
        Error::Mongo {
            op,
            detail: e.to_string(),
            source: Some(Box::new(e)),
        }
    }

    /// A MongoDB driver error with more said, kept as the source.
    #[cfg(feature = "mongodb")]
    pub(crate) fn mongo_with(op: &'static str, detail: String, e: mongodb::error::Error) -> Self {
        Error::Mongo {
            op,
            detail,
            source: Some(Box::new(e)),
        }
    }

    /// A MongoDB failure that has no driver error (a document that is not
    /// what accrete wrote, a BSON conversion).
    #[cfg(feature = "mongodb")]
    pub(crate) fn mongo_msg(op: &'static str, detail: impl std::fmt::Display) -> Self {
        Error::Mongo {
            op,
            detail: detail.to_string(),
            source: None,
        }
    }

    /// The Kafka client's error code, for an [`Error::Kafka`] that has the
    /// client's error as its source.
    ///
    /// ```
    /// # #[cfg(feature = "kafka")] {
    /// use accrete::Error;
    /// // An error accrete makes itself has no client code.
    /// assert_eq!(Error::Timeout("late".into()).kafka_code(), None);
    /// # }
    /// ```
    #[cfg(feature = "kafka")]
    pub fn kafka_code(&self) -> Option<rdkafka::types::RDKafkaErrorCode> {
        match self {
            Error::Kafka {
                source: Some(source),
                ..
            } => source
                .downcast_ref::<rdkafka::error::KafkaError>()
                .and_then(rdkafka::error::KafkaError::rdkafka_error_code),
            _ => None,
        }
    }

    /// The MongoDB server's error code (11000 for a duplicate key, 13 for
    /// unauthorized, …), for an [`Error::Mongo`] whose source is the
    /// driver's error and carries one: a command's, a write's, or a bulk
    /// write's (its write concern's error, else the write error of the
    /// lowest index).
    ///
    /// ```
    /// # #[cfg(feature = "mongodb")] {
    /// use accrete::Error;
    /// assert_eq!(Error::Timeout("late".into()).mongo_code(), None);
    /// # }
    /// ```
    #[cfg(feature = "mongodb")]
    pub fn mongo_code(&self) -> Option<i32> {
        use mongodb::error::{ErrorKind, WriteFailure};
        let Error::Mongo {
            source: Some(source),
            ..
        } = self
        else {
            return None;
        };
        let e = source.downcast_ref::<mongodb::error::Error>()?;
        match e.kind.as_ref() {
            ErrorKind::Command(c) => Some(c.code),
            ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
            ErrorKind::Write(WriteFailure::WriteConcernError(w)) => Some(w.code),
            // A write concern's error first (it concerns the whole write),
            // then the write error of the lowest index.
            ErrorKind::InsertMany(m) => {
                m.write_concern_error.as_ref().map(|w| w.code).or_else(|| {
                    m.write_errors
                        .iter()
                        .flatten()
                        .min_by_key(|w| w.index)
                        .map(|w| w.code)
                })
            }
            ErrorKind::BulkWrite(b) => {
                b.write_concern_errors.first().map(|w| w.code).or_else(|| {
                    b.write_errors
                        .iter()
                        .min_by_key(|(index, _)| **index)
                        .map(|(_, w)| w.code)
                })
            }
            _ => None,
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

/// Write errors that say the document itself cannot be written, whenever
/// and wherever it is tried: a value or `_id` MongoDB does not accept, an
/// operator it cannot apply to the stored value, a document too large.
/// Every other code (a write conflict, a primary stepping down, a shutdown,
/// a time limit, an unknown code) may pass: the batch is retried whole,
/// never sent to the dead letters for it.
#[cfg(feature = "mongodb")]
pub(crate) const DOCUMENT_REFUSED: &[i32] = &[
    2,     // BadValue
    9,     // FailedToParse
    14,    // TypeMismatch
    15,    // Overflow
    16,    // InvalidLength
    22,    // InvalidBSON
    28,    // PathNotViable
    30,    // InvalidPath
    52,    // DollarPrefixedFieldName
    53,    // InvalidIdField
    54,    // NotSingleValueField
    55,    // InvalidDBRef
    56,    // EmptyFieldName
    57,    // DottedFieldName
    66,    // ImmutableField
    121,   // DocumentValidationFailure
    10334, // BSONObjectTooLarge
    16837, // an array `_id` (older servers)
    17280, // a key too large to index
    17419, // the document after the update is too large
];

#[cfg(all(test, any(feature = "kafka", feature = "mongodb")))]
mod tests {
    use super::*;

    /// The driver's error stays reachable, with the server's code, and
    /// decides whether a retry may help.
    #[cfg(feature = "mongodb")]
    #[test]
    fn a_mongodb_error_keeps_its_source_and_code() {
        use mongodb::error::{CommandError, ErrorKind};
        use std::error::Error as _;
        let command = |code: i32| -> mongodb::error::Error {
            let c: CommandError = bson::deserialize_from_document(bson::doc! {
                "code": code, "codeName": "X", "errmsg": "refused"
            })
            .unwrap();
            ErrorKind::Command(c).into()
        };
        let refused = Error::mongo("update", command(121));
        assert_eq!(refused.mongo_code(), Some(121));
        assert!(
            refused
                .source()
                .is_some_and(|s| s.downcast_ref::<mongodb::error::Error>().is_some())
        );
        assert!(
            !refused.is_retriable(),
            "a document the server refuses is refused again"
        );
        assert!(!Error::mongo("find", command(13)).is_retriable());
        // Two upserts racing on one `_id`: the retry succeeds.
        assert!(Error::mongo("insert", command(11000)).is_retriable());
        // NotWritablePrimary: an election; a later try may succeed.
        assert!(Error::mongo("update", command(10107)).is_retriable());
        assert_eq!(
            Error::mongo_msg("write", "no driver error").mongo_code(),
            None
        );
        assert!(Error::mongo_msg("write", "no driver error").is_retriable());
    }

    #[cfg(feature = "kafka")]
    #[test]
    fn a_kafka_error_keeps_its_source_and_code() {
        use rdkafka::error::KafkaError;
        use rdkafka::types::RDKafkaErrorCode;
        use std::error::Error as _;
        let timed_out = Error::kafka(
            "produce",
            KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
        );
        assert_eq!(
            timed_out.kafka_code(),
            Some(RDKafkaErrorCode::MessageTimedOut)
        );
        assert!(timed_out.source().is_some());
        assert!(timed_out.is_retriable());
        let denied = Error::kafka(
            "produce",
            KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed),
        );
        assert!(!denied.is_retriable(), "{denied}");
    }
}
