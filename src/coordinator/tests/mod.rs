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

mod bounds;
mod membership;
mod model;
mod offsets;

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

    /// Fails the first persist among `effects` with `error`; returns what that causes.
    fn fail_first_persist(&mut self, effects: &[Effect], error: PersistError) -> Vec<Effect> {
        let Effect::Persist { token, .. } = persists(effects)[0] else {
            unreachable!()
        };
        self.step(Input::PersistCompleted {
            token: *token,
            result: Err(error),
        })
    }

    /// What was appended to `__consumer_offsets` partition `partition`, in order.
    fn persisted_on(&self, partition: i32) -> Vec<PersistedRecord> {
        self.persisted
            .iter()
            .filter(|(p, _)| *p == partition)
            .map(|(_, r)| r.clone())
            .collect()
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

/// Offsets expire 100 s after their base time; checked every 10 s.
fn retention_harness() -> Harness {
    Harness::new(CoordinatorConfig {
        offsets_retention_ms: 100_000,
        offsets_retention_check_interval_ms: 10_000,
        ..config()
    })
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
