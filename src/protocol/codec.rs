//! Framing and codec glue between raw frames and kafka-protocol messages.
//!
//! A Kafka frame is a big-endian i32 size followed by that many bytes. A request starts with a
//! header (api key, api version, correlation id, client id, tagged fields from header v2 on)
//! followed by the body. Responses start with a header holding the correlation id (plus tagged
//! fields for flexible versions, except ApiVersions whose response header is always v0 so a
//! client can read it before it knows what the broker speaks).
//!
//! What a broker does with bad input (as Kafka's SocketServer does):
//! - size negative or over `socket.request.max.bytes`: close the connection;
//! - unknown api key, a version Karst does not implement, undecodable header or body: close;
//! - ApiVersions at a version Karst does not implement: answer UNSUPPORTED_VERSION (35) in a v0
//!   response listing what is supported, so the client can retry with a version it shares.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{decode_request_header_from_buffer, Encodable};

use super::{api_versions, batch, error};

/// Kafka's default `socket.request.max.bytes` (100 MiB).
pub const DEFAULT_SOCKET_REQUEST_MAX_BYTES: usize = 104_857_600;

/// Why a frame was refused; the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("negative frame size {0}")]
    NegativeSize(i32),
    #[error("frame size {size} exceeds socket.request.max.bytes {max}")]
    TooLarge { size: usize, max: usize },
}

/// Reads the 4-byte size prefix and checks it against `max_bytes`.
pub fn frame_length(prefix: [u8; 4], max_bytes: usize) -> Result<usize, FrameError> {
    let size = i32::from_be_bytes(prefix);
    if size < 0 {
        return Err(FrameError::NegativeSize(size));
    }
    let size = size as usize;
    if size > max_bytes {
        return Err(FrameError::TooLarge {
            size,
            max: max_bytes,
        });
    }
    Ok(size)
}

/// A decoded request ready for the broker.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedRequest {
    pub api_key: ApiKey,
    pub header: RequestHeader,
    pub request: RequestKind,
    /// Every partition's records in this Produce request passed [`batch::all_valid`] (CRC
    /// included) when the frame was decoded, so the log skips the CRC
    /// ([`batch::Crc::AlreadyChecked`]). Decoding runs on the connection's reader task right
    /// after the frame arrived, with the bytes still in that CPU's cache; the broker's step
    /// loop, one thread for all connections, then only writes them. False for anything else,
    /// and whenever a batch fails: the log then checks again and answers the right error.
    /// Private, so that only [`decode_request`] can set it: no other path may claim a check.
    crcs_checked: bool,
}

impl DecodedRequest {
    /// Whether decoding checked every Produce batch's CRC (see the field).
    pub fn crcs_checked(&self) -> bool {
        self.crcs_checked
    }

    /// A request whose Produce records (if any) are still to be checked by the log.
    pub fn new(api_key: ApiKey, header: RequestHeader, request: RequestKind) -> Self {
        DecodedRequest {
            api_key,
            header,
            request,
            crcs_checked: false,
        }
    }
}

/// True when every partition's records in `request` are complete batches with valid CRCs.
fn produce_crcs_valid(request: &RequestKind) -> bool {
    let RequestKind::Produce(produce) = request else {
        return false;
    };
    produce.topic_data.iter().all(|topic| {
        topic
            .partition_data
            .iter()
            .all(|partition| partition.records.as_deref().is_some_and(batch::all_valid))
    })
}

/// What to do with one received frame.
#[derive(Debug)]
pub enum Decoded {
    Request(Box<DecodedRequest>),
    /// Send these bytes (a complete, size-prefixed response) and keep the connection.
    Reply(BytesMut),
    /// Close the connection; the string says why (logged).
    Close(String),
}

/// Decodes one frame body (without its size prefix).
pub fn decode_request(mut frame: Bytes) -> Decoded {
    if frame.len() < 8 {
        return Decoded::Close(format!("request of {} bytes has no header", frame.len()));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let Ok(api_key) = ApiKey::try_from(raw_key) else {
        return Decoded::Close(format!("unknown api key {raw_key}"));
    };
    if !api_versions::is_supported(api_key, version) {
        if api_key == ApiKey::ApiVersions {
            // KIP-511: answer in v0 so any client can parse the list and pick a version.
            let response =
                ResponseKind::ApiVersions(api_versions::response(error::UNSUPPORTED_VERSION));
            let mut out = BytesMut::new();
            return match encode_response(correlation_id, api_key, 0, &response, &mut out) {
                Ok(()) => Decoded::Reply(out),
                Err(err) => Decoded::Close(format!("encoding ApiVersions v0: {err}")),
            };
        }
        return Decoded::Close(format!("unsupported version {version} of {api_key:?}"));
    }
    let header = match decode_request_header_from_buffer(&mut frame) {
        Ok(header) => header,
        Err(err) => return Decoded::Close(format!("bad request header: {err}")),
    };
    match RequestKind::decode(api_key, &mut frame, version) {
        Ok(request) => Decoded::Request(Box::new(DecodedRequest {
            api_key,
            header,
            crcs_checked: produce_crcs_valid(&request),
            request,
        })),
        Err(err) => Decoded::Close(format!("bad {api_key:?} v{version} body: {err}")),
    }
}

/// Appends one size-prefixed response frame to `out`.
pub fn encode_response(
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    response: &ResponseKind,
    out: &mut BytesMut,
) -> anyhow::Result<()> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = api_key.response_header_version(version);
    let start = out.len();
    out.put_i32(0);
    header.encode(out, header_version)?;
    response.encode(out, version)?;
    let size = (out.len() - start - 4) as i32;
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
    Ok(())
}

/// Client side, for tests and tools: a size-prefixed request frame.
pub fn encode_request(
    header: &RequestHeader,
    request: &RequestKind,
    out: &mut BytesMut,
) -> anyhow::Result<()> {
    let start = out.len();
    out.put_i32(0);
    kafka_protocol::protocol::encode_request_header_into_buffer(out, header)?;
    request.encode(out, header.request_api_version)?;
    let size = (out.len() - start - 4) as i32;
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
    Ok(())
}

/// Client side, for tests and tools: decodes a response frame body (without size prefix).
pub fn decode_response(
    api_key: ApiKey,
    version: i16,
    mut frame: Bytes,
) -> anyhow::Result<(i32, ResponseKind)> {
    use kafka_protocol::protocol::Decodable;
    let header = ResponseHeader::decode(&mut frame, api_key.response_header_version(version))?;
    let response = ResponseKind::decode(api_key, &mut frame, version)?;
    anyhow::ensure!(
        !frame.has_remaining(),
        "{} trailing bytes after {api_key:?} v{version} response",
        frame.remaining()
    );
    Ok((header.correlation_id, response))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse, MetadataRequest};
    use kafka_protocol::protocol::StrBytes;

    fn request_frame(api_key: ApiKey, version: i16, request: RequestKind) -> Bytes {
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(7)
            .with_client_id(Some(StrBytes::from_static_str("test")));
        let mut out = BytesMut::new();
        encode_request(&header, &request, &mut out).unwrap();
        out.freeze().slice(4..)
    }

    #[test]
    fn frame_size_limits_follow_socket_request_max_bytes() {
        assert_eq!(frame_length(10i32.to_be_bytes(), 10), Ok(10));
        assert_eq!(
            frame_length(11i32.to_be_bytes(), 10),
            Err(FrameError::TooLarge { size: 11, max: 10 })
        );
        assert_eq!(
            frame_length((-1i32).to_be_bytes(), 10),
            Err(FrameError::NegativeSize(-1))
        );
    }

    #[test]
    fn decodes_a_flexible_metadata_request() {
        let frame = request_frame(
            ApiKey::Metadata,
            12,
            RequestKind::Metadata(MetadataRequest::default()),
        );
        match decode_request(frame) {
            Decoded::Request(request) => {
                assert_eq!(request.api_key, ApiKey::Metadata);
                assert_eq!(request.header.correlation_id, 7);
                assert_eq!(request.header.client_id.as_deref(), Some("test"));
            }
            other => panic!("{other:?}"),
        }
    }

    /// KIP-511: an ApiVersions request at a version the broker lacks gets error 35 in a v0
    /// response (header v0) carrying the supported ranges.
    #[test]
    fn unsupported_api_versions_version_gets_error_35_in_v0() {
        let mut frame = BytesMut::new();
        frame.put_i16(ApiKey::ApiVersions as i16);
        frame.put_i16(99);
        frame.put_i32(41);
        frame.put_i16(-1);
        let Decoded::Reply(reply) = decode_request(frame.freeze()) else {
            panic!("expected a reply")
        };
        let (correlation_id, response) =
            decode_response(ApiKey::ApiVersions, 0, reply.freeze().slice(4..)).unwrap();
        assert_eq!(correlation_id, 41);
        let ResponseKind::ApiVersions(ApiVersionsResponse {
            error_code,
            api_keys,
            ..
        }) = response
        else {
            panic!()
        };
        assert_eq!(error_code, error::UNSUPPORTED_VERSION);
        assert_eq!(api_keys.len(), api_versions::SUPPORTED.len());
    }

    #[test]
    fn unknown_key_unsupported_version_and_garbage_close_the_connection() {
        let mut unknown = BytesMut::new();
        unknown.put_i16(12345);
        unknown.put_i16(0);
        unknown.put_i32(1);
        assert!(matches!(
            decode_request(unknown.freeze()),
            Decoded::Close(_)
        ));
        let mut old_produce = BytesMut::new();
        old_produce.put_i16(ApiKey::Produce as i16);
        old_produce.put_i16(0);
        old_produce.put_i32(1);
        assert!(matches!(
            decode_request(old_produce.freeze()),
            Decoded::Close(_)
        ));
        let truncated = request_frame(
            ApiKey::ApiVersions,
            3,
            RequestKind::ApiVersions(ApiVersionsRequest::default()),
        );
        let truncated = truncated.slice(..truncated.len() - 2);
        assert!(matches!(decode_request(truncated), Decoded::Close(_)));
        assert!(matches!(
            decode_request(Bytes::from_static(&[0, 1])),
            Decoded::Close(_)
        ));
    }

    /// Old librdkafka (kcat 1.7.1 / librdkafka 2.0.2) mis-parses tagged fields holding default
    /// values in ApiVersions v3: the body must end with an empty tagged-field section.
    #[test]
    fn api_versions_v3_writes_no_default_tagged_fields() {
        let response = ResponseKind::ApiVersions(api_versions::response(0));
        let mut out = BytesMut::new();
        encode_response(1, ApiKey::ApiVersions, 3, &response, &mut out).unwrap();
        // size(4) correlation(4) error(2) array len(uvarint) entries(7 bytes each) throttle(4) tags(1)
        let entries = api_versions::SUPPORTED.len();
        assert_eq!(out.len(), 4 + 4 + 2 + 1 + entries * 7 + 4 + 1);
        assert_eq!(*out.last().unwrap(), 0);
    }

    /// The CRC-32C of a Produce request's batches is checked while decoding (on the
    /// connection's reader, with the frame in cache); the log then skips it. The flag must be
    /// set only when every batch of every partition is valid, or a corrupt batch would be
    /// written: KIP-98's v2 batch format puts the CRC over attributes..end.
    #[test]
    fn produce_crcs_are_checked_while_decoding() {
        use super::super::batch::testing::simple_batch;
        use kafka_protocol::messages::{produce_request, ProduceRequest};
        let decode = |partitions: Vec<Vec<u8>>| {
            let data = partitions
                .into_iter()
                .enumerate()
                .map(|(index, records)| {
                    produce_request::PartitionProduceData::default()
                        .with_index(index as i32)
                        .with_records(Some(Bytes::from(records)))
                })
                .collect();
            let request = ProduceRequest::default().with_topic_data(vec![
                produce_request::TopicProduceData::default().with_partition_data(data),
            ]);
            let frame = request_frame(ApiKey::Produce, 9, RequestKind::Produce(request));
            let Decoded::Request(decoded) = decode_request(frame) else {
                panic!("a well-formed Produce request decodes")
            };
            decoded.crcs_checked
        };
        let two_batches = [simple_batch(3, 0), simple_batch(2, 5)].concat();
        assert!(decode(vec![simple_batch(4, 0), two_batches.clone()]));
        // One flipped bit in the second batch of one partition: nothing is marked checked.
        let mut corrupt = two_batches.clone();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 1;
        assert!(!decode(vec![simple_batch(4, 0), corrupt]));
        // A truncated batch and an empty record set are left to the log to refuse.
        assert!(!decode(vec![two_batches[..two_batches.len() - 1].to_vec()]));
        assert!(!decode(vec![Vec::new()]));
        // Requests other than Produce carry no records to check.
        let Decoded::Request(metadata) = decode_request(request_frame(
            ApiKey::Metadata,
            12,
            RequestKind::Metadata(Default::default()),
        )) else {
            panic!()
        };
        assert!(!metadata.crcs_checked);
    }

    /// Produce records are decoded as slices of the request frame, not copies: the broker
    /// writes them from there (log::PartitionLog::append_shared).
    #[test]
    fn produce_records_are_slices_of_the_frame() {
        use kafka_protocol::messages::{produce_request, ProduceRequest};
        let partitions = (0..3)
            .map(|index| {
                produce_request::PartitionProduceData::default()
                    .with_index(index)
                    .with_records(Some(Bytes::from(vec![index as u8; 100])))
            })
            .collect();
        let request = ProduceRequest::default().with_topic_data(vec![
            produce_request::TopicProduceData::default().with_partition_data(partitions),
        ]);
        let frame = request_frame(ApiKey::Produce, 9, RequestKind::Produce(request));
        let frame_range = frame.as_ptr_range();
        let Decoded::Request(decoded) = decode_request(frame) else {
            panic!()
        };
        let RequestKind::Produce(produce) = decoded.request else {
            panic!()
        };
        for (index, partition) in produce.topic_data[0].partition_data.iter().enumerate() {
            let records = partition.records.as_ref().unwrap();
            assert_eq!(&records[..], &[index as u8; 100][..]);
            let range = records.as_ptr_range();
            assert!(frame_range.start <= range.start && range.end <= frame_range.end);
        }
    }
}
