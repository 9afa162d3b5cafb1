//! Request handlers of the data path: Produce (with idempotence and durability waits), Fetch
//! (with long polling), ListOffsets, DeleteRecords, InitProducerId; and the dispatcher.

use bytes::Bytes;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;

use super::producer_state::SequenceCheck;
use super::{
    respond, Broker, DurableWait, Effect, LogId, ParkedFetch, ParkedProduce, RequestId,
    MAX_PARKED_FETCHES, MAX_PARKED_PRODUCES,
};
use crate::log::{AppendError, FlushPolicy};
use crate::protocol::batch::{self, BatchError, BatchHeader};
use crate::protocol::codec::DecodedRequest;
use crate::protocol::{api_versions, error};
use crate::Millis;

/// ListOffsets special timestamps (KIP-79, KIP-734).
const LATEST_TIMESTAMP: i64 = -1;
const EARLIEST_TIMESTAMP: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

/// How a produced partition's data fared.
enum PartitionOutcome {
    Written {
        base_offset: i64,
        log_append_time: i64,
        wait: Option<(LogId, i64)>,
    },
    /// A retried batch already in the log; under the durable flush policy an acks=all answer
    /// still waits until the original is durable, as the first answer would have.
    Duplicate {
        base_offset: i64,
        log_append_time: i64,
        wait: Option<(LogId, i64)>,
    },
    Failed(i16),
}

/// Where a request's answer goes.
#[derive(Debug, Clone, Copy)]
struct Answer {
    id: RequestId,
    version: i16,
    correlation_id: i32,
}

impl Broker {
    pub(crate) fn handle_request(
        &mut self,
        now: Millis,
        id: RequestId,
        request: DecodedRequest,
        effects: &mut Vec<Effect>,
    ) {
        let crc = if request.crcs_checked() {
            batch::Crc::AlreadyChecked
        } else {
            batch::Crc::Check
        };
        let DecodedRequest {
            api_key,
            header,
            request,
            ..
        } = request;
        let version = header.request_api_version;
        let correlation_id = header.correlation_id;
        let response = match request {
            RequestKind::ApiVersions(_) => {
                ResponseKind::ApiVersions(api_versions::response(error::NONE))
            }
            RequestKind::Metadata(request) => {
                ResponseKind::Metadata(self.handle_metadata(version, request, now))
            }
            RequestKind::Produce(request) => {
                let answer = Answer {
                    id,
                    version,
                    correlation_id,
                };
                return self.handle_produce(now, answer, request, crc, effects);
            }
            RequestKind::Fetch(request) => {
                return self.handle_fetch(now, id, version, correlation_id, request, effects)
            }
            RequestKind::ListOffsets(request) => {
                ResponseKind::ListOffsets(self.handle_list_offsets(version, request))
            }
            RequestKind::CreateTopics(request) => {
                ResponseKind::CreateTopics(self.handle_create_topics(version, request, now))
            }
            RequestKind::DeleteTopics(request) => {
                ResponseKind::DeleteTopics(self.handle_delete_topics(version, request))
            }
            RequestKind::CreatePartitions(request) => {
                ResponseKind::CreatePartitions(self.handle_create_partitions(request, now))
            }
            RequestKind::DescribeConfigs(request) => {
                ResponseKind::DescribeConfigs(self.handle_describe_configs(version, request))
            }
            RequestKind::IncrementalAlterConfigs(request) => ResponseKind::IncrementalAlterConfigs(
                self.handle_incremental_alter_configs(request),
            ),
            RequestKind::AlterConfigs(request) => {
                ResponseKind::AlterConfigs(self.handle_alter_configs(request))
            }
            RequestKind::DescribeLogDirs(request) => {
                ResponseKind::DescribeLogDirs(self.handle_describe_log_dirs(version, request))
            }
            RequestKind::DescribeCluster(_) => {
                ResponseKind::DescribeCluster(self.handle_describe_cluster(version))
            }
            RequestKind::DeleteRecords(request) => {
                ResponseKind::DeleteRecords(self.handle_delete_records(request))
            }
            RequestKind::InitProducerId(request) => {
                ResponseKind::InitProducerId(self.handle_init_producer_id(request))
            }
            other => {
                // The codec only lets through what api_versions::SUPPORTED lists, and every
                // listed API has a handler above; reaching this is a programming error, but a
                // client must not be able to crash the node with it.
                tracing::error!(?api_key, "no handler for advertised API: {other:?}");
                effects.push(Effect::Close {
                    connection: id.connection,
                });
                return;
            }
        };
        respond(effects, id, api_key, version, correlation_id, response);
    }

    fn handle_produce(
        &mut self,
        now: Millis,
        answer: Answer,
        request: ProduceRequest,
        crc: batch::Crc,
        effects: &mut Vec<Effect>,
    ) {
        let Answer {
            id,
            version,
            correlation_id,
        } = answer;
        let acks = request.acks;
        let request_timeout_ms = request.timeout_ms;
        let mut waits = Vec::new();
        let mut any_error = false;
        let mut responses = Vec::with_capacity(request.topic_data.len());
        for topic_data in request.topic_data {
            let name = topic_data.name.to_string();
            let mut partition_responses = Vec::with_capacity(topic_data.partition_data.len());
            for data in topic_data.partition_data {
                let outcome = if !matches!(acks, -1..=1) {
                    PartitionOutcome::Failed(error::INVALID_REQUIRED_ACKS)
                } else if request.transactional_id.is_some() {
                    // Transactions need the transaction coordinator, which Karst lacks.
                    PartitionOutcome::Failed(error::TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
                } else {
                    self.produce_partition(&name, data.index, data.records, acks, crc, now)
                };
                let mut response = PartitionProduceResponse::default().with_index(data.index);
                if version >= 5 {
                    response.log_start_offset = self
                        .topics
                        .get(&name)
                        .and_then(|topic| topic.partitions.get(data.index as usize))
                        .map_or(-1, |partition| partition.log.log_start_offset());
                }
                match outcome {
                    PartitionOutcome::Written {
                        base_offset,
                        log_append_time,
                        wait,
                    } => {
                        response.base_offset = base_offset;
                        response.log_append_time_ms = log_append_time;
                        waits.extend(wait.map(|(log, needed)| DurableWait {
                            log,
                            needed,
                            topic: name.clone(),
                        }));
                    }
                    PartitionOutcome::Duplicate {
                        base_offset,
                        log_append_time,
                        wait,
                    } => {
                        response.base_offset = base_offset;
                        response.log_append_time_ms = log_append_time;
                        waits.extend(wait.map(|(log, needed)| DurableWait {
                            log,
                            needed,
                            topic: name.clone(),
                        }));
                    }
                    PartitionOutcome::Failed(code) => {
                        any_error = true;
                        response.error_code = code;
                        response.base_offset = -1;
                    }
                }
                partition_responses.push(response);
            }
            responses.push(
                TopicProduceResponse::default()
                    .with_name(topic_data.name)
                    .with_partition_responses(partition_responses),
            );
        }
        if acks == 0 {
            // Kafka sends nothing for acks=0, and closes the connection on an error so the
            // producer notices (it refreshes metadata and reconnects).
            if any_error {
                effects.push(Effect::Close {
                    connection: id.connection,
                });
            } else {
                effects.push(Effect::NoResponse { id });
            }
            return;
        }
        let response = ProduceResponse::default().with_responses(responses);
        if waits.is_empty() {
            respond(
                effects,
                id,
                ApiKey::Produce,
                version,
                correlation_id,
                ResponseKind::Produce(response),
            );
        } else if self.parked_produces.len() >= MAX_PARKED_PRODUCES {
            let mut response = response;
            for topic in response.responses.iter_mut() {
                for partition in topic.partition_responses.iter_mut() {
                    partition.error_code = error::REQUEST_TIMED_OUT;
                }
            }
            respond(
                effects,
                id,
                ApiKey::Produce,
                version,
                correlation_id,
                ResponseKind::Produce(response),
            );
        } else {
            self.parked_produces.push(ParkedProduce {
                id,
                correlation_id,
                api_version: version,
                response,
                waits,
                // Kafka's produce timeout_ms bounds the wait for durability (a hung disk
                // answers REQUEST_TIMED_OUT instead of never).
                deadline: now.saturating_add(i64::from(request_timeout_ms.max(0))),
            });
        }
    }

    fn produce_partition(
        &mut self,
        name: &str,
        index: i32,
        records: Option<Bytes>,
        acks: i16,
        crc: batch::Crc,
        now: Millis,
    ) -> PartitionOutcome {
        if super::is_internal_topic(name) {
            // Only the node writes internal topics (Kafka: INVALID_TOPIC_EXCEPTION).
            return PartitionOutcome::Failed(error::INVALID_TOPIC_EXCEPTION);
        }
        let max_message_bytes = match self.topics.get(name) {
            Some(topic) if (0..topic.partitions.len() as i32).contains(&index) => {
                topic.config.max_message_bytes(&self.config)
            }
            _ => return PartitionOutcome::Failed(error::UNKNOWN_TOPIC_OR_PARTITION),
        };
        let topic = self.topics.get_mut(name).expect("checked above");
        let log_id = LogId {
            topic_id: topic.id,
            partition: index,
        };
        let partition = &mut topic.partitions[index as usize];
        if partition.offline {
            return PartitionOutcome::Failed(error::KAFKA_STORAGE_ERROR);
        }
        let Some(records) = records.filter(|records| !records.is_empty()) else {
            return PartitionOutcome::Failed(error::CORRUPT_MESSAGE);
        };
        // Walk the batch headers (no per-record work): extents, sizes, producer fields.
        let mut headers: Vec<BatchHeader> = Vec::with_capacity(1);
        let mut position = 0usize;
        while position < records.len() {
            let header = match batch::parse_header(&records[position..]) {
                Ok(header) => header,
                Err(BatchError::UnsupportedMagic(_)) => {
                    return PartitionOutcome::Failed(error::UNSUPPORTED_FOR_MESSAGE_FORMAT)
                }
                Err(_) => return PartitionOutcome::Failed(error::CORRUPT_MESSAGE),
            };
            if header.total_size() > max_message_bytes.max(0) as usize {
                return PartitionOutcome::Failed(error::MESSAGE_TOO_LARGE);
            }
            if position + header.total_size() > records.len() {
                return PartitionOutcome::Failed(error::CORRUPT_MESSAGE);
            }
            if header.is_transactional() || header.is_control() {
                return PartitionOutcome::Failed(error::TRANSACTIONAL_ID_AUTHORIZATION_FAILED);
            }
            position += header.total_size();
            headers.push(header);
        }
        // Idempotence (KIP-98): a retried batch is acknowledged with its original offsets.
        if let [header] = headers.as_slice() {
            match partition.producers.check(header) {
                SequenceCheck::Append => {}
                SequenceCheck::Duplicate(cached) => {
                    // The retry is the same batch, so its last offset delta is the original's.
                    let needed = cached.base_offset + i64::from(header.last_offset_delta) + 1;
                    let wait = (acks == -1
                        && partition.log.config().flush == FlushPolicy::Durable
                        && partition.log.durable_offset() < needed)
                        .then_some((log_id, needed));
                    return PartitionOutcome::Duplicate {
                        base_offset: cached.base_offset,
                        log_append_time: cached.log_append_time,
                        wait,
                    };
                }
                SequenceCheck::Reject(code) => return PartitionOutcome::Failed(code),
            }
        } else {
            let mut provisional = partition.producers.clone();
            for header in &headers {
                match provisional.check(header) {
                    SequenceCheck::Append => provisional.record(header),
                    SequenceCheck::Duplicate(_) => {
                        return PartitionOutcome::Failed(error::DUPLICATE_SEQUENCE_NUMBER)
                    }
                    SequenceCheck::Reject(code) => return PartitionOutcome::Failed(code),
                }
            }
        }
        // The records are a slice of the request frame, normally shared with the request's
        // other partitions: the log writes them as they are and then the assigned base
        // offsets, so they are never copied. Bytes nothing else holds are rewritten in place
        // and written once.
        let visible_before = partition.high_watermark();
        let appended = match records.try_into_mut() {
            Ok(mut owned) => partition.log.append_with(&mut owned, now, crc),
            Err(shared) => partition.log.append_shared_with(&shared, now, crc),
        };
        let info = match appended {
            Ok(info) => info,
            Err(err) => {
                tracing::debug!(topic = name, partition = index, "append refused: {err}");
                return PartitionOutcome::Failed(append_error_code(&err));
            }
        };
        for header in &info.batches {
            partition.producers.record(header);
        }
        if partition.high_watermark() > visible_before {
            self.grown.insert(log_id);
        }
        self.touched.insert(log_id);
        let wait = (acks == -1
            && partition.log.config().flush == FlushPolicy::Durable
            && partition.log.durable_offset() <= info.last_offset)
            .then_some((log_id, info.last_offset + 1));
        PartitionOutcome::Written {
            base_offset: info.base_offset,
            log_append_time: info.log_append_time.unwrap_or(-1),
            wait,
        }
    }

    /// Answers parked produces whose every wait is now settled.
    pub(crate) fn release_durable_produces(&mut self, effects: &mut Vec<Effect>) {
        for mut produce in std::mem::take(&mut self.parked_produces) {
            self.settle_waits(&mut produce);
            if produce.waits.is_empty() {
                produce.answer(effects);
            } else {
                self.parked_produces.push(produce);
            }
        }
    }

    /// Answers REQUEST_TIMED_OUT for the partitions of produces whose timeout_ms passed before
    /// their records became durable (Kafka's expired delayed produce). The records stay in the
    /// log and may still become durable: the outcome is unknown to the producer, which retries
    /// (idempotent producers are answered from the sequence cache).
    pub(crate) fn expire_parked_produces(&mut self, now: Millis, effects: &mut Vec<Effect>) {
        for mut produce in std::mem::take(&mut self.parked_produces) {
            if produce.deadline > now {
                self.parked_produces.push(produce);
                continue;
            }
            self.settle_waits(&mut produce);
            for wait in std::mem::take(&mut produce.waits) {
                produce.fail_partition(&wait.topic, wait.log.partition, error::REQUEST_TIMED_OUT);
            }
            produce.answer(effects);
        }
    }

    /// Fsync of `log` failed: everything parked on it is answered KAFKA_STORAGE_ERROR.
    pub(crate) fn fail_parked_produces(&mut self, log: LogId, effects: &mut Vec<Effect>) {
        for mut produce in std::mem::take(&mut self.parked_produces) {
            if let Some(wait) = produce.waits.iter().find(|wait| wait.log == log) {
                let topic = wait.topic.clone();
                produce.fail_partition(&topic, log.partition, error::KAFKA_STORAGE_ERROR);
                produce.waits.retain(|wait| wait.log != log);
                if produce.waits.is_empty() {
                    produce.answer(effects);
                    continue;
                }
            }
            self.parked_produces.push(produce);
        }
    }

    /// Drops the waits of `produce` that are over: durable ones, and those of a deleted topic,
    /// whose partition is answered UNKNOWN_TOPIC_OR_PARTITION (its records were never durable).
    fn settle_waits(&mut self, produce: &mut ParkedProduce) {
        let mut deleted = Vec::new();
        produce
            .waits
            .retain(|wait| match self.partition_mut(wait.log) {
                Some(partition) => partition.log.durable_offset() < wait.needed,
                None => {
                    deleted.push((wait.topic.clone(), wait.log.partition));
                    false
                }
            });
        for (topic, partition) in deleted {
            produce.fail_partition(&topic, partition, error::UNKNOWN_TOPIC_OR_PARTITION);
        }
    }

    fn handle_fetch(
        &mut self,
        now: Millis,
        id: RequestId,
        version: i16,
        correlation_id: i32,
        request: FetchRequest,
        effects: &mut Vec<Effect>,
    ) {
        // Fetch sessions (KIP-227) are declined: a sessionless full fetch is answered with
        // session id 0; an incremental fetch on a session we never created is refused.
        if request.session_id != 0 {
            let response = FetchResponse::default()
                .with_error_code(error::FETCH_SESSION_ID_NOT_FOUND)
                .with_session_id(0);
            respond(
                effects,
                id,
                ApiKey::Fetch,
                version,
                correlation_id,
                ResponseKind::Fetch(response),
            );
            return;
        }
        let (response, bytes, any_error) = self.build_fetch_response(version, &request);
        let satisfied = any_error
            || request.max_wait_ms <= 0
            || bytes >= request.min_bytes.max(1) as usize
            || self.parked_fetches.len() >= MAX_PARKED_FETCHES;
        if satisfied {
            respond(
                effects,
                id,
                ApiKey::Fetch,
                version,
                correlation_id,
                ResponseKind::Fetch(response),
            );
        } else {
            let deadline = now.saturating_add(request.max_wait_ms as i64);
            self.parked_fetches.push(ParkedFetch {
                id,
                correlation_id,
                api_version: version,
                request,
                deadline,
            });
        }
    }

    /// Re-evaluates parked fetches that read one of the `grown` logs.
    pub(crate) fn wake_fetches(
        &mut self,
        _now: Millis,
        grown: &std::collections::BTreeSet<LogId>,
        effects: &mut Vec<Effect>,
    ) {
        let parked = std::mem::take(&mut self.parked_fetches);
        for fetch in parked {
            let reads_grown = fetch.request.topics.iter().any(|topic| {
                let topic_id = if fetch.api_version >= 13 {
                    Some(topic.topic_id)
                } else {
                    self.topics.get(topic.topic.as_str()).map(|t| t.id)
                };
                topic_id.is_some_and(|topic_id| {
                    topic.partitions.iter().any(|partition| {
                        grown.contains(&LogId {
                            topic_id,
                            partition: partition.partition,
                        })
                    })
                })
            });
            if !reads_grown {
                self.parked_fetches.push(fetch);
                continue;
            }
            let (response, bytes, any_error) =
                self.build_fetch_response(fetch.api_version, &fetch.request);
            if any_error || bytes >= fetch.request.min_bytes.max(1) as usize {
                respond(
                    effects,
                    fetch.id,
                    ApiKey::Fetch,
                    fetch.api_version,
                    fetch.correlation_id,
                    ResponseKind::Fetch(response),
                );
            } else {
                self.parked_fetches.push(fetch);
            }
        }
    }

    /// Builds a fetch response from the logs: (response, record bytes, whether any partition
    /// has an error). The response's max_bytes is soft as in KIP-74: the first batch is always
    /// returned whole.
    pub(crate) fn build_fetch_response(
        &self,
        version: i16,
        request: &FetchRequest,
    ) -> (FetchResponse, usize, bool) {
        let mut remaining = request.max_bytes.max(0) as usize;
        let mut total = 0usize;
        let mut any_error = false;
        let mut responses = Vec::with_capacity(request.topics.len());
        for fetch_topic in &request.topics {
            let topic = if version >= 13 {
                self.topic_names_by_id
                    .get(&fetch_topic.topic_id)
                    .and_then(|name| self.topics.get(name))
            } else {
                self.topics.get(fetch_topic.topic.as_str())
            };
            let unknown_topic_code = if version >= 13 {
                error::UNKNOWN_TOPIC_ID
            } else {
                error::UNKNOWN_TOPIC_OR_PARTITION
            };
            let mut partitions = Vec::with_capacity(fetch_topic.partitions.len());
            for wanted in &fetch_topic.partitions {
                let mut data = PartitionData::default()
                    .with_partition_index(wanted.partition)
                    .with_high_watermark(-1)
                    .with_last_stable_offset(-1)
                    .with_aborted_transactions(Some(Vec::new()))
                    .with_records(Some(Bytes::new()));
                let partition =
                    topic.and_then(|topic| topic.partitions.get(wanted.partition as usize));
                let Some(partition) = partition.filter(|_| wanted.partition >= 0) else {
                    data.error_code = if topic.is_some() {
                        error::UNKNOWN_TOPIC_OR_PARTITION
                    } else {
                        unknown_topic_code
                    };
                    any_error = true;
                    partitions.push(data);
                    continue;
                };
                if partition.offline {
                    data.error_code = error::KAFKA_STORAGE_ERROR;
                    any_error = true;
                    partitions.push(data);
                    continue;
                }
                let high_watermark = partition.high_watermark();
                data.high_watermark = high_watermark;
                data.last_stable_offset = high_watermark;
                if version >= 5 {
                    data.log_start_offset = partition.log.log_start_offset();
                }
                let limit = (wanted.partition_max_bytes.max(0) as usize).min(remaining);
                let fetch_offset = wanted.fetch_offset;
                // The high watermark, except in the simulation build with the injected
                // serve-above-high-watermark bug, which reads up to the log end.
                let read_limit = crate::buggify::injected_read_limit(
                    high_watermark,
                    partition.log.log_end_offset(),
                );
                if fetch_offset < partition.log.log_start_offset() || fetch_offset > high_watermark
                {
                    // Above the high watermark but within the log (durable policy, not yet
                    // synced) is not out of range: there is simply nothing to return yet.
                    if fetch_offset < partition.log.log_start_offset()
                        || fetch_offset > partition.log.log_end_offset()
                    {
                        data.error_code = error::OFFSET_OUT_OF_RANGE;
                        any_error = true;
                    }
                } else if fetch_offset < read_limit && (limit > 0 || total == 0) {
                    match partition.log.read(fetch_offset, limit.max(1), read_limit) {
                        Ok(records) => {
                            total += records.len();
                            remaining = remaining.saturating_sub(records.len());
                            data.records = Some(records);
                        }
                        Err(err) => {
                            if err.error_code() != error::OFFSET_OUT_OF_RANGE {
                                tracing::error!("fetch read failed: {err}");
                            }
                            data.error_code = err.error_code();
                            any_error = true;
                        }
                    }
                }
                if data.error_code != error::NONE {
                    // As Kafka's ReplicaManager answers a partition whose read failed: the
                    // offsets are unknown (-1), not the partition's current ones.
                    data.high_watermark = -1;
                    data.last_stable_offset = -1;
                    data.log_start_offset = -1;
                }
                partitions.push(data);
            }
            let mut response = FetchableTopicResponse::default().with_partitions(partitions);
            if version >= 13 {
                response.topic_id = fetch_topic.topic_id;
            } else {
                response.topic = fetch_topic.topic.clone();
            }
            responses.push(response);
        }
        let response = FetchResponse::default().with_responses(responses);
        (response, total, any_error)
    }

    fn handle_list_offsets(
        &self,
        version: i16,
        request: ListOffsetsRequest,
    ) -> ListOffsetsResponse {
        let mut topics = Vec::with_capacity(request.topics.len());
        for wanted_topic in request.topics {
            let topic = self.topics.get(wanted_topic.name.as_str());
            let mut partitions = Vec::with_capacity(wanted_topic.partitions.len());
            for wanted in wanted_topic.partitions {
                let mut response = ListOffsetsPartitionResponse::default()
                    .with_partition_index(wanted.partition_index)
                    .with_timestamp(-1)
                    .with_offset(-1);
                if version >= 4 {
                    response.leader_epoch = 0;
                }
                let Some(partition) = topic
                    .and_then(|topic| topic.partitions.get(wanted.partition_index as usize))
                    .filter(|_| wanted.partition_index >= 0)
                else {
                    response.error_code = error::UNKNOWN_TOPIC_OR_PARTITION;
                    partitions.push(response);
                    continue;
                };
                let high_watermark = partition.high_watermark();
                match wanted.timestamp {
                    LATEST_TIMESTAMP => response.offset = high_watermark,
                    EARLIEST_TIMESTAMP => response.offset = partition.log.log_start_offset(),
                    MAX_TIMESTAMP => {
                        if let Some((timestamp, offset)) = partition.log.max_timestamp() {
                            if offset < high_watermark {
                                response.timestamp = timestamp;
                                response.offset = offset;
                            }
                        }
                    }
                    timestamp if timestamp < 0 => {
                        response.error_code = error::INVALID_REQUEST;
                    }
                    timestamp => match partition.log.offset_for_timestamp(timestamp) {
                        Ok(Some((offset, found))) if offset < high_watermark => {
                            response.offset = offset;
                            response.timestamp = found;
                        }
                        Ok(_) => {}
                        Err(err) => {
                            // CORRUPT_MESSAGE for a rotted batch, as Kafka's ListOffsets
                            // answers a CorruptRecordException; KAFKA_STORAGE_ERROR for I/O.
                            tracing::error!("offset for timestamp failed: {err}");
                            response.error_code = err.error_code();
                        }
                    },
                }
                partitions.push(response);
            }
            topics.push(
                ListOffsetsTopicResponse::default()
                    .with_name(wanted_topic.name)
                    .with_partitions(partitions),
            );
        }
        ListOffsetsResponse::default().with_topics(topics)
    }

    fn handle_delete_records(&mut self, request: DeleteRecordsRequest) -> DeleteRecordsResponse {
        let mut topics = Vec::with_capacity(request.topics.len());
        for wanted_topic in request.topics {
            let mut partitions = Vec::with_capacity(wanted_topic.partitions.len());
            for wanted in wanted_topic.partitions {
                let mut result = DeleteRecordsPartitionResult::default()
                    .with_partition_index(wanted.partition_index)
                    .with_low_watermark(-1);
                let internal = super::is_internal_topic(wanted_topic.name.as_str());
                let partition = self
                    .topics
                    .get_mut(wanted_topic.name.as_str())
                    .and_then(|topic| topic.partitions.get_mut(wanted.partition_index as usize))
                    .filter(|_| wanted.partition_index >= 0);
                match partition {
                    None => result.error_code = error::UNKNOWN_TOPIC_OR_PARTITION,
                    Some(_) if internal => result.error_code = error::INVALID_TOPIC_EXCEPTION,
                    Some(partition) => {
                        let high_watermark = partition.high_watermark();
                        // -1 means "up to the high watermark".
                        let offset = if wanted.offset == -1 {
                            high_watermark
                        } else {
                            wanted.offset
                        };
                        if offset < 0 || offset > high_watermark {
                            result.error_code = error::OFFSET_OUT_OF_RANGE;
                        } else {
                            match partition.log.delete_records_before(offset) {
                                Ok(low_watermark) => result.low_watermark = low_watermark,
                                Err(err) => {
                                    tracing::error!("delete records failed: {err}");
                                    result.error_code = error::KAFKA_STORAGE_ERROR;
                                }
                            }
                        }
                    }
                }
                partitions.push(result);
            }
            topics.push(
                DeleteRecordsTopicResult::default()
                    .with_name(wanted_topic.name)
                    .with_partitions(partitions),
            );
        }
        DeleteRecordsResponse::default().with_topics(topics)
    }

    fn handle_init_producer_id(
        &mut self,
        request: InitProducerIdRequest,
    ) -> InitProducerIdResponse {
        let response = InitProducerIdResponse::default();
        if request.transactional_id.is_some() {
            // Transactions need a transaction coordinator, which Karst does not have yet.
            return response.with_error_code(error::COORDINATOR_NOT_AVAILABLE);
        }
        // KIP-360: a producer that already has an id may ask to bump its epoch.
        let known = request.producer_id.0 >= 0
            && request.producer_id.0 < self.next_producer_id
            && request.producer_epoch >= 0
            && request.producer_epoch < i16::MAX - 1;
        if known {
            return response
                .with_producer_id(request.producer_id)
                .with_producer_epoch(request.producer_epoch + 1);
        }
        // The block must be durable before any of its ids is handed out, or a restart could
        // hand the same id to another producer (KIP-730: blocks are never reused).
        if !self.reserve_producer_ids() {
            return response.with_error_code(error::COORDINATOR_NOT_AVAILABLE);
        }
        let producer_id = self.next_producer_id;
        self.next_producer_id += 1;
        response
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(0)
    }
}

fn append_error_code(err: &AppendError) -> i16 {
    err.error_code()
}
