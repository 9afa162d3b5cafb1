//! Consumer-group membership through Kafka's classic group protocol, and committed offsets.
//!
//! Contract:
//! - [`GroupClient`] talks to the group's coordinator: FindCoordinator (retried while the
//!   coordinator is not available, as it is while `__consumer_offsets` is being created), one
//!   dedicated connection to it (a coordinator holds JoinGroup until the rebalance completes, and
//!   a broker answers a connection's requests in order, so fetches must not queue behind it),
//!   OffsetCommit and OffsetFetch. NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE and a lost
//!   connection forget the coordinator; the next call looks it up again.
//! - [`spawn_membership`] starts the member's task: JoinGroup (protocol type "consumer"; the
//!   KIP-394 round that answers MEMBER_ID_REQUIRED with our member id is repeated at once),
//!   the leader's client-side assignment ([`super::assignor`]), SyncGroup, then Heartbeat every
//!   `heartbeat.interval.ms`. REBALANCE_IN_PROGRESS rejoins with the same member id;
//!   ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID and FENCED_INSTANCE_ID reset the member (and the
//!   generation) and rejoin; coordinator errors rediscover the coordinator; heartbeats failing
//!   for a whole `session.timeout.ms` count as being out of the group and rejoin.
//! - Before it rejoins, the task moves the shared state to [`Phase::Joining`] under the lock
//!   the consumer takes to hand out records, so no record of the old assignment is handed out
//!   after that point; with auto commit it then commits what was handed out, with the old
//!   generation (Kafka accepts commits of the current generation while a rebalance is pending).
//! - On close the task sends LeaveGroup (dynamic members only: KIP-345 static members stay until
//!   their session times out, so a restart does not rebalance) and ends. Every loop is bounded:
//!   the task ends when the consumer closes or is dropped, JoinGroup rounds and coordinator
//!   lookups by named constants, every wait by a timeout.
//! - Time comes only from `tokio::time` (madsim virtualises it); there is no randomness.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    FindCoordinatorRequest, GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest,
    OffsetCommitRequest, OffsetFetchRequest, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::assignor::{
    assign, decode_assignment, decode_subscription, encode_assignment, encode_subscription,
    AssignmentStrategy, MemberSubscription, CONSUMER_PROTOCOL_TYPE,
};
use super::cluster::Cluster;
use super::connection::Connection;
use super::{backoff_ms, ClientError, Result, TopicPartition};

// Versions are capped at what librdkafka sends (FACTS.md): every Kafka-compatible broker is
// exercised with those, and librdkafka's mock cluster mis-parses newer ones it advertises
// (SyncGroup v4 reads the flexible assignments array as an i32 count: "Protocol read buffer
// underflow"). These still carry KIP-394 (JoinGroup v4+) and KIP-345 (v5 / v3) fields.
pub const FIND_COORDINATOR_VERSION_CAP: i16 = 2;
pub const JOIN_GROUP_VERSION_CAP: i16 = 5;
pub const SYNC_GROUP_VERSION_CAP: i16 = 3;
pub const HEARTBEAT_VERSION_CAP: i16 = 3;
pub const LEAVE_GROUP_VERSION_CAP: i16 = 1;
pub const OFFSET_COMMIT_VERSION_CAP: i16 = 9;
/// v8+ batches groups; one group per request is all we need.
pub const OFFSET_FETCH_VERSION_CAP: i16 = 7;
/// FindCoordinator attempts (with back-off) before a lookup gives up.
const COORDINATOR_ATTEMPTS: u32 = 10;
/// JoinGroup rounds answered with MEMBER_ID_REQUIRED before giving up (KIP-394 needs one).
const MEMBER_ID_ROUNDS: u32 = 3;
/// Attempts of one commit or offset fetch over coordinator changes.
const OFFSET_ATTEMPTS: u32 = 5;
/// Extra time granted to JoinGroup/SyncGroup beyond the rebalance timeout (the Java client's).
const JOIN_GRACE_MS: u64 = 5_000;
/// Longest LeaveGroup wait on close.
const LEAVE_TIMEOUT_MS: u64 = 5_000;

pub const INVALID_REQUEST: i16 = 42;
pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
pub const NOT_COORDINATOR: i16 = 16;
pub const ILLEGAL_GENERATION: i16 = 22;
pub const UNKNOWN_MEMBER_ID: i16 = 25;
pub const REBALANCE_IN_PROGRESS: i16 = 27;
pub const MEMBER_ID_REQUIRED: i16 = 79;
pub const FENCED_INSTANCE_ID: i16 = 82;

/// Group settings of a consumer, Kafka's names in snake case.
#[derive(Clone, Debug)]
pub struct GroupSettings {
    pub group_id: String,
    pub group_instance_id: Option<String>,
    pub session_timeout_ms: i32,
    pub heartbeat_interval_ms: u64,
    pub rebalance_timeout_ms: i32,
    pub strategies: Vec<AssignmentStrategy>,
    pub enable_auto_commit: bool,
}

/// Where the member is in the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Between a decision to (re)join and the SyncGroup answer: no records are handed out.
    Joining,
    /// Holding the assignment of `generation_id`.
    Stable,
}

/// State shared by the membership task and the consumer, behind one lock.
#[derive(Debug)]
pub struct GroupState {
    pub phase: Phase,
    pub generation_id: i32,
    pub member_id: String,
    pub assignment: Vec<TopicPartition>,
    /// Bumped with every new assignment.
    pub assignment_version: u64,
    /// Next offset after the last record handed out, per assigned partition.
    pub consumed: BTreeMap<TopicPartition, i64>,
    pub subscription: Vec<String>,
    /// A fatal error (e.g. INVALID_SESSION_TIMEOUT): the task stopped.
    pub error: Option<ClientError>,
    pub closing: bool,
    pub rejoin_requested: bool,
}

pub struct GroupShared {
    pub state: Mutex<GroupState>,
    /// Bumped on every change the consumer must see.
    changed: watch::Sender<u64>,
    /// Wakes the task (close, subscription change, commit fenced).
    wake: Notify,
}

impl GroupShared {
    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn notify_changed(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    /// Asks the task to rejoin (new subscription, or a commit saw a newer generation).
    pub fn request_rejoin(&self) {
        self.state.lock().unwrap().rejoin_requested = true;
        self.wake.notify_one();
    }

    /// Asks the task to leave the group and end.
    pub fn close(&self) {
        self.state.lock().unwrap().closing = true;
        self.wake.notify_one();
    }
}

/// The coordinator's node id and our dedicated connection to it.
type CoordinatorConnection = (i32, Arc<Connection>);

/// The coordinator side of a group: lookup, the dedicated connection, commits and fetches.
#[derive(Clone)]
pub struct GroupClient {
    cluster: Cluster,
    group_id: String,
    coordinator: Arc<Mutex<Option<CoordinatorConnection>>>,
    lookup_lock: Arc<tokio::sync::Mutex<()>>,
}

impl GroupClient {
    pub fn new(cluster: Cluster, group_id: &str) -> GroupClient {
        GroupClient {
            cluster,
            group_id: group_id.to_string(),
            coordinator: Arc::new(Mutex::new(None)),
            lookup_lock: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    /// The coordinator's node id, if known.
    pub fn coordinator_id(&self) -> Option<i32> {
        self.coordinator.lock().unwrap().as_ref().map(|(id, _)| *id)
    }

    /// Forgets the coordinator (NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE, lost connection).
    pub fn forget_coordinator(&self) {
        *self.coordinator.lock().unwrap() = None;
    }

    /// Handles the error of a coordinator request: forgets the coordinator when the error
    /// says it moved or is gone. Returns whether retrying may help.
    fn coordinator_error(&self, e: &ClientError) -> bool {
        match e.code() {
            Some(NOT_COORDINATOR | COORDINATOR_NOT_AVAILABLE) => {
                self.forget_coordinator();
                true
            }
            Some(COORDINATOR_LOAD_IN_PROGRESS) => true,
            Some(_) => false,
            None => {
                let transport = e.is_retriable();
                if transport {
                    self.forget_coordinator();
                }
                transport
            }
        }
    }

    /// The dedicated connection to the coordinator, looking it up if needed.
    pub async fn connection(&self) -> Result<Arc<Connection>> {
        if let Some(conn) = self.live() {
            return Ok(conn);
        }
        let _guard = self.lookup_lock.lock().await;
        if let Some(conn) = self.live() {
            return Ok(conn);
        }
        let (node_id, addr) = find_coordinator(&self.cluster, &self.group_id).await?;
        let conn = Arc::new(self.cluster.open_dedicated(&addr).await?);
        *self.coordinator.lock().unwrap() = Some((node_id, conn.clone()));
        Ok(conn)
    }

    fn live(&self) -> Option<Arc<Connection>> {
        self.coordinator
            .lock()
            .unwrap()
            .as_ref()
            .filter(|(_, c)| !c.is_closed())
            .map(|(_, c)| c.clone())
    }

    /// OffsetCommit of `offsets` (next offset to read, per partition) under `generation_id`
    /// and `member_id` (-1 and "" outside the group protocol, as admin tools and assign()-mode
    /// consumers commit). Retries coordinator moves; a fencing error is returned as is.
    pub async fn commit(
        &self,
        offsets: &BTreeMap<TopicPartition, i64>,
        generation_id: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut last = None;
        for attempt in 0..OFFSET_ATTEMPTS {
            if attempt > 0 {
                self.pause(attempt).await;
            }
            let result = async {
                let conn = self.connection().await?;
                let request = commit_request(
                    &conn,
                    &self.group_id,
                    offsets,
                    generation_id,
                    member_id,
                    group_instance_id,
                )?;
                let response = conn.send(&request, OFFSET_COMMIT_VERSION_CAP).await?;
                commit_result(&response)
            }
            .await;
            match result {
                Ok(()) => return Ok(()),
                Err(e) if self.coordinator_error(&e) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(ClientError::Closed))
    }

    /// Starts an OffsetCommit on the coordinator connection now (so commits started one after
    /// another reach the coordinator in that order) and returns a task with its outcome.
    pub async fn commit_async(
        &self,
        offsets: BTreeMap<TopicPartition, i64>,
        generation_id: i32,
        member_id: String,
        group_instance_id: Option<String>,
    ) -> tokio::task::JoinHandle<Result<()>> {
        let client = self.clone();
        let started = async {
            let conn = self.connection().await?;
            let request = commit_request(
                &conn,
                &self.group_id,
                &offsets,
                generation_id,
                &member_id,
                group_instance_id.as_deref(),
            )?;
            conn.start(&request, OFFSET_COMMIT_VERSION_CAP).await
        }
        .await;
        tokio::spawn(async move {
            if offsets.is_empty() {
                return Ok(());
            }
            let first = match started {
                Ok(pending) => pending.wait().await.and_then(|r| commit_result(&r)),
                Err(e) => Err(e),
            };
            match first {
                Err(e) if client.coordinator_error(&e) => {
                    client
                        .commit(
                            &offsets,
                            generation_id,
                            &member_id,
                            group_instance_id.as_deref(),
                        )
                        .await
                }
                other => other,
            }
        })
    }

    /// OffsetFetch: the committed offset of each partition (None when the group has none).
    pub async fn fetch_committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Option<i64>>> {
        let mut last = None;
        for attempt in 0..OFFSET_ATTEMPTS {
            if attempt > 0 {
                self.pause(attempt).await;
            }
            let result = async {
                let conn = self.connection().await?;
                offset_fetch(&conn, &self.group_id, Some(partitions)).await
            }
            .await;
            match result {
                Ok(map) => return Ok(map),
                Err(e) if self.coordinator_error(&e) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(ClientError::Closed))
    }

    async fn pause(&self, attempt: u32) {
        let ms = backoff_ms(self.cluster.config(), attempt - 1);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// FindCoordinator (key type 0, group) with retries: the coordinator's node id and address.
pub async fn find_coordinator(cluster: &Cluster, group_id: &str) -> Result<(i32, String)> {
    let request = FindCoordinatorRequest::default()
        .with_key(StrBytes::from_string(group_id.to_string()))
        .with_key_type(0);
    let mut last = None;
    for attempt in 0..COORDINATOR_ATTEMPTS {
        if attempt > 0 {
            let ms = backoff_ms(cluster.config(), attempt - 1);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let response = match cluster.any_connection().await {
            Ok(conn) => conn.send(&request, FIND_COORDINATOR_VERSION_CAP).await,
            Err(e) => Err(e),
        };
        match response {
            Ok(r) => match ClientError::from_code(r.error_code, r.error_message.as_deref()) {
                None => return Ok((r.node_id.0, format!("{}:{}", r.host, r.port))),
                Some(e) if e.is_retriable() => last = Some(e),
                Some(e) => return Err(e),
            },
            Err(e) if e.is_retriable() => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or(ClientError::Closed))
}

fn commit_request(
    conn: &Connection,
    group_id: &str,
    offsets: &BTreeMap<TopicPartition, i64>,
    generation_id: i32,
    member_id: &str,
    group_instance_id: Option<&str>,
) -> Result<OffsetCommitRequest> {
    let version = conn.version_for::<OffsetCommitRequest>(OFFSET_COMMIT_VERSION_CAP)?;
    let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
    for (tp, offset) in offsets {
        let partition = OffsetCommitRequestPartition::default()
            .with_partition_index(tp.partition)
            .with_committed_offset(*offset);
        match topics.last_mut() {
            Some(t) if t.name.0.as_str() == tp.topic => t.partitions.push(partition),
            _ => topics.push(
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_string(tp.topic.clone())))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    let instance = if version >= 7 {
        group_instance_id.map(|i| StrBytes::from_string(i.to_string()))
    } else {
        None
    };
    Ok(OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group_id.to_string())))
        .with_generation_id_or_member_epoch(generation_id)
        .with_member_id(StrBytes::from_string(member_id.to_string()))
        .with_group_instance_id(instance)
        .with_topics(topics))
}

fn commit_result(response: &kafka_protocol::messages::OffsetCommitResponse) -> Result<()> {
    for topic in &response.topics {
        for p in &topic.partitions {
            if let Some(e) = ClientError::from_code(p.error_code, None) {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// OffsetFetch on `conn` for `partitions` (None: every partition the group has offsets for).
pub async fn offset_fetch(
    conn: &Connection,
    group_id: &str,
    partitions: Option<&[TopicPartition]>,
) -> Result<BTreeMap<TopicPartition, Option<i64>>> {
    let topics = partitions.map(|parts| {
        let mut topics: Vec<OffsetFetchRequestTopic> = Vec::new();
        for tp in parts {
            match topics.last_mut() {
                Some(t) if t.name.0.as_str() == tp.topic => t.partition_indexes.push(tp.partition),
                _ => topics.push(
                    OffsetFetchRequestTopic::default()
                        .with_name(TopicName(StrBytes::from_string(tp.topic.clone())))
                        .with_partition_indexes(vec![tp.partition]),
                ),
            }
        }
        topics
    });
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group_id.to_string())))
        .with_topics(topics);
    let response = conn.send(&request, OFFSET_FETCH_VERSION_CAP).await?;
    if let Some(e) = ClientError::from_code(response.error_code, None) {
        return Err(e);
    }
    let mut out = BTreeMap::new();
    for topic in &response.topics {
        for p in &topic.partitions {
            if let Some(e) = ClientError::from_code(p.error_code, None) {
                return Err(e);
            }
            let tp = TopicPartition::new(topic.name.0.as_str(), p.partition_index);
            out.insert(tp, (p.committed_offset >= 0).then_some(p.committed_offset));
        }
    }
    Ok(out)
}

/// A SyncGroup error response whose assignment is null (librdkafka's mock cluster writes one;
/// Kafka writes empty bytes) does not fit the schema's non-nullable `assignment`. Its error
/// code still says what to do (REBALANCE_IN_PROGRESS: rejoin; a fatal code: stop), so it is
/// read from its fixed place: the first field from v0, after `throttle_time_ms` from v1. A
/// body that does not carry a non-zero error code there stays undecodable.
fn salvage_sync_group_error(body: &bytes::Bytes, version: i16) -> Option<SyncGroupResponse> {
    let at = if version >= 1 { 4 } else { 0 };
    let field = body.get(at..at + 2)?;
    let error_code = i16::from_be_bytes([field[0], field[1]]);
    (error_code != 0).then(|| SyncGroupResponse::default().with_error_code(error_code))
}

/// Creates the shared state and starts the membership task.
pub fn spawn_membership(
    client: GroupClient,
    cluster: Cluster,
    settings: GroupSettings,
    topics: Vec<String>,
) -> (Arc<GroupShared>, tokio::task::JoinHandle<()>) {
    let (changed, _) = watch::channel(0u64);
    let shared = Arc::new(GroupShared {
        state: Mutex::new(GroupState {
            phase: Phase::Joining,
            generation_id: -1,
            member_id: String::new(),
            assignment: Vec::new(),
            assignment_version: 0,
            consumed: BTreeMap::new(),
            subscription: topics,
            error: None,
            closing: false,
            rejoin_requested: false,
        }),
        changed,
        wake: Notify::new(),
    });
    let member = Member {
        client,
        cluster,
        settings,
        shared: shared.clone(),
        assigned_metadata: Mutex::new(None),
    };
    let handle = tokio::spawn(member.run());
    (shared, handle)
}

/// Why a join attempt failed.
enum JoinFailure {
    /// Try again after a back-off.
    Retry(ClientError),
    /// Stop: the configuration or the group forbids membership.
    Fatal(ClientError),
}

struct Member {
    client: GroupClient,
    cluster: Cluster,
    settings: GroupSettings,
    shared: Arc<GroupShared>,
    /// As the group's leader: the partition count (0: missing) of every topic some member
    /// subscribes to, as the assignment of the current generation saw it. None when not the
    /// leader (only the leader assigns, so only its view of the metadata matters).
    assigned_metadata: Mutex<Option<BTreeMap<String, i32>>>,
}

/// Partition counts of `topics` in `cluster`'s metadata cache; 0 for a topic it does not know.
fn partition_counts(cluster: &Cluster, topics: &[String]) -> BTreeMap<String, i32> {
    topics
        .iter()
        .map(|t| {
            (
                t.clone(),
                cluster.topic(t).map_or(0, |m| m.partition_count()),
            )
        })
        .collect()
}

impl Member {
    async fn run(self) {
        let mut need_join = true;
        let mut failures = 0u32;
        let heartbeat_every = Duration::from_millis(self.settings.heartbeat_interval_ms.max(1));
        let session = Duration::from_millis(self.settings.session_timeout_ms.max(1) as u64);
        let mut last_heartbeat_ok = Instant::now();
        // Ends when the consumer closes (or drops) the membership; each turn is bounded by
        // a timeout or a back-off.
        loop {
            let (closing, rejoin) = {
                let mut state = self.shared.state.lock().unwrap();
                (state.closing, std::mem::take(&mut state.rejoin_requested))
            };
            if closing {
                self.leave().await;
                return;
            }
            need_join |= rejoin;
            if need_join {
                self.prepare_rejoin().await;
                match self.join_and_sync().await {
                    Ok(()) => {
                        need_join = false;
                        failures = 0;
                        last_heartbeat_ok = Instant::now();
                    }
                    Err(JoinFailure::Retry(e)) => {
                        tracing::debug!("group {}: join failed: {e}", self.settings.group_id);
                        self.wait(Duration::from_millis(backoff_ms(
                            self.cluster.config(),
                            failures,
                        )))
                        .await;
                        failures = failures.saturating_add(1);
                    }
                    Err(JoinFailure::Fatal(e)) => {
                        tracing::warn!("group {}: {e}", self.settings.group_id);
                        self.shared.state.lock().unwrap().error = Some(e);
                        self.shared.notify_changed();
                        return;
                    }
                }
                continue;
            }
            self.wait(heartbeat_every).await;
            {
                let state = self.shared.state.lock().unwrap();
                if state.closing || state.rejoin_requested {
                    continue;
                }
            }
            if self.assigned_metadata_changed(heartbeat_every).await {
                need_join = true;
                continue;
            }
            match self.heartbeat().await {
                Ok(()) => last_heartbeat_ok = Instant::now(),
                Err(e) => {
                    tracing::debug!("group {}: heartbeat: {e}", self.settings.group_id);
                    match e.code() {
                        Some(REBALANCE_IN_PROGRESS) => need_join = true,
                        Some(ILLEGAL_GENERATION | UNKNOWN_MEMBER_ID | FENCED_INSTANCE_ID) => {
                            self.reset_member(e.code() != Some(ILLEGAL_GENERATION));
                            need_join = true;
                        }
                        _ => {
                            self.client.coordinator_error(&e);
                            if last_heartbeat_ok.elapsed() >= session {
                                // The coordinator has dropped us by now.
                                need_join = true;
                            }
                        }
                    }
                }
            }
        }
    }

    /// As the leader: whether a topic some member subscribes to was created, deleted or gained
    /// partitions since the current assignment was made, so the group must rebalance (as
    /// Kafka's ConsumerCoordinator does when its metadata snapshot stops matching the
    /// assignment's). Missing topics are looked up at every heartbeat (a topic the group waits
    /// for, e.g. re-created after data loss, is picked up promptly); otherwise the cache is
    /// refreshed once it is older than `metadata.max.age.ms`. The lookup takes at most
    /// `bound`, so heartbeats keep their pace.
    async fn assigned_metadata_changed(&self, bound: Duration) -> bool {
        let Some(assigned) = self.assigned_metadata.lock().unwrap().clone() else {
            return false;
        };
        let topics: Vec<String> = assigned.keys().cloned().collect();
        if assigned.values().any(|&count| count == 0) || self.cluster.metadata_is_stale() {
            match tokio::time::timeout(bound, self.cluster.refresh_metadata(&topics)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(
                    "group {}: metadata of the subscribed topics: {e}",
                    self.settings.group_id
                ),
                Err(_) => {}
            }
        }
        let now = partition_counts(&self.cluster, &topics);
        if now != assigned {
            tracing::debug!(
                "group {}: subscribed topics changed ({assigned:?} -> {now:?}): rejoining",
                self.settings.group_id
            );
            return true;
        }
        false
    }

    /// Sleeps up to `d`, waking early when asked (close, rejoin). A stale wake-up only
    /// brings the next heartbeat forward.
    async fn wait(&self, d: Duration) {
        tokio::select! {
            biased;
            _ = self.shared.wake.notified() => {}
            _ = tokio::time::sleep(d) => {}
        }
    }

    fn reset_member(&self, forget_member_id: bool) {
        let mut state = self.shared.state.lock().unwrap();
        state.generation_id = -1;
        if forget_member_id {
            state.member_id.clear();
        }
    }

    /// Stops handing out records of the current assignment, then commits what was handed out
    /// (auto commit) under the generation that owned it.
    async fn prepare_rejoin(&self) {
        let (commit, generation_id, member_id) = {
            let mut state = self.shared.state.lock().unwrap();
            if state.phase == Phase::Joining {
                return;
            }
            state.phase = Phase::Joining;
            (
                std::mem::take(&mut state.consumed),
                state.generation_id,
                state.member_id.clone(),
            )
        };
        self.shared.notify_changed();
        if self.settings.enable_auto_commit && generation_id >= 0 && !commit.is_empty() {
            if let Err(e) = self
                .client
                .commit(
                    &commit,
                    generation_id,
                    &member_id,
                    self.settings.group_instance_id.as_deref(),
                )
                .await
            {
                tracing::debug!(
                    "group {}: commit before rejoin: {e}",
                    self.settings.group_id
                );
            }
        }
    }

    async fn join_and_sync(&self) -> std::result::Result<(), JoinFailure> {
        // Only a Kafka error that no retry can cure (INVALID_SESSION_TIMEOUT,
        // INCONSISTENT_GROUP_PROTOCOL, GROUP_AUTHORIZATION_FAILED, ...) stops the member; an
        // undecodable response has closed its connection, and the next round starts afresh.
        let retry = |e: ClientError| {
            if self.client.coordinator_error(&e) || e.is_retriable() {
                return JoinFailure::Retry(e);
            }
            match e.code() {
                Some(
                    ILLEGAL_GENERATION
                    | UNKNOWN_MEMBER_ID
                    | REBALANCE_IN_PROGRESS
                    | FENCED_INSTANCE_ID
                    | MEMBER_ID_REQUIRED,
                ) => JoinFailure::Retry(e),
                Some(_) => JoinFailure::Fatal(e),
                None if matches!(e, ClientError::Protocol(_)) => {
                    self.client.forget_coordinator();
                    JoinFailure::Retry(e)
                }
                None => JoinFailure::Fatal(e),
            }
        };
        *self.assigned_metadata.lock().unwrap() = None;
        let conn = self.client.connection().await.map_err(retry)?;
        let hold =
            Duration::from_millis(self.settings.rebalance_timeout_ms.max(0) as u64 + JOIN_GRACE_MS);
        let (topics, owned) = {
            let state = self.shared.state.lock().unwrap();
            (state.subscription.clone(), state.assignment.clone())
        };
        let subscription = encode_subscription(&topics, &owned).map_err(JoinFailure::Fatal)?;
        let version = conn
            .version_for::<JoinGroupRequest>(JOIN_GROUP_VERSION_CAP)
            .map_err(JoinFailure::Fatal)?;
        let instance = self
            .settings
            .group_instance_id
            .as_ref()
            .map(|i| StrBytes::from_string(i.clone()));
        if instance.is_some() && version < 5 {
            return Err(JoinFailure::Fatal(ClientError::Unsupported(format!(
                "group.instance.id needs JoinGroup v5, {} offers v{version}",
                conn.addr()
            ))));
        }
        let mut response = None;
        for _ in 0..MEMBER_ID_ROUNDS {
            let member_id = self.shared.state.lock().unwrap().member_id.clone();
            let request = JoinGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(
                    self.settings.group_id.clone(),
                )))
                .with_session_timeout_ms(self.settings.session_timeout_ms)
                .with_rebalance_timeout_ms(self.settings.rebalance_timeout_ms)
                .with_member_id(StrBytes::from_string(member_id))
                .with_group_instance_id(instance.clone())
                .with_protocol_type(StrBytes::from_static_str(CONSUMER_PROTOCOL_TYPE))
                .with_protocols(
                    self.settings
                        .strategies
                        .iter()
                        .map(|s| {
                            JoinGroupRequestProtocol::default()
                                .with_name(StrBytes::from_static_str(s.protocol_name()))
                                .with_metadata(subscription.clone())
                        })
                        .collect(),
                );
            let r = conn
                .start(&request, JOIN_GROUP_VERSION_CAP)
                .await
                .map_err(retry)?
                .with_timeout(hold)
                .wait()
                .await
                .map_err(retry)?;
            match r.error_code {
                0 => {
                    response = Some(r);
                    break;
                }
                MEMBER_ID_REQUIRED => {
                    // KIP-394: the coordinator named our member id; join again with it.
                    self.shared.state.lock().unwrap().member_id = r.member_id.to_string();
                }
                code => {
                    if matches!(code, UNKNOWN_MEMBER_ID | FENCED_INSTANCE_ID) {
                        self.reset_member(true);
                    }
                    let e = ClientError::from_code(code, None).expect("non-zero");
                    return Err(retry(e));
                }
            }
        }
        let Some(joined) = response else {
            return Err(JoinFailure::Retry(ClientError::Protocol(
                "JoinGroup kept answering MEMBER_ID_REQUIRED".to_string(),
            )));
        };
        let member_id = joined.member_id.to_string();
        let generation_id = joined.generation_id;
        {
            let mut state = self.shared.state.lock().unwrap();
            state.member_id = member_id.clone();
        }
        let protocol = joined.protocol_name.as_ref().map(|p| p.to_string());
        let assignments = if joined.leader.as_str() == member_id && !joined.skip_assignment {
            self.leader_assign(&joined, protocol.as_deref())
                .await
                .map_err(JoinFailure::Retry)?
        } else {
            Vec::new()
        };
        let sync_version = conn
            .version_for::<SyncGroupRequest>(SYNC_GROUP_VERSION_CAP)
            .map_err(JoinFailure::Fatal)?;
        let mut sync = SyncGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(
                self.settings.group_id.clone(),
            )))
            .with_generation_id(generation_id)
            .with_member_id(StrBytes::from_string(member_id.clone()))
            .with_group_instance_id(instance)
            .with_assignments(assignments);
        if sync_version >= 5 {
            sync = sync
                .with_protocol_type(Some(StrBytes::from_static_str(CONSUMER_PROTOCOL_TYPE)))
                .with_protocol_name(protocol.map(StrBytes::from_string));
        }
        let synced = conn
            .start(&sync, SYNC_GROUP_VERSION_CAP)
            .await
            .map_err(retry)?
            .with_timeout(hold)
            .wait_or(salvage_sync_group_error)
            .await
            .map_err(retry)?;
        if let Some(e) = ClientError::from_code(synced.error_code, None) {
            if matches!(e.code(), Some(UNKNOWN_MEMBER_ID | FENCED_INSTANCE_ID)) {
                self.reset_member(true);
            }
            if e.code() == Some(INVALID_REQUEST) {
                // librdkafka's mock answers a SyncGroup that no longer fits its view of the
                // group (e.g. a leader's assignment naming members that have left) with
                // INVALID_REQUEST; librdkafka rejoins on it, and so do we.
                return Err(JoinFailure::Retry(e));
            }
            return Err(retry(e));
        }
        let assignment = decode_assignment(&synced.assignment).map_err(JoinFailure::Retry)?;
        {
            let mut state = self.shared.state.lock().unwrap();
            state.phase = Phase::Stable;
            state.generation_id = generation_id;
            state.member_id = member_id;
            state.assignment = assignment;
            state.assignment_version += 1;
            state.consumed.clear();
        }
        self.shared.notify_changed();
        Ok(())
    }

    /// The leader's part: decode every member's subscription, look up partition counts, run
    /// the assignor the coordinator chose.
    async fn leader_assign(
        &self,
        joined: &kafka_protocol::messages::JoinGroupResponse,
        protocol: Option<&str>,
    ) -> Result<Vec<SyncGroupRequestAssignment>> {
        let strategy = protocol
            .and_then(AssignmentStrategy::from_protocol_name)
            .or_else(|| self.settings.strategies.first().copied())
            .unwrap_or(AssignmentStrategy::Range);
        let mut members = Vec::new();
        for m in &joined.members {
            members.push(MemberSubscription {
                member_id: m.member_id.to_string(),
                group_instance_id: m.group_instance_id.as_ref().map(|i| i.to_string()),
                topics: decode_subscription(&m.metadata)?,
            });
        }
        let mut topics: Vec<String> = members.iter().flat_map(|m| m.topics.clone()).collect();
        topics.sort();
        topics.dedup();
        self.cluster.refresh_metadata(&topics).await?;
        let counts = partition_counts(&self.cluster, &topics);
        *self.assigned_metadata.lock().unwrap() = Some(counts.clone());
        let counts: BTreeMap<String, i32> = counts.into_iter().filter(|(_, n)| *n > 0).collect();
        let plan = assign(strategy, &members, &counts);
        plan.into_iter()
            .map(|(member_id, partitions)| {
                Ok(SyncGroupRequestAssignment::default()
                    .with_member_id(StrBytes::from_string(member_id))
                    .with_assignment(encode_assignment(&partitions)?))
            })
            .collect()
    }

    async fn heartbeat(&self) -> Result<()> {
        let (generation_id, member_id) = {
            let state = self.shared.state.lock().unwrap();
            (state.generation_id, state.member_id.clone())
        };
        let conn = self.client.connection().await?;
        let version = conn.version_for::<HeartbeatRequest>(HEARTBEAT_VERSION_CAP)?;
        let instance = if version >= 3 {
            self.settings
                .group_instance_id
                .as_ref()
                .map(|i| StrBytes::from_string(i.clone()))
        } else {
            None
        };
        let request = HeartbeatRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(
                self.settings.group_id.clone(),
            )))
            .with_generation_id(generation_id)
            .with_member_id(StrBytes::from_string(member_id))
            .with_group_instance_id(instance);
        let response = conn.send(&request, HEARTBEAT_VERSION_CAP).await?;
        match ClientError::from_code(response.error_code, None) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// LeaveGroup for a dynamic member that has a member id; best effort, bounded.
    async fn leave(&self) {
        let member_id = {
            let mut state = self.shared.state.lock().unwrap();
            state.phase = Phase::Joining;
            state.member_id.clone()
        };
        self.shared.notify_changed();
        if member_id.is_empty() || self.settings.group_instance_id.is_some() {
            return;
        }
        let leave = async {
            let conn = self.client.connection().await?;
            let version = conn.version_for::<LeaveGroupRequest>(LEAVE_GROUP_VERSION_CAP)?;
            let mut request = LeaveGroupRequest::default().with_group_id(GroupId(
                StrBytes::from_string(self.settings.group_id.clone()),
            ));
            if version >= 3 {
                request = request.with_members(vec![MemberIdentity::default()
                    .with_member_id(StrBytes::from_string(member_id.clone()))]);
            } else {
                request = request.with_member_id(StrBytes::from_string(member_id.clone()));
            }
            let response = conn.send(&request, LEAVE_GROUP_VERSION_CAP).await?;
            match ClientError::from_code(response.error_code, None) {
                Some(e) => Err(e),
                None => Ok(()),
            }
        };
        match tokio::time::timeout(Duration::from_millis(LEAVE_TIMEOUT_MS), leave).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!("group {}: LeaveGroup: {e}", self.settings.group_id),
            Err(_) => tracing::debug!("group {}: LeaveGroup timed out", self.settings.group_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};
    use kafka_protocol::protocol::Decodable;

    fn sync_group_body(version: i16, error_code: i16) -> bytes::Bytes {
        let mut body = BytesMut::new();
        if version >= 1 {
            body.put_i32(0); // throttle_time_ms
        }
        body.put_i16(error_code);
        body.put_i32(-1); // assignment: null (the schema says non-nullable bytes)
        body.freeze()
    }

    /// SyncGroup (v0-v3 layout): an error response whose assignment is null, as librdkafka's
    /// mock cluster writes it, still yields its error code; without an error code it stays a
    /// decode error.
    #[test]
    fn sync_group_error_with_null_assignment_keeps_its_error_code() {
        for version in [0, 1, 3] {
            let body = sync_group_body(version, REBALANCE_IN_PROGRESS);
            assert!(
                SyncGroupResponse::decode(&mut body.clone(), version).is_err(),
                "v{version}: the schema rejects a null assignment"
            );
            let salvaged = salvage_sync_group_error(&body, version).expect("salvaged");
            assert_eq!(salvaged.error_code, REBALANCE_IN_PROGRESS, "v{version}");
            assert!(salvage_sync_group_error(&sync_group_body(version, 0), version).is_none());
        }
        assert!(salvage_sync_group_error(&bytes::Bytes::from_static(&[0]), 0).is_none());
    }
}
