//! Kafka's default partitioner: murmur2 of the key bytes, made positive, modulo the partition
//! count, so a key lands on the same partition here as it would in Kafka.
//!
//! Keyless records are spread round-robin by the caller (see `Log::send`).

use crate::types::PartitionId;

/// Kafka's `Utils.murmur2` (32-bit MurmurHash2 with seed `0x9747b28c`).
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner picks for `key` among `partitions`.
pub fn partition_for_key(key: &[u8], partitions: u32) -> PartitionId {
    assert!(partitions > 0, "a topic always has at least one partition");
    let positive = (murmur2(key) & 0x7fff_ffff) as u32;
    PartitionId(positive % partitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from Kafka's own `UtilsTest.testMurmur2`.
    #[test]
    fn matches_kafka_murmur2_vectors() {
        let cases: [(&str, i32); 6] = [
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            ("abc", 479_470_107),
        ];
        for (input, want) in cases {
            assert_eq!(murmur2(input.as_bytes()), want, "murmur2({input:?})");
        }
    }

    #[test]
    fn partition_is_positive_modulo() {
        // -973932308 & 0x7fffffff = 1173551340; % 3 = 0, % 7 = 1173551340 % 7.
        assert_eq!(partition_for_key(b"21", 3), PartitionId(1_173_551_340 % 3));
        assert_eq!(partition_for_key(b"21", 7), PartitionId(1_173_551_340 % 7));
        for n in 1..20 {
            assert!(partition_for_key(b"anything", n).0 < n);
        }
    }
}
