//! Admin operations: topics (create, delete, list, describe), topic configs (describe,
//! incremental alter), partitions (create), cluster (describe), offsets (list).
//!
//! Contract: every call returns per-topic results (a topic's Kafka error code becomes that
//! topic's `Err`); transport-level failures and NOT_CONTROLLER are retried a bounded number of
//! times against a freshly chosen broker. Topic-changing requests go to the controller the
//! metadata names (brokers forward them in KRaft mode, so any broker is a valid fallback).

use std::time::Duration;

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    IncrementalAlterConfigsRequest, TopicName,
};
use kafka_protocol::protocol::{Request, StrBytes};

use super::cluster::{BrokerInfo, Cluster};
use super::connection::Connection;
use super::consumer::{list_offsets, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP};
use super::{backoff_ms, ClientConfig, ClientError, Result, TopicPartition};

const CREATE_TOPICS_VERSION_CAP: i16 = 7;
const DELETE_TOPICS_VERSION_CAP: i16 = 5;
const DESCRIBE_CONFIGS_VERSION_CAP: i16 = 4;
const INCREMENTAL_ALTER_CONFIGS_VERSION_CAP: i16 = 1;
const CREATE_PARTITIONS_VERSION_CAP: i16 = 3;
/// Attempts for one admin request over transport errors and NOT_CONTROLLER.
const ADMIN_ATTEMPTS: u32 = 5;
const NOT_CONTROLLER: i16 = 41;
/// DescribeConfigs/IncrementalAlterConfigs resource type of a topic.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// A topic to create. `partitions`/`replication_factor` of -1 take the broker's defaults.
#[derive(Clone, Debug)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: Vec<(String, String)>,
}

impl NewTopic {
    pub fn new(name: impl Into<String>, partitions: i32, replication_factor: i16) -> Self {
        NewTopic {
            name: name.into(),
            partitions,
            replication_factor,
            configs: Vec::new(),
        }
    }
}

/// A partition as described by the admin client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: i32,
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline_replicas: Vec<i32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicDescription {
    pub name: String,
    pub topic_id: uuid::Uuid,
    pub is_internal: bool,
    pub partitions: Vec<PartitionInfo>,
}

/// One config of a topic or broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    pub read_only: bool,
    /// Kafka's config source id (1 topic, 4 static broker, 5 default, ...).
    pub source: i8,
    pub is_sensitive: bool,
}

/// The admin client.
#[derive(Clone)]
pub struct Admin {
    cluster: Cluster,
}

impl Admin {
    pub async fn new(config: ClientConfig) -> Result<Admin> {
        let config = ClientConfig {
            allow_auto_topic_creation: false,
            ..config
        };
        Ok(Admin {
            cluster: Cluster::connect(config).await?,
        })
    }

    pub fn with_cluster(cluster: Cluster) -> Admin {
        Admin { cluster }
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    async fn controller_connection(&self) -> Result<std::sync::Arc<Connection>> {
        let controller = self.cluster.controller_id();
        if controller >= 0 {
            if let Ok(conn) = self.cluster.connection(controller).await {
                return Ok(conn);
            }
        }
        self.cluster.any_connection().await
    }

    /// Sends `request` (to the controller if `to_controller`), retrying transport failures
    /// and, via `not_controller`, responses that say the broker is not the controller.
    async fn call<R: Request>(
        &self,
        request: &R,
        cap: i16,
        to_controller: bool,
        not_controller: impl Fn(&R::Response) -> bool,
    ) -> Result<R::Response> {
        let mut last = None;
        for attempt in 0..ADMIN_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(backoff_ms(
                    self.cluster.config(),
                    attempt - 1,
                )))
                .await;
                let _ = self.cluster.fetch_metadata(&[]).await;
            }
            let conn = if to_controller {
                self.controller_connection().await
            } else {
                self.cluster.any_connection().await
            };
            let conn = match conn {
                Ok(c) => c,
                Err(e) if e.is_retriable() => {
                    last = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            match conn.send(request, cap).await {
                Ok(response) if not_controller(&response) => {
                    last = ClientError::from_code(NOT_CONTROLLER, None);
                }
                Ok(response) => return Ok(response),
                Err(e) if e.is_retriable() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(ClientError::Closed))
    }

    /// CreateTopics; one result per topic, in order.
    pub async fn create_topics(
        &self,
        topics: &[NewTopic],
        validate_only: bool,
    ) -> Result<Vec<(String, Result<()>)>> {
        let request = CreateTopicsRequest::default()
            .with_topics(
                topics
                    .iter()
                    .map(|t| {
                        CreatableTopic::default()
                            .with_name(topic_name(&t.name))
                            .with_num_partitions(t.partitions)
                            .with_replication_factor(t.replication_factor)
                            .with_configs(
                                t.configs
                                    .iter()
                                    .map(|(k, v)| {
                                        CreatableTopicConfig::default()
                                            .with_name(StrBytes::from_string(k.clone()))
                                            .with_value(Some(StrBytes::from_string(v.clone())))
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            )
            .with_timeout_ms(self.timeout_ms())
            .with_validate_only(validate_only);
        let response = self
            .call(&request, CREATE_TOPICS_VERSION_CAP, true, |r| {
                r.topics.iter().any(|t| t.error_code == NOT_CONTROLLER)
            })
            .await?;
        Ok(topics
            .iter()
            .map(|t| {
                let result = response
                    .topics
                    .iter()
                    .find(|r| r.name.0.as_str() == t.name)
                    .map_or_else(
                        || Err(missing("CreateTopics", &t.name)),
                        |r| code_result(r.error_code, r.error_message.as_deref()),
                    );
                (t.name.clone(), result)
            })
            .collect())
    }

    /// DeleteTopics by name; one result per topic, in order.
    pub async fn delete_topics(&self, names: &[String]) -> Result<Vec<(String, Result<()>)>> {
        let request = DeleteTopicsRequest::default()
            .with_topic_names(names.iter().map(|n| topic_name(n)).collect())
            .with_timeout_ms(self.timeout_ms());
        let response = self
            .call(&request, DELETE_TOPICS_VERSION_CAP, true, |r| {
                r.responses.iter().any(|t| t.error_code == NOT_CONTROLLER)
            })
            .await?;
        Ok(names
            .iter()
            .map(|n| {
                let result = response
                    .responses
                    .iter()
                    .find(|r| r.name.as_ref().map(|x| x.0.as_str()) == Some(n.as_str()))
                    .map_or_else(
                        || Err(missing("DeleteTopics", n)),
                        |r| code_result(r.error_code, r.error_message.as_deref()),
                    );
                (n.clone(), result)
            })
            .collect())
    }

    /// Names of all topics, sorted; internal topics only if asked.
    pub async fn list_topics(&self, include_internal: bool) -> Result<Vec<String>> {
        let response = self.cluster.fetch_all_metadata().await?;
        let mut names: Vec<String> = response
            .topics
            .iter()
            .filter(|t| t.error_code == 0 && (include_internal || !t.is_internal))
            .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Partition layout of `names` (all topics if empty).
    pub async fn describe_topics(
        &self,
        names: &[String],
    ) -> Result<Vec<(String, Result<TopicDescription>)>> {
        let response = if names.is_empty() {
            self.cluster.fetch_all_metadata().await?
        } else {
            self.cluster.fetch_metadata(names).await?
        };
        let mut out = Vec::new();
        for t in &response.topics {
            let Some(name) = t.name.as_ref().map(|n| n.0.to_string()) else {
                continue;
            };
            if !names.is_empty() && !names.contains(&name) {
                continue;
            }
            if let Some(e) = ClientError::from_code(t.error_code, None) {
                out.push((name, Err(e)));
                continue;
            }
            let mut partitions: Vec<PartitionInfo> = t
                .partitions
                .iter()
                .map(|p| PartitionInfo {
                    partition: p.partition_index,
                    leader: p.leader_id.0,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                    isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                    offline_replicas: p.offline_replicas.iter().map(|b| b.0).collect(),
                })
                .collect();
            partitions.sort_by_key(|p| p.partition);
            out.push((
                name.clone(),
                Ok(TopicDescription {
                    name,
                    topic_id: t.topic_id,
                    is_internal: t.is_internal,
                    partitions,
                }),
            ));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Earliest and latest offset of each partition: (log start offset, high watermark).
    pub async fn partition_offsets(
        &self,
        partitions: &[TopicPartition],
    ) -> Vec<(TopicPartition, Result<(i64, i64)>)> {
        let earliest: Vec<(TopicPartition, i64)> = partitions
            .iter()
            .map(|tp| (tp.clone(), EARLIEST_TIMESTAMP))
            .collect();
        let latest: Vec<(TopicPartition, i64)> = partitions
            .iter()
            .map(|tp| (tp.clone(), LATEST_TIMESTAMP))
            .collect();
        let first = list_offsets(&self.cluster, &earliest, 0).await;
        let last = list_offsets(&self.cluster, &latest, 0).await;
        partitions
            .iter()
            .map(|tp| {
                let find = |v: &Vec<(TopicPartition, Result<(i64, i64)>)>| {
                    v.iter()
                        .find(|(t, _)| t == tp)
                        .map(|(_, r)| r.clone())
                        .unwrap_or(Err(ClientError::Closed))
                };
                let result = match (find(&first), find(&last)) {
                    (Ok((a, _)), Ok((b, _))) => Ok((a, b)),
                    (Err(e), _) | (_, Err(e)) => Err(e),
                };
                (tp.clone(), result)
            })
            .collect()
    }

    /// DescribeConfigs of a topic.
    pub async fn describe_topic_configs(&self, topic: &str) -> Result<Vec<ConfigEntry>> {
        self.describe_configs(RESOURCE_TOPIC, topic, None).await
    }

    /// DescribeConfigs of a broker (its node id as the resource name).
    pub async fn describe_broker_configs(&self, node_id: i32) -> Result<Vec<ConfigEntry>> {
        self.describe_configs(RESOURCE_BROKER, &node_id.to_string(), Some(node_id))
            .await
    }

    async fn describe_configs(
        &self,
        resource_type: i8,
        name: &str,
        node: Option<i32>,
    ) -> Result<Vec<ConfigEntry>> {
        let request = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(StrBytes::from_string(name.to_string()))
                .with_configuration_keys(None),
        ]);
        let response = match node {
            Some(id) => {
                let conn = self.cluster.connection(id).await?;
                conn.send(&request, DESCRIBE_CONFIGS_VERSION_CAP).await?
            }
            None => {
                self.call(&request, DESCRIBE_CONFIGS_VERSION_CAP, false, |_| false)
                    .await?
            }
        };
        let result = response
            .results
            .into_iter()
            .find(|r| r.resource_name.as_str() == name)
            .ok_or_else(|| missing("DescribeConfigs", name))?;
        code_result(result.error_code, result.error_message.as_deref())?;
        let mut entries: Vec<ConfigEntry> = result
            .configs
            .into_iter()
            .map(|c| ConfigEntry {
                name: c.name.to_string(),
                value: c.value.map(|v| v.to_string()),
                read_only: c.read_only,
                source: c.config_source,
                is_sensitive: c.is_sensitive,
            })
            .collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// IncrementalAlterConfigs (KIP-339) of a topic: set some keys, delete (reset) others.
    pub async fn alter_topic_configs(
        &self,
        topic: &str,
        set: &[(String, String)],
        delete: &[String],
    ) -> Result<()> {
        let mut configs: Vec<AlterableConfig> = set
            .iter()
            .map(|(k, v)| {
                AlterableConfig::default()
                    .with_name(StrBytes::from_string(k.clone()))
                    .with_config_operation(0)
                    .with_value(Some(StrBytes::from_string(v.clone())))
            })
            .collect();
        configs.extend(delete.iter().map(|k| {
            AlterableConfig::default()
                .with_name(StrBytes::from_string(k.clone()))
                .with_config_operation(1)
                .with_value(None)
        }));
        let request = IncrementalAlterConfigsRequest::default()
            .with_resources(vec![AlterConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(StrBytes::from_string(topic.to_string()))
                .with_configs(configs)])
            .with_validate_only(false);
        let response = self
            .call(&request, INCREMENTAL_ALTER_CONFIGS_VERSION_CAP, true, |r| {
                r.responses.iter().any(|x| x.error_code == NOT_CONTROLLER)
            })
            .await?;
        let result = response
            .responses
            .iter()
            .find(|r| r.resource_name.as_str() == topic)
            .ok_or_else(|| missing("IncrementalAlterConfigs", topic))?;
        code_result(result.error_code, result.error_message.as_deref())
    }

    /// CreatePartitions: grow `topic` to `total_count` partitions.
    pub async fn create_partitions(&self, topic: &str, total_count: i32) -> Result<()> {
        let request = CreatePartitionsRequest::default()
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(topic_name(topic))
                .with_count(total_count)
                .with_assignments(None)])
            .with_timeout_ms(self.timeout_ms())
            .with_validate_only(false);
        let response = self
            .call(&request, CREATE_PARTITIONS_VERSION_CAP, true, |r| {
                r.results.iter().any(|x| x.error_code == NOT_CONTROLLER)
            })
            .await?;
        let result = response
            .results
            .iter()
            .find(|r| r.name.0.as_str() == topic)
            .ok_or_else(|| missing("CreatePartitions", topic))?;
        code_result(result.error_code, result.error_message.as_deref())
    }

    /// Cluster id, controller id and brokers, from a fresh Metadata request.
    pub async fn describe_cluster(&self) -> Result<(Option<String>, i32, Vec<BrokerInfo>)> {
        self.cluster.fetch_metadata(&[]).await?;
        Ok((
            self.cluster.cluster_id(),
            self.cluster.controller_id(),
            self.cluster.brokers(),
        ))
    }

    fn timeout_ms(&self) -> i32 {
        self.cluster
            .config()
            .request_timeout_ms
            .min(i32::MAX as u64) as i32
    }
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn code_result(code: i16, message: Option<&str>) -> Result<()> {
    match ClientError::from_code(code, message) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn missing(api: &str, name: &str) -> ClientError {
    ClientError::Protocol(format!("{api} response has no result for {name:?}"))
}
