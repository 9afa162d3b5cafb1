//! Log compaction on real files (`FileStorage`): keyed batches compressed with every codec
//! Kafka defines (none, gzip, snappy, lz4, zstd), tombstones, cleaning driven by `tick`, a
//! restart, and recovery of an interrupted swap (Kafka's `.cleaned` / `.swap` leftovers).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use karst::log::{CleanupPolicy, LogConfig, PartitionLog};
use karst::protocol::batch::{
    self,
    testing::{build_batch, compress_batch, TestRecord},
};
use karst::storage::FileStorage;

const DIR: &str = "compacted-topic-0";

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 2_000,
        index_interval_bytes: 256,
        cleanup_policy: CleanupPolicy::Compact,
        delete_retention_ms: 1_000,
        min_cleanable_dirty_ratio: 0.1,
        cleaner_backoff_ms: 10,
        ..LogConfig::default()
    }
}

fn open(root: &Path, now: i64) -> PartitionLog {
    let storage = Arc::new(FileStorage::new(root).unwrap());
    PartitionLog::open(storage, DIR, config(), now).unwrap()
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

fn drive(log: &mut PartitionLog, now: i64) {
    sync_all(log);
    for _ in 0..10_000 {
        log.tick(now).unwrap();
        sync_all(log);
        if !log.cleaning_in_progress() {
            assert_eq!(log.cleaner_error(), None);
            return;
        }
    }
    panic!("cleaning did not finish");
}

/// offset -> (key, value, codec of the batch holding it)
type Records = BTreeMap<i64, (Vec<u8>, Option<Vec<u8>>, i16)>;

fn read_all(log: &PartitionLog) -> Records {
    let mut records = BTreeMap::new();
    let mut offset = log.log_start_offset();
    for _ in 0..100_000 {
        if offset >= log.log_end_offset() {
            break;
        }
        let bytes = log.read(offset, 1 << 16, i64::MAX).unwrap();
        for item in batch::iter_validated(&bytes) {
            let (position, header) = item.unwrap();
            let one = &bytes[position..position + header.total_size()];
            let section = batch::records_section(one).unwrap();
            for r in batch::parse_records(&section, header.records_count as usize).unwrap() {
                records.insert(
                    header.base_offset + r.offset_delta,
                    (
                        r.key.unwrap().to_vec(),
                        r.value.map(<[u8]>::to_vec),
                        header.compression(),
                    ),
                );
            }
            offset = header.next_offset();
        }
    }
    records
}

/// Appends `rounds` batches per codec; each batch updates 4 of 10 keys; key 3 is deleted
/// (tombstone) midway.
fn fill(log: &mut PartitionLog, rounds: usize) -> Records {
    let mut written = BTreeMap::new();
    for round in 0..rounds {
        for codec in 0..=4i16 {
            let records: Vec<TestRecord> = (0..4)
                .map(|i| {
                    let key = (round * 3 + i + codec as usize) % 10;
                    let tombstone = key == 3 && round == rounds / 2;
                    TestRecord {
                        key: Some(format!("key-{key}").into_bytes()),
                        value: (!tombstone).then(|| {
                            format!("value-{round}-{codec}-{i}-{}", "x".repeat(40)).into_bytes()
                        }),
                        headers: vec![("h".to_string(), Some(b"1".to_vec()))],
                    }
                })
                .collect();
            let plain = build_batch(&records, 1_000 + round as i64, -1, -1, -1);
            let mut bytes = if codec == 0 {
                plain
            } else {
                compress_batch(&plain, codec)
            };
            let info = log.append(&mut bytes, 0).unwrap();
            for (i, record) in records.into_iter().enumerate() {
                written.insert(
                    info.base_offset + i as i64,
                    (record.key.unwrap(), record.value, codec),
                );
            }
        }
    }
    written
}

fn latest(written: &Records) -> BTreeMap<Vec<u8>, (i64, Option<Vec<u8>>)> {
    let mut latest = BTreeMap::new();
    for (offset, (key, value, _)) in written {
        latest.insert(key.clone(), (*offset, value.clone()));
    }
    latest
}

fn check(after: &Records, written: &Records) {
    for (offset, record) in after {
        assert_eq!(
            written.get(offset),
            Some(record),
            "record at {offset} differs"
        );
    }
    for (key, (offset, value)) in latest(written) {
        if value.is_some() {
            assert!(after.contains_key(&offset), "latest of {key:?} lost");
        }
    }
}

#[test]
fn compressed_batches_of_every_codec_are_cleaned_and_keep_their_codec() {
    let root = tempfile::tempdir().unwrap();
    let mut log = open(root.path(), 0);
    let written = fill(&mut log, 30);
    let end = log.log_end_offset();
    let size = log.size_bytes();
    drive(&mut log, 100);
    let after = read_all(&log);
    check(&after, &written);
    assert_eq!(log.log_end_offset(), end);
    assert!(log.cleaner_stats().segments_rewritten > 0);
    assert!(log.size_bytes() < size, "{} >= {size}", log.size_bytes());
    // Every record keeps the codec of the batch it was produced in (recompressed).
    for (offset, (_, _, codec)) in &after {
        assert_eq!(written[offset].2, *codec, "codec changed at {offset}");
    }
    // Restart: the same records, and nothing left over.
    log.close().unwrap();
    let mut log = open(root.path(), 200);
    assert_eq!(read_all(&log), after);
    let names: Vec<_> = std::fs::read_dir(root.path().join(DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names
        .iter()
        .all(|n| !n.ends_with(".cleaned") && !n.ends_with(".swap")));
    // After delete.retention.ms the tombstone of key-3 goes (KIP-534), if it was cleaned.
    drive(&mut log, 5_000);
    drive(&mut log, 5_100);
    let last = read_all(&log);
    check(&last, &written);
    let tombstone = latest(&written)[&b"key-3".to_vec()].0;
    let active = *log.segment_base_offsets().last().unwrap();
    if tombstone < active {
        assert!(
            !last.contains_key(&tombstone),
            "tombstone outlived its horizon"
        );
    }
}

#[test]
fn open_completes_an_interrupted_swap_and_drops_an_unfinished_clean() {
    let root = tempfile::tempdir().unwrap();
    let mut log = open(root.path(), 0);
    let written = fill(&mut log, 20);
    sync_all(&mut log);
    log.close().unwrap();
    let dir = root.path().join(DIR);
    let first = dir.join(format!("{:020}.log", 0));
    let old = std::fs::read(&first).unwrap();
    let mut log = open(root.path(), 10);
    drive(&mut log, 100);
    let cleaned = read_all(&log);
    log.close().unwrap();
    let new = std::fs::read(&first).unwrap();
    assert_ne!(old, new, "the first segment was not cleaned");
    // A crash between "rename .cleaned to .swap" and "rename .swap to .log": the old segment
    // is still in place, the swap file is complete; another segment's clean was unfinished.
    std::fs::write(&first, &old).unwrap();
    std::fs::write(dir.join(format!("{:020}.log.swap", 0)), &new).unwrap();
    std::fs::write(dir.join(format!("{:020}.log.cleaned", 40)), b"half written").unwrap();
    std::fs::remove_file(dir.join("karst.clean-shutdown")).unwrap();
    let log = open(root.path(), 200);
    assert_eq!(read_all(&log), cleaned);
    check(&cleaned, &written);
    assert_eq!(std::fs::read(&first).unwrap(), new);
    assert!(!dir.join(format!("{:020}.log.cleaned", 40)).exists());
    // A crash before the swap file was complete: only `.cleaned` exists, the old stays.
    drop(log);
    std::fs::write(
        dir.join(format!("{:020}.log.cleaned", 0)),
        &new[..new.len() / 2],
    )
    .unwrap();
    let log = open(root.path(), 300);
    assert_eq!(read_all(&log), cleaned);
}
