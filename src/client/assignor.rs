//! Client-side partition assignment of the classic consumer group protocol: the member the
//! coordinator names leader runs an assignor over every member's subscription and hands the
//! result to the coordinator in SyncGroup, which relays it.
//!
//! Contract:
//! - Subscriptions and assignments travel as Kafka's ConsumerProtocolSubscription /
//!   ConsumerProtocolAssignment, each preceded by its i16 schema version (the kafka-protocol
//!   crate encodes the body only, so the prefix is written and read here). Decoding accepts any
//!   version; a version newer than we know is read with the newest schema we know, which is
//!   Kafka's forward-compatibility rule for these embedded schemas.
//! - [`AssignmentStrategy::Range`] is the Java client's RangeAssignor (per topic, consecutive
//!   ranges, the first `partitions % members` members one extra) and
//!   [`AssignmentStrategy::RoundRobin`] its RoundRobinAssignor (all partitions of all topics in
//!   order, dealt to members in a circle, skipping members not subscribed to the topic).
//!   Members are ordered as Java orders them: static members (group.instance.id) first, by
//!   instance id, then dynamic ones by member id. The result is deterministic.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::consumer_protocol_subscription::TopicPartition as OwnedTopic;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::{ClientError, Result, TopicPartition};

/// The protocol type of consumer groups in JoinGroup.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";
/// The schema version of the subscriptions we send (v1: topics, user data, owned partitions).
const SUBSCRIPTION_VERSION: i16 = 1;
/// The schema version of the assignments we send (v0: partitions, user data).
const ASSIGNMENT_VERSION: i16 = 0;
const NEWEST_SCHEMA_VERSION: i16 = 3;

/// `partition.assignment.strategy`, by Kafka's protocol names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssignmentStrategy {
    /// "range", the Java client's RangeAssignor (Kafka's long-time default).
    Range,
    /// "roundrobin", the Java client's RoundRobinAssignor.
    RoundRobin,
}

impl AssignmentStrategy {
    pub fn protocol_name(self) -> &'static str {
        match self {
            AssignmentStrategy::Range => "range",
            AssignmentStrategy::RoundRobin => "roundrobin",
        }
    }

    pub fn from_protocol_name(name: &str) -> Option<AssignmentStrategy> {
        match name {
            "range" => Some(AssignmentStrategy::Range),
            "roundrobin" => Some(AssignmentStrategy::RoundRobin),
            _ => None,
        }
    }
}

impl std::str::FromStr for AssignmentStrategy {
    type Err = ClientError;
    fn from_str(s: &str) -> Result<Self> {
        AssignmentStrategy::from_protocol_name(s).ok_or_else(|| {
            ClientError::InvalidArgument(format!(
                "partition.assignment.strategy must be range or roundrobin, not {s:?}"
            ))
        })
    }
}

/// One member as the leader sees it in the JoinGroup response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberSubscription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub topics: Vec<String>,
}

impl MemberSubscription {
    /// Java's MemberInfo order: static members first (by instance id), then by member id.
    fn sort_key(&self) -> (bool, &str, &str) {
        (
            self.group_instance_id.is_none(),
            self.group_instance_id.as_deref().unwrap_or(""),
            &self.member_id,
        )
    }
}

/// Encodes a subscription with its version prefix.
pub fn encode_subscription(topics: &[String], owned: &[TopicPartition]) -> Result<Bytes> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in owned {
        by_topic.entry(&tp.topic).or_default().push(tp.partition);
    }
    let subscription = ConsumerProtocolSubscription::default()
        .with_topics(
            topics
                .iter()
                .map(|t| StrBytes::from_string(t.clone()))
                .collect(),
        )
        .with_owned_partitions(
            by_topic
                .into_iter()
                .map(|(topic, partitions)| {
                    OwnedTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                        .with_partitions(partitions)
                })
                .collect(),
        );
    encode_with_version(&subscription, SUBSCRIPTION_VERSION)
}

/// Decodes a version-prefixed subscription; returns its topics.
pub fn decode_subscription(metadata: &[u8]) -> Result<Vec<String>> {
    let (version, mut body) = split_version(metadata, "subscription")?;
    let subscription = ConsumerProtocolSubscription::decode(&mut body, version)
        .map_err(|e| ClientError::Protocol(format!("bad consumer subscription: {e}")))?;
    Ok(subscription.topics.iter().map(|t| t.to_string()).collect())
}

/// Encodes an assignment with its version prefix.
pub fn encode_assignment(partitions: &[TopicPartition]) -> Result<Bytes> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in partitions {
        by_topic.entry(&tp.topic).or_default().push(tp.partition);
    }
    let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(
        by_topic
            .into_iter()
            .map(|(topic, partitions)| {
                AssignedTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(partitions)
            })
            .collect(),
    );
    encode_with_version(&assignment, ASSIGNMENT_VERSION)
}

/// Decodes a version-prefixed assignment. An empty byte string is an empty assignment (the
/// coordinator sends one to a member the leader gave nothing).
pub fn decode_assignment(bytes: &[u8]) -> Result<Vec<TopicPartition>> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let (version, mut body) = split_version(bytes, "assignment")?;
    let assignment = ConsumerProtocolAssignment::decode(&mut body, version)
        .map_err(|e| ClientError::Protocol(format!("bad consumer assignment: {e}")))?;
    let mut out: Vec<TopicPartition> = assignment
        .assigned_partitions
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| TopicPartition::new(t.topic.0.as_str(), *p))
        })
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

fn encode_with_version<T: Encodable>(message: &T, version: i16) -> Result<Bytes> {
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    message
        .encode(&mut buf, version)
        .map_err(|e| ClientError::Protocol(format!("cannot encode consumer protocol: {e}")))?;
    Ok(buf.freeze())
}

fn split_version<'a>(bytes: &'a [u8], what: &str) -> Result<(i16, &'a [u8])> {
    if bytes.len() < 2 {
        return Err(ClientError::Protocol(format!(
            "consumer {what} of {} bytes has no version",
            bytes.len()
        )));
    }
    let mut body = bytes;
    let version = body.get_i16();
    if version < 0 {
        return Err(ClientError::Protocol(format!(
            "consumer {what} has negative version {version}"
        )));
    }
    Ok((version.min(NEWEST_SCHEMA_VERSION), body))
}

/// Runs `strategy` over `members`, given each subscribed topic's partition count (topics
/// missing from `partition_counts` are skipped). Every member appears in the result.
pub fn assign(
    strategy: AssignmentStrategy,
    members: &[MemberSubscription],
    partition_counts: &BTreeMap<String, i32>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let mut ordered: Vec<&MemberSubscription> = members.iter().collect();
    ordered.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    let mut out: BTreeMap<String, Vec<TopicPartition>> = members
        .iter()
        .map(|m| (m.member_id.clone(), Vec::new()))
        .collect();
    match strategy {
        AssignmentStrategy::Range => {
            let topics: BTreeSet<&String> = members.iter().flat_map(|m| &m.topics).collect();
            for topic in topics {
                let Some(&count) = partition_counts.get(topic) else {
                    continue;
                };
                let subscribed: Vec<&&MemberSubscription> = ordered
                    .iter()
                    .filter(|m| m.topics.contains(topic))
                    .collect();
                let n = subscribed.len() as i32;
                let (per_member, extra) = (count / n, count % n);
                for (i, member) in subscribed.iter().enumerate() {
                    let i = i as i32;
                    let start = per_member * i + i.min(extra);
                    let length = per_member + i32::from(i < extra);
                    let slot = out
                        .get_mut(&member.member_id)
                        .expect("every member has a slot");
                    slot.extend((start..start + length).map(|p| TopicPartition::new(topic, p)));
                }
            }
        }
        AssignmentStrategy::RoundRobin => {
            let topics: BTreeSet<&String> = members.iter().flat_map(|m| &m.topics).collect();
            let mut next = 0usize;
            for topic in topics {
                let Some(&count) = partition_counts.get(topic) else {
                    continue;
                };
                for partition in 0..count {
                    // Someone subscribes to `topic`, so this finds a member within one circle.
                    for _ in 0..ordered.len() {
                        let member = ordered[next % ordered.len()];
                        next += 1;
                        if member.topics.contains(topic) {
                            out.get_mut(&member.member_id)
                                .expect("every member has a slot")
                                .push(TopicPartition::new(topic, partition));
                            break;
                        }
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, topics: &[&str]) -> MemberSubscription {
        MemberSubscription {
            member_id: id.to_string(),
            group_instance_id: None,
            topics: topics.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn tps(list: &[(&str, i32)]) -> Vec<TopicPartition> {
        list.iter()
            .map(|(t, p)| TopicPartition::new(*t, *p))
            .collect()
    }

    #[test]
    fn range_gives_the_first_members_the_extra_partitions_per_topic() {
        // Kafka's RangeAssignor javadoc example: t0 and t1 with 3 partitions, C0 and C1.
        let members = [member("C0", &["t0", "t1"]), member("C1", &["t0", "t1"])];
        let counts = BTreeMap::from([("t0".to_string(), 3), ("t1".to_string(), 3)]);
        let out = assign(AssignmentStrategy::Range, &members, &counts);
        assert_eq!(
            out["C0"],
            tps(&[("t0", 0), ("t0", 1), ("t1", 0), ("t1", 1)])
        );
        assert_eq!(out["C1"], tps(&[("t0", 2), ("t1", 2)]));
    }

    #[test]
    fn roundrobin_deals_partitions_in_a_circle() {
        // Kafka's RoundRobinAssignor javadoc example.
        let members = [member("C0", &["t0", "t1"]), member("C1", &["t0", "t1"])];
        let counts = BTreeMap::from([("t0".to_string(), 3), ("t1".to_string(), 3)]);
        let out = assign(AssignmentStrategy::RoundRobin, &members, &counts);
        assert_eq!(out["C0"], tps(&[("t0", 0), ("t0", 2), ("t1", 1)]));
        assert_eq!(out["C1"], tps(&[("t0", 1), ("t1", 0), ("t1", 2)]));
        // The javadoc's uneven subscription case: C0 t0; C1 t0,t1; C2 t0,t1,t2 (1, 2, 3 parts).
        let members = [
            member("C0", &["t0"]),
            member("C1", &["t0", "t1"]),
            member("C2", &["t0", "t1", "t2"]),
        ];
        let counts = BTreeMap::from([
            ("t0".to_string(), 1),
            ("t1".to_string(), 2),
            ("t2".to_string(), 3),
        ]);
        let out = assign(AssignmentStrategy::RoundRobin, &members, &counts);
        assert_eq!(out["C0"], tps(&[("t0", 0)]));
        assert_eq!(out["C1"], tps(&[("t1", 0)]));
        assert_eq!(
            out["C2"],
            tps(&[("t1", 1), ("t2", 0), ("t2", 1), ("t2", 2)])
        );
    }

    #[test]
    fn static_members_sort_first_and_every_member_gets_a_slot() {
        let mut a = member("zzz", &["t"]);
        a.group_instance_id = Some("i1".to_string());
        let members = [member("aaa", &["t"]), a, member("bbb", &["other"])];
        let counts = BTreeMap::from([("t".to_string(), 3)]);
        let out = assign(AssignmentStrategy::Range, &members, &counts);
        assert_eq!(out["zzz"], tps(&[("t", 0), ("t", 1)]));
        assert_eq!(out["aaa"], tps(&[("t", 2)]));
        assert!(out["bbb"].is_empty());
    }

    #[test]
    fn three_members_six_partitions_get_two_each_disjoint_and_covering() {
        let members = [
            member("m1", &["t"]),
            member("m2", &["t"]),
            member("m3", &["t"]),
        ];
        let counts = BTreeMap::from([("t".to_string(), 6)]);
        for strategy in [AssignmentStrategy::Range, AssignmentStrategy::RoundRobin] {
            let out = assign(strategy, &members, &counts);
            let mut all: Vec<TopicPartition> = out.values().flatten().cloned().collect();
            assert!(out.values().all(|v| v.len() == 2), "{strategy:?}: {out:?}");
            all.sort();
            all.dedup();
            assert_eq!(all.len(), 6);
        }
    }

    #[test]
    fn subscription_and_assignment_carry_the_version_prefix() {
        // FACTS.md: kafka-protocol encodes the body only; Kafka puts an i16 version first.
        let bytes = encode_subscription(&["a".to_string()], &tps(&[("a", 1)])).unwrap();
        assert_eq!(&bytes[..2], &SUBSCRIPTION_VERSION.to_be_bytes());
        // v0 body: topics array (len 1, "a"), user data null.
        let v0 = [0u8, 0, 0, 0, 0, 1, 0, 1, b'a', 0xff, 0xff, 0xff, 0xff];
        assert_eq!(decode_subscription(&v0).unwrap(), vec!["a".to_string()]);
        assert_eq!(decode_subscription(&bytes).unwrap(), vec!["a".to_string()]);
        let assignment = tps(&[("a", 0), ("a", 3), ("b", 1)]);
        let bytes = encode_assignment(&assignment).unwrap();
        assert_eq!(&bytes[..2], &ASSIGNMENT_VERSION.to_be_bytes());
        assert_eq!(decode_assignment(&bytes).unwrap(), assignment);
        // A newer version than we know is read with the newest schema (same fields).
        let mut v3 = bytes.to_vec();
        v3[..2].copy_from_slice(&3i16.to_be_bytes());
        assert_eq!(decode_assignment(&v3).unwrap(), assignment);
        assert!(decode_assignment(&[]).unwrap().is_empty());
        assert!(decode_assignment(&[0]).is_err());
    }
}
