//! Admin requests that describe or change what exists: DescribeConfigs, IncrementalAlterConfigs
//! and AlterConfigs for topic configs, DescribeLogDirs and DescribeCluster.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::internal::is_internal_topic;
use super::topics::{registry_write_failed, str_bytes};
use super::{Broker, Topic};
use crate::config::{TopicConfig, TOPIC_CONFIGS};
use crate::protocol::error;

impl Broker {
    pub(crate) fn handle_describe_configs(
        &self,
        version: i16,
        request: DescribeConfigsRequest,
    ) -> DescribeConfigsResponse {
        const TOPIC: i8 = 2;
        const BROKER: i8 = 4;
        let mut results = Vec::with_capacity(request.resources.len());
        for resource in request.resources {
            let mut result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            let wanted = |key: &str| {
                resource
                    .configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.iter().any(|k| k.as_str() == key))
            };
            let entry = |key: &str, value: String, source: i8| {
                let mut config = DescribeConfigsResourceResult::default()
                    .with_name(str_bytes(key))
                    .with_value(Some(StrBytes::from_string(value)))
                    .with_config_source(source);
                if version >= 3 {
                    config.config_type = config_type(key);
                }
                config
            };
            match resource.resource_type {
                TOPIC => match self.topics.get(resource.resource_name.as_str()) {
                    Some(topic) => {
                        result.configs = TOPIC_CONFIGS
                            .iter()
                            .filter(|(key, _)| wanted(key))
                            .filter_map(|(key, _)| {
                                let (value, is_default) =
                                    topic.config.effective(&self.config, key)?;
                                // 1 = DYNAMIC_TOPIC_CONFIG, 5 = DEFAULT_CONFIG
                                Some(entry(key, value, if is_default { 5 } else { 1 }))
                            })
                            .collect();
                    }
                    None => {
                        result.error_code = error::UNKNOWN_TOPIC_OR_PARTITION;
                        result.error_message = Some(str_bytes("unknown topic"));
                    }
                },
                BROKER
                    if resource.resource_name.is_empty()
                        || resource.resource_name.as_str() == self.config.node_id.to_string() =>
                {
                    result.configs = crate::config::NodeConfig::NAMES
                        .iter()
                        .filter(|key| wanted(key))
                        .filter_map(|key| {
                            // 4 = STATIC_BROKER_CONFIG
                            Some(entry(key, self.config.value_of(key)?, 4))
                        })
                        .collect();
                }
                _ => {
                    result.error_code = error::INVALID_REQUEST;
                    result.error_message = Some(str_bytes(
                        "only topic and this broker's configs can be described",
                    ));
                }
            }
            results.push(result);
        }
        DescribeConfigsResponse::default().with_results(results)
    }

    pub(crate) fn handle_incremental_alter_configs(
        &mut self,
        request: IncrementalAlterConfigsRequest,
    ) -> IncrementalAlterConfigsResponse {
        let validate_only = request.validate_only;
        let responses = request
            .resources
            .iter()
            .map(|resource| {
                let (error_code, error_message) = topic_outcome(resource.resource_type, || {
                    self.alter_topic_config(
                        resource.resource_name.as_str(),
                        &resource.configs,
                        validate_only,
                    )
                });
                AlterConfigsResourceResponse::default()
                    .with_resource_type(resource.resource_type)
                    .with_resource_name(resource.resource_name.clone())
                    .with_error_code(error_code)
                    .with_error_message(error_message)
            })
            .collect();
        IncrementalAlterConfigsResponse::default().with_responses(responses)
    }

    fn alter_topic_config(
        &mut self,
        name: &str,
        changes: &[incremental_alter_configs_request::AlterableConfig],
        validate_only: bool,
    ) -> Result<(), (i16, String)> {
        let mut config = self.alterable_topic(name)?.config.clone();
        for change in changes {
            let key = change.name.as_str();
            match change.config_operation {
                0 => {
                    // SET
                    let value = change.value.as_ref().map(|v| v.as_str()).unwrap_or("");
                    config
                        .set(key, value)
                        .map_err(|err| (error::INVALID_CONFIG, err.to_string()))?;
                }
                1 => {
                    // DELETE: back to the default
                    TopicConfig::validate(key, "1")
                        .or_else(|err| match err {
                            crate::config::ConfigError::Unknown(_) => Err(err),
                            _ => Ok(()),
                        })
                        .map_err(|err| (error::INVALID_CONFIG, err.to_string()))?;
                    config.overrides.remove(key);
                }
                _ => {
                    return Err((
                        error::INVALID_CONFIG,
                        format!("APPEND/SUBTRACT are not supported for {key}"),
                    ))
                }
            }
        }
        if !validate_only {
            self.apply_topic_config(name, config)?;
        }
        Ok(())
    }

    /// AlterConfigs (the legacy, non-incremental form): the configs given become the topic's
    /// whole set of overrides, and every override not given goes back to its default, as in
    /// Kafka. kafka-python's admin client falls back to it when a broker lacks
    /// IncrementalAlterConfigs, and older tools still send it.
    pub(crate) fn handle_alter_configs(
        &mut self,
        request: AlterConfigsRequest,
    ) -> AlterConfigsResponse {
        let validate_only = request.validate_only;
        let responses = request
            .resources
            .iter()
            .map(|resource| {
                let (error_code, error_message) = topic_outcome(resource.resource_type, || {
                    self.replace_topic_config(
                        resource.resource_name.as_str(),
                        &resource.configs,
                        validate_only,
                    )
                });
                alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(resource.resource_type)
                    .with_resource_name(resource.resource_name.clone())
                    .with_error_code(error_code)
                    .with_error_message(error_message)
            })
            .collect();
        AlterConfigsResponse::default().with_responses(responses)
    }

    fn replace_topic_config(
        &mut self,
        name: &str,
        entries: &[alter_configs_request::AlterableConfig],
        validate_only: bool,
    ) -> Result<(), (i16, String)> {
        self.alterable_topic(name)?;
        let mut config = TopicConfig::default();
        for entry in entries {
            let key = entry.name.as_str();
            // Kafka refuses both with InvalidRequestException.
            let Some(value) = entry.value.as_ref() else {
                return Err((
                    error::INVALID_REQUEST,
                    format!("null value not supported for {key}"),
                ));
            };
            if config.overrides.contains_key(key) {
                return Err((
                    error::INVALID_REQUEST,
                    format!("duplicate config key {key}"),
                ));
            }
            config
                .set(key, value.as_str())
                .map_err(|err| (error::INVALID_CONFIG, err.to_string()))?;
        }
        if !validate_only {
            self.apply_topic_config(name, config)?;
        }
        Ok(())
    }

    /// The topic `name`, if its configs may be altered.
    fn alterable_topic(&self, name: &str) -> Result<&Topic, (i16, String)> {
        let Some(topic) = self.topics.get(name) else {
            return Err((
                error::UNKNOWN_TOPIC_OR_PARTITION,
                format!("unknown topic {name:?}"),
            ));
        };
        if is_internal_topic(name) {
            // Its log configuration is fixed (internal_offsets_log_config).
            return Err((
                error::INVALID_REQUEST,
                format!("the configs of internal topic {name:?} cannot be altered"),
            ));
        }
        Ok(topic)
    }

    /// Puts `config` into effect on every partition of topic `name` (which exists) and
    /// persists it in the registry. If the registry write fails the old config stays in
    /// effect, and the answer says the outcome is unknown (a restart may recover either).
    fn apply_topic_config(&mut self, name: &str, config: TopicConfig) -> Result<(), (i16, String)> {
        let old = self.set_topic_config(name, config);
        if let Err(err) = self.persist_registry() {
            self.set_topic_config(name, old);
            let err = registry_write_failed(&err);
            return Err((err.code, err.message));
        }
        Ok(())
    }

    /// Replaces topic `name`'s config (it exists) on the topic and its logs; returns the old.
    fn set_topic_config(&mut self, name: &str, config: TopicConfig) -> TopicConfig {
        let log_config = config.log_config(&self.config);
        let topic = self
            .topics
            .get_mut(name)
            .expect("the caller checked it exists");
        for partition in topic.partitions.iter_mut() {
            partition.log.set_config(log_config.clone());
        }
        std::mem::replace(&mut topic.config, config)
    }

    /// DescribeLogDirs (KIP-113): the node's one data directory, with the size of every
    /// partition log asked for (all of them when `topics` is null; topics and partitions this
    /// node does not have are left out, as in Kafka), and from v4 the volume's total and
    /// usable bytes (KIP-827). Offset lag is 0: every log here is its partition's leader, whose
    /// high watermark never passes its log end.
    pub(crate) fn handle_describe_log_dirs(
        &self,
        version: i16,
        request: DescribeLogDirsRequest,
    ) -> DescribeLogDirsResponse {
        let describe = |topic: &Topic, indexes: &mut dyn Iterator<Item = i32>| {
            let partitions = indexes
                .filter_map(|index| {
                    let partition = topic.partitions.get(usize::try_from(index).ok()?)?;
                    Some(
                        DescribeLogDirsPartition::default()
                            .with_partition_index(index)
                            .with_partition_size(
                                i64::try_from(partition.log.size_bytes()).unwrap_or(i64::MAX),
                            ),
                    )
                })
                .collect::<Vec<_>>();
            DescribeLogDirsTopic::default()
                .with_name(TopicName(str_bytes(&topic.name)))
                .with_partitions(partitions)
        };
        let topics = match request.topics {
            None => self
                .topics
                .values()
                .map(|topic| describe(topic, &mut (0..topic.partitions.len() as i32)))
                .collect(),
            Some(wanted) => wanted
                .iter()
                .filter_map(|wanted| {
                    let topic = self.topics.get(wanted.topic.as_str())?;
                    let described = describe(topic, &mut wanted.partitions.iter().copied());
                    (!described.partitions.is_empty()).then_some(described)
                })
                .collect(),
        };
        let mut result = DescribeLogDirsResult::default()
            .with_log_dir(StrBytes::from_string(self.storage.location()))
            .with_topics(topics);
        if version >= 4 {
            if let Some(space) = self.storage.space() {
                result.total_bytes = i64::try_from(space.total_bytes).unwrap_or(i64::MAX);
                result.usable_bytes = i64::try_from(space.usable_bytes).unwrap_or(i64::MAX);
            }
        }
        DescribeLogDirsResponse::default().with_results(vec![result])
    }

    pub(crate) fn handle_describe_cluster(&self, version: i16) -> DescribeClusterResponse {
        let mut response = DescribeClusterResponse::default()
            .with_cluster_id(str_bytes(&self.config.cluster_id))
            .with_controller_id(BrokerId(self.config.node_id))
            .with_brokers(vec![DescribeClusterBroker::default()
                .with_broker_id(BrokerId(self.config.node_id))
                .with_host(str_bytes(&self.advertised_host))
                .with_port(self.advertised_port)]);
        if version >= 1 {
            response.endpoint_type = 1; // brokers
        }
        response
    }
}

/// The error code and message of altering one resource's configs: topics go to `alter`, any
/// other resource type is refused (broker configs are static here).
fn topic_outcome(
    resource_type: i8,
    alter: impl FnOnce() -> Result<(), (i16, String)>,
) -> (i16, Option<StrBytes>) {
    const TOPIC: i8 = 2;
    let outcome = if resource_type == TOPIC {
        alter()
    } else {
        Err((
            error::INVALID_REQUEST,
            "only topic configs can be altered".to_string(),
        ))
    };
    match outcome {
        Ok(()) => (error::NONE, None),
        Err((code, message)) => (code, Some(StrBytes::from_string(message))),
    }
}

/// DescribeConfigs v3 config types: 1 boolean, 2 string, 3 int, 4 short, 5 long, 7 list.
fn config_type(key: &str) -> i8 {
    match key {
        "cleanup.policy" => 7,
        "min.cleanable.dirty.ratio" => 6,
        "message.timestamp.type" => 2,
        "max.message.bytes" | "index.interval.bytes" | "min.insync.replicas" | "segment.bytes" => 3,
        _ => 5,
    }
}
