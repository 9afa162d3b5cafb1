//! The node workload's fetcher: a reader that sends Fetch requests itself, so that every record
//! it reads is recorded with the high watermark of the response that carried it (Karst's
//! consumer does not expose it), for the `above-high-watermark` checker.

use super::node_workload::{Traffic, PARTITIONS, TOPIC};
use super::{sleep_ms, Shared};
use crate::history::{ReadOp, SimMillis, Value, ValueText};
use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use karst::client::records::decode_batches;
use karst::client::{ClientConfig, ClientError, Cluster as ClientCluster, TopicPartition};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Kafka's OFFSET_OUT_OF_RANGE error code.
const OFFSET_OUT_OF_RANGE: i16 = 1;
/// Kafka's CORRUPT_MESSAGE error code: the broker cannot read the stored batch there.
const CORRUPT_MESSAGE: i16 = 2;

/// The fetcher addresses its topic by name, which Fetch carries up to v12 (v13+ use topic ids,
/// KIP-516). Not the consumer's cap: when that rose to v16 the fetcher's requests named no
/// topic, read nothing, and the above-high-watermark check went blind.
const FETCHER_FETCH_VERSION: i16 = 12;

/// A reader that sends Fetch requests itself (Karst's consumer does not expose the high
/// watermark a response reported) and records every record with the high watermark of the
/// response that carried it, for the `above-high-watermark` checker. It starts every
/// partition at offset 0 and moves to a new session (from 0) on OFFSET_OUT_OF_RANGE.
pub(super) async fn fetch_loop(
    client: ClientConfig,
    traffic: Arc<Traffic>,
    shared: Shared,
    id: u32,
) {
    let name = format!("fetcher-{id}");
    let config = ClientConfig {
        client_id: name.clone(),
        allow_auto_topic_creation: false,
        ..client
    };
    let mut positions: Vec<(i64, u32)> = vec![(0, 0); PARTITIONS as usize];
    let mut cluster = None;
    while !traffic.stop.load(Ordering::SeqCst) {
        let Some(active) = cluster.as_ref() else {
            match ClientCluster::connect(config.clone()).await {
                Ok(c) => cluster = Some(c),
                Err(e) => {
                    shared.event(format!("{name}: cannot connect: {e}"));
                    sleep_ms(200).await;
                }
            }
            continue;
        };
        match fetch_once(active, &positions, &shared).await {
            Ok(response) => {
                let complete_ms = shared.now_ms();
                record_fetch(&shared, id, &response, &mut positions, complete_ms);
            }
            Err(e) => {
                shared.event(format!("{name}: fetch failed: {e}"));
                let _ = active.refresh_metadata(&[TOPIC.to_string()]).await;
                sleep_ms(100).await;
            }
        }
    }
}

/// What one Fetch returned, with when it was sent.
struct Fetched {
    invoke_ms: SimMillis,
    /// Per partition: (error code, high watermark, records).
    partitions: Vec<(i32, i16, i64, Option<Bytes>)>,
}

async fn fetch_once(
    cluster: &ClientCluster,
    positions: &[(i64, u32)],
    shared: &Shared,
) -> Result<Fetched, ClientError> {
    let tp = TopicPartition::new(TOPIC, 0);
    // (`leader_for` rather than `topic`: the latter copies the topic's whole metadata.)
    if cluster.leader_for(&tp).is_none() {
        cluster.refresh_metadata(&[TOPIC.to_string()]).await?;
    }
    let (leader, _) = cluster
        .leader_for(&tp)
        .ok_or_else(|| ClientError::InvalidArgument(format!("no leader for {tp}")))?;
    let partitions = positions
        .iter()
        .enumerate()
        .map(|(p, (offset, _))| {
            FetchPartition::default()
                .with_partition(p as i32)
                .with_current_leader_epoch(-1)
                .with_fetch_offset(*offset)
                .with_last_fetched_epoch(-1)
                .with_log_start_offset(-1)
                .with_partition_max_bytes(16 * 1024)
        })
        .collect();
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(100)
        .with_min_bytes(1)
        .with_max_bytes(64 * 1024)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partitions(partitions)]);
    let invoke_ms = shared.now_ms();
    let connection = cluster.connection(leader).await?;
    let response = connection.send(&request, FETCHER_FETCH_VERSION).await?;
    let mut out = Vec::new();
    for topic in response.responses {
        for p in topic.partitions {
            out.push((p.partition_index, p.error_code, p.high_watermark, p.records));
        }
    }
    Ok(Fetched {
        invoke_ms,
        partitions: out,
    })
}

/// Records what a fetch returned and moves the positions on.
fn record_fetch(
    shared: &Shared,
    id: u32,
    fetched: &Fetched,
    positions: &mut [(i64, u32)],
    complete_ms: SimMillis,
) {
    let mut decoded = Vec::new();
    for (partition, error_code, high_watermark, records) in &fetched.partitions {
        let Some((position, session)) = positions.get_mut(*partition as usize) else {
            continue;
        };
        if *error_code == OFFSET_OUT_OF_RANGE {
            *session += 1;
            shared.event(format!(
                "fetcher-{id}: partition {partition} offset {position} out of range: session {session} from 0"
            ));
            *position = 0;
            continue;
        }
        if *error_code == CORRUPT_MESSAGE {
            // Corrupted storage the broker detected itself: step past it, as for a batch
            // that fails to decode below (retrying would read the same bytes for ever).
            shared.event(format!(
                "fetcher-{id}: partition {partition} offset {position}: broker reports a corrupt batch: skipping one offset"
            ));
            *position += 1;
            continue;
        }
        if *error_code != 0 {
            continue;
        }
        let Some(records) = records.clone() else {
            continue;
        };
        decoded.clear();
        let next = match decode_batches(records, *position, &mut decoded) {
            Ok(summary) => summary.next_offset,
            Err(e) => {
                // Corrupted storage: step past the batch, as the final read does.
                shared.event(format!(
                    "fetcher-{id}: partition {partition} offset {position}: corrupt batch ({e}): skipping one offset"
                ));
                Some(*position + 1)
            }
        };
        shared.with(|w| {
            w.operations += 1;
            for record in &decoded {
                let value = record.value.as_deref().and_then(Value::decode);
                w.trace.event(
                    complete_ms,
                    format_args!(
                        "read f{id}/{session} partition {partition} offset {} {} (high watermark {high_watermark})",
                        record.offset,
                        ValueText(value)
                    ),
                );
                w.history.reads.push(ReadOp {
                    consumer: id,
                    session: *session,
                    partition: *partition,
                    offset: record.offset,
                    value,
                    invoke_ms: fetched.invoke_ms,
                    complete_ms,
                    high_watermark: Some(*high_watermark),
                });
            }
        });
        let after_records = decoded.last().map(|r| r.offset + 1);
        *position = [Some(*position), next, after_records]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(*position);
    }
}
