//! The broker role: topics and their partition logs; Produce, Fetch, ListOffsets, Metadata and
//! the topic admin APIs. Sans-IO (DESIGN.md): driven only by [`Broker::step`], it reads no clock
//! and opens no socket; storage goes through the `Storage` handle it was given.
//!
//! Contract with the driver (crate::runtime or a test):
//! 1. `Broker::open(config, storage, now)` recovers the topics and logs found in storage.
//! 2. For every input call `step(now, input, &mut effects)` and carry out the effects in order:
//!    - `Respond`/`NoResponse` answer request `id`. A connection's answers must be written in
//!      the order its requests arrived (`RequestId::sequence`); the broker may produce them out
//!      of order because a long-polling Fetch or a produce waiting for fsync is parked.
//!    - `Sync` runs the log's SyncJob off the event loop and reports `Input::SyncCompleted`.
//!    - `Close` closes the connection (acks=0 produce that failed, as Kafka does).
//! 3. When `next_deadline()` passes, step `Input::Timer`.
//! 4. `invariants()` holds after every step (tests and the simulator check it).
//!
//! The broker never decodes individual records: a produced batch's header is read for its
//! extent, size and producer fields, the log validates its CRC and assigns offsets in place,
//! and fetches return stored bytes as they are.

mod admin;
mod internal;
pub mod producer_state;
mod registry;
mod requests;
mod topics;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kafka_protocol::messages::{ApiKey, FetchRequest, ProduceResponse, ResponseKind};

use crate::config::{NodeConfig, TopicConfig};
use crate::log::{FlushPolicy, PartitionLog, SyncJob};
use crate::protocol::codec::DecodedRequest;
use crate::storage::Storage;
use crate::Millis;
use producer_state::ProducerStates;

pub use internal::{
    internal_offsets_log_config, is_internal_topic, InternalLogError, CONSUMER_OFFSETS,
    OFFSETS_TOPIC_SEGMENT_BYTES,
};
pub use topics::{validate_topic_name, TopicNameError};

/// A client connection, numbered by the runtime.
pub type ConnectionId = u64;

/// One request: its connection and its place in that connection's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId {
    pub connection: ConnectionId,
    pub sequence: u64,
}

/// A partition log, as named in sync effects and completions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogId {
    pub topic_id: uuid::Uuid,
    pub partition: i32,
}

/// Everything the broker can be told.
#[derive(Debug)]
pub enum Input {
    Request {
        id: RequestId,
        request: Box<DecodedRequest>,
    },
    /// A connection was accepted from `client_host` (Kafka's form, e.g. "/127.0.0.1"). The
    /// broker ignores it; the node keeps the host for the group coordinator.
    ConnectionOpened {
        connection: ConnectionId,
        client_host: String,
    },
    ConnectionClosed(ConnectionId),
    /// `next_deadline()` has passed.
    Timer,
    /// A SyncJob finished; `result` is Err with the I/O error text if fsync failed.
    SyncCompleted {
        log: LogId,
        up_to_offset: i64,
        result: Result<(), String>,
    },
}

/// Everything the broker asks of the world.
#[derive(Debug)]
pub enum Effect {
    Respond {
        id: RequestId,
        api_key: ApiKey,
        api_version: i16,
        correlation_id: i32,
        response: Box<ResponseKind>,
    },
    /// Request `id` gets no answer (acks=0); its place in the connection's order is released.
    NoResponse {
        id: RequestId,
    },
    /// Run `job` on the disk thread and report `Input::SyncCompleted`.
    Sync {
        log: LogId,
        job: SyncJob,
    },
    Close {
        connection: ConnectionId,
    },
}

/// Upper bound on fetches parked for long polling; beyond it a fetch is answered at once.
pub const MAX_PARKED_FETCHES: usize = 10_000;
/// Upper bound on produce requests waiting for fsync; beyond it the produce is refused with
/// REQUEST_TIMED_OUT rather than queued without limit.
pub const MAX_PARKED_PRODUCES: usize = 100_000;
/// Largest partition count of one topic (CreateTopics, CreatePartitions, num.partitions).
pub const MAX_PARTITIONS_PER_TOPIC: i32 = 10_000;

/// One partition of a topic this node leads.
#[derive(Debug)]
pub(crate) struct Partition {
    pub(crate) log: PartitionLog,
    pub(crate) producers: ProducerStates,
    /// An fsync of this log failed: after a failed fsync the kernel may have dropped dirty
    /// pages, so nothing can be promised any more. Like Kafka's offline log directory, the
    /// partition answers KAFKA_STORAGE_ERROR until the node restarts and recovers it.
    pub(crate) offline: bool,
}

impl Partition {
    /// The high watermark: with one replica, everything appended, except under the durable
    /// flush policy where only what is fsynced is exposed (so nothing read can be lost).
    pub(crate) fn high_watermark(&self) -> i64 {
        match self.log.config().flush {
            FlushPolicy::Durable => self.log.durable_offset(),
            _ => self.log.log_end_offset(),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Topic {
    pub(crate) name: String,
    pub(crate) id: uuid::Uuid,
    pub(crate) config: TopicConfig,
    pub(crate) partitions: Vec<Partition>,
}

/// A fetch waiting for data (max.wait.ms / min.bytes long polling).
#[derive(Debug)]
pub(crate) struct ParkedFetch {
    pub(crate) id: RequestId,
    pub(crate) correlation_id: i32,
    pub(crate) api_version: i16,
    pub(crate) request: FetchRequest,
    pub(crate) deadline: Millis,
}

/// A produce response waiting until its records are durable (acks=all, durable flush policy).
#[derive(Debug)]
pub(crate) struct ParkedProduce {
    pub(crate) id: RequestId,
    pub(crate) correlation_id: i32,
    pub(crate) api_version: i16,
    pub(crate) response: ProduceResponse,
    /// The partitions still waiting to become durable.
    pub(crate) waits: Vec<DurableWait>,
    /// The request's timeout_ms from its arrival: then it is answered REQUEST_TIMED_OUT.
    pub(crate) deadline: Millis,
}

/// One partition of a parked produce: `log` must be durable below `needed` (last offset + 1).
#[derive(Debug)]
pub(crate) struct DurableWait {
    pub(crate) log: LogId,
    pub(crate) needed: i64,
    /// The topic's name, to answer for the partition even if the topic is deleted meanwhile.
    pub(crate) topic: String,
}

impl ParkedProduce {
    /// Sets `code` (and no offset) on partition `index` of topic `name` in the answer.
    pub(crate) fn fail_partition(&mut self, name: &str, index: i32, code: i16) {
        let partitions = self
            .response
            .responses
            .iter_mut()
            .filter(|topic| topic.name.as_str() == name)
            .flat_map(|topic| topic.partition_responses.iter_mut())
            .filter(|partition| partition.index == index);
        for partition in partitions {
            partition.error_code = code;
            partition.base_offset = -1;
        }
    }

    /// Sends the answer as it stands.
    pub(crate) fn answer(self, effects: &mut Vec<Effect>) {
        respond(
            effects,
            self.id,
            ApiKey::Produce,
            self.api_version,
            self.correlation_id,
            ResponseKind::Produce(self.response),
        );
    }
}

/// Deterministic RNG the broker owns (SplitMix64): topic ids.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The broker role of one node.
#[derive(Debug)]
pub struct Broker {
    pub(crate) config: NodeConfig,
    /// Host and port given to clients in Metadata and DescribeCluster.
    pub(crate) advertised_host: String,
    pub(crate) advertised_port: i32,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) rng: Rng,
    pub(crate) topics: BTreeMap<String, Topic>,
    pub(crate) topic_names_by_id: BTreeMap<uuid::Uuid, String>,
    /// Next producer id InitProducerId hands out.
    pub(crate) next_producer_id: i64,
    /// Producer ids below this are reserved in the persisted registry.
    pub(crate) producer_id_limit: i64,
    pub(crate) registry_generation: u64,
    pub(crate) parked_fetches: Vec<ParkedFetch>,
    pub(crate) parked_produces: Vec<ParkedProduce>,
    /// Logs that gained visible data during the current step (wakes parked fetches).
    pub(crate) grown: BTreeSet<LogId>,
    /// Logs that were appended to or ticked during the current step (may hand out sync jobs).
    pub(crate) touched: BTreeSet<LogId>,
}

impl Broker {
    /// Opens the broker over `storage`, recovering persisted topics and their logs.
    /// `advertised` is the `host:port` given to clients.
    pub fn open(
        config: NodeConfig,
        advertised: &str,
        storage: Arc<dyn Storage>,
        seed: u64,
        now: Millis,
    ) -> anyhow::Result<Broker> {
        let (host, port) = split_host_port(advertised)?;
        let mut broker = Broker {
            config,
            advertised_host: host,
            advertised_port: port,
            storage,
            // Topic ids must never repeat: a node restarted on a wiped disk with the same
            // seed (the simulator's `karst.seed`) would hand the ids of its first life to
            // other topics, and a client still caching one would fetch another topic's
            // records by it. Mixing in the start time keeps runs deterministic.
            rng: Rng(seed ^ (now as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            topics: BTreeMap::new(),
            topic_names_by_id: BTreeMap::new(),
            next_producer_id: 0,
            producer_id_limit: 0,
            registry_generation: 0,
            parked_fetches: Vec::new(),
            parked_produces: Vec::new(),
            grown: BTreeSet::new(),
            touched: BTreeSet::new(),
        };
        broker.recover(now)?;
        Ok(broker)
    }

    /// Handles one input, appending the effects it causes.
    pub fn step(&mut self, now: Millis, input: Input, effects: &mut Vec<Effect>) {
        match input {
            Input::Request { id, request } => self.handle_request(now, id, *request, effects),
            Input::ConnectionClosed(connection) => {
                self.parked_fetches
                    .retain(|parked| parked.id.connection != connection);
                self.parked_produces
                    .retain(|parked| parked.id.connection != connection);
            }
            Input::ConnectionOpened { .. } => {}
            Input::Timer => self.handle_timer(now, effects),
            Input::SyncCompleted {
                log,
                up_to_offset,
                result,
            } => self.handle_sync_completed(log, up_to_offset, result, effects),
        }
        self.finish_step(now, effects);
    }

    /// The earliest time at which `Input::Timer` must be stepped.
    pub fn next_deadline(&self) -> Option<Millis> {
        let fetches = self.parked_fetches.iter().map(|parked| parked.deadline);
        let produces = self.parked_produces.iter().map(|parked| parked.deadline);
        let logs = self
            .topics
            .values()
            .flat_map(|topic| topic.partitions.iter())
            .filter_map(|partition| partition.log.next_deadline());
        fetches.chain(produces).chain(logs).min()
    }

    /// Programmer-error checks, run after every step in tests and the simulator.
    pub fn invariants(&self) {
        assert_eq!(self.topics.len(), self.topic_names_by_id.len());
        for (name, topic) in &self.topics {
            assert_eq!(&topic.name, name);
            assert_eq!(self.topic_names_by_id.get(&topic.id), Some(name));
            assert!(!topic.partitions.is_empty());
            for partition in &topic.partitions {
                partition.log.invariants();
                assert!(partition.high_watermark() <= partition.log.log_end_offset());
            }
        }
        assert!(self.parked_fetches.len() <= MAX_PARKED_FETCHES);
        assert!(self.parked_produces.len() <= MAX_PARKED_PRODUCES);
        assert!(self.grown.is_empty() && self.touched.is_empty());
    }

    /// Clean shutdown: every log synced and closed with its clean-shutdown marker.
    pub fn close(&mut self) -> anyhow::Result<()> {
        for topic in self.topics.values_mut() {
            for partition in topic.partitions.iter_mut() {
                partition.log.close()?;
            }
        }
        Ok(())
    }

    pub(crate) fn partition_mut(&mut self, log: LogId) -> Option<&mut Partition> {
        let name = self.topic_names_by_id.get(&log.topic_id)?;
        let topic = self.topics.get_mut(name)?;
        topic
            .partitions
            .get_mut(usize::try_from(log.partition).ok()?)
    }

    fn handle_timer(&mut self, now: Millis, effects: &mut Vec<Effect>) {
        let expired: Vec<ParkedFetch> = {
            let (expired, waiting) = std::mem::take(&mut self.parked_fetches)
                .into_iter()
                .partition(|parked| parked.deadline <= now);
            self.parked_fetches = waiting;
            expired
        };
        for parked in expired {
            let response = self.build_fetch_response(parked.api_version, &parked.request);
            respond(
                effects,
                parked.id,
                ApiKey::Fetch,
                parked.api_version,
                parked.correlation_id,
                ResponseKind::Fetch(response.0),
            );
        }
        if self
            .parked_produces
            .iter()
            .any(|parked| parked.deadline <= now)
        {
            self.expire_parked_produces(now, effects);
        }
        let mut touched = Vec::new();
        for topic in self.topics.values_mut() {
            for (index, partition) in topic.partitions.iter_mut().enumerate() {
                if partition
                    .log
                    .next_deadline()
                    .is_some_and(|deadline| deadline <= now)
                {
                    if let Err(err) = partition.log.tick(now) {
                        tracing::error!(topic = %topic.name, partition = index, "log tick failed: {err}");
                    }
                    touched.push(LogId {
                        topic_id: topic.id,
                        partition: index as i32,
                    });
                }
            }
        }
        self.touched.extend(touched);
    }

    fn handle_sync_completed(
        &mut self,
        log: LogId,
        up_to_offset: i64,
        result: Result<(), String>,
        effects: &mut Vec<Effect>,
    ) {
        let Some(partition) = self.partition_mut(log) else {
            return; // the topic was deleted meanwhile
        };
        match result {
            Ok(()) => {
                let before = partition.high_watermark();
                partition.log.sync_completed(up_to_offset);
                if partition.high_watermark() > before {
                    self.grown.insert(log);
                }
            }
            Err(err) => {
                // The data may not be on disk: answer everyone waiting on this log with
                // KAFKA_STORAGE_ERROR instead of acknowledging what may be lost.
                tracing::error!(?log, "fsync failed, partition offline until restart: {err}");
                partition.log.sync_failed();
                partition.offline = true;
                self.fail_parked_produces(log, effects);
                return;
            }
        }
        self.touched.insert(log);
    }

    /// After every step: hand out sync jobs, answer produces whose records became durable and
    /// fetches that now have enough data.
    fn finish_step(&mut self, now: Millis, effects: &mut Vec<Effect>) {
        for log in std::mem::take(&mut self.touched) {
            if let Some(partition) = self.partition_mut(log).filter(|p| !p.offline) {
                // Kafka's cleaner stops at the high watermark: above it a follower may still
                // truncate, and a cleaned record could then outlive the one that replaced it.
                let high_watermark = partition.high_watermark();
                partition.log.set_cleanable_limit(high_watermark);
                if let Some(job) = partition.log.take_sync_job() {
                    effects.push(Effect::Sync { log, job });
                }
            }
        }
        if !self.parked_produces.is_empty() {
            self.release_durable_produces(effects);
        }
        let grown = std::mem::take(&mut self.grown);
        if !grown.is_empty() && !self.parked_fetches.is_empty() {
            self.wake_fetches(now, &grown, effects);
        }
    }
}

/// Pushes a response effect.
pub(crate) fn respond(
    effects: &mut Vec<Effect>,
    id: RequestId,
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    response: ResponseKind,
) {
    effects.push(Effect::Respond {
        id,
        api_key,
        api_version,
        correlation_id,
        response: Box::new(response),
    });
}

/// Splits `host:port` (IPv6 hosts in brackets).
pub fn split_host_port(address: &str) -> anyhow::Result<(String, i32)> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("address {address:?} has no port"))?;
    let port: u16 = port.parse()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((host.to_string(), port as i32))
}

#[cfg(test)]
pub(crate) mod tests;
