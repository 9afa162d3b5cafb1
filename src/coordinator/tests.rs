//! Unit tests of the group coordinator: exact effects per transition, each naming the Kafka
//! rule it checks, and a proptest over random client behaviour.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};

use super::error_code::*;
use super::*;

const GROUP: &str = "g";
const TOPIC: &str = "orders";

fn config() -> CoordinatorConfig {
    CoordinatorConfig {
        group_initial_rebalance_delay_ms: 0,
        seed: 7,
        ..CoordinatorConfig::default()
    }
}

/// A coordinator that leads every `__consumer_offsets` partition, stepped with invariant
/// checks, whose every response is encoded at its version (the encoder rejects fields the
/// version lacks).
struct Harness {
    c: GroupCoordinator,
    now: Millis,
    next_correlation: i32,
    persisted: Vec<(i32, PersistedRecord)>,
}

impl Harness {
    fn new(config: CoordinatorConfig) -> Harness {
        let mut c = GroupCoordinator::new(config);
        for p in 0..c.config().offsets_topic_num_partitions {
            c.load(0, p, &[]);
        }
        Harness {
            c,
            now: 0,
            next_correlation: 0,
            persisted: Vec::new(),
        }
    }

    fn step(&mut self, input: Input) -> Vec<Effect> {
        let mut effects = Vec::new();
        self.c.step(self.now, input, &mut effects);
        self.c.invariants();
        for e in &effects {
            if let Effect::Respond {
                api_version,
                response,
                ..
            } = e
            {
                let mut buf = BytesMut::new();
                response
                    .encode(&mut buf, *api_version)
                    .unwrap_or_else(|err| panic!("{response:?} at v{api_version}: {err}"));
            }
        }
        effects
    }

    fn request(&mut self, version: i16, request: GroupRequest) -> (RequestToken, Vec<Effect>) {
        self.next_correlation += 1;
        let token = RequestToken {
            connection_id: 1,
            correlation_id: self.next_correlation,
        };
        let context = RequestContext {
            token,
            api_version: version,
            client_id: "client".into(),
            client_host: "/127.0.0.1".into(),
        };
        (token, self.step(Input::Request { context, request }))
    }

    fn advance(&mut self, ms: i64) -> Vec<Effect> {
        self.now += ms;
        match self.c.next_deadline() {
            Some(t) if t <= self.now => self.step(Input::Timer),
            _ => Vec::new(),
        }
    }

    /// Completes every outstanding persist in order, recording what was appended.
    fn complete_all(&mut self, effects: &[Effect]) -> Vec<Effect> {
        let mut out = Vec::new();
        for e in effects {
            if let Effect::Persist {
                token,
                partition,
                records,
            } = e
            {
                for r in records {
                    self.persisted.push((*partition, r.clone()));
                }
                out.extend(self.step(Input::PersistCompleted {
                    token: *token,
                    result: Ok(()),
                }));
            }
        }
        out
    }
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn join(member_id: &str, instance: Option<&str>, protocols: &[(&str, &[u8])]) -> GroupRequest {
    let mut r = JoinGroupRequest::default();
    r.group_id = GroupId(s(GROUP));
    r.session_timeout_ms = 10_000;
    r.rebalance_timeout_ms = 30_000;
    r.member_id = s(member_id);
    r.group_instance_id = instance.map(s);
    r.protocol_type = s("consumer");
    r.protocols = protocols
        .iter()
        .map(|(name, meta)| {
            let mut p = JoinGroupRequestProtocol::default();
            p.name = s(name);
            p.metadata = Bytes::copy_from_slice(meta);
            p
        })
        .collect();
    GroupRequest::JoinGroup(r)
}

fn range() -> [(&'static str, &'static [u8]); 1] {
    [("range", b"m")]
}

fn sync(member_id: &str, generation: i32, assignments: &[(&str, &[u8])]) -> GroupRequest {
    let mut r = SyncGroupRequest::default();
    r.group_id = GroupId(s(GROUP));
    r.generation_id = generation;
    r.member_id = s(member_id);
    r.assignments = assignments
        .iter()
        .map(|(m, a)| {
            let mut x = SyncGroupRequestAssignment::default();
            x.member_id = s(m);
            x.assignment = Bytes::copy_from_slice(a);
            x
        })
        .collect();
    GroupRequest::SyncGroup(r)
}

fn heartbeat(member_id: &str, generation: i32, instance: Option<&str>) -> GroupRequest {
    let mut r = HeartbeatRequest::default();
    r.group_id = GroupId(s(GROUP));
    r.generation_id = generation;
    r.member_id = s(member_id);
    r.group_instance_id = instance.map(s);
    GroupRequest::Heartbeat(r)
}

fn commit(member_id: &str, generation: i32, partition: i32, offset: i64) -> GroupRequest {
    let mut p = OffsetCommitRequestPartition::default();
    p.partition_index = partition;
    p.committed_offset = offset;
    let mut t = OffsetCommitRequestTopic::default();
    t.name = TopicName(s(TOPIC));
    t.partitions = vec![p];
    let mut r = OffsetCommitRequest::default();
    r.group_id = GroupId(s(GROUP));
    r.generation_id_or_member_epoch = generation;
    r.member_id = s(member_id);
    r.topics = vec![t];
    GroupRequest::OffsetCommit(r)
}

/// OffsetFetch v7 (single group) of partitions 0..n of TOPIC.
fn fetch(partitions: i32) -> GroupRequest {
    let mut t = OffsetFetchRequestTopic::default();
    t.name = TopicName(s(TOPIC));
    t.partition_indexes = (0..partitions).collect();
    let mut r = OffsetFetchRequest::default();
    r.group_id = GroupId(s(GROUP));
    r.topics = Some(vec![t]);
    GroupRequest::OffsetFetch(r)
}

fn responses(effects: &[Effect]) -> Vec<(RequestToken, &ResponseKind)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Respond {
                token, response, ..
            } => Some((*token, response)),
            _ => None,
        })
        .collect()
}

fn only_response(effects: &[Effect]) -> &ResponseKind {
    let r = responses(effects);
    assert_eq!(r.len(), 1, "{effects:?}");
    r[0].1
}

fn join_response(r: &ResponseKind) -> &JoinGroupResponse {
    match r {
        ResponseKind::JoinGroup(j) => j,
        other => panic!("not a JoinGroup response: {other:?}"),
    }
}

fn sync_response(r: &ResponseKind) -> &SyncGroupResponse {
    match r {
        ResponseKind::SyncGroup(j) => j,
        other => panic!("not a SyncGroup response: {other:?}"),
    }
}

fn error_of(r: &ResponseKind) -> i16 {
    match r {
        ResponseKind::JoinGroup(x) => x.error_code,
        ResponseKind::SyncGroup(x) => x.error_code,
        ResponseKind::Heartbeat(x) => x.error_code,
        ResponseKind::LeaveGroup(x) => x.error_code,
        ResponseKind::OffsetCommit(x) => x.topics[0].partitions[0].error_code,
        ResponseKind::OffsetDelete(x) => x.error_code,
        other => panic!("no single error: {other:?}"),
    }
}

fn fetched(r: &ResponseKind) -> Vec<i64> {
    match r {
        ResponseKind::OffsetFetch(f) => f.topics[0]
            .partitions
            .iter()
            .map(|p| p.committed_offset)
            .collect(),
        other => panic!("not an OffsetFetch response: {other:?}"),
    }
}

fn persists(effects: &[Effect]) -> Vec<&Effect> {
    effects
        .iter()
        .filter(|e| matches!(e, Effect::Persist { .. }))
        .collect()
}

/// Joins one member through the KIP-394 round and completes the first generation.
fn join_first_member(h: &mut Harness) -> String {
    let (_, e) = h.request(5, join("", None, &range()));
    let member_id = join_response(only_response(&e)).member_id.to_string();
    let (_, e) = h.request(5, join(&member_id, None, &range()));
    assert_eq!(join_response(only_response(&e)).generation_id, 1);
    member_id
}

/// Brings a one-member group to Stable at generation 1 with assignment `a`.
fn stable_one_member(h: &mut Harness) -> String {
    let id = join_first_member(h);
    let (_, e) = h.request(3, sync(&id, 1, &[(&id, b"a")]));
    let done = h.complete_all(&e);
    assert_eq!(
        sync_response(only_response(&done)).assignment,
        Bytes::from_static(b"a")
    );
    id
}

#[test]
fn group_partition_is_java_string_hash_code_masked_modulo_50() {
    // Values computed from Java's String.hashCode definition (s[0]*31^(n-1) + ... over UTF-16
    // units, 32-bit wrapping) and Kafka's Utils.abs (& 0x7fffffff), not Math.abs.
    let cases = [
        ("", 0),
        ("a", 47),
        ("hello", 22),
        ("Aa", 12),
        ("BB", 12),
        ("polygenelubricants", 0), // hashCode == Integer.MIN_VALUE
        ("my-group", 36),          // negative hash: Math.abs would give 12
        ("console-consumer-12345", 6),
        ("test-consumer-group", 17),
        ("groupé", 42),
    ];
    for (group, partition) in cases {
        assert_eq!(partition_for_group(group, 50), partition, "{group:?}");
    }
}

#[test]
fn records_round_trip_in_kafka_schemas_and_bad_bytes_are_errors() {
    let offset = Record::Offset {
        key: records::OffsetKey {
            group_id: "g".into(),
            topic: "t".into(),
            partition: 3,
        },
        value: Some(records::OffsetValue {
            offset: 42,
            leader_epoch: 5,
            metadata: "meta".into(),
            commit_timestamp_ms: 1000,
        }),
    };
    let encoded = offset.encode();
    // OffsetCommitKey v1: version, group, topic, partition.
    assert_eq!(
        &encoded.key[..],
        b"\x00\x01\x00\x01g\x00\x01t\x00\x00\x00\x03"
    );
    assert_eq!(Record::decode(&encoded).unwrap(), offset);
    let group = Record::Group {
        group_id: "g".into(),
        value: Some(records::GroupMetadataValue {
            protocol_type: "consumer".into(),
            generation_id: 4,
            protocol_name: Some("range".into()),
            leader: Some("m1".into()),
            current_state_timestamp_ms: 77,
            members: vec![records::MemberMetadataValue {
                member_id: "m1".into(),
                group_instance_id: Some("i1".into()),
                client_id: "c".into(),
                client_host: "h".into(),
                rebalance_timeout_ms: 300,
                session_timeout_ms: 100,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        }),
    };
    assert_eq!(Record::decode(&group.encode()).unwrap(), group);
    let tombstone = Record::Group {
        group_id: "g".into(),
        value: None,
    };
    assert_eq!(Record::decode(&tombstone.encode()).unwrap(), tombstone);
    // Every truncation of a valid value is an error, never a panic.
    let full = group.encode();
    let value = full.value.clone().unwrap();
    for cut in 0..value.len() {
        let r = PersistedRecord {
            key: full.key.clone(),
            value: Some(value.slice(..cut)),
        };
        assert!(Record::decode(&r).is_err(), "cut at {cut}");
    }
}

#[test]
fn kip_394_join_v4_plus_requires_member_id_then_first_member_leads() {
    let mut h = Harness::new(config());
    let (t1, e) = h.request(5, join("", None, &range()));
    let r = join_response(only_response(&e));
    assert_eq!(r.error_code, MEMBER_ID_REQUIRED);
    assert!(r.member_id.starts_with("client-"), "{:?}", r.member_id);
    assert_eq!(responses(&e)[0].0, t1);
    // The pending member is not yet in the group.
    assert_eq!(h.c.group_state(GROUP), Some("Empty"));
    let id = r.member_id.to_string();
    let (_, e) = h.request(5, join(&id, None, &range()));
    let r = join_response(only_response(&e));
    assert_eq!(r.error_code, NONE);
    assert_eq!(r.generation_id, 1);
    assert_eq!(r.leader.as_str(), id);
    assert_eq!(r.protocol_name.as_deref(), Some("range"));
    assert_eq!(r.members.len(), 1);
    assert_eq!(r.members[0].metadata, Bytes::from_static(b"m"));
    assert_eq!(h.c.group_state(GROUP), Some("CompletingRebalance"));
}

#[test]
fn join_v3_admits_a_new_member_without_the_member_id_round() {
    let mut h = Harness::new(config());
    let (_, e) = h.request(3, join("", None, &range()));
    let r = join_response(only_response(&e));
    assert_eq!(r.error_code, NONE);
    assert_eq!(r.generation_id, 1);
}

#[test]
fn sync_group_answers_only_after_the_leaders_assignment_is_persisted() {
    let mut h = Harness::new(config());
    let id = join_first_member(&mut h);
    let (token, e) = h.request(3, sync(&id, 1, &[(&id, b"assignment")]));
    assert!(
        responses(&e).is_empty(),
        "no response before durability: {e:?}"
    );
    let p = persists(&e);
    assert_eq!(p.len(), 1);
    let Effect::Persist {
        partition, records, ..
    } = p[0]
    else {
        unreachable!()
    };
    assert_eq!(*partition, partition_for_group(GROUP, 50));
    let Record::Group {
        value: Some(value), ..
    } = Record::decode(&records[0]).unwrap()
    else {
        panic!("not group metadata")
    };
    assert_eq!(value.generation_id, 1);
    assert_eq!(
        value.members[0].assignment,
        Bytes::from_static(b"assignment")
    );
    let done = h.complete_all(&e);
    assert_eq!(responses(&done)[0].0, token);
    assert_eq!(
        sync_response(only_response(&done)).assignment,
        Bytes::from_static(b"assignment")
    );
    assert_eq!(h.c.group_state(GROUP), Some("Stable"));
}

#[test]
fn failed_assignment_persist_fails_the_sync_and_rebalances() {
    let mut h = Harness::new(config());
    let id = join_first_member(&mut h);
    let (_, e) = h.request(3, sync(&id, 1, &[(&id, b"a")]));
    let Effect::Persist { token, .. } = persists(&e)[0] else {
        unreachable!()
    };
    let e = h.step(Input::PersistCompleted {
        token: *token,
        result: Err(PersistError::NotLeader),
    });
    assert_eq!(error_of(only_response(&e)), NOT_COORDINATOR);
    assert_eq!(h.c.group_state(GROUP), Some("PreparingRebalance"));
}

#[test]
fn new_member_triggers_rebalance_heartbeat_says_rebalance_in_progress_leader_sees_all() {
    let mut h = Harness::new(config());
    let a = stable_one_member(&mut h);
    let (_, e) = h.request(5, join("", None, &range()));
    let b = join_response(only_response(&e)).member_id.to_string();
    let (_, e) = h.request(5, join(&b, None, &range()));
    assert!(responses(&e).is_empty(), "b waits for a to rejoin");
    assert_eq!(h.c.group_state(GROUP), Some("PreparingRebalance"));
    let (_, e) = h.request(3, heartbeat(&a, 1, None));
    assert_eq!(error_of(only_response(&e)), REBALANCE_IN_PROGRESS);
    let (_, e) = h.request(5, join(&a, None, &range()));
    let rs = responses(&e);
    assert_eq!(rs.len(), 2);
    for (_, r) in rs {
        let r = join_response(r);
        assert_eq!(r.generation_id, 2);
        assert_eq!(r.leader.as_str(), a, "the leader stays the leader");
        if r.member_id.as_str() == a {
            assert_eq!(r.members.len(), 2);
        } else {
            assert!(r.members.is_empty(), "followers get no member list");
        }
    }
    // Syncs: the follower waits for the leader's assignment.
    let (_, e) = h.request(3, sync(&b, 2, &[]));
    assert!(responses(&e).is_empty());
    let (_, e) = h.request(3, sync(&a, 2, &[(&a, b"A"), (&b, b"B")]));
    let done = h.complete_all(&e);
    let mut got: Vec<Bytes> = responses(&done)
        .into_iter()
        .map(|(_, r)| sync_response(r).assignment.clone())
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![Bytes::from_static(b"A"), Bytes::from_static(b"B")]
    );
}

#[test]
fn rebalance_timeout_removes_members_that_did_not_rejoin() {
    let mut h = Harness::new(config());
    let a = stable_one_member(&mut h);
    let (_, e) = h.request(5, join("", None, &range()));
    let b = join_response(only_response(&e)).member_id.to_string();
    h.request(5, join(&b, None, &range()));
    // a keeps heartbeating but never rejoins; the join phase ends at the rebalance timeout.
    for _ in 0..5 {
        h.advance(5_000);
        h.request(3, heartbeat(&a, 1, None));
    }
    let e = h.advance(5_001);
    let r = join_response(only_response(&e));
    assert_eq!(r.member_id.as_str(), b);
    assert_eq!(r.generation_id, 2);
    assert_eq!(r.leader.as_str(), b);
    let (_, e) = h.request(3, heartbeat(&a, 2, None));
    assert_eq!(error_of(only_response(&e)), UNKNOWN_MEMBER_ID);
}

#[test]
fn sync_phase_timeout_removes_members_that_never_sync() {
    let mut h = Harness::new(config());
    let a = join_first_member(&mut h);
    // The leader heartbeats (NONE in CompletingRebalance) but never sends SyncGroup.
    for _ in 0..5 {
        h.advance(5_000);
        let (_, e) = h.request(3, heartbeat(&a, 1, None));
        assert_eq!(error_of(only_response(&e)), NONE);
    }
    assert_eq!(h.c.next_deadline(), Some(30_000));
    h.advance(4_999);
    assert_eq!(h.c.group_state(GROUP), Some("CompletingRebalance"));
    h.advance(1);
    assert_eq!(h.c.group_state(GROUP), Some("Empty"));
    let (_, e) = h.request(3, heartbeat(&a, 1, None));
    assert_eq!(error_of(only_response(&e)), UNKNOWN_MEMBER_ID);
}

#[test]
fn session_timeout_expires_a_silent_member_and_the_group_empties() {
    let mut h = Harness::new(config());
    let a = stable_one_member(&mut h);
    assert_eq!(h.c.next_deadline(), Some(h.now + 10_000));
    h.advance(9_999);
    assert_eq!(h.c.group_state(GROUP), Some("Stable"));
    let e = h.advance(1);
    assert_eq!(h.c.group_state(GROUP), Some("Empty"));
    // The empty generation is persisted (Kafka writes the empty group's metadata).
    let p = persists(&e);
    assert_eq!(p.len(), 1);
    let (_, e) = h.request(3, heartbeat(&a, 1, None));
    assert_eq!(error_of(only_response(&e)), UNKNOWN_MEMBER_ID);
}

#[test]
fn stale_generation_and_unknown_member_are_fenced() {
    let mut h = Harness::new(config());
    let a = stable_one_member(&mut h);
    let (_, e) = h.request(3, heartbeat(&a, 0, None));
    assert_eq!(error_of(only_response(&e)), ILLEGAL_GENERATION);
    let (_, e) = h.request(3, sync(&a, 7, &[]));
    assert_eq!(error_of(only_response(&e)), ILLEGAL_GENERATION);
    let (_, e) = h.request(3, heartbeat("nobody", 1, None));
    assert_eq!(error_of(only_response(&e)), UNKNOWN_MEMBER_ID);
    let (_, e) = h.request(5, join("nobody", None, &range()));
    assert_eq!(error_of(only_response(&e)), UNKNOWN_MEMBER_ID);
    let (_, e) = h.request(9, commit(&a, 0, 0, 5));
    assert_eq!(error_of(only_response(&e)), ILLEGAL_GENERATION);
    let (_, e) = h.request(9, commit("nobody", 1, 0, 5));
    assert_eq!(error_of(only_response(&e)), UNKNOWN_MEMBER_ID);
}

#[test]
fn join_with_no_common_protocol_is_inconsistent() {
    let mut h = Harness::new(config());
    stable_one_member(&mut h);
    let (_, e) = h.request(5, join("", None, &[("roundrobin", b"x")]));
    assert_eq!(error_of(only_response(&e)), INCONSISTENT_GROUP_PROTOCOL);
}

#[test]
fn kip_345_static_member_rejoin_keeps_generation_and_fences_the_old_id() {
    let mut h = Harness::new(config());
    // Static members skip the member-id round (KIP-345).
    let (_, e) = h.request(5, join("", Some("i1"), &range()));
    let leader = join_response(only_response(&e)).member_id.to_string();
    let (_, e) = h.request(3, sync(&leader, 1, &[(&leader, b"1")]));
    h.complete_all(&e);
    let (_, e) = h.request(5, join("", Some("i2"), &range()));
    assert!(responses(&e).is_empty(), "waits for the leader to rejoin");
    let (_, e2) = h.request(5, join(&leader, Some("i1"), &range()));
    let all: Vec<Effect> = e.into_iter().chain(e2).collect();
    assert_eq!(responses(&all).len(), 2);
    let follower = responses(&all)
        .into_iter()
        .map(|(_, r)| join_response(r).member_id.to_string())
        .find(|m| *m != leader)
        .unwrap();
    let (_, e1) = h.request(3, sync(&follower, 2, &[]));
    assert!(responses(&e1).is_empty());
    let (_, e) = h.request(3, sync(&leader, 2, &[(&leader, b"1"), (&follower, b"2")]));
    assert_eq!(responses(&h.complete_all(&e)).len(), 2);
    // The static follower restarts with an empty member id: same generation, a new id, its
    // assignment kept, no rebalance.
    let (_, e) = h.request(5, join("", Some("i2"), &range()));
    let r = join_response(only_response(&e));
    assert_eq!(r.error_code, NONE);
    assert_eq!(r.generation_id, 2);
    assert_eq!(r.leader.as_str(), leader);
    let new_id = r.member_id.to_string();
    assert_ne!(new_id, follower);
    assert_eq!(h.c.group_state(GROUP), Some("Stable"));
    assert_eq!(persists(&e).len(), 1, "the new member id is persisted");
    let (_, e) = h.request(3, sync(&new_id, 2, &[]));
    assert_eq!(
        sync_response(only_response(&e)).assignment,
        Bytes::from_static(b"2")
    );
    // The old identity is fenced everywhere it shows up with its instance id.
    let (_, e) = h.request(3, heartbeat(&follower, 2, Some("i2")));
    assert_eq!(error_of(only_response(&e)), FENCED_INSTANCE_ID);
    let (_, e) = h.request(5, join(&follower, Some("i2"), &range()));
    assert_eq!(error_of(only_response(&e)), FENCED_INSTANCE_ID);
    let (_, e) = h.request(3, heartbeat(&new_id, 2, Some("i2")));
    assert_eq!(error_of(only_response(&e)), NONE);
}

#[test]
fn kip_345_leave_group_v3_batch_reports_per_member() {
    let mut h = Harness::new(config());
    let a = stable_one_member(&mut h);
    let mut r = LeaveGroupRequest::default();
    r.group_id = GroupId(s(GROUP));
    r.members = [a.as_str(), "ghost"]
        .iter()
        .map(|m| {
            let mut x = MemberIdentity::default();
            x.member_id = s(m);
            x
        })
        .collect();
    let (_, e) = h.request(3, GroupRequest::LeaveGroup(r));
    let ResponseKind::LeaveGroup(l) = only_response(&e) else {
        panic!()
    };
    assert_eq!(l.error_code, NONE);
    let codes: Vec<i16> = l.members.iter().map(|m| m.error_code).collect();
    assert_eq!(codes, vec![NONE, UNKNOWN_MEMBER_ID]);
    assert_eq!(h.c.group_state(GROUP), Some("Empty"));
    assert_eq!(persists(&e).len(), 1, "empty group metadata persisted");
}

#[test]
fn leave_group_v1_single_member() {
    let mut h = Harness::new(config());
    let a = stable_one_member(&mut h);
    let mut r = LeaveGroupRequest::default();
    r.group_id = GroupId(s(GROUP));
    r.member_id = s(&a);
    let (_, e) = h.request(1, GroupRequest::LeaveGroup(r.clone()));
    assert_eq!(error_of(only_response(&e)), NONE);
    let (_, e) = h.request(1, GroupRequest::LeaveGroup(r));
    assert_eq!(error_of(only_response(&e)), UNKNOWN_MEMBER_ID);
}

#[test]
fn offset_commit_is_acknowledged_and_visible_only_after_persist() {
    let mut h = Harness::new(config());
    let a = stable_one_member(&mut h);
    let (token, e) = h.request(9, commit(&a, 1, 0, 42));
    assert!(responses(&e).is_empty(), "no ack before durability");
    let (_, f) = h.request(7, fetch(1));
    assert_eq!(fetched(only_response(&f)), vec![-1]);
    let done = h.complete_all(&e);
    assert_eq!(responses(&done)[0].0, token);
    assert_eq!(error_of(only_response(&done)), NONE);
    let (_, f) = h.request(7, fetch(1));
    assert_eq!(fetched(only_response(&f)), vec![42]);
    // A failed append is reported and leaves the acknowledged offset in place.
    let (_, e) = h.request(9, commit(&a, 1, 0, 50));
    let Effect::Persist { token, .. } = persists(&e)[0] else {
        unreachable!()
    };
    let e = h.step(Input::PersistCompleted {
        token: *token,
        result: Err(PersistError::Unavailable),
    });
    assert_eq!(error_of(only_response(&e)), COORDINATOR_NOT_AVAILABLE);
    let (_, f) = h.request(7, fetch(1));
    assert_eq!(fetched(only_response(&f)), vec![42]);
}

#[test]
fn simple_consumer_commit_with_generation_minus_one_creates_an_empty_group() {
    let mut h = Harness::new(config());
    let (_, e) = h.request(9, commit("", -1, 2, 9));
    assert_eq!(h.c.group_state(GROUP), Some("Empty"));
    assert_eq!(error_of(only_response(&h.complete_all(&e))), NONE);
    assert_eq!(h.c.committed_offset(GROUP, TOPIC, 2), Some(9));
    // A member of an unknown group with a real generation is refused.
    let mut h = Harness::new(config());
    let (_, e) = h.request(9, commit("m", 3, 0, 1));
    assert_eq!(error_of(only_response(&e)), ILLEGAL_GENERATION);
}

#[test]
fn offset_commit_during_completing_rebalance_is_rebalance_in_progress() {
    let mut h = Harness::new(config());
    let a = join_first_member(&mut h);
    let (_, e) = h.request(9, commit(&a, 1, 0, 1));
    assert_eq!(error_of(only_response(&e)), REBALANCE_IN_PROGRESS);
}

#[test]
fn offsets_of_an_empty_group_expire_after_retention_then_the_group_is_deleted() {
    let mut h = Harness::new(CoordinatorConfig {
        offsets_retention_ms: 100_000,
        offsets_retention_check_interval_ms: 10_000,
        ..config()
    });
    let (_, e) = h.request(9, commit("", -1, 0, 5));
    h.complete_all(&e);
    h.advance(90_000);
    assert_eq!(h.c.committed_offset(GROUP, TOPIC, 0), Some(5));
    let mut all = Vec::new();
    for _ in 0..2 {
        all.extend(h.advance(10_000));
    }
    assert_eq!(h.c.committed_offset(GROUP, TOPIC, 0), None);
    assert_eq!(h.c.group_state(GROUP), None);
    let p = persists(&all);
    assert_eq!(p.len(), 1);
    let Effect::Persist { records, .. } = p[0] else {
        unreachable!()
    };
    let decoded: Vec<Record> = records.iter().map(|r| Record::decode(r).unwrap()).collect();
    assert!(matches!(&decoded[0], Record::Offset { value: None, .. }));
    assert!(matches!(&decoded[1], Record::Group { value: None, .. }));
}

#[test]
fn delete_groups_refuses_non_empty_and_answers_after_tombstones_persist() {
    let mut h = Harness::new(config());
    let a = stable_one_member(&mut h);
    let mut r = DeleteGroupsRequest::default();
    r.groups_names = vec![GroupId(s(GROUP)), GroupId(s("unknown"))];
    let (_, e) = h.request(2, GroupRequest::DeleteGroups(r.clone()));
    let ResponseKind::DeleteGroups(d) = only_response(&e) else {
        panic!()
    };
    let codes: Vec<i16> = d.results.iter().map(|x| x.error_code).collect();
    assert_eq!(codes, vec![NON_EMPTY_GROUP, GROUP_ID_NOT_FOUND]);
    let (_, e) = h.request(9, commit(&a, 1, 0, 3));
    h.complete_all(&e);
    h.advance(10_000); // session timeout: the group empties
    assert_eq!(h.c.group_state(GROUP), Some("Empty"));
    let (_, e) = h.request(2, GroupRequest::DeleteGroups(r));
    assert!(responses(&e).is_empty());
    assert_eq!(h.c.group_state(GROUP), None);
    let done = h.complete_all(&e);
    let ResponseKind::DeleteGroups(d) = only_response(&done) else {
        panic!()
    };
    let codes: Vec<i16> = d.results.iter().map(|x| x.error_code).collect();
    assert_eq!(codes, vec![NONE, GROUP_ID_NOT_FOUND]);
}

fn subscription(topics: &[&str]) -> Vec<u8> {
    let mut sub = ConsumerProtocolSubscription::default();
    sub.topics = topics.iter().map(|t| s(t)).collect();
    let mut buf = BytesMut::new();
    buf.put_i16(0);
    sub.encode(&mut buf, 0).unwrap();
    buf.to_vec()
}

#[test]
fn offset_delete_refuses_subscribed_topics() {
    let mut h = Harness::new(config());
    let meta = subscription(&[TOPIC]);
    let (_, e) = h.request(5, join("", None, &[("range", &meta)]));
    let id = join_response(only_response(&e)).member_id.to_string();
    h.request(5, join(&id, None, &[("range", &meta)]));
    let (_, e) = h.request(3, sync(&id, 1, &[(&id, b"")]));
    h.complete_all(&e);
    for (topic, offset) in [(TOPIC, 1), ("other", 2)] {
        let mut c = commit(&id, 1, 0, offset);
        if let GroupRequest::OffsetCommit(r) = &mut c {
            r.topics[0].name = TopicName(s(topic));
        }
        let (_, e) = h.request(9, c);
        h.complete_all(&e);
    }
    let mut r = OffsetDeleteRequest::default();
    r.group_id = GroupId(s(GROUP));
    r.topics = [TOPIC, "other"]
        .iter()
        .map(|t| {
            let mut x = OffsetDeleteRequestTopic::default();
            x.name = TopicName(s(t));
            let mut p = OffsetDeleteRequestPartition::default();
            p.partition_index = 0;
            x.partitions = vec![p];
            x
        })
        .collect();
    let (_, e) = h.request(0, GroupRequest::OffsetDelete(r));
    assert!(responses(&e).is_empty());
    let done = h.complete_all(&e);
    let ResponseKind::OffsetDelete(d) = only_response(&done) else {
        panic!()
    };
    assert_eq!(d.error_code, NONE);
    assert_eq!(
        d.topics[0].partitions[0].error_code,
        GROUP_SUBSCRIBED_TO_TOPIC
    );
    assert_eq!(d.topics[1].partitions[0].error_code, NONE);
    assert_eq!(h.c.committed_offset(GROUP, TOPIC, 0), Some(1));
    assert_eq!(h.c.committed_offset(GROUP, "other", 0), None);
}

#[test]
fn load_rebuilds_groups_and_offsets_from_persisted_records() {
    let mut h = Harness::new(config());
    let a = stable_one_member(&mut h);
    let (_, e) = h.request(9, commit(&a, 1, 4, 77));
    h.complete_all(&e);
    let partition = partition_for_group(GROUP, 50);
    let records: Vec<PersistedRecord> = h
        .persisted
        .iter()
        .filter(|(p, _)| *p == partition)
        .map(|(_, r)| r.clone())
        .collect();
    let mut fresh = GroupCoordinator::new(config());
    let skipped = fresh.load(1_000, partition, &records);
    fresh.invariants();
    assert_eq!(skipped, 0);
    assert_eq!(fresh.group_state(GROUP), Some("Stable"));
    assert_eq!(fresh.committed_offset(GROUP, TOPIC, 4), Some(77));
    let mut h2 = Harness {
        c: fresh,
        now: 1_000,
        next_correlation: 100,
        persisted: Vec::new(),
    };
    let (_, e) = h2.request(3, heartbeat(&a, 1, None));
    assert_eq!(error_of(only_response(&e)), NONE);
    let (_, e) = h2.request(3, sync(&a, 1, &[]));
    assert_eq!(
        sync_response(only_response(&e)).assignment,
        Bytes::from_static(b"a")
    );
    // A garbage record is skipped, not fatal.
    let mut fresh = GroupCoordinator::new(config());
    let garbage = PersistedRecord {
        key: Bytes::from_static(b"\x00\x07xx"),
        value: None,
    };
    assert_eq!(fresh.load(0, partition, &[garbage]), 1);
}

#[test]
fn requests_for_unloaded_partitions_get_not_coordinator() {
    let mut h = Harness::new(config());
    let mut effects = Vec::new();
    h.c.unload(partition_for_group(GROUP, 50), &mut effects);
    let (_, e) = h.request(5, join("", None, &range()));
    assert_eq!(error_of(only_response(&e)), NOT_COORDINATOR);
    let (_, e) = h.request(9, commit("", -1, 0, 1));
    assert_eq!(error_of(only_response(&e)), NOT_COORDINATOR);
}

#[test]
fn describe_and_list_groups_report_state_members_and_assignment() {
    let mut h = Harness::new(config());
    let a = stable_one_member(&mut h);
    let mut r = DescribeGroupsRequest::default();
    r.groups = vec![GroupId(s(GROUP)), GroupId(s("none"))];
    let (_, e) = h.request(5, GroupRequest::DescribeGroups(r));
    let ResponseKind::DescribeGroups(d) = only_response(&e) else {
        panic!()
    };
    assert_eq!(d.groups[0].group_state.as_str(), "Stable");
    assert_eq!(d.groups[0].protocol_type.as_str(), "consumer");
    assert_eq!(d.groups[0].protocol_data.as_str(), "range");
    assert_eq!(d.groups[0].members[0].member_id.as_str(), a);
    assert_eq!(
        d.groups[0].members[0].member_assignment,
        Bytes::from_static(b"a")
    );
    assert_eq!(d.groups[1].group_state.as_str(), "Dead");
    for version in [2, 4, 5] {
        let mut r = ListGroupsRequest::default();
        if version >= 4 {
            r.states_filter = vec![s("stable")];
        }
        let (_, e) = h.request(version, GroupRequest::ListGroups(r));
        let ResponseKind::ListGroups(l) = only_response(&e) else {
            panic!()
        };
        assert_eq!(l.groups.len(), 1);
        assert_eq!(l.groups[0].group_id.0.as_str(), GROUP);
    }
    let mut r = ListGroupsRequest::default();
    r.states_filter = vec![s("Empty")];
    let (_, e) = h.request(4, GroupRequest::ListGroups(r));
    let ResponseKind::ListGroups(l) = only_response(&e) else {
        panic!()
    };
    assert!(l.groups.is_empty());
}

#[test]
fn initial_rebalance_delay_holds_the_first_join_phase() {
    let mut h = Harness::new(CoordinatorConfig {
        group_initial_rebalance_delay_ms: 3_000,
        ..config()
    });
    let (_, e) = h.request(3, join("", None, &range()));
    assert!(responses(&e).is_empty());
    assert_eq!(h.c.next_deadline(), Some(3_000));
    let e = h.advance(3_000);
    assert_eq!(join_response(only_response(&e)).generation_id, 1);
}

mod model {
    //! Proptest: random clients join, sync (the leader assigns round-robin), heartbeat,
    //! leave, commit and fetch while time advances and persists complete or fail.
    //! Checked: at most one member owns a partition per generation; an acknowledged commit
    //! is what OffsetFetch returns until the next acknowledged commit; the persisted records
    //! rebuild the same offsets, also across coordinator failovers (Reload); invariants()
    //! after every step.
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, VecDeque};

    const CLIENTS: usize = 3;
    const PARTITIONS: i32 = 6;

    #[derive(Clone, Debug)]
    enum Op {
        Join(usize),
        Sync(usize),
        Heartbeat(usize),
        Leave(usize),
        Commit(usize, i32, i64),
        SimpleCommit(i32, i64),
        Fetch,
        Advance(i64),
        Complete(bool),
        /// Coordinator failover: a fresh coordinator loads what was appended; writes not yet
        /// durable are lost and in-flight requests are never answered (connections drop).
        Reload,
    }

    fn op() -> impl Strategy<Value = Op> {
        let c = 0..CLIENTS;
        prop_oneof![
            3 => c.clone().prop_map(Op::Join),
            3 => c.clone().prop_map(Op::Sync),
            2 => c.clone().prop_map(Op::Heartbeat),
            1 => c.clone().prop_map(Op::Leave),
            2 => (c, 0..PARTITIONS, 0..1000i64).prop_map(|(c, p, o)| Op::Commit(c, p, o)),
            1 => (0..PARTITIONS, 0..1000i64).prop_map(|(p, o)| Op::SimpleCommit(p, o)),
            2 => Just(Op::Fetch),
            2 => (0..4_000i64).prop_map(Op::Advance),
            3 => any::<bool>().prop_map(Op::Complete),
            1 => Just(Op::Reload),
        ]
    }

    #[derive(Default, Clone, Debug)]
    struct Client {
        member_id: String,
        generation: i32,
        members: Vec<String>,
        leader: bool,
    }

    enum Sent {
        Join(usize),
        Sync(i32, String),
        Commit(i32, i64),
        Other,
    }

    fn encode_assignment(partitions: &[i32]) -> Bytes {
        let mut b = BytesMut::new();
        for p in partitions {
            b.put_i32(*p);
        }
        b.freeze()
    }

    fn decode_assignment(b: &Bytes) -> Vec<i32> {
        b.chunks(4)
            .map(|c| i32::from_be_bytes(c.try_into().unwrap()))
            .collect()
    }

    struct Model {
        h: Harness,
        clients: Vec<Client>,
        sent: BTreeMap<RequestToken, Sent>,
        persists: VecDeque<(PersistToken, i32, Vec<PersistedRecord>)>,
        owners: BTreeMap<(i32, i32), String>,
        acked: BTreeMap<i32, i64>,
        followups: VecDeque<Op>,
        reloads: u64,
    }

    /// Bound on follow-up requests one operation may cause.
    const MAX_FOLLOWUPS: usize = 32;

    impl Model {
        fn run(&mut self, op: Op) {
            self.apply(op);
            for _ in 0..MAX_FOLLOWUPS {
                match self.followups.pop_front() {
                    Some(op) => self.apply(op),
                    None => break,
                }
            }
            self.followups.clear();
        }

        fn send(&mut self, version: i16, request: GroupRequest, sent: Sent) {
            let (token, effects) = self.h.request(version, request);
            self.sent.insert(token, sent);
            self.absorb(effects);
        }

        fn absorb(&mut self, effects: Vec<Effect>) {
            for e in effects {
                match e {
                    Effect::Persist {
                        token,
                        partition,
                        records,
                    } => self.persists.push_back((token, partition, records)),
                    Effect::Respond {
                        token, response, ..
                    } => {
                        let sent = self.sent.remove(&token).expect("one response per request");
                        self.receive(sent, response);
                    }
                }
            }
        }

        fn receive(&mut self, sent: Sent, response: ResponseKind) {
            match (sent, response) {
                (Sent::Join(c), ResponseKind::JoinGroup(r)) => {
                    let client = &mut self.clients[c];
                    match r.error_code {
                        MEMBER_ID_REQUIRED => {
                            // Real clients rejoin at once with the id they were given.
                            client.member_id = r.member_id.to_string();
                            self.followups.push_back(Op::Join(c));
                        }
                        UNKNOWN_MEMBER_ID => *client = Client::default(),
                        NONE => {
                            client.member_id = r.member_id.to_string();
                            client.generation = r.generation_id;
                            client.leader = r.leader == r.member_id;
                            client.members =
                                r.members.iter().map(|m| m.member_id.to_string()).collect();
                            // ... and sync as soon as they have joined.
                            self.followups.push_back(Op::Sync(c));
                        }
                        _ => {}
                    }
                }
                (Sent::Sync(generation, member_id), ResponseKind::SyncGroup(r))
                    if r.error_code == NONE =>
                {
                    for p in decode_assignment(&r.assignment) {
                        let owner = self
                            .owners
                            .entry((generation, p))
                            .or_insert(member_id.clone());
                        assert_eq!(
                            *owner, member_id,
                            "partition {p} owned twice in generation {generation}"
                        );
                    }
                }
                (Sent::Commit(p, offset), ResponseKind::OffsetCommit(r))
                    if r.topics[0].partitions[0].error_code == NONE =>
                {
                    self.acked.insert(p, offset);
                }
                (Sent::Other, ResponseKind::OffsetFetch(r)) => {
                    let got = fetched(&ResponseKind::OffsetFetch(r));
                    for (p, offset) in got.iter().enumerate() {
                        let want = self.acked.get(&(p as i32)).copied().unwrap_or(-1);
                        assert_eq!(*offset, want, "partition {p}");
                    }
                }
                _ => {}
            }
        }

        fn apply(&mut self, op: Op) {
            match op {
                Op::Join(c) => {
                    let id = self.clients[c].member_id.clone();
                    self.send(5, join(&id, None, &range()), Sent::Join(c));
                }
                Op::Sync(c) => {
                    let client = self.clients[c].clone();
                    if client.member_id.is_empty() {
                        return;
                    }
                    let mut assignments: Vec<(String, Vec<i32>)> = Vec::new();
                    if client.leader {
                        assignments = client.members.iter().map(|m| (m.clone(), vec![])).collect();
                        for p in 0..PARTITIONS {
                            let n = assignments.len();
                            if n > 0 {
                                assignments[p as usize % n].1.push(p);
                            }
                        }
                    }
                    let encoded: Vec<(String, Bytes)> = assignments
                        .iter()
                        .map(|(m, ps)| (m.clone(), encode_assignment(ps)))
                        .collect();
                    let refs: Vec<(&str, &[u8])> =
                        encoded.iter().map(|(m, b)| (m.as_str(), &b[..])).collect();
                    self.send(
                        3,
                        sync(&client.member_id, client.generation, &refs),
                        Sent::Sync(client.generation, client.member_id.clone()),
                    );
                }
                Op::Heartbeat(c) => {
                    let client = self.clients[c].clone();
                    self.send(
                        3,
                        heartbeat(&client.member_id, client.generation, None),
                        Sent::Other,
                    );
                }
                Op::Leave(c) => {
                    let client = self.clients[c].clone();
                    let mut r = LeaveGroupRequest::default();
                    r.group_id = GroupId(s(GROUP));
                    r.member_id = s(&client.member_id);
                    self.send(1, GroupRequest::LeaveGroup(r), Sent::Other);
                    self.clients[c] = Client::default();
                }
                Op::Commit(c, p, offset) => {
                    let client = self.clients[c].clone();
                    self.send(
                        9,
                        commit(&client.member_id, client.generation, p, offset),
                        Sent::Commit(p, offset),
                    );
                }
                Op::SimpleCommit(p, offset) => {
                    self.send(9, commit("", -1, p, offset), Sent::Commit(p, offset))
                }
                Op::Fetch => self.send(7, fetch(PARTITIONS), Sent::Other),
                Op::Advance(ms) => {
                    let effects = self.h.advance(ms);
                    self.absorb(effects);
                }
                Op::Reload => {
                    self.persists.clear();
                    self.sent.clear();
                    self.reloads += 1;
                    let config = CoordinatorConfig {
                        seed: 1000 + self.reloads,
                        ..self.h.c.config().clone()
                    };
                    let mut fresh = GroupCoordinator::new(config);
                    for p in 0..fresh.config().offsets_topic_num_partitions {
                        let records: Vec<PersistedRecord> = self
                            .h
                            .persisted
                            .iter()
                            .filter(|(q, _)| *q == p)
                            .map(|(_, r)| r.clone())
                            .collect();
                        assert_eq!(fresh.load(self.h.now, p, &records), 0);
                    }
                    fresh.invariants();
                    self.h.c = fresh;
                }
                Op::Complete(ok) => {
                    if let Some((token, partition, records)) = self.persists.pop_front() {
                        if ok {
                            for r in records {
                                self.h.persisted.push((partition, r));
                            }
                        }
                        let result = if ok {
                            Ok(())
                        } else {
                            Err(PersistError::Unavailable)
                        };
                        let effects = self.h.step(Input::PersistCompleted { token, result });
                        self.absorb(effects);
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn one_owner_per_partition_per_generation_and_acked_commits_are_fetched(
            ops in proptest::collection::vec(op(), 1..120)
        ) {
            let mut m = Model {
                h: Harness::new(CoordinatorConfig {
                    group_min_session_timeout_ms: 1,
                    ..config()
                }),
                clients: vec![Client::default(); CLIENTS],
                sent: BTreeMap::new(),
                persists: VecDeque::new(),
                owners: BTreeMap::new(),
                acked: BTreeMap::new(),
                followups: VecDeque::new(),
                reloads: 0,
            };
            for op in ops {
                m.run(op);
            }
            // Drain: every persist completes, every waiting request is answered eventually.
            while !m.persists.is_empty() {
                m.run(Op::Complete(true));
            }
            // Durability: the appended records alone rebuild the acknowledged offsets.
            let partition = partition_for_group(GROUP, 50);
            let records: Vec<PersistedRecord> = m.h.persisted.iter()
                .filter(|(p, _)| *p == partition).map(|(_, r)| r.clone()).collect();
            let mut fresh = GroupCoordinator::new(config());
            prop_assert_eq!(fresh.load(m.h.now, partition, &records), 0);
            fresh.invariants();
            for p in 0..PARTITIONS {
                prop_assert_eq!(fresh.committed_offset(GROUP, TOPIC, p), m.acked.get(&p).copied());
                prop_assert_eq!(m.h.c.committed_offset(GROUP, TOPIC, p), m.acked.get(&p).copied());
            }
        }
    }
}

/// Every response the coordinator builds must encode at the request's version (fields a
/// version lacks make the encoder fail): a whole group life cycle at every version the
/// kafka-protocol crate supports for each API.
#[test]
fn responses_encode_at_every_supported_version() {
    use kafka_protocol::messages::offset_fetch_request::{
        OffsetFetchRequestGroup, OffsetFetchRequestTopics,
    };
    for version in 0..=9i16 {
        let mut h = Harness::new(config());
        let join_v = version;
        let sync_v = version.min(5);
        let heartbeat_v = version.min(4);
        let leave_v = version.min(5);
        let commit_v = version.clamp(2, 9);
        let fetch_v = version.clamp(1, 9);
        let (_, e) = h.request(join_v, join("unknown", None, &range()));
        assert_eq!(error_of(only_response(&e)), UNKNOWN_MEMBER_ID);
        let (_, e) = h.request(join_v, join("", None, &range()));
        let mut r = join_response(only_response(&e)).clone();
        if join_v >= 4 {
            assert_eq!(r.error_code, MEMBER_ID_REQUIRED);
            let (_, e) = h.request(join_v, join(&r.member_id, None, &range()));
            r = join_response(only_response(&e)).clone();
        }
        assert_eq!(r.error_code, NONE, "JoinGroup v{join_v}");
        let id = r.member_id.to_string();
        let (_, e) = h.request(sync_v, sync(&id, 1, &[(&id, b"a")]));
        assert_eq!(error_of(only_response(&h.complete_all(&e))), NONE);
        let (_, e) = h.request(sync_v, sync(&id, 1, &[]));
        assert_eq!(error_of(only_response(&e)), NONE);
        let (_, e) = h.request(heartbeat_v, heartbeat(&id, 1, None));
        assert_eq!(error_of(only_response(&e)), NONE);
        let (_, e) = h.request(commit_v, commit(&id, 1, 0, 11));
        assert_eq!(error_of(only_response(&h.complete_all(&e))), NONE);
        let request = if fetch_v >= 8 {
            let mut t = OffsetFetchRequestTopics::default();
            t.name = TopicName(s(TOPIC));
            t.partition_indexes = vec![0];
            let mut g = OffsetFetchRequestGroup::default();
            g.group_id = GroupId(s(GROUP));
            g.topics = Some(vec![t]);
            let mut r = OffsetFetchRequest::default();
            r.groups = vec![g];
            GroupRequest::OffsetFetch(r)
        } else {
            fetch(1)
        };
        let (_, e) = h.request(fetch_v, request);
        let offset = match only_response(&e) {
            ResponseKind::OffsetFetch(f) if fetch_v >= 8 => {
                f.groups[0].topics[0].partitions[0].committed_offset
            }
            ResponseKind::OffsetFetch(f) => f.topics[0].partitions[0].committed_offset,
            other => panic!("{other:?}"),
        };
        assert_eq!(offset, 11, "OffsetFetch v{fetch_v}");
        let mut d = DescribeGroupsRequest::default();
        d.groups = vec![GroupId(s(GROUP))];
        h.request(version.min(6), GroupRequest::DescribeGroups(d));
        h.request(
            version.min(5),
            GroupRequest::ListGroups(ListGroupsRequest::default()),
        );
        let mut l = LeaveGroupRequest::default();
        l.group_id = GroupId(s(GROUP));
        if leave_v >= 3 {
            let mut m = MemberIdentity::default();
            m.member_id = s(&id);
            l.members = vec![m];
        } else {
            l.member_id = s(&id);
        }
        let (_, e) = h.request(leave_v, GroupRequest::LeaveGroup(l));
        assert_eq!(error_of(only_response(&e)), NONE, "LeaveGroup v{leave_v}");
        let mut o = OffsetDeleteRequest::default();
        o.group_id = GroupId(s(GROUP));
        let (_, e) = h.request(0, GroupRequest::OffsetDelete(o));
        assert_eq!(error_of(only_response(&e)), NONE);
        let mut g = DeleteGroupsRequest::default();
        g.groups_names = vec![GroupId(s(GROUP))];
        let (_, e) = h.request(version.min(2), GroupRequest::DeleteGroups(g));
        let done = h.complete_all(&e);
        let ResponseKind::DeleteGroups(d) = only_response(&done) else {
            panic!()
        };
        assert_eq!(d.results[0].error_code, NONE);
    }
}

#[test]
fn kip_394_pending_member_id_expires_after_the_session_timeout() {
    let mut h = Harness::new(config());
    let (_, e) = h.request(5, join("", None, &range()));
    let id = join_response(only_response(&e)).member_id.to_string();
    assert_eq!(h.c.next_deadline(), Some(10_000));
    h.advance(10_000);
    let (_, e) = h.request(5, join(&id, None, &range()));
    assert_eq!(error_of(only_response(&e)), UNKNOWN_MEMBER_ID);
}

#[test]
fn join_validates_session_timeout_and_group_max_size() {
    let mut h = Harness::new(CoordinatorConfig {
        group_max_size: 1,
        ..config()
    });
    let mut request = join("", None, &range());
    if let GroupRequest::JoinGroup(r) = &mut request {
        r.session_timeout_ms = 5_999; // below group.min.session.timeout.ms
    }
    let (_, e) = h.request(5, request);
    assert_eq!(error_of(only_response(&e)), INVALID_SESSION_TIMEOUT);
    join_first_member(&mut h);
    let (_, e) = h.request(5, join("", None, &range()));
    assert_eq!(error_of(only_response(&e)), GROUP_MAX_SIZE_REACHED);
}

#[test]
fn kip_345_commit_with_a_stale_static_identity_is_fenced() {
    let mut h = Harness::new(config());
    let (_, e) = h.request(5, join("", Some("i1"), &range()));
    let old = join_response(only_response(&e)).member_id.to_string();
    let (_, e) = h.request(3, sync(&old, 1, &[(&old, b"1")]));
    h.complete_all(&e);
    // The leader restarts: a new id and a rebalance (a static leader is not replaced in place).
    let (_, e) = h.request(5, join("", Some("i1"), &range()));
    let new_id = join_response(only_response(&e)).member_id.to_string();
    assert_ne!(new_id, old);
    let mut request = commit(&old, 1, 0, 5);
    if let GroupRequest::OffsetCommit(r) = &mut request {
        r.group_instance_id = Some(s("i1"));
    }
    let (_, e) = h.request(7, request);
    assert_eq!(error_of(only_response(&e)), FENCED_INSTANCE_ID);
}

#[test]
fn persisted_records_travel_as_one_valid_v2_batch_and_load_back() {
    let mut h = Harness::new(config());
    let a = stable_one_member(&mut h);
    let (_, e) = h.request(9, commit(&a, 1, 1, 5));
    h.complete_all(&e);
    let records: Vec<PersistedRecord> = h.persisted.iter().map(|(_, r)| r.clone()).collect();
    assert!(records.len() >= 2);
    let batch = records::encode_batch(&records, 1_000).unwrap();
    // One batch, accepted by the log's validator (CRC-32C, v2 header), every record in it.
    let header = crate::protocol::batch::validate(&batch).unwrap();
    assert_eq!(header.total_size(), batch.len());
    assert_eq!(header.last_offset() + 1, records.len() as i64);
    // The log rewrites the base offset on append; decoding is unaffected.
    let mut appended = batch.to_vec();
    crate::protocol::batch::set_base_offset(&mut appended, 1234);
    let decoded = records::decode_batches(Bytes::from(appended)).unwrap();
    assert_eq!(decoded, records);
    let mut fresh = GroupCoordinator::new(config());
    assert_eq!(fresh.load(0, partition_for_group(GROUP, 50), &decoded), 0);
    assert_eq!(fresh.committed_offset(GROUP, TOPIC, 1), Some(5));
    assert!(records::decode_batches(Bytes::from_static(b"\x00\x01")).is_err());
}
