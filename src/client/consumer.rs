//! The consumer: manual assignment, seeking, and pipelined fetching.
//!
//! Contract:
//! - [`Consumer::assign`] sets the partitions to read. A partition without a position starts
//!   where `auto.offset.reset` says (earliest, latest, or an error with `None`), found with
//!   ListOffsets at the partition leader. [`Consumer::seek`] and friends set positions.
//! - [`Consumer::poll`] returns buffered records in offset order per partition, and keeps one
//!   Fetch in flight per leader while the buffer is below `max_buffered_bytes`: the next fetch
//!   for a broker is sent as soon as its previous response is buffered, so network and
//!   processing overlap (prefetch). A seek or re-assignment discards fetches already under way
//!   (each carries the assignment epoch it was issued in).
//! - This file is the public API (settings, assignment, seeking, `poll` and the completions
//!   of its background tasks); the fetch pipeline under it (Fetch up to v16, error handling,
//!   positions resolved by ListOffsets) is in `consumer/fetch.rs`, whose docs state its
//!   contract.
//! - With `group.id`, [`Consumer::subscribe`] joins the group (see [`super::group`] and
//!   [`super::consumer_group`]): the assignment comes from the group, starting positions from
//!   the committed offsets (else `auto.offset.reset`), and `poll` hands out records only while
//!   the member holds the assignment they were fetched for. With `group.id` and `assign`,
//!   positions also start at the committed offsets and commits carry generation -1.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::FetchResponse;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::assignor::AssignmentStrategy;
use super::cluster::Cluster;
use super::consumer_group::Membership;
use super::group::GroupClient;
use super::records::Header;
use super::{ClientConfig, ClientError, Result, TopicPartition};

mod fetch;
pub use fetch::list_offsets;
use fetch::record_bytes;

/// Highest Fetch version filled in here (librdkafka's); v13+ addresses topics by Metadata's
/// topic ids, so a fetch for a topic whose id is unknown stays at the by-name cap.
pub const FETCH_VERSION_CAP: i16 = 16;
/// Highest Fetch version that addresses topics by name.
pub const FETCH_BY_NAME_VERSION_CAP: i16 = 12;
/// Highest ListOffsets version filled in here.
pub const LIST_OFFSETS_VERSION_CAP: i16 = 7;
/// ListOffsets special timestamps (Kafka protocol): latest and earliest.
pub const LATEST_TIMESTAMP: i64 = -1;
pub const EARLIEST_TIMESTAMP: i64 = -2;
/// Background results waiting for `poll`: at most one fetch per broker and one each of the
/// metadata refresh, OffsetFetch and ListOffsets are in flight, so this only needs to exceed
/// the broker count plus three.
const FETCH_RESULTS_CAPACITY: usize = 256;
const OFFSET_OUT_OF_RANGE: i16 = 1;

/// `auto.offset.reset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetReset {
    Earliest,
    Latest,
    /// Fail instead of guessing.
    None,
}

impl std::str::FromStr for OffsetReset {
    type Err = ClientError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "earliest" => Ok(OffsetReset::Earliest),
            "latest" => Ok(OffsetReset::Latest),
            "none" => Ok(OffsetReset::None),
            other => Err(ClientError::InvalidArgument(format!(
                "auto.offset.reset must be earliest, latest or none, not {other:?}"
            ))),
        }
    }
}

/// Consumer settings, Kafka's names in snake case, Kafka's defaults.
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    pub client: ClientConfig,
    pub auto_offset_reset: OffsetReset,
    /// `fetch.min.bytes`.
    pub fetch_min_bytes: i32,
    /// `fetch.max.bytes`.
    pub fetch_max_bytes: i32,
    /// `max.partition.fetch.bytes`.
    pub max_partition_fetch_bytes: i32,
    /// `fetch.max.wait.ms`.
    pub fetch_max_wait_ms: i32,
    /// `max.poll.records`.
    pub max_poll_records: usize,
    /// Prefetch bound: no new fetch while this many record bytes wait for `poll`.
    pub max_buffered_bytes: usize,
    /// `isolation.level`: 0 read_uncommitted, 1 read_committed.
    pub isolation_level: i8,
    /// `group.id`: needed by `subscribe` and the commit calls.
    pub group_id: Option<String>,
    /// `group.instance.id`: a static member (KIP-345).
    pub group_instance_id: Option<String>,
    /// `session.timeout.ms`.
    pub session_timeout_ms: i32,
    /// `heartbeat.interval.ms`.
    pub heartbeat_interval_ms: u64,
    /// `max.poll.interval.ms`, sent as the rebalance timeout in JoinGroup.
    pub max_poll_interval_ms: i32,
    /// `enable.auto.commit`.
    pub enable_auto_commit: bool,
    /// `auto.commit.interval.ms`.
    pub auto_commit_interval_ms: u64,
    /// `partition.assignment.strategy`, in order of preference.
    pub partition_assignment_strategy: Vec<AssignmentStrategy>,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            client: ClientConfig {
                allow_auto_topic_creation: false,
                ..ClientConfig::default()
            },
            auto_offset_reset: OffsetReset::Latest,
            fetch_min_bytes: 1,
            fetch_max_bytes: 50 * 1024 * 1024,
            max_partition_fetch_bytes: 1024 * 1024,
            fetch_max_wait_ms: 500,
            max_poll_records: 500,
            max_buffered_bytes: 64 * 1024 * 1024,
            isolation_level: 0,
            group_id: None,
            group_instance_id: None,
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 3_000,
            max_poll_interval_ms: 300_000,
            enable_auto_commit: true,
            auto_commit_interval_ms: 5_000,
            partition_assignment_strategy: vec![AssignmentStrategy::Range],
        }
    }
}

/// A record as read by the consumer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerRecord {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
    /// True when the broker set the timestamp (LogAppendTime), false for CreateTime.
    pub log_append_time: bool,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reset {
    Earliest,
    Latest,
    Timestamp(i64),
    /// The group's committed offset, else `auto.offset.reset`.
    Committed,
}

#[derive(Clone, Debug)]
pub(super) struct Position {
    pub(super) topic: Arc<str>,
    /// The next offset to fetch; None until resolved.
    pub(super) offset: Option<i64>,
    /// How to resolve a missing offset.
    pub(super) reset: Option<Reset>,
    /// Back-off after a failed fetch or reset.
    pub(super) not_before: Option<Instant>,
    pub(super) failures: u32,
}

pub(super) struct FetchResult {
    node_id: i32,
    epoch: u64,
    /// The partitions and offsets the fetch asked for.
    asked: Vec<(TopicPartition, i64)>,
    result: Result<FetchResponse>,
}

/// What a background task of the consumer reports to `poll`. Network round trips run in
/// tasks so that `poll` never waits past its timeout (KIP-266) and a round trip a poll did not
/// wait for is not lost: a later poll takes its result.
pub(super) enum Completion {
    Fetch(FetchResult),
    Metadata(Result<()>),
    /// OffsetFetch of the group's committed offsets for `wanted`, asked in assignment `epoch`.
    Committed {
        epoch: u64,
        wanted: Vec<TopicPartition>,
        result: Result<BTreeMap<TopicPartition, Option<i64>>>,
    },
    /// ListOffsets for positions to reset, asked in assignment `epoch`.
    Offsets {
        epoch: u64,
        results: Vec<(TopicPartition, Result<(i64, i64)>)>,
    },
}

/// A consumer with manual assignment.
pub struct Consumer {
    pub(super) cluster: Cluster,
    pub(super) config: ConsumerConfig,
    pub(super) positions: BTreeMap<TopicPartition, Position>,
    pub(super) buffered: VecDeque<ConsumerRecord>,
    buffered_bytes: usize,
    in_flight: BTreeSet<i32>,
    /// Bumped by every assignment change and seek; results asked under an older epoch are
    /// dropped.
    pub(super) epoch: u64,
    pub(super) results_tx: mpsc::Sender<Completion>,
    results_rx: mpsc::Receiver<Completion>,
    metadata_wanted: bool,
    /// One metadata refresh, one OffsetFetch and one ListOffsets at a time run in the
    /// background.
    metadata_in_flight: bool,
    pub(super) committed_in_flight: bool,
    offsets_in_flight: bool,
    /// The coordinator side of `group.id`, when set.
    pub(super) group: Option<GroupClient>,
    /// The subscription's membership task and shared state, after `subscribe`.
    pub(super) membership: Option<Membership>,
    /// Next offset after the last record handed out, per partition (what commits commit).
    pub(super) consumed: BTreeMap<TopicPartition, i64>,
    pub(super) next_auto_commit: Option<Instant>,
    /// Topic ids for Fetch v13+, as of metadata generation `topic_ids_generation` (looking one
    /// up in the cluster copies the topic's whole metadata; fetches ask again and again).
    topic_ids: BTreeMap<String, uuid::Uuid>,
    topic_ids_generation: u64,
}

impl Consumer {
    pub async fn new(config: ConsumerConfig) -> Result<Consumer> {
        let cluster = Cluster::connect(config.client.clone()).await?;
        Ok(Consumer::with_cluster(cluster, config))
    }

    pub fn with_cluster(cluster: Cluster, config: ConsumerConfig) -> Consumer {
        let (results_tx, results_rx) = mpsc::channel(FETCH_RESULTS_CAPACITY);
        let group = config
            .group_id
            .as_ref()
            .map(|g| GroupClient::new(cluster.clone(), g));
        Consumer {
            cluster,
            config,
            positions: BTreeMap::new(),
            buffered: VecDeque::new(),
            buffered_bytes: 0,
            in_flight: BTreeSet::new(),
            epoch: 0,
            results_tx,
            results_rx,
            metadata_wanted: true,
            metadata_in_flight: false,
            committed_in_flight: false,
            offsets_in_flight: false,
            group,
            membership: None,
            consumed: BTreeMap::new(),
            next_auto_commit: None,
            topic_ids: BTreeMap::new(),
            topic_ids_generation: 0,
        }
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Changes `max.poll.records` (e.g. so a tool that stops after N records is never handed,
    /// and so never commits, more than it processed).
    pub fn set_max_poll_records(&mut self, max_poll_records: usize) {
        self.config.max_poll_records = max_poll_records.max(1);
    }

    /// Replaces the assignment. Kept partitions keep their positions. With `group.id`, new
    /// partitions start at the group's committed offsets.
    pub fn assign(&mut self, partitions: Vec<TopicPartition>) {
        let default_reset = if self.group.is_some() {
            Some(Reset::Committed)
        } else {
            self.default_reset()
        };
        let mut next = BTreeMap::new();
        for tp in partitions {
            let position = self.positions.remove(&tp).unwrap_or_else(|| Position {
                topic: Arc::from(tp.topic.as_str()),
                offset: None,
                reset: default_reset,
                not_before: None,
                failures: 0,
            });
            next.insert(tp, position);
        }
        self.positions = next;
        self.consumed
            .retain(|tp, _| self.positions.contains_key(tp));
        self.invalidate();
        self.metadata_wanted = true;
    }

    pub(super) fn default_reset(&self) -> Option<Reset> {
        match self.config.auto_offset_reset {
            OffsetReset::Earliest => Some(Reset::Earliest),
            OffsetReset::Latest => Some(Reset::Latest),
            OffsetReset::None => None,
        }
    }

    /// Every partition of `topic` (after a metadata lookup).
    pub async fn assign_topic(&mut self, topic: &str) -> Result<Vec<TopicPartition>> {
        self.cluster.refresh_metadata(&[topic.to_string()]).await?;
        let meta = self.cluster.topic(topic).ok_or_else(|| {
            self.cluster
                .topic_error(topic)
                .and_then(|c| ClientError::from_code(c, None))
                .unwrap_or_else(|| ClientError::InvalidArgument(format!("no topic {topic:?}")))
        })?;
        let mut all: Vec<TopicPartition> = self.positions.keys().cloned().collect();
        let added: Vec<TopicPartition> = (0..meta.partition_count())
            .map(|p| TopicPartition::new(topic, p))
            .collect();
        all.extend(added.iter().cloned());
        self.assign(all);
        Ok(added)
    }

    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.positions.keys().cloned().collect()
    }

    /// Next offset to be returned for `tp` (None if not yet resolved or not assigned).
    pub fn position(&self, tp: &TopicPartition) -> Option<i64> {
        let consumed = self
            .buffered
            .iter()
            .find(|r| r.partition == tp.partition && *r.topic == *tp.topic)
            .map(|r| r.offset);
        consumed.or_else(|| self.positions.get(tp).and_then(|p| p.offset))
    }

    pub fn seek(&mut self, tp: &TopicPartition, offset: i64) -> Result<()> {
        self.set_position(tp, Some(offset), None)
    }

    pub fn seek_to_beginning(&mut self, tp: &TopicPartition) -> Result<()> {
        self.set_position(tp, None, Some(Reset::Earliest))
    }

    pub fn seek_to_end(&mut self, tp: &TopicPartition) -> Result<()> {
        self.set_position(tp, None, Some(Reset::Latest))
    }

    /// Seeks to the first offset whose timestamp is >= `timestamp_ms` (the end if none).
    pub fn seek_to_timestamp(&mut self, tp: &TopicPartition, timestamp_ms: i64) -> Result<()> {
        self.set_position(tp, None, Some(Reset::Timestamp(timestamp_ms)))
    }

    fn set_position(
        &mut self,
        tp: &TopicPartition,
        offset: Option<i64>,
        reset: Option<Reset>,
    ) -> Result<()> {
        let position = self
            .positions
            .get_mut(tp)
            .ok_or_else(|| ClientError::InvalidArgument(format!("{tp} is not assigned")))?;
        position.offset = offset;
        position.reset = reset;
        position.not_before = None;
        // Buffered records of this partition are now wrong; others stay, but fetches under
        // way may carry this partition, so all of them are discarded and their partitions'
        // positions rewound to the first unreturned record.
        self.invalidate();
        Ok(())
    }

    /// Drops buffered records and in-flight fetches; positions go back to the first record
    /// not yet returned.
    pub(super) fn invalidate(&mut self) {
        let mut first: BTreeMap<TopicPartition, i64> = BTreeMap::new();
        for r in &self.buffered {
            first
                .entry(TopicPartition::new(&*r.topic, r.partition))
                .or_insert(r.offset);
        }
        for (tp, offset) in first {
            if let Some(p) = self.positions.get_mut(&tp) {
                if p.reset.is_none() && p.offset.is_some_and(|o| o > offset) {
                    p.offset = Some(offset);
                }
            }
        }
        self.buffered.clear();
        self.buffered_bytes = 0;
        self.epoch += 1;
        // In-flight fetches are left to finish; their results are ignored by epoch.
    }

    /// Returns up to `max.poll.records` records, waiting at most `timeout` for some.
    ///
    /// KIP-266: returns within `timeout` (plus scheduling delay) whatever the brokers do.
    /// Every network round trip it needs (metadata, OffsetFetch, ListOffsets, Fetch) runs in a
    /// background task whose result a later poll takes if this one has to return first; the
    /// only awaits here are bounded by the deadline.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        let deadline = Instant::now() + timeout;
        // (madsim's tokio has no timeout_at; no time has passed since `deadline` was set.)
        // Only a group member with auto commit has anything to do here: skip the timer.
        if self.config.enable_auto_commit
            && self.group.is_some()
            && tokio::time::timeout(timeout, self.maybe_auto_commit())
                .await
                .is_err()
        {
            tracing::debug!("auto commit not started within the poll timeout");
        }
        // One timer for the whole poll, moved only when the wake-up time does: a fresh sleep
        // per completion would register a timer each.
        let sleep = tokio::time::sleep_until(deadline);
        tokio::pin!(sleep);
        let mut sleeping_until = deadline;
        loop {
            if self.membership.is_some() && !self.follow_group(deadline).await? {
                return Ok(Vec::new());
            }
            self.resolve_positions()?;
            self.send_fetches();
            if !self.buffered.is_empty() {
                let n = self.buffered.len().min(self.config.max_poll_records.max(1));
                let out: Vec<ConsumerRecord> = self.buffered.drain(..n).collect();
                let bytes: usize = out.iter().map(record_bytes).sum();
                self.buffered_bytes -= bytes.min(self.buffered_bytes);
                if !self.hand_out(&out) {
                    // The group moved on since these were fetched: they are not ours to return.
                    self.invalidate();
                    continue;
                }
                // Room freed: keep the pipeline full.
                self.send_fetches();
                return Ok(out);
            }
            // A back-off already over was acted on above (its fetch or reset is under way and
            // its completion wakes us); only one still ahead needs waking for.
            let mut now = None;
            let wait_until = self
                .positions
                .values()
                .filter_map(|p| p.not_before)
                .filter(|t| *t > *now.get_or_insert_with(Instant::now))
                .min()
                .map_or(deadline, |t| t.min(deadline));
            if wait_until != sleeping_until {
                sleep.as_mut().reset(wait_until);
                sleeping_until = wait_until;
            }
            tokio::select! {
                biased;
                completion = self.results_rx.recv() => {
                    let completion = completion.expect("the consumer holds a sender");
                    self.handle_completion(completion)?;
                }
                _ = &mut sleep => {
                    if Instant::now() >= deadline {
                        return Ok(Vec::new());
                    }
                }
            }
        }
    }

    fn handle_completion(&mut self, completion: Completion) -> Result<()> {
        if let Completion::Offsets { epoch, results } = &completion {
            tracing::debug!(
                client = %self.config.client.client_id,
                epoch,
                current = self.epoch,
                "ListOffsets answered: {results:?}"
            );
        }
        match completion {
            Completion::Fetch(result) => self.handle_fetch_result(result),
            Completion::Metadata(result) => {
                self.metadata_in_flight = false;
                if let Err(e) = result {
                    tracing::debug!("consumer metadata refresh failed: {e}");
                    self.metadata_wanted = true;
                }
                Ok(())
            }
            Completion::Committed {
                epoch,
                wanted,
                result,
            } => {
                self.committed_in_flight = false;
                if epoch != self.epoch {
                    return Ok(());
                }
                self.apply_committed(wanted, result)
            }
            Completion::Offsets { epoch, results } => {
                self.offsets_in_flight = false;
                if epoch != self.epoch {
                    return Ok(());
                }
                self.apply_offsets(results)
            }
        }
    }
}
