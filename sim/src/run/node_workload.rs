//! The `node` workload: real Karst nodes (`karst::runtime::start`, the whole broker and log)
//! on simulated hosts, each with a `SimDisk` the simulator keeps across crashes, driven by
//! Karst's own client over simulated TCP from a separate client host:
//! - producers at acks=all (how many: `--load`), half idempotent (up to 5 in flight, so order and no-duplicates
//!   are both at stake), half not (one in flight: order holds, duplicates allowed);
//! - consumers assigned every partition, reading from the start, and fetchers (fetcher.rs)
//!   that send their own Fetch requests to record each response's high watermark;
//! - after the heal, a fresh consumer reads every partition to its high watermark.
//!
//! A produce whose delivery fails is recorded as Unknown (a timed-out or disconnected request
//! may still have been written); one refused before it was queued is Failed.

use super::disk::{self, LyingStorage};
use super::fetcher;
use super::group_workload::{self, GroupsStop, GROUPS};
use super::{run_nemesis, sleep_ms, FaultTarget, Shared, HEALED_TRAFFIC_MS};
use crate::history::{
    DataFaultEvent, FinalRead, FlushGuarantee, Outcome, PartitionRecords, ProduceOp, ReadOp,
    SimMillis, Value, ValueText,
};
use crate::nemesis::{Action, NemesisPlan};
use crate::options::{InjectedBug, RunOptions, Workload};
use crate::rng::SimRng;
use karst::client::{
    Acks, Admin, ClientConfig, ClientError, Consumer, ConsumerConfig, NewTopic, OffsetReset,
    Producer, ProducerConfig, ProducerRecord, TopicPartition,
};
use karst::config::{FlushPolicyName, NodeConfig};
use karst::storage::{SimDisk, Storage};
use madsim::runtime::Handle;
use madsim::task::NodeId;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub(super) const TOPIC: &str = "sim";
/// Partitions of `__consumer_offsets` (Kafka's default 50 costs simulation time for nothing).
const OFFSETS_TOPIC_PARTITIONS: i32 = 3;
pub(super) const PARTITIONS: i32 = 3;
const PORT: u16 = 9092;
/// Records an idempotent producer keeps in flight (Kafka allows up to 5 with idempotence).
const IDEMPOTENT_IN_FLIGHT: usize = 5;
/// Client timeouts, short enough that operations resolve within a run.
const REQUEST_TIMEOUT_MS: u64 = 3_000;
const DELIVERY_TIMEOUT_MS: u64 = 10_000;
/// Bound on attempts to create the topic.
const MAX_CREATE_ATTEMPTS: u32 = 100;

fn server_ip(index: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1 + index as u8))
}

fn client_ip() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1))
}

fn bootstrap(servers: u32) -> String {
    (0..servers)
        .map(|i| format!("{}:{PORT}", server_ip(i)))
        .collect::<Vec<_>>()
        .join(",")
}

/// The simulated hosts and disks of one cluster.
struct Cluster {
    handle: Handle,
    servers: Vec<NodeId>,
    disks: Vec<SimDisk>,
    client: NodeId,
}

impl Cluster {
    fn endpoint(&self, index: u32) -> NodeId {
        if (index as usize) < self.servers.len() {
            self.servers[index as usize]
        } else {
            self.client
        }
    }

    fn net(&self) -> Arc<madsim::net::NetSim> {
        madsim::net::NetSim::current()
    }
}

impl FaultTarget for Cluster {
    fn start(&self, action: &Action, shared: &Shared) {
        let mut detail = String::new();
        match action {
            Action::Partition { a, b } => {
                let (a, b) = (self.endpoint(*a), self.endpoint(*b));
                self.net().clog_link(a, b);
                self.net().clog_link(b, a);
            }
            Action::OneWay { from, to } => {
                self.net()
                    .clog_link(self.endpoint(*from), self.endpoint(*to));
            }
            Action::Clog { node } => self.net().clog_node(self.endpoint(*node)),
            Action::Delay {
                loss_rate,
                max_latency_ms,
            } => {
                let (loss_rate, max_latency_ms) = (*loss_rate, *max_latency_ms as u64);
                self.net().update_config(|config| {
                    config.packet_loss_rate = loss_rate;
                    config.send_latency =
                        Duration::from_millis(1)..Duration::from_millis(max_latency_ms.max(2));
                });
            }
            Action::Crash { node, disk: what } => {
                self.handle.kill(self.servers[*node as usize]);
                let (data_fault, text) = disk::apply(&self.disks[*node as usize], *what);
                detail = format!(" ({text})");
                let at_ms = shared.now_ms();
                shared.with(|w| {
                    w.history.data_faults.push(DataFaultEvent {
                        at_ms,
                        node: *node,
                        fault: data_fault,
                    })
                });
            }
            Action::Pause { node } => self.handle.pause(self.servers[*node as usize]),
            Action::ClockJump { .. } => {}
        }
        shared.event(format!("nemesis start: {action}{detail}"));
    }

    fn end(&self, action: &Action, shared: &Shared) {
        match action {
            Action::Partition { a, b } => {
                let (a, b) = (self.endpoint(*a), self.endpoint(*b));
                self.net().unclog_link(a, b);
                self.net().unclog_link(b, a);
            }
            Action::OneWay { from, to } => {
                self.net()
                    .unclog_link(self.endpoint(*from), self.endpoint(*to));
            }
            Action::Clog { node } => self.net().unclog_node(self.endpoint(*node)),
            Action::Delay { .. } => {
                let default = madsim::net::Config::default();
                self.net().update_config(|config| *config = default);
            }
            Action::Crash { node, .. } => self.handle.restart(self.servers[*node as usize]),
            Action::Pause { node } => self.handle.resume(self.servers[*node as usize]),
            Action::ClockJump { .. } => {}
        }
        shared.event(format!("nemesis end: {action}"));
    }
}

/// Stops producers and consumers.
pub(super) struct Traffic {
    pub(super) stop: AtomicBool,
}

pub(crate) async fn run(seed: u64, options: &RunOptions, plan: &NemesisPlan, shared: &Shared) {
    let servers = options.effective_nodes();
    let flush = shared.with(|w| w.history.flush);
    shared.with(|w| w.history.partitions = PARTITIONS);
    let handle = Handle::current();
    let mut rng = SimRng::fork(seed, "node-workload");
    let segment_bytes = rng.between(4 * 1024, 256 * 1024) as u64;
    shared.event(format!(
        "node workload: {servers} node(s), topic {TOPIC} with {PARTITIONS} partitions, segment_bytes={segment_bytes} flush={flush:?} bug={:?}",
        options.inject_bug
    ));
    let mut server_ids = Vec::new();
    let mut disks = Vec::new();
    for index in 0..servers {
        let disk = SimDisk::new(rng.next_u64());
        let storage: Arc<dyn Storage> = match options.inject_bug {
            Some(InjectedBug::LyingFsync) => Arc::new(LyingStorage(disk.clone())),
            // Injected in the broker itself (karst::buggify), not in the storage.
            Some(InjectedBug::ServeAboveHighWatermark) | None => Arc::new(disk.clone()),
        };
        let config = NodeConfig {
            node_id: index as i32 + 1,
            listeners: format!("{}:{PORT}", server_ip(index)),
            num_partitions: PARTITIONS,
            log_segment_bytes: segment_bytes,
            log_flush_policy: match flush {
                FlushGuarantee::Durable => FlushPolicyName::Durable,
                FlushGuarantee::PageCache => FlushPolicyName::PageCache,
            },
            karst_seed: Some(seed ^ (index as u64 + 1)),
            // Groups: rebalance at once and allow the short sessions the members use.
            group_initial_rebalance_delay_ms: 0,
            group_min_session_timeout_ms: 500,
            offsets_topic_num_partitions: OFFSETS_TOPIC_PARTITIONS,
            ..NodeConfig::default()
        };
        let node_shared = shared.clone();
        let id = handle
            .create_node()
            .name(format!("karst-{}", index + 1))
            .ip(server_ip(index))
            .init(move || {
                let (config, storage, shared) =
                    (config.clone(), storage.clone(), node_shared.clone());
                async move {
                    match karst::runtime::start(config, storage).await {
                        Ok(mut node) => {
                            shared.event(format!("node {index} serving"));
                            let stopped = node.stopped().await;
                            shared.event(format!("node {index} stopped: {stopped:?}"));
                        }
                        Err(e) => shared.event(format!("node {index} failed to start: {e:#}")),
                    }
                }
            })
            .build();
        server_ids.push(id.id());
        disks.push(disk);
    }
    let client_node = handle.create_node().name("client").ip(client_ip()).build();
    let cluster = Cluster {
        handle: handle.clone(),
        servers: server_ids,
        disks,
        client: client_node.id(),
    };
    let client_config = ClientConfig {
        request_timeout_ms: REQUEST_TIMEOUT_MS,
        connection_setup_timeout_ms: REQUEST_TIMEOUT_MS,
        metadata_max_age_ms: 5_000,
        seed,
        ..ClientConfig::new(&bootstrap(servers))
    };

    // Topic creation first, so producers do not race auto-creation.
    let created = client_node
        .spawn(create_topic(client_config.clone(), shared.clone()))
        .await
        .unwrap_or(false);
    if !created {
        shared.event("could not create the topic");
    }

    let traffic = Arc::new(Traffic {
        stop: AtomicBool::new(false),
    });
    let mut tasks = Vec::new();
    let (producers, consumers) = options.load.clients();
    let groups = options.workload == Workload::Groups;
    let consumers = if groups { 0 } else { consumers };
    for producer in 0..producers {
        tasks.push(client_node.spawn(produce_loop(
            client_config.clone(),
            traffic.clone(),
            shared.clone(),
            producer,
            producer % 2 == 0,
            options.load.record_interval_ms(),
            SimRng::fork(seed, &format!("producer-{producer}")),
        )));
    }
    for consumer in 0..consumers {
        tasks.push(client_node.spawn(consume_loop(
            client_config.clone(),
            traffic.clone(),
            shared.clone(),
            consumer,
        )));
    }
    // One more reader that sends its own Fetch requests, to record each response's high
    // watermark with the records it carried.
    if !groups {
        tasks.push(client_node.spawn(fetcher::fetch_loop(
            client_config.clone(),
            traffic.clone(),
            shared.clone(),
            consumers,
        )));
    }
    let groups_stop = Arc::new(GroupsStop {
        stop: AtomicBool::new(false),
    });
    let mut members = Vec::new();
    if groups {
        let mut member = 0;
        for (group, size) in GROUPS {
            shared.with(|w| w.history.group.groups.push(group.to_string()));
            for _ in 0..size {
                members.push(client_node.spawn(group_workload::member_loop(
                    client_config.clone(),
                    TOPIC,
                    group,
                    member,
                    groups_stop.clone(),
                    shared.clone(),
                )));
                member += 1;
            }
        }
    }

    run_nemesis(plan, shared, &cluster).await;
    sleep_ms(HEALED_TRAFFIC_MS).await;
    traffic.stop.store(true, Ordering::SeqCst);
    for task in tasks {
        let _ = task.await;
    }
    if groups {
        // The groups drain: until each consumed every acknowledged record, or half the
        // liveness bound (the final read needs the rest).
        let deadline = shared.with(|w| w.history.heal_ms + w.history.liveness_bound_ms / 2);
        while shared.now_ms() < deadline && !group_workload::drained(shared) {
            sleep_ms(250).await;
        }
        let drained_ms = shared.now_ms();
        shared.with(|w| w.history.group.drained_ms = Some(drained_ms));
        shared.event("groups: drain ended");
        groups_stop.stop.store(true, Ordering::SeqCst);
        for member in members {
            let _ = member.await;
        }
    }
    let final_read = client_node
        .spawn(final_read(client_config, shared.clone()))
        .await
        .unwrap_or_else(|_| FinalRead {
            invoke_ms: shared.now_ms(),
            complete_ms: None,
            partitions: vec![],
        });
    shared.with(|w| w.history.final_read = Some(final_read));
}

async fn create_topic(config: ClientConfig, shared: Shared) -> bool {
    for attempt in 0..MAX_CREATE_ATTEMPTS {
        let result = match Admin::new(config.clone()).await {
            Ok(admin) => admin
                .create_topics(&[NewTopic::new(TOPIC, PARTITIONS, 1)], false)
                .await
                .map(|results| results.into_iter().map(|(_, r)| r).collect::<Vec<_>>()),
            Err(e) => Err(e),
        };
        match result {
            Ok(results) if results.iter().all(|r| r.is_ok()) => {
                shared.event(format!("topic {TOPIC} created"));
                return true;
            }
            other => shared.event(format!("create topic attempt {attempt}: {other:?}")),
        }
        sleep_ms(100).await;
    }
    false
}

/// A record handed to the producer.
#[derive(Clone, Copy)]
struct Sent {
    value: Value,
    idempotent: bool,
    partition: i32,
    invoke_ms: SimMillis,
}

fn record_produce(shared: &Shared, sent: Sent, outcome: Outcome, offset: Option<i64>, why: &str) {
    let complete_ms = shared.now_ms();
    let Sent {
        value,
        idempotent,
        partition,
        invoke_ms,
    } = sent;
    shared.with(|w| {
        w.operations += 1;
        w.trace.event(
            complete_ms,
            format_args!(
                "produce {value} partition {partition} invoked {invoke_ms} -> {outcome:?} offset {offset:?}{why}"
            ),
        );
        w.history.produces.push(ProduceOp {
            value,
            idempotent,
            partition,
            invoke_ms,
            complete_ms,
            outcome,
            offset,
        });
    });
}

async fn produce_loop(
    client: ClientConfig,
    traffic: Arc<Traffic>,
    shared: Shared,
    producer_id: u32,
    idempotent: bool,
    (min_interval_ms, max_interval_ms): (i64, i64),
    mut rng: SimRng,
) {
    let config = ProducerConfig {
        client: ClientConfig {
            client_id: format!("producer-{producer_id}"),
            ..client
        },
        acks: Acks::All,
        enable_idempotence: Some(idempotent),
        max_in_flight: if idempotent { IDEMPOTENT_IN_FLIGHT } else { 1 },
        linger_ms: rng.between(0, 5) as u64,
        delivery_timeout_ms: DELIVERY_TIMEOUT_MS,
        max_block_ms: DELIVERY_TIMEOUT_MS,
        ..ProducerConfig::default()
    };
    let producer = loop {
        if traffic.stop.load(Ordering::SeqCst) {
            return;
        }
        match Producer::new(config.clone()).await {
            Ok(producer) => break producer,
            Err(e) => {
                shared.event(format!("producer {producer_id}: cannot start: {e}"));
                sleep_ms(200).await;
            }
        }
    };
    let window = if idempotent { IDEMPOTENT_IN_FLIGHT } else { 1 };
    let mut in_flight = std::collections::VecDeque::new();
    let mut seq = 0u32;
    while !traffic.stop.load(Ordering::SeqCst) {
        sleep_ms(rng.between(min_interval_ms, max_interval_ms)).await;
        let value = Value {
            producer: producer_id,
            seq,
        };
        seq += 1;
        let partition = rng.below(PARTITIONS as u64) as i32;
        let sent = Sent {
            value,
            idempotent,
            partition,
            invoke_ms: shared.now_ms(),
        };
        let record = ProducerRecord::new(TOPIC, value.encode()).with_partition(partition);
        match producer.send(record).await {
            Err(e) => record_produce(&shared, sent, Outcome::Failed, None, &format!(" ({e})")),
            Ok(delivery) => {
                let shared = shared.clone();
                in_flight.push_back(tokio::spawn(async move {
                    match delivery.await {
                        Ok(metadata) => {
                            record_produce(&shared, sent, Outcome::Ok, Some(metadata.offset), "")
                        }
                        Err(e) => record_produce(
                            &shared,
                            sent,
                            Outcome::Unknown,
                            None,
                            &format!(" ({e})"),
                        ),
                    }
                }));
            }
        }
        while in_flight.len() >= window {
            if let Some(task) = in_flight.pop_front() {
                let _ = task.await;
            }
        }
    }
    for task in in_flight {
        let _ = task.await;
    }
    producer.close().await;
}

fn consumer_config(client: ClientConfig, name: String) -> ConsumerConfig {
    ConsumerConfig {
        client: ClientConfig {
            client_id: name,
            allow_auto_topic_creation: false,
            ..client
        },
        auto_offset_reset: OffsetReset::Earliest,
        fetch_max_wait_ms: 100,
        max_partition_fetch_bytes: 64 * 1024,
        ..ConsumerConfig::default()
    }
}

async fn new_consumer(config: ConsumerConfig, shared: &Shared, name: &str) -> Option<Consumer> {
    match Consumer::new(config).await {
        Ok(mut consumer) => {
            consumer.assign(
                (0..PARTITIONS)
                    .map(|p| TopicPartition::new(TOPIC, p))
                    .collect(),
            );
            Some(consumer)
        }
        Err(e) => {
            shared.event(format!("{name}: cannot start: {e}"));
            None
        }
    }
}

async fn consume_loop(client: ClientConfig, traffic: Arc<Traffic>, shared: Shared, id: u32) {
    let name = format!("consumer-{id}");
    let config = consumer_config(client, name.clone());
    let mut consumer = None;
    while !traffic.stop.load(Ordering::SeqCst) {
        let Some(active) = consumer.as_mut() else {
            consumer = new_consumer(config.clone(), &shared, &name).await;
            if consumer.is_none() {
                sleep_ms(200).await;
            }
            continue;
        };
        let invoke_ms = shared.now_ms();
        match active.poll(Duration::from_millis(100)).await {
            Ok(records) => {
                let complete_ms = shared.now_ms();
                shared.with(|w| {
                    w.operations += 1;
                    for record in &records {
                        let value = record.value.as_deref().and_then(Value::decode);
                        w.trace.event(
                            complete_ms,
                            format_args!(
                                "read c{id} partition {} offset {} {}",
                                record.partition,
                                record.offset,
                                ValueText(value)
                            ),
                        );
                        w.history.reads.push(ReadOp {
                            consumer: id,
                            session: 0,
                            partition: record.partition,
                            offset: record.offset,
                            value,
                            invoke_ms,
                            complete_ms,
                            high_watermark: None,
                        });
                    }
                });
            }
            Err(e) => {
                shared.event(format!("{name}: poll failed: {e}"));
                sleep_ms(100).await;
            }
        }
    }
}

/// Reads every partition from its start to the high watermark it had when the read began;
/// gives up at the liveness bound (complete_ms None).
async fn final_read(client: ClientConfig, shared: Shared) -> FinalRead {
    let invoke_ms = shared.now_ms();
    let deadline = shared.with(|w| w.history.heal_ms + w.history.liveness_bound_ms);
    let gave_up = |partitions: Vec<(i32, PartitionRecords)>| {
        shared.event("final read: gave up at the liveness bound");
        FinalRead {
            invoke_ms,
            complete_ms: None,
            partitions,
        }
    };
    let partitions: Vec<TopicPartition> = (0..PARTITIONS)
        .map(|p| TopicPartition::new(TOPIC, p))
        .collect();
    // High watermarks first.
    let mut ends = None;
    while shared.now_ms() < deadline {
        if let Ok(admin) = Admin::new(client.clone()).await {
            let offsets = admin.partition_offsets(&partitions).await;
            if offsets.iter().all(|(_, r)| r.is_ok()) {
                ends = Some(
                    offsets
                        .into_iter()
                        .map(|(tp, r)| (tp.partition, r.map(|(_, end)| end).unwrap_or(0)))
                        .collect::<Vec<_>>(),
                );
                break;
            }
        }
        sleep_ms(100).await;
    }
    let Some(ends) = ends else {
        return gave_up(vec![]);
    };
    shared.event(format!("final read: high watermarks {ends:?}"));
    let mut consumer = None;
    while consumer.is_none() && shared.now_ms() < deadline {
        consumer = new_consumer(
            consumer_config(client.clone(), "final-reader".to_string()),
            &shared,
            "final-reader",
        )
        .await;
        if consumer.is_none() {
            sleep_ms(100).await;
        }
    }
    let Some(mut consumer) = consumer else {
        return gave_up(vec![]);
    };
    let mut records: Vec<(i32, PartitionRecords)> =
        (0..PARTITIONS).map(|p| (p, Vec::new())).collect();
    // Per partition, where a seek past a corrupt batch left the reader: when the damage runs
    // up to the high watermark no record after it will arrive to say the read is done.
    let mut skipped_to: Vec<i64> = vec![0; PARTITIONS as usize];
    let done = |records: &Vec<(i32, PartitionRecords)>, skipped_to: &[i64]| {
        ends.iter().all(|(p, end)| {
            let read_to = records[*p as usize]
                .1
                .last()
                .map_or(0, |(offset, _)| offset + 1);
            read_to.max(skipped_to[*p as usize]) >= *end
        })
    };
    while !done(&records, &skipped_to) {
        if shared.now_ms() >= deadline {
            return gave_up(records);
        }
        match consumer.poll(Duration::from_millis(200)).await {
            Ok(batch) => {
                for record in batch {
                    let end = ends
                        .iter()
                        .find(|(p, _)| *p == record.partition)
                        .map_or(0, |(_, e)| *e);
                    if record.offset < end {
                        records[record.partition as usize].1.push((
                            record.offset,
                            record.value.as_deref().and_then(Value::decode),
                        ));
                    }
                }
            }
            Err(ClientError::CorruptRecord {
                topic,
                partition,
                offset,
                reason,
            }) => {
                // Corrupted storage with one replica: that batch cannot be served (Kafka's
                // consumer raises CorruptRecordException the same way). Step past it one
                // offset at a time, as an application seeking beyond a corrupt record would;
                // the checkers excuse the hole only after a corruption or wipe.
                shared.event(format!(
                    "final read: corrupt batch in {topic}-{partition} at offset {offset} \
                     ({reason}): seeking past it"
                ));
                let tp = TopicPartition::new(topic, partition);
                match consumer.seek(&tp, offset + 1) {
                    Ok(()) => {
                        if let Some(skipped) = skipped_to.get_mut(partition as usize) {
                            *skipped = (*skipped).max(offset + 1);
                        }
                    }
                    Err(e) => {
                        shared.event(format!("final read: seek failed: {e}"));
                        sleep_ms(100).await;
                    }
                }
            }
            Err(e) => {
                shared.event(format!("final read: poll failed: {e}"));
                sleep_ms(100).await;
            }
        }
    }
    let complete_ms = shared.now_ms();
    shared.event(format!(
        "final read: {:?} records per partition",
        records.iter().map(|(_, r)| r.len()).collect::<Vec<_>>()
    ));
    FinalRead {
        invoke_ms,
        complete_ms: Some(complete_ms),
        partitions: records,
    }
}
