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

/// A random number from the standard library's per-process random hasher
/// keys, the time and the process id.
pub(crate) fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish() as u32
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
        Some((&EVENT_FORMAT, body)) => match take_from_bytes::<E>(body) {
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

/// How much stack one decode may use. Every level of a recursive type reads
/// at least one byte, so the budget is checked on every byte read: a hostile
/// payload nested a million levels deep is refused, not a stack overflow
/// that aborts the process (on every restart, since the event stays in the
/// log).
const STACK_BUDGET: usize = 256 << 10;

/// A postcard byte source that refuses to go deeper than [`STACK_BUDGET`]
/// of stack below where the decode started.
struct Limited<'de> {
    bytes: &'de [u8],
    base: usize,
    too_deep: bool,
}

/// An approximation of the stack pointer: the address of a local.
#[inline(always)]
fn stack_address() -> usize {
    let here = 0_u8;
    std::ptr::addr_of!(here) as usize
}

impl<'de> Limited<'de> {
    fn check(&mut self) -> postcard::Result<()> {
        if stack_address().abs_diff(self.base) > STACK_BUDGET {
            self.too_deep = true;
            return Err(postcard::Error::DeserializeUnexpectedEnd);
        }
        Ok(())
    }
}

impl<'de> postcard::de_flavors::Flavor<'de> for Limited<'de> {
    type Remainder = (&'de [u8], bool);
    type Source = &'de [u8];

    fn pop(&mut self) -> postcard::Result<u8> {
        self.check()?;
        let (&first, rest) = self
            .bytes
            .split_first()
            .ok_or(postcard::Error::DeserializeUnexpectedEnd)?;
        self.bytes = rest;
        Ok(first)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.bytes.len())
    }

    fn try_take_n(&mut self, ct: usize) -> postcard::Result<&'de [u8]> {
        self.check()?;
        if ct > self.bytes.len() {
            return Err(postcard::Error::DeserializeUnexpectedEnd);
        }
        let (taken, rest) = self.bytes.split_at(ct);
        self.bytes = rest;
        Ok(taken)
    }

    fn finalize(self) -> postcard::Result<Self::Remainder> {
        Ok((self.bytes, self.too_deep))
    }
}

/// Decodes a postcard value from the front of `bytes`, returning it and the
/// bytes after it: like `postcard::take_from_bytes`, but a value nested too
/// deeply for the stack is an error (every decoder of bytes from outside the
/// process goes through here).
pub(crate) fn take_from_bytes<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<(T, &[u8]), String> {
    let mut de = postcard::Deserializer::from_flavor(Limited {
        bytes,
        base: stack_address(),
        too_deep: false,
    });
    let value = T::deserialize(&mut de);
    let (rest, too_deep) = de.finalize().unwrap_or((&[], false));
    match value {
        Ok(v) => Ok((v, rest)),
        Err(_) if too_deep => Err(format!(
            "nested too deeply to decode (more than {} KiB of stack)",
            STACK_BUDGET >> 10
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Decodes a whole postcard value (trailing bytes are an error), with the
/// nesting limit of [`take_from_bytes`].
pub(crate) fn from_bytes<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match take_from_bytes(bytes)? {
        (v, []) => Ok(v),
        (_, rest) => Err(format!("{} trailing bytes", rest.len())),
    }
}

/// The wall clock, in the unit of event times: milliseconds since the
/// Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
