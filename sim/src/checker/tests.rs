use super::*;
use crate::history::{
    AssignmentOp, CommitOp, DataFault, DataFaultEvent, FinalRead, FlushGuarantee, GroupReadOp,
    OffsetResetEvent, ProduceOp, ReadOp,
};

fn value(producer: u32, seq: u32) -> Value {
    Value { producer, seq }
}

fn acked(v: Value, idempotent: bool, offset: i64, at: SimMillis) -> ProduceOp {
    ProduceOp {
        value: v,
        idempotent,
        partition: 0,
        invoke_ms: at,
        complete_ms: at + 5,
        outcome: Outcome::Ok,
        offset: Some(offset),
    }
}

fn read(consumer: u32, offset: i64, v: Option<Value>, at: SimMillis) -> ReadOp {
    ReadOp {
        consumer,
        session: 0,
        partition: 0,
        offset,
        value: v,
        invoke_ms: at,
        complete_ms: at + 2,
        high_watermark: None,
    }
}

/// Three acknowledged writes of one idempotent producer, read back in order, and a final
/// read that holds all three: every checker passes.
fn clean(flush: FlushGuarantee) -> History {
    let mut h = History::new(flush, 1);
    for seq in 0..3 {
        h.produces
            .push(acked(value(1, seq), true, seq as i64, 10 * seq as i64));
        h.reads
            .push(read(7, seq as i64, Some(value(1, seq)), 100 + seq as i64));
    }
    h.heal_ms = 200;
    h.liveness_bound_ms = 1000;
    h.final_read = Some(FinalRead {
        invoke_ms: 300,
        complete_ms: Some(310),
        partitions: vec![(0, (0..3).map(|s| (s as i64, Some(value(1, s)))).collect())],
    });
    h
}

fn classes(violations: &[Violation]) -> Vec<ViolationClass> {
    let set: BTreeSet<_> = violations.iter().map(|v| v.class).collect();
    set.into_iter().collect()
}

fn set_final(h: &mut History, records: Vec<(i64, Option<Value>)>) {
    h.final_read.as_mut().unwrap().partitions = vec![(0, records)];
}

#[test]
fn a_clean_history_passes_every_checker() {
    for flush in [FlushGuarantee::Durable, FlushGuarantee::PageCache] {
        assert_eq!(check_all(&clean(flush)), vec![]);
    }
}

#[test]
fn class_names_round_trip() {
    for class in ViolationClass::ALL {
        assert_eq!(ViolationClass::from_name(class.name()), Some(class));
    }
}

#[test]
fn lost_write_is_caught_after_power_loss_under_durable_flush() {
    let mut h = clean(FlushGuarantee::Durable);
    h.reads.clear();
    h.data_faults.push(DataFaultEvent {
        at_ms: 50,
        node: 1,
        fault: DataFault::PowerLoss,
    });
    set_final(&mut h, vec![(0, Some(value(1, 0))), (1, Some(value(1, 1)))]);
    let found = lost_writes(&h);
    assert_eq!(classes(&found), vec![ViolationClass::LostWrite]);
    assert!(found[0].detail.contains("offset 2"), "{}", found[0]);
}

#[test]
fn power_loss_may_lose_page_cache_writes_but_a_kill_may_not() {
    let mut h = clean(FlushGuarantee::PageCache);
    h.reads.clear();
    set_final(&mut h, vec![(0, Some(value(1, 0)))]);
    h.data_faults.push(DataFaultEvent {
        at_ms: 50,
        node: 1,
        fault: DataFault::PowerLoss,
    });
    assert_eq!(lost_writes(&h), vec![]);
    h.data_faults[0].fault = DataFault::ProcessKill;
    assert_eq!(classes(&lost_writes(&h)), vec![ViolationClass::LostWrite]);
    // A power loss before the write was sent cannot excuse its loss.
    h.data_faults[0] = DataFaultEvent {
        at_ms: 5,
        node: 1,
        fault: DataFault::PowerLoss,
    };
    // (p1#0, sent at 0, is excused; p1#1 and p1#2, sent at 10 and 20, are not.)
    assert_eq!(lost_writes(&h).len(), 2, "{:?}", lost_writes(&h));
}

#[test]
fn a_wiped_disk_excuses_loss_under_any_flush_policy() {
    let mut h = clean(FlushGuarantee::Durable);
    h.reads.clear();
    set_final(&mut h, vec![]);
    h.data_faults.push(DataFaultEvent {
        at_ms: 250,
        node: 1,
        fault: DataFault::Destroyed,
    });
    assert_eq!(lost_writes(&h), vec![]);
}

#[test]
fn acknowledged_write_at_another_offset_is_caught() {
    let mut h = clean(FlushGuarantee::Durable);
    set_final(
        &mut h,
        vec![
            (0, Some(value(1, 0))),
            (1, Some(value(1, 2))),
            (2, Some(value(1, 1))),
        ],
    );
    assert!(classes(&check_all(&h)).contains(&ViolationClass::LostWrite));
}

#[test]
fn duplicate_of_an_idempotent_producer_is_caught() {
    let mut h = clean(FlushGuarantee::Durable);
    let mut records: Vec<_> = (0..3).map(|s| (s as i64, Some(value(1, s)))).collect();
    records.push((3, Some(value(1, 2))));
    set_final(&mut h, records);
    assert_eq!(classes(&duplicates(&h)), vec![ViolationClass::Duplicate]);
}

#[test]
fn duplicates_are_allowed_without_idempotence() {
    let mut h = clean(FlushGuarantee::Durable);
    for op in &mut h.produces {
        op.idempotent = false;
    }
    let mut records: Vec<_> = (0..3).map(|s| (s as i64, Some(value(1, s)))).collect();
    records.push((3, Some(value(1, 2))));
    set_final(&mut h, records);
    assert_eq!(duplicates(&h), vec![]);
}

#[test]
fn two_values_at_one_offset_are_caught_unless_data_could_be_lost_between() {
    let mut h = clean(FlushGuarantee::PageCache);
    h.reads.push(read(8, 1, Some(value(2, 0)), 150));
    h.produces.push(ProduceOp {
        outcome: Outcome::Unknown,
        offset: None,
        ..acked(value(2, 0), false, 0, 140)
    });
    assert_eq!(
        classes(&offset_conflicts(&h)),
        vec![ViolationClass::OffsetConflict]
    );
    // A power loss at 120 under page-cache flushing may drop offset 1 (acked at 10-15,
    // first read at 101-103), after which another record legitimately takes it.
    h.data_faults.push(DataFaultEvent {
        at_ms: 120,
        node: 1,
        fault: DataFault::PowerLoss,
    });
    assert_eq!(offset_conflicts(&h), vec![]);
}

#[test]
fn acknowledged_writes_out_of_producer_order_are_caught() {
    let mut h = clean(FlushGuarantee::Durable);
    h.produces[1].offset = Some(5);
    h.produces[2].offset = Some(4);
    assert_eq!(
        classes(&producer_order(&h)),
        vec![ViolationClass::ProducerOrder]
    );
}

#[test]
fn producer_order_is_judged_over_both_acknowledgements() {
    // seq 1 is acked at offset 1 early; seq 0, in flight across a wipe, is acked later at
    // offset 4 of the new log. The wipe lies between the two acknowledgements.
    let mut h = clean(FlushGuarantee::Durable);
    h.produces[0].offset = Some(4);
    h.produces[0].complete_ms = 500;
    h.data_faults.push(DataFaultEvent {
        at_ms: 300,
        node: 1,
        fault: DataFault::Destroyed,
    });
    assert_eq!(producer_order(&h), vec![]);
    h.data_faults.clear();
    assert_eq!(producer_order(&h).len(), 1);
}

#[test]
fn a_prefetched_read_is_judged_from_when_its_value_was_sent() {
    // The poll that returned offset 2 began after a power loss (page cache) that may have
    // dropped offsets 1 and 2, but the record may have been fetched before it.
    let mut h = clean(FlushGuarantee::PageCache);
    h.reads[2].invoke_ms = 150;
    h.reads[2].complete_ms = 150;
    h.reads.push(read(7, 1, Some(value(1, 1)), 160));
    h.data_faults.push(DataFaultEvent {
        at_ms: 140,
        node: 1,
        fault: DataFault::PowerLoss,
    });
    assert_eq!(read_order(&h), vec![]);
    h.flush = FlushGuarantee::Durable;
    assert_eq!(classes(&read_order(&h)), vec![ViolationClass::ReadOrder]);
}

#[test]
fn reads_going_back_or_skipping_are_caught() {
    let mut h = clean(FlushGuarantee::Durable);
    h.reads.swap(1, 2);
    assert_eq!(classes(&read_order(&h)), vec![ViolationClass::ReadOrder]);
    let mut h = clean(FlushGuarantee::Durable);
    h.reads.remove(1);
    let found = read_order(&h);
    assert_eq!(classes(&found), vec![ViolationClass::ReadOrder]);
    assert!(found[0].detail.contains("skipped"));
    // A new session may start again from the beginning.
    let mut h = clean(FlushGuarantee::Durable);
    let mut again = h.reads[0].clone();
    again.session = 1;
    h.reads.push(again);
    assert_eq!(read_order(&h), vec![]);
}

#[test]
fn a_gap_in_the_final_read_is_caught() {
    let mut h = clean(FlushGuarantee::PageCache);
    set_final(&mut h, vec![(0, Some(value(1, 0))), (2, Some(value(1, 2)))]);
    assert!(read_order(&h)
        .iter()
        .any(|v| v.class == ViolationClass::ReadOrder));
}

#[test]
fn a_hole_in_the_final_read_is_excused_only_after_corruption() {
    let mut h = clean(FlushGuarantee::Durable);
    set_final(&mut h, vec![(0, Some(value(1, 0))), (2, Some(value(1, 2)))]);
    h.data_faults.push(DataFaultEvent {
        at_ms: 150,
        node: 1,
        fault: DataFault::PowerLoss,
    });
    assert_eq!(read_order(&h).len(), 1);
    h.data_faults[0].fault = DataFault::Destroyed;
    assert_eq!(read_order(&h), vec![]);
}

#[test]
fn a_session_skipping_a_hole_is_excused_after_earlier_corruption_but_not_going_back() {
    // Storage corrupted long before the session read: every later reader skips the same
    // destroyed batch (found by seed 120 of the log workload).
    let mut h = clean(FlushGuarantee::Durable);
    h.reads.remove(1);
    h.data_faults.push(DataFaultEvent {
        at_ms: 1,
        node: 1,
        fault: DataFault::Destroyed,
    });
    assert_eq!(read_order(&h), vec![]);
    let mut h = clean(FlushGuarantee::Durable);
    h.reads.swap(1, 2);
    h.data_faults.push(DataFaultEvent {
        at_ms: 1,
        node: 1,
        fault: DataFault::Destroyed,
    });
    assert_eq!(classes(&read_order(&h)), vec![ViolationClass::ReadOrder]);
}

#[test]
fn phantom_garbage_and_early_reads_are_caught() {
    let mut h = clean(FlushGuarantee::Durable);
    h.reads.push(read(7, 3, Some(value(9, 9)), 120));
    h.reads.push(read(7, 4, None, 121));
    h.produces.push(ProduceOp {
        outcome: Outcome::Failed,
        offset: None,
        ..acked(value(3, 0), false, 0, 500)
    });
    h.reads.push(read(7, 5, Some(value(3, 0)), 122));
    let found = phantom_reads(&h);
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found.iter().all(|v| v.class == ViolationClass::PhantomRead));
    assert!(found[0].detail.contains("never sent"));
    assert!(found[1].detail.contains("garbage"));
    assert!(found[2].detail.contains("before it was sent"));
}

#[test]
fn garbage_is_excused_only_after_storage_was_destroyed() {
    let mut h = clean(FlushGuarantee::Durable);
    h.reads.push(read(7, 3, None, 120));
    h.reads.push(read(7, 4, Some(value(9, 9)), 130));
    h.data_faults.push(DataFaultEvent {
        at_ms: 110,
        node: 1,
        fault: DataFault::Destroyed,
    });
    let found = phantom_reads(&h);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].detail.contains("never sent"));
    h.data_faults[0].at_ms = 125;
    assert_eq!(phantom_reads(&h).len(), 2);
}

#[test]
fn a_read_from_the_wrong_partition_is_a_phantom() {
    let mut h = clean(FlushGuarantee::Durable);
    h.partitions = 2;
    h.reads[0].partition = 1;
    assert_eq!(
        classes(&phantom_reads(&h)),
        vec![ViolationClass::PhantomRead]
    );
}

#[test]
fn an_unfinished_or_late_final_read_breaks_liveness() {
    let mut h = clean(FlushGuarantee::Durable);
    h.final_read.as_mut().unwrap().complete_ms = None;
    assert_eq!(classes(&liveness(&h)), vec![ViolationClass::Liveness]);
    // The unfinished read is not also blamed as lost writes.
    assert_eq!(lost_writes(&h), vec![]);
    let mut h = clean(FlushGuarantee::Durable);
    h.final_read.as_mut().unwrap().complete_ms = Some(h.heal_ms + h.liveness_bound_ms + 1);
    assert_eq!(classes(&liveness(&h)), vec![ViolationClass::Liveness]);
    let mut h = clean(FlushGuarantee::Durable);
    h.partitions = 2;
    assert_eq!(classes(&liveness(&h)), vec![ViolationClass::Liveness]);
    let mut h = clean(FlushGuarantee::Durable);
    h.final_read = None;
    assert_eq!(classes(&liveness(&h)), vec![ViolationClass::Liveness]);
}

#[test]
fn violations_per_class_are_bounded() {
    let mut h = clean(FlushGuarantee::Durable);
    for seq in 0..50 {
        h.reads
            .push(read(7, 10 + seq, Some(value(5, seq as u32)), 100));
    }
    assert_eq!(phantom_reads(&h).len(), MAX_VIOLATIONS_PER_CLASS);
}

#[test]
fn a_read_at_or_above_its_fetch_high_watermark_is_caught() {
    let mut h = clean(FlushGuarantee::Durable);
    // Offsets 0..3 read from fetches whose high watermark was 3: fine.
    for r in &mut h.reads {
        r.high_watermark = Some(3);
    }
    assert!(above_high_watermark(&h).is_empty());
    // Offset 2 served by a fetch that reported a high watermark of 2 (not yet durable).
    h.reads[2].high_watermark = Some(2);
    let found = above_high_watermark(&h);
    assert_eq!(classes(&found), vec![ViolationClass::AboveHighWatermark]);
    assert!(found[0].detail.contains("offset 2"), "{}", found[0]);
    assert_eq!(
        classes(&check_all(&h)),
        vec![ViolationClass::AboveHighWatermark]
    );
}

fn assignment(group: &str, member: u32, generation: i32, partitions: &[i32]) -> AssignmentOp {
    AssignmentOp {
        group: group.into(),
        member,
        generation,
        partitions: partitions.to_vec(),
        at_ms: 50,
        since_ms: 50,
    }
}

fn commit(group: &str, partition: i32, offset: i64, at: SimMillis) -> CommitOp {
    CommitOp {
        group: group.into(),
        member: 1,
        partition,
        offset,
        invoke_ms: at,
        complete_ms: at + 5,
    }
}

fn group_read(group: &str, offset: i64, v: Value) -> GroupReadOp {
    GroupReadOp {
        group: group.into(),
        member: 1,
        partition: 0,
        offset,
        value: Some(v),
        at_ms: 150,
    }
}

/// `clean` plus two groups that each consumed every record, with disjoint assignments
/// and rising commits.
fn clean_groups() -> History {
    let mut h = clean(FlushGuarantee::Durable);
    h.group.groups = vec!["a".into(), "b".into()];
    h.group.assignments = vec![
        assignment("a", 1, 1, &[0, 1]),
        assignment("a", 2, 1, &[2]),
        assignment("a", 2, 2, &[0, 1, 2]),
        assignment("b", 1, 1, &[0, 1, 2]),
    ];
    h.group.commits = vec![commit("a", 0, 1, 100), commit("a", 0, 3, 120)];
    for g in ["a", "b"] {
        for seq in 0..3 {
            h.group.reads.push(group_read(g, seq as i64, value(1, seq)));
        }
    }
    h.group.drained_ms = Some(400);
    h
}

#[test]
fn clean_groups_pass_every_checker() {
    assert_eq!(check_all(&clean_groups()), vec![]);
}

#[test]
fn two_owners_of_a_partition_in_one_generation_are_caught() {
    let mut h = clean_groups();
    // Member 2 of group a also got partition 1 in generation 1 (member 1 holds it).
    h.group.assignments.push(assignment("a", 2, 1, &[1]));
    let found = group_ownership(&h);
    assert_eq!(classes(&found), vec![ViolationClass::GroupOwnership]);
    assert!(found[0].detail.contains("partition 1"), "{}", found[0]);
    // The same partition in another generation, or in another group, is fine.
    // A wipe between the two assignments excuses it (generations may start over).
    let mut wiped = clean_groups();
    let mut late = assignment("a", 2, 1, &[1]);
    late.at_ms = 300;
    wiped.group.assignments.push(late.clone());
    assert_eq!(
        classes(&group_ownership(&wiped)),
        vec![ViolationClass::GroupOwnership]
    );
    wiped.data_faults.push(DataFaultEvent {
        at_ms: 200,
        node: 0,
        fault: DataFault::Destroyed,
    });
    assert!(group_ownership(&wiped).is_empty());
    // A holding taken over during a poll that spanned the wipe but first seen after it
    // (the poll blocked past its timeout) is excused too.
    let mut spanned = clean_groups();
    spanned.group.assignments.clear();
    let mut early = assignment("a", 2, 1, &[1]);
    early.since_ms = 40;
    early.at_ms = 300;
    spanned.group.assignments.push(early);
    let mut later = assignment("a", 1, 1, &[1]);
    later.since_ms = 310;
    later.at_ms = 320;
    spanned.group.assignments.push(later);
    assert_eq!(
        classes(&group_ownership(&spanned)),
        vec![ViolationClass::GroupOwnership]
    );
    spanned.data_faults.push(DataFaultEvent {
        at_ms: 200,
        node: 0,
        fault: DataFault::Destroyed,
    });
    assert!(
        group_ownership(&spanned).is_empty(),
        "{:?}",
        group_ownership(&spanned)
    );
    let mut h = clean_groups();
    h.group.assignments.push(assignment("a", 3, 3, &[1]));
    h.group.assignments.push(assignment("b", 2, 2, &[1]));
    assert!(group_ownership(&h).is_empty());
}

#[test]
fn a_committed_offset_going_back_is_caught_unless_reset_or_lost() {
    let mut h = clean_groups();
    h.group.commits.push(commit("a", 0, 2, 200));
    assert_eq!(
        classes(&commit_regressions(&h)),
        vec![ViolationClass::CommitRegression]
    );
    // An admin reset between the two commits excuses it.
    let mut reset = h.clone();
    reset.group.resets.push(OffsetResetEvent {
        group: "a".into(),
        partition: 0,
        at_ms: 150,
    });
    assert!(commit_regressions(&reset).is_empty());
    // So does a power loss under page-cache flushing (the commit was never durable).
    let mut lost = h.clone();
    lost.flush = FlushGuarantee::PageCache;
    lost.data_faults.push(DataFaultEvent {
        at_ms: 150,
        node: 0,
        fault: DataFault::PowerLoss,
    });
    assert!(commit_regressions(&lost).is_empty());
    // So does one after the group read the record below the earlier offset (offset 2,
    // at 150 ms in `clean_groups`), even if before the earlier commit was sent.
    let mut lost_log = h.clone();
    lost_log.flush = FlushGuarantee::PageCache;
    lost_log.group.commits[1].invoke_ms = 170;
    lost_log.group.commits[1].complete_ms = 175;
    lost_log.data_faults.push(DataFaultEvent {
        at_ms: 160,
        node: 0,
        fault: DataFault::PowerLoss,
    });
    assert!(commit_regressions(&lost_log).is_empty());
    // A process kill loses nothing: still a violation.
    lost_log.data_faults[0].fault = DataFault::ProcessKill;
    assert_eq!(
        classes(&commit_regressions(&lost_log)),
        vec![ViolationClass::CommitRegression]
    );
    // Overlapping commits have no order: not a violation.
    let mut overlap = clean_groups();
    overlap.group.commits.push(commit("a", 0, 2, 122));
    assert!(commit_regressions(&overlap).is_empty());
    // Another group or partition is independent.
    let mut other = clean_groups();
    other.group.commits.push(commit("b", 0, 2, 200));
    other.group.commits.push(commit("a", 1, 0, 200));
    assert!(commit_regressions(&other).is_empty());
}

#[test]
fn a_group_missing_an_acknowledged_record_is_caught() {
    let mut h = clean_groups();
    h.group.reads.retain(|r| !(r.group == "b" && r.offset == 1));
    let found = group_lost_records(&h);
    assert_eq!(classes(&found), vec![ViolationClass::GroupLostRecord]);
    assert!(found[0].detail.contains("group b"), "{}", found[0]);
    // Reading it twice (at least once) is fine; a wipe after it was sent excuses it.
    let mut twice = clean_groups();
    twice.group.reads.push(group_read("a", 0, value(1, 0)));
    assert!(group_lost_records(&twice).is_empty());
    h.data_faults.push(DataFaultEvent {
        at_ms: 20,
        node: 0,
        fault: DataFault::Destroyed,
    });
    assert!(group_lost_records(&h).is_empty());
    // A commit made before data was lost excuses records later written below it.
    let mut stale = clean_groups();
    stale.flush = FlushGuarantee::PageCache;
    stale
        .group
        .reads
        .retain(|r| !(r.group == "a" && r.offset == 1));
    stale.produces[1].invoke_ms = 160;
    stale.produces[1].complete_ms = 165;
    stale.data_faults.push(DataFaultEvent {
        at_ms: 150,
        node: 0,
        fault: DataFault::PowerLoss,
    });
    assert!(group_lost_records(&stale).is_empty());
    stale.data_faults[0].fault = DataFault::ProcessKill;
    assert_eq!(
        classes(&group_lost_records(&stale)),
        vec![ViolationClass::GroupLostRecord]
    );
    // Without a drain (groups not run) there is nothing to judge.
    let mut none = clean_groups();
    none.group.drained_ms = None;
    none.group.reads.clear();
    assert!(group_lost_records(&none).is_empty());
}

#[test]
fn value_encoding_round_trips_and_rejects_garbage() {
    let v = value(12, 3456);
    assert_eq!(v.encode().len(), Value::ENCODED_LEN);
    assert_eq!(Value::decode(&v.encode()), Some(v));
    assert_eq!(Value::decode(b"v0000012-00034x6"), None);
    assert_eq!(Value::decode(b"garbage"), None);
    assert_eq!(Value::decode(&[0xff; 16]), None);
}
