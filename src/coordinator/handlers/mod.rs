//! Request handlers, timers and persist completions of the [`GroupCoordinator`]: the dispatcher
//! and group membership (JoinGroup, SyncGroup, Heartbeat, LeaveGroup) here; offsets, the admin
//! APIs and completions/timers in the submodules.

mod admin;
mod completions;
mod offsets;

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
    PersistError, PersistToken, Reply, RequestContext,
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
                    if !self.has_persist_room(1) {
                        // The new member id may have to be persisted; refuse before the old
                        // identity is fenced (the client retries).
                        return effects.push(join_error(
                            reply,
                            error_code::COORDINATOR_NOT_AVAILABLE,
                            &member_id,
                        ));
                    }
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
            // Kafka (addMemberAndRebalance) extends the initial delay only for a group that
            // has never had a generation.
            if group.join_not_before_ms.is_some() && group.generation_id == 0 {
                group.joined_during_delay = true;
            }
            self.maybe_complete_join(now, group_id, effects);
        } else {
            self.prepare_rebalance(now, group_id, effects);
        }
    }

    /// KIP-345: the static member `old_id` restarted as `member`. The old identity is fenced.
    /// In Stable, if the protocol the group would select is unchanged, the group keeps its
    /// generation and assignment whether or not the member led it (as Kafka does): the rejoin
    /// is answered at once and only the new member id is persisted. Otherwise, and always in
    /// CompletingRebalance (the leader may be assigning to the old id), the group rebalances.
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
        let previous_leader = group.leader.clone();
        let old_leader = previous_leader.clone().unwrap_or_default();
        if old_leader == old_id {
            group.leader = Some(member.member_id.clone());
        }
        member.assignment = old.assignment.clone();
        let new_id = member.member_id.clone();
        if let Some(instance) = &member.group_instance_id {
            group
                .static_members
                .insert(instance.clone(), new_id.clone());
        }
        let reply = member.awaiting_join.take().expect("join reply");
        group.members.insert(new_id.clone(), member);
        match group.state {
            GroupState::Stable if group.select_protocol() == group.protocol_name => {
                let response = if reply.api_version >= 9 {
                    // KIP-814: a restarted leader learns it leads (and gets the members, to
                    // watch metadata) but must not reassign: a Stable group would ignore it.
                    let leader = group.leader.clone().unwrap_or_default();
                    let is_leader = leader == new_id;
                    group.join_response_as(reply, &new_id, &leader, is_leader)
                } else {
                    // Before v9 the old leader id is reported: the restarted leader, whose id
                    // changed, does not see itself as leader, skips the assignor and just
                    // syncs to get its kept assignment.
                    group.join_response_as(reply, &new_id, &old_leader, false)
                };
                // KIP-345: answered only once the new member id is durable (it must survive a
                // coordinator failover); a failed write reverts the replacement.
                let record = Record::Group {
                    group_id: group_id.to_string(),
                    value: Some(group.to_record(None)),
                }
                .encode();
                let partition = group.partition;
                let completion = Completion::StaticRejoin {
                    group_id: group_id.to_string(),
                    reply,
                    response: Box::new(response),
                    new_id,
                    previous: Box::new(old),
                    previous_leader,
                };
                self.persist(partition, vec![record], completion, effects);
            }
            GroupState::PreparingRebalance => {
                let m = group.members.get_mut(&new_id).expect("just inserted");
                m.awaiting_join = Some(reply);
                self.maybe_complete_join(now, group_id, effects);
            }
            _ => {
                let m = group.members.get_mut(&new_id).expect("just inserted");
                m.awaiting_join = Some(reply);
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
        group.joined_during_delay = false;
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
        let initial_delay = self.config.group_initial_rebalance_delay_ms;
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
            // Kafka's InitialDelayedJoin: members still arriving earn another delay, until the
            // rebalance timeout is used up.
            let deadline = group.rebalance_deadline_ms.unwrap_or(now);
            if std::mem::take(&mut group.joined_during_delay) && now < deadline {
                group.join_not_before_ms = Some(now.saturating_add(initial_delay).min(deadline));
                return;
            }
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
        group.joined_during_delay = false;
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
                let full = !self.has_persist_room(1);
                let group = self.groups.get_mut(&group_id).expect("group");
                if is_leader && group.pending_assignment.is_none() && full {
                    // No room to persist the assignment: as if its write failed (Kafka's
                    // storeGroup error path), every waiting member gets the error and the
                    // group rebalances.
                    return self.fail_sync(
                        now,
                        &group_id,
                        error_code::COORDINATOR_NOT_AVAILABLE,
                        effects,
                    );
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
