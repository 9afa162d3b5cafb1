//! One node: composes the roles it runs and routes inputs to them. A single-node Karst runs the
//! broker role and the group coordinator, each behind the same sans-IO `step` /
//! `next_deadline` / `invariants` contract; the node is itself such a role for the runtime.
//!
//! Routing (see docs/coordinator.md):
//! - FindCoordinator is answered here: key type 0 (group) creates `__consumer_offsets` on
//!   first need (as Kafka does), loads it into the coordinator and names this node; key type
//!   1 (transaction) is COORDINATOR_NOT_AVAILABLE (no transaction coordinator yet), any
//!   other key type INVALID_REQUEST (as Kafka; a retriable code would make clients loop).
//! - JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, DescribeGroups,
//!   ListGroups, DeleteGroups and OffsetDelete go to the coordinator; its responses become the
//!   broker's `Effect::Respond` for the request's `RequestId`, so the runtime writes them in
//!   the connection's request order however late they come (a JoinGroup waits for its join
//!   phase while later requests of other connections are answered).
//! - Everything else goes to the broker. The topics a DeleteTopics answer reports deleted are
//!   then given to the coordinator, which drops their committed offsets (as Kafka does).
//! - The coordinator's `Persist` effects are appended to `__consumer_offsets-<partition>`
//!   through [`Broker::append_internal`] (same log, same sync effects as a produce), and
//!   `PersistCompleted` is delivered, in order per partition, once the partition's high
//!   watermark passes the batch (under the durable flush policy that is after the fsync).
//!
//! At open, an existing `__consumer_offsets` is read from log start to high watermark and
//! loaded before the node serves anything.

mod groups;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use crate::broker::{Broker, ConnectionId, Effect, Input, RequestId};
use crate::config::NodeConfig;
use crate::coordinator::{self, CoordinatorConfig, GroupCoordinator, PersistToken, RequestToken};
use crate::storage::Storage;
use crate::Millis;

/// A coordinator request waiting for its response: where the answer goes.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    id: RequestId,
    api_key: kafka_protocol::messages::ApiKey,
    correlation_id: i32,
}

/// One `Effect::Persist` of the coordinator, appended and waiting to be reported.
#[derive(Debug, Clone, Copy)]
enum PersistWait {
    /// Done once the partition's high watermark reaches this offset (last offset + 1); failed
    /// as TimedOut if it has not by the deadline (`offsets.commit.timeout.ms` after the
    /// append), so a hung fsync cannot hold the answer, and every later answer on its
    /// connection, forever.
    HighWatermark {
        token: PersistToken,
        needed: i64,
        deadline: Millis,
    },
    /// Already decided (append refused, or nothing to write); reported in its turn.
    Decided(PersistToken, Result<(), coordinator::PersistError>),
}

/// A node and the roles it runs.
pub struct Node {
    broker: Broker,
    coordinator: GroupCoordinator,
    /// Peer host of each open connection, as Kafka reports it ("/127.0.0.1").
    client_hosts: BTreeMap<ConnectionId, String>,
    /// Coordinator requests not yet answered. Per connection the runtime bounds it by
    /// MAX_IN_FLIGHT_PER_CONNECTION; the number of connections is not bounded yet (no
    /// connection limit exists), so neither is this map in total.
    in_flight: BTreeMap<RequestToken, InFlight>,
    /// Appended persists per `__consumer_offsets` partition, oldest first.
    persists: BTreeMap<i32, VecDeque<PersistWait>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("broker", &self.broker)
            .field("connections", &self.client_hosts.len())
            .field("coordinator_in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}

/// The coordinator's configuration from the node's (Kafka names in `config.rs`).
pub fn coordinator_config(config: &NodeConfig, partitions: i32, seed: u64) -> CoordinatorConfig {
    CoordinatorConfig {
        offsets_topic_num_partitions: partitions,
        group_min_session_timeout_ms: config.group_min_session_timeout_ms,
        group_max_session_timeout_ms: config.group_max_session_timeout_ms,
        group_initial_rebalance_delay_ms: config.group_initial_rebalance_delay_ms,
        group_max_size: config.group_max_size,
        offsets_retention_ms: config.offsets_retention_minutes.saturating_mul(60_000),
        offsets_retention_check_interval_ms: config.offsets_retention_check_interval_ms,
        offset_metadata_max_bytes: config.offset_metadata_max_bytes,
        seed,
    }
}

/// The member-id generator's seed: from the node's seed and the start time, so a restarted
/// node (even one with a fixed `karst.seed`, as in the simulator) never hands out a member
/// id an earlier incarnation gave (the same idea as the broker's producer ids).
pub fn coordinator_seed(node_seed: u64, now: Millis) -> u64 {
    let mut z = node_seed ^ (now as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x636f_6f72_6469;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Node {
    /// Opens the node's roles over `storage`, recovering their state (topics and logs, then the
    /// groups and committed offsets of `__consumer_offsets`).
    pub fn open(
        config: NodeConfig,
        advertised: &str,
        storage: Arc<dyn Storage>,
        seed: u64,
        now: Millis,
    ) -> anyhow::Result<Node> {
        let broker = Broker::open(config.clone(), advertised, storage, seed, now)?;
        let partitions = broker
            .consumer_offsets_partitions()
            .unwrap_or(config.offsets_topic_num_partitions);
        let coordinator = GroupCoordinator::new(coordinator_config(
            &config,
            partitions,
            coordinator_seed(seed, now),
        ));
        let mut node = Node {
            broker,
            coordinator,
            client_hosts: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            persists: BTreeMap::new(),
        };
        node.load_consumer_offsets(now)?;
        Ok(node)
    }

    pub fn step(&mut self, now: Millis, input: Input, effects: &mut Vec<Effect>) {
        match input {
            Input::Request { id, request } => self.handle_request(now, id, request, effects),
            Input::ConnectionOpened {
                connection,
                client_host,
            } => {
                self.client_hosts.insert(connection, client_host);
            }
            Input::ConnectionClosed(connection) => {
                self.client_hosts.remove(&connection);
                // Answers still to come for this connection are dropped when they come.
                self.in_flight
                    .retain(|token, _| token.connection_id != connection);
                self.broker
                    .step(now, Input::ConnectionClosed(connection), effects);
            }
            Input::Timer => {
                if self
                    .broker
                    .next_deadline()
                    .is_some_and(|deadline| deadline <= now)
                {
                    self.broker.step(now, Input::Timer, effects);
                }
                if self
                    .coordinator
                    .next_deadline()
                    .is_some_and(|deadline| deadline <= now)
                {
                    self.drive_coordinator(now, coordinator::Input::Timer, effects);
                }
            }
            input @ Input::SyncCompleted { .. } => self.broker.step(now, input, effects),
        }
        // A sync completion (or an append under a non-durable policy) may have moved a
        // `__consumer_offsets` high watermark past waiting persists.
        self.complete_persists(now, effects);
    }

    /// The earliest deadline of any role.
    pub fn next_deadline(&self) -> Option<Millis> {
        [
            self.broker.next_deadline(),
            self.coordinator.next_deadline(),
            self.persist_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn invariants(&self) {
        self.broker.invariants();
        self.coordinator.invariants();
        for (partition, waits) in &self.persists {
            assert!(
                self.coordinator.owns_partition(*partition) || waits.is_empty(),
                "persists waiting on unloaded partition {partition}"
            );
        }
        assert!(self.persists.values().map(VecDeque::len).sum::<usize>() <= MAX_PERSIST_WAITS);
    }

    /// Clean shutdown of every role (logs synced, clean-shutdown markers written).
    pub fn close(&mut self) -> anyhow::Result<()> {
        self.broker.close()
    }

    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    pub fn coordinator(&self) -> &GroupCoordinator {
        &self.coordinator
    }
}

/// Upper bound on persists appended and awaiting their report (the coordinator bounds its own
/// pending writes by the same constant).
pub const MAX_PERSIST_WAITS: usize = coordinator::MAX_PENDING_PERSISTS;

/// Whether the node answers `api_key` with the group coordinator (FindCoordinator included)
/// rather than the broker.
pub fn routes_to_coordinator(api_key: kafka_protocol::messages::ApiKey) -> bool {
    use kafka_protocol::messages::ApiKey;
    matches!(
        api_key,
        ApiKey::FindCoordinator
            | ApiKey::JoinGroup
            | ApiKey::SyncGroup
            | ApiKey::Heartbeat
            | ApiKey::LeaveGroup
            | ApiKey::OffsetCommit
            | ApiKey::OffsetFetch
            | ApiKey::DescribeGroups
            | ApiKey::ListGroups
            | ApiKey::DeleteGroups
            | ApiKey::OffsetDelete
    )
}

#[cfg(test)]
mod tests;
