//! The partition log: an append-only sequence of v2 record batches, stored exactly as they
//! travel on the wire in segment files named by base offset (Kafka's
//! `00000000000000000000.log`), with a sparse offset index and time index per segment.
//!
//! Contract and order of calls (see docs/log.md for the design):
//! - [`PartitionLog::open`] recovers the directory: a clean-shutdown marker lets it trust the
//!   indexes and validate only each segment's tail; otherwise every segment from the recovery
//!   point on is validated batch by batch, a torn or corrupt tail is cut, and indexes rebuilt.
//! - [`PartitionLog::append`] validates every batch (nothing is written unless all are valid),
//!   assigns offsets by rewriting headers in place and writes the request's bytes with one
//!   positional write into the active segment. Appends reach the page cache only.
//! - Durability: the log never syncs inline (except in `open` and `close`). The runtime calls
//!   [`PartitionLog::take_sync_job`] after appends and ticks; it runs the returned [`SyncJob`]
//!   on the disk thread and reports back with [`PartitionLog::sync_completed`]. Appends made
//!   while a job is in flight are covered by the next job (group commit).
//!   [`PartitionLog::durable_offset`] says what is on stable storage; a Durable-policy produce
//!   is acknowledged only once its last offset is below it. A failed job is reported with
//!   [`PartitionLog::sync_failed`].
//! - [`PartitionLog::tick`] at or after [`PartitionLog::next_deadline`] does segment.ms rolls,
//!   retention (every retention_check_interval_ms), interval-flush decisions and, for
//!   `cleanup.policy=compact`, one bounded step of log cleaning (see `compaction.rs`; the broker
//!   should pass its high watermark to [`PartitionLog::set_cleanable_limit`]).
//! - The log does no I/O of its own besides the [`Storage`] it was given, reads no clock and
//!   uses no threads: time is an argument.

mod append;
mod compaction;
mod index;
mod invariants;
mod read;
mod recovery;
mod retention;
mod segment;
mod sync;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

pub use crate::protocol::batch::BatchHeader;
use crate::protocol::batch::{self, BatchError};
use crate::storage::{join, parent, Storage, StorageFile};
use crate::Millis;
pub use compaction::{CleanerStats, CLEANER_MAP_MAX_BYTES, CLEAN_SEGMENTS_PER_TICK};
/// The base offset a segment file's name (`00000000000000000042.log`) gives, if it is one.
pub use segment::parse_log_name;
use segment::{Segment, NO_TIMESTAMP};

/// Name of the clean-shutdown marker file in a log directory.
pub const CLEAN_SHUTDOWN_FILE: &str = "karst.clean-shutdown";
/// Name of the checkpoint file (log start offset and recovery point) in a log directory.
pub const CHECKPOINT_FILE: &str = "karst.checkpoint";
/// The checkpoint file holds two slots of `sequence, log_start_offset, recovery_point, crc`;
/// writes go to the slot that does not hold the last synced value, so a torn write can only
/// lose the newest, unsynced, value.
const CHECKPOINT_SLOT_SIZE: usize = 28;
/// Largest segment.bytes honoured: index positions are u32 and Kafka's config is an int.
pub const MAX_SEGMENT_BYTES: u64 = i32::MAX as u64;

/// When the log asks for an fsync (Kafka's flush.messages / flush.ms, or fsync per append).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Every append is synced before it is acknowledged (group commit batches the syncs).
    Durable,
    /// Sync after `messages` unsynced records or `ms` since the last sync, whichever first.
    Interval {
        messages: Option<u64>,
        ms: Option<i64>,
    },
    /// Leave flushing to the OS (Kafka's default); segments are still synced when rolled.
    PageCache,
}

/// message.timestamp.type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// cleanup.policy: what happens to old records of closed segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CleanupPolicy {
    /// `delete`: retention.ms / retention.bytes remove whole old segments (Kafka's default).
    Delete,
    /// `compact`: the log cleaner keeps only the latest record of each key.
    Compact,
    /// `compact,delete`: both.
    CompactDelete,
}

impl CleanupPolicy {
    /// Parses Kafka's list form (`delete`, `compact`, `compact,delete` in any order).
    pub fn parse(value: &str) -> Option<CleanupPolicy> {
        let (mut compact, mut delete) = (false, false);
        for policy in value.split(',') {
            match policy.trim() {
                "compact" => compact = true,
                "delete" => delete = true,
                _ => return None,
            }
        }
        match (compact, delete) {
            (true, true) => Some(CleanupPolicy::CompactDelete),
            (true, false) => Some(CleanupPolicy::Compact),
            (false, true) => Some(CleanupPolicy::Delete),
            (false, false) => None,
        }
    }

    /// Kafka's text form.
    pub fn name(self) -> &'static str {
        match self {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
            CleanupPolicy::CompactDelete => "compact,delete",
        }
    }

    pub fn compact(self) -> bool {
        self != CleanupPolicy::Delete
    }

    pub fn delete(self) -> bool {
        self != CleanupPolicy::Compact
    }
}

/// Per-log configuration with Kafka's names and defaults.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// segment.bytes
    pub segment_bytes: u64,
    /// segment.ms
    pub segment_ms: i64,
    /// retention.ms; -1 = unlimited
    pub retention_ms: i64,
    /// retention.bytes; -1 = unlimited
    pub retention_bytes: i64,
    /// index.interval.bytes
    pub index_interval_bytes: u32,
    /// log.retention.check.interval.ms
    pub retention_check_interval_ms: i64,
    pub flush: FlushPolicy,
    /// message.timestamp.type
    pub timestamp_type: TimestampType,
    /// cleanup.policy
    pub cleanup_policy: CleanupPolicy,
    /// delete.retention.ms: how long a tombstone survives after the cleaner first saw it
    /// (KIP-534 delete horizon), so consumers reading from the start see the delete.
    pub delete_retention_ms: i64,
    /// min.cleanable.dirty.ratio: a cleaning pass starts when dirty bytes / (clean + dirty)
    /// exceeds it.
    pub min_cleanable_dirty_ratio: f64,
    /// min.compaction.lag.ms (KIP-58): a segment whose newest record is younger is not cleaned.
    pub min_compaction_lag_ms: i64,
    /// log.cleaner.backoff.ms: how often an idle log checks whether cleaning is due.
    pub cleaner_backoff_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            retention_ms: 7 * 24 * 60 * 60 * 1000,
            retention_bytes: -1,
            index_interval_bytes: 4096,
            retention_check_interval_ms: 300_000,
            flush: FlushPolicy::PageCache,
            timestamp_type: TimestampType::CreateTime,
            cleanup_policy: CleanupPolicy::Delete,
            delete_retention_ms: 86_400_000,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            cleaner_backoff_ms: 15_000,
        }
    }
}

impl LogConfig {
    fn segment_bytes(&self) -> u64 {
        self.segment_bytes
            .clamp(batch::HEADER_SIZE as u64, MAX_SEGMENT_BYTES)
    }

    fn retention_check_interval_ms(&self) -> i64 {
        self.retention_check_interval_ms.max(1)
    }
}

/// Kafka error codes the log's errors map to at the protocol edge.
pub mod error_codes {
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const RECORD_LIST_TOO_LARGE: i16 = 18;
    pub const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    pub const INVALID_RECORD: i16 = 87;
}

/// Errors of open, truncation, deletion and the other non-append operations.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("storage error: {0}")]
    Io(#[from] io::Error),
    #[error("offset {offset} is outside the log [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    #[error("the log is closed")]
    Closed,
}

impl LogError {
    pub fn error_code(&self) -> i16 {
        match self {
            LogError::OffsetOutOfRange { .. } => error_codes::OFFSET_OUT_OF_RANGE,
            LogError::Io(_) | LogError::Closed => error_codes::KAFKA_STORAGE_ERROR,
        }
    }
}

/// Why an append was refused. Nothing was written in any case.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("invalid batch at byte {position}: {error}")]
    InvalidBatch { position: usize, error: BatchError },
    #[error("no batches in the request")]
    Empty,
    #[error("batch at byte {position} has no records")]
    NoRecords { position: usize },
    #[error("batch at byte {position} has a record without a key (the topic is compacted)")]
    RecordWithoutKey { position: usize },
    #[error("{size} bytes exceed segment.bytes {segment_bytes}")]
    RecordListTooLarge { size: usize, segment_bytes: u64 },
    #[error("replicated batch has base offset {found}, expected {expected}")]
    NonContiguous { expected: i64, found: i64 },
    #[error("storage error: {0}")]
    Io(#[from] io::Error),
    #[error("the log is closed")]
    Closed,
}

impl AppendError {
    pub fn error_code(&self) -> i16 {
        match self {
            AppendError::InvalidBatch {
                error: BatchError::UnsupportedMagic(_),
                ..
            } => error_codes::UNSUPPORTED_FOR_MESSAGE_FORMAT,
            AppendError::InvalidBatch {
                error: BatchError::InvalidRecordCount { .. },
                ..
            }
            | AppendError::NoRecords { .. }
            | AppendError::RecordWithoutKey { .. } => error_codes::INVALID_RECORD,
            AppendError::InvalidBatch { .. } | AppendError::Empty => error_codes::CORRUPT_MESSAGE,
            AppendError::RecordListTooLarge { .. } => error_codes::RECORD_LIST_TOO_LARGE,
            AppendError::NonContiguous { .. } => error_codes::OFFSET_OUT_OF_RANGE,
            AppendError::Io(_) | AppendError::Closed => error_codes::KAFKA_STORAGE_ERROR,
        }
    }
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("offset {offset} is outside the log [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    #[error("storage error: {0}")]
    Io(#[from] io::Error),
    /// Below the log end, where a batch must be, the bytes are not one: a header that does not
    /// parse or runs past the segment's end, a base offset that does not follow the previous
    /// batch, or a batch that does not cover the offset. Kafka's CorruptRecordException, which
    /// its ReplicaManager answers as CORRUPT_MESSAGE for that partition. Only the structure is
    /// checked; the CRC is the consumer's to verify, as in Kafka.
    #[error(
        "offset {offset} cannot be read: the batch at byte {position} of segment \
         {segment_base_offset} (expected base offset {expected_offset}) is corrupt"
    )]
    Corrupt {
        /// The offset asked for.
        offset: i64,
        segment_base_offset: i64,
        /// Byte position in the segment where the structure breaks.
        position: u64,
        /// The base offset the batch at `position` must have.
        expected_offset: i64,
    },
}

impl ReadError {
    pub fn error_code(&self) -> i16 {
        match self {
            ReadError::OffsetOutOfRange { .. } => error_codes::OFFSET_OUT_OF_RANGE,
            ReadError::Io(_) => error_codes::KAFKA_STORAGE_ERROR,
            ReadError::Corrupt { .. } => error_codes::CORRUPT_MESSAGE,
        }
    }
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// Largest max timestamp of the appended batches (the append time for LogAppendTime).
    pub max_timestamp: i64,
    /// The broker's append time, for LogAppendTime topics.
    pub log_append_time: Option<i64>,
    pub record_count: u64,
    /// The appended batches' headers, after the rewrite.
    pub batches: Vec<BatchHeader>,
}

/// An fsync of everything written up to `up_to_offset`, to run on the disk thread.
#[derive(Debug)]
pub struct SyncJob {
    /// Every offset below this is durable once `run` returns Ok.
    pub up_to_offset: i64,
    files: Vec<Arc<dyn StorageFile>>,
    dirs: Vec<String>,
    storage: Arc<dyn Storage>,
}

impl SyncJob {
    /// fdatasyncs the files written since the last job, then the directories whose entries
    /// changed. Blocks on the device: never call it on the event loop. An error means the
    /// device failed; the caller should treat the log as unusable (as Kafka halts).
    pub fn run(self) -> io::Result<()> {
        for file in &self.files {
            file.sync_data()?;
        }
        for dir in &self.dirs {
            self.storage.sync_dir(dir)?;
        }
        Ok(())
    }

    /// Number of files and directories the job syncs (for metrics and tests).
    pub fn sync_count(&self) -> usize {
        self.files.len() + self.dirs.len()
    }
}

#[derive(Debug, Clone, Copy)]
struct ReadHint {
    segment_base: i64,
    /// Base offset of the batch at `position`.
    offset: i64,
    position: u64,
}

#[derive(Debug)]
struct InFlight {
    up_to_offset: i64,
    /// Lowest log end offset a truncation left while the job was in flight: offsets from
    /// there on may have been rewritten after the job was taken.
    truncated_to: i64,
    /// Segments whose files are deleted once this job (which syncs the checkpoint that moved
    /// the log start past them) completes.
    deletions: Vec<Segment>,
    /// The checkpoint slot this job syncs, if it syncs the checkpoint.
    checkpoint_slot: Option<usize>,
}

/// One partition's log (see the module docs).
#[derive(Debug)]
pub struct PartitionLog {
    storage: Arc<dyn Storage>,
    dir: String,
    config: LogConfig,
    segments: BTreeMap<i64, Segment>,
    log_start_offset: i64,
    durable_offset: i64,
    /// Segments below this base offset are fully synced (persisted in the checkpoint).
    recovery_point: i64,
    checkpoint_file: Arc<dyn StorageFile>,
    checkpoint_dirty: bool,
    /// Sequence number of the newest checkpoint written.
    checkpoint_sequence: u64,
    /// The slot written next: not the one holding the newest synced checkpoint.
    checkpoint_slot: usize,
    /// Base offsets of segments written since the last sync job was taken.
    dirty_segments: BTreeSet<i64>,
    /// Directories whose entries changed since the last sync job was taken.
    dirty_dirs: BTreeSet<String>,
    /// A sync is wanted regardless of the flush policy (roll, recovery, truncation).
    force_sync: bool,
    /// The interval policy's `ms` came due in `tick`.
    flush_due: bool,
    unsynced_messages: u64,
    last_flush_ms: Millis,
    in_flight: Option<InFlight>,
    /// Segments below the log start, no longer readable, whose files wait for the checkpoint
    /// naming the new log start to be synced: deleting them first could let a crash restart
    /// the log below offsets it had already handed out.
    deletions_waiting: Vec<Segment>,
    next_retention_check_ms: Millis,
    /// Where the last read ended, so the next sequential read skips the index lookup.
    read_hint: Mutex<Option<ReadHint>>,
    /// The latest time the log was told (for calls that take no `now`).
    last_now: Millis,
    /// Compaction state (cleanup.policy=compact): see `compaction.rs`.
    cleaner: compaction::Cleaner,
    closed: bool,
}

fn checkpoint_bytes(
    sequence: u64,
    log_start_offset: i64,
    recovery_point: i64,
) -> [u8; CHECKPOINT_SLOT_SIZE] {
    let mut bytes = [0u8; CHECKPOINT_SLOT_SIZE];
    bytes[..8].copy_from_slice(&sequence.to_be_bytes());
    bytes[8..16].copy_from_slice(&log_start_offset.to_be_bytes());
    bytes[16..24].copy_from_slice(&recovery_point.to_be_bytes());
    let crc = crate::protocol::crc32c(&bytes[..24]);
    bytes[24..].copy_from_slice(&crc.to_be_bytes());
    bytes
}

/// (sequence, log start offset, recovery point) of a checkpoint slot.
type CheckpointSlot = (u64, i64, i64);

fn parse_checkpoint_slot(bytes: &[u8]) -> Option<CheckpointSlot> {
    let crc = u32::from_be_bytes(bytes.get(24..28)?.try_into().ok()?);
    if crate::protocol::crc32c(&bytes[..24]) != crc {
        return None;
    }
    Some((
        u64::from_be_bytes(bytes[..8].try_into().ok()?),
        i64::from_be_bytes(bytes[8..16].try_into().ok()?),
        i64::from_be_bytes(bytes[16..24].try_into().ok()?),
    ))
}

/// The newest valid slot of a checkpoint file and its slot number.
fn read_checkpoint(file: &dyn StorageFile) -> io::Result<Option<(CheckpointSlot, usize)>> {
    let len = (file.len()? as usize).min(2 * CHECKPOINT_SLOT_SIZE);
    let mut bytes = vec![0u8; len];
    file.read_exact_at(&mut bytes, 0)?;
    let mut best: Option<(CheckpointSlot, usize)> = None;
    for slot in 0..2 {
        let range = slot * CHECKPOINT_SLOT_SIZE..(slot + 1) * CHECKPOINT_SLOT_SIZE;
        if let Some(parsed) = bytes.get(range).and_then(parse_checkpoint_slot) {
            if best.is_none_or(|(b, _)| parsed.0 > b.0) {
                best = Some((parsed, slot));
            }
        }
    }
    Ok(best)
}

impl PartitionLog {
    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has a segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has a segment")
    }

    fn write_checkpoint(&mut self) -> io::Result<()> {
        self.checkpoint_sequence += 1;
        self.checkpoint_file.write_at(
            &checkpoint_bytes(
                self.checkpoint_sequence,
                self.log_start_offset,
                self.recovery_point,
            ),
            (self.checkpoint_slot * CHECKPOINT_SLOT_SIZE) as u64,
        )?;
        self.checkpoint_dirty = true;
        Ok(())
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset
    }

    /// Every offset below this is on stable storage (fsync completed).
    pub fn durable_offset(&self) -> i64 {
        self.durable_offset
    }

    /// Number of segments (for tests and metrics).
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_base_offsets(&self) -> Vec<i64> {
        self.segments.keys().copied().collect()
    }

    /// Total bytes of the segment files.
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size).sum()
    }

    pub fn set_config(&mut self, config: LogConfig) {
        if !config.cleanup_policy.compact() {
            self.abort_cleaning();
        }
        self.config = config;
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Removes the log's files (DeleteTopics).
    pub fn delete(self) -> Result<(), LogError> {
        self.storage.remove_dir_all(&self.dir)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod read_tests;

#[cfg(test)]
mod compaction_tests;
