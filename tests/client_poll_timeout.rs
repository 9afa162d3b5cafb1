//! KIP-266: `Consumer::poll(timeout)` returns within its timeout whatever the brokers do. A
//! real `karst node` is frozen with SIGSTOP (its kernel still accepts connections and buffers
//! requests, but nothing answers: a node that stops answering), and polls that need a round
//! trip must still come back in time: ListOffsets after a seek, OffsetFetch (after a
//! FindCoordinator) for a partition assigned with a `group.id`, Metadata for a topic not seen
//! before. After SIGCONT the same consumers resume and read everything: the round trips a
//! poll did not wait for were kept, not lost.

mod client_support;

use std::process::Command;
use std::time::Duration;

use client_support::Node;
use karst::client::{
    Admin, ClientConfig, Consumer, ConsumerConfig, NewTopic, OffsetReset, Producer, ProducerConfig,
    ProducerRecord, TopicPartition,
};
use tokio::time::Instant;

const POLL_TIMEOUT: Duration = Duration::from_millis(200);
/// What a poll may overrun its timeout by (scheduling on a loaded 2-core machine), far below
/// the request timeout a blocking round trip would wait for.
const OVERRUN_BOUND: Duration = Duration::from_millis(800);
const REQUEST_TIMEOUT_MS: u64 = 10_000;

/// Sends SIGSTOP or SIGCONT to the node; SIGCONT again when dropped, so a failing test does not
/// leave a frozen process behind.
struct Freeze<'a>(&'a Node);

impl<'a> Freeze<'a> {
    fn new(node: &'a Node) -> Freeze<'a> {
        signal(node, "-STOP");
        Freeze(node)
    }
}

impl Drop for Freeze<'_> {
    fn drop(&mut self) {
        signal(self.0, "-CONT");
    }
}

fn signal(node: &Node, which: &str) {
    let status = Command::new("kill")
        .arg(which)
        .arg(node.child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success(), "kill {which}");
}

fn consumer_config(bootstrap: &str, group: Option<&str>) -> ConsumerConfig {
    ConsumerConfig {
        client: ClientConfig {
            allow_auto_topic_creation: false,
            request_timeout_ms: REQUEST_TIMEOUT_MS,
            ..ClientConfig::new(bootstrap)
        },
        auto_offset_reset: OffsetReset::Earliest,
        fetch_max_wait_ms: 100,
        group_id: group.map(str::to_string),
        enable_auto_commit: false,
        ..ConsumerConfig::default()
    }
}

/// Polls once and checks that it came back within the timeout plus the margin.
async fn bounded_poll(consumer: &mut Consumer, what: &str) {
    let started = Instant::now();
    // Cut short well past the bound, so a poll that blocks fails here and says so.
    let result = tokio::time::timeout(
        POLL_TIMEOUT + 4 * OVERRUN_BOUND,
        consumer.poll(POLL_TIMEOUT),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "{what}: poll({POLL_TIMEOUT:?}) still blocked after {:?}",
            started.elapsed()
        )
    });
    let took = started.elapsed();
    assert!(
        took <= POLL_TIMEOUT + OVERRUN_BOUND,
        "{what}: poll({POLL_TIMEOUT:?}) took {took:?} against a node that does not answer \
         (result {result:?})"
    );
    let records = result.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(records.is_empty(), "{what}: records from a frozen node");
}

/// Polls until `count` records came back (within a generous bound).
async fn read(consumer: &mut Consumer, count: usize, what: &str) -> Vec<i64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut offsets = Vec::new();
    while offsets.len() < count {
        assert!(Instant::now() < deadline, "{what}: read {offsets:?}");
        for r in consumer.poll(POLL_TIMEOUT).await.unwrap() {
            offsets.push(r.offset);
        }
    }
    offsets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_returns_within_its_timeout_when_the_node_stops_answering() {
    let node = Node::start(&[]);
    let bootstrap = node.bootstrap();
    let body = async {
        let admin = Admin::new(ClientConfig::new(&bootstrap)).await.unwrap();
        for topic in ["frozen", "later"] {
            let results = admin
                .create_topics(&[NewTopic::new(topic, 1, 1)], false)
                .await
                .unwrap();
            results[0].1.clone().unwrap();
        }
        let producer = Producer::new(ProducerConfig {
            client: ClientConfig::new(&bootstrap),
            linger_ms: 1,
            ..ProducerConfig::default()
        })
        .await
        .unwrap();
        let mut reports = Vec::new();
        for topic in ["frozen", "later"] {
            for n in 0..10 {
                let record = ProducerRecord::new(topic, format!("v{n}"));
                reports.push(producer.send(record).await.unwrap());
            }
        }
        producer.flush().await;
        for r in reports {
            r.await.unwrap();
        }
        producer.close().await;

        let frozen = TopicPartition::new("frozen", 0);
        let later = TopicPartition::new("later", 0);
        // Reads everything once, so its connection and positions are established.
        let mut plain = Consumer::new(consumer_config(&bootstrap, None))
            .await
            .unwrap();
        plain.assign(vec![frozen.clone()]);
        assert_eq!(read(&mut plain, 10, "before the freeze").await.len(), 10);
        // Bootstrapped, but has not looked up its group's coordinator yet.
        let mut grouped = Consumer::new(consumer_config(&bootstrap, Some("g-frozen")))
            .await
            .unwrap();

        let freeze = Freeze::new(&node);
        // ListOffsets (the reset after a seek) would wait for the request timeout.
        plain.seek_to_beginning(&frozen).unwrap();
        bounded_poll(&mut plain, "seek to beginning").await;
        bounded_poll(&mut plain, "seek to beginning, second poll").await;
        // Metadata of a topic not seen before, then ListOffsets.
        plain.assign(vec![frozen.clone(), later.clone()]);
        bounded_poll(&mut plain, "a new topic").await;
        // FindCoordinator and OffsetFetch: the committed offset of a newly assigned partition.
        grouped.assign(vec![frozen.clone()]);
        bounded_poll(&mut grouped, "committed offsets").await;
        bounded_poll(&mut grouped, "committed offsets, second poll").await;
        drop(freeze);

        // The round trips started while frozen complete now, and reading resumes.
        let mut again = read(&mut plain, 20, "after the thaw").await;
        again.sort_unstable();
        let expected: Vec<i64> = (0..10).flat_map(|o| [o, o]).collect();
        assert_eq!(again, expected, "both topics read from the beginning");
        let mut resumed = read(&mut grouped, 10, "group member after the thaw").await;
        resumed.sort_unstable();
        assert_eq!(resumed, (0..10).collect::<Vec<i64>>());
    };
    tokio::time::timeout(Duration::from_secs(90), body)
        .await
        .expect("test timed out");
}
