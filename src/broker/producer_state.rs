//! Idempotent producer state of one partition (KIP-98): per producer id, its epoch and the last
//! few batches it wrote, so a retried batch is acknowledged with its original offsets instead of
//! being written twice, and a gap in sequence numbers is refused.
//!
//! Rules (Kafka's ProducerStateManager):
//! - a batch without a producer id is not tracked;
//! - an epoch below the producer's current one is fenced: INVALID_PRODUCER_EPOCH;
//! - a new (higher) epoch must start at sequence 0, unless the producer is unknown (its state
//!   may have been removed with the log, so any sequence is accepted then);
//! - a batch equal (first and last sequence) to one of the last [`MAX_CACHED_BATCHES`] is a
//!   duplicate: acknowledged with the original base offset, not written;
//! - otherwise the first sequence must follow the last one written (wrapping at i32::MAX),
//!   else OUT_OF_ORDER_SEQUENCE_NUMBER.

use std::collections::{BTreeMap, VecDeque};

use crate::protocol::batch::{BatchHeader, TIMESTAMP_TYPE_LOG_APPEND_TIME};
use crate::protocol::error;

/// Batches remembered per producer for duplicate detection; Kafka keeps 5 (the most a producer
/// may have in flight with idempotence on).
pub const MAX_CACHED_BATCHES: usize = 5;

/// Producers tracked per partition. Kafka expires idle producer state after
/// producer.id.expiration.ms; Karst bounds the count instead and forgets the producer that
/// wrote least recently (it is then treated as unknown, which accepts its next sequence).
pub const MAX_PRODUCERS_PER_PARTITION: usize = 10_000;

/// A batch already written, as remembered for duplicate detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachedBatch {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub base_offset: i64,
    pub log_append_time: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<CachedBatch>,
    /// `ProducerStates::writes` when this producer last wrote.
    last_write: u64,
}

/// What to do with an incoming batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    Append,
    Duplicate(CachedBatch),
    Reject(i16),
}

/// Producer states of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStates {
    producers: BTreeMap<i64, ProducerEntry>,
    /// Batches recorded so far (orders producers by recency for eviction).
    writes: u64,
}

fn next_sequence(sequence: i32) -> i32 {
    if sequence == i32::MAX {
        0
    } else {
        sequence + 1
    }
}

impl ProducerStates {
    /// Checks `header` (a batch as received, before offsets are assigned).
    pub fn check(&self, header: &BatchHeader) -> SequenceCheck {
        if !header.has_producer_id() {
            return SequenceCheck::Append;
        }
        let Some(entry) = self.producers.get(&header.producer_id) else {
            return SequenceCheck::Append;
        };
        if header.producer_epoch < entry.epoch {
            return SequenceCheck::Reject(error::INVALID_PRODUCER_EPOCH);
        }
        if header.producer_epoch > entry.epoch {
            return if header.base_sequence == 0 {
                SequenceCheck::Append
            } else {
                SequenceCheck::Reject(error::OUT_OF_ORDER_SEQUENCE_NUMBER)
            };
        }
        let last_sequence = header.last_sequence();
        if let Some(cached) = entry.batches.iter().find(|cached| {
            cached.first_sequence == header.base_sequence && cached.last_sequence == last_sequence
        }) {
            return SequenceCheck::Duplicate(*cached);
        }
        match entry.batches.back() {
            Some(last) if header.base_sequence != next_sequence(last.last_sequence) => {
                SequenceCheck::Reject(error::OUT_OF_ORDER_SEQUENCE_NUMBER)
            }
            _ => SequenceCheck::Append,
        }
    }

    /// Records a batch written to the log (`header` carries its assigned base offset).
    pub fn record(&mut self, header: &BatchHeader) {
        if !header.has_producer_id() {
            return;
        }
        self.writes += 1;
        if !self.producers.contains_key(&header.producer_id)
            && self.producers.len() >= MAX_PRODUCERS_PER_PARTITION
        {
            if let Some(oldest) = self
                .producers
                .iter()
                .min_by_key(|(_, entry)| entry.last_write)
                .map(|(id, _)| *id)
            {
                self.producers.remove(&oldest);
            }
        }
        let writes = self.writes;
        let entry = self
            .producers
            .entry(header.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: header.producer_epoch,
                batches: VecDeque::new(),
                last_write: writes,
            });
        entry.last_write = writes;
        if header.producer_epoch != entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == MAX_CACHED_BATCHES {
            entry.batches.pop_front();
        }
        let log_append_time = if header.attributes & TIMESTAMP_TYPE_LOG_APPEND_TIME != 0 {
            header.max_timestamp
        } else {
            -1
        };
        entry.batches.push_back(CachedBatch {
            first_sequence: header.base_sequence,
            last_sequence: header.last_sequence(),
            base_offset: header.base_offset,
            log_append_time,
        });
    }

    /// The largest producer id seen, so new ids are allocated above it after a restart.
    pub fn max_producer_id(&self) -> Option<i64> {
        self.producers.keys().next_back().copied()
    }

    /// Number of producers tracked.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::{parse_header, testing::*};

    fn header(producer_id: i64, epoch: i16, base_sequence: i32, count: usize) -> BatchHeader {
        let records: Vec<TestRecord> = (0..count)
            .map(|_| TestRecord {
                value: Some(b"v".to_vec()),
                ..Default::default()
            })
            .collect();
        parse_header(&build_batch(&records, 0, producer_id, epoch, base_sequence)).unwrap()
    }

    fn written(mut header: BatchHeader, base_offset: i64) -> BatchHeader {
        header.base_offset = base_offset;
        header
    }

    /// KIP-98: a retried batch (same producer, epoch and sequences) is a duplicate carrying its
    /// original base offset; the next batch in sequence is appended; a gap is refused.
    #[test]
    fn duplicates_gaps_and_next_batches() {
        let mut states = ProducerStates::default();
        let first = header(7, 0, 0, 3);
        assert_eq!(states.check(&first), SequenceCheck::Append);
        states.record(&written(first, 100));
        assert_eq!(
            states.check(&first),
            SequenceCheck::Duplicate(CachedBatch {
                first_sequence: 0,
                last_sequence: 2,
                base_offset: 100,
                log_append_time: -1
            })
        );
        assert_eq!(states.check(&header(7, 0, 3, 1)), SequenceCheck::Append);
        assert_eq!(
            states.check(&header(7, 0, 4, 1)),
            SequenceCheck::Reject(error::OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
    }

    /// Kafka remembers the last 5 batches per producer; older retries are out of order.
    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut states = ProducerStates::default();
        for sequence in 0..6 {
            let batch = header(1, 0, sequence, 1);
            assert_eq!(states.check(&batch), SequenceCheck::Append);
            states.record(&written(batch, sequence as i64));
        }
        assert!(matches!(
            states.check(&header(1, 0, 1, 1)),
            SequenceCheck::Duplicate(CachedBatch { base_offset: 1, .. })
        ));
        assert_eq!(
            states.check(&header(1, 0, 0, 1)),
            SequenceCheck::Reject(error::OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
    }

    /// Epoch fencing: an older epoch is refused; a newer epoch must restart at sequence 0.
    #[test]
    fn epochs_fence_and_restart_sequences() {
        let mut states = ProducerStates::default();
        states.record(&written(header(1, 2, 0, 1), 0));
        assert_eq!(
            states.check(&header(1, 1, 1, 1)),
            SequenceCheck::Reject(error::INVALID_PRODUCER_EPOCH)
        );
        assert_eq!(
            states.check(&header(1, 3, 5, 1)),
            SequenceCheck::Reject(error::OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
        assert_eq!(states.check(&header(1, 3, 0, 1)), SequenceCheck::Append);
        // An unknown producer is accepted at any sequence (its state may have been retained away).
        assert_eq!(states.check(&header(2, 0, 9, 1)), SequenceCheck::Append);
        assert_eq!(states.max_producer_id(), Some(1));
    }

    /// The number of producers tracked per partition is bounded; the least recently writing
    /// one is forgotten first.
    #[test]
    fn producer_count_is_bounded_by_recency() {
        let mut states = ProducerStates::default();
        for producer_id in 0..MAX_PRODUCERS_PER_PARTITION as i64 {
            states.record(&written(header(producer_id, 0, 0, 1), producer_id));
        }
        // Producer 0 writes again, so producer 1 is now the least recent.
        states.record(&written(header(0, 0, 1, 1), 1_000_000));
        states.record(&written(header(-5 + i64::MAX, 0, 0, 1), 1_000_001));
        assert_eq!(states.len(), MAX_PRODUCERS_PER_PARTITION);
        assert!(matches!(
            states.check(&header(0, 0, 1, 1)),
            SequenceCheck::Duplicate(_)
        ));
        // Producer 1 was forgotten: its old batch is no longer recognised as a duplicate.
        assert_eq!(states.check(&header(1, 0, 0, 1)), SequenceCheck::Append);
        assert!(matches!(
            states.check(&header(2, 0, 0, 1)),
            SequenceCheck::Duplicate(_)
        ));
    }
}
