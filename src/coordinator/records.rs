//! The records the group coordinator writes to `__consumer_offsets`, in Kafka's own key/value
//! schemas (so Kafka's tooling could read a Karst `__consumer_offsets` and vice versa):
//!
//! - key version 0/1 `OffsetCommitKey { group, topic, partition }` with value version 3
//!   `OffsetCommitValue { offset, leader_epoch, metadata, commit_timestamp }`;
//! - key version 2 `GroupMetadataKey { group }` with value version 3 `GroupMetadataValue`.
//!
//! A `None` value is a tombstone (the offset or group was deleted); compaction keeps the last
//! value per key, so replaying the partition in offset order rebuilds the state.
//! Encoding is big-endian, strings i16-length-prefixed, bytes i32-length-prefixed (Kafka's
//! non-flexible encoding). Decoding never panics: malformed input is a [`RecordError`].

use bytes::{BufMut, Bytes, BytesMut};

/// A record as appended to (or read back from) a `__consumer_offsets` partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersistedRecord {
    pub key: Bytes,
    /// `None` is a tombstone.
    pub value: Option<Bytes>,
}

/// The decoded form of a [`PersistedRecord`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Offset {
        key: OffsetKey,
        value: Option<OffsetValue>,
    },
    Group {
        group_id: String,
        value: Option<GroupMetadataValue>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct OffsetKey {
    pub group_id: String,
    pub topic: String,
    pub partition: i32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMetadataValue {
    pub protocol_type: String,
    pub generation_id: i32,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    pub current_state_timestamp_ms: i64,
    pub members: Vec<MemberMetadataValue>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberMetadataValue {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// The member's metadata for the group's selected protocol.
    pub subscription: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record truncated")]
    Truncated,
    #[error("unknown key version {0}")]
    UnknownKeyVersion(i16),
    #[error("unknown value version {0}")]
    UnknownValueVersion(i16),
    #[error("invalid string or length")]
    Invalid,
    #[error("record batch: {0}")]
    Batch(String),
}

const OFFSET_KEY_VERSION: i16 = 1;
const GROUP_KEY_VERSION: i16 = 2;
const OFFSET_VALUE_VERSION: i16 = 3;
const GROUP_VALUE_VERSION: i16 = 3;

impl Record {
    pub fn encode(&self) -> PersistedRecord {
        match self {
            Record::Offset { key, value } => {
                let mut k = BytesMut::new();
                k.put_i16(OFFSET_KEY_VERSION);
                put_string(&mut k, &key.group_id);
                put_string(&mut k, &key.topic);
                k.put_i32(key.partition);
                let value = value.as_ref().map(|v| {
                    let mut b = BytesMut::new();
                    b.put_i16(OFFSET_VALUE_VERSION);
                    b.put_i64(v.offset);
                    b.put_i32(v.leader_epoch);
                    put_string(&mut b, &v.metadata);
                    b.put_i64(v.commit_timestamp_ms);
                    b.freeze()
                });
                PersistedRecord {
                    key: k.freeze(),
                    value,
                }
            }
            Record::Group { group_id, value } => {
                let mut k = BytesMut::new();
                k.put_i16(GROUP_KEY_VERSION);
                put_string(&mut k, group_id);
                let value = value.as_ref().map(|v| {
                    let mut b = BytesMut::new();
                    b.put_i16(GROUP_VALUE_VERSION);
                    put_string(&mut b, &v.protocol_type);
                    b.put_i32(v.generation_id);
                    put_nullable_string(&mut b, v.protocol_name.as_deref());
                    put_nullable_string(&mut b, v.leader.as_deref());
                    b.put_i64(v.current_state_timestamp_ms);
                    b.put_i32(v.members.len() as i32);
                    for m in &v.members {
                        put_string(&mut b, &m.member_id);
                        put_nullable_string(&mut b, m.group_instance_id.as_deref());
                        put_string(&mut b, &m.client_id);
                        put_string(&mut b, &m.client_host);
                        b.put_i32(m.rebalance_timeout_ms);
                        b.put_i32(m.session_timeout_ms);
                        b.put_i32(m.subscription.len() as i32);
                        b.put_slice(&m.subscription);
                        b.put_i32(m.assignment.len() as i32);
                        b.put_slice(&m.assignment);
                    }
                    b.freeze()
                });
                PersistedRecord {
                    key: k.freeze(),
                    value,
                }
            }
        }
    }

    pub fn decode(record: &PersistedRecord) -> Result<Record, RecordError> {
        let mut k = Reader(&record.key);
        let key_version = k.i16()?;
        match key_version {
            0 | 1 => {
                let key = OffsetKey {
                    group_id: k.string()?,
                    topic: k.string()?,
                    partition: k.i32()?,
                };
                let value = match &record.value {
                    None => None,
                    Some(v) => {
                        let mut r = Reader(v);
                        let version = r.i16()?;
                        // v1 has an expire timestamp, v2 has none, v3 adds the leader epoch.
                        let (offset, leader_epoch, metadata, commit_timestamp_ms) = match version {
                            0 => (r.i64()?, -1, r.string()?, r.i64()?),
                            1 => {
                                let o = (r.i64()?, -1, r.string()?, r.i64()?);
                                r.i64()?;
                                o
                            }
                            2 => (r.i64()?, -1, r.string()?, r.i64()?),
                            3 => (r.i64()?, r.i32()?, r.string()?, r.i64()?),
                            other => return Err(RecordError::UnknownValueVersion(other)),
                        };
                        Some(OffsetValue {
                            offset,
                            leader_epoch,
                            metadata,
                            commit_timestamp_ms,
                        })
                    }
                };
                Ok(Record::Offset { key, value })
            }
            2 => {
                let group_id = k.string()?;
                let value = match &record.value {
                    None => None,
                    Some(v) => Some(decode_group_value(v)?),
                };
                Ok(Record::Group { group_id, value })
            }
            other => Err(RecordError::UnknownKeyVersion(other)),
        }
    }
}

fn decode_group_value(v: &[u8]) -> Result<GroupMetadataValue, RecordError> {
    let mut r = Reader(v);
    let version = r.i16()?;
    if !(0..=GROUP_VALUE_VERSION).contains(&version) {
        return Err(RecordError::UnknownValueVersion(version));
    }
    let protocol_type = r.string()?;
    let generation_id = r.i32()?;
    let protocol_name = r.nullable_string()?;
    let leader = r.nullable_string()?;
    let current_state_timestamp_ms = if version >= 2 { r.i64()? } else { -1 };
    let count = r.i32()?;
    if count < 0 || count as usize > r.0.len() {
        return Err(RecordError::Invalid);
    }
    let mut members = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let member_id = r.string()?;
        let group_instance_id = if version >= 3 {
            r.nullable_string()?
        } else {
            None
        };
        let client_id = r.string()?;
        let client_host = r.string()?;
        let rebalance_timeout_ms = if version >= 1 { r.i32()? } else { -1 };
        let session_timeout_ms = r.i32()?;
        let subscription = r.bytes()?;
        let assignment = r.bytes()?;
        members.push(MemberMetadataValue {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms: if rebalance_timeout_ms < 0 {
                session_timeout_ms
            } else {
                rebalance_timeout_ms
            },
            session_timeout_ms,
            subscription,
            assignment,
        });
    }
    Ok(GroupMetadataValue {
        protocol_type,
        generation_id,
        protocol_name,
        leader,
        current_state_timestamp_ms,
        members,
    })
}

fn put_string(b: &mut BytesMut, s: &str) {
    // Kafka strings are at most i16::MAX bytes; callers bound their inputs (group ids, topic
    // names and metadata come from decoded requests, which carry i16 lengths).
    let bytes = &s.as_bytes()[..s.len().min(i16::MAX as usize)];
    b.put_i16(bytes.len() as i16);
    b.put_slice(bytes);
}

fn put_nullable_string(b: &mut BytesMut, s: Option<&str>) {
    match s {
        None => b.put_i16(-1),
        Some(s) => put_string(b, s),
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], RecordError> {
        if self.0.len() < n {
            return Err(RecordError::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn i16(&mut self) -> Result<i16, RecordError> {
        Ok(i16::from_be_bytes(
            self.take(2)?.try_into().unwrap_or([0; 2]),
        ))
    }
    fn i32(&mut self) -> Result<i32, RecordError> {
        Ok(i32::from_be_bytes(
            self.take(4)?.try_into().unwrap_or([0; 4]),
        ))
    }
    fn i64(&mut self) -> Result<i64, RecordError> {
        Ok(i64::from_be_bytes(
            self.take(8)?.try_into().unwrap_or([0; 8]),
        ))
    }
    fn nullable_string(&mut self) -> Result<Option<String>, RecordError> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        let raw = self.take(len as usize)?;
        String::from_utf8(raw.to_vec())
            .map(Some)
            .map_err(|_| RecordError::Invalid)
    }
    fn string(&mut self) -> Result<String, RecordError> {
        self.nullable_string()?.ok_or(RecordError::Invalid)
    }
    fn bytes(&mut self) -> Result<Bytes, RecordError> {
        let len = self.i32()?;
        if len < 0 {
            return Ok(Bytes::new());
        }
        Ok(Bytes::copy_from_slice(self.take(len as usize)?))
    }
}

/// Encodes `records` as one uncompressed v2 record batch without producer id, base offset 0
/// (the log assigns offsets on append) and every timestamp `now_ms`: what the node appends to
/// `__consumer_offsets` for an `Effect::Persist`.
pub fn encode_batch(records: &[PersistedRecord], now_ms: i64) -> Result<Bytes, RecordError> {
    use kafka_protocol::records::{
        Compression, Record as WireRecord, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
        NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID,
    };
    let wire: Vec<WireRecord> = records
        .iter()
        .enumerate()
        .map(|(i, r)| WireRecord {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch whenever offset - sequence changes; keeping it
            // constant gives one batch whose base sequence is -1 (no producer).
            sequence: i as i32 - 1,
            timestamp: now_ms,
            key: Some(r.key.clone()),
            value: r.value.clone(),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        wire.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| RecordError::Batch(e.to_string()))?;
    Ok(buf.freeze())
}

/// Decodes record batches as read from a `__consumer_offsets` partition into the records
/// [`crate::coordinator::GroupCoordinator::load`] takes, in offset order. Control records
/// (transaction markers) and records without a key are skipped.
pub fn decode_batches(bytes: Bytes) -> Result<Vec<PersistedRecord>, RecordError> {
    use kafka_protocol::records::RecordBatchDecoder;
    let mut buf = bytes;
    let sets =
        RecordBatchDecoder::decode_all(&mut buf).map_err(|e| RecordError::Batch(e.to_string()))?;
    Ok(sets
        .into_iter()
        .flat_map(|set| set.records)
        .filter(|r| !r.control)
        .filter_map(|r| {
            Some(PersistedRecord {
                key: r.key?,
                value: r.value,
            })
        })
        .collect())
}
