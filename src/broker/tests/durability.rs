//! The durable flush policy and acks: parked produces answered only once fsynced, bounded by
//! timeout_ms, never acknowledged for a deleted topic, a failed fsync, or before the original
//! of an idempotent retry is durable.

use super::*;

/// A broker on the durable flush policy with topic "d" of one partition, and that log.
fn durable_topic() -> (Harness, LogId) {
    let mut harness = Harness::new(&[("log.flush.policy", "durable")]);
    let topic_id = harness.create_topic("d", 1);
    let log = LogId {
        topic_id,
        partition: 0,
    };
    (harness, log)
}

/// Durable flush policy (DESIGN.md: a reply that depends on durability waits for it): an
/// acks=all produce is parked until the fsync completes; consumers see the records only then.
#[test]
fn durable_policy_parks_acks_all_until_sync_completed() {
    let (mut harness, log) = durable_topic();
    let (id, effects) = harness.request(NOW, 9, produce("d", 0, -1, simple_batch(2, 0)));
    assert_eq!(effects, vec![Seen::Sync(log, 2)]);
    // Appended but not durable: not visible to a fetch yet.
    let (_, effects) = harness.request(NOW, 12, fetch("d", 0, 0, 1));
    let [Seen::Respond(_, _, response)] = effects.as_slice() else {
        panic!("{effects:?}")
    };
    assert_eq!(fetched(response), (0, 0, Bytes::new()));
    // A second produce while the sync is in flight waits for the next (group commit) job.
    let (second, effects) = harness.request(NOW, 9, produce("d", 0, -1, simple_batch(1, 0)));
    assert_eq!(effects, vec![]);
    let effects = harness.step(
        NOW,
        Input::SyncCompleted {
            log,
            up_to_offset: 2,
            result: Ok(()),
        },
    );
    assert_eq!(
        effects,
        vec![
            Seen::Sync(log, 3),
            answered(id, produce_response("d", 0, 0, 0)),
        ]
    );
    let effects = harness.step(
        NOW,
        Input::SyncCompleted {
            log,
            up_to_offset: 3,
            result: Ok(()),
        },
    );
    assert_eq!(
        effects,
        vec![answered(second, produce_response("d", 0, 0, 2))]
    );
}

/// Kafka's produce timeout_ms bounds the wait for durability: a produce whose fsync has not
/// completed by then is answered REQUEST_TIMED_OUT (an expired delayed produce), not held
/// forever; a sync completing afterwards answers nobody twice.
#[test]
fn durable_produce_waiting_past_its_timeout_is_answered_request_timed_out() {
    let (mut harness, log) = durable_topic();
    // produce() sends timeout_ms = 1000.
    let (id, effects) = harness.request(NOW, 9, produce("d", 0, -1, simple_batch(2, 0)));
    assert_eq!(effects, vec![Seen::Sync(log, 2)]);
    assert_eq!(harness.broker.next_deadline(), Some(NOW + 1000));
    assert_eq!(harness.step(NOW + 999, Input::Timer), vec![]);
    assert_eq!(
        harness.step(NOW + 1000, Input::Timer),
        vec![answered(
            id,
            produce_response("d", 0, error::REQUEST_TIMED_OUT, -1)
        )]
    );
    let late = Input::SyncCompleted {
        log,
        up_to_offset: 2,
        result: Ok(()),
    };
    assert_eq!(harness.step(NOW + 1001, late), vec![]);
}

/// A produce waiting for durability whose topic is deleted meanwhile is answered
/// UNKNOWN_TOPIC_OR_PARTITION: its records were never durable, so success would be a lie.
#[test]
fn durable_produce_whose_topic_is_deleted_is_not_acknowledged() {
    let mut harness = Harness::new(&[("log.flush.policy", "durable")]);
    let topic_id = harness.create_topic("d", 1);
    let (id, effects) = harness.request(NOW, 9, produce("d", 0, -1, simple_batch(2, 0)));
    assert_eq!(effects.len(), 1, "only the sync: {effects:?}");
    let (delete, effects) = harness.request(
        NOW,
        6,
        RequestKind::DeleteTopics(DeleteTopicsRequest::default().with_topics(vec![
            delete_topics_request::DeleteTopicState::default()
                .with_name(None)
                .with_topic_id(topic_id),
        ])),
    );
    let [Seen::Respond(first, _, ResponseKind::DeleteTopics(_)), Seen::Respond(second, _, answer)] =
        effects.as_slice()
    else {
        panic!("{effects:?}")
    };
    assert_eq!((*first, *second), (delete, id));
    assert_eq!(
        answer,
        &produce_response("d", 0, error::UNKNOWN_TOPIC_OR_PARTITION, -1)
    );
}

/// KIP-98: a retried idempotent batch is answered with its original offset, but under the
/// durable flush policy an acks=all retry must not be acknowledged before the original is
/// durable, or a crash could lose a record the producer was told is safe.
#[test]
fn durable_idempotent_retry_waits_for_the_original_to_be_durable() {
    use crate::protocol::batch::testing::{build_batch, TestRecord};
    let (mut harness, log) = durable_topic();
    let records: Vec<TestRecord> = (0..3)
        .map(|i| TestRecord {
            key: None,
            value: Some(vec![i]),
            headers: Vec::new(),
        })
        .collect();
    let batch = build_batch(&records, 0, 7, 0, 0);
    let (first, effects) = harness.request(NOW, 9, produce("d", 0, -1, batch.clone()));
    assert_eq!(effects, vec![Seen::Sync(log, 3)]);
    // The producer timed out and retried the same batch before the fsync finished.
    let (retry, effects) = harness.request(NOW, 9, produce("d", 0, -1, batch));
    assert_eq!(effects, vec![]);
    let done = Input::SyncCompleted {
        log,
        up_to_offset: 3,
        result: Ok(()),
    };
    assert_eq!(
        harness.step(NOW, done),
        vec![
            answered(first, produce_response("d", 0, 0, 0)),
            answered(retry, produce_response("d", 0, 0, 0)),
        ]
    );
}

/// A failed fsync answers the parked produce with KAFKA_STORAGE_ERROR, never success.
#[test]
fn failed_sync_answers_storage_error() {
    let (mut harness, log) = durable_topic();
    let (id, _) = harness.request(NOW, 9, produce("d", 0, -1, simple_batch(2, 0)));
    let effects = harness.step(
        NOW,
        Input::SyncCompleted {
            log,
            up_to_offset: 2,
            result: Err("EIO".to_string()),
        },
    );
    assert_eq!(
        effects,
        vec![answered(
            id,
            produce_response("d", 0, error::KAFKA_STORAGE_ERROR, -1)
        )]
    );
    // The partition is offline until restart: no new sync job, produce and fetch refused.
    let (id, effects) = harness.request(NOW, 9, produce("d", 0, -1, simple_batch(1, 0)));
    assert_eq!(
        effects,
        vec![answered(
            id,
            produce_response("d", 0, error::KAFKA_STORAGE_ERROR, -1)
        )]
    );
    let (_, effects) = harness.request(NOW, 12, fetch("d", 0, 0, 1));
    let [Seen::Respond(_, _, response)] = effects.as_slice() else {
        panic!("{effects:?}")
    };
    assert_eq!(fetched(response).0, error::KAFKA_STORAGE_ERROR);
}

/// docs/coordinator.md (loading): a `__consumer_offsets` batch whose header rotted in the
/// middle of a segment, below the recovery point (never re-validated, as in Kafka), costs only
/// the batches up to the next offset-index entry, from which the log's read walks again
/// (`PartitionLog::next_indexed_offset`), and those are reported as skipped. Before, loading
/// resumed at the next segment: every commit after the damage in this (only) segment was lost.
#[test]
fn offsets_loading_resumes_at_the_next_index_entry_after_a_rotted_batch() {
    use crate::coordinator::records::{self, OffsetKey, OffsetValue, Record};
    let disk = Arc::new(SimDisk::new(7));
    let mut config = NodeConfig::default();
    // About one index entry every two or three commit batches.
    config.set("log.index.interval.bytes", "256").unwrap();
    let open = |disk: &Arc<SimDisk>| {
        Broker::open(config.clone(), "127.0.0.1:9092", disk.clone(), 42, NOW).unwrap()
    };
    let mut broker = open(&disk);
    assert_eq!(broker.ensure_consumer_offsets(1, NOW), Ok(1));
    let commit = |offset: i64| Record::Offset {
        key: OffsetKey {
            group_id: "g".to_string(),
            topic: "t".to_string(),
            partition: 0,
        },
        value: Some(OffsetValue {
            offset,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: NOW,
        }),
    };
    const COMMITS: i64 = 40;
    let mut effects = Vec::new();
    for offset in 0..COMMITS {
        let batch = records::encode_batch(&[commit(offset).encode()], NOW).unwrap();
        // One batch per commit, at log offset == committed offset.
        assert_eq!(
            broker.append_internal(NOW, 0, batch, &mut effects),
            Ok(offset + 1)
        );
    }
    broker.close().unwrap();
    drop(broker);
    let dir = "__consumer_offsets-0";
    let index = disk
        .contents(&format!("{dir}/00000000000000000000.index"))
        .unwrap();
    let entries: Vec<i64> = index
        .chunks_exact(8)
        .map(|entry| i64::from(u32::from_be_bytes(entry[..4].try_into().unwrap())))
        .collect();
    assert!(entries.len() >= 4, "{entries:?}");
    // Rot the length of an indexed batch in the middle: the walk cannot step over it.
    let (rotted, next_entry) = (entries[entries.len() / 2], entries[entries.len() / 2 + 1]);
    assert!(
        next_entry > rotted + 1,
        "batches lie between the two entries"
    );
    let log_path = format!("{dir}/00000000000000000000.log");
    let segment = disk.contents(&log_path).unwrap();
    let mut position = 0usize;
    for _ in 0..rotted {
        position += crate::protocol::batch::parse_header(&segment[position..])
            .unwrap()
            .total_size();
    }
    assert!(disk.corrupt(&log_path, position as u64 + 8..position as u64 + 12));
    let broker = open(&disk);
    let read = broker.read_internal(0, 1 << 20).unwrap();
    assert_eq!(read.skipped, vec![rotted..next_entry]);
    assert_eq!(read.skipped_offsets(), next_entry - rotted);
    let loaded: Vec<i64> = read
        .chunks
        .into_iter()
        .flat_map(|chunk| records::decode_batches(chunk).unwrap())
        .map(|record| match Record::decode(&record).unwrap() {
            Record::Offset {
                value: Some(value), ..
            } => value.offset,
            other => panic!("{other:?}"),
        })
        .collect();
    let expected: Vec<i64> = (0..rotted).chain(next_entry..COMMITS).collect();
    assert_eq!(loaded, expected);
}
