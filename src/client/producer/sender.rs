//! The sender half of the producer: the task that drains ready batches to partition leaders,
//! completes them (delivery reports, retries, idempotent sequence bookkeeping) and refreshes
//! metadata and the producer id. The accumulator and the public API live in the parent
//! module; both share its `Shared` state.

use super::*;
/// A batch with its topic and partition.
type Routed = (String, i32, ReadyBatch);

/// One Produce request's worth of batches for one broker.
struct ProduceSend {
    node_id: i32,
    batches: Vec<Routed>,
}

pub(super) async fn sender_loop(shared: Arc<Shared>) {
    // One timer, moved only when the next wake-up does (a fresh sleep per turn registers a
    // timer each; under madsim they cannot be cancelled).
    let timer = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(timer);
    let mut armed_for: Option<Instant> = None;
    loop {
        let (sends, next_wake, done, refresh) = drain(&shared);
        if refresh {
            tokio::spawn(refresh_metadata(shared.clone()));
        }
        {
            let mut state = shared.state.lock().unwrap();
            if state.new_id_wanted && !state.new_id_running {
                state.new_id_running = true;
                tokio::spawn(renew_producer_id(shared.clone()));
            }
        }
        // Requests are queued on their connections here, one after another, so batches of a
        // partition reach the broker in sequence order; only the waits run concurrently.
        for send in sends {
            let request = produce_request(&shared, &send);
            let result = start_produce(&shared, send.node_id, request).await;
            let shared = shared.clone();
            tokio::spawn(async move {
                let result = match result {
                    Ok(Started::Waiting(pending)) => pending.wait().await.map(Some),
                    Ok(Started::NoResponse) => Ok(None),
                    Err(e) => Err(e),
                };
                complete_produce(shared, send, result).await;
            });
        }
        if done {
            break;
        }
        if let Some(wake) = next_wake {
            if armed_for != Some(wake) {
                // At least 1 ms ahead (as `sleep_until` under madsim): a wake-up already due
                // whose cause is still in flight is retried after a pause, not in a spin.
                let earliest = Instant::now() + Duration::from_millis(1);
                timer.as_mut().reset(wake.max(earliest));
                armed_for = Some(wake);
            }
        }
        tokio::select! {
            biased;
            _ = shared.wake_sender.notified() => {}
            _ = &mut timer, if next_wake.is_some() => armed_for = None,
        }
    }
}

/// Gives every partition that waits for one (with nothing in flight) a fresh producer id,
/// restarting its sequence at 0. Batches of those partitions still holding bytes built under
/// the old id are retries whose outcome is unknown: they fail rather than go out again.
async fn renew_producer_id(shared: Arc<Shared>) {
    let result = init_producer_id(&shared.cluster).await;
    if let Err(e) = &result {
        tracing::debug!("producer id renewal failed: {e}");
        tokio::time::sleep(Duration::from_millis(
            shared.cluster.config().retry_backoff_ms,
        ))
        .await;
    }
    let mut failed: Vec<Routed> = Vec::new();
    {
        let mut guard = shared.state.lock().unwrap();
        let state = &mut *guard;
        state.new_id_running = false;
        state.new_id_wanted = false;
        if let Ok(ids) = result {
            for (name, topic) in state.topics.iter_mut() {
                for (index, ps) in topic.partitions.iter_mut().enumerate() {
                    if !ps.needs_new_id || ps.in_flight > 0 {
                        continue;
                    }
                    ps.needs_new_id = false;
                    ps.producer = Some(ids);
                    ps.next_sequence = 0;
                    ps.acked_sequence = 0;
                    ps.in_flight_sequences.clear();
                    ps.retry_after = None;
                    let (keep, stale): (VecDeque<ReadyBatch>, VecDeque<ReadyBatch>) =
                        std::mem::take(&mut ps.ready)
                            .into_iter()
                            .partition(|b| b.bytes.is_none());
                    ps.ready = keep;
                    failed.extend(stale.into_iter().map(|b| (name.clone(), index as i32, b)));
                }
            }
        }
        let freed: usize = failed.iter().map(|(_, _, b)| b.charged).sum();
        state.buffered_bytes -= freed.min(state.buffered_bytes);
    }
    let delivered: usize = failed.iter().map(|(_, _, b)| b.deliveries.len()).sum();
    for (topic, partition, batch) in failed {
        let error = ClientError::Protocol(format!(
            "{topic}-{partition}: outcome unknown after an earlier batch failed; not resent"
        ));
        fail_batch(&topic, partition, batch, error);
    }
    if delivered > 0 {
        release_delivered(&shared, delivered);
    }
    shared.wake_sender.notify_one();
}

async fn refresh_metadata(shared: Arc<Shared>) {
    let topics: Vec<String> = shared
        .state
        .lock()
        .unwrap()
        .topics
        .keys()
        .cloned()
        .collect();
    let result = shared.cluster.refresh_metadata(&topics).await;
    if let Err(e) = &result {
        tracing::debug!("producer metadata refresh failed: {e}");
        // Leave a pause before the next attempt instead of spinning.
        tokio::time::sleep(Duration::from_millis(
            shared.cluster.config().retry_backoff_ms,
        ))
        .await;
    }
    {
        let mut state = shared.state.lock().unwrap();
        for topic in &topics {
            refresh_topic_state(&mut state, &shared.cluster, topic);
        }
        state.refresh_running = false;
        if result.is_err() {
            state.refresh_wanted = true;
        }
    }
    shared.wake_sender.notify_one();
}

/// Under the lock: closes due batches, expires old ones, picks what to send.
/// Returns (requests, next wake-up, whether the sender is finished, whether to refresh).
fn drain(shared: &Shared) -> (Vec<ProduceSend>, Option<Instant>, bool, bool) {
    let config = &shared.config;
    let now = Instant::now();
    let linger = Duration::from_millis(config.linger_ms);
    let delivery_timeout = Duration::from_millis(config.delivery_timeout_ms);
    let max_in_flight = config.max_in_flight.max(1);
    let mut guard = shared.state.lock().unwrap();
    let state = &mut *guard;
    let send_all = state.flushing > 0 || state.closing;
    let mut next_wake: Option<Instant> = None;
    let mut wake_at = |t: Instant| {
        next_wake = Some(next_wake.map_or(t, |w: Instant| w.min(t)));
    };
    let mut by_node: BTreeMap<i32, (usize, Vec<Routed>)> = BTreeMap::new();
    let mut expired: Vec<Routed> = Vec::new();
    let mut missing_leader = false;
    let mut new_id_wanted = false;
    let mut freed = 0usize;
    for (name, topic) in state.topics.iter_mut() {
        for (index, ps) in topic.partitions.iter_mut().enumerate() {
            let partition = index as i32;
            if let Some(open) = &ps.open {
                let due = open.created + linger;
                if send_all || due <= now {
                    let open = ps.open.take().expect("checked");
                    ps.ready.push_back(close_batch(open));
                } else {
                    wake_at(due);
                }
            }
            // Queued batches that outlived delivery.timeout.ms fail here (in-flight ones are
            // judged when their response comes back). A sequenced batch can only go while
            // nothing is in flight; the partition then resumes at the broker's sequence.
            while ps.ready.front().is_some_and(|b| {
                now >= b.created + delivery_timeout && (b.bytes.is_none() || ps.in_flight == 0)
            }) {
                let batch = ps.ready.pop_front().expect("checked");
                if shared.idempotent && batch.bytes.is_some() {
                    // It was sent: whether the broker wrote it is unknown.
                    ps.needs_new_id = true;
                    // Later sequenced batches would hit the gap: they go too.
                    while ps.ready.front().is_some_and(|b| b.bytes.is_some()) {
                        let later = ps.ready.pop_front().expect("checked");
                        freed += later.charged;
                        expired.push((name.clone(), partition, later));
                    }
                }
                freed += batch.charged;
                expired.push((name.clone(), partition, batch));
            }
            let Some(front) = ps.ready.front() else {
                continue;
            };
            wake_at(front.created + delivery_timeout);
            if ps.needs_new_id {
                new_id_wanted |= ps.in_flight == 0;
                continue; // woken when the new id arrives
            }
            if let Some(after) = ps.retry_after {
                if ps.in_flight > 0 {
                    continue; // woken when they return
                }
                if after > now {
                    wake_at(after);
                    continue;
                }
                ps.retry_after = None;
            }
            if ps.in_flight >= max_in_flight {
                continue;
            }
            let leader = topic.leaders.get(index).copied().unwrap_or(-1);
            if leader < 0 {
                missing_leader = true;
                continue;
            }
            let entry = by_node.entry(leader).or_insert((0, Vec::new()));
            let mut batch = ps.ready.pop_front().expect("not empty");
            if batch.bytes.is_none() {
                let base_sequence = if shared.idempotent {
                    let s = ps.next_sequence;
                    ps.next_sequence = next_sequence(s, batch.record_count);
                    s
                } else {
                    -1
                };
                batch.base_sequence = base_sequence;
                let builder = batch.builder.take().expect("unbuilt batch has a builder");
                let (producer_id, producer_epoch) = ps
                    .producer
                    .unwrap_or((shared.producer_id, shared.producer_epoch));
                match builder.build(producer_id, producer_epoch, base_sequence) {
                    Ok(bytes) => batch.bytes = Some(bytes),
                    Err(e) => {
                        freed += batch.charged;
                        batch.build_error = Some(e);
                        expired.push((name.clone(), partition, batch));
                        continue;
                    }
                }
            }
            let size = batch.bytes.as_ref().map_or(0, Bytes::len);
            if !entry.1.is_empty() && entry.0 + size > config.max_request_size {
                // Does not fit this request: it goes first next round.
                ps.ready.push_front(batch);
                wake_at(now);
                continue;
            }
            entry.0 += size;
            ps.in_flight += 1;
            if shared.idempotent {
                ps.in_flight_sequences.push_back(batch.base_sequence);
            }
            entry.1.push((name.clone(), partition, batch));
        }
    }
    let expired_count: usize = expired.iter().map(|(_, _, b)| b.deliveries.len()).sum();
    state.buffered_bytes -= freed.min(state.buffered_bytes);
    if missing_leader {
        state.refresh_wanted = true;
    }
    state.new_id_wanted |= new_id_wanted;
    if shared.cluster.metadata_is_stale() && !state.topics.is_empty() {
        state.refresh_wanted = true;
    }
    // At most one refresh per retry.backoff.ms, so a leaderless partition cannot spin.
    let min_gap = Duration::from_millis(config.client.retry_backoff_ms);
    let mut refresh = state.refresh_wanted && !state.refresh_running;
    if refresh {
        if let Some(last) = state.last_refresh {
            if now < last + min_gap {
                refresh = false;
                wake_at(last + min_gap);
            }
        }
    }
    if refresh {
        state.refresh_wanted = false;
        state.refresh_running = true;
        state.last_refresh = Some(now);
    }
    let done = state.closing
        && state.undelivered == 0
        && state
            .topics
            .values()
            .all(|t| t.partitions.iter().all(|p| p.in_flight == 0));
    drop(guard);
    let progressed = !expired.is_empty() || freed > 0;
    for (topic, partition, batch) in expired {
        let error = match batch.build_error.clone() {
            Some(e) => e,
            None => ClientError::DeadlineExceeded(format!(
                "{topic}-{partition}: not sent within delivery.timeout.ms ({} ms)",
                config.delivery_timeout_ms
            )),
        };
        fail_batch(&topic, partition, batch, error);
    }
    if progressed {
        release_delivered(shared, expired_count);
    }
    let sends = by_node
        .into_iter()
        .filter(|(_, (_, b))| !b.is_empty())
        .map(|(node_id, (_, batches))| ProduceSend { node_id, batches })
        .collect();
    (sends, next_wake, done, refresh)
}

/// Kafka sequences wrap from i32::MAX to 0.
pub(super) fn next_sequence(sequence: i32, count: i32) -> i32 {
    ((i64::from(sequence) + i64::from(count)) % (i64::from(i32::MAX) + 1)) as i32
}

fn fail_batch(topic: &str, partition: i32, batch: ReadyBatch, error: ClientError) {
    let _ = (topic, partition);
    for d in batch.deliveries {
        d.reply.send(Err(error.clone()));
    }
}

enum Outcome {
    /// Written at this base offset (-1 unknown), with this LogAppendTime (-1 if CreateTime).
    Written {
        base_offset: i64,
        log_append_time: i64,
    },
    Retry(ClientError),
    Fail(ClientError),
}

async fn complete_produce(
    shared: Arc<Shared>,
    send: ProduceSend,
    result: Result<Option<ProduceResponse>>,
) {
    let config = &shared.config;
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(send.batches.len());
    match &result {
        Err(e) => {
            for _ in &send.batches {
                outcomes.push(if e.is_retriable() {
                    Outcome::Retry(e.clone())
                } else {
                    Outcome::Fail(e.clone())
                });
            }
        }
        Ok(None) => {
            for _ in &send.batches {
                outcomes.push(Outcome::Written {
                    base_offset: -1,
                    log_append_time: -1,
                });
            }
        }
        Ok(Some(response)) => {
            for (topic, partition, _) in &send.batches {
                let found = response
                    .responses
                    .iter()
                    .filter(|t| t.name.0.as_str() == topic.as_str())
                    .flat_map(|t| t.partition_responses.iter())
                    .find(|p| p.index == *partition);
                outcomes.push(match found {
                    None => Outcome::Retry(ClientError::Protocol(format!(
                        "no result for {topic}-{partition} in the Produce response"
                    ))),
                    Some(p) if p.error_code == 0 => Outcome::Written {
                        base_offset: p.base_offset,
                        log_append_time: p.log_append_time_ms,
                    },
                    Some(p) if p.error_code == DUPLICATE_SEQUENCE_NUMBER => Outcome::Written {
                        base_offset: -1,
                        log_append_time: -1,
                    },
                    Some(p) => {
                        let message = p.error_message.as_ref().map(|m| m.as_str());
                        let error =
                            ClientError::from_code(p.error_code, message).expect("non-zero code");
                        if error.is_retriable() {
                            Outcome::Retry(error)
                        } else {
                            Outcome::Fail(error)
                        }
                    }
                });
            }
        }
    }
    let now = Instant::now();
    #[allow(clippy::type_complexity)]
    let mut completions: Vec<(String, i32, ReadyBatch, Result<(i64, i64)>)> = Vec::new();
    let mut refresh = false;
    let delivered = {
        let mut guard = shared.state.lock().unwrap();
        let state = &mut *guard;
        for ((topic, partition, mut batch), outcome) in send.batches.into_iter().zip(outcomes) {
            let Some(ps) = state
                .topics
                .get_mut(&topic)
                .and_then(|t| t.partitions.get_mut(partition as usize))
            else {
                continue;
            };
            ps.in_flight -= 1;
            if let Some(i) = ps
                .in_flight_sequences
                .iter()
                .position(|s| *s == batch.base_sequence)
            {
                ps.in_flight_sequences.remove(i);
            }
            let outcome = match outcome {
                // Overtaken: an earlier batch of ours is still on its way or being retried,
                // so the broker saw a gap; resend after it.
                Outcome::Fail(e)
                    if shared.idempotent
                        && e.code() == Some(OUT_OF_ORDER_SEQUENCE_NUMBER)
                        && earlier_batch_pending(ps, batch.base_sequence) =>
                {
                    Outcome::Retry(e)
                }
                other => other,
            };
            match outcome {
                Outcome::Written {
                    base_offset,
                    log_append_time,
                } => {
                    if shared.idempotent {
                        ps.acked_sequence = next_sequence(batch.base_sequence, batch.record_count);
                    }
                    completions.push((topic, partition, batch, Ok((base_offset, log_append_time))));
                }
                Outcome::Retry(e)
                    if batch.attempts < config.retries
                        && now
                            < batch.created + Duration::from_millis(config.delivery_timeout_ms) =>
                {
                    refresh |= e.needs_metadata_refresh();
                    tracing::debug!(
                        "retrying {topic}-{partition} (attempt {}): {e}",
                        batch.attempts + 1
                    );
                    let pause = backoff_ms(&config.client, batch.attempts);
                    batch.attempts += 1;
                    let after = now + Duration::from_millis(pause);
                    ps.retry_after = Some(ps.retry_after.map_or(after, |a| a.max(after)));
                    // Keep sequence order: sequenced batches go before any later one.
                    let position = ps
                        .ready
                        .iter()
                        .position(|b| {
                            b.bytes.is_none()
                                || (shared.idempotent
                                    && sequence_before(batch.base_sequence, b.base_sequence))
                        })
                        .unwrap_or(ps.ready.len());
                    ps.ready.insert(position, batch);
                }
                Outcome::Retry(e) | Outcome::Fail(e) => {
                    if shared.idempotent && batch.bytes.is_some() {
                        // The broker never got this sequence: every later sequenced batch
                        // would hit the gap. Fail those too and continue from the broker's
                        // expected sequence (the Java client bumps the epoch instead).
                        let later: Vec<ReadyBatch> = {
                            let (keep, drop): (VecDeque<ReadyBatch>, VecDeque<ReadyBatch>) =
                                std::mem::take(&mut ps.ready)
                                    .into_iter()
                                    .partition(|b| b.bytes.is_none());
                            ps.ready = keep;
                            drop.into_iter().collect()
                        };
                        for b in later {
                            let error = ClientError::Protocol(format!(
                                "not sent: an earlier batch of {topic}-{partition} failed ({e})"
                            ));
                            completions.push((topic.clone(), partition, b, Err(error)));
                        }
                        // Even a broker's error for this attempt does not say an earlier
                        // attempt was not written.
                        ps.needs_new_id = true;
                    }
                    completions.push((topic, partition, batch, Err(e)));
                }
            }
        }
        let mut freed = 0;
        let mut delivered = 0;
        for (_, _, batch, _) in &completions {
            freed += batch.charged;
            delivered += batch.deliveries.len();
        }
        state.buffered_bytes -= freed.min(state.buffered_bytes);
        if refresh {
            state.refresh_wanted = true;
        }
        delivered
    };
    for (topic, partition, batch, result) in completions {
        match result {
            Ok((base_offset, log_append_time)) => {
                for (i, d) in batch.deliveries.into_iter().enumerate() {
                    d.reply.send(Ok(RecordMetadata {
                        topic: topic.clone(),
                        partition,
                        offset: if base_offset >= 0 {
                            base_offset + i as i64
                        } else {
                            -1
                        },
                        timestamp: if log_append_time >= 0 {
                            log_append_time
                        } else {
                            d.timestamp
                        },
                    }));
                }
            }
            Err(e) => fail_batch(&topic, partition, batch, e),
        }
    }
    // Only now, with every report handed out, may `flush` see these records as done.
    release_delivered(&shared, delivered);
    shared.wake_sender.notify_one();
}

/// Counts `n` records as reported and wakes `flush`/`send` waiters.
fn release_delivered(shared: &Shared, n: usize) {
    if n > 0 {
        let mut state = shared.state.lock().unwrap();
        state.undelivered -= n.min(state.undelivered);
    }
    shared.progress.notify_waiters();
}

/// Whether a batch sequenced before `base_sequence` is still in flight or queued for retry.
fn earlier_batch_pending(ps: &PartitionState, base_sequence: i32) -> bool {
    ps.in_flight_sequences
        .iter()
        .any(|s| sequence_before(*s, base_sequence))
        || ps
            .ready
            .iter()
            .any(|b| b.bytes.is_some() && sequence_before(b.base_sequence, base_sequence))
}

/// Whether sequence `a` comes before `b` (both sent by this producer, so within 2^30).
pub(super) fn sequence_before(a: i32, b: i32) -> bool {
    let diff = (i64::from(b) - i64::from(a)).rem_euclid(i64::from(i32::MAX) + 1);
    diff != 0 && diff < (1 << 30)
}

/// The Produce request carrying `send`'s batches.
fn produce_request(shared: &Shared, send: &ProduceSend) -> ProduceRequest {
    let mut topics: Vec<TopicProduceData> = Vec::new();
    for (topic, partition, batch) in &send.batches {
        let data = PartitionProduceData::default()
            .with_index(*partition)
            .with_records(batch.bytes.clone());
        match topics.last_mut() {
            Some(t) if t.name.0.as_str() == topic.as_str() => t.partition_data.push(data),
            _ => topics.push(
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(topic.clone())))
                    .with_partition_data(vec![data]),
            ),
        }
    }
    ProduceRequest::default()
        .with_transactional_id(None)
        .with_acks(shared.config.acks.wire())
        .with_timeout_ms(shared.config.client.request_timeout_ms.min(i32::MAX as u64) as i32)
        .with_topic_data(topics)
}

enum Started {
    Waiting(PendingResponse<ProduceResponse>),
    NoResponse,
}

/// Queues the Produce request on the leader's connection (acks=0: no response expected).
async fn start_produce(shared: &Shared, node_id: i32, request: ProduceRequest) -> Result<Started> {
    let conn = shared.cluster.connection(node_id).await?;
    if shared.config.acks == Acks::None {
        conn.send_no_response(&request, PRODUCE_VERSION_CAP).await?;
        return Ok(Started::NoResponse);
    }
    Ok(Started::Waiting(
        conn.start(&request, PRODUCE_VERSION_CAP).await?,
    ))
}
