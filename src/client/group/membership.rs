//! The member's task: join, assign (as leader), sync, heartbeat, rejoin on rebalance or on a
//! change of the subscribed topics' metadata, leave on close (the contract is in the parent
//! module's docs).

use super::*;

/// A SyncGroup error response whose assignment is null (librdkafka's mock cluster writes one;
/// Kafka writes empty bytes) does not fit the schema's non-nullable `assignment`. Its error
/// code still says what to do (REBALANCE_IN_PROGRESS: rejoin; a fatal code: stop), so it is
/// read from its fixed place: the first field from v0, after `throttle_time_ms` from v1. A
/// body that does not carry a non-zero error code there stays undecodable.
pub(super) fn salvage_sync_group_error(
    body: &bytes::Bytes,
    version: i16,
) -> Option<SyncGroupResponse> {
    let at = if version >= 1 { 4 } else { 0 };
    let field = body.get(at..at + 2)?;
    let error_code = i16::from_be_bytes([field[0], field[1]]);
    (error_code != 0).then(|| SyncGroupResponse::default().with_error_code(error_code))
}

/// Creates the shared state and starts the membership task.
pub fn spawn_membership(
    client: GroupClient,
    cluster: Cluster,
    settings: GroupSettings,
    topics: Vec<String>,
) -> (Arc<GroupShared>, tokio::task::JoinHandle<()>) {
    let (changed, _) = watch::channel(0u64);
    let shared = Arc::new(GroupShared {
        state: Mutex::new(GroupState {
            phase: Phase::Joining,
            generation_id: -1,
            member_id: String::new(),
            assignment: Vec::new(),
            assignment_version: 0,
            consumed: BTreeMap::new(),
            subscription: topics,
            error: None,
            closing: false,
            rejoin_requested: false,
        }),
        changed,
        wake: Notify::new(),
    });
    let member = Member {
        client,
        cluster,
        settings,
        shared: shared.clone(),
        assigned_metadata: Mutex::new(None),
        rejoined_for: Mutex::new(None),
        partitions_seen: Mutex::new(BTreeMap::new()),
    };
    let handle = tokio::spawn(member.run());
    (shared, handle)
}

/// Why a join attempt failed.
enum JoinFailure {
    /// Try again after a back-off.
    Retry(ClientError),
    /// Stop: the configuration or the group forbids membership.
    Fatal(ClientError),
}

struct Member {
    client: GroupClient,
    cluster: Cluster,
    settings: GroupSettings,
    shared: Arc<GroupShared>,
    /// As the group's leader: the snapshot of every topic some member subscribes to, as the
    /// assignment of the current generation saw it. None when not the leader (only the
    /// leader assigns, so only its view of the metadata matters).
    assigned_metadata: Mutex<Option<MetadataSnapshot>>,
    /// The last snapshot that made this member rejoin, and when: see [`rejoin_for_snapshot`].
    rejoined_for: Mutex<Option<(MetadataSnapshot, Instant)>>,
    /// The most partitions seen per topic id of the subscribed topics: see
    /// [`metadata_snapshot`].
    partitions_seen: Mutex<BTreeMap<uuid::Uuid, i32>>,
}

/// One subscribed topic as the metadata shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct TopicLayout {
    /// KIP-516 topic id; nil from a broker that does not send one.
    pub(super) topic_id: uuid::Uuid,
    pub(super) partitions: i32,
}

/// Per subscribed topic, its layout; None for a topic the metadata does not know.
pub(super) type MetadataSnapshot = BTreeMap<String, Option<TopicLayout>>;

/// The snapshot of `topics` in `cluster`'s metadata cache, through [`with_partitions_seen`].
fn metadata_snapshot(
    cluster: &Cluster,
    topics: &[String],
    seen: &mut BTreeMap<uuid::Uuid, i32>,
) -> MetadataSnapshot {
    let cached: MetadataSnapshot = topics
        .iter()
        .map(|t| {
            let layout = cluster.topic(t).map(|m| TopicLayout {
                topic_id: m.topic_id,
                partitions: m.partition_count(),
            });
            (t.clone(), layout)
        })
        .collect();
    with_partitions_seen(cached, seen)
}

/// Kafka never takes partitions away from a topic, so each topic id of `snapshot` gets at
/// least the partitions `seen` records for it, and `seen` learns the rest: a broker that has
/// not heard of a CreatePartitions yet neither triggers a rejoin nor makes the leader assign
/// fewer partitions than it already saw. `seen` keeps only the ids of this snapshot, so it is
/// as small as the subscription.
pub(super) fn with_partitions_seen(
    mut snapshot: MetadataSnapshot,
    seen: &mut BTreeMap<uuid::Uuid, i32>,
) -> MetadataSnapshot {
    for layout in snapshot.values_mut().flatten() {
        if !layout.topic_id.is_nil() {
            let most = seen.entry(layout.topic_id).or_insert(layout.partitions);
            *most = (*most).max(layout.partitions);
            layout.partitions = *most;
        }
    }
    seen.retain(|id, _| snapshot.values().flatten().any(|l| l.topic_id == *id));
    snapshot
}

/// Whether the topics of `now` differ from those the assignment saw (`assigned`, over the same
/// topic names): a topic appeared or disappeared, was created again (a new topic id) or gained
/// partitions. Kafka never takes partitions away from a topic, so fewer partitions under the
/// same topic id is a broker's stale answer, not a change; without ids (nil) a re-creation
/// cannot be told from staleness, and any other count counts as a change.
pub(super) fn snapshot_changed(assigned: &MetadataSnapshot, now: &MetadataSnapshot) -> bool {
    assigned.iter().any(|(topic, before)| {
        let after = now.get(topic).copied().flatten();
        match (before, after) {
            (None, None) => false,
            (None, Some(_)) | (Some(_), None) => true,
            (Some(before), Some(after)) => {
                let ids_known = !before.topic_id.is_nil() && !after.topic_id.is_nil();
                if ids_known && before.topic_id != after.topic_id {
                    return true;
                }
                if ids_known {
                    after.partitions > before.partitions
                } else {
                    after.partitions != before.partitions
                }
            }
        }
    })
}

/// One rejoin per changed snapshot: true when `now` differs from the assignment's snapshot,
/// unless `now` is the snapshot the previous metadata-driven rejoin was for (`rejoined_for`,
/// updated here) and that rejoin is less than `quiet` old (`metadata.max.age.ms`). The same
/// snapshot seen again while the assignment still differs means the assignment's own refresh
/// saw other metadata, as when brokers disagree: metadata flapping between answers costs one
/// rejoin per answer, and at most one per answer per `quiet` after that, rather than one per
/// heartbeat; and once the brokers agree, the next rejoin assigns what they agree on.
pub(super) fn rejoin_for_snapshot(
    rejoined_for: &mut Option<(MetadataSnapshot, Instant)>,
    assigned: &MetadataSnapshot,
    now: &MetadataSnapshot,
    at: Instant,
    quiet: Duration,
) -> bool {
    if !snapshot_changed(assigned, now) {
        return false;
    }
    if let Some((last, when)) = rejoined_for {
        // A `quiet` too large to add (a huge `metadata.max.age.ms`) never runs out.
        let quiet_until = when.checked_add(quiet);
        if last == now && quiet_until.is_none_or(|until| at < until) {
            return false;
        }
    }
    *rejoined_for = Some((now.clone(), at));
    true
}

impl Member {
    async fn run(self) {
        let mut need_join = true;
        let mut failures = 0u32;
        let heartbeat_every = Duration::from_millis(self.settings.heartbeat_interval_ms.max(1));
        let session = Duration::from_millis(self.settings.session_timeout_ms.max(1) as u64);
        let mut last_heartbeat_ok = Instant::now();
        // Ends when the consumer closes (or drops) the membership; each turn is bounded by
        // a timeout or a back-off.
        loop {
            let (closing, rejoin) = {
                let mut state = self.shared.state.lock().unwrap();
                (state.closing, std::mem::take(&mut state.rejoin_requested))
            };
            if closing {
                self.leave().await;
                return;
            }
            need_join |= rejoin;
            if need_join {
                self.prepare_rejoin().await;
                match self.join_and_sync().await {
                    Ok(()) => {
                        need_join = false;
                        failures = 0;
                        last_heartbeat_ok = Instant::now();
                    }
                    Err(JoinFailure::Retry(e)) => {
                        tracing::debug!("group {}: join failed: {e}", self.settings.group_id);
                        self.wait(Duration::from_millis(backoff_ms(
                            self.cluster.config(),
                            failures,
                        )))
                        .await;
                        failures = failures.saturating_add(1);
                    }
                    Err(JoinFailure::Fatal(e)) => {
                        tracing::warn!("group {}: {e}", self.settings.group_id);
                        self.shared.state.lock().unwrap().error = Some(e);
                        self.shared.notify_changed();
                        return;
                    }
                }
                continue;
            }
            self.wait(heartbeat_every).await;
            {
                let state = self.shared.state.lock().unwrap();
                if state.closing || state.rejoin_requested {
                    continue;
                }
            }
            if self.assigned_metadata_changed(heartbeat_every).await {
                need_join = true;
                continue;
            }
            match self.heartbeat().await {
                Ok(()) => last_heartbeat_ok = Instant::now(),
                Err(e) => {
                    tracing::debug!("group {}: heartbeat: {e}", self.settings.group_id);
                    match e.code() {
                        Some(REBALANCE_IN_PROGRESS) => need_join = true,
                        Some(ILLEGAL_GENERATION | UNKNOWN_MEMBER_ID | FENCED_INSTANCE_ID) => {
                            self.reset_member(e.code() != Some(ILLEGAL_GENERATION));
                            need_join = true;
                        }
                        _ => {
                            self.client.coordinator_error(&e);
                            if last_heartbeat_ok.elapsed() >= session {
                                // The coordinator has dropped us by now.
                                need_join = true;
                            }
                        }
                    }
                }
            }
        }
    }

    /// As the leader: whether a topic some member subscribes to was created, deleted, created
    /// again (a new topic id) or gained partitions since the current assignment was made, so
    /// the group must rebalance (as Kafka's ConsumerCoordinator does when its metadata
    /// snapshot stops matching the assignment's; see [`snapshot_changed`] and, for flapping
    /// metadata, [`rejoin_for_snapshot`]). It compares the metadata cache, which every refresh
    /// of this client updates (the consumer's own on errors, this task's); missing topics are
    /// looked up at every heartbeat (a topic the group waits for, e.g. re-created after data
    /// loss, is picked up promptly), otherwise the cache is refreshed once it is older than
    /// `metadata.max.age.ms`. The lookup takes at most `bound`, so heartbeats keep their pace.
    async fn assigned_metadata_changed(&self, bound: Duration) -> bool {
        let Some(assigned) = self.assigned_metadata.lock().unwrap().clone() else {
            return false;
        };
        let topics: Vec<String> = assigned.keys().cloned().collect();
        // A topic known with no partitions (cached from an answer that listed none) is looked
        // up again as eagerly as a missing one.
        let waiting = assigned
            .values()
            .any(|layout| layout.as_ref().is_none_or(|layout| layout.partitions == 0));
        if waiting || self.cluster.metadata_is_stale() {
            match tokio::time::timeout(bound, self.cluster.refresh_metadata(&topics)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(
                    "group {}: metadata of the subscribed topics: {e}",
                    self.settings.group_id
                ),
                Err(_) => {}
            }
        }
        let now = metadata_snapshot(
            &self.cluster,
            &topics,
            &mut self.partitions_seen.lock().unwrap(),
        );
        let quiet = Duration::from_millis(self.cluster.config().metadata_max_age_ms);
        let mut rejoined_for = self.rejoined_for.lock().unwrap();
        if rejoin_for_snapshot(&mut rejoined_for, &assigned, &now, Instant::now(), quiet) {
            tracing::debug!(
                "group {}: subscribed topics changed ({assigned:?} -> {now:?}): rejoining",
                self.settings.group_id
            );
            return true;
        }
        false
    }

    /// Sleeps up to `d`, waking early when asked (close, rejoin). A stale wake-up only
    /// brings the next heartbeat forward.
    async fn wait(&self, d: Duration) {
        tokio::select! {
            biased;
            _ = self.shared.wake.notified() => {}
            _ = tokio::time::sleep(d) => {}
        }
    }

    fn reset_member(&self, forget_member_id: bool) {
        let mut state = self.shared.state.lock().unwrap();
        state.generation_id = -1;
        if forget_member_id {
            state.member_id.clear();
        }
    }

    /// Stops handing out records of the current assignment, then commits what was handed out
    /// (auto commit) under the generation that owned it.
    async fn prepare_rejoin(&self) {
        let (commit, generation_id, member_id) = {
            let mut state = self.shared.state.lock().unwrap();
            if state.phase == Phase::Joining {
                return;
            }
            state.phase = Phase::Joining;
            (
                std::mem::take(&mut state.consumed),
                state.generation_id,
                state.member_id.clone(),
            )
        };
        self.shared.notify_changed();
        if self.settings.enable_auto_commit && generation_id >= 0 && !commit.is_empty() {
            if let Err(e) = self
                .client
                .commit(
                    &commit,
                    generation_id,
                    &member_id,
                    self.settings.group_instance_id.as_deref(),
                )
                .await
            {
                tracing::debug!(
                    "group {}: commit before rejoin: {e}",
                    self.settings.group_id
                );
            }
        }
    }

    async fn join_and_sync(&self) -> std::result::Result<(), JoinFailure> {
        // Only a Kafka error that no retry can cure (INVALID_SESSION_TIMEOUT,
        // INCONSISTENT_GROUP_PROTOCOL, GROUP_AUTHORIZATION_FAILED, ...) stops the member; an
        // undecodable response has closed its connection, and the next round starts afresh.
        let retry = |e: ClientError| {
            if self.client.coordinator_error(&e) || e.is_retriable() {
                return JoinFailure::Retry(e);
            }
            match e.code() {
                Some(
                    ILLEGAL_GENERATION
                    | UNKNOWN_MEMBER_ID
                    | REBALANCE_IN_PROGRESS
                    | FENCED_INSTANCE_ID
                    | MEMBER_ID_REQUIRED,
                ) => JoinFailure::Retry(e),
                Some(_) => JoinFailure::Fatal(e),
                None if matches!(e, ClientError::Protocol(_)) => {
                    self.client.forget_coordinator();
                    JoinFailure::Retry(e)
                }
                None => JoinFailure::Fatal(e),
            }
        };
        *self.assigned_metadata.lock().unwrap() = None;
        let conn = self.client.connection().await.map_err(retry)?;
        let hold =
            Duration::from_millis(self.settings.rebalance_timeout_ms.max(0) as u64 + JOIN_GRACE_MS);
        let (topics, owned) = {
            let state = self.shared.state.lock().unwrap();
            (state.subscription.clone(), state.assignment.clone())
        };
        let subscription = encode_subscription(&topics, &owned).map_err(JoinFailure::Fatal)?;
        let version = conn
            .version_for::<JoinGroupRequest>(JOIN_GROUP_VERSION_CAP)
            .map_err(JoinFailure::Fatal)?;
        let instance = self
            .settings
            .group_instance_id
            .as_ref()
            .map(|i| StrBytes::from_string(i.clone()));
        if instance.is_some() && version < 5 {
            return Err(JoinFailure::Fatal(ClientError::Unsupported(format!(
                "group.instance.id needs JoinGroup v5, {} offers v{version}",
                conn.addr()
            ))));
        }
        let mut response = None;
        for _ in 0..MEMBER_ID_ROUNDS {
            let member_id = self.shared.state.lock().unwrap().member_id.clone();
            let request = JoinGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(
                    self.settings.group_id.clone(),
                )))
                .with_session_timeout_ms(self.settings.session_timeout_ms)
                .with_rebalance_timeout_ms(self.settings.rebalance_timeout_ms)
                .with_member_id(StrBytes::from_string(member_id))
                .with_group_instance_id(instance.clone())
                .with_protocol_type(StrBytes::from_static_str(CONSUMER_PROTOCOL_TYPE))
                .with_protocols(
                    self.settings
                        .strategies
                        .iter()
                        .map(|s| {
                            JoinGroupRequestProtocol::default()
                                .with_name(StrBytes::from_static_str(s.protocol_name()))
                                .with_metadata(subscription.clone())
                        })
                        .collect(),
                );
            let r = conn
                .start(&request, JOIN_GROUP_VERSION_CAP)
                .await
                .map_err(retry)?
                .with_timeout(hold)
                .wait()
                .await
                .map_err(retry)?;
            match r.error_code {
                0 => {
                    response = Some(r);
                    break;
                }
                MEMBER_ID_REQUIRED => {
                    // KIP-394: the coordinator named our member id; join again with it.
                    self.shared.state.lock().unwrap().member_id = r.member_id.to_string();
                }
                code => {
                    if matches!(code, UNKNOWN_MEMBER_ID | FENCED_INSTANCE_ID) {
                        self.reset_member(true);
                    }
                    let e = ClientError::from_code(code, None).expect("non-zero");
                    return Err(retry(e));
                }
            }
        }
        let Some(joined) = response else {
            return Err(JoinFailure::Retry(ClientError::Protocol(
                "JoinGroup kept answering MEMBER_ID_REQUIRED".to_string(),
            )));
        };
        let member_id = joined.member_id.to_string();
        let generation_id = joined.generation_id;
        {
            let mut state = self.shared.state.lock().unwrap();
            state.member_id = member_id.clone();
        }
        let protocol = joined.protocol_name.as_ref().map(|p| p.to_string());
        let assignments = if joined.leader.as_str() == member_id && !joined.skip_assignment {
            self.leader_assign(&joined, protocol.as_deref())
                .await
                .map_err(JoinFailure::Retry)?
        } else {
            Vec::new()
        };
        let sync_version = conn
            .version_for::<SyncGroupRequest>(SYNC_GROUP_VERSION_CAP)
            .map_err(JoinFailure::Fatal)?;
        let mut sync = SyncGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(
                self.settings.group_id.clone(),
            )))
            .with_generation_id(generation_id)
            .with_member_id(StrBytes::from_string(member_id.clone()))
            .with_group_instance_id(instance)
            .with_assignments(assignments);
        if sync_version >= 5 {
            sync = sync
                .with_protocol_type(Some(StrBytes::from_static_str(CONSUMER_PROTOCOL_TYPE)))
                .with_protocol_name(protocol.map(StrBytes::from_string));
        }
        let synced = conn
            .start(&sync, SYNC_GROUP_VERSION_CAP)
            .await
            .map_err(retry)?
            .with_timeout(hold)
            .wait_or(salvage_sync_group_error)
            .await
            .map_err(retry)?;
        if let Some(e) = ClientError::from_code(synced.error_code, None) {
            if matches!(e.code(), Some(UNKNOWN_MEMBER_ID | FENCED_INSTANCE_ID)) {
                self.reset_member(true);
            }
            if e.code() == Some(INVALID_REQUEST) {
                // librdkafka's mock answers a SyncGroup that no longer fits its view of the
                // group (e.g. a leader's assignment naming members that have left) with
                // INVALID_REQUEST; librdkafka rejoins on it, and so do we.
                return Err(JoinFailure::Retry(e));
            }
            return Err(retry(e));
        }
        let assignment = decode_assignment(&synced.assignment).map_err(JoinFailure::Retry)?;
        {
            let mut state = self.shared.state.lock().unwrap();
            state.phase = Phase::Stable;
            state.generation_id = generation_id;
            state.member_id = member_id;
            state.assignment = assignment;
            state.assignment_version += 1;
            state.consumed.clear();
        }
        self.shared.notify_changed();
        Ok(())
    }

    /// The leader's part: decode every member's subscription, look up partition counts, run
    /// the assignor the coordinator chose.
    async fn leader_assign(
        &self,
        joined: &kafka_protocol::messages::JoinGroupResponse,
        protocol: Option<&str>,
    ) -> Result<Vec<SyncGroupRequestAssignment>> {
        let strategy = protocol
            .and_then(AssignmentStrategy::from_protocol_name)
            .or_else(|| self.settings.strategies.first().copied())
            .unwrap_or(AssignmentStrategy::Range);
        let mut members = Vec::new();
        for m in &joined.members {
            members.push(MemberSubscription {
                member_id: m.member_id.to_string(),
                group_instance_id: m.group_instance_id.as_ref().map(|i| i.to_string()),
                topics: decode_subscription(&m.metadata)?,
            });
        }
        let mut topics: Vec<String> = members.iter().flat_map(|m| m.topics.clone()).collect();
        topics.sort();
        topics.dedup();
        self.cluster.refresh_metadata(&topics).await?;
        let snapshot = metadata_snapshot(
            &self.cluster,
            &topics,
            &mut self.partitions_seen.lock().unwrap(),
        );
        let counts: BTreeMap<String, i32> = snapshot
            .iter()
            .filter_map(|(t, layout)| Some((t.clone(), layout.as_ref()?.partitions)))
            .filter(|(_, n)| *n > 0)
            .collect();
        *self.assigned_metadata.lock().unwrap() = Some(snapshot);
        let plan = assign(strategy, &members, &counts);
        plan.into_iter()
            .map(|(member_id, partitions)| {
                Ok(SyncGroupRequestAssignment::default()
                    .with_member_id(StrBytes::from_string(member_id))
                    .with_assignment(encode_assignment(&partitions)?))
            })
            .collect()
    }

    async fn heartbeat(&self) -> Result<()> {
        let (generation_id, member_id) = {
            let state = self.shared.state.lock().unwrap();
            (state.generation_id, state.member_id.clone())
        };
        let conn = self.client.connection().await?;
        let version = conn.version_for::<HeartbeatRequest>(HEARTBEAT_VERSION_CAP)?;
        let instance = if version >= 3 {
            self.settings
                .group_instance_id
                .as_ref()
                .map(|i| StrBytes::from_string(i.clone()))
        } else {
            None
        };
        let request = HeartbeatRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(
                self.settings.group_id.clone(),
            )))
            .with_generation_id(generation_id)
            .with_member_id(StrBytes::from_string(member_id))
            .with_group_instance_id(instance);
        let response = conn.send(&request, HEARTBEAT_VERSION_CAP).await?;
        match ClientError::from_code(response.error_code, None) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// LeaveGroup for a dynamic member that has a member id; best effort, bounded.
    async fn leave(&self) {
        let member_id = {
            let mut state = self.shared.state.lock().unwrap();
            state.phase = Phase::Joining;
            state.member_id.clone()
        };
        self.shared.notify_changed();
        if member_id.is_empty() || self.settings.group_instance_id.is_some() {
            return;
        }
        let leave = async {
            let conn = self.client.connection().await?;
            let version = conn.version_for::<LeaveGroupRequest>(LEAVE_GROUP_VERSION_CAP)?;
            let mut request = LeaveGroupRequest::default().with_group_id(GroupId(
                StrBytes::from_string(self.settings.group_id.clone()),
            ));
            if version >= 3 {
                request = request.with_members(vec![MemberIdentity::default()
                    .with_member_id(StrBytes::from_string(member_id.clone()))]);
            } else {
                request = request.with_member_id(StrBytes::from_string(member_id.clone()));
            }
            let response = conn.send(&request, LEAVE_GROUP_VERSION_CAP).await?;
            match ClientError::from_code(response.error_code, None) {
                Some(e) => Err(e),
                None => Ok(()),
            }
        };
        match tokio::time::timeout(Duration::from_millis(LEAVE_TIMEOUT_MS), leave).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!("group {}: LeaveGroup: {e}", self.settings.group_id),
            Err(_) => tracing::debug!("group {}: LeaveGroup timed out", self.settings.group_id),
        }
    }
}
