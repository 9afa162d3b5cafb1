//! Sparse per-segment indexes: fixed-size entries appended in memory and written in blocks,
//! searched by binary search over the file plus the unwritten tail.
//!
//! - Offset index (`.index`): 8-byte entries `relative_offset: u32, position: u32` (big
//!   endian): the batch whose base offset is `segment base + relative_offset` starts at
//!   `position` in the segment's `.log`.
//! - Time index (`.timeindex`): 12-byte entries `max_timestamp_before: i64, relative_offset:
//!   u32`: every batch of the segment before that offset has a max timestamp of at most
//!   `max_timestamp_before`. Entry `i` of both files always names the same batch (they are
//!   appended together every `index.interval.bytes`), so a time lookup gets its position from
//!   the offset index's entry `i`.
//!
//! Lookups read entries with positional reads, so a closed segment's index costs no memory and
//! a lookup costs O(log n) small reads whatever the log's size.

use std::io;
use std::sync::Arc;

use crate::storage::StorageFile;

pub const OFFSET_ENTRY_SIZE: usize = 8;
pub const TIME_ENTRY_SIZE: usize = 12;
/// Unwritten index bytes kept in memory before they are written to the file in one write.
pub const INDEX_WRITE_BLOCK_BYTES: usize = 4096;

#[derive(Debug)]
pub struct Index {
    file: Arc<dyn StorageFile>,
    entry_size: usize,
    /// Entries already in the file.
    written: u64,
    /// Entries appended since, not yet written.
    pending: Vec<u8>,
}

impl Index {
    /// Wraps an index file. Returns the index and whether the file's length was a whole
    /// number of entries (a partial trailing entry is dropped either way).
    pub fn open(file: Arc<dyn StorageFile>, entry_size: usize) -> io::Result<(Index, bool)> {
        let len = file.len()?;
        let whole = len % entry_size as u64 == 0;
        let written = len / entry_size as u64;
        if !whole {
            file.set_len(written * entry_size as u64)?;
        }
        Ok((
            Index {
                file,
                entry_size,
                written,
                pending: Vec::new(),
            },
            whole,
        ))
    }

    pub fn file(&self) -> &Arc<dyn StorageFile> {
        &self.file
    }

    /// Number of entries (written and pending).
    pub fn len(&self) -> u64 {
        self.written + (self.pending.len() / self.entry_size) as u64
    }

    /// Reads entry `i` into `out[..entry_size]`.
    pub fn entry(&self, i: u64, out: &mut [u8]) -> io::Result<()> {
        let out = &mut out[..self.entry_size];
        if i >= self.written {
            let at = (i - self.written) as usize * self.entry_size;
            out.copy_from_slice(&self.pending[at..at + self.entry_size]);
            Ok(())
        } else {
            self.file.read_exact_at(out, i * self.entry_size as u64)
        }
    }

    pub fn push(&mut self, entry: &[u8]) {
        debug_assert_eq!(entry.len(), self.entry_size);
        self.pending.extend_from_slice(entry);
    }

    /// Whether enough entries are pending to be worth one write.
    pub fn wants_write(&self) -> bool {
        self.pending.len() >= INDEX_WRITE_BLOCK_BYTES
    }

    /// Writes pending entries to the file (no sync). Returns whether anything was written.
    pub fn write_pending(&mut self) -> io::Result<bool> {
        if self.pending.is_empty() {
            return Ok(false);
        }
        self.file
            .write_at(&self.pending, self.written * self.entry_size as u64)?;
        self.written += (self.pending.len() / self.entry_size) as u64;
        self.pending.clear();
        Ok(true)
    }

    /// Keeps only the first `entries` entries.
    pub fn truncate(&mut self, entries: u64) -> io::Result<()> {
        if entries >= self.len() {
            return Ok(());
        }
        if entries >= self.written {
            self.pending
                .truncate((entries - self.written) as usize * self.entry_size);
        } else {
            self.pending.clear();
            self.written = entries;
            self.file.set_len(entries * self.entry_size as u64)?;
        }
        Ok(())
    }

    /// The last entry whose key is <= `target`, assuming keys never decrease. `key` decodes an
    /// entry's search key.
    pub fn last_at_or_below(
        &self,
        target: i64,
        key: impl Fn(&[u8]) -> i64,
    ) -> io::Result<Option<u64>> {
        let mut buf = [0u8; 16];
        // Invariant: entries below `low` have key <= target, entries from `high` on have key >
        // target.
        let (mut low, mut high) = (0u64, self.len());
        while low < high {
            let middle = low + (high - low) / 2;
            self.entry(middle, &mut buf)?;
            if key(&buf[..self.entry_size]) <= target {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        Ok(low.checked_sub(1))
    }
}

pub fn offset_entry(relative_offset: u32, position: u32) -> [u8; OFFSET_ENTRY_SIZE] {
    let mut entry = [0u8; OFFSET_ENTRY_SIZE];
    entry[..4].copy_from_slice(&relative_offset.to_be_bytes());
    entry[4..].copy_from_slice(&position.to_be_bytes());
    entry
}

pub fn time_entry(max_timestamp_before: i64, relative_offset: u32) -> [u8; TIME_ENTRY_SIZE] {
    let mut entry = [0u8; TIME_ENTRY_SIZE];
    entry[..8].copy_from_slice(&max_timestamp_before.to_be_bytes());
    entry[8..].copy_from_slice(&relative_offset.to_be_bytes());
    entry
}

/// (relative offset, position) of an offset index entry.
pub fn decode_offset_entry(entry: &[u8]) -> (u32, u32) {
    (
        u32::from_be_bytes(entry[..4].try_into().expect("4 bytes")),
        u32::from_be_bytes(entry[4..8].try_into().expect("4 bytes")),
    )
}

/// (max timestamp before, relative offset) of a time index entry.
pub fn decode_time_entry(entry: &[u8]) -> (i64, u32) {
    (
        i64::from_be_bytes(entry[..8].try_into().expect("8 bytes")),
        u32::from_be_bytes(entry[8..12].try_into().expect("4 bytes")),
    )
}
