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
//!   is acknowledged only once its last offset is below it.
//! - [`PartitionLog::tick`] at or after [`PartitionLog::next_deadline`] does segment.ms rolls,
//!   retention (every retention_check_interval_ms) and interval-flush decisions.
//! - The log does no I/O of its own besides the [`Storage`] it was given, reads no clock and
//!   uses no threads: time is an argument.

mod index;
mod segment;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

pub use crate::protocol::batch::BatchHeader;
use crate::protocol::batch::{self, BatchError};
use crate::storage::{join, parent, Storage, StorageFile};
use crate::Millis;
use segment::{parse_log_name, Segment, NO_TIMESTAMP};

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
            | AppendError::NoRecords { .. } => error_codes::INVALID_RECORD,
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
}

impl ReadError {
    pub fn error_code(&self) -> i16 {
        match self {
            ReadError::OffsetOutOfRange { .. } => error_codes::OFFSET_OUT_OF_RANGE,
            ReadError::Io(_) => error_codes::KAFKA_STORAGE_ERROR,
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
    let crc = crc32c::crc32c(&bytes[..24]);
    bytes[24..].copy_from_slice(&crc.to_be_bytes());
    bytes
}

/// (sequence, log start offset, recovery point) of a checkpoint slot.
type CheckpointSlot = (u64, i64, i64);

fn parse_checkpoint_slot(bytes: &[u8]) -> Option<CheckpointSlot> {
    let crc = u32::from_be_bytes(bytes.get(24..28)?.try_into().ok()?);
    if crc32c::crc32c(&bytes[..24]) != crc {
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
    /// Opens (creating if absent) the log in directory `dir` of `storage`, recovering it.
    /// Removing the clean-shutdown marker syncs the directory inline (startup, not the event
    /// loop).
    pub fn open(
        storage: Arc<dyn Storage>,
        dir: &str,
        config: LogConfig,
        now: Millis,
    ) -> Result<Self, LogError> {
        let created = storage.list_dir(dir).is_err();
        storage.create_dir_all(dir)?;
        let names = storage.list_dir(dir)?;
        let clean = names.iter().any(|name| name == CLEAN_SHUTDOWN_FILE);
        let checkpoint_file = storage.open_file(&join(dir, CHECKPOINT_FILE), true)?;
        let stored = read_checkpoint(&*checkpoint_file)?;
        let checkpoint = stored.map(|((_, start, recovery), _)| (start, recovery));
        let (checkpoint_start, checkpoint_recovery) = checkpoint.unwrap_or((0, 0));
        let (checkpoint_sequence, checkpoint_slot) = match stored {
            Some(((sequence, _, _), slot)) => (sequence, 1 - slot),
            None => (0, 0),
        };
        let bases: Vec<i64> = names.iter().filter_map(|n| parse_log_name(n)).collect();
        // Index files whose segment is gone are leftovers of an interrupted deletion.
        for name in &names {
            let stem = name
                .strip_suffix(".index")
                .or_else(|| name.strip_suffix(".timeindex"));
            if let Some(stem) = stem {
                if !bases.iter().any(|base| format!("{base:020}") == stem) {
                    storage.remove_file(&join(dir, name))?;
                }
            }
        }

        let mut segments: BTreeMap<i64, Segment> = BTreeMap::new();
        let mut cut_before: Option<i64> = None;
        let mut any_cut = false;
        for &base in &bases {
            let expected = segments.values().next_back().map(|s| s.next_offset);
            let contiguous = expected.is_none_or(|expected| expected == base);
            if cut_before.is_some() || !contiguous {
                // Everything after a hole in the offsets is unreachable: drop it.
                segment::delete_segment_files(&*storage, dir, base)?;
                cut_before.get_or_insert(base);
                any_cut = true;
                continue;
            }
            // The last segment is where a crash can leave damage: always validate it whole
            // after an unclean shutdown.
            let last = bases.last() == Some(&base);
            let trust = clean || (base < checkpoint_recovery && !last);
            let (segment, cut) = Segment::open(
                &*storage,
                dir,
                base,
                trust,
                config.index_interval_bytes,
                now,
            )?;
            if cut {
                cut_before = Some(segment.next_offset);
                any_cut = true;
            }
            segments.insert(base, segment);
        }
        // Drop trailing empty segments left by a crash after a roll, except the first one.
        while segments.len() > 1 {
            let (&base, last) = segments.iter().next_back().expect("non-empty");
            if last.size > 0 {
                break;
            }
            let last = segments.remove(&base).expect("present");
            last.delete_files(&*storage, dir)?;
        }
        // Segments wholly below the checkpointed log start were deleted by retention or
        // DeleteRecords when a crash interrupted the deletion.
        while let Some((&base, first)) = segments.iter().next() {
            let only = segments.len() == 1;
            if first.next_offset > checkpoint_start
                || (only && first.next_offset == checkpoint_start)
            {
                break;
            }
            segments
                .remove(&base)
                .expect("present")
                .delete_files(&*storage, dir)?;
        }
        let mut dirty_dirs = BTreeSet::new();
        if segments.is_empty() {
            let base = checkpoint_start.max(0);
            segments.insert(base, Segment::create(&*storage, dir, base, now)?);
            dirty_dirs.insert(dir.to_string());
        }
        if created {
            dirty_dirs.insert(parent(dir).to_string());
        }
        let first_base = *segments.keys().next().expect("non-empty");
        let log_end_offset = segments
            .values()
            .next_back()
            .expect("non-empty")
            .next_offset;
        let log_start_offset = checkpoint_start.clamp(first_base, log_end_offset);
        let active_base = *segments.keys().next_back().expect("non-empty");
        let recovery_point = if clean {
            active_base
        } else {
            checkpoint_recovery.clamp(first_base, active_base)
        };
        let dirty_segments: BTreeSet<i64> =
            segments.range(recovery_point..).map(|(b, _)| *b).collect();
        if clean {
            storage.remove_file(&join(dir, CLEAN_SHUTDOWN_FILE))?;
            storage.sync_dir(dir)?;
        }
        let mut log = PartitionLog {
            storage,
            dir: dir.to_string(),
            next_retention_check_ms: now + config.retention_check_interval_ms(),
            config,
            segments,
            log_start_offset,
            durable_offset: if clean {
                log_end_offset
            } else {
                recovery_point.min(log_end_offset)
            },
            recovery_point,
            checkpoint_file,
            checkpoint_dirty: false,
            checkpoint_sequence,
            checkpoint_slot,
            dirty_segments: if clean {
                BTreeSet::new()
            } else {
                dirty_segments
            },
            dirty_dirs,
            force_sync: !clean || any_cut,
            flush_due: false,
            unsynced_messages: 0,
            last_flush_ms: now,
            in_flight: None,
            deletions_waiting: Vec::new(),
            read_hint: Mutex::new(None),
            last_now: now,
            closed: false,
        };
        if checkpoint != Some((log.log_start_offset, log.recovery_point)) {
            // What recovery decided (above all the log start, the floor below which offsets
            // are never handed out again) is made durable before anything else happens.
            // Inline: this is startup, not the event loop.
            log.write_checkpoint()?;
            log.checkpoint_file.sync_data()?;
            log.storage.sync_dir(&log.dir)?;
            log.checkpoint_dirty = false;
            log.checkpoint_slot = 1 - log.checkpoint_slot;
        }
        Ok(log)
    }

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

    /// Validates `batches` and returns the headers with their positions, and the record count.
    fn validate_request(
        &self,
        batches: &[u8],
    ) -> Result<(Vec<(usize, BatchHeader)>, u64), AppendError> {
        if batches.is_empty() {
            return Err(AppendError::Empty);
        }
        if batches.len() as u64 > self.config.segment_bytes() {
            return Err(AppendError::RecordListTooLarge {
                size: batches.len(),
                segment_bytes: self.config.segment_bytes(),
            });
        }
        let mut headers = Vec::new();
        let mut records = 0u64;
        for item in batch::iter_validated(batches) {
            let (position, header) = item.map_err(|error| AppendError::InvalidBatch {
                position: headers
                    .last()
                    .map_or(0, |(p, h): &(usize, BatchHeader)| p + h.total_size()),
                error,
            })?;
            if header.records_count == 0 {
                return Err(AppendError::NoRecords { position });
            }
            records += header.last_offset_delta as u64 + 1;
            headers.push((position, header));
        }
        Ok((headers, records))
    }

    /// Validates every batch in `batches` (one or more v2 batches as received in a Produce
    /// request; nothing is written unless all are valid), assigns offsets from the log end
    /// offset by rewriting each header in place (and the max timestamp for LogAppendTime), and
    /// appends them with one write.
    pub fn append(&mut self, batches: &mut [u8], now: Millis) -> Result<AppendInfo, AppendError> {
        if self.closed {
            return Err(AppendError::Closed);
        }
        self.last_now = self.last_now.max(now);
        let (mut headers, record_count) = self.validate_request(batches)?;
        let base_offset = self.log_end_offset();
        let log_append_time = self.config.timestamp_type == TimestampType::LogAppendTime;
        let mut next = base_offset;
        for (position, header) in headers.iter_mut() {
            let bytes = &mut batches[*position..*position + header.total_size()];
            batch::set_base_offset(bytes, next);
            header.base_offset = next;
            if log_append_time {
                batch::set_log_append_time(bytes, now);
                header.max_timestamp = now;
                header.attributes |= batch::TIMESTAMP_TYPE_LOG_APPEND_TIME;
                header.crc = batch::compute_crc(bytes);
            }
            next = header.next_offset();
        }
        self.write_batches(batches, &headers, now)?;
        self.unsynced_messages += record_count;
        Ok(AppendInfo {
            base_offset,
            last_offset: next - 1,
            max_timestamp: headers
                .iter()
                .map(|(_, h)| h.max_timestamp)
                .max()
                .unwrap_or(NO_TIMESTAMP),
            log_append_time: log_append_time.then_some(now),
            record_count,
            batches: headers.into_iter().map(|(_, h)| h).collect(),
        })
    }

    /// Appends batches that already carry their offsets (a follower copying its leader): they
    /// must continue exactly at the log end offset. Headers are not rewritten.
    pub fn append_replicated(
        &mut self,
        batches: &[u8],
        now: Millis,
    ) -> Result<AppendInfo, AppendError> {
        if self.closed {
            return Err(AppendError::Closed);
        }
        self.last_now = self.last_now.max(now);
        let (headers, record_count) = self.validate_request(batches)?;
        let base_offset = self.log_end_offset();
        let mut expected = base_offset;
        for (_, header) in &headers {
            if header.base_offset != expected {
                return Err(AppendError::NonContiguous {
                    expected,
                    found: header.base_offset,
                });
            }
            expected = header.next_offset();
        }
        self.write_batches(batches, &headers, now)?;
        self.unsynced_messages += record_count;
        Ok(AppendInfo {
            base_offset,
            last_offset: expected - 1,
            max_timestamp: headers
                .iter()
                .map(|(_, h)| h.max_timestamp)
                .max()
                .unwrap_or(NO_TIMESTAMP),
            log_append_time: None,
            record_count,
            batches: headers.into_iter().map(|(_, h)| h).collect(),
        })
    }

    fn write_batches(
        &mut self,
        bytes: &[u8],
        headers: &[(usize, BatchHeader)],
        now: Millis,
    ) -> Result<(), AppendError> {
        let last_offset = headers.last().expect("validated non-empty").1.last_offset();
        let active = self.active();
        let full = active.size + bytes.len() as u64 > self.config.segment_bytes();
        let aged = now - active.roll_base_ms >= self.config.segment_ms;
        let offsets_overflow = last_offset - active.base_offset > i32::MAX as i64;
        if active.size > 0 && (full || aged || offsets_overflow) {
            self.roll(now)?;
        }
        let interval = self.config.index_interval_bytes;
        let active = self.active_mut();
        let start = active.size;
        if let Err(error) = active.log.write_at(bytes, start) {
            // Leave no partial batch behind; the next append writes at the same position.
            let _ = active.log.set_len(start);
            return Err(error.into());
        }
        for (position, header) in headers {
            active.note_appended(start + *position as u64, header, interval);
        }
        active.size = start + bytes.len() as u64;
        let base = active.base_offset;
        if active.offset_index.wants_write() || active.time_index.wants_write() {
            active.write_indexes()?;
        }
        self.dirty_segments.insert(base);
        Ok(())
    }

    /// Starts a new active segment at the log end offset; the old one is synced soon (as
    /// Kafka flushes a rolled segment) whatever the flush policy.
    fn roll(&mut self, now: Millis) -> io::Result<()> {
        let base = self.log_end_offset();
        self.active_mut().write_indexes()?;
        let old = self.active().base_offset;
        self.dirty_segments.insert(old);
        let segment = Segment::create(&*self.storage, &self.dir, base, now)?;
        self.segments.insert(base, segment);
        self.dirty_segments.insert(base);
        self.dirty_dirs.insert(self.dir.clone());
        self.force_sync = true;
        Ok(())
    }

    /// Returns whole batches starting at the batch that contains `offset`, stopping before
    /// `max_offset` (exclusive) and after `max_bytes`, but always at least one whole batch if
    /// one is available (KIP-74). Empty when `offset == max_offset` or `== log_end_offset`.
    /// Reads from one segment: the caller fetches again for more.
    pub fn read(&self, offset: i64, max_bytes: usize, max_offset: i64) -> Result<Bytes, ReadError> {
        let log_end_offset = self.log_end_offset();
        if offset < self.log_start_offset || offset > log_end_offset {
            return Err(ReadError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset,
            });
        }
        if offset == log_end_offset || offset >= max_offset {
            return Ok(Bytes::new());
        }
        let Some(segment) = self.segment_containing(offset) else {
            return Ok(Bytes::new());
        };
        let hinted = self.hinted_batch(segment, offset)?;
        let Some((start, first)) = (match hinted {
            Some(found) => Some(found),
            None => segment.locate(offset)?,
        }) else {
            return Ok(Bytes::new());
        };
        if first.last_offset() >= max_offset {
            // The batch straddles max_offset (e.g. the high watermark): not readable yet.
            return Ok(Bytes::new());
        }
        let (upper, upper_offset) = if max_offset >= segment.next_offset {
            (segment.size, segment.next_offset)
        } else {
            match segment.locate(max_offset)? {
                Some((position, header)) => (position, header.base_offset),
                None => (segment.size, segment.next_offset),
            }
        };
        let available = (upper - start) as usize;
        let first_size = first.total_size();
        let len = if available <= max_bytes || first_size >= max_bytes {
            available.min(max_bytes.max(first_size))
        } else {
            max_bytes
        };
        let mut buf = Vec::new();
        segment.log.read_into(&mut buf, start, len)?;
        let mut next = (upper_offset, upper);
        if len < available {
            // Cut after the last whole batch that fits (a walk over batch lengths only).
            let mut end = 0usize;
            while let Some(size) = segment::batch_size_at(&buf, end) {
                if end + size > buf.len() {
                    break;
                }
                next = (
                    segment::next_offset_at(&buf, end),
                    start + (end + size) as u64,
                );
                end += size;
            }
            buf.truncate(end);
        }
        // A consumer's next fetch starts where this one ended: remember where that is.
        if let Ok(mut hint) = self.read_hint.lock() {
            *hint = Some(ReadHint {
                segment_base: segment.base_offset,
                offset: next.0,
                position: next.1,
            });
        }
        Ok(Bytes::from(buf))
    }

    /// The batch at `offset` if the last read ended exactly there (sequential consumers).
    fn hinted_batch(
        &self,
        segment: &Segment,
        offset: i64,
    ) -> io::Result<Option<(u64, BatchHeader)>> {
        let hint = match self.read_hint.lock() {
            Ok(hint) => *hint,
            Err(_) => None,
        };
        let Some(hint) = hint else {
            return Ok(None);
        };
        if hint.segment_base != segment.base_offset
            || hint.offset != offset
            || hint.position >= segment.size
        {
            return Ok(None);
        }
        Ok(segment
            .header_at(hint.position)?
            .filter(|header| header.base_offset == offset)
            .map(|header| (hint.position, header)))
    }

    fn clear_read_hint(&mut self) {
        if let Ok(hint) = self.read_hint.get_mut() {
            *hint = None;
        }
    }

    /// The segment whose offsets include `offset`.
    fn segment_containing(&self, offset: i64) -> Option<&Segment> {
        self.segments
            .range(..=offset)
            .next_back()
            .map(|(_, s)| s)
            .filter(|s| offset < s.next_offset)
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

    /// First (offset, timestamp) at or after `log_start_offset` in `segment` whose record
    /// timestamp is >= `timestamp`. Record granularity for uncompressed batches, batch
    /// granularity (base offset, batch max timestamp) for compressed ones.
    fn find_timestamp_in(
        &self,
        segment: &Segment,
        timestamp: i64,
    ) -> Result<Option<(i64, i64)>, LogError> {
        let start_offset = self.log_start_offset;
        let position = segment.time_position(timestamp)?;
        let found = segment.first_batch_where(position, |header| {
            header.max_timestamp >= timestamp && header.last_offset() >= start_offset
        })?;
        let Some((position, header)) = found else {
            return Ok(None);
        };
        if header.compression() != 0 {
            return Ok(Some((
                header.base_offset.max(start_offset),
                header.max_timestamp,
            )));
        }
        let mut bytes = Vec::new();
        segment
            .log
            .read_into(&mut bytes, position, header.total_size())?;
        match batch::record_offsets_and_timestamps(&bytes) {
            Ok(records) => Ok(records
                .into_iter()
                .find(|&(offset, ts)| ts >= timestamp && offset >= start_offset)
                .or(Some((
                    header.base_offset.max(start_offset),
                    header.max_timestamp,
                )))),
            Err(_) => Ok(Some((
                header.base_offset.max(start_offset),
                header.max_timestamp,
            ))),
        }
    }

    fn live_segments(&self) -> impl Iterator<Item = &Segment> {
        let first = self
            .segments
            .range(..=self.log_start_offset)
            .next_back()
            .map_or(i64::MIN, |(b, _)| *b);
        self.segments.range(first..).map(|(_, s)| s)
    }

    /// ListOffsets by timestamp: the first offset whose record timestamp >= `timestamp`, with
    /// that timestamp.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, LogError> {
        for segment in self.live_segments() {
            if segment.max_timestamp < timestamp {
                continue;
            }
            if let Some(found) = self.find_timestamp_in(segment, timestamp)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// The largest timestamp in the log and the first offset carrying it (ListOffsets
    /// MAX_TIMESTAMP, KIP-734).
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        let mut best: Option<&Segment> = None;
        for segment in self.live_segments() {
            if segment.max_timestamp != NO_TIMESTAMP
                && best.is_none_or(|b| segment.max_timestamp > b.max_timestamp)
            {
                best = Some(segment);
            }
        }
        let segment = best?;
        let (offset, timestamp) = self
            .find_timestamp_in(segment, segment.max_timestamp)
            .ok()??;
        Some((timestamp, offset))
    }

    /// Follower truncation: drops every offset >= `offset`. Truncation happens at a batch
    /// boundary: the batch containing `offset` is dropped whole, so the log end offset becomes
    /// its base offset (as Kafka's `truncateTo`). Truncating below the log start offset
    /// empties the log and restarts it at `offset`.
    pub fn truncate_to(&mut self, offset: i64) -> Result<(), LogError> {
        if self.closed {
            return Err(LogError::Closed);
        }
        if offset >= self.log_end_offset() {
            return Ok(());
        }
        self.clear_read_hint();
        let first_base = *self.segments.keys().next().expect("non-empty");
        if offset < self.log_start_offset || offset <= first_base {
            let start = offset.max(0);
            // Like retention, the old files go only once the checkpoint naming the new start
            // is synced; until then a crash recovers the log as it was before.
            for segment in std::mem::take(&mut self.segments).into_values() {
                if segment.base_offset != start {
                    self.deletions_waiting.push(segment);
                }
            }
            self.dirty_segments.clear();
            let segment = Segment::create(&*self.storage, &self.dir, start, self.last_now)?;
            self.segments.insert(start, segment);
            self.dirty_segments.insert(start);
            self.log_start_offset = start;
            self.recovery_point = start;
        } else {
            let doomed: Vec<i64> = self.segments.range(offset..).map(|(b, _)| *b).collect();
            for base in doomed {
                let segment = self.segments.remove(&base).expect("present");
                segment.delete_files(&*self.storage, &self.dir)?;
                self.dirty_segments.remove(&base);
            }
            let active = self.active_mut();
            if let Some((position, header)) = active.locate(offset)? {
                active.truncate_at(position, header.base_offset)?;
                let (base, size) = (active.base_offset, active.size);
                self.dirty_segments.insert(base);
                self.recovery_point = self.recovery_point.min(base);
                // Never write over bytes that may be on disk: a crash could then splice new
                // bytes into old batches in the middle of a segment, where a tail scan does
                // not look. New appends go to a fresh file instead; if the truncation itself
                // is lost in a crash, the old batches come back whole (and the follower
                // truncates again), and the fresh file no longer continues them and is dropped.
                if size > 0 {
                    self.roll(self.last_now)?;
                } else {
                    let old = self.segments.remove(&base).expect("active");
                    old.delete_files(&*self.storage, &self.dir)?;
                    let fresh = Segment::create(&*self.storage, &self.dir, base, self.last_now)?;
                    self.segments.insert(base, fresh);
                }
            }
        }
        self.dirty_dirs.insert(self.dir.clone());
        let log_end_offset = self.log_end_offset();
        // Dropping a whole batch can take the end below a log start inside that batch.
        self.log_start_offset = self.log_start_offset.min(log_end_offset);
        self.durable_offset = self.durable_offset.min(log_end_offset);
        if let Some(in_flight) = &mut self.in_flight {
            in_flight.truncated_to = in_flight.truncated_to.min(log_end_offset);
        }
        self.force_sync = true;
        self.write_checkpoint()?;
        Ok(())
    }

    /// DeleteRecords: advances the log start offset to `offset` (deleting whole segments
    /// below it). Returns the new log start offset.
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64, LogError> {
        if self.closed {
            return Err(LogError::Closed);
        }
        let log_end_offset = self.log_end_offset();
        if offset < 0 || offset > log_end_offset {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset,
            });
        }
        if offset <= self.log_start_offset {
            return Ok(self.log_start_offset);
        }
        self.log_start_offset = offset;
        self.delete_segments_below_start()?;
        self.write_checkpoint()?;
        Ok(self.log_start_offset)
    }

    /// Deletes closed segments that end at or below the log start offset.
    fn delete_segments_below_start(&mut self) -> io::Result<()> {
        while self.segments.len() > 1 {
            let (&base, first) = self.segments.iter().next().expect("non-empty");
            if first.next_offset > self.log_start_offset {
                break;
            }
            self.delete_oldest(base)?;
        }
        Ok(())
    }

    fn delete_oldest(&mut self, base: i64) -> io::Result<()> {
        let segment = self.segments.remove(&base).expect("present");
        self.deletions_waiting.push(segment);
        self.dirty_segments.remove(&base);
        self.force_sync = true;
        let first = *self
            .segments
            .keys()
            .next()
            .expect("the active segment stays");
        self.log_start_offset = self.log_start_offset.max(first);
        self.recovery_point = self.recovery_point.max(first);
        Ok(())
    }

    /// Retention on closed segments: retention.ms by each segment's largest timestamp, then
    /// retention.bytes by total size. Returns whether anything was deleted.
    fn apply_retention(&mut self, now: Millis) -> io::Result<bool> {
        let mut deleted = false;
        if self.config.retention_ms >= 0 {
            while self.segments.len() > 1 {
                let (&base, first) = self.segments.iter().next().expect("non-empty");
                if first.max_timestamp == NO_TIMESTAMP
                    || first.max_timestamp >= now.saturating_sub(self.config.retention_ms)
                {
                    break;
                }
                self.delete_oldest(base)?;
                deleted = true;
            }
        }
        if self.config.retention_bytes >= 0 {
            let mut total = self.size_bytes();
            while self.segments.len() > 1 {
                let (&base, first) = self.segments.iter().next().expect("non-empty");
                if total.saturating_sub(self.config.retention_bytes as u64) < first.size {
                    break;
                }
                total -= first.size;
                self.delete_oldest(base)?;
                deleted = true;
            }
        }
        Ok(deleted)
    }

    /// Housekeeping due at `now`: segment.ms rolls, retention, interval flush decisions.
    pub fn tick(&mut self, now: Millis) -> Result<(), LogError> {
        if self.closed {
            return Ok(());
        }
        self.last_now = self.last_now.max(now);
        let active = self.active();
        if active.size > 0 && now - active.roll_base_ms >= self.config.segment_ms {
            self.roll(now)?;
        }
        if now >= self.next_retention_check_ms {
            self.next_retention_check_ms = now + self.config.retention_check_interval_ms();
            if self.apply_retention(now)? {
                self.write_checkpoint()?;
            }
        }
        if let FlushPolicy::Interval { ms: Some(ms), .. } = self.config.flush {
            if self.has_unsynced() && now - self.last_flush_ms >= ms {
                self.flush_due = true;
                self.last_flush_ms = now;
            }
        }
        Ok(())
    }

    fn has_unsynced(&self) -> bool {
        self.log_end_offset() > self.durable_offset
            || !self.dirty_segments.is_empty()
            || !self.dirty_dirs.is_empty()
            || self.checkpoint_dirty
            || !self.deletions_waiting.is_empty()
    }

    /// When `tick` next has work to do.
    pub fn next_deadline(&self) -> Option<Millis> {
        let mut deadline = self.next_retention_check_ms;
        let active = self.active();
        if active.size > 0 {
            deadline = deadline.min(active.roll_base_ms.saturating_add(self.config.segment_ms));
        }
        if let FlushPolicy::Interval { ms: Some(ms), .. } = self.config.flush {
            if self.has_unsynced() && !self.flush_due {
                deadline = deadline.min(self.last_flush_ms.saturating_add(ms));
            }
        }
        Some(deadline)
    }

    fn sync_wanted(&self) -> bool {
        if !self.has_unsynced() {
            return false;
        }
        if self.force_sync || self.flush_due {
            return true;
        }
        match self.config.flush {
            FlushPolicy::Durable => true,
            FlushPolicy::Interval { messages, .. } => {
                messages.is_some_and(|messages| self.unsynced_messages >= messages.max(1))
            }
            FlushPolicy::PageCache => false,
        }
    }

    /// If the flush policy wants a sync now and none is in flight, hands out the job; the
    /// runtime runs it on the disk thread and reports back with `sync_completed(up_to_offset)`.
    /// Appends meanwhile share the next job (group commit).
    pub fn take_sync_job(&mut self) -> Option<SyncJob> {
        if self.in_flight.is_some() || self.closed || !self.sync_wanted() {
            return None;
        }
        Some(self.build_sync_job(false))
    }

    /// Collects what a sync job covers. The active segment's indexes are synced only when
    /// `active_indexes` (at close): after a crash the active segment (everything from the
    /// recovery point) is rescanned and its indexes rebuilt anyway, so the steady-state job is
    /// one fdatasync of the active `.log`. A rolled segment's indexes are synced with it, as
    /// open trusts them once the recovery point passes the segment.
    fn build_sync_job(&mut self, active_indexes: bool) -> SyncJob {
        let active_base = self.active().base_offset;
        let mut files: Vec<Arc<dyn StorageFile>> = Vec::new();
        for base in std::mem::take(&mut self.dirty_segments) {
            if let Some(segment) = self.segments.get_mut(&base) {
                files.push(segment.log.clone());
                if base != active_base || active_indexes {
                    // A failed index write only costs a rebuild on the next unclean open.
                    let _ = segment.write_indexes();
                    files.push(segment.offset_index.file().clone());
                    files.push(segment.time_index.file().clone());
                }
            }
        }
        let checkpoint_slot = std::mem::take(&mut self.checkpoint_dirty).then(|| {
            files.push(self.checkpoint_file.clone());
            self.checkpoint_slot
        });
        let dirs: Vec<String> = std::mem::take(&mut self.dirty_dirs).into_iter().collect();
        let up_to_offset = self.log_end_offset();
        self.force_sync = false;
        self.flush_due = false;
        self.unsynced_messages = 0;
        self.in_flight = Some(InFlight {
            up_to_offset,
            truncated_to: up_to_offset,
            deletions: std::mem::take(&mut self.deletions_waiting),
            checkpoint_slot,
        });
        SyncJob {
            up_to_offset,
            files,
            dirs,
            storage: self.storage.clone(),
        }
    }

    /// Whether a sync job is in flight.
    pub fn sync_in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// The disk thread finished the job taken with `up_to_offset`.
    pub fn sync_completed(&mut self, up_to_offset: i64) {
        let Some(in_flight) = self.in_flight.take() else {
            return;
        };
        for segment in &in_flight.deletions {
            // A truncation may have restarted the log at the same base offset since.
            if !self.segments.contains_key(&segment.base_offset) {
                // A leftover file is removed by the next open, as it lies below the start.
                let _ = segment.delete_files(&*self.storage, &self.dir);
                self.dirty_dirs.insert(self.dir.clone());
            }
        }
        if let (Some(slot), false) = (in_flight.checkpoint_slot, self.checkpoint_dirty) {
            // That slot now holds the newest synced checkpoint: write the other from now on.
            self.checkpoint_slot = 1 - slot;
        }
        let durable = up_to_offset
            .min(in_flight.up_to_offset)
            .min(in_flight.truncated_to)
            .min(self.log_end_offset());
        self.durable_offset = self.durable_offset.max(durable);
        // Segments entirely below the durable offset need no scan after a crash.
        let recovery_point = self
            .segments
            .range(..=self.durable_offset)
            .next_back()
            .map_or(self.recovery_point, |(b, _)| *b);
        if recovery_point > self.recovery_point {
            self.recovery_point = recovery_point;
            // A stale checkpoint only costs a longer scan, so a failed write is harmless.
            let _ = self.write_checkpoint();
        }
    }

    /// The disk thread's job failed (`run` returned an error): nothing it covered counts as
    /// durable. Clears the in-flight job so a later `take_sync_job` retries everything from
    /// the durable offset on. Note: after a failed fsync Linux may already have dropped the
    /// dirty pages, so a retry that succeeds does not prove the data reached the disk; Kafka
    /// halts the broker instead. The caller decides; the log only stays consistent.
    pub fn sync_failed(&mut self) {
        let Some(in_flight) = self.in_flight.take() else {
            return;
        };
        self.deletions_waiting.extend(in_flight.deletions);
        let durable = self.durable_offset;
        let first = self
            .segments
            .range(..=durable)
            .next_back()
            .map_or(i64::MIN, |(b, _)| *b);
        let redo: Vec<i64> = self.segments.range(first..).map(|(b, _)| *b).collect();
        self.dirty_segments.extend(redo);
        self.dirty_dirs.insert(self.dir.clone());
        self.dirty_dirs.insert(parent(&self.dir).to_string());
        if in_flight.checkpoint_slot.is_some() {
            self.checkpoint_dirty = true;
        }
        self.force_sync = true;
    }

    /// Iterates batch headers from the batch containing `offset` to the log end (for
    /// rebuilding producer state after a restart).
    pub fn batch_headers_from(&self, offset: i64) -> Result<Vec<BatchHeader>, LogError> {
        let offset = offset.max(self.log_start_offset);
        let mut headers = Vec::new();
        let first = self
            .segments
            .range(..=offset)
            .next_back()
            .map_or(i64::MIN, |(b, _)| *b);
        for (_, segment) in self.segments.range(first..) {
            let start = match segment.locate(offset)? {
                Some((position, _)) => position,
                None => continue,
            };
            segment::scan(&*segment.log, start, segment.size, false, |_, header, _| {
                headers.push(*header);
                segment::Step::Continue
            })?;
        }
        Ok(headers)
    }

    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Clean shutdown: syncs everything (inline: shutdown is not the event loop), then writes
    /// and syncs the clean-shutdown marker. The log refuses writes afterwards.
    pub fn close(&mut self) -> Result<(), LogError> {
        if self.closed {
            return Ok(());
        }
        for segment in self.segments.values_mut() {
            segment.write_indexes()?;
        }
        self.recovery_point = self.active().base_offset;
        self.write_checkpoint()?;
        self.dirty_segments = self.segments.keys().copied().collect();
        self.dirty_dirs.insert(self.dir.clone());
        self.force_sync = true;
        if let Some(in_flight) = self.in_flight.take() {
            self.deletions_waiting.extend(in_flight.deletions);
        }
        let job = self.build_sync_job(true);
        let up_to_offset = job.up_to_offset;
        job.run()?;
        self.sync_completed(up_to_offset);
        let marker = self
            .storage
            .open_file(&join(&self.dir, CLEAN_SHUTDOWN_FILE), true)?;
        marker.sync_data()?;
        self.storage.sync_dir(&self.dir)?;
        self.closed = true;
        Ok(())
    }

    /// Removes the log's files (DeleteTopics).
    pub fn delete(self) -> Result<(), LogError> {
        self.storage.remove_dir_all(&self.dir)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
