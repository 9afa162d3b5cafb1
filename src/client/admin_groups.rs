//! Admin operations on consumer groups: list, describe, delete, and their committed offsets
//! (list, and alter as an admin commit).
//!
//! Contract: ListGroups goes to every broker (each lists the groups it coordinates) and the
//! answers are merged; the per-group calls go to the group's coordinator (FindCoordinator) and
//! are retried a bounded number of times when it moved (NOT_COORDINATOR,
//! COORDINATOR_NOT_AVAILABLE, COORDINATOR_LOAD_IN_PROGRESS, a lost connection). Altering
//! offsets is an OffsetCommit with generation -1 and no member id, which a coordinator accepts
//! only while the group has no members (Empty); otherwise its error is returned.

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_protocol::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, GroupId, ListGroupsRequest,
};
use kafka_protocol::protocol::StrBytes;

use super::admin::Admin;
use super::assignor::{decode_assignment, CONSUMER_PROTOCOL_TYPE};
use super::group::{
    offset_fetch, GroupClient, COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE,
    NOT_COORDINATOR,
};
use super::{backoff_ms, ClientError, Result, TopicPartition};

const LIST_GROUPS_VERSION_CAP: i16 = 4;
const DESCRIBE_GROUPS_VERSION_CAP: i16 = 5;
const DELETE_GROUPS_VERSION_CAP: i16 = 2;
/// Attempts of one group call over coordinator moves.
const GROUP_ADMIN_ATTEMPTS: u32 = 5;

/// A group as listed by ListGroups.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    /// Empty when the broker answers below ListGroups v4.
    pub state: String,
}

/// One member as described by DescribeGroups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Decoded for consumer groups (protocol type "consumer"), else empty.
    pub assignment: Vec<TopicPartition>,
}

/// A group as described by DescribeGroups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    /// Empty, PreparingRebalance, CompletingRebalance, Stable or Dead.
    pub state: String,
    pub protocol_type: String,
    /// The assignor chosen for the current generation (e.g. "range").
    pub protocol: String,
    pub members: Vec<MemberDescription>,
    /// The coordinator's node id.
    pub coordinator: i32,
}

fn is_coordinator_move(e: &ClientError) -> bool {
    match e.code() {
        Some(code) => matches!(
            code,
            NOT_COORDINATOR | COORDINATOR_NOT_AVAILABLE | COORDINATOR_LOAD_IN_PROGRESS
        ),
        None => e.is_retriable(),
    }
}

impl Admin {
    /// Runs `call` against the coordinator of `group_id`, retrying coordinator moves.
    async fn with_coordinator<T, F, Fut>(&self, group_id: &str, call: F) -> Result<T>
    where
        F: Fn(GroupClient) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let client = GroupClient::new(self.cluster().clone(), group_id);
        let mut last = None;
        for attempt in 0..GROUP_ADMIN_ATTEMPTS {
            if attempt > 0 {
                let ms = backoff_ms(self.cluster().config(), attempt - 1);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            match call(client.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) if is_coordinator_move(&e) => {
                    client.forget_coordinator();
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(ClientError::Closed))
    }

    /// Every group of the cluster (ListGroups on each broker), sorted by id.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        let _ = self.cluster().fetch_metadata(&[]).await;
        let mut out = BTreeMap::new();
        for broker in self.cluster().brokers() {
            let conn = self.cluster().connection(broker.node_id).await?;
            let response = conn
                .send(&ListGroupsRequest::default(), LIST_GROUPS_VERSION_CAP)
                .await?;
            if let Some(e) = ClientError::from_code(response.error_code, None) {
                return Err(e);
            }
            for g in response.groups {
                let listing = GroupListing {
                    group_id: g.group_id.0.to_string(),
                    protocol_type: g.protocol_type.to_string(),
                    state: g.group_state.to_string(),
                };
                out.insert(listing.group_id.clone(), listing);
            }
        }
        Ok(out.into_values().collect())
    }

    /// DescribeGroups for each group at its coordinator. A group that does not exist is
    /// described in state "Dead" with no members, as Kafka answers.
    pub async fn describe_groups(
        &self,
        group_ids: &[String],
    ) -> Result<Vec<(String, Result<GroupDescription>)>> {
        let mut out = Vec::new();
        for group_id in group_ids {
            let result = self
                .with_coordinator(group_id, |client| async move {
                    let conn = client.connection().await?;
                    let request = DescribeGroupsRequest::default().with_groups(vec![GroupId(
                        StrBytes::from_string(client.group_id().to_string()),
                    )]);
                    let response = conn.send(&request, DESCRIBE_GROUPS_VERSION_CAP).await?;
                    let group = response
                        .groups
                        .into_iter()
                        .find(|g| g.group_id.0.as_str() == client.group_id())
                        .ok_or_else(|| {
                            ClientError::Protocol("DescribeGroups left out the group".to_string())
                        })?;
                    if let Some(e) =
                        ClientError::from_code(group.error_code, group.error_message.as_deref())
                    {
                        return Err(e);
                    }
                    let consumer = group.protocol_type.as_str() == CONSUMER_PROTOCOL_TYPE;
                    let members = group
                        .members
                        .iter()
                        .map(|m| MemberDescription {
                            member_id: m.member_id.to_string(),
                            group_instance_id: m.group_instance_id.as_ref().map(|i| i.to_string()),
                            client_id: m.client_id.to_string(),
                            client_host: m.client_host.to_string(),
                            assignment: if consumer {
                                decode_assignment(&m.member_assignment).unwrap_or_default()
                            } else {
                                Vec::new()
                            },
                        })
                        .collect();
                    Ok(GroupDescription {
                        group_id: group.group_id.0.to_string(),
                        state: group.group_state.to_string(),
                        protocol_type: group.protocol_type.to_string(),
                        protocol: group.protocol_data.to_string(),
                        members,
                        coordinator: client.coordinator_id().unwrap_or(-1),
                    })
                })
                .await;
            out.push((group_id.clone(), result));
        }
        Ok(out)
    }

    /// DeleteGroups at each group's coordinator: the group and its committed offsets go.
    /// A group with members fails with NON_EMPTY_GROUP, an unknown one with GROUP_ID_NOT_FOUND.
    pub async fn delete_groups(&self, group_ids: &[String]) -> Result<Vec<(String, Result<()>)>> {
        let mut out = Vec::new();
        for group_id in group_ids {
            let result = self
                .with_coordinator(group_id, |client| async move {
                    let conn = client.connection().await?;
                    let request = DeleteGroupsRequest::default().with_groups_names(vec![GroupId(
                        StrBytes::from_string(client.group_id().to_string()),
                    )]);
                    let response = conn.send(&request, DELETE_GROUPS_VERSION_CAP).await?;
                    let r = response
                        .results
                        .iter()
                        .find(|r| r.group_id.0.as_str() == client.group_id())
                        .ok_or_else(|| {
                            ClientError::Protocol("DeleteGroups left out the group".to_string())
                        })?;
                    match ClientError::from_code(r.error_code, None) {
                        Some(e) => Err(e),
                        None => Ok(()),
                    }
                })
                .await;
            out.push((group_id.clone(), result));
        }
        Ok(out)
    }

    /// The group's committed offsets (OffsetFetch for all partitions), by partition.
    pub async fn list_consumer_group_offsets(
        &self,
        group_id: &str,
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        let all = self
            .with_coordinator(group_id, |client| async move {
                let conn = client.connection().await?;
                offset_fetch(&conn, client.group_id(), None).await
            })
            .await?;
        Ok(all
            .into_iter()
            .filter_map(|(tp, offset)| offset.map(|o| (tp, o)))
            .collect())
    }

    /// Sets the group's committed offsets (OffsetCommit, generation -1, no member id). The
    /// coordinator refuses while the group has members.
    pub async fn alter_consumer_group_offsets(
        &self,
        group_id: &str,
        offsets: &BTreeMap<TopicPartition, i64>,
    ) -> Result<()> {
        GroupClient::new(self.cluster().clone(), group_id)
            .commit(offsets, -1, "", None)
            .await
    }
}
