//! Reads: fetch by offset (KIP-74 whole batches, one positional read), timestamps
//! (ListOffsets, KIP-734) and the batch-header walk that rebuilds producer state.

use super::*;

impl PartitionLog {
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
    pub(super) fn hinted_batch(
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

    pub(super) fn clear_read_hint(&mut self) {
        if let Ok(hint) = self.read_hint.get_mut() {
            *hint = None;
        }
    }

    /// The segment whose offsets include `offset`.
    pub(super) fn segment_containing(&self, offset: i64) -> Option<&Segment> {
        self.segments
            .range(..=offset)
            .next_back()
            .map(|(_, s)| s)
            .filter(|s| offset < s.next_offset)
    }

    /// First (offset, timestamp) at or after `log_start_offset` in `segment` whose record
    /// timestamp is >= `timestamp`. Record granularity for uncompressed batches, batch
    /// granularity (base offset, batch max timestamp) for compressed ones.
    pub(super) fn find_timestamp_in(
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

    pub(super) fn live_segments(&self) -> impl Iterator<Item = &Segment> {
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
}
