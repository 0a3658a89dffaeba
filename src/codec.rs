//! The bytes accrete persists and publishes, encoded and decoded in one
//! place: the embedded store's records and the embedded changes topics'
//! payloads. (The Kafka + MongoDB backend's change records and documents
//! are described in `cluster` and `store::mongo`; issue #11 brings them
//! here.)

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

/// Decodes the payload of a changes topic's record: `(version, delta)`.
pub(crate) fn decode_change_payload<S: serde::de::DeserializeOwned>(
    payload: &[u8],
) -> Result<(u64, S)> {
    crate::event::take_from_bytes(payload)
        .map(|(change, _)| change)
        .map_err(|detail| Error::Corrupt {
            what: "change",
            detail,
        })
}

/// Decodes a record of a changes topic: the key, and `(version, delta)`.
pub(crate) fn decode_change<K, S>(key: &[u8], payload: &[u8]) -> Result<(K, u64, S)>
where
    K: serde::de::DeserializeOwned,
    S: serde::de::DeserializeOwned,
{
    let key = crate::event::from_bytes(key).map_err(|detail| Error::Corrupt {
        what: "change key",
        detail,
    })?;
    let (version, delta) = decode_change_payload(payload)?;
    Ok((key, version, delta))
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
