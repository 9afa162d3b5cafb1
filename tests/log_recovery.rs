//! Recovery of the partition log on the real file backend: a torn or corrupt tail is cut back
//! to exactly the valid prefix, and missing or garbage indexes are rebuilt (Kafka's log
//! recovery: validate the unflushed tail batch by batch, truncate at the first invalid batch).

use std::path::Path;
use std::sync::Arc;

use karst::log::{LogConfig, PartitionLog, CLEAN_SHUTDOWN_FILE};
use karst::protocol::batch::{self, testing::simple_batch};
use karst::storage::FileStorage;

const DIR: &str = "events-0";

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 200,
        ..LogConfig::default()
    }
}

struct Built {
    root: tempfile::TempDir,
    /// Offsets after each batch, in order.
    batch_ends: Vec<i64>,
    /// The whole log's bytes, read back before shutting down.
    bytes: Vec<u8>,
}

/// A log of 40 batches of 1-4 records (several segments), closed cleanly or not.
fn build(clean: bool) -> Built {
    let root = tempfile::tempdir().unwrap();
    let storage = Arc::new(FileStorage::new(root.path()).unwrap());
    let mut log = PartitionLog::open(storage, DIR, config(), 0).unwrap();
    let mut batch_ends = Vec::new();
    for i in 0..40 {
        let mut batch = simple_batch(1 + i % 4, 10_000 + i as i64 * 10);
        let info = log.append(&mut batch, 0).unwrap();
        batch_ends.push(info.last_offset + 1);
    }
    assert!(log.segment_count() >= 3, "the test wants several segments");
    let bytes = read_all(&log);
    if clean {
        log.close().unwrap();
    }
    Built {
        root,
        batch_ends,
        bytes,
    }
}

fn read_all(log: &PartitionLog) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    // Bounded by the number of batches: every read returns at least one.
    for _ in 0..10_000 {
        if offset >= log.log_end_offset() {
            break;
        }
        let bytes = log.read(offset, 1 << 20, i64::MAX).unwrap();
        let last = batch::iter_validated(&bytes)
            .map(|r| r.unwrap().1)
            .last()
            .unwrap();
        offset = last.next_offset();
        out.extend_from_slice(&bytes);
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn last_segment(dir: &Path) -> std::path::PathBuf {
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.pop().unwrap()
}

/// Copies the built log, lets `damage` change the copy, reopens it and returns the log.
fn reopen_damaged(built: &Built, damage: impl FnOnce(&Path)) -> (tempfile::TempDir, PartitionLog) {
    let copy = tempfile::tempdir().unwrap();
    copy_dir(&built.root.path().join(DIR), &copy.path().join(DIR));
    damage(&copy.path().join(DIR));
    let storage = Arc::new(FileStorage::new(copy.path()).unwrap());
    let log = PartitionLog::open(storage, DIR, config(), 0).unwrap();
    (copy, log)
}

/// The log holds exactly the first `batches` batches of `built`.
fn assert_prefix(built: &Built, log: &PartitionLog, batches: usize, context: &str) {
    let end = if batches == 0 {
        0
    } else {
        built.batch_ends[batches - 1]
    };
    assert_eq!(log.log_end_offset(), end, "{context}: log end offset");
    let bytes = read_all(log);
    let expected_len: usize = batch::iter_validated(&built.bytes)
        .take(batches)
        .map(|r| r.unwrap().1.total_size())
        .sum();
    assert_eq!(bytes.len(), expected_len, "{context}: prefix length");
    assert_eq!(
        &bytes[..],
        &built.bytes[..expected_len],
        "{context}: prefix bytes"
    );
}

#[test]
fn cutting_the_last_batch_at_every_byte_recovers_the_previous_batches() {
    for clean in [false, true] {
        let built = build(clean);
        let segment = last_segment(&built.root.path().join(DIR));
        let file_len = std::fs::metadata(&segment).unwrap().len();
        let last_size = batch::iter_validated(&built.bytes)
            .last()
            .unwrap()
            .unwrap()
            .1
            .total_size() as u64;
        for cut in (file_len - last_size)..file_len {
            let name = segment.file_name().unwrap().to_owned();
            let (_copy, log) = reopen_damaged(&built, |dir| {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(dir.join(&name))
                    .unwrap();
                file.set_len(cut).unwrap();
            });
            assert_prefix(&built, &log, 39, &format!("clean={clean} cut at {cut}"));
        }
    }
}

#[test]
fn flipping_any_checked_byte_of_the_last_batch_cuts_it() {
    let built = build(false);
    let segment = last_segment(&built.root.path().join(DIR));
    let file_len = std::fs::metadata(&segment).unwrap().len();
    let last_size = batch::iter_validated(&built.bytes)
        .last()
        .unwrap()
        .unwrap()
        .1
        .total_size() as u64;
    let start = file_len - last_size;
    for at in 0..last_size {
        // partitionLeaderEpoch (bytes 12..16) is the one field neither the CRC nor the
        // offset sequence covers, as in Kafka.
        if (12..16).contains(&at) {
            continue;
        }
        let name = segment.file_name().unwrap().to_owned();
        let (_copy, log) = reopen_damaged(&built, |dir| {
            let path = dir.join(&name);
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[(start + at) as usize] ^= 0x5A;
            std::fs::write(&path, bytes).unwrap();
        });
        assert_prefix(
            &built,
            &log,
            39,
            &format!("flip at byte {at} of the last batch"),
        );
    }
}

#[test]
fn corruption_in_an_earlier_segment_cuts_everything_after_it() {
    let built = build(false);
    let (_copy, log) = reopen_damaged(&built, |dir| {
        // Unclean shutdown and no checkpointed recovery point: every segment is validated.
        std::fs::remove_file(dir.join("karst.checkpoint")).unwrap();
        let first = dir.join(format!("{:020}.log", 0));
        let mut bytes = std::fs::read(&first).unwrap();
        let second_batch = batch::parse_header(&bytes).unwrap().total_size();
        bytes[second_batch + 30] ^= 1;
        std::fs::write(&first, bytes).unwrap();
    });
    assert_prefix(&built, &log, 1, "corrupt second batch");
    assert_eq!(log.segment_count(), 1);
}

#[test]
fn deleted_or_garbage_indexes_are_rebuilt() {
    for clean in [false, true] {
        let built = build(clean);
        let (copy, log) = reopen_damaged(&built, |dir| {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path
                    .extension()
                    .is_some_and(|e| e == "index" || e == "timeindex")
                {
                    std::fs::remove_file(path).unwrap();
                }
            }
        });
        assert_prefix(&built, &log, 40, &format!("clean={clean}, indexes deleted"));
        assert_eq!(
            log.offset_for_timestamp(10_000 + 25 * 10)
                .unwrap()
                .map(|(_, ts)| ts),
            Some(10_250)
        );
        drop(log);
        let names: Vec<_> = std::fs::read_dir(copy.path().join(DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().any(|n| n.ends_with(".timeindex")));

        let (_copy, log) = reopen_damaged(&built, |dir| {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path
                    .extension()
                    .is_some_and(|e| e == "index" || e == "timeindex")
                {
                    std::fs::write(&path, [0xEEu8; 24]).unwrap();
                }
            }
        });
        assert_prefix(&built, &log, 40, &format!("clean={clean}, garbage indexes"));
        for offset in 0..log.log_end_offset() {
            let bytes = log.read(offset, 1, i64::MAX).unwrap();
            let header = batch::parse_header(&bytes).unwrap();
            assert!(header.base_offset <= offset && offset <= header.last_offset());
        }
    }
}

#[test]
fn clean_shutdown_marker_is_written_by_close_and_consumed_by_open() {
    let built = build(true);
    assert!(built
        .root
        .path()
        .join(DIR)
        .join(CLEAN_SHUTDOWN_FILE)
        .exists());
    let (copy, log) = reopen_damaged(&built, |_| {});
    assert_prefix(&built, &log, 40, "clean reopen");
    assert_eq!(log.durable_offset(), log.log_end_offset());
    assert!(!copy.path().join(DIR).join(CLEAN_SHUTDOWN_FILE).exists());
}
