//! Bad input gets the matching Kafka error or a closed connection, never a crash or a partial
//! write, and after each one a fresh connection still works.

mod broker_support;

use broker_support::*;
use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::*;
use karst::protocol::batch::testing::simple_batch;

/// A fresh connection still gets ApiVersions and Metadata answers.
fn still_serving(node: &NodeProcess) {
    let mut client = node.connect();
    assert_eq!(client.api_versions(3).error_code, 0);
    assert_eq!(client.metadata(12, None).brokers.len(), 1);
}

fn raw_request(api_key: i16, version: i16, body: &[u8]) -> Vec<u8> {
    let mut frame = BytesMut::new();
    frame.put_i16(api_key);
    frame.put_i16(version);
    frame.put_i32(99);
    frame.put_i16(-1); // null client id
    frame.extend_from_slice(body);
    let mut out = (frame.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&frame);
    out
}

#[test]
fn malformed_frames_close_the_connection() {
    let node = NodeProcess::start(&[]);
    // A Metadata v1 body that ends in the middle of an array.
    let mut client = node.connect();
    client.write_raw(&raw_request(ApiKey::Metadata as i16, 1, &[0, 0, 0, 5, 0]));
    assert!(client.is_closed());
    still_serving(&node);
    // A frame too short to hold a request header.
    let mut client = node.connect();
    client.write_raw(&[0, 0, 0, 3, 1, 2, 3]);
    assert!(client.is_closed());
    still_serving(&node);
    // A negative size.
    let mut client = node.connect();
    client.write_raw(&(-5i32).to_be_bytes());
    assert!(client.is_closed());
    still_serving(&node);
}

#[test]
fn unknown_api_key_closes_the_connection() {
    let node = NodeProcess::start(&[]);
    let mut client = node.connect();
    client.write_raw(&raw_request(31_000, 0, &[]));
    assert!(client.is_closed());
    still_serving(&node);
}

/// KIP-511: ApiVersions at an unknown version gets UNSUPPORTED_VERSION (35) in a v0 response;
/// any other API at a version not advertised closes the connection.
#[test]
fn unsupported_versions() {
    let node = NodeProcess::start(&[]);
    let mut client = node.connect();
    client.write_raw(&raw_request(ApiKey::ApiVersions as i16, 77, &[]));
    let frame = client.read_frame().expect("an answer");
    let (correlation_id, response) =
        karst::protocol::codec::decode_response(ApiKey::ApiVersions, 0, frame).unwrap();
    assert_eq!(correlation_id, 99);
    let ResponseKind::ApiVersions(response) = response else {
        panic!()
    };
    assert_eq!(response.error_code, 35);
    assert!(!response.api_keys.is_empty());
    // The connection stays usable.
    assert_eq!(client.api_versions(3).error_code, 0);

    let mut client = node.connect();
    client.write_raw(&raw_request(ApiKey::Produce as i16, 1, &[]));
    assert!(client.is_closed());
    still_serving(&node);
}

/// A request over socket.request.max.bytes closes the connection before it is read.
#[test]
fn request_over_socket_request_max_bytes_closes() {
    let node = NodeProcess::start(&["socket.request.max.bytes=4096"]);
    let mut client = node.connect();
    assert_eq!(client.create_topic("big", 1), 0);
    let correlation_id = client.send(
        ApiKey::Produce,
        9,
        RequestKind::Produce(ProduceRequest::default().with_acks(1).with_topic_data(vec![
                produce_request::TopicProduceData::default()
                    .with_name(TopicName(
                        kafka_protocol::protocol::StrBytes::from_static_str("big"),
                    ))
                    .with_partition_data(vec![produce_request::PartitionProduceData::default()
                        .with_records(Some(bytes::Bytes::from(vec![0u8; 8192])))]),
            ])),
    );
    let _ = correlation_id;
    assert!(client.is_closed());
    still_serving(&node);
}

/// A batch whose CRC does not match is CORRUPT_MESSAGE (2) and nothing is written, even when a
/// valid batch precedes it in the same request.
#[test]
fn corrupt_batch_is_refused_and_nothing_written() {
    let node = NodeProcess::start(&[]);
    let mut client = node.connect();
    assert_eq!(client.create_topic("crc", 1), 0);
    let mut corrupt = simple_batch(2, 0);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    assert_eq!(client.produce(9, 1, "crc", 0, corrupt.clone()).0, 2);
    let mut both = simple_batch(1, 0);
    both.extend_from_slice(&corrupt);
    assert_eq!(client.produce(9, 1, "crc", 0, both).0, 2);
    // Truncated batch.
    let valid = simple_batch(2, 0);
    assert_eq!(
        client
            .produce(9, 1, "crc", 0, valid[..valid.len() - 3].to_vec())
            .0,
        2
    );
    assert_eq!(client.list_offset("crc", 0, -1), (0, 0, -1));
    assert_eq!(client.produce(9, 1, "crc", 0, valid).0, 0);
    still_serving(&node);
}

/// A batch over message.max.bytes (or the topic's max.message.bytes) is MESSAGE_TOO_LARGE (10).
#[test]
fn oversized_batch_is_message_too_large() {
    let node = NodeProcess::start(&["message.max.bytes=2000"]);
    let mut client = node.connect();
    assert_eq!(client.create_topic("size", 1), 0);
    assert_eq!(
        client.create_topic_with("bigger", 1, &[("max.message.bytes", "100000")]),
        0
    );
    let records: Vec<_> = (0..1)
        .map(|_| karst::protocol::batch::testing::TestRecord {
            value: Some(vec![1u8; 5000]),
            ..Default::default()
        })
        .collect();
    let large = karst::protocol::batch::testing::build_batch(&records, 0, -1, -1, -1);
    assert_eq!(client.produce(9, 1, "size", 0, large.clone()).0, 10);
    assert_eq!(client.list_offset("size", 0, -1), (0, 0, -1));
    assert_eq!(client.produce(9, 1, "bigger", 0, large).0, 0);
    still_serving(&node);
}

/// Kafka's topic name rules: not empty, not "." or "..", at most 249 characters, only
/// [a-zA-Z0-9._-], no collision once '.' and '_' are treated alike, internal names reserved.
#[test]
fn bad_topic_names_are_refused() {
    let node = NodeProcess::start(&[]);
    let mut client = node.connect();
    let long = "x".repeat(250);
    for name in [
        "",
        ".",
        "..",
        long.as_str(),
        "a b",
        "naïve",
        "a/b",
        "__consumer_offsets",
    ] {
        assert_eq!(client.create_topic(name, 1), 17, "{name:?}");
    }
    assert_eq!(client.create_topic(&"x".repeat(249), 1), 0);
    assert_eq!(client.create_topic("a.b", 1), 0);
    assert_eq!(client.create_topic("a_b", 1), 17);
    assert_eq!(client.create_topic("a.b", 1), 36, "TOPIC_ALREADY_EXISTS");
    assert_eq!(client.create_topic("zero", 0), 37, "INVALID_PARTITIONS");
    let metadata = client.metadata(12, Some(&["bad name"]));
    assert_eq!(metadata.topics[0].error_code, 17);
    still_serving(&node);
}

/// A request declaring an enormous array (i32::MAX topics in 14 bytes) must be refused as
/// malformed, not allocated: before the kafka-protocol patch this aborted the node.
#[test]
fn huge_array_count_is_refused_not_fatal() {
    let node = NodeProcess::start(&[]);
    for (version, count) in [
        (1i16, i32::MAX.to_be_bytes().to_vec()),
        (9, vec![0xff, 0xff, 0xff, 0xff, 0x07]),
    ] {
        let mut client = node.connect();
        // v9 is flexible: the header has a tagged-field section and the array is compact.
        let mut body = Vec::new();
        if version >= 9 {
            body.push(0); // header tagged fields
        }
        body.extend_from_slice(&count);
        client.write_raw(&raw_request(ApiKey::Metadata as i16, version, &body));
        assert!(client.is_closed());
        still_serving(&node);
    }
}
