//! The node's side of consumer groups: FindCoordinator, routing group requests to the
//! coordinator and its answers back to their connections, executing its persists on
//! `__consumer_offsets`, and loading that topic at start-up.

use std::collections::VecDeque;

use bytes::Bytes;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, FindCoordinatorResponse, RequestKind, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;

use super::{InFlight, Node, PersistWait, MAX_PERSIST_WAITS};
use crate::broker::{respond, Effect, Input, InternalLogError, RequestId};
use crate::coordinator::{
    self, records, GroupRequest, PersistError, PersistedRecord, RequestContext, RequestToken,
};
use crate::protocol::batch;
use crate::protocol::codec::DecodedRequest;
use crate::protocol::error;
use crate::Millis;

/// FindCoordinator key types (KIP-98).
const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;
/// Bytes read per round when loading `__consumer_offsets`.
const LOAD_CHUNK_BYTES: usize = 1 << 20;
/// Coordinator inputs one node step may feed (a request or timer plus the persist completions
/// it cascades into); far above what one step can produce, since every completion retires a
/// persist and at most MAX_PERSIST_WAITS wait.
const MAX_COORDINATOR_INPUTS_PER_STEP: usize = 2 * MAX_PERSIST_WAITS + 1;

impl Node {
    pub(super) fn handle_request(
        &mut self,
        now: Millis,
        id: RequestId,
        request: Box<DecodedRequest>,
        effects: &mut Vec<Effect>,
    ) {
        if !super::routes_to_coordinator(request.api_key) {
            // The data path goes straight through, without unboxing the request.
            let api_key = request.api_key;
            let first = effects.len();
            self.broker
                .step(now, Input::Request { id, request }, effects);
            if api_key == kafka_protocol::messages::ApiKey::DeleteTopics {
                let topics = deleted_topics(&effects[first..]);
                if !topics.is_empty() {
                    self.drive_coordinator(
                        now,
                        coordinator::Input::TopicsDeleted { topics },
                        effects,
                    );
                }
            }
            return;
        }
        let DecodedRequest {
            api_key,
            header,
            request,
            ..
        } = *request;
        let group_request = match request {
            RequestKind::FindCoordinator(request) => {
                let response =
                    self.find_coordinator(now, header.request_api_version, request, effects);
                respond(
                    effects,
                    id,
                    api_key,
                    header.request_api_version,
                    header.correlation_id,
                    ResponseKind::FindCoordinator(response),
                );
                return;
            }
            RequestKind::JoinGroup(r) => GroupRequest::JoinGroup(r),
            RequestKind::SyncGroup(r) => GroupRequest::SyncGroup(r),
            RequestKind::Heartbeat(r) => GroupRequest::Heartbeat(r),
            RequestKind::LeaveGroup(r) => GroupRequest::LeaveGroup(r),
            RequestKind::OffsetCommit(r) => GroupRequest::OffsetCommit(r),
            RequestKind::OffsetFetch(r) => GroupRequest::OffsetFetch(r),
            RequestKind::DescribeGroups(r) => GroupRequest::DescribeGroups(r),
            RequestKind::ListGroups(r) => GroupRequest::ListGroups(r),
            RequestKind::DeleteGroups(r) => GroupRequest::DeleteGroups(r),
            RequestKind::OffsetDelete(r) => GroupRequest::OffsetDelete(r),
            other => {
                // routes_to_coordinator lists exactly the arms above.
                tracing::error!(?api_key, "no coordinator handler: {other:?}");
                effects.push(Effect::Close {
                    connection: id.connection,
                });
                return;
            }
        };
        let token = RequestToken {
            connection_id: id.connection,
            correlation_id: header.correlation_id,
        };
        if self.in_flight.contains_key(&token) {
            // Two unanswered requests with one correlation id: the client could not tell the
            // answers apart. Kafka clients never do this; close rather than guess.
            tracing::info!(
                connection = id.connection,
                correlation_id = header.correlation_id,
                "closing connection: correlation id reused while in flight"
            );
            effects.push(Effect::Close {
                connection: id.connection,
            });
            return;
        }
        self.in_flight.insert(
            token,
            InFlight {
                id,
                api_key,
                correlation_id: header.correlation_id,
            },
        );
        let context = RequestContext {
            token,
            api_version: header.request_api_version,
            client_id: header
                .client_id
                .as_ref()
                .map(|id| id.to_string())
                .unwrap_or_default(),
            client_host: self
                .client_hosts
                .get(&id.connection)
                .cloned()
                .unwrap_or_default(),
        };
        // RUST_LOG=karst::node::groups=debug traces every group request and answer (the
        // evidence for a rebalance that goes wrong with a real client).
        tracing::debug!(
            connection = token.connection_id,
            correlation_id = token.correlation_id,
            version = context.api_version,
            request = ?group_request,
            "group request"
        );
        self.drive_coordinator(
            now,
            coordinator::Input::Request {
                context,
                request: group_request,
            },
            effects,
        );
    }

    /// FindCoordinator v0-6: v0-3 ask for one `key`, v4+ for a batch of `coordinator_keys`.
    fn find_coordinator(
        &mut self,
        now: Millis,
        version: i16,
        request: FindCoordinatorRequest,
        effects: &mut Vec<Effect>,
    ) -> FindCoordinatorResponse {
        let keys: Vec<StrBytes> = if version >= 4 {
            request.coordinator_keys
        } else {
            vec![request.key]
        };
        let answers: Vec<(StrBytes, i16, &'static str)> = keys
            .into_iter()
            .map(|key| {
                let (code, message) = self.coordinator_for(now, request.key_type, &key, effects);
                (key, code, message)
            })
            .collect();
        let node_id = BrokerId(self.broker.config.node_id);
        let host = StrBytes::from_string(self.broker.advertised_host.clone());
        let port = self.broker.advertised_port;
        let mut response = FindCoordinatorResponse::default();
        if version >= 4 {
            response.coordinators = answers
                .into_iter()
                .map(|(key, code, message)| {
                    let coordinator = Coordinator::default().with_key(key);
                    if code == error::NONE {
                        coordinator
                            .with_node_id(node_id)
                            .with_host(host.clone())
                            .with_port(port)
                    } else {
                        coordinator
                            .with_node_id(BrokerId(-1))
                            .with_port(-1)
                            .with_error_code(code)
                            .with_error_message(Some(StrBytes::from_static_str(message)))
                    }
                })
                .collect();
        } else if let Some((_, code, message)) = answers.into_iter().next() {
            if code == error::NONE {
                response.node_id = node_id;
                response.host = host;
                response.port = port;
            } else {
                response.error_code = code;
                response.node_id = BrokerId(-1);
                response.port = -1;
                if version >= 1 {
                    response.error_message = Some(StrBytes::from_static_str(message));
                }
            }
        }
        response
    }

    /// Whether this node coordinates `key`: NONE, or the error code and message to give.
    /// Creating `__consumer_offsets` hands its new logs' sync jobs out into `effects`.
    fn coordinator_for(
        &mut self,
        now: Millis,
        key_type: i8,
        key: &str,
        effects: &mut Vec<Effect>,
    ) -> (i16, &'static str) {
        if key_type == KEY_TYPE_TRANSACTION {
            return (
                error::COORDINATOR_NOT_AVAILABLE,
                "Karst does not run a transaction coordinator yet",
            );
        }
        if key_type != KEY_TYPE_GROUP {
            // Not retriable: a client asking again would loop forever (Kafka answers the same).
            return (error::INVALID_REQUEST, "unknown coordinator key type");
        }
        if self.broker.consumer_offsets_partitions().is_none() {
            let partitions = self.coordinator.config().offsets_topic_num_partitions;
            match self
                .broker
                .create_consumer_offsets(partitions, now, effects)
            {
                Ok(created) if created != partitions => {
                    // The coordinator hashes groups by `partitions`; a topic of another size
                    // (config parsing refuses counts the broker would clamp) would misplace them.
                    tracing::error!(
                        created,
                        partitions,
                        "__consumer_offsets has a partition count the coordinator does not use"
                    );
                    return (
                        error::COORDINATOR_NOT_AVAILABLE,
                        "the offsets topic has an unexpected partition count",
                    );
                }
                Ok(created) => {
                    // A new topic holds nothing: every partition loads at once.
                    for partition in 0..created {
                        self.coordinator.load(now, partition, &[]);
                    }
                }
                Err(err) => {
                    tracing::error!("creating __consumer_offsets failed: {err}");
                    return (
                        error::COORDINATOR_NOT_AVAILABLE,
                        "the offsets topic could not be created",
                    );
                }
            }
        }
        let partition = self.coordinator.partition_for(key);
        if self.coordinator.owns_partition(partition) {
            (error::NONE, "")
        } else {
            (
                error::COORDINATOR_NOT_AVAILABLE,
                "the group's offsets partition is not loaded",
            )
        }
    }

    /// Steps the coordinator with `input`, carries out its effects, and feeds it the persist
    /// completions that become ready meanwhile, until none is left.
    pub(super) fn drive_coordinator(
        &mut self,
        now: Millis,
        input: coordinator::Input,
        effects: &mut Vec<Effect>,
    ) {
        self.drive_coordinator_with(now, VecDeque::from([input]), effects);
    }

    /// As [`Node::drive_coordinator`], starting from a queue of inputs. Completions are only
    /// ever taken from `ready_completions` when the queue is empty, so every completion of a
    /// partition already in `inputs` is fed before any newer one of that partition: the
    /// coordinator sees each partition's completions in emission order.
    fn drive_coordinator_with(
        &mut self,
        now: Millis,
        mut inputs: VecDeque<coordinator::Input>,
        effects: &mut Vec<Effect>,
    ) {
        let mut out = Vec::new();
        let mut fed = 0;
        while let Some(input) = inputs.pop_front() {
            fed += 1;
            self.coordinator.step(now, input, &mut out);
            for effect in out.drain(..) {
                self.carry_out(now, effect, effects);
            }
            if inputs.is_empty() && fed < MAX_COORDINATOR_INPUTS_PER_STEP {
                self.ready_completions(now, &mut inputs);
            }
        }
    }

    /// Delivers every persist completion that is ready.
    pub(super) fn complete_persists(&mut self, now: Millis, effects: &mut Vec<Effect>) {
        let mut ready = VecDeque::new();
        self.ready_completions(now, &mut ready);
        // One queue for all of them: driving each on its own would let a completion decided
        // while the first is driven (a newer one of the same partition) overtake the rest.
        if !ready.is_empty() {
            self.drive_coordinator_with(now, ready, effects);
        }
    }

    /// The earliest deadline of a persist still waiting on a high watermark. Within a
    /// partition deadlines never decrease (appended in order, each `now` plus one timeout), so
    /// the oldest wait of each partition holds its earliest.
    pub(super) fn persist_deadline(&self) -> Option<Millis> {
        self.persists
            .values()
            .filter_map(|waits| match waits.front() {
                Some(PersistWait::HighWatermark { deadline, .. }) => Some(*deadline),
                _ => None,
            })
            .min()
    }

    /// Moves the persists whose outcome is known at `now`, in order per partition, into
    /// `ready`: a wait past its deadline fails in its turn (never before an older wait of its
    /// partition), as TimedOut (REQUEST_TIMED_OUT), so the client retries.
    fn ready_completions(&mut self, now: Millis, ready: &mut VecDeque<coordinator::Input>) {
        for (&partition, waits) in self.persists.iter_mut() {
            let high_watermark = self.broker.internal_high_watermark(partition);
            while let Some(&wait) = waits.front() {
                let (token, result) = match (wait, high_watermark) {
                    (PersistWait::Decided(token, result), _) => (token, result),
                    (PersistWait::HighWatermark { token, needed, .. }, Ok(hw)) if needed <= hw => {
                        (token, Ok(()))
                    }
                    (
                        PersistWait::HighWatermark {
                            token, deadline, ..
                        },
                        Ok(_),
                    ) if deadline <= now => {
                        tracing::warn!(
                            partition,
                            "a __consumer_offsets write was not durable within \
                             offsets.commit.timeout.ms; failing it as retriable"
                        );
                        (token, Err(PersistError::TimedOut))
                    }
                    (PersistWait::HighWatermark { .. }, Ok(_)) => break,
                    (PersistWait::HighWatermark { token, .. }, Err(err)) => {
                        (token, Err(persist_error(err)))
                    }
                };
                waits.pop_front();
                ready.push_back(coordinator::Input::PersistCompleted { token, result });
            }
        }
        self.persists.retain(|_, waits| !waits.is_empty());
    }

    fn carry_out(&mut self, now: Millis, effect: coordinator::Effect, effects: &mut Vec<Effect>) {
        match effect {
            coordinator::Effect::Respond {
                token,
                api_version,
                response,
            } => {
                tracing::debug!(
                    connection = token.connection_id,
                    correlation_id = token.correlation_id,
                    ?response,
                    "group answer"
                );
                // Absent when the connection closed meanwhile: nobody to answer.
                if let Some(waiting) = self.in_flight.remove(&token) {
                    respond(
                        effects,
                        waiting.id,
                        waiting.api_key,
                        api_version,
                        waiting.correlation_id,
                        response,
                    );
                }
            }
            coordinator::Effect::Persist {
                token,
                partition,
                records,
            } => {
                let wait = self.append(now, partition, &records, token, effects);
                self.persists.entry(partition).or_default().push_back(wait);
            }
        }
    }

    fn append(
        &mut self,
        now: Millis,
        partition: i32,
        records: &[PersistedRecord],
        token: coordinator::PersistToken,
        effects: &mut Vec<Effect>,
    ) -> PersistWait {
        if records.is_empty() {
            return PersistWait::Decided(token, Ok(()));
        }
        let batch = match records::encode_batch(records, now) {
            Ok(batch) => batch,
            Err(err) => {
                tracing::error!(
                    partition,
                    "encoding a __consumer_offsets batch failed: {err}"
                );
                return PersistWait::Decided(token, Err(PersistError::Storage));
            }
        };
        match self.broker.append_internal(now, partition, batch, effects) {
            Ok(needed) => PersistWait::HighWatermark {
                token,
                needed,
                deadline: now.saturating_add(self.broker.config.offsets_commit_timeout_ms),
            },
            Err(err) => PersistWait::Decided(token, Err(persist_error(err))),
        }
    }

    /// Loads every partition of an existing `__consumer_offsets` into the coordinator.
    pub(super) fn load_consumer_offsets(&mut self, now: Millis) -> anyhow::Result<()> {
        let Some(partitions) = self.broker.consumer_offsets_partitions() else {
            return Ok(());
        };
        let mut loaded = 0usize;
        let mut skipped = 0usize;
        let mut unreadable_offsets = 0i64;
        for partition in 0..partitions {
            let read = self
                .broker
                .read_internal(partition, LOAD_CHUNK_BYTES)
                .map_err(|err| {
                    anyhow::anyhow!("reading __consumer_offsets-{partition}: {err:?}")
                })?;
            if !read.skipped.is_empty() {
                tracing::error!(
                    partition,
                    ranges = ?read.skipped,
                    "__consumer_offsets records lost to unreadable batches: commits and group \
                     metadata stored there are not loaded"
                );
            }
            unreadable_offsets += read.skipped_offsets();
            let mut records = Vec::new();
            for chunk in read.chunks {
                decode_chunk(partition, chunk, &mut records);
            }
            loaded += records.len();
            skipped += self.coordinator.load(now, partition, &records);
        }
        tracing::info!(
            partitions,
            loaded,
            skipped,
            unreadable_offsets,
            "loaded __consumer_offsets"
        );
        Ok(())
    }
}

/// Decodes the batches of one chunk one by one, so a batch the coordinator cannot read costs
/// only its own records (logged), not the rest of the partition.
fn decode_chunk(partition: i32, chunk: Bytes, records: &mut Vec<PersistedRecord>) {
    let mut position = 0;
    while position < chunk.len() {
        let Ok(header) = batch::parse_header(&chunk[position..]) else {
            tracing::error!(partition, position, "unreadable batch header while loading");
            return;
        };
        let end = (position + header.total_size()).min(chunk.len());
        match records::decode_batches(chunk.slice(position..end)) {
            Ok(decoded) => records.extend(decoded),
            Err(err) => tracing::error!(
                partition,
                offset = header.base_offset,
                "skipping an unreadable __consumer_offsets batch: {err}"
            ),
        }
        position = end;
    }
}

/// The topics a DeleteTopics answer among `effects` reports deleted: those answered NONE, and
/// those answered KAFKA_STORAGE_ERROR, which the broker deleted but could not record in its
/// registry (they may come back empty after a restart, so their old offsets must not stay).
fn deleted_topics(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Respond { response, .. } => match &**response {
                ResponseKind::DeleteTopics(answer) => Some(answer),
                _ => None,
            },
            _ => None,
        })
        .flat_map(|answer| &answer.responses)
        .filter(|topic| matches!(topic.error_code, error::NONE | error::KAFKA_STORAGE_ERROR))
        .filter_map(|topic| topic.name.as_ref().map(|name| name.to_string()))
        .collect()
}

fn persist_error(err: InternalLogError) -> PersistError {
    match err {
        InternalLogError::Missing => PersistError::Unavailable,
        InternalLogError::TooLarge => PersistError::TooLarge,
        InternalLogError::Storage => PersistError::Storage,
    }
}
