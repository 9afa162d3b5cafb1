//! TEMPORARY in-memory stand-in for `crate::log` and `crate::storage` with the method names of
//! the partition log contract (PREAMBLE.md), used until branch `log` lands. Removed at merge.
#![allow(dead_code, missing_docs)]

use std::sync::Arc;

use bytes::Bytes;

use crate::protocol::batch::{self, BatchError, BatchHeader};
use crate::Millis;

pub trait Storage: Send + Sync + std::fmt::Debug {}

#[derive(Debug, Default)]
pub struct MemoryStorage;
impl Storage for MemoryStorage {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    Durable,
    Interval {
        messages: Option<u64>,
        ms: Option<i64>,
    },
    PageCache,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub index_interval_bytes: u32,
    pub retention_check_interval_ms: i64,
    pub flush: FlushPolicy,
    pub timestamp_type: TimestampType,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("io")]
    Io,
}
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("invalid batch: {0}")]
    InvalidBatch(BatchError),
}
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("offset out of range")]
    OffsetOutOfRange,
}

#[derive(Debug)]
pub struct SyncJob {
    pub up_to_offset: i64,
}
impl SyncJob {
    pub fn run(self) -> std::io::Result<()> {
        Ok(())
    }
}

pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    pub log_append_time: Option<i64>,
    pub record_count: u64,
    pub batches: Vec<BatchHeader>,
}

#[derive(Debug)]
pub struct PartitionLog {
    batches: Vec<(i64, Bytes)>,
    start: i64,
    end: i64,
    durable: i64,
    sync_in_flight: bool,
    config: LogConfig,
}

impl PartitionLog {
    pub fn open(
        _storage: Arc<dyn Storage>,
        _dir: &str,
        config: LogConfig,
        _now: Millis,
    ) -> Result<Self, LogError> {
        Ok(PartitionLog {
            batches: Vec::new(),
            start: 0,
            end: 0,
            durable: 0,
            sync_in_flight: false,
            config,
        })
    }
    pub fn append(&mut self, batches: &mut [u8], now: Millis) -> Result<AppendInfo, AppendError> {
        let mut headers = Vec::new();
        let mut at = 0;
        while at < batches.len() {
            let header = batch::validate(&batches[at..]).map_err(AppendError::InvalidBatch)?;
            headers.push((at, header));
            at += header.total_size();
        }
        let base = self.end;
        let mut next = self.end;
        let mut out = Vec::new();
        let mut max_ts = -1;
        let mut count = 0;
        for (at, header) in &headers {
            let slice = &mut batches[*at..*at + header.total_size()];
            batch::set_base_offset(slice, next);
            if self.config.timestamp_type == TimestampType::LogAppendTime {
                batch::set_log_append_time(slice, now);
            }
            let header = batch::parse_header(slice).unwrap();
            max_ts = max_ts.max(header.max_timestamp);
            count += header.records_count as u64;
            self.batches.push((next, Bytes::copy_from_slice(slice)));
            next = header.next_offset();
            out.push(header);
        }
        self.end = next;
        Ok(AppendInfo {
            base_offset: base,
            last_offset: next - 1,
            max_timestamp: max_ts,
            log_append_time: (self.config.timestamp_type == TimestampType::LogAppendTime)
                .then_some(now),
            record_count: count,
            batches: out,
        })
    }
    pub fn read(&self, offset: i64, max_bytes: usize, max_offset: i64) -> Result<Bytes, ReadError> {
        if offset < self.start || offset > self.end {
            return Err(ReadError::OffsetOutOfRange);
        }
        let mut out = Vec::new();
        for (base, bytes) in &self.batches {
            let header = batch::parse_header(bytes).unwrap();
            if header.next_offset() <= offset {
                continue;
            }
            if *base >= max_offset {
                break;
            }
            if !out.is_empty() && out.len() + bytes.len() > max_bytes {
                break;
            }
            out.extend_from_slice(bytes);
        }
        Ok(Bytes::from(out))
    }
    pub fn log_start_offset(&self) -> i64 {
        self.start
    }
    pub fn log_end_offset(&self) -> i64 {
        self.end
    }
    pub fn durable_offset(&self) -> i64 {
        self.durable
    }
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, LogError> {
        for (base, bytes) in &self.batches {
            let header = batch::parse_header(bytes).unwrap();
            if header.max_timestamp >= ts {
                return Ok(Some((*base, header.max_timestamp)));
            }
        }
        Ok(None)
    }
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        self.batches
            .iter()
            .map(|(base, bytes)| (batch::parse_header(bytes).unwrap().max_timestamp, *base))
            .max_by_key(|(ts, _)| *ts)
    }
    pub fn truncate_to(&mut self, _offset: i64) -> Result<(), LogError> {
        Ok(())
    }
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64, LogError> {
        self.start = self.start.max(offset.min(self.end));
        Ok(self.start)
    }
    pub fn tick(&mut self, _now: Millis) -> Result<(), LogError> {
        Ok(())
    }
    pub fn next_deadline(&self) -> Option<Millis> {
        None
    }
    pub fn take_sync_job(&mut self) -> Option<SyncJob> {
        if self.sync_in_flight || self.durable == self.end {
            return None;
        }
        if self.config.flush != FlushPolicy::Durable {
            return None;
        }
        self.sync_in_flight = true;
        Some(SyncJob {
            up_to_offset: self.end,
        })
    }
    pub fn sync_completed(&mut self, up_to_offset: i64) {
        self.sync_in_flight = false;
        self.durable = self.durable.max(up_to_offset);
    }
    pub fn batch_headers_from(&self, offset: i64) -> Result<Vec<BatchHeader>, LogError> {
        Ok(self
            .batches
            .iter()
            .map(|(_, bytes)| batch::parse_header(bytes).unwrap())
            .filter(|header| header.next_offset() > offset)
            .collect())
    }
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }
    pub fn config(&self) -> &LogConfig {
        &self.config
    }
    pub fn close(&mut self) -> Result<(), LogError> {
        Ok(())
    }
    pub fn delete(self) -> Result<(), LogError> {
        Ok(())
    }
}
