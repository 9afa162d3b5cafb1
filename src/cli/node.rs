//! `karst node`: run one node.

/// Arguments of `karst node`.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {}

pub fn run(_args: NodeArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet implemented")
}
