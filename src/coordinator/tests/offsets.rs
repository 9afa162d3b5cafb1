//! OffsetCommit, OffsetFetch, offset expiry, DeleteGroups, OffsetDelete, records and loading.

use super::*;

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
    let mut h = retention_harness();
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

/// A Stable one-member group subscribed to TOPIC that committed offset 1 of TOPIC-0 and
/// offset 2 of other-0 (a topic nobody subscribes to).
fn stable_member_of_topic_with_two_commits(h: &mut Harness) -> String {
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
    id
}

#[test]
fn offset_delete_refuses_subscribed_topics() {
    let mut h = Harness::new(config());
    stable_member_of_topic_with_two_commits(&mut h);
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
    let records = h.persisted_on(partition);
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
fn kip_345_commit_with_a_stale_static_identity_is_fenced() {
    let mut h = Harness::new(config());
    let (_, e) = h.request(5, join("", Some("i1"), &range()));
    let old = join_response(only_response(&e)).member_id.to_string();
    let (_, e) = h.request(3, sync(&old, 1, &[(&old, b"1")]));
    h.complete_all(&e);
    // The leader restarts: a new id, answered once it is durable.
    let (_, e) = h.request(5, join("", Some("i1"), &range()));
    let e = h.complete_all(&e);
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

/// KIP-496: a Stable consumer group's offsets of a topic no member subscribes to expire
/// retention after their commit; offsets of subscribed topics stay while the group is Stable.
#[test]
fn kip_496_stable_group_offsets_of_unsubscribed_topics_expire() {
    let mut h = retention_harness();
    let id = stable_member_of_topic_with_two_commits(&mut h);
    let mut tombstoned = Vec::new();
    for _ in 0..24 {
        let (_, e) = h.request(3, heartbeat(&id, 1, None));
        assert_eq!(error_of(only_response(&e)), NONE);
        let e = h.advance(5_000);
        h.complete_all(&e);
        for p in persists(&e) {
            let Effect::Persist { records, .. } = p else {
                unreachable!()
            };
            tombstoned.extend(records.iter().map(|r| Record::decode(r).unwrap()));
        }
    }
    assert_eq!(h.c.group_state(GROUP), Some("Stable"));
    assert_eq!(
        h.c.committed_offset(GROUP, TOPIC, 0),
        Some(1),
        "subscribed: kept"
    );
    assert_eq!(
        h.c.committed_offset(GROUP, "other", 0),
        None,
        "unsubscribed: expired"
    );
    assert_eq!(tombstoned.len(), 1, "{tombstoned:?}");
    let Record::Offset { key, value: None } = &tombstoned[0] else {
        panic!("{tombstoned:?}")
    };
    assert_eq!(key.topic, "other");
}

/// An offset whose newer commit is still being written does not expire: its tombstone would
/// follow the commit in the log and erase it on reload.
#[test]
fn an_offset_with_a_commit_in_flight_does_not_expire() {
    let mut h = retention_harness();
    let (_, e) = h.request(9, commit("", -1, 0, 5));
    h.complete_all(&e);
    h.advance(95_000);
    let (_, in_flight) = h.request(9, commit("", -1, 0, 6));
    let e = h.advance(10_000);
    assert!(persists(&e).is_empty(), "{e:?}");
    let done = h.complete_all(&in_flight);
    assert_eq!(error_of(only_response(&done)), NONE);
    assert_eq!(h.c.committed_offset(GROUP, TOPIC, 0), Some(6));
    // The new commit restarted its retention.
    let e = h.advance(10_000);
    assert!(persists(&e).is_empty());
    assert_eq!(h.c.group_state(GROUP), Some("Empty"));
}

/// A DeleteGroups that meets an OffsetCommit still being written is refused with a retriable
/// COORDINATOR_NOT_AVAILABLE: the commit's record precedes any tombstone in the log, so
/// deleting now and applying the commit's answer later would leave memory (group present)
/// and the log (group deleted) disagreeing. Once the commit is durable the deletion goes
/// through, and a reload of what was written agrees that the group is gone.
#[test]
fn delete_groups_waits_for_a_commit_in_flight() {
    let mut h = Harness::new(config());
    let (_, commit_effects) = h.request(9, commit("", -1, 0, 5));
    assert_eq!(h.c.group_state(GROUP), Some("Empty"));
    let mut r = DeleteGroupsRequest::default();
    r.groups_names = vec![GroupId(s(GROUP))];
    let (_, e) = h.request(2, GroupRequest::DeleteGroups(r.clone()));
    let ResponseKind::DeleteGroups(d) = only_response(&e) else {
        panic!()
    };
    assert_eq!(d.results[0].error_code, COORDINATOR_NOT_AVAILABLE);
    assert!(
        persists(&e).is_empty(),
        "nothing written for a refused deletion"
    );
    let done = h.complete_all(&commit_effects);
    assert_eq!(error_of(only_response(&done)), NONE);
    assert_eq!(h.c.committed_offset(GROUP, TOPIC, 0), Some(5));

    let (_, e) = h.request(2, GroupRequest::DeleteGroups(r));
    let done = h.complete_all(&e);
    let ResponseKind::DeleteGroups(d) = only_response(&done) else {
        panic!()
    };
    assert_eq!(d.results[0].error_code, NONE);
    assert_eq!(h.c.group_state(GROUP), None);
    let partition = partition_for_group(GROUP, 50);
    let records = h.persisted_on(partition);
    let mut fresh = GroupCoordinator::new(config());
    fresh.load(0, partition, &records);
    assert_eq!(fresh.group_state(GROUP), None);
    assert_eq!(fresh.committed_offset(GROUP, TOPIC, 0), None);
}

/// DeleteTopics drops the committed offsets of the deleted topics from every group, with
/// tombstones (Kafka's GroupCoordinator.onPartitionsDeleted), and leaves other topics' offsets
/// alone; a reload of what was written agrees. An offset whose OffsetCommit is still being
/// written is dropped at a retry once the commit is durable (its record precedes the
/// tombstone), and a commit made after the deletion, for a topic created again under the same
/// name, stays.
#[test]
fn deleted_topics_lose_their_committed_offsets() {
    let mut h = Harness::new(config());
    let (_, e) = h.request(9, commit("", -1, 0, 5));
    h.complete_all(&e);
    let GroupRequest::OffsetCommit(mut other) = commit("", -1, 3, 9) else {
        unreachable!()
    };
    other.topics[0].name = TopicName(s("other"));
    let (_, e) = h.request(9, GroupRequest::OffsetCommit(other));
    h.complete_all(&e);
    let (_, in_flight) = h.request(9, commit("", -1, 1, 7));

    let e = h.step(Input::TopicsDeleted {
        topics: vec![TOPIC.to_string()],
    });
    assert_eq!(h.c.committed_offset(GROUP, TOPIC, 0), None);
    assert_eq!(h.c.committed_offset(GROUP, "other", 3), Some(9));
    let written = persists(&e);
    assert_eq!(written.len(), 1);
    let Effect::Persist { records, .. } = written[0] else {
        unreachable!()
    };
    let decoded: Vec<Record> = records.iter().map(|r| Record::decode(r).unwrap()).collect();
    assert!(
        matches!(&decoded[..], [Record::Offset { key, value: None }] if key.topic == TOPIC && key.partition == 0),
        "{decoded:?}"
    );
    h.complete_all(&e);

    // The commit in flight lands, then the retry drops it too.
    let done = h.complete_all(&in_flight);
    assert_eq!(error_of(only_response(&done)), NONE);
    assert_eq!(h.c.committed_offset(GROUP, TOPIC, 1), Some(7));
    let e = h.advance(100);
    assert_eq!(h.c.committed_offset(GROUP, TOPIC, 1), None);
    h.complete_all(&e);
    assert!(
        h.c.next_deadline().is_none_or(|t| t > h.now + 1_000),
        "nothing left to retry"
    );

    // The topic exists again: new commits stay.
    h.advance(1);
    let (_, e) = h.request(9, commit("", -1, 0, 1));
    h.complete_all(&e);
    assert_eq!(h.c.committed_offset(GROUP, TOPIC, 0), Some(1));

    let partition = partition_for_group(GROUP, 50);
    let mut fresh = GroupCoordinator::new(config());
    fresh.load(0, partition, &h.persisted_on(partition));
    assert_eq!(fresh.committed_offset(GROUP, TOPIC, 0), Some(1));
    assert_eq!(fresh.committed_offset(GROUP, TOPIC, 1), None);
    assert_eq!(fresh.committed_offset(GROUP, "other", 3), Some(9));
}
