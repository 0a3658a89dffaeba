//! The bytes accrete persists and publishes, encoded and decoded in one
//! place: the embedded store's records, and the changes both backends
//! publish (one versioned format, [`CHANGE_FORMAT`]). The MongoDB
//! documents are described in `store::mongo` (their logged writes are
//! [`Written`], encoded here).

use serde::{Deserialize, Serialize};

use crate::ids::Absorbed;
use crate::{Error, Result};

/// The format byte in front of every stored record.
const RECORD_FORMAT: u8 = 1;

/// What is stored for one key: its version (bumped by every write that
/// changed the state), the absorbed event ids, and the state.
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredRecord<S> {
    pub(crate) version: u64,
    pub(crate) absorbed: Absorbed,
    pub(crate) state: S,
}

pub(crate) fn encode_record<S: Serialize>(
    record: &StoredRecord<S>,
    buf: &mut Vec<u8>,
) -> Result<()> {
    buf.clear();
    buf.push(RECORD_FORMAT);
    postcard::to_io(record, &mut *buf).map_err(|e| Error::Encode {
        what: "state",
        detail: e.to_string(),
    })?;
    Ok(())
}

pub(crate) fn encode_key<K: Serialize>(key: &K) -> Result<Vec<u8>> {
    postcard::to_stdvec(key).map_err(|e| Error::Encode {
        what: "key",
        detail: e.to_string(),
    })
}

/// The format byte in front of every published change, on both backends:
/// then the postcard bytes of `(version, Written)`.
pub(crate) const CHANGE_FORMAT: u8 = 0xC2;

/// The Kafka + MongoDB backend's change format before there was one format
/// (`Written` alone, no version): still read, as version 0, so that a
/// changes topic written by an older node drains. (The embedded backend's
/// changes had no format byte and cannot be told apart; see DESIGN.md.)
const CHANGE_FORMAT_UNVERSIONED: u8 = 0xC1;

/// One event partition's part of a batch: the key's events of `partition`
/// in `[from, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Range {
    pub(crate) partition: u32,
    pub(crate) from: u64,
    pub(crate) end: u64,
}

/// What one write combined into a key's state: the part of a change every
/// backend knows. A MongoDB document logs its latest writes in this form
/// (see `store::mongo`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Written<S> {
    /// The change covers the key's events in these ranges.
    pub(crate) ranges: Vec<Range>,
    /// An idempotent delta (no guard): may be applied again harmlessly.
    pub(crate) idempotent: bool,
    pub(crate) delta: S,
}

/// A change as published: the key's version after the write (0 when the
/// writer does not learn it: a blind write to MongoDB) and the write.
pub(crate) type Change<S> = (u64, Written<S>);

/// Encodes a change for a changes topic into `buf` (cleared first).
pub(crate) fn encode_change<S: Serialize>(
    version: u64,
    written: &Written<S>,
    buf: &mut Vec<u8>,
) -> Result<()> {
    buf.clear();
    buf.push(CHANGE_FORMAT);
    postcard::to_io(&(version, written), &mut *buf).map_err(|e| Error::Encode {
        what: "change",
        detail: e.to_string(),
    })?;
    Ok(())
}

/// Decodes the payload of a changes topic's record, either format. With a
/// stack budget: the bytes may come from a broker.
pub(crate) fn decode_change_payload<S: serde::de::DeserializeOwned>(
    payload: &[u8],
) -> Result<Change<S>> {
    let corrupt = |detail| Error::Corrupt {
        what: "change",
        detail,
    };
    match payload.split_first() {
        Some((&CHANGE_FORMAT, rest)) => crate::event::take_from_bytes(rest)
            .map(|(change, _)| change)
            .map_err(corrupt),
        Some((&CHANGE_FORMAT_UNVERSIONED, rest)) => crate::event::take_from_bytes(rest)
            .map(|(written, _)| (0, written))
            .map_err(corrupt),
        Some((other, _)) => Err(corrupt(format!(
            "unknown change format {other:#04x}; this build reads {CHANGE_FORMAT:#04x} (a change \
             published before accrete had one change format: drain or reset the changes topic)"
        ))),
        None => Err(corrupt("empty change".into())),
    }
}

/// Decodes a record of a changes topic: the key, and the change.
pub(crate) fn decode_change<K, S>(key: &[u8], payload: &[u8]) -> Result<(K, Change<S>)>
where
    K: serde::de::DeserializeOwned,
    S: serde::de::DeserializeOwned,
{
    let key = crate::event::from_bytes(key).map_err(|detail| Error::Corrupt {
        what: "change key",
        detail,
    })?;
    Ok((key, decode_change_payload(payload)?))
}

/// The version of a stored record, read without knowing its state type (0
/// for a record that does not decode).
pub(crate) fn record_version(bytes: &[u8]) -> u64 {
    match bytes.split_first() {
        Some((&RECORD_FORMAT, rest)) => {
            postcard::take_from_bytes::<u64>(rest).map_or(0, |(v, _)| v)
        }
        _ => 0,
    }
}

pub(crate) fn decode_record<S: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<StoredRecord<S>> {
    match bytes.split_first() {
        Some((&RECORD_FORMAT, rest)) => crate::event::take_from_bytes(rest)
            .map(|(record, _)| record)
            .map_err(|e| Error::Corrupt {
                what: "stored state",
                detail: format!("{e} (did the state type change? rebuild the read model)"),
            }),
        Some((other, _)) => Err(Error::Corrupt {
            what: "stored state",
            detail: format!(
                "unknown record format {other}; this build reads format {RECORD_FORMAT}"
            ),
        }),
        None => Err(Error::Corrupt {
            what: "stored state",
            detail: "empty record".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monoids::Sum;

    fn written(delta: i64) -> Written<Sum<i64>> {
        Written {
            ranges: vec![Range {
                partition: 2,
                from: 40,
                end: 48,
            }],
            idempotent: false,
            delta: Sum(delta),
        }
    }

    #[test]
    fn a_change_round_trips_with_its_version() {
        let mut buf = Vec::new();
        encode_change(7, &written(5), &mut buf).unwrap();
        assert_eq!(buf[0], CHANGE_FORMAT);
        let (version, w) = decode_change_payload::<Sum<i64>>(&buf).unwrap();
        assert_eq!((version, w), (7, written(5)));
        let key = postcard::to_stdvec("k").unwrap();
        let (k, (v, _)) = decode_change::<String, Sum<i64>>(&key, &buf).unwrap();
        assert_eq!((k.as_str(), v), ("k", 7));
    }

    /// A changes topic written by a node from before the one format still
    /// drains: its changes read as version 0.
    #[test]
    fn the_unversioned_cluster_format_still_reads() {
        let mut old = vec![CHANGE_FORMAT_UNVERSIONED];
        old.extend(postcard::to_stdvec(&written(3)).unwrap());
        assert_eq!(
            decode_change_payload::<Sum<i64>>(&old).unwrap(),
            (0, written(3))
        );
    }

    #[test]
    fn an_unknown_or_empty_change_is_refused_with_what_to_do() {
        let e = decode_change_payload::<Sum<i64>>(&[0x05, 1, 2]).unwrap_err();
        assert!(e.to_string().contains("unknown change format 0x05"), "{e}");
        assert!(e.to_string().contains("drain or reset"), "{e}");
        assert!(decode_change_payload::<Sum<i64>>(&[]).is_err());
        // A truncated change of the current format.
        let mut buf = Vec::new();
        encode_change(9, &written(1), &mut buf).unwrap();
        buf.truncate(buf.len() - 1);
        assert!(decode_change_payload::<Sum<i64>>(&buf).is_err());
    }
}
