//! Request handlers, timers and persist completions of the [`GroupCoordinator`].

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    ConsumerProtocolSubscription, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest,
    LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    OffsetFetchRequest, OffsetFetchResponse, ResponseKind, SyncGroupRequest,
};
use kafka_protocol::protocol::{Decodable, StrBytes};

use super::group::{join_error, respond, sync_error, Group, GroupState, Member, DEAD};
use super::records::{OffsetKey, OffsetValue, Record};
use super::{
    error_code, Completion, Effect, GroupCoordinator, GroupRequest, PendingDeleteGroups,
    PersistError, PersistToken, Reply, RequestContext, MAX_PENDING_PERSISTS,
};
use crate::Millis;

/// The protocol type whose metadata is a ConsumerProtocolSubscription.
const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

impl GroupCoordinator {
    pub(super) fn handle_request(
        &mut self,
        now: Millis,
        context: RequestContext,
        request: GroupRequest,
        effects: &mut Vec<Effect>,
    ) {
        let reply = Reply {
            token: context.token,
            api_version: context.api_version,
        };
        match request {
            GroupRequest::JoinGroup(r) => self.join_group(now, &context, reply, r, effects),
            GroupRequest::SyncGroup(r) => self.sync_group(now, reply, r, effects),
            GroupRequest::Heartbeat(r) => self.heartbeat(now, reply, r, effects),
            GroupRequest::LeaveGroup(r) => self.leave_group(now, reply, r, effects),
            GroupRequest::OffsetCommit(r) => self.offset_commit(now, reply, r, effects),
            GroupRequest::OffsetFetch(r) => self.offset_fetch(reply, r, effects),
            GroupRequest::DescribeGroups(r) => self.describe_groups(reply, r, effects),
            GroupRequest::ListGroups(r) => self.list_groups(reply, r, effects),
            GroupRequest::DeleteGroups(r) => self.delete_groups(reply, r, effects),
            GroupRequest::OffsetDelete(r) => self.offset_delete(reply, r, effects),
        }
    }

    /// NOT_COORDINATOR unless this coordinator has loaded the group's partition.
    fn check_coordinator(&self, group_id: &str) -> Result<(), i16> {
        if group_id.is_empty() {
            return Err(error_code::INVALID_GROUP_ID);
        }
        if self.owns_partition(self.partition_for(group_id)) {
            Ok(())
        } else {
            Err(error_code::NOT_COORDINATOR)
        }
    }

    // ---- JoinGroup -------------------------------------------------------------------------

    fn join_group(
        &mut self,
        now: Millis,
        context: &RequestContext,
        reply: Reply,
        request: JoinGroupRequest,
        effects: &mut Vec<Effect>,
    ) {
        let group_id = request.group_id.0.to_string();
        let member_id = request.member_id.to_string();
        if let Err(code) = self.check_coordinator(&group_id) {
            return effects.push(join_error(reply, code, &member_id));
        }
        let session = request.session_timeout_ms;
        if session < self.config.group_min_session_timeout_ms
            || session > self.config.group_max_session_timeout_ms
        {
            return effects.push(join_error(
                reply,
                error_code::INVALID_SESSION_TIMEOUT,
                &member_id,
            ));
        }
        // Rebalance timeout arrived in v1; v0 uses the session timeout.
        let rebalance_timeout_ms = if context.api_version >= 1 && request.rebalance_timeout_ms > 0 {
            request.rebalance_timeout_ms
        } else {
            session
        };
        let protocol_type = request.protocol_type.to_string();
        let protocols: Vec<(String, Bytes)> = request
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect();
        let instance_id = request.group_instance_id.as_ref().map(|s| s.to_string());

        if !self.groups.contains_key(&group_id) {
            if !member_id.is_empty() {
                return effects.push(join_error(reply, error_code::UNKNOWN_MEMBER_ID, &member_id));
            }
            let partition = self.partition_for(&group_id);
            self.groups.insert(
                group_id.clone(),
                Group::new(group_id.clone(), partition, now),
            );
        }
        let max_size = self.config.group_max_size;
        let group = self.groups.get(&group_id).expect("group exists");
        if !group.supports(&protocol_type, &protocols) {
            return effects.push(join_error(
                reply,
                error_code::INCONSISTENT_GROUP_PROTOCOL,
                &member_id,
            ));
        }
        let new_member = |id: String| Member {
            member_id: id,
            group_instance_id: instance_id.clone(),
            client_id: context.client_id.clone(),
            client_host: context.client_host.clone(),
            session_timeout_ms: session,
            rebalance_timeout_ms,
            protocol_type: protocol_type.clone(),
            protocols: protocols.clone(),
            assignment: Bytes::new(),
            awaiting_join: Some(reply),
            awaiting_sync: None,
            heartbeat_deadline_ms: now + session as i64,
        };

        if member_id.is_empty() {
            let size = group.members.len() + group.pending_members.len();
            if let Some(instance) = &instance_id {
                if let Some(old_id) = group.static_members.get(instance).cloned() {
                    // KIP-345: a static member restarting replaces its old identity.
                    let id = self.new_member_id(&context.client_id);
                    let member = new_member(id);
                    return self.replace_static_member(now, &group_id, &old_id, member, effects);
                }
                if size >= max_size {
                    return effects.push(join_error(
                        reply,
                        error_code::GROUP_MAX_SIZE_REACHED,
                        &member_id,
                    ));
                }
                let id = self.new_member_id(&context.client_id);
                let member = new_member(id);
                return self.add_member_and_rebalance(now, &group_id, member, effects);
            }
            if size >= max_size {
                return effects.push(join_error(
                    reply,
                    error_code::GROUP_MAX_SIZE_REACHED,
                    &member_id,
                ));
            }
            let id = self.new_member_id(&context.client_id);
            if context.api_version >= 4 {
                // KIP-394: hand out the id, admit the member only when it rejoins with it.
                let group = self.groups.get_mut(&group_id).expect("group exists");
                group
                    .pending_members
                    .insert(id.clone(), now + session as i64);
                return effects.push(join_error(reply, error_code::MEMBER_ID_REQUIRED, &id));
            }
            let member = new_member(id);
            return self.add_member_and_rebalance(now, &group_id, member, effects);
        }

        let group = self.groups.get_mut(&group_id).expect("group exists");
        if group.pending_members.remove(&member_id).is_some() {
            if instance_id.is_some() {
                // A pending id is never static; the member must not claim an instance now.
                return effects.push(join_error(reply, error_code::UNKNOWN_MEMBER_ID, &member_id));
            }
            let member = new_member(member_id);
            return self.add_member_and_rebalance(now, &group_id, member, effects);
        }
        if let Err(code) = static_check(group, instance_id.as_deref(), &member_id) {
            return effects.push(join_error(reply, code, &member_id));
        }
        let Some(member) = group.members.get_mut(&member_id) else {
            return effects.push(join_error(reply, error_code::UNKNOWN_MEMBER_ID, &member_id));
        };
        let protocols_changed = member.protocols != protocols;
        member.session_timeout_ms = session;
        member.rebalance_timeout_ms = rebalance_timeout_ms;
        member.client_id = context.client_id.clone();
        member.client_host = context.client_host.clone();
        member.protocols = protocols;
        member.heartbeat_deadline_ms = now + session as i64;
        match group.state {
            GroupState::PreparingRebalance => {
                if let Some(previous) = member.awaiting_join.replace(reply) {
                    // A retried JoinGroup supersedes the earlier one.
                    effects.push(join_error(
                        previous,
                        error_code::REBALANCE_IN_PROGRESS,
                        &member_id,
                    ));
                }
                self.maybe_complete_join(now, &group_id, effects);
            }
            GroupState::CompletingRebalance if !protocols_changed => {
                // The member lost its JoinGroup response: send the same one again.
                effects.push(group.join_response(reply, &member_id));
            }
            GroupState::Stable
                if !protocols_changed && group.leader.as_ref() != Some(&member_id) =>
            {
                // Nothing changed: the follower gets the current generation back.
                effects.push(group.join_response(reply, &member_id));
            }
            _ => {
                member.awaiting_join = Some(reply);
                self.prepare_rebalance(now, &group_id, effects);
            }
        }
    }

    fn add_member_and_rebalance(
        &mut self,
        now: Millis,
        group_id: &str,
        member: Member,
        effects: &mut Vec<Effect>,
    ) {
        let group = self.groups.get_mut(group_id).expect("group exists");
        if group.members.is_empty() {
            group.protocol_type = Some(member.protocol_type.clone());
        }
        if let Some(instance) = &member.group_instance_id {
            group
                .static_members
                .insert(instance.clone(), member.member_id.clone());
        }
        group.members.insert(member.member_id.clone(), member);
        if group.state == GroupState::PreparingRebalance {
            self.maybe_complete_join(now, group_id, effects);
        } else {
            self.prepare_rebalance(now, group_id, effects);
        }
    }

    /// KIP-345: the static member `old_id` restarted as `member`. The old identity is fenced;
    /// a Stable group whose follower rejoins unchanged keeps its generation and assignment.
    fn replace_static_member(
        &mut self,
        now: Millis,
        group_id: &str,
        old_id: &str,
        mut member: Member,
        effects: &mut Vec<Effect>,
    ) {
        let group = self.groups.get_mut(group_id).expect("group exists");
        let Some(mut old) = group.members.remove(old_id) else {
            return;
        };
        if let Some(r) = old.awaiting_join.take() {
            effects.push(join_error(r, error_code::FENCED_INSTANCE_ID, old_id));
        }
        if let Some(r) = old.awaiting_sync.take() {
            effects.push(sync_error(r, error_code::FENCED_INSTANCE_ID));
        }
        let was_leader = group.leader.as_deref() == Some(old_id);
        if was_leader {
            group.leader = Some(member.member_id.clone());
        }
        let unchanged = old.protocols == member.protocols;
        member.assignment = old.assignment;
        let new_id = member.member_id.clone();
        if let Some(instance) = &member.group_instance_id {
            group
                .static_members
                .insert(instance.clone(), new_id.clone());
        }
        match group.state {
            GroupState::Stable if unchanged && !was_leader => {
                let reply = member.awaiting_join.take().expect("join reply");
                group.members.insert(new_id.clone(), member);
                effects.push(group.join_response(reply, &new_id));
                // The new member id must survive a coordinator failover.
                self.persist_group_metadata(group_id, effects);
            }
            GroupState::PreparingRebalance => {
                group.members.insert(new_id, member);
                self.maybe_complete_join(now, group_id, effects);
            }
            _ => {
                group.members.insert(new_id, member);
                self.prepare_rebalance(now, group_id, effects);
            }
        }
    }

    /// Moves the group to PreparingRebalance (members must rejoin within the rebalance timeout).
    fn prepare_rebalance(&mut self, now: Millis, group_id: &str, effects: &mut Vec<Effect>) {
        let initial_delay = self.config.group_initial_rebalance_delay_ms;
        let group = self.groups.get_mut(group_id).expect("group exists");
        for m in group.members.values_mut() {
            if let Some(r) = m.awaiting_sync.take() {
                effects.push(sync_error(r, error_code::REBALANCE_IN_PROGRESS));
            }
        }
        group.pending_assignment = None;
        let timeout = group.rebalance_timeout_ms();
        group.join_not_before_ms = if group.state == GroupState::Empty && initial_delay > 0 {
            Some(now + initial_delay.min(timeout))
        } else {
            None
        };
        group.rebalance_deadline_ms = Some(now + timeout);
        group.state = GroupState::PreparingRebalance;
        group.state_since_ms = now;
        self.maybe_complete_join(now, group_id, effects);
    }

    fn maybe_complete_join(&mut self, now: Millis, group_id: &str, effects: &mut Vec<Effect>) {
        let Some(group) = self.groups.get_mut(group_id) else {
            return;
        };
        if group.state != GroupState::PreparingRebalance {
            return;
        }
        if let Some(t) = group.join_not_before_ms {
            if now < t {
                return;
            }
            group.join_not_before_ms = None;
        }
        if group.all_members_joined() || group.rebalance_deadline_ms.is_some_and(|d| now >= d) {
            self.complete_join(now, group_id, effects);
        }
    }

    /// Ends the join phase: members that did not rejoin are removed, the generation advances,
    /// a protocol is chosen and every member gets its JoinGroup response.
    fn complete_join(&mut self, now: Millis, group_id: &str, effects: &mut Vec<Effect>) {
        let group = self.groups.get_mut(group_id).expect("group exists");
        let missing: Vec<String> = group
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for id in missing {
            remove_member_raw(group, &id, effects);
        }
        group.generation_id += 1;
        group.rebalance_deadline_ms = None;
        group.join_not_before_ms = None;
        group.state_since_ms = now;
        if group.members.is_empty() {
            group.state = GroupState::Empty;
            group.protocol_name = None;
            group.leader = None;
            self.persist_group_metadata(group_id, effects);
            return;
        }
        group.protocol_name = group.select_protocol();
        if group.protocol_name.is_none() {
            // Unreachable while joins check `supports`; fail safe rather than panic.
            group.fail_waiters(error_code::INCONSISTENT_GROUP_PROTOCOL, effects);
            group.members.clear();
            group.static_members.clear();
            group.state = GroupState::Empty;
            group.leader = None;
            return;
        }
        if !group
            .leader
            .as_ref()
            .is_some_and(|l| group.members.contains_key(l))
        {
            group.leader = group.members.keys().next().cloned();
        }
        group.state = GroupState::CompletingRebalance;
        // Members must send SyncGroup within the rebalance timeout (as Kafka 2.8+ does).
        group.rebalance_deadline_ms = Some(now + group.rebalance_timeout_ms());
        let ids: Vec<String> = group.members.keys().cloned().collect();
        for id in ids {
            let member = group.members.get_mut(&id).expect("member");
            let reply = member.awaiting_join.take().expect("joined");
            member.heartbeat_deadline_ms = now + member.session_timeout_ms as i64;
            member.assignment = Bytes::new();
            let response = group.join_response(reply, &id);
            effects.push(response);
        }
    }

    /// Removes members and lets the group react: a rebalance, or completing the join phase.
    fn remove_members(
        &mut self,
        now: Millis,
        group_id: &str,
        member_ids: &[String],
        effects: &mut Vec<Effect>,
    ) {
        let Some(group) = self.groups.get_mut(group_id) else {
            return;
        };
        for id in member_ids {
            remove_member_raw(group, id, effects);
        }
        match group.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now, group_id, effects)
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(now, group_id, effects),
            GroupState::Empty => {}
        }
    }

    // ---- SyncGroup -------------------------------------------------------------------------

    fn sync_group(
        &mut self,
        now: Millis,
        reply: Reply,
        request: SyncGroupRequest,
        effects: &mut Vec<Effect>,
    ) {
        let group_id = request.group_id.0.to_string();
        let member_id = request.member_id.to_string();
        if let Err(code) = self.check_coordinator(&group_id) {
            return effects.push(sync_error(reply, code));
        }
        let Some(group) = self.groups.get_mut(&group_id) else {
            return effects.push(sync_error(reply, error_code::UNKNOWN_MEMBER_ID));
        };
        let instance = request.group_instance_id.as_ref().map(|s| s.to_string());
        if let Err(code) = static_check(group, instance.as_deref(), &member_id) {
            return effects.push(sync_error(reply, code));
        }
        if !group.members.contains_key(&member_id) {
            return effects.push(sync_error(reply, error_code::UNKNOWN_MEMBER_ID));
        }
        if request.generation_id != group.generation_id {
            return effects.push(sync_error(reply, error_code::ILLEGAL_GENERATION));
        }
        // v5+: the client says which protocol it believes was chosen (KIP-559).
        let type_mismatch = request
            .protocol_type
            .as_ref()
            .is_some_and(|t| group.protocol_type.as_deref() != Some(t.as_str()));
        let name_mismatch = request
            .protocol_name
            .as_ref()
            .is_some_and(|n| group.protocol_name.as_deref() != Some(n.as_str()));
        if type_mismatch || name_mismatch {
            return effects.push(sync_error(reply, error_code::INCONSISTENT_GROUP_PROTOCOL));
        }
        match group.state {
            GroupState::Empty => effects.push(sync_error(reply, error_code::UNKNOWN_MEMBER_ID)),
            GroupState::PreparingRebalance => {
                effects.push(sync_error(reply, error_code::REBALANCE_IN_PROGRESS))
            }
            GroupState::Stable => {
                let member = group.members.get_mut(&member_id).expect("member");
                member.heartbeat_deadline_ms = now + member.session_timeout_ms as i64;
                let assignment = member.assignment.clone();
                effects.push(group.sync_response(reply, assignment));
            }
            GroupState::CompletingRebalance => {
                let is_leader = group.leader.as_ref() == Some(&member_id);
                let member = group.members.get_mut(&member_id).expect("member");
                member.heartbeat_deadline_ms = now + member.session_timeout_ms as i64;
                if let Some(previous) = member.awaiting_sync.replace(reply) {
                    effects.push(sync_error(previous, error_code::REBALANCE_IN_PROGRESS));
                }
                if is_leader && group.pending_assignment.is_none() {
                    let mut assignment: BTreeMap<String, Bytes> = BTreeMap::new();
                    for a in request.assignments {
                        let id = a.member_id.to_string();
                        if group.members.contains_key(&id) {
                            assignment.insert(id, a.assignment);
                        }
                    }
                    let record = Record::Group {
                        group_id: group_id.clone(),
                        value: Some(group.to_record(Some(&assignment))),
                    }
                    .encode();
                    group.pending_assignment = Some(assignment);
                    let generation_id = group.generation_id;
                    let partition = group.partition;
                    self.persist(
                        partition,
                        vec![record],
                        Completion::Sync {
                            group_id,
                            generation_id,
                        },
                        effects,
                    );
                }
            }
        }
    }

    // ---- Heartbeat -------------------------------------------------------------------------

    fn heartbeat(
        &mut self,
        now: Millis,
        reply: Reply,
        request: HeartbeatRequest,
        effects: &mut Vec<Effect>,
    ) {
        let code = self.heartbeat_code(now, &request);
        let mut response = HeartbeatResponse::default();
        response.error_code = code;
        effects.push(respond(reply, ResponseKind::Heartbeat(response)));
    }

    fn heartbeat_code(&mut self, now: Millis, request: &HeartbeatRequest) -> i16 {
        let group_id = request.group_id.0.to_string();
        if let Err(code) = self.check_coordinator(&group_id) {
            return code;
        }
        let Some(group) = self.groups.get_mut(&group_id) else {
            return error_code::UNKNOWN_MEMBER_ID;
        };
        let member_id = request.member_id.to_string();
        let instance = request.group_instance_id.as_ref().map(|s| s.to_string());
        if let Err(code) = static_check(group, instance.as_deref(), &member_id) {
            return code;
        }
        let state = group.state;
        let generation_id = group.generation_id;
        let Some(member) = group.members.get_mut(&member_id) else {
            return error_code::UNKNOWN_MEMBER_ID;
        };
        if state == GroupState::PreparingRebalance {
            member.heartbeat_deadline_ms = now + member.session_timeout_ms as i64;
            return error_code::REBALANCE_IN_PROGRESS;
        }
        if request.generation_id != generation_id {
            return error_code::ILLEGAL_GENERATION;
        }
        member.heartbeat_deadline_ms = now + member.session_timeout_ms as i64;
        error_code::NONE
    }

    // ---- LeaveGroup ------------------------------------------------------------------------

    fn leave_group(
        &mut self,
        now: Millis,
        reply: Reply,
        request: LeaveGroupRequest,
        effects: &mut Vec<Effect>,
    ) {
        let group_id = request.group_id.0.to_string();
        // v3+ (KIP-345) leaves a batch of members; before, one member id.
        let identities: Vec<(String, Option<String>)> = if reply.api_version >= 3 {
            request
                .members
                .iter()
                .map(|m| {
                    (
                        m.member_id.to_string(),
                        m.group_instance_id.as_ref().map(|s| s.to_string()),
                    )
                })
                .collect()
        } else {
            vec![(request.member_id.to_string(), None)]
        };
        let mut response = LeaveGroupResponse::default();
        let mut results = Vec::new();
        match self.check_coordinator(&group_id) {
            Err(code) => response.error_code = code,
            Ok(()) => {
                let mut leaving = Vec::new();
                for (member_id, instance) in &identities {
                    let code = match self.groups.get_mut(&group_id) {
                        None => error_code::UNKNOWN_MEMBER_ID,
                        Some(group) => {
                            leave_code(group, member_id, instance.as_deref(), &mut leaving)
                        }
                    };
                    results.push(code);
                }
                if !leaving.is_empty() {
                    self.remove_members(now, &group_id, &leaving, effects);
                }
                if reply.api_version < 3 {
                    response.error_code = results[0];
                }
            }
        }
        if reply.api_version >= 3 {
            response.members = identities
                .iter()
                .zip(
                    results
                        .iter()
                        .copied()
                        .chain(std::iter::repeat(response.error_code)),
                )
                .map(|((member_id, instance), code)| {
                    let mut m = MemberResponse::default();
                    m.member_id = StrBytes::from_string(member_id.clone());
                    m.group_instance_id = instance.clone().map(StrBytes::from_string);
                    m.error_code = code;
                    m
                })
                .collect();
        }
        effects.push(respond(reply, ResponseKind::LeaveGroup(response)));
    }

    // ---- OffsetCommit ----------------------------------------------------------------------

    fn offset_commit(
        &mut self,
        now: Millis,
        reply: Reply,
        request: OffsetCommitRequest,
        effects: &mut Vec<Effect>,
    ) {
        let group_id = request.group_id.0.to_string();
        let group_code = self.offset_commit_group_code(now, &request);
        let mut response = OffsetCommitResponse::default();
        let mut offsets = Vec::new();
        let mut positions = Vec::new();
        for (t, topic) in request.topics.iter().enumerate() {
            let mut rt = OffsetCommitResponseTopic::default();
            rt.name = topic.name.clone();
            if reply.api_version >= 10 {
                rt.topic_id = topic.topic_id;
            }
            for (p, partition) in topic.partitions.iter().enumerate() {
                let metadata = partition
                    .committed_metadata
                    .as_ref()
                    .map(|m| m.to_string())
                    .unwrap_or_default();
                let code = if group_code != error_code::NONE {
                    group_code
                } else if topic.name.0.is_empty() {
                    // v10 addresses topics by id; this coordinator keeps offsets by name.
                    error_code::UNKNOWN_TOPIC_ID
                } else if metadata.len() > self.config.offset_metadata_max_bytes {
                    error_code::OFFSET_METADATA_TOO_LARGE
                } else {
                    offsets.push((
                        OffsetKey {
                            group_id: group_id.clone(),
                            topic: topic.name.0.to_string(),
                            partition: partition.partition_index,
                        },
                        OffsetValue {
                            offset: partition.committed_offset,
                            leader_epoch: partition.committed_leader_epoch,
                            metadata,
                            commit_timestamp_ms: now,
                        },
                    ));
                    positions.push((t, p));
                    error_code::NONE
                };
                let mut rp = OffsetCommitResponsePartition::default();
                rp.partition_index = partition.partition_index;
                rp.error_code = code;
                rt.partitions.push(rp);
            }
            response.topics.push(rt);
        }
        if offsets.is_empty() {
            return effects.push(respond(reply, ResponseKind::OffsetCommit(response)));
        }
        if self.pending.len() >= MAX_PENDING_PERSISTS {
            for rt in &mut response.topics {
                for rp in &mut rt.partitions {
                    rp.error_code = error_code::COORDINATOR_NOT_AVAILABLE;
                }
            }
            return effects.push(respond(reply, ResponseKind::OffsetCommit(response)));
        }
        let records = offsets
            .iter()
            .map(|(k, v)| {
                Record::Offset {
                    key: k.clone(),
                    value: Some(v.clone()),
                }
                .encode()
            })
            .collect();
        let partition = self.partition_for(&group_id);
        self.persist(
            partition,
            records,
            Completion::OffsetCommit {
                reply,
                group_id,
                offsets,
                positions,
                response,
            },
            effects,
        );
    }

    /// The group-level checks of OffsetCommit, as Kafka's classic coordinator orders them.
    fn offset_commit_group_code(&mut self, now: Millis, request: &OffsetCommitRequest) -> i16 {
        let group_id = request.group_id.0.to_string();
        if let Err(code) = self.check_coordinator(&group_id) {
            return code;
        }
        let generation_id = request.generation_id_or_member_epoch;
        let member_id = request.member_id.to_string();
        let Some(group) = self.groups.get_mut(&group_id) else {
            if generation_id < 0 {
                // A simple consumer (or admin) commits for a group nobody has joined.
                let partition = self.partition_for(&group_id);
                self.groups
                    .insert(group_id.clone(), Group::new(group_id, partition, now));
                return error_code::NONE;
            }
            return error_code::ILLEGAL_GENERATION;
        };
        let instance = request.group_instance_id.as_ref().map(|s| s.to_string());
        if let Err(code) = static_check(group, instance.as_deref(), &member_id) {
            return code;
        }
        if generation_id < 0 && group.state == GroupState::Empty {
            return error_code::NONE;
        }
        if group.state == GroupState::CompletingRebalance {
            return error_code::REBALANCE_IN_PROGRESS;
        }
        let Some(member) = group.members.get_mut(&member_id) else {
            return error_code::UNKNOWN_MEMBER_ID;
        };
        if generation_id != group.generation_id {
            return error_code::ILLEGAL_GENERATION;
        }
        member.heartbeat_deadline_ms = now + member.session_timeout_ms as i64;
        error_code::NONE
    }

    // ---- OffsetFetch -----------------------------------------------------------------------

    fn offset_fetch(
        &mut self,
        reply: Reply,
        request: OffsetFetchRequest,
        effects: &mut Vec<Effect>,
    ) {
        let v = reply.api_version;
        let mut response = OffsetFetchResponse::default();
        if v >= 8 {
            for g in &request.groups {
                let wanted = g.topics.as_ref().map(|topics| {
                    topics
                        .iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                        .collect::<Vec<_>>()
                });
                let (code, found) = self.fetch_offsets(&g.group_id.0, wanted);
                let mut rg = OffsetFetchResponseGroup::default();
                rg.group_id = g.group_id.clone();
                rg.error_code = code;
                for (topic, partitions) in found {
                    let mut rt = OffsetFetchResponseTopics::default();
                    rt.name = StrBytes::from_string(topic).into();
                    for (index, value) in partitions {
                        let mut rp = OffsetFetchResponsePartitions::default();
                        rp.partition_index = index;
                        rp.committed_offset = value.as_ref().map_or(-1, |o| o.offset);
                        rp.committed_leader_epoch = value.as_ref().map_or(-1, |o| o.leader_epoch);
                        rp.metadata = Some(StrBytes::from_string(
                            value.map(|o| o.metadata).unwrap_or_default(),
                        ));
                        rt.partitions.push(rp);
                    }
                    rg.topics.push(rt);
                }
                response.groups.push(rg);
            }
        } else {
            let wanted = request.topics.as_ref().map(|topics| {
                topics
                    .iter()
                    .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                    .collect::<Vec<_>>()
            });
            let (code, found) = self.fetch_offsets(&request.group_id.0, wanted);
            if v >= 2 {
                response.error_code = code;
            }
            for (topic, partitions) in found {
                let mut rt = OffsetFetchResponseTopic::default();
                rt.name = StrBytes::from_string(topic).into();
                for (index, value) in partitions {
                    let mut rp = OffsetFetchResponsePartition::default();
                    rp.partition_index = index;
                    rp.committed_offset = value.as_ref().map_or(-1, |o| o.offset);
                    if v >= 5 {
                        rp.committed_leader_epoch = value.as_ref().map_or(-1, |o| o.leader_epoch);
                    }
                    rp.metadata = Some(StrBytes::from_string(
                        value.map(|o| o.metadata).unwrap_or_default(),
                    ));
                    // Before v2 there is no group-level error: report it per partition.
                    rp.error_code = if v < 2 { code } else { error_code::NONE };
                    rt.partitions.push(rp);
                }
                response.topics.push(rt);
            }
        }
        effects.push(respond(reply, ResponseKind::OffsetFetch(response)));
    }

    /// Acknowledged offsets of `group_id`: the requested partitions (None = all committed).
    #[allow(clippy::type_complexity)]
    fn fetch_offsets(
        &self,
        group_id: &str,
        wanted: Option<Vec<(String, Vec<i32>)>>,
    ) -> (i16, Vec<(String, Vec<(i32, Option<OffsetValue>)>)>) {
        let code = match self.check_coordinator(group_id) {
            Ok(()) => error_code::NONE,
            Err(code) => code,
        };
        let group = if code == error_code::NONE {
            self.groups.get(group_id)
        } else {
            None
        };
        let found = match wanted {
            Some(topics) => topics
                .into_iter()
                .map(|(topic, partitions)| {
                    let values = partitions
                        .into_iter()
                        .map(|p| {
                            let value =
                                group.and_then(|g| g.offsets.get(&(topic.clone(), p)).cloned());
                            (p, value)
                        })
                        .collect();
                    (topic, values)
                })
                .collect(),
            None => {
                let mut by_topic: BTreeMap<String, Vec<(i32, Option<OffsetValue>)>> =
                    BTreeMap::new();
                if let Some(g) = group {
                    for ((topic, p), value) in &g.offsets {
                        by_topic
                            .entry(topic.clone())
                            .or_default()
                            .push((*p, Some(value.clone())));
                    }
                }
                by_topic.into_iter().collect()
            }
        };
        (code, found)
    }

    // ---- DescribeGroups / ListGroups -------------------------------------------------------

    fn describe_groups(
        &mut self,
        reply: Reply,
        request: DescribeGroupsRequest,
        effects: &mut Vec<Effect>,
    ) {
        let mut response = DescribeGroupsResponse::default();
        for group_id in &request.groups {
            let mut d = DescribedGroup::default();
            d.group_id = group_id.clone();
            match self.check_coordinator(&group_id.0) {
                Err(code) => {
                    d.error_code = code;
                    d.group_state = StrBytes::from_static_str(DEAD);
                }
                Ok(()) => match self.groups.get(group_id.0.as_str()) {
                    None => d.group_state = StrBytes::from_static_str(DEAD),
                    Some(group) => {
                        d.group_state = StrBytes::from_static_str(group.state.name());
                        d.protocol_type =
                            StrBytes::from_string(group.protocol_type.clone().unwrap_or_default());
                        let stable = group.state == GroupState::Stable;
                        let protocol = group.protocol_name.clone().unwrap_or_default();
                        if stable {
                            d.protocol_data = StrBytes::from_string(protocol.clone());
                        }
                        for m in group.members.values() {
                            let mut dm = DescribedGroupMember::default();
                            dm.member_id = StrBytes::from_string(m.member_id.clone());
                            if reply.api_version >= 4 {
                                dm.group_instance_id =
                                    m.group_instance_id.clone().map(StrBytes::from_string);
                            }
                            dm.client_id = StrBytes::from_string(m.client_id.clone());
                            dm.client_host = StrBytes::from_string(m.client_host.clone());
                            // Kafka shows metadata and assignment only once the group is Stable.
                            if stable {
                                dm.member_metadata = m.metadata(&protocol);
                                dm.member_assignment = m.assignment.clone();
                            }
                            d.members.push(dm);
                        }
                    }
                },
            }
            response.groups.push(d);
        }
        effects.push(respond(reply, ResponseKind::DescribeGroups(response)));
    }

    fn list_groups(&mut self, reply: Reply, request: ListGroupsRequest, effects: &mut Vec<Effect>) {
        let mut response = ListGroupsResponse::default();
        for group in self.groups.values() {
            let state = group.state.name();
            if !request.states_filter.is_empty()
                && !request
                    .states_filter
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(state))
            {
                continue;
            }
            if !request.types_filter.is_empty()
                && !request
                    .types_filter
                    .iter()
                    .any(|t| t.eq_ignore_ascii_case("classic"))
            {
                continue;
            }
            let mut listed = ListedGroup::default();
            listed.group_id = GroupId(StrBytes::from_string(group.group_id.clone()));
            listed.protocol_type =
                StrBytes::from_string(group.protocol_type.clone().unwrap_or_default());
            if reply.api_version >= 4 {
                listed.group_state = StrBytes::from_static_str(state);
            }
            if reply.api_version >= 5 {
                listed.group_type = StrBytes::from_static_str("classic");
            }
            response.groups.push(listed);
        }
        effects.push(respond(reply, ResponseKind::ListGroups(response)));
    }

    // ---- DeleteGroups / OffsetDelete -------------------------------------------------------

    fn delete_groups(
        &mut self,
        reply: Reply,
        request: DeleteGroupsRequest,
        effects: &mut Vec<Effect>,
    ) {
        let batch = self.next_batch;
        self.next_batch += 1;
        let mut response = DeleteGroupsResponse::default();
        let mut to_persist = Vec::new();
        for (index, group_id) in request.groups_names.iter().enumerate() {
            let mut result = DeletableGroupResult::default();
            result.group_id = group_id.clone();
            let id = group_id.0.to_string();
            result.error_code = match self.check_coordinator(&id) {
                Err(code) => code,
                Ok(()) => match self.groups.get(&id) {
                    None => error_code::GROUP_ID_NOT_FOUND,
                    Some(g) if g.state != GroupState::Empty => error_code::NON_EMPTY_GROUP,
                    Some(_) => {
                        let group = self.groups.remove(&id).expect("group");
                        let mut records: Vec<_> = group
                            .offsets
                            .keys()
                            .map(|(topic, partition)| {
                                Record::Offset {
                                    key: OffsetKey {
                                        group_id: id.clone(),
                                        topic: topic.clone(),
                                        partition: *partition,
                                    },
                                    value: None,
                                }
                                .encode()
                            })
                            .collect();
                        records.push(
                            Record::Group {
                                group_id: id.clone(),
                                value: None,
                            }
                            .encode(),
                        );
                        to_persist.push((group.partition, records, index));
                        error_code::NONE
                    }
                },
            };
            response.results.push(result);
        }
        if to_persist.is_empty() {
            return effects.push(respond(reply, ResponseKind::DeleteGroups(response)));
        }
        self.pending_delete_groups.insert(
            batch,
            PendingDeleteGroups {
                reply,
                remaining: to_persist.len(),
                response,
            },
        );
        for (partition, records, index) in to_persist {
            self.persist(
                partition,
                records,
                Completion::DeleteGroup { batch, index },
                effects,
            );
        }
    }

    fn offset_delete(
        &mut self,
        reply: Reply,
        request: OffsetDeleteRequest,
        effects: &mut Vec<Effect>,
    ) {
        let group_id = request.group_id.0.to_string();
        let mut response = OffsetDeleteResponse::default();
        let group = match self.check_coordinator(&group_id) {
            Err(code) => {
                response.error_code = code;
                None
            }
            Ok(()) => match self.groups.get(&group_id) {
                None => {
                    response.error_code = error_code::GROUP_ID_NOT_FOUND;
                    None
                }
                Some(g)
                    if !g.members.is_empty()
                        && g.protocol_type.as_deref() != Some(CONSUMER_PROTOCOL_TYPE) =>
                {
                    response.error_code = error_code::NON_EMPTY_GROUP;
                    None
                }
                Some(g) => Some(g),
            },
        };
        let Some(group) = group else {
            return effects.push(respond(reply, ResponseKind::OffsetDelete(response)));
        };
        let subscribed = subscribed_topics(group);
        let mut keys = Vec::new();
        for topic in &request.topics {
            let mut rt = OffsetDeleteResponseTopic::default();
            rt.name = topic.name.clone();
            let name = topic.name.0.to_string();
            let is_subscribed = match &subscribed {
                None => true,
                Some(topics) => topics.contains(&name),
            };
            for p in &topic.partitions {
                let mut rp = OffsetDeleteResponsePartition::default();
                rp.partition_index = p.partition_index;
                if is_subscribed {
                    rp.error_code = error_code::GROUP_SUBSCRIBED_TO_TOPIC;
                } else if group
                    .offsets
                    .contains_key(&(name.clone(), p.partition_index))
                {
                    keys.push((name.clone(), p.partition_index));
                }
                rt.partitions.push(rp);
            }
            response.topics.push(rt);
        }
        if keys.is_empty() {
            return effects.push(respond(reply, ResponseKind::OffsetDelete(response)));
        }
        let records = keys
            .iter()
            .map(|(topic, partition)| {
                Record::Offset {
                    key: OffsetKey {
                        group_id: group_id.clone(),
                        topic: topic.clone(),
                        partition: *partition,
                    },
                    value: None,
                }
                .encode()
            })
            .collect();
        let partition = group.partition;
        self.persist(
            partition,
            records,
            Completion::OffsetDelete {
                reply,
                group_id,
                keys,
                response,
            },
            effects,
        );
    }

    // ---- Persist completions ---------------------------------------------------------------

    pub(super) fn persist_completed(
        &mut self,
        now: Millis,
        token: PersistToken,
        result: Result<(), PersistError>,
        effects: &mut Vec<Effect>,
    ) {
        let Some(completion) = self.pending.remove(&token) else {
            return;
        };
        match completion {
            Completion::Nothing => {}
            Completion::OffsetCommit {
                reply,
                group_id,
                offsets,
                positions,
                mut response,
            } => {
                match result {
                    Ok(()) => {
                        if self.owns_partition(self.partition_for(&group_id)) {
                            let partition = self.partition_for(&group_id);
                            let group = self
                                .groups
                                .entry(group_id.clone())
                                .or_insert_with(|| Group::new(group_id, partition, now));
                            for (key, value) in offsets {
                                group.offsets.insert((key.topic, key.partition), value);
                            }
                        }
                    }
                    Err(e) => {
                        for (t, p) in positions {
                            response.topics[t].partitions[p].error_code = e.error_code();
                        }
                    }
                }
                effects.push(respond(reply, ResponseKind::OffsetCommit(response)));
            }
            Completion::Sync {
                group_id,
                generation_id,
            } => self.sync_completed(now, &group_id, generation_id, result, effects),
            Completion::OffsetDelete {
                reply,
                group_id,
                keys,
                mut response,
            } => {
                match result {
                    Ok(()) => {
                        if let Some(group) = self.groups.get_mut(&group_id) {
                            for key in keys {
                                group.offsets.remove(&key);
                            }
                        }
                    }
                    Err(e) => response.error_code = e.error_code(),
                }
                effects.push(respond(reply, ResponseKind::OffsetDelete(response)));
            }
            Completion::DeleteGroup { batch, index } => {
                let Some(pending) = self.pending_delete_groups.get_mut(&batch) else {
                    return;
                };
                if let Err(e) = result {
                    pending.response.results[index].error_code = e.error_code();
                }
                pending.remaining -= 1;
                if pending.remaining == 0 {
                    let pending = self.pending_delete_groups.remove(&batch).expect("batch");
                    effects.push(respond(
                        pending.reply,
                        ResponseKind::DeleteGroups(pending.response),
                    ));
                }
            }
        }
    }

    fn sync_completed(
        &mut self,
        now: Millis,
        group_id: &str,
        generation_id: i32,
        result: Result<(), PersistError>,
        effects: &mut Vec<Effect>,
    ) {
        let Some(group) = self.groups.get_mut(group_id) else {
            return;
        };
        // The group may have moved on (a member left, a new generation) while we wrote.
        if group.state != GroupState::CompletingRebalance
            || group.generation_id != generation_id
            || group.pending_assignment.is_none()
        {
            return;
        }
        let assignment = group.pending_assignment.take().expect("assignment");
        match result {
            Ok(()) => {
                group.state = GroupState::Stable;
                group.state_since_ms = now;
                group.rebalance_deadline_ms = None;
                let ids: Vec<String> = group.members.keys().cloned().collect();
                for id in ids {
                    let member = group.members.get_mut(&id).expect("member");
                    member.assignment = assignment.get(&id).cloned().unwrap_or_default();
                    if let Some(reply) = member.awaiting_sync.take() {
                        let bytes = member.assignment.clone();
                        let effect = group.sync_response(reply, bytes);
                        effects.push(effect);
                    }
                }
            }
            Err(e) => {
                for m in group.members.values_mut() {
                    if let Some(reply) = m.awaiting_sync.take() {
                        effects.push(sync_error(reply, e.error_code()));
                    }
                }
                self.prepare_rebalance(now, group_id, effects);
            }
        }
    }

    // ---- Timers ----------------------------------------------------------------------------

    pub(super) fn expire(&mut self, now: Millis, effects: &mut Vec<Effect>) {
        let ids: Vec<String> = self.groups.keys().cloned().collect();
        for id in ids {
            let Some(group) = self.groups.get_mut(&id) else {
                continue;
            };
            group.pending_members.retain(|_, expiry| *expiry > now);
            let expired: Vec<String> = group
                .members
                .values()
                .filter(|m| m.awaiting_join.is_none() && m.heartbeat_deadline_ms <= now)
                .map(|m| m.member_id.clone())
                .collect();
            if !expired.is_empty() {
                // Session timeout: the member is gone; the others rebalance.
                self.remove_members(now, &id, &expired, effects);
            }
            let Some(group) = self.groups.get_mut(&id) else {
                continue;
            };
            if group.state == GroupState::CompletingRebalance
                && group.rebalance_deadline_ms.is_some_and(|d| now >= d)
            {
                group.rebalance_deadline_ms = None;
                let not_synced: Vec<String> = group
                    .members
                    .values()
                    .filter(|m| m.awaiting_sync.is_none())
                    .map(|m| m.member_id.clone())
                    .collect();
                if !not_synced.is_empty() {
                    // Sync-phase timeout: members that never sent SyncGroup are removed.
                    self.remove_members(now, &id, &not_synced, effects);
                }
            }
            self.maybe_complete_join(now, &id, effects);
        }
        if self.next_retention_check_ms.is_some_and(|t| now >= t) {
            self.expire_offsets(now, effects);
            self.next_retention_check_ms =
                Some(now + self.config.offsets_retention_check_interval_ms);
        }
    }

    /// offsets.retention.minutes (KIP-211): offsets of an Empty consumer group expire that long
    /// after the group became empty; offsets of a group without a protocol (simple consumers)
    /// that long after their commit. An Empty group left without offsets is deleted.
    fn expire_offsets(&mut self, now: Millis, effects: &mut Vec<Effect>) {
        let retention = self.config.offsets_retention_ms;
        let ids: Vec<String> = self.groups.keys().cloned().collect();
        for id in ids {
            let group = self.groups.get_mut(&id).expect("group");
            if group.state != GroupState::Empty {
                continue;
            }
            let since = group.state_since_ms;
            let consumer_group = group.protocol_type.is_some();
            let expired: Vec<(String, i32)> = group
                .offsets
                .iter()
                .filter(|(_, v)| {
                    let base = if consumer_group {
                        since.max(v.commit_timestamp_ms)
                    } else {
                        v.commit_timestamp_ms
                    };
                    base.saturating_add(retention) <= now
                })
                .map(|(k, _)| k.clone())
                .collect();
            let mut records = Vec::new();
            for key in &expired {
                group.offsets.remove(key);
                records.push(
                    Record::Offset {
                        key: OffsetKey {
                            group_id: id.clone(),
                            topic: key.0.clone(),
                            partition: key.1,
                        },
                        value: None,
                    }
                    .encode(),
                );
            }
            let partition = group.partition;
            let pending_commit = self
                .pending
                .values()
                .any(|c| matches!(c, Completion::OffsetCommit { group_id, .. } if *group_id == id));
            if group.offsets.is_empty() && group.pending_members.is_empty() && !pending_commit {
                self.groups.remove(&id);
                records.push(
                    Record::Group {
                        group_id: id.clone(),
                        value: None,
                    }
                    .encode(),
                );
            }
            if !records.is_empty() {
                self.persist(partition, records, Completion::Nothing, effects);
            }
        }
    }
}

/// KIP-345 fencing: a request naming a group.instance.id must come from the member that
/// currently holds it.
fn static_check(group: &Group, instance: Option<&str>, member_id: &str) -> Result<(), i16> {
    let Some(instance) = instance else {
        return Ok(());
    };
    match group.static_members.get(instance) {
        Some(current) if current == member_id => Ok(()),
        Some(_) => Err(error_code::FENCED_INSTANCE_ID),
        None => Err(error_code::UNKNOWN_MEMBER_ID),
    }
}

/// The result of one identity of a LeaveGroup; members to remove are added to `leaving`.
fn leave_code(
    group: &mut Group,
    member_id: &str,
    instance: Option<&str>,
    leaving: &mut Vec<String>,
) -> i16 {
    if let Some(instance) = instance {
        // KIP-345: a static member leaves by instance id; a member id, if given, must match.
        return match group.static_members.get(instance) {
            None => error_code::UNKNOWN_MEMBER_ID,
            Some(current) if !member_id.is_empty() && current != member_id => {
                error_code::FENCED_INSTANCE_ID
            }
            Some(current) => {
                leaving.push(current.clone());
                error_code::NONE
            }
        };
    }
    if group.pending_members.remove(member_id).is_some() {
        return error_code::NONE;
    }
    if group.members.contains_key(member_id) {
        leaving.push(member_id.to_string());
        error_code::NONE
    } else {
        error_code::UNKNOWN_MEMBER_ID
    }
}

/// Removes a member without reacting; its waiting requests are answered UNKNOWN_MEMBER_ID.
fn remove_member_raw(group: &mut Group, member_id: &str, effects: &mut Vec<Effect>) {
    let Some(mut member) = group.members.remove(member_id) else {
        return;
    };
    if let Some(r) = member.awaiting_join.take() {
        effects.push(join_error(r, error_code::UNKNOWN_MEMBER_ID, member_id));
    }
    if let Some(r) = member.awaiting_sync.take() {
        effects.push(sync_error(r, error_code::UNKNOWN_MEMBER_ID));
    }
    if let Some(instance) = &member.group_instance_id {
        if group.static_members.get(instance).map(String::as_str) == Some(member_id) {
            group.static_members.remove(instance);
        }
    }
    if group.leader.as_deref() == Some(member_id) {
        group.leader = None;
    }
}

/// Topics the group's members subscribe to, from their consumer-protocol metadata; None if
/// any metadata cannot be parsed (then every topic counts as subscribed, as in Kafka).
fn subscribed_topics(group: &Group) -> Option<Vec<String>> {
    let mut topics = Vec::new();
    if group.members.is_empty() {
        return Some(topics);
    }
    for m in group.members.values() {
        for (_, metadata) in &m.protocols {
            let mut buf = metadata.clone();
            if buf.len() < 2 {
                return None;
            }
            let version = i16::from_be_bytes([buf[0], buf[1]]);
            let _ = bytes::Buf::get_i16(&mut buf);
            let version = version.clamp(0, 3);
            let subscription = ConsumerProtocolSubscription::decode(&mut buf, version).ok()?;
            topics.extend(subscription.topics.iter().map(|t| t.to_string()));
        }
    }
    Some(topics)
}
