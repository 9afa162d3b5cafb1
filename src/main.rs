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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Node(args) => karst::cli::node::run(args),
    }
}
