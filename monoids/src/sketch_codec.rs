//! The persisted byte form shared by the sketches
//! ([`HyperLogLog`](crate::HyperLogLog), [`CountMinSketch`](crate::CountMinSketch),
//! [`Bloom`](crate::Bloom)).
//!
//! A sketch serializes as one byte string (`serialize_bytes`: BSON binary,
//! a JSON array of numbers, a postcard length-prefixed slice). Layout:
//!
//! - the identity (no allocation) is the empty byte string;
//! - otherwise `tag, params…, payload`, where `params` are the type's const
//!   parameters as LEB128 varints (`[P]`, `[W, D]`, `[BITS, K]`), so a
//!   sketch stored with one shape is never silently read as another;
//! - tag [`DENSE`]: every cell, fixed width, little-endian;
//! - tag [`SPARSE`]: for each nonzero cell, in order, a varint count of the
//!   zero cells skipped since the previous one, then the cell (nonzero).
//!
//! The writer picks whichever of the two is shorter (dense on a tie), so
//! equal sketches always serialize to equal bytes. The reader accepts both
//! and normalises an all-zero payload to the identity, so derived equality
//! stays semantic.

use std::fmt;

use crate::cells::Cells;

/// Tag of the dense payload.
pub(crate) const DENSE: u8 = 1;
/// Tag of the sparse payload.
pub(crate) const SPARSE: u8 = 2;

/// How a sketch's cells (registers, counters, words) are written. The
/// sparse form of a cell is its dense form unless the codec says otherwise.
pub(crate) trait Codec {
    /// The cell type; `Default` is the zero cell.
    type Cell: Copy + PartialEq + Default;
    /// Bytes per cell in the dense payload.
    const WIDTH: usize;
    /// Writes a cell in the dense payload.
    fn put_dense(cell: Self::Cell, out: &mut Vec<u8>);
    /// Reads a cell from exactly [`WIDTH`](Codec::WIDTH) bytes.
    fn get_dense(bytes: &[u8]) -> Self::Cell;
    /// Length of a cell in the sparse payload.
    fn sparse_len(_cell: Self::Cell) -> usize {
        Self::WIDTH
    }
    /// Writes a cell in the sparse payload.
    fn put_sparse(cell: Self::Cell, out: &mut Vec<u8>) {
        Self::put_dense(cell, out);
    }
    /// Reads a cell from the sparse payload, advancing `input`.
    fn get_sparse(input: &mut &[u8]) -> Option<Self::Cell> {
        let (cell, rest) = input.split_at_checked(Self::WIDTH)?;
        *input = rest;
        Some(Self::get_dense(cell))
    }
}

/// One byte per cell, in both payloads (HyperLogLog registers).
pub(crate) struct ByteCells;

impl Codec for ByteCells {
    type Cell = u8;
    const WIDTH: usize = 1;
    fn put_dense(cell: u8, out: &mut Vec<u8>) {
        out.push(cell);
    }
    fn get_dense(bytes: &[u8]) -> u8 {
        bytes[0]
    }
}

/// `u64` bit words: 8 bytes little-endian in both payloads (Bloom words
/// hold random bits, which varints would only lengthen).
pub(crate) struct WordCells;

impl Codec for WordCells {
    type Cell = u64;
    const WIDTH: usize = 8;
    fn put_dense(cell: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(&cell.to_le_bytes());
    }
    fn get_dense(bytes: &[u8]) -> u64 {
        u64::from_le_bytes(bytes.try_into().expect("WIDTH bytes"))
    }
}

/// `u64` counters: 8 bytes little-endian when dense (as [`WordCells`]), a
/// varint when sparse (Count-Min counters are mostly small).
pub(crate) struct VarintCells;

impl Codec for VarintCells {
    type Cell = u64;
    const WIDTH: usize = 8;
    fn put_dense(cell: u64, out: &mut Vec<u8>) {
        WordCells::put_dense(cell, out);
    }
    fn get_dense(bytes: &[u8]) -> u64 {
        WordCells::get_dense(bytes)
    }
    fn sparse_len(cell: u64) -> usize {
        varint_len(cell)
    }
    fn put_sparse(cell: u64, out: &mut Vec<u8>) {
        put_varint(cell, out);
    }
    fn get_sparse(input: &mut &[u8]) -> Option<u64> {
        get_varint(input)
    }
}

/// Why a stored sketch could not be read.
#[derive(Debug)]
pub(crate) struct DecodeError {
    what: &'static str,
    reason: String,
}

impl DecodeError {
    pub(crate) fn new(what: &'static str, reason: impl Into<String>) -> Self {
        DecodeError {
            what,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid stored {}: {}", self.what, self.reason)
    }
}

/// A const parameter of a sketch type, by name: `("P", 14)`.
pub(crate) type Param = (&'static str, u64);

/// Encodes `cells` (`None`: the identity) with the type's `params`.
pub(crate) fn encode<C: Codec>(params: &[Param], cells: Option<&[C::Cell]>) -> Vec<u8> {
    let Some(cells) = cells else {
        return Vec::new();
    };
    let zero = C::Cell::default();
    let mut sparse_len = 0;
    let mut gap = 0_u64;
    for &cell in cells {
        if cell == zero {
            gap += 1;
        } else {
            sparse_len += varint_len(gap) + C::sparse_len(cell);
            gap = 0;
        }
    }
    let dense_len = cells.len() * C::WIDTH;
    let header_len = 1 + params.iter().map(|&(_, p)| varint_len(p)).sum::<usize>();
    let sparse = sparse_len < dense_len;
    let mut out = Vec::with_capacity(header_len + sparse_len.min(dense_len));
    out.push(if sparse { SPARSE } else { DENSE });
    for &(_, p) in params {
        put_varint(p, &mut out);
    }
    if sparse {
        let mut gap = 0_u64;
        for &cell in cells {
            if cell == zero {
                gap += 1;
            } else {
                put_varint(gap, &mut out);
                C::put_sparse(cell, &mut out);
                gap = 0;
            }
        }
    } else {
        for &cell in cells {
            C::put_dense(cell, &mut out);
        }
    }
    out
}

/// Decodes what [`encode`] wrote for a sketch of `len` cells with `params`.
/// Returns `None` for the identity (empty input or all cells zero).
pub(crate) fn decode<C: Codec>(
    what: &'static str,
    params: &[Param],
    len: usize,
    bytes: &[u8],
) -> Result<Cells<C::Cell>, DecodeError> {
    let err = |reason: String| DecodeError::new(what, reason);
    let Some((&tag, mut input)) = bytes.split_first() else {
        return Ok(None);
    };
    for &(name, expected) in params {
        let stored = get_varint(&mut input).ok_or_else(|| err("truncated header".into()))?;
        if stored != expected {
            return Err(err(format!(
                "stored with {name} = {stored} but read as {name} = {expected}; \
                 a sketch's parameters are part of its persisted format"
            )));
        }
    }
    let zero = C::Cell::default();
    let cells: Box<[C::Cell]> = match tag {
        DENSE => {
            if input.len() != len * C::WIDTH {
                return Err(err(format!(
                    "dense payload of {} bytes, expected {}",
                    input.len(),
                    len * C::WIDTH
                )));
            }
            input.chunks_exact(C::WIDTH).map(C::get_dense).collect()
        }
        SPARSE => {
            let mut cells = vec![zero; len].into_boxed_slice();
            let mut next = 0_usize;
            while !input.is_empty() {
                let gap = get_varint(&mut input).ok_or_else(|| err("truncated gap".into()))?;
                let index = usize::try_from(gap)
                    .ok()
                    .and_then(|gap| next.checked_add(gap))
                    .filter(|&index| index < len)
                    .ok_or_else(|| err(format!("sparse cell beyond the {len} cells")))?;
                let cell = C::get_sparse(&mut input).ok_or_else(|| err("truncated cell".into()))?;
                if cell == zero {
                    return Err(err(format!("sparse cell {index} is zero")));
                }
                cells[index] = cell;
                next = index + 1;
            }
            cells
        }
        _ => return Err(err(format!("unknown encoding tag {tag}"))),
    };
    if cells.iter().all(|&cell| cell == zero) {
        return Ok(None);
    }
    Ok(Some(cells))
}

fn varint_len(value: u64) -> usize {
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn get_varint(input: &mut &[u8]) -> Option<u64> {
    let mut value = 0_u64;
    let mut shift = 0_u32;
    loop {
        let (&byte, rest) = input.split_first()?;
        *input = rest;
        if shift == 63 && byte > 1 {
            return None; // more than 64 bits
        }
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
        shift += 7;
    }
}

/// Serializes `cells` (`None`: the identity) with the type's `params`, as
/// one byte string.
pub(crate) fn serialize<C: Codec, S: serde::Serializer>(
    params: &[Param],
    cells: Option<&[C::Cell]>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(&encode::<C>(params, cells))
}

/// Reads what [`serialize`] wrote for a sketch of `len` cells with `params`:
/// `None` for the identity.
pub(crate) fn deserialize<'de, C: Codec, D: serde::Deserializer<'de>>(
    what: &'static str,
    params: &[Param],
    len: usize,
    deserializer: D,
) -> Result<Cells<C::Cell>, D::Error> {
    let bytes = deserialize_bytes(deserializer)?;
    decode::<C>(what, params, len, &bytes).map_err(serde::de::Error::custom)
}

/// Reads a byte string from any serde format: bytes (BSON binary, postcard)
/// or a sequence of numbers (JSON).
fn deserialize_bytes<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<u8>, D::Error> {
    struct BytesVisitor;

    impl<'de> serde::de::Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a sketch's bytes")
        }

        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
            while let Some(byte) = seq.next_element::<u8>()? {
                out.push(byte);
            }
            Ok(out)
        }
    }

    deserializer.deserialize_bytes(BytesVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        for v in [0, 1, 127, 128, 300, 1 << 35, u64::MAX >> 1, u64::MAX] {
            let mut out = Vec::new();
            put_varint(v, &mut out);
            assert_eq!(out.len(), varint_len(v), "{v}");
            let mut input = &out[..];
            assert_eq!(get_varint(&mut input), Some(v));
            assert!(input.is_empty());
        }
        // 11 bytes, or a 10th byte above 1: more than 64 bits.
        assert_eq!(get_varint(&mut &[0xff; 11][..]), None);
        assert_eq!(
            get_varint(&mut &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02][..]),
            None
        );
        assert_eq!(get_varint(&mut &[0x80][..]), None);
    }

    #[test]
    fn picks_the_shorter_payload_and_round_trips() {
        let params = [("P", 14)];
        let mut cells = vec![0_u8; 64];
        assert_eq!(encode::<ByteCells>(&params, None), Vec::<u8>::new());
        cells[3] = 5;
        cells[63] = 1;
        let bytes = encode::<ByteCells>(&params, Some(&cells));
        assert_eq!(bytes, [SPARSE, 14, 3, 5, 59, 1]);
        let back = decode::<ByteCells>("test", &params, 64, &bytes).unwrap();
        assert_eq!(back.as_deref(), Some(&cells[..]));

        let full = vec![7_u8; 64];
        let bytes = encode::<ByteCells>(&params, Some(&full));
        assert_eq!(bytes[0], DENSE);
        assert_eq!(bytes.len(), 2 + 64);
        let back = decode::<ByteCells>("test", &params, 64, &bytes).unwrap();
        assert_eq!(back.as_deref(), Some(&full[..]));
    }

    #[test]
    fn rejects_corruption_and_normalises_zeros() {
        let ok = |bytes: &[u8]| decode::<VarintCells>("test", &[("W", 4), ("D", 2)], 8, bytes);
        assert!(ok(&[]).unwrap().is_none());
        assert!(ok(&[SPARSE, 4, 2]).unwrap().is_none());
        let mut dense_zero = vec![DENSE, 4, 2];
        dense_zero.extend([0; 64]);
        assert!(ok(&dense_zero).unwrap().is_none());
        assert!(ok(&[SPARSE, 4, 2, 7, 9]).unwrap().is_some());
        assert!(ok(&[SPARSE, 4, 2, 8, 9]).is_err(), "beyond the end");
        assert!(ok(&[SPARSE, 4, 2, 0, 0]).is_err(), "explicit zero");
        assert!(ok(&[SPARSE, 4, 2, 0]).is_err(), "truncated");
        assert!(ok(&[SPARSE, 5, 2]).is_err(), "other shape");
        assert!(ok(&[DENSE, 4, 2, 0]).is_err(), "short dense");
        assert!(ok(&[9, 4, 2]).is_err(), "unknown tag");
        let message = ok(&[SPARSE, 5, 2]).unwrap_err().to_string();
        assert!(
            message.contains("stored with W = 5 but read as W = 4"),
            "{message}"
        );
    }
}
