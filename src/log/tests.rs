use super::*;
use crate::protocol::batch::testing::simple_batch;
use crate::storage::{CrashOptions, SimDisk};

pub(super) const DIR: &str = "orders-3";

pub(super) fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 128,
        ..LogConfig::default()
    }
}

fn open(disk: &SimDisk, config: LogConfig) -> PartitionLog {
    PartitionLog::open(Arc::new(disk.clone()), DIR, config, 0).unwrap()
}

/// Appends `batches` batches of `records` records with timestamps `ts, ts+1, ...`.
fn fill(log: &mut PartitionLog, batches: usize, records: usize, ts: i64) -> Vec<AppendInfo> {
    (0..batches)
        .map(|i| {
            let mut batch = simple_batch(records, ts + (i * records) as i64);
            log.append(&mut batch, 0).unwrap()
        })
        .collect()
}

fn headers_of(bytes: &[u8]) -> Vec<BatchHeader> {
    batch::iter_validated(bytes).map(|r| r.unwrap().1).collect()
}

fn sync_all(log: &mut PartitionLog) {
    // Bounded: at most one job per call is ever outstanding.
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

#[test]
fn append_assigns_contiguous_offsets_and_read_returns_the_same_bytes() {
    let disk = SimDisk::new(1);
    let mut log = open(&disk, LogConfig::default());
    let mut first = simple_batch(3, 100);
    let info = log.append(&mut first, 5).unwrap();
    assert_eq!(
        (info.base_offset, info.last_offset, info.record_count),
        (0, 2, 3)
    );
    assert_eq!(info.max_timestamp, 102);
    let mut second = simple_batch(2, 200);
    let info = log.append(&mut second, 5).unwrap();
    assert_eq!((info.base_offset, info.last_offset), (3, 4));
    assert_eq!(log.log_end_offset(), 5);
    let bytes = log.read(0, 1 << 20, i64::MAX).unwrap();
    let mut expected = first.clone();
    expected.extend_from_slice(&second);
    assert_eq!(&bytes[..], &expected[..], "stored exactly as rewritten");
    // A read starting inside a batch returns that whole batch (the consumer skips).
    assert_eq!(
        headers_of(&log.read(4, 1 << 20, i64::MAX).unwrap())[0].base_offset,
        3
    );
}

#[test]
fn one_request_with_several_batches_is_one_append() {
    let disk = SimDisk::new(1);
    let mut log = open(&disk, LogConfig::default());
    let mut request = simple_batch(2, 0);
    request.extend_from_slice(&simple_batch(3, 0));
    let writes_before = disk.stats().writes;
    let info = log.append(&mut request, 0).unwrap();
    assert_eq!(
        disk.stats().writes - writes_before,
        1,
        "one write per request"
    );
    assert_eq!(info.batches.len(), 2);
    assert_eq!(info.batches[1].base_offset, 2);
    assert_eq!(info.last_offset, 4);
}

#[test]
fn invalid_batch_anywhere_in_the_request_writes_nothing() {
    let disk = SimDisk::new(1);
    let mut log = open(&disk, LogConfig::default());
    let mut request = simple_batch(2, 0);
    let mut bad = simple_batch(2, 0);
    let last = bad.len() - 1;
    bad[last] ^= 1;
    request.extend_from_slice(&bad);
    let error = log.append(&mut request, 0).unwrap_err();
    assert_eq!(error.error_code(), error_codes::CORRUPT_MESSAGE);
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.size_bytes(), 0);
    let mut truncated = simple_batch(2, 0);
    truncated.pop();
    assert!(log.append(&mut truncated, 0).is_err());
    assert!(matches!(log.append(&mut [], 0), Err(AppendError::Empty)));
    assert_eq!(log.log_end_offset(), 0);
}

#[test]
fn read_honours_max_offset_and_max_bytes_but_returns_at_least_one_batch_kip_74() {
    let disk = SimDisk::new(1);
    let mut log = open(&disk, LogConfig::default());
    fill(&mut log, 5, 2, 0); // offsets 0..10, batches of 2
    let one = simple_batch(2, 0).len();
    // max_offset (high watermark) is exclusive and batches straddling it are withheld.
    assert_eq!(headers_of(&log.read(0, 1 << 20, 4).unwrap()).len(), 2);
    assert_eq!(headers_of(&log.read(0, 1 << 20, 5).unwrap()).len(), 2);
    assert!(log.read(4, 1 << 20, 5).unwrap().is_empty());
    assert!(log.read(4, 1 << 20, 4).unwrap().is_empty());
    // max_bytes cuts at whole batches, but never below one batch.
    assert_eq!(
        headers_of(&log.read(0, one * 2 + 1, i64::MAX).unwrap()).len(),
        2
    );
    let tiny = log.read(2, 1, i64::MAX).unwrap();
    assert_eq!(tiny.len(), one);
    assert_eq!(headers_of(&tiny)[0].base_offset, 2);
    // Range checks.
    assert!(log.read(10, 100, i64::MAX).unwrap().is_empty());
    assert!(matches!(
        log.read(11, 100, i64::MAX),
        Err(ReadError::OffsetOutOfRange { .. })
    ));
    assert!(matches!(
        log.read(-1, 100, i64::MAX),
        Err(ReadError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn segments_roll_by_size_and_are_named_by_base_offset() {
    let disk = SimDisk::new(1);
    let mut log = open(&disk, small_config());
    fill(&mut log, 40, 3, 0);
    assert!(log.segment_count() > 3);
    for base in log.segment_base_offsets() {
        assert!(disk.exists(&format!("{DIR}/{base:020}.log")));
        assert!(disk.exists(&format!("{DIR}/{base:020}.index")));
        assert!(disk.exists(&format!("{DIR}/{base:020}.timeindex")));
    }
    // Every offset is readable across segments, through the indexes.
    for offset in 0..120 {
        let bytes = log.read(offset, 1, i64::MAX).unwrap();
        let header = headers_of(&bytes)[0];
        assert!(header.base_offset <= offset && offset <= header.last_offset());
    }
}

#[test]
fn segment_ms_rolls_on_tick_and_on_append() {
    let disk = SimDisk::new(1);
    let config = LogConfig {
        segment_ms: 1000,
        ..LogConfig::default()
    };
    let mut log = open(&disk, config);
    log.append(&mut simple_batch(1, 0), 10).unwrap();
    assert_eq!(log.next_deadline(), Some(1000));
    log.tick(999).unwrap();
    assert_eq!(log.segment_count(), 1);
    log.tick(1000).unwrap();
    assert_eq!(log.segment_count(), 2);
    log.append(&mut simple_batch(1, 0), 1500).unwrap();
    log.append(&mut simple_batch(1, 0), 2000).unwrap();
    assert_eq!(log.segment_base_offsets(), vec![0, 1, 2]);
}

#[test]
fn retention_deletes_closed_segments_only_and_advances_log_start() {
    let disk = SimDisk::new(1);
    let config = LogConfig {
        retention_bytes: 2048,
        retention_check_interval_ms: 100,
        ..small_config()
    };
    let mut log = open(&disk, config);
    fill(&mut log, 60, 3, 0);
    let before = log.segment_count();
    log.tick(50).unwrap();
    assert_eq!(
        log.segment_count(),
        before,
        "not due before the check interval"
    );
    log.tick(100).unwrap();
    assert!(log.segment_count() < before);
    assert!(log.size_bytes() >= 2048 - 1024 && log.size_bytes() <= 2048 + 1024);
    let start = log.log_start_offset();
    assert_eq!(start, log.segment_base_offsets()[0]);
    assert!(log.read(start - 1, 100, i64::MAX).is_err());
    assert!(log.read(start, 100, i64::MAX).is_ok());

    // retention.ms by the largest timestamp of each closed segment; the active one stays.
    let mut config = log.config().clone();
    config.retention_bytes = -1;
    config.retention_ms = 1000;
    log.set_config(config);
    log.tick(1_000_000).unwrap();
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.log_start_offset(), log.segment_base_offsets()[0]);
}

#[test]
fn delete_records_before_moves_log_start_within_a_segment() {
    let disk = SimDisk::new(1);
    let mut log = open(&disk, small_config());
    fill(&mut log, 30, 3, 0);
    assert_eq!(log.delete_records_before(40).unwrap(), 40);
    assert_eq!(log.log_start_offset(), 40);
    assert!(log.segment_base_offsets()[0] <= 40);
    assert!(log.read(39, 100, i64::MAX).is_err());
    assert_eq!(
        log.delete_records_before(10).unwrap(),
        40,
        "never goes back"
    );
    assert!(log.delete_records_before(91).is_err());
    // Survives a reopen through the checkpoint.
    log.close().unwrap();
    let log = open(&disk, small_config());
    assert_eq!(log.log_start_offset(), 40);
}

#[test]
fn truncate_to_drops_the_suffix_at_a_batch_boundary() {
    let disk = SimDisk::new(1);
    let mut log = open(&disk, small_config());
    fill(&mut log, 30, 3, 0);
    log.truncate_to(50).unwrap(); // inside batch 48..=50
    assert_eq!(log.log_end_offset(), 48);
    let info = log.append(&mut simple_batch(2, 0), 0).unwrap();
    assert_eq!(info.base_offset, 48);
    log.truncate_to(3).unwrap();
    assert_eq!(log.log_end_offset(), 3);
    // Appends after a truncation go to a fresh segment, never over old bytes.
    assert_eq!(log.segment_base_offsets(), vec![0, 3]);
    log.truncate_to(0).unwrap();
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(
        log.append(&mut simple_batch(1, 0), 0).unwrap().base_offset,
        0
    );
}

#[test]
fn offset_for_timestamp_finds_the_first_record_at_or_after() {
    let disk = SimDisk::new(1);
    let mut log = open(&disk, small_config());
    fill(&mut log, 40, 3, 1000); // record i has timestamp 1000 + i
    for ts in [990, 1000, 1001, 1002, 1050, 1119] {
        let expected = (ts - 1000).max(0);
        assert_eq!(
            log.offset_for_timestamp(ts).unwrap(),
            Some((expected, expected + 1000)),
            "timestamp {ts}"
        );
    }
    assert_eq!(log.offset_for_timestamp(1120).unwrap(), None);
    assert_eq!(log.max_timestamp(), Some((1119, 119)));
    log.delete_records_before(61).unwrap();
    assert_eq!(log.offset_for_timestamp(1000).unwrap(), Some((61, 1061)));
}

#[test]
fn log_append_time_rewrites_max_timestamp() {
    let disk = SimDisk::new(1);
    let config = LogConfig {
        timestamp_type: TimestampType::LogAppendTime,
        ..LogConfig::default()
    };
    let mut log = open(&disk, config);
    let info = log.append(&mut simple_batch(3, 5), 777).unwrap();
    assert_eq!(info.log_append_time, Some(777));
    assert_eq!(info.max_timestamp, 777);
    let header = headers_of(&log.read(0, 100, i64::MAX).unwrap())[0];
    assert_eq!(header.max_timestamp, 777);
    assert_eq!(log.offset_for_timestamp(700).unwrap(), Some((0, 777)));
}

#[test]
fn durable_policy_group_commits_appends_made_during_a_sync() {
    let disk = SimDisk::new(1);
    let config = LogConfig {
        flush: FlushPolicy::Durable,
        ..LogConfig::default()
    };
    let mut log = open(&disk, config);
    sync_all(&mut log);
    log.append(&mut simple_batch(1, 0), 0).unwrap();
    let job = log.take_sync_job().expect("durable wants a sync");
    assert_eq!(job.up_to_offset, 1);
    assert!(log.take_sync_job().is_none(), "one job in flight");
    log.append(&mut simple_batch(1, 0), 0).unwrap();
    log.append(&mut simple_batch(1, 0), 0).unwrap();
    assert_eq!(log.durable_offset(), 0);
    job.run().unwrap();
    log.sync_completed(1);
    assert_eq!(log.durable_offset(), 1);
    let job = log
        .take_sync_job()
        .expect("the two later appends share one job");
    assert_eq!(job.up_to_offset, 3);
    job.run().unwrap();
    log.sync_completed(3);
    assert_eq!(log.durable_offset(), 3);
    assert!(log.take_sync_job().is_none());
}

#[test]
fn page_cache_policy_syncs_only_on_roll_and_interval_policy_counts_messages() {
    let disk = SimDisk::new(1);
    let mut log = open(&disk, small_config());
    sync_all(&mut log);
    log.append(&mut simple_batch(1, 0), 0).unwrap();
    assert!(log.take_sync_job().is_none());
    fill(&mut log, 30, 3, 0);
    assert!(log.segment_count() > 1);
    assert!(log.take_sync_job().is_some(), "a rolled segment is synced");

    let disk = SimDisk::new(2);
    let config = LogConfig {
        flush: FlushPolicy::Interval {
            messages: Some(5),
            ms: Some(100),
        },
        ..LogConfig::default()
    };
    let mut log = open(&disk, config);
    sync_all(&mut log);
    log.append(&mut simple_batch(3, 0), 0).unwrap();
    assert!(log.take_sync_job().is_none());
    log.append(&mut simple_batch(2, 0), 0).unwrap();
    let job = log.take_sync_job().expect("5 messages");
    log.sync_completed(job.up_to_offset);
    log.append(&mut simple_batch(1, 0), 0).unwrap();
    assert!(log.take_sync_job().is_none());
    assert_eq!(log.next_deadline(), Some(100));
    log.tick(100).unwrap();
    assert!(log.take_sync_job().is_some(), "flush.ms came due");
}

#[test]
fn truncation_during_a_sync_does_not_overstate_durability() {
    let disk = SimDisk::new(1);
    let config = LogConfig {
        flush: FlushPolicy::Durable,
        ..LogConfig::default()
    };
    let mut log = open(&disk, config);
    fill(&mut log, 4, 1, 0);
    let job = log.take_sync_job().unwrap();
    assert_eq!(job.up_to_offset, 4);
    log.truncate_to(2).unwrap();
    fill(&mut log, 2, 1, 0);
    job.run().unwrap();
    log.sync_completed(4);
    assert_eq!(
        log.durable_offset(),
        2,
        "offsets 2 and 3 were rewritten after the job"
    );
}

#[test]
fn crash_keeps_synced_records_and_drops_the_rest() {
    let disk = SimDisk::new(3);
    let mut log = open(&disk, small_config());
    fill(&mut log, 10, 3, 0);
    let mut config = small_config();
    config.flush = FlushPolicy::Durable;
    log.set_config(config.clone());
    sync_all(&mut log);
    let durable = log.durable_offset();
    assert_eq!(durable, 30);
    fill(&mut log, 10, 3, 0);
    drop(log);
    disk.crash(CrashOptions {
        tear_last_write: true,
    });
    let log = open(&disk, config);
    assert!(log.log_end_offset() >= durable);
    let bytes = log.read(0, 1 << 20, i64::MAX).unwrap();
    assert_eq!(headers_of(&bytes)[0].base_offset, 0);
}

#[test]
fn clean_close_then_open_trusts_the_indexes() {
    let disk = SimDisk::new(4);
    let mut log = open(&disk, small_config());
    fill(&mut log, 40, 3, 1000);
    log.close().unwrap();
    assert!(log.append(&mut simple_batch(1, 0), 0).is_err());
    assert!(disk.exists(&format!("{DIR}/{CLEAN_SHUTDOWN_FILE}")));
    let log = open(&disk, small_config());
    assert!(!disk.exists(&format!("{DIR}/{CLEAN_SHUTDOWN_FILE}")));
    assert_eq!(log.log_end_offset(), 120);
    assert_eq!(log.durable_offset(), 120);
    assert_eq!(log.offset_for_timestamp(1077).unwrap(), Some((77, 1077)));
    assert_eq!(log.max_timestamp(), Some((1119, 119)));
    assert_eq!(log.batch_headers_from(100).unwrap().len(), 7);
}

#[test]
fn delete_removes_the_directory() {
    let disk = SimDisk::new(5);
    let mut log = open(&disk, small_config());
    fill(&mut log, 5, 3, 0);
    log.delete().unwrap();
    assert!(disk.paths().is_empty());
}

#[test]
fn sync_jobs_are_send_and_a_failed_sync_is_retried() {
    fn assert_send<T: Send>() {}
    assert_send::<SyncJob>();
    assert_send::<PartitionLog>();

    let disk = SimDisk::new(9);
    let config = LogConfig {
        flush: FlushPolicy::Durable,
        ..LogConfig::default()
    };
    let mut log = open(&disk, config);
    sync_all(&mut log);
    log.append(&mut simple_batch(2, 0), 0).unwrap();
    disk.set_fail_syncs(true);
    let job = log.take_sync_job().unwrap();
    assert!(job.run().is_err());
    log.sync_failed();
    assert_eq!(log.durable_offset(), 0);
    disk.set_fail_syncs(false);
    let job = log.take_sync_job().expect("retried");
    let up_to = job.up_to_offset;
    job.run().unwrap();
    log.sync_completed(up_to);
    assert_eq!(log.durable_offset(), 2);
    drop(log);
    disk.crash(CrashOptions::default());
    assert_eq!(open(&disk, LogConfig::default()).log_end_offset(), 2);
}

#[test]
fn compressed_batches_are_found_by_timestamp_at_batch_granularity() {
    let disk = SimDisk::new(10);
    let mut log = open(&disk, LogConfig::default());
    log.append(&mut simple_batch(3, 100), 0).unwrap();
    // A "gzip" batch: the log never decompresses, so the payload need not be real gzip.
    let mut compressed = simple_batch(4, 200);
    compressed[21..23].copy_from_slice(&1i16.to_be_bytes());
    let crc = batch::compute_crc(&compressed);
    compressed[17..21].copy_from_slice(&crc.to_be_bytes());
    log.append(&mut compressed, 0).unwrap();
    // Record granularity inside the uncompressed batch.
    assert_eq!(log.offset_for_timestamp(101).unwrap(), Some((1, 101)));
    // Batch granularity (base offset, batch max timestamp) inside the compressed one.
    assert_eq!(log.offset_for_timestamp(202).unwrap(), Some((3, 203)));
    assert_eq!(log.max_timestamp(), Some((203, 3)));
}

#[test]
fn replicated_appends_keep_the_leaders_offsets_and_must_be_contiguous() {
    let disk = SimDisk::new(11);
    let mut leader = open(&disk, LogConfig::default());
    fill(&mut leader, 3, 2, 0);
    let bytes = leader.read(0, 1 << 20, i64::MAX).unwrap().to_vec();
    let follower_disk = SimDisk::new(12);
    let mut follower = open(&follower_disk, LogConfig::default());
    let info = follower.append_replicated(&bytes, 0).unwrap();
    assert_eq!((info.base_offset, info.last_offset), (0, 5));
    assert_eq!(follower.read(0, 1 << 20, i64::MAX).unwrap(), bytes);
    let error = follower.append_replicated(&bytes, 0).unwrap_err();
    assert!(matches!(
        error,
        AppendError::NonContiguous {
            expected: 6,
            found: 0
        }
    ));
    assert_eq!(follower.log_end_offset(), 6);
}

/// A process kill keeps the page cache, so a segment rolled just before it is still there when
/// the node restarts, but its directory entry may never have been synced (the roll's sync job
/// had not run). Recovery's sync must make it durable: acknowledged appends into that segment
/// after the restart must survive a later power loss (simulator, node workload, seed 286 with
/// kill and power-loss faults: acknowledged records at offsets 75-86 were lost).
#[test]
fn a_segment_rolled_before_a_kill_survives_a_later_power_loss() {
    let disk = SimDisk::new(13);
    let config = LogConfig {
        flush: FlushPolicy::Durable,
        ..small_config()
    };
    let mut log = open(&disk, config.clone());
    sync_all(&mut log);
    let before_roll = log.segment_base_offsets().len();
    let mut appended = 0;
    while log.segment_base_offsets().len() == before_roll {
        fill(&mut log, 1, 3, 0);
        appended += 3;
        assert!(appended < 1000, "the log never rolled");
    }
    // Killed before any sync job of the roll ran: no SimDisk crash, the page cache stays.
    drop(log);
    let mut log = open(&disk, config.clone());
    sync_all(&mut log);
    fill(&mut log, 2, 3, 0);
    sync_all(&mut log);
    let acknowledged = log.durable_offset();
    assert_eq!(acknowledged, log.log_end_offset());
    drop(log);
    disk.crash(CrashOptions::default());
    let log = open(&disk, config);
    assert!(
        log.log_end_offset() >= acknowledged,
        "durable up to {acknowledged}, recovered up to {}",
        log.log_end_offset()
    );
}

/// Opening a new log fsyncs nothing: a CreateTopics of thousands of partitions opens them all
/// in one broker step. The new log's first sync job, run on the disk thread, makes its
/// checkpoint, segment and file names durable; a power loss before it takes them.
#[test]
fn a_new_log_is_made_durable_by_its_first_sync_job_not_by_open() {
    let disk = SimDisk::new(1);
    let before = disk.stats();
    open(&disk, LogConfig::default());
    let opened = disk.stats();
    assert_eq!(
        (opened.file_syncs, opened.dir_syncs),
        (before.file_syncs, before.dir_syncs),
        "open synced inline"
    );
    let files = |disk: &SimDisk| -> Vec<String> {
        disk.paths()
            .into_iter()
            .filter(|path| path.starts_with(DIR))
            .collect()
    };
    let created = files(&disk);
    assert!(created.contains(&join(DIR, CHECKPOINT_FILE)), "{created:?}");
    disk.crash(CrashOptions::default());
    assert!(files(&disk).is_empty(), "nothing was synced yet");

    // The first handle is stale after the crash; the log is created again.
    let mut log = open(&disk, LogConfig::default());
    let job = log
        .take_sync_job()
        .expect("a new log hands out its first sync job under any flush policy");
    let up_to = job.up_to_offset;
    job.run().unwrap();
    log.sync_completed(up_to);
    disk.crash(CrashOptions::default());
    assert_eq!(files(&disk), created, "the synced new log's files survive");
    let log = open(&disk, LogConfig::default());
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
}
