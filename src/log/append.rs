//! Appends: validation (all-or-nothing), offset assignment by header rewrite, one positional
//! write per request, and segment rolls.

use super::*;

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
        if self.closed {
            return Err(AppendError::Closed);
        }
        self.last_now = self.last_now.max(now);
        let (mut headers, record_count) = self.validate_request(batches, false)?;
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
        let (headers, record_count) = self.validate_request(batches, true)?;
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
