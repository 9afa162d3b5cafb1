//! One segment: a `.log` file of consecutive v2 batches starting at `base_offset`, with its
//! offset and time indexes, and the in-memory summary the log needs (end offset, size, max
//! timestamp).

use std::io;
use std::sync::Arc;

use super::index::{
    decode_offset_entry, decode_time_entry, offset_entry, time_entry, Index, OFFSET_ENTRY_SIZE,
    TIME_ENTRY_SIZE,
};
use crate::protocol::batch::{self, BatchHeader, HEADER_SIZE, LOG_OVERHEAD};
use crate::storage::{join, Storage, StorageFile};
use crate::Millis;

/// Bytes read at a time when validating a segment (recovery reads everything).
const VERIFY_CHUNK_BYTES: usize = 256 * 1024;
/// Bytes read at a time when only walking headers (a lookup crosses at most about
/// index.interval.bytes plus one batch, and large batches need only their header).
const HEADER_CHUNK_BYTES: usize = 4096;

/// No timestamp seen yet.
pub const NO_TIMESTAMP: i64 = i64::MIN;

pub fn log_name(base_offset: i64) -> String {
    format!("{base_offset:020}.log")
}

pub fn index_name(base_offset: i64) -> String {
    format!("{base_offset:020}.index")
}

pub fn time_index_name(base_offset: i64) -> String {
    format!("{base_offset:020}.timeindex")
}

/// The base offset named by a `.log` file name, if it is one.
pub fn parse_log_name(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

#[derive(Debug)]
pub struct Segment {
    pub base_offset: i64,
    /// Offset after the last batch (== base_offset when empty).
    pub next_offset: i64,
    /// Bytes of valid batches in the `.log` file.
    pub size: u64,
    pub log: Arc<dyn StorageFile>,
    pub offset_index: Index,
    pub time_index: Index,
    /// Bytes appended since the last index entry.
    pub bytes_since_index: u64,
    /// Largest batch max timestamp in the segment, NO_TIMESTAMP when empty.
    pub max_timestamp: i64,
    /// When the segment started counting toward segment.ms (creation or reopen time).
    pub roll_base_ms: Millis,
}

/// Where [`Segment::find_batch`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    /// The batch holding the offset, at this position.
    Found(u64, BatchHeader),
    /// At `position` a batch starting at `expected_offset` must be, and the bytes there are
    /// not one (header unparsable or past the segment's end, wrong base offset, last offset
    /// outside the segment).
    Unreadable { position: u64, expected_offset: i64 },
    /// The offset is at or past the segment's next offset.
    End,
}

/// What a scan callback decides about the batch it is shown.
pub enum Step {
    Continue,
    Stop,
}

/// How a scan ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanEnd {
    /// Reached `end` exactly after a whole batch.
    End,
    /// The callback stopped at the batch at `position`.
    Stopped,
    /// Bytes at `position` are not a valid batch (torn, corrupt, or out of sequence).
    Invalid,
}

/// Walks the batches of `file` from `start` to `end`. With `verify`, each batch is fully read
/// and validated (CRC) and the callback sees its bytes; otherwise only headers are read.
/// Returns how it ended and the position where it ended (after the last accepted batch, or at
/// the batch that stopped it).
pub fn scan(
    file: &dyn StorageFile,
    start: u64,
    end: u64,
    verify: bool,
    mut visit: impl FnMut(u64, &BatchHeader, Option<&[u8]>) -> Step,
) -> io::Result<(ScanEnd, u64)> {
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_start = start;
    let mut position = start;
    while position < end {
        let header_end = position + HEADER_SIZE as u64;
        if header_end > end {
            return Ok((ScanEnd::Invalid, position));
        }
        let chunk = if verify {
            VERIFY_CHUNK_BYTES
        } else {
            HEADER_CHUNK_BYTES
        };
        ensure(
            file,
            &mut buf,
            &mut buf_start,
            position,
            HEADER_SIZE,
            end,
            chunk,
        )?;
        let at = (position - buf_start) as usize;
        let header = match batch::parse_header(&buf[at..]) {
            Ok(header) => header,
            Err(_) => return Ok((ScanEnd::Invalid, position)),
        };
        let total = header.total_size();
        if position + total as u64 > end {
            return Ok((ScanEnd::Invalid, position));
        }
        let bytes = if verify {
            ensure(file, &mut buf, &mut buf_start, position, total, end, chunk)?;
            let at = (position - buf_start) as usize;
            let bytes = &buf[at..at + total];
            if batch::validate(bytes).is_err() {
                return Ok((ScanEnd::Invalid, position));
            }
            Some(bytes)
        } else {
            None
        };
        if let Step::Stop = visit(position, &header, bytes) {
            return Ok((ScanEnd::Stopped, position));
        }
        position += total as u64;
    }
    Ok((ScanEnd::End, position))
}

/// Makes `buf` hold file bytes `[position, position + need)`, reading a chunk if not.
fn ensure(
    file: &dyn StorageFile,
    buf: &mut Vec<u8>,
    buf_start: &mut u64,
    position: u64,
    need: usize,
    end: u64,
    chunk: usize,
) -> io::Result<()> {
    let buf_end = *buf_start + buf.len() as u64;
    if position >= *buf_start && position + need as u64 <= buf_end {
        return Ok(());
    }
    let len = (need.max(chunk) as u64).min(end - position) as usize;
    buf.clear();
    file.read_into(buf, position, len)?;
    *buf_start = position;
    Ok(())
}

impl Segment {
    /// Creates an empty segment's files. Files left under the same names (a segment waiting
    /// for deletion, or one a truncation replaces) are removed first: bytes that may be on
    /// disk are never overwritten in place, so a torn write can only damage a tail.
    pub fn create(
        storage: &dyn Storage,
        dir: &str,
        base_offset: i64,
        now: Millis,
    ) -> io::Result<Segment> {
        delete_segment_files(storage, dir, base_offset)?;
        let log = storage.open_file(&join(dir, &log_name(base_offset)), true)?;
        log.set_len(0)?;
        let index_file = storage.open_file(&join(dir, &index_name(base_offset)), true)?;
        index_file.set_len(0)?;
        let time_file = storage.open_file(&join(dir, &time_index_name(base_offset)), true)?;
        time_file.set_len(0)?;
        Ok(Segment {
            base_offset,
            next_offset: base_offset,
            size: 0,
            log,
            offset_index: Index::open(index_file, OFFSET_ENTRY_SIZE)?.0,
            time_index: Index::open(time_file, TIME_ENTRY_SIZE)?.0,
            bytes_since_index: 0,
            max_timestamp: NO_TIMESTAMP,
            roll_base_ms: now,
        })
    }

    /// Opens an existing segment and recovers it. With `trust_prefix`, the indexes are trusted
    /// up to their last entry (after a sanity check) and only the batches from there on are
    /// validated; otherwise the whole segment is validated and the indexes rebuilt. Batches
    /// after the first invalid one (torn, corrupt, or not continuing the offsets) are cut.
    /// Returns the segment and whether anything was cut.
    pub fn open(
        storage: &dyn Storage,
        dir: &str,
        base_offset: i64,
        trust_prefix: bool,
        index_interval_bytes: u32,
        now: Millis,
    ) -> io::Result<(Segment, bool)> {
        let log = storage.open_file(&join(dir, &log_name(base_offset)), false)?;
        let file_size = log.len()?;
        let index_file = storage.open_file(&join(dir, &index_name(base_offset)), true)?;
        let time_file = storage.open_file(&join(dir, &time_index_name(base_offset)), true)?;
        let (offset_index, offset_whole) = Index::open(index_file, OFFSET_ENTRY_SIZE)?;
        let (time_index, time_whole) = Index::open(time_file, TIME_ENTRY_SIZE)?;
        let mut segment = Segment {
            base_offset,
            next_offset: base_offset,
            size: file_size,
            log,
            offset_index,
            time_index,
            bytes_since_index: 0,
            max_timestamp: NO_TIMESTAMP,
            roll_base_ms: now,
        };
        let resume = if trust_prefix && offset_whole && time_whole {
            segment.sane_last_entry()?
        } else {
            None
        };
        let cut = match resume {
            Some((position, next_offset, max_before)) => {
                match segment.recover_from(
                    position,
                    next_offset,
                    max_before,
                    index_interval_bytes,
                )? {
                    Some(cut) => cut,
                    // The trusted entry does not point at a valid batch: distrust the index.
                    None => segment
                        .recover_from(0, base_offset, NO_TIMESTAMP, index_interval_bytes)?
                        .unwrap_or(true),
                }
            }
            None => segment
                .recover_from(0, base_offset, NO_TIMESTAMP, index_interval_bytes)?
                .unwrap_or(true),
        };
        Ok((segment, cut))
    }

    /// The last index entry as (position, offset, max timestamp before), if both indexes agree
    /// on it and it lies inside the file.
    fn sane_last_entry(&self) -> io::Result<Option<(u64, i64, i64)>> {
        let count = self.offset_index.len();
        if count != self.time_index.len() {
            return Ok(None);
        }
        if count == 0 {
            return Ok(Some((0, self.base_offset, NO_TIMESTAMP)));
        }
        let mut buf = [0u8; 16];
        self.offset_index.entry(count - 1, &mut buf)?;
        let (relative, position) = decode_offset_entry(&buf);
        self.time_index.entry(count - 1, &mut buf)?;
        let (max_before, time_relative) = decode_time_entry(&buf);
        if relative != time_relative || position as u64 >= self.size || position == 0 {
            return Ok(None);
        }
        Ok(Some((
            position as u64,
            self.base_offset + relative as i64,
            max_before,
        )))
    }

    /// Validates batches from `position` (where a batch starting at `expected_offset` must be)
    /// to the end of the file, re-adding index entries, and cuts the file at the first invalid
    /// batch. Returns Some(whether it cut), or None when the very first batch at a non-zero
    /// position is invalid (so the caller should distrust the index and start over from 0).
    fn recover_from(
        &mut self,
        position: u64,
        expected_offset: i64,
        max_before: i64,
        index_interval_bytes: u32,
    ) -> io::Result<Option<bool>> {
        let entries_kept = if position == 0 {
            0
        } else {
            self.offset_index.len()
        };
        self.offset_index.truncate(entries_kept)?;
        self.time_index.truncate(entries_kept)?;
        let file_size = self.log.len()?;
        let mut expected = expected_offset;
        let mut max_timestamp = max_before;
        let mut bytes_since_index = 0u64;
        let mut first = true;
        let base_offset = self.base_offset;
        let offset_index = &mut self.offset_index;
        let time_index = &mut self.time_index;
        let (end, at) = scan(&*self.log, position, file_size, true, |at, header, _| {
            if header.base_offset != expected
                || header.last_offset() - base_offset > u32::MAX as i64
                || at > u32::MAX as u64
            {
                return Step::Stop;
            }
            let skip_entry = first && at > 0;
            first = false;
            if !skip_entry && at > 0 && bytes_since_index >= index_interval_bytes as u64 {
                let relative = (header.base_offset - base_offset) as u32;
                offset_index.push(&offset_entry(relative, at as u32));
                time_index.push(&time_entry(max_timestamp, relative));
                bytes_since_index = 0;
            }
            bytes_since_index += header.total_size() as u64;
            max_timestamp = max_timestamp.max(header.max_timestamp);
            expected = header.next_offset();
            Step::Continue
        })?;
        if end != ScanEnd::End && at == position && position > 0 {
            return Ok(None);
        }
        let cut = end != ScanEnd::End;
        if cut {
            self.log.set_len(at)?;
        }
        self.size = at;
        self.next_offset = expected;
        self.max_timestamp = max_timestamp;
        self.bytes_since_index = bytes_since_index;
        Ok(Some(cut))
    }

    /// Records a batch just written at `position` for the indexes and summary.
    pub fn note_appended(&mut self, position: u64, header: &BatchHeader, interval_bytes: u32) {
        if position > 0 && self.bytes_since_index >= interval_bytes as u64 {
            let relative = (header.base_offset - self.base_offset) as u32;
            self.offset_index
                .push(&offset_entry(relative, position as u32));
            self.time_index
                .push(&time_entry(self.max_timestamp, relative));
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += header.total_size() as u64;
        self.max_timestamp = self.max_timestamp.max(header.max_timestamp);
        self.next_offset = header.next_offset();
    }

    /// Writes pending index entries (no sync). Returns whether anything was written.
    pub fn write_indexes(&mut self) -> io::Result<bool> {
        let a = self.offset_index.write_pending()?;
        let b = self.time_index.write_pending()?;
        Ok(a || b)
    }

    /// Position of the batch an index lookup says to start scanning from for `offset`.
    fn index_position(&self, offset: i64) -> io::Result<u64> {
        Ok(self.index_entry(offset)?.0)
    }

    /// (position, base offset) of the batch an index lookup says to start scanning from for
    /// `offset`: the last index entry at or below it, or the segment's start.
    fn index_entry(&self, offset: i64) -> io::Result<(u64, i64)> {
        let relative = offset - self.base_offset;
        let found = self
            .offset_index
            .last_at_or_below(relative, |entry| decode_offset_entry(entry).0 as i64)?;
        Ok(match found {
            Some(i) => {
                let mut buf = [0u8; 16];
                self.offset_index.entry(i, &mut buf)?;
                let (relative, position) = decode_offset_entry(&buf);
                (position as u64, self.base_offset + relative as i64)
            }
            None => (0, self.base_offset),
        })
    }

    /// The base offset of the first batch the offset index names above `offset`, inside this
    /// segment: a place a read can start from without walking the bytes before it (so past
    /// damage at or below `offset`). None if no entry lies above it.
    pub fn indexed_offset_after(&self, offset: i64) -> io::Result<Option<i64>> {
        let relative = offset - self.base_offset;
        let next = match self
            .offset_index
            .last_at_or_below(relative, |entry| decode_offset_entry(entry).0 as i64)?
        {
            Some(i) => i + 1,
            None => 0,
        };
        if next >= self.offset_index.len() {
            return Ok(None);
        }
        let mut buf = [0u8; 16];
        self.offset_index.entry(next, &mut buf)?;
        let found = self.base_offset + decode_offset_entry(&buf).0 as i64;
        // Indexes are not checksummed: an entry outside the segment names nothing.
        Ok((found > offset && found < self.next_offset).then_some(found))
    }

    /// Whether `header`, found at a position where a batch starting at `expected_offset` must
    /// be, is structurally that batch: the right base offset and a last offset inside the
    /// segment (the header parsed and fits in the file already).
    pub fn batch_fits(&self, header: &BatchHeader, expected_offset: i64) -> bool {
        header.base_offset == expected_offset
            && header.last_offset_delta >= 0
            && header.last_offset() < self.next_offset
    }

    /// Finds the batch holding `offset` by walking headers from the nearest index entry and
    /// checking the structure every batch has (batches are contiguous in offsets and bytes:
    /// recovery and the cleaner keep them so). Unlike [`Segment::locate`] it tells a corrupt
    /// batch apart from an offset past the segment: a closed segment below the recovery point
    /// is never re-validated (as in Kafka), so its bytes may have rotted since they were
    /// written. Reads only headers; CRCs are the consumer's to check.
    pub fn find_batch(&self, offset: i64) -> io::Result<Walk> {
        if offset >= self.next_offset {
            return Ok(Walk::End);
        }
        let start = self.index_entry(offset)?;
        // The segment's summary says the offset is here: a walk that ends before it found
        // batches ending early, which is corruption too.
        match self.walk_from_entry(start, |header| header.last_offset() >= offset)? {
            Walk::End => Ok(Walk::Unreadable {
                position: self.size,
                expected_offset: self.next_offset,
            }),
            walk => Ok(walk),
        }
    }

    /// Like [`Segment::find_batch`], for the first batch with max timestamp >= `timestamp`
    /// that also satisfies `wanted` (ListOffsets by timestamp), starting from the time
    /// index. `End` when there is none.
    pub fn find_batch_by_timestamp(
        &self,
        timestamp: i64,
        wanted: impl Fn(&BatchHeader) -> bool,
    ) -> io::Result<Walk> {
        let start = self.time_entry(timestamp)?;
        self.walk_from_entry(start, |header| {
            header.max_timestamp >= timestamp && wanted(header)
        })
    }

    /// Walks from an index entry (position, base offset of the batch there). A walk that
    /// breaks right at the entry distrusts the index (indexes are not checksummed) and walks
    /// again from the segment's start.
    fn walk_from_entry(
        &self,
        (start, start_offset): (u64, i64),
        wanted: impl Fn(&BatchHeader) -> bool,
    ) -> io::Result<Walk> {
        // Not from the segment's start already (an entry may name position 0 with a wrong
        // offset: log_recovery fuzz target, an index byte flipped before a crash).
        let from_start = start == 0 && start_offset == self.base_offset;
        match self.walk(start, start_offset, &wanted)? {
            Walk::Unreadable { position, .. } if !from_start && position == start => {
                self.walk(0, self.base_offset, &wanted)
            }
            walk => Ok(walk),
        }
    }

    /// Walks from the batch at `start`, which must begin at `start_offset`, to the first
    /// batch that satisfies `wanted`, checking each batch's structure on the way.
    fn walk(
        &self,
        start: u64,
        start_offset: i64,
        wanted: &impl Fn(&BatchHeader) -> bool,
    ) -> io::Result<Walk> {
        let mut expected = start_offset;
        let mut found = None;
        let (end, at) = scan(
            &*self.log,
            start,
            self.size,
            false,
            |position, header, _| {
                if !self.batch_fits(header, expected) {
                    return Step::Stop;
                }
                if wanted(header) {
                    found = Some((position, *header));
                    return Step::Stop;
                }
                expected = header.next_offset();
                Step::Continue
            },
        )?;
        Ok(match found {
            Some((position, header)) => Walk::Found(position, header),
            None if end == ScanEnd::End && expected == self.next_offset => Walk::End,
            None => Walk::Unreadable {
                position: at,
                expected_offset: expected,
            },
        })
    }

    /// The header of the batch at `position`, if one parses there.
    pub fn header_at(&self, position: u64) -> io::Result<Option<BatchHeader>> {
        if position + HEADER_SIZE as u64 > self.size {
            return Ok(None);
        }
        let mut buf = [0u8; HEADER_SIZE];
        self.log.read_exact_at(&mut buf, position)?;
        Ok(batch::parse_header(&buf)
            .ok()
            .filter(|header| position + header.total_size() as u64 <= self.size))
    }

    /// The first batch (position, header) whose last offset is >= `offset`, if any.
    pub fn locate(&self, offset: i64) -> io::Result<Option<(u64, BatchHeader)>> {
        let start = self.index_position(offset)?;
        match self.first_batch_where(start, |header| header.last_offset() >= offset)? {
            Some((position, header)) if start == 0 || header.base_offset <= offset => {
                Ok(Some((position, header)))
            }
            // The index led past the offset or to garbage: fall back to a full scan.
            _ if start > 0 => self.first_batch_where(0, |header| header.last_offset() >= offset),
            _ => Ok(None),
        }
    }

    /// The first batch from `start` that satisfies `wanted`.
    pub fn first_batch_where(
        &self,
        start: u64,
        wanted: impl Fn(&BatchHeader) -> bool,
    ) -> io::Result<Option<(u64, BatchHeader)>> {
        let mut found = None;
        let (end, _) = scan(
            &*self.log,
            start,
            self.size,
            false,
            |position, header, _| {
                if wanted(header) {
                    found = Some((position, *header));
                    Step::Stop
                } else {
                    Step::Continue
                }
            },
        )?;
        if end == ScanEnd::Invalid {
            return Ok(None);
        }
        Ok(found)
    }

    /// (position, base offset) of the batch to start scanning from for the first batch with
    /// max timestamp >= `timestamp`.
    fn time_entry(&self, timestamp: i64) -> io::Result<(u64, i64)> {
        let Some(below) = timestamp.checked_sub(1) else {
            return Ok((0, self.base_offset));
        };
        let found = self
            .time_index
            .last_at_or_below(below, |entry| decode_time_entry(entry).0)?;
        Ok(match found {
            Some(i) => {
                let mut buf = [0u8; 16];
                self.offset_index.entry(i, &mut buf)?;
                let (relative, position) = decode_offset_entry(&buf);
                (position as u64, self.base_offset + relative as i64)
            }
            None => (0, self.base_offset),
        })
    }

    /// Cuts the segment before the batch at `position` (whose base offset is `offset`),
    /// dropping index entries at or past it and recomputing the summary.
    pub fn truncate_at(&mut self, position: u64, offset: i64) -> io::Result<()> {
        let relative = offset - self.base_offset;
        let keep = match self
            .offset_index
            .last_at_or_below(relative - 1, |entry| decode_offset_entry(entry).0 as i64)?
        {
            Some(i) => i + 1,
            None => 0,
        };
        self.offset_index.truncate(keep)?;
        self.time_index.truncate(keep)?;
        self.log.set_len(position)?;
        self.size = position;
        self.next_offset = offset;
        // Recompute the summary from the last remaining index entry.
        let (start, max_before) = match keep {
            0 => (0, NO_TIMESTAMP),
            _ => {
                let mut buf = [0u8; 16];
                self.offset_index.entry(keep - 1, &mut buf)?;
                let position = decode_offset_entry(&buf).1;
                self.time_index.entry(keep - 1, &mut buf)?;
                (position as u64, decode_time_entry(&buf).0)
            }
        };
        let mut max_timestamp = max_before;
        let mut bytes_since_index = 0u64;
        scan(&*self.log, start, self.size, false, |_, header, _| {
            max_timestamp = max_timestamp.max(header.max_timestamp);
            bytes_since_index += header.total_size() as u64;
            Step::Continue
        })?;
        self.max_timestamp = max_timestamp;
        self.bytes_since_index = bytes_since_index;
        Ok(())
    }

    /// Removes the segment's files.
    pub fn delete_files(&self, storage: &dyn Storage, dir: &str) -> io::Result<()> {
        delete_segment_files(storage, dir, self.base_offset)
    }
}

/// Removes a segment's files (the log first, so an interrupted deletion leaves only orphan
/// indexes, which open removes).
pub fn delete_segment_files(storage: &dyn Storage, dir: &str, base_offset: i64) -> io::Result<()> {
    for name in [
        log_name(base_offset),
        index_name(base_offset),
        time_index_name(base_offset),
    ] {
        match storage.remove_file(&join(dir, &name)) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
    }
    Ok(())
}

/// Size and next offset of the batch at `buf[at..]` if it structurally follows its
/// predecessor, checked from the raw header fields (what [`Segment::batch_fits`] checks, plus
/// magic and length, for bytes already in memory): its header is there, its base offset is
/// `expected_offset`, it lies whole in `buf`, and it ends below `limit_offset`.
pub fn batch_follows_at(
    buf: &[u8],
    at: usize,
    expected_offset: i64,
    limit_offset: i64,
) -> Option<(usize, i64)> {
    let header = buf.get(at..at + HEADER_SIZE)?;
    let i32_at = |at: usize| {
        i32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let base_offset = i64::from_be_bytes(header[..8].try_into().ok()?);
    let length = i32_at(8);
    // v2 header layout: magic at byte 16, last offset delta at bytes 23..27.
    let magic = header[16];
    let last_offset_delta = i32_at(23);
    if base_offset != expected_offset
        || length < batch::MIN_BATCH_LENGTH
        || magic != 2
        || last_offset_delta < 0
    {
        return None;
    }
    let size = LOG_OVERHEAD + length as usize;
    let next_offset = base_offset + last_offset_delta as i64 + 1;
    (at + size <= buf.len() && next_offset <= limit_offset).then_some((size, next_offset))
}
