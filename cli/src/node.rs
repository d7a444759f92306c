//! `cohort node run`: a long-running node, logging through `tracing` (RUST_LOG).

use std::path::PathBuf;

use anyhow::Context;
use cohort_io_mio::node::{AdminLimits, Node};
use cohort_io_mio::node_config::NodeConfig;

#[derive(Debug, clap::Subcommand)]
pub enum NodeCommand {
    /// Run a node until SIGINT or SIGTERM.
    Run {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

pub fn run(command: &NodeCommand) -> anyhow::Result<()> {
    let NodeCommand::Run { config } = command;
    let config = NodeConfig::load(config)?;
    let limits = AdminLimits::from_config(&config);
    let mut node = Node::start(config, limits).context("the node could not start")?;
    node.run().context("the node stopped on an error")
}
