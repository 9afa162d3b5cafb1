//! The recorded history of one simulated run: every client operation with its invoke and
//! complete virtual times and its outcome, every fault that can lose data, and the final read
//! taken after the network healed. Checkers (see `checker`) are pure functions of a `History`.
//!
//! Times are simulated milliseconds since the start of the run. Each record a producer sends
//! carries a `Value` unique to that send attempt's logical write (producer id, sequence number),
//! so any record read back names the write that produced it.

use std::fmt;

/// Simulated milliseconds since the start of the run.
pub type SimMillis = i64;

/// What the client saw when an operation completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged: the write happened (for produce: at the returned offset).
    Ok,
    /// Definitely did not happen (an error the protocol says leaves no effect).
    Failed,
    /// May or may not have happened (timeout, connection lost mid-request).
    Unknown,
}

/// The identity of one logical write: which producer wrote it and its per-producer sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Value {
    pub producer: u32,
    pub seq: u32,
}

/// The bytes a workload puts in a record for `Value`, and the inverse. Anything that does not
/// decode is garbage the broker served, which no producer wrote.
impl Value {
    pub const ENCODED_LEN: usize = 16;

    pub fn encode(self) -> Vec<u8> {
        format!("v{:07}-{:07}", self.producer, self.seq).into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Option<Value> {
        let text = std::str::from_utf8(bytes).ok()?;
        let rest = text.strip_prefix('v')?;
        let (producer, seq) = rest.split_once('-')?;
        if producer.len() != 7 || seq.len() != 7 {
            return None;
        }
        Some(Value {
            producer: producer.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}#{}", self.producer, self.seq)
    }
}

/// A value as a trace shows a record read: the value, or `garbage` if it did not decode.
/// Formats in place (no intermediate `String` per traced record).
pub struct ValueText(pub Option<Value>);

impl fmt::Display for ValueText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(value) => value.fmt(f),
            None => f.write_str("garbage"),
        }
    }
}

/// One produce of one record to one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProduceOp {
    pub value: Value,
    pub idempotent: bool,
    pub partition: i32,
    pub invoke_ms: SimMillis,
    pub complete_ms: SimMillis,
    pub outcome: Outcome,
    /// The offset the broker returned when `outcome` is Ok.
    pub offset: Option<i64>,
}

/// One record observed by a consumer. `value` is None when the record's bytes were not any
/// value a producer writes (garbage).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadOp {
    pub consumer: u32,
    /// A consumer restarts its position (e.g. after OffsetOutOfRange); order is per session.
    pub session: u32,
    pub partition: i32,
    pub offset: i64,
    pub value: Option<Value>,
    /// When the fetch that returned it was sent and answered.
    pub invoke_ms: SimMillis,
    pub complete_ms: SimMillis,
    /// The high watermark the fetch response that carried this record reported for its
    /// partition, when the reader saw it (readers that issue their own Fetch requests).
    pub high_watermark: Option<i64>,
}

/// A consumer group member received an assignment (SyncGroup answered) for a generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssignmentOp {
    pub group: String,
    pub member: u32,
    pub generation: i32,
    pub partitions: Vec<i32>,
    /// When the member was first seen holding it (right after a poll).
    pub at_ms: SimMillis,
    /// The earliest the member can have taken it over: the start of that poll (a poll takes
    /// over the newest assignment first, and may then block well past its timeout).
    pub since_ms: SimMillis,
}

/// An offset commit the coordinator acknowledged (OffsetCommit answered without error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitOp {
    pub group: String,
    pub member: u32,
    pub partition: i32,
    /// The committed offset: the next record the group will read.
    pub offset: i64,
    pub invoke_ms: SimMillis,
    pub complete_ms: SimMillis,
}

/// A record consumed by a member of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupReadOp {
    pub group: String,
    pub member: u32,
    pub partition: i32,
    pub offset: i64,
    pub value: Option<Value>,
    pub at_ms: SimMillis,
}

/// An administrator moved a group's committed offset (the only excuse for it going back).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetResetEvent {
    pub group: String,
    pub partition: i32,
    pub at_ms: SimMillis,
}

/// What the consumer groups of a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupHistory {
    /// The groups that consumed the topic; after the heal each must consume every
    /// acknowledged record.
    pub groups: Vec<String>,
    pub assignments: Vec<AssignmentOp>,
    pub commits: Vec<CommitOp>,
    pub reads: Vec<GroupReadOp>,
    pub resets: Vec<OffsetResetEvent>,
    /// When the groups stopped consuming (the end of their drain after the heal); None if
    /// groups were not run.
    pub drained_ms: Option<SimMillis>,
}

/// The durability promise the node was configured with (log.flush policy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushGuarantee {
    /// Acknowledged only after fsync: survives any crash, including power loss.
    Durable,
    /// Acknowledged from the page cache: survives a process kill, not a power loss.
    PageCache,
}

/// A fault that may destroy stored data, by how much it is allowed to destroy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataFault {
    /// The process dies; the page cache (the simulated disk's unsynced bytes) survives.
    ProcessKill,
    /// Power loss: unsynced bytes are dropped (and the last write may be torn).
    PowerLoss,
    /// Synced bytes were corrupted or the disk wiped: with one replica anything may be lost.
    Destroyed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataFaultEvent {
    pub at_ms: SimMillis,
    pub node: u32,
    pub fault: DataFault,
}

/// A partition's records in offset order: (offset, value; None = garbage).
pub type PartitionRecords = Vec<(i64, Option<Value>)>;

/// The read of every partition from its start, taken after the heal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinalRead {
    pub invoke_ms: SimMillis,
    /// None when the read did not finish (a liveness failure).
    pub complete_ms: Option<SimMillis>,
    /// Per partition, in offset order, as read.
    pub partitions: Vec<(i32, PartitionRecords)>,
}

/// Everything the checkers need about one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History {
    pub flush: FlushGuarantee,
    pub partitions: i32,
    pub produces: Vec<ProduceOp>,
    pub reads: Vec<ReadOp>,
    pub data_faults: Vec<DataFaultEvent>,
    /// When the network healed and all faults ended.
    pub heal_ms: SimMillis,
    /// How long after the heal every acknowledged record must be readable.
    pub liveness_bound_ms: SimMillis,
    pub final_read: Option<FinalRead>,
    /// Consumer groups (the `groups` workload); empty otherwise.
    pub group: GroupHistory,
}

impl History {
    pub fn new(flush: FlushGuarantee, partitions: i32) -> Self {
        History {
            flush,
            partitions,
            produces: Vec::new(),
            reads: Vec::new(),
            data_faults: Vec::new(),
            heal_ms: 0,
            liveness_bound_ms: 0,
            final_read: None,
            group: GroupHistory::default(),
        }
    }

    /// Whether some fault in `from..=to` may legitimately have destroyed data written (or read)
    /// at or after `from`, under the configured flush guarantee. A process kill never may; a
    /// power loss may only under page-cache flushing (durable data survives it); corruption
    /// or a wipe of the only replica always may.
    pub fn may_lose_between(&self, from: SimMillis, to: SimMillis) -> bool {
        self.data_faults.iter().any(|event| {
            event.at_ms >= from
                && event.at_ms <= to
                && match event.fault {
                    DataFault::ProcessKill => false,
                    DataFault::PowerLoss => self.flush == FlushGuarantee::PageCache,
                    DataFault::Destroyed => true,
                }
        })
    }
}
