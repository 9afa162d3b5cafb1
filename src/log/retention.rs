//! Housekeeping that removes records: retention by time and size, DeleteRecords, follower
//! truncation, and the `tick` / `next_deadline` schedule that drives them (and compaction).

use super::*;

impl PartitionLog {
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
        // A pass's map and pending file describe offsets this truncation may rewrite.
        self.abort_cleaning();
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
            // The segment now active may have been closed below the recovery point; appends
            // resume in it, so the next crash recovery must scan it again (a truncation at
            // its end cuts nothing below, and used to leave the recovery point above it).
            self.recovery_point = self.recovery_point.min(self.active().base_offset);
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
        self.cleaner.first_dirty_offset = self.cleaner.first_dirty_offset.min(log_end_offset);
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
    pub(super) fn delete_segments_below_start(&mut self) -> io::Result<()> {
        while self.segments.len() > 1 {
            let (&base, first) = self.segments.iter().next().expect("non-empty");
            if first.next_offset > self.log_start_offset {
                break;
            }
            self.delete_oldest(base)?;
        }
        Ok(())
    }

    pub(super) fn delete_oldest(&mut self, base: i64) -> io::Result<()> {
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
    pub(super) fn apply_retention(&mut self, now: Millis) -> io::Result<bool> {
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
            // cleanup.policy=compact alone keeps old segments: only the cleaner removes records.
            if self.config.cleanup_policy.delete() && self.apply_retention(now)? {
                self.write_checkpoint()?;
            }
        }
        if self.config.cleanup_policy.compact() || self.cleaning_in_progress() {
            self.clean_tick(now);
        }
        if let FlushPolicy::Interval { ms: Some(ms), .. } = self.config.flush {
            if self.has_unsynced() && now - self.last_flush_ms >= ms {
                self.flush_due = true;
                self.last_flush_ms = now;
            }
        }
        Ok(())
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
        if let Some(cleaning) = self.cleaner_deadline() {
            deadline = deadline.min(cleaning);
        }
        Some(deadline)
    }
}
