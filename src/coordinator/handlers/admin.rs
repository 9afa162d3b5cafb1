//! DescribeGroups, ListGroups, DeleteGroups and OffsetDelete.

use super::*;

impl GroupCoordinator {
    // ---- DescribeGroups / ListGroups -------------------------------------------------------

    pub(super) fn describe_groups(
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

    pub(super) fn list_groups(
        &mut self,
        reply: Reply,
        request: ListGroupsRequest,
        effects: &mut Vec<Effect>,
    ) {
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

    pub(super) fn delete_groups(
        &mut self,
        reply: Reply,
        request: DeleteGroupsRequest,
        effects: &mut Vec<Effect>,
    ) {
        let batch = self.next_batch;
        self.next_batch += 1;
        let mut response = DeleteGroupsResponse::default();
        let mut to_persist = Vec::new();
        let committing = self.offsets_committing();
        for (index, group_id) in request.groups_names.iter().enumerate() {
            let mut result = DeletableGroupResult::default();
            result.group_id = group_id.clone();
            let id = group_id.0.to_string();
            result.error_code = match self.check_coordinator(&id) {
                Err(code) => code,
                Ok(()) => match self.groups.get(&id) {
                    None => error_code::GROUP_ID_NOT_FOUND,
                    Some(g) if g.state != GroupState::Empty => error_code::NON_EMPTY_GROUP,
                    // A commit in flight would land before the group's tombstone yet be
                    // answered after the deletion: the admin retries once it is durable.
                    Some(_) if committing.contains_key(&id) => {
                        error_code::COORDINATOR_NOT_AVAILABLE
                    }
                    // No room for its tombstones: the group stays (the client retries).
                    Some(_) if !self.has_persist_room(to_persist.len() + 1) => {
                        error_code::COORDINATOR_NOT_AVAILABLE
                    }
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

    pub(super) fn offset_delete(
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
        if !self.has_persist_room(1) {
            // No room for the tombstones: nothing is deleted (the client retries).
            response.error_code = error_code::COORDINATOR_NOT_AVAILABLE;
            return effects.push(respond(reply, ResponseKind::OffsetDelete(response)));
        }
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
}
