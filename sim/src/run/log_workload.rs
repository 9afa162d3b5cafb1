//! The `log` workload: Karst's partition log on a `SimDisk`, driven directly the way the
//! broker drives it — appends acknowledged per the flush policy (page cache: at once; durable:
//! once `durable_offset` passes them), sync jobs completed after a simulated fsync latency,
//! readers bounded by the high watermark (the durable offset under the durable policy) — while
//! the nemesis crashes the "process" (drops the log without closing it), damages the disk and
//! reopens the log, which must recover.
//!
//! The workload never retries, so every value is appended at most once: all producers are
//! checked for duplicates as if idempotent.

use super::disk::{self, LyingStorage};
use super::{run_nemesis, sleep_ms, FaultTarget, Shared, HEALED_TRAFFIC_MS, LIVENESS_BOUND_MS};
use crate::history::{
    DataFaultEvent, FinalRead, FlushGuarantee, Outcome, ProduceOp, ReadOp, SimMillis, Value,
    ValueText,
};
use crate::nemesis::{Action, NemesisPlan};
use crate::options::{InjectedBug, RunOptions};
use crate::rng::SimRng;
use bytes::Bytes;
use karst::log::{FlushPolicy, LogConfig, PartitionLog, ReadError};
use karst::protocol::batch::testing::{build_batch, TestRecord};
use karst::protocol::batch::{NO_PRODUCER_ID, NO_SEQUENCE};
use karst::storage::{SimDisk, Storage};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

const LOG_DIR: &str = "sim-0";
/// A durable-policy append not durable after this long is reported as unknown.
const ACK_TIMEOUT_MS: SimMillis = 5_000;
/// Bytes per read (like fetch.max.bytes); the log returns at least one whole batch.
const READ_MAX_BYTES: usize = 16 * 1024;
/// Bound on the loop that reads a partition to its end in the final read.
const MAX_FINAL_READS: usize = 1_000_000;

/// The "process": the open log, or None while crashed.
struct Node {
    log: Option<PartitionLog>,
    /// Bumped by every crash, so work begun before it is not reported to the new log.
    generation: u64,
}

struct System {
    node: Mutex<Node>,
    disk: SimDisk,
    storage: Arc<dyn Storage>,
    config: LogConfig,
    flush: FlushGuarantee,
    /// Producers and consumers stop.
    stop_traffic: AtomicBool,
    /// Background work (syncs, ticks) stops.
    stop_all: AtomicBool,
}

impl System {
    fn node(&self) -> std::sync::MutexGuard<'_, Node> {
        self.node.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The high watermark readers may see.
    fn high_watermark(&self, log: &PartitionLog) -> i64 {
        match self.flush {
            FlushGuarantee::Durable => log.durable_offset(),
            FlushGuarantee::PageCache => log.log_end_offset(),
        }
    }
}

pub(crate) async fn run(seed: u64, options: &RunOptions, plan: &NemesisPlan, shared: &Shared) {
    let mut rng = SimRng::fork(seed, "log-workload");
    let flush = shared.with(|w| w.history.flush);
    let config = LogConfig {
        segment_bytes: rng.between(512, 64 * 1024) as u64,
        index_interval_bytes: rng.between(64, 4096) as u32,
        retention_ms: -1,
        flush: match flush {
            FlushGuarantee::Durable => FlushPolicy::Durable,
            FlushGuarantee::PageCache => FlushPolicy::PageCache,
        },
        ..LogConfig::default()
    };
    shared.event(format!(
        "log workload: segment_bytes={} index_interval_bytes={} flush={:?} bug={:?}",
        config.segment_bytes, config.index_interval_bytes, config.flush, options.inject_bug
    ));
    let disk = SimDisk::new(rng.next_u64());
    let storage: Arc<dyn Storage> = match options.inject_bug {
        Some(InjectedBug::LyingFsync) => Arc::new(LyingStorage(disk.clone())),
        // A broker bug: the log workload has no broker, so it runs as usual.
        Some(InjectedBug::ServeAboveHighWatermark) | None => Arc::new(disk.clone()),
    };
    let log = PartitionLog::open(storage.clone(), LOG_DIR, config.clone(), shared.karst_now())
        .expect("opening an empty log on an empty disk");
    let system = Arc::new(System {
        node: Mutex::new(Node {
            log: Some(log),
            generation: 0,
        }),
        disk,
        storage,
        config,
        flush,
        stop_traffic: AtomicBool::new(false),
        stop_all: AtomicBool::new(false),
    });

    let mut tasks = Vec::new();
    let (producers, consumers) = options.load.clients();
    for producer in 0..producers {
        let (system, shared, rng) = (
            system.clone(),
            shared.clone(),
            SimRng::fork(seed, &format!("producer-{producer}")),
        );
        let interval = options.load.record_interval_ms();
        tasks.push(tokio::spawn(produce_loop(
            system, shared, producer, interval, rng,
        )));
    }
    for consumer in 0..consumers {
        let (system, shared, rng) = (
            system.clone(),
            shared.clone(),
            SimRng::fork(seed, &format!("consumer-{consumer}")),
        );
        tasks.push(tokio::spawn(consume_loop(system, shared, consumer, rng)));
    }
    let background = vec![
        tokio::spawn(sync_loop(
            system.clone(),
            shared.clone(),
            SimRng::fork(seed, "fsync"),
        )),
        tokio::spawn(tick_loop(system.clone(), shared.clone())),
    ];

    run_nemesis(plan, shared, &system).await;
    sleep_ms(HEALED_TRAFFIC_MS).await;
    system.stop_traffic.store(true, Ordering::SeqCst);
    for task in tasks {
        let _ = task.await;
    }
    let final_read = final_read(&system, shared).await;
    shared.with(|w| w.history.final_read = Some(final_read));
    system.stop_all.store(true, Ordering::SeqCst);
    for task in background {
        let _ = task.await;
    }
}

impl FaultTarget for Arc<System> {
    fn start(&self, action: &Action, shared: &Shared) {
        match action {
            Action::Crash { node, disk: what } => {
                let mut node_state = self.node();
                node_state.log = None;
                node_state.generation += 1;
                let (data_fault, detail) = disk::apply(&self.disk, *what);
                drop(node_state);
                let at_ms = shared.now_ms();
                shared.with(|w| {
                    w.history.data_faults.push(DataFaultEvent {
                        at_ms,
                        node: *node,
                        fault: data_fault,
                    })
                });
                shared.event(format!("nemesis start: {action} ({detail})"));
            }
            // Network faults and pauses are filtered out for this workload.
            _ => shared.event(format!("nemesis ignored: {action}")),
        }
    }

    fn end(&self, action: &Action, shared: &Shared) {
        if let Action::Crash { .. } = action {
            shared.event(format!("nemesis end: {action} (restart)"));
            let generation = self.node().generation;
            tokio::spawn(reopen(self.clone(), shared.clone(), generation));
        }
    }
}

/// Reopens (recovers) the log, retrying until it opens, the liveness bound passes, or the
/// node crashed again (`generation` moved on).
async fn reopen(system: Arc<System>, shared: Shared, generation: u64) {
    let deadline = shared.now_ms() + LIVENESS_BOUND_MS;
    loop {
        if system.node().generation != generation {
            return;
        }
        let opened = PartitionLog::open(
            system.storage.clone(),
            LOG_DIR,
            system.config.clone(),
            shared.karst_now(),
        );
        match opened {
            Ok(log) => {
                shared.event(format!(
                    "recovered: log start {} end {} durable {}",
                    log.log_start_offset(),
                    log.log_end_offset(),
                    log.durable_offset()
                ));
                let mut node = system.node();
                if node.generation == generation {
                    node.log = Some(log);
                }
                return;
            }
            Err(e) => {
                shared.event(format!("recovery failed: {e}"));
                if shared.now_ms() >= deadline {
                    return;
                }
                sleep_ms(100).await;
            }
        }
    }
}

async fn produce_loop(
    system: Arc<System>,
    shared: Shared,
    producer: u32,
    (min_interval_ms, max_interval_ms): (i64, i64),
    mut rng: SimRng,
) {
    let mut seq = 0u32;
    while !system.stop_traffic.load(Ordering::SeqCst) {
        sleep_ms(rng.between(min_interval_ms, max_interval_ms)).await;
        let count = rng.between(1, 3) as u32;
        let values: Vec<Value> = (0..count)
            .map(|i| Value {
                producer,
                seq: seq + i,
            })
            .collect();
        seq += count;
        let records: Vec<TestRecord> = values
            .iter()
            .map(|v| TestRecord {
                key: None,
                value: Some(v.encode()),
                headers: Vec::new(),
            })
            .collect();
        let now = shared.karst_now();
        let mut batch = build_batch(&records, now, NO_PRODUCER_ID, -1, NO_SEQUENCE);
        let invoke_ms = shared.now_ms();
        let appended = {
            let mut node = system.node();
            let generation = node.generation;
            match node.log.as_mut() {
                None => Err("log down".to_string()),
                Some(log) => log
                    .append(&mut batch, now)
                    .map(|info| (info.base_offset, generation))
                    .map_err(|e| e.to_string()),
            }
        };
        let (outcome, base_offset) = match appended {
            Err(why) => {
                shared.event(format!("produce {} failed: {why}", values[0]));
                (Outcome::Failed, None)
            }
            Ok((base_offset, generation)) => match system.flush {
                FlushGuarantee::PageCache => (Outcome::Ok, Some(base_offset)),
                FlushGuarantee::Durable => {
                    let last_offset = base_offset + count as i64 - 1;
                    (
                        wait_durable(&system, &shared, generation, last_offset, invoke_ms).await,
                        Some(base_offset),
                    )
                }
            },
        };
        let complete_ms = shared.now_ms();
        shared.with(|w| {
            w.operations += 1;
            for (i, value) in values.iter().enumerate() {
                let offset = match outcome {
                    Outcome::Ok => base_offset.map(|b| b + i as i64),
                    _ => None,
                };
                w.trace.event(
                    complete_ms,
                    format_args!(
                        "produce {value} invoked {invoke_ms} -> {outcome:?} offset {offset:?}"
                    ),
                );
                w.history.produces.push(ProduceOp {
                    value: *value,
                    idempotent: true,
                    partition: 0,
                    invoke_ms,
                    complete_ms,
                    outcome,
                    offset,
                });
            }
        });
    }
}

/// Waits until `last_offset` is durable (Ok), the process crashed (Unknown: the append may or
/// may not survive), or the timeout passed (Unknown).
async fn wait_durable(
    system: &System,
    shared: &Shared,
    generation: u64,
    last_offset: i64,
    invoke_ms: SimMillis,
) -> Outcome {
    loop {
        {
            let node = system.node();
            if node.generation != generation {
                return Outcome::Unknown;
            }
            if let Some(log) = &node.log {
                if log.durable_offset() > last_offset {
                    return Outcome::Ok;
                }
            }
        }
        if shared.now_ms() - invoke_ms > ACK_TIMEOUT_MS {
            return Outcome::Unknown;
        }
        sleep_ms(1).await;
    }
}

/// Reads every partition from the start, as far as the high watermark, in sessions: a read
/// out of range (the log lost its tail) starts a new session from the log start.
async fn consume_loop(system: Arc<System>, shared: Shared, consumer: u32, mut rng: SimRng) {
    let mut session = 0u32;
    let mut position = 0i64;
    while !system.stop_traffic.load(Ordering::SeqCst) {
        sleep_ms(rng.between(5, 50)).await;
        let now = shared.now_ms();
        let read = {
            let node = system.node();
            node.log.as_ref().map(|log| {
                let high_watermark = system.high_watermark(log);
                (
                    log.log_start_offset(),
                    high_watermark,
                    log.read(position, READ_MAX_BYTES, high_watermark),
                )
            })
        };
        let Some((log_start, high_watermark, read)) = read else {
            continue;
        };
        match read {
            Err(ReadError::OffsetOutOfRange { .. }) => {
                session += 1;
                shared.event(format!(
                    "consumer {consumer}: offset {position} out of range, session {session} from {log_start}"
                ));
                position = log_start;
            }
            Err(e) => shared.event(format!("consumer {consumer}: read failed: {e}")),
            Ok(bytes) => {
                let records = decode(bytes, position, high_watermark);
                shared.with(|w| {
                    w.operations += 1;
                    for (offset, value) in &records {
                        w.trace.event(
                            now,
                            format_args!(
                                "read c{consumer}/{session} offset {offset} {}",
                                ValueText(*value)
                            ),
                        );
                        w.history.reads.push(ReadOp {
                            consumer,
                            session,
                            partition: 0,
                            offset: *offset,
                            value: *value,
                            invoke_ms: now,
                            complete_ms: now,
                            high_watermark: Some(high_watermark),
                        });
                    }
                });
                if let Some((last, _)) = records.last() {
                    position = last + 1;
                }
            }
        }
    }
}

/// The records of `bytes` (whole batches) at offsets in `from..below`. Bytes that do not
/// decode become one garbage record at the first offset not yet accounted for.
fn decode(bytes: Bytes, from: i64, below: i64) -> Vec<(i64, Option<Value>)> {
    let mut buf = bytes;
    let mut out = Vec::new();
    while !buf.is_empty() {
        match kafka_protocol::records::RecordBatchDecoder::decode(&mut buf) {
            Ok(set) => {
                for record in set.records {
                    if record.offset >= from && record.offset < below {
                        let value = record.value.as_deref().and_then(Value::decode);
                        out.push((record.offset, value));
                    }
                }
            }
            Err(_) => {
                let offset = out.last().map_or(from, |(o, _)| o + 1);
                if offset < below {
                    out.push((offset, None));
                }
                break;
            }
        }
    }
    out
}

/// Runs sync jobs after a simulated fsync latency, as the disk thread does.
async fn sync_loop(system: Arc<System>, shared: Shared, mut rng: SimRng) {
    while !system.stop_all.load(Ordering::SeqCst) {
        let job = {
            let mut node = system.node();
            let generation = node.generation;
            node.log
                .as_mut()
                .and_then(|log| log.take_sync_job())
                .map(|job| (job, generation))
        };
        let Some((job, generation)) = job else {
            sleep_ms(1).await;
            continue;
        };
        sleep_ms(rng.between(1, 8)).await;
        let mut node = system.node();
        if node.generation != generation {
            continue; // the process died while the fsync was in flight
        }
        let up_to = job.up_to_offset;
        match job.run() {
            Ok(()) => {
                if let Some(log) = node.log.as_mut() {
                    log.sync_completed(up_to);
                }
            }
            Err(e) => {
                drop(node);
                shared.event(format!("fsync failed: {e}"));
            }
        }
    }
}

async fn tick_loop(system: Arc<System>, shared: Shared) {
    while !system.stop_all.load(Ordering::SeqCst) {
        sleep_ms(100).await;
        let now = shared.karst_now();
        let mut node = system.node();
        if let Some(log) = node.log.as_mut() {
            if let Err(e) = log.tick(now) {
                drop(node);
                shared.event(format!("tick failed: {e}"));
            }
        }
    }
}

/// Reads the whole log to the high watermark once the log is up and (durable policy) fully
/// synced; gives up at the liveness bound, leaving `complete_ms` unset.
async fn final_read(system: &Arc<System>, shared: &Shared) -> FinalRead {
    let invoke_ms = shared.now_ms();
    let deadline = shared.with(|w| w.history.heal_ms + w.history.liveness_bound_ms);
    loop {
        let done = {
            let node = system.node();
            node.log.as_ref().and_then(|log| {
                let high_watermark = system.high_watermark(log);
                if high_watermark < log.log_end_offset() {
                    return None; // still syncing
                }
                let mut records = Vec::new();
                let mut position = log.log_start_offset();
                for _ in 0..MAX_FINAL_READS {
                    if position >= high_watermark {
                        break;
                    }
                    let bytes = match log.read(position, READ_MAX_BYTES, high_watermark) {
                        Ok(bytes) => bytes,
                        // CORRUPT_MESSAGE: nothing readable here; skipped below.
                        Err(ReadError::Corrupt { .. }) => Bytes::new(),
                        Err(_) => return None,
                    };
                    let batch = decode(bytes, position, high_watermark);
                    match batch.last() {
                        Some((last, _)) => position = last + 1,
                        // Nothing readable at `position` though it is below the high
                        // watermark (a corrupted batch): skip it, as a consumer seeking past
                        // a corrupt record would; the hole is judged by the checkers.
                        None => position += 1,
                    }
                    records.extend(batch);
                }
                Some(records)
            })
        };
        if let Some(records) = done {
            let complete_ms = shared.now_ms();
            shared.event(format!(
                "final read: {} records, offsets {:?}..{:?}",
                records.len(),
                records.first().map(|r| r.0),
                records.last().map(|r| r.0)
            ));
            return FinalRead {
                invoke_ms,
                complete_ms: Some(complete_ms),
                partitions: vec![(0, records)],
            };
        }
        if shared.now_ms() >= deadline {
            shared.event("final read: gave up at the liveness bound");
            return FinalRead {
                invoke_ms,
                complete_ms: None,
                partitions: vec![],
            };
        }
        sleep_ms(10).await;
    }
}
