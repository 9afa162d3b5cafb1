//! One classic group: its state, members and committed offsets.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupResponse, ResponseKind, SyncGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::records::{GroupMetadataValue, MemberMetadataValue, OffsetValue};
use super::{error_code, Effect, Reply};
use crate::Millis;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    pub(crate) fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// A group that does not exist is "Dead" (DescribeGroups says so).
pub(crate) const DEAD: &str = "Dead";

#[derive(Clone, Debug)]
pub(crate) struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// (name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    pub awaiting_join: Option<Reply>,
    pub awaiting_sync: Option<Reply>,
    pub heartbeat_deadline_ms: Millis,
}

impl Member {
    pub(crate) fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Group {
    pub group_id: String,
    pub partition: i32,
    pub state: GroupState,
    pub state_since_ms: Millis,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// group.instance.id -> member id (KIP-345).
    pub static_members: BTreeMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED (KIP-394) -> expiry.
    pub pending_members: BTreeMap<String, Millis>,
    pub offsets: BTreeMap<(String, i32), OffsetValue>,
    /// PreparingRebalance: when the join phase ends regardless (rebalance timeout).
    pub rebalance_deadline_ms: Option<Millis>,
    /// PreparingRebalance of a group that was Empty: the join phase does not complete before
    /// this (group.initial.rebalance.delay.ms). None once passed.
    pub join_not_before_ms: Option<Millis>,
    /// A new member joined while the initial delay ran: when it passes, the delay starts
    /// again (Kafka's InitialDelayedJoin), never past the rebalance deadline.
    pub joined_during_delay: bool,
    /// CompletingRebalance: the leader's assignment, being persisted.
    pub pending_assignment: Option<BTreeMap<String, Bytes>>,
}

impl Group {
    pub(crate) fn new(group_id: String, partition: i32, now: Millis) -> Group {
        Group {
            group_id,
            partition,
            state: GroupState::Empty,
            state_since_ms: now,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            pending_members: BTreeMap::new(),
            offsets: BTreeMap::new(),
            rebalance_deadline_ms: None,
            join_not_before_ms: None,
            joined_during_delay: false,
            pending_assignment: None,
        }
    }

    /// Rebuilds a group from its last metadata record: a group with members comes back
    /// Stable with fresh session timers (as in Kafka), else Empty.
    pub(crate) fn from_record(
        group_id: String,
        partition: i32,
        value: &GroupMetadataValue,
        now: Millis,
    ) -> Group {
        let mut group = Group::new(group_id, partition, now);
        group.generation_id = value.generation_id.max(0);
        group.protocol_type = if value.protocol_type.is_empty() {
            None
        } else {
            Some(value.protocol_type.clone())
        };
        if value.current_state_timestamp_ms >= 0 {
            group.state_since_ms = value.current_state_timestamp_ms;
        }
        let protocol = value.protocol_name.clone().unwrap_or_default();
        for m in &value.members {
            let member = Member {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                session_timeout_ms: m.session_timeout_ms,
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                protocol_type: value.protocol_type.clone(),
                protocols: vec![(protocol.clone(), m.subscription.clone())],
                assignment: m.assignment.clone(),
                awaiting_join: None,
                awaiting_sync: None,
                heartbeat_deadline_ms: now + m.session_timeout_ms as i64,
            };
            if let Some(instance) = &m.group_instance_id {
                group
                    .static_members
                    .insert(instance.clone(), m.member_id.clone());
            }
            group.members.insert(m.member_id.clone(), member);
        }
        let leader_ok = value
            .leader
            .as_ref()
            .is_some_and(|l| group.members.contains_key(l));
        if !group.members.is_empty() && leader_ok && value.protocol_name.is_some() {
            group.state = GroupState::Stable;
            group.protocol_name = value.protocol_name.clone();
            group.leader = value.leader.clone();
        } else {
            group.members.clear();
            group.static_members.clear();
        }
        group
    }

    /// The group metadata record; `assignment` overrides members' current assignments.
    pub(crate) fn to_record(
        &self,
        assignment: Option<&BTreeMap<String, Bytes>>,
    ) -> GroupMetadataValue {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        GroupMetadataValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation_id: self.generation_id,
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone(),
            current_state_timestamp_ms: self.state_since_ms,
            members: self
                .members
                .values()
                .map(|m| MemberMetadataValue {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata(&protocol),
                    assignment: match assignment {
                        Some(a) => a.get(&m.member_id).cloned().unwrap_or_default(),
                        None => m.assignment.clone(),
                    },
                })
                .collect(),
        }
    }

    /// Protocols every member supports (the candidates for selection).
    pub(crate) fn candidate_protocols(&self) -> Vec<String> {
        let mut iter = self.members.values();
        let Some(first) = iter.next() else {
            return Vec::new();
        };
        let mut candidates: Vec<String> = first.protocols.iter().map(|(n, _)| n.clone()).collect();
        for m in iter {
            candidates.retain(|c| m.protocols.iter().any(|(n, _)| n == c));
        }
        candidates
    }

    /// Whether a member with these protocols may join (JoinGroup's INCONSISTENT_GROUP_PROTOCOL).
    pub(crate) fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && self
                .candidate_protocols()
                .iter()
                .any(|c| protocols.iter().any(|(n, _)| n == c))
    }

    /// Kafka's selection: each member votes for its most preferred candidate; the most votes
    /// wins, ties going to the lexicographically first name (deterministic).
    pub(crate) fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols();
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((name, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(n)) {
                *votes.entry(name.as_str()).or_default() += 1;
            }
        }
        let max = votes.values().copied().max()?;
        votes
            .into_iter()
            .find(|(_, v)| *v == max)
            .map(|(n, _)| n.to_string())
    }

    pub(crate) fn rebalance_timeout_ms(&self) -> i64 {
        self.members
            .values()
            .map(|m| m.rebalance_timeout_ms as i64)
            .max()
            .unwrap_or(0)
    }

    pub(crate) fn all_members_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(|m| m.awaiting_join.is_some())
    }

    pub(crate) fn next_deadline(&self) -> Option<Millis> {
        let mut deadline: Option<Millis> = None;
        let mut consider = |t: Millis| deadline = Some(deadline.map_or(t, |d| d.min(t)));
        for m in self.members.values() {
            if m.awaiting_join.is_none() {
                consider(m.heartbeat_deadline_ms);
            }
        }
        for t in self.pending_members.values() {
            consider(*t);
        }
        if matches!(
            self.state,
            GroupState::PreparingRebalance | GroupState::CompletingRebalance
        ) {
            if let Some(t) = self.rebalance_deadline_ms {
                consider(t);
            }
        }
        if self.state == GroupState::PreparingRebalance {
            if let Some(t) = self.join_not_before_ms {
                consider(t);
            }
        }
        deadline
    }

    /// Answers every waiting JoinGroup and SyncGroup with `code`.
    pub(crate) fn fail_waiters(&mut self, code: i16, effects: &mut Vec<Effect>) {
        for m in self.members.values_mut() {
            if let Some(reply) = m.awaiting_join.take() {
                effects.push(join_error(reply, code, &m.member_id));
            }
            if let Some(reply) = m.awaiting_sync.take() {
                effects.push(sync_error(reply, code));
            }
        }
    }

    /// The JoinGroup response for `member_id` at the current generation; the leader gets
    /// every member's metadata for the selected protocol.
    pub(crate) fn join_response(&self, reply: Reply, member_id: &str) -> Effect {
        let leader = self.leader.clone().unwrap_or_default();
        self.join_response_as(reply, member_id, &leader, false)
    }

    /// A JoinGroup response for the current generation naming `leader` as the leader; the
    /// member list goes only to a member named leader. `skip_assignment` (v9+, KIP-814) tells
    /// that leader not to run the assignor.
    pub(crate) fn join_response_as(
        &self,
        reply: Reply,
        member_id: &str,
        leader: &str,
        skip_assignment: bool,
    ) -> Effect {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let members = if leader == member_id {
            self.members
                .values()
                .map(|m| {
                    let mut r = JoinGroupResponseMember::default();
                    r.member_id = StrBytes::from_string(m.member_id.clone());
                    if reply.api_version >= 5 {
                        r.group_instance_id =
                            m.group_instance_id.clone().map(StrBytes::from_string);
                    }
                    r.metadata = m.metadata(&protocol);
                    r
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut response = JoinGroupResponse::default();
        response.error_code = error_code::NONE;
        response.generation_id = self.generation_id;
        if reply.api_version >= 7 {
            response.protocol_type = self.protocol_type.clone().map(StrBytes::from_string);
        }
        response.protocol_name = Some(StrBytes::from_string(protocol));
        response.leader = StrBytes::from_string(leader.to_string());
        // The field exists from v9 on; older versions cannot carry it.
        response.skip_assignment = skip_assignment && reply.api_version >= 9;
        response.member_id = StrBytes::from_string(member_id.to_string());
        response.members = members;
        respond(reply, ResponseKind::JoinGroup(response))
    }

    pub(crate) fn sync_response(&self, reply: Reply, assignment: Bytes) -> Effect {
        let mut response = SyncGroupResponse::default();
        if reply.api_version >= 5 {
            response.protocol_type = self.protocol_type.clone().map(StrBytes::from_string);
            response.protocol_name = self.protocol_name.clone().map(StrBytes::from_string);
        }
        response.assignment = assignment;
        respond(reply, ResponseKind::SyncGroup(response))
    }

    pub(crate) fn invariants(&self) {
        let id = &self.group_id;
        assert!(self.generation_id >= 0, "{id}: negative generation");
        match self.state {
            GroupState::Empty => {
                assert!(self.members.is_empty(), "{id}: Empty with members");
                assert!(self.pending_assignment.is_none());
            }
            GroupState::PreparingRebalance => {
                assert!(self.members.values().all(|m| m.awaiting_sync.is_none()));
                assert!(self.rebalance_deadline_ms.is_some());
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                assert!(
                    !self.members.is_empty(),
                    "{id}: {:?} without members",
                    self.state
                );
                let leader = self.leader.as_ref().expect("leader");
                assert!(
                    self.members.contains_key(leader),
                    "{id}: leader not a member"
                );
                let protocol = self.protocol_name.as_ref().expect("protocol");
                for m in self.members.values() {
                    assert!(m.protocols.iter().any(|(n, _)| n == protocol));
                    assert!(
                        m.awaiting_join.is_none(),
                        "{id}: join waiter outside join phase"
                    );
                    if self.state == GroupState::Stable {
                        assert!(m.awaiting_sync.is_none(), "{id}: sync waiter in Stable");
                    }
                }
                if self.state == GroupState::Stable {
                    assert!(self.pending_assignment.is_none());
                }
            }
        }
        for (instance, member_id) in &self.static_members {
            let m = self.members.get(member_id).expect("static member exists");
            assert_eq!(m.group_instance_id.as_ref(), Some(instance));
        }
        for m in self.members.values() {
            if let Some(instance) = &m.group_instance_id {
                assert_eq!(self.static_members.get(instance), Some(&m.member_id));
            }
            assert!(!self.pending_members.contains_key(&m.member_id));
        }
    }
}

pub(crate) fn respond(reply: Reply, response: ResponseKind) -> Effect {
    Effect::Respond {
        token: reply.token,
        api_version: reply.api_version,
        response,
    }
}

pub(crate) fn join_error(reply: Reply, code: i16, member_id: &str) -> Effect {
    let mut response = JoinGroupResponse::default();
    response.error_code = code;
    response.generation_id = -1;
    response.member_id = StrBytes::from_string(member_id.to_string());
    // ProtocolName is a non-nullable string before v7.
    response.protocol_name = if reply.api_version >= 7 {
        None
    } else {
        Some(StrBytes::default())
    };
    respond(reply, ResponseKind::JoinGroup(response))
}

pub(crate) fn sync_error(reply: Reply, code: i16) -> Effect {
    let mut response = SyncGroupResponse::default();
    response.error_code = code;
    respond(reply, ResponseKind::SyncGroup(response))
}
