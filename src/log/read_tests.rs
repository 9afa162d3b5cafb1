//! Reads over rotted bytes. Recovery re-validates only from the recovery point on (as Kafka's
//! log recovery does), so a closed segment below it is trusted as written; bytes of a batch
//! header the CRC does not cover (base offset, batch length) can change there unnoticed.
//! Kafka's ReplicaManager.readFromLocalLog answers the CorruptRecordException its log read
//! then throws as CORRUPT_MESSAGE for that partition; a read never answers "nothing here"
//! below the log end.

use super::tests::{small_config, DIR};
use super::*;
use crate::protocol::batch::testing::simple_batch;
use crate::storage::{CrashOptions, SimDisk};

/// (position, header) of every batch of a segment file.
fn batches_of(bytes: &[u8]) -> Vec<(usize, BatchHeader)> {
    batch::iter_validated(bytes).map(|r| r.unwrap()).collect()
}

/// A log of several 1 KiB segments, all synced, reopened after a crash: every segment but the
/// last is below the recovery point. Returns the first segment's batches before the damage.
fn crashed_log_with_segments(disk: &SimDisk) -> Vec<(usize, BatchHeader)> {
    let config = LogConfig {
        flush: FlushPolicy::Durable,
        ..small_config()
    };
    let mut log = PartitionLog::open(Arc::new(disk.clone()), DIR, config, 0).unwrap();
    for i in 0..40 {
        log.append(&mut simple_batch(3, i * 3), 0).unwrap();
    }
    // Bounded: each job's completion may dirty the checkpoint once more.
    for _ in 0..4 {
        let Some(job) = log.take_sync_job() else {
            break;
        };
        let up_to = job.up_to_offset;
        job.run().unwrap();
        log.sync_completed(up_to);
    }
    assert_eq!(log.durable_offset(), 120);
    assert!(log.segment_count() >= 3, "several segments");
    drop(log);
    disk.crash(CrashOptions {
        tear_last_write: false,
    });
    batches_of(
        &disk
            .contents(&format!("{DIR}/{}", segment::log_name(0)))
            .unwrap(),
    )
}

fn reopen(disk: &SimDisk) -> PartitionLog {
    let log = PartitionLog::open(Arc::new(disk.clone()), DIR, small_config(), 0).unwrap();
    // Recovery did not look at the damaged segment: nothing was cut.
    assert_eq!(log.log_end_offset(), 120);
    log
}

/// Every offset below the log end reads as records or as Corrupt, never as nothing.
fn assert_never_empty_below_the_log_end(log: &PartitionLog) {
    let end = log.log_end_offset();
    for offset in log.log_start_offset()..end {
        match log.read(offset, 1 << 20, end) {
            Ok(bytes) => assert!(
                !bytes.is_empty(),
                "offset {offset}: empty below the log end"
            ),
            Err(err) => assert_eq!(err.error_code(), error_codes::CORRUPT_MESSAGE, "{err}"),
        }
    }
}

fn assert_corrupt(result: Result<Bytes, ReadError>, at_position: usize) {
    match result {
        Err(err @ ReadError::Corrupt { position, .. }) => {
            assert_eq!(position, at_position as u64, "{err}");
            assert_eq!(err.error_code(), error_codes::CORRUPT_MESSAGE);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn a_flipped_base_offset_below_the_recovery_point_reads_as_corrupt_message() {
    for flipped in [0..8u64, 7..8] {
        let disk = SimDisk::new(7);
        let batches = crashed_log_with_segments(&disk);
        let (position, header) = batches[2];
        let path = format!("{DIR}/{}", segment::log_name(0));
        let at = position as u64;
        assert!(disk.corrupt(&path, at + flipped.start..at + flipped.end));
        let log = reopen(&disk);
        let end = log.log_end_offset();
        for offset in header.base_offset..=header.last_offset() {
            assert_corrupt(log.read(offset, 1 << 20, end), position);
        }
        // What precedes the damage is served, and stops before it.
        let before = log.read(0, 1 << 20, end).unwrap();
        assert_eq!(before.len(), position, "bytes {flipped:?}");
        // The same read again, now from the sequential-read hint.
        assert_corrupt(log.read(header.base_offset, 1 << 20, end), position);
        // Later segments are intact.
        let second = log.segment_base_offsets()[1];
        let bytes = log.read(second, 1 << 20, end).unwrap();
        assert_eq!(batches_of(&bytes)[0].1.base_offset, second);
        assert_never_empty_below_the_log_end(&log);
        // At the log end (the high watermark here) there is simply nothing yet: long polling.
        assert!(log.read(end, 1 << 20, end).unwrap().is_empty());
        assert!(log.read(second, 1 << 20, second).unwrap().is_empty());
    }
}

#[test]
fn a_flipped_batch_length_below_the_recovery_point_reads_as_corrupt_message() {
    // All four bytes (a negative length), and only the low byte (a plausible wrong length).
    for flipped in [8..12u64, 11..12] {
        let disk = SimDisk::new(8);
        let batches = crashed_log_with_segments(&disk);
        let (position, header) = batches[2];
        let next = batches[3].1;
        let path = format!("{DIR}/{}", segment::log_name(0));
        let at = position as u64;
        assert!(disk.corrupt(&path, at + flipped.start..at + flipped.end));
        let log = reopen(&disk);
        let end = log.log_end_offset();
        let first_read = log.read(header.base_offset, 1 << 20, end);
        match flipped.start {
            // No batch header there at all.
            8 => assert_corrupt(first_read, position),
            // The header still names the right offsets: its bytes are served and the
            // consumer's CRC check rejects them (Kafka verifies CRCs in the client too).
            _ => {
                let bytes = first_read.unwrap();
                assert!(batch::validate(&bytes).is_err(), "CRC no longer matches");
            }
        }
        // Where the next batch starts can no longer be told: it reads as corrupt, not empty.
        let err = log.read(next.base_offset, 1 << 20, end).unwrap_err();
        assert_eq!(err.error_code(), error_codes::CORRUPT_MESSAGE, "{err}");
        assert!(matches!(err, ReadError::Corrupt { position: p, .. } if p as usize >= position));
        let before = log.read(0, 1 << 20, end).unwrap();
        assert_eq!(
            batches_of(&before[..position]).len(),
            2,
            "the batches before"
        );
        if flipped.start == 8 {
            assert_eq!(before.len(), position, "and nothing of the damaged one");
        }
        let second = log.segment_base_offsets()[1];
        assert!(!log.read(second, 1 << 20, end).unwrap().is_empty());
        assert_never_empty_below_the_log_end(&log);
        assert!(log.read(end, 1 << 20, end).unwrap().is_empty());
    }
}

#[test]
fn offsets_past_the_next_index_entry_after_damage_read_again() {
    // index.interval.bytes 128 indexes about every other batch: the hole a bad length leaves
    // ends at the next indexed batch, the rest of the segment reads normally.
    let disk = SimDisk::new(9);
    let batches = crashed_log_with_segments(&disk);
    let (position, _) = batches[1];
    let path = format!("{DIR}/{}", segment::log_name(0));
    assert!(disk.corrupt(&path, position as u64 + 8..position as u64 + 12));
    let log = reopen(&disk);
    let end = log.log_end_offset();
    let last = batches.last().unwrap().1;
    let bytes = log.read(last.base_offset, 1 << 20, end).unwrap();
    assert_eq!(batches_of(&bytes)[0].1, last);
}

#[test]
fn a_torn_tail_above_the_recovery_point_is_still_cut_by_recovery() {
    let disk = SimDisk::new(10);
    let mut log = PartitionLog::open(Arc::new(disk.clone()), DIR, small_config(), 0).unwrap();
    for i in 0..5 {
        log.append(&mut simple_batch(3, i * 3), 0).unwrap();
    }
    log.close().unwrap();
    drop(log);
    let mut log = PartitionLog::open(Arc::new(disk.clone()), DIR, small_config(), 0).unwrap();
    log.append(&mut simple_batch(3, 100), 0).unwrap();
    drop(log);
    disk.crash(CrashOptions {
        tear_last_write: true,
    });
    let log = PartitionLog::open(Arc::new(disk.clone()), DIR, small_config(), 0).unwrap();
    assert_eq!(log.log_end_offset(), 15, "the unsynced, torn batch is cut");
    assert_never_empty_below_the_log_end(&log);
    assert!(log.read(15, 1 << 20, 15).unwrap().is_empty());
}

/// ListOffsets by timestamp walks the same headers: through a rotted batch it reports Corrupt
/// (Kafka answers the CorruptRecordException as CORRUPT_MESSAGE), not "no such timestamp",
/// which would send a consumer resetting by time to the log end.
#[test]
fn offset_for_timestamp_through_a_rotted_batch_reads_as_corrupt_message() {
    let disk = SimDisk::new(11);
    let batches = crashed_log_with_segments(&disk);
    let (position, header) = batches[2];
    let path = format!("{DIR}/{}", segment::log_name(0));
    assert!(disk.corrupt(&path, position as u64..position as u64 + 8));
    let log = reopen(&disk);
    // Timestamps equal offsets in this log.
    assert_eq!(log.offset_for_timestamp(1).unwrap(), Some((1, 1)));
    let err = log
        .offset_for_timestamp(header.base_offset + 1)
        .unwrap_err();
    assert_eq!(err.error_code(), error_codes::CORRUPT_MESSAGE, "{err}");
    assert_eq!(log.offset_for_timestamp(100).unwrap(), Some((100, 100)));
}

/// A reader that meets a rotted batch (Corrupt at its offset) resumes at
/// `next_indexed_offset`: the first offset-index entry above the damage (read from the index
/// file itself here), from which a read walks and succeeds; after the segment's last entry,
/// the next segment's base offset; after the last segment, nothing.
#[test]
fn next_indexed_offset_is_the_first_index_entry_past_damage() {
    let disk = SimDisk::new(12);
    let batches = crashed_log_with_segments(&disk);
    let index = disk
        .contents(&format!("{DIR}/{}", segment::index_name(0)))
        .unwrap();
    let entries: Vec<i64> = index
        .chunks_exact(8)
        .map(|entry| i64::from(u32::from_be_bytes(entry[..4].try_into().unwrap())))
        .collect();
    // The length of the first indexed batch rots: the index cannot step over it.
    let &(position, damaged) = batches
        .iter()
        .find(|(_, header)| header.base_offset == entries[0])
        .unwrap();
    let path = format!("{DIR}/{}", segment::log_name(0));
    assert!(disk.corrupt(&path, position as u64 + 8..position as u64 + 12));
    let log = reopen(&disk);
    let end = log.log_end_offset();
    assert_corrupt(log.read(damaged.base_offset, 1 << 20, end), position);
    let expected = *entries
        .iter()
        .find(|&&offset| offset > damaged.base_offset)
        .expect("an index entry after the damage");
    assert!(
        expected > damaged.last_offset() + 1,
        "batches lie between the damage and the entry"
    );
    let resume = log.next_indexed_offset(damaged.base_offset).unwrap();
    assert_eq!(resume, Some(expected));
    let bytes = log.read(expected, 1 << 20, end).unwrap();
    assert_eq!(batches_of(&bytes)[0].1.base_offset, expected);
    // Between the damage and the entry the walk cannot get through.
    let err = log.read(expected - 1, 1 << 20, end).unwrap_err();
    assert_eq!(err.error_code(), error_codes::CORRUPT_MESSAGE, "{err}");
    // Past the segment's last entry: the next segment; past the last segment: none.
    let bases = log.segment_base_offsets();
    let last_entry = *entries.last().unwrap();
    assert_eq!(log.next_indexed_offset(last_entry).unwrap(), Some(bases[1]));
    assert_eq!(log.next_indexed_offset(end - 1).unwrap(), None);
}
