//! The binary form of a share partition's journal records: one record of the state topic
//! holds the [`Change`]s of one operation (or a whole snapshot), compactly — offsets as
//! deltas, numbers as LEB128 varints — so acquiring or acknowledging a batch of neighbouring
//! messages costs a few bytes per message.
//!
//! Layout: a version byte, then per change a tag byte and its fields. Decoding checks every
//! length and tag: a record that does not decode is reported, never half applied.

use crate::partition::{Change, Persisted};

/// The record format's version.
const VERSION: u8 = 1;

const TAG_START: u8 = 0;
const TAG_EPOCH: u8 = 1;
const TAG_AVAILABLE: u8 = 2;
const TAG_ACQUIRED: u8 = 3;
const TAG_DONE: u8 = 4;

/// Encodes changes as one record value.
pub fn encode(changes: &[Change]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + changes.len() * 8);
    out.push(VERSION);
    let mut last_offset = 0i64;
    let mut delta = |offset: i64| {
        let d = offset.wrapping_sub(last_offset);
        last_offset = offset;
        d
    };
    for c in changes {
        match *c {
            Change::Start(s) => {
                out.push(TAG_START);
                put_signed(&mut out, s);
            }
            Change::Epoch(e) => {
                out.push(TAG_EPOCH);
                put(&mut out, e);
            }
            Change::Entry(offset, Persisted::Done) => {
                out.push(TAG_DONE);
                put_signed(&mut out, delta(offset));
            }
            Change::Entry(
                offset,
                Persisted::Available {
                    visible_at,
                    deliveries,
                },
            ) => {
                out.push(TAG_AVAILABLE);
                put_signed(&mut out, delta(offset));
                put_signed(&mut out, visible_at);
                put(&mut out, u64::from(deliveries));
            }
            Change::Entry(
                offset,
                Persisted::Acquired {
                    lease,
                    deadline,
                    deliveries,
                },
            ) => {
                out.push(TAG_ACQUIRED);
                put_signed(&mut out, delta(offset));
                put(&mut out, lease);
                put_signed(&mut out, deadline);
                put(&mut out, u64::from(deliveries));
            }
        }
    }
    out
}

/// Decodes a record value written by [`encode`].
pub fn decode(bytes: &[u8]) -> Result<Vec<Change>, String> {
    let mut r = Reader { bytes, at: 0 };
    let version = r.byte()?;
    if version != VERSION {
        return Err(format!("unknown journal record version {version}"));
    }
    let mut out = Vec::new();
    let mut last_offset = 0i64;
    while r.at < bytes.len() {
        let tag = r.byte()?;
        let change = match tag {
            TAG_START => Change::Start(r.signed()?),
            TAG_EPOCH => Change::Epoch(r.unsigned()?),
            TAG_DONE | TAG_AVAILABLE | TAG_ACQUIRED => {
                last_offset = last_offset.wrapping_add(r.signed()?);
                let persisted = match tag {
                    TAG_DONE => Persisted::Done,
                    TAG_AVAILABLE => Persisted::Available {
                        visible_at: r.signed()?,
                        deliveries: r.count()?,
                    },
                    _ => Persisted::Acquired {
                        lease: r.unsigned()?,
                        deadline: r.signed()?,
                        deliveries: r.count()?,
                    },
                };
                Change::Entry(last_offset, persisted)
            }
            other => return Err(format!("unknown change tag {other} at byte {}", r.at - 1)),
        };
        out.push(change);
    }
    Ok(out)
}

fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_signed(out: &mut Vec<u8>, v: i64) {
    put(out, ((v << 1) ^ (v >> 63)) as u64);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, String> {
        let b = *self
            .bytes
            .get(self.at)
            .ok_or_else(|| format!("record ends at byte {} inside a change", self.at))?;
        self.at += 1;
        Ok(b)
    }

    fn unsigned(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!("varint longer than 10 bytes at byte {}", self.at))
    }

    fn signed(&mut self) -> Result<i64, String> {
        let v = self.unsigned()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    fn count(&mut self) -> Result<u32, String> {
        let v = self.unsigned()?;
        u32::try_from(v).map_err(|_| format!("delivery count {v} out of range"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_round_trip() {
        let changes = vec![
            Change::Epoch(3),
            Change::Start(1_000_000),
            Change::Entry(
                1_000_001,
                Persisted::Acquired {
                    lease: (3 << 32) + 7,
                    deadline: 1_765_000_000_000,
                    deliveries: 2,
                },
            ),
            Change::Entry(1_000_000, Persisted::Done),
            Change::Entry(
                5,
                Persisted::Available {
                    visible_at: -1,
                    deliveries: u32::MAX,
                },
            ),
            Change::Start(i64::MIN),
        ];
        let bytes = encode(&changes);
        assert_eq!(decode(&bytes), Ok(changes));
        for cut in 1..bytes.len() {
            // Every truncation either fails or decodes a prefix; none panics.
            if let Ok(prefix) = decode(&bytes[..cut]) {
                assert!(prefix.len() < 6);
            }
        }
        assert!(decode(&[9]).is_err());
        assert!(decode(&[VERSION, 42]).is_err());
    }
}
