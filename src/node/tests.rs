//! Node-level tests of the group wiring, sans-IO over the simulated disk: exact effects of
//! FindCoordinator, persist-then-ack commits and their sync effects, timers and connection
//! close. The real-binary tests are in tests/broker_groups.rs.

use std::sync::Arc;

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::*;
use crate::broker::LogId;
use crate::protocol::codec::DecodedRequest;
use crate::storage::SimDisk;

const NOW: Millis = 1_000_000;

struct Harness {
    node: Node,
    disk: Arc<SimDisk>,
    next_sequence: u64,
}

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

impl Harness {
    fn new(settings: &[(&str, &str)]) -> Harness {
        let mut config = NodeConfig::default();
        config.set("offsets.topic.num.partitions", "3").unwrap();
        config.set("group.initial.rebalance.delay.ms", "0").unwrap();
        for (key, value) in settings {
            config.set(key, value).unwrap();
        }
        let disk = Arc::new(SimDisk::new(7));
        let node = Node::open(config, "127.0.0.1:9092", disk.clone(), 42, NOW).unwrap();
        let mut harness = Harness {
            node,
            disk,
            next_sequence: 0,
        };
        harness.step(
            NOW,
            Input::ConnectionOpened {
                connection: 1,
                client_host: "/10.0.0.1".to_string(),
            },
        );
        harness
    }

    fn step(&mut self, now: Millis, input: Input) -> Vec<Effect> {
        let mut effects = Vec::new();
        self.node.step(now, input, &mut effects);
        self.node.invariants();
        effects
    }

    fn request(
        &mut self,
        now: Millis,
        api_key: ApiKey,
        version: i16,
        request: RequestKind,
    ) -> (RequestId, Vec<Effect>) {
        let id = RequestId {
            connection: 1,
            sequence: self.next_sequence,
        };
        self.next_sequence += 1;
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(id.sequence as i32 + 100)
            .with_client_id(Some(text("unit")));
        let request = Box::new(DecodedRequest::new(api_key, header, request));
        (id, self.step(now, Input::Request { id, request }))
    }

    /// FindCoordinator for group "g". The step that creates `__consumer_offsets` hands out
    /// one sync job per new partition log (as CreateTopics does; checked here, so every test
    /// that starts with it checks it), which are completed as the runtime would.
    fn find_coordinator(&mut self) -> FindCoordinatorResponse {
        let existed = self.node.broker().consumer_offsets_partitions().is_some();
        let request = FindCoordinatorRequest::default().with_key(text("g"));
        let (_, effects) = self.request(
            NOW,
            ApiKey::FindCoordinator,
            2,
            RequestKind::FindCoordinator(request),
        );
        let (syncs, effects) = self.complete_syncs(effects);
        let expected: Vec<LogId> = if existed {
            Vec::new()
        } else {
            let topic = &self.node.broker().topics[crate::broker::CONSUMER_OFFSETS];
            (0..topic.partitions.len() as i32)
                .map(|partition| LogId {
                    topic_id: topic.id,
                    partition,
                })
                .collect()
        };
        assert_eq!(syncs, expected, "one sync per new offsets partition");
        let [Effect::Respond { response, .. }] = effects.as_slice() else {
            panic!("{effects:?}")
        };
        let ResponseKind::FindCoordinator(response) = &**response else {
            panic!()
        };
        response.clone()
    }

    /// Runs the sync jobs among `effects` and completes them (successfully) as the runtime
    /// would; returns their logs and the other effects, including those the completions
    /// caused.
    fn complete_syncs(&mut self, effects: Vec<Effect>) -> (Vec<LogId>, Vec<Effect>) {
        use crate::broker::tests::{complete_syncs, SyncOr};
        complete_syncs(
            effects,
            |effect| match effect {
                Effect::Sync { log, job } => {
                    let up_to_offset = job.up_to_offset;
                    job.run().unwrap();
                    SyncOr::Sync(log, up_to_offset)
                }
                other => SyncOr::Other(other),
            },
            |input| self.step(NOW, input),
        )
    }

    /// A simple-consumer commit (generation -1, no member), as admin tools send.
    fn commit(&mut self, offset: i64) -> (RequestId, Vec<Effect>) {
        let request = OffsetCommitRequest::default()
            .with_group_id(GroupId(text("g")))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![
                offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(TopicName(text("t")))
                    .with_partitions(vec![
                        offset_commit_request::OffsetCommitRequestPartition::default()
                            .with_committed_offset(offset),
                    ]),
            ]);
        self.request(
            NOW,
            ApiKey::OffsetCommit,
            9,
            RequestKind::OffsetCommit(request),
        )
    }

    fn fetched_offset(&mut self) -> i64 {
        let request = OffsetFetchRequest::default()
            .with_group_id(GroupId(text("g")))
            .with_topics(Some(vec![
                offset_fetch_request::OffsetFetchRequestTopic::default()
                    .with_name(TopicName(text("t")))
                    .with_partition_indexes(vec![0]),
            ]));
        let (_, effects) = self.request(
            NOW,
            ApiKey::OffsetFetch,
            7,
            RequestKind::OffsetFetch(request),
        );
        let [Effect::Respond { response, .. }] = effects.as_slice() else {
            panic!("{effects:?}")
        };
        let ResponseKind::OffsetFetch(response) = &**response else {
            panic!()
        };
        response.topics[0].partitions[0].committed_offset
    }
}

/// The single effect, which must be a sync (no answer yet).
fn only_sync(mut effects: Vec<Effect>) -> (crate::broker::LogId, crate::log::SyncJob) {
    assert_eq!(effects.len(), 1, "one sync and no answer yet: {effects:?}");
    match effects.pop() {
        Some(Effect::Sync { log, job }) => (log, job),
        other => panic!("{other:?}"),
    }
}

fn commit_code(effect: &Effect) -> (RequestId, i16) {
    let Effect::Respond { id, response, .. } = effect else {
        panic!("{effect:?}")
    };
    let ResponseKind::OffsetCommit(response) = &**response else {
        panic!()
    };
    (*id, response.topics[0].partitions[0].error_code)
}

/// FindCoordinator (v2) creates `__consumer_offsets` with offsets.topic.num.partitions
/// partitions and names this node at its advertised address.
#[test]
fn find_coordinator_creates_the_offsets_topic_and_names_this_node() {
    let mut harness = Harness::new(&[]);
    assert_eq!(harness.node.broker().consumer_offsets_partitions(), None);
    let response = harness.find_coordinator();
    assert_eq!(response.error_code, 0);
    assert_eq!(response.node_id.0, 1);
    assert_eq!((response.host.as_str(), response.port), ("127.0.0.1", 9092));
    assert_eq!(harness.node.broker().consumer_offsets_partitions(), Some(3));
}

/// Creating `__consumer_offsets` (on the first FindCoordinator, outside any request the
/// broker steps) hands out its new logs' sync jobs in that step, as CreateTopics does
/// (`sync_new_logs`): exactly one per partition, before the answer, under every flush policy.
/// Left to the first commit, the fsync of a file the commit is filling would hold it; here the
/// first durable commit waits for its own sync only.
#[test]
fn creating_the_offsets_topic_hands_out_one_sync_per_partition() {
    for policy in ["durable", "page-cache"] {
        let mut harness = Harness::new(&[("log.flush.policy", policy)]);
        let request = FindCoordinatorRequest::default().with_key(text("g"));
        let (_, effects) = harness.request(
            NOW,
            ApiKey::FindCoordinator,
            2,
            RequestKind::FindCoordinator(request),
        );
        let topic_id = harness.node.broker().topics[crate::broker::CONSUMER_OFFSETS].id;
        let seen: Vec<(LogId, i64)> = effects
            .iter()
            .filter_map(|effect| match effect {
                Effect::Sync { log, job } => Some((*log, job.up_to_offset)),
                _ => None,
            })
            .collect();
        let expected: Vec<(LogId, i64)> = (0..3)
            .map(|partition| {
                let log = LogId {
                    topic_id,
                    partition,
                };
                (log, 0)
            })
            .collect();
        assert_eq!(seen, expected, "{policy}");
        assert!(
            matches!(effects.last(), Some(Effect::Respond { .. })),
            "{effects:?}"
        );
        let (_, answers) = harness.complete_syncs(effects);
        assert_eq!(answers.len(), 1);
        // Another FindCoordinator creates nothing and syncs nothing.
        harness.find_coordinator();
    }
    let mut harness = Harness::new(&[("log.flush.policy", "durable")]);
    harness.find_coordinator();
    let (commit_id, effects) = harness.commit(42);
    let (log, job) = only_sync(effects);
    assert_eq!(job.up_to_offset, 1, "the commit's own sync");
    job.run().unwrap();
    let effects = harness.step(
        NOW,
        Input::SyncCompleted {
            log,
            up_to_offset: 1,
            result: Ok(()),
        },
    );
    assert_eq!(commit_code(&effects[0]), (commit_id, 0));
}

/// Persist-then-ack under the durable flush policy: the commit's append hands out the same
/// sync effect a produce does, the commit is answered only after that fsync completes, and
/// only then does OffsetFetch see it.
#[test]
fn a_durable_commit_is_answered_after_its_fsync() {
    let mut harness = Harness::new(&[("log.flush.policy", "durable")]);
    harness.find_coordinator();
    let (commit_id, effects) = harness.commit(42);
    let (log, job) = only_sync(effects);
    assert_eq!(harness.fetched_offset(), -1, "not visible before durable");
    let up_to_offset = job.up_to_offset;
    job.run().unwrap();
    let effects = harness.step(
        NOW,
        Input::SyncCompleted {
            log,
            up_to_offset,
            result: Ok(()),
        },
    );
    assert_eq!(effects.len(), 1, "{effects:?}");
    assert_eq!(commit_code(&effects[0]), (commit_id, 0));
    assert_eq!(harness.fetched_offset(), 42);
}

/// A failed fsync fails the commit (PersistError::Storage, Kafka's KAFKA_STORAGE_ERROR ->
/// NOT_COORDINATOR as GroupMetadataManager maps it) and the offset is never visible.
#[test]
fn a_failed_fsync_fails_the_commit() {
    let mut harness = Harness::new(&[("log.flush.policy", "durable")]);
    harness.find_coordinator();
    let (commit_id, effects) = harness.commit(42);
    let (log, job) = only_sync(effects);
    let up_to_offset = job.up_to_offset;
    harness.disk.set_fail_syncs(true);
    let effects = harness.step(
        NOW,
        Input::SyncCompleted {
            log,
            up_to_offset,
            result: Err("injected".to_string()),
        },
    );
    assert_eq!(effects.len(), 1, "{effects:?}");
    assert_eq!(commit_code(&effects[0]), (commit_id, 16));
    assert_eq!(harness.fetched_offset(), -1);
}

/// Under the page-cache policy the high watermark covers the append at once: the commit is
/// answered in the same step, on its own request id.
#[test]
fn a_page_cache_commit_is_answered_at_once() {
    let mut harness = Harness::new(&[]);
    harness.find_coordinator();
    let (commit_id, effects) = harness.commit(7);
    // (The log may also hand out a sync job, as it does for a produce.)
    let answers: Vec<&Effect> = effects
        .iter()
        .filter(|effect| matches!(effect, Effect::Respond { .. }))
        .collect();
    assert_eq!(answers.len(), 1);
    assert_eq!(commit_code(answers[0]), (commit_id, 0));
    assert_eq!(harness.fetched_offset(), 7);
}

/// The node's deadline includes the coordinator's: a member that stops heartbeating is
/// removed when its session times out (the group becomes Empty), stepped through
/// `Input::Timer`.
#[test]
fn the_coordinators_session_timeout_fires_through_the_node_timer() {
    let mut harness = Harness::new(&[]);
    harness.find_coordinator();
    let join = JoinGroupRequest::default()
        .with_group_id(GroupId(text("g")))
        .with_session_timeout_ms(6_000)
        .with_rebalance_timeout_ms(6_000)
        .with_protocol_type(text("consumer"))
        .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
        )
        .with_name(text("range"))
        .with_metadata(bytes::Bytes::from_static(b"x"))]);
    // v3: no member-id round; with no initial delay the join phase completes at the deadline
    // the coordinator sets (at most now).
    let (join_id, mut effects) =
        harness.request(NOW, ApiKey::JoinGroup, 3, RequestKind::JoinGroup(join));
    if effects.is_empty() {
        let deadline = harness.node.next_deadline().expect("a join deadline");
        assert!(deadline <= NOW + 6_000);
        effects = harness.step(deadline, Input::Timer);
    }
    let [Effect::Respond { id, response, .. }] = effects.as_slice() else {
        panic!("{effects:?}")
    };
    assert_eq!(*id, join_id);
    let ResponseKind::JoinGroup(joined) = &**response else {
        panic!()
    };
    assert_eq!(joined.error_code, 0);
    assert!(joined.member_id.starts_with("unit-"));
    assert_eq!(
        harness.node.coordinator().group_state("g"),
        Some("CompletingRebalance")
    );
    let deadline = harness.node.next_deadline().expect("session deadline");
    assert!(deadline <= NOW + 6_000, "{deadline}");
    // Nothing is due before the deadline; the member is gone after it.
    harness.step(NOW + 100, Input::Timer);
    assert_ne!(harness.node.coordinator().group_state("g"), Some("Empty"));
    harness.step(NOW + 6_001, Input::Timer);
    assert_eq!(harness.node.coordinator().group_state("g"), Some("Empty"));
}

/// A coordinator answer for a connection that closed meanwhile is dropped, not written to a
/// connection that no longer exists (and not to another one).
#[test]
fn answers_for_a_closed_connection_are_dropped() {
    let mut harness = Harness::new(&[("log.flush.policy", "durable")]);
    harness.find_coordinator();
    let (_, effects) = harness.commit(5);
    let (log, job) = only_sync(effects);
    harness.step(NOW, Input::ConnectionClosed(1));
    let up_to_offset = job.up_to_offset;
    job.run().unwrap();
    let effects = harness.step(
        NOW,
        Input::SyncCompleted {
            log,
            up_to_offset,
            result: Ok(()),
        },
    );
    assert!(effects.is_empty(), "{effects:?}");
    // The commit itself was durable and is acknowledged state.
    assert_eq!(
        harness.node.coordinator().committed_offset("g", "t", 0),
        Some(5)
    );
}

/// FindCoordinator answers encode at every advertised version (0-6), found and not found
/// (key type 1, transactions): kafka-protocol refuses to encode a field a version lacks.
#[test]
fn find_coordinator_answers_encode_at_every_advertised_version() {
    use crate::protocol::api_versions::supported_range;
    use crate::protocol::codec::{decode_response, encode_response};
    let mut harness = Harness::new(&[]);
    let (min, max) = supported_range(ApiKey::FindCoordinator).unwrap();
    for version in min..=max {
        for key_type in [0i8, 1] {
            let mut request = FindCoordinatorRequest::default();
            if version >= 1 {
                request.key_type = key_type;
            } else if key_type == 1 {
                continue;
            }
            if version >= 4 {
                request.coordinator_keys = vec![text("g"), text("h")];
            } else {
                request.key = text("g");
            }
            let (_, effects) = harness.request(
                NOW,
                ApiKey::FindCoordinator,
                version,
                RequestKind::FindCoordinator(request),
            );
            let (_, effects) = harness.complete_syncs(effects);
            let [Effect::Respond { response, .. }] = effects.as_slice() else {
                panic!("{effects:?}")
            };
            let mut out = bytes::BytesMut::new();
            encode_response(1, ApiKey::FindCoordinator, version, response, &mut out)
                .unwrap_or_else(|err| panic!("v{version}: {err}"));
            let (_, decoded) =
                decode_response(ApiKey::FindCoordinator, version, out.freeze().slice(4..)).unwrap();
            let ResponseKind::FindCoordinator(decoded) = decoded else {
                panic!()
            };
            let codes: Vec<i16> = if version >= 4 {
                decoded.coordinators.iter().map(|c| c.error_code).collect()
            } else {
                vec![decoded.error_code]
            };
            let expected = if key_type == 0 { 0 } else { 15 };
            assert!(
                codes.iter().all(|&code| code == expected),
                "v{version}: {codes:?}"
            );
        }
    }
}

/// Restart: a reopened node loads `__consumer_offsets` before serving, so the acknowledged
/// commit is fetched at once; the existing topic keeps its partition count even if
/// offsets.topic.num.partitions changed (groups hash by the count they were written with).
#[test]
fn a_reopened_node_loads_commits_and_keeps_the_partition_count() {
    let mut harness = Harness::new(&[]);
    harness.find_coordinator();
    let (_, effects) = harness.commit(31);
    assert!(effects.iter().any(|e| matches!(e, Effect::Respond { .. })));
    harness.node.close().unwrap();
    let mut config = NodeConfig::default();
    config.set("offsets.topic.num.partitions", "5").unwrap();
    let node = Node::open(config, "127.0.0.1:9092", harness.disk.clone(), 43, NOW + 10).unwrap();
    let mut reopened = Harness {
        node,
        disk: harness.disk.clone(),
        next_sequence: 0,
    };
    assert_eq!(
        reopened.node.broker().consumer_offsets_partitions(),
        Some(3)
    );
    assert_eq!(
        reopened
            .node
            .coordinator()
            .config()
            .offsets_topic_num_partitions,
        3
    );
    assert_eq!(reopened.fetched_offset(), 31);
}

/// offsets.commit.timeout.ms bounds a persist (Kafka's rule: an offset commit not replicated
/// in time fails with a retriable error): under the durable policy, a commit whose fsync never
/// completes is answered exactly once, at the deadline the node reports, with
/// REQUEST_TIMED_OUT (GroupMetadataManager.storeOffsets passes the append timeout through),
/// and the offset is not visible.
#[test]
fn a_commit_whose_fsync_hangs_fails_retriably_at_offsets_commit_timeout() {
    let mut harness = Harness::new(&[
        ("log.flush.policy", "durable"),
        ("offsets.commit.timeout.ms", "5000"),
    ]);
    harness.find_coordinator();
    let (commit_id, effects) = harness.commit(42);
    let _hung_sync = only_sync(effects);
    let deadline = harness.node.next_deadline().expect("a persist deadline");
    assert!(deadline <= NOW + 5_000, "{deadline}");
    let mut answers = Vec::new();
    // Step timers through the bound and well past it: one answer only.
    for now in [NOW + 1, deadline - 1, deadline, deadline + 1, NOW + 60_000] {
        let effects = harness.step(now, Input::Timer);
        answers.extend(
            effects
                .into_iter()
                .filter(|effect| matches!(effect, Effect::Respond { .. })),
        );
        if now < deadline {
            assert!(answers.is_empty(), "answered before the deadline");
        }
    }
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(commit_code(&answers[0]), (commit_id, 7));
    assert_eq!(
        harness.node.coordinator().committed_offset("g", "t", 0),
        None
    );
}

/// FindCoordinator with a key type that is neither 0 (group) nor 1 (transaction, KIP-98) is
/// INVALID_REQUEST (42), as Kafka answers: a retriable code would make the client ask forever.
/// Key type 1 stays COORDINATOR_NOT_AVAILABLE (15).
#[test]
fn find_coordinator_with_an_unknown_key_type_is_an_invalid_request() {
    let mut harness = Harness::new(&[]);
    for (key_type, expected) in [(2i8, 42i16), (-1, 42), (1, 15), (0, 0)] {
        let request = FindCoordinatorRequest::default()
            .with_key(text("g"))
            .with_key_type(key_type);
        let (_, effects) = harness.request(
            NOW,
            ApiKey::FindCoordinator,
            2,
            RequestKind::FindCoordinator(request),
        );
        let (_, effects) = harness.complete_syncs(effects);
        let [Effect::Respond { response, .. }] = effects.as_slice() else {
            panic!("{effects:?}")
        };
        let ResponseKind::FindCoordinator(response) = &**response else {
            panic!()
        };
        assert_eq!(response.error_code, expected, "key type {key_type}");
    }
}

/// offsets.topic.num.partitions must be a partition count a topic can have (1..=10000, the
/// broker's MAX_PARTITIONS_PER_TOPIC): a larger one would be clamped at creation while the
/// coordinator hashed groups by the configured count, so it is refused when parsed.
#[test]
fn offsets_topic_num_partitions_outside_a_topics_range_is_refused() {
    let mut config = NodeConfig::default();
    assert!(config.set("offsets.topic.num.partitions", "10001").is_err());
    assert!(config.set("offsets.topic.num.partitions", "0").is_err());
    assert_eq!(
        crate::broker::MAX_PARTITIONS_PER_TOPIC,
        10_000,
        "config.rs's bound must follow the broker's"
    );
    config.set("offsets.topic.num.partitions", "10000").unwrap();
    assert_eq!(config.offsets_topic_num_partitions, 10_000);
}

/// docs/coordinator.md: loading `__consumer_offsets` skips (and logs) what it cannot read. A
/// batch with an unparsable header (bad magic) in the middle of a partition neither fails the
/// read (which would stop the node from starting) nor hides the batches before it.
#[test]
fn an_unparsable_offsets_batch_is_skipped_not_fatal() {
    let mut harness = Harness::new(&[]);
    harness.find_coordinator();
    for offset in [1, 2, 3] {
        harness.commit(offset);
    }
    let partition = harness.node.coordinator().partition_for("g");
    let dir = format!("__consumer_offsets-{partition}");
    let path = harness
        .disk
        .paths()
        .into_iter()
        .find(|path| path.contains(&dir) && path.ends_with(".log"))
        .expect("the partition's segment");
    let contents = harness.disk.contents(&path).unwrap();
    let first = 12 + i32::from_be_bytes(contents[8..12].try_into().unwrap()) as u64;
    // The second batch's magic byte (offset 16 in the v2 header).
    assert!(harness.disk.corrupt(&path, first + 16..first + 17));
    let read = harness
        .node
        .broker()
        .read_internal(partition, 1 << 20)
        .expect("a damaged batch is skipped, not an error");
    let bytes: Vec<u8> = read
        .chunks
        .iter()
        .flat_map(|chunk| chunk.iter().copied())
        .collect();
    assert_eq!(
        bytes.len() as u64,
        first,
        "exactly the batch before the damage"
    );
}

/// A node on a real data directory whose topic registry is lost (both `karst.topics.*` slots
/// present, neither readable) refuses to start, as Kafka refuses to start on unreadable
/// metadata: the error names the directory and both files and says what the operator can do,
/// and the partition directory with its acknowledged records is left as it was. Before, the
/// node started with no topics, and the records were unreachable.
#[test]
fn a_node_whose_registry_slots_are_both_unreadable_refuses_to_start() {
    use crate::storage::FileStorage;
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().join("data");
    let config = NodeConfig {
        log_dirs: data_dir.clone(),
        ..NodeConfig::default()
    };
    let open = |now: Millis| {
        let storage = Arc::new(FileStorage::new(&data_dir).unwrap());
        Node::open(config.clone(), "127.0.0.1:9092", storage, 42, now)
    };
    let mut harness = Harness {
        node: open(NOW).unwrap(),
        disk: Arc::new(SimDisk::new(7)),
        next_sequence: 0,
    };
    let create = CreateTopicsRequest::default().with_topics(vec![
        create_topics_request::CreatableTopic::default()
            .with_name(TopicName(text("orders")))
            .with_num_partitions(1)
            .with_replication_factor(-1),
    ]);
    harness.request(
        NOW,
        ApiKey::CreateTopics,
        7,
        RequestKind::CreateTopics(create),
    );
    let produce = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(1000)
        .with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(TopicName(text("orders")))
            .with_partition_data(vec![
                produce_request::PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(bytes::Bytes::from(
                        crate::protocol::batch::testing::simple_batch(3, NOW),
                    ))),
            ])]);
    let (_, effects) = harness.request(NOW, ApiKey::Produce, 9, RequestKind::Produce(produce));
    assert!(
        effects.iter().any(|e| matches!(e, Effect::Respond { .. })),
        "{effects:?}"
    );
    harness.node.close().unwrap();
    drop(harness);
    let segment = data_dir.join("orders-0").join("00000000000000000000.log");
    let records = std::fs::read(&segment).unwrap();
    assert!(!records.is_empty());
    for slot in ["karst.topics.0", "karst.topics.1"] {
        let path = data_dir.join(slot);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 0xFF;
        std::fs::write(&path, bytes).unwrap();
    }
    let err = format!("{:#}", open(NOW + 10).unwrap_err());
    for expected in [
        data_dir.display().to_string(),
        "karst.topics.0".to_string(),
        "karst.topics.1".to_string(),
        "Refusing to start".to_string(),
        "restore both files from a backup".to_string(),
    ] {
        assert!(err.contains(&expected), "{expected:?} missing from: {err}");
    }
    assert_eq!(
        std::fs::read(&segment).unwrap(),
        records,
        "records untouched"
    );
    // The operator's way out: without the two files the node starts as a new one.
    for slot in ["karst.topics.0", "karst.topics.1"] {
        std::fs::remove_file(data_dir.join(slot)).unwrap();
    }
    let node = open(NOW + 20).unwrap();
    assert!(node.broker().topics.is_empty());
}

/// DeleteTopics through the node drops the groups' committed offsets of the deleted topic
/// (Kafka's coordinator does, onPartitionsDeleted): a group does not resume a topic created
/// again under the same name at the old topic's offsets. The tombstone is written to
/// `__consumer_offsets`, so a reopened node agrees. A deletion answered KAFKA_STORAGE_ERROR
/// (the registry write failed; the topic is deleted but may come back empty) drops them too.
#[test]
fn delete_topics_drops_the_committed_offsets_of_the_topic() {
    for registry_write_fails in [false, true] {
        let mut harness = Harness::new(&[]);
        harness.find_coordinator();
        let create = CreateTopicsRequest::default().with_topics(vec![
            create_topics_request::CreatableTopic::default()
                .with_name(TopicName(text("t")))
                .with_num_partitions(1)
                .with_replication_factor(1),
        ]);
        let (_, effects) = harness.request(
            NOW,
            ApiKey::CreateTopics,
            5,
            RequestKind::CreateTopics(create),
        );
        harness.complete_syncs(effects);
        let (_, effects) = harness.commit(7);
        harness.complete_syncs(effects);
        assert_eq!(harness.fetched_offset(), 7);

        let delete = DeleteTopicsRequest::default().with_topic_names(vec![TopicName(text("t"))]);
        harness.disk.set_fail_syncs(registry_write_fails);
        let (_, effects) = harness.request(
            NOW,
            ApiKey::DeleteTopics,
            4,
            RequestKind::DeleteTopics(delete),
        );
        harness.disk.set_fail_syncs(false);
        let answer = effects.iter().find_map(|effect| match effect {
            Effect::Respond { response, .. } => match &**response {
                ResponseKind::DeleteTopics(answer) => Some(answer.responses[0].error_code),
                _ => None,
            },
            _ => None,
        });
        let expected = if registry_write_fails {
            crate::protocol::error::KAFKA_STORAGE_ERROR
        } else {
            crate::protocol::error::NONE
        };
        assert_eq!(answer, Some(expected));
        harness.complete_syncs(effects);
        assert_eq!(harness.fetched_offset(), -1, "{registry_write_fails}");

        harness.node.close().unwrap();
        let mut config = NodeConfig::default();
        config.set("offsets.topic.num.partitions", "3").unwrap();
        let reopened = Node::open(config, "127.0.0.1:9092", harness.disk.clone(), 43, NOW).unwrap();
        reopened.invariants();
        assert_eq!(reopened.coordinator().committed_offset("g", "t", 0), None);
    }
}
