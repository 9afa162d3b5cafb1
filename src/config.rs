//! Node and topic configuration, with Kafka's names.
//!
//! Every setting has its Kafka name (`num.partitions`, `log.retention.ms`, ...) and a field named
//! the same in snake case. [`NodeConfig::set`] is the one place that parses a setting by name;
//! the TOML file, `--set key=value` and the dedicated flags all go through it, so each name
//! means the same everywhere. docs/configuration.md lists every setting with its default.
//!
//! Topic-level configs (`retention.ms`, `segment.bytes`, ...) are stored per topic as explicit
//! overrides ([`TopicConfig`]); anything not overridden follows the node's `log.*` default.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::log::{CleanupPolicy, FlushPolicy, LogConfig, TimestampType};

/// Kafka's default `message.max.bytes` (1 MiB + 12 bytes of log overhead).
pub const DEFAULT_MESSAGE_MAX_BYTES: i32 = 1_048_588;
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Why a setting was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown config {0}")]
    Unknown(String),
    #[error("invalid value {value:?} for {key}: {reason}")]
    Invalid {
        key: String,
        value: String,
        reason: String,
    },
}

fn invalid(key: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

fn parse<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value
        .trim()
        .parse()
        .map_err(|err: T::Err| invalid(key, value, err.to_string()))
}

fn parse_at_least<T>(key: &str, value: &str, min: T) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    T::Err: std::fmt::Display,
{
    let parsed: T = parse(key, value)?;
    if parsed < min {
        return Err(invalid(key, value, format!("must be at least {min}")));
    }
    Ok(parsed)
}

/// How the log makes appends durable (`log.flush.policy`, a Karst setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicyName {
    /// fsync before acknowledging acks=all (and before data becomes visible to consumers).
    Durable,
    /// fsync after `log.flush.interval.messages` / `log.flush.interval.ms`.
    Interval,
    /// Leave flushing to the OS page cache (Kafka's default).
    PageCache,
}

/// The configuration of one node. `Default` is the embedded single-node default of `karst node`.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    /// `node.id`
    pub node_id: i32,
    /// `listeners`: address to bind, `host:port` (a `PLAINTEXT://` prefix is accepted).
    pub listeners: String,
    /// `advertised.listeners`: address given to clients in Metadata; default the bound address.
    pub advertised_listeners: Option<String>,
    /// `log.dirs`: the data directory.
    pub log_dirs: PathBuf,
    /// `cluster.id`
    pub cluster_id: String,
    /// `num.partitions`: partitions of an auto-created topic (and CreateTopics with -1).
    pub num_partitions: i32,
    /// `default.replication.factor`: only 1 is possible on a single node.
    pub default_replication_factor: i16,
    /// `auto.create.topics.enable`
    pub auto_create_topics_enable: bool,
    /// `delete.topic.enable`
    pub delete_topic_enable: bool,
    /// `message.max.bytes`: largest record batch accepted (topic override: max.message.bytes).
    pub message_max_bytes: i32,
    /// `socket.request.max.bytes`: largest request frame; larger closes the connection.
    pub socket_request_max_bytes: i32,
    /// `queued.max.requests`: requests queued for the broker before readers wait.
    pub queued_max_requests: usize,
    /// `num.network.threads`: threads of the node's async runtime (sockets, encoding, the
    /// step loop); 0 = one per core, 1 = a single-threaded runtime.
    pub num_network_threads: usize,
    /// `log.retention.ms` (-1 = unlimited; also set by log.retention.minutes/hours).
    pub log_retention_ms: i64,
    /// `log.retention.bytes` (-1 = unlimited).
    pub log_retention_bytes: i64,
    /// `log.segment.bytes`
    pub log_segment_bytes: u64,
    /// `log.roll.ms` (also log.roll.hours): topic default of segment.ms.
    pub log_roll_ms: i64,
    /// `log.index.interval.bytes`
    pub log_index_interval_bytes: u32,
    /// `log.retention.check.interval.ms`
    pub log_retention_check_interval_ms: i64,
    /// `log.flush.policy` (Karst): durable | interval | page-cache.
    pub log_flush_policy: FlushPolicyName,
    /// `log.flush.interval.messages` (with the interval policy).
    pub log_flush_interval_messages: Option<u64>,
    /// `log.flush.interval.ms` (with the interval policy).
    pub log_flush_interval_ms: Option<i64>,
    /// `log.message.timestamp.type`: CreateTime | LogAppendTime.
    pub log_message_timestamp_type: TimestampType,
    /// `log.cleanup.policy`: delete | compact | compact,delete (topic: cleanup.policy).
    pub log_cleanup_policy: CleanupPolicy,
    /// `log.cleaner.delete.retention.ms` (topic: delete.retention.ms).
    pub log_cleaner_delete_retention_ms: i64,
    /// `log.cleaner.min.cleanable.ratio` (topic: min.cleanable.dirty.ratio).
    pub log_cleaner_min_cleanable_ratio: f64,
    /// `log.cleaner.min.compaction.lag.ms` (topic: min.compaction.lag.ms).
    pub log_cleaner_min_compaction_lag_ms: i64,
    /// `log.cleaner.backoff.ms`: how often a compacted log checks whether cleaning is due.
    pub log_cleaner_backoff_ms: i64,
    /// `karst.seed`: seed of the broker's RNG (topic ids); default derived at start-up.
    pub karst_seed: Option<u64>,
    /// `offsets.topic.num.partitions`: partitions of `__consumer_offsets` when it is created.
    pub offsets_topic_num_partitions: i32,
    /// `group.initial.rebalance.delay.ms`: an empty group's first join phase waits this long.
    pub group_initial_rebalance_delay_ms: i64,
    /// `group.min.session.timeout.ms`
    pub group_min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`
    pub group_max_session_timeout_ms: i32,
    /// `group.max.size`: members (and KIP-394 pending members) of one group.
    pub group_max_size: usize,
    /// `offsets.retention.minutes`: committed offsets of an empty group expire after this.
    pub offsets_retention_minutes: i64,
    /// `offsets.retention.check.interval.ms`
    pub offsets_retention_check_interval_ms: i64,
    /// `offset.metadata.max.bytes`: largest metadata string of one committed offset.
    pub offset_metadata_max_bytes: usize,
    /// `offsets.commit.timeout.ms`: longest a group write waits for `__consumer_offsets` to
    /// make it durable before the request is failed with COORDINATOR_NOT_AVAILABLE.
    pub offsets_commit_timeout_ms: i64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            node_id: 1,
            listeners: "127.0.0.1:9092".to_string(),
            advertised_listeners: None,
            log_dirs: PathBuf::from("karst-data"),
            cluster_id: "karst-cluster-0000000000".to_string(),
            num_partitions: 1,
            default_replication_factor: 1,
            auto_create_topics_enable: true,
            delete_topic_enable: true,
            message_max_bytes: DEFAULT_MESSAGE_MAX_BYTES,
            socket_request_max_bytes: crate::protocol::codec::DEFAULT_SOCKET_REQUEST_MAX_BYTES
                as i32,
            queued_max_requests: 500,
            num_network_threads: 0,
            log_retention_ms: 7 * DAY_MS,
            log_retention_bytes: -1,
            log_segment_bytes: 1 << 30,
            log_roll_ms: 7 * DAY_MS,
            log_index_interval_bytes: 4096,
            log_retention_check_interval_ms: 300_000,
            log_flush_policy: FlushPolicyName::PageCache,
            log_flush_interval_messages: None,
            log_flush_interval_ms: None,
            log_message_timestamp_type: TimestampType::CreateTime,
            log_cleanup_policy: CleanupPolicy::Delete,
            log_cleaner_delete_retention_ms: DAY_MS,
            log_cleaner_min_cleanable_ratio: 0.5,
            log_cleaner_min_compaction_lag_ms: 0,
            log_cleaner_backoff_ms: 15_000,
            karst_seed: None,
            offsets_topic_num_partitions: 50,
            group_initial_rebalance_delay_ms: 3_000,
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            group_max_size: 1_000,
            offsets_retention_minutes: 7 * 24 * 60,
            offsets_retention_check_interval_ms: 600_000,
            offset_metadata_max_bytes: 4096,
            offsets_commit_timeout_ms: 5_000,
        }
    }
}

/// Strips Kafka's `PLAINTEXT://` (or any `NAME://`) listener prefix and takes the first entry.
pub fn listener_address(listener: &str) -> &str {
    let first = listener.split(',').next().unwrap_or("").trim();
    match first.find("://") {
        Some(at) => &first[at + 3..],
        None => first,
    }
}

fn parse_timestamp_type(key: &str, value: &str) -> Result<TimestampType, ConfigError> {
    match value.trim() {
        "CreateTime" => Ok(TimestampType::CreateTime),
        "LogAppendTime" => Ok(TimestampType::LogAppendTime),
        _ => Err(invalid(key, value, "expected CreateTime or LogAppendTime")),
    }
}

fn parse_cleanup_policy(key: &str, value: &str) -> Result<CleanupPolicy, ConfigError> {
    CleanupPolicy::parse(value)
        .ok_or_else(|| invalid(key, value, "expected delete, compact or compact,delete"))
}

fn parse_ratio(key: &str, value: &str) -> Result<f64, ConfigError> {
    let ratio: f64 = parse(key, value)?;
    if !(0.0..=1.0).contains(&ratio) {
        return Err(invalid(key, value, "must be between 0 and 1"));
    }
    Ok(ratio)
}

fn parse_bool(key: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(key, value, "expected true or false")),
    }
}

impl NodeConfig {
    /// Every setting name [`NodeConfig::set`] accepts.
    pub const NAMES: &'static [&'static str] = &[
        "node.id",
        "broker.id",
        "listeners",
        "advertised.listeners",
        "log.dirs",
        "log.dir",
        "cluster.id",
        "num.partitions",
        "default.replication.factor",
        "auto.create.topics.enable",
        "delete.topic.enable",
        "message.max.bytes",
        "socket.request.max.bytes",
        "queued.max.requests",
        "num.network.threads",
        "log.retention.ms",
        "log.retention.minutes",
        "log.retention.hours",
        "log.retention.bytes",
        "log.segment.bytes",
        "log.roll.ms",
        "log.roll.hours",
        "log.index.interval.bytes",
        "log.retention.check.interval.ms",
        "log.flush.policy",
        "log.flush.interval.messages",
        "log.flush.interval.ms",
        "log.message.timestamp.type",
        "log.cleanup.policy",
        "log.cleaner.delete.retention.ms",
        "log.cleaner.min.cleanable.ratio",
        "log.cleaner.min.compaction.lag.ms",
        "log.cleaner.backoff.ms",
        "karst.seed",
        "offsets.topic.num.partitions",
        "group.initial.rebalance.delay.ms",
        "group.min.session.timeout.ms",
        "group.max.session.timeout.ms",
        "group.max.size",
        "offsets.retention.minutes",
        "offsets.retention.check.interval.ms",
        "offset.metadata.max.bytes",
        "offsets.commit.timeout.ms",
    ];

    /// Sets one setting by its Kafka name from its text form.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        match key {
            "node.id" | "broker.id" => self.node_id = parse_at_least(key, value, 0)?,
            "listeners" => self.listeners = listener_address(value).to_string(),
            "advertised.listeners" => {
                self.advertised_listeners = Some(listener_address(value).to_string())
            }
            "log.dirs" | "log.dir" => {
                self.log_dirs = PathBuf::from(value.split(',').next().unwrap_or("").trim())
            }
            "cluster.id" => self.cluster_id = value.to_string(),
            "num.partitions" => self.num_partitions = parse_at_least(key, value, 1)?,
            "default.replication.factor" => {
                let factor: i16 = parse_at_least(key, value, 1)?;
                if factor != 1 {
                    return Err(invalid(
                        key,
                        value,
                        "a single node has replication factor 1",
                    ));
                }
                self.default_replication_factor = factor;
            }
            "auto.create.topics.enable" => self.auto_create_topics_enable = parse_bool(key, value)?,
            "delete.topic.enable" => self.delete_topic_enable = parse_bool(key, value)?,
            "message.max.bytes" => self.message_max_bytes = parse_at_least(key, value, 0)?,
            "socket.request.max.bytes" => {
                self.socket_request_max_bytes = parse_at_least(key, value, 1)?
            }
            "queued.max.requests" => self.queued_max_requests = parse_at_least(key, value, 1)?,
            "num.network.threads" => self.num_network_threads = parse_at_least(key, value, 0)?,
            "log.retention.ms" => self.log_retention_ms = parse_at_least(key, value, -1)?,
            "log.retention.minutes" => {
                self.log_retention_ms =
                    parse_at_least::<i64>(key, value, -1)?.saturating_mul(60_000)
            }
            "log.retention.hours" => {
                self.log_retention_ms =
                    parse_at_least::<i64>(key, value, -1)?.saturating_mul(3_600_000)
            }
            "log.retention.bytes" => self.log_retention_bytes = parse_at_least(key, value, -1)?,
            "log.segment.bytes" => self.log_segment_bytes = parse_at_least(key, value, 14)?,
            "log.roll.ms" => self.log_roll_ms = parse_at_least(key, value, 1)?,
            "log.roll.hours" => {
                self.log_roll_ms = parse_at_least::<i64>(key, value, 1)?.saturating_mul(3_600_000)
            }
            "log.index.interval.bytes" => {
                self.log_index_interval_bytes = parse_at_least(key, value, 0)?
            }
            "log.retention.check.interval.ms" => {
                self.log_retention_check_interval_ms = parse_at_least(key, value, 1)?
            }
            "log.flush.policy" => {
                self.log_flush_policy = match value.trim() {
                    "durable" => FlushPolicyName::Durable,
                    "interval" => FlushPolicyName::Interval,
                    "page-cache" | "page_cache" | "pagecache" => FlushPolicyName::PageCache,
                    _ => {
                        return Err(invalid(
                            key,
                            value,
                            "expected durable, interval or page-cache",
                        ))
                    }
                }
            }
            "log.flush.interval.messages" => {
                self.log_flush_interval_messages = Some(parse_at_least(key, value, 1)?)
            }
            "log.flush.interval.ms" => {
                self.log_flush_interval_ms = Some(parse_at_least(key, value, 0)?)
            }
            "log.message.timestamp.type" => {
                self.log_message_timestamp_type = parse_timestamp_type(key, value)?
            }
            "log.cleanup.policy" => self.log_cleanup_policy = parse_cleanup_policy(key, value)?,
            "log.cleaner.delete.retention.ms" => {
                self.log_cleaner_delete_retention_ms = parse_at_least(key, value, 0)?
            }
            "log.cleaner.min.cleanable.ratio" => {
                self.log_cleaner_min_cleanable_ratio = parse_ratio(key, value)?
            }
            "log.cleaner.min.compaction.lag.ms" => {
                self.log_cleaner_min_compaction_lag_ms = parse_at_least(key, value, 0)?
            }
            "log.cleaner.backoff.ms" => {
                self.log_cleaner_backoff_ms = parse_at_least(key, value, 1)?
            }
            "karst.seed" => self.karst_seed = Some(parse(key, value)?),
            "offsets.topic.num.partitions" => {
                let partitions: i32 = parse_at_least(key, value, 1)?;
                // A topic cannot have more (the broker's MAX_PARTITIONS_PER_TOPIC): refuse
                // rather than clamp, since groups hash to partitions by this count.
                if partitions > 10_000 {
                    return Err(invalid(key, value, "must be at most 10000".to_string()));
                }
                self.offsets_topic_num_partitions = partitions
            }
            "group.initial.rebalance.delay.ms" => {
                self.group_initial_rebalance_delay_ms = parse_at_least(key, value, 0)?
            }
            "group.min.session.timeout.ms" => {
                self.group_min_session_timeout_ms = parse_at_least(key, value, 0)?
            }
            "group.max.session.timeout.ms" => {
                self.group_max_session_timeout_ms = parse_at_least(key, value, 0)?
            }
            "group.max.size" => self.group_max_size = parse_at_least(key, value, 1)?,
            "offsets.retention.minutes" => {
                self.offsets_retention_minutes = parse_at_least(key, value, 1)?
            }
            "offsets.retention.check.interval.ms" => {
                self.offsets_retention_check_interval_ms = parse_at_least(key, value, 1)?
            }
            "offset.metadata.max.bytes" => {
                self.offset_metadata_max_bytes = parse_at_least(key, value, 0)?
            }
            "offsets.commit.timeout.ms" => {
                self.offsets_commit_timeout_ms = parse_at_least(key, value, 1)?
            }
            _ => return Err(ConfigError::Unknown(key.to_string())),
        }
        Ok(())
    }

    /// Applies a TOML document of `"kafka.name" = value` pairs (nested tables are joined with
    /// dots, so `[log] "retention.ms" = 1` also works).
    pub fn apply_toml(&mut self, text: &str) -> Result<(), anyhow::Error> {
        let table: toml::Table = text.parse()?;
        let mut pairs = Vec::new();
        flatten_toml("", &table, &mut pairs);
        for (key, value) in pairs {
            self.set(&key, &value)?;
        }
        Ok(())
    }

    /// The current value of a setting, by its Kafka name, as text (DescribeConfigs).
    pub fn value_of(&self, key: &str) -> Option<String> {
        let text = match key {
            "node.id" | "broker.id" => self.node_id.to_string(),
            "listeners" => self.listeners.clone(),
            "advertised.listeners" => self.advertised_listeners.clone().unwrap_or_default(),
            "log.dirs" | "log.dir" => self.log_dirs.display().to_string(),
            "cluster.id" => self.cluster_id.clone(),
            "num.partitions" => self.num_partitions.to_string(),
            "default.replication.factor" => self.default_replication_factor.to_string(),
            "auto.create.topics.enable" => self.auto_create_topics_enable.to_string(),
            "delete.topic.enable" => self.delete_topic_enable.to_string(),
            "message.max.bytes" => self.message_max_bytes.to_string(),
            "socket.request.max.bytes" => self.socket_request_max_bytes.to_string(),
            "queued.max.requests" => self.queued_max_requests.to_string(),
            "num.network.threads" => self.num_network_threads.to_string(),
            "log.retention.ms" => self.log_retention_ms.to_string(),
            "log.retention.minutes" => (self.log_retention_ms / 60_000).to_string(),
            "log.retention.hours" => (self.log_retention_ms / 3_600_000).to_string(),
            "log.retention.bytes" => self.log_retention_bytes.to_string(),
            "log.segment.bytes" => self.log_segment_bytes.to_string(),
            "log.roll.ms" => self.log_roll_ms.to_string(),
            "log.roll.hours" => (self.log_roll_ms / 3_600_000).to_string(),
            "log.index.interval.bytes" => self.log_index_interval_bytes.to_string(),
            "log.retention.check.interval.ms" => self.log_retention_check_interval_ms.to_string(),
            "log.flush.policy" => match self.log_flush_policy {
                FlushPolicyName::Durable => "durable",
                FlushPolicyName::Interval => "interval",
                FlushPolicyName::PageCache => "page-cache",
            }
            .to_string(),
            "log.flush.interval.messages" => self
                .log_flush_interval_messages
                .map_or(i64::MAX.to_string(), |v| v.to_string()),
            "log.flush.interval.ms" => self
                .log_flush_interval_ms
                .map_or(i64::MAX.to_string(), |v| v.to_string()),
            "log.message.timestamp.type" => match self.log_message_timestamp_type {
                TimestampType::CreateTime => "CreateTime",
                TimestampType::LogAppendTime => "LogAppendTime",
            }
            .to_string(),
            "log.cleanup.policy" => self.log_cleanup_policy.name().to_string(),
            "log.cleaner.delete.retention.ms" => self.log_cleaner_delete_retention_ms.to_string(),
            "log.cleaner.min.cleanable.ratio" => self.log_cleaner_min_cleanable_ratio.to_string(),
            "log.cleaner.min.compaction.lag.ms" => {
                self.log_cleaner_min_compaction_lag_ms.to_string()
            }
            "log.cleaner.backoff.ms" => self.log_cleaner_backoff_ms.to_string(),
            "karst.seed" => self.karst_seed.map(|s| s.to_string()).unwrap_or_default(),
            "offsets.topic.num.partitions" => self.offsets_topic_num_partitions.to_string(),
            "group.initial.rebalance.delay.ms" => self.group_initial_rebalance_delay_ms.to_string(),
            "group.min.session.timeout.ms" => self.group_min_session_timeout_ms.to_string(),
            "group.max.session.timeout.ms" => self.group_max_session_timeout_ms.to_string(),
            "group.max.size" => self.group_max_size.to_string(),
            "offsets.retention.minutes" => self.offsets_retention_minutes.to_string(),
            "offsets.retention.check.interval.ms" => {
                self.offsets_retention_check_interval_ms.to_string()
            }
            "offset.metadata.max.bytes" => self.offset_metadata_max_bytes.to_string(),
            "offsets.commit.timeout.ms" => self.offsets_commit_timeout_ms.to_string(),
            _ => return None,
        };
        Some(text)
    }

    /// The flush policy as the log understands it.
    pub fn flush_policy(&self) -> FlushPolicy {
        match self.log_flush_policy {
            FlushPolicyName::Durable => FlushPolicy::Durable,
            FlushPolicyName::PageCache => FlushPolicy::PageCache,
            FlushPolicyName::Interval => FlushPolicy::Interval {
                messages: self.log_flush_interval_messages,
                ms: self.log_flush_interval_ms,
            },
        }
    }

    /// The log configuration of a topic with no overrides.
    pub fn default_log_config(&self) -> LogConfig {
        LogConfig {
            segment_bytes: self.log_segment_bytes,
            segment_ms: self.log_roll_ms,
            retention_ms: self.log_retention_ms,
            retention_bytes: self.log_retention_bytes,
            index_interval_bytes: self.log_index_interval_bytes,
            retention_check_interval_ms: self.log_retention_check_interval_ms,
            flush: self.flush_policy(),
            timestamp_type: self.log_message_timestamp_type,
            cleanup_policy: self.log_cleanup_policy,
            delete_retention_ms: self.log_cleaner_delete_retention_ms,
            min_cleanable_dirty_ratio: self.log_cleaner_min_cleanable_ratio,
            min_compaction_lag_ms: self.log_cleaner_min_compaction_lag_ms,
            cleaner_backoff_ms: self.log_cleaner_backoff_ms,
        }
    }
}

fn flatten_toml(prefix: &str, table: &toml::Table, out: &mut Vec<(String, String)>) {
    for (key, value) in table {
        let name = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::Table(inner) => flatten_toml(&name, inner, out),
            toml::Value::String(text) => out.push((name, text.clone())),
            toml::Value::Array(items) => {
                let joined: Vec<String> = items
                    .iter()
                    .map(|item| match item {
                        toml::Value::String(text) => text.clone(),
                        other => other.to_string(),
                    })
                    .collect();
                out.push((name, joined.join(",")));
            }
            other => out.push((name, other.to_string())),
        }
    }
}

/// Topic-level configs Karst understands, with the node setting each one defaults to.
pub const TOPIC_CONFIGS: &[(&str, &str)] = &[
    ("cleanup.policy", "log.cleanup.policy"),
    ("delete.retention.ms", "log.cleaner.delete.retention.ms"),
    (
        "min.cleanable.dirty.ratio",
        "log.cleaner.min.cleanable.ratio",
    ),
    ("min.compaction.lag.ms", "log.cleaner.min.compaction.lag.ms"),
    ("retention.ms", "log.retention.ms"),
    ("retention.bytes", "log.retention.bytes"),
    ("segment.bytes", "log.segment.bytes"),
    ("segment.ms", "log.roll.ms"),
    ("max.message.bytes", "message.max.bytes"),
    ("message.timestamp.type", "log.message.timestamp.type"),
    ("index.interval.bytes", "log.index.interval.bytes"),
    ("flush.messages", "log.flush.interval.messages"),
    ("flush.ms", "log.flush.interval.ms"),
    ("min.insync.replicas", ""),
];

/// A topic's explicit config overrides (Kafka names to text values), validated on set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicConfig {
    pub overrides: BTreeMap<String, String>,
}

impl TopicConfig {
    /// Checks that `key` is a topic config Karst understands and `value` is valid for it.
    pub fn validate(key: &str, value: &str) -> Result<(), ConfigError> {
        match key {
            "cleanup.policy" => parse_cleanup_policy(key, value).map(drop),
            "delete.retention.ms" | "min.compaction.lag.ms" => {
                parse_at_least::<i64>(key, value, 0).map(drop)
            }
            "min.cleanable.dirty.ratio" => parse_ratio(key, value).map(drop),
            "retention.ms" | "retention.bytes" => parse_at_least::<i64>(key, value, -1).map(drop),
            "segment.bytes" => parse_at_least::<u64>(key, value, 14).map(drop),
            "segment.ms" => parse_at_least::<i64>(key, value, 1).map(drop),
            "max.message.bytes" => parse_at_least::<i32>(key, value, 0).map(drop),
            "message.timestamp.type" => parse_timestamp_type(key, value).map(drop),
            "index.interval.bytes" => parse_at_least::<u32>(key, value, 0).map(drop),
            "flush.messages" => parse_at_least::<u64>(key, value, 1).map(drop),
            "flush.ms" => parse_at_least::<i64>(key, value, 0).map(drop),
            "min.insync.replicas" => parse_at_least::<i32>(key, value, 1).map(drop),
            _ => Err(ConfigError::Unknown(key.to_string())),
        }
    }

    /// Sets an override after validating it.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        Self::validate(key, value)?;
        self.overrides.insert(key.to_string(), value.to_string());
        Ok(())
    }

    /// The effective value of `key` (override or node default) as text, and whether it is the
    /// default.
    pub fn effective(&self, node: &NodeConfig, key: &str) -> Option<(String, bool)> {
        if let Some(value) = self.overrides.get(key) {
            return Some((value.clone(), false));
        }
        let value = match key {
            "cleanup.policy" => node.log_cleanup_policy.name().to_string(),
            "delete.retention.ms" => node.log_cleaner_delete_retention_ms.to_string(),
            "min.cleanable.dirty.ratio" => node.log_cleaner_min_cleanable_ratio.to_string(),
            "min.compaction.lag.ms" => node.log_cleaner_min_compaction_lag_ms.to_string(),
            "retention.ms" => node.log_retention_ms.to_string(),
            "retention.bytes" => node.log_retention_bytes.to_string(),
            "segment.bytes" => node.log_segment_bytes.to_string(),
            "segment.ms" => node.log_roll_ms.to_string(),
            "max.message.bytes" => node.message_max_bytes.to_string(),
            "message.timestamp.type" => match node.log_message_timestamp_type {
                TimestampType::CreateTime => "CreateTime".to_string(),
                TimestampType::LogAppendTime => "LogAppendTime".to_string(),
            },
            "index.interval.bytes" => node.log_index_interval_bytes.to_string(),
            "flush.messages" => node
                .log_flush_interval_messages
                .unwrap_or(i64::MAX as u64)
                .to_string(),
            "flush.ms" => node.log_flush_interval_ms.unwrap_or(i64::MAX).to_string(),
            "min.insync.replicas" => "1".to_string(),
            _ => return None,
        };
        Some((value, true))
    }

    /// `max.message.bytes` in effect.
    pub fn max_message_bytes(&self, node: &NodeConfig) -> i32 {
        self.overrides
            .get("max.message.bytes")
            .and_then(|value| value.parse().ok())
            .unwrap_or(node.message_max_bytes)
    }

    /// The log configuration in effect: node defaults with this topic's overrides.
    pub fn log_config(&self, node: &NodeConfig) -> LogConfig {
        let mut config = node.default_log_config();
        for (key, value) in &self.overrides {
            match key.as_str() {
                "retention.ms" => {
                    config.retention_ms = value.parse().unwrap_or(config.retention_ms)
                }
                "retention.bytes" => {
                    config.retention_bytes = value.parse().unwrap_or(config.retention_bytes)
                }
                "segment.bytes" => {
                    config.segment_bytes = value.parse().unwrap_or(config.segment_bytes)
                }
                "segment.ms" => config.segment_ms = value.parse().unwrap_or(config.segment_ms),
                "cleanup.policy" => {
                    if let Some(policy) = CleanupPolicy::parse(value) {
                        config.cleanup_policy = policy;
                    }
                }
                "delete.retention.ms" => {
                    config.delete_retention_ms = value.parse().unwrap_or(config.delete_retention_ms)
                }
                "min.cleanable.dirty.ratio" => {
                    config.min_cleanable_dirty_ratio =
                        value.parse().unwrap_or(config.min_cleanable_dirty_ratio)
                }
                "min.compaction.lag.ms" => {
                    config.min_compaction_lag_ms =
                        value.parse().unwrap_or(config.min_compaction_lag_ms)
                }
                "index.interval.bytes" => {
                    config.index_interval_bytes =
                        value.parse().unwrap_or(config.index_interval_bytes)
                }
                "message.timestamp.type" => {
                    if let Ok(kind) = parse_timestamp_type(key, value) {
                        config.timestamp_type = kind;
                    }
                }
                "flush.messages" | "flush.ms" => {
                    if let FlushPolicy::Interval { messages, ms } = &mut config.flush {
                        if key == "flush.messages" {
                            *messages = value.parse().ok();
                        } else {
                            *ms = value.parse().ok();
                        }
                    }
                }
                _ => {}
            }
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_name_is_accepted_and_unknown_names_are_refused() {
        let samples = [
            ("node.id", "3"),
            ("listeners", "PLAINTEXT://127.0.0.1:0"),
            ("log.flush.policy", "durable"),
            ("log.message.timestamp.type", "LogAppendTime"),
            ("auto.create.topics.enable", "false"),
        ];
        let mut config = NodeConfig::default();
        for (key, value) in samples {
            config.set(key, value).unwrap();
        }
        assert_eq!(config.node_id, 3);
        assert_eq!(config.listeners, "127.0.0.1:0");
        assert_eq!(config.log_flush_policy, FlushPolicyName::Durable);
        assert!(!config.auto_create_topics_enable);
        assert_eq!(
            config.set("no.such.thing", "1"),
            Err(ConfigError::Unknown("no.such.thing".into()))
        );
        assert!(config.set("num.partitions", "0").is_err());
        for name in NodeConfig::NAMES {
            assert!(
                !matches!(config.set(name, "?"), Err(ConfigError::Unknown(_))),
                "{name} is listed but not handled"
            );
        }
    }

    #[test]
    fn toml_uses_kafka_names() {
        let mut config = NodeConfig::default();
        config
            .apply_toml("\"log.retention.ms\" = 1000\n\"num.partitions\" = 6\n[log.segment]\nbytes = 4096\n")
            .unwrap();
        assert_eq!(config.log_retention_ms, 1000);
        assert_eq!(config.num_partitions, 6);
        assert_eq!(config.log_segment_bytes, 4096);
    }

    #[test]
    fn compaction_configs_use_kafka_names_at_node_and_topic_level() {
        let mut node = NodeConfig::default();
        node.set("log.cleanup.policy", "compact,delete").unwrap();
        node.set("log.cleaner.min.cleanable.ratio", "0.25").unwrap();
        assert!(node.set("log.cleaner.min.cleanable.ratio", "1.5").is_err());
        assert!(node.set("log.cleanup.policy", "shred").is_err());
        let config = node.default_log_config();
        assert_eq!(config.cleanup_policy, CleanupPolicy::CompactDelete);
        assert_eq!(config.min_cleanable_dirty_ratio, 0.25);
        assert_eq!(config.delete_retention_ms, DAY_MS);
        let mut topic = TopicConfig::default();
        topic.set("cleanup.policy", "compact").unwrap();
        topic.set("delete.retention.ms", "100").unwrap();
        topic.set("min.compaction.lag.ms", "7").unwrap();
        topic.set("min.cleanable.dirty.ratio", "0.1").unwrap();
        let config = topic.log_config(&node);
        assert_eq!(config.cleanup_policy, CleanupPolicy::Compact);
        assert_eq!(config.delete_retention_ms, 100);
        assert_eq!(config.min_compaction_lag_ms, 7);
        assert_eq!(config.min_cleanable_dirty_ratio, 0.1);
        assert_eq!(
            TopicConfig::default().effective(&node, "cleanup.policy"),
            Some(("compact,delete".to_string(), true))
        );
    }

    #[test]
    fn topic_overrides_win_over_node_defaults() {
        let node = NodeConfig::default();
        let mut topic = TopicConfig::default();
        topic.set("retention.ms", "5").unwrap();
        assert!(topic.set("retention.ms", "-2").is_err());
        assert!(topic.set("bogus", "1").is_err());
        assert_eq!(topic.log_config(&node).retention_ms, 5);
        assert_eq!(
            topic.effective(&node, "retention.ms"),
            Some(("5".to_string(), false))
        );
        assert_eq!(
            topic.effective(&node, "segment.bytes"),
            Some(((1u64 << 30).to_string(), true))
        );
    }
}
