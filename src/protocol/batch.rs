//! Kafka's v2 RecordBatch (magic 2) header: parsing, validation and in-place rewrites.
//!
//! Karst stores batches exactly as they travel on the wire. The broker never decodes individual
//! records on the hot path: it reads the fixed 61-byte header, checks the CRC-32C once, and
//! rewrites the base offset (and, for LogAppendTime topics, the max timestamp) in place. A
//! rewrite of a field covered by the CRC (everything from `attributes` on) recomputes the CRC.
//!
//! Wire layout (Kafka protocol guide, "Record Batch"):
//!
//! ```text
//! offset  size  field
//!      0     8  baseOffset
//!      8     4  batchLength            (bytes after this field)
//!     12     4  partitionLeaderEpoch
//!     16     1  magic                  (2)
//!     17     4  crc                    (CRC-32C of bytes 21..end)
//!     21     2  attributes
//!     23     4  lastOffsetDelta
//!     27     8  baseTimestamp
//!     35     8  maxTimestamp
//!     43     8  producerId
//!     51     2  producerEpoch
//!     53     4  baseSequence
//!     57     4  recordsCount
//!     61        records...
//! ```

/// Size of the v2 batch header, up to the first record.
pub const HEADER_SIZE: usize = 61;
/// Bytes before `batchLength`'s counted region starts (baseOffset + batchLength).
pub const LOG_OVERHEAD: usize = 12;
/// Smallest legal `batchLength`: the header after the first 12 bytes.
pub const MIN_BATCH_LENGTH: i32 = (HEADER_SIZE - LOG_OVERHEAD) as i32;

/// Where the 8-byte base offset sits (outside the CRC, so the broker may rewrite it freely).
pub const BASE_OFFSET_OFFSET: usize = 0;
const BATCH_LENGTH_OFFSET: usize = 8;
const PARTITION_LEADER_EPOCH_OFFSET: usize = 12;
const MAGIC_OFFSET: usize = 16;
const CRC_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;
const LAST_OFFSET_DELTA_OFFSET: usize = 23;
const BASE_TIMESTAMP_OFFSET: usize = 27;
const MAX_TIMESTAMP_OFFSET: usize = 35;
const PRODUCER_ID_OFFSET: usize = 43;
const PRODUCER_EPOCH_OFFSET: usize = 51;
const BASE_SEQUENCE_OFFSET: usize = 53;
const RECORDS_COUNT_OFFSET: usize = 57;

/// Attribute bits.
pub const COMPRESSION_MASK: i16 = 0x07;
pub const TIMESTAMP_TYPE_LOG_APPEND_TIME: i16 = 0x08;
pub const TRANSACTIONAL: i16 = 0x10;
pub const CONTROL: i16 = 0x20;

/// Producer id of a batch written without idempotence.
pub const NO_PRODUCER_ID: i64 = -1;
/// Sequence of a batch written without idempotence.
pub const NO_SEQUENCE: i32 = -1;

/// Why a byte range is not a valid v2 record batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("truncated batch: need {needed} bytes, have {available}")]
    Truncated { needed: usize, available: usize },
    #[error("batch length {0} is below the minimum header size")]
    LengthTooSmall(i32),
    #[error("unsupported magic {0} (only v2 record batches are accepted)")]
    UnsupportedMagic(i8),
    #[error("CRC mismatch: header says {stored:#010x}, computed {computed:#010x}")]
    CorruptCrc { stored: u32, computed: u32 },
    #[error("invalid record count {records_count} for last offset delta {last_offset_delta}")]
    InvalidRecordCount {
        records_count: i32,
        last_offset_delta: i32,
    },
    #[error("invalid compression codec {0}")]
    InvalidCompression(i16),
    #[error("malformed record at byte {0} of the batch")]
    MalformedRecord(usize),
    #[error("records of a compressed batch cannot be read without decompressing it")]
    Compressed,
}

/// The decoded fixed header of one v2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Whether the batch has one record per offset of its span, as every produced batch does
    /// (only the log cleaner leaves fewer).
    pub fn is_dense(&self) -> bool {
        self.records_count as i64 == self.last_offset_delta as i64 + 1
    }

    /// Total size of the batch on the wire, header included.
    pub fn total_size(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    /// Offset of the last record in the batch.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    /// Offset right after this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    /// Compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> i16 {
        self.attributes & COMPRESSION_MASK
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL != 0
    }

    /// Whether the producer that wrote this batch is idempotent (has a producer id).
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }

    /// Sequence number of the last record in the batch, wrapping at i32::MAX as Kafka does.
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence == NO_SEQUENCE {
            return NO_SEQUENCE;
        }
        let last = self.base_sequence as i64 + self.last_offset_delta as i64;
        if last > i32::MAX as i64 {
            (last - i32::MAX as i64 - 1) as i32
        } else {
            last as i32
        }
    }
}

fn read_i16(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([buf[at], buf[at + 1]])
}

fn read_i32(buf: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn read_i64(buf: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

/// Parses the header of the batch at the start of `buf` without checking the CRC.
///
/// Checks only what is needed to know the batch's extent: the header is present, the length is
/// sane and the magic is 2. `buf` may hold more than one batch; only the first is read.
pub fn parse_header(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    if buf.len() < HEADER_SIZE {
        return Err(BatchError::Truncated {
            needed: HEADER_SIZE,
            available: buf.len(),
        });
    }
    let batch_length = read_i32(buf, BATCH_LENGTH_OFFSET);
    if batch_length < MIN_BATCH_LENGTH {
        return Err(BatchError::LengthTooSmall(batch_length));
    }
    let magic = buf[MAGIC_OFFSET] as i8;
    if magic != 2 {
        return Err(BatchError::UnsupportedMagic(magic));
    }
    Ok(BatchHeader {
        base_offset: read_i64(buf, 0),
        batch_length,
        partition_leader_epoch: read_i32(buf, PARTITION_LEADER_EPOCH_OFFSET),
        magic,
        crc: read_u32(buf, CRC_OFFSET),
        attributes: read_i16(buf, ATTRIBUTES_OFFSET),
        last_offset_delta: read_i32(buf, LAST_OFFSET_DELTA_OFFSET),
        base_timestamp: read_i64(buf, BASE_TIMESTAMP_OFFSET),
        max_timestamp: read_i64(buf, MAX_TIMESTAMP_OFFSET),
        producer_id: read_i64(buf, PRODUCER_ID_OFFSET),
        producer_epoch: read_i16(buf, PRODUCER_EPOCH_OFFSET),
        base_sequence: read_i32(buf, BASE_SEQUENCE_OFFSET),
        records_count: read_i32(buf, RECORDS_COUNT_OFFSET),
    })
}

/// CRC-32C over the part of a batch the stored CRC covers (from `attributes` to the end).
pub fn compute_crc(batch: &[u8]) -> u32 {
    crate::protocol::crc32c(&batch[ATTRIBUTES_OFFSET..])
}

/// Whether a validation computes the CRC-32C of each batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crc {
    Check,
    /// Every batch already passed [`validate`] with the CRC checked, on these same bytes
    /// ([`all_valid`]): the connection reader checks a Produce request's batches while the
    /// frame is still in its CPU's cache, so the log does not read them a second time.
    AlreadyChecked,
}

/// Parses and fully validates the batch at the start of `buf`: extent, magic, CRC-32C, codec,
/// and a record count consistent with the offset delta. Returns the header; the batch occupies
/// `buf[..header.total_size()]`.
pub fn validate(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    validate_with(buf, Crc::Check)
}

/// [`validate`], skipping the CRC when `crc` says it was already checked.
pub fn validate_with(buf: &[u8], crc: Crc) -> Result<BatchHeader, BatchError> {
    let header = parse_header(buf)?;
    let total = header.total_size();
    if buf.len() < total {
        return Err(BatchError::Truncated {
            needed: total,
            available: buf.len(),
        });
    }
    if crc == Crc::Check {
        let computed = compute_crc(&buf[..total]);
        if computed != header.crc {
            return Err(BatchError::CorruptCrc {
                stored: header.crc,
                computed,
            });
        }
    }
    if header.compression() > 4 {
        return Err(BatchError::InvalidCompression(header.compression()));
    }
    // A batch the log cleaner rewrote keeps its offset span with fewer records (possibly none:
    // the empty batch that carries a producer's last sequence), so the count may be below the
    // span but never above it. The produce path additionally requires dense offsets
    // (`is_dense`), as producers send them.
    if header.records_count < 0
        || header.last_offset_delta < 0
        || header.records_count as i64 > header.last_offset_delta as i64 + 1
    {
        return Err(BatchError::InvalidRecordCount {
            records_count: header.records_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    Ok(header)
}

/// Rewrites the base offset of the batch at the start of `batch`. The base offset is outside
/// the CRC's coverage, so the CRC stays valid.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[BASE_OFFSET_OFFSET..BASE_OFFSET_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Rewrites the partition leader epoch (outside the CRC's coverage).
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[PARTITION_LEADER_EPOCH_OFFSET..PARTITION_LEADER_EPOCH_OFFSET + 4]
        .copy_from_slice(&epoch.to_be_bytes());
}

/// Marks the batch as LogAppendTime with `timestamp` as its max timestamp, as a broker does for
/// topics with `message.timestamp.type=LogAppendTime`, and recomputes the CRC.
pub fn set_log_append_time(batch: &mut [u8], timestamp: i64) {
    let attributes = read_i16(batch, ATTRIBUTES_OFFSET) | TIMESTAMP_TYPE_LOG_APPEND_TIME;
    batch[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8].copy_from_slice(&timestamp.to_be_bytes());
    let total = LOG_OVERHEAD + read_i32(batch, BATCH_LENGTH_OFFSET) as usize;
    let crc = compute_crc(&batch[..total]);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Iterates the headers of the consecutive batches in `buf`, validating each fully.
/// Stops at the first invalid or incomplete batch, yielding its error once.
pub fn iter_validated(
    buf: &[u8],
) -> impl Iterator<Item = Result<(usize, BatchHeader), BatchError>> + '_ {
    iter_validated_with(buf, Crc::Check)
}

/// True when `buf` is one or more complete batches that all pass [`validate`]: then
/// [`Crc::AlreadyChecked`] may be used for these bytes.
pub fn all_valid(buf: &[u8]) -> bool {
    !buf.is_empty() && iter_validated(buf).all(|item| item.is_ok())
}

/// [`iter_validated`] with the CRC check as `crc` says.
pub fn iter_validated_with(
    buf: &[u8],
    crc: Crc,
) -> impl Iterator<Item = Result<(usize, BatchHeader), BatchError>> + '_ {
    let mut position = 0usize;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || position >= buf.len() {
            return None;
        }
        match validate_with(&buf[position..], crc) {
            Ok(header) => {
                let at = position;
                position += header.total_size();
                Some(Ok((at, header)))
            }
            Err(error) => {
                failed = true;
                Some(Err(error))
            }
        }
    })
}

/// Reads a zigzag varint (Kafka's varint/varlong) at `*at`, advancing it.
fn read_varint(buf: &[u8], at: &mut usize) -> Option<i64> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*at)?;
        *at += 1;
        value |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Some(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    None
}

/// The offset and timestamp of every record of an uncompressed batch (whose header is already
/// validated), in order. Used by ListOffsets, not on the produce or fetch path. A
/// LogAppendTime batch reports its max timestamp for every record, as Kafka does.
pub fn record_offsets_and_timestamps(batch: &[u8]) -> Result<Vec<(i64, i64)>, BatchError> {
    let header = parse_header(batch)?;
    if header.compression() != 0 {
        return Err(BatchError::Compressed);
    }
    let end = header.total_size().min(batch.len());
    let log_append_time = header.attributes & TIMESTAMP_TYPE_LOG_APPEND_TIME != 0;
    let count = header.records_count.max(0) as usize;
    let mut records = Vec::with_capacity(count.min(end / 7));
    let mut at = HEADER_SIZE;
    for _ in 0..count {
        let start = at;
        let malformed = || BatchError::MalformedRecord(start);
        let length = read_varint(&batch[..end], &mut at).ok_or_else(malformed)?;
        let body_start = at;
        if length < 1 || body_start as i64 + length > end as i64 {
            return Err(malformed());
        }
        at += 1; // record attributes
        let timestamp_delta = read_varint(&batch[..end], &mut at).ok_or_else(malformed)?;
        let offset_delta = read_varint(&batch[..end], &mut at).ok_or_else(malformed)?;
        if at > body_start + length as usize {
            return Err(malformed());
        }
        let timestamp = if log_append_time {
            header.max_timestamp
        } else {
            header.base_timestamp.wrapping_add(timestamp_delta)
        };
        records.push((header.base_offset.wrapping_add(offset_delta), timestamp));
        at = body_start + length as usize;
    }
    Ok(records)
}

/// Attribute bit set by the log cleaner on a batch whose `baseTimestamp` holds the delete
/// horizon of its tombstones (KIP-534): after that time the cleaner may remove them.
pub const DELETE_HORIZON: i16 = 0x40;

/// One record of a batch, borrowed from the batch's (decompressed) records section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub timestamp_delta: i64,
    pub offset_delta: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// A record with a null value is a tombstone in a compacted topic.
    pub value_is_null: bool,
    /// The record's bytes from `offsetDelta` to its end (what follows the timestamp delta).
    pub tail: &'a [u8],
    /// The record's attributes byte.
    pub attributes: u8,
}

/// The largest records section Karst decompresses (64 MiB). A compressed batch passes
/// message.max.bytes on its compressed size, and zstd expands a few kilobytes of zeros into
/// gigabytes: without a bound one produce request could take the node's memory and stall its
/// step loop for seconds (a decompression bomb). Kafka streams records one at a time instead;
/// this bound keeps Karst's whole-section decoding safe, far above what real producers send
/// (a 1 MiB batch would need a ratio of 64).
pub const MAX_DECOMPRESSED_SECTION_BYTES: usize = 64 << 20;

/// Why a records section could not be decompressed.
#[derive(Debug)]
enum DecompressError {
    /// Not valid data of the codec.
    Invalid,
    /// It would decompress to more than the bound.
    TooLarge,
}

/// Reads `reader` to its end, refusing more than `limit` bytes.
fn read_bounded(reader: impl std::io::Read, limit: usize) -> Result<Vec<u8>, DecompressError> {
    use std::io::Read;
    let mut out = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| DecompressError::Invalid)?;
    if out.len() > limit {
        return Err(DecompressError::TooLarge);
    }
    Ok(out)
}

/// Kafka's snappy: xerial-framed blocks behind a 16-byte magic header, or (as the Java client
/// also accepts) one raw snappy block. Each block's declared length is checked against what is
/// left of the bound before anything is allocated.
fn snappy_decompress(payload: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    const MAGIC_HEADER: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
    let mut out = Vec::new();
    let decode_block = |block: &[u8], out: &mut Vec<u8>| {
        let len = snap::raw::decompress_len(block).map_err(|_| DecompressError::Invalid)?;
        if len > limit - out.len() {
            return Err(DecompressError::TooLarge);
        }
        let start = out.len();
        out.resize(start + len, 0);
        snap::raw::Decoder::new()
            .decompress(block, &mut out[start..])
            .map_err(|_| DecompressError::Invalid)?;
        Ok(())
    };
    let Some(mut rest) = payload.strip_prefix(&MAGIC_HEADER[..]) else {
        if payload.is_empty() {
            return Err(DecompressError::Invalid);
        }
        decode_block(payload, &mut out)?;
        return Ok(out);
    };
    while !rest.is_empty() {
        let size: [u8; 4] = rest
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or(DecompressError::Invalid)?;
        let size = u32::from_be_bytes(size) as usize;
        let block = rest.get(4..4 + size).ok_or(DecompressError::Invalid)?;
        decode_block(block, &mut out)?;
        rest = &rest[4 + size..];
    }
    Ok(out)
}

/// Decompresses a records section with codec `codec` (1 gzip, 2 snappy, 3 lz4, 4 zstd),
/// refusing output over `limit` bytes.
fn decompress_bounded(
    codec: i16,
    payload: &[u8],
    limit: usize,
) -> Result<Vec<u8>, DecompressError> {
    let invalid = |_| DecompressError::Invalid;
    match codec {
        1 => read_bounded(flate2::read::GzDecoder::new(payload), limit),
        2 => snappy_decompress(payload, limit),
        3 => read_bounded(lz4::Decoder::new(payload).map_err(invalid)?, limit),
        4 => read_bounded(
            zstd::stream::read::Decoder::new(payload).map_err(invalid)?,
            limit,
        ),
        _ => Err(DecompressError::Invalid),
    }
}

fn compress_with<C: kafka_protocol::compression::Compressor<bytes::BytesMut>>(
    section: &[u8],
) -> anyhow::Result<Vec<u8>> {
    let mut out = bytes::BytesMut::new();
    C::compress(&mut out, |buf| {
        use bytes::BufMut;
        buf.put_slice(section);
        Ok(())
    })?;
    Ok(out.to_vec())
}

/// The records section of a (validated) batch, decompressed with the batch's codec; a section
/// that would decompress to more than [`MAX_DECOMPRESSED_SECTION_BYTES`] is refused as
/// malformed (Kafka's CORRUPT_MESSAGE) without being expanded.
pub fn records_section(batch: &[u8]) -> Result<Vec<u8>, BatchError> {
    records_section_bounded(batch, MAX_DECOMPRESSED_SECTION_BYTES)
}

/// [`records_section`] with an explicit bound on the decompressed size.
pub fn records_section_bounded(batch: &[u8], limit: usize) -> Result<Vec<u8>, BatchError> {
    let header = parse_header(batch)?;
    let payload = batch
        .get(HEADER_SIZE..header.total_size())
        .ok_or(BatchError::Truncated {
            needed: header.total_size(),
            available: batch.len(),
        })?;
    match header.compression() {
        0 => Ok(payload.to_vec()),
        codec @ 1..=4 => decompress_bounded(codec, payload, limit).map_err(|e| {
            tracing::debug!("records section of a {codec} batch refused: {e:?}");
            BatchError::MalformedRecord(HEADER_SIZE)
        }),
        codec => Err(BatchError::InvalidCompression(codec)),
    }
}

/// Compresses a records section with codec `codec` (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
pub fn compress_section(codec: i16, section: &[u8]) -> Result<Vec<u8>, BatchError> {
    use kafka_protocol::compression::{Gzip, Lz4, Snappy, Zstd};
    let result = match codec {
        0 => return Ok(section.to_vec()),
        1 => compress_with::<Gzip>(section),
        2 => compress_with::<Snappy>(section),
        3 => compress_with::<Lz4>(section),
        4 => compress_with::<Zstd>(section),
        codec => return Err(BatchError::InvalidCompression(codec)),
    };
    result.map_err(|_| BatchError::InvalidCompression(codec))
}

fn read_bytes_field<'a>(buf: &'a [u8], at: &mut usize) -> Option<Option<&'a [u8]>> {
    let length = read_varint(buf, at)?;
    if length < 0 {
        return Some(None);
    }
    let end = at.checked_add(length as usize)?;
    let bytes = buf.get(*at..end)?;
    *at = end;
    Some(Some(bytes))
}

/// Parses `count` records of a decompressed records section.
pub fn parse_records(section: &[u8], count: usize) -> Result<Vec<RecordRef<'_>>, BatchError> {
    let mut records = Vec::with_capacity(count.min(section.len() / 7));
    let mut at = 0usize;
    for _ in 0..count {
        let start = at;
        let malformed = || BatchError::MalformedRecord(HEADER_SIZE + start);
        let length = read_varint(section, &mut at).ok_or_else(malformed)?;
        let body_start = at;
        if length < 1 || body_start as i64 + length > section.len() as i64 {
            return Err(malformed());
        }
        let body_end = body_start + length as usize;
        let body = &section[..body_end];
        let attributes = body[at];
        at += 1;
        let timestamp_delta = read_varint(body, &mut at).ok_or_else(malformed)?;
        let tail_start = at;
        let offset_delta = read_varint(body, &mut at).ok_or_else(malformed)?;
        let key = read_bytes_field(body, &mut at).ok_or_else(malformed)?;
        let value = read_bytes_field(body, &mut at).ok_or_else(malformed)?;
        records.push(RecordRef {
            timestamp_delta,
            offset_delta,
            key,
            value,
            value_is_null: value.is_none(),
            tail: &section[tail_start..body_end],
            attributes,
        });
        at = body_end;
    }
    if at != section.len() {
        return Err(BatchError::MalformedRecord(HEADER_SIZE + at));
    }
    Ok(records)
}

/// Whether every record of the (validated) batch has a key: a compacted topic refuses keyless
/// records (Kafka's LogValidator, INVALID_RECORD). Control batches carry keys of their own.
pub fn all_records_have_keys(batch: &[u8]) -> Result<bool, BatchError> {
    let header = parse_header(batch)?;
    let section = records_section(batch)?;
    let records = parse_records(&section, header.records_count.max(0) as usize)?;
    Ok(records.iter().all(|record| record.key.is_some()))
}

fn put_varint(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    loop {
        let byte = (zigzag & 0x7f) as u8;
        zigzag >>= 7;
        if zigzag == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
}

/// An empty batch (no records, no producer) spanning offsets `base_offset..=last_offset`.
/// The log cleaner writes one where it removed whole batches and no earlier batch could be
/// stretched over the gap, so offsets inside a segment stay contiguous (what recovery checks,
/// since the base offset is outside the CRC). Consumers skip it like any empty batch.
pub fn empty_batch(base_offset: i64, last_offset: i64, partition_leader_epoch: i32) -> Vec<u8> {
    let mut batch = Vec::with_capacity(HEADER_SIZE);
    batch.extend_from_slice(&base_offset.to_be_bytes());
    batch.extend_from_slice(&MIN_BATCH_LENGTH.to_be_bytes());
    batch.extend_from_slice(&partition_leader_epoch.to_be_bytes());
    batch.push(2);
    batch.extend_from_slice(&0u32.to_be_bytes());
    batch.extend_from_slice(&0i16.to_be_bytes());
    batch.extend_from_slice(&((last_offset - base_offset) as i32).to_be_bytes());
    batch.extend_from_slice(&(-1i64).to_be_bytes());
    batch.extend_from_slice(&(-1i64).to_be_bytes());
    batch.extend_from_slice(&NO_PRODUCER_ID.to_be_bytes());
    batch.extend_from_slice(&(-1i16).to_be_bytes());
    batch.extend_from_slice(&NO_SEQUENCE.to_be_bytes());
    batch.extend_from_slice(&0i32.to_be_bytes());
    let crc = compute_crc(&batch);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    batch
}

/// Rewrites the last offset delta of the (whole) batch `batch` and recomputes the CRC: the
/// log cleaner stretches a batch without a producer id over the removed batches after it.
pub fn set_last_offset_delta(batch: &mut [u8], last_offset_delta: i32) {
    batch[LAST_OFFSET_DELTA_OFFSET..LAST_OFFSET_DELTA_OFFSET + 4]
        .copy_from_slice(&last_offset_delta.to_be_bytes());
    let crc = compute_crc(batch);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Rebuilds the batch `original` keeping only `kept` of its records (in order), as the log
/// cleaner does. The base offset, last offset delta (so the batch still ends at its last
/// offset and the producer's last sequence survives), producer id, epoch, base sequence,
/// leader epoch and max timestamp are kept; the records are re-compressed with the batch's
/// codec and the CRC recomputed. With `delete_horizon`, the batch is marked (KIP-534) and its
/// base timestamp becomes the horizon, the records' timestamp deltas rebased to it. With no
/// records kept the result is an empty, uncompressed batch header (what Kafka keeps so that
/// producer state can be rebuilt).
pub fn rebuild_batch(
    original: &[u8],
    kept: &[RecordRef<'_>],
    delete_horizon: Option<i64>,
) -> Result<Vec<u8>, BatchError> {
    let header = parse_header(original)?;
    let (base_timestamp, rebase) = match delete_horizon {
        Some(horizon) => (horizon, header.base_timestamp.wrapping_sub(horizon)),
        None => (header.base_timestamp, 0),
    };
    let mut attributes = header.attributes;
    if delete_horizon.is_some() {
        attributes |= DELETE_HORIZON;
    }
    let payload = if kept.is_empty() {
        attributes &= !COMPRESSION_MASK;
        Vec::new()
    } else {
        let mut section = Vec::new();
        let mut body = Vec::new();
        for record in kept {
            body.clear();
            body.push(record.attributes);
            put_varint(&mut body, record.timestamp_delta.wrapping_add(rebase));
            body.extend_from_slice(record.tail);
            put_varint(&mut section, body.len() as i64);
            section.extend_from_slice(&body);
        }
        compress_section(header.compression(), &section)?
    };
    let mut batch = Vec::with_capacity(HEADER_SIZE + payload.len());
    batch.extend_from_slice(&original[..HEADER_SIZE]);
    batch.extend_from_slice(&payload);
    let length = (batch.len() - LOG_OVERHEAD) as i32;
    batch[BATCH_LENGTH_OFFSET..BATCH_LENGTH_OFFSET + 4].copy_from_slice(&length.to_be_bytes());
    batch[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[BASE_TIMESTAMP_OFFSET..BASE_TIMESTAMP_OFFSET + 8]
        .copy_from_slice(&base_timestamp.to_be_bytes());
    batch[RECORDS_COUNT_OFFSET..RECORDS_COUNT_OFFSET + 4]
        .copy_from_slice(&(kept.len() as i32).to_be_bytes());
    let crc = compute_crc(&batch);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(batch)
}

/// Builders for tests: a minimal, valid, uncompressed v2 batch with the given records.
pub mod testing {
    use super::*;

    /// One record's key, value and headers, for building test batches.
    #[derive(Debug, Clone, Default)]
    pub struct TestRecord {
        pub key: Option<Vec<u8>>,
        pub value: Option<Vec<u8>>,
        pub headers: Vec<(String, Option<Vec<u8>>)>,
    }

    fn put_bytes(out: &mut Vec<u8>, bytes: &Option<Vec<u8>>) {
        match bytes {
            None => put_varint(out, -1),
            Some(bytes) => {
                put_varint(out, bytes.len() as i64);
                out.extend_from_slice(bytes);
            }
        }
    }

    /// Builds an uncompressed v2 batch with base offset 0, timestamps `base_timestamp + i`,
    /// and the given producer fields.
    pub fn build_batch(
        records: &[TestRecord],
        base_timestamp: i64,
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
    ) -> Vec<u8> {
        assert!(
            !records.is_empty(),
            "a produced batch has at least one record"
        );
        let mut body = Vec::new();
        for (index, record) in records.iter().enumerate() {
            let mut encoded = vec![0u8]; // record attributes
            put_varint(&mut encoded, index as i64); // timestamp delta
            put_varint(&mut encoded, index as i64); // offset delta
            put_bytes(&mut encoded, &record.key);
            put_bytes(&mut encoded, &record.value);
            put_varint(&mut encoded, record.headers.len() as i64);
            for (name, value) in &record.headers {
                put_bytes(&mut encoded, &Some(name.as_bytes().to_vec()));
                put_bytes(&mut encoded, value);
            }
            put_varint(&mut body, encoded.len() as i64);
            body.extend_from_slice(&encoded);
        }
        let count = records.len() as i32;
        let mut batch = Vec::with_capacity(HEADER_SIZE + body.len());
        batch.extend_from_slice(&0i64.to_be_bytes());
        batch.extend_from_slice(&((HEADER_SIZE - LOG_OVERHEAD + body.len()) as i32).to_be_bytes());
        batch.extend_from_slice(&(-1i32).to_be_bytes());
        batch.push(2);
        batch.extend_from_slice(&0u32.to_be_bytes());
        batch.extend_from_slice(&0i16.to_be_bytes());
        batch.extend_from_slice(&(count - 1).to_be_bytes());
        batch.extend_from_slice(&base_timestamp.to_be_bytes());
        batch.extend_from_slice(&(base_timestamp + count as i64 - 1).to_be_bytes());
        batch.extend_from_slice(&producer_id.to_be_bytes());
        batch.extend_from_slice(&producer_epoch.to_be_bytes());
        batch.extend_from_slice(&base_sequence.to_be_bytes());
        batch.extend_from_slice(&count.to_be_bytes());
        batch.extend_from_slice(&body);
        let crc = compute_crc(&batch);
        batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        batch
    }

    /// The same batch with its records section compressed with `codec` (1 gzip, 2 snappy,
    /// 3 lz4, 4 zstd), as a producer with compression.type set sends it.
    pub fn compress_batch(batch: &[u8], codec: i16) -> Vec<u8> {
        let compressed = compress_section(codec, &batch[HEADER_SIZE..]).expect("compresses");
        let mut out = batch[..HEADER_SIZE].to_vec();
        out.extend_from_slice(&compressed);
        let length = (out.len() - LOG_OVERHEAD) as i32;
        out[BATCH_LENGTH_OFFSET..BATCH_LENGTH_OFFSET + 4].copy_from_slice(&length.to_be_bytes());
        let attributes = (read_i16(&out, ATTRIBUTES_OFFSET) & !COMPRESSION_MASK) | codec;
        out[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
        let crc = compute_crc(&out);
        out[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        out
    }

    /// A batch of `count` records with values `value-<i>` and no producer id.
    pub fn simple_batch(count: usize, base_timestamp: i64) -> Vec<u8> {
        let records: Vec<TestRecord> = (0..count)
            .map(|i| TestRecord {
                key: None,
                value: Some(format!("value-{i}").into_bytes()),
                headers: Vec::new(),
            })
            .collect();
        build_batch(&records, base_timestamp, NO_PRODUCER_ID, -1, NO_SEQUENCE)
    }
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
