//! `karst topics`: create, list, describe, delete and alter topics (like kafka-topics.sh).

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::client::{Admin, ClientConfig, ClientError, NewTopic, TopicPartition};

/// `--bootstrap-server`, shared by the client commands.
#[derive(Debug, Clone, Args)]
pub struct BootstrapArgs {
    /// Comma-separated host:port of brokers to bootstrap from.
    #[arg(
        long = "bootstrap-server",
        env = "KARST_BOOTSTRAP_SERVER",
        default_value = "127.0.0.1:9092"
    )]
    pub bootstrap_server: String,
    /// Client id sent in request headers.
    #[arg(long = "client-id", default_value = "karst-cli")]
    pub client_id: String,
}

impl BootstrapArgs {
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig {
            client_id: self.client_id.clone(),
            ..ClientConfig::new(&self.bootstrap_server)
        }
    }
}

/// A runtime for one CLI command (the CLI is not simulated).
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Turns a connection failure into a message that says what to check.
pub(crate) fn explain(error: ClientError, bootstrap: &str) -> anyhow::Error {
    match error {
        ClientError::Connect { .. } => anyhow::anyhow!(
            "cannot connect to the cluster at {bootstrap}: {error}\n\
             (is a node running there? set --bootstrap-server HOST:PORT)"
        ),
        other => anyhow::Error::new(other),
    }
}

/// Parses `key=value`.
pub(crate) fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}

/// Arguments of `karst topics`.
#[derive(Debug, Args)]
pub struct TopicsArgs {
    #[command(flatten)]
    pub bootstrap: BootstrapArgs,
    #[command(subcommand)]
    pub command: TopicsCommand,
}

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create a topic.
    Create {
        topic: String,
        /// Partition count (-1: the broker's num.partitions).
        #[arg(long, default_value_t = -1)]
        partitions: i32,
        /// Replication factor (-1: the broker's default.replication.factor).
        #[arg(long = "replication-factor", default_value_t = -1)]
        replication_factor: i16,
        /// A topic config, e.g. retention.ms=60000 (repeatable).
        #[arg(long = "config", value_parser = key_value)]
        configs: Vec<(String, String)>,
        /// Succeed if the topic already exists.
        #[arg(long = "if-not-exists")]
        if_not_exists: bool,
    },
    /// List topic names.
    List {
        #[arg(long = "include-internal")]
        include_internal: bool,
    },
    /// Show partitions (leader, replicas, ISR, offsets) and configs of topics (all if none given).
    Describe { topics: Vec<String> },
    /// Delete topics.
    Delete {
        #[arg(required = true)]
        topics: Vec<String>,
    },
    /// Add partitions and/or change configs.
    Alter {
        topic: String,
        /// New total partition count (must be larger).
        #[arg(long)]
        partitions: Option<i32>,
        /// Set a config, e.g. retention.ms=1000 (repeatable).
        #[arg(long = "add-config", value_parser = key_value)]
        add_configs: Vec<(String, String)>,
        /// Reset a config to its default (repeatable).
        #[arg(long = "delete-config")]
        delete_configs: Vec<String>,
    },
}

pub fn run(args: TopicsArgs) -> anyhow::Result<()> {
    runtime()?.block_on(run_async(args))
}

async fn run_async(args: TopicsArgs) -> anyhow::Result<()> {
    let bootstrap = args.bootstrap.bootstrap_server.clone();
    let admin = Admin::new(args.bootstrap.client_config())
        .await
        .map_err(|e| explain(e, &bootstrap))?;
    match args.command {
        TopicsCommand::Create {
            topic,
            partitions,
            replication_factor,
            configs,
            if_not_exists,
        } => {
            let new = NewTopic {
                name: topic.clone(),
                partitions,
                replication_factor,
                configs,
            };
            let results = admin.create_topics(&[new], false).await?;
            for (name, result) in results {
                match result {
                    Ok(()) => println!("Created topic {name}."),
                    // TOPIC_ALREADY_EXISTS
                    Err(e) if if_not_exists && e.code() == Some(36) => {
                        println!("Topic {name} already exists.")
                    }
                    Err(e) => anyhow::bail!("cannot create topic {name}: {e}"),
                }
            }
        }
        TopicsCommand::List { include_internal } => {
            for name in admin.list_topics(include_internal).await? {
                println!("{name}");
            }
        }
        TopicsCommand::Describe { topics } => {
            let described = admin.describe_topics(&topics).await?;
            let mut failed = false;
            for (name, result) in described {
                let description = match result {
                    Ok(d) => d,
                    Err(e) => {
                        eprintln!("Topic {name}: {e}");
                        failed = true;
                        continue;
                    }
                };
                let rf = description
                    .partitions
                    .first()
                    .map_or(0, |p| p.replicas.len());
                let configs = match admin.describe_topic_configs(&name).await {
                    // Only configs set on the topic itself (source 1), like kafka-topics.sh.
                    Ok(entries) => entries
                        .iter()
                        .filter(|c| c.source == 1)
                        .map(|c| format!("{}={}", c.name, c.value.as_deref().unwrap_or("")))
                        .collect::<Vec<_>>()
                        .join(","),
                    Err(e) => format!("(unavailable: {e})"),
                };
                println!(
                    "Topic: {name}\tTopicId: {}\tPartitionCount: {}\tReplicationFactor: {rf}\tConfigs: {configs}",
                    description.topic_id,
                    description.partitions.len()
                );
                let tps: Vec<TopicPartition> = description
                    .partitions
                    .iter()
                    .map(|p| TopicPartition::new(name.as_str(), p.partition))
                    .collect();
                let offsets = admin.partition_offsets(&tps).await;
                for (p, (_, off)) in description.partitions.iter().zip(offsets) {
                    let offsets = match off {
                        Ok((start, end)) => format!("StartOffset: {start}\tEndOffset: {end}"),
                        Err(e) => format!("Offsets: ({e})"),
                    };
                    println!(
                        "\tTopic: {name}\tPartition: {}\tLeader: {}\tLeaderEpoch: {}\tReplicas: {}\tIsr: {}\t{offsets}",
                        p.partition,
                        if p.leader >= 0 { p.leader.to_string() } else { "none".to_string() },
                        p.leader_epoch,
                        join(&p.replicas),
                        join(&p.isr),
                    );
                }
            }
            if failed {
                anyhow::bail!("some topics could not be described");
            }
        }
        TopicsCommand::Delete { topics } => {
            let mut failed = false;
            for (name, result) in admin.delete_topics(&topics).await? {
                match result {
                    Ok(()) => println!("Deleted topic {name}."),
                    Err(e) => {
                        eprintln!("cannot delete topic {name}: {e}");
                        failed = true;
                    }
                }
            }
            if failed {
                anyhow::bail!("some topics were not deleted");
            }
        }
        TopicsCommand::Alter {
            topic,
            partitions,
            add_configs,
            delete_configs,
        } => {
            if partitions.is_none() && add_configs.is_empty() && delete_configs.is_empty() {
                anyhow::bail!(
                    "nothing to alter: give --partitions, --add-config or --delete-config"
                );
            }
            if let Some(count) = partitions {
                admin
                    .create_partitions(&topic, count)
                    .await
                    .with_context(|| format!("cannot grow {topic} to {count} partitions"))?;
                println!("Topic {topic} now has {count} partitions.");
            }
            if !add_configs.is_empty() || !delete_configs.is_empty() {
                admin
                    .alter_topic_configs(&topic, &add_configs, &delete_configs)
                    .await
                    .with_context(|| format!("cannot alter configs of {topic}"))?;
                println!("Updated configs of topic {topic}.");
            }
        }
    }
    Ok(())
}

fn join(ids: &[i32]) -> String {
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}
