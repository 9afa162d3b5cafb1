//! The bodies of Karst's fuzz targets, shared by the cargo-fuzz binaries (fuzz/fuzz_targets,
//! nightly) and the stable regression test (tests/fuzz_regressions.rs), which includes this file
//! by path. Each function takes arbitrary bytes and panics only on a real bug: a panic inside
//! Karst, or a broken property checked here. Errors for bad input are the expected outcome.
//!
//! - [`request_frame`]: one frame body through the broker's request decoder
//!   (`protocol::codec::decode_request`), for every API and version Karst advertises.
//! - [`record_batch`]: produced batch bytes through the checks the broker and the log apply
//!   before appending (`protocol::batch` and `PartitionLog::append`), then read back.
//! - [`node_request`]: a sequence of request frames decoded and stepped through a whole sans-IO
//!   node (broker and group coordinator) on the simulated disk; every response must encode.
//! - [`log_recovery`]: a small log written on the simulated disk, shut down cleanly or
//!   crashed, its files damaged by the input, then reopened: every durable batch before the
//!   first damaged byte must read back unchanged.

#![allow(dead_code)]

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use karst::log::{parse_log_name, CleanupPolicy, FlushPolicy, LogConfig, PartitionLog};
use karst::protocol::api_versions::SUPPORTED;
use karst::protocol::batch::{self, testing::simple_batch, BatchHeader};
use karst::protocol::codec::{decode_request, Decoded};
use karst::storage::{CrashOptions, SimDisk, Storage};

/// Largest record bytes the record_batch target hands to the log (Kafka's default
/// message.max.bytes is 1 MiB; fuzz inputs are far smaller).
const MAX_BATCH_INPUT_BYTES: usize = 1 << 20;

/// Upper bound on the requests one node_request input sends.
const MAX_NODE_REQUESTS: usize = 16;

/// Splits `data` into frames (a one-byte length, then that many bytes; the first two bytes of
/// each frame steered to an advertised API and version as in [`request_frame`]) and steps each
/// decodable request through one fresh [`karst::node::Node`] on the simulated disk, completing
/// its sync jobs and timers. Checked: no panic, the node's `invariants()` after every step, and
/// every response it asks to send encodes at the version the client asked for.
pub fn node_request(data: &[u8]) {
    use karst::broker::{Effect, Input, RequestId};
    let mut config = karst::config::NodeConfig::default();
    config
        .set("offsets.topic.num.partitions", "2")
        .expect("config");
    config
        .set("group.initial.rebalance.delay.ms", "0")
        .expect("config");
    let disk = SimDisk::new(1);
    let storage: Arc<dyn Storage> = Arc::new(disk);
    let mut now = 1_000_000;
    let mut node = karst::node::Node::open(config, "127.0.0.1:9092", storage, 1, now)
        .expect("open node on an empty disk");
    let mut effects = Vec::new();
    node.step(
        now,
        Input::ConnectionOpened {
            connection: 1,
            client_host: "/127.0.0.1".to_string(),
        },
        &mut effects,
    );
    let mut rest = data;
    for sequence in 0..MAX_NODE_REQUESTS as u64 {
        let Some((&len, tail)) = rest.split_first() else {
            break;
        };
        let len = (len as usize).min(tail.len());
        let (frame, tail) = tail.split_at(len);
        rest = tail;
        if frame.len() < 2 {
            continue;
        }
        let (key, min, max) = SUPPORTED[frame[0] as usize % SUPPORTED.len()];
        let version = min + (frame[1] as i16) % (max - min + 1);
        let mut steered = BytesMut::with_capacity(4 + frame.len());
        steered.put_i16(key as i16);
        steered.put_i16(version);
        steered.put_slice(&frame[2..]);
        let Decoded::Request(request) = decode_request(steered.freeze()) else {
            continue;
        };
        let id = RequestId {
            connection: 1,
            sequence,
        };
        now += 10;
        let mut pending = vec![Input::Request { id, request }];
        // Each input's effects may ask for syncs, whose completions are inputs again: bounded.
        for _ in 0..64 {
            let Some(input) = pending.pop() else { break };
            effects.clear();
            node.step(now, input, &mut effects);
            node.invariants();
            for effect in effects.drain(..) {
                match effect {
                    Effect::Respond {
                        api_key,
                        api_version,
                        correlation_id,
                        response,
                        ..
                    } => {
                        let mut out = BytesMut::new();
                        if let Err(error) = karst::protocol::codec::encode_response(
                            correlation_id,
                            api_key,
                            api_version,
                            &response,
                            &mut out,
                        ) {
                            panic!("{api_key:?} v{api_version} response does not encode: {error}");
                        }
                    }
                    Effect::Sync { log, job } => {
                        let up_to_offset = job.up_to_offset;
                        let result = job.run().map_err(|error| error.to_string());
                        pending.push(Input::SyncCompleted {
                            log,
                            up_to_offset,
                            result,
                        });
                    }
                    Effect::NoResponse { .. } | Effect::Close { .. } => {}
                }
            }
            if pending.is_empty() && node.next_deadline().is_some_and(|d| d <= now) {
                pending.push(Input::Timer);
            }
        }
    }
}

/// Feeds `data` to the request decoder twice: as is (the real path, where the fuzzer must find
/// a supported api key and version itself), and steered: the first two bytes pick an
/// advertised API and one of its versions, so every body codec Karst serves is reached.
pub fn request_frame(data: &[u8]) {
    decode_one(Bytes::copy_from_slice(data));
    if data.len() < 2 {
        return;
    }
    let (key, min, max) = SUPPORTED[data[0] as usize % SUPPORTED.len()];
    let version = min + (data[1] as i16) % (max - min + 1);
    let rest = &data[2..];
    let mut frame = BytesMut::with_capacity(4 + rest.len());
    frame.put_i16(key as i16);
    frame.put_i16(version);
    frame.put_slice(rest);
    decode_one(frame.freeze());
}

fn decode_one(frame: Bytes) {
    match decode_request(frame) {
        // A decoded request goes to the broker as it is (produce records stay slices of the
        // frame); node_request steps it through a node.
        Decoded::Request(_) => {}
        Decoded::Reply(reply) => {
            // A reply is a whole size-prefixed frame.
            assert!(reply.len() >= 4, "reply shorter than its size prefix");
            let size = i32::from_be_bytes([reply[0], reply[1], reply[2], reply[3]]);
            assert_eq!(size as usize, reply.len() - 4, "reply size prefix is wrong");
        }
        Decoded::Close(_) => {}
    }
}

/// Treats `data` as the records of one produced partition: walks and validates the batches,
/// decodes every record of every valid batch (decompressing), then appends the bytes to a
/// fresh log (compacted or not, as the first byte says). An accepted append must read back
/// byte for byte, with the offsets the log assigned.
pub fn record_batch(data: &[u8]) {
    if data.is_empty() || data.len() > MAX_BATCH_INPUT_BYTES {
        return;
    }
    let (&mode, records) = data.split_first().expect("non-empty");
    for item in batch::iter_validated(records) {
        let Ok((position, header)) = item else { break };
        let bytes = &records[position..position + header.total_size()];
        let _ = batch::record_offsets_and_timestamps(bytes);
        let _ = batch::all_records_have_keys(bytes);
        if let Ok(section) = batch::records_section(bytes) {
            let _ = batch::parse_records(&section, header.records_count.max(0) as usize);
        }
    }
    let config = LogConfig {
        cleanup_policy: if mode & 1 == 1 {
            CleanupPolicy::Compact
        } else {
            CleanupPolicy::Delete
        },
        timestamp_type: if mode & 2 == 2 {
            karst::log::TimestampType::LogAppendTime
        } else {
            karst::log::TimestampType::CreateTime
        },
        ..LogConfig::default()
    };
    let disk = SimDisk::new(u64::from(mode));
    let storage: Arc<dyn Storage> = Arc::new(disk);
    let mut log = PartitionLog::open(storage, "fuzz-0", config, 1_000).expect("open empty log");
    let mut owned = records.to_vec();
    let Ok(info) = log.append(&mut owned, 2_000) else {
        return;
    };
    // The log accepted exactly the bytes it was given (after its header rewrites).
    let headers: Vec<BatchHeader> = batch::iter_validated(&owned)
        .map(|item| item.expect("an accepted append is all valid batches").1)
        .collect();
    assert_eq!(
        headers, info.batches,
        "append reports other batches than it wrote"
    );
    assert_eq!(info.base_offset, 0);
    let read = log
        .read(0, owned.len(), i64::MAX)
        .expect("read of an accepted append");
    assert_eq!(&read[..], &owned[..], "appended bytes do not read back");
}

/// Bounds of the log the log_recovery target builds.
const MAX_RECOVERY_BATCHES: usize = 24;
const MAX_RECOVERY_OPS: usize = 16;
const RECOVERY_DIR: &str = "topic-0";

/// Reads the next byte of the input, or 0 when it is used up.
struct Input<'a> {
    data: &'a [u8],
}

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&first, rest)) => {
                self.data = rest;
                first
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// A batch the log held before the damage: where it was and what it was.
struct Written {
    base_offset: i64,
    last_offset: i64,
    bytes: Vec<u8>,
}

/// Builds a small multi-segment log on the simulated disk as the input's first bytes say
/// (batch count and sizes, which appends are synced, clean close or crash with or without a
/// torn last write), then applies up to [`MAX_RECOVERY_OPS`] damage operations to its files
/// (flip, overwrite, truncate, extend, delete), then reopens it.
///
/// Checked: no panic; if the reopen succeeds, every batch that was durable and lies wholly
/// before the first damaged byte of any `.log` file (in offset order) reads back unchanged;
/// the reopened log accepts an append at its end and reads it back.
pub fn log_recovery(data: &[u8]) {
    let mut input = Input { data };
    let shape = input.byte();
    let batch_count = 1 + (input.byte() as usize % MAX_RECOVERY_BATCHES);
    let clean_close = shape & 1 == 1;
    let tear_last_write = shape & 2 == 2;
    let config = LogConfig {
        // Small segments and index intervals: several segments with index entries.
        segment_bytes: 200 + 100 * u64::from((shape >> 2) & 7),
        index_interval_bytes: 40 * u32::from(shape >> 5),
        retention_ms: -1,
        flush: FlushPolicy::Durable,
        ..LogConfig::default()
    };
    let disk = SimDisk::new(u64::from(shape));
    let storage: Arc<dyn Storage> = Arc::new(disk.clone());
    let mut now = 1_000_000;
    let mut log =
        PartitionLog::open(storage.clone(), RECOVERY_DIR, config.clone(), now).expect("open");
    let mut written: Vec<Written> = Vec::new();
    for i in 0..batch_count {
        let plan = input.byte();
        let mut batch = simple_batch(1 + (plan & 3) as usize, now + i as i64);
        now += 1;
        let info = log.append(&mut batch, now).expect("append a valid batch");
        written.push(Written {
            base_offset: info.base_offset,
            last_offset: info.last_offset,
            bytes: batch,
        });
        if plan & 4 == 4 {
            if let Some(job) = log.take_sync_job() {
                let up_to = job.up_to_offset;
                job.run().expect("simulated sync");
                log.sync_completed(up_to);
            }
        }
    }
    let durable_end = if clean_close {
        log.close().expect("clean close");
        log.log_end_offset()
    } else {
        let durable = log.durable_offset();
        drop(log);
        disk.crash(CrashOptions { tear_last_write });
        durable
    };

    // Damage. Positions are in bytes of the file as it is when the op runs.
    let mut first_damage: Vec<(String, u64)> = Vec::new();
    let mut note = |path: &str, at: u64| match first_damage.iter_mut().find(|(p, _)| p == path) {
        Some((_, first)) => *first = (*first).min(at),
        None => first_damage.push((path.to_string(), at)),
    };
    let before = segment_layouts(&disk);
    for _ in 0..MAX_RECOVERY_OPS {
        if input.is_empty() {
            break;
        }
        let op = input.byte();
        let paths = disk.paths();
        if paths.is_empty() {
            break;
        }
        let path = paths[input.byte() as usize % paths.len()].clone();
        let len = disk.contents(&path).map_or(0, |c| c.len() as u64);
        let at = u64::from(input.u16());
        let Ok(file) = storage.open_file(&path, false) else {
            continue;
        };
        match op % 5 {
            0 => {
                // Flip a run of bytes (both images: survives everything).
                let run = u64::from(input.byte() % 16) + 1;
                let at = at % len.max(1);
                if at < len {
                    disk.corrupt(&path, at..at + run);
                    note(&path, at);
                }
            }
            1 => {
                // Overwrite one byte with a chosen value.
                let value = input.byte();
                let at = at % (len + 1);
                file.write_at(&[value], at).expect("sim write");
                file.sync_data().expect("sim sync");
                note(&path, at);
            }
            2 => {
                // Truncate (a lost tail).
                let to = at % (len + 1);
                file.set_len(to).expect("sim truncate");
                file.sync_data().expect("sim sync");
                if to < len {
                    note(&path, to);
                }
            }
            3 => {
                // Extend with zeros (preallocated, never written).
                let extra = u64::from(input.byte()) + 1;
                file.set_len(len + extra).expect("sim extend");
                file.sync_data().expect("sim sync");
                note(&path, len);
            }
            _ => {
                // Lose the file.
                drop(file);
                storage.remove_file(&path).expect("sim remove");
                note(&path, 0);
            }
        }
    }

    // The first offset whose batch may be damaged: for each damaged .log file, the batch
    // holding the first damaged byte (or the segment's end, for damage past its batches).
    let mut damaged_from = i64::MAX;
    for (path, at) in &first_damage {
        let Some(base) = path.rsplit('/').next().and_then(parse_log_name) else {
            continue;
        };
        let layout = before.iter().find(|(b, _)| *b == base);
        let offset = match layout {
            Some((_, batches)) => batches
                .iter()
                .find(|(position, header)| position + header.total_size() as u64 > *at)
                .map(|(_, header)| header.base_offset)
                .unwrap_or_else(|| batches.last().map_or(base, |(_, h)| h.next_offset())),
            None => base,
        };
        damaged_from = damaged_from.min(offset);
    }

    now += 1_000;
    let Ok(mut log) = PartitionLog::open(storage.clone(), RECOVERY_DIR, config, now) else {
        return;
    };
    // Whatever the damage, the recovered bookkeeping is consistent.
    log.invariants();
    for batch in &written {
        if batch.last_offset >= durable_end || batch.last_offset >= damaged_from {
            break;
        }
        for offset in [batch.base_offset, batch.last_offset] {
            let read = log.read(offset, 1, i64::MAX).unwrap_or_else(|error| {
                panic!(
                    "offset {offset} (durable below {durable_end}, damage from {damaged_from}) \
                     unreadable after recovery: {error}"
                )
            });
            assert_eq!(
                &read[..],
                &batch.bytes[..],
                "offset {offset} (durable below {durable_end}, damage from {damaged_from}) \
                 reads back different bytes after recovery"
            );
        }
    }
    // Whatever recovery kept, every offset it reports is served without a panic.
    let mut offset = log.log_start_offset();
    let end = log.log_end_offset();
    for _ in 0..MAX_RECOVERY_BATCHES * 4 {
        if offset >= end {
            break;
        }
        match log.read(offset, 1, i64::MAX) {
            Ok(read) => match batch::parse_header(&read) {
                Ok(header) if header.next_offset() > offset => offset = header.next_offset(),
                _ => offset += 1,
            },
            Err(_) => offset += 1,
        }
    }
    let _ = log.offset_for_timestamp(0);
    let _ = log.batch_headers_from(log.log_start_offset());
    // The recovered log takes new writes at its end.
    let mut batch = simple_batch(2, now);
    if let Ok(info) = log.append(&mut batch, now) {
        log.invariants();
        assert_eq!(
            info.base_offset, end,
            "append after recovery not at the log end"
        );
        if damaged_from == i64::MAX {
            let read = log
                .read(info.base_offset, 1, i64::MAX)
                .expect("read new batch");
            assert_eq!(
                &read[..],
                &batch[..],
                "batch appended after recovery reads back"
            );
        }
    }
}

/// For each `.log` file on the disk: its base offset and the (position, header) of each valid
/// batch from its start.
fn segment_layouts(disk: &SimDisk) -> Vec<(i64, Vec<(u64, BatchHeader)>)> {
    let mut layouts = Vec::new();
    for path in disk.paths() {
        let Some(base) = path.rsplit('/').next().and_then(parse_log_name) else {
            continue;
        };
        let contents = disk.contents(&path).unwrap_or_default();
        let batches = batch::iter_validated(&contents)
            .map_while(Result::ok)
            .map(|(position, header)| (position as u64, header))
            .collect();
        layouts.push((base, batches));
    }
    layouts
}
