//! Appends: validation (all-or-nothing), offset assignment by header rewrite, one positional
//! write per request, and segment rolls.
//!
//! [`PartitionLog::append_shared`] takes batches it may not modify (slices of a request frame
//! that its other partitions share): it writes them as received and then writes each batch's
//! 8-byte base offset over the client's (the base offset is outside the CRC), so the records
//! are never copied in memory on their way from the socket to the file. A crash between those
//! writes leaves a batch whose base offset does not continue the log; recovery stops there, as
//! at any torn write, and the request was not acknowledged.

use super::*;

/// What an append of `headers` (positions and rewritten headers), from `base_offset` up to
/// `next` (exclusive), reports.
fn append_info(
    base_offset: i64,
    next: i64,
    headers: Vec<(usize, BatchHeader)>,
    log_append_time: Option<Millis>,
    record_count: u64,
) -> AppendInfo {
    AppendInfo {
        base_offset,
        last_offset: next - 1,
        max_timestamp: headers
            .iter()
            .map(|(_, h)| h.max_timestamp)
            .max()
            .unwrap_or(NO_TIMESTAMP),
        log_append_time,
        record_count,
        batches: headers.into_iter().map(|(_, h)| h).collect(),
    }
}

impl PartitionLog {
    /// Validates `batches` and returns the headers with their positions, and the record count.
    /// A produced batch (`replicated` false) must have one record per offset, and in a
    /// compacted topic every record needs a key (Kafka refuses keyless records there with
    /// INVALID_RECORD); a replicated batch may come from a cleaned leader segment, so it may
    /// have fewer records than offsets, or none.
    pub(super) fn validate_request(
        &self,
        batches: &[u8],
        replicated: bool,
        crc: batch::Crc,
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
        for item in batch::iter_validated_with(batches, crc) {
            let (position, header) = item.map_err(|error| AppendError::InvalidBatch {
                position: headers
                    .last()
                    .map_or(0, |(p, h): &(usize, BatchHeader)| p + h.total_size()),
                error,
            })?;
            if !replicated {
                if header.records_count == 0 {
                    return Err(AppendError::NoRecords { position });
                }
                if !header.is_dense() {
                    return Err(AppendError::InvalidBatch {
                        position,
                        error: BatchError::InvalidRecordCount {
                            records_count: header.records_count,
                            last_offset_delta: header.last_offset_delta,
                        },
                    });
                }
                let bytes = &batches[position..position + header.total_size()];
                if self.config.cleanup_policy.compact()
                    && !header.is_control()
                    && !batch::all_records_have_keys(bytes)
                        .map_err(|error| AppendError::InvalidBatch { position, error })?
                {
                    return Err(AppendError::RecordWithoutKey { position });
                }
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
        self.append_with(batches, now, batch::Crc::Check)
    }

    /// [`append`](Self::append), skipping the CRC check when the caller already made it on
    /// these bytes ([`batch::Crc::AlreadyChecked`]).
    pub fn append_with(
        &mut self,
        batches: &mut [u8],
        now: Millis,
        crc: batch::Crc,
    ) -> Result<AppendInfo, AppendError> {
        if self.closed {
            return Err(AppendError::Closed);
        }
        self.last_now = self.last_now.max(now);
        let (mut headers, record_count) = self.validate_request(batches, false, crc)?;
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
        Ok(append_info(
            base_offset,
            next,
            headers,
            log_append_time.then_some(now),
            record_count,
        ))
    }

    /// [`append`](Self::append) for batches the caller cannot hand over mutable: the same
    /// validation and result, without copying the records (see the module docs). Under
    /// LogAppendTime the timestamps and CRC change as well, so those batches are copied and
    /// rewritten by `append`.
    pub fn append_shared(
        &mut self,
        batches: &[u8],
        now: Millis,
    ) -> Result<AppendInfo, AppendError> {
        self.append_shared_with(batches, now, batch::Crc::Check)
    }

    /// [`append_shared`](Self::append_shared), skipping the CRC check when the caller already
    /// made it on these bytes ([`batch::Crc::AlreadyChecked`]).
    pub fn append_shared_with(
        &mut self,
        batches: &[u8],
        now: Millis,
        crc: batch::Crc,
    ) -> Result<AppendInfo, AppendError> {
        if self.config.timestamp_type == TimestampType::LogAppendTime {
            return self.append_with(&mut batches.to_vec(), now, crc);
        }
        if self.closed {
            return Err(AppendError::Closed);
        }
        self.last_now = self.last_now.max(now);
        let (mut headers, record_count) = self.validate_request(batches, false, crc)?;
        let base_offset = self.log_end_offset();
        let mut next = base_offset;
        for (_, header) in headers.iter_mut() {
            header.base_offset = next;
            next = header.next_offset();
        }
        self.write_batches_with(batches, &headers, now, true)?;
        self.unsynced_messages += record_count;
        Ok(append_info(base_offset, next, headers, None, record_count))
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
        let (headers, record_count) = self.validate_request(batches, true, batch::Crc::Check)?;
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

    pub(super) fn write_batches(
        &mut self,
        bytes: &[u8],
        headers: &[(usize, BatchHeader)],
        now: Millis,
    ) -> Result<(), AppendError> {
        self.write_batches_with(bytes, headers, now, false)
    }

    /// Writes `bytes` at the end of the active segment (rolling first if due); with
    /// `patch_base_offsets`, then writes each header's base offset over its batch's. Any failed
    /// write truncates back, so nothing of the request stays.
    fn write_batches_with(
        &mut self,
        bytes: &[u8],
        headers: &[(usize, BatchHeader)],
        now: Millis,
        patch_base_offsets: bool,
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
        let written = active.log.write_at(bytes, start).and_then(|()| {
            if !patch_base_offsets {
                return Ok(());
            }
            headers.iter().try_for_each(|(position, header)| {
                let at = start + *position as u64 + batch::BASE_OFFSET_OFFSET as u64;
                active.log.write_at(&header.base_offset.to_be_bytes(), at)
            })
        });
        if let Err(error) = written {
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
    pub(super) fn roll(&mut self, now: Millis) -> io::Result<()> {
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
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::protocol::batch::testing::simple_batch;
    use crate::storage::{SimDisk, StorageFile};

    const DIR: &str = "shared-0";

    /// Two produce requests: one of two batches, one of one batch.
    fn requests() -> Vec<Vec<u8>> {
        let mut two = simple_batch(3, 1_000);
        two.extend_from_slice(&simple_batch(2, 2_000));
        vec![two, simple_batch(4, 3_000)]
    }

    fn log_bytes(log: &PartitionLog) -> Vec<u8> {
        log.read(0, usize::MAX, i64::MAX).unwrap().to_vec()
    }

    fn compare_with_append(config: LogConfig) {
        let mut in_place =
            PartitionLog::open(Arc::new(SimDisk::new(1)), DIR, config.clone(), 0).expect("open");
        let mut shared =
            PartitionLog::open(Arc::new(SimDisk::new(1)), DIR, config, 0).expect("open");
        for request in requests() {
            let received = request.clone();
            let expected = in_place.append(&mut request.clone(), 77).unwrap();
            let info = shared.append_shared(&request, 77).unwrap();
            assert_eq!(request, received, "append_shared must not touch its input");
            assert_eq!(
                (info.base_offset, info.last_offset, info.record_count),
                (
                    expected.base_offset,
                    expected.last_offset,
                    expected.record_count
                )
            );
            assert_eq!(info.max_timestamp, expected.max_timestamp);
            assert_eq!(info.log_append_time, expected.log_append_time);
            assert_eq!(info.batches, expected.batches);
        }
        assert_eq!(shared.log_end_offset(), 9);
        let written = log_bytes(&shared);
        assert_eq!(written, log_bytes(&in_place));
        // The stored batches carry the assigned offsets and still pass their CRC.
        let bases: Vec<i64> = batch::iter_validated(&written)
            .map(|item| item.unwrap().1.base_offset)
            .collect();
        assert_eq!(bases, vec![0, 3, 5]);
    }

    /// The broker writes offsets into batches without copying them; the log must end up
    /// byte-identical to the in-place rewrite (Kafka assigns offsets on append, KIP-98 v2
    /// batches keep the base offset outside the CRC).
    #[test]
    fn append_shared_writes_what_append_writes() {
        compare_with_append(LogConfig::default());
    }

    #[test]
    fn append_shared_rewrites_log_append_time_like_append() {
        compare_with_append(LogConfig {
            timestamp_type: TimestampType::LogAppendTime,
            ..LogConfig::default()
        });
    }

    #[test]
    fn append_shared_validates_like_append() {
        let mut log = PartitionLog::open(Arc::new(SimDisk::new(1)), DIR, LogConfig::default(), 0)
            .expect("open");
        let mut corrupt = simple_batch(2, 0);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 1;
        let mut request = simple_batch(1, 0);
        request.extend_from_slice(&corrupt);
        assert!(matches!(
            log.append_shared(&request, 0),
            Err(AppendError::InvalidBatch { .. })
        ));
        assert!(matches!(log.append_shared(&[], 0), Err(AppendError::Empty)));
        assert_eq!(log.log_end_offset(), 0);
        assert!(log_bytes(&log).is_empty());
    }

    /// Storage whose segment files refuse 8-byte writes while `fail` is set: the base-offset
    /// writes of `append_shared`.
    #[derive(Debug)]
    struct FailingOffsetWrites {
        disk: SimDisk,
        fail: Arc<AtomicBool>,
    }

    #[derive(Debug)]
    struct FailingFile {
        file: Arc<dyn StorageFile>,
        segment: bool,
        fail: Arc<AtomicBool>,
    }

    impl Storage for FailingOffsetWrites {
        fn create_dir_all(&self, dir: &str) -> io::Result<()> {
            self.disk.create_dir_all(dir)
        }
        fn list_dir(&self, dir: &str) -> io::Result<Vec<String>> {
            self.disk.list_dir(dir)
        }
        fn open_file(&self, path: &str, create: bool) -> io::Result<Arc<dyn StorageFile>> {
            Ok(Arc::new(FailingFile {
                file: self.disk.open_file(path, create)?,
                segment: path.ends_with(".log"),
                fail: self.fail.clone(),
            }))
        }
        fn exists(&self, path: &str) -> bool {
            self.disk.exists(path)
        }
        fn remove_file(&self, path: &str) -> io::Result<()> {
            self.disk.remove_file(path)
        }
        fn remove_dir_all(&self, dir: &str) -> io::Result<()> {
            self.disk.remove_dir_all(dir)
        }
        fn rename(&self, from: &str, to: &str) -> io::Result<()> {
            self.disk.rename(from, to)
        }
        fn sync_dir(&self, dir: &str) -> io::Result<()> {
            self.disk.sync_dir(dir)
        }
    }

    impl StorageFile for FailingFile {
        fn len(&self) -> io::Result<u64> {
            self.file.len()
        }
        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            self.file.read_exact_at(buf, offset)
        }
        fn read_into(&self, out: &mut Vec<u8>, offset: u64, len: usize) -> io::Result<()> {
            self.file.read_into(out, offset, len)
        }
        fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
            if self.segment && buf.len() == 8 && self.fail.load(Ordering::SeqCst) {
                return Err(io::Error::other("injected write failure"));
            }
            self.file.write_at(buf, offset)
        }
        fn set_len(&self, len: u64) -> io::Result<()> {
            self.file.set_len(len)
        }
        fn sync_data(&self) -> io::Result<()> {
            self.file.sync_data()
        }
    }

    /// No partial writes: when writing an assigned base offset fails, the records written
    /// just before are truncated away and the next append takes the same offsets.
    #[test]
    fn a_failed_base_offset_write_leaves_nothing_behind() {
        let disk = SimDisk::new(1);
        let fail = Arc::new(AtomicBool::new(false));
        let storage = Arc::new(FailingOffsetWrites {
            disk: disk.clone(),
            fail: fail.clone(),
        });
        let mut log = PartitionLog::open(storage, DIR, LogConfig::default(), 0).expect("open");
        let first = simple_batch(2, 0);
        log.append_shared(&first, 0).unwrap();
        let segment = join(DIR, &segment::log_name(0));
        let size_before = disk.contents(&segment).unwrap().len();
        fail.store(true, Ordering::SeqCst);
        let request = &requests()[0];
        assert!(log.append_shared(request, 0).is_err());
        assert_eq!(log.log_end_offset(), 2);
        assert_eq!(disk.contents(&segment).unwrap().len(), size_before);
        fail.store(false, Ordering::SeqCst);
        let info = log.append_shared(request, 0).unwrap();
        assert_eq!((info.base_offset, info.last_offset), (2, 6));
        let bases: Vec<i64> = batch::iter_validated(&log_bytes(&log))
            .map(|item| item.unwrap().1.base_offset)
            .collect();
        assert_eq!(bases, vec![0, 2, 5]);
    }
}
