//! The consumer groups part of the `groups` workload (node workload plus groups): two groups of
//! subscribing Karst consumers (2 and 3 members) read the topic with manual commits while the
//! producers write and the nemesis strikes. Recorded: each assignment a member takes over
//! (group, member, generation, partitions), each commit the coordinator acknowledged, and
//! each record a member consumed. After the producers stop, the groups drain until each has
//! consumed every acknowledged record (or the liveness bound passes), then stop.

use super::{sleep_ms, Shared};
use crate::history::{AssignmentOp, CommitOp, GroupReadOp, Outcome, SimMillis, Value};
use karst::client::{
    ClientConfig, ClientError, Consumer, ConsumerConfig, OffsetReset, TopicPartition,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The groups and how many members each has.
pub(crate) const GROUPS: [(&str, u32); 2] = [("g0", 2), ("g1", 3)];
/// Short sessions so faults cause rebalances within a run (the node is configured to allow
/// them: group.min.session.timeout.ms).
pub(crate) const SESSION_TIMEOUT_MS: i32 = 2_000;
const HEARTBEAT_INTERVAL_MS: u64 = 300;
const MAX_POLL_INTERVAL_MS: i32 = 10_000;
/// A member commits what it consumed about this often.
const COMMIT_INTERVAL_MS: SimMillis = 200;

/// Stops the group members.
pub(crate) struct GroupsStop {
    pub stop: AtomicBool,
}

/// One member's loop: subscribe, poll, record, commit; a failed consumer is replaced by a new
/// one (a new member id) after a pause.
pub(crate) async fn member_loop(
    client: ClientConfig,
    topic: &'static str,
    group: &'static str,
    member: u32,
    stop: Arc<GroupsStop>,
    shared: Shared,
) {
    let name = format!("{group}-m{member}");
    let config = ConsumerConfig {
        client: ClientConfig {
            client_id: name.clone(),
            allow_auto_topic_creation: false,
            ..client
        },
        auto_offset_reset: OffsetReset::Earliest,
        fetch_max_wait_ms: 100,
        max_partition_fetch_bytes: 64 * 1024,
        group_id: Some(group.to_string()),
        session_timeout_ms: SESSION_TIMEOUT_MS,
        heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS,
        max_poll_interval_ms: MAX_POLL_INTERVAL_MS,
        enable_auto_commit: false,
        ..ConsumerConfig::default()
    };
    let mut consumer: Option<Consumer> = None;
    // What this member holds: (generation, partitions), and the next offset after the
    // records it consumed in that generation.
    let mut held: Option<(i32, Option<String>, Vec<i32>)> = None;
    let mut consumed: BTreeMap<TopicPartition, i64> = BTreeMap::new();
    let mut last_commit_ms: SimMillis = 0;
    while !stop.stop.load(Ordering::SeqCst) {
        let Some(active) = consumer.as_mut() else {
            match Consumer::new(config.clone()).await {
                Ok(mut fresh) => match fresh.subscribe(vec![topic.to_string()]).await {
                    Ok(()) => {
                        shared.event(format!("{name}: subscribed"));
                        consumer = Some(fresh);
                        held = None;
                        consumed.clear();
                    }
                    Err(e) => {
                        shared.event(format!("{name}: subscribe failed: {e}"));
                        sleep_ms(200).await;
                    }
                },
                Err(e) => {
                    shared.event(format!("{name}: cannot start: {e}"));
                    sleep_ms(200).await;
                }
            }
            continue;
        };
        let poll_started_ms = shared.now_ms();
        let polled = active.poll(Duration::from_millis(100)).await;
        let at_ms = shared.now_ms();
        // Records a poll returned belong to the generation reported right after it.
        let generation = active.generation_id();
        let mut partitions: Vec<i32> = active
            .assignment()
            .into_iter()
            .filter(|tp| tp.topic == topic)
            .map(|tp| tp.partition)
            .collect();
        partitions.sort_unstable();
        let member_id = active.member_id();
        if let Some(generation) = generation {
            let holding = (generation, member_id, partitions.clone());
            if held.as_ref() != Some(&holding) {
                shared.with(|w| {
                    w.trace.event(
                        at_ms,
                        format!("{name}: generation {generation} assigned {partitions:?}"),
                    );
                    w.history.group.assignments.push(AssignmentOp {
                        group: group.to_string(),
                        member,
                        generation,
                        partitions: partitions.clone(),
                        at_ms,
                        since_ms: poll_started_ms,
                    });
                });
                // A new holding starts from what the group committed: forget positions of the
                // old one (after data loss generation numbers may repeat, so any change counts).
                consumed.clear();
                held = Some(holding);
            }
        }
        match polled {
            Ok(records) => {
                if !records.is_empty() {
                    shared.with(|w| {
                        w.operations += 1;
                        for record in &records {
                            let value = record.value.as_deref().and_then(Value::decode);
                            w.trace.event(
                                at_ms,
                                format!(
                                    "{name}: read partition {} offset {} {}",
                                    record.partition,
                                    record.offset,
                                    value.map_or("garbage".to_string(), |v| v.to_string())
                                ),
                            );
                            w.history.group.reads.push(GroupReadOp {
                                group: group.to_string(),
                                member,
                                partition: record.partition,
                                offset: record.offset,
                                value,
                                at_ms,
                            });
                        }
                    });
                    for record in &records {
                        consumed.insert(
                            TopicPartition::new(topic, record.partition),
                            record.offset + 1,
                        );
                    }
                }
            }
            Err(ClientError::CorruptRecord {
                topic,
                partition,
                offset,
                ..
            }) => {
                // Corrupted storage with one replica: step past the batch, as an application
                // seeking past a corrupt record would (the final read does the same).
                shared.event(format!(
                    "{name}: corrupt batch in {topic}-{partition} at offset {offset}: seeking past it"
                ));
                let _ = active.seek(&TopicPartition::new(topic, partition), offset + 1);
                continue;
            }
            Err(e) => {
                shared.event(format!(
                    "{name}: poll failed: {e}: a new consumer replaces it"
                ));
                if let Some(old) = consumer.take() {
                    drop(old);
                }
                sleep_ms(200).await;
                continue;
            }
        }
        if at_ms - last_commit_ms >= COMMIT_INTERVAL_MS && !consumed.is_empty() {
            last_commit_ms = at_ms;
            commit(
                active,
                &name,
                group,
                member,
                &consumed,
                &partitions,
                &shared,
            )
            .await;
        }
    }
    if let Some(active) = consumer.as_mut() {
        if !consumed.is_empty() {
            let partitions: Vec<i32> = held.map(|(_, _, p)| p).unwrap_or_default();
            commit(
                active,
                &name,
                group,
                member,
                &consumed,
                &partitions,
                &shared,
            )
            .await;
        }
    }
    if let Some(active) = consumer {
        let _ = active.close().await;
    }
}

/// Commits what the member consumed of the partitions it holds; records it if acknowledged.
async fn commit(
    consumer: &mut Consumer,
    name: &str,
    group: &str,
    member: u32,
    consumed: &BTreeMap<TopicPartition, i64>,
    partitions: &[i32],
    shared: &Shared,
) {
    let offsets: BTreeMap<TopicPartition, i64> = consumed
        .iter()
        .filter(|(tp, _)| partitions.contains(&tp.partition))
        .map(|(tp, offset)| (tp.clone(), *offset))
        .collect();
    if offsets.is_empty() {
        return;
    }
    let invoke_ms = shared.now_ms();
    let result = consumer.commit_offsets_sync(offsets.clone()).await;
    let complete_ms = shared.now_ms();
    match result {
        Ok(()) => shared.with(|w| {
            w.operations += 1;
            for (tp, offset) in &offsets {
                w.trace.event(
                    complete_ms,
                    format!(
                        "{name}: committed partition {} offset {offset} (sent {invoke_ms})",
                        tp.partition
                    ),
                );
                w.history.group.commits.push(CommitOp {
                    group: group.to_string(),
                    member,
                    partition: tp.partition,
                    offset: *offset,
                    invoke_ms,
                    complete_ms,
                });
            }
        }),
        Err(e) => shared.event(format!("{name}: commit failed: {e}")),
    }
}

/// Whether every group has consumed every acknowledged record that no fault may have
/// destroyed (the drain's goal; the checker judges the same rule).
pub(crate) fn drained(shared: &Shared) -> bool {
    let now = shared.now_ms();
    shared.with(|w| {
        let history = &w.history;
        let mut consumed: BTreeMap<&str, BTreeSet<(i32, Value)>> = BTreeMap::new();
        for read in &history.group.reads {
            if let Some(value) = read.value {
                consumed
                    .entry(read.group.as_str())
                    .or_default()
                    .insert((read.partition, value));
            }
        }
        history.group.groups.iter().all(|group| {
            let seen = consumed.get(group.as_str());
            history.produces.iter().all(|op| {
                op.outcome != Outcome::Ok
                    || history.may_lose_between(op.invoke_ms, now)
                    || seen.is_some_and(|s| s.contains(&(op.partition, op.value)))
            })
        })
    })
}
