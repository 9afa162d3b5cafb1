//! Topic administration: Metadata auto-creation, topic name rules, topic configs,
//! CreatePartitions and DeleteTopics.

use super::*;

/// Metadata does not auto-create when auto.create.topics.enable=false, nor when the client
/// (v4+) forbids it.
#[test]
fn metadata_auto_creation_follows_the_config_and_the_client() {
    for (settings, allow, expected) in [
        (
            &[("auto.create.topics.enable", "false")][..],
            true,
            error::UNKNOWN_TOPIC_OR_PARTITION,
        ),
        (&[][..], false, error::UNKNOWN_TOPIC_OR_PARTITION),
        (&[][..], true, error::NONE),
    ] {
        let mut harness = Harness::new(settings);
        let (_, effects) = harness.request(
            NOW,
            12,
            RequestKind::Metadata(
                MetadataRequest::default()
                    .with_allow_auto_topic_creation(allow)
                    .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
                    )
                    .with_name(Some(topic_name("auto")))])),
            ),
        );
        let (syncs, answers) = harness.complete_syncs(effects);
        let [Seen::Respond(_, _, ResponseKind::Metadata(response))] = answers.as_slice() else {
            panic!("{answers:?}")
        };
        assert_eq!(response.topics[0].error_code, expected);
        // An auto-created topic's logs are synced at creation, like CreateTopics'.
        let created = harness
            .broker
            .topics
            .get("auto")
            .map_or(0, |t| t.partitions.len());
        assert_eq!(syncs.len(), created);
        assert_eq!(response.brokers[0].host.as_str(), "127.0.0.1");
        assert_eq!(response.brokers[0].port, 9092);
    }
}

/// Kafka's Topic.validate rules.
#[test]
fn topic_name_rules() {
    assert_eq!(validate_topic_name(""), Err(TopicNameError::Empty));
    assert_eq!(validate_topic_name("."), Err(TopicNameError::Dots));
    assert_eq!(validate_topic_name(".."), Err(TopicNameError::Dots));
    assert_eq!(
        validate_topic_name(&"a".repeat(250)),
        Err(TopicNameError::TooLong)
    );
    assert!(validate_topic_name(&"a".repeat(249)).is_ok());
    assert!(matches!(
        validate_topic_name("a b"),
        Err(TopicNameError::IllegalCharacter(_))
    ));
    assert!(matches!(
        validate_topic_name("__consumer_offsets"),
        Err(TopicNameError::Reserved(_))
    ));
    assert!(validate_topic_name("Orders.v1_x-2").is_ok());
}

/// Topic configs: IncrementalAlterConfigs SET then DescribeConfigs reports the override as a
/// dynamic topic config (source 1) and defaults as DEFAULT_CONFIG (5); an invalid value is
/// INVALID_CONFIG and changes nothing; DELETE restores the default.
#[test]
fn topic_configs_alter_and_describe() {
    let mut harness = Harness::new(&[]);
    harness.create_topic("c", 1);
    let alter = |value: &str, operation: i8| {
        RequestKind::IncrementalAlterConfigs(
            IncrementalAlterConfigsRequest::default().with_resources(vec![
                incremental_alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str("c"))
                    .with_configs(vec![
                        incremental_alter_configs_request::AlterableConfig::default()
                            .with_name(StrBytes::from_static_str("retention.ms"))
                            .with_config_operation(operation)
                            .with_value(Some(StrBytes::from_string(value.to_string()))),
                    ]),
            ]),
        )
    };
    let describe =
        RequestKind::DescribeConfigs(DescribeConfigsRequest::default().with_resources(vec![
        describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("c"))
            .with_configuration_keys(Some(vec![
                StrBytes::from_static_str("retention.ms"),
                StrBytes::from_static_str("segment.bytes"),
            ])),
    ]));
    let error_of = |effects: &[Seen]| match effects {
        [Seen::Respond(_, _, ResponseKind::IncrementalAlterConfigs(response))] => {
            response.responses[0].error_code
        }
        other => panic!("{other:?}"),
    };
    let described = |harness: &mut Harness| {
        let (_, effects) = harness.request(NOW, 4, describe.clone());
        let [Seen::Respond(_, _, ResponseKind::DescribeConfigs(response))] = effects.as_slice()
        else {
            panic!("{effects:?}")
        };
        response.results[0]
            .configs
            .iter()
            .map(|c| {
                (
                    c.name.to_string(),
                    c.value.as_ref().unwrap().to_string(),
                    c.config_source,
                )
            })
            .collect::<Vec<_>>()
    };
    let (_, effects) = harness.request(NOW, 1, alter("5000", 0));
    assert_eq!(error_of(&effects), error::NONE);
    let (_, effects) = harness.request(NOW, 1, alter("-7", 0));
    assert_eq!(error_of(&effects), error::INVALID_CONFIG);
    assert_eq!(
        described(&mut harness),
        vec![
            ("retention.ms".to_string(), "5000".to_string(), 1),
            ("segment.bytes".to_string(), (1u64 << 30).to_string(), 5),
        ]
    );
    assert_eq!(
        harness.broker.topics["c"].partitions[0]
            .log
            .config()
            .retention_ms,
        5000
    );
    let (_, effects) = harness.request(NOW, 1, alter("", 1));
    assert_eq!(error_of(&effects), error::NONE);
    assert_eq!(described(&mut harness)[0].2, 5);
}

/// A CreatePartitions request raising topic `name` to `count` partitions.
fn grow(name: &str, count: i32) -> RequestKind {
    RequestKind::CreatePartitions(CreatePartitionsRequest::default().with_topics(vec![
        create_partitions_request::CreatePartitionsTopic::default()
            .with_name(topic_name(name))
            .with_count(count)
            .with_assignments(None),
    ]))
}

/// CreatePartitions grows a topic (never shrinks it); DeleteTopics removes it and its id.
#[test]
fn create_partitions_and_delete_topics() {
    let mut harness = Harness::new(&[]);
    let topic_id = harness.create_topic("p", 1);
    let error_of = |effects: &[Seen]| match effects {
        [Seen::Respond(_, _, ResponseKind::CreatePartitions(response))] => {
            response.results[0].error_code
        }
        other => panic!("{other:?}"),
    };
    let (_, effects) = harness.request(NOW, 3, grow("p", 3));
    let (syncs, effects) = harness.complete_syncs(effects);
    assert_eq!(error_of(&effects), error::NONE);
    assert_eq!(harness.broker.topics["p"].partitions.len(), 3);
    // The two new logs are synced at once, while empty.
    let new_logs = [1, 2].map(|partition| LogId {
        topic_id,
        partition,
    });
    assert_eq!(syncs, new_logs);
    let (_, effects) = harness.request(NOW, 3, grow("p", 2));
    assert_eq!(error_of(&effects), error::INVALID_PARTITIONS);
    let (_, effects) = harness.request(
        NOW,
        6,
        RequestKind::DeleteTopics(DeleteTopicsRequest::default().with_topics(vec![
            delete_topics_request::DeleteTopicState::default()
                .with_name(None)
                .with_topic_id(topic_id),
        ])),
    );
    let [Seen::Respond(_, _, ResponseKind::DeleteTopics(response))] = effects.as_slice() else {
        panic!("{effects:?}")
    };
    assert_eq!(response.responses[0].error_code, error::NONE);
    assert_eq!(
        response.responses[0].name.as_ref().map(|n| n.as_str()),
        Some("p")
    );
    assert!(harness.broker.topics.is_empty());
    let (_, effects) = harness.request(NOW, 9, produce("p", 0, 1, simple_batch(1, 0)));
    let [Seen::Respond(_, _, ResponseKind::Produce(response))] = effects.as_slice() else {
        panic!("{effects:?}")
    };
    assert_eq!(
        response.responses[0].partition_responses[0].error_code,
        error::UNKNOWN_TOPIC_OR_PARTITION
    );
}

/// A topic change whose registry write fails answers KAFKA_STORAGE_ERROR (its outcome after a
/// restart is unknown) and keeps in memory only what takes no record a restart could lose:
/// CreateTopics and CreatePartitions are undone with their new logs, a config change is
/// undone, DeleteTopics stays done. Before, the failure was only logged and the new topic
/// acknowledged records into partitions the registry on disk might not list.
#[test]
fn a_failed_registry_write_fails_the_topic_change_and_leaves_no_unregistered_partition() {
    let disk = Arc::new(SimDisk::new(7));
    let mut harness = Harness::open(&disk, NodeConfig::default(), NOW);
    harness.create_topic("kept", 1);
    let files_of = |topic: &str| -> Vec<String> {
        disk.paths()
            .into_iter()
            .filter(|path| path.starts_with(&format!("{topic}-")))
            .collect()
    };
    disk.set_fail_syncs(true);

    let (_, effects) = harness.request(
        NOW,
        7,
        RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![
            create_topics_request::CreatableTopic::default()
                .with_name(topic_name("new"))
                .with_num_partitions(2)
                .with_replication_factor(-1),
        ])),
    );
    let [Seen::Respond(_, _, ResponseKind::CreateTopics(response))] = effects.as_slice() else {
        panic!("{effects:?}")
    };
    assert_eq!(response.topics[0].error_code, error::KAFKA_STORAGE_ERROR);
    assert!(!harness.broker.topics.contains_key("new"));
    assert_eq!(files_of("new"), Vec::<String>::new());
    let (_, effects) = harness.request(NOW, 9, produce("new", 0, 1, simple_batch(1, 0)));
    let [Seen::Respond(_, _, ResponseKind::Produce(response))] = effects.as_slice() else {
        panic!("{effects:?}")
    };
    assert_eq!(
        response.responses[0].partition_responses[0].error_code,
        error::UNKNOWN_TOPIC_OR_PARTITION
    );

    let (_, effects) = harness.request(NOW, 3, grow("kept", 3));
    let [Seen::Respond(_, _, ResponseKind::CreatePartitions(response))] = effects.as_slice() else {
        panic!("{effects:?}")
    };
    assert_eq!(response.results[0].error_code, error::KAFKA_STORAGE_ERROR);
    assert_eq!(harness.broker.topics["kept"].partitions.len(), 1);
    assert!(files_of("kept")
        .iter()
        .all(|path| path.starts_with("kept-0/")));

    let request = super::admin::alter_configs("kept", &[("retention.ms", Some("5"))], false);
    assert_eq!(
        super::admin::alter_error(&mut harness, request),
        error::KAFKA_STORAGE_ERROR
    );
    assert_eq!(super::admin::overrides(&harness, "kept"), vec![]);
    assert_ne!(
        harness.broker.topics["kept"].partitions[0]
            .log
            .config()
            .retention_ms,
        5
    );

    let (_, effects) = harness.request(
        NOW,
        4,
        RequestKind::DeleteTopics(
            DeleteTopicsRequest::default().with_topic_names(vec![topic_name("kept")]),
        ),
    );
    let [Seen::Respond(_, _, ResponseKind::DeleteTopics(response))] = effects.as_slice() else {
        panic!("{effects:?}")
    };
    assert_eq!(response.responses[0].error_code, error::KAFKA_STORAGE_ERROR);
    assert!(harness.broker.topics.is_empty(), "the deletion stays done");

    // The next successful write records what memory holds: after a power loss, no topic.
    disk.set_fail_syncs(false);
    harness.create_topic("after", 1);
    drop(harness);
    disk.crash(crate::storage::CrashOptions::default());
    let harness = Harness::open(&disk, NodeConfig::default(), NOW);
    assert_eq!(
        harness.broker.topics.keys().collect::<Vec<_>>(),
        vec!["after"]
    );
}

/// A directory left by a deleted topic of the same name (a crash between DeleteTopics' registry
/// write and its file removal) is never inherited: a partition CreatePartitions adds starts
/// empty, as one CreateTopics creates does. Before, CreatePartitions opened the old directory
/// and served the deleted topic's records at their old offsets.
#[test]
fn added_partitions_never_inherit_a_deleted_topics_records() {
    let disk = Arc::new(SimDisk::new(7));
    let mut leftover =
        PartitionLog::open(disk.clone(), "t-1", crate::log::LogConfig::default(), NOW).unwrap();
    leftover.append(&mut simple_batch(3, NOW), NOW).unwrap();
    leftover.close().unwrap();
    drop(leftover);
    let mut harness = Harness::open(&disk, NodeConfig::default(), NOW);
    harness.create_topic("t", 1);
    let (_, effects) = harness.request(NOW, 3, grow("t", 2));
    let (_, answers) = harness.complete_syncs(effects);
    let [Seen::Respond(_, _, ResponseKind::CreatePartitions(response))] = answers.as_slice() else {
        panic!("{answers:?}")
    };
    assert_eq!(response.results[0].error_code, error::NONE);
    let log = &harness.broker.topics["t"].partitions[1].log;
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
}
