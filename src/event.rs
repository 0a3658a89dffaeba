//! Events and their ids.

use serde::{Deserialize, Serialize};

/// Where an event first entered the log: its identity for exactly-once
/// application. An event re-read from the beginning, or re-appended from an
/// export, keeps the id it had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EventId {
    /// The log the event entered: a stable number for the topic (see
    /// [`source_id`]).
    pub source: u32,
    /// The partition it entered.
    pub partition: u32,
    /// Its offset there.
    pub offset: u64,
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:08x}/{}/{}", self.source, self.partition, self.offset)
    }
}

/// The source number of a topic name: a stable 32-bit hash, so ids are
/// compact and the same on every node.
pub fn source_id(topic: &str) -> u32 {
    accrete_monoids::hash::stable_hash(topic.as_bytes()) as u32
}
