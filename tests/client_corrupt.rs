//! Karst's consumer against a real `karst node` whose stored batch rotted while it was down:
//! the broker answers CORRUPT_MESSAGE for that partition (Kafka's
//! ReplicaManager.readFromLocalLog), the consumer reports it as a corrupt record for that
//! partition at that offset instead of retrying for ever (Kafka's consumer throws
//! "Encountered corrupt message when fetching offset ..."), and an application that seeks
//! past it reads the rest; the other partition is unaffected.

mod client_support;

use std::time::Duration;

use karst::client::{
    Admin, ClientConfig, ClientError, Consumer, ConsumerConfig, NewTopic, OffsetReset, Producer,
    ProducerConfig, ProducerRecord, TopicPartition,
};

use client_support::Node;

const NODE_SETTINGS: [&str; 4] = [
    "--set",
    "log.segment.bytes=4096",
    "--set",
    "log.index.interval.bytes=256",
];
const RECORDS: i64 = 30;

/// (position, base offset) of every batch of a segment file (v2 header: base offset, length).
fn batches(bytes: &[u8]) -> Vec<(usize, i64)> {
    let mut out = Vec::new();
    let mut position = 0;
    while position + 12 <= bytes.len() {
        let base = i64::from_be_bytes(bytes[position..position + 8].try_into().unwrap());
        let length = i32::from_be_bytes(bytes[position + 8..position + 12].try_into().unwrap());
        out.push((position, base));
        position += 12 + length as usize;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotted_batch_is_reported_as_a_corrupt_record_and_can_be_skipped() {
    let mut node = Node::start(&NODE_SETTINGS);
    let bootstrap = node.bootstrap();
    let admin = Admin::new(ClientConfig::new(&bootstrap)).await.unwrap();
    let created = admin
        .create_topics(&[NewTopic::new("c", 2, 1)], false)
        .await
        .unwrap();
    created[0].1.clone().unwrap();
    let producer = Producer::new(ProducerConfig {
        client: ClientConfig::new(&bootstrap),
        linger_ms: 0,
        ..ProducerConfig::default()
    })
    .await
    .unwrap();
    // One record per batch: each send is awaited before the next.
    for n in 0..RECORDS {
        for partition in 0..2 {
            let record = ProducerRecord {
                partition: Some(partition),
                ..ProducerRecord::new("c", format!("p{partition}-{n:03}"))
            };
            let report = producer.send(record).await.unwrap().await.unwrap();
            assert_eq!(report.offset, n);
        }
    }
    drop(producer);
    // The node stops cleanly; meanwhile the base offset of partition 0's third batch flips
    // (bytes the batch CRC does not cover). The restart trusts that part of the segment.
    node.stop();
    let path = node.data_dir.join("c-0").join("00000000000000000000.log");
    let mut bytes = std::fs::read(&path).unwrap();
    let (position, damaged) = batches(&bytes)[2];
    assert_eq!(damaged, 2);
    for byte in &mut bytes[position..position + 8] {
        *byte ^= 0xFF;
    }
    std::fs::write(&path, &bytes).unwrap();
    node.restart(&NODE_SETTINGS);

    let mut consumer = Consumer::new(ConsumerConfig {
        client: ClientConfig {
            allow_auto_topic_creation: false,
            ..ClientConfig::new(&node.bootstrap())
        },
        auto_offset_reset: OffsetReset::Earliest,
        fetch_max_wait_ms: 100,
        ..ConsumerConfig::default()
    })
    .await
    .unwrap();
    consumer.assign_topic("c").await.unwrap();
    let mut read: [Vec<i64>; 2] = [Vec::new(), Vec::new()];
    let mut corrupt_at = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let done = |read: &[Vec<i64>; 2]| read.iter().all(|r| r.last() == Some(&(RECORDS - 1)));
    while !done(&read) && tokio::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)).await {
            Ok(records) => {
                for record in records {
                    read[record.partition as usize].push(record.offset);
                }
            }
            Err(ClientError::CorruptRecord {
                topic,
                partition,
                offset,
                ..
            }) => {
                assert_eq!((topic.as_str(), partition), ("c", 0));
                corrupt_at.push(offset);
                // What an application does: skip the record it cannot read.
                consumer
                    .seek(&TopicPartition::new("c", 0), offset + 1)
                    .unwrap();
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert!(done(&read), "read {read:?}, corrupt at {corrupt_at:?}");
    assert_eq!(read[1], (0..RECORDS).collect::<Vec<_>>());
    // Partition 0: everything but a hole that starts at the damaged batch and ends at the
    // next index entry at the latest; every offset of the hole was reported, none silently
    // skipped.
    assert_eq!(corrupt_at.first(), Some(&2));
    let mut expected: Vec<i64> = (0..RECORDS).filter(|o| !corrupt_at.contains(o)).collect();
    expected.dedup();
    assert_eq!(read[0], expected);
    assert!(corrupt_at.len() < 10, "hole {corrupt_at:?}");
}
