//! `karst produce`: the console producer. One record per line of stdin (like
//! kafka-console-producer.sh); with `--key-separator` each line is `key<sep>value`.
//! Exits non-zero if any record failed, after reporting how many.

use std::collections::VecDeque;
use std::io::BufRead;

use bytes::Bytes;
use clap::Args;

use super::topics::{explain, key_value, runtime, BootstrapArgs};
use crate::client::{
    Acks, Compression, DeliveryFuture, Header, Producer, ProducerConfig, ProducerRecord,
};

/// Delivery reports awaited in order once this many are outstanding (bounds memory).
const MAX_OUTSTANDING_REPORTS: usize = 100_000;
/// Lines handed from the stdin reader thread per message, and messages queued.
const LINES_PER_CHUNK: usize = 1024;
const CHUNKS_QUEUED: usize = 16;

/// Arguments of `karst produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub bootstrap: BootstrapArgs,
    /// Topic to write to.
    #[arg(long)]
    pub topic: String,
    /// Split each line at the first occurrence of this into key and value.
    #[arg(long = "key-separator")]
    pub key_separator: Option<String>,
    /// A header added to every record, key=value (repeatable).
    #[arg(long = "header", value_parser = key_value)]
    pub headers: Vec<(String, String)>,
    /// Write every record to this partition instead of using the partitioner.
    #[arg(long)]
    pub partition: Option<i32>,
    /// acks: 0, 1 or all.
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// compression.type: none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// linger.ms.
    #[arg(long = "linger-ms", default_value_t = 5)]
    pub linger_ms: u64,
    /// batch.size in bytes.
    #[arg(long = "batch-size", default_value_t = 16384)]
    pub batch_size: usize,
    /// Disable idempotence (on by default with acks=all when the broker supports it).
    #[arg(long = "no-idempotence")]
    pub no_idempotence: bool,
}

pub fn run(args: ProduceArgs) -> anyhow::Result<()> {
    runtime()?.block_on(run_async(args))
}

async fn run_async(args: ProduceArgs) -> anyhow::Result<()> {
    let acks: Acks = args.acks.parse()?;
    let compression: Compression = args.compression.parse()?;
    let config = ProducerConfig {
        client: args.bootstrap.client_config(),
        acks,
        compression,
        linger_ms: args.linger_ms,
        batch_size: args.batch_size,
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
    let headers: Vec<Header> = args
        .headers
        .iter()
        .map(|(k, v)| Header::new(k.clone(), v.clone().into_bytes()))
        .collect();
    // stdin is read on its own thread so a slow terminal never stalls the sender task.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<String>>(CHUNKS_QUEUED);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut chunk = Vec::with_capacity(LINES_PER_CHUNK);
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            chunk.push(line);
            if chunk.len() >= LINES_PER_CHUNK
                && tx.blocking_send(std::mem::take(&mut chunk)).is_err()
            {
                return;
            }
        }
        if !chunk.is_empty() {
            let _ = tx.blocking_send(chunk);
        }
    });
    let mut outstanding: VecDeque<DeliveryFuture> = VecDeque::new();
    let (mut sent, mut failed) = (0u64, 0u64);
    let mut first_error: Option<String> = None;
    let mut note = |result: crate::client::Result<_>, failed: &mut u64| {
        if let Err(e) = result {
            *failed += 1;
            if first_error.is_none() {
                first_error = Some(e.to_string());
            }
        }
    };
    loop {
        // While waiting for input, push out what is buffered (interactive use).
        let chunk = match rx.try_recv() {
            Ok(chunk) => chunk,
            Err(tokio::sync::mpsc::error::TryRecvError::Empty) => match rx.recv().await {
                Some(chunk) => chunk,
                None => break,
            },
            Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => break,
        };
        for line in chunk {
            let (key, value) = match &args.key_separator {
                Some(sep) => match line.split_once(sep.as_str()) {
                    Some((k, v)) => (Some(Bytes::from(k.to_string())), v.to_string()),
                    None => (None, line),
                },
                None => (None, line),
            };
            let record = ProducerRecord {
                topic: args.topic.clone(),
                partition: args.partition,
                key,
                value: Some(Bytes::from(value)),
                headers: headers.clone(),
                timestamp: None,
            };
            outstanding.push_back(producer.send(record).await?);
            sent += 1;
            while outstanding.len() > MAX_OUTSTANDING_REPORTS {
                let report = outstanding.pop_front().expect("non-empty").await;
                note(report, &mut failed);
            }
        }
    }
    producer.flush().await;
    for report in outstanding {
        note(report.await, &mut failed);
    }
    producer.close().await;
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {sent} records failed; first error: {}",
            first_error.unwrap_or_default()
        );
    }
    Ok(())
}
