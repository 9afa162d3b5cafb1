//! The shared core of every client: bootstrap, the connection pool (one connection per broker,
//! opened lazily) and the metadata cache.
//!
//! Contract:
//! - [`Cluster::connect`] tries each bootstrap server in order until one completes ApiVersions
//!   and a Metadata request; if none does, the error names every address tried and why.
//! - Metadata is refreshed by whoever needs it ([`Cluster::refresh_metadata`]); concurrent
//!   refreshes are coalesced (one request at a time, waiters reuse its result if it started
//!   after they asked). A refresh asks for every topic the client has ever looked up, so the
//!   cache only grows with use.
//! - A dead connection is replaced on the next [`Cluster::connection`] call; the caller decides
//!   whether to refresh metadata first (see [`ClientError::needs_metadata_refresh`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::time::Instant;

use super::connection::Connection;
use super::{backoff_ms, ClientConfig, ClientError, Result, TopicPartition};

/// Highest Metadata version this client fills in (v13 only adds a top-level error code).
pub const METADATA_VERSION_CAP: i16 = 12;
/// Attempts over different brokers before a metadata refresh gives up.
const METADATA_ATTEMPTS: u32 = 6;

/// A broker as listed in Metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerInfo {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

impl BrokerInfo {
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// One partition as listed in Metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionMetadata {
    pub partition: i32,
    /// -1 when there is no leader.
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline_replicas: Vec<i32>,
    pub error_code: i16,
}

/// One topic as listed in Metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicMetadata {
    pub name: String,
    pub topic_id: uuid::Uuid,
    pub is_internal: bool,
    /// Indexed by partition number.
    pub partitions: Vec<PartitionMetadata>,
}

impl TopicMetadata {
    pub fn partition_count(&self) -> i32 {
        self.partitions.len() as i32
    }

    /// Partitions that have a leader right now.
    pub fn available_partitions(&self) -> Vec<i32> {
        self.partitions
            .iter()
            .filter(|p| p.leader >= 0)
            .map(|p| p.partition)
            .collect()
    }
}

#[derive(Default)]
struct State {
    brokers: BTreeMap<i32, BrokerInfo>,
    topics: BTreeMap<String, TopicMetadata>,
    /// Topics whose metadata the client uses; every refresh asks for all of them.
    wanted_topics: BTreeSet<String>,
    /// Per topic, the error the last refresh returned for it (e.g. UNKNOWN_TOPIC_OR_PARTITION).
    topic_errors: BTreeMap<String, i16>,
    cluster_id: Option<String>,
    controller_id: i32,
    connections: BTreeMap<i32, Arc<Connection>>,
    bootstrap: Option<Arc<Connection>>,
    next_bootstrap: usize,
    /// Bumped by every completed refresh.
    generation: u64,
    last_refresh: Option<Instant>,
}

struct Inner {
    config: ClientConfig,
    state: Mutex<State>,
    /// One connect attempt at a time per node id (bootstrap uses i32::MIN).
    connect_locks: Mutex<BTreeMap<i32, Arc<tokio::sync::Mutex<()>>>>,
    refresh_lock: tokio::sync::Mutex<()>,
}

/// A handle on the cluster shared by producer, consumer and admin. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("bootstrap_servers", &self.inner.config.bootstrap_servers)
            .finish()
    }
}

impl Cluster {
    /// Connects to the first bootstrap server that answers and loads the broker list.
    pub async fn connect(config: ClientConfig) -> Result<Cluster> {
        if config.bootstrap_servers.is_empty() {
            return Err(ClientError::InvalidArgument(
                "bootstrap.servers is empty".to_string(),
            ));
        }
        let cluster = Cluster {
            inner: Arc::new(Inner {
                config,
                state: Mutex::new(State {
                    controller_id: -1,
                    ..State::default()
                }),
                connect_locks: Mutex::new(BTreeMap::new()),
                refresh_lock: tokio::sync::Mutex::new(()),
            }),
        };
        let conn = cluster.bootstrap_connection().await?;
        let response = conn
            .send(&metadata_request(Some(&[]), false), METADATA_VERSION_CAP)
            .await?;
        cluster.apply_metadata(&response, &[]);
        Ok(cluster)
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    pub fn cluster_id(&self) -> Option<String> {
        self.inner.state.lock().unwrap().cluster_id.clone()
    }

    pub fn controller_id(&self) -> i32 {
        self.inner.state.lock().unwrap().controller_id
    }

    pub fn brokers(&self) -> Vec<BrokerInfo> {
        self.inner
            .state
            .lock()
            .unwrap()
            .brokers
            .values()
            .cloned()
            .collect()
    }

    /// The cached metadata of `topic`, if known.
    pub fn topic(&self, topic: &str) -> Option<TopicMetadata> {
        self.inner.state.lock().unwrap().topics.get(topic).cloned()
    }

    /// The error the last refresh reported for `topic`, if any.
    pub fn topic_error(&self, topic: &str) -> Option<i16> {
        self.inner
            .state
            .lock()
            .unwrap()
            .topic_errors
            .get(topic)
            .copied()
    }

    /// The cached leader of a partition (None if unknown or leaderless).
    pub fn leader_for(&self, tp: &TopicPartition) -> Option<(i32, i32)> {
        let state = self.inner.state.lock().unwrap();
        let p = state
            .topics
            .get(&tp.topic)?
            .partitions
            .get(usize::try_from(tp.partition).ok()?)?;
        (p.leader >= 0).then_some((p.leader, p.leader_epoch))
    }

    /// Bumped by every completed metadata refresh.
    pub fn metadata_generation(&self) -> u64 {
        self.inner.state.lock().unwrap().generation
    }

    /// Whether the cached metadata is older than `metadata.max.age.ms`.
    pub fn metadata_is_stale(&self) -> bool {
        let state = self.inner.state.lock().unwrap();
        match state.last_refresh {
            None => true,
            Some(at) => {
                at.elapsed() >= Duration::from_millis(self.inner.config.metadata_max_age_ms)
            }
        }
    }

    /// Refreshes metadata for `topics` plus every topic looked up before. Concurrent callers
    /// share one request.
    pub async fn refresh_metadata(&self, topics: &[String]) -> Result<()> {
        let asked_at = {
            let mut state = self.inner.state.lock().unwrap();
            let before = topics.iter().all(|t| state.wanted_topics.contains(t));
            state.wanted_topics.extend(topics.iter().cloned());
            (state.generation, before)
        };
        let _guard = self.inner.refresh_lock.lock().await;
        {
            // Someone refreshed while we waited, with our topics included: reuse it.
            let state = self.inner.state.lock().unwrap();
            if state.generation > asked_at.0 && asked_at.1 {
                return Ok(());
            }
        }
        let wanted: Vec<String> = self
            .inner
            .state
            .lock()
            .unwrap()
            .wanted_topics
            .iter()
            .cloned()
            .collect();
        let request = metadata_request(Some(&wanted), self.inner.config.allow_auto_topic_creation);
        let response = self.send_to_any(&request).await?;
        self.apply_metadata(&response, &wanted);
        Ok(())
    }

    /// Metadata for every topic in the cluster (admin listing); updates the cache too.
    pub async fn fetch_all_metadata(&self) -> Result<MetadataResponse> {
        let response = self.send_to_any(&metadata_request(None, false)).await?;
        self.apply_metadata(&response, &[]);
        Ok(response)
    }

    /// Metadata for `topics` without auto-creation (admin describe).
    pub async fn fetch_metadata(&self, topics: &[String]) -> Result<MetadataResponse> {
        let response = self
            .send_to_any(&metadata_request(Some(topics), false))
            .await?;
        self.apply_metadata(&response, &[]);
        Ok(response)
    }

    /// Sends a Metadata request to any reachable broker, trying others on transport errors.
    async fn send_to_any(&self, request: &MetadataRequest) -> Result<MetadataResponse> {
        let mut last_error = None;
        for attempt in 0..METADATA_ATTEMPTS {
            match self.any_connection().await {
                Ok(conn) => match conn.send(request, METADATA_VERSION_CAP).await {
                    Ok(response) => return Ok(response),
                    Err(e) if e.is_retriable() => last_error = Some(e),
                    Err(e) => return Err(e),
                },
                Err(e) if e.is_retriable() => last_error = Some(e),
                Err(e) => return Err(e),
            }
            tokio::time::sleep(Duration::from_millis(backoff_ms(
                &self.inner.config,
                attempt,
            )))
            .await;
        }
        Err(last_error.unwrap_or(ClientError::Closed))
    }

    fn apply_metadata(&self, response: &MetadataResponse, asked: &[String]) {
        let mut state = self.inner.state.lock().unwrap();
        if !response.brokers.is_empty() {
            state.brokers = response
                .brokers
                .iter()
                .map(|b| {
                    (
                        b.node_id.0,
                        BrokerInfo {
                            node_id: b.node_id.0,
                            host: b.host.to_string(),
                            port: b.port,
                            rack: b.rack.as_ref().map(|r| r.to_string()),
                        },
                    )
                })
                .collect();
            // Connections to brokers that left the cluster are dropped.
            let live: BTreeSet<i32> = state.brokers.keys().copied().collect();
            state.connections.retain(|id, _| live.contains(id));
        }
        state.cluster_id = response.cluster_id.as_ref().map(|c| c.to_string());
        state.controller_id = response.controller_id.0;
        for topic in &response.topics {
            let Some(name) = topic.name.as_ref().map(|n| n.0.to_string()) else {
                continue;
            };
            if topic.error_code != 0 {
                state.topic_errors.insert(name.clone(), topic.error_code);
                // A leaderless topic keeps its last known layout; a missing one is forgotten.
                if topic.error_code == 3 {
                    state.topics.remove(&name);
                }
                if topic.partitions.is_empty() {
                    continue;
                }
            } else {
                state.topic_errors.remove(&name);
            }
            let mut partitions: Vec<PartitionMetadata> = topic
                .partitions
                .iter()
                .map(|p| PartitionMetadata {
                    partition: p.partition_index,
                    leader: p.leader_id.0,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                    isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                    offline_replicas: p.offline_replicas.iter().map(|b| b.0).collect(),
                    error_code: p.error_code,
                })
                .collect();
            partitions.sort_by_key(|p| p.partition);
            // A partition list with holes cannot be indexed by number: keep the old view.
            if partitions
                .iter()
                .enumerate()
                .any(|(i, p)| p.partition != i as i32)
            {
                continue;
            }
            state.topics.insert(
                name.clone(),
                TopicMetadata {
                    name,
                    topic_id: topic.topic_id,
                    is_internal: topic.is_internal,
                    partitions,
                },
            );
        }
        for name in asked {
            if !response
                .topics
                .iter()
                .any(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(name.as_str()))
            {
                state.topics.remove(name);
            }
        }
        state.generation += 1;
        state.last_refresh = Some(Instant::now());
    }

    fn connect_lock(&self, node_id: i32) -> Arc<tokio::sync::Mutex<()>> {
        self.inner
            .connect_locks
            .lock()
            .unwrap()
            .entry(node_id)
            .or_default()
            .clone()
    }

    /// A new connection to `addr` outside the pool, for a caller that must not share one
    /// (the group coordinator connection: JoinGroup is held by the broker, and a broker answers
    /// a connection's requests in order, so fetches behind it would wait).
    pub async fn open_dedicated(&self, addr: &str) -> Result<Connection> {
        self.open(addr).await
    }

    async fn open(&self, addr: &str) -> Result<Connection> {
        let c = &self.inner.config;
        Connection::connect(
            addr,
            &c.client_id,
            c.connection_setup_timeout_ms,
            c.request_timeout_ms,
            c.max_response_bytes,
        )
        .await
    }

    /// The connection to broker `node_id`, opening it if needed.
    pub async fn connection(&self, node_id: i32) -> Result<Arc<Connection>> {
        if let Some(conn) = self.live_connection(node_id) {
            return Ok(conn);
        }
        let lock = self.connect_lock(node_id);
        let _guard = lock.lock().await;
        if let Some(conn) = self.live_connection(node_id) {
            return Ok(conn);
        }
        let addr = {
            let state = self.inner.state.lock().unwrap();
            state.brokers.get(&node_id).map(BrokerInfo::addr)
        };
        let addr = addr.ok_or_else(|| ClientError::Connect {
            addr: format!("node {node_id}"),
            reason: "not in the cluster metadata".to_string(),
        })?;
        let conn = Arc::new(self.open(&addr).await?);
        self.inner
            .state
            .lock()
            .unwrap()
            .connections
            .insert(node_id, conn.clone());
        Ok(conn)
    }

    fn live_connection(&self, node_id: i32) -> Option<Arc<Connection>> {
        let state = self.inner.state.lock().unwrap();
        state
            .connections
            .get(&node_id)
            .filter(|c| !c.is_closed())
            .cloned()
    }

    /// Any live connection, else a new one to a known broker, else to a bootstrap server.
    pub async fn any_connection(&self) -> Result<Arc<Connection>> {
        let (live, known) = {
            let state = self.inner.state.lock().unwrap();
            let live = state
                .connections
                .values()
                .chain(state.bootstrap.iter())
                .find(|c| !c.is_closed())
                .cloned();
            (live, state.brokers.keys().copied().collect::<Vec<_>>())
        };
        if let Some(conn) = live {
            return Ok(conn);
        }
        let mut last_error = None;
        for node_id in known {
            match self.connection(node_id).await {
                Ok(conn) => return Ok(conn),
                Err(e) => last_error = Some(e),
            }
        }
        match self.bootstrap_connection().await {
            Ok(conn) => Ok(conn),
            Err(e) => Err(last_error.map_or(e.clone(), |prev| match e {
                ClientError::Connect { addr, reason } => ClientError::Connect {
                    addr,
                    reason: format!("{reason}; also failed: {prev}"),
                },
                other => other,
            })),
        }
    }

    async fn bootstrap_connection(&self) -> Result<Arc<Connection>> {
        let lock = self.connect_lock(i32::MIN);
        let _guard = lock.lock().await;
        if let Some(conn) = self
            .inner
            .state
            .lock()
            .unwrap()
            .bootstrap
            .as_ref()
            .filter(|c| !c.is_closed())
        {
            return Ok(conn.clone());
        }
        let servers = &self.inner.config.bootstrap_servers;
        let start = self.inner.state.lock().unwrap().next_bootstrap;
        let mut failures = Vec::new();
        for i in 0..servers.len() {
            let addr = &servers[(start + i) % servers.len()];
            match self.open(addr).await {
                Ok(conn) => {
                    let conn = Arc::new(conn);
                    let mut state = self.inner.state.lock().unwrap();
                    state.bootstrap = Some(conn.clone());
                    state.next_bootstrap = (start + i + 1) % servers.len();
                    return Ok(conn);
                }
                Err(e) => failures.push(match e {
                    ClientError::Connect { reason, .. } => format!("{addr}: {reason}"),
                    other => format!("{addr}: {other}"),
                }),
            }
        }
        Err(ClientError::Connect {
            addr: servers.join(","),
            reason: format!("no bootstrap server reachable ({})", failures.join("; ")),
        })
    }
}

fn metadata_request(topics: Option<&[String]>, allow_auto_topic_creation: bool) -> MetadataRequest {
    MetadataRequest::default()
        .with_topics(topics.map(|ts| {
            ts.iter()
                .map(|t| {
                    MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(t.clone()))))
                })
                .collect()
        }))
        .with_allow_auto_topic_creation(allow_auto_topic_creation)
}
