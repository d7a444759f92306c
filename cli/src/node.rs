//! `cohort node run`: a long-running node, logging through `tracing` (RUST_LOG). The member role
//! runs on the main thread's event loop; the exec roles (gateway with KDC and audit collector,
//! exec daemons) and the policy roles (server, agents) each on a loop in their own thread. SIGINT or SIGTERM stops both.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use anyhow::{Context, bail};
use cohort_io_mio::exec_runtime::ExecRuntime;
use cohort_io_mio::node::{AdminLimits, Node};
use cohort_io_mio::node_config::NodeConfig;
use cohort_io_mio::policy_runtime::PolicyRuntime;

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
    let groups = Arc::new(RwLock::new(Default::default()));
    let exec = if config.has_role("gateway") || config.has_role("exec") {
        Some(ExecRuntime::start(&config, groups.clone()).context("the exec roles could not start")?)
    } else {
        None
    };
    let exec_handle = exec.as_ref().map(ExecRuntime::handle);
    let exec_thread = exec.map(|mut runtime| std::thread::spawn(move || runtime.run()));
    let policy = if config.has_role("policy") {
        Some(PolicyRuntime::start(&config).context("the policy roles could not start")?)
    } else {
        None
    };
    let policy_handle = policy.as_ref().map(PolicyRuntime::handle);
    let policy_thread = policy.map(|mut runtime| std::thread::spawn(move || runtime.run()));

    let member_result = if config.has_role("member") {
        let limits = AdminLimits::from_config(&config);
        let mut node = Node::start(config, limits).context("the node could not start")?;
        node.share_groups(groups);
        node.run().context("the node stopped on an error")
    } else {
        // No member loop to catch signals: wait for one here.
        let mut signals =
            signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])?;
        if let Some(signal) = signals.forever().next() {
            tracing::info!(signal, "shutting down on signal");
        }
        Ok(())
    };
    for handle in exec_handle.iter().chain(policy_handle.iter()) {
        let _ = handle.shutdown();
    }
    for (what, thread) in [("exec", exec_thread), ("policy", policy_thread)] {
        if let Some(thread) = thread {
            match thread.join() {
                Ok(result) => result.with_context(|| format!("the {what} roles stopped on an error"))?,
                Err(_) => bail!("the {what} roles' thread panicked"),
            }
        }
    }
    member_result
}
