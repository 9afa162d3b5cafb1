//! Unit tests of log compaction (Kafka's "Log Compaction" rules, KIP-58, KIP-534), including a
//! crash after every storage operation of a clean.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};

use super::*;
use crate::protocol::batch::testing::{build_batch, TestRecord};
use crate::storage::{CrashOptions, SimDisk};

const DIR: &str = "__consumer_offsets-0";

fn compact_config() -> LogConfig {
    LogConfig {
        segment_bytes: 600,
        index_interval_bytes: 100,
        cleanup_policy: CleanupPolicy::Compact,
        delete_retention_ms: 1_000,
        min_cleanable_dirty_ratio: 0.0,
        cleaner_backoff_ms: 10,
        ..LogConfig::default()
    }
}

fn open_on(storage: Arc<dyn Storage>, config: LogConfig, now: Millis) -> PartitionLog {
    PartitionLog::open(storage, DIR, config, now).unwrap()
}

fn record(key: &str, value: Option<&str>) -> TestRecord {
    TestRecord {
        key: Some(key.as_bytes().to_vec()),
        value: value.map(|v| v.as_bytes().to_vec()),
        headers: Vec::new(),
    }
}

fn append(log: &mut PartitionLog, records: &[TestRecord], now: Millis) -> AppendInfo {
    let mut batch = build_batch(records, now, -1, -1, -1);
    log.append(&mut batch, now).unwrap()
}

fn sync_all(log: &mut PartitionLog) {
    for _ in 0..4 {
        match log.take_sync_job() {
            Some(job) => {
                let up_to = job.up_to_offset;
                job.run().unwrap();
                log.sync_completed(up_to);
            }
            None => break,
        }
    }
}

/// Syncs (the cleaner never uses records above the durable offset), then ticks and syncs
/// until no pass is under way (bounded).
fn drive(log: &mut PartitionLog, now: Millis) {
    sync_all(log);
    for _ in 0..1_000 {
        log.tick(now).unwrap();
        sync_all(log);
        if !log.cleaning_in_progress() {
            return;
        }
    }
    panic!("cleaning did not finish in 1000 ticks");
}

/// Every record readable from the log start: offset -> (key, value).
type Records = BTreeMap<i64, (Vec<u8>, Option<Vec<u8>>)>;

fn read_all(log: &PartitionLog) -> Records {
    let mut records = BTreeMap::new();
    let mut offset = log.log_start_offset();
    let mut last = -1;
    for _ in 0..10_000 {
        if offset >= log.log_end_offset() {
            break;
        }
        let bytes = log.read(offset, 1 << 20, i64::MAX).unwrap();
        assert!(!bytes.is_empty(), "no batch at {offset}");
        for item in batch::iter_validated(&bytes) {
            let (position, header) = item.unwrap();
            assert!(header.base_offset > last, "offsets go back at {offset}");
            let one = &bytes[position..position + header.total_size()];
            let section = batch::records_section(one).unwrap();
            for r in batch::parse_records(&section, header.records_count as usize).unwrap() {
                let at = header.base_offset + r.offset_delta;
                assert!(at > last && at <= header.last_offset());
                last = at;
                records.insert(at, (r.key.unwrap().to_vec(), r.value.map(<[u8]>::to_vec)));
            }
            offset = header.next_offset();
        }
    }
    records
}

/// The latest record of every key, from a full history.
fn latest(history: &Records) -> BTreeMap<Vec<u8>, (i64, Option<Vec<u8>>)> {
    let mut latest = BTreeMap::new();
    for (offset, (key, value)) in history {
        latest.insert(key.clone(), (*offset, value.clone()));
    }
    latest
}

/// Kafka's compaction guarantee: the latest record of each key stays at its offset, nothing
/// else is invented, and older records of a key whose latest lies in the cleaned part go.
fn check_compacted(after: &Records, before: &Records) {
    for (offset, record) in after {
        assert_eq!(
            before.get(offset),
            Some(record),
            "record at {offset} invented"
        );
    }
    for (key, (offset, value)) in latest(before) {
        if value.is_some() {
            assert_eq!(
                after.get(&offset),
                Some(&(key.clone(), value)),
                "latest value of {key:?} lost"
            );
        }
    }
}

fn fill_keys(log: &mut PartitionLog, rounds: usize, keys: usize, now: Millis) {
    for round in 0..rounds {
        for key in 0..keys {
            let value = format!("v{round}-{key}");
            append(log, &[record(&format!("k{key}"), Some(&value))], now);
        }
    }
}

#[test]
fn cleaning_keeps_the_latest_value_of_each_key_at_its_offset() {
    let disk = SimDisk::new(1);
    let mut log = open_on(Arc::new(disk.clone()), compact_config(), 0);
    fill_keys(&mut log, 10, 5, 0);
    let before = read_all(&log);
    let end = log.log_end_offset();
    let size = log.size_bytes();
    drive(&mut log, 100);
    let after = read_all(&log);
    check_compacted(&after, &before);
    assert_eq!(log.log_end_offset(), end, "cleaning moved the log end");
    assert!(
        log.size_bytes() < size / 2,
        "{} of {size} bytes",
        log.size_bytes()
    );
    // Records in the active segment are never cleaned; closed ones keep one per key.
    let active = *log.segment_base_offsets().last().unwrap();
    let closed_keys: Vec<_> = after.range(..active).map(|(_, (k, _))| k).collect();
    let mut unique = closed_keys.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        closed_keys.len(),
        unique.len(),
        "a closed segment keeps duplicates"
    );
    // A fetch from a removed offset returns the next batch (offsets keep their gaps).
    let removed = (0..end).find(|o| !after.contains_key(o)).unwrap();
    let next = *after.range(removed..).next().unwrap().0;
    let bytes = log.read(removed, 1 << 20, i64::MAX).unwrap();
    let header = batch::parse_header(&bytes).unwrap();
    assert!(header.last_offset() >= removed && header.base_offset <= next);
    // The same after a restart.
    log.close().unwrap();
    let log = open_on(Arc::new(disk), compact_config(), 200);
    assert_eq!(read_all(&log), after);
    assert_eq!(log.first_dirty_offset(), active);
}

#[test]
fn the_active_segment_and_segments_younger_than_min_compaction_lag_are_not_cleaned() {
    // KIP-58: records newer than min.compaction.lag.ms stay uncompacted.
    let config = LogConfig {
        min_compaction_lag_ms: 1_000,
        ..compact_config()
    };
    let disk = SimDisk::new(2);
    let mut log = open_on(Arc::new(disk), config, 0);
    fill_keys(&mut log, 10, 3, 500);
    let before = read_all(&log);
    drive(&mut log, 1_000);
    assert_eq!(
        read_all(&log),
        before,
        "cleaned records younger than the lag"
    );
    drive(&mut log, 1_600);
    assert!(read_all(&log).len() < before.len());
}

#[test]
fn compact_only_topics_are_not_subject_to_retention() {
    let config = LogConfig {
        retention_ms: 1,
        retention_bytes: 1,
        retention_check_interval_ms: 1,
        min_cleanable_dirty_ratio: 1.0,
        ..compact_config()
    };
    let disk = SimDisk::new(3);
    let mut log = open_on(Arc::new(disk), config, 0);
    fill_keys(&mut log, 10, 3, 0);
    let segments = log.segment_count();
    log.tick(10_000).unwrap();
    assert_eq!(log.segment_count(), segments);
    assert_eq!(log.log_start_offset(), 0);
}

#[test]
fn keyless_records_are_refused_by_a_compacted_topic() {
    // Kafka's LogValidator: "Compacted topic cannot accept message without key".
    let disk = SimDisk::new(4);
    let mut log = open_on(Arc::new(disk), compact_config(), 0);
    let keyless = TestRecord {
        key: None,
        value: Some(b"v".to_vec()),
        headers: Vec::new(),
    };
    let mut batch = build_batch(&[record("a", Some("1")), keyless], 0, -1, -1, -1);
    let error = log.append(&mut batch, 0).unwrap_err();
    assert_eq!(error.error_code(), error_codes::INVALID_RECORD);
    assert_eq!(log.log_end_offset(), 0);
    let mut config = compact_config();
    config.cleanup_policy = CleanupPolicy::Delete;
    log.set_config(config);
    log.append(&mut batch, 0).unwrap();
}

#[test]
fn tombstones_survive_delete_retention_ms_after_the_first_clean_then_go() {
    // KIP-534: the first clean that keeps a tombstone stamps a delete horizon of now +
    // delete.retention.ms; a clean after the horizon removes it.
    let disk = SimDisk::new(5);
    let mut log = open_on(Arc::new(disk), compact_config(), 0);
    fill_keys(&mut log, 3, 4, 0);
    let tombstone = append(&mut log, &[record("k1", None)], 0).base_offset;
    fill_keys(&mut log, 3, 4, 0);
    append(&mut log, &[record("k9", None)], 0);
    // Enough after it that its segment is closed (the active segment is never cleaned).
    fill_keys(&mut log, 3, 8, 0);
    let before = read_all(&log);
    drive(&mut log, 100);
    let after = read_all(&log);
    check_compacted(&after, &before);
    // k1 was rewritten after its tombstone: the tombstone is just an older record.
    assert!(!after.contains_key(&tombstone));
    let k9 = latest(&before)[&b"k9".to_vec()].0;
    assert_eq!(after.get(&k9), Some(&(b"k9".to_vec(), None)));
    drive(&mut log, 1_099);
    assert!(
        read_all(&log).contains_key(&k9),
        "removed before the horizon"
    );
    drive(&mut log, 1_100);
    let last = read_all(&log);
    assert!(!last.contains_key(&k9), "tombstone kept after the horizon");
    assert!(last.values().all(|(key, _)| key != b"k9"));
}

#[test]
fn the_last_batch_of_each_producer_keeps_its_sequence_after_cleaning() {
    // Kafka keeps an empty batch so idempotent producer state can be rebuilt.
    let disk = SimDisk::new(6);
    let mut log = open_on(Arc::new(disk), compact_config(), 0);
    let mut batch = build_batch(
        &[record("a", Some("1")), record("b", Some("1"))],
        0,
        7,
        3,
        40,
    );
    let produced = log.append(&mut batch, 0).unwrap();
    fill_keys(&mut log, 1, 1, 0);
    for i in 0..10 {
        append(
            &mut log,
            &[record("a", Some(&i.to_string())), record("b", None)],
            0,
        );
    }
    drive(&mut log, 100);
    let headers = log.batch_headers_from(0).unwrap();
    let mine: Vec<_> = headers.iter().filter(|h| h.producer_id == 7).collect();
    assert_eq!(mine.len(), 1, "the producer's batch header is gone");
    assert_eq!(mine[0].producer_epoch, 3);
    assert_eq!(mine[0].last_sequence(), 41);
    assert_eq!(mine[0].last_offset(), produced.last_offset);
    assert_eq!(mine[0].records_count, 0);
}

#[test]
fn next_deadline_asks_for_ticks_while_a_pass_is_under_way() {
    let disk = SimDisk::new(7);
    let mut log = open_on(Arc::new(disk), compact_config(), 0);
    fill_keys(&mut log, 10, 5, 0);
    sync_all(&mut log);
    log.tick(50).unwrap();
    assert!(log.cleaning_in_progress());
    assert_eq!(log.next_deadline(), Some(50));
    drive(&mut log, 50);
    assert!(log.next_deadline().unwrap() > 50);
}

/// A storage that lets `budget` mutating operations through and then fails every one, as a
/// process that dies at that point: the disk is then crashed and the log reopened.
#[derive(Debug)]
struct DiesAfter {
    disk: SimDisk,
    budget: Arc<AtomicI64>,
}

#[derive(Debug)]
struct DiesAfterFile {
    file: Arc<dyn StorageFile>,
    budget: Arc<AtomicI64>,
}

fn spend(budget: &AtomicI64) -> io::Result<()> {
    if budget.fetch_sub(1, Ordering::SeqCst) <= 0 {
        return Err(io::Error::other("the process died"));
    }
    Ok(())
}

impl Storage for DiesAfter {
    fn create_dir_all(&self, dir: &str) -> io::Result<()> {
        self.disk.create_dir_all(dir)
    }
    fn list_dir(&self, dir: &str) -> io::Result<Vec<String>> {
        self.disk.list_dir(dir)
    }
    fn open_file(&self, path: &str, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        if create && !self.disk.exists(path) {
            spend(&self.budget)?;
        }
        Ok(Arc::new(DiesAfterFile {
            file: self.disk.open_file(path, create)?,
            budget: self.budget.clone(),
        }))
    }
    fn exists(&self, path: &str) -> bool {
        self.disk.exists(path)
    }
    fn remove_file(&self, path: &str) -> io::Result<()> {
        spend(&self.budget)?;
        self.disk.remove_file(path)
    }
    fn remove_dir_all(&self, dir: &str) -> io::Result<()> {
        spend(&self.budget)?;
        self.disk.remove_dir_all(dir)
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        spend(&self.budget)?;
        self.disk.rename(from, to)
    }
    fn sync_dir(&self, dir: &str) -> io::Result<()> {
        spend(&self.budget)?;
        self.disk.sync_dir(dir)
    }
}

impl StorageFile for DiesAfterFile {
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
        spend(&self.budget)?;
        self.file.write_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        spend(&self.budget)?;
        self.file.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        spend(&self.budget)?;
        self.file.sync_data()
    }
}

/// Ticks and syncs until the pass ends or the process "dies" (bounded).
fn drive_until_death(log: &mut PartitionLog, now: Millis) {
    for _ in 0..1_000 {
        if log.tick(now).is_err() {
            return;
        }
        if let Some(job) = log.take_sync_job() {
            let up_to = job.up_to_offset;
            match job.run() {
                Ok(()) => log.sync_completed(up_to),
                Err(_) => return,
            }
        }
        if log.cleaner_error().is_some() || !log.cleaning_in_progress() {
            return;
        }
    }
}

#[test]
fn a_crash_after_any_storage_operation_of_a_clean_recovers_a_consistent_log() {
    // Kafka's swap protocol: a crash leaves the old segment or the cleaned one, never a mix
    // that loses the latest record of a key or repeats an offset.
    let mut crashed_mid_clean = 0;
    for budget in 0..200 {
        let disk = SimDisk::new(budget as u64);
        let mut log = open_on(Arc::new(disk.clone()), compact_config(), 0);
        fill_keys(&mut log, 6, 4, 0);
        append(&mut log, &[record("k2", None)], 0);
        fill_keys(&mut log, 2, 3, 0);
        sync_all(&mut log);
        let before = read_all(&log);
        let end = log.log_end_offset();
        log.close().unwrap();
        let budget_left = Arc::new(AtomicI64::new(budget));
        let dying: Arc<dyn Storage> = Arc::new(DiesAfter {
            disk: disk.clone(),
            budget: budget_left.clone(),
        });
        let Ok(mut log) = PartitionLog::open(dying, DIR, compact_config(), 10) else {
            disk.crash(CrashOptions::default());
            continue;
        };
        drive_until_death(&mut log, 10);
        let finished = budget_left.load(Ordering::SeqCst) > 0;
        drop(log);
        disk.crash(CrashOptions {
            tear_last_write: budget % 2 == 0,
        });
        let mut log = open_on(Arc::new(disk.clone()), compact_config(), 20);
        assert_eq!(log.log_end_offset(), end, "budget {budget}: log end moved");
        let recovered = read_all(&log);
        check_compacted(&recovered, &before);
        // The recovered log cleans to the same result as an uninterrupted clean.
        drive(&mut log, 30);
        check_compacted(&read_all(&log), &before);
        let names = disk.list_dir(DIR).unwrap();
        assert!(
            names
                .iter()
                .all(|n| !n.ends_with(".cleaned") && !n.ends_with(".swap")),
            "budget {budget}: leftovers {names:?}"
        );
        if finished {
            assert!(budget > 0);
            break;
        }
        crashed_mid_clean += 1;
    }
    assert!(
        crashed_mid_clean > 10,
        "only {crashed_mid_clean} crash points"
    );
}

#[test]
fn records_above_the_durable_offset_or_the_cleanable_limit_are_never_cleaned() {
    // A crash may lose unsynced records, and a follower may truncate above the high
    // watermark: neither may take the newer record of a key whose older ones the cleaner
    // removed (Kafka's cleaner stops at the high watermark).
    let disk = SimDisk::new(8);
    let mut log = open_on(Arc::new(disk), compact_config(), 0);
    fill_keys(&mut log, 10, 5, 0);
    let before = read_all(&log);
    for now in 10..20 {
        log.tick(now * 100).unwrap();
    }
    assert_eq!(read_all(&log), before, "cleaned with nothing synced");
    log.set_cleanable_limit(0);
    drive(&mut log, 3_000);
    assert_eq!(read_all(&log), before, "cleaned above the cleanable limit");
    log.set_cleanable_limit(log.log_end_offset());
    drive(&mut log, 4_000);
    assert!(read_all(&log).len() < before.len());
}

#[test]
fn a_follower_copies_cleaned_batches_with_their_gaps() {
    // Replicas of a compacted partition fetch cleaned batches (fewer records than offsets,
    // or none) and must store them at the same offsets.
    let disk = SimDisk::new(9);
    let mut leader = open_on(Arc::new(disk), compact_config(), 0);
    fill_keys(&mut leader, 10, 5, 0);
    drive(&mut leader, 100);
    let follower_disk = SimDisk::new(10);
    let mut follower = open_on(Arc::new(follower_disk.clone()), compact_config(), 0);
    let mut offset = 0;
    for _ in 0..1_000 {
        if offset >= leader.log_end_offset() {
            break;
        }
        let bytes = leader.read(offset, 1 << 20, i64::MAX).unwrap();
        follower.append_replicated(&bytes, 0).unwrap();
        offset = follower.log_end_offset();
    }
    assert_eq!(read_all(&follower), read_all(&leader));
    follower.close().unwrap();
    let follower = open_on(Arc::new(follower_disk), compact_config(), 0);
    assert_eq!(read_all(&follower), read_all(&leader));
}
