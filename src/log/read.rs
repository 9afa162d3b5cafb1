//! Reads: fetch by offset (KIP-74 whole batches, one positional read), timestamps
//! (ListOffsets, KIP-734) and the batch-header walk that rebuilds producer state.

use super::*;
use segment::Walk;

impl PartitionLog {
    /// Returns whole batches starting at the batch that contains `offset`, stopping before
    /// `max_offset` (exclusive) and after `max_bytes`, but always at least one whole batch if
    /// one is available (KIP-74). Empty when `offset == max_offset` or `== log_end_offset`.
    /// Reads from one segment: the caller fetches again for more.
    ///
    /// Below the log end the answer is never empty: where the batch holding `offset` must be
    /// and is not (bytes rotted in a segment recovery no longer re-validates),
    /// [`ReadError::Corrupt`] (CORRUPT_MESSAGE, as Kafka's ReplicaManager answers a
    /// CorruptRecordException). The returned bytes stop before the first batch that breaks
    /// the structure, so the next read at that offset gets the error.
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
            // Segments are contiguous up to the log end (recovery cuts at a gap).
            return Err(ReadError::Corrupt {
                offset,
                segment_base_offset: offset,
                position: 0,
                expected_offset: offset,
            });
        };
        let corrupt = |position, expected_offset| ReadError::Corrupt {
            offset,
            segment_base_offset: segment.base_offset,
            position,
            expected_offset,
        };
        let (start, first) = match self.hinted_batch(segment, offset)? {
            Some(found) => found,
            None => match segment.find_batch(offset)? {
                Walk::Found(position, header) => (position, header),
                Walk::Unreadable {
                    position,
                    expected_offset,
                } => return Err(corrupt(position, expected_offset)),
                // segment_containing said offset < next_offset.
                Walk::End => return Err(corrupt(segment.size, segment.next_offset)),
            },
        };
        if first.last_offset() >= max_offset {
            // The batch straddles max_offset (e.g. the high watermark): not readable yet.
            return Ok(Bytes::new());
        }
        let first_size = first.total_size();
        let upper = match segment.find_batch(max_offset)? {
            Walk::Found(position, _) => position,
            // Serve what is whole before the break; the next read there gets the error.
            Walk::Unreadable { position, .. } => position.max(start + first_size as u64),
            Walk::End => segment.size,
        };
        let available = (upper - start) as usize;
        let len = if available <= max_bytes || first_size >= max_bytes {
            available.min(max_bytes.max(first_size))
        } else {
            max_bytes
        };
        let mut buf = Vec::new();
        segment.log.read_into(&mut buf, start, len)?;
        // Cut after the last whole batch that fits and follows its predecessor (a walk over
        // headers already in memory; the first batch was checked on disk).
        let mut end = 0usize;
        let mut next_offset = first.base_offset;
        while let Some((size, next)) =
            segment::batch_follows_at(&buf, end, next_offset, segment.next_offset)
        {
            next_offset = next;
            end += size;
        }
        buf.truncate(end);
        // A consumer's next fetch starts where this one ended: remember where that is.
        if let Ok(mut hint) = self.read_hint.lock() {
            *hint = Some(ReadHint {
                segment_base: segment.base_offset,
                offset: next_offset,
                position: start + end as u64,
            });
        }
        Ok(Bytes::from(buf))
    }

    /// The first offset above `offset` that a read can start from without walking the bytes
    /// at `offset`: the next offset-index entry of its segment, else the next segment's base
    /// offset. A reader that gets [`ReadError::Corrupt`] at `offset` resumes there and skips
    /// only up to one `index.interval.bytes` of batches, not the rest of the segment. None
    /// when nothing follows in the log.
    pub fn next_indexed_offset(&self, offset: i64) -> Result<Option<i64>, LogError> {
        let first = self
            .segments
            .range(..=offset)
            .next_back()
            .map_or(i64::MIN, |(base, _)| *base);
        for (&base, segment) in self.segments.range(first..) {
            if base > offset {
                // A segment's first batch is where every walk of it starts.
                return Ok(Some(base));
            }
            if let Some(found) = segment.indexed_offset_after(offset)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
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
            .filter(|header| header.base_offset == offset && segment.batch_fits(header, offset))
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
    ) -> Result<Option<(i64, i64)>, ReadError> {
        let start_offset = self.log_start_offset;
        let (position, header) = match segment
            .find_batch_by_timestamp(timestamp, |header| header.last_offset() >= start_offset)?
        {
            Walk::Found(position, header) => (position, header),
            Walk::End => return Ok(None),
            Walk::Unreadable {
                position,
                expected_offset,
            } => {
                return Err(ReadError::Corrupt {
                    offset: expected_offset,
                    segment_base_offset: segment.base_offset,
                    position,
                    expected_offset,
                })
            }
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
    /// that timestamp. [`ReadError::Corrupt`] when a batch on the way is unreadable (Kafka's
    /// ListOffsets answers CORRUPT_MESSAGE for the partition then).
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, ReadError> {
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
