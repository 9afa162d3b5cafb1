//! Karst's Rust client against two brokers it did not write its tests for: the same test
//! bodies run against a real `karst node` and against librdkafka's mock cluster (the one in the
//! pinned confluent-kafka, started by tests/interop/mock_cluster.py).
//!
//! Bodies: produce/consume round trip with the Java client's key partitioning; idempotent
//! produce (KIP-98: a producer id, no duplicates, per-partition order); consumer groups over the
//! classic protocol (KIP-394 join, range assignment, LeaveGroup on close, OffsetCommit /
//! OffsetFetch resume, independent groups).
//!
//! The karst variants of the group bodies need a node that serves the group APIs
//! (GROUPS_CONTRACT.md); on a node that does not advertise JoinGroup they print why and skip.
//! The mock variants skip (printing why) only when `.venv` is missing and CI is not "true".

mod client_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use karst::client::partitioner::partition_for_key;
use karst::client::{
    Acks, ClientConfig, Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, Producer,
    ProducerConfig, ProducerRecord, TopicPartition,
};

use client_support::{init_logging, value, Target};

/// Every test body finishes well within this, or fails.
const TEST_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a group may take to settle after a membership change.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

fn producer_config(bootstrap: &str) -> ProducerConfig {
    ProducerConfig {
        client: ClientConfig {
            request_timeout_ms: 5_000,
            ..ClientConfig::new(bootstrap)
        },
        linger_ms: 2,
        ..ProducerConfig::default()
    }
}

fn consumer_config(bootstrap: &str) -> ConsumerConfig {
    ConsumerConfig {
        client: ClientConfig {
            allow_auto_topic_creation: false,
            request_timeout_ms: 10_000,
            ..ClientConfig::new(bootstrap)
        },
        auto_offset_reset: OffsetReset::Earliest,
        fetch_max_wait_ms: 100,
        ..ConsumerConfig::default()
    }
}

fn group_config(bootstrap: &str, group: &str) -> ConsumerConfig {
    ConsumerConfig {
        group_id: Some(group.to_string()),
        session_timeout_ms: 6_000,
        heartbeat_interval_ms: 300,
        max_poll_interval_ms: 15_000,
        enable_auto_commit: false,
        ..consumer_config(bootstrap)
    }
}

/// Produces `count` keyed records (`k{n % keys}` / `v{n}`) and waits for every report.
async fn produce(bootstrap: &str, topic: &str, range: std::ops::Range<usize>, keys: usize) {
    let producer = Producer::new(producer_config(bootstrap)).await.unwrap();
    let mut reports = Vec::new();
    for n in range {
        let record =
            ProducerRecord::new(topic, format!("v{n:05}")).with_key(format!("k{}", n % keys));
        reports.push(producer.send(record).await.unwrap());
    }
    producer.flush().await;
    for r in reports {
        r.await.expect("acknowledged");
    }
    producer.close().await;
}

/// Runs a body against a karst node and against the mock cluster, as two tests.
macro_rules! on_both {
    ($name:ident, $body:ident, groups: $groups:expr) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn karst() {
                init_logging();
                let mut target = Target::karst();
                if $groups && !target.serves_groups().await {
                    eprintln!(
                        "SKIPPED: this karst node does not advertise the group APIs \
                         (JoinGroup etc.); they come with the coordinator wiring"
                    );
                    return;
                }
                tokio::time::timeout(TEST_TIMEOUT, $body(&mut target))
                    .await
                    .expect("test timed out");
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn librdkafka_mock() {
                init_logging();
                let Some(mut target) = Target::mock() else {
                    return;
                };
                tokio::time::timeout(TEST_TIMEOUT, $body(&mut target))
                    .await
                    .expect("test timed out");
            }
        }
    };
}

on_both!(round_trip_with_java_key_partitioning, round_trip, groups: false);
on_both!(idempotent_produce, idempotent_produce_body, groups: false);
on_both!(group_shares_partitions_and_rebalances_on_leave, group_membership, groups: true);
on_both!(group_resumes_at_its_commit, group_resume, groups: true);
on_both!(two_groups_each_read_everything, two_groups, groups: true);
on_both!(assign_mode_commits_with_generation_minus_one, assign_mode_commit, groups: true);
on_both!(static_member_rejoins_with_its_partitions, static_membership, groups: true);
on_both!(roundrobin_assignor_deals_in_a_circle, roundrobin_group, groups: true);
on_both!(group_rejoins_when_a_subscribed_topic_appears, topic_appears, groups: true);

/// Every record comes back once, at its reported offset, in the partition the Java client's
/// murmur2 partitioner picks for its key, in per-partition order.
async fn round_trip(target: &mut Target) {
    let bootstrap = target.bootstrap();
    target.create_topic("rt", 3).await;
    let producer = Producer::new(producer_config(&bootstrap)).await.unwrap();
    let mut reports = Vec::new();
    for n in 0..300 {
        let key = format!("key-{n}");
        let record = ProducerRecord::new("rt", format!("v{n:05}")).with_key(key.clone());
        reports.push((key, n, producer.send(record).await.unwrap()));
    }
    producer.flush().await;
    let mut expected = BTreeMap::new();
    for (key, n, report) in reports {
        let meta = report.await.unwrap();
        assert_eq!(
            meta.partition,
            partition_for_key(key.as_bytes(), 3),
            "{key}"
        );
        expected.insert((meta.partition, meta.offset), format!("v{n:05}"));
    }
    producer.close().await;
    let mut consumer = Consumer::new(consumer_config(&bootstrap)).await.unwrap();
    consumer.assign_topic("rt").await.unwrap();
    let mut got = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while got.len() < expected.len() && tokio::time::Instant::now() < deadline {
        for r in consumer.poll(Duration::from_millis(200)).await.unwrap() {
            let previous = got.insert((r.partition, r.offset), value(&r));
            assert!(
                previous.is_none(),
                "{}-{} read twice",
                r.partition,
                r.offset
            );
        }
    }
    assert_eq!(got, expected, "on {}", target.name());
}

/// KIP-98: an idempotent producer gets a producer id and writes each record once, in order.
async fn idempotent_produce_body(target: &mut Target) {
    let bootstrap = target.bootstrap();
    target.create_topic("idem", 2).await;
    let producer = Producer::new(ProducerConfig {
        enable_idempotence: Some(true),
        acks: Acks::All,
        batch_size: 256,
        ..producer_config(&bootstrap)
    })
    .await
    .unwrap();
    assert!(
        producer.producer_id().is_some(),
        "no producer id from {}",
        target.name()
    );
    let mut reports = Vec::new();
    for n in 0..400 {
        let record =
            ProducerRecord::new("idem", format!("v{n:05}")).with_key(format!("k{}", n % 5));
        reports.push(producer.send(record).await.unwrap());
    }
    producer.flush().await;
    for r in reports {
        r.await.unwrap();
    }
    producer.close().await;
    let mut consumer = Consumer::new(consumer_config(&bootstrap)).await.unwrap();
    consumer.assign_topic("idem").await.unwrap();
    let mut seen = BTreeSet::new();
    let mut last: BTreeMap<i32, String> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen.len() < 400 && tokio::time::Instant::now() < deadline {
        for r in consumer.poll(Duration::from_millis(200)).await.unwrap() {
            let v = value(&r);
            assert!(seen.insert(v.clone()), "{v} written twice");
            if let Some(prev) = last.insert(r.partition, v.clone()) {
                assert!(prev < v, "partition {} order: {prev} then {v}", r.partition);
            }
        }
    }
    assert_eq!(seen.len(), 400);
    assert!(consumer
        .poll(Duration::from_millis(300))
        .await
        .unwrap()
        .is_empty());
}

/// Polls every consumer in turn (the group protocol runs in each consumer's own task, so one
/// task can drive several members) until `done` holds for their generations and assignments.
async fn poll_until(
    consumers: &mut [Consumer],
    what: &str,
    mut records: Option<&mut Vec<ConsumerRecord>>,
    done: impl Fn(&[(Option<i32>, Vec<TopicPartition>)]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    loop {
        for c in consumers.iter_mut() {
            let batch = c.poll(Duration::from_millis(50)).await.unwrap();
            if let Some(out) = records.as_deref_mut() {
                out.extend(batch);
            }
        }
        let view: Vec<(Option<i32>, Vec<TopicPartition>)> = consumers
            .iter()
            .map(|c| (c.generation_id(), c.assignment()))
            .collect();
        if done(&view) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen within {SETTLE_TIMEOUT:?}: {view:?}"
        );
    }
}

/// All members in one generation, their assignments disjoint, covering `partitions` of
/// `topic`, each holding `per_member`.
fn balanced(
    view: &[(Option<i32>, Vec<TopicPartition>)],
    topic: &str,
    partitions: i32,
    per_member: usize,
) -> bool {
    let generations: BTreeSet<Option<i32>> = view.iter().map(|(g, _)| *g).collect();
    if generations.len() != 1 || generations.contains(&None) {
        return false;
    }
    let mut all = BTreeSet::new();
    for (_, assignment) in view {
        if assignment.len() != per_member {
            return false;
        }
        for tp in assignment {
            if !all.insert(tp.clone()) {
                return false;
            }
        }
    }
    all == (0..partitions)
        .map(|p| TopicPartition::new(topic, p))
        .collect()
}

/// Three members on six partitions each get two, disjoint, covering all; one closes
/// (LeaveGroup) and the remaining two cover all six, three each, in a newer generation.
async fn group_membership(target: &mut Target) {
    let bootstrap = target.bootstrap();
    target.create_topic("grp", 6).await;
    let mut consumers = Vec::new();
    for _ in 0..3 {
        let mut c = Consumer::new(group_config(&bootstrap, "g-members"))
            .await
            .unwrap();
        c.subscribe(vec!["grp".to_string()]).await.unwrap();
        consumers.push(c);
    }
    poll_until(
        &mut consumers,
        "three members sharing six partitions",
        None,
        |v| balanced(v, "grp", 6, 2),
    )
    .await;
    let first_generation = consumers[0].generation_id().unwrap();
    let member_ids: BTreeSet<String> = consumers.iter().map(|c| c.member_id().unwrap()).collect();
    assert_eq!(member_ids.len(), 3, "distinct member ids");
    let leaving = consumers.pop().unwrap();
    leaving.close().await.unwrap();
    poll_until(
        &mut consumers,
        "two members covering six partitions",
        None,
        |v| balanced(v, "grp", 6, 3),
    )
    .await;
    let second_generation = consumers[0].generation_id().unwrap();
    assert!(
        second_generation > first_generation,
        "generation {second_generation} after {first_generation}"
    );
    for c in consumers {
        c.close().await.unwrap();
    }
}

/// Commit, restart the whole group: it resumes exactly at the commit, nothing before it read
/// again, nothing after it skipped (OffsetCommit with generation and member id, OffsetFetch);
/// and across the rebalance of the restarted group, the auto commit before rejoining hands
/// each moved partition over without a record read twice.
async fn group_resume(target: &mut Target) {
    let bootstrap = target.bootstrap();
    target.create_topic("resume", 6).await;
    produce(&bootstrap, "resume", 0..300, 12).await;
    let mut first = Consumer::new(group_config(&bootstrap, "g-resume"))
        .await
        .unwrap();
    first.subscribe(vec!["resume".to_string()]).await.unwrap();
    let mut read = Vec::new();
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    while read.len() < 120 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "read {} of 120",
            read.len()
        );
        read.extend(first.poll(Duration::from_millis(200)).await.unwrap());
    }
    first.commit_sync().await.unwrap();
    // The commit is the position after the last record handed out, per partition.
    let mut committed: BTreeMap<TopicPartition, i64> = BTreeMap::new();
    for r in &read {
        committed.insert(TopicPartition::new(&*r.topic, r.partition), r.offset + 1);
    }
    let all: Vec<TopicPartition> = (0..6).map(|p| TopicPartition::new("resume", p)).collect();
    let fetched = first.committed(&all).await.unwrap();
    for tp in &all {
        assert_eq!(
            fetched.get(tp).copied().flatten(),
            committed.get(tp).copied(),
            "{tp}"
        );
    }
    first.close().await.unwrap();
    produce(&bootstrap, "resume", 300..360, 12).await;

    // The whole group again, two members this time. The second member's join moves
    // partitions away from the first after it has read some of them; with auto commit the
    // first commits what it handed out before it rejoins, so the new owner goes on from there.
    let mut consumers = Vec::new();
    for _ in 0..2 {
        let config = ConsumerConfig {
            enable_auto_commit: true,
            ..group_config(&bootstrap, "g-resume")
        };
        let mut c = Consumer::new(config).await.unwrap();
        c.subscribe(vec!["resume".to_string()]).await.unwrap();
        consumers.push(c);
    }
    if !target.commits_during_rebalance() {
        // The mock refuses commits while a rebalance is pending (see
        // `Target::commits_during_rebalance`), so no client can hand a partition over there
        // without re-reads: let both members settle in one generation before reading. Each
        // mock rebalance round waits up to session.timeout.ms - 1 s, and an aborted SyncGroup
        // costs another round, hence the longer bound.
        let deadline = tokio::time::Instant::now() + 2 * SETTLE_TIMEOUT;
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the restarted group settles with both members: {:?}",
                consumers
                    .iter()
                    .map(|c| (c.generation_id(), c.assignment()))
                    .collect::<Vec<_>>()
            );
            for c in consumers.iter_mut() {
                c.await_assignment(Duration::from_millis(100))
                    .await
                    .unwrap();
            }
            let generations: BTreeSet<Option<i32>> =
                consumers.iter().map(|c| c.generation_id()).collect();
            let held: usize = consumers.iter().map(|c| c.assignment().len()).sum();
            if generations.len() == 1
                && !generations.contains(&None)
                && held == 6
                && consumers.iter().all(|c| !c.assignment().is_empty())
            {
                break;
            }
        }
    }
    let mut again = Vec::new();
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    while read.len() + again.len() < 360 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "read {} of 360 after the restart",
            read.len() + again.len()
        );
        for c in consumers.iter_mut() {
            again.extend(c.poll(Duration::from_millis(100)).await.unwrap());
        }
    }
    for c in consumers.iter_mut() {
        again.extend(c.poll(Duration::from_millis(300)).await.unwrap());
    }
    let mut next: BTreeMap<TopicPartition, i64> = committed.clone();
    for r in &again {
        let tp = TopicPartition::new(&*r.topic, r.partition);
        let expected = next.get(&tp).copied().unwrap_or(0);
        assert_eq!(
            r.offset, expected,
            "{tp}: resumed at the commit, in order, no gap"
        );
        next.insert(tp, r.offset + 1);
    }
    let values: BTreeSet<String> = read.iter().chain(&again).map(value).collect();
    assert_eq!(
        values.len(),
        360,
        "every record exactly once across the restart"
    );
    assert_eq!(read.len() + again.len(), 360);
    for c in consumers {
        c.close().await.unwrap();
    }
}

/// Two groups subscribed to one topic each read every record, each record once per group.
///
/// The records are produced once both groups are balanced: these members commit nothing, so a
/// member that joined after the other had begun reading (the mock's initial rebalance delay is
/// 3 s, which a loaded CI machine can outlast) would rightly read again what the first had
/// read of the partitions it takes over.
async fn two_groups(target: &mut Target) {
    let bootstrap = target.bootstrap();
    target.create_topic("shared", 4).await;
    let mut per_group = Vec::new();
    for group in ["g-a", "g-b"] {
        let mut consumers = Vec::new();
        for _ in 0..2 {
            let mut c = Consumer::new(group_config(&bootstrap, group))
                .await
                .unwrap();
            c.subscribe(vec!["shared".to_string()]).await.unwrap();
            consumers.push(c);
        }
        poll_until(
            &mut consumers,
            &format!("{group}'s two members sharing four partitions"),
            None,
            |v| balanced(v, "shared", 4, 2),
        )
        .await;
        per_group.push(consumers);
    }
    let generations: Vec<Option<i32>> = per_group.iter().map(|g| g[0].generation_id()).collect();
    produce(&bootstrap, "shared", 0..200, 8).await;
    let mut seen: Vec<BTreeMap<String, usize>> = vec![BTreeMap::new(), BTreeMap::new()];
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    while seen.iter().any(|s| s.len() < 200) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "groups read {} and {} of 200",
            seen[0].len(),
            seen[1].len()
        );
        for (g, consumers) in per_group.iter_mut().enumerate() {
            for c in consumers.iter_mut() {
                for r in c.poll(Duration::from_millis(50)).await.unwrap() {
                    *seen[g].entry(value(&r)).or_default() += 1;
                }
            }
        }
    }
    for (g, s) in seen.iter().enumerate() {
        assert_eq!(s.len(), 200);
        // A later rebalance (a heartbeat starved on a loaded machine) hands partitions over
        // uncommitted, and reading them again is then Kafka's at-least-once, not a fault.
        if per_group[g]
            .iter()
            .any(|c| c.generation_id() != generations[g])
        {
            eprintln!("group {g} rebalanced while reading: duplicates are allowed");
            continue;
        }
        assert!(
            s.values().all(|n| *n == 1),
            "a record delivered twice in one group within one generation"
        );
    }
    for consumers in per_group {
        for c in consumers {
            c.close().await.unwrap();
        }
    }
}

/// assign() with a group.id: commits carry generation -1 and no member id (as kafka-python's
/// and the Java client's manual-assignment commits do) and a later consumer starts there.
async fn assign_mode_commit(target: &mut Target) {
    let bootstrap = target.bootstrap();
    target.create_topic("manual", 2).await;
    produce(&bootstrap, "manual", 0..50, 4).await;
    let mut c = Consumer::new(group_config(&bootstrap, "g-manual"))
        .await
        .unwrap();
    let tp = TopicPartition::new("manual", 0);
    c.assign(vec![tp.clone()]);
    let mut first = Vec::new();
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    while first.len() < 5 {
        assert!(tokio::time::Instant::now() < deadline);
        first.extend(c.poll(Duration::from_millis(200)).await.unwrap());
    }
    let at = first[4].offset + 1;
    c.commit_offsets_sync(BTreeMap::from([(tp.clone(), at)]))
        .await
        .unwrap();
    assert_eq!(
        c.committed(std::slice::from_ref(&tp)).await.unwrap()[&tp],
        Some(at)
    );
    assert_eq!(c.generation_id(), None);
    c.close().await.unwrap();
    let mut d = Consumer::new(group_config(&bootstrap, "g-manual"))
        .await
        .unwrap();
    d.assign(vec![tp.clone()]);
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    loop {
        assert!(tokio::time::Instant::now() < deadline);
        let batch = d.poll(Duration::from_millis(200)).await.unwrap();
        if let Some(r) = batch.first() {
            assert_eq!(r.offset, at, "starts at the committed offset");
            break;
        }
    }
}

/// KIP-345: static members (group.instance.id) do not leave on close; one that comes back
/// under the same instance id within the session timeout gets its partitions back, and the
/// other member never loses its own.
async fn static_membership(target: &mut Target) {
    let bootstrap = target.bootstrap();
    target.create_topic("static", 4).await;
    let config = |instance: &str| ConsumerConfig {
        group_instance_id: Some(instance.to_string()),
        // librdkafka's mock does not replace a static member in place: it rebalances once the
        // old member id's session expires, so keep that short.
        session_timeout_ms: 8_000,
        ..group_config(&bootstrap, "g-static")
    };
    let mut consumers = Vec::new();
    for instance in ["static-a", "static-b"] {
        let mut c = Consumer::new(config(instance)).await.unwrap();
        c.subscribe(vec!["static".to_string()]).await.unwrap();
        consumers.push(c);
    }
    poll_until(
        &mut consumers,
        "two static members sharing four partitions",
        None,
        |v| balanced(v, "static", 4, 2),
    )
    .await;
    let a_partitions = consumers[0].assignment();
    let b_partitions = consumers[1].assignment();
    let a = consumers.remove(0);
    a.close().await.unwrap();
    // No LeaveGroup: b keeps its partitions while a is away.
    let mut b = consumers.remove(0);
    for _ in 0..10 {
        b.poll(Duration::from_millis(100)).await.unwrap();
        assert_eq!(
            b.assignment(),
            b_partitions,
            "b lost partitions while a was away"
        );
    }
    let mut again = Consumer::new(config("static-a")).await.unwrap();
    again.subscribe(vec!["static".to_string()]).await.unwrap();
    let mut pair = vec![again, b];
    poll_until(
        &mut pair,
        "the static member back with its partitions",
        None,
        |v| v[0].1 == a_partitions && v[1].1 == b_partitions && v[0].0.is_some(),
    )
    .await;
    for c in pair {
        c.close().await.unwrap();
    }
}

/// The member's error handling, driven by librdkafka's mock error injection (karst's node has
/// no such switch): Heartbeat answered NOT_COORDINATOR (rediscover, stay in the generation),
/// then UNKNOWN_MEMBER_ID (forget the member id, rejoin into a newer generation);
/// OffsetCommit answered NOT_COORDINATOR and COORDINATOR_LOAD_IN_PROGRESS (commit_sync retries
/// and succeeds); a commit fenced with ILLEGAL_GENERATION is reported and makes the member
/// rejoin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_error_handling_against_librdkafka_mock() {
    init_logging();
    let Some(Target::Mock(mut mock)) = Target::mock() else {
        return;
    };
    let bootstrap = mock.bootstrap();
    mock.create_topic("errs", 2);
    let body = async {
        let mut c = Consumer::new(group_config(&bootstrap, "g-errors"))
            .await
            .unwrap();
        c.subscribe(vec!["errs".to_string()]).await.unwrap();
        let mut consumers = vec![c];
        poll_until(
            &mut consumers,
            "one member with both partitions",
            None,
            |v| balanced(v, "errs", 2, 2),
        )
        .await;
        let c = consumers.pop().unwrap();
        let first = c.generation_id().unwrap();
        // Heartbeat is api key 12.
        mock.push_request_errors(12, &[16, 25]);
        let mut consumers = vec![c];
        poll_until(
            &mut consumers,
            "a rejoin after UNKNOWN_MEMBER_ID",
            None,
            |v| balanced(v, "errs", 2, 2) && v[0].0 > Some(first),
        )
        .await;
        let mut c = consumers.pop().unwrap();
        produce(&bootstrap, "errs", 0..20, 4).await;
        let mut read = 0;
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        while read < 20 {
            assert!(tokio::time::Instant::now() < deadline, "read {read} of 20");
            read += c.poll(Duration::from_millis(100)).await.unwrap().len();
        }
        // OffsetCommit is api key 8.
        mock.push_request_errors(8, &[16, 14]);
        c.commit_sync()
            .await
            .expect("commit retried over coordinator errors");
        let all = [
            TopicPartition::new("errs", 0),
            TopicPartition::new("errs", 1),
        ];
        let committed: i64 = c
            .committed(&all)
            .await
            .unwrap()
            .values()
            .map(|o| o.unwrap())
            .sum();
        assert_eq!(committed, 20);
        let generation = c.generation_id().unwrap();
        mock.push_request_errors(8, &[22]);
        let fenced = c.commit_sync().await.unwrap_err();
        assert_eq!(fenced.code(), Some(22), "{fenced}");
        let mut consumers = vec![c];
        poll_until(
            &mut consumers,
            "a rejoin after the fenced commit",
            None,
            |v| balanced(v, "errs", 2, 2) && v[0].0 > Some(generation),
        )
        .await;
        consumers.pop().unwrap().close().await.unwrap();
    };
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("test timed out");
}

/// Connection loss: the node restarts under a live member. The member rediscovers the
/// coordinator, stays in (or rejoins) the group, resumes at its commit (which survived the
/// restart) and reads what was produced afterwards, nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_member_survives_a_node_restart() {
    init_logging();
    let target = Target::karst();
    if !target.serves_groups().await {
        eprintln!("SKIPPED: this karst node does not advertise the group APIs");
        return;
    }
    let Target::Karst(mut node) = target else {
        unreachable!("Target::karst is a karst node")
    };
    let bootstrap = node.bootstrap();
    let body = async {
        let admin = karst::client::Admin::new(ClientConfig::new(&bootstrap))
            .await
            .unwrap();
        admin
            .create_topics(&[karst::client::NewTopic::new("restart", 3, 1)], false)
            .await
            .unwrap()[0]
            .1
            .clone()
            .unwrap();
        produce(&bootstrap, "restart", 0..30, 6).await;
        let mut c = Consumer::new(group_config(&bootstrap, "g-restart"))
            .await
            .unwrap();
        c.subscribe(vec!["restart".to_string()]).await.unwrap();
        let mut seen = BTreeSet::new();
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        while seen.len() < 30 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "read {}",
                seen.len()
            );
            for r in c.poll(Duration::from_millis(100)).await.unwrap() {
                assert!(seen.insert(value(&r)), "{} twice", value(&r));
            }
        }
        c.commit_sync().await.unwrap();
        c
    };
    let mut c = tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("test timed out");
    node.restart(&[
        "--set",
        "group.initial.rebalance.delay.ms=0",
        "--set",
        "group.min.session.timeout.ms=500",
    ]);
    let body = async {
        produce(&bootstrap, "restart", 30..60, 6).await;
        let mut after = BTreeSet::new();
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        while after.len() < 30 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "read {} of 30 after the restart (generation {:?})",
                after.len(),
                c.generation_id()
            );
            for r in c.poll(Duration::from_millis(100)).await.unwrap() {
                let v = value(&r);
                assert!(v.as_str() >= "v00030", "{v} read again after the restart");
                assert!(after.insert(v.clone()), "{v} twice");
            }
        }
        c.commit_sync().await.unwrap();
        let all: Vec<TopicPartition> = (0..3).map(|p| TopicPartition::new("restart", p)).collect();
        let committed: i64 = c
            .committed(&all)
            .await
            .unwrap()
            .values()
            .map(|o| o.unwrap_or(0))
            .sum();
        assert_eq!(committed, 60);
        c.close().await.unwrap();
    };
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("test timed out");
}

/// partition.assignment.strategy=roundrobin: the coordinator picks the protocol both members
/// offer and the leader deals partitions in a circle (members by member id), so one member
/// holds {0, 2} and the other {1, 3}, where range would give {0, 1} and {2, 3}.
async fn roundrobin_group(target: &mut Target) {
    let bootstrap = target.bootstrap();
    target.create_topic("rr", 4).await;
    let mut consumers = Vec::new();
    for _ in 0..2 {
        let config = ConsumerConfig {
            partition_assignment_strategy: vec![karst::client::AssignmentStrategy::RoundRobin],
            ..group_config(&bootstrap, "g-roundrobin")
        };
        let mut c = Consumer::new(config).await.unwrap();
        c.subscribe(vec!["rr".to_string()]).await.unwrap();
        consumers.push(c);
    }
    poll_until(
        &mut consumers,
        "two members sharing four partitions",
        None,
        |v| balanced(v, "rr", 4, 2),
    )
    .await;
    let mut by_member: Vec<(String, Vec<i32>)> = consumers
        .iter()
        .map(|c| {
            let parts = c.assignment().iter().map(|tp| tp.partition).collect();
            (c.member_id().unwrap(), parts)
        })
        .collect();
    by_member.sort();
    assert_eq!(by_member[0].1, vec![0, 2], "{by_member:?}");
    assert_eq!(by_member[1].1, vec![1, 3], "{by_member:?}");
    for c in consumers {
        c.close().await.unwrap();
    }
}

/// The leader rejoins when the metadata of a subscribed topic changes (Kafka's
/// ConsumerCoordinator compares its metadata snapshot with the assignment's): a member that
/// subscribed before its topic existed holds an empty assignment, and takes both partitions
/// once the topic is created, without any member joining or leaving. (The simulator found the
/// same after a wiped disk: the topic re-created by a producer was never consumed.)
async fn topic_appears(target: &mut Target) {
    let bootstrap = target.bootstrap();
    let mut c = Consumer::new(group_config(&bootstrap, "g-appears"))
        .await
        .unwrap();
    c.subscribe(vec!["appears".to_string()]).await.unwrap();
    let mut consumers = vec![c];
    poll_until(
        &mut consumers,
        "a generation with nothing to assign",
        None,
        |v| v[0].0.is_some() && v[0].1.is_empty(),
    )
    .await;
    let empty_generation = consumers[0].generation_id();
    target.create_topic("appears", 2).await;
    poll_until(
        &mut consumers,
        "both partitions of the new topic",
        None,
        |v| balanced(v, "appears", 2, 2) && v[0].0 > empty_generation,
    )
    .await;
    produce(&bootstrap, "appears", 0..10, 2).await;
    let mut records = Vec::new();
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    while records.len() < 10 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "read {} of 10 on {}",
            records.len(),
            target.name()
        );
        records.extend(consumers[0].poll(Duration::from_millis(100)).await.unwrap());
    }
    consumers.pop().unwrap().close().await.unwrap();
}

/// A SyncGroup error response is an error code, whatever its assignment field holds:
/// librdkafka's mock answers an injected SyncGroup error with a null assignment (Kafka writes
/// empty bytes), which the schema's non-nullable bytes reject. The member must still act on
/// the code: REBALANCE_IN_PROGRESS rejoins (and gets its partitions); a fatal code
/// (GROUP_AUTHORIZATION_FAILED, 30) stops the member and `poll` reports that code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_group_error_with_null_assignment_against_librdkafka_mock() {
    init_logging();
    let Some(Target::Mock(mut mock)) = Target::mock() else {
        return;
    };
    let bootstrap = mock.bootstrap();
    mock.create_topic("sync-errs", 2);
    let body = async {
        // SyncGroup is api key 14.
        mock.push_request_errors(14, &[27]);
        let mut c = Consumer::new(group_config(&bootstrap, "g-sync-retry"))
            .await
            .unwrap();
        c.subscribe(vec!["sync-errs".to_string()]).await.unwrap();
        let mut consumers = vec![c];
        poll_until(
            &mut consumers,
            "both partitions after a REBALANCE_IN_PROGRESS SyncGroup",
            None,
            |v| balanced(v, "sync-errs", 2, 2),
        )
        .await;
        consumers.pop().unwrap().close().await.unwrap();

        mock.push_request_errors(14, &[30]);
        let mut c = Consumer::new(group_config(&bootstrap, "g-sync-fatal"))
            .await
            .unwrap();
        c.subscribe(vec!["sync-errs".to_string()]).await.unwrap();
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        let error = loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "GROUP_AUTHORIZATION_FAILED from SyncGroup never reached poll"
            );
            match c.poll(Duration::from_millis(100)).await {
                Ok(records) => assert!(records.is_empty()),
                Err(e) => break e,
            }
        };
        assert_eq!(error.code(), Some(30), "{error}");
    };
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("test timed out");
}

// A subscribed topic gaining partitions (CreatePartitions) is tested end to end in
// tests/client_rejoin.rs: the group rebalances onto every partition, two each, and consumes
// the new partitions' records.
