//! Unit tests of the broker role: inputs in, exact effects out, on the simulated disk.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::*;
use crate::protocol::batch::testing::simple_batch;
use crate::protocol::error;
use crate::storage::SimDisk;

mod admin;
mod corrupt;
mod durability;
mod topics;

const NOW: Millis = 1_000_000;

/// An effect reduced to comparable data (a SyncJob is opaque: only its offset is compared).
#[derive(Debug, PartialEq)]
#[allow(clippy::large_enum_variant)]
enum Seen {
    Respond(RequestId, i32, ResponseKind),
    NoResponse(RequestId),
    Sync(LogId, i64),
    Close(ConnectionId),
}

struct Harness {
    broker: Broker,
    next_sequence: u64,
}

impl Harness {
    fn new(settings: &[(&str, &str)]) -> Harness {
        let mut config = NodeConfig::default();
        for (key, value) in settings {
            config.set(key, value).unwrap();
        }
        Harness::open(&Arc::new(SimDisk::new(7)), config, NOW)
    }

    /// A broker opened at `now` on `disk`, which the test may fault, crash or reopen.
    fn open(disk: &Arc<SimDisk>, config: NodeConfig, now: Millis) -> Harness {
        Harness {
            broker: Broker::open(config, "127.0.0.1:9092", disk.clone(), 42, now).unwrap(),
            next_sequence: 0,
        }
    }

    fn step(&mut self, now: Millis, input: Input) -> Vec<Seen> {
        let mut effects = Vec::new();
        self.broker.step(now, input, &mut effects);
        self.broker.invariants();
        effects
            .into_iter()
            .map(|effect| match effect {
                Effect::Respond {
                    id,
                    correlation_id,
                    response,
                    ..
                } => Seen::Respond(id, correlation_id, *response),
                Effect::NoResponse { id } => Seen::NoResponse(id),
                Effect::Sync { log, job } => Seen::Sync(log, job.up_to_offset),
                Effect::Close { connection } => Seen::Close(connection),
            })
            .collect()
    }

    /// Sends a request on connection 1; returns its id and the effects.
    fn request(
        &mut self,
        now: Millis,
        version: i16,
        request: RequestKind,
    ) -> (RequestId, Vec<Seen>) {
        let api_key = api_key_of(&request);
        let id = RequestId {
            connection: 1,
            sequence: self.next_sequence,
        };
        self.next_sequence += 1;
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id(id));
        let decoded = DecodedRequest::new(api_key, header, request);
        let effects = self.step(
            now,
            Input::Request {
                id,
                request: Box::new(decoded),
            },
        );
        (id, effects)
    }

    fn create_topic(&mut self, name: &str, partitions: i32) -> uuid::Uuid {
        let (_, effects) = self.request(
            NOW,
            7,
            RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![
                create_topics_request::CreatableTopic::default()
                    .with_name(topic_name(name))
                    .with_num_partitions(partitions)
                    .with_replication_factor(-1),
            ])),
        );
        let (syncs, answers) = self.complete_syncs(effects);
        let [Seen::Respond(_, _, ResponseKind::CreateTopics(response))] = answers.as_slice() else {
            panic!("{answers:?}")
        };
        assert_eq!(response.topics[0].error_code, 0);
        let id = response.topics[0].topic_id;
        // The new logs are synced while empty, one job each, handed out with the answer.
        let expected: Vec<LogId> = (0..partitions)
            .map(|partition| LogId {
                topic_id: id,
                partition,
            })
            .collect();
        assert_eq!(syncs, expected);
        id
    }

    /// Completes the sync jobs among `effects` as the runtime would (successfully) and returns
    /// their logs and the other effects, including those the completions caused.
    fn complete_syncs(&mut self, effects: Vec<Seen>) -> (Vec<LogId>, Vec<Seen>) {
        complete_syncs(
            effects,
            |effect| match effect {
                Seen::Sync(log, up_to_offset) => SyncOr::Sync(log, up_to_offset),
                other => SyncOr::Other(other),
            },
            |input| self.step(NOW, input),
        )
    }
}

/// What [`complete_syncs`] is told about one effect.
pub(crate) enum SyncOr<E> {
    /// A sync of this log up to this offset (its job already run, if the test keeps bytes).
    Sync(LogId, i64),
    Other(E),
}

/// Completes sync effects as the runtime would, round after round (a completion may hand out
/// the next job), and returns the synced logs and every other effect. `take_sync` tells a
/// sync effect (running its job, if the test keeps real bytes) from the others; `step` feeds
/// the `Input::SyncCompleted`. Shared by the broker's and the node's test harnesses.
pub(crate) fn complete_syncs<E: std::fmt::Debug>(
    effects: Vec<E>,
    mut take_sync: impl FnMut(E) -> SyncOr<E>,
    mut step: impl FnMut(Input) -> Vec<E>,
) -> (Vec<LogId>, Vec<E>) {
    let mut syncs = Vec::new();
    let mut others = Vec::new();
    let mut pending = effects;
    // Each completion retires a job, and no completion hands out more than one per log.
    for _ in 0..100 {
        if pending.is_empty() {
            break;
        }
        let mut next = Vec::new();
        for effect in pending {
            match take_sync(effect) {
                SyncOr::Sync(log, up_to_offset) => {
                    syncs.push(log);
                    next.extend(step(Input::SyncCompleted {
                        log,
                        up_to_offset,
                        result: Ok(()),
                    }));
                }
                SyncOr::Other(other) => others.push(other),
            }
        }
        pending = next;
    }
    assert!(pending.is_empty(), "syncs kept coming: {pending:?}");
    (syncs, others)
}

/// The correlation id the harness sends with request `id`.
fn correlation_id(id: RequestId) -> i32 {
    100 + id.sequence as i32
}

/// The answer to request `id`.
fn answered(id: RequestId, response: ResponseKind) -> Seen {
    Seen::Respond(id, correlation_id(id), response)
}

fn api_key_of(request: &RequestKind) -> ApiKey {
    match request {
        RequestKind::Produce(_) => ApiKey::Produce,
        RequestKind::Fetch(_) => ApiKey::Fetch,
        RequestKind::ListOffsets(_) => ApiKey::ListOffsets,
        RequestKind::Metadata(_) => ApiKey::Metadata,
        RequestKind::CreateTopics(_) => ApiKey::CreateTopics,
        RequestKind::DeleteTopics(_) => ApiKey::DeleteTopics,
        RequestKind::CreatePartitions(_) => ApiKey::CreatePartitions,
        RequestKind::DescribeConfigs(_) => ApiKey::DescribeConfigs,
        RequestKind::IncrementalAlterConfigs(_) => ApiKey::IncrementalAlterConfigs,
        RequestKind::AlterConfigs(_) => ApiKey::AlterConfigs,
        RequestKind::DescribeLogDirs(_) => ApiKey::DescribeLogDirs,
        RequestKind::DeleteRecords(_) => ApiKey::DeleteRecords,
        RequestKind::InitProducerId(_) => ApiKey::InitProducerId,
        other => panic!("add {other:?}"),
    }
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn produce(topic: &str, partition: i32, acks: i16, records: Vec<u8>) -> RequestKind {
    RequestKind::Produce(
        ProduceRequest::default()
            .with_transactional_id(None)
            .with_acks(acks)
            .with_timeout_ms(1000)
            .with_topic_data(vec![produce_request::TopicProduceData::default()
                .with_name(topic_name(topic))
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(Bytes::from(records))),
                ])]),
    )
}

fn produce_response(
    topic: &str,
    partition: i32,
    error_code: i16,
    base_offset: i64,
) -> ResponseKind {
    ResponseKind::Produce(ProduceResponse::default().with_responses(vec![
        produce_response::TopicProduceResponse::default()
            .with_name(topic_name(topic))
            .with_partition_responses(vec![produce_response::PartitionProduceResponse::default()
                .with_index(partition)
                .with_error_code(error_code)
                .with_base_offset(base_offset)
                .with_log_start_offset(0)]),
    ]))
}

fn fetch(topic: &str, offset: i64, max_wait_ms: i32, min_bytes: i32) -> RequestKind {
    RequestKind::Fetch(
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(min_bytes)
            .with_max_bytes(1 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![fetch_request::FetchTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(vec![fetch_request::FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(1 << 20)])]),
    )
}

/// The records of the one partition of a fetch response.
fn fetched(response: &ResponseKind) -> (i16, i64, Bytes) {
    let ResponseKind::Fetch(response) = response else {
        panic!("{response:?}")
    };
    let partition = &response.responses[0].partitions[0];
    (
        partition.error_code,
        partition.high_watermark,
        partition.records.clone().expect("records are never null"),
    )
}

/// Produce acks=1 on the page-cache policy: answered at once with the assigned base offset,
/// and no sync: the log's first sync (its new directory entries) was handed out when the topic
/// was created (Harness::create_topic checks it), not left to the first append, which would
/// flush a file the producer is filling.
#[test]
fn produce_acks_1_answers_at_once() {
    let mut harness = Harness::new(&[]);
    harness.create_topic("t", 1);
    let (id, effects) = harness.request(NOW, 9, produce("t", 0, 1, simple_batch(3, 0)));
    assert_eq!(effects, vec![answered(id, produce_response("t", 0, 0, 0))]);
    let (id, effects) = harness.request(NOW, 9, produce("t", 0, 1, simple_batch(2, 0)));
    assert_eq!(effects, vec![answered(id, produce_response("t", 0, 0, 3))]);
}

/// acks=0: no response at all (Kafka sends none), but the request's place is released; an
/// error with acks=0 closes the connection so the producer notices.
#[test]
fn produce_acks_0_sends_nothing_and_closes_on_error() {
    let mut harness = Harness::new(&[]);
    harness.create_topic("t", 1);
    let (_, _) = harness.request(NOW, 9, produce("t", 0, 1, simple_batch(1, 0)));
    let (id, effects) = harness.request(NOW, 9, produce("t", 0, 0, simple_batch(1, 0)));
    assert_eq!(effects, vec![Seen::NoResponse(id)]);
    let (_, effects) = harness.request(NOW, 9, produce("missing", 0, 0, simple_batch(1, 0)));
    assert_eq!(effects, vec![Seen::Close(1)]);
}

/// Fetch long polling (max.wait.ms, min.bytes): a fetch with no data is parked, answered as
/// soon as a produce brings data, or at its deadline with empty (not null) records.
#[test]
fn fetch_long_polls_until_data_or_deadline() {
    let mut harness = Harness::new(&[]);
    harness.create_topic("f", 1);
    let (waiting, effects) = harness.request(NOW, 12, fetch("f", 0, 500, 1));
    assert_eq!(effects, vec![]);
    assert_eq!(harness.broker.next_deadline(), Some(NOW + 500));
    let (_, effects) = harness.request(NOW + 10, 9, produce("f", 0, 1, simple_batch(2, 0)));
    let Some(Seen::Respond(answered, _, response)) = effects.last() else {
        panic!("{effects:?}")
    };
    assert_eq!(*answered, waiting);
    let (error_code, high_watermark, records) = fetched(response);
    assert_eq!((error_code, high_watermark), (0, 2));
    assert_eq!(
        crate::protocol::batch::validate(&records)
            .unwrap()
            .records_count,
        2
    );

    let (idle, effects) = harness.request(NOW + 20, 12, fetch("f", 2, 500, 1));
    assert_eq!(effects, vec![]);
    assert_eq!(harness.step(NOW + 519, Input::Timer), vec![]);
    let effects = harness.step(NOW + 520, Input::Timer);
    let [Seen::Respond(answered, _, response)] = effects.as_slice() else {
        panic!("{effects:?}")
    };
    assert_eq!(*answered, idle);
    assert_eq!(fetched(response), (0, 2, Bytes::new()));
    assert!(harness.broker.parked_fetches.is_empty());
}

/// A closed connection's parked fetches are dropped.
#[test]
fn connection_close_drops_parked_fetches() {
    let mut harness = Harness::new(&[]);
    harness.create_topic("f", 1);
    harness.request(NOW, 12, fetch("f", 0, 500, 1));
    assert_eq!(harness.step(NOW, Input::ConnectionClosed(1)), vec![]);
    assert!(harness.broker.parked_fetches.is_empty());
    assert_ne!(harness.broker.next_deadline(), Some(NOW + 500));
}

/// KIP-227 sessions are declined: an incremental fetch on an unknown session gets
/// FETCH_SESSION_ID_NOT_FOUND with session id 0.
#[test]
fn fetch_sessions_are_declined() {
    let mut harness = Harness::new(&[]);
    harness.create_topic("f", 1);
    let RequestKind::Fetch(request) = fetch("f", 0, 0, 1) else {
        unreachable!()
    };
    let (id, effects) = harness.request(
        NOW,
        12,
        RequestKind::Fetch(request.with_session_id(5).with_session_epoch(1)),
    );
    assert_eq!(
        effects,
        vec![answered(
            id,
            ResponseKind::Fetch(
                FetchResponse::default()
                    .with_error_code(error::FETCH_SESSION_ID_NOT_FOUND)
                    .with_session_id(0)
            )
        )]
    );
}

/// DeleteRecords advances the log start offset (low watermark); ListOffsets earliest follows,
/// and a fetch below it is OFFSET_OUT_OF_RANGE with the offsets unknown (-1), as Kafka's
/// ReplicaManager answers an OffsetOutOfRangeException.
#[test]
fn delete_records_moves_the_log_start() {
    let mut harness = Harness::new(&[("log.segment.bytes", "100")]);
    harness.create_topic("r", 1);
    for _ in 0..4 {
        harness.request(NOW, 9, produce("r", 0, 1, simple_batch(2, 0)));
    }
    let (_, effects) = harness.request(
        NOW,
        2,
        RequestKind::DeleteRecords(DeleteRecordsRequest::default().with_topics(vec![
            delete_records_request::DeleteRecordsTopic::default()
                .with_name(topic_name("r"))
                .with_partitions(vec![delete_records_request::DeleteRecordsPartition::default()
                    .with_partition_index(0)
                    .with_offset(4)]),
        ])),
    );
    let [Seen::Respond(_, _, ResponseKind::DeleteRecords(response))] = effects.as_slice() else {
        panic!("{effects:?}")
    };
    let result = &response.topics[0].partitions[0];
    assert_eq!((result.error_code, result.low_watermark), (error::NONE, 4));
    let (_, effects) = harness.request(NOW, 12, fetch("r", 0, 0, 1));
    let [Seen::Respond(_, _, response)] = effects.as_slice() else {
        panic!("{effects:?}")
    };
    assert_eq!(fetched(response).0, error::OFFSET_OUT_OF_RANGE);
    assert_eq!(fetched(response).1, -1);
}

/// Every advertised (API, version) pair is answered with a response that encodes at that
/// version and decodes back: kafka-protocol refuses to encode a field the version lacks, so
/// this catches a handler setting one (the connection would be closed in production).
#[test]
fn every_advertised_version_encodes_its_response() {
    use crate::protocol::api_versions::SUPPORTED;
    use crate::protocol::codec::{decode_response, encode_response};
    let mut harness = Harness::new(&[]);
    let topic_id = harness.create_topic("all", 2);
    harness.request(NOW, 9, produce("all", 0, 1, simple_batch(3, 10)));
    for &(api_key, min, max) in SUPPORTED {
        if crate::node::routes_to_coordinator(api_key) {
            // Answered by the node and the group coordinator, not the broker: covered by
            // node::tests and coordinator::tests.
            continue;
        }
        for version in min..=max {
            let name = format!("v{}-{version}", api_key as i16);
            let request = match api_key {
                ApiKey::Produce => produce("all", 1, 1, simple_batch(1, 0)),
                ApiKey::Fetch => {
                    let RequestKind::Fetch(mut request) = fetch("all", 0, 0, 1) else {
                        unreachable!()
                    };
                    if version >= 13 {
                        request.topics[0].topic = TopicName::default();
                        request.topics[0].topic_id = topic_id;
                    }
                    if version < 7 {
                        request.session_epoch = -1;
                    }
                    RequestKind::Fetch(request)
                }
                ApiKey::ListOffsets => {
                    RequestKind::ListOffsets(ListOffsetsRequest::default().with_topics(vec![
                        list_offsets_request::ListOffsetsTopic::default()
                            .with_name(topic_name("all"))
                            .with_partitions(vec![
                                list_offsets_request::ListOffsetsPartition::default()
                                    .with_timestamp(if version >= 7 { -3 } else { -1 }),
                            ]),
                    ]))
                }
                ApiKey::Metadata => {
                    RequestKind::Metadata(MetadataRequest::default().with_topics(if version == 0 {
                        Some(vec![])
                    } else {
                        None
                    }))
                }
                ApiKey::ApiVersions => RequestKind::ApiVersions(ApiVersionsRequest::default()),
                ApiKey::CreateTopics => {
                    RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![
                        create_topics_request::CreatableTopic::default()
                            .with_name(topic_name(&name))
                            .with_num_partitions(1)
                            .with_replication_factor(1),
                        create_topics_request::CreatableTopic::default()
                            .with_name(topic_name("bad name"))
                            .with_num_partitions(1)
                            .with_replication_factor(1),
                    ]))
                }
                ApiKey::DeleteTopics => {
                    harness.create_topic(&name, 1);
                    let request = if version >= 6 {
                        DeleteTopicsRequest::default()
                            .with_topics(vec![delete_topics_request::DeleteTopicState::default()
                                .with_name(Some(topic_name(&name)))])
                    } else {
                        DeleteTopicsRequest::default().with_topic_names(vec![topic_name(&name)])
                    };
                    RequestKind::DeleteTopics(request)
                }
                ApiKey::DeleteRecords => {
                    RequestKind::DeleteRecords(DeleteRecordsRequest::default().with_topics(vec![
                        delete_records_request::DeleteRecordsTopic::default()
                            .with_name(topic_name("all"))
                            .with_partitions(vec![
                                delete_records_request::DeleteRecordsPartition::default()
                                    .with_offset(0),
                            ]),
                    ]))
                }
                ApiKey::InitProducerId => RequestKind::InitProducerId(
                    InitProducerIdRequest::default().with_transactional_id(None),
                ),
                ApiKey::DescribeConfigs => RequestKind::DescribeConfigs(
                    DescribeConfigsRequest::default().with_resources(vec![
                        describe_configs_request::DescribeConfigsResource::default()
                            .with_resource_type(2)
                            .with_resource_name(StrBytes::from_static_str("all"))
                            .with_configuration_keys(None),
                        describe_configs_request::DescribeConfigsResource::default()
                            .with_resource_type(4)
                            .with_resource_name(StrBytes::from_static_str("1"))
                            .with_configuration_keys(None),
                    ]),
                ),
                ApiKey::CreatePartitions => RequestKind::CreatePartitions(
                    CreatePartitionsRequest::default().with_topics(vec![
                        create_partitions_request::CreatePartitionsTopic::default()
                            .with_name(topic_name("all"))
                            .with_count(3 + version as i32)
                            .with_assignments(None),
                    ]),
                ),
                ApiKey::IncrementalAlterConfigs => RequestKind::IncrementalAlterConfigs(
                    IncrementalAlterConfigsRequest::default().with_resources(vec![
                        incremental_alter_configs_request::AlterConfigsResource::default()
                            .with_resource_type(2)
                            .with_resource_name(StrBytes::from_static_str("all"))
                            .with_configs(vec![
                                incremental_alter_configs_request::AlterableConfig::default()
                                    .with_name(StrBytes::from_static_str("retention.ms"))
                                    .with_value(Some(StrBytes::from_static_str("1000000"))),
                            ]),
                    ]),
                ),
                ApiKey::DescribeCluster => {
                    RequestKind::DescribeCluster(DescribeClusterRequest::default())
                }
                ApiKey::AlterConfigs => {
                    RequestKind::AlterConfigs(AlterConfigsRequest::default().with_resources(vec![
                        alter_configs_request::AlterConfigsResource::default()
                            .with_resource_type(2)
                            .with_resource_name(StrBytes::from_static_str("all"))
                            .with_configs(vec![alter_configs_request::AlterableConfig::default()
                                .with_name(StrBytes::from_static_str("retention.ms"))
                                .with_value(Some(StrBytes::from_static_str("1000000")))]),
                        alter_configs_request::AlterConfigsResource::default()
                            .with_resource_type(2)
                            .with_resource_name(StrBytes::from_static_str("missing")),
                    ]))
                }
                ApiKey::DescribeLogDirs => RequestKind::DescribeLogDirs(
                    DescribeLogDirsRequest::default().with_topics(None),
                ),
                other => panic!("add a request for {other:?}"),
            };
            let id = RequestId {
                connection: 1,
                sequence: harness.next_sequence,
            };
            harness.next_sequence += 1;
            let header = RequestHeader::default()
                .with_request_api_key(api_key as i16)
                .with_request_api_version(version)
                .with_correlation_id(5);
            let mut effects = Vec::new();
            harness.broker.step(
                NOW,
                Input::Request {
                    id,
                    request: Box::new(DecodedRequest::new(api_key, header, request)),
                },
                &mut effects,
            );
            harness.broker.invariants();
            let response = effects
                .into_iter()
                .find_map(|effect| match effect {
                    Effect::Respond { response, .. } => Some(response),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("{api_key:?} v{version}: no response"));
            let mut out = bytes::BytesMut::new();
            encode_response(5, api_key, version, &response, &mut out)
                .unwrap_or_else(|err| panic!("{api_key:?} v{version}: {err}"));
            let (correlation_id, decoded) =
                decode_response(api_key, version, out.freeze().slice(4..))
                    .unwrap_or_else(|err| panic!("{api_key:?} v{version}: {err}"));
            assert_eq!(correlation_id, 5);
            assert_eq!(
                std::mem::discriminant(&decoded),
                std::mem::discriminant(&*response)
            );
        }
    }
}

/// KIP-98 producer ids must never repeat: a node whose disk was lost (no registry) cannot know
/// the ids it handed out before, so it starts above anything an earlier incarnation could
/// have reached by `now`. The same wiped node restarted later hands out larger ids.
#[test]
fn a_registry_less_node_starts_producer_ids_above_earlier_incarnations() {
    let init = |now: Millis| {
        let mut harness = Harness::open(&Arc::new(SimDisk::new(7)), NodeConfig::default(), now);
        let request = RequestKind::InitProducerId(
            InitProducerIdRequest::default().with_transactional_id(None),
        );
        let (_, effects) = harness.request(now, 4, request);
        let [Seen::Respond(_, _, ResponseKind::InitProducerId(response))] = effects.as_slice()
        else {
            panic!("{effects:?}")
        };
        assert_eq!(response.error_code, 0);
        response.producer_id.0
    };
    let before_wipe = init(NOW);
    let after_wipe = init(NOW + 1);
    assert!(before_wipe >= NOW * 1000, "{before_wipe}");
    assert!(
        after_wipe > before_wipe + 999,
        "{before_wipe} then {after_wipe}"
    );
}

/// `__consumer_offsets` is compacted, as in Kafka (cleanup.policy=compact, no deletion by age
/// or size): the latest commit of every group partition survives however old it is.
#[test]
fn consumer_offsets_is_compacted_and_never_deleted_by_retention() {
    let mut harness = Harness::new(&[("log.retention.ms", "1000")]);
    assert_eq!(harness.broker.ensure_consumer_offsets(3, NOW), Ok(3));
    let topic = &harness.broker.topics[super::internal::CONSUMER_OFFSETS];
    for partition in &topic.partitions {
        let config = partition.log.config();
        assert_eq!(config.cleanup_policy, crate::log::CleanupPolicy::Compact);
        assert_eq!((config.retention_ms, config.retention_bytes), (-1, -1));
    }
    assert_eq!(
        topic
            .config
            .overrides
            .get("cleanup.policy")
            .map(String::as_str),
        Some("compact")
    );
}

/// KIP-98 (and KIP-730's rule that a producer id block is never handed out twice): a producer
/// id must never repeat, even when the newest registry slot is corrupted after the node handed
/// out ids from the block it reserved. Before the fix, recovery fell back to the older slot's
/// smaller limit and handed out an id a live producer already held; that producer's first
/// batch then made the new producer's first batch (same id, epoch 0, sequence 0) look like a
/// retry: acknowledged with the other record's offset and never written (simulator, node
/// workload, seed 1260).
#[test]
fn corrupting_the_newest_registry_slot_never_reuses_a_producer_id() {
    use crate::protocol::batch::testing::{build_batch, TestRecord};
    let disk = Arc::new(SimDisk::new(7));
    let open = |disk: &Arc<SimDisk>| Harness::open(disk, NodeConfig::default(), NOW);
    let init = |harness: &mut Harness| {
        let request = RequestKind::InitProducerId(
            InitProducerIdRequest::default().with_transactional_id(None),
        );
        let (_, effects) = harness.request(NOW, 4, request);
        let [Seen::Respond(_, _, ResponseKind::InitProducerId(response))] = effects.as_slice()
        else {
            panic!("{effects:?}")
        };
        assert_eq!(response.error_code, 0);
        response.producer_id.0
    };
    let mut harness = open(&disk);
    harness.create_topic("p", 1);
    // Cross a block boundary, so the newest slot holds a larger limit than the older one.
    let mut handed_out: Vec<i64> = (0..registry::PRODUCER_ID_BLOCK + 1)
        .map(|_| init(&mut harness))
        .collect();
    // The last producer holds its id but has not written yet; an earlier one has.
    let holder = *handed_out.last().unwrap();
    let writer = handed_out[0];
    let value = |value: u8| {
        vec![TestRecord {
            key: None,
            value: Some(vec![value]),
            headers: Vec::new(),
        }]
    };
    let (_, effects) = harness.request(
        NOW,
        9,
        produce("p", 0, -1, build_batch(&value(1), 0, writer, 0, 0)),
    );
    let [Seen::Respond(_, _, written), ..] = effects.as_slice() else {
        panic!("{effects:?}")
    };
    assert_eq!(written, &produce_response("p", 0, 0, 0));
    harness.broker.close().unwrap();
    // The node dies and a stored byte of the newest slot flips.
    assert!(disk.corrupt("karst.topics.0", 20..21));
    let mut harness = open(&disk);
    // Recovery repaired the corrupted slot.
    let (_, unreadable) = registry::Registry::load(disk.as_ref()).unwrap();
    assert!(!unreadable);
    for _ in 0..3 {
        let id = init(&mut harness);
        assert!(
            handed_out.iter().all(|&old| id > old),
            "producer id {id} handed out again (or below one already handed out)"
        );
        handed_out.push(id);
    }
    // The holder's first batch, then the new producer's first batch: both are written.
    let newcomer = *handed_out.last().unwrap();
    let (_, effects) = harness.request(
        NOW,
        9,
        produce("p", 0, -1, build_batch(&value(2), 0, holder, 0, 0)),
    );
    let [Seen::Respond(_, _, first), ..] = effects.as_slice() else {
        panic!("{effects:?}")
    };
    assert_eq!(first, &produce_response("p", 0, 0, 1));
    let (_, effects) = harness.request(
        NOW,
        9,
        produce("p", 0, -1, build_batch(&value(3), 0, newcomer, 0, 0)),
    );
    let [Seen::Respond(_, _, second), ..] = effects.as_slice() else {
        panic!("{effects:?}")
    };
    assert_eq!(second, &produce_response("p", 0, 0, 2));
}
