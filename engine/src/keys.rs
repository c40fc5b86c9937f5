//! Order-preserving encodings for store keys: a big-endian integer with its sign bit flipped
//! sorts bytewise like the number, so keys that start with a time scan in time order, and
//! a length-prefixed key keeps one key's entries contiguous however keys compare.

/// The 8 bytes of `v` whose bytewise order is the numeric order.
pub fn encode_i64(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

/// The inverse of [`encode_i64`]; `None` unless `b` is 8 bytes.
pub fn decode_i64(b: &[u8]) -> Option<i64> {
    let a: [u8; 8] = b.try_into().ok()?;
    Some((u64::from_be_bytes(a) ^ (1 << 63)) as i64)
}

/// `key` prefixed with its length (4 bytes, big-endian): no key's encoding is a prefix of
/// another's, so a scan over one key's entries never meets another key.
pub fn push_len_prefixed(out: &mut Vec<u8>, key: &[u8]) {
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
}

/// Reads a length-prefixed key at the start of `b`: the key and the rest.
pub fn split_len_prefixed(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_be_bytes(b.get(..4)?.try_into().ok()?) as usize;
    let key = b.get(4..4 + len)?;
    Some((key, &b[4 + len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_sort_bytewise_like_numbers() {
        let mut v = [i64::MIN, -5, -1, 0, 1, 7, 1 << 40, i64::MAX];
        let mut enc: Vec<[u8; 8]> = v.iter().map(|x| encode_i64(*x)).collect();
        enc.sort();
        v.sort();
        let dec: Vec<i64> = enc.iter().filter_map(|e| decode_i64(e)).collect();
        assert_eq!(dec, v);
        let mut k = Vec::new();
        push_len_prefixed(&mut k, b"ab");
        k.extend_from_slice(b"rest");
        assert_eq!(split_len_prefixed(&k), Some((&b"ab"[..], &b"rest"[..])));
    }
}
