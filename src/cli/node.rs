//! `karst node`: run one node (see NODE_CONTRACT.md).
//!
//! Settings are applied in this order, later ones winning: defaults, `--config FILE` (TOML with
//! Kafka's names), `--set key=value`, then the dedicated flags.

use std::path::PathBuf;

use crate::config::NodeConfig;

/// Arguments of `karst node`.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// TOML file of settings with Kafka's names as keys, e.g. `"log.retention.ms" = 1000`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// node.id
    #[arg(long, value_name = "N")]
    pub node_id: Option<i32>,
    /// listeners: HOST:PORT to bind (a PLAINTEXT:// prefix is accepted; port 0 = ephemeral).
    #[arg(long, value_name = "HOST:PORT")]
    pub listeners: Option<String>,
    /// advertised.listeners: HOST:PORT given to clients (default: the bound address).
    #[arg(long, value_name = "HOST:PORT")]
    pub advertised_listeners: Option<String>,
    /// log.dirs: the data directory.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Any setting by its Kafka name, e.g. `--set num.partitions=6` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// Builds the node configuration from the arguments.
pub fn node_config(args: &NodeArgs) -> anyhow::Result<NodeConfig> {
    let mut config = NodeConfig::default();
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path)
            .map_err(|err| anyhow::anyhow!("reading {}: {err}", path.display()))?;
        config
            .apply_toml(&text)
            .map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?;
    }
    for pair in &args.set {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--set expects KEY=VALUE, got {pair:?}"))?;
        config.set(key.trim(), value)?;
    }
    if let Some(node_id) = args.node_id {
        config.set("node.id", &node_id.to_string())?;
    }
    if let Some(listeners) = &args.listeners {
        config.set("listeners", listeners)?;
    }
    if let Some(advertised) = &args.advertised_listeners {
        config.set("advertised.listeners", advertised)?;
    }
    if let Some(dir) = &args.data_dir {
        config.log_dirs = dir.clone();
    }
    Ok(config)
}

pub fn run(args: NodeArgs) -> anyhow::Result<()> {
    let config = node_config(&args)?;
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: logs redirected to a file stay plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    serve(config)
}

#[cfg(not(madsim))]
fn serve(config: NodeConfig) -> anyhow::Result<()> {
    use std::io::Write;
    use std::sync::Arc;
    let storage: Arc<dyn crate::storage::Storage> = Arc::new(
        crate::storage::FileStorage::new(&config.log_dirs).map_err(|err| {
            anyhow::anyhow!(
                "opening data directory {}: {err}",
                config.log_dirs.display()
            )
        })?,
    );
    let runtime = match config.num_network_threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        threads => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if threads > 1 {
                builder.worker_threads(threads);
            }
            builder.enable_all().thread_name("karst").build()?
        }
    };
    let result = runtime.block_on(async move {
        // Handlers first: a SIGTERM sent as soon as "listening on" appears must shut down
        // cleanly, not kill the process with the default action.
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut node = crate::runtime::start(config, storage).await?;
        {
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "listening on {}", node.local_addr())?;
            stdout.flush()?;
        }
        tokio::select! {
            biased;
            _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = interrupt.recv() => tracing::info!("SIGINT: shutting down"),
            result = node.stopped() => return result,
        }
        node.shutdown().await?;
        tracing::info!("clean shutdown complete");
        Ok(())
    });
    // The node is closed (logs synced, markers written); leftover connection tasks need not be
    // waited for.
    runtime.shutdown_background();
    result
}

#[cfg(madsim)]
fn serve(_config: NodeConfig) -> anyhow::Result<()> {
    anyhow::bail!("`karst node` runs on real tokio; the simulator starts nodes with runtime::start")
}
