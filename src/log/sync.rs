//! Durability: sync jobs handed to the disk thread, group commit, and their completion.

use super::*;

impl PartitionLog {
    pub(super) fn has_unsynced(&self) -> bool {
        self.log_end_offset() > self.durable_offset
            || !self.dirty_segments.is_empty()
            || !self.dirty_dirs.is_empty()
            || self.checkpoint_dirty
            || !self.deletions_waiting.is_empty()
            || self.cleaner.wants_sync()
    }

    pub(super) fn sync_wanted(&self) -> bool {
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
    pub(super) fn build_sync_job(&mut self, active_indexes: bool) -> SyncJob {
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
        self.cleaner.add_to_job(&mut files);
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
        self.cleaner.job_completed();
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
        self.cleaner.job_failed();
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
}
