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

/// The first byte of every event payload accrete writes: the encoding's
/// version. Bytes from another producer almost never start with it.
pub const EVENT_FORMAT: u8 = 0xA1;

/// Encodes an event as accrete stores it in the log: [`EVENT_FORMAT`], then
/// the event in postcard (compact binary serde).
///
/// # Errors
///
/// [`Error::Encode`](crate::Error::Encode) if serde fails (e.g. a map with
/// non-serializable keys).
pub fn encode<E: Serialize>(event: &E) -> crate::Result<Vec<u8>> {
    let mut out = vec![EVENT_FORMAT];
    postcard::to_io(event, &mut out).map_err(|e| crate::Error::Encode {
        what: "event",
        detail: e.to_string(),
    })?;
    Ok(out)
}

/// Decodes an event payload; the reason, for the dead letters, if it is not
/// one. The whole payload must be the event: trailing bytes are an error.
///
/// # Errors
///
/// A human-readable reason.
pub fn decode<E: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<E, String> {
    let what = std::any::type_name::<E>();
    match payload.split_first() {
        Some((&EVENT_FORMAT, body)) => match postcard::take_from_bytes::<E>(body) {
            Ok((event, [])) => Ok(event),
            Ok((_, rest)) => Err(format!("{} trailing bytes after a `{what}`", rest.len())),
            Err(e) => Err(format!("{} bytes are not a `{what}` ({e})", body.len())),
        },
        Some((other, _)) => Err(format!(
            "not an accrete event: format byte {other:#04x}, expected {EVENT_FORMAT:#04x} (events are written by \
             `Runtime::submit`/`forward` or `accrete::event::encode`)"
        )),
        None => Err("empty payload".into()),
    }
}
