//! OffsetCommit and OffsetFetch.

use super::*;

impl GroupCoordinator {
    // ---- OffsetCommit ----------------------------------------------------------------------

    pub(super) fn offset_commit(
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
        if !self.has_persist_room(1) {
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
    pub(super) fn offset_commit_group_code(
        &mut self,
        now: Millis,
        request: &OffsetCommitRequest,
    ) -> i16 {
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

    pub(super) fn offset_fetch(
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
    pub(super) fn fetch_offsets(
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
}
