//! Consumer groups against the real `karst node` binary, in raw Kafka protocol at the versions
//! librdkafka sends (FindCoordinator v2, JoinGroup v5, SyncGroup v3, Heartbeat v3,
//! OffsetCommit v9, OffsetFetch v9) and kafka-python's FindCoordinator v6 batch (KIP-699).
//! Rules checked: FindCoordinator names the coordinator; the KIP-394 member-id round; a
//! rebalance gives every member the new generation and only the leader the member list;
//! commits are fetched back; `__consumer_offsets` is internal (hidden from listings, closed
//! to clients); committed offsets and groups survive SIGTERM and kill -9.

mod broker_support;

use std::time::{Duration, Instant};

use broker_support::*;
use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const MEMBER_ID_REQUIRED: i16 = 79;
const REBALANCE_IN_PROGRESS: i16 = 27;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const SESSION_TIMEOUT_MS: i32 = 10_000;

/// Fast rebalances: no initial delay (Kafka's default waits 3 s for more members).
const FAST: &[&str] = &["group.initial.rebalance.delay.ms=0"];

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

fn group(id: &str) -> GroupId {
    GroupId(text(id))
}

/// A ConsumerProtocolSubscription v0 (with its i16 version prefix) for `topics`.
fn subscription(topics: &[&str]) -> Bytes {
    let mut out = Vec::new();
    out.extend_from_slice(&0i16.to_be_bytes());
    out.extend_from_slice(&(topics.len() as i32).to_be_bytes());
    for topic in topics {
        out.extend_from_slice(&(topic.len() as i16).to_be_bytes());
        out.extend_from_slice(topic.as_bytes());
    }
    out.extend_from_slice(&(-1i32).to_be_bytes());
    Bytes::from(out)
}

/// FindCoordinator for a group, retried while COORDINATOR_NOT_AVAILABLE (the offsets topic
/// may be created by the first lookup): (error, node id, host, port) of the final answer.
fn find_coordinator(client: &mut Client, version: i16, group_id: &str) -> (i16, i32, String, i32) {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let mut request = FindCoordinatorRequest::default().with_key_type(0);
        if version >= 4 {
            request.coordinator_keys = vec![text(group_id)];
        } else {
            request.key = text(group_id);
        }
        let ResponseKind::FindCoordinator(response) = client.call(
            ApiKey::FindCoordinator,
            version,
            RequestKind::FindCoordinator(request),
        ) else {
            panic!("not a FindCoordinator response")
        };
        let answer = if version >= 4 {
            assert_eq!(response.coordinators.len(), 1);
            let c = &response.coordinators[0];
            assert_eq!(c.key.as_str(), group_id);
            (c.error_code, c.node_id.0, c.host.to_string(), c.port)
        } else {
            (
                response.error_code,
                response.node_id.0,
                response.host.to_string(),
                response.port,
            )
        };
        if answer.0 != COORDINATOR_NOT_AVAILABLE || Instant::now() > deadline {
            return answer;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn join_request(group_id: &str, member_id: &str, topics: &[&str]) -> RequestKind {
    RequestKind::JoinGroup(
        JoinGroupRequest::default()
            .with_group_id(group(group_id))
            .with_session_timeout_ms(SESSION_TIMEOUT_MS)
            .with_rebalance_timeout_ms(SESSION_TIMEOUT_MS)
            .with_member_id(text(member_id))
            .with_protocol_type(text("consumer"))
            .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
            )
            .with_name(text("range"))
            .with_metadata(subscription(topics))]),
    )
}

fn join_response(response: ResponseKind) -> JoinGroupResponse {
    match response {
        ResponseKind::JoinGroup(response) => response,
        other => panic!("{other:?}"),
    }
}

/// JoinGroup v5 with the KIP-394 round: the first join gets MEMBER_ID_REQUIRED and an id;
/// returns that id (the caller joins with it).
fn member_id_round(client: &mut Client, group_id: &str) -> String {
    let response =
        join_response(client.call(ApiKey::JoinGroup, 5, join_request(group_id, "", &["t"])));
    assert_eq!(response.error_code, MEMBER_ID_REQUIRED, "KIP-394");
    assert!(!response.member_id.is_empty());
    assert!(
        response.member_id.starts_with("karst-test-"),
        "member id is client.id-uuid: {}",
        response.member_id
    );
    response.member_id.to_string()
}

fn sync(
    client: &mut Client,
    group_id: &str,
    generation_id: i32,
    member_id: &str,
    assignments: &[(&str, &[u8])],
) -> SyncGroupResponse {
    let request = SyncGroupRequest::default()
        .with_group_id(group(group_id))
        .with_generation_id(generation_id)
        .with_member_id(text(member_id))
        .with_assignments(
            assignments
                .iter()
                .map(|(member, assignment)| {
                    sync_group_request::SyncGroupRequestAssignment::default()
                        .with_member_id(text(member))
                        .with_assignment(Bytes::copy_from_slice(assignment))
                })
                .collect(),
        );
    match client.call(ApiKey::SyncGroup, 3, RequestKind::SyncGroup(request)) {
        ResponseKind::SyncGroup(response) => response,
        other => panic!("{other:?}"),
    }
}

fn heartbeat(client: &mut Client, group_id: &str, generation_id: i32, member_id: &str) -> i16 {
    let request = HeartbeatRequest::default()
        .with_group_id(group(group_id))
        .with_generation_id(generation_id)
        .with_member_id(text(member_id));
    match client.call(ApiKey::Heartbeat, 3, RequestKind::Heartbeat(request)) {
        ResponseKind::Heartbeat(response) => response.error_code,
        other => panic!("{other:?}"),
    }
}

/// OffsetCommit v9 of `offsets` (partition, offset) on topic `topic`: per-partition errors.
fn commit(
    client: &mut Client,
    group_id: &str,
    generation_id: i32,
    member_id: &str,
    topic: &str,
    offsets: &[(i32, i64)],
) -> Vec<i16> {
    let request = OffsetCommitRequest::default()
        .with_group_id(group(group_id))
        .with_generation_id_or_member_epoch(generation_id)
        .with_member_id(text(member_id))
        .with_topics(vec![
            offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(TopicName(text(topic)))
                .with_partitions(
                    offsets
                        .iter()
                        .map(|&(partition, offset)| {
                            offset_commit_request::OffsetCommitRequestPartition::default()
                                .with_partition_index(partition)
                                .with_committed_offset(offset)
                                .with_committed_metadata(Some(text("meta")))
                        })
                        .collect(),
                ),
        ]);
    match client.call(ApiKey::OffsetCommit, 9, RequestKind::OffsetCommit(request)) {
        ResponseKind::OffsetCommit(response) => response.topics[0]
            .partitions
            .iter()
            .map(|partition| partition.error_code)
            .collect(),
        other => panic!("{other:?}"),
    }
}

/// OffsetFetch v9 (groups array) of partitions 0..count of `topic`: (partition, offset).
fn fetch_offsets(client: &mut Client, group_id: &str, topic: &str, count: i32) -> Vec<(i32, i64)> {
    let request = OffsetFetchRequest::default().with_groups(vec![
        offset_fetch_request::OffsetFetchRequestGroup::default()
            .with_group_id(group(group_id))
            .with_topics(Some(vec![
                offset_fetch_request::OffsetFetchRequestTopics::default()
                    .with_name(TopicName(text(topic)))
                    .with_partition_indexes((0..count).collect()),
            ])),
    ]);
    match client.call(ApiKey::OffsetFetch, 9, RequestKind::OffsetFetch(request)) {
        ResponseKind::OffsetFetch(response) => {
            let fetched = &response.groups[0];
            assert_eq!(fetched.error_code, 0);
            assert_eq!(fetched.group_id.as_str(), group_id);
            let mut offsets: Vec<(i32, i64)> = fetched.topics[0]
                .partitions
                .iter()
                .map(|partition| {
                    assert_eq!(partition.error_code, 0);
                    (partition.partition_index, partition.committed_offset)
                })
                .collect();
            offsets.sort();
            offsets
        }
        other => panic!("{other:?}"),
    }
}

fn describe(client: &mut Client, group_id: &str) -> describe_groups_response::DescribedGroup {
    let request = DescribeGroupsRequest::default().with_groups(vec![group(group_id)]);
    match client.call(
        ApiKey::DescribeGroups,
        5,
        RequestKind::DescribeGroups(request),
    ) {
        ResponseKind::DescribeGroups(mut response) => response.groups.remove(0),
        other => panic!("{other:?}"),
    }
}

fn list_groups(client: &mut Client) -> Vec<(String, String)> {
    match client.call(
        ApiKey::ListGroups,
        4,
        RequestKind::ListGroups(ListGroupsRequest::default()),
    ) {
        ResponseKind::ListGroups(response) => {
            assert_eq!(response.error_code, 0);
            response
                .groups
                .iter()
                .map(|g| (g.group_id.to_string(), g.group_state.to_string()))
                .collect()
        }
        other => panic!("{other:?}"),
    }
}

/// One member joined alone: (member id, generation).
fn join_alone(client: &mut Client, group_id: &str) -> (String, i32) {
    let member_id = member_id_round(client, group_id);
    let joined = join_response(client.call(
        ApiKey::JoinGroup,
        5,
        join_request(group_id, &member_id, &["t"]),
    ));
    assert_eq!(joined.error_code, 0);
    assert_eq!(joined.leader, joined.member_id, "the only member leads");
    let synced = sync(
        client,
        group_id,
        joined.generation_id,
        &member_id,
        &[(&member_id, b"all")],
    );
    assert_eq!(synced.error_code, 0);
    assert_eq!(&synced.assignment[..], b"all");
    (member_id, joined.generation_id)
}

/// FindCoordinator names this node at v0, v2 (librdkafka) and v4+ (kafka-python, a batch of
/// keys, KIP-699); a transaction coordinator (key type 1) is COORDINATOR_NOT_AVAILABLE, as
/// Karst has none yet.
#[test]
fn find_coordinator_names_this_node_for_groups() {
    let node = NodeProcess::start(&[]);
    let mut client = node.connect();
    for version in [0, 2, 3, 4, 6] {
        let (code, node_id, host, port) = find_coordinator(&mut client, version, "g");
        assert_eq!(code, 0, "v{version}");
        assert_eq!(node_id, 1);
        assert_eq!(host, node.addr.ip().to_string());
        assert_eq!(port, node.addr.port() as i32);
    }
    let request = FindCoordinatorRequest::default()
        .with_key_type(0)
        .with_coordinator_keys(vec![text("a"), text("b"), text("c")]);
    let ResponseKind::FindCoordinator(response) = client.call(
        ApiKey::FindCoordinator,
        4,
        RequestKind::FindCoordinator(request),
    ) else {
        panic!()
    };
    let keys: Vec<(&str, i16, i32)> = response
        .coordinators
        .iter()
        .map(|c| (c.key.as_str(), c.error_code, c.node_id.0))
        .collect();
    assert_eq!(keys, [("a", 0, 1), ("b", 0, 1), ("c", 0, 1)]);
    let request = FindCoordinatorRequest::default()
        .with_key_type(1)
        .with_key(text("tx"));
    let ResponseKind::FindCoordinator(response) = client.call(
        ApiKey::FindCoordinator,
        2,
        RequestKind::FindCoordinator(request),
    ) else {
        panic!()
    };
    assert_eq!(response.error_code, COORDINATOR_NOT_AVAILABLE);
}

/// The classic protocol at librdkafka's versions: KIP-394 member-id round, join, sync,
/// heartbeat, commit and fetch back; a second member on another connection triggers a
/// rebalance (the first member's heartbeat says REBALANCE_IN_PROGRESS), both get generation 2
/// and only the leader gets the member list; a JoinGroup parked in the join phase is answered
/// before a later request on the same connection (responses in request order);
/// DescribeGroups and ListGroups show the Stable group with both members.
#[test]
fn two_members_join_sync_heartbeat_commit_and_fetch() {
    let node = NodeProcess::start(FAST);
    let mut first = node.connect();
    assert_eq!(first.create_topic("t", 4), 0);
    assert_eq!(find_coordinator(&mut first, 2, "g").0, 0);

    let (first_id, generation) = join_alone(&mut first, "g");
    assert_eq!(generation, 1);
    assert_eq!(heartbeat(&mut first, "g", generation, &first_id), 0);
    assert_eq!(
        commit(
            &mut first,
            "g",
            generation,
            &first_id,
            "t",
            &[(0, 5), (1, 7)]
        ),
        [0, 0]
    );
    assert_eq!(
        fetch_offsets(&mut first, "g", "t", 4),
        [(0, 5), (1, 7), (2, -1), (3, -1)]
    );

    // A second member: its join waits in PreparingRebalance until the first rejoins.
    let mut second = node.connect();
    let second_id = member_id_round(&mut second, "g");
    let parked = second.send(ApiKey::JoinGroup, 5, join_request("g", &second_id, &["t"]));
    let after = second.send(
        ApiKey::ApiVersions,
        3,
        RequestKind::ApiVersions(ApiVersionsRequest::default()),
    );
    // The second connection's join may reach the node after this heartbeat: until it does the
    // heartbeat is NONE, afterwards REBALANCE_IN_PROGRESS.
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        match heartbeat(&mut first, "g", generation, &first_id) {
            REBALANCE_IN_PROGRESS => break,
            0 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            other => panic!("heartbeat during the rebalance: {other}"),
        }
    }
    let rejoined =
        join_response(first.call(ApiKey::JoinGroup, 5, join_request("g", &first_id, &["t"])));
    let joined = join_response(second.receive(ApiKey::JoinGroup, 5, parked));
    let ResponseKind::ApiVersions(_) = second.receive(ApiKey::ApiVersions, 3, after) else {
        panic!("expected ApiVersions")
    };
    assert_eq!((rejoined.error_code, joined.error_code), (0, 0));
    assert_eq!(rejoined.generation_id, 2);
    assert_eq!(joined.generation_id, 2);
    assert_eq!(
        rejoined.leader.as_str(),
        first_id,
        "the old leader stays leader"
    );
    assert_eq!(joined.leader.as_str(), first_id);
    assert_eq!(rejoined.members.len(), 2, "the leader gets the members");
    assert!(joined.members.is_empty(), "followers get no member list");

    // The follower's sync waits for the leader's assignment.
    let follower_sync = second.send(
        ApiKey::SyncGroup,
        3,
        RequestKind::SyncGroup(
            SyncGroupRequest::default()
                .with_group_id(group("g"))
                .with_generation_id(2)
                .with_member_id(text(&second_id)),
        ),
    );
    let leader_sync = sync(
        &mut first,
        "g",
        2,
        &first_id,
        &[(&first_id, b"p0p1"), (&second_id, b"p2p3")],
    );
    assert_eq!(leader_sync.error_code, 0);
    assert_eq!(&leader_sync.assignment[..], b"p0p1");
    let ResponseKind::SyncGroup(follower) = second.receive(ApiKey::SyncGroup, 3, follower_sync)
    else {
        panic!()
    };
    assert_eq!(follower.error_code, 0);
    assert_eq!(&follower.assignment[..], b"p2p3");
    assert_eq!(heartbeat(&mut second, "g", 2, &second_id), 0);
    assert_eq!(
        commit(&mut second, "g", 2, &second_id, "t", &[(2, 11)]),
        [0]
    );
    assert_eq!(
        fetch_offsets(&mut first, "g", "t", 4),
        [(0, 5), (1, 7), (2, 11), (3, -1)]
    );
    // A commit with the old generation is fenced (ILLEGAL_GENERATION).
    assert_eq!(commit(&mut first, "g", 1, &first_id, "t", &[(0, 99)]), [22]);

    let described = describe(&mut first, "g");
    assert_eq!(described.error_code, 0);
    assert_eq!(described.group_state.as_str(), "Stable");
    assert_eq!(described.protocol_type.as_str(), "consumer");
    assert_eq!(described.protocol_data.as_str(), "range");
    let mut members: Vec<(String, String, String)> = described
        .members
        .iter()
        .map(|m| {
            (
                m.member_id.to_string(),
                m.client_host.to_string(),
                String::from_utf8_lossy(&m.member_assignment).to_string(),
            )
        })
        .collect();
    members.sort();
    let mut expected = vec![
        (
            first_id.clone(),
            "/127.0.0.1".to_string(),
            "p0p1".to_string(),
        ),
        (
            second_id.clone(),
            "/127.0.0.1".to_string(),
            "p2p3".to_string(),
        ),
    ];
    expected.sort();
    assert_eq!(members, expected, "client_host is Kafka's \"/ip\"");
    assert_eq!(
        list_groups(&mut second),
        [("g".to_string(), "Stable".to_string())]
    );
}

/// `__consumer_offsets` is internal: created by the first FindCoordinator with
/// offsets.topic.num.partitions partitions, absent from a Metadata listing, reported with
/// is_internal when named; clients cannot produce to it (INVALID_TOPIC_EXCEPTION), delete it,
/// add partitions, alter its configs or delete its records.
#[test]
fn consumer_offsets_is_internal_and_closed_to_clients() {
    let node = NodeProcess::start(&["offsets.topic.num.partitions=5"]);
    let mut client = node.connect();
    assert_eq!(client.create_topic("visible", 1), 0);
    assert_eq!(find_coordinator(&mut client, 2, "g").0, 0);

    let listing = client.metadata(12, None);
    let names: Vec<String> = listing
        .topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.to_string()))
        .collect();
    assert_eq!(names, ["visible"], "internal topics are not listed");
    let named = client.metadata(12, Some(&["__consumer_offsets"]));
    assert_eq!(named.topics[0].error_code, 0);
    assert!(named.topics[0].is_internal);
    assert_eq!(named.topics[0].partitions.len(), 5);

    let batch = karst::protocol::batch::testing::simple_batch(1, 0);
    assert_eq!(
        client.produce(9, 1, "__consumer_offsets", 0, batch).0,
        INVALID_TOPIC_EXCEPTION
    );
    let delete = DeleteTopicsRequest::default()
        .with_topic_names(vec![TopicName(text("__consumer_offsets"))])
        .with_timeout_ms(5000);
    let ResponseKind::DeleteTopics(deleted) =
        client.call(ApiKey::DeleteTopics, 4, RequestKind::DeleteTopics(delete))
    else {
        panic!()
    };
    assert_ne!(deleted.responses[0].error_code, 0);
    let grow = CreatePartitionsRequest::default()
        .with_topics(vec![
            create_partitions_request::CreatePartitionsTopic::default()
                .with_name(TopicName(text("__consumer_offsets")))
                .with_count(10)
                .with_assignments(None),
        ])
        .with_timeout_ms(5000);
    let ResponseKind::CreatePartitions(grown) = client.call(
        ApiKey::CreatePartitions,
        3,
        RequestKind::CreatePartitions(grow),
    ) else {
        panic!()
    };
    assert_ne!(grown.results[0].error_code, 0);
    let alter = IncrementalAlterConfigsRequest::default().with_resources(vec![
        incremental_alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(text("__consumer_offsets"))
            .with_configs(vec![
                incremental_alter_configs_request::AlterableConfig::default()
                    .with_name(text("retention.ms"))
                    .with_value(Some(text("1"))),
            ]),
    ]);
    let ResponseKind::IncrementalAlterConfigs(altered) = client.call(
        ApiKey::IncrementalAlterConfigs,
        1,
        RequestKind::IncrementalAlterConfigs(alter),
    ) else {
        panic!()
    };
    assert_ne!(altered.responses[0].error_code, 0);
    // Still there, still 5 partitions.
    let named = client.metadata(12, Some(&["__consumer_offsets"]));
    assert_eq!(named.topics[0].partitions.len(), 5);
}

/// How the node is stopped before the restart.
#[derive(Clone, Copy, Debug)]
enum Stop {
    Sigterm,
    Kill9,
}

/// Commits, stops the node, restarts it on the same data, and checks that OffsetFetch returns
/// the commits and DescribeGroups/ListGroups know the group, and that a member id handed out
/// after the restart is new.
fn offsets_survive(stop: Stop, settings: &[&str]) {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let mut all_settings = FAST.to_vec();
    all_settings.extend_from_slice(settings);
    let node = NodeProcess::start_in(&data, &all_settings);
    let mut client = node.connect();
    assert_eq!(client.create_topic("t", 3), 0);
    assert_eq!(find_coordinator(&mut client, 2, "g").0, 0);
    let (member_id, generation) = join_alone(&mut client, "g");
    assert_eq!(
        commit(
            &mut client,
            "g",
            generation,
            &member_id,
            "t",
            &[(0, 3), (2, 8)]
        ),
        [0, 0]
    );
    assert_eq!(
        commit(&mut client, "g", generation, &member_id, "t", &[(0, 4)]),
        [0]
    );
    match stop {
        Stop::Sigterm => assert_eq!(node.terminate(), Some(0)),
        Stop::Kill9 => node.kill(),
    }

    let node = NodeProcess::start_in(&data, &all_settings);
    let mut client = node.connect();
    assert_eq!(find_coordinator(&mut client, 2, "g").0, 0);
    assert_eq!(
        fetch_offsets(&mut client, "g", "t", 3),
        [(0, 4), (1, -1), (2, 8)],
        "{stop:?}: the last acknowledged commits survive"
    );
    let described = describe(&mut client, "g");
    assert_eq!(described.error_code, 0);
    assert_eq!(described.group_state.as_str(), "Stable", "{stop:?}");
    assert_eq!(described.members.len(), 1);
    assert_eq!(described.members[0].member_id.as_str(), member_id);
    assert!(list_groups(&mut client).contains(&("g".to_string(), "Stable".to_string())));
    // The restarted coordinator's member ids do not repeat the earlier incarnation's.
    let fresh = member_id_round(&mut client, "other");
    assert_ne!(fresh, member_id);
    // The restored member can go on heartbeating in its generation.
    assert_eq!(heartbeat(&mut client, "g", generation, &member_id), 0);
}

#[test]
fn committed_offsets_and_groups_survive_sigterm() {
    offsets_survive(Stop::Sigterm, &[]);
}

/// With the page-cache policy a process kill loses nothing the kernel has.
#[test]
fn committed_offsets_and_groups_survive_kill_9() {
    offsets_survive(Stop::Kill9, &[]);
}

/// Under the durable flush policy an OffsetCommit is answered only after the fsync, like an
/// acks=all produce.
#[test]
fn committed_offsets_survive_kill_9_under_the_durable_policy() {
    offsets_survive(Stop::Kill9, &["log.flush.policy=durable"]);
}

/// The virtualenv's Python (a symlink to main's), if this checkout has one.
fn python() -> Option<std::path::PathBuf> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    path.exists().then_some(path)
}

/// A real client end to end (librdkafka 2.16 through confluent-kafka, which uses groups only
/// when all seven classic group APIs are advertised): a group consumer reads every record of
/// a two-partition topic and commits synchronously; a second consumer of the same group,
/// started after the first closed, resumes at the commits and gets nothing again.
#[test]
fn confluent_kafka_consumer_group_consumes_commits_and_resumes() {
    let Some(python) = python() else {
        eprintln!("skipped: no .venv/bin/python (tests/interop covers real clients)");
        return;
    };
    const SCRIPT: &str = r#"
import sys, time
from confluent_kafka import Producer, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
bs = sys.argv[1]
admin = AdminClient({'bootstrap.servers': bs})
admin.create_topics([NewTopic('ct', 2, 1)])['ct'].result(10)
p = Producer({'bootstrap.servers': bs, 'linger.ms': 5})
for i in range(20):
    p.produce('ct', value=b'%d' % i, partition=i % 2)
assert p.flush(10) == 0
def consumer():
    c = Consumer({'bootstrap.servers': bs, 'group.id': 'cg', 'auto.offset.reset': 'earliest',
                  'enable.auto.commit': False, 'session.timeout.ms': 6000})
    c.subscribe(['ct'])
    return c
c = consumer()
got = set()
deadline = time.time() + 30
while len(got) < 20 and time.time() < deadline:
    m = c.poll(0.5)
    if m is not None and not m.error():
        got.add(m.value())
assert len(got) == 20, len(got)
c.commit(asynchronous=False)
committed = sorted((tp.partition, tp.offset) for tp in c.committed([TopicPartition('ct', 0), TopicPartition('ct', 1)], timeout=10))
assert committed == [(0, 10), (1, 10)], committed
c.close()
c = consumer()
again = []
deadline = time.time() + 5
assigned = False
while time.time() < deadline:
    m = c.poll(0.5)
    if m is not None and not m.error():
        again.append(m.value())
    if c.assignment():
        assigned = True
assert assigned, 'the second consumer never got an assignment'
assert again == [], again
c.close()
print('ok')
"#;
    let node = NodeProcess::start(FAST);
    let output = std::process::Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .arg(node.addr.to_string())
        .output()
        .expect("running python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.trim() == "ok",
        "stdout: {stdout}\nstderr: {stderr}"
    );
}
