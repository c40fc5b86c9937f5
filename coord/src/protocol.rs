//! Kafka's consumer protocol: the member metadata (subscription) and assignment bytes that
//! group members exchange through JoinGroup and SyncGroup, in Kafka's own binary layout, so
//! embedded consumers, engine pipelines and Kafka clients (librdkafka, the Java client's heirs)
//! can read each other's subscriptions and assignments in one group.
//!
//! Layout (big-endian; strings are i16 length + UTF-8; arrays i32 count; bytes i32 length, -1
//! for null):
//! - Subscription: version i16, topics [string], user_data bytes, and from v1 on fields this
//!   module reads past (owned partitions, generation, rack).
//! - Assignment: version i16, partitions [(topic string, [i32])], user_data bytes.
//!
//! Decoding is strict: bytes that do not follow the layout are an error naming what is wrong,
//! never a silently shorter list. Empty bytes are an empty assignment (what a member without
//! partitions receives).

use crate::error::{CoordError, Result};

/// The version this module writes.
const VERSION: i16 = 0;

fn malformed(what: &'static str, reason: &str) -> CoordError {
    CoordError::Malformed {
        what,
        reason: reason.to_string(),
    }
}

/// A cursor over protocol bytes.
struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        if self.buf.len() < n {
            return Err(malformed(self.what, "truncated"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn i16(&mut self) -> Result<i16> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Result<i32> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self) -> Result<String> {
        let len = self.i16()?;
        let len =
            usize::try_from(len).map_err(|_| malformed(self.what, "negative string length"))?;
        let what = self.what;
        String::from_utf8(self.take(len)?.to_vec())
            .map_err(|_| malformed(what, "string is not UTF-8"))
    }
    /// An array count, checked against the bytes left (each element takes at least `min` bytes).
    fn count(&mut self, min: usize) -> Result<usize> {
        let n = self.i32()?;
        let n = usize::try_from(n).map_err(|_| malformed(self.what, "negative array length"))?;
        if n.saturating_mul(min) > self.buf.len() {
            return Err(malformed(self.what, "array longer than the bytes"));
        }
        Ok(n)
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as i16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A subscription (member metadata of the `consumer` protocol type) to `topics`.
pub fn encode_subscription(topics: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(10 + topics.iter().map(|t| t.len() + 2).sum::<usize>());
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&(topics.len() as i32).to_be_bytes());
    for t in topics {
        put_string(&mut out, t);
    }
    out.extend_from_slice(&(-1i32).to_be_bytes());
    out
}

/// The topics of a subscription (any version).
pub fn decode_subscription(bytes: &[u8]) -> Result<Vec<String>> {
    let mut r = Reader {
        buf: bytes,
        what: "subscription",
    };
    let version = r.i16()?;
    if version < 0 {
        return Err(malformed("subscription", "negative version"));
    }
    let n = r.count(2)?;
    (0..n).map(|_| r.string()).collect()
}

/// An assignment of `partitions` (grouped by topic, in the order given).
pub fn encode_assignment(partitions: &[(String, u32)]) -> Vec<u8> {
    let mut topics: Vec<(&str, Vec<u32>)> = Vec::new();
    for (t, p) in partitions {
        match topics.iter_mut().find(|(name, _)| name == t) {
            Some((_, ps)) => ps.push(*p),
            None => topics.push((t, vec![*p])),
        }
    }
    let mut out = Vec::with_capacity(16 + partitions.len() * 8);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&(topics.len() as i32).to_be_bytes());
    for (t, ps) in topics {
        put_string(&mut out, t);
        out.extend_from_slice(&(ps.len() as i32).to_be_bytes());
        for p in ps {
            out.extend_from_slice(&(p as i32).to_be_bytes());
        }
    }
    out.extend_from_slice(&(-1i32).to_be_bytes());
    out
}

/// The partitions of an assignment (any version); empty bytes are no partitions.
pub fn decode_assignment(bytes: &[u8]) -> Result<Vec<(String, u32)>> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut r = Reader {
        buf: bytes,
        what: "assignment",
    };
    let version = r.i16()?;
    if version < 0 {
        return Err(malformed("assignment", "negative version"));
    }
    let mut out = Vec::new();
    for _ in 0..r.count(6)? {
        let topic = r.string()?;
        for _ in 0..r.count(4)? {
            let p = u32::try_from(r.i32()?)
                .map_err(|_| malformed("assignment", "negative partition"))?;
            out.push((topic.clone(), p));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_and_assignments_round_trip() -> Result<()> {
        let topics = vec!["orders".to_string(), "payments".to_string()];
        assert_eq!(decode_subscription(&encode_subscription(&topics))?, topics);
        let a = vec![
            ("orders".to_string(), 0),
            ("orders".to_string(), 2),
            ("payments".to_string(), 1),
        ];
        assert_eq!(decode_assignment(&encode_assignment(&a))?, a);
        assert_eq!(decode_assignment(&[])?, vec![]);
        Ok(())
    }

    #[test]
    fn known_bytes_match_kafkas_layout() {
        // Kafka's ConsumerProtocolAssignment v0 for orders-[3], no user data.
        let expect = [
            0, 0, 0, 0, 0, 1, 0, 6, b'o', b'r', b'd', b'e', b'r', b's', 0, 0, 0, 1, 0, 0, 0, 3,
            0xff, 0xff, 0xff, 0xff,
        ];
        assert_eq!(encode_assignment(&[("orders".to_string(), 3)]), expect);
    }

    #[test]
    fn garbage_is_an_error_not_a_shorter_list() {
        for bad in [
            &b"\x00"[..],
            b"\x00\x00\x7f\xff\xff\xff",
            b"\x00\x00\x00\x00\x00\x01\x00\x09abc",
        ] {
            assert!(decode_assignment(bad).is_err(), "{bad:?}");
            assert!(decode_subscription(bad).is_err(), "{bad:?}");
        }
    }
}
