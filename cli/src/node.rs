//! `cohort node run`: a long-running node, logging through `tracing` (RUST_LOG). Every role the
//! configuration names (member; gateway and exec daemons; policy server and agents) runs in one
//! core node, driven by one event loop on the main thread, which SIGINT or SIGTERM stops.

use std::path::PathBuf;

use anyhow::Context;
use cohort_io_mio::node_config::NodeConfig;
use cohort_io_mio::reactor::Reactor;
use cohort_io_mio::roles;

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
    let mut reactor = Reactor::new().context("the event loop could not start")?;
    reactor.stop_on_signals().context("could not watch for SIGINT and SIGTERM")?;
    reactor.host(|slot| roles::start(&config, slot)).context("the node could not start")?;
    reactor.run().context("the node stopped on an error")
}
