//! The Java client's default partitioning, so Karst and Kafka's Java producer put the same key
//! in the same partition.
//!
//! - Keyed records: `toPositive(murmur2(keyBytes)) % numPartitions`, where `toPositive(n)` is
//!   `n & 0x7fffffff` (Kafka `BuiltInPartitioner.partitionForKey` and `Utils.murmur2`, the
//!   32-bit MurmurHash2 with seed 0x9747b28c).
//! - Unkeyed records: sticky partitioning (KIP-480, as refined by KIP-794): stay on one
//!   partition until about `batch.size` bytes went to it, then move to another partition drawn
//!   from the client's seeded RNG, so batches fill up instead of being spread thin.

use super::XorShift;

/// Kafka's `Utils.murmur2`: MurmurHash2, 32-bit, seed 0x9747b28c, little-endian 4-byte blocks.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len();
    let mut h: u32 = SEED ^ (length as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
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

/// The partition the Java client's default partitioner picks for `key`.
pub fn partition_for_key(key: &[u8], partition_count: i32) -> i32 {
    assert!(partition_count > 0, "a topic has at least one partition");
    (murmur2(key) & 0x7fff_ffff) % partition_count
}

/// Sticky partition choice for unkeyed records of one topic.
#[derive(Clone, Debug, Default)]
pub struct StickyPartition {
    current: Option<i32>,
    bytes_since_switch: usize,
}

impl StickyPartition {
    /// The partition for the next unkeyed record of `record_bytes`; switches after
    /// `batch_size` bytes. `available` lists partitions with a known leader (may be empty,
    /// then any of `0..partition_count`).
    pub fn next(
        &mut self,
        rng: &mut XorShift,
        partition_count: i32,
        available: &[i32],
        batch_size: usize,
        record_bytes: usize,
    ) -> i32 {
        let valid = |p: i32| p < partition_count;
        let must_switch = match self.current {
            None => true,
            Some(p) => !valid(p) || self.bytes_since_switch >= batch_size,
        };
        if must_switch {
            let candidates: Vec<i32> = if available.is_empty() {
                (0..partition_count).collect()
            } else {
                available.iter().copied().filter(|p| valid(*p)).collect()
            };
            let candidates = if candidates.is_empty() {
                (0..partition_count).collect()
            } else {
                candidates
            };
            let mut pick = candidates[rng.below(candidates.len() as u32) as usize];
            // Prefer a different partition than the one just filled, when there is one.
            if Some(pick) == self.current && candidates.len() > 1 {
                let i = candidates.iter().position(|p| *p == pick).unwrap_or(0);
                pick = candidates
                    [(i + 1 + rng.below(candidates.len() as u32 - 1) as usize) % candidates.len()];
            }
            self.current = Some(pick);
            self.bytes_since_switch = 0;
        }
        self.bytes_since_switch += record_bytes;
        self.current.unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known hashes of Kafka's Java client: `UtilsTest.testMurmur2` in apache/kafka
    /// (clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java), plus the values
    /// akka's Murmur2Spec copied from the same `Utils.murmur2` ("1".."12345").
    const JAVA_MURMUR2: &[(&[u8], i32)] = &[
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (
            b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
            -58897971,
        ),
        (b"abc", 479470107),
        (b"1", -1993445489),
        (b"12", 126087238),
        (b"123", -267702483),
        (b"1234", -1614185708),
        (b"12345", -1188365604),
    ];

    #[test]
    fn murmur2_matches_java_client_vectors() {
        for (key, want) in JAVA_MURMUR2 {
            assert_eq!(
                murmur2(key),
                *want,
                "key {:?}",
                String::from_utf8_lossy(key)
            );
        }
    }

    /// Key -> partition as the Java client computes it (BuiltInPartitioner.partitionForKey:
    /// toPositive(murmur2(key)) % n), from the Java hashes above, for several partition counts.
    #[test]
    fn keyed_partition_table_matches_java_client() {
        // Worked by hand from the Java hashes: e.g. "21": -973932308 & 0x7fffffff = 1173551340,
        // mod 3 = 0, mod 6 = 0, mod 10 = 0; "foobar": 1357151166, mod 3 = 0, mod 10 = 6.
        assert_eq!(partition_for_key(b"21", 3), 0);
        assert_eq!(partition_for_key(b"21", 10), 0);
        assert_eq!(partition_for_key(b"foobar", 3), 0);
        assert_eq!(partition_for_key(b"foobar", 10), 6);
        assert_eq!(partition_for_key(b"abc", 10), 7);
        for n in [1, 2, 3, 6, 10, 12, 100] {
            for (key, hash) in JAVA_MURMUR2 {
                assert_eq!(partition_for_key(key, n), (hash & 0x7fff_ffff) % n);
            }
        }
    }

    #[test]
    fn sticky_partition_stays_then_switches_after_batch_size() {
        let mut rng = XorShift::new(1);
        let mut s = StickyPartition::default();
        let first = s.next(&mut rng, 6, &[], 1000, 400);
        assert_eq!(s.next(&mut rng, 6, &[], 1000, 400), first);
        assert_eq!(s.next(&mut rng, 6, &[], 1000, 400), first);
        // 1200 bytes went to `first`: the next record moves elsewhere.
        let second = s.next(&mut rng, 6, &[], 1000, 400);
        assert_ne!(second, first);
        // Only partitions with a leader are chosen.
        let mut s = StickyPartition::default();
        for _ in 0..50 {
            let p = s.next(&mut rng, 6, &[2, 4], 10, 10);
            assert!(p == 2 || p == 4);
        }
    }
}
