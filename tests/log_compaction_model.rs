//! Model test of log compaction on the simulated disk: random keyed writes (every codec),
//! tombstones, DeleteRecords, follower truncations, rolls by age, ticks that clean, syncs,
//! crashes (with torn writes) and clean restarts, checked against the full history of what was
//! appended.
//!
//! Properties (Kafka's "Log Compaction" guarantees, KIP-534 for tombstones):
//! - nothing is invented: every readable record is the one appended at that offset;
//! - offsets only increase along the log, and reads return whole batches;
//! - the latest record of every key (at or above the log start) stays readable at its
//!   original offset, unless it is a tombstone whose delete.retention.ms has passed;
//! - a tombstone disappears only delete.retention.ms after it could first have been cleaned;
//! - cleaning never moves the log end offset (nor the log start offset);
//! - every offset below `durable_offset()` at a crash survives it.

use std::collections::BTreeMap;
use std::sync::Arc;

use karst::log::{CleanupPolicy, LogConfig, PartitionLog};
use karst::protocol::batch::{
    self,
    testing::{build_batch, compress_batch, TestRecord},
};
use karst::storage::{CrashOptions, SimDisk};
use proptest::prelude::*;

const DIR: &str = "compacted-0";
const KEYS: u8 = 6;

#[derive(Debug, Clone)]
enum Op {
    /// (key, tombstone) records in one batch, with a codec.
    Append {
        records: Vec<(u8, bool)>,
        codec: i16,
    },
    Tick {
        advance_ms: u16,
    },
    Sync,
    DeleteRecords {
        at: u16,
    },
    Truncate {
        at: u16,
    },
    /// The high watermark moves to the log end: the cleaner may use records below it and
    /// truncations stay above it (as a follower's do).
    AdvanceHighWatermark,
    Crash {
        tear: bool,
    },
    CloseReopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (prop::collection::vec((0..KEYS, prop::bool::weighted(0.15)), 1..4), 0i16..5)
            .prop_map(|(records, codec)| Op::Append { records, codec }),
        6 => (0u16..400).prop_map(|advance_ms| Op::Tick { advance_ms }),
        2 => Just(Op::Sync),
        1 => any::<u16>().prop_map(|at| Op::DeleteRecords { at }),
        1 => any::<u16>().prop_map(|at| Op::Truncate { at }),
        3 => Just(Op::AdvanceHighWatermark),
        1 => any::<bool>().prop_map(|tear| Op::Crash { tear }),
        1 => Just(Op::CloseReopen),
    ]
}

fn config() -> impl Strategy<Value = LogConfig> {
    (
        prop_oneof![Just(400u64), Just(900)],
        prop_oneof![Just(0.0f64), Just(0.3), Just(0.5)],
        prop_oneof![Just(0i64), Just(150)],
        prop_oneof![
            Just(CleanupPolicy::Compact),
            Just(CleanupPolicy::CompactDelete)
        ],
    )
        .prop_map(|(segment_bytes, ratio, lag, cleanup_policy)| LogConfig {
            segment_bytes,
            segment_ms: 300,
            index_interval_bytes: 64,
            retention_ms: -1,
            retention_bytes: -1,
            retention_check_interval_ms: 50,
            cleanup_policy,
            delete_retention_ms: 500,
            min_cleanable_dirty_ratio: ratio,
            min_compaction_lag_ms: lag,
            cleaner_backoff_ms: 20,
            ..LogConfig::default()
        })
}

/// One appended record: key, value (None: tombstone), append time.
type Record = (u8, Option<Vec<u8>>, i64);

struct Model {
    /// Every record appended and not truncated, by offset.
    history: BTreeMap<i64, Record>,
    log_start_offset: i64,
}

fn open(disk: &SimDisk, config: &LogConfig, now: i64) -> PartitionLog {
    PartitionLog::open(Arc::new(disk.clone()), DIR, config.clone(), now).unwrap()
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

/// Every readable record: offset -> (key, value).
fn read_all(log: &PartitionLog) -> BTreeMap<i64, (u8, Option<Vec<u8>>)> {
    let mut records = BTreeMap::new();
    let mut offset = log.log_start_offset();
    let mut last = -1i64;
    // Bounded: each read advances past at least one batch.
    for _ in 0..100_000 {
        if offset >= log.log_end_offset() {
            break;
        }
        let bytes = log.read(offset, 700, i64::MAX).unwrap();
        assert!(!bytes.is_empty(), "read at {offset} below the end is empty");
        for item in batch::iter_validated(&bytes) {
            let (position, header) = item.unwrap();
            assert!(header.last_offset() >= offset, "read returned an old batch");
            assert!(
                header.base_offset > last,
                "offsets go back at {}",
                header.base_offset
            );
            let one = &bytes[position..position + header.total_size()];
            let section = batch::records_section(one).unwrap();
            for record in batch::parse_records(&section, header.records_count as usize).unwrap() {
                let at = header.base_offset + record.offset_delta;
                assert!(
                    at > last && at <= header.last_offset(),
                    "record offset {at}"
                );
                last = at;
                let key = record.key.expect("keyed")[1] - b'0';
                records.insert(at, (key, record.value.map(<[u8]>::to_vec)));
            }
            last = last.max(header.last_offset());
            offset = header.next_offset();
        }
    }
    records
        .into_iter()
        .filter(|(offset, _)| *offset >= log.log_start_offset())
        .collect()
}

fn check(log: &PartitionLog, model: &Model, now: i64, config: &LogConfig) {
    assert_eq!(log.log_start_offset(), model.log_start_offset);
    let readable = read_all(log);
    for (offset, (key, value)) in &readable {
        let Some((k, v, _)) = model.history.get(offset) else {
            panic!("offset {offset} invented");
        };
        assert_eq!((k, v), (key, value), "record at {offset} differs");
    }
    let mut latest: BTreeMap<u8, (i64, &Record)> = BTreeMap::new();
    for (offset, record) in model.history.range(model.log_start_offset..) {
        latest.insert(record.0, (*offset, record));
    }
    for (key, (offset, (_, value, appended_ms))) in latest {
        if readable.contains_key(&offset) {
            continue;
        }
        assert!(
            value.is_none(),
            "latest value of key {key} at {offset} lost (now {now})"
        );
        assert!(
            now >= appended_ms + config.delete_retention_ms,
            "tombstone of key {key} at {offset} removed at {now}, appended at {appended_ms}"
        );
    }
}

fn key_name(key: u8) -> Vec<u8> {
    vec![b'k', b'0' + key]
}

fn run(config: LogConfig, ops: Vec<Op>, seed: u64) {
    let disk = SimDisk::new(seed);
    let mut now = 1_000i64;
    let mut log = open(&disk, &config, now);
    let mut model = Model {
        history: BTreeMap::new(),
        log_start_offset: 0,
    };
    let mut serial = 0u64;
    let mut high_watermark = 0i64;
    log.set_cleanable_limit(high_watermark);
    for op in ops {
        match op {
            Op::Append { records, codec } => {
                let test_records: Vec<TestRecord> = records
                    .iter()
                    .map(|&(key, tombstone)| {
                        serial += 1;
                        TestRecord {
                            key: Some(key_name(key)),
                            value: (!tombstone).then(|| format!("v{serial}").into_bytes()),
                            headers: Vec::new(),
                        }
                    })
                    .collect();
                let plain = build_batch(&test_records, now, -1, -1, -1);
                let mut bytes = if codec == 0 {
                    plain
                } else {
                    compress_batch(&plain, codec)
                };
                let info = log.append(&mut bytes, now).unwrap();
                for (i, record) in test_records.into_iter().enumerate() {
                    let key = record.key.unwrap()[1] - b'0';
                    model
                        .history
                        .insert(info.base_offset + i as i64, (key, record.value, now));
                }
            }
            Op::Tick { advance_ms } => {
                now += advance_ms as i64;
                let (start, end) = (log.log_start_offset(), log.log_end_offset());
                // A few ticks with syncs between, as the runtime does.
                for _ in 0..4 {
                    log.tick(now).unwrap();
                    sync_all(&mut log);
                }
                assert_eq!(log.log_end_offset(), end, "cleaning moved the log end");
                assert_eq!(
                    log.log_start_offset(),
                    start,
                    "cleaning moved the log start"
                );
                assert_eq!(log.cleaner_error(), None);
            }
            Op::Sync => sync_all(&mut log),
            Op::DeleteRecords { at } => {
                let span = log.log_end_offset() - log.log_start_offset();
                let offset = log.log_start_offset() + at as i64 % (span + 1);
                model.log_start_offset = log.delete_records_before(offset).unwrap();
            }
            Op::AdvanceHighWatermark => {
                high_watermark = log.log_end_offset();
                log.set_cleanable_limit(high_watermark);
            }
            Op::Truncate { at } => {
                let low = log.log_start_offset().max(high_watermark);
                let span = log.log_end_offset() - low;
                let offset = low + at as i64 % (span + 1);
                log.truncate_to(offset).unwrap();
                // Durable at once, so a crash cannot bring the truncated records back.
                sync_all(&mut log);
                let end = log.log_end_offset();
                assert!(end <= offset.max(log.log_start_offset()));
                model.history.retain(|offset, _| *offset < end);
                model.log_start_offset = log.log_start_offset();
            }
            Op::Crash { tear } => {
                let durable = log.durable_offset();
                let start = log.log_start_offset();
                drop(log);
                disk.crash(CrashOptions {
                    tear_last_write: tear,
                });
                log = open(&disk, &config, now);
                let end = log.log_end_offset();
                assert!(
                    end >= durable,
                    "durable offsets lost: end {end} < {durable}"
                );
                assert!(log.log_start_offset() <= start.max(end));
                model.history.retain(|offset, _| *offset < end);
                model.log_start_offset = log.log_start_offset();
                high_watermark = high_watermark.min(end);
                log.set_cleanable_limit(high_watermark);
            }
            Op::CloseReopen => {
                let end = log.log_end_offset();
                log.close().unwrap();
                log = open(&disk, &config, now);
                log.set_cleanable_limit(high_watermark);
                assert_eq!(log.log_end_offset(), end);
            }
        }
        check(&log, &model, now, &config);
        log.invariants();
    }
    // Finally: let the cleaner finish well past every horizon.
    log.set_cleanable_limit(log.log_end_offset());
    now += 10_000;
    for _ in 0..200 {
        log.tick(now).unwrap();
        sync_all(&mut log);
        now += 25;
    }
    check(&log, &model, now, &config);
    log.invariants();
    if std::env::var("KARST_MODEL_STATS").is_ok() {
        eprintln!("cleaner stats: {:?}", log.cleaner_stats());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn compaction_keeps_the_latest_record_of_every_key(
        config in config(),
        ops in prop::collection::vec(op(), 1..120),
        seed in any::<u64>(),
    ) {
        run(config, ops, seed);
    }
}
