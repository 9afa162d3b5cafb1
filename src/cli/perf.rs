//! `karst perf produce|consume`: throughput and latency tests in the manner of Kafka's
//! kafka-producer-perf-test and kafka-consumer-perf-test, with the same output lines: a
//! progress line every `--reporting-interval-ms`, then a summary with records/s, MB/s and
//! (produce) send-to-acknowledgement latency percentiles.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Subcommand};
use tokio::time::Instant;

use super::topics::{explain, runtime, BootstrapArgs};
use crate::client::{
    Acks, Compression, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig,
    ProducerRecord, XorShift,
};

/// Arguments of `karst perf`.
#[derive(Debug, Args)]
pub struct PerfArgs {
    #[command(subcommand)]
    pub command: PerfCommand,
}

#[derive(Debug, Subcommand)]
pub enum PerfCommand {
    /// Produce records as fast as allowed and report throughput and latency.
    Produce(ProducePerfArgs),
    /// Consume records from the beginning and report throughput.
    Consume(ConsumePerfArgs),
}

#[derive(Debug, Args)]
pub struct ProducePerfArgs {
    #[command(flatten)]
    pub bootstrap: BootstrapArgs,
    #[arg(long)]
    pub topic: String,
    /// Records to send.
    #[arg(long = "num-records")]
    pub num_records: u64,
    /// Value size in bytes.
    #[arg(long = "record-size", default_value_t = 1024)]
    pub record_size: usize,
    /// Cap in records/s; -1 for none.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub throughput: i64,
    /// acks: 0, 1 or all.
    #[arg(long, default_value = "1")]
    pub acks: String,
    #[arg(long = "linger-ms", default_value_t = 5)]
    pub linger_ms: u64,
    #[arg(long = "batch-size", default_value_t = 16384)]
    pub batch_size: usize,
    /// buffer.memory in bytes.
    #[arg(long = "buffer-memory", default_value_t = 32 * 1024 * 1024)]
    pub buffer_memory: usize,
    /// compression.type: none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// Turn idempotence off (on by default with acks=all when the broker supports it).
    #[arg(long = "no-idempotence")]
    pub no_idempotence: bool,
    /// Async runtime worker threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    #[arg(long = "reporting-interval-ms", default_value_t = 5000)]
    pub reporting_interval_ms: u64,
}

#[derive(Debug, Args)]
pub struct ConsumePerfArgs {
    #[command(flatten)]
    pub bootstrap: BootstrapArgs,
    #[arg(long)]
    pub topic: String,
    /// Records to consume.
    #[arg(long)]
    pub messages: u64,
    /// Give up when no record arrived for this long.
    #[arg(long = "timeout-ms", default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// max.partition.fetch.bytes.
    #[arg(long = "max-partition-fetch-bytes", default_value_t = 1024 * 1024)]
    pub max_partition_fetch_bytes: i32,
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    #[arg(long = "reporting-interval-ms", default_value_t = 5000)]
    pub reporting_interval_ms: u64,
}

pub fn run(args: PerfArgs) -> anyhow::Result<()> {
    let threads = match &args.command {
        PerfCommand::Produce(a) => a.threads,
        PerfCommand::Consume(a) => a.threads,
    };
    let rt = if threads <= 1 {
        runtime()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    rt.block_on(async move {
        match args.command {
            PerfCommand::Produce(a) => produce(a).await,
            PerfCommand::Consume(a) => consume(a).await,
        }
    })
}

#[derive(Default)]
struct Window {
    count: u64,
    bytes: u64,
    latency_sum_ms: f64,
    latency_max_ms: f64,
}

#[derive(Default)]
struct Stats {
    latencies_us: Vec<u32>,
    window: Window,
    total_latency_max_ms: f64,
    acked: u64,
    errors: u64,
    first_error: Option<String>,
}

/// Latency percentile from sorted microseconds, in ms.
fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    f64::from(sorted_us[rank - 1]) / 1000.0
}

async fn produce(args: ProducePerfArgs) -> anyhow::Result<()> {
    let acks: Acks = args.acks.parse()?;
    let compression: Compression = args.compression.parse()?;
    let config = ProducerConfig {
        client: args.bootstrap.client_config(),
        acks,
        compression,
        linger_ms: args.linger_ms,
        batch_size: args.batch_size,
        buffer_memory: args.buffer_memory,
        enable_idempotence: if args.no_idempotence {
            Some(false)
        } else {
            None
        },
        ..ProducerConfig::default()
    };
    let producer = Producer::new(config)
        .await
        .map_err(|e| explain(e, &args.bootstrap.bootstrap_server))?;
    // A fixed payload of random uppercase letters, as kafka-producer-perf-test sends.
    let mut rng = XorShift::new(42);
    let payload: Bytes = (0..args.record_size)
        .map(|_| b'A' + rng.below(26) as u8)
        .collect::<Vec<u8>>()
        .into();
    let stats = Arc::new(Mutex::new(Stats {
        latencies_us: Vec::with_capacity(args.num_records.min(50_000_000) as usize),
        ..Stats::default()
    }));
    let start = Instant::now();
    let reporter = spawn_reporter(stats.clone(), args.reporting_interval_ms);
    let record_size = args.record_size as u64;
    for i in 0..args.num_records {
        if args.throughput > 0 {
            let due = start + Duration::from_secs_f64(i as f64 / args.throughput as f64);
            if due > Instant::now() {
                tokio::time::sleep_until(due).await;
            }
        }
        let sent_at = Instant::now();
        let stats_cb = stats.clone();
        let record = ProducerRecord {
            topic: args.topic.clone(),
            value: Some(payload.clone()),
            ..ProducerRecord::default()
        };
        producer
            .send_with_callback(
                record,
                Box::new(move |result| {
                    let latency = sent_at.elapsed();
                    let mut s = stats_cb.lock().unwrap();
                    match result {
                        Ok(_) => {
                            let ms = latency.as_secs_f64() * 1000.0;
                            s.latencies_us
                                .push(latency.as_micros().min(u32::MAX as u128) as u32);
                            s.acked += 1;
                            s.window.count += 1;
                            s.window.bytes += record_size;
                            s.window.latency_sum_ms += ms;
                            s.window.latency_max_ms = s.window.latency_max_ms.max(ms);
                            s.total_latency_max_ms = s.total_latency_max_ms.max(ms);
                        }
                        Err(e) => {
                            s.errors += 1;
                            if s.first_error.is_none() {
                                s.first_error = Some(e.to_string());
                            }
                        }
                    }
                }),
            )
            .await?;
    }
    producer.flush().await;
    let elapsed = start.elapsed().as_secs_f64();
    reporter.abort();
    producer.close().await;
    let mut s = stats.lock().unwrap();
    let n = s.acked;
    let lat_sum_ms: f64 = s.latencies_us.iter().map(|&u| f64::from(u) / 1000.0).sum();
    s.latencies_us.sort_unstable();
    let sorted = &s.latencies_us;
    println!(
        "{n} records sent, {:.1} records/sec ({:.2} MB/sec), {:.2} ms avg latency, {:.2} ms max latency, {:.0} ms 50th, {:.0} ms 95th, {:.0} ms 99th, {:.0} ms 99.9th.",
        n as f64 / elapsed,
        n as f64 * record_size as f64 / elapsed / (1024.0 * 1024.0),
        if n > 0 { lat_sum_ms / n as f64 } else { 0.0 },
        s.total_latency_max_ms,
        percentile_ms(sorted, 0.50),
        percentile_ms(sorted, 0.95),
        percentile_ms(sorted, 0.99),
        percentile_ms(sorted, 0.999),
    );
    println!(
        "latency ms: p50 {:.3}, p99 {:.3}, p99.9 {:.3}",
        percentile_ms(sorted, 0.50),
        percentile_ms(sorted, 0.99),
        percentile_ms(sorted, 0.999)
    );
    if s.errors > 0 {
        anyhow::bail!(
            "{} records failed; first error: {}",
            s.errors,
            s.first_error.clone().unwrap_or_default()
        );
    }
    Ok(())
}

fn spawn_reporter(stats: Arc<Mutex<Stats>>, interval_ms: u64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let interval = Duration::from_millis(interval_ms.max(100));
        let mut last = Instant::now();
        loop {
            tokio::time::sleep(interval).await;
            let w = std::mem::take(&mut stats.lock().unwrap().window);
            let secs = last.elapsed().as_secs_f64();
            last = Instant::now();
            eprintln!(
                "{} records sent, {:.1} records/sec ({:.2} MB/sec), {:.1} ms avg latency, {:.1} ms max latency.",
                w.count,
                w.count as f64 / secs,
                w.bytes as f64 / secs / (1024.0 * 1024.0),
                if w.count > 0 { w.latency_sum_ms / w.count as f64 } else { 0.0 },
                w.latency_max_ms
            );
        }
    })
}

async fn consume(args: ConsumePerfArgs) -> anyhow::Result<()> {
    let config = ConsumerConfig {
        client: crate::client::ClientConfig {
            allow_auto_topic_creation: false,
            ..args.bootstrap.client_config()
        },
        auto_offset_reset: OffsetReset::Earliest,
        max_partition_fetch_bytes: args.max_partition_fetch_bytes,
        max_poll_records: 10_000,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(config)
        .await
        .map_err(|e| explain(e, &args.bootstrap.bootstrap_server))?;
    consumer.assign_topic(&args.topic).await?;
    let start = Instant::now();
    let (mut count, mut bytes) = (0u64, 0u64);
    let (mut window_count, mut window_bytes) = (0u64, 0u64);
    let mut last_report = Instant::now();
    let mut last_record = Instant::now();
    let interval = Duration::from_millis(args.reporting_interval_ms.max(100));
    while count < args.messages {
        let records = consumer.poll(Duration::from_millis(200)).await?;
        if records.is_empty() {
            if last_record.elapsed() >= Duration::from_millis(args.timeout_ms) {
                eprintln!("no record for {} ms: stopping", args.timeout_ms);
                break;
            }
        } else {
            last_record = Instant::now();
        }
        for r in &records {
            let size =
                r.value.as_ref().map_or(0, Bytes::len) + r.key.as_ref().map_or(0, Bytes::len);
            bytes += size as u64;
            window_bytes += size as u64;
        }
        count += records.len() as u64;
        window_count += records.len() as u64;
        if last_report.elapsed() >= interval {
            let secs = last_report.elapsed().as_secs_f64();
            eprintln!(
                "{window_count} records consumed, {:.1} records/sec ({:.2} MB/sec).",
                window_count as f64 / secs,
                window_bytes as f64 / secs / (1024.0 * 1024.0)
            );
            (window_count, window_bytes) = (0, 0);
            last_report = Instant::now();
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mb = bytes as f64 / (1024.0 * 1024.0);
    println!("data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec");
    println!(
        "{mb:.4}, {:.4}, {count}, {:.1}",
        mb / elapsed,
        count as f64 / elapsed
    );
    if count < args.messages {
        anyhow::bail!("consumed {count} of {} records", args.messages);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let us: Vec<u32> = (1..=1000).map(|i| i * 1000).collect();
        assert_eq!(percentile_ms(&us, 0.5), 500.0);
        assert_eq!(percentile_ms(&us, 0.99), 990.0);
        assert_eq!(percentile_ms(&us, 0.999), 999.0);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
    }
}
