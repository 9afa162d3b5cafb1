//! The APIs and versions Karst implements, as advertised by ApiVersions.
//!
//! Rule: advertise exactly what the node handles. Every entry here has a handler in
//! `crate::broker` or, for the group APIs, `crate::node` and `crate::coordinator`; clients pick min(their max, our max), so the maxima cover what librdkafka 2.x
//! and kafka-python 3.x send (see FACTS.md) and the minima are the crate's lowest decodable.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};

/// (api key, min version, max version).
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 16),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
    // The group APIs (docs/coordinator.md). librdkafka uses consumer groups only with a
    // broker that lists all of FindCoordinator, OffsetCommit, OffsetFetch, JoinGroup,
    // SyncGroup, Heartbeat and LeaveGroup (and enables lz4 only if FindCoordinator is listed).
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
];

/// The supported version range of `api_key`, if Karst implements it.
pub fn supported_range(api_key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(key, _, _)| *key == api_key)
        .map(|&(_, min, max)| (min, max))
}

/// Whether Karst handles `api_key` at `version`.
pub fn is_supported(api_key: ApiKey, version: i16) -> bool {
    matches!(supported_range(api_key), Some((min, max)) if (min..=max).contains(&version))
}

/// The ApiVersions answer: every supported API with its range, and `error_code`.
pub fn response(error_code: i16) -> ApiVersionsResponse {
    let api_keys = SUPPORTED
        .iter()
        .map(|&(key, min, max)| {
            ApiVersion::default()
                .with_api_key(key as i16)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect();
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(api_keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::Message;

    /// Every advertised range lies inside what the kafka-protocol crate can decode and encode,
    /// so a client choosing any advertised version can be served.
    #[test]
    fn advertised_ranges_are_within_the_codec_ranges() {
        let codec = |key: ApiKey| match key {
            ApiKey::Produce => ProduceRequest::VERSIONS,
            ApiKey::Fetch => FetchRequest::VERSIONS,
            ApiKey::ListOffsets => ListOffsetsRequest::VERSIONS,
            ApiKey::Metadata => MetadataRequest::VERSIONS,
            ApiKey::ApiVersions => ApiVersionsRequest::VERSIONS,
            ApiKey::CreateTopics => CreateTopicsRequest::VERSIONS,
            ApiKey::DeleteTopics => DeleteTopicsRequest::VERSIONS,
            ApiKey::DeleteRecords => DeleteRecordsRequest::VERSIONS,
            ApiKey::InitProducerId => InitProducerIdRequest::VERSIONS,
            ApiKey::DescribeConfigs => DescribeConfigsRequest::VERSIONS,
            ApiKey::CreatePartitions => CreatePartitionsRequest::VERSIONS,
            ApiKey::IncrementalAlterConfigs => IncrementalAlterConfigsRequest::VERSIONS,
            ApiKey::DescribeCluster => DescribeClusterRequest::VERSIONS,
            ApiKey::AlterConfigs => AlterConfigsRequest::VERSIONS,
            ApiKey::DescribeLogDirs => DescribeLogDirsRequest::VERSIONS,
            ApiKey::FindCoordinator => FindCoordinatorRequest::VERSIONS,
            ApiKey::JoinGroup => JoinGroupRequest::VERSIONS,
            ApiKey::SyncGroup => SyncGroupRequest::VERSIONS,
            ApiKey::Heartbeat => HeartbeatRequest::VERSIONS,
            ApiKey::LeaveGroup => LeaveGroupRequest::VERSIONS,
            ApiKey::OffsetCommit => OffsetCommitRequest::VERSIONS,
            ApiKey::OffsetFetch => OffsetFetchRequest::VERSIONS,
            ApiKey::DescribeGroups => DescribeGroupsRequest::VERSIONS,
            ApiKey::ListGroups => ListGroupsRequest::VERSIONS,
            ApiKey::DeleteGroups => DeleteGroupsRequest::VERSIONS,
            ApiKey::OffsetDelete => OffsetDeleteRequest::VERSIONS,
            other => panic!("no codec range listed for {other:?}"),
        };
        for &(key, min, max) in SUPPORTED {
            let range = codec(key);
            assert!(min >= range.min && max <= range.max, "{key:?} {min}..{max}");
        }
    }

    /// The versions the clients in FACTS.md send are all advertised.
    #[test]
    fn client_versions_are_covered() {
        for (key, version) in [
            (ApiKey::ApiVersions, 3),
            (ApiKey::ApiVersions, 4),
            (ApiKey::Metadata, 12),
            (ApiKey::Produce, 10),
            (ApiKey::Produce, 9),
            (ApiKey::Fetch, 16),
            (ApiKey::Fetch, 12),
            (ApiKey::ListOffsets, 7),
            (ApiKey::CreateTopics, 4),
            (ApiKey::InitProducerId, 4),
            // librdkafka's group versions
            (ApiKey::FindCoordinator, 2),
            (ApiKey::JoinGroup, 5),
            (ApiKey::SyncGroup, 3),
            (ApiKey::Heartbeat, 3),
            (ApiKey::LeaveGroup, 1),
            (ApiKey::OffsetCommit, 9),
            (ApiKey::OffsetFetch, 9),
            // kafka-python's group versions
            (ApiKey::FindCoordinator, 6),
            (ApiKey::JoinGroup, 7),
            (ApiKey::SyncGroup, 5),
            (ApiKey::Heartbeat, 4),
            (ApiKey::LeaveGroup, 5),
            (ApiKey::OffsetCommit, 8),
            (ApiKey::OffsetFetch, 8),
        ] {
            assert!(is_supported(key, version), "{key:?} v{version}");
        }
    }
}
