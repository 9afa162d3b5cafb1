//! Topics: Kafka's naming rules, creation (CreateTopics and auto-creation), deletion, added
//! partitions and Metadata. Their configs and DescribeCluster are in admin.rs, the persisted
//! topic registry in registry.rs.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::internal::is_internal_topic;
use super::LogId;
use super::{Broker, Partition, Topic, MAX_PARTITIONS_PER_TOPIC};
use crate::config::{TopicConfig, TOPIC_CONFIGS};
use crate::log::{LogConfig, PartitionLog};
use crate::protocol::error;
use crate::Millis;

/// Longest legal topic name (Kafka: 249, so that partition directories fit in 255 bytes).
pub const MAX_TOPIC_NAME_LENGTH: usize = 249;
/// Names reserved for Kafka's internal topics.
pub const INTERNAL_TOPICS: &[&str] = &[
    "__consumer_offsets",
    "__transaction_state",
    "__cluster_metadata",
];

/// Why a topic name is refused (Kafka's `Topic.validate` rules).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicNameError {
    #[error("topic name is empty")]
    Empty,
    #[error("topic name cannot be \".\" or \"..\"")]
    Dots,
    #[error("topic name is longer than {MAX_TOPIC_NAME_LENGTH} characters")]
    TooLong,
    #[error(
        "topic name {0:?} contains characters other than ASCII letters, digits, '.', '_' and '-'"
    )]
    IllegalCharacter(String),
    #[error("topic name {0:?} is reserved for an internal topic")]
    Reserved(String),
}

/// Checks a topic name against Kafka's rules.
pub fn validate_topic_name(name: &str) -> Result<(), TopicNameError> {
    if name.is_empty() {
        return Err(TopicNameError::Empty);
    }
    if name == "." || name == ".." {
        return Err(TopicNameError::Dots);
    }
    if name.len() > MAX_TOPIC_NAME_LENGTH {
        return Err(TopicNameError::TooLong);
    }
    if !name
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
    {
        return Err(TopicNameError::IllegalCharacter(name.to_string()));
    }
    if INTERNAL_TOPICS.contains(&name) {
        return Err(TopicNameError::Reserved(name.to_string()));
    }
    Ok(())
}

/// Kafka treats `.` and `_` alike when checking for collisions (metric names).
fn collision_key(name: &str) -> String {
    name.replace('.', "_")
}

pub(super) fn str_bytes(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

/// Data directory of one partition, as Kafka names it.
pub(crate) fn partition_dir(topic: &str, partition: i32) -> String {
    format!("{topic}-{partition}")
}

/// Why a topic could not be created.
pub(crate) struct CreateError {
    pub(crate) code: i16,
    pub(crate) message: String,
}

fn create_error(code: i16, message: impl Into<String>) -> CreateError {
    CreateError {
        code,
        message: message.into(),
    }
}

/// The answer to an admin change whose registry write failed: its outcome after a restart is
/// unknown (see `persist_registry`).
pub(crate) fn registry_write_failed(err: &std::io::Error) -> CreateError {
    create_error(
        error::KAFKA_STORAGE_ERROR,
        format!("writing the topic registry failed: {err}"),
    )
}

/// Deletes the logs of `partitions` of topic `topic` (a deleted topic's, or new ones being
/// undone), logging a failure.
fn delete_logs(topic: &str, partitions: impl IntoIterator<Item = Partition>) {
    for partition in partitions {
        if let Err(err) = partition.log.delete() {
            tracing::error!(topic, "deleting log failed: {err}");
        }
    }
}

impl Broker {
    /// Checks that a topic called `name` may be created now.
    pub(crate) fn check_new_topic_name(&self, name: &str) -> Result<(), CreateError> {
        validate_topic_name(name)
            .map_err(|err| create_error(error::INVALID_TOPIC_EXCEPTION, err.to_string()))?;
        if self.topics.contains_key(name) {
            return Err(create_error(
                error::TOPIC_ALREADY_EXISTS,
                format!("topic {name:?} already exists"),
            ));
        }
        let key = collision_key(name);
        if let Some(other) = self.topics.keys().find(|other| collision_key(other) == key) {
            return Err(create_error(
                error::INVALID_TOPIC_EXCEPTION,
                format!("topic {name:?} collides with existing topic {other:?}"),
            ));
        }
        Ok(())
    }

    fn new_topic_id(&mut self) -> uuid::Uuid {
        loop {
            let id = uuid::Builder::from_random_bytes(
                ((self.rng.next_u64() as u128) << 64 | self.rng.next_u64() as u128).to_be_bytes(),
            )
            .into_uuid();
            // Kafka reserves the zero id and the "metadata topic" id (all zeroes but the last).
            if id.as_u128() > 1 && !self.topic_names_by_id.contains_key(&id) {
                return id;
            }
        }
    }

    /// Creates a topic (already validated by the caller) with its partition logs.
    pub(crate) fn create_topic(
        &mut self,
        name: &str,
        partitions: i32,
        config: TopicConfig,
        now: Millis,
    ) -> Result<uuid::Uuid, CreateError> {
        let id = self.new_topic_id();
        let log_config = self.topic_log_config(name, &config);
        let logs = self.open_new_partitions(name, 0..partitions, &log_config, now)?;
        self.topics.insert(
            name.to_string(),
            Topic {
                name: name.to_string(),
                id,
                config,
                partitions: logs,
            },
        );
        self.topic_names_by_id.insert(id, name.to_string());
        if let Err(err) = self.persist_registry() {
            // Undone: a restart may recover the registry without the topic.
            self.topic_names_by_id.remove(&id);
            let topic = self.topics.remove(name).expect("inserted above");
            delete_logs(name, topic.partitions);
            return Err(registry_write_failed(&err));
        }
        Ok(id)
    }

    /// Opens the new, empty logs of partitions `indexes` of topic `name`. A directory left by
    /// a deleted topic of the same name (a crash between DeleteTopics' registry write and its
    /// file removal) is removed first: a new partition never inherits old records. If one
    /// fails to open, those opened before it are deleted.
    fn open_new_partitions(
        &self,
        name: &str,
        indexes: std::ops::Range<i32>,
        log_config: &LogConfig,
        now: Millis,
    ) -> Result<Vec<Partition>, CreateError> {
        let mut opened: Vec<Partition> = Vec::with_capacity(indexes.len());
        for index in indexes {
            let dir = partition_dir(name, index);
            if self.storage.list_dir(&dir).is_ok() {
                let _ = self.storage.remove_dir_all(&dir);
            }
            match PartitionLog::open(self.storage.clone(), &dir, log_config.clone(), now) {
                Ok(log) => opened.push(Partition {
                    log,
                    producers: Default::default(),
                    offline: false,
                }),
                Err(err) => {
                    delete_logs(name, opened);
                    return Err(create_error(error::KAFKA_STORAGE_ERROR, err.to_string()));
                }
            }
        }
        Ok(opened)
    }

    /// Has the new logs of `topic_id` synced at the end of this step (a request's step),
    /// while they are empty, as Kafka makes a new log directory durable when it creates it.
    /// Left to the first append, the sync would flush a file the producer is already filling,
    /// and every append behind it would wait.
    fn sync_new_logs(&mut self, topic_id: uuid::Uuid, partitions: std::ops::Range<i32>) {
        self.touched.extend(partitions.map(|partition| LogId {
            topic_id,
            partition,
        }));
    }

    /// Auto-creates `name` for Metadata (auto.create.topics.enable) and returns the error code
    /// to report: NONE if it now exists.
    pub(crate) fn auto_create(&mut self, name: &str, now: Millis) -> i16 {
        if let Err(err) = self.check_new_topic_name(name) {
            return if err.code == error::TOPIC_ALREADY_EXISTS {
                error::NONE
            } else {
                err.code
            };
        }
        let partitions = self
            .config
            .num_partitions
            .clamp(1, MAX_PARTITIONS_PER_TOPIC);
        match self.create_topic(name, partitions, TopicConfig::default(), now) {
            Ok(id) => {
                self.sync_new_logs(id, 0..partitions);
                tracing::info!(topic = name, partitions, "auto-created topic");
                error::NONE
            }
            Err(err) => err.code,
        }
    }

    fn metadata_topic(&self, topic: &Topic, version: i16) -> MetadataResponseTopic {
        let node = BrokerId(self.config.node_id);
        let partitions = (0..topic.partitions.len() as i32)
            .map(|index| {
                let mut partition = MetadataResponsePartition::default()
                    .with_partition_index(index)
                    .with_leader_id(node)
                    .with_replica_nodes(vec![node])
                    .with_isr_nodes(vec![node]);
                if version >= 7 {
                    partition.leader_epoch = 0;
                }
                partition
            })
            .collect();
        let mut response = MetadataResponseTopic::default()
            .with_name(Some(TopicName(str_bytes(&topic.name))))
            .with_is_internal(is_internal_topic(&topic.name))
            .with_partitions(partitions);
        if version >= 10 {
            response.topic_id = topic.id;
        }
        response
    }

    pub(crate) fn handle_metadata(
        &mut self,
        version: i16,
        request: MetadataRequest,
        now: Millis,
    ) -> MetadataResponse {
        let mut topics = Vec::new();
        // v0: an empty list means all topics; v1+: null means all, empty means none.
        let requested = match request.topics {
            None => None,
            Some(list) if list.is_empty() && version == 0 => None,
            Some(list) => Some(list),
        };
        match requested {
            None => {
                // Kafka lists internal topics only to clients that name them.
                for topic in self.topics.values() {
                    if !is_internal_topic(&topic.name) {
                        topics.push(self.metadata_topic(topic, version));
                    }
                }
            }
            Some(list) => {
                // v4+ lets the client forbid auto-creation; before v4 the broker decides.
                let allow_auto_create = self.config.auto_create_topics_enable
                    && (version < 4 || request.allow_auto_topic_creation);
                for wanted in list {
                    let name = match wanted.name {
                        Some(name) => name.to_string(),
                        None => match self.topic_names_by_id.get(&wanted.topic_id) {
                            Some(name) => name.clone(),
                            None => {
                                topics.push(
                                    MetadataResponseTopic::default()
                                        .with_error_code(error::UNKNOWN_TOPIC_ID)
                                        .with_topic_id(wanted.topic_id),
                                );
                                continue;
                            }
                        },
                    };
                    if !self.topics.contains_key(&name) {
                        let code = if is_internal_topic(&name) {
                            // Created by the node when first needed, never by a client.
                            error::UNKNOWN_TOPIC_OR_PARTITION
                        } else if validate_topic_name(&name).is_err() {
                            error::INVALID_TOPIC_EXCEPTION
                        } else if allow_auto_create {
                            self.auto_create(&name, now)
                        } else {
                            error::UNKNOWN_TOPIC_OR_PARTITION
                        };
                        if code != error::NONE {
                            topics.push(
                                MetadataResponseTopic::default()
                                    .with_error_code(code)
                                    .with_name(Some(TopicName(str_bytes(&name)))),
                            );
                            continue;
                        }
                    }
                    topics.push(self.metadata_topic(&self.topics[&name], version));
                }
            }
        }
        let mut broker = MetadataResponseBroker::default()
            .with_node_id(BrokerId(self.config.node_id))
            .with_host(str_bytes(&self.advertised_host))
            .with_port(self.advertised_port);
        broker.rack = None;
        let mut response = MetadataResponse::default()
            .with_brokers(vec![broker])
            .with_topics(topics);
        if version >= 1 {
            response.controller_id = BrokerId(self.config.node_id);
        }
        if version >= 2 {
            response.cluster_id = Some(str_bytes(&self.config.cluster_id));
        }
        response
    }

    pub(crate) fn handle_create_topics(
        &mut self,
        version: i16,
        request: CreateTopicsRequest,
        now: Millis,
    ) -> CreateTopicsResponse {
        let mut results = Vec::with_capacity(request.topics.len());
        let mut seen = std::collections::BTreeSet::new();
        for topic in request.topics {
            let name = topic.name.to_string();
            let mut result = CreatableTopicResult::default().with_name(topic.name.clone());
            let outcome = if !seen.insert(name.clone()) {
                Err(create_error(
                    error::INVALID_REQUEST,
                    format!("topic {name:?} appears twice in the request"),
                ))
            } else {
                self.create_one_topic(&name, &topic, request.validate_only, now)
            };
            match outcome {
                Ok((id, partitions, config)) => {
                    if version >= 7 {
                        result.topic_id = id;
                    }
                    if version >= 5 {
                        result.num_partitions = partitions;
                        result.replication_factor = 1;
                        result.configs = Some(
                            TOPIC_CONFIGS
                                .iter()
                                .filter_map(|(key, _)| {
                                    let (value, is_default) =
                                        config.effective(&self.config, key)?;
                                    Some(
                                        CreatableTopicConfigs::default()
                                            .with_name(str_bytes(key))
                                            .with_value(Some(str_bytes(&value)))
                                            .with_config_source(if is_default { 5 } else { 1 }),
                                    )
                                })
                                .collect(),
                        );
                    }
                }
                Err(err) => {
                    result.error_code = err.code;
                    if version >= 1 {
                        result.error_message = Some(StrBytes::from_string(err.message));
                    }
                    if version >= 5 {
                        result.num_partitions = -1;
                        result.replication_factor = -1;
                    }
                }
            }
            results.push(result);
        }
        CreateTopicsResponse::default().with_topics(results)
    }

    fn create_one_topic(
        &mut self,
        name: &str,
        topic: &create_topics_request::CreatableTopic,
        validate_only: bool,
        now: Millis,
    ) -> Result<(uuid::Uuid, i32, TopicConfig), CreateError> {
        self.check_new_topic_name(name)?;
        let partitions = if !topic.assignments.is_empty() {
            if topic.num_partitions != -1 || topic.replication_factor != -1 {
                return Err(create_error(
                    error::INVALID_REQUEST,
                    "both assignments and num_partitions/replication_factor given",
                ));
            }
            for (index, assignment) in topic.assignments.iter().enumerate() {
                if assignment.partition_index != index as i32
                    || assignment.broker_ids != [BrokerId(self.config.node_id)]
                {
                    return Err(create_error(
                        error::INVALID_REPLICA_ASSIGNMENT,
                        "each partition must be assigned to this node only, in order",
                    ));
                }
            }
            topic.assignments.len() as i32
        } else if topic.num_partitions == -1 {
            self.config.num_partitions
        } else {
            topic.num_partitions
        };
        if !(1..=MAX_PARTITIONS_PER_TOPIC).contains(&partitions) {
            return Err(create_error(
                error::INVALID_PARTITIONS,
                format!("number of partitions must be between 1 and {MAX_PARTITIONS_PER_TOPIC}"),
            ));
        }
        if topic.replication_factor != -1 && topic.replication_factor != 1 {
            return Err(create_error(
                error::INVALID_REPLICATION_FACTOR,
                format!(
                    "replication factor {} is larger than the 1 available broker",
                    topic.replication_factor
                ),
            ));
        }
        let mut config = TopicConfig::default();
        for entry in &topic.configs {
            let Some(value) = &entry.value else {
                continue;
            };
            config
                .set(entry.name.as_str(), value.as_str())
                .map_err(|err| create_error(error::INVALID_CONFIG, err.to_string()))?;
        }
        if validate_only {
            return Ok((uuid::Uuid::nil(), partitions, config));
        }
        let id = self.create_topic(name, partitions, config.clone(), now)?;
        self.sync_new_logs(id, 0..partitions);
        tracing::info!(topic = name, partitions, "created topic");
        Ok((id, partitions, config))
    }

    pub(crate) fn handle_delete_topics(
        &mut self,
        version: i16,
        request: DeleteTopicsRequest,
    ) -> DeleteTopicsResponse {
        // v6 addresses topics by name or id; before, by name only.
        let wanted: Vec<(Option<String>, uuid::Uuid)> = if version >= 6 {
            request
                .topics
                .into_iter()
                .map(|topic| (topic.name.map(|name| name.to_string()), topic.topic_id))
                .collect()
        } else {
            request
                .topic_names
                .into_iter()
                .map(|name| (Some(name.to_string()), uuid::Uuid::nil()))
                .collect()
        };
        let mut responses = Vec::with_capacity(wanted.len());
        for (name, topic_id) in wanted {
            let resolved = match &name {
                Some(name) => self.topics.contains_key(name).then(|| name.clone()),
                None => self.topic_names_by_id.get(&topic_id).cloned(),
            };
            let mut result = DeletableTopicResult::default();
            if version >= 6 {
                result.topic_id = topic_id;
            }
            result.name = name.as_deref().map(|name| TopicName(str_bytes(name)));
            match resolved {
                None => {
                    result.error_code = if name.is_some() {
                        error::UNKNOWN_TOPIC_OR_PARTITION
                    } else {
                        error::UNKNOWN_TOPIC_ID
                    }
                }
                Some(_) if !self.config.delete_topic_enable => {
                    result.error_code = error::TOPIC_DELETION_DISABLED
                }
                Some(resolved) if is_internal_topic(&resolved) => {
                    result.error_code = error::INVALID_TOPIC_EXCEPTION;
                    result.error_message = Some(str_bytes("internal topics cannot be deleted"));
                }
                Some(resolved) => {
                    let topic = self.topics.remove(&resolved).expect("resolved above");
                    self.topic_names_by_id.remove(&topic.id);
                    if version >= 6 {
                        result.topic_id = topic.id;
                        result.name = Some(TopicName(str_bytes(&resolved)));
                    }
                    // The registry first: a crash before the files are removed leaves
                    // directories no topic owns, which new partitions of a topic created under
                    // the name later clear (open_new_partitions); the other order brought the
                    // topic back empty.
                    // If the write fails, the topic stays deleted here (a restart may recover
                    // the registry without it, so it must take no more records) and the
                    // answer says the outcome is unknown: it may come back, empty.
                    if let Err(err) = self.persist_registry() {
                        let err = registry_write_failed(&err);
                        result.error_code = err.code;
                        result.error_message = Some(StrBytes::from_string(err.message));
                    }
                    delete_logs(&resolved, topic.partitions);
                    tracing::info!(topic = %resolved, "deleted topic");
                }
            }
            responses.push(result);
        }
        DeleteTopicsResponse::default().with_responses(responses)
    }

    pub(crate) fn handle_create_partitions(
        &mut self,
        request: CreatePartitionsRequest,
        now: Millis,
    ) -> CreatePartitionsResponse {
        let mut results = Vec::with_capacity(request.topics.len());
        for wanted in request.topics {
            let name = wanted.name.to_string();
            let outcome = self.add_partitions(&name, &wanted, request.validate_only, now);
            let mut result = CreatePartitionsTopicResult::default().with_name(wanted.name);
            if let Err(err) = outcome {
                result.error_code = err.code;
                result.error_message = Some(StrBytes::from_string(err.message));
            }
            results.push(result);
        }
        CreatePartitionsResponse::default().with_results(results)
    }

    fn add_partitions(
        &mut self,
        name: &str,
        wanted: &create_partitions_request::CreatePartitionsTopic,
        validate_only: bool,
        now: Millis,
    ) -> Result<(), CreateError> {
        let node = BrokerId(self.config.node_id);
        if is_internal_topic(name) && self.topics.contains_key(name) {
            // Adding partitions would move groups to other partitions (group -> partition is
            // a hash modulo the count), losing their committed offsets.
            return Err(create_error(
                error::INVALID_TOPIC_EXCEPTION,
                "partitions cannot be added to an internal topic",
            ));
        }
        let Some(topic) = self.topics.get_mut(name) else {
            return Err(create_error(
                error::UNKNOWN_TOPIC_OR_PARTITION,
                format!("topic {name:?} does not exist"),
            ));
        };
        let current = topic.partitions.len() as i32;
        if wanted.count <= current || wanted.count > MAX_PARTITIONS_PER_TOPIC {
            return Err(create_error(
                error::INVALID_PARTITIONS,
                format!(
                    "topic has {current} partitions; the new count must be larger and at most {MAX_PARTITIONS_PER_TOPIC}"
                ),
            ));
        }
        if let Some(assignments) = &wanted.assignments {
            if assignments.len() as i32 != wanted.count - current
                || assignments.iter().any(|a| a.broker_ids != [node])
            {
                return Err(create_error(
                    error::INVALID_REPLICA_ASSIGNMENT,
                    "each new partition must be assigned to this node only",
                ));
            }
        }
        if validate_only {
            return Ok(());
        }
        let log_config = topic.config.log_config(&self.config);
        let topic_id = topic.id;
        let new = self.open_new_partitions(name, current..wanted.count, &log_config, now)?;
        self.topics
            .get_mut(name)
            .expect("present above")
            .partitions
            .extend(new);
        if let Err(err) = self.persist_registry() {
            // Undone: a restart may recover the registry with the old count.
            let topic = self.topics.get_mut(name).expect("present above");
            delete_logs(name, topic.partitions.drain(current as usize..));
            return Err(registry_write_failed(&err));
        }
        self.sync_new_logs(topic_id, current..wanted.count);
        Ok(())
    }
}
