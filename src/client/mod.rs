//! Karst's own Kafka client: producer, consumer and admin, speaking the Kafka wire protocol to
//! any Kafka-compatible broker.
//!
//! Contract:
//! - [`Cluster`] is the shared core: bootstrap, one connection per broker with request
//!   pipelining and correlation ids, ApiVersions negotiation per connection, and a metadata
//!   cache refreshed on demand (unknown topic, NotLeaderOrFollower, a lost connection) and on
//!   age. [`Producer`], [`Consumer`] and [`Admin`] are built on a `Cluster`.
//! - The client uses only `tokio::{net, time, sync, spawn, io}` and no OS threads, so the same
//!   code runs on tokio and under madsim (`--cfg madsim`). Every `select!` is `biased;`.
//!   Randomness comes only from [`XorShift`] seeded from [`ClientConfig::seed`]; record
//!   timestamps read `SystemTime`, which madsim virtualises.
//! - Every queue has a bound: requests queued per connection ([`connection::MAX_QUEUED_REQUESTS`]),
//!   producer buffer ([`ProducerConfig::buffer_memory`]), consumer prefetch
//!   ([`ConsumerConfig::max_buffered_bytes`]).
//! - Consumer groups: [`Consumer::subscribe`] joins a group through the classic protocol
//!   ([`group`], assignors in [`assignor`]); commits and committed offsets live in
//!   [`consumer_group`]; group administration in [`Admin`].

pub mod admin;
pub mod admin_groups;
pub mod assignor;
pub mod cluster;
pub mod connection;
pub mod consumer;
pub mod consumer_group;
pub mod group;
pub mod partitioner;
pub mod producer;
pub mod records;

pub use admin::{Admin, ConfigEntry, NewTopic, PartitionInfo, TopicDescription};
pub use admin_groups::{GroupDescription, GroupListing, MemberDescription};
pub use assignor::AssignmentStrategy;
pub use cluster::{BrokerInfo, Cluster, PartitionMetadata, TopicMetadata};
pub use consumer::{Consumer, ConsumerConfig, ConsumerRecord, OffsetReset};
pub use consumer_group::CommitHandle;
pub use producer::{
    Acks, DeliveryFuture, Producer, ProducerConfig, ProducerRecord, RecordMetadata,
};
pub use records::{Compression, Header};

use kafka_protocol::error::ResponseError;

/// Settings shared by every client role, with Kafka's names in snake case.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `bootstrap.servers`: `host:port` entries tried in order until one answers.
    pub bootstrap_servers: Vec<String>,
    /// `client.id`, sent in every request header.
    pub client_id: String,
    /// `request.timeout.ms`: how long to wait for a response before giving up on it.
    pub request_timeout_ms: u64,
    /// `socket.connection.setup.timeout.ms`.
    pub connection_setup_timeout_ms: u64,
    /// `metadata.max.age.ms`: refresh metadata at least this often while in use.
    pub metadata_max_age_ms: u64,
    /// `retry.backoff.ms`: first back-off after a retriable failure.
    pub retry_backoff_ms: u64,
    /// `retry.backoff.max.ms`: the back-off doubles up to this.
    pub retry_backoff_max_ms: u64,
    /// Largest response frame accepted; a bigger size prefix closes the connection.
    pub max_response_bytes: usize,
    /// Whether Metadata requests may create topics (`allow.auto.create.topics`).
    pub allow_auto_topic_creation: bool,
    /// Seed of the client's only source of randomness (sticky partition choice).
    pub seed: u64,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            bootstrap_servers: vec!["127.0.0.1:9092".to_string()],
            client_id: "karst".to_string(),
            request_timeout_ms: 30_000,
            connection_setup_timeout_ms: 10_000,
            metadata_max_age_ms: 300_000,
            retry_backoff_ms: 100,
            retry_backoff_max_ms: 1_000,
            max_response_bytes: 128 * 1024 * 1024,
            allow_auto_topic_creation: true,
            seed: 0x5eed_4b61_7273_7401,
        }
    }
}

impl ClientConfig {
    /// A config with the given comma-separated `bootstrap.servers` and defaults elsewhere.
    pub fn new(bootstrap_servers: &str) -> Self {
        ClientConfig {
            bootstrap_servers: bootstrap_servers
                .split(',')
                .map(|s| s.trim().trim_start_matches("PLAINTEXT://").to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            ..ClientConfig::default()
        }
    }
}

/// Everything a client call can fail with.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("connection to {addr} lost: {reason}")]
    Disconnected { addr: String, reason: String },
    #[error("{api} request to {addr} timed out after {timeout_ms} ms")]
    Timeout {
        api: String,
        addr: String,
        timeout_ms: u64,
    },
    #[error("broker error {name} (code {code}){}", if message.is_empty() { String::new() } else { format!(": {message}") })]
    Broker {
        code: i16,
        name: String,
        message: String,
    },
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A fetched batch failed validation (Kafka's CorruptRecordException): the consumer cannot
    /// move past it by itself; the application may seek beyond `offset`.
    #[error("corrupt record batch in {topic}-{partition} at offset {offset}: {reason}")]
    CorruptRecord {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },
    #[error("not supported by the broker: {0}")]
    Unsupported(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("timed out: {0}")]
    DeadlineExceeded(String),
    #[error("client closed")]
    Closed,
}

impl ClientError {
    /// A Kafka error code as an error, `None` for 0 (no error).
    pub fn from_code(code: i16, message: Option<&str>) -> Option<ClientError> {
        let error = ResponseError::try_from_code(code)?;
        Some(ClientError::Broker {
            code,
            name: error.to_string(),
            message: message.unwrap_or_default().to_string(),
        })
    }

    /// The Kafka error code, if the broker sent one.
    pub fn code(&self) -> Option<i16> {
        match self {
            ClientError::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether retrying the same request may succeed: transport failures, timeouts and the
    /// error codes Kafka marks retriable.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Connect { .. }
            | ClientError::Disconnected { .. }
            | ClientError::Timeout { .. } => true,
            ClientError::Broker { code, .. } => ResponseError::try_from_code(*code)
                .map(|e| e.is_retriable())
                .unwrap_or(false),
            _ => false,
        }
    }

    /// Whether the error means our view of leadership is stale and metadata must be refreshed.
    pub fn needs_metadata_refresh(&self) -> bool {
        match self {
            ClientError::Connect { .. }
            | ClientError::Disconnected { .. }
            | ClientError::Timeout { .. } => true,
            ClientError::Broker { code, .. } => matches!(
                *code,
                3 /* UNKNOWN_TOPIC_OR_PARTITION */
                | 5 /* LEADER_NOT_AVAILABLE */
                | 6 /* NOT_LEADER_OR_FOLLOWER */
                | 13 /* NETWORK_EXCEPTION */
                | 74 /* FENCED_LEADER_EPOCH */
                | 75 /* UNKNOWN_LEADER_EPOCH */
                | 100 /* UNKNOWN_TOPIC_ID */
                | 103 /* INCONSISTENT_TOPIC_ID */
            ),
            _ => false,
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A topic and partition.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// The client's only randomness: xorshift64*, seeded from [`ClientConfig::seed`], so a
/// simulated run replays exactly.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        // Zero is xorshift's fixed point; any other constant works.
        XorShift(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-enough value in `0..n` (n > 0).
    pub fn below(&mut self, n: u32) -> u32 {
        ((self.next_u64() >> 32) % u64::from(n.max(1))) as u32
    }
}

/// Wall-clock milliseconds for record timestamps (CreateTime). Under madsim `SystemTime` is
/// the simulated clock, so this stays deterministic.
pub fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Exponential back-off for the `attempt`-th retry (0-based), capped.
pub(crate) fn backoff_ms(config: &ClientConfig, attempt: u32) -> u64 {
    let factor = 1u64 << attempt.min(16);
    config
        .retry_backoff_ms
        .saturating_mul(factor)
        .min(config.retry_backoff_max_ms.max(config.retry_backoff_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_list_parsing_accepts_plaintext_prefix_and_commas() {
        let c = ClientConfig::new("PLAINTEXT://a:1, b:2,,");
        assert_eq!(c.bootstrap_servers, vec!["a:1", "b:2"]);
    }

    #[test]
    fn kafka_error_codes_map_to_retriable_flags() {
        // NOT_LEADER_OR_FOLLOWER (6) is retriable, INVALID_TOPIC_EXCEPTION (17) is not.
        let e = ClientError::from_code(6, None).unwrap();
        assert!(e.is_retriable() && e.needs_metadata_refresh());
        let e = ClientError::from_code(17, Some("bad")).unwrap();
        assert!(!e.is_retriable());
        assert!(e.to_string().contains("bad"));
        assert!(ClientError::from_code(0, None).is_none());
    }

    #[test]
    fn xorshift_is_deterministic_per_seed() {
        let mut a = XorShift::new(7);
        let mut b = XorShift::new(7);
        let mut c = XorShift::new(8);
        let xs: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..4).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let c = ClientConfig::default();
        assert_eq!(backoff_ms(&c, 0), 100);
        assert_eq!(backoff_ms(&c, 1), 200);
        assert_eq!(backoff_ms(&c, 10), 1000);
    }
}
