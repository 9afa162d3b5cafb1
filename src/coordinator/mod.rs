//! The group coordinator: Kafka's classic consumer-group protocol as a sans-IO state machine.
//!
//! Contract (see docs/coordinator.md):
//! - The node owns one [`GroupCoordinator`]. When it becomes leader of a `__consumer_offsets`
//!   partition it reads the partition from the start and calls [`GroupCoordinator::load`] with
//!   its records; when it stops leading it calls [`GroupCoordinator::unload`]. Groups are
//!   mapped to partitions by [`partition_for_group`]; requests for a group whose partition is
//!   not loaded get NOT_COORDINATOR.
//! - Each decoded group request goes in as [`Input::Request`]; [`Input::Timer`] is given when
//!   [`GroupCoordinator::next_deadline`] has come.
//! - Effects: [`Effect::Respond`] is a response to encode at the request's version;
//!   [`Effect::Persist`] asks the node to append records to a `__consumer_offsets` partition
//!   and to report back with [`Input::PersistCompleted`] once they are durable by that
//!   partition's policy (or failed). Responses that depend on a write (OffsetCommit, the
//!   SyncGroup that completes a rebalance, OffsetDelete, DeleteGroups) are emitted only after
//!   that completion; committed offsets become visible to OffsetFetch only then.
//! - Persist completions must be reported in the order the effects were emitted for one
//!   partition (they are appends to one log).
//!
//! Nothing here reads a clock, does I/O or uses global randomness: member ids come from a
//! seeded generator owned by the coordinator.

mod group;
pub mod records;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, HeartbeatRequest, JoinGroupRequest,
    LeaveGroupRequest, ListGroupsRequest, OffsetCommitRequest, OffsetDeleteRequest,
    OffsetFetchRequest, ResponseKind, SyncGroupRequest,
};

use crate::Millis;
use group::Group;
pub use records::{PersistedRecord, Record};

/// Kafka error codes the coordinator answers with (Kafka protocol guide, "Error Codes").
pub mod error_code {
    pub const NONE: i16 = 0;
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
    pub const OFFSET_METADATA_TOO_LARGE: i16 = 12;
    pub const REQUEST_TIMED_OUT: i16 = 7;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const NOT_COORDINATOR: i16 = 16;
    pub const ILLEGAL_GENERATION: i16 = 22;
    pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
    pub const INVALID_GROUP_ID: i16 = 24;
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    pub const INVALID_SESSION_TIMEOUT: i16 = 26;
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    pub const INVALID_COMMIT_OFFSET_SIZE: i16 = 28;
    pub const NON_EMPTY_GROUP: i16 = 68;
    pub const GROUP_ID_NOT_FOUND: i16 = 69;
    pub const MEMBER_ID_REQUIRED: i16 = 79;
    pub const FENCED_INSTANCE_ID: i16 = 82;
    pub const GROUP_MAX_SIZE_REACHED: i16 = 81;
    pub const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;
    pub const UNKNOWN_TOPIC_ID: i16 = 100;
}

/// Configuration, with Kafka's names and defaults.
#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    /// offsets.topic.num.partitions
    pub offsets_topic_num_partitions: i32,
    /// group.min.session.timeout.ms
    pub group_min_session_timeout_ms: i32,
    /// group.max.session.timeout.ms
    pub group_max_session_timeout_ms: i32,
    /// group.initial.rebalance.delay.ms: an empty group waits this long (at most its
    /// rebalance timeout) for more members before completing its first join phase.
    pub group_initial_rebalance_delay_ms: i64,
    /// group.max.size (Kafka's default is unbounded; every queue here needs a bound).
    pub group_max_size: usize,
    /// offsets.retention.minutes, in ms.
    pub offsets_retention_ms: i64,
    /// offsets.retention.check.interval.ms
    pub offsets_retention_check_interval_ms: i64,
    /// offset.metadata.max.bytes
    pub offset_metadata_max_bytes: usize,
    /// Seed of the member-id generator (the node derives it from its own seed).
    pub seed: u64,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            offsets_topic_num_partitions: 50,
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            group_initial_rebalance_delay_ms: 3_000,
            group_max_size: 1_000,
            offsets_retention_ms: 7 * 24 * 60 * 60 * 1000,
            offsets_retention_check_interval_ms: 600_000,
            offset_metadata_max_bytes: 4096,
            seed: 0,
        }
    }
}

/// Identifies the request a response answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestToken {
    pub connection_id: u64,
    pub correlation_id: i32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestContext {
    pub token: RequestToken,
    pub api_version: i16,
    pub client_id: String,
    pub client_host: String,
}

/// The decoded group requests the coordinator serves.
#[derive(Clone, Debug, PartialEq)]
pub enum GroupRequest {
    JoinGroup(JoinGroupRequest),
    SyncGroup(SyncGroupRequest),
    Heartbeat(HeartbeatRequest),
    LeaveGroup(LeaveGroupRequest),
    OffsetCommit(OffsetCommitRequest),
    OffsetFetch(OffsetFetchRequest),
    DescribeGroups(DescribeGroupsRequest),
    ListGroups(ListGroupsRequest),
    DeleteGroups(DeleteGroupsRequest),
    OffsetDelete(OffsetDeleteRequest),
}

/// Why a persist failed, as the node saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PersistError {
    /// This node no longer leads the partition (Kafka's NOT_LEADER_OR_FOLLOWER).
    NotLeader,
    /// The partition is gone or has too few in-sync replicas (UNKNOWN_TOPIC_OR_PARTITION,
    /// NOT_ENOUGH_REPLICAS).
    Unavailable,
    /// The write was not durable within offsets.commit.timeout.ms (REQUEST_TIMED_OUT).
    TimedOut,
    /// The batch was larger than the partition accepts (MESSAGE_TOO_LARGE,
    /// RECORD_LIST_TOO_LARGE).
    TooLarge,
    /// The log could not be written (KAFKA_STORAGE_ERROR: a failed write or fsync took the
    /// partition offline).
    Storage,
}

impl PersistError {
    /// The code for a failed write of offsets (OffsetCommit), as Kafka's
    /// GroupMetadataManager.storeOffsets maps append errors: UNKNOWN_TOPIC_OR_PARTITION and
    /// NOT_ENOUGH_REPLICAS -> COORDINATOR_NOT_AVAILABLE (the client retries),
    /// NOT_LEADER_OR_FOLLOWER and KAFKA_STORAGE_ERROR -> NOT_COORDINATOR (the client looks the
    /// coordinator up again), too large -> INVALID_COMMIT_OFFSET_SIZE, and REQUEST_TIMED_OUT
    /// passed through. Kafka writes the tombstones of OffsetDelete and DeleteGroups without
    /// waiting; Karst answers those once durable and uses the same codes for a failure.
    fn offsets_error_code(self) -> i16 {
        match self {
            PersistError::NotLeader | PersistError::Storage => error_code::NOT_COORDINATOR,
            PersistError::Unavailable => error_code::COORDINATOR_NOT_AVAILABLE,
            PersistError::TimedOut => error_code::REQUEST_TIMED_OUT,
            PersistError::TooLarge => error_code::INVALID_COMMIT_OFFSET_SIZE,
        }
    }

    /// The code for a failed write of group metadata (the leader's SyncGroup, a static
    /// member's rejoin), as Kafka's GroupMetadataManager.storeGroup maps append errors: as
    /// for offsets, except REQUEST_TIMED_OUT -> REBALANCE_IN_PROGRESS (the member rejoins) and
    /// too large -> UNKNOWN_SERVER_ERROR (there is no offset to blame).
    fn group_error_code(self) -> i16 {
        match self {
            PersistError::TimedOut => error_code::REBALANCE_IN_PROGRESS,
            PersistError::TooLarge => error_code::UNKNOWN_SERVER_ERROR,
            other => other.offsets_error_code(),
        }
    }
}

pub type PersistToken = u64;

// Inputs and effects are moved once into and out of the step loop; boxing the large
// request and response variants would only add an allocation per request.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    Request {
        context: RequestContext,
        request: GroupRequest,
    },
    /// A deadline given by `next_deadline` has come.
    Timer,
    PersistCompleted {
        token: PersistToken,
        result: Result<(), PersistError>,
    },
    /// These topics were deleted (DeleteTopics): their committed offsets go, with tombstones,
    /// as Kafka's coordinator drops the offsets of deleted partitions.
    TopicsDeleted { topics: Vec<String> },
}

#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    Respond {
        token: RequestToken,
        api_version: i16,
        response: ResponseKind,
    },
    /// Append `records` (in order, in one batch) to `__consumer_offsets` partition `partition`,
    /// then report `Input::PersistCompleted { token, .. }` once durable.
    Persist {
        token: PersistToken,
        partition: i32,
        records: Vec<PersistedRecord>,
    },
}

/// `abs(String.hashCode(group_id)) % partitions`, with Kafka's `Utils.abs` (`& 0x7fffffff`),
/// so a group lands on the same `__consumer_offsets` partition as in Kafka.
pub fn partition_for_group(group_id: &str, partitions: i32) -> i32 {
    let mut hash: i32 = 0;
    for unit in group_id.encode_utf16() {
        hash = hash.wrapping_mul(31).wrapping_add(unit as i32);
    }
    (hash & 0x7fff_ffff) % partitions.max(1)
}

/// What a persist completion finishes.
#[derive(Clone, Debug)]
enum Completion {
    /// Apply the offsets, then answer the OffsetCommit.
    OffsetCommit {
        reply: Reply,
        group_id: String,
        offsets: Vec<(records::OffsetKey, records::OffsetValue)>,
        /// Partition index in `topics` for each offset, to set its error on failure.
        positions: Vec<(usize, usize)>,
        response: kafka_protocol::messages::OffsetCommitResponse,
    },
    /// The leader's assignment is durable: the group becomes Stable.
    Sync {
        group_id: String,
        generation_id: i32,
    },
    /// Remove the offsets, then answer the OffsetDelete.
    OffsetDelete {
        reply: Reply,
        group_id: String,
        keys: Vec<(String, i32)>,
        response: kafka_protocol::messages::OffsetDeleteResponse,
    },
    /// One group of a DeleteGroups request.
    DeleteGroup { batch: u64, index: usize },
    /// A static member's new id (KIP-345) is durable: answer its JoinGroup with `response`;
    /// on failure put `previous` (the replaced member) back and answer the error.
    StaticRejoin {
        group_id: String,
        reply: Reply,
        response: Box<Effect>,
        new_id: String,
        previous: Box<group::Member>,
        previous_leader: Option<String>,
    },
    /// Nothing waits (expiry tombstones, empty-group metadata).
    Nothing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Reply {
    token: RequestToken,
    api_version: i16,
}

#[derive(Debug)]
struct PendingDeleteGroups {
    reply: Reply,
    remaining: usize,
    response: kafka_protocol::messages::DeleteGroupsResponse,
}

/// Upper bound on persists awaiting completion, of every kind. A request whose write would
/// exceed it is refused with COORDINATOR_NOT_AVAILABLE (retriable: the client backs off and
/// retries) before anything changes; a write nobody waits for is put off (offset expiry
/// retries at its next check) or skipped (see [`GroupCoordinator::persist_group_metadata`]).
pub const MAX_PENDING_PERSISTS: usize = 100_000;
/// Deleted topics whose committed offsets are still to be dropped (waiting for persist room or
/// for an OffsetCommit in flight); beyond it the oldest deletion is given up (logged).
pub const MAX_DELETED_TOPICS_PENDING: usize = 10_000;
/// How soon dropping the offsets of deleted topics is tried again when it could not finish.
pub(crate) const DELETED_TOPICS_RETRY_MS: Millis = 100;

pub struct GroupCoordinator {
    config: CoordinatorConfig,
    owned_partitions: BTreeSet<i32>,
    groups: BTreeMap<String, Group>,
    pending: BTreeMap<PersistToken, Completion>,
    pending_delete_groups: BTreeMap<u64, PendingDeleteGroups>,
    next_token: PersistToken,
    next_batch: u64,
    rng_state: u64,
    next_retention_check_ms: Option<Millis>,
    /// The bound on `pending`: MAX_PENDING_PERSISTS, lowered only by tests.
    max_pending_persists: usize,
    /// Fire-and-forget metadata writes skipped because `pending` was full.
    skipped_metadata_writes: u64,
    /// Deleted topic -> when it was deleted: offsets committed until then are dropped.
    deleted_topics: BTreeMap<String, Millis>,
    /// When to try again to drop the offsets of `deleted_topics`.
    deleted_topics_retry_ms: Option<Millis>,
}

impl GroupCoordinator {
    pub fn new(config: CoordinatorConfig) -> Self {
        let rng_state = config.seed ^ 0x9e37_79b9_7f4a_7c15;
        GroupCoordinator {
            config,
            owned_partitions: BTreeSet::new(),
            groups: BTreeMap::new(),
            pending: BTreeMap::new(),
            pending_delete_groups: BTreeMap::new(),
            next_token: 1,
            next_batch: 1,
            rng_state,
            next_retention_check_ms: None,
            max_pending_persists: MAX_PENDING_PERSISTS,
            skipped_metadata_writes: 0,
            deleted_topics: BTreeMap::new(),
            deleted_topics_retry_ms: None,
        }
    }

    /// Lowers the bound on persists awaiting completion (tests reach it without 100 000
    /// writes); never above MAX_PENDING_PERSISTS, which the node sizes its queues by.
    pub fn set_max_pending_persists(&mut self, bound: usize) {
        self.max_pending_persists = bound.min(MAX_PENDING_PERSISTS);
    }

    /// Persists awaiting completion.
    pub fn pending_persists(&self) -> usize {
        self.pending.len()
    }

    /// Fire-and-forget group metadata writes skipped because too many persists were pending.
    pub fn skipped_metadata_writes(&self) -> u64 {
        self.skipped_metadata_writes
    }

    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    pub fn partition_for(&self, group_id: &str) -> i32 {
        partition_for_group(group_id, self.config.offsets_topic_num_partitions)
    }

    pub fn owns_partition(&self, partition: i32) -> bool {
        self.owned_partitions.contains(&partition)
    }

    /// Becomes coordinator of `partition`, rebuilding its groups and offsets from the
    /// partition's records in offset order. Malformed records, and records of groups that do
    /// not hash to `partition`, are skipped; their count is returned.
    pub fn load(&mut self, now: Millis, partition: i32, records: &[PersistedRecord]) -> usize {
        let mut skipped = 0;
        for record in records {
            let decoded = match Record::decode(record) {
                Ok(r) => r,
                Err(_) => {
                    skipped += 1;
                    continue;
                }
            };
            let group_id = match &decoded {
                Record::Offset { key, .. } => key.group_id.clone(),
                Record::Group { group_id, .. } => group_id.clone(),
            };
            if self.partition_for(&group_id) != partition {
                skipped += 1;
                continue;
            }
            match decoded {
                Record::Offset { key, value } => match value {
                    Some(value) => {
                        let group = self
                            .groups
                            .entry(group_id.clone())
                            .or_insert_with(|| Group::new(group_id, partition, now));
                        group.offsets.insert((key.topic, key.partition), value);
                    }
                    None => {
                        if let Some(group) = self.groups.get_mut(&group_id) {
                            group.offsets.remove(&(key.topic, key.partition));
                        }
                    }
                },
                Record::Group { value, .. } => match value {
                    Some(value) => {
                        let offsets = self
                            .groups
                            .remove(&group_id)
                            .map(|g| g.offsets)
                            .unwrap_or_default();
                        let mut group =
                            Group::from_record(group_id.clone(), partition, &value, now);
                        group.offsets = offsets;
                        self.groups.insert(group_id, group);
                    }
                    None => {
                        self.groups.remove(&group_id);
                    }
                },
            }
        }
        self.owned_partitions.insert(partition);
        if self.next_retention_check_ms.is_none() {
            self.next_retention_check_ms =
                Some(now + self.config.offsets_retention_check_interval_ms);
        }
        skipped
    }

    /// Stops coordinating `partition`: its groups are dropped from memory and any request
    /// waiting on them is answered NOT_COORDINATOR (the client finds the new coordinator).
    pub fn unload(&mut self, partition: i32, effects: &mut Vec<Effect>) {
        self.owned_partitions.remove(&partition);
        let ids: Vec<String> = self
            .groups
            .iter()
            .filter(|(_, g)| g.partition == partition)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            if let Some(mut group) = self.groups.remove(&id) {
                group.fail_waiters(error_code::NOT_COORDINATOR, effects);
            }
        }
        if self.owned_partitions.is_empty() {
            self.next_retention_check_ms = None;
        }
    }

    pub fn step(&mut self, now: Millis, input: Input, effects: &mut Vec<Effect>) {
        match input {
            Input::Request { context, request } => {
                self.handle_request(now, context, request, effects)
            }
            Input::Timer => self.expire(now, effects),
            Input::PersistCompleted { token, result } => {
                self.persist_completed(now, token, result, effects)
            }
            Input::TopicsDeleted { topics } => self.topics_deleted(now, topics, effects),
        }
    }

    /// The earliest time a `Timer` input is due: a session or rebalance timeout, a
    /// member-id-required member's expiry, the initial rebalance delay, or the offset
    /// retention check.
    pub fn next_deadline(&self) -> Option<Millis> {
        let groups = self.groups.values().filter_map(|g| g.next_deadline());
        groups
            .chain(self.next_retention_check_ms)
            .chain(self.deleted_topics_retry_ms)
            .min()
    }

    /// Checks the coordinator's invariants; panics on a violation (a programmer error).
    pub fn invariants(&self) {
        for (id, group) in &self.groups {
            assert_eq!(&group.group_id, id);
            assert_eq!(
                group.partition,
                self.partition_for(id),
                "group {id} on wrong partition"
            );
            assert!(
                self.owned_partitions.contains(&group.partition),
                "group {id} not owned"
            );
            assert!(
                group.members.len() + group.pending_members.len() <= self.config.group_max_size,
                "group {id} over group.max.size"
            );
            group.invariants();
        }
        for completion in self.pending.values() {
            if let Completion::DeleteGroup { batch, .. } = completion {
                assert!(self.pending_delete_groups.contains_key(batch));
            }
        }
        assert!(self.pending.len() <= self.max_pending_persists);
        assert!(self.deleted_topics.len() <= MAX_DELETED_TOPICS_PENDING);
        assert_eq!(
            self.deleted_topics.is_empty(),
            self.deleted_topics_retry_ms.is_none(),
            "a deleted topic's offsets are retried until dropped"
        );
    }

    /// Read access for tests and the CLI: the group's state name, if the group exists.
    pub fn group_state(&self, group_id: &str) -> Option<&'static str> {
        self.groups.get(group_id).map(|g| g.state.name())
    }

    /// The acknowledged committed offset of `topic`-`partition` for `group_id`.
    pub fn committed_offset(&self, group_id: &str, topic: &str, partition: i32) -> Option<i64> {
        self.groups
            .get(group_id)?
            .offsets
            .get(&(topic.to_string(), partition))
            .map(|v| v.offset)
    }

    fn new_member_id(&mut self, client_id: &str) -> String {
        let high = self.next_random();
        let low = self.next_random();
        let uuid = uuid::Uuid::from_u64_pair(high, low);
        format!("{client_id}-{uuid}")
    }

    /// splitmix64: a seeded, deterministic generator (member ids must not collide across
    /// coordinator failovers, so the node seeds each coordinator differently).
    fn next_random(&mut self) -> u64 {
        self.rng_state = self.rng_state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Whether `writes` more persists fit under the bound. Every caller asks before it changes
    /// any state, so a refused request leaves the group as it was.
    fn has_persist_room(&self, writes: usize) -> bool {
        self.pending.len() + writes <= self.max_pending_persists
    }

    /// Emits a persist. The caller has checked [`Self::has_persist_room`]; exceeding the bound
    /// is a programmer error.
    fn persist(
        &mut self,
        partition: i32,
        records: Vec<PersistedRecord>,
        completion: Completion,
        effects: &mut Vec<Effect>,
    ) -> PersistToken {
        assert!(
            self.has_persist_room(1),
            "persist over the bound of {} pending",
            self.max_pending_persists
        );
        let token = self.next_token;
        self.next_token += 1;
        self.pending.insert(token, completion);
        effects.push(Effect::Persist {
            token,
            partition,
            records,
        });
        token
    }

    /// Writes the group's metadata, nobody waiting (a group that became Empty). With no room it is skipped and counted: the durable record stays the
    /// previous generation's, which is safe (a coordinator that loads it hands out only later
    /// generations, and members it brings back expire after their session timeout), only
    /// staler.
    fn persist_group_metadata(&mut self, group_id: &str, effects: &mut Vec<Effect>) {
        if !self.has_persist_room(1) {
            self.skipped_metadata_writes += 1;
            return;
        }
        if let Some(group) = self.groups.get(group_id) {
            let record = Record::Group {
                group_id: group_id.to_string(),
                value: Some(group.to_record(None)),
            }
            .encode();
            let partition = group.partition;
            self.persist(partition, vec![record], Completion::Nothing, effects);
        }
    }
}

mod handlers;
