//! Keys, states and positions in their BSON form.

use std::collections::HashMap;

use bson::{Bson, Document};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::monoids::Monoid;
use crate::{Error, Result};

/// A key as the document's `_id`: its BSON form, except that a sequence
/// (a tuple, a `Vec`, an array), which MongoDB refuses as `_id`, becomes a
/// document of its elements by position: `("shop", 7)` is stored as
/// `{"0": "shop", "1": 7}`. Strings, integers and documents (structs, maps)
/// are stored as they serialize.
///
/// # Errors
///
/// [`Error::Encode`] for a key without a BSON form (a `u64` above
/// `i64::MAX`), or one MongoDB refuses as `_id` (a field name starting with
/// `$`): the runtime sends its events to the dead letters.
pub(crate) fn key_id<K: Serialize>(key: &K) -> Result<Bson> {
    let id = bson::serialize_to_bson(key).map_err(|e| Error::Encode {
        what: "key",
        detail: format!("{e} (keys must have a BSON form: no u64 above i64::MAX)"),
    })?;
    let id = match id {
        Bson::Array(items) => Bson::Document(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| (i.to_string(), v))
                .collect(),
        ),
        other => other,
    };
    if let Some(field) = dollar_field(&id) {
        return Err(Error::Encode {
            what: "key",
            detail: format!(
                "its BSON form {id} has the field name `{field}`: MongoDB refuses `$`-prefixed \
                 field names in an `_id`"
            ),
        });
    }
    Ok(id)
}

/// A field name starting with `$` anywhere in `value`'s documents.
fn dollar_field(value: &Bson) -> Option<&str> {
    match value {
        Bson::Document(d) => d.iter().find_map(|(k, v)| {
            if k.starts_with('$') {
                Some(k.as_str())
            } else {
                dollar_field(v)
            }
        }),
        Bson::Array(items) => items.iter().find_map(dollar_field),
        _ => None,
    }
}

/// A stored `_id` as the key: as [`key_id`] made it (a document of the
/// elements by position, for a sequence key), or an array (as sequence keys
/// were stored before).
pub(crate) fn decode_key<K: DeserializeOwned>(id: &Bson) -> Result<K> {
    let first = match bson::deserialize_from_bson::<K>(id.clone()) {
        Ok(key) => return Ok(key),
        Err(e) => e,
    };
    if let Bson::Document(d) = id
        && d.keys().enumerate().all(|(i, k)| *k == i.to_string())
        && let Ok(key) =
            bson::deserialize_from_bson::<K>(Bson::Array(d.values().cloned().collect()))
    {
        return Ok(key);
    }
    Err(Error::Corrupt {
        what: "stored key",
        detail: format!("{first} in {id}"),
    })
}

/// The stored state: its BSON form laid over the identity's, so that fields
/// and entries no write has touched yet read as the identity's.
pub(super) fn decode_state<S: Monoid + Serialize + DeserializeOwned>(
    stored: Option<&Bson>,
) -> Result<S> {
    let Some(stored) = stored else {
        return Ok(S::identity());
    };
    let mut base = bson::serialize_to_bson(&S::identity()).map_err(|e| Error::Encode {
        what: "state",
        detail: e.to_string(),
    })?;
    overlay(&mut base, stored);
    bson::deserialize_from_bson(base).map_err(|e| Error::Corrupt {
        what: "stored state",
        detail: format!("{e} in {stored} (did the state type change? rebuild the read model)"),
    })
}

fn overlay(base: &mut Bson, top: &Bson) {
    match (base, top) {
        (Bson::Document(b), Bson::Document(t)) => {
            for (k, v) in t {
                match b.get_mut(k) {
                    Some(existing) => overlay(existing, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, t) => *b = t.clone(),
    }
}

pub(crate) fn decode_doc<K: DeserializeOwned, S: Monoid + Serialize + DeserializeOwned>(
    doc: &Document,
) -> Result<(K, S)> {
    let key = decode_key(doc.get("_id").unwrap_or(&Bson::Null))?;
    Ok((key, decode_state(doc.get("s"))?))
}

/// The guard positions of a state document: partition to end offset.
pub(crate) fn positions(doc: &Document) -> HashMap<u32, u64> {
    let mut out = HashMap::new();
    if let Ok(p) = doc.get_document("p") {
        for (k, v) in p {
            if let (Ok(partition), Some(end)) = (k.parse::<u32>(), as_u64(v)) {
                out.insert(partition, end);
            }
        }
    }
    out
}

pub(super) fn as_u64(v: &Bson) -> Option<u64> {
    match v {
        Bson::Int64(n) => u64::try_from(*n).ok(),
        Bson::Int32(n) => u64::try_from(*n).ok(),
        Bson::Double(f) if *f >= 0.0 => Some(*f as u64),
        _ => None,
    }
}

/// A state's stored (BSON) form.
pub(super) fn state_bson<S: Serialize>(state: &S) -> Result<Bson> {
    bson::serialize_to_bson(state).map_err(|e| Error::Encode {
        what: "state",
        detail: format!("{e} (the state must have a BSON form)"),
    })
}
