//! Karst's Rust client against a real `karst node` process: produce/consume round trips with
//! every codec, Java-compatible key partitioning, idempotence under injected connection loss
//! (KIP-98), failover across a node restart, and the admin API.

mod client_support;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use karst::client::partitioner::partition_for_key;
use karst::client::{
    Acks, Admin, ClientConfig, Compression, Consumer, ConsumerConfig, ConsumerRecord, Header,
    NewTopic, OffsetReset, Producer, ProducerConfig, ProducerRecord, TopicPartition,
};

use client_support::{ChaosProxy, Node};

/// Every test finishes well within this, or fails.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

fn producer_config(bootstrap: &str) -> ProducerConfig {
    ProducerConfig {
        client: ClientConfig {
            request_timeout_ms: 5_000,
            ..ClientConfig::new(bootstrap)
        },
        linger_ms: 2,
        ..ProducerConfig::default()
    }
}

fn consumer_config(bootstrap: &str) -> ConsumerConfig {
    ConsumerConfig {
        client: ClientConfig {
            allow_auto_topic_creation: false,
            ..ClientConfig::new(bootstrap)
        },
        auto_offset_reset: OffsetReset::Earliest,
        fetch_max_wait_ms: 100,
        ..ConsumerConfig::default()
    }
}

async fn create_topic(bootstrap: &str, name: &str, partitions: i32) {
    let admin = Admin::new(ClientConfig::new(bootstrap)).await.unwrap();
    let results = admin
        .create_topics(&[NewTopic::new(name, partitions, 1)], false)
        .await
        .unwrap();
    results[0].1.clone().unwrap();
}

/// Reads every partition of `topic` from the beginning until `expected` records arrived.
async fn read_all(bootstrap: &str, topic: &str, expected: usize) -> Vec<ConsumerRecord> {
    let mut consumer = Consumer::new(consumer_config(bootstrap)).await.unwrap();
    consumer.assign_topic(topic).await.unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while out.len() < expected && tokio::time::Instant::now() < deadline {
        out.extend(consumer.poll(Duration::from_millis(200)).await.unwrap());
    }
    // Nothing beyond what was expected (a duplicate would show up here).
    out.extend(consumer.poll(Duration::from_millis(300)).await.unwrap());
    out
}

/// Reads `topic` from the beginning until at least `at_least` records arrived and then a poll
/// of 500 ms brings nothing more (bounded by a 20 s deadline).
async fn read_until_quiet(bootstrap: &str, topic: &str, at_least: usize) -> Vec<ConsumerRecord> {
    let mut consumer = Consumer::new(consumer_config(bootstrap)).await.unwrap();
    consumer.assign_topic(topic).await.unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < deadline {
        let wait = if out.len() < at_least { 200 } else { 500 };
        let batch = consumer.poll(Duration::from_millis(wait)).await.unwrap();
        if batch.is_empty() && out.len() >= at_least {
            break;
        }
        out.extend(batch);
    }
    out
}

/// Produce/consume round trip for each codec: every record comes back once, at the offset
/// its delivery report gave, with key, value, headers (duplicates kept) and timestamp.
#[tokio::test]
async fn round_trip_with_each_compression() {
    let node = Node::start(&[]);
    let bootstrap = node.bootstrap();
    tokio::time::timeout(TEST_TIMEOUT, async {
        for (i, compression) in [
            Compression::None,
            Compression::Lz4,
            Compression::Zstd,
            Compression::Gzip,
            Compression::Snappy,
        ]
        .into_iter()
        .enumerate()
        {
            let topic = format!("round-trip-{i}");
            create_topic(&bootstrap, &topic, 3).await;
            let producer = Producer::new(ProducerConfig {
                compression,
                ..producer_config(&bootstrap)
            })
            .await
            .unwrap();
            let mut reports = Vec::new();
            for n in 0..600 {
                let record = ProducerRecord {
                    topic: topic.clone(),
                    partition: None,
                    key: Some(Bytes::from(format!("key-{}", n % 17))),
                    value: Some(Bytes::from(format!("value-{n}-{}", "x".repeat(n % 50)))),
                    headers: vec![Header::new("h", format!("{n}")), Header::new("h", "again")],
                    timestamp: Some(1_700_000_000_000 + n as i64),
                };
                reports.push(producer.send(record).await.unwrap());
            }
            producer.flush().await;
            let mut written = BTreeMap::new();
            for (n, report) in reports.into_iter().enumerate() {
                let md = report.await.unwrap();
                assert!(md.offset >= 0, "acks=all gives offsets");
                written.insert((md.partition, md.offset), n);
            }
            let records = read_all(&bootstrap, &topic, 600).await;
            assert_eq!(
                records.len(),
                600,
                "{compression:?}: every record exactly once"
            );
            for r in &records {
                let n = written[&(r.partition, r.offset)];
                assert_eq!(r.key.as_deref(), Some(format!("key-{}", n % 17).as_bytes()));
                assert_eq!(
                    r.value.as_deref(),
                    Some(format!("value-{n}-{}", "x".repeat(n % 50)).as_bytes())
                );
                assert_eq!(r.headers.len(), 2);
                assert_eq!(
                    r.headers[0].value.as_deref(),
                    Some(format!("{n}").as_bytes())
                );
                assert_eq!(r.timestamp, 1_700_000_000_000 + n as i64);
            }
            // Per-partition order is send order.
            let mut last: BTreeMap<i32, usize> = BTreeMap::new();
            for r in &records {
                let n = written[&(r.partition, r.offset)];
                if let Some(prev) = last.insert(r.partition, n) {
                    assert!(prev < n, "order within partition {}", r.partition);
                }
            }
        }
    })
    .await
    .expect("test timed out");
}

/// Keys land where Kafka's Java client puts them: toPositive(murmur2(key)) % partitions,
/// using hashes from Kafka's UtilsTest.testMurmur2.
#[tokio::test]
async fn keyed_partitioning_matches_java_client_table() {
    let node = Node::start(&[]);
    let bootstrap = node.bootstrap();
    tokio::time::timeout(TEST_TIMEOUT, async {
        create_topic(&bootstrap, "keyed", 10).await;
        let producer = Producer::new(producer_config(&bootstrap)).await.unwrap();
        // (key, Java murmur2 hash) -> expected partition of 10.
        let table: &[(&str, i32)] = &[
            ("21", -973932308),
            ("foobar", -790332482),
            ("a-little-bit-long-string", -985981536),
            ("a-little-bit-longer-string", -1486304829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            ("abc", 479470107),
        ];
        for (key, java_hash) in table {
            let expected = (java_hash & 0x7fff_ffff) % 10;
            assert_eq!(partition_for_key(key.as_bytes(), 10), expected);
            let md = producer
                .send(ProducerRecord::new("keyed", *key).with_key(*key))
                .await
                .unwrap()
                .await
                .unwrap();
            assert_eq!(md.partition, expected, "key {key}");
        }
        let records = read_all(&bootstrap, "keyed", table.len()).await;
        for r in records {
            let key = r.key.clone().unwrap();
            assert_eq!(r.partition, partition_for_key(&key, 10));
        }
    })
    .await
    .expect("test timed out");
}

/// Produces `count` values through a proxy that drops the connection after forwarding every
/// 7th Produce request (the broker executes it, the client never hears back), then returns
/// how many times each value was read back and how many drops happened.
async fn produce_through_chaos(
    idempotence: bool,
    count: usize,
) -> (BTreeMap<String, usize>, usize) {
    let (listener, proxy_addr) = ChaosProxy::bind().await;
    let advertised = proxy_addr.to_string();
    let node = Node::start(&["--advertised-listeners", &advertised]);
    let proxy = ChaosProxy::start(listener, node.addr, 7, 6);
    let bootstrap = proxy_addr.to_string();
    let topic = "chaos";
    create_topic(&bootstrap, topic, 2).await;
    let producer = Producer::new(ProducerConfig {
        enable_idempotence: Some(idempotence),
        acks: Acks::All,
        linger_ms: 1,
        batch_size: 512,
        client: ClientConfig {
            retry_backoff_ms: 20,
            ..producer_config(&bootstrap).client
        },
        ..producer_config(&bootstrap)
    })
    .await
    .unwrap();
    assert_eq!(producer.producer_id().is_some(), idempotence);
    let mut reports = Vec::new();
    for n in 0..count {
        let record = ProducerRecord::new(topic, format!("v{n:05}")).with_key(format!("k{}", n % 4));
        reports.push(producer.send(record).await.unwrap());
        if n % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    producer.flush().await;
    for report in reports {
        report
            .await
            .expect("every record is acknowledged after retries");
    }
    let drops = proxy.drops.load(std::sync::atomic::Ordering::SeqCst);
    // Without idempotence the log holds more than `count` records (the duplicates), so read
    // until the partitions go quiet rather than stopping at `count` records.
    let records = read_until_quiet(&bootstrap, topic, count).await;
    drop(node);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut last: BTreeMap<i32, String> = BTreeMap::new();
    for r in &records {
        let v = String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap();
        *seen.entry(v.clone()).or_default() += 1;
        if idempotence {
            if let Some(prev) = last.insert(r.partition, v.clone()) {
                assert!(prev < v, "partition {} order: {prev} then {v}", r.partition);
            }
        }
    }
    (seen, drops)
}

/// KIP-98: with idempotence, a batch resent after its connection died is written once, and
/// partition order holds. Without idempotence the same faults do duplicate records, which
/// shows the injection works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotence_prevents_duplicates_under_injected_retries() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let count = 1500;
        let (seen, drops) = produce_through_chaos(true, count).await;
        assert!(drops >= 3, "the proxy cut {drops} connections");
        assert_eq!(seen.len(), count, "every value present");
        let duplicated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            duplicated.is_empty(),
            "duplicates with idempotence: {duplicated:?}"
        );

        let (seen, drops) = produce_through_chaos(false, count).await;
        assert!(drops >= 3);
        assert_eq!(seen.len(), count, "every value present");
        let duplicates: usize = seen.values().map(|n| n - 1).sum();
        assert!(
            duplicates > 0,
            "without idempotence the retried batches should have been written twice"
        );
    })
    .await
    .expect("test timed out");
}

/// A node restart in the middle of producing: the producer retries through the outage
/// (lost connection, refused connects, metadata refresh) and every acknowledged record is
/// readable afterwards, once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_survives_a_node_restart() {
    let mut node = Node::start(&[]);
    let bootstrap = node.bootstrap();
    tokio::time::timeout(TEST_TIMEOUT, async {
        create_topic(&bootstrap, "restart", 1).await;
        let producer = Producer::new(ProducerConfig {
            client: ClientConfig {
                retry_backoff_ms: 50,
                connection_setup_timeout_ms: 1_000,
                ..producer_config(&bootstrap).client
            },
            ..producer_config(&bootstrap)
        })
        .await
        .unwrap();
        let mut reports = Vec::new();
        for n in 0..300 {
            reports.push(
                producer
                    .send(ProducerRecord::new("restart", format!("before-{n:04}")))
                    .await
                    .unwrap(),
            );
        }
        producer.flush().await;
        // Restart (same port, same data), then keep producing with the same producer.
        let restarting = tokio::task::spawn_blocking(move || {
            node.restart(&[]);
            node
        });
        for n in 0..300 {
            reports.push(
                producer
                    .send(ProducerRecord::new("restart", format!("during-{n:04}")))
                    .await
                    .unwrap(),
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let node = restarting.await.unwrap();
        producer.flush().await;
        let mut acked = Vec::new();
        for report in reports {
            let md = report.await.expect("acknowledged after the restart");
            acked.push(md.offset);
        }
        let records = read_all(&node.bootstrap(), "restart", 600).await;
        let values: Vec<String> = records
            .iter()
            .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
            .collect();
        let mut expected: Vec<String> = (0..300).map(|n| format!("before-{n:04}")).collect();
        expected.extend((0..300).map(|n| format!("during-{n:04}")));
        assert_eq!(values, expected, "all records, once, in order");
        drop(node);
    })
    .await
    .expect("test timed out");
}

/// Admin: create (with a config), list, describe, describe/alter configs, create partitions,
/// delete, describe cluster; offsets from ListOffsets.
#[tokio::test]
async fn admin_topic_lifecycle() {
    let node = Node::start(&[]);
    let bootstrap = node.bootstrap();
    tokio::time::timeout(TEST_TIMEOUT, async {
        let admin = Admin::new(ClientConfig::new(&bootstrap)).await.unwrap();
        let mut topic = NewTopic::new("admin-a", 2, 1);
        topic.configs.push(("retention.ms".into(), "123456".into()));
        let r = admin
            .create_topics(&[topic, NewTopic::new("admin-b", 1, 1)], false)
            .await
            .unwrap();
        assert!(r.iter().all(|(_, r)| r.is_ok()), "{r:?}");
        // TOPIC_ALREADY_EXISTS (36).
        let again = admin
            .create_topics(&[NewTopic::new("admin-a", 2, 1)], false)
            .await
            .unwrap();
        assert_eq!(again[0].1.clone().unwrap_err().code(), Some(36));
        let names = admin.list_topics(false).await.unwrap();
        assert!(names.contains(&"admin-a".to_string()) && names.contains(&"admin-b".to_string()));
        let described = admin.describe_topics(&["admin-a".into()]).await.unwrap();
        let d = described[0].1.clone().unwrap();
        assert_eq!(d.partitions.len(), 2);
        assert!(d
            .partitions
            .iter()
            .all(|p| p.leader >= 0 && p.isr.contains(&p.leader)));
        let configs = admin.describe_topic_configs("admin-a").await.unwrap();
        let retention = configs.iter().find(|c| c.name == "retention.ms").unwrap();
        assert_eq!(retention.value.as_deref(), Some("123456"));
        admin
            .alter_topic_configs("admin-a", &[("retention.ms".into(), "999".into())], &[])
            .await
            .unwrap();
        let configs = admin.describe_topic_configs("admin-a").await.unwrap();
        let retention = configs.iter().find(|c| c.name == "retention.ms").unwrap();
        assert_eq!(retention.value.as_deref(), Some("999"));
        admin.create_partitions("admin-a", 4).await.unwrap();
        let d = admin.describe_topics(&["admin-a".into()]).await.unwrap()[0]
            .1
            .clone()
            .unwrap();
        assert_eq!(d.partitions.len(), 4);
        let offsets = admin
            .partition_offsets(&[TopicPartition::new("admin-a", 0)])
            .await;
        assert_eq!(offsets[0].1.clone().unwrap(), (0, 0));
        let (_, controller, brokers) = admin.describe_cluster().await.unwrap();
        assert_eq!(brokers.len(), 1);
        assert!(controller >= 0);
        let deleted = admin.delete_topics(&["admin-b".into()]).await.unwrap();
        assert!(deleted[0].1.is_ok(), "{deleted:?}");
        let names = admin.list_topics(false).await.unwrap();
        assert!(!names.contains(&"admin-b".to_string()));
    })
    .await
    .expect("test timed out");
}

/// Seek by offset and by timestamp, and auto.offset.reset=latest.
#[tokio::test]
async fn consumer_seek_offset_timestamp_and_latest() {
    let node = Node::start(&[]);
    let bootstrap = node.bootstrap();
    tokio::time::timeout(TEST_TIMEOUT, async {
        create_topic(&bootstrap, "seek", 1).await;
        let producer = Producer::new(producer_config(&bootstrap)).await.unwrap();
        for n in 0..100i64 {
            let mut record = ProducerRecord::new("seek", format!("{n}"));
            record.timestamp = Some(1_000_000 + n * 10);
            producer.send(record).await.unwrap();
        }
        producer.flush().await;
        let tp = TopicPartition::new("seek", 0);
        let mut consumer = Consumer::new(consumer_config(&bootstrap)).await.unwrap();
        consumer.assign(vec![tp.clone()]);
        consumer.seek(&tp, 42).unwrap();
        let records = consumer.poll(Duration::from_secs(5)).await.unwrap();
        assert_eq!(records[0].offset, 42);
        assert_eq!(records[0].value.as_deref(), Some(&b"42"[..]));
        // First record with timestamp >= 1_000_505 is offset 51.
        consumer.seek_to_timestamp(&tp, 1_000_505).unwrap();
        let records = consumer.poll(Duration::from_secs(5)).await.unwrap();
        assert_eq!(records[0].offset, 51);
        // latest: nothing old, then a new record.
        let mut latest = Consumer::new(ConsumerConfig {
            auto_offset_reset: OffsetReset::Latest,
            ..consumer_config(&bootstrap)
        })
        .await
        .unwrap();
        latest.assign(vec![tp.clone()]);
        assert!(latest
            .poll(Duration::from_millis(500))
            .await
            .unwrap()
            .is_empty());
        producer
            .send(ProducerRecord::new("seek", "new"))
            .await
            .unwrap()
            .await
            .unwrap();
        let mut got = Vec::new();
        for _ in 0..20 {
            got.extend(latest.poll(Duration::from_millis(250)).await.unwrap());
            if !got.is_empty() {
                break;
            }
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].offset, 100);
    })
    .await
    .expect("test timed out");
}

/// delivery.timeout.ms bounds how long a record can wait: with the node gone, sends fail
/// with a deadline error instead of hanging (Kafka KIP-91).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_fail_after_delivery_timeout_when_the_node_is_gone() {
    let mut node = Node::start(&[]);
    let bootstrap = node.bootstrap();
    tokio::time::timeout(TEST_TIMEOUT, async {
        create_topic(&bootstrap, "gone", 1).await;
        let producer = Producer::new(ProducerConfig {
            delivery_timeout_ms: 1_500,
            client: ClientConfig {
                retry_backoff_ms: 50,
                connection_setup_timeout_ms: 500,
                ..producer_config(&bootstrap).client
            },
            ..producer_config(&bootstrap)
        })
        .await
        .unwrap();
        producer
            .send(ProducerRecord::new("gone", "first"))
            .await
            .unwrap()
            .await
            .unwrap();
        node.stop();
        let started = tokio::time::Instant::now();
        let report = producer
            .send(ProducerRecord::new("gone", "second"))
            .await
            .unwrap()
            .await;
        assert!(report.is_err(), "{report:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
    })
    .await
    .expect("test timed out");
}

/// `flush` returns only after every delivery report was handed out: callbacks run on other
/// worker threads, and an earlier version let `flush` return between the bookkeeping and the
/// callbacks (karst perf then undercounted acknowledged records).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_returns_after_every_delivery_report() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let node = Node::start(&[]);
    let bootstrap = node.bootstrap();
    tokio::time::timeout(TEST_TIMEOUT, async {
        create_topic(&bootstrap, "flush", 6).await;
        let producer = Producer::new(ProducerConfig {
            acks: Acks::Leader,
            ..producer_config(&bootstrap)
        })
        .await
        .unwrap();
        let payload = Bytes::from(vec![b'x'; 1000]);
        for round in 0..5 {
            let reported = Arc::new(AtomicUsize::new(0));
            let count = 20_000;
            for _ in 0..count {
                let reported = reported.clone();
                let record = ProducerRecord {
                    topic: "flush".into(),
                    value: Some(payload.clone()),
                    ..ProducerRecord::default()
                };
                producer
                    .send_with_callback(
                        record,
                        Box::new(move |r| {
                            r.unwrap();
                            // A slow callback widens the window the old race needed.
                            std::thread::sleep(Duration::from_micros(20));
                            reported.fetch_add(1, Ordering::SeqCst);
                        }),
                    )
                    .await
                    .unwrap();
            }
            producer.flush().await;
            assert_eq!(reported.load(Ordering::SeqCst), count, "round {round}");
        }
    })
    .await
    .expect("test timed out");
}

/// acks=0 gets no response (delivery reports say offset -1) and acks=1 reports offsets;
/// both write every record.
#[tokio::test]
async fn acks_zero_and_one() {
    let node = Node::start(&[]);
    let bootstrap = node.bootstrap();
    tokio::time::timeout(TEST_TIMEOUT, async {
        for (topic, acks) in [("acks0", Acks::None), ("acks1", Acks::Leader)] {
            create_topic(&bootstrap, topic, 2).await;
            let producer = Producer::new(ProducerConfig {
                acks,
                ..producer_config(&bootstrap)
            })
            .await
            .unwrap();
            assert!(
                producer.producer_id().is_none(),
                "idempotence needs acks=all"
            );
            let mut reports = Vec::new();
            for n in 0..200 {
                reports.push(
                    producer
                        .send(ProducerRecord::new(topic, format!("{n}")))
                        .await
                        .unwrap(),
                );
            }
            producer.flush().await;
            for report in reports {
                let md = report.await.unwrap();
                match acks {
                    Acks::None => assert_eq!(md.offset, -1),
                    _ => assert!(md.offset >= 0),
                }
            }
            let records = read_all(&bootstrap, topic, 200).await;
            assert_eq!(records.len(), 200, "{acks:?}");
        }
    })
    .await
    .expect("test timed out");
}
