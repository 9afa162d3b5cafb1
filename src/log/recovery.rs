//! Opening a log directory (recovery after a clean or unclean shutdown) and closing it cleanly.

use super::*;

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
        let mut names = storage.list_dir(dir)?;
        // An interrupted clean: drop unfinished `.cleaned` files, complete synced `.swap`s.
        let (swapped, swaps_changed) = compaction::complete_swaps(&*storage, dir, &names)?;
        if swaps_changed {
            storage.sync_dir(dir)?;
            names = storage.list_dir(dir)?;
        }
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
            let trust =
                (clean || (base < checkpoint_recovery && !last)) && !swapped.contains(&base);
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
        if created || !clean {
            // A new directory's name; after a kill, maybe one never synced (the node died
            // between creating the log and its first sync job). Recovery's first sync job,
            // which the broker runs before it serves, syncs the parent.
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
        let storage_for_cleaner = storage.clone();
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
            cleaner: compaction::Cleaner::new(
                compaction::read_cleaner_checkpoint(&*storage_for_cleaner, dir)
                    .unwrap_or(log_start_offset)
                    .clamp(log_start_offset, log_end_offset),
            ),
            closed: false,
        };
        // A new log needs none of this. Its checkpoint would say what an absent one says (log
        // start and recovery point 0), and its directory and the directory's name in its parent
        // are already in `dirty_dirs` for its first sync job, on the disk thread, which the
        // broker hands out with the answer that created the log (and before serving, at
        // startup). Inline, a CreateTopics of thousands of partitions held the event loop for
        // a second of fsyncs. Until that job completes nothing in the log counts as durable,
        // and a crash before it leaves at worst no directory, which the next open creates.
        if !created && (!clean || checkpoint != Some((log.log_start_offset, log.recovery_point))) {
            // What recovery decided (above all the log start, the floor below which offsets
            // are never handed out again) is made durable before anything else happens.
            // After an unclean shutdown always: a killed process leaves the page cache behind,
            // so what open just read may never have been synced. The checkpoint (DeleteRecords
            // or retention moved the log start, then the kill: a power loss would bring back
            // the log it replaced), and the names of files created before the kill (a segment
            // rolled just before it: acknowledged appends into it after the restart would
            // vanish with its name at the next power loss; simulator, node seed 286) and of
            // the log's directory itself (its parent: with the first sync job, above).
            // Recovery's first sync job then syncs their data. Inline: this is startup, not
            // the event loop.
            log.write_checkpoint()?;
            log.checkpoint_file.sync_data()?;
            log.storage.sync_dir(&log.dir)?;
            log.checkpoint_dirty = false;
            log.checkpoint_slot = 1 - log.checkpoint_slot;
        }
        Ok(log)
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
        // An unfinished clean is abandoned; the next pass redoes it.
        self.abort_cleaning();
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
}
