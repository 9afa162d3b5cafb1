//! Kafka's internal topics as the broker sees them. `__consumer_offsets` is created by the node
//! (on the first FindCoordinator for a group, as Kafka does), never by a client; it is hidden
//! from Metadata listings unless asked for by name (then reported with is_internal = true),
//! closed to client writes (Produce gets INVALID_TOPIC_EXCEPTION per partition) and to admin
//! changes (DeleteTopics, CreatePartitions, IncrementalAlterConfigs, DeleteRecords). The group
//! coordinator writes it only through [`Broker::append_internal`], so its records take the
//! same path to disk, and the same sync effects, as a produce.

use bytes::{Bytes, BytesMut};

use super::topics::INTERNAL_TOPICS;
use super::{Broker, Effect, LogId, Topic};
use crate::config::{NodeConfig, TopicConfig};
use crate::log::{AppendError, CleanupPolicy, LogConfig};
use crate::Millis;

/// The topic holding committed offsets and group metadata.
pub const CONSUMER_OFFSETS: &str = "__consumer_offsets";
/// segment.bytes of `__consumer_offsets` (Kafka's offsets.topic.segment.bytes default).
pub const OFFSETS_TOPIC_SEGMENT_BYTES: u64 = 100 * 1024 * 1024;

/// Whether `name` is one of Kafka's internal topics.
pub fn is_internal_topic(name: &str) -> bool {
    INTERNAL_TOPICS.contains(&name)
}

/// The log configuration of every `__consumer_offsets` partition, the one place it is built.
///
/// Compacted, as in Kafka (cleanup.policy=compact): the cleaner keeps the latest commit of each
/// (group, topic, partition) and the latest metadata of each group, and drops tombstones after
/// delete.retention.ms, which bounds the topic. Nothing is deleted by age or size
/// (retention.ms = retention.bytes = -1): that would drop the last commit of a quiet group.
/// segment.bytes stays at Kafka's 100 MiB: one cleaner tick reads or rewrites one segment.
pub fn internal_offsets_log_config(node: &NodeConfig) -> LogConfig {
    let mut config = node.default_log_config();
    config.cleanup_policy = CleanupPolicy::Compact;
    config.retention_ms = -1;
    config.retention_bytes = -1;
    config.segment_bytes = OFFSETS_TOPIC_SEGMENT_BYTES;
    config
}

/// Why an internal append or read failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InternalLogError {
    /// The topic or partition does not exist on this node.
    Missing,
    /// The batch is larger than the log accepts.
    TooLarge,
    /// A storage error, or the partition is offline after a failed fsync.
    Storage,
}

impl Broker {
    /// The log configuration of topic `name` with `config`'s overrides.
    pub(crate) fn topic_log_config(&self, name: &str, config: &TopicConfig) -> LogConfig {
        if name == CONSUMER_OFFSETS {
            internal_offsets_log_config(&self.config)
        } else {
            config.log_config(&self.config)
        }
    }

    /// The partition count of `__consumer_offsets`, if it exists.
    pub fn consumer_offsets_partitions(&self) -> Option<i32> {
        self.topics
            .get(CONSUMER_OFFSETS)
            .map(|topic| topic.partitions.len() as i32)
    }

    /// Creates `__consumer_offsets` with `partitions` partitions unless it exists, as a step:
    /// the new logs' sync jobs go into `effects` (one per partition, while the logs are empty,
    /// as topic creation hands them out for CreateTopics), so the first offset commit never
    /// waits behind an fdatasync of a file it is filling. Returns the partition count.
    pub fn create_consumer_offsets(
        &mut self,
        partitions: i32,
        now: Millis,
        effects: &mut Vec<Effect>,
    ) -> Result<i32, String> {
        let existed = self.consumer_offsets_partitions().is_some();
        let count = self.ensure_consumer_offsets(partitions, now)?;
        if !existed {
            if let Some(topic) = self.internal_topic() {
                let topic_id = topic.id;
                self.touched.extend((0..count).map(|partition| LogId {
                    topic_id,
                    partition,
                }));
            }
        }
        self.finish_step(now, effects);
        Ok(count)
    }

    /// Creates `__consumer_offsets` with `partitions` partitions unless it exists; returns its
    /// partition count. Outside a step: the new logs are synced by their first append (or at
    /// the next start); the node uses [`Broker::create_consumer_offsets`].
    pub fn ensure_consumer_offsets(&mut self, partitions: i32, now: Millis) -> Result<i32, String> {
        if let Some(existing) = self.consumer_offsets_partitions() {
            return Ok(existing);
        }
        let partitions = partitions.clamp(1, super::MAX_PARTITIONS_PER_TOPIC);
        // The log ignores topic overrides (internal_offsets_log_config decides); recording
        // them lets DescribeConfigs report what is in effect.
        let log_config = internal_offsets_log_config(&self.config);
        let mut config = TopicConfig::default();
        for (key, value) in [
            ("cleanup.policy", "compact".to_string()),
            ("retention.ms", log_config.retention_ms.to_string()),
            ("retention.bytes", log_config.retention_bytes.to_string()),
            ("segment.bytes", log_config.segment_bytes.to_string()),
        ] {
            config.overrides.insert(key.to_string(), value);
        }
        self.create_topic(CONSUMER_OFFSETS, partitions, config, now)
            .map_err(|err| err.message)?;
        tracing::info!(partitions, "created {CONSUMER_OFFSETS}");
        Ok(partitions)
    }

    fn internal_topic(&self) -> Option<&Topic> {
        self.topics.get(CONSUMER_OFFSETS)
    }

    fn internal_log_id(&self, partition: i32) -> Result<LogId, InternalLogError> {
        let topic = self.internal_topic().ok_or(InternalLogError::Missing)?;
        if partition < 0 || partition as usize >= topic.partitions.len() {
            return Err(InternalLogError::Missing);
        }
        Ok(LogId {
            topic_id: topic.id,
            partition,
        })
    }

    /// Appends one record batch (base offset 0, the log assigns offsets) to
    /// `__consumer_offsets-<partition>` and returns the offset the high watermark must reach
    /// for the batch to count as written (its last offset + 1). Sync effects follow as for a
    /// produce; the caller watches [`Broker::internal_high_watermark`].
    pub fn append_internal(
        &mut self,
        now: Millis,
        partition: i32,
        batch: Bytes,
        effects: &mut Vec<Effect>,
    ) -> Result<i64, InternalLogError> {
        let log_id = self.internal_log_id(partition)?;
        let target = self
            .partition_mut(log_id)
            .ok_or(InternalLogError::Missing)?;
        if target.offline {
            return Err(InternalLogError::Storage);
        }
        let visible_before = target.high_watermark();
        let mut owned = BytesMut::from(&batch[..]);
        let outcome = target.log.append(&mut owned, now);
        let visible_after = target.high_watermark();
        let result = match outcome {
            Ok(info) => Ok(info.last_offset + 1),
            Err(AppendError::RecordListTooLarge { .. }) => Err(InternalLogError::TooLarge),
            Err(err) => {
                tracing::error!(partition, "append to {CONSUMER_OFFSETS} failed: {err}");
                Err(InternalLogError::Storage)
            }
        };
        if result.is_ok() {
            if visible_after > visible_before {
                self.grown.insert(log_id);
            }
            self.touched.insert(log_id);
        }
        self.finish_step(now, effects);
        result
    }

    /// The high watermark of `__consumer_offsets-<partition>`: what is written by the flush
    /// policy (fsynced under the durable policy). Storage if the partition went offline.
    pub fn internal_high_watermark(&self, partition: i32) -> Result<i64, InternalLogError> {
        let topic = self.internal_topic().ok_or(InternalLogError::Missing)?;
        let target = usize::try_from(partition)
            .ok()
            .and_then(|index| topic.partitions.get(index))
            .ok_or(InternalLogError::Missing)?;
        if target.offline {
            return Err(InternalLogError::Storage);
        }
        Ok(target.high_watermark())
    }

    /// The stored record batches of `__consumer_offsets-<partition>` from its log start to its
    /// high watermark, read in chunks of `chunk_bytes` (for loading the group coordinator),
    /// and the offset ranges skipped because their batches could not be located.
    pub fn read_internal(
        &self,
        partition: i32,
        chunk_bytes: usize,
    ) -> Result<InternalRead, InternalLogError> {
        let topic = self.internal_topic().ok_or(InternalLogError::Missing)?;
        let target = usize::try_from(partition)
            .ok()
            .and_then(|index| topic.partitions.get(index))
            .ok_or(InternalLogError::Missing)?;
        let high_watermark = target.high_watermark();
        let mut offset = target.log.log_start_offset();
        let mut read = InternalRead::default();
        // Every round either returns at least one whole batch (KIP-74) and advances past it,
        // or skips to a later offset (or the high watermark), so the loop ends within
        // (high watermark - log start) rounds. What cannot be read is skipped and logged,
        // never silently dropped with the rest of the partition (docs/coordinator.md).
        while offset < high_watermark {
            let (bytes, readable) =
                match target.log.read(offset, chunk_bytes.max(1), high_watermark) {
                    Ok(bytes) => {
                        let readable = readable_prefix(&bytes);
                        (bytes, readable)
                    }
                    Err(err) => {
                        tracing::error!(
                            partition,
                            offset,
                            "reading {CONSUMER_OFFSETS} failed: {err}"
                        );
                        (Bytes::new(), (0, offset))
                    }
                };
            let (length, next) = readable;
            if length > 0 {
                read.chunks.push(bytes.slice(..length));
            }
            if length == bytes.len() && next > offset {
                offset = next;
                continue;
            }
            // No batch can be located at `stuck` (rotted bytes the log no longer re-validates).
            // A read from the next offset-index entry walks from that entry, not through the
            // damage, so resume there: at most index.interval.bytes of batches are lost, not
            // the rest of a segment of up to 100 MiB.
            let stuck = next.max(offset);
            let resume = match target.log.next_indexed_offset(stuck) {
                Ok(found) => found.unwrap_or(high_watermark),
                Err(err) => {
                    tracing::error!(partition, offset = stuck, "reading an offset index: {err}");
                    target
                        .log
                        .segment_base_offsets()
                        .into_iter()
                        .find(|&base| base > stuck)
                        .unwrap_or(high_watermark)
                }
            }
            .min(high_watermark)
            .max(stuck + 1);
            tracing::error!(
                partition,
                offset = stuck,
                resume,
                "skipping unreadable {CONSUMER_OFFSETS} records up to the next indexed batch"
            );
            read.skipped.push(stuck..resume);
            offset = resume;
        }
        Ok(read)
    }
}

/// What [`Broker::read_internal`] read of one `__consumer_offsets` partition.
#[derive(Debug, Default)]
pub struct InternalRead {
    /// Whole stored batches, in offset order.
    pub chunks: Vec<Bytes>,
    /// Offset ranges whose batches could not be located (rotted bytes), in order; the
    /// commits and group metadata stored there are lost to the coordinator.
    pub skipped: Vec<std::ops::Range<i64>>,
}

impl InternalRead {
    /// How many offsets the skipped ranges cover.
    pub fn skipped_offsets(&self) -> i64 {
        self.skipped
            .iter()
            .map(|range| range.end - range.start)
            .sum()
    }
}

/// The length of the run of whole, parsable batches at the start of `bytes`, and the offset
/// after them.
fn readable_prefix(bytes: &[u8]) -> (usize, i64) {
    let mut next = i64::MIN;
    let mut position = 0;
    while position < bytes.len() {
        match crate::protocol::batch::parse_header(&bytes[position..]) {
            Ok(header) if position + header.total_size() <= bytes.len() => {
                next = next.max(header.next_offset());
                position += header.total_size();
            }
            _ => break,
        }
    }
    (position, next)
}
