//! Log compaction (`cleanup.policy=compact`), as Kafka's log cleaner does it, run in small
//! steps from `tick` so the event loop is never blocked for long.
//!
//! A *pass* cleans the log from its start up to `map_end`:
//! 1. It starts when the dirty ratio (bytes of closed segments at or after the first dirty
//!    offset, over bytes of all cleanable segments) exceeds `min.cleanable.dirty.ratio`, or
//!    when a tombstone's delete horizon (KIP-534) has passed. Checked every
//!    `log.cleaner.backoff.ms`. The active segment, and segments whose newest record is younger
//!    than `min.compaction.lag.ms` (KIP-58), and everything after them, are never cleaned.
//! 2. Map phase: one dirty segment per tick is read into an offset map (key -> offset of its
//!    latest record). The map stops growing at a segment boundary once it holds
//!    [`CLEANER_MAP_MAX_BYTES`]; that boundary is `map_end`.
//! 3. Clean phase: one segment per tick, oldest first, is filtered: a record is kept if it is
//!    the latest of its key (offset >= map[key], or a key the map does not hold); records
//!    without a key are dropped; a latest tombstone is kept until its batch's delete horizon
//!    (set to now + `delete.retention.ms` the first time a cleaner keeps it) has passed.
//!    Offsets never change: a batch keeps its base offset and last offset delta, so gaps
//!    appear where records went. A batch whose records are all gone is dropped, except the
//!    segment's last batch and each producer's last batch in the segment, which stay as empty
//!    headers (records count 0) so the segment still ends where it did and the producer's last
//!    sequence and epoch survive for `batch_headers_from`. Compressed batches are
//!    decompressed, filtered and recompressed with their codec; the CRC is recomputed.
//! 4. Swap (crash-safe, Kafka's protocol): the filtered segment is written to
//!    `<base>.log.cleaned` and synced through the next sync job (never inline). The tick after
//!    that job completes renames it to `<base>.log.swap` (the commit point), removes the old
//!    segment's files, renames the swap file to `<base>.log` and rebuilds its indexes. `open`
//!    deletes `.cleaned` leftovers (an unfinished clean: the old segment is intact) and
//!    completes any `.swap` (a finished clean: the swap file is whole and synced).
//! 5. When the clean phase has passed `map_end`, the first dirty offset becomes `map_end`,
//!    persisted in `karst.cleaner-checkpoint` (a stale value only costs re-cleaning).
//!
//! Reads between ticks see each segment either wholly old or wholly cleaned: both hold the
//! latest record of every key at its original offset. Cleaning never changes the log start or
//! end offset.

use std::collections::BTreeMap;

use super::*;
use crate::protocol::batch::RecordRef;
use segment::{delete_segment_files, log_name};

/// File holding the first dirty offset (8 bytes big endian, then its CRC-32C).
pub const CLEANER_CHECKPOINT_FILE: &str = "karst.cleaner-checkpoint";
/// Suffix of a segment being written by the cleaner (deleted by recovery).
pub const CLEANED_SUFFIX: &str = ".cleaned";
/// Suffix of a cleaned, synced segment being swapped in (completed by recovery).
pub const SWAP_SUFFIX: &str = ".swap";
/// Soft bound of the offset map (key bytes plus [`MAP_ENTRY_OVERHEAD_BYTES`] per key): the
/// map stops growing at the first segment boundary after it is reached (Kafka's
/// log.cleaner.dedupe.buffer.size). A pass always maps at least one segment.
pub const CLEANER_MAP_MAX_BYTES: usize = 64 << 20;
/// Memory counted per map entry besides its key.
pub const MAP_ENTRY_OVERHEAD_BYTES: usize = 48;
/// Segments read (map phase) or rewritten (clean phase) per `tick`: the work of one tick is
/// bounded by segment.bytes.
pub const CLEAN_SEGMENTS_PER_TICK: usize = 1;

#[derive(Debug, Default)]
pub(super) struct Cleaner {
    /// Offsets below this were covered by a completed pass.
    pub(super) first_dirty_offset: i64,
    pass: Option<Pass>,
    next_check_ms: Millis,
    /// Earliest delete horizon of a tombstone kept by the last pass: a pass is due then.
    next_delete_horizon: Option<Millis>,
    /// Records at or above this offset are never mapped (the broker's high watermark).
    pub(super) cleanable_limit: Option<i64>,
    checkpoint_file: Option<Arc<dyn StorageFile>>,
    checkpoint_dirty: bool,
    /// Why the last pass failed, if it did (the log keeps serving; the next check retries).
    last_error: Option<String>,
    stats: CleanerStats,
}

/// What the cleaner has done since the log was opened (for metrics, tests and benchmarks).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CleanerStats {
    pub passes: u64,
    pub segments_rewritten: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_removed: u64,
}

#[derive(Debug)]
struct Pass {
    map: BTreeMap<Vec<u8>, i64>,
    map_bytes: usize,
    /// The next dirty segment (base offset at or after this) to read into the map.
    next_map_base: Option<i64>,
    /// Records at or after this offset are not touched by this pass.
    map_end: i64,
    /// The first offset not cleanable when the pass began.
    uncleanable_offset: i64,
    /// The next segment (base offset at or after this) to rewrite.
    next_clean_base: i64,
    pending: Option<Pending>,
    delete_horizon: Option<Millis>,
}

/// A rewritten segment whose `.cleaned` file waits for a sync job before the swap.
#[derive(Debug)]
struct Pending {
    base: i64,
    file: Arc<dyn StorageFile>,
    next_offset: i64,
    in_job: bool,
    synced: bool,
}

/// Builds a cleaned segment, keeping its offsets contiguous: where whole batches were
/// removed, the previous batch is stretched over the gap if it has no producer id (its last
/// offset delta carries no sequence), or else an empty batch fills it.
struct SegmentWriter {
    bytes: Vec<u8>,
    expected: i64,
    /// Position and base offset of the last batch written, if it may be stretched.
    last: Option<(usize, i64, bool)>,
}

impl SegmentWriter {
    fn push(&mut self, batch_bytes: &[u8], header: &BatchHeader) {
        if header.base_offset > self.expected {
            match self.last {
                Some((position, last_base, true)) => {
                    let delta = (header.base_offset - 1 - last_base) as i32;
                    batch::set_last_offset_delta(&mut self.bytes[position..], delta);
                }
                _ => self.bytes.extend_from_slice(&batch::empty_batch(
                    self.expected,
                    header.base_offset - 1,
                    header.partition_leader_epoch,
                )),
            }
        }
        let stretchable =
            !header.has_producer_id() && !header.is_control() && !header.is_transactional();
        self.last = Some((self.bytes.len(), header.base_offset, stretchable));
        self.bytes.extend_from_slice(batch_bytes);
        self.expected = header.next_offset();
    }
}

fn cleaned_name(base: i64) -> String {
    format!("{}{CLEANED_SUFFIX}", log_name(base))
}

fn swap_name(base: i64) -> String {
    format!("{}{SWAP_SUFFIX}", log_name(base))
}

/// Recovery of an interrupted clean (called by `open` before segments are read): removes
/// `.cleaned` files and completes every `.swap`. Returns the base offsets of the swapped-in
/// segments (their indexes must be rebuilt) and whether anything changed.
pub(super) fn complete_swaps(
    storage: &dyn Storage,
    dir: &str,
    names: &[String],
) -> io::Result<(BTreeSet<i64>, bool)> {
    let mut swapped = BTreeSet::new();
    let mut changed = false;
    for name in names {
        if name.ends_with(CLEANED_SUFFIX) {
            storage.remove_file(&join(dir, name))?;
            changed = true;
        }
    }
    for name in names {
        let Some(stem) = name.strip_suffix(SWAP_SUFFIX) else {
            continue;
        };
        changed = true;
        match segment::parse_log_name(stem) {
            Some(base) => {
                delete_segment_files(storage, dir, base)?;
                storage.rename(&join(dir, name), &join(dir, stem))?;
                swapped.insert(base);
            }
            None => storage.remove_file(&join(dir, name))?,
        }
    }
    Ok((swapped, changed))
}

/// The first dirty offset stored in the cleaner checkpoint, if the file holds a valid one.
pub(super) fn read_cleaner_checkpoint(storage: &dyn Storage, dir: &str) -> Option<i64> {
    let file = storage
        .open_file(&join(dir, CLEANER_CHECKPOINT_FILE), false)
        .ok()?;
    let mut bytes = [0u8; 12];
    file.read_exact_at(&mut bytes, 0).ok()?;
    let crc = u32::from_be_bytes(bytes[8..].try_into().ok()?);
    (crate::protocol::crc32c(&bytes[..8]) == crc)
        .then(|| i64::from_be_bytes(bytes[..8].try_into().unwrap()))
}

impl Cleaner {
    pub(super) fn new(first_dirty_offset: i64) -> Cleaner {
        Cleaner {
            first_dirty_offset,
            ..Cleaner::default()
        }
    }

    fn pending_mut(&mut self) -> Option<&mut Pending> {
        self.pass.as_mut().and_then(|pass| pass.pending.as_mut())
    }

    /// Whether a cleaned file waits for a sync.
    pub(super) fn wants_sync(&self) -> bool {
        self.checkpoint_dirty
            || self
                .pass
                .as_ref()
                .and_then(|pass| pass.pending.as_ref())
                .is_some_and(|pending| !pending.synced)
    }

    /// Adds what the cleaner needs synced to a sync job being built.
    pub(super) fn add_to_job(&mut self, files: &mut Vec<Arc<dyn StorageFile>>) {
        if std::mem::take(&mut self.checkpoint_dirty) {
            if let Some(file) = &self.checkpoint_file {
                files.push(file.clone());
            }
        }
        if let Some(pending) = self.pending_mut() {
            if !pending.synced {
                files.push(pending.file.clone());
                pending.in_job = true;
            }
        }
    }

    pub(super) fn job_completed(&mut self) {
        if let Some(pending) = self.pending_mut() {
            if pending.in_job {
                pending.synced = true;
            }
        }
    }

    pub(super) fn job_failed(&mut self) {
        if let Some(pending) = self.pending_mut() {
            pending.in_job = false;
        }
        if self.checkpoint_file.is_some() {
            self.checkpoint_dirty = true;
        }
    }
}

impl PartitionLog {
    /// Bounds cleaning to records below `offset`: the broker passes its high watermark, as
    /// Kafka's cleaner never goes past it, since a follower truncation above it could
    /// otherwise remove the newer record of a key whose older records were already cleaned
    /// away. Until called, only the durable offset bounds cleaning (which is also always
    /// applied: a crash must not lose a record the cleaner relied on).
    pub fn set_cleanable_limit(&mut self, offset: i64) {
        self.cleaner.cleanable_limit = Some(offset);
    }

    /// The offset below which the last completed cleaning pass left the log clean.
    pub fn first_dirty_offset(&self) -> i64 {
        self.cleaner.first_dirty_offset
    }

    /// Whether a cleaning pass is under way.
    pub fn cleaning_in_progress(&self) -> bool {
        self.cleaner.pass.is_some()
    }

    /// Why the last cleaning pass failed, if it did.
    pub fn cleaner_error(&self) -> Option<&str> {
        self.cleaner.last_error.as_deref()
    }

    pub fn cleaner_stats(&self) -> CleanerStats {
        self.cleaner.stats
    }

    /// When `tick` next has cleaning to do (None: not compacted, or waiting for a sync).
    pub(super) fn cleaner_deadline(&self) -> Option<Millis> {
        if !self.config.cleanup_policy.compact() {
            return None;
        }
        match &self.cleaner.pass {
            Some(pass) => match &pass.pending {
                Some(pending) if !pending.synced => None,
                _ => Some(self.last_now),
            },
            None => Some(
                self.cleaner
                    .next_delete_horizon
                    .map_or(self.cleaner.next_check_ms, |h| {
                        h.min(self.cleaner.next_check_ms)
                    }),
            ),
        }
    }

    /// Abandons the pass under way (truncation, config change, errors, close): a written
    /// `.cleaned` file is removed (or by the next open if that fails).
    pub(super) fn abort_cleaning(&mut self) {
        if let Some(pass) = self.cleaner.pass.take() {
            if let Some(pending) = pass.pending {
                let _ = self
                    .storage
                    .remove_file(&join(&self.dir, &cleaned_name(pending.base)));
            }
        }
    }

    /// One bounded step of cleaning, from `tick`. Errors abandon the pass and are kept for
    /// [`PartitionLog::cleaner_error`]; the log keeps serving (as Kafka marks a partition
    /// uncleanable rather than failing it).
    pub(super) fn clean_tick(&mut self, now: Millis) {
        if !self.config.cleanup_policy.compact() {
            self.abort_cleaning();
            return;
        }
        for _ in 0..CLEAN_SEGMENTS_PER_TICK {
            match self.clean_step(now) {
                Ok(true) => {}
                Ok(false) => break,
                Err(error) => {
                    self.abort_cleaning();
                    self.cleaner.last_error = Some(error.to_string());
                    self.cleaner.next_check_ms = now.saturating_add(self.config.cleaner_backoff_ms);
                    break;
                }
            }
        }
    }

    /// (uncleanable offset, first dirty segment base, clean bytes, dirty bytes).
    fn dirty_section(&self, now: Millis) -> (i64, Option<i64>, u64, u64) {
        let first_dirty = self.cleaner.first_dirty_offset;
        let active_base = self.active().base_offset;
        let lag_limit = now.saturating_sub(self.config.min_compaction_lag_ms);
        let limit = self
            .cleaner
            .cleanable_limit
            .unwrap_or(i64::MAX)
            .min(self.durable_offset);
        let mut uncleanable = active_base;
        let (mut clean, mut dirty, mut first_dirty_base) = (0u64, 0u64, None);
        for (&base, segment) in self.segments.range(..active_base) {
            if segment.next_offset <= first_dirty {
                clean += segment.size;
                continue;
            }
            if segment.next_offset > limit
                || (self.config.min_compaction_lag_ms > 0 && segment.max_timestamp > lag_limit)
            {
                uncleanable = base;
                break;
            }
            first_dirty_base.get_or_insert(base);
            dirty += segment.size;
        }
        (uncleanable, first_dirty_base, clean, dirty)
    }

    /// Does one unit of cleaning work. Returns whether more work could follow at once.
    fn clean_step(&mut self, now: Millis) -> io::Result<bool> {
        if self.cleaner.pass.is_none() && !self.start_pass(now) {
            return Ok(false);
        }
        let pass = self.cleaner.pass.as_mut().expect("started");
        if let Some(pending) = &pass.pending {
            if !pending.synced {
                return Ok(false);
            }
            let pending = pass.pending.take().expect("present");
            self.swap_in(pending, now)?;
            return Ok(true);
        }
        if let Some(from) = pass.next_map_base {
            let uncleanable = pass.uncleanable_offset;
            let next = self
                .segments
                .range(from..uncleanable)
                .next()
                .map(|(b, s)| (*b, s.next_offset));
            match next {
                Some((base, next_offset)) => {
                    self.map_segment(base)?;
                    let pass = self.cleaner.pass.as_mut().expect("started");
                    pass.map_end = next_offset;
                    pass.next_map_base = (pass.map_bytes < CLEANER_MAP_MAX_BYTES
                        && next_offset < uncleanable)
                        .then_some(next_offset);
                }
                None => pass.next_map_base = None,
            }
            return Ok(true);
        }
        let (from, map_end) = (pass.next_clean_base, pass.map_end);
        let active_base = self.active().base_offset;
        let next = self
            .segments
            .range(from..map_end.min(active_base))
            .next()
            .map(|(b, s)| (*b, s.next_offset));
        match next {
            Some((base, next_offset)) if next_offset <= map_end => {
                let pending = self.clean_segment(base, now)?;
                let pass = self.cleaner.pass.as_mut().expect("started");
                pass.next_clean_base = next_offset;
                pass.pending = pending;
                Ok(true)
            }
            _ => {
                self.finish_pass(now)?;
                Ok(false)
            }
        }
    }

    fn start_pass(&mut self, now: Millis) -> bool {
        let horizon_due = self.cleaner.next_delete_horizon.is_some_and(|h| now >= h);
        if now < self.cleaner.next_check_ms && !horizon_due {
            return false;
        }
        self.cleaner.next_check_ms = now.saturating_add(self.config.cleaner_backoff_ms.max(1));
        self.cleaner.first_dirty_offset = self
            .cleaner
            .first_dirty_offset
            .clamp(self.log_start_offset, self.log_end_offset());
        let (uncleanable, first_dirty_base, clean, dirty) = self.dirty_section(now);
        let ratio = if clean + dirty == 0 {
            0.0
        } else {
            dirty as f64 / (clean + dirty) as f64
        };
        let ratio_due = dirty > 0 && ratio > self.config.min_cleanable_dirty_ratio;
        if !ratio_due && !horizon_due {
            return false;
        }
        let first_base = *self.segments.keys().next().expect("non-empty");
        self.cleaner.next_delete_horizon = None;
        self.cleaner.pass = Some(Pass {
            map: BTreeMap::new(),
            map_bytes: 0,
            next_map_base: first_dirty_base,
            map_end: self.cleaner.first_dirty_offset.min(uncleanable),
            uncleanable_offset: uncleanable,
            next_clean_base: first_base,
            pending: None,
            delete_horizon: None,
        });
        true
    }

    fn finish_pass(&mut self, now: Millis) -> io::Result<()> {
        let pass = self.cleaner.pass.take().expect("started");
        self.cleaner.stats.passes += 1;
        self.cleaner.last_error = None;
        self.cleaner.next_delete_horizon = pass.delete_horizon;
        self.cleaner.next_check_ms = now.saturating_add(self.config.cleaner_backoff_ms.max(1));
        if pass.map_end > self.cleaner.first_dirty_offset {
            self.cleaner.first_dirty_offset = pass.map_end;
            self.write_cleaner_checkpoint()?;
        }
        Ok(())
    }

    fn write_cleaner_checkpoint(&mut self) -> io::Result<()> {
        let file = match &self.cleaner.checkpoint_file {
            Some(file) => file.clone(),
            None => {
                let file = self
                    .storage
                    .open_file(&join(&self.dir, CLEANER_CHECKPOINT_FILE), true)?;
                self.dirty_dirs.insert(self.dir.clone());
                self.cleaner.checkpoint_file = Some(file.clone());
                file
            }
        };
        let mut bytes = [0u8; 12];
        bytes[..8].copy_from_slice(&self.cleaner.first_dirty_offset.to_be_bytes());
        let crc = crate::protocol::crc32c(&bytes[..8]);
        bytes[8..].copy_from_slice(&crc.to_be_bytes());
        file.write_at(&bytes, 0)?;
        self.cleaner.checkpoint_dirty = true;
        Ok(())
    }

    fn read_segment(&mut self, base: i64) -> io::Result<Vec<u8>> {
        let segment = &self.segments[&base];
        let mut bytes = Vec::with_capacity(segment.size as usize);
        segment
            .log
            .read_into(&mut bytes, 0, segment.size as usize)?;
        self.cleaner.stats.bytes_read += bytes.len() as u64;
        Ok(bytes)
    }

    /// Adds the keys of segment `base` to the pass's offset map.
    fn map_segment(&mut self, base: i64) -> io::Result<()> {
        let bytes = self.read_segment(base)?;
        let pass = self.cleaner.pass.as_mut().expect("started");
        for item in batch::iter_validated(&bytes) {
            let (position, header) = item.map_err(io::Error::other)?;
            if header.is_control() || header.records_count == 0 {
                continue;
            }
            let batch_bytes = &bytes[position..position + header.total_size()];
            let section = batch::records_section(batch_bytes).map_err(io::Error::other)?;
            let records = batch::parse_records(&section, header.records_count as usize)
                .map_err(io::Error::other)?;
            for record in records {
                let Some(key) = record.key else { continue };
                let offset = header.base_offset + record.offset_delta;
                if let Some(latest) = pass.map.get_mut(key) {
                    *latest = (*latest).max(offset);
                } else {
                    pass.map.insert(key.to_vec(), offset);
                    pass.map_bytes += key.len() + MAP_ENTRY_OVERHEAD_BYTES;
                }
            }
        }
        Ok(())
    }

    /// Filters segment `base` with the pass's map. Returns the `.cleaned` file written, or
    /// None if nothing would change.
    fn clean_segment(&mut self, base: i64, now: Millis) -> io::Result<Option<Pending>> {
        let bytes = self.read_segment(base)?;
        let next_offset = self.segments[&base].next_offset;
        let delete_retention_ms = self.config.delete_retention_ms;
        let pass = self.cleaner.pass.as_mut().expect("started");
        let mut batches = Vec::new();
        for item in batch::iter_validated(&bytes) {
            batches.push(item.map_err(io::Error::other)?);
        }
        // Each producer's last batch in this segment keeps its header even when emptied.
        let mut last_of_producer: BTreeMap<i64, usize> = BTreeMap::new();
        for (index, (_, header)) in batches.iter().enumerate() {
            if header.has_producer_id() {
                last_of_producer.insert(header.producer_id, index);
            }
        }
        let mut out = SegmentWriter {
            bytes: Vec::with_capacity(bytes.len()),
            expected: base,
            last: None,
        };
        let mut changed = false;
        let mut removed = 0u64;
        for (index, (position, header)) in batches.iter().enumerate() {
            let original = &bytes[*position..*position + header.total_size()];
            let needs_header = index + 1 == batches.len()
                || (header.has_producer_id()
                    && last_of_producer.get(&header.producer_id) == Some(&index));
            if header.is_control() {
                out.push(original, header);
                continue;
            }
            if header.records_count == 0 {
                if needs_header {
                    out.push(original, header);
                } else {
                    changed = true;
                }
                continue;
            }
            let section = batch::records_section(original).map_err(io::Error::other)?;
            let records = batch::parse_records(&section, header.records_count as usize)
                .map_err(io::Error::other)?;
            let has_horizon = header.attributes & batch::DELETE_HORIZON != 0;
            let horizon_passed = has_horizon && now >= header.base_timestamp;
            let kept: Vec<RecordRef<'_>> = records
                .iter()
                .filter(|record| {
                    let Some(key) = record.key else {
                        // Kafka's cleaner drops keyless records of a compacted log.
                        return false;
                    };
                    let offset = header.base_offset + record.offset_delta;
                    if pass.map.get(key).is_some_and(|&latest| latest > offset) {
                        return false;
                    }
                    !(record.value_is_null && horizon_passed)
                })
                .copied()
                .collect();
            removed += (records.len() - kept.len()) as u64;
            let tombstones = kept.iter().any(|record| record.value_is_null);
            let horizon = if has_horizon {
                Some(header.base_timestamp)
            } else if tombstones {
                Some(now.saturating_add(delete_retention_ms))
            } else {
                None
            };
            if tombstones {
                let horizon = horizon.expect("set for tombstones");
                pass.delete_horizon = Some(pass.delete_horizon.map_or(horizon, |h| h.min(horizon)));
            }
            if kept.len() == records.len() && (has_horizon || !tombstones) {
                out.push(original, header);
                continue;
            }
            changed = true;
            if kept.is_empty() && !needs_header {
                continue;
            }
            let rebuilt = batch::rebuild_batch(original, &kept, horizon.filter(|_| tombstones))
                .map_err(io::Error::other)?;
            let rebuilt_header = batch::parse_header(&rebuilt).map_err(io::Error::other)?;
            out.push(&rebuilt, &rebuilt_header);
        }
        let out = out.bytes;
        if !changed {
            return Ok(None);
        }
        self.cleaner.stats.records_removed += removed;
        self.cleaner.stats.bytes_written += out.len() as u64;
        self.cleaner.stats.segments_rewritten += 1;
        let path = join(&self.dir, &cleaned_name(base));
        match self.storage.remove_file(&path) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
        let file = self.storage.open_file(&path, true)?;
        file.write_at(&out, 0)?;
        self.dirty_dirs.insert(self.dir.clone());
        self.force_sync = true;
        Ok(Some(Pending {
            base,
            file,
            next_offset,
            in_job: false,
            synced: false,
        }))
    }

    /// Swaps a synced `.cleaned` file in for its segment (see the module docs for the order).
    fn swap_in(&mut self, pending: Pending, now: Millis) -> io::Result<()> {
        let cleaned = join(&self.dir, &cleaned_name(pending.base));
        let still_there = self
            .segments
            .get(&pending.base)
            .is_some_and(|s| s.next_offset == pending.next_offset)
            && pending.base != self.active().base_offset;
        if !still_there {
            // Retention or DeleteRecords removed the segment meanwhile.
            return self.storage.remove_file(&cleaned);
        }
        let swap = join(&self.dir, &swap_name(pending.base));
        self.storage.rename(&cleaned, &swap)?;
        delete_segment_files(&*self.storage, &self.dir, pending.base)?;
        self.storage
            .rename(&swap, &join(&self.dir, &log_name(pending.base)))?;
        let (mut segment, cut) = Segment::open(
            &*self.storage,
            &self.dir,
            pending.base,
            false,
            self.config.index_interval_bytes,
            now,
        )?;
        if cut || segment.next_offset != pending.next_offset {
            return Err(io::Error::other(format!(
                "cleaned segment {} ends at {} (cut: {cut}), expected {}",
                pending.base, segment.next_offset, pending.next_offset
            )));
        }
        let old = self.segments.remove(&pending.base).expect("checked");
        segment.roll_base_ms = old.roll_base_ms;
        self.segments.insert(pending.base, segment);
        self.dirty_segments.insert(pending.base);
        self.dirty_dirs.insert(self.dir.clone());
        self.force_sync = true;
        self.clear_read_hint();
        Ok(())
    }
}
