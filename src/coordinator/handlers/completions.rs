//! Persist completions and timers (session, rebalance and KIP-394 expiry, offset retention),
//! and the offsets of deleted topics.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::coordinator::{DELETED_TOPICS_RETRY_MS, MAX_DELETED_TOPICS_PENDING};

impl GroupCoordinator {
    // ---- Persist completions ---------------------------------------------------------------

    pub(in crate::coordinator) fn persist_completed(
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
            Completion::StaticRejoin {
                group_id,
                reply,
                response,
                new_id,
                previous,
                previous_leader,
            } => match result {
                Ok(()) => effects.push(*response),
                Err(e) => {
                    let old = *previous;
                    self.revert_static_rejoin(
                        now,
                        &group_id,
                        &new_id,
                        old,
                        previous_leader,
                        effects,
                    );
                    effects.push(join_error(reply, e.group_error_code(), ""));
                }
            },
            Completion::OffsetCommit {
                reply,
                group_id,
                offsets,
                positions,
                mut response,
            } => {
                match result {
                    Ok(()) => {
                        // The group exists: it was created when the commit arrived, and neither
                        // DeleteGroups nor expiry removes a group with a commit in flight.
                        // Were it gone, applying the offsets would bring back in memory a
                        // group whose tombstone follows them in the log.
                        if let Some(group) = self.groups.get_mut(&group_id) {
                            for (key, value) in offsets {
                                group.offsets.insert((key.topic, key.partition), value);
                            }
                        }
                    }
                    Err(e) => {
                        for (t, p) in positions {
                            response.topics[t].partitions[p].error_code = e.offsets_error_code();
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
                    Err(e) => response.error_code = e.offsets_error_code(),
                }
                effects.push(respond(reply, ResponseKind::OffsetDelete(response)));
            }
            Completion::DeleteGroup { batch, index } => {
                let Some(pending) = self.pending_delete_groups.get_mut(&batch) else {
                    return;
                };
                if let Err(e) = result {
                    pending.response.results[index].error_code = e.offsets_error_code();
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

    /// Kafka's revert of a static member whose new id could not be persisted: if the
    /// instance still maps to `new_id`, the previous member (old id, the assignment the new
    /// one holds now) takes its place again with a fresh session.
    fn revert_static_rejoin(
        &mut self,
        now: Millis,
        group_id: &str,
        new_id: &str,
        mut previous: Member,
        previous_leader: Option<String>,
        effects: &mut Vec<Effect>,
    ) {
        let Some(group) = self.groups.get_mut(group_id) else {
            return;
        };
        let Some(instance) = previous.group_instance_id.clone() else {
            return;
        };
        if group.static_members.get(&instance).map(String::as_str) != Some(new_id) {
            return;
        }
        let Some(mut replacement) = group.members.remove(new_id) else {
            return;
        };
        // Nobody knows the new id before its JoinGroup is answered; fail anything under it.
        if let Some(r) = replacement.awaiting_join.take() {
            effects.push(join_error(r, error_code::UNKNOWN_MEMBER_ID, new_id));
        }
        if let Some(r) = replacement.awaiting_sync.take() {
            effects.push(sync_error(r, error_code::UNKNOWN_MEMBER_ID));
        }
        previous.assignment = replacement.assignment;
        previous.heartbeat_deadline_ms = now + previous.session_timeout_ms as i64;
        if group.leader.as_deref() == Some(new_id) {
            group.leader = previous_leader;
        }
        group
            .static_members
            .insert(instance, previous.member_id.clone());
        group.members.insert(previous.member_id.clone(), previous);
    }

    pub(super) fn sync_completed(
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
            Err(e) => self.fail_sync(now, group_id, e.group_error_code(), effects),
        }
    }

    /// The leader's assignment cannot be made durable: every member waiting in SyncGroup gets
    /// `code` and the group rebalances (Kafka's storeGroup error path).
    pub(super) fn fail_sync(
        &mut self,
        now: Millis,
        group_id: &str,
        code: i16,
        effects: &mut Vec<Effect>,
    ) {
        let Some(group) = self.groups.get_mut(group_id) else {
            return;
        };
        group.pending_assignment = None;
        for m in group.members.values_mut() {
            if let Some(reply) = m.awaiting_sync.take() {
                effects.push(sync_error(reply, code));
            }
        }
        self.prepare_rebalance(now, group_id, effects);
    }

    // ---- Timers ----------------------------------------------------------------------------

    pub(in crate::coordinator) fn expire(&mut self, now: Millis, effects: &mut Vec<Effect>) {
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
        if self.deleted_topics_retry_ms.is_some_and(|t| now >= t) {
            self.drop_deleted_topic_offsets(now, effects);
        }
        if self.next_retention_check_ms.is_some_and(|t| now >= t) {
            self.expire_offsets(now, effects);
            self.next_retention_check_ms =
                Some(now + self.config.offsets_retention_check_interval_ms);
        }
    }

    /// offsets.retention.minutes (KIP-211): offsets of an Empty consumer group expire that long
    /// after the group became empty; offsets of a group without a protocol (simple consumers)
    /// that long after their commit. KIP-496: in a Stable consumer-protocol group, offsets of
    /// topics no member subscribes to expire that long after their commit (not at all if a
    /// member's subscription cannot be parsed). An offset with a commit in flight never
    /// expires (its tombstone would be appended after the commit and win on reload). An Empty
    /// group left without offsets is deleted.
    pub(super) fn expire_offsets(&mut self, now: Millis, effects: &mut Vec<Effect>) {
        let retention = self.config.offsets_retention_ms;
        let ids: Vec<String> = self.groups.keys().cloned().collect();
        // One pass over the pending persists, not one per group.
        let mut committing_by_group = self.offsets_committing();
        for id in ids {
            let committing = committing_by_group.remove(&id).unwrap_or_default();
            let group = self.groups.get(&id).expect("group");
            let since = group.state_since_ms;
            // Which offsets may expire, and from when: None leaves the group alone.
            let rule: Option<(Option<Vec<String>>, bool)> = match group.state {
                GroupState::Empty => Some((None, group.protocol_type.is_some())),
                GroupState::Stable
                    if group.protocol_type.as_deref() == Some(CONSUMER_PROTOCOL_TYPE) =>
                {
                    subscribed_topics(group).map(|topics| (Some(topics), false))
                }
                _ => None,
            };
            let Some((subscribed, from_empty)) = rule else {
                continue;
            };
            let expired: Vec<(String, i32)> = group
                .offsets
                .iter()
                .filter(|(k, v)| {
                    let base = if from_empty {
                        since.max(v.commit_timestamp_ms)
                    } else {
                        v.commit_timestamp_ms
                    };
                    base.saturating_add(retention) <= now
                        && !committing.contains(*k)
                        && subscribed.as_ref().is_none_or(|t| !t.contains(&k.0))
                })
                .map(|(k, _)| k.clone())
                .collect();
            if !self.has_persist_room(1) {
                // A full persist queue puts the expiry off to the next check: nothing leaves
                // memory without its tombstone.
                continue;
            }
            let group = self.groups.get_mut(&id).expect("group");
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
            if group.state == GroupState::Empty
                && group.offsets.is_empty()
                && group.pending_members.is_empty()
                && committing.is_empty()
            {
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

    /// DeleteTopics removed `topics`: their committed offsets go from every group, each with
    /// its tombstone, as Kafka's coordinator does for deleted partitions. Otherwise a group
    /// that committed on a topic deleted and created again under the same name would resume
    /// the new topic at the old topic's offsets and skip its first records.
    pub(in crate::coordinator) fn topics_deleted(
        &mut self,
        now: Millis,
        topics: Vec<String>,
        effects: &mut Vec<Effect>,
    ) {
        for topic in topics {
            self.deleted_topics.insert(topic, now);
        }
        while self.deleted_topics.len() > MAX_DELETED_TOPICS_PENDING {
            let (topic, _) = self.deleted_topics.pop_first().expect("non-empty");
            tracing::warn!(
                topic,
                "too many deleted topics pending: keeping its offsets"
            );
        }
        self.drop_deleted_topic_offsets(now, effects);
    }

    /// Drops the offsets of `deleted_topics` committed until their deletion (a commit after
    /// it belongs to a topic created again). An offset with an OffsetCommit in flight, or a
    /// group without persist room, is left for the next try, `DELETED_TOPICS_RETRY_MS` later:
    /// nothing leaves memory without its tombstone, and no tombstone is written ahead of a
    /// commit that lands after it.
    pub(super) fn drop_deleted_topic_offsets(&mut self, now: Millis, effects: &mut Vec<Effect>) {
        let mut committing_by_group = self.offsets_committing();
        let mut unfinished = false;
        let ids: Vec<String> = self.groups.keys().cloned().collect();
        for id in ids {
            let committing = committing_by_group.remove(&id).unwrap_or_default();
            if committing
                .iter()
                .any(|(topic, _)| self.deleted_topics.contains_key(topic))
            {
                // Its record lands before any tombstone written now: try again after it.
                unfinished = true;
            }
            let group = self.groups.get(&id).expect("group");
            let doomed: Vec<(String, i32)> = group
                .offsets
                .iter()
                .filter(|(k, v)| {
                    !committing.contains(*k)
                        && self
                            .deleted_topics
                            .get(&k.0)
                            .is_some_and(|deleted_ms| v.commit_timestamp_ms <= *deleted_ms)
                })
                .map(|(k, _)| k.clone())
                .collect();
            if doomed.is_empty() {
                continue;
            }
            if !self.has_persist_room(1) {
                unfinished = true;
                continue;
            }
            let group = self.groups.get_mut(&id).expect("group");
            let mut records = Vec::with_capacity(doomed.len());
            for key in doomed {
                group.offsets.remove(&key);
                records.push(
                    Record::Offset {
                        key: OffsetKey {
                            group_id: id.clone(),
                            topic: key.0,
                            partition: key.1,
                        },
                        value: None,
                    }
                    .encode(),
                );
            }
            let partition = group.partition;
            self.persist(partition, records, Completion::Nothing, effects);
        }
        if unfinished {
            self.deleted_topics_retry_ms = Some(now + DELETED_TOPICS_RETRY_MS);
        } else {
            self.deleted_topics.clear();
            self.deleted_topics_retry_ms = None;
        }
    }

    /// The (topic, partition)s with an OffsetCommit in flight, by group.
    pub(super) fn offsets_committing(&self) -> BTreeMap<String, BTreeSet<(String, i32)>> {
        let mut committing: BTreeMap<String, BTreeSet<(String, i32)>> = BTreeMap::new();
        for completion in self.pending.values() {
            if let Completion::OffsetCommit {
                group_id, offsets, ..
            } = completion
            {
                committing
                    .entry(group_id.clone())
                    .or_default()
                    .extend(offsets.iter().map(|(k, _)| (k.topic.clone(), k.partition)));
            }
        }
        committing
    }
}
