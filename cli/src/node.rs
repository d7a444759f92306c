//! `cohort node run`: a long-running node, logging through `tracing` (RUST_LOG). Every role the
//! configuration names (member; gateway and exec daemons; policy server and agents) is hosted by
//! one event loop on the main thread, which SIGINT or SIGTERM stops.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use anyhow::Context;
use cohort_io_mio::exec_runtime::ExecRuntime;
use cohort_io_mio::node::{AdminLimits, Node, NodeError};
use cohort_io_mio::node_config::NodeConfig;
use cohort_io_mio::policy_roles;
use cohort_io_mio::reactor::Reactor;

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
    // The member publishes the configuration's `group.NAME` settings; exec resolves node sets.
    let groups = Arc::new(RwLock::new(Default::default()));
    if config.has_role("member") {
        let limits = AdminLimits::from_config(&config);
        let (member_config, groups) = (config.clone(), groups.clone());
        reactor
            .host(|slot| {
                let mut node = Node::start(member_config, limits, slot)?;
                node.share_groups(groups);
                Ok::<_, NodeError>(node)
            })
            .context("the member role could not start")?;
    }
    if config.has_role("gateway") || config.has_role("exec") {
        reactor
            .host(|slot| ExecRuntime::start(&config, groups, slot))
            .context("the exec roles could not start")?;
    }
    if config.has_role("policy") {
        reactor
            .host(|slot| policy_roles::start(&config, slot))
            .context("the policy roles could not start")?;
    }
    reactor.run().context("the node stopped on an error")
}
