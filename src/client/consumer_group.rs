//! The consumer's side of group membership: `subscribe`, following the assignment the
//! membership task ([`super::group`]) obtains, committed offsets and commits.
//!
//! Contract:
//! - [`Consumer::subscribe`] needs `group.id`; it starts the membership task and drops any
//!   manual assignment. Each `poll` first takes over the assignment of the newest generation
//!   (positions from OffsetFetch, else `auto.offset.reset`); while the member is (re)joining it
//!   holds no partitions and returns no records. [`Consumer::await_assignment`] does the same
//!   take-over without fetching, to watch a group settle before reading.
//! - A record is handed out only under the group lock and only while the member still holds
//!   the assignment of [`Consumer::generation_id`]; the task takes that lock before it
//!   rejoins, so every record a poll returned belongs to the generation `generation_id()`
//!   reported right after that poll. The simulator records ownership per generation with
//!   [`Consumer::assignment`] and [`Consumer::generation_id`].
//! - Commits commit the next offset after the last record handed out per assigned partition
//!   (or the given offsets) under the member's generation and member id; in assign() mode with
//!   a `group.id` under generation -1 and no member id. A commit during a rebalance fails with
//!   REBALANCE_IN_PROGRESS, a fenced one with the coordinator's error (and the member rejoins).
//! - `enable.auto.commit`: `poll` starts an asynchronous commit every
//!   `auto.commit.interval.ms`; the task commits before it rejoins; `close` commits
//!   synchronously, then leaves the group.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::consumer::{Completion, Consumer, ConsumerRecord, Reset};
use super::group::{
    spawn_membership, GroupSettings, GroupShared, Phase, FENCED_INSTANCE_ID, ILLEGAL_GENERATION,
    REBALANCE_IN_PROGRESS, UNKNOWN_MEMBER_ID,
};
use super::{ClientError, Result, TopicPartition};

/// How long `close` waits for the membership task to leave the group.
const CLOSE_TIMEOUT_MS: u64 = 10_000;

/// A subscription's membership: the task and what this consumer has taken over from it.
pub(super) struct Membership {
    shared: Arc<GroupShared>,
    task: Option<tokio::task::JoinHandle<()>>,
    changes: watch::Receiver<u64>,
    applied_version: u64,
    applied_generation: Option<i32>,
    applied_member_id: String,
}

impl Drop for Membership {
    fn drop(&mut self) {
        // A consumer dropped without close() still leaves the group (best effort).
        self.shared.close();
    }
}

/// A commit under way (see [`Consumer::commit_async`]): await it for the outcome, or drop it.
pub type CommitHandle = tokio::task::JoinHandle<Result<()>>;

impl Consumer {
    /// Joins the group `group.id` for `topics` (replacing any earlier subscription or manual
    /// assignment). Records come from the next `poll`s once the group has assigned partitions.
    pub async fn subscribe(&mut self, topics: Vec<String>) -> Result<()> {
        let Some(group) = self.group.clone() else {
            return Err(ClientError::InvalidArgument(
                "subscribe needs group.id".to_string(),
            ));
        };
        if topics.is_empty() {
            return Err(ClientError::InvalidArgument(
                "subscribe needs at least one topic".to_string(),
            ));
        }
        if let Some(membership) = &self.membership {
            membership.shared.state.lock().unwrap().subscription = topics;
            membership.shared.request_rejoin();
            return Ok(());
        }
        // Missing topics are not an error: the leader assigns them once they exist.
        if let Err(e) = self.cluster.refresh_metadata(&topics).await {
            tracing::debug!("metadata for the subscription: {e}");
        }
        self.assign(Vec::new());
        let settings = GroupSettings {
            group_id: group.group_id().to_string(),
            group_instance_id: self.config.group_instance_id.clone(),
            session_timeout_ms: self.config.session_timeout_ms,
            heartbeat_interval_ms: self.config.heartbeat_interval_ms,
            rebalance_timeout_ms: self.config.max_poll_interval_ms,
            strategies: self.config.partition_assignment_strategy.clone(),
            enable_auto_commit: self.config.enable_auto_commit,
        };
        let (shared, task) = spawn_membership(group, self.cluster.clone(), settings, topics);
        let changes = shared.subscribe_changes();
        self.membership = Some(Membership {
            shared,
            task: Some(task),
            changes,
            applied_version: 0,
            applied_generation: None,
            applied_member_id: String::new(),
        });
        Ok(())
    }

    /// The subscribed topics (empty without `subscribe`).
    pub fn subscription(&self) -> Vec<String> {
        self.membership
            .as_ref()
            .map(|m| m.shared.state.lock().unwrap().subscription.clone())
            .unwrap_or_default()
    }

    /// The group generation whose assignment this consumer holds (None outside a group, or
    /// while it holds none). Records returned by the last `poll` belong to it.
    pub fn generation_id(&self) -> Option<i32> {
        self.membership.as_ref().and_then(|m| m.applied_generation)
    }

    /// The member id the coordinator gave this consumer (None before the first join).
    pub fn member_id(&self) -> Option<String> {
        self.membership
            .as_ref()
            .map(|m| m.applied_member_id.clone())
            .filter(|id| !id.is_empty())
    }

    /// Takes over the newest assignment. Returns false if `deadline` passed while the member
    /// was (re)joining.
    pub(super) async fn follow_group(&mut self, deadline: Instant) -> Result<bool> {
        // Bounded by `deadline`: every turn either returns or waits for a change until then.
        loop {
            let membership = self.membership.as_mut().expect("checked by the caller");
            membership.changes.borrow_and_update();
            let (phase, version, generation, member_id, assignment, error) = {
                let state = membership.shared.state.lock().unwrap();
                (
                    state.phase,
                    state.assignment_version,
                    state.generation_id,
                    state.member_id.clone(),
                    state.assignment.clone(),
                    state.error.clone(),
                )
            };
            if let Some(e) = error {
                return Err(e);
            }
            if phase == Phase::Stable {
                if version != membership.applied_version {
                    tracing::debug!(
                        client = %self.config.client.client_id,
                        generation,
                        "taking over the assignment {assignment:?}"
                    );
                    membership.applied_version = version;
                    membership.applied_generation = Some(generation);
                    membership.applied_member_id = member_id;
                    self.assign(Vec::new());
                    self.assign(assignment);
                }
                return Ok(true);
            }
            if membership.applied_generation.take().is_some() {
                self.assign(Vec::new());
            }
            let membership = self.membership.as_mut().expect("still there");
            tokio::select! {
                biased;
                _ = membership.changes.changed() => {}
                _ = tokio::time::sleep_until(deadline) => return Ok(false),
            }
        }
    }

    /// Takes over the group's newest assignment without fetching or handing out anything,
    /// waiting at most `timeout` while the member (re)joins; true if it holds one. Lets a
    /// caller see the group settle (same [`Consumer::generation_id`] on every member) before
    /// it reads. Without a subscription: false.
    pub async fn await_assignment(&mut self, timeout: Duration) -> Result<bool> {
        if self.membership.is_none() {
            return Ok(false);
        }
        self.follow_group(Instant::now() + timeout).await
    }

    /// Records `records` as handed out; false (nothing recorded) if the group has moved on
    /// from the assignment they were fetched for.
    pub(super) fn hand_out(&mut self, records: &[ConsumerRecord]) -> bool {
        let mut next: BTreeMap<TopicPartition, i64> = BTreeMap::new();
        for r in records {
            next.insert(TopicPartition::new(&*r.topic, r.partition), r.offset + 1);
        }
        if let Some(membership) = &self.membership {
            let mut state = membership.shared.state.lock().unwrap();
            if state.phase != Phase::Stable
                || state.assignment_version != membership.applied_version
            {
                return false;
            }
            state
                .consumed
                .extend(next.iter().map(|(k, v)| (k.clone(), *v)));
        }
        self.consumed.extend(next);
        true
    }

    /// Positions waiting for the group's committed offsets get them (OffsetFetch, in a
    /// background task whose result [`Consumer::apply_committed`] takes); partitions without
    /// one fall back to `auto.offset.reset`.
    pub(super) fn resolve_committed(&mut self) {
        if self.committed_in_flight {
            return;
        }
        let Some(group) = self.group.clone() else {
            return;
        };
        let now = Instant::now();
        let wanted: Vec<TopicPartition> = self
            .positions
            .iter()
            .filter(|(_, p)| {
                p.offset.is_none()
                    && p.reset == Some(Reset::Committed)
                    && p.not_before.is_none_or(|t| t <= now)
            })
            .map(|(tp, _)| tp.clone())
            .collect();
        if wanted.is_empty() {
            return;
        }
        tracing::debug!(
            client = %self.config.client.client_id,
            epoch = self.epoch,
            "OffsetFetch: {wanted:?}"
        );
        self.committed_in_flight = true;
        let tx = self.results_tx.clone();
        let epoch = self.epoch;
        tokio::spawn(async move {
            let result = group.fetch_committed(&wanted).await;
            let _ = tx
                .send(Completion::Committed {
                    epoch,
                    wanted,
                    result,
                })
                .await;
        });
    }

    /// Applies an OffsetFetch answer asked in the current assignment epoch.
    pub(super) fn apply_committed(
        &mut self,
        wanted: Vec<TopicPartition>,
        result: Result<BTreeMap<TopicPartition, Option<i64>>>,
    ) -> Result<()> {
        match result {
            Ok(committed) => {
                let fallback = self.default_reset();
                for tp in wanted {
                    let Some(p) = self.positions.get_mut(&tp) else {
                        continue;
                    };
                    if p.offset.is_some() || p.reset != Some(Reset::Committed) {
                        continue;
                    }
                    match committed.get(&tp).copied().flatten() {
                        Some(offset) => {
                            p.offset = Some(offset);
                            p.reset = None;
                        }
                        None => p.reset = fallback,
                    }
                }
                Ok(())
            }
            Err(e) if e.is_retriable() => {
                tracing::debug!("OffsetFetch for the group: {e}");
                for tp in &wanted {
                    self.back_off(tp);
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Generation and member id to commit under: the member's in a subscription (an error
    /// while it is rebalancing), -1 and "" in assign() mode.
    fn commit_identity(&self) -> Result<(i32, String)> {
        let Some(membership) = &self.membership else {
            return Ok((-1, String::new()));
        };
        let state = membership.shared.state.lock().unwrap();
        if state.phase != Phase::Stable || state.assignment_version != membership.applied_version {
            return Err(ClientError::from_code(
                REBALANCE_IN_PROGRESS,
                Some("the group is rebalancing; the assignment was revoked"),
            )
            .expect("non-zero"));
        }
        Ok((state.generation_id, state.member_id.clone()))
    }

    fn commit_failed(&self, e: &ClientError) {
        if matches!(
            e.code(),
            Some(
                ILLEGAL_GENERATION | UNKNOWN_MEMBER_ID | REBALANCE_IN_PROGRESS | FENCED_INSTANCE_ID
            )
        ) {
            if let Some(m) = &self.membership {
                m.shared.request_rejoin();
            }
        }
    }

    /// Commits the position after the last record handed out, for every assigned partition
    /// that has one, and waits for the coordinator's answer.
    pub async fn commit_sync(&mut self) -> Result<()> {
        let offsets = self.consumed.clone();
        self.commit_offsets_sync(offsets).await
    }

    /// Commits `offsets` (the next offset to read, per partition) and waits for the answer.
    pub async fn commit_offsets_sync(
        &mut self,
        offsets: BTreeMap<TopicPartition, i64>,
    ) -> Result<()> {
        let group = self.group_client()?;
        let (generation_id, member_id) = self.commit_identity()?;
        let result = group
            .commit(
                &offsets,
                generation_id,
                &member_id,
                self.config.group_instance_id.as_deref(),
            )
            .await;
        if let Err(e) = &result {
            self.commit_failed(e);
        }
        result
    }

    /// Starts a commit of the handed-out positions and returns without waiting. Commits
    /// started one after another reach the coordinator in that order.
    pub async fn commit_async(&mut self) -> Result<CommitHandle> {
        let group = self.group_client()?;
        let (generation_id, member_id) = self.commit_identity()?;
        Ok(group
            .commit_async(
                self.consumed.clone(),
                generation_id,
                member_id,
                self.config.group_instance_id.clone(),
            )
            .await)
    }

    /// The group's committed offsets of `partitions` (None where it has none).
    pub async fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Option<i64>>> {
        self.group_client()?.fetch_committed(partitions).await
    }

    fn group_client(&self) -> Result<super::group::GroupClient> {
        self.group
            .clone()
            .ok_or_else(|| ClientError::InvalidArgument("commits need group.id".to_string()))
    }

    /// `enable.auto.commit`: starts an asynchronous commit once per interval.
    pub(super) async fn maybe_auto_commit(&mut self) {
        if !self.config.enable_auto_commit || self.group.is_none() {
            return;
        }
        let now = Instant::now();
        let interval = Duration::from_millis(self.config.auto_commit_interval_ms.max(1));
        match self.next_auto_commit {
            None => self.next_auto_commit = Some(now + interval),
            Some(at) if now >= at => {
                self.next_auto_commit = Some(now + interval);
                if self.consumed.is_empty() {
                    return;
                }
                if let Ok(handle) = self.commit_async().await {
                    tokio::spawn(async move {
                        if let Ok(Err(e)) = handle.await {
                            tracing::debug!("auto commit failed: {e}");
                        }
                    });
                }
            }
            Some(_) => {}
        }
    }

    /// Commits (with auto commit), leaves the group and stops the membership task.
    pub async fn close(mut self) -> Result<()> {
        let mut result = Ok(());
        if self.config.enable_auto_commit && self.group.is_some() && !self.consumed.is_empty() {
            result = self.commit_sync().await;
        }
        if let Some(mut membership) = self.membership.take() {
            membership.shared.close();
            if let Some(task) = membership.task.take() {
                let _ = tokio::time::timeout(Duration::from_millis(CLOSE_TIMEOUT_MS), task).await;
            }
        }
        // A rebalance racing the close is not the caller's problem: the group moves on.
        match result {
            Err(e) if e.code() == Some(REBALANCE_IN_PROGRESS) => Ok(()),
            other => other,
        }
    }
}
