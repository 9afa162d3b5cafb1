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

mod membership;
pub use membership::spawn_membership;

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

#[cfg(test)]
mod tests {
    use super::membership::{
        rejoin_for_snapshot, salvage_sync_group_error, snapshot_changed, with_partitions_seen,
        MetadataSnapshot, TopicLayout,
    };
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

    fn snapshot(topics: &[(&str, Option<(u128, i32)>)]) -> MetadataSnapshot {
        topics
            .iter()
            .map(|(name, layout)| {
                let layout = layout.map(|(id, partitions)| TopicLayout {
                    topic_id: uuid::Uuid::from_u128(id),
                    partitions,
                });
                (name.to_string(), layout)
            })
            .collect()
    }

    /// Kafka's ConsumerCoordinator rejoins when the leader's metadata snapshot stops matching
    /// the assignment's: a topic that appears, disappears, gains partitions or is created
    /// again (KIP-516: a new topic id under the same name) is a change; the same metadata, or
    /// fewer partitions under the same topic id (a stale broker: Kafka never shrinks a topic),
    /// is not.
    #[test]
    fn metadata_snapshot_changes_that_rebalance_the_group() {
        let assigned = snapshot(&[("a", Some((7, 2))), ("b", None)]);
        let same = assigned.clone();
        assert!(!snapshot_changed(&assigned, &same));
        let grown = snapshot(&[("a", Some((7, 4))), ("b", None)]);
        assert!(snapshot_changed(&assigned, &grown), "gained partitions");
        let appeared = snapshot(&[("a", Some((7, 2))), ("b", Some((8, 1)))]);
        assert!(snapshot_changed(&assigned, &appeared), "a topic appeared");
        let deleted = snapshot(&[("a", None), ("b", None)]);
        assert!(snapshot_changed(&assigned, &deleted), "a topic disappeared");
        let reborn = snapshot(&[("a", Some((9, 2))), ("b", None)]);
        assert!(
            snapshot_changed(&assigned, &reborn),
            "created again, same count"
        );
        let stale = snapshot(&[("a", Some((7, 1))), ("b", None)]);
        assert!(
            !snapshot_changed(&assigned, &stale),
            "fewer under the same id"
        );
        // Without topic ids (nil) a smaller count may be a smaller re-creation: a change.
        let no_ids = snapshot(&[("a", Some((0, 2))), ("b", None)]);
        let no_ids_smaller = snapshot(&[("a", Some((0, 1))), ("b", None)]);
        assert!(snapshot_changed(&no_ids, &no_ids_smaller));
        assert!(
            !snapshot_changed(&no_ids, &same),
            "an id learnt is not a change"
        );
    }

    /// One rejoin per changed snapshot: metadata flapping between the assignment's view and
    /// another answer rejoins once for that answer, not at every refresh, and once more per
    /// `metadata.max.age.ms` while it goes on (so the group converges when the brokers agree);
    /// a different change (or the same one after another) rejoins at once.
    #[test]
    fn flapping_metadata_rejoins_once_per_changed_snapshot() {
        let assigned = snapshot(&[("a", Some((7, 2)))]);
        let other = snapshot(&[("a", None)]);
        let grown = snapshot(&[("a", Some((7, 4)))]);
        let quiet = Duration::from_millis(300_000);
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut rf = None;
        assert!(!rejoin_for_snapshot(
            &mut rf,
            &assigned,
            &assigned,
            at(0),
            quiet
        ));
        assert!(rejoin_for_snapshot(
            &mut rf,
            &assigned,
            &other,
            at(0),
            quiet
        ));
        // The rejoin's assignment saw the old answer again; the flap goes on, one heartbeat
        // (3 s) after another, for almost `quiet`.
        for beat in 1..100 {
            let t = at(beat * 3_000);
            assert!(!rejoin_for_snapshot(
                &mut rf, &assigned, &assigned, t, quiet
            ));
            assert!(!rejoin_for_snapshot(&mut rf, &assigned, &other, t, quiet));
        }
        assert!(rejoin_for_snapshot(
            &mut rf,
            &assigned,
            &other,
            at(300_000),
            quiet
        ));
        assert!(!rejoin_for_snapshot(
            &mut rf,
            &assigned,
            &other,
            at(303_000),
            quiet
        ));
        assert!(rejoin_for_snapshot(
            &mut rf,
            &assigned,
            &grown,
            at(303_000),
            quiet
        ));
        assert!(rejoin_for_snapshot(
            &mut rf,
            &assigned,
            &other,
            at(303_000),
            quiet
        ));
        // A `metadata.max.age.ms` too large to add to an instant: quiet for good, no panic.
        let forever = Duration::from_millis(u64::MAX);
        assert!(!rejoin_for_snapshot(
            &mut rf,
            &assigned,
            &other,
            at(900_000),
            forever
        ));
    }

    /// A stale answer (fewer partitions under a topic id already seen with more) keeps the
    /// most seen, for the change check and for the leader's assignment alike; a new id starts
    /// afresh, and ids no longer subscribed are forgotten.
    #[test]
    fn partition_counts_never_go_back_under_one_topic_id() {
        let mut seen = BTreeMap::new();
        let grown = with_partitions_seen(snapshot(&[("a", Some((7, 4)))]), &mut seen);
        assert_eq!(grown, snapshot(&[("a", Some((7, 4)))]));
        let stale = with_partitions_seen(snapshot(&[("a", Some((7, 2)))]), &mut seen);
        assert_eq!(stale, grown, "a stale broker's count does not win");
        let reborn = with_partitions_seen(snapshot(&[("a", Some((9, 2)))]), &mut seen);
        assert_eq!(
            reborn,
            snapshot(&[("a", Some((9, 2)))]),
            "a new id starts afresh"
        );
        assert_eq!(seen.len(), 1, "the old id is forgotten");
        let no_ids = with_partitions_seen(snapshot(&[("b", Some((0, 3)))]), &mut seen);
        assert_eq!(no_ids, snapshot(&[("b", Some((0, 3)))]));
        assert!(seen.is_empty());
    }
}
