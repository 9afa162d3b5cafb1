//! AlterConfigs (the legacy, replacing form) and DescribeLogDirs.

use super::*;

pub(super) fn alter_configs(
    topic: &str,
    entries: &[(&str, Option<&str>)],
    validate_only: bool,
) -> RequestKind {
    RequestKind::AlterConfigs(
        AlterConfigsRequest::default()
            .with_validate_only(validate_only)
            .with_resources(vec![alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_string(topic.to_string()))
                .with_configs(
                    entries
                        .iter()
                        .map(|(name, value)| {
                            alter_configs_request::AlterableConfig::default()
                                .with_name(StrBytes::from_string(name.to_string()))
                                .with_value(value.map(|v| StrBytes::from_string(v.to_string())))
                        })
                        .collect(),
                )]),
    )
}

pub(super) fn alter_error(harness: &mut Harness, request: RequestKind) -> i16 {
    let (_, effects) = harness.request(NOW, 1, request);
    let [Seen::Respond(_, _, ResponseKind::AlterConfigs(response))] = effects.as_slice() else {
        panic!("{effects:?}")
    };
    response.responses[0].error_code
}

pub(super) fn overrides(harness: &Harness, topic: &str) -> Vec<(String, String)> {
    harness.broker.topics[topic]
        .config
        .overrides
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// AlterConfigs (API 33) replaces a topic's whole set of overrides: what the request does not
/// name goes back to its default (Kafka's non-incremental semantics, which KIP-339's
/// IncrementalAlterConfigs was added to avoid). validate_only changes nothing; a null value or
/// a repeated key is INVALID_REQUEST and an unknown key or bad value INVALID_CONFIG, each
/// leaving the topic as it was; unknown and internal topics are refused.
#[test]
fn alter_configs_replaces_the_whole_set_of_overrides() {
    let mut harness = Harness::new(&[]);
    harness.create_topic("a", 2);
    let set = alter_configs(
        "a",
        &[
            ("retention.ms", Some("5000")),
            ("cleanup.policy", Some("compact")),
        ],
        false,
    );
    assert_eq!(alter_error(&mut harness, set), error::NONE);
    assert_eq!(
        overrides(&harness, "a"),
        vec![
            ("cleanup.policy".to_string(), "compact".to_string()),
            ("retention.ms".to_string(), "5000".to_string())
        ]
    );
    let before = overrides(&harness, "a");
    for (request, code) in [
        (
            alter_configs("a", &[("segment.bytes", Some("2000000"))], true),
            error::NONE,
        ),
        (
            alter_configs("a", &[("retention.ms", None)], false),
            error::INVALID_REQUEST,
        ),
        (
            alter_configs(
                "a",
                &[("retention.ms", Some("1")), ("retention.ms", Some("2"))],
                false,
            ),
            error::INVALID_REQUEST,
        ),
        (
            alter_configs("a", &[("no.such.config", Some("1"))], false),
            error::INVALID_CONFIG,
        ),
        (
            alter_configs("a", &[("retention.ms", Some("-7"))], false),
            error::INVALID_CONFIG,
        ),
        (
            alter_configs("missing", &[("retention.ms", Some("1"))], false),
            error::UNKNOWN_TOPIC_OR_PARTITION,
        ),
    ] {
        assert_eq!(alter_error(&mut harness, request), code);
        assert_eq!(
            overrides(&harness, "a"),
            before,
            "a refused or validate-only request changed the topic"
        );
    }

    // Only segment.bytes named: retention.ms and cleanup.policy return to their defaults, in
    // the partitions' logs too.
    let replace = alter_configs("a", &[("segment.bytes", Some("2000000"))], false);
    assert_eq!(alter_error(&mut harness, replace), error::NONE);
    assert_eq!(
        overrides(&harness, "a"),
        vec![("segment.bytes".to_string(), "2000000".to_string())]
    );
    for partition in &harness.broker.topics["a"].partitions {
        let config = partition.log.config();
        assert_eq!(config.segment_bytes, 2_000_000);
        assert_eq!(config.retention_ms, harness.broker.config.log_retention_ms);
        assert_eq!(config.cleanup_policy, crate::log::CleanupPolicy::Delete);
    }

    harness
        .broker
        .ensure_consumer_offsets(1, NOW)
        .expect("creates the internal topic");
    let internal = alter_configs("__consumer_offsets", &[("retention.ms", Some("1"))], false);
    assert_eq!(alter_error(&mut harness, internal), error::INVALID_REQUEST);
}

fn describe_log_dirs(
    harness: &mut Harness,
    version: i16,
    topics: Option<Vec<(&str, Vec<i32>)>>,
) -> DescribeLogDirsResponse {
    let request = DescribeLogDirsRequest::default().with_topics(topics.map(|topics| {
        topics
            .into_iter()
            .map(|(name, partitions)| {
                describe_log_dirs_request::DescribableLogDirTopic::default()
                    .with_topic(topic_name(name))
                    .with_partitions(partitions)
            })
            .collect()
    }));
    let (_, effects) = harness.request(NOW, version, RequestKind::DescribeLogDirs(request));
    let [Seen::Respond(_, _, ResponseKind::DescribeLogDirs(response))] = effects.as_slice() else {
        panic!("{effects:?}")
    };
    response.clone()
}

fn sizes(response: &DescribeLogDirsResponse) -> Vec<(String, i32, i64)> {
    assert_eq!(response.results.len(), 1, "one data directory");
    let result = &response.results[0];
    assert_eq!(result.error_code, error::NONE);
    result
        .topics
        .iter()
        .flat_map(|topic| {
            topic
                .partitions
                .iter()
                .map(|p| (topic.name.to_string(), p.partition_index, p.partition_size))
        })
        .collect()
}

/// DescribeLogDirs (KIP-113): the one data directory, with each partition's size on disk as
/// the log counts it; null topics means every partition, and topics or partitions the node
/// does not have are left out (Kafka's ReplicaManager.describeLogDirs). The simulated disk
/// cannot tell its volume's size, so v4's total and usable bytes stay -1 (KIP-827's "unknown").
#[test]
fn describe_log_dirs_reports_every_partition_size() {
    let mut harness = Harness::new(&[]);
    harness.create_topic("b", 2);
    harness.create_topic("c", 1);
    harness.request(NOW, 9, produce("b", 1, 1, simple_batch(4, 0)));
    let size_b1 = harness.broker.topics["b"].partitions[1].log.size_bytes() as i64;
    assert!(size_b1 > 0);

    let all = describe_log_dirs(&mut harness, 4, None);
    assert_eq!(
        sizes(&all),
        vec![
            ("b".to_string(), 0, 0),
            ("b".to_string(), 1, size_b1),
            ("c".to_string(), 0, 0)
        ]
    );
    assert_eq!(all.results[0].log_dir.as_str(), "memory");
    assert_eq!(
        (all.results[0].total_bytes, all.results[0].usable_bytes),
        (-1, -1)
    );

    let some = describe_log_dirs(
        &mut harness,
        1,
        Some(vec![("b", vec![1, 7, -1]), ("missing", vec![0])]),
    );
    assert_eq!(sizes(&some), vec![("b".to_string(), 1, size_b1)]);
    let none = describe_log_dirs(&mut harness, 2, Some(vec![]));
    assert_eq!(sizes(&none), vec![]);
}
