//! The consumer's fetch pipeline: positions resolved, Fetch requests sent, their results
//! buffered. [`Consumer::poll`] drives it; everything here runs inside a poll or in the
//! background tasks it starts.
//!
//! Contract:
//! - A partition without a position is resolved by ListOffsets at its leader (earliest,
//!   latest, a timestamp), or first by the group's committed offset (see
//!   `consumer_group.rs`); one ListOffsets and one metadata refresh at a time run in the
//!   background, and their results come back as `Completion`s asked under an assignment
//!   epoch (an older epoch's result is dropped).
//! - One Fetch in flight per leader while the buffer is below `max_buffered_bytes`. Fetch goes
//!   up to v16 (topics by id from v13, ids from Metadata; by name up to v12 when an id is
//!   unknown). A partition without a known leader backs off and asks for a refresh, so
//!   refreshes come no faster than the back-off.
//! - A fetch result is applied only if the partition's position still is the offset asked;
//!   positions advance past control batches and records below the fetch offset.
//!   NOT_LEADER / UNKNOWN_TOPIC / lost connections refresh metadata and back off;
//!   OFFSET_OUT_OF_RANGE applies `auto.offset.reset`; a batch that fails validation or a
//!   CORRUPT_MESSAGE answer is [`ClientError::CorruptRecord`] with the position unchanged.
//! - [`list_offsets`] is also the admin's and the CLI's ListOffsets.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::time::Instant;

use super::{
    Completion, Consumer, ConsumerRecord, FetchResult, OffsetReset, Reset, EARLIEST_TIMESTAMP,
    FETCH_BY_NAME_VERSION_CAP, FETCH_VERSION_CAP, LATEST_TIMESTAMP, LIST_OFFSETS_VERSION_CAP,
    OFFSET_OUT_OF_RANGE,
};
use crate::client::cluster::Cluster;
use crate::client::records::decode_batches;
use crate::client::{backoff_ms, ClientError, Result, TopicPartition};

impl Consumer {
    /// Starts what resolving positions needs: committed offsets by OffsetFetch, the rest by
    /// ListOffsets at each leader (in background tasks, see [`Consumer::poll`]).
    pub(super) fn resolve_positions(&mut self) -> Result<()> {
        self.resolve_committed();
        if self.offsets_in_flight {
            return Ok(());
        }
        let mut now = None;
        let wanted: Vec<(TopicPartition, i64)> = self
            .positions
            .iter()
            .filter(|(_, p)| {
                p.offset.is_none()
                    && p.reset != Some(Reset::Committed)
                    && p.not_before
                        .is_none_or(|t| t <= *now.get_or_insert_with(Instant::now))
            })
            .map(|(tp, p)| {
                let timestamp = match p.reset {
                    Some(Reset::Earliest) => Ok(EARLIEST_TIMESTAMP),
                    Some(Reset::Latest) => Ok(LATEST_TIMESTAMP),
                    Some(Reset::Timestamp(ts)) => Ok(ts),
                    Some(Reset::Committed) | None => Err(ClientError::InvalidArgument(format!(
                        "{tp} has no position and auto.offset.reset is none"
                    ))),
                };
                timestamp.map(|ts| (tp.clone(), ts))
            })
            .collect::<Result<_>>()?;
        if wanted.is_empty() {
            return Ok(());
        }
        // list_offsets refreshes metadata itself for partitions without a known leader.
        tracing::debug!(
            client = %self.config.client.client_id,
            epoch = self.epoch,
            "ListOffsets: {wanted:?}"
        );
        self.offsets_in_flight = true;
        let cluster = self.cluster.clone();
        let tx = self.results_tx.clone();
        let epoch = self.epoch;
        let isolation_level = self.config.isolation_level;
        tokio::spawn(async move {
            let results = list_offsets(&cluster, &wanted, isolation_level).await;
            let _ = tx.send(Completion::Offsets { epoch, results }).await;
        });
        Ok(())
    }

    pub(super) fn apply_offsets(
        &mut self,
        results: Vec<(TopicPartition, Result<(i64, i64)>)>,
    ) -> Result<()> {
        for (tp, result) in results {
            let Some(p) = self.positions.get_mut(&tp) else {
                continue;
            };
            if p.offset.is_some() {
                continue;
            }
            match result {
                Ok((offset, _)) if offset >= 0 => {
                    p.offset = Some(offset);
                    p.reset = None;
                    p.failures = 0;
                    p.not_before = None;
                }
                Ok(_) => {
                    // No record at or after the timestamp: start at the end (Kafka's rule).
                    p.reset = Some(Reset::Latest);
                }
                Err(e) if e.is_retriable() => {
                    self.metadata_wanted |= e.needs_metadata_refresh();
                    let pause = backoff_ms(&self.config.client, p.failures);
                    p.failures += 1;
                    p.not_before = Some(Instant::now() + Duration::from_millis(pause));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Starts a metadata refresh of the assigned topics unless one is under way.
    fn request_metadata(&mut self) {
        if self.metadata_in_flight {
            return;
        }
        self.metadata_wanted = false;
        self.metadata_in_flight = true;
        let topics: BTreeSet<String> = self.positions.keys().map(|tp| tp.topic.clone()).collect();
        let topics: Vec<String> = topics.into_iter().collect();
        let cluster = self.cluster.clone();
        let tx = self.results_tx.clone();
        tokio::spawn(async move {
            let result = cluster.refresh_metadata(&topics).await;
            let _ = tx.send(Completion::Metadata(result)).await;
        });
    }

    /// Sends a Fetch to every leader that has no fetch in flight.
    pub(super) fn send_fetches(&mut self) {
        if self.buffered_bytes >= self.config.max_buffered_bytes {
            return;
        }
        if self.metadata_wanted {
            self.request_metadata();
        }
        let mut now = None;
        let mut by_node: BTreeMap<i32, Vec<(TopicPartition, i64)>> = BTreeMap::new();
        let mut leaderless = Vec::new();
        for (tp, p) in &self.positions {
            let Some(offset) = p.offset else { continue };
            if p.not_before
                .is_some_and(|t| t > *now.get_or_insert_with(Instant::now))
            {
                continue;
            }
            match self.cluster.leader_for(tp) {
                Some((leader, _)) if !self.in_flight.contains(&leader) => {
                    by_node
                        .entry(leader)
                        .or_default()
                        .push((tp.clone(), offset));
                }
                Some(_) => {}
                None => leaderless.push(tp.clone()),
            }
        }
        // A partition without a leader waits for the refresh under way (its completion wakes
        // the poll); with none under way it backs off and asks for one, so refreshes come no
        // faster than the back-off.
        if !leaderless.is_empty() && !self.metadata_in_flight {
            for tp in &leaderless {
                self.back_off(tp);
            }
            self.request_metadata();
        }
        for (node_id, asked) in by_node {
            let request = self.fetch_request(&asked);
            // Topic ids of this request's topics, to name the topics of a v13+ response.
            let mut ids: BTreeMap<uuid::Uuid, String> = BTreeMap::new();
            for t in &request.topics {
                ids.insert(t.topic_id, t.topic.0.to_string());
            }
            let cap = if ids.contains_key(&uuid::Uuid::nil()) {
                FETCH_BY_NAME_VERSION_CAP
            } else {
                FETCH_VERSION_CAP
            };
            tracing::trace!(
                client = %self.config.client.client_id,
                node_id,
                epoch = self.epoch,
                "fetch sent: {asked:?}"
            );
            self.in_flight.insert(node_id);
            let cluster = self.cluster.clone();
            let tx = self.results_tx.clone();
            let epoch = self.epoch;
            tokio::spawn(async move {
                let result = async {
                    let conn = cluster.connection(node_id).await?;
                    let mut response = conn.send(&request, cap).await?;
                    for topic in &mut response.responses {
                        if topic.topic.0.is_empty() {
                            if let Some(name) = ids.get(&topic.topic_id) {
                                topic.topic = TopicName(StrBytes::from_string(name.clone()));
                            }
                        }
                    }
                    Ok(response)
                }
                .await;
                let _ = tx
                    .send(Completion::Fetch(FetchResult {
                        node_id,
                        epoch,
                        asked,
                        result,
                    }))
                    .await;
            });
        }
    }

    /// The topic's id in the cluster metadata (nil while unknown), cached per metadata
    /// generation.
    fn topic_id(&mut self, topic: &str) -> uuid::Uuid {
        let generation = self.cluster.metadata_generation();
        if generation != self.topic_ids_generation {
            self.topic_ids.clear();
            self.topic_ids_generation = generation;
        }
        if let Some(id) = self.topic_ids.get(topic) {
            return *id;
        }
        let id = self
            .cluster
            .topic(topic)
            .map_or(uuid::Uuid::nil(), |m| m.topic_id);
        self.topic_ids.insert(topic.to_string(), id);
        id
    }

    fn fetch_request(&mut self, asked: &[(TopicPartition, i64)]) -> FetchRequest {
        let mut topics: Vec<FetchTopic> = Vec::new();
        for (tp, offset) in asked {
            let partition = FetchPartition::default()
                .with_partition(tp.partition)
                .with_current_leader_epoch(-1)
                .with_fetch_offset(*offset)
                .with_last_fetched_epoch(-1)
                .with_log_start_offset(-1)
                .with_partition_max_bytes(self.config.max_partition_fetch_bytes);
            match topics.last_mut() {
                Some(t) if t.topic.0.as_str() == tp.topic.as_str() => t.partitions.push(partition),
                _ => topics.push(
                    FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(tp.topic.clone())))
                        .with_topic_id(self.topic_id(&tp.topic))
                        .with_partitions(vec![partition]),
                ),
            }
        }
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(self.config.fetch_max_wait_ms)
            .with_min_bytes(self.config.fetch_min_bytes)
            .with_max_bytes(self.config.fetch_max_bytes)
            .with_isolation_level(self.config.isolation_level)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(topics)
    }

    pub(super) fn handle_fetch_result(&mut self, result: FetchResult) -> Result<()> {
        self.in_flight.remove(&result.node_id);
        tracing::trace!(
            client = %self.config.client.client_id,
            node_id = result.node_id,
            epoch = result.epoch,
            current = self.epoch,
            ok = result.result.is_ok(),
            "fetch completed"
        );
        if result.epoch != self.epoch {
            return Ok(());
        }
        let response = match result.result {
            Ok(response) => response,
            Err(e) => {
                tracing::debug!("fetch from node {} failed: {e}", result.node_id);
                self.metadata_wanted |= e.needs_metadata_refresh();
                if !e.is_retriable() {
                    return Err(e);
                }
                for (tp, _) in &result.asked {
                    self.back_off(tp);
                }
                return Ok(());
            }
        };
        if let Some(e) = ClientError::from_code(response.error_code, None) {
            if !e.is_retriable() {
                return Err(e);
            }
            for (tp, _) in &result.asked {
                self.back_off(tp);
            }
            return Ok(());
        }
        let mut decoded = Vec::new();
        for topic in &response.responses {
            for pd in &topic.partitions {
                let tp = TopicPartition::new(topic.topic.0.as_str(), pd.partition_index);
                let Some(asked_offset) =
                    result.asked.iter().find(|(t, _)| *t == tp).map(|(_, o)| *o)
                else {
                    continue;
                };
                let Some(position) = self.positions.get(&tp) else {
                    continue;
                };
                if position.offset != Some(asked_offset) {
                    continue;
                }
                if pd.error_code != 0 {
                    let error = ClientError::from_code(pd.error_code, None).expect("non-zero");
                    if pd.error_code == OFFSET_OUT_OF_RANGE {
                        let reset = match self.config.auto_offset_reset {
                            OffsetReset::Earliest => Reset::Earliest,
                            OffsetReset::Latest => Reset::Latest,
                            OffsetReset::None => {
                                return Err(ClientError::InvalidArgument(format!(
                                    "{tp}: offset {asked_offset} out of range and \
                                     auto.offset.reset is none"
                                )))
                            }
                        };
                        let p = self.positions.get_mut(&tp).expect("checked");
                        p.offset = None;
                        p.reset = Some(reset);
                        continue;
                    }
                    if pd.error_code == crate::protocol::error::CORRUPT_MESSAGE {
                        // The broker cannot read the stored batch there (Kafka marks the code
                        // retriable, but rotted bytes do not heal): as Kafka's consumer throws
                        // a KafkaException for the partition at this offset, report it like a
                        // batch that fails the client's own checks; the position stays, so
                        // the application may seek past it.
                        return Err(ClientError::CorruptRecord {
                            topic: position.topic.to_string(),
                            partition: tp.partition,
                            offset: asked_offset,
                            reason: error.to_string(),
                        });
                    }
                    if !error.is_retriable() {
                        return Err(error);
                    }
                    self.metadata_wanted |= error.needs_metadata_refresh();
                    self.back_off(&tp);
                    continue;
                }
                let Some(records) = pd.records.clone() else {
                    continue;
                };
                decoded.clear();
                let summary = decode_batches(records, asked_offset, &mut decoded).map_err(|e| {
                    ClientError::CorruptRecord {
                        topic: position.topic.to_string(),
                        partition: tp.partition,
                        offset: asked_offset,
                        reason: e.to_string(),
                    }
                })?;
                let topic_name = position.topic.clone();
                let mut next = asked_offset;
                for r in decoded.drain(..) {
                    next = r.offset + 1;
                    let record = ConsumerRecord {
                        topic: topic_name.clone(),
                        partition: tp.partition,
                        offset: r.offset,
                        timestamp: r.timestamp,
                        log_append_time: r.log_append_time,
                        key: r.key,
                        value: r.value,
                        headers: r.headers,
                    };
                    self.buffered_bytes += record_bytes(&record);
                    self.buffered.push_back(record);
                }
                // Control batches and compacted gaps move the position without records.
                if let Some(after) = summary.next_offset {
                    next = next.max(after);
                }
                let p = self.positions.get_mut(&tp).expect("checked");
                p.offset = Some(next);
                p.failures = 0;
                p.not_before = None;
            }
        }
        Ok(())
    }

    pub(in crate::client) fn back_off(&mut self, tp: &TopicPartition) {
        if let Some(p) = self.positions.get_mut(tp) {
            let pause = backoff_ms(&self.config.client, p.failures);
            p.failures += 1;
            p.not_before = Some(Instant::now() + Duration::from_millis(pause));
        }
    }
}

pub(super) fn record_bytes(r: &ConsumerRecord) -> usize {
    r.key.as_ref().map_or(0, Bytes::len) + r.value.as_ref().map_or(0, Bytes::len) + 64
}

/// ListOffsets for each (partition, timestamp) at its leader: the offset and timestamp found
/// (-1, -1 when no record qualifies). `timestamp` may be [`EARLIEST_TIMESTAMP`] or
/// [`LATEST_TIMESTAMP`]. Results come back per partition.
pub async fn list_offsets(
    cluster: &Cluster,
    wanted: &[(TopicPartition, i64)],
    isolation_level: i8,
) -> Vec<(TopicPartition, Result<(i64, i64)>)> {
    let mut out = Vec::new();
    let mut by_node: BTreeMap<i32, Vec<(TopicPartition, i64)>> = BTreeMap::new();
    for (tp, ts) in wanted {
        if cluster.leader_for(tp).is_none() {
            let topics = vec![tp.topic.clone()];
            let _ = cluster.refresh_metadata(&topics).await;
        }
        match cluster.leader_for(tp) {
            Some((leader, _)) => by_node.entry(leader).or_default().push((tp.clone(), *ts)),
            None => out.push((
                tp.clone(),
                Err(cluster
                    .topic_error(&tp.topic)
                    .and_then(|c| ClientError::from_code(c, None))
                    .unwrap_or_else(|| {
                        ClientError::from_code(5, Some("no leader for the partition"))
                            .expect("non-zero")
                    })),
            )),
        }
    }
    for (node_id, parts) in by_node {
        let mut topics: Vec<ListOffsetsTopic> = Vec::new();
        for (tp, ts) in &parts {
            let p = ListOffsetsPartition::default()
                .with_partition_index(tp.partition)
                .with_current_leader_epoch(-1)
                .with_timestamp(*ts);
            match topics.last_mut() {
                Some(t) if t.name.0.as_str() == tp.topic.as_str() => t.partitions.push(p),
                _ => topics.push(
                    ListOffsetsTopic::default()
                        .with_name(TopicName(StrBytes::from_string(tp.topic.clone())))
                        .with_partitions(vec![p]),
                ),
            }
        }
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_isolation_level(isolation_level)
            .with_topics(topics);
        let response = async {
            let conn = cluster.connection(node_id).await?;
            conn.send(&request, LIST_OFFSETS_VERSION_CAP).await
        }
        .await;
        for (tp, _) in parts {
            let result = match &response {
                Err(e) => Err(e.clone()),
                Ok(r) => r
                    .topics
                    .iter()
                    .filter(|t| t.name.0.as_str() == tp.topic.as_str())
                    .flat_map(|t| t.partitions.iter())
                    .find(|p| p.partition_index == tp.partition)
                    .map_or_else(
                        || {
                            Err(ClientError::Protocol(format!(
                                "no ListOffsets result for {tp}"
                            )))
                        },
                        |p| match ClientError::from_code(p.error_code, None) {
                            Some(e) => Err(e),
                            None => Ok((p.offset, p.timestamp)),
                        },
                    ),
            };
            out.push((tp, result));
        }
    }
    out
}
