//! The `karst` binary: the node and the command-line tools.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "karst", version, about = "Kafka-compatible event log")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (by default a single node on 127.0.0.1:9092 with data under ./karst-data).
    Node(karst::cli::node::NodeArgs),
    /// Create, list, describe, delete and alter topics.
    Topics(karst::cli::topics::TopicsArgs),
    /// Console producer: one record per line of stdin.
    Produce(karst::cli::produce::ProduceArgs),
    /// Console consumer: print records of a topic.
    Consume(karst::cli::consume::ConsumeArgs),
    /// Producer and consumer throughput/latency tests.
    Perf(karst::cli::perf::PerfArgs),
    /// List, describe and delete consumer groups; reset their offsets.
    Groups(karst::cli::groups::GroupsArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Node(args) => karst::cli::node::run(args),
        Command::Topics(args) => karst::cli::topics::run(args),
        Command::Produce(args) => karst::cli::produce::run(args),
        Command::Consume(args) => karst::cli::consume::run(args),
        Command::Perf(args) => karst::cli::perf::run(args),
        Command::Groups(args) => karst::cli::groups::run(args),
    }
}
