//! The bound on persists awaiting completion (MAX_PENDING_PERSISTS) for every kind of write,
//! and Kafka's mapping of append errors to coordinator errors (GroupMetadataManager's
//! storeOffsets and storeGroup).

use super::*;

/// A simple-consumer commit (generation -1, KIP-98 style admin commit) to `group`, left
/// pending: it fills one place in the persist queue without touching GROUP.
fn fill_with_commit(h: &mut Harness, group: &str) -> Vec<Effect> {
    let mut c = commit("", -1, 0, 1);
    if let GroupRequest::OffsetCommit(r) = &mut c {
        r.group_id = GroupId(s(group));
    }
    let (_, e) = h.request(9, c);
    assert_eq!(persists(&e).len(), 1, "{e:?}");
    e
}

fn bounded(bound: usize) -> Harness {
    let mut h = Harness::new(config());
    h.c.set_max_pending_persists(bound);
    h
}

#[test]
fn offset_commit_over_the_persist_bound_is_coordinator_not_available() {
    let mut h = bounded(1);
    let first = fill_with_commit(&mut h, "other");
    let (_, e) = h.request(9, commit("", -1, 0, 5));
    assert!(persists(&e).is_empty(), "nothing written over the bound");
    assert_eq!(error_of(only_response(&e)), COORDINATOR_NOT_AVAILABLE);
    assert_eq!(h.c.committed_offset(GROUP, TOPIC, 0), None);
    // Once the queue drains the retry succeeds.
    h.complete_all(&first);
    let (_, e) = h.request(9, commit("", -1, 0, 5));
    let done = h.complete_all(&e);
    assert_eq!(error_of(only_response(&done)), NONE);
    assert_eq!(h.c.committed_offset(GROUP, TOPIC, 0), Some(5));
}

#[test]
fn leader_sync_over_the_bound_fails_every_waiting_sync_and_rebalances() {
    let mut h = bounded(1);
    // Two members in CompletingRebalance, generation 1.
    let (_, e) = h.request(5, join("", None, &range()));
    let a = join_response(only_response(&e)).member_id.to_string();
    let (_, e) = h.request(5, join("", None, &range()));
    let b = join_response(only_response(&e)).member_id.to_string();
    h.request(5, join(&a, None, &range()));
    let (_, e) = h.request(5, join(&b, None, &range()));
    assert_eq!(responses(&e).len(), 2);
    let leader = join_response(responses(&e)[0].1).leader.to_string();
    let follower = if leader == a { b.clone() } else { a.clone() };
    let (follower_sync, e) = h.request(3, sync(&follower, 1, &[]));
    assert!(responses(&e).is_empty());
    let _full = fill_with_commit(&mut h, "other");
    let (leader_sync, e) = h.request(3, sync(&leader, 1, &[(&a, b"A"), (&b, b"B")]));
    assert!(persists(&e).is_empty(), "nothing written over the bound");
    let rs = responses(&e);
    let mut answered: Vec<RequestToken> = rs.iter().map(|(t, _)| *t).collect();
    answered.sort();
    assert_eq!(answered, vec![follower_sync, leader_sync]);
    for (_, r) in rs {
        assert_eq!(error_of(r), COORDINATOR_NOT_AVAILABLE);
    }
    assert_eq!(h.c.group_state(GROUP), Some("PreparingRebalance"));
}

#[test]
fn delete_groups_over_the_bound_deletes_what_fits_and_refuses_the_rest() {
    let mut h = bounded(2);
    for group in ["d1", "d2"] {
        let e = fill_with_commit(&mut h, group);
        h.complete_all(&e);
    }
    let _full = fill_with_commit(&mut h, "other");
    let mut r = DeleteGroupsRequest::default();
    r.groups_names = vec![GroupId(s("d1")), GroupId(s("d2"))];
    let (_, e) = h.request(2, GroupRequest::DeleteGroups(r));
    assert_eq!(persists(&e).len(), 1, "one place was left");
    assert_eq!(h.c.group_state("d1"), None);
    assert_eq!(h.c.group_state("d2"), Some("Empty"), "refused, so kept");
    let done = h.complete_all(&e);
    let ResponseKind::DeleteGroups(d) = only_response(&done) else {
        panic!("{done:?}")
    };
    let codes: Vec<i16> = d.results.iter().map(|x| x.error_code).collect();
    assert_eq!(codes, vec![NONE, COORDINATOR_NOT_AVAILABLE]);
    assert_eq!(h.c.committed_offset("d2", TOPIC, 0), Some(1));
}

#[test]
fn offset_delete_over_the_bound_is_coordinator_not_available_and_deletes_nothing() {
    let mut h = bounded(1);
    let e = fill_with_commit(&mut h, GROUP);
    h.complete_all(&e);
    let _full = fill_with_commit(&mut h, "other");
    let mut r = OffsetDeleteRequest::default();
    r.group_id = GroupId(s(GROUP));
    let mut t = OffsetDeleteRequestTopic::default();
    t.name = TopicName(s(TOPIC));
    let mut p = OffsetDeleteRequestPartition::default();
    p.partition_index = 0;
    t.partitions = vec![p];
    r.topics = vec![t];
    let (_, e) = h.request(0, GroupRequest::OffsetDelete(r));
    assert!(persists(&e).is_empty());
    assert_eq!(error_of(only_response(&e)), COORDINATOR_NOT_AVAILABLE);
    assert_eq!(h.c.committed_offset(GROUP, TOPIC, 0), Some(1));
}

#[test]
fn kip_345_static_rejoin_over_the_bound_is_refused_before_fencing_the_old_id() {
    let mut h = bounded(1);
    let (_, e) = h.request(5, join("", Some("i1"), &range()));
    let old = join_response(only_response(&e)).member_id.to_string();
    let (_, e) = h.request(3, sync(&old, 1, &[(&old, b"a")]));
    h.complete_all(&e);
    let _full = fill_with_commit(&mut h, "other");
    let (_, e) = h.request(5, join("", Some("i1"), &range()));
    assert!(persists(&e).is_empty());
    assert_eq!(error_of(only_response(&e)), COORDINATOR_NOT_AVAILABLE);
    // The old identity still holds the instance.
    let (_, e) = h.request(3, heartbeat(&old, 1, Some("i1")));
    assert_eq!(error_of(only_response(&e)), NONE);
    assert_eq!(h.c.group_state(GROUP), Some("Stable"));
}

#[test]
fn empty_group_metadata_over_the_bound_is_skipped_and_counted() {
    let mut h = bounded(1);
    let a = stable_one_member(&mut h);
    let _full = fill_with_commit(&mut h, "other");
    let mut r = LeaveGroupRequest::default();
    r.group_id = GroupId(s(GROUP));
    r.member_id = s(&a);
    let (_, e) = h.request(1, GroupRequest::LeaveGroup(r));
    assert_eq!(error_of(only_response(&e)), NONE);
    assert!(persists(&e).is_empty(), "{e:?}");
    assert_eq!(h.c.group_state(GROUP), Some("Empty"));
    assert_eq!(h.c.skipped_metadata_writes(), 1);
    assert_eq!(h.c.pending_persists(), 1);
}

#[test]
fn offset_expiry_over_the_bound_waits_for_the_next_check() {
    let mut h = retention_harness();
    h.c.set_max_pending_persists(1);
    let e = fill_with_commit(&mut h, GROUP);
    h.complete_all(&e);
    let full = fill_with_commit(&mut h, "other");
    let mut all = Vec::new();
    for _ in 0..11 {
        all.extend(h.advance(10_000));
    }
    assert!(persists(&all).is_empty());
    assert_eq!(h.c.committed_offset(GROUP, TOPIC, 0), Some(1), "kept");
    h.complete_all(&full);
    let e = h.advance(10_000);
    assert_eq!(persists(&e).len(), 1, "expired at the next check");
    assert_eq!(h.c.committed_offset(GROUP, TOPIC, 0), None);
}

/// Kafka's GroupMetadataManager.storeOffsets: NOT_LEADER_OR_FOLLOWER and KAFKA_STORAGE_ERROR
/// -> NOT_COORDINATOR, UNKNOWN_TOPIC_OR_PARTITION / NOT_ENOUGH_REPLICAS ->
/// COORDINATOR_NOT_AVAILABLE, REQUEST_TIMED_OUT passed through, MESSAGE_TOO_LARGE /
/// RECORD_LIST_TOO_LARGE -> INVALID_COMMIT_OFFSET_SIZE.
#[test]
fn failed_offset_commit_write_maps_to_kafkas_codes() {
    for (error, code) in [
        (PersistError::NotLeader, NOT_COORDINATOR),
        (PersistError::Storage, NOT_COORDINATOR),
        (PersistError::Unavailable, COORDINATOR_NOT_AVAILABLE),
        (PersistError::TimedOut, REQUEST_TIMED_OUT),
        (PersistError::TooLarge, INVALID_COMMIT_OFFSET_SIZE),
    ] {
        let mut h = Harness::new(config());
        let (_, e) = h.request(9, commit("", -1, 0, 5));
        let e = h.fail_first_persist(&e, error);
        assert_eq!(error_of(only_response(&e)), code, "{error:?}");
        assert_eq!(h.c.committed_offset(GROUP, TOPIC, 0), None);
    }
}

/// Kafka's GroupMetadataManager.storeGroup (the leader's SyncGroup): as for offsets, except
/// REQUEST_TIMED_OUT -> REBALANCE_IN_PROGRESS and a record too large is UNKNOWN_SERVER_ERROR.
#[test]
fn failed_assignment_write_maps_to_kafkas_codes() {
    for (error, code) in [
        (PersistError::NotLeader, NOT_COORDINATOR),
        (PersistError::Storage, NOT_COORDINATOR),
        (PersistError::Unavailable, COORDINATOR_NOT_AVAILABLE),
        (PersistError::TimedOut, REBALANCE_IN_PROGRESS),
        (PersistError::TooLarge, UNKNOWN_SERVER_ERROR),
    ] {
        let mut h = Harness::new(config());
        let id = join_first_member(&mut h);
        let (_, e) = h.request(3, sync(&id, 1, &[(&id, b"a")]));
        let e = h.fail_first_persist(&e, error);
        assert_eq!(error_of(only_response(&e)), code, "{error:?}");
        assert_eq!(h.c.group_state(GROUP), Some("PreparingRebalance"));
    }
}
