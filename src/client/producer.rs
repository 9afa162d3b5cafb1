//! The producer: a record accumulator per partition, and a sender task that drains ready
//! batches to partition leaders.
//!
//! Contract and order of events:
//! 1. [`Producer::send`] picks the partition (explicit, murmur2 of the key, or sticky), waits
//!    for metadata of an unknown topic (up to `max.block.ms`) and for buffer space (bounded by
//!    `buffer.memory`), appends the record to the partition's open batch and returns a
//!    [`DeliveryFuture`] that resolves to the record's partition and offset (its delivery
//!    report).
//! 2. A batch closes when the next record would exceed `batch.size`, when `linger.ms` passed
//!    since its first record, or on [`Producer::flush`] / [`Producer::close`].
//! 3. The sender task sends closed batches, one per partition per Produce request, grouped by
//!    leader, with at most `max.in.flight.requests.per.connection` batches in flight per
//!    partition. With idempotence (KIP-98) a batch gets its sequence number when first sent
//!    and keeps it (and its exact bytes) on every retry.
//! 4. A retriable failure (a lost connection, a timeout, NotLeaderOrFollower, ...) puts the
//!    batch back at the head of its partition's queue, requests a metadata refresh, and stops
//!    the partition until all its in-flight batches have come back and the back-off has
//!    passed; batches are then resent in sequence order, so the order of records in a
//!    partition is kept. With idempotence a resent batch the broker already has is answered
//!    as a duplicate, never written twice. Non-retriable failures, running out of `retries`
//!    or passing `delivery.timeout.ms` fail the batch's records.
//!
//! Ordering caveat without idempotence: like Kafka, a failed batch retried after a later batch
//! of the same partition succeeded lands after it, unless max_in_flight is 1.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    InitProducerIdRequest, ProduceRequest, ProduceResponse, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use super::cluster::Cluster;
use super::connection::PendingResponse;
use super::partitioner::{partition_for_key, StickyPartition};
use super::records::{BatchBuilder, Compression, Header, BATCH_HEADER_BYTES};
use super::{backoff_ms, wall_clock_ms, ClientConfig, ClientError, Result, XorShift};

mod sender;
use sender::sender_loop;
#[cfg(test)]
use sender::{next_sequence, sequence_before};

/// Highest Produce version filled in here (v13 addresses topics by id).
pub const PRODUCE_VERSION_CAP: i16 = 12;
const INIT_PRODUCER_ID_VERSION_CAP: i16 = 4;
const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;
const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
/// Idempotence allows at most this many in-flight batches per partition (KIP-98 / Kafka's
/// broker keeps the last 5 batches per producer for duplicate detection).
const MAX_IDEMPOTENT_IN_FLIGHT: usize = 5;

/// `acks`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acks {
    /// acks=0: no response; offsets are unknown (-1).
    None,
    /// acks=1: the leader wrote it.
    Leader,
    /// acks=all (-1): every in-sync replica has it.
    All,
}

impl Acks {
    pub fn wire(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

impl std::str::FromStr for Acks {
    type Err = ClientError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "0" => Ok(Acks::None),
            "1" => Ok(Acks::Leader),
            "all" | "-1" => Ok(Acks::All),
            other => Err(ClientError::InvalidArgument(format!(
                "acks must be 0, 1, all or -1, not {other:?}"
            ))),
        }
    }
}

/// Producer settings, Kafka's names in snake case, Kafka's (4.x) defaults.
#[derive(Clone, Debug)]
pub struct ProducerConfig {
    pub client: ClientConfig,
    pub acks: Acks,
    /// `linger.ms`.
    pub linger_ms: u64,
    /// `batch.size`: a batch closes before it would exceed this (a single larger record still
    /// gets a batch of its own).
    pub batch_size: usize,
    /// `buffer.memory`: bytes of records waiting to be sent; `send` waits when full.
    pub buffer_memory: usize,
    /// `max.in.flight.requests.per.connection`, applied per partition.
    pub max_in_flight: usize,
    /// `retries`.
    pub retries: u32,
    /// `delivery.timeout.ms`: a record fails if not acknowledged this long after `send`.
    pub delivery_timeout_ms: u64,
    /// `enable.idempotence`; None: on when acks=all and the broker supports InitProducerId.
    pub enable_idempotence: Option<bool>,
    /// `compression.type`.
    pub compression: Compression,
    /// `max.request.size`: bound of one Produce request (and of one record).
    pub max_request_size: usize,
    /// `max.block.ms`: how long `send` waits for metadata or buffer space.
    pub max_block_ms: u64,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            client: ClientConfig::default(),
            acks: Acks::All,
            linger_ms: 5,
            batch_size: 16 * 1024,
            buffer_memory: 32 * 1024 * 1024,
            max_in_flight: 5,
            retries: i32::MAX as u32,
            delivery_timeout_ms: 120_000,
            enable_idempotence: None,
            compression: Compression::None,
            max_request_size: 1024 * 1024,
            max_block_ms: 60_000,
        }
    }
}

/// A record to send.
#[derive(Clone, Debug, Default)]
pub struct ProducerRecord {
    pub topic: String,
    /// None: chosen by the partitioner.
    pub partition: Option<i32>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
    /// None: now (CreateTime).
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        ProducerRecord {
            topic: topic.into(),
            value: Some(value.into()),
            ..ProducerRecord::default()
        }
    }

    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn with_partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push(Header::new(key, value));
        self
    }
}

/// A delivery report: where the record was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordMetadata {
    pub topic: String,
    pub partition: i32,
    /// -1 with acks=0, or when the broker reported the batch as an already-written duplicate.
    pub offset: i64,
    /// The record's timestamp, or the broker's LogAppendTime.
    pub timestamp: i64,
}

/// Resolves when the record is acknowledged or has failed for good.
pub struct DeliveryFuture(oneshot::Receiver<Result<RecordMetadata>>);

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(ClientError::Closed)))
    }
}

/// A callback run with the record's delivery report, on the producer's task: keep it short.
pub type DeliveryCallback = Box<dyn FnOnce(Result<RecordMetadata>) + Send + 'static>;

enum Reply {
    Channel(oneshot::Sender<Result<RecordMetadata>>),
    Callback(DeliveryCallback),
}

impl Reply {
    fn send(self, result: Result<RecordMetadata>) {
        match self {
            Reply::Channel(tx) => {
                let _ = tx.send(result);
            }
            Reply::Callback(f) => f(result),
        }
    }
}

struct Delivery {
    reply: Reply,
    timestamp: i64,
}

struct OpenBatch {
    builder: BatchBuilder,
    deliveries: Vec<Delivery>,
    created: Instant,
}

struct ReadyBatch {
    /// Built (and sequenced) when first sent; resent unchanged.
    bytes: Option<Bytes>,
    builder: Option<BatchBuilder>,
    deliveries: Vec<Delivery>,
    record_count: i32,
    /// Bytes charged against `buffer.memory`.
    charged: usize,
    base_sequence: i32,
    attempts: u32,
    created: Instant,
    /// Set when the batch could not be built; it then fails with this error.
    build_error: Option<ClientError>,
}

#[derive(Default)]
struct PartitionState {
    open: Option<OpenBatch>,
    ready: VecDeque<ReadyBatch>,
    in_flight: usize,
    next_sequence: i32,
    /// Sequence after the last acknowledged batch: a batch above it that gets
    /// OUT_OF_ORDER_SEQUENCE_NUMBER was only overtaken by an earlier batch's retry.
    acked_sequence: i32,
    /// Base sequences of the batches in flight, in send order (idempotence only).
    in_flight_sequences: VecDeque<i32>,
    /// After a retriable failure: send nothing until in-flight batches are back and then
    /// not before this instant.
    retry_after: Option<Instant>,
    /// The producer id and epoch this partition's batches carry, when it had to move off the
    /// producer's own (see `needs_new_id`).
    producer: Option<(i64, i16)>,
    /// A sequenced batch failed without the broker saying it was not written, so its sequence
    /// numbers may or may not be in the broker's producer state. Reusing them under the same
    /// producer id could make the broker acknowledge a new batch as a duplicate of the old one
    /// without writing it. The partition sends nothing until it has a fresh producer id and
    /// starts again at sequence 0 (the Java client bumps the epoch instead, KIP-360).
    needs_new_id: bool,
}

struct TopicState {
    partition_count: i32,
    available: Vec<i32>,
    /// Leader node id per partition (-1 unknown).
    leaders: Vec<i32>,
    partitions: Vec<PartitionState>,
    sticky: StickyPartition,
}

struct State {
    topics: BTreeMap<String, TopicState>,
    rng: XorShift,
    buffered_bytes: usize,
    /// Records handed to `send` and not yet reported.
    undelivered: usize,
    /// While > 0 every batch is ready at once.
    flushing: usize,
    closing: bool,
    refresh_wanted: bool,
    refresh_running: bool,
    last_refresh: Option<Instant>,
    /// Some partition waits for a fresh producer id with nothing in flight.
    new_id_wanted: bool,
    new_id_running: bool,
}

struct Shared {
    cluster: Cluster,
    config: ProducerConfig,
    idempotent: bool,
    producer_id: i64,
    producer_epoch: i16,
    state: Mutex<State>,
    wake_sender: Notify,
    /// notify_waiters when buffer space is freed or records are delivered.
    progress: Notify,
}

/// A Kafka producer. Dropping it (or [`Producer::close`]) delivers what is buffered, then
/// stops the sender task.
pub struct Producer {
    shared: Arc<Shared>,
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.shared.state.lock().unwrap().closing = true;
        self.shared.wake_sender.notify_one();
    }
}

impl Producer {
    /// Connects (bootstrap) and, with idempotence, obtains a producer id.
    pub async fn new(config: ProducerConfig) -> Result<Producer> {
        let cluster = Cluster::connect(config.client.clone()).await?;
        Producer::with_cluster(cluster, config).await
    }

    /// A producer on an existing cluster handle.
    pub async fn with_cluster(cluster: Cluster, mut config: ProducerConfig) -> Result<Producer> {
        if config.batch_size == 0 || config.max_in_flight == 0 || config.buffer_memory == 0 {
            return Err(ClientError::InvalidArgument(
                "batch.size, buffer.memory and max.in.flight must be positive".to_string(),
            ));
        }
        let wants_idempotence = match config.enable_idempotence {
            Some(true) => {
                if config.acks != Acks::All {
                    return Err(ClientError::InvalidArgument(
                        "enable.idempotence requires acks=all".to_string(),
                    ));
                }
                if config.max_in_flight > MAX_IDEMPOTENT_IN_FLIGHT {
                    return Err(ClientError::InvalidArgument(format!(
                        "enable.idempotence requires max.in.flight <= {MAX_IDEMPOTENT_IN_FLIGHT}"
                    )));
                }
                true
            }
            Some(false) => false,
            None => config.acks == Acks::All && config.max_in_flight <= MAX_IDEMPOTENT_IN_FLIGHT,
        };
        let (mut producer_id, mut producer_epoch) = (-1i64, -1i16);
        if wants_idempotence {
            let conn = cluster.any_connection().await?;
            if conn.supports::<InitProducerIdRequest>() {
                let (id, epoch) = init_producer_id(&cluster).await?;
                producer_id = id;
                producer_epoch = epoch;
            } else if config.enable_idempotence == Some(true) {
                return Err(ClientError::Unsupported(
                    "InitProducerId (needed by enable.idempotence)".to_string(),
                ));
            } else {
                tracing::warn!("broker lacks InitProducerId: producing without idempotence");
            }
        }
        let idempotent = producer_id >= 0;
        config.enable_idempotence = Some(idempotent);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                topics: BTreeMap::new(),
                rng: XorShift::new(config.client.seed),
                buffered_bytes: 0,
                undelivered: 0,
                flushing: 0,
                closing: false,
                refresh_wanted: false,
                refresh_running: false,
                last_refresh: None,
                new_id_wanted: false,
                new_id_running: false,
            }),
            cluster,
            config,
            idempotent,
            producer_id,
            producer_epoch,
            wake_sender: Notify::new(),
            progress: Notify::new(),
        });
        tokio::spawn(sender_loop(shared.clone()));
        Ok(Producer { shared })
    }

    /// The producer id and epoch when idempotent.
    pub fn producer_id(&self) -> Option<(i64, i16)> {
        self.shared
            .idempotent
            .then_some((self.shared.producer_id, self.shared.producer_epoch))
    }

    pub fn cluster(&self) -> &Cluster {
        &self.shared.cluster
    }

    /// Queues `record`; the returned future is its delivery report. Waits only for metadata
    /// of a new topic and for buffer space.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        let (tx, rx) = oneshot::channel();
        self.send_inner(record, Reply::Channel(tx)).await?;
        Ok(DeliveryFuture(rx))
    }

    /// Like [`Producer::send`], but the delivery report goes to `callback` (cheaper than a
    /// future per record; used by `karst perf`). On an immediate error the callback is not
    /// called.
    pub async fn send_with_callback(
        &self,
        record: ProducerRecord,
        callback: DeliveryCallback,
    ) -> Result<()> {
        self.send_inner(record, Reply::Callback(callback)).await
    }

    async fn send_inner(&self, record: ProducerRecord, reply: Reply) -> Result<()> {
        let shared = &self.shared;
        let mut reply = Some(reply);
        let config = &shared.config;
        let deadline = Instant::now() + Duration::from_millis(config.max_block_ms);
        let record_size = BatchBuilder::record_size_upper_bound(
            record.key.as_deref(),
            record.value.as_deref(),
            &record.headers,
        );
        if record_size + BATCH_HEADER_BYTES > config.max_request_size {
            return Err(ClientError::InvalidArgument(format!(
                "record of {record_size} bytes exceeds max.request.size {}",
                config.max_request_size
            )));
        }
        if record_size > config.buffer_memory {
            return Err(ClientError::InvalidArgument(format!(
                "record of {record_size} bytes exceeds buffer.memory {}",
                config.buffer_memory
            )));
        }
        let timestamp = record.timestamp.unwrap_or_else(wall_clock_ms);
        let mut attempt = 0;
        loop {
            // Created before checking, so a notify_waiters in between is not missed.
            let progress = shared.progress.notified();
            match self.try_append(&record, record_size, timestamp, &mut reply)? {
                Appended::Done => return Ok(()),
                Appended::NeedMetadata => {
                    if Instant::now() >= deadline {
                        return Err(ClientError::DeadlineExceeded(format!(
                            "no metadata for topic {:?} within max.block.ms ({} ms){}",
                            record.topic,
                            config.max_block_ms,
                            shared
                                .cluster
                                .topic_error(&record.topic)
                                .and_then(|c| ClientError::from_code(c, None))
                                .map(|e| format!(": {e}"))
                                .unwrap_or_default()
                        )));
                    }
                    self.load_topic(&record.topic, attempt, deadline).await?;
                    attempt += 1;
                }
                Appended::NeedSpace => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if tokio::time::timeout(left, progress).await.is_err() {
                        return Err(ClientError::DeadlineExceeded(format!(
                            "buffer.memory ({} bytes) still full after max.block.ms",
                            config.buffer_memory
                        )));
                    }
                }
            }
        }
    }

    async fn load_topic(&self, topic: &str, attempt: u32, deadline: Instant) -> Result<()> {
        let cluster = &self.shared.cluster;
        if attempt > 0 {
            let pause = Duration::from_millis(backoff_ms(cluster.config(), attempt - 1));
            tokio::time::sleep_until((Instant::now() + pause).min(deadline)).await;
        }
        cluster.refresh_metadata(&[topic.to_string()]).await?;
        if let Some(code) = cluster.topic_error(topic) {
            let error = ClientError::from_code(code, None);
            if let Some(e) = error.filter(|e| !e.is_retriable()) {
                return Err(e);
            }
        }
        let mut state = self.shared.state.lock().unwrap();
        refresh_topic_state(&mut state, cluster, topic);
        Ok(())
    }

    fn try_append(
        &self,
        record: &ProducerRecord,
        record_size: usize,
        timestamp: i64,
        reply: &mut Option<Reply>,
    ) -> Result<Appended> {
        let shared = &self.shared;
        let config = &shared.config;
        let mut guard = shared.state.lock().unwrap();
        let state = &mut *guard;
        if state.closing {
            return Err(ClientError::Closed);
        }
        let Some(topic) = state.topics.get_mut(record.topic.as_str()) else {
            return Ok(Appended::NeedMetadata);
        };
        if topic.partition_count == 0 {
            return Ok(Appended::NeedMetadata);
        }
        if state.buffered_bytes > 0 && state.buffered_bytes + record_size > config.buffer_memory {
            return Ok(Appended::NeedSpace);
        }
        let partition = match (record.partition, &record.key) {
            (Some(p), _) => {
                if p < 0 || p >= topic.partition_count {
                    return Err(ClientError::InvalidArgument(format!(
                        "partition {p} of {:?}, which has {} partitions",
                        record.topic, topic.partition_count
                    )));
                }
                p
            }
            (None, Some(key)) => partition_for_key(key, topic.partition_count),
            (None, None) => topic.sticky.next(
                &mut state.rng,
                topic.partition_count,
                &topic.available,
                config.batch_size,
                record_size,
            ),
        };
        let ps = &mut topic.partitions[partition as usize];
        let mut wake = false;
        let must_close = ps.open.as_ref().is_some_and(|open| {
            !open.builder.is_empty() && open.builder.size() + record_size > config.batch_size
        });
        if must_close {
            let open = ps.open.take().expect("checked above");
            ps.ready.push_back(close_batch(open));
            wake = true;
        }
        let open = ps.open.get_or_insert_with(|| {
            wake = true; // the sender arms this batch's linger timer
            OpenBatch {
                builder: BatchBuilder::new(
                    config.compression,
                    config.batch_size.max(record_size + BATCH_HEADER_BYTES),
                ),
                deliveries: Vec::new(),
                created: Instant::now(),
            }
        });
        open.builder.append(
            timestamp,
            record.key.as_deref(),
            record.value.as_deref(),
            &record.headers,
        );
        open.deliveries.push(Delivery {
            reply: reply.take().expect("appended once"),
            timestamp,
        });
        if open.builder.size() >= config.batch_size {
            let open = ps.open.take().expect("just appended");
            ps.ready.push_back(close_batch(open));
            wake = true;
        }
        state.buffered_bytes += record_size.max(1);
        state.undelivered += 1;
        drop(guard);
        if wake {
            shared.wake_sender.notify_one();
        }
        Ok(Appended::Done)
    }

    /// Sends everything buffered now and waits until every record sent before this call has
    /// been reported (delivered or failed).
    pub async fn flush(&self) {
        let shared = &self.shared;
        shared.state.lock().unwrap().flushing += 1;
        shared.wake_sender.notify_one();
        loop {
            let progress = shared.progress.notified();
            if shared.state.lock().unwrap().undelivered == 0 {
                break;
            }
            progress.await;
        }
        shared.state.lock().unwrap().flushing -= 1;
    }

    /// Flushes, then stops the sender task.
    pub async fn close(self) {
        self.flush().await;
    }
}

enum Appended {
    Done,
    NeedMetadata,
    NeedSpace,
}

fn close_batch(open: OpenBatch) -> ReadyBatch {
    let charged = open
        .deliveries
        .len()
        .max(1)
        .max(open.builder.size().saturating_sub(BATCH_HEADER_BYTES));
    ReadyBatch {
        record_count: open.builder.record_count(),
        bytes: None,
        builder: Some(open.builder),
        deliveries: open.deliveries,
        charged,
        base_sequence: -1,
        attempts: 0,
        created: open.created,
        build_error: None,
    }
}

/// Syncs a topic's partition count, available partitions and leaders from the cluster cache.
fn refresh_topic_state(state: &mut State, cluster: &Cluster, topic: &str) {
    let Some(meta) = cluster.topic(topic) else {
        return;
    };
    let entry = state
        .topics
        .entry(topic.to_string())
        .or_insert_with(|| TopicState {
            partition_count: 0,
            available: Vec::new(),
            leaders: Vec::new(),
            partitions: Vec::new(),
            sticky: StickyPartition::default(),
        });
    // Partitions are only ever added in Kafka; never shrink queues that may hold records.
    let count = meta.partition_count().max(entry.partition_count);
    entry.partition_count = count;
    entry.available = meta.available_partitions();
    entry.leaders = (0..count)
        .map(|p| {
            meta.partitions
                .get(p as usize)
                .map(|pm| pm.leader)
                .unwrap_or(-1)
        })
        .collect();
    while entry.partitions.len() < count as usize {
        entry.partitions.push(PartitionState::default());
    }
}

async fn init_producer_id(cluster: &Cluster) -> Result<(i64, i16)> {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let mut attempt = 0;
    loop {
        let result = async {
            let conn = cluster.any_connection().await?;
            let response = conn.send(&request, INIT_PRODUCER_ID_VERSION_CAP).await?;
            match ClientError::from_code(response.error_code, None) {
                Some(e) => Err(e),
                None => Ok((response.producer_id.0, response.producer_epoch)),
            }
        }
        .await;
        match result {
            Ok(ids) => return Ok(ids),
            Err(e) if e.is_retriable() && attempt < 10 => {
                tokio::time::sleep(Duration::from_millis(backoff_ms(cluster.config(), attempt)))
                    .await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_wrap_like_kafka() {
        assert_eq!(next_sequence(0, 5), 5);
        assert_eq!(next_sequence(i32::MAX - 1, 3), 1);
        assert!(sequence_before(5, 6));
        assert!(!sequence_before(6, 5));
        assert!(sequence_before(i32::MAX, 0));
        assert!(!sequence_before(3, 3));
    }

    #[test]
    fn acks_parse_like_kafka() {
        assert_eq!("all".parse::<Acks>().unwrap(), Acks::All);
        assert_eq!("-1".parse::<Acks>().unwrap().wire(), -1);
        assert_eq!("0".parse::<Acks>().unwrap().wire(), 0);
        assert!("2".parse::<Acks>().is_err());
    }
}
