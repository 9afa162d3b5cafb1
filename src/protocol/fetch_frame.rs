//! Response frames whose large record sets are written to the socket from where they already
//! are, instead of being copied into the frame first.
//!
//! A Fetch response is mostly record batches the log has just read into memory; encoding it with
//! kafka-protocol copies every one of them into the frame buffer, and that copy was a quarter of
//! the node's CPU while consumers read (docs/benchmarks.md). [`encode_response_frame`] instead
//! leaves each record set of at least [`MIN_SEGMENT_BYTES`] out of the buffer and says where it
//! goes: [`Frames::records`] lists `(position in inline, bytes)`, and the writer sends
//! `inline[..p1]`, the first record set, `inline[p1..p2]`, ... in one vectored write.
//!
//! The bytes on the wire are exactly kafka-protocol's encoding (the tests compare them for every
//! Fetch version Karst serves): the crate encodes the response with the large record sets
//! emptied, the encoded sizes of its parts (`compute_size`) locate where each emptied
//! partition ends, and there the empty records' length prefix is replaced by the real one.
//! That end is the records' length prefix followed, in flexible versions, by the partition's
//! tagged-field count, 0: a response with tagged fields set anywhere, which Karst's broker
//! never builds, is encoded the ordinary way.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{ApiKey, FetchResponse, ResponseKind};
use kafka_protocol::protocol::Encodable;

use super::codec::encode_response;

/// Record sets shorter than this are copied into the frame: a separate slice per partition
/// costs more than copying a few KiB.
pub const MIN_SEGMENT_BYTES: usize = 16 * 1024;

/// Encoded response frames: `inline` with the record sets of `records` left out.
#[derive(Debug, Default)]
pub struct Frames {
    pub inline: BytesMut,
    /// (position in `inline` the bytes belong at, the bytes), positions non-decreasing.
    pub records: Vec<(usize, Bytes)>,
}

impl Frames {
    /// Bytes on the wire: inline plus every record set left out.
    pub fn len(&self) -> usize {
        self.inline.len() + self.records.iter().map(|(_, b)| b.len()).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn clear(&mut self) {
        self.inline.clear();
        self.records.clear();
    }

    /// The frames in wire order as slices of `inline` and of the record sets.
    pub fn slices(&self) -> Vec<&[u8]> {
        let mut out = Vec::with_capacity(self.records.len() * 2 + 1);
        let mut from = 0;
        for (at, bytes) in &self.records {
            out.push(&self.inline[from..*at]);
            out.push(&bytes[..]);
            from = *at;
        }
        out.push(&self.inline[from..]);
        out.retain(|slice| !slice.is_empty());
        out
    }

    /// The frames as one contiguous buffer (tests and tools).
    pub fn to_vec(&self) -> Vec<u8> {
        self.slices().concat()
    }
}

/// Appends one size-prefixed response frame to `frames`: Fetch responses leave their large
/// record sets out of `frames.inline` (see the module docs), everything else is encoded by
/// `codec::encode_response`.
pub fn encode_response_frame(
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    response: ResponseKind,
    frames: &mut Frames,
) -> anyhow::Result<()> {
    match response {
        ResponseKind::Fetch(fetch) if segmentable(&fetch) => {
            encode_fetch(correlation_id, version, fetch, frames)
        }
        other => encode_response(correlation_id, api_key, version, &other, &mut frames.inline),
    }
}

/// Whether no tagged field is set anywhere (the shapes Karst's broker builds).
fn segmentable(fetch: &FetchResponse) -> bool {
    let default_partition = PartitionData::default();
    fetch.unknown_tagged_fields.is_empty()
        && fetch.node_endpoints.is_empty()
        && fetch.responses.iter().all(|topic| {
            topic.unknown_tagged_fields.is_empty()
                && topic.partitions.iter().all(|p| {
                    p.unknown_tagged_fields.is_empty()
                        && p.diverging_epoch == default_partition.diverging_epoch
                        && p.current_leader == default_partition.current_leader
                        && p.snapshot_id == default_partition.snapshot_id
                })
        })
}

fn encode_fetch(
    correlation_id: i32,
    version: i16,
    mut fetch: FetchResponse,
    frames: &mut Frames,
) -> anyhow::Result<()> {
    // Take the large record sets out, leaving empty ones, in wire order.
    let mut taken: Vec<Option<Bytes>> = Vec::new();
    for topic in &mut fetch.responses {
        for partition in &mut topic.partitions {
            let large = matches!(&partition.records, Some(r) if r.len() >= MIN_SEGMENT_BYTES);
            taken.push(large.then(|| partition.records.replace(Bytes::new()).unwrap_or_default()));
        }
    }
    let response = ResponseKind::Fetch(fetch);
    if taken.iter().all(Option::is_none) {
        return encode_response(
            correlation_id,
            ApiKey::Fetch,
            version,
            &response,
            &mut frames.inline,
        );
    }
    let mut hollow = BytesMut::new();
    encode_response(
        correlation_id,
        ApiKey::Fetch,
        version,
        &response,
        &mut hollow,
    )?;
    let ResponseKind::Fetch(fetch) = &response else {
        unreachable!("built above")
    };
    let ends = partition_ends(fetch, version, hollow.len())?;
    // The end of each emptied partition: the empty records' length prefix, then (flexible
    // versions) the partition's tagged-field count, 0.
    let flexible = version >= 12;
    let tail: &[u8] = if flexible { &[1, 0] } else { &[0, 0, 0, 0] };
    let mut splices = Vec::new();
    let mut left_out = 0usize;
    for (end, records) in ends.into_iter().zip(taken) {
        if let Some(records) = records {
            anyhow::ensure!(
                end <= hollow.len() && hollow[..end].ends_with(tail),
                "unexpected end of an encoded Fetch partition"
            );
            left_out += records.len();
            splices.push((end, records));
        }
    }
    // A length prefix grows by at most 9 bytes (a 10-byte varint instead of 1).
    anyhow::ensure!(
        hollow.len() + 9 * splices.len() + left_out <= i32::MAX as usize,
        "Fetch response too large for one frame"
    );
    // Checked: from here on nothing fails, so no half-written response stays in the frames.
    let out = &mut frames.inline;
    let start = out.len();
    let mut from = 0;
    for (end, records) in splices {
        out.extend_from_slice(&hollow[from..end - tail.len()]);
        if flexible {
            put_unsigned_varint(out, records.len() as u64 + 1);
        } else {
            out.put_i32(records.len() as i32);
        }
        frames.records.push((out.len(), records));
        // Flexible versions: the tagged-field count after the records stays.
        from = if flexible { end - 1 } else { end };
    }
    out.extend_from_slice(&hollow[from..]);
    let size = (out.len() - start - 4 + left_out) as i32;
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
    Ok(())
}

/// Where each partition's encoding ends in `frame_len` bytes of an encoded Fetch frame, in wire
/// order, from the encoded sizes of the parts: the frame ends with the topics array and (flexible
/// versions) the response's tagged-field count, and each topic with its partitions array and
/// its own count, all 0 here ([`segmentable`]).
fn partition_ends(
    fetch: &FetchResponse,
    version: i16,
    frame_len: usize,
) -> anyhow::Result<Vec<usize>> {
    let tagged_count = usize::from(version >= 12);
    let mut topics_size = 0;
    for topic in &fetch.responses {
        topics_size += topic.compute_size(version)?;
    }
    let mut topic_start = frame_len
        .checked_sub(tagged_count + topics_size)
        .ok_or_else(|| anyhow::anyhow!("Fetch frame shorter than its topics"))?;
    let mut ends = Vec::new();
    for topic in &fetch.responses {
        let topic_size = topic.compute_size(version)?;
        let mut sizes = Vec::with_capacity(topic.partitions.len());
        for partition in &topic.partitions {
            sizes.push(partition.compute_size(version)?);
        }
        let mut end = topic_start + topic_size - tagged_count - sizes.iter().sum::<usize>();
        for size in sizes {
            end += size;
            ends.push(end);
        }
        topic_start += topic_size;
    }
    Ok(ends)
}

fn put_unsigned_varint(out: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{
        AbortedTransaction, EpochEndOffset, FetchableTopicResponse,
    };
    use kafka_protocol::messages::{ProducerId, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use proptest::prelude::*;

    /// What kafka-protocol encodes for the same response: the reference.
    fn reference(version: i16, response: &FetchResponse) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode_response(
            7,
            ApiKey::Fetch,
            version,
            &ResponseKind::Fetch(response.clone()),
            &mut out,
        )
        .unwrap();
        out.to_vec()
    }

    fn frames_of(version: i16, response: &FetchResponse) -> Frames {
        let mut frames = Frames::default();
        encode_response_frame(
            7,
            ApiKey::Fetch,
            version,
            ResponseKind::Fetch(response.clone()),
            &mut frames,
        )
        .unwrap();
        frames
    }

    fn records(len: usize, seed: u8) -> Bytes {
        Bytes::from(
            (0..len)
                .map(|i| (i as u8).wrapping_mul(31) ^ seed)
                .collect::<Vec<u8>>(),
        )
    }

    /// (records length or None, error code, aborted transactions) per partition, per topic.
    type Shape = Vec<Vec<(Option<usize>, i16, Option<usize>)>>;

    fn response(version: i16, shape: &Shape, session_id: i32) -> FetchResponse {
        let responses = shape
            .iter()
            .enumerate()
            .map(|(t, partitions)| {
                let mut topic = FetchableTopicResponse::default().with_partitions(
                    partitions
                        .iter()
                        .enumerate()
                        .map(|(p, (len, code, aborted))| {
                            let mut data = PartitionData::default()
                                .with_partition_index(p as i32)
                                .with_error_code(*code)
                                .with_high_watermark(1_000_000 + p as i64)
                                .with_last_stable_offset(999 + t as i64)
                                .with_aborted_transactions(aborted.map(|n| {
                                    (0..n)
                                        .map(|i| {
                                            AbortedTransaction::default()
                                                .with_producer_id(ProducerId(i as i64))
                                                .with_first_offset(i as i64 * 3)
                                        })
                                        .collect()
                                }))
                                .with_records(len.map(|len| records(len, p as u8)));
                            if version >= 5 {
                                data.log_start_offset = 17;
                            }
                            if version >= 11 {
                                data.preferred_read_replica = kafka_protocol::messages::BrokerId(1);
                            }
                            data
                        })
                        .collect(),
                );
                if version >= 13 {
                    topic.topic_id = uuid::Uuid::from_u128(0xfeed_0000 + t as u128);
                } else {
                    topic.topic = TopicName(StrBytes::from_string(format!("topic-{t}")));
                }
                topic
            })
            .collect();
        let mut fetch = FetchResponse::default()
            .with_throttle_time_ms(3)
            .with_responses(responses);
        if version >= 7 {
            fetch.error_code = 0;
            fetch.session_id = session_id;
        }
        fetch
    }

    fn shape() -> impl Strategy<Value = Shape> {
        let len = prop_oneof![
            Just(None),
            Just(Some(0usize)),
            (1usize..MIN_SEGMENT_BYTES).prop_map(Some),
            (MIN_SEGMENT_BYTES..3 * MIN_SEGMENT_BYTES).prop_map(Some),
            // Long enough that the varint length prefix takes three bytes.
            Just(Some(2_200_000usize)),
        ];
        let partition = (
            len,
            prop_oneof![Just(0i16), Just(1), Just(2)],
            proptest::option::of(0usize..3),
        );
        proptest::collection::vec(proptest::collection::vec(partition, 0..4), 0..4)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// The frames carry exactly kafka-protocol's bytes, for every Fetch version Karst
        /// serves, and leave out precisely the record sets of MIN_SEGMENT_BYTES or more.
        #[test]
        fn frames_are_kafka_protocols_bytes(version in 4i16..=16, shape in shape(), session in 0i32..3) {
            let fetch = response(version, &shape, session);
            let frames = frames_of(version, &fetch);
            prop_assert_eq!(frames.to_vec(), reference(version, &fetch));
            let large = shape
                .iter()
                .flatten()
                .filter(|(len, _, _)| len.is_some_and(|len| len >= MIN_SEGMENT_BYTES))
                .count();
            prop_assert_eq!(frames.records.len(), large);
            prop_assert_eq!(frames.len(), frames.to_vec().len());
        }
    }

    /// Several responses appended to the same frames (the writer batches them) keep their
    /// order and positions.
    #[test]
    fn responses_append_after_each_other() {
        let shape: Shape = vec![vec![(Some(40_000), 0, None), (Some(10), 0, Some(1))]];
        let mut frames = Frames::default();
        let mut expected = Vec::new();
        for version in [4, 12, 16] {
            let fetch = response(version, &shape, 0);
            encode_response_frame(
                7,
                ApiKey::Fetch,
                version,
                ResponseKind::Fetch(fetch.clone()),
                &mut frames,
            )
            .unwrap();
            expected.extend(reference(version, &fetch));
            let other = ResponseKind::ApiVersions(Default::default());
            encode_response_frame(7, ApiKey::ApiVersions, 3, other.clone(), &mut frames).unwrap();
            let mut out = BytesMut::new();
            encode_response(7, ApiKey::ApiVersions, 3, &other, &mut out).unwrap();
            expected.extend(out);
        }
        assert_eq!(frames.records.len(), 3);
        assert_eq!(frames.to_vec(), expected);
    }

    /// A response with a tagged field set (Karst's broker sets none) takes the ordinary path,
    /// with the same bytes.
    #[test]
    fn tagged_fields_take_the_ordinary_path() {
        let shape: Shape = vec![vec![(Some(40_000), 0, None)]];
        let mut fetch = response(12, &shape, 0);
        fetch.responses[0].partitions[0].diverging_epoch =
            EpochEndOffset::default().with_epoch(3).with_end_offset(9);
        let frames = frames_of(12, &fetch);
        assert!(frames.records.is_empty());
        assert_eq!(frames.to_vec(), reference(12, &fetch));
    }
}
