//! Zigzag varints (as protobuf and Kafka use them) and big-endian field readers: the pure
//! leaf functions the batch codec is built from.

use super::BatchError;

/// Bytes a zigzag varint takes.
pub fn varint_len(value: i64) -> usize {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Appends a zigzag varint.
pub fn put_varint(out: &mut Vec<u8>, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a zigzag varint of at most `max_bytes` bytes, advancing `pos`.
pub(crate) fn get_varint(buf: &[u8], pos: &mut usize, max_bytes: usize) -> Result<i64, BatchError> {
    let mut raw: u64 = 0;
    for i in 0..max_bytes {
        let Some(&b) = buf.get(*pos) else {
            return Err(BatchError::Malformed("varint runs past the record"));
        };
        *pos += 1;
        raw |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
        }
    }
    Err(BatchError::Malformed("varint too long"))
}

pub(crate) fn get_varint32(buf: &[u8], pos: &mut usize) -> Result<i32, BatchError> {
    let v = get_varint(buf, pos, 5)?;
    i32::try_from(v).map_err(|_| BatchError::Malformed("varint out of i32 range"))
}

/// Reads a length-prefixed byte field (`-1` = null).
pub(crate) fn get_bytes<'a>(
    buf: &'a [u8],
    pos: &mut usize,
) -> Result<Option<&'a [u8]>, BatchError> {
    let len = get_varint32(buf, pos)?;
    if len < 0 {
        return Ok(None);
    }
    let end = pos
        .checked_add(len as usize)
        .filter(|&e| e <= buf.len())
        .ok_or(BatchError::Malformed("field length runs past the record"))?;
    let out = &buf[*pos..end];
    *pos = end;
    Ok(Some(out))
}

pub(crate) fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
pub(crate) fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
pub(crate) fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}
