//! Partition log benchmark: Karst's log on real files side by side with the same work done
//! with raw file I/O, in one run, several repetitions, medians. Not a timed test.
//!
//! Run: `cargo bench --bench log` (release). Optional: `KARST_BENCH_REPS` (default 9),
//! `KARST_BENCH_CASES` (comma list of append, read, durable, locate; default all),
//! `KARST_BENCH_DIR` (default: a temporary directory under the system temp dir). Each
//! repetition runs Karst and the reference back to back, alternating which goes first, so both
//! see the same machine load; figures are medians over repetitions.
//!
//! The durable case runs twice per repetition: with 5 requests in flight per appender (Kafka's
//! max.in.flight.requests.per.connection default; about 320 KiB per fdatasync) and with 16
//! (2 MiB outstanding, about 1 MiB per fdatasync, the reference's sync granularity).
//!
//! Cases (issue 2):
//! 1. append 1 KiB records in 16 KiB batches, page-cache policy, vs raw sequential write();
//! 2. read a 1 GiB log from the page cache (1 MiB fetches) vs raw read() of the same files;
//! 3. durable policy, group commit, 8 concurrent appenders vs raw write + fdatasync every MiB:
//!    appenders submit to one log-owner thread (the event loop), which appends and hands
//!    SyncJobs to one disk thread; an append is acknowledged once durable_offset passes it;
//! 4. locate an offset and a timestamp in a log of 1,000 segments.
//! 5. compact (cleanup.policy=compact): one full cleaning pass over a 64 MiB log of keyed
//!    100 B records (10 per batch, 20,000 keys, uncompressed and lz4), driven by `tick` with
//!    its sync jobs run inline, vs the raw sequential read + write + fdatasync of the same
//!    segment files (the I/O a copy of the log costs).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use karst::log::{CleanupPolicy, FlushPolicy, LogConfig, PartitionLog, SyncJob};
use karst::protocol::batch::{self, testing};
use karst::storage::FileStorage;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
const RECORD_BYTES: usize = KIB;
const RECORDS_PER_BATCH: usize = 16;
const APPEND_BYTES: usize = 256 * MIB;
const READ_LOG_BYTES: usize = 1024 * MIB;
const FETCH_BYTES: usize = MIB;
const DURABLE_BYTES: usize = 128 * MIB;
const IN_FLIGHT_VARIANTS: [usize; 2] = [5, 16];
const APPENDERS: usize = 8;
const SYNC_EVERY_BYTES: usize = MIB;
const LOCATE_SEGMENTS: usize = 1000;
const LOCATE_SEGMENT_BYTES: u64 = MIB as u64;
const LOCATE_LOOKUPS: usize = 2000;
/// Under `cargo test` (no `--bench` argument) every size is divided by this and one
/// repetition runs: a smoke run that keeps the bench code working without minutes of I/O.
const SMOKE_DIVISOR: usize = 256;

static DIVISOR: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// `amount` scaled down in smoke mode (at least `floor`).
fn scaled(amount: usize, floor: usize) -> usize {
    (amount / DIVISOR.get().copied().unwrap_or(1)).max(floor)
}

fn batch_of(records: usize, base_timestamp: i64) -> Vec<u8> {
    let records: Vec<testing::TestRecord> = (0..records)
        .map(|i| testing::TestRecord {
            key: None,
            value: Some(vec![b'a' + (i % 26) as u8; RECORD_BYTES]),
            headers: Vec::new(),
        })
        .collect();
    testing::build_batch(&records, base_timestamp, -1, -1, -1)
}

const COMPACT_LOG_BYTES: usize = 64 * MIB;
const COMPACT_SEGMENT_BYTES: u64 = 8 * MIB as u64;
const COMPACT_KEYS: u64 = 20_000;
const COMPACT_VALUE_BYTES: usize = 100;
const COMPACT_RECORDS_PER_BATCH: usize = 10;

fn compact_config() -> LogConfig {
    LogConfig {
        segment_bytes: scaled(COMPACT_SEGMENT_BYTES as usize, 256 * KIB) as u64,
        cleanup_policy: CleanupPolicy::Compact,
        min_cleanable_dirty_ratio: 0.0,
        cleaner_backoff_ms: 1,
        ..page_cache_config()
    }
}

fn run_jobs(log: &mut PartitionLog) {
    while let Some(job) = log.take_sync_job() {
        let up_to = job.up_to_offset;
        job.run().expect("sync");
        log.sync_completed(up_to);
    }
}

/// Builds a dirty compacted log of keyed records with `codec`; returns its directory.
fn build_compact_log(root: &Path, codec: i16) -> PathBuf {
    let dir = fresh_dir(root, "compact");
    let storage = Arc::new(FileStorage::new(&dir).expect("storage"));
    let mut log = PartitionLog::open(storage, "bench-0", compact_config(), 0).expect("open");
    let mut rng = Lcg(7);
    while (log.size_bytes() as usize) < scaled(COMPACT_LOG_BYTES, 2 * MIB) {
        let records: Vec<testing::TestRecord> = (0..COMPACT_RECORDS_PER_BATCH)
            .map(|i| testing::TestRecord {
                key: Some(format!("key-{:08}", rng.below(COMPACT_KEYS)).into_bytes()),
                value: Some(vec![b'a' + (i % 26) as u8; COMPACT_VALUE_BYTES]),
                headers: Vec::new(),
            })
            .collect();
        let plain = testing::build_batch(&records, 1_000, -1, -1, -1);
        let mut batch = if codec == 0 {
            plain
        } else {
            testing::compress_batch(&plain, codec)
        };
        log.append(&mut batch, 0).expect("append");
    }
    run_jobs(&mut log);
    log.close().expect("close");
    dir
}

/// One full cleaning pass; returns (MiB/s of log bytes cleaned, bytes before, bytes after).
fn karst_compact(dir: &Path) -> (f64, u64, u64) {
    let storage = Arc::new(FileStorage::new(dir).expect("storage"));
    let mut log = PartitionLog::open(storage, "bench-0", compact_config(), 0).expect("open");
    run_jobs(&mut log);
    let before = log.size_bytes();
    // The active segment is not cleaned: count only the closed segments' bytes.
    let cleanable = closed_bytes(dir);
    let start = Instant::now();
    // Bounded: one segment per tick, two phases, plus sync round trips.
    for now in 1..100_000 {
        log.tick(now).expect("tick");
        run_jobs(&mut log);
        if !log.cleaning_in_progress() && log.cleaner_stats().passes > 0 {
            break;
        }
    }
    let elapsed = start.elapsed();
    assert_eq!(log.cleaner_error(), None);
    assert_eq!(log.cleaner_stats().passes, 1, "one pass");
    (
        mib_per_s(cleanable as usize, elapsed),
        before,
        log.size_bytes(),
    )
}

/// Bytes of every segment file but the last (the active one).
fn closed_bytes(dir: &Path) -> u64 {
    let mut files = segment_files(dir);
    files.pop();
    files
        .iter()
        .map(|f| std::fs::metadata(f).expect("stat").len())
        .sum()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("bench-0"))
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

/// The reference: read every closed segment and write it to a new file with fdatasync.
fn raw_copy(dir: &Path) -> f64 {
    let mut files = segment_files(dir);
    files.pop();
    let start = Instant::now();
    let mut total = 0usize;
    let mut buf = Vec::new();
    for (i, file) in files.iter().enumerate() {
        buf.clear();
        File::open(file)
            .expect("open")
            .read_to_end(&mut buf)
            .expect("read");
        let copy = dir.join(format!("copy-{i}"));
        let mut out = File::create(&copy).expect("create");
        out.write_all(&buf).expect("write");
        out.sync_data().expect("sync");
        total += buf.len();
    }
    let elapsed = start.elapsed();
    for i in 0..files.len() {
        let _ = std::fs::remove_file(dir.join(format!("copy-{i}")));
    }
    mib_per_s(total, elapsed)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    values[values.len() / 2]
}

fn mib_per_s(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / MIB as f64 / elapsed.as_secs_f64()
}

fn fresh_dir(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench dir");
    dir
}

fn page_cache_config() -> LogConfig {
    LogConfig {
        flush: FlushPolicy::PageCache,
        retention_ms: -1,
        ..LogConfig::default()
    }
}

/// Case 1, Karst: append `APPEND_BYTES` in 16 KiB batches.
fn karst_append(root: &Path, template: &[u8]) -> f64 {
    let dir = fresh_dir(root, "append-karst");
    let storage = Arc::new(FileStorage::new(&dir).expect("storage"));
    let mut log = PartitionLog::open(storage, "bench-0", page_cache_config(), 0).expect("open");
    let mut batch = template.to_vec();
    let count = scaled(APPEND_BYTES, MIB) / template.len();
    let start = Instant::now();
    for _ in 0..count {
        log.append(&mut batch, 0).expect("append");
    }
    let elapsed = start.elapsed();
    drop(log);
    std::fs::remove_dir_all(&dir).expect("cleanup");
    mib_per_s(count * template.len(), elapsed)
}

/// Case 1, reference: the same bytes with write() on one file.
fn raw_append(root: &Path, template: &[u8]) -> f64 {
    let dir = fresh_dir(root, "append-raw");
    let mut file = File::create(dir.join("raw.log")).expect("create");
    let count = scaled(APPEND_BYTES, MIB) / template.len();
    let start = Instant::now();
    for _ in 0..count {
        file.write_all(template).expect("write");
    }
    let elapsed = start.elapsed();
    drop(file);
    std::fs::remove_dir_all(&dir).expect("cleanup");
    mib_per_s(count * template.len(), elapsed)
}

/// Case 2, Karst: fetch the whole log from offset 0, 1 MiB at a time.
fn karst_read(log: &PartitionLog) -> (f64, usize) {
    let end = log.log_end_offset();
    let mut offset = 0;
    let mut bytes = 0usize;
    let start = Instant::now();
    while offset < end {
        let fetched = log.read(offset, FETCH_BYTES, i64::MAX).expect("read");
        // The consumer's part: find the next offset from the last batch.
        let mut at = 0;
        let mut last = 0;
        while at < fetched.len() {
            let header = batch::parse_header(&fetched[at..]).expect("header");
            last = header.next_offset();
            at += header.total_size();
        }
        offset = last;
        bytes += fetched.len();
    }
    (mib_per_s(bytes, start.elapsed()), bytes)
}

/// Case 2, reference: read() the same segment files in 1 MiB chunks into one buffer.
fn raw_read(files: &[PathBuf]) -> (f64, usize) {
    let mut buf = vec![0u8; FETCH_BYTES];
    let mut bytes = 0usize;
    let start = Instant::now();
    for path in files {
        let mut file = File::open(path).expect("open");
        loop {
            let n = file.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            bytes += n;
        }
    }
    (mib_per_s(bytes, start.elapsed()), bytes)
}

enum OwnerInput {
    Append { appender: usize, batch: Vec<u8> },
    Synced { up_to_offset: i64 },
    AppenderDone,
}

/// Case 3, Karst: 8 appenders, one log-owner thread, one disk thread running SyncJobs.
fn karst_durable(root: &Path, template: &[u8], in_flight: usize) -> (f64, f64) {
    let dir = fresh_dir(root, "durable-karst");
    let storage = Arc::new(FileStorage::new(&dir).expect("storage"));
    let config = LogConfig {
        flush: FlushPolicy::Durable,
        ..page_cache_config()
    };
    let mut log = PartitionLog::open(storage, "bench-0", config, 0).expect("open");
    // Start from a synced, empty log so the first job is only appends.
    if let Some(job) = log.take_sync_job() {
        let up_to = job.up_to_offset;
        job.run().expect("sync");
        log.sync_completed(up_to);
    }
    let per_appender = scaled(DURABLE_BYTES, MIB) / template.len() / APPENDERS;
    let (owner_tx, owner_rx) = mpsc::channel::<OwnerInput>();
    let (disk_tx, disk_rx) = mpsc::channel::<SyncJob>();
    let mut ack_txs = Vec::new();
    let mut appenders = Vec::new();
    let start = Instant::now();
    for appender in 0..APPENDERS {
        let (ack_tx, ack_rx) = mpsc::channel::<()>();
        ack_txs.push(ack_tx);
        let owner_tx = owner_tx.clone();
        let template = template.to_vec();
        appenders.push(std::thread::spawn(move || {
            let mut sent = 0;
            let mut acked = 0;
            while acked < per_appender {
                while sent < per_appender && sent - acked < in_flight {
                    // A request arrives in its own buffer, as from a socket.
                    let batch = template.clone();
                    owner_tx
                        .send(OwnerInput::Append { appender, batch })
                        .expect("owner alive");
                    sent += 1;
                }
                ack_rx.recv().expect("ack");
                acked += 1;
            }
            owner_tx
                .send(OwnerInput::AppenderDone)
                .expect("owner alive");
        }));
    }
    let disk_owner_tx = owner_tx.clone();
    drop(owner_tx);
    let disk = std::thread::spawn(move || {
        let mut syncs = 0u64;
        for job in disk_rx {
            let up_to_offset = job.up_to_offset;
            job.run().expect("fdatasync");
            syncs += 1;
            if disk_owner_tx
                .send(OwnerInput::Synced { up_to_offset })
                .is_err()
            {
                break;
            }
        }
        syncs
    });
    // The log owner: the event loop's role in the broker.
    let mut waiting: std::collections::VecDeque<(i64, usize)> = Default::default();
    let mut done = 0;
    let mut job_out = false;
    while done < APPENDERS {
        match owner_rx.recv().expect("inputs") {
            OwnerInput::Append {
                appender,
                mut batch,
            } => {
                let info = log.append(&mut batch, 0).expect("append");
                waiting.push_back((info.last_offset, appender));
            }
            OwnerInput::Synced { up_to_offset } => {
                log.sync_completed(up_to_offset);
                job_out = false;
                let durable = log.durable_offset();
                while let Some(&(last, appender)) = waiting.front() {
                    if last >= durable {
                        break;
                    }
                    waiting.pop_front();
                    let _ = ack_txs[appender].send(());
                }
            }
            OwnerInput::AppenderDone => done += 1,
        }
        if !job_out {
            if let Some(job) = log.take_sync_job() {
                job_out = true;
                disk_tx.send(job).expect("disk thread");
            }
        }
    }
    let elapsed = start.elapsed();
    drop(disk_tx);
    let syncs = disk.join().expect("disk thread");
    for appender in appenders {
        appender.join().expect("appender");
    }
    let bytes = per_appender * APPENDERS * template.len();
    drop(log);
    std::fs::remove_dir_all(&dir).expect("cleanup");
    (
        mib_per_s(bytes, elapsed),
        bytes as f64 / syncs.max(1) as f64 / KIB as f64,
    )
}

/// Case 3, reference: one thread, write() 16 KiB batches, fdatasync after every MiB.
fn raw_durable(root: &Path, template: &[u8]) -> f64 {
    let dir = fresh_dir(root, "durable-raw");
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(dir.join("raw.log"))
        .expect("create");
    let count = scaled(DURABLE_BYTES, MIB) / template.len() / APPENDERS * APPENDERS;
    let mut since_sync = 0;
    let start = Instant::now();
    for _ in 0..count {
        file.write_all(template).expect("write");
        since_sync += template.len();
        if since_sync >= SYNC_EVERY_BYTES {
            file.sync_data().expect("fdatasync");
            since_sync = 0;
        }
    }
    file.sync_data().expect("fdatasync");
    let elapsed = start.elapsed();
    drop(file);
    std::fs::remove_dir_all(&dir).expect("cleanup");
    mib_per_s(count * template.len(), elapsed)
}

fn percentile_us(samples: &mut [Duration], fraction: f64) -> f64 {
    samples.sort();
    let at = ((samples.len() as f64 * fraction) as usize).min(samples.len() - 1);
    samples[at].as_secs_f64() * 1e6
}

/// A small deterministic generator (no global randomness in the bench either).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}

fn main() {
    // `cargo bench` passes --bench to a harness = false target; `cargo test --all-targets`
    // does not, and gets the smoke run.
    let bench = std::env::args().any(|arg| arg == "--bench");
    DIVISOR
        .set(if bench { 1 } else { SMOKE_DIVISOR })
        .expect("set once");
    if !bench {
        println!("smoke run (sizes / {SMOKE_DIVISOR}, 1 repetition); use `cargo bench --bench log` for figures");
    }
    let reps: usize = if bench {
        std::env::var("KARST_BENCH_REPS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(9)
            .max(1)
    } else {
        1
    };
    let temp = match std::env::var("KARST_BENCH_DIR") {
        Ok(dir) => tempfile::tempdir_in(dir),
        Err(_) => tempfile::tempdir(),
    }
    .expect("temp dir");
    let root = temp.path();
    let template = batch_of(RECORDS_PER_BATCH, 1_000);
    println!(
        "karst log bench: {reps} repetitions, batch {} B ({RECORDS_PER_BATCH} x {RECORD_BYTES} B records), dir {}",
        template.len(),
        root.display()
    );

    // KARST_BENCH_CASES=append,read,durable,locate (default all) picks cases.
    let cases = std::env::var("KARST_BENCH_CASES").unwrap_or_default();
    let run = |case: &str| cases.is_empty() || cases.split(',').any(|c| c.trim() == case);

    // 1. Append, page cache.
    if run("append") {
        let (mut karst, mut raw) = (Vec::new(), Vec::new());
        for rep in 0..reps {
            // Alternate the order so neither side always runs on a warmer system.
            if rep % 2 == 0 {
                karst.push(karst_append(root, &template));
                raw.push(raw_append(root, &template));
            } else {
                raw.push(raw_append(root, &template));
                karst.push(karst_append(root, &template));
            }
        }
        let (karst_append_median, raw_append_median) = (median(&mut karst), median(&mut raw));
        println!(
        "append 16 KiB batches, page cache: karst {:.0} MiB/s, raw write() {:.0} MiB/s, ratio {:.0}% (all karst: {:?})",
        karst_append_median,
        raw_append_median,
        100.0 * karst_append_median / raw_append_median,
        karst.iter().map(|v| v.round()).collect::<Vec<_>>()
    );
    }

    // 2. Read a 1 GiB log from the page cache.
    if run("read") {
        let dir = fresh_dir(root, "read");
        let storage = Arc::new(FileStorage::new(&dir).expect("storage"));
        let mut log = PartitionLog::open(storage, "bench-0", page_cache_config(), 0).expect("open");
        let mut batch = template.clone();
        for _ in 0..scaled(READ_LOG_BYTES, 4 * MIB) / template.len() {
            log.append(&mut batch, 0).expect("append");
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("bench-0"))
            .expect("list")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        files.sort();
        // Warm the page cache once for both.
        let _ = raw_read(&files);
        let (mut karst, mut raw) = (Vec::new(), Vec::new());
        for rep in 0..reps {
            if rep % 2 == 0 {
                let (speed, karst_bytes) = karst_read(&log);
                let (raw_speed, raw_bytes) = raw_read(&files);
                assert_eq!(karst_bytes, raw_bytes, "both read the whole log");
                karst.push(speed);
                raw.push(raw_speed);
            } else {
                raw.push(raw_read(&files).0);
                karst.push(karst_read(&log).0);
            }
        }
        let (k, r) = (median(&mut karst), median(&mut raw));
        println!(
            "read {} MiB log, 1 MiB fetches, page cache: karst {:.0} MiB/s, raw read() {:.0} MiB/s, ratio {:.0}%",
            log.size_bytes() / MIB as u64,
            k,
            r,
            100.0 * k / r
        );
        drop(log);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    // 3. Durable, group commit, 8 appenders.
    if run("durable") {
        let variants = IN_FLIGHT_VARIANTS.len();
        let mut karst = vec![Vec::new(); variants];
        let mut per_sync = vec![Vec::new(); variants];
        let mut raw = Vec::new();
        for rep in 0..reps {
            if rep % 2 == 1 {
                raw.push(raw_durable(root, &template));
            }
            for (variant, in_flight) in IN_FLIGHT_VARIANTS.iter().enumerate() {
                let (speed, kib_per_sync) = karst_durable(root, &template, *in_flight);
                karst[variant].push(speed);
                per_sync[variant].push(kib_per_sync);
            }
            if rep % 2 == 0 {
                raw.push(raw_durable(root, &template));
            }
        }
        let r = median(&mut raw);
        println!("durable, raw write()+fdatasync every 1 MiB: {r:.0} MiB/s");
        for (variant, in_flight) in IN_FLIGHT_VARIANTS.iter().enumerate() {
            let k = median(&mut karst[variant]);
            let s = median(&mut per_sync[variant]);
            println!(
                "durable, group commit, {APPENDERS} appenders x {in_flight} in flight: karst {k:.0} MiB/s ({s:.0} KiB per fdatasync), ratio {:.0}%",
                100.0 * k / r
            );
        }
    }

    // 5. Compaction: one cleaning pass vs raw read + write + fdatasync of the same bytes.
    if run("compact") {
        for (codec, name) in [(0i16, "uncompressed"), (3, "lz4")] {
            let (mut karst, mut raw) = (Vec::new(), Vec::new());
            let (mut before, mut after) = (0, 0);
            for rep in 0..reps {
                let dir = build_compact_log(root, codec);
                if rep % 2 == 0 {
                    raw.push(raw_copy(&dir));
                    let result = karst_compact(&dir);
                    karst.push(result.0);
                    (before, after) = (result.1, result.2);
                } else {
                    let result = karst_compact(&dir);
                    karst.push(result.0);
                    (before, after) = (result.1, result.2);
                    raw.push(raw_copy(&dir));
                }
                std::fs::remove_dir_all(&dir).expect("cleanup");
            }
            let (k, r) = (median(&mut karst), median(&mut raw));
            println!(
                "compact {name}: {} MiB log -> {} MiB, {COMPACT_KEYS} keys: karst clean {k:.0} MiB/s, raw read+write+fdatasync {r:.0} MiB/s, ratio {:.0}%",
                before / MIB as u64,
                after / MIB as u64,
                100.0 * k / r
            );
        }
    }

    // 4. Locate an offset and a timestamp in a log of 1,000 segments.
    if run("locate") {
        let dir = fresh_dir(root, "locate");
        let storage = Arc::new(FileStorage::new(&dir).expect("storage"));
        let config = LogConfig {
            segment_bytes: LOCATE_SEGMENT_BYTES,
            ..page_cache_config()
        };
        let mut log = PartitionLog::open(storage, "bench-0", config, 0).expect("open");
        // One 1 KiB record per batch, timestamps = offsets + 1,000,000.
        let one = batch_of(1, 0);
        let mut i = 0i64;
        while log.segment_count() <= scaled(LOCATE_SEGMENTS, 3) {
            let mut batch = batch_of(1, 1_000_000 + i);
            debug_assert_eq!(batch.len(), one.len());
            log.append(&mut batch, 0).expect("append");
            i += 1;
        }
        let end = log.log_end_offset();
        let mut rng = Lcg(42);
        let lookups = scaled(LOCATE_LOOKUPS, 10);
        let mut offset_times = Vec::with_capacity(lookups);
        let mut time_times = Vec::with_capacity(lookups);
        for _ in 0..lookups {
            let offset = rng.below(end as u64) as i64;
            let start = Instant::now();
            let fetched = log.read(offset, 1, i64::MAX).expect("read");
            offset_times.push(start.elapsed());
            let header = batch::parse_header(&fetched).expect("a batch");
            assert!(header.base_offset <= offset && offset <= header.last_offset());

            let target = 1_000_000 + rng.below(end as u64) as i64;
            let start = Instant::now();
            let found = log.offset_for_timestamp(target).expect("lookup");
            time_times.push(start.elapsed());
            assert_eq!(found, Some((target - 1_000_000, target)));
        }
        println!(
            "locate in {} segments ({} offsets): offset (read of the batch) p50 {:.1} us p99 {:.1} us; timestamp p50 {:.1} us p99 {:.1} us",
            log.segment_count(),
            end,
            percentile_us(&mut offset_times, 0.5),
            percentile_us(&mut offset_times, 0.99),
            percentile_us(&mut time_times, 0.5),
            percentile_us(&mut time_times, 0.99),
        );
        drop(log);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
