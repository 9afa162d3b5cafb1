//! A stored batch rotted below the recovery point: Fetch answers CORRUPT_MESSAGE for that
//! partition and serves the others, as Kafka's ReplicaManager.readFromLocalLog maps a
//! CorruptRecordException to CORRUPT_MESSAGE (error 2) per partition.

use super::*;
use crate::protocol::batch::{self, BatchHeader};

/// A fetch of partitions 0 and 1 of `topic` at the given offsets.
fn fetch_two(topic: &str, offsets: [i64; 2], max_wait_ms: i32) -> RequestKind {
    RequestKind::Fetch(
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![fetch_request::FetchTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(
                    offsets
                        .iter()
                        .enumerate()
                        .map(|(partition, offset)| {
                            fetch_request::FetchPartition::default()
                                .with_partition(partition as i32)
                                .with_fetch_offset(*offset)
                                .with_partition_max_bytes(1 << 20)
                        })
                        .collect(),
                )]),
    )
}

fn batches_of(bytes: &[u8]) -> Vec<(usize, BatchHeader)> {
    batch::iter_validated(bytes).map(|r| r.unwrap()).collect()
}

fn open(disk: &Arc<SimDisk>) -> Harness {
    let mut config = NodeConfig::default();
    for (key, value) in [
        ("log.segment.bytes", "1024"),
        ("log.index.interval.bytes", "128"),
    ] {
        config.set(key, value).unwrap();
    }
    Harness::open(disk, config, NOW)
}

/// Kafka's fetch path per partition: a log read that throws CorruptRecordException becomes
/// CORRUPT_MESSAGE for that partition only (ReplicaManager.readFromLocalLog); the rest of the
/// response is served. Before the fix the damaged partition answered no records and no error
/// below its high watermark, for ever (simulator, node workload, seed 1085).
#[test]
fn fetch_answers_corrupt_message_for_a_rotted_batch_and_serves_other_partitions() {
    let disk = Arc::new(SimDisk::new(7));
    let mut harness = open(&disk);
    harness.create_topic("c", 2);
    for i in 0..30 {
        for partition in 0..2 {
            let (_, effects) =
                harness.request(NOW, 9, produce("c", partition, 1, simple_batch(3, i * 3)));
            let [Seen::Respond(_, _, response), ..] = effects.as_slice() else {
                panic!("{effects:?}")
            };
            assert_eq!(response, &produce_response("c", partition, 0, i * 3));
        }
    }
    harness.broker.close().unwrap();
    // While the node is down, the base offset of partition 0's third batch flips (bytes the
    // batch CRC does not cover); the closed segment is trusted on restart, as in Kafka.
    let path = "c-0/00000000000000000000.log";
    let batches = batches_of(&disk.contents(path).unwrap());
    let (position, damaged) = batches[2];
    assert!(disk.corrupt(path, position as u64..position as u64 + 8));
    let mut harness = open(&disk);

    let (_, effects) = harness.request(NOW, 12, fetch_two("c", [damaged.base_offset, 0], 500));
    let [Seen::Respond(_, _, ResponseKind::Fetch(response))] = effects.as_slice() else {
        panic!("answered at once, not parked: {effects:?}")
    };
    let partitions = &response.responses[0].partitions;
    assert_eq!(partitions[0].error_code, error::CORRUPT_MESSAGE);
    // Empty, never null (librdkafka rejects null records); the offsets unknown, as Kafka's
    // ReplicaManager answers a failed read (high watermark, LSO and log start -1).
    assert_eq!(partitions[0].records, Some(Bytes::new()));
    assert_eq!(
        (
            partitions[0].high_watermark,
            partitions[0].last_stable_offset,
            partitions[0].log_start_offset
        ),
        (-1, -1, -1)
    );
    assert_eq!(partitions[1].error_code, 0);
    let served = batches_of(partitions[1].records.as_ref().unwrap());
    assert_eq!(served[0].1.base_offset, 0);

    // Before the damage partition 0 is served, up to the damaged batch and not beyond.
    let (_, effects) = harness.request(NOW, 12, fetch("c", 0, 500, 1));
    let [Seen::Respond(_, _, response)] = effects.as_slice() else {
        panic!("{effects:?}")
    };
    let (code, high_watermark, records) = fetched(response);
    assert_eq!((code, high_watermark), (0, 90));
    assert_eq!(records.len(), position);

    // ListOffsets by a timestamp the damaged batch holds (timestamps equal offsets here):
    // CORRUPT_MESSAGE for partition 0, the offset for partition 1 (Kafka's ListOffsets maps
    // the CorruptRecordException the same way).
    let request = RequestKind::ListOffsets(ListOffsetsRequest::default().with_topics(vec![
        list_offsets_request::ListOffsetsTopic::default()
            .with_name(topic_name("c"))
            .with_partitions(
                (0..2)
                    .map(|partition| {
                        list_offsets_request::ListOffsetsPartition::default()
                            .with_partition_index(partition)
                            .with_timestamp(damaged.base_offset + 1)
                    })
                    .collect(),
            ),
    ]));
    let (_, effects) = harness.request(NOW, 7, request);
    let [Seen::Respond(_, _, ResponseKind::ListOffsets(response))] = effects.as_slice() else {
        panic!("{effects:?}")
    };
    let partitions = &response.topics[0].partitions;
    assert_eq!(partitions[0].error_code, error::CORRUPT_MESSAGE);
    assert_eq!(
        (partitions[1].error_code, partitions[1].offset),
        (0, damaged.base_offset + 1)
    );

    // At the high watermark there is simply nothing yet: the fetch long-polls (parks).
    let (_, effects) = harness.request(NOW, 12, fetch_two("c", [90, 90], 500));
    assert_eq!(effects, vec![]);
}
