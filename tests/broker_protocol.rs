//! The `karst` binary serves the Kafka protocol as librdkafka and kafka-python use it:
//! ApiVersions, CreateTopics, Metadata with topic ids, Produce, Fetch (by name and by topic id),
//! ListOffsets, and idempotent producers. Raw protocol over TCP, kafka-protocol encoders.

mod broker_support;

use broker_support::*;
use kafka_protocol::messages::*;
use karst::protocol::batch::testing::{build_batch, simple_batch, TestRecord};

/// ApiVersions v3 (librdkafka) and v4 (kafka-python) list what the node implements, at the
/// versions those clients send.
#[test]
fn api_versions_advertises_the_client_versions() {
    let node = NodeProcess::start(&[]);
    let mut client = node.connect();
    for version in [0, 3, 4] {
        let response = client.api_versions(version);
        assert_eq!(response.error_code, 0);
        let range = |key: ApiKey| {
            response
                .api_keys
                .iter()
                .find(|api| api.api_key == key as i16)
                .map(|api| (api.min_version, api.max_version))
                .unwrap_or_else(|| panic!("{key:?} not advertised"))
        };
        assert!(range(ApiKey::Produce).1 >= 10);
        assert!(range(ApiKey::Fetch).1 >= 16);
        assert!(range(ApiKey::Metadata).1 >= 12);
        assert!(range(ApiKey::ListOffsets).1 >= 7);
        assert!(range(ApiKey::CreateTopics).1 >= 4);
    }
}

/// Produce (v9 and v10) then Fetch (v12 by name, v16 by topic id) returns the batches exactly
/// as produced, with broker-assigned offsets; an empty partition carries empty (not null)
/// records; ListOffsets answers earliest, latest, by timestamp and max timestamp (KIP-734).
#[test]
fn produce_fetch_and_list_offsets_round_trip() {
    let node = NodeProcess::start(&[]);
    let mut client = node.connect();
    assert_eq!(client.create_topic("orders", 3), 0);
    let id = topic_id(&mut client, "orders");
    assert!(!id.is_nil());

    let first = simple_batch(3, 1_000);
    let records = vec![TestRecord {
        key: Some(b"k".to_vec()),
        value: Some(vec![7u8; 1024]),
        headers: vec![("h".to_string(), Some(b"v".to_vec()))],
    }];
    let second = build_batch(&records, 5_000, -1, -1, -1);
    assert_eq!(client.produce(10, 1, "orders", 1, first.clone()), (0, 0));
    assert_eq!(client.produce(9, -1, "orders", 1, second.clone()), (0, 3));

    for (version, by_id) in [(12, uuid::Uuid::nil()), (16, id)] {
        let data = client.fetch(version, "orders", by_id, 1, 0, 0);
        assert_eq!(data.error_code, 0);
        assert_eq!(data.high_watermark, 4);
        let got = batches(data.records.as_ref().expect("records"));
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], (0, first[8..].to_vec()));
        assert_eq!(got[1], (3, second[8..].to_vec()));
        // From the middle of the first batch: whole batches from the one holding the offset.
        let data = client.fetch(version, "orders", by_id, 1, 3, 0);
        assert_eq!(batches(data.records.as_ref().unwrap()).len(), 1);
        // Empty partition: empty records, not null (librdkafka rejects null).
        let empty = client.fetch(version, "orders", by_id, 0, 0, 0);
        assert_eq!(empty.error_code, 0);
        assert_eq!(empty.records.as_deref(), Some(&[][..]));
        assert_eq!(empty.high_watermark, 0);
    }
    assert_eq!(
        client
            .fetch(12, "orders", uuid::Uuid::nil(), 1, 5, 0)
            .error_code,
        1,
        "OFFSET_OUT_OF_RANGE above the log end"
    );

    assert_eq!(client.list_offset("orders", 1, -2), (0, 0, -1));
    assert_eq!(client.list_offset("orders", 1, -1), (0, 4, -1));
    assert_eq!(client.list_offset("orders", 1, 1_001), (0, 1, 1_001));
    assert_eq!(client.list_offset("orders", 1, 4_000), (0, 3, 5_000));
    assert_eq!(client.list_offset("orders", 1, 9_000), (0, -1, -1));
    assert_eq!(client.list_offset("orders", 1, -3), (0, 3, 5_000));
    assert_eq!(client.list_offset("nope", 0, -1).0, 3);
}

/// Metadata v12 auto-creates a requested topic with num.partitions partitions and topic ids;
/// Metadata v0..v12 all decode.
#[test]
fn metadata_auto_creates_topics_at_every_version() {
    let node = NodeProcess::start(&["num.partitions=4"]);
    let mut client = node.connect();
    let metadata = client.metadata(12, Some(&["auto-topic"]));
    assert_eq!(metadata.topics[0].error_code, 0);
    assert_eq!(metadata.topics[0].partitions.len(), 4);
    assert!(!metadata.topics[0].topic_id.is_nil());
    assert_eq!(metadata.brokers[0].port as u16, node.addr.port());
    for version in 0..=12 {
        let metadata = client.metadata(version, None);
        assert_eq!(metadata.topics.len(), 1, "v{version}");
        assert_eq!(metadata.brokers.len(), 1);
    }
}

/// A long-polling fetch (max.wait.ms) is answered as soon as data arrives, and an idle one
/// after max.wait.ms with empty records.
#[test]
fn fetch_long_polls_until_data_or_max_wait() {
    let node = NodeProcess::start(&[]);
    let mut client = node.connect();
    assert_eq!(client.create_topic("poll", 1), 0);
    let started = std::time::Instant::now();
    let idle = client.fetch(12, "poll", uuid::Uuid::nil(), 0, 0, 300);
    assert!(started.elapsed() >= std::time::Duration::from_millis(250));
    assert_eq!(idle.records.as_deref(), Some(&[][..]));

    let mut waiter = node.connect();
    let fetch = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(10_000)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![fetch_request::FetchTopic::default()
            .with_topic(TopicName(
                kafka_protocol::protocol::StrBytes::from_static_str("poll"),
            ))
            .with_partitions(vec![fetch_request::FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let started = std::time::Instant::now();
    let correlation_id = waiter.send(ApiKey::Fetch, 12, RequestKind::Fetch(fetch));
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(client.produce(10, 1, "poll", 0, simple_batch(2, 0)), (0, 0));
    let ResponseKind::Fetch(response) = waiter.receive(ApiKey::Fetch, 12, correlation_id) else {
        panic!()
    };
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(
        batches(
            response.responses[0].partitions[0]
                .records
                .as_ref()
                .unwrap()
        )
        .len(),
        1
    );
}

/// KIP-98: a retried idempotent batch is acknowledged with its original offset and not written
/// again; a sequence gap is OUT_OF_ORDER_SEQUENCE_NUMBER (45); an old epoch is fenced (47).
#[test]
fn idempotent_retry_is_not_duplicated() {
    let node = NodeProcess::start(&[]);
    let mut client = node.connect();
    assert_eq!(client.create_topic("idem", 1), 0);
    let (producer_id, epoch) = client.init_producer_id();
    let (other_id, _) = client.init_producer_id();
    assert_ne!(producer_id, other_id);
    let value = |v: &str| TestRecord {
        value: Some(v.as_bytes().to_vec()),
        ..Default::default()
    };
    let first = build_batch(&[value("a"), value("b")], 0, producer_id, epoch, 0);
    assert_eq!(client.produce(9, -1, "idem", 0, first.clone()), (0, 0));
    assert_eq!(client.produce(9, -1, "idem", 0, first.clone()), (0, 0));
    let second = build_batch(&[value("c")], 0, producer_id, epoch, 2);
    assert_eq!(client.produce(9, -1, "idem", 0, second.clone()), (0, 2));
    assert_eq!(client.produce(9, -1, "idem", 0, first), (0, 0));
    let gap = build_batch(&[value("d")], 0, producer_id, epoch, 9);
    assert_eq!(client.produce(9, -1, "idem", 0, gap).0, 45);
    let data = client.fetch(12, "idem", uuid::Uuid::nil(), 0, 0, 0);
    assert_eq!(data.high_watermark, 3);
    assert_eq!(batches(data.records.as_ref().unwrap()).len(), 2);
    let bumped = build_batch(&[value("e")], 0, producer_id, epoch + 1, 0);
    assert_eq!(client.produce(9, -1, "idem", 0, bumped).0, 0);
    let fenced = build_batch(&[value("f")], 0, producer_id, epoch, 3);
    assert_eq!(client.produce(9, -1, "idem", 0, fenced).0, 47);
}

/// `karst node --config FILE` reads Kafka-named settings from TOML, `--set` overrides them, and
/// DescribeConfigs on the broker reports what is in effect.
#[test]
fn config_file_and_set_flags_use_kafka_names() {
    let temp = tempfile::tempdir().unwrap();
    let file = temp.path().join("node.toml");
    std::fs::write(
        &file,
        "\"num.partitions\" = 3\n\"log.flush.policy\" = \"durable\"\n\"cluster.id\" = \"test-cluster\"\n",
    )
    .unwrap();
    let args: Vec<String> = [
        "--config",
        file.to_str().unwrap(),
        "--set",
        "num.partitions=5",
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    let node = NodeProcess::start_with_args(&temp.path().join("data"), &args);
    let mut client = node.connect();
    let metadata = client.metadata(12, Some(&["configured"]));
    assert_eq!(metadata.topics[0].partitions.len(), 5);
    assert_eq!(metadata.cluster_id.as_deref(), Some("test-cluster"));
    let request = DescribeConfigsRequest::default().with_resources(vec![
        describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(4)
            .with_resource_name(kafka_protocol::protocol::StrBytes::from_static_str("1"))
            .with_configuration_keys(Some(vec![
                kafka_protocol::protocol::StrBytes::from_static_str("log.flush.policy"),
            ])),
    ]);
    let ResponseKind::DescribeConfigs(response) = client.call(
        ApiKey::DescribeConfigs,
        4,
        RequestKind::DescribeConfigs(request),
    ) else {
        panic!()
    };
    let config = &response.results[0].configs[0];
    assert_eq!(config.value.as_deref(), Some("durable"));
}
