//! JoinGroup (KIP-394, KIP-345), SyncGroup, Heartbeat, LeaveGroup, timeouts, DescribeGroups.

use super::*;

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
    assert!(
        responses(&e).is_empty(),
        "answered once the new id is durable"
    );
    assert_eq!(persists(&e).len(), 1, "the new member id is persisted");
    let done = h.complete_all(&e);
    let r = join_response(only_response(&done));
    assert_eq!(r.error_code, NONE);
    assert_eq!(r.generation_id, 2);
    assert_eq!(r.leader.as_str(), leader);
    let new_id = r.member_id.to_string();
    assert_ne!(new_id, follower);
    assert_eq!(h.c.group_state(GROUP), Some("Stable"));
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

/// Two static members (instances i1, i2) in Stable at generation 2, assignments "1" and "2";
/// returns (leader id, follower id).
fn stable_static_pair(h: &mut Harness) -> (String, String) {
    let (_, e) = h.request(5, join("", Some("i1"), &range()));
    let leader = join_response(only_response(&e)).member_id.to_string();
    let (_, e) = h.request(3, sync(&leader, 1, &[(&leader, b"1")]));
    h.complete_all(&e);
    let (_, e) = h.request(5, join("", Some("i2"), &range()));
    let (_, e2) = h.request(5, join(&leader, Some("i1"), &range()));
    let all: Vec<Effect> = e.into_iter().chain(e2).collect();
    let follower = responses(&all)
        .into_iter()
        .map(|(_, r)| join_response(r).member_id.to_string())
        .find(|m| *m != leader)
        .unwrap();
    h.request(3, sync(&follower, 2, &[]));
    let (_, e) = h.request(3, sync(&leader, 2, &[(&leader, b"1"), (&follower, b"2")]));
    assert_eq!(responses(&h.complete_all(&e)).len(), 2);
    assert_eq!(h.c.group_state(GROUP), Some("Stable"));
    (leader, follower)
}

#[test]
fn kip_345_restarted_static_leader_keeps_generation_without_rebalance() {
    for version in [5, 9] {
        let mut h = Harness::new(config());
        let (leader, follower) = stable_static_pair(&mut h);
        // The leader restarts: empty member id, same instance, same protocols.
        let (_, e) = h.request(version, join("", Some("i1"), &range()));
        assert!(
            responses(&e).is_empty(),
            "v{version}: answered once durable"
        );
        let done = h.complete_all(&e);
        let r = join_response(only_response(&done));
        assert_eq!(r.error_code, NONE, "v{version}");
        assert_eq!(r.generation_id, 2, "v{version}: no new generation");
        let new_id = r.member_id.to_string();
        assert_ne!(new_id, leader);
        assert_eq!(h.c.group_state(GROUP), Some("Stable"), "v{version}");
        if version >= 9 {
            // KIP-814: told it leads (with the members) but to skip the assignor.
            assert_eq!(r.leader.as_str(), new_id);
            assert!(r.skip_assignment);
            let mut ids: Vec<String> = r.members.iter().map(|m| m.member_id.to_string()).collect();
            ids.sort();
            let mut expected = vec![new_id.clone(), follower.clone()];
            expected.sort();
            assert_eq!(ids, expected);
        } else {
            // Before v9: the old leader id, so the member does not run the assignor.
            assert_eq!(r.leader.as_str(), leader);
            assert!(!r.skip_assignment);
            assert!(r.members.is_empty());
        }
        // The new member id (as leader) is persisted, with the assignments kept.
        let p = persists(&e);
        assert_eq!(p.len(), 1, "v{version}");
        let Effect::Persist { records, .. } = p[0] else {
            unreachable!()
        };
        let Record::Group {
            value: Some(value), ..
        } = Record::decode(&records[0]).unwrap()
        else {
            panic!("not group metadata")
        };
        assert_eq!(value.generation_id, 2);
        assert_eq!(value.leader.as_deref(), Some(new_id.as_str()));
        let mut stored: Vec<(String, Bytes)> = value
            .members
            .iter()
            .map(|m| (m.member_id.clone(), m.assignment.clone()))
            .collect();
        stored.sort();
        let mut expected = vec![
            (new_id.clone(), Bytes::from_static(b"1")),
            (follower.clone(), Bytes::from_static(b"2")),
        ];
        expected.sort();
        assert_eq!(stored, expected);
        // Both members sync into the same generation and keep their assignments, even when
        // the leader sends no assignment.
        let (_, e) = h.request(3, sync(&new_id, 2, &[]));
        assert_eq!(
            sync_response(only_response(&e)).assignment,
            Bytes::from_static(b"1")
        );
        let (_, e) = h.request(3, sync(&follower, 2, &[]));
        assert_eq!(
            sync_response(only_response(&e)).assignment,
            Bytes::from_static(b"2")
        );
        let (_, e) = h.request(3, heartbeat(&follower, 2, Some("i2")));
        assert_eq!(error_of(only_response(&e)), NONE);
        // The old leader identity is fenced.
        let (_, e) = h.request(3, heartbeat(&leader, 2, Some("i1")));
        assert_eq!(error_of(only_response(&e)), FENCED_INSTANCE_ID);
    }
}

#[test]
fn kip_345_restarted_static_member_in_completing_rebalance_rebalances() {
    let mut h = Harness::new(config());
    let (leader, follower) = stable_static_pair(&mut h);
    // The follower changes protocols: generation 3 is formed, the leader has not synced yet.
    let (_, e) = h.request(5, join(&follower, Some("i2"), &[("range", b"x")]));
    let (_, e2) = h.request(5, join(&leader, Some("i1"), &range()));
    assert_eq!(responses(&e).len() + responses(&e2).len(), 2);
    assert_eq!(h.c.group_state(GROUP), Some("CompletingRebalance"));
    let (_, waiting) = h.request(3, sync(&follower, 3, &[]));
    assert!(responses(&waiting).is_empty());
    // The leader restarts before assigning: the assignment it might send would name the old
    // id, so the group rebalances (as Kafka does) instead of answering at once.
    let (_, e) = h.request(9, join("", Some("i1"), &range()));
    assert_eq!(h.c.group_state(GROUP), Some("PreparingRebalance"));
    let codes: Vec<i16> = responses(&e).iter().map(|(_, r)| error_of(r)).collect();
    assert_eq!(
        codes,
        vec![REBALANCE_IN_PROGRESS],
        "the follower's SyncGroup"
    );
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

/// Kafka's InitialDelayedJoin: a member joining during group.initial.rebalance.delay.ms earns
/// the group another delay; the delays never run past the rebalance timeout (here 30 s).
#[test]
fn initial_rebalance_delay_restarts_while_members_keep_joining_up_to_the_rebalance_timeout() {
    let mut h = Harness::new(CoordinatorConfig {
        group_initial_rebalance_delay_ms: 3_000,
        ..config()
    });
    let (_, e) = h.request(3, join("", None, &range()));
    assert!(responses(&e).is_empty());
    // A second member at 2 s: at 3 s the delay restarts (to 6 s) instead of completing.
    h.now = 2_000;
    let (_, e) = h.request(3, join("", None, &range()));
    assert!(responses(&e).is_empty());
    let e = h.advance(1_000);
    assert!(responses(&e).is_empty(), "{e:?}");
    assert_eq!(h.c.next_deadline(), Some(6_000));
    // Nobody joined meanwhile: the join phase completes at 6 s with both members.
    let e = h.advance(3_000);
    let rs = responses(&e);
    assert_eq!(rs.len(), 2);
    assert_eq!(join_response(rs[0].1).generation_id, 1);

    // A member every 2.5 s keeps restarting the delay, but not past the 30 s rebalance timeout.
    let mut h = Harness::new(CoordinatorConfig {
        group_initial_rebalance_delay_ms: 3_000,
        ..config()
    });
    h.request(3, join("", None, &range()));
    let mut answered_at = None;
    for step in 1..=20 {
        h.now = step * 2_500 - 2_500 / 2;
        let (_, e) = h.request(3, join("", None, &range()));
        if !responses(&e).is_empty() {
            answered_at.get_or_insert(h.now);
        }
        let e = h.advance(2_500 / 2);
        if !responses(&e).is_empty() {
            answered_at.get_or_insert(h.now);
        }
        if answered_at.is_some() {
            break;
        }
    }
    assert_eq!(answered_at, Some(30_000));
}

/// The coordinator's side of the kafka-python 3.0.12 stranded-leader flake (docs/coordinator.md):
/// the leader of a Stable generation goes silent (no heartbeat, no rejoin) just as a new member
/// joins. As in Kafka (a member not waiting in JoinGroup or SyncGroup must heartbeat), the
/// silent leader is removed at its session timeout, not at the 30 s rebalance deadline, and the
/// join phase completes at once with the member that did join, which leads the new generation.
#[test]
fn a_silent_leader_expires_at_its_session_timeout_during_a_rebalance() {
    let mut h = Harness::new(config());
    let a = stable_one_member(&mut h); // synced at t=0, session 10 s
    h.now = 1_000;
    let (_, e) = h.request(7, join("", None, &range()));
    let c = join_response(only_response(&e)).member_id.to_string();
    let (_, e) = h.request(7, join(&c, None, &range()));
    assert!(responses(&e).is_empty(), "c waits for a to rejoin");
    assert_eq!(h.c.group_state(GROUP), Some("PreparingRebalance"));
    assert_eq!(
        h.c.next_deadline(),
        Some(10_000),
        "a's session, before the rebalance deadline"
    );
    let e = h.advance(9_000);
    let r = join_response(only_response(&e));
    assert_eq!((r.error_code, r.generation_id), (NONE, 2));
    assert_eq!(r.leader.as_str(), c, "the remaining member leads");
    assert_eq!(r.members.len(), 1);
    let (_, e) = h.request(3, heartbeat(&a, 1, None));
    assert_eq!(error_of(only_response(&e)), UNKNOWN_MEMBER_ID);
}

/// KIP-345 as Kafka does it: a static member's rejoin in Stable is answered only once its new
/// member id is durable; if that write fails, the replacement is reverted (the old id is the
/// member again, keeps its assignment and is no longer fenced) and the rejoin gets the error.
#[test]
fn kip_345_static_rejoin_whose_write_fails_is_reverted() {
    let mut h = Harness::new(config());
    let (leader, follower) = stable_static_pair(&mut h);
    let (_, e) = h.request(5, join("", Some("i1"), &range()));
    assert!(responses(&e).is_empty());
    // Meanwhile the old identity is fenced, as in Kafka.
    let (_, hb) = h.request(3, heartbeat(&leader, 2, Some("i1")));
    assert_eq!(error_of(only_response(&hb)), FENCED_INSTANCE_ID);
    let failed = h.fail_first_persist(&e, PersistError::Unavailable);
    let r = join_response(only_response(&failed));
    assert_eq!(r.error_code, COORDINATOR_NOT_AVAILABLE);
    assert_eq!(r.member_id.as_str(), "");
    // Reverted: the old leader id is the member again, with its assignment, still leading.
    let (_, hb) = h.request(3, heartbeat(&leader, 2, Some("i1")));
    assert_eq!(error_of(only_response(&hb)), NONE);
    let (_, e) = h.request(3, sync(&leader, 2, &[]));
    assert_eq!(
        sync_response(only_response(&e)).assignment,
        Bytes::from_static(b"1")
    );
    let ResponseKind::DescribeGroups(d) = only_response(&describe(&mut h)).clone() else {
        unreachable!()
    };
    let mut ids: Vec<String> = d.groups[0]
        .members
        .iter()
        .map(|m| m.member_id.to_string())
        .collect();
    ids.sort();
    let mut expected = vec![leader.clone(), follower.clone()];
    expected.sort();
    assert_eq!(ids, expected);
    assert_eq!(h.c.group_state(GROUP), Some("Stable"));
}

fn describe(h: &mut Harness) -> Vec<Effect> {
    let mut r = DescribeGroupsRequest::default();
    r.groups = vec![GroupId(s(GROUP))];
    h.request(5, GroupRequest::DescribeGroups(r)).1
}

/// Kafka extends the initial rebalance delay only for a group that never had a generation
/// (addMemberAndRebalance sets newMemberAdded at generation 0): a group that emptied after
/// generation 1 gets one delay when members come back, however many join during it.
#[test]
fn initial_rebalance_delay_is_not_extended_after_the_first_generation() {
    let mut h = Harness::new(CoordinatorConfig {
        group_initial_rebalance_delay_ms: 3_000,
        ..config()
    });
    let (_, e) = h.request(5, join("", None, &range()));
    let a = join_response(only_response(&e)).member_id.to_string();
    h.request(5, join(&a, None, &range()));
    let e = h.advance(3_000);
    assert_eq!(join_response(only_response(&e)).generation_id, 1);
    let (_, e) = h.request(3, sync(&a, 1, &[(&a, b"a")]));
    h.complete_all(&e);
    assert_eq!(h.c.group_state(GROUP), Some("Stable"));
    let mut leave = LeaveGroupRequest::default();
    leave.group_id = GroupId(s(GROUP));
    leave.member_id = s(&a);
    h.request(1, GroupRequest::LeaveGroup(leave));
    assert_eq!(h.c.group_state(GROUP), Some("Empty"));

    let start = h.now;
    h.request(3, join("", None, &range()));
    h.now = start + 2_000;
    h.request(3, join("", None, &range()));
    let e = h.advance(1_000);
    let rs = responses(&e);
    assert_eq!(rs.len(), 2, "completes at the first delay's end: {e:?}");
    // Generation 2 was the empty one the group moved to when its last member left (Kafka's
    // initNextGeneration with no members).
    assert_eq!(join_response(rs[0].1).generation_id, 3);
}
