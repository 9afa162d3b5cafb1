//! A consumer group follows changes of its subscribed topics' metadata, end to end against a
//! real `karst node`: the records of partitions a topic gains, and of a topic deleted and
//! created again under the same name, are consumed by the group within a bounded time.
//!
//! The Kafka behaviour checked is the leader's metadata snapshot of Kafka's
//! ConsumerCoordinator (no KIP; the classic protocol leaves the assignment to the leader, so
//! only the leader can notice that the partitions it assigned no longer match the cluster):
//! the leader remembers the metadata it assigned with, compares every refresh (at least every
//! `metadata.max.age.ms`) with it and requests a rejoin when it differs. librdkafka rejoins on
//! a changed partition count too. A re-created topic is told apart by its topic id (KIP-516):
//! the same name and partition count with a new id is a different topic, whose records start
//! again at offset 0, so the old positions must not be carried over.
//!
//! librdkafka's mock cluster cannot grow or delete a topic from outside (its helper in
//! tests/interop/mock_cluster.py only creates topics), so these run against karst only; the
//! mock variant of "a topic that appears after subscribe" is in client_groups.rs.

mod client_support;

use std::collections::BTreeSet;
use std::time::Duration;

use karst::client::{
    Admin, ClientConfig, Consumer, ConsumerConfig, NewTopic, OffsetReset, Producer, ProducerConfig,
    ProducerRecord,
};

use client_support::{init_logging, value, Target};

/// Every test body finishes well within this, or fails.
const TEST_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the group may take to consume what the test expects after a metadata change:
/// a few `metadata.max.age.ms` and heartbeats plus one rebalance.
const CONSUME_TIMEOUT: Duration = Duration::from_secs(30);
/// `metadata.max.age.ms` of the members: low, so the leader's periodic refresh comes soon.
const METADATA_MAX_AGE_MS: u64 = 500;

fn group_config(bootstrap: &str, group: &str) -> ConsumerConfig {
    ConsumerConfig {
        client: ClientConfig {
            allow_auto_topic_creation: false,
            request_timeout_ms: 10_000,
            metadata_max_age_ms: METADATA_MAX_AGE_MS,
            ..ClientConfig::new(bootstrap)
        },
        // New partitions (and a re-created topic) have no committed offsets: read them whole.
        auto_offset_reset: OffsetReset::Earliest,
        fetch_max_wait_ms: 100,
        group_id: Some(group.to_string()),
        session_timeout_ms: 6_000,
        heartbeat_interval_ms: 300,
        max_poll_interval_ms: 15_000,
        // No automatic commits: where a member starts is decided by the rebalance alone (and
        // by the explicit commit of committed_offsets_of_a_deleted_topic_are_not_resumed).
        enable_auto_commit: false,
        ..ConsumerConfig::default()
    }
}

/// Produces `values` to `topic` (to `partition` when given), waiting for every report.
async fn produce(bootstrap: &str, topic: &str, partition: Option<i32>, values: &[String]) {
    let config = ProducerConfig {
        client: ClientConfig {
            request_timeout_ms: 5_000,
            ..ClientConfig::new(bootstrap)
        },
        linger_ms: 2,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(config).await.unwrap();
    let mut reports = Vec::new();
    for v in values {
        let mut record = ProducerRecord::new(topic, v.clone());
        if let Some(p) = partition {
            record = record.with_partition(p);
        }
        reports.push(producer.send(record).await.unwrap());
    }
    producer.flush().await;
    for r in reports {
        r.await.expect("acknowledged");
    }
    producer.close().await;
}

fn values(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:04}")).collect()
}

/// Polls every member in turn until the group has handed out every value of `wanted`
/// (duplicates allowed: delivery is at least once), or fails after [`CONSUME_TIMEOUT`]
/// naming what is missing.
async fn consume_all(members: &mut [Consumer], wanted: &[String], what: &str) {
    let mut missing: BTreeSet<&str> = wanted.iter().map(String::as_str).collect();
    let deadline = tokio::time::Instant::now() + CONSUME_TIMEOUT;
    while !missing.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {} of {} records not consumed within {CONSUME_TIMEOUT:?} (e.g. {:?}); \
             assignments {:?}",
            missing.len(),
            wanted.len(),
            missing.iter().take(3).collect::<Vec<_>>(),
            members
                .iter()
                .map(|c| (c.generation_id(), c.assignment()))
                .collect::<Vec<_>>(),
        );
        for c in members.iter_mut() {
            for r in c.poll(Duration::from_millis(50)).await.unwrap() {
                missing.remove(value(&r).as_str());
            }
        }
    }
}

/// Polls every member (dropping what it reads) until all are in one generation, each holding
/// `per_member` partitions, so that the assignment is made before the test changes anything.
async fn settle(members: &mut [Consumer], per_member: usize) {
    let deadline = tokio::time::Instant::now() + CONSUME_TIMEOUT;
    loop {
        for c in members.iter_mut() {
            c.poll(Duration::from_millis(50)).await.unwrap();
        }
        let view: Vec<_> = members
            .iter()
            .map(|c| (c.generation_id(), c.assignment()))
            .collect();
        let generations: BTreeSet<_> = view.iter().map(|(g, _)| *g).collect();
        if generations.len() == 1
            && !generations.contains(&None)
            && view.iter().all(|(_, a)| a.len() == per_member)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the group did not settle within {CONSUME_TIMEOUT:?}: {view:?}"
        );
    }
}

/// CreatePartitions raises a subscribed topic from 2 to 4 partitions while two members consume
/// it; records produced to the two new partitions reach the group (the leader's refresh shows
/// a partition count that differs from its assignment's, and it rejoins).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_consumes_partitions_added_by_create_partitions() {
    init_logging();
    let mut target = Target::karst();
    if !target.serves_groups().await {
        eprintln!("SKIPPED: this karst node does not advertise the group APIs");
        return;
    }
    let bootstrap = target.bootstrap();
    let body = async {
        target.create_topic("widens", 2).await;
        let config = group_config(&bootstrap, "g-widens");
        let mut members = Vec::new();
        for _ in 0..2 {
            let mut c = Consumer::new(config.clone()).await.unwrap();
            c.subscribe(vec!["widens".to_string()]).await.unwrap();
            members.push(c);
        }
        // Both members in, one partition each: the group's assignment saw two partitions.
        settle(&mut members, 1).await;
        let before: Vec<String> = values("old-p0-", 10)
            .into_iter()
            .chain(values("old-p1-", 10))
            .collect();
        produce(&bootstrap, "widens", Some(0), &before[..10]).await;
        produce(&bootstrap, "widens", Some(1), &before[10..]).await;
        consume_all(&mut members, &before, "the first two partitions").await;

        let admin = Admin::new(ClientConfig::new(&bootstrap)).await.unwrap();
        admin.create_partitions("widens", 4).await.unwrap();
        let added: Vec<String> = values("new-p2-", 10)
            .into_iter()
            .chain(values("new-p3-", 10))
            .collect();
        produce(&bootstrap, "widens", Some(2), &added[..10]).await;
        produce(&bootstrap, "widens", Some(3), &added[10..]).await;
        consume_all(
            &mut members,
            &added,
            "the partitions CreatePartitions added",
        )
        .await;
        // The group settles on all four partitions, two each (Range over four).
        settle(&mut members, 2).await;
        let covered: BTreeSet<i32> = members
            .iter()
            .flat_map(|c| c.assignment())
            .map(|tp| tp.partition)
            .collect();
        assert_eq!(
            covered,
            (0..4).collect(),
            "the group covers all four partitions"
        );
        for c in members {
            c.close().await.unwrap();
        }
    };
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("test timed out");
}

/// A subscribed topic is deleted and created again with the same name and partition count,
/// and records are produced to it before the member fetches again. The member's positions
/// point into the old topic; only a rebalance (the leader sees a new topic id) sends it back
/// to the new topic's start. Without one, the first records of each partition of the new
/// topic (below the old positions) would be skipped for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_consumes_a_topic_deleted_and_created_again() {
    topic_deleted_and_created_again("g-reborn", "reborn", false).await;
}

/// The same with the old positions committed before the deletion: DeleteTopics drops the
/// group's committed offsets of the topic (as Kafka's coordinator does for deleted
/// partitions), so after the rebalance the member starts the new topic from
/// `auto.offset.reset` instead of resuming at the old topic's offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_of_a_deleted_topic_are_not_resumed() {
    topic_deleted_and_created_again("g-reborn-committed", "reborn-committed", true).await;
}

async fn topic_deleted_and_created_again(group: &str, topic: &str, commit_before_delete: bool) {
    init_logging();
    let mut target = Target::karst();
    if !target.serves_groups().await {
        eprintln!("SKIPPED: this karst node does not advertise the group APIs");
        return;
    }
    let bootstrap = target.bootstrap();
    let body = async {
        target.create_topic(topic, 2).await;
        let mut member = Consumer::new(group_config(&bootstrap, group))
            .await
            .unwrap();
        member.subscribe(vec![topic.to_string()]).await.unwrap();
        let mut members = vec![member];
        let old: Vec<String> = values("old-p0-", 10)
            .into_iter()
            .chain(values("old-p1-", 10))
            .collect();
        produce(&bootstrap, topic, Some(0), &old[..10]).await;
        produce(&bootstrap, topic, Some(1), &old[10..]).await;
        consume_all(&mut members, &old, "the first incarnation").await;
        if commit_before_delete {
            members[0].commit_sync().await.unwrap();
        }

        // No poll from here until the new records are in: the member's next fetch must find
        // the new topic already holding more records than its old positions.
        let admin = Admin::new(ClientConfig::new(&bootstrap)).await.unwrap();
        for (topic, result) in admin.delete_topics(&[topic.to_string()]).await.unwrap() {
            result.unwrap_or_else(|e| panic!("deleting {topic}: {e}"));
        }
        let created = admin
            .create_topics(&[NewTopic::new(topic, 2, 1)], false)
            .await
            .unwrap();
        for (topic, result) in created {
            result.unwrap_or_else(|e| panic!("creating {topic} again: {e}"));
        }
        let new: Vec<String> = values("new-p0-", 20)
            .into_iter()
            .chain(values("new-p1-", 20))
            .collect();
        produce(&bootstrap, topic, Some(0), &new[..20]).await;
        produce(&bootstrap, topic, Some(1), &new[20..]).await;
        consume_all(&mut members, &new, "the topic created again").await;
        members.pop().unwrap().close().await.unwrap();
    };
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("test timed out");
}
