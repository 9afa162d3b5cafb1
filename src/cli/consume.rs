//! `karst consume`: the console consumer (like kafka-console-consumer.sh). Reads every
//! partition of a topic (or one), from the end by default, from the beginning, an offset or
//! a timestamp; prints one record per line, optionally with timestamp, partition, offset,
//! headers and key, in Kafka's DefaultMessageFormatter layout. With `--group G` it joins the
//! consumer group G instead (subscribe), starts at the group's committed offsets (else the end,
//! or the beginning with `--from-beginning`), and commits what it printed: every
//! `auto.commit.interval.ms`, before a rebalance and on exit. It never takes more records from
//! the consumer than `--max-messages` still allows, so it never commits an unprinted record.

use std::io::Write;
use std::time::Duration;

use clap::Args;

use super::topics::{explain, runtime, BootstrapArgs};
use crate::client::{Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, TopicPartition};

/// Longest single wait inside `poll`, so `--timeout-ms` and output flushing stay responsive.
const POLL_SLICE_MS: u64 = 200;
/// Kafka's default `max.poll.records`.
const MAX_POLL_RECORDS: u64 = 500;

/// Arguments of `karst consume`.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub bootstrap: BootstrapArgs,
    /// Topic to read.
    #[arg(long)]
    pub topic: String,
    /// Read only this partition.
    #[arg(long)]
    pub partition: Option<i32>,
    /// Start at the earliest offset instead of the end.
    #[arg(long = "from-beginning")]
    pub from_beginning: bool,
    /// Start offset: a number, `earliest` or `latest` (for every partition read).
    #[arg(long, conflicts_with_all = ["from_beginning", "timestamp"])]
    pub offset: Option<String>,
    /// Start at the first record with timestamp >= this (ms since the epoch).
    #[arg(long, conflicts_with = "from_beginning")]
    pub timestamp: Option<i64>,
    /// Exit after this many records.
    #[arg(long = "max-messages")]
    pub max_messages: Option<u64>,
    /// Exit when no record arrived for this long.
    #[arg(long = "timeout-ms")]
    pub timeout_ms: Option<u64>,
    /// Join this consumer group (subscribe) and commit what was printed.
    #[arg(long, conflicts_with_all = ["partition", "offset", "timestamp"])]
    pub group: Option<String>,
    #[arg(long = "print-key")]
    pub print_key: bool,
    #[arg(long = "print-headers")]
    pub print_headers: bool,
    #[arg(long = "print-timestamp")]
    pub print_timestamp: bool,
    #[arg(long = "print-offset")]
    pub print_offset: bool,
    #[arg(long = "print-partition")]
    pub print_partition: bool,
    /// Separator after the key (and between printed fields).
    #[arg(long = "key-separator", default_value = "\t")]
    pub key_separator: String,
}

pub fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    runtime()?.block_on(run_async(args))
}

async fn run_async(args: ConsumeArgs) -> anyhow::Result<()> {
    let config = ConsumerConfig {
        group_id: args.group.clone(),
        client: crate::client::ClientConfig {
            allow_auto_topic_creation: false,
            ..args.bootstrap.client_config()
        },
        auto_offset_reset: if args.from_beginning {
            OffsetReset::Earliest
        } else {
            OffsetReset::Latest
        },
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(config)
        .await
        .map_err(|e| explain(e, &args.bootstrap.bootstrap_server))?;
    let partitions = match args.partition {
        _ if args.group.is_some() => {
            consumer.subscribe(vec![args.topic.clone()]).await?;
            Vec::new()
        }
        Some(p) => {
            let tp = TopicPartition::new(args.topic.as_str(), p);
            consumer.assign(vec![tp.clone()]);
            vec![tp]
        }
        None => consumer.assign_topic(&args.topic).await?,
    };
    for tp in &partitions {
        match (&args.offset, args.timestamp) {
            (Some(o), _) if o == "earliest" => consumer.seek_to_beginning(tp)?,
            (Some(o), _) if o == "latest" => consumer.seek_to_end(tp)?,
            (Some(o), _) => {
                let offset: i64 = o.parse().map_err(|_| {
                    anyhow::anyhow!("--offset must be a number, earliest or latest")
                })?;
                consumer.seek(tp, offset)?;
            }
            (None, Some(ts)) => consumer.seek_to_timestamp(tp, ts)?,
            (None, None) => {}
        }
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut count = 0u64;
    let idle_limit = args.timeout_ms.map(Duration::from_millis);
    let mut idle_since = tokio::time::Instant::now();
    'outer: loop {
        if args.max_messages.is_some_and(|max| count >= max) {
            break;
        }
        if let Some(max) = args.max_messages {
            consumer.set_max_poll_records((max - count).min(MAX_POLL_RECORDS) as usize);
        }
        let records = consumer.poll(Duration::from_millis(POLL_SLICE_MS)).await?;
        if records.is_empty() {
            out.flush()?;
            if idle_limit.is_some_and(|limit| idle_since.elapsed() >= limit) {
                break;
            }
            continue;
        }
        idle_since = tokio::time::Instant::now();
        for record in &records {
            write_record(&mut out, &args, record)?;
            count += 1;
            if args.max_messages.is_some_and(|max| count >= max) {
                break 'outer;
            }
        }
    }
    out.flush()?;
    // With a group: commit what was printed and leave the group.
    consumer.close().await?;
    eprintln!("Processed a total of {count} messages");
    Ok(())
}

fn write_record(
    out: &mut impl Write,
    args: &ConsumeArgs,
    r: &ConsumerRecord,
) -> std::io::Result<()> {
    let sep = args.key_separator.as_bytes();
    if args.print_timestamp {
        let kind = if r.log_append_time {
            "LogAppendTime"
        } else {
            "CreateTime"
        };
        write!(out, "{kind}:{}", r.timestamp)?;
        out.write_all(sep)?;
    }
    if args.print_partition {
        write!(out, "Partition:{}", r.partition)?;
        out.write_all(sep)?;
    }
    if args.print_offset {
        write!(out, "Offset:{}", r.offset)?;
        out.write_all(sep)?;
    }
    if args.print_headers {
        if r.headers.is_empty() {
            out.write_all(b"NO_HEADERS")?;
        }
        for (i, h) in r.headers.iter().enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            out.write_all(h.key.as_bytes())?;
            out.write_all(b":")?;
            match &h.value {
                Some(v) => out.write_all(v)?,
                None => out.write_all(b"null")?,
            }
        }
        out.write_all(sep)?;
    }
    if args.print_key {
        match &r.key {
            Some(k) => out.write_all(k)?,
            None => out.write_all(b"null")?,
        }
        out.write_all(sep)?;
    }
    match &r.value {
        Some(v) => out.write_all(v)?,
        None => out.write_all(b"null")?,
    }
    out.write_all(b"\n")
}
