//! `cohort node run`: a long-running node, logging through `tracing` (see `node_log`). Every role
//! the configuration names (member; gateway and exec daemons; policy server and agents) runs in
//! one core node, driven by one event loop on the main thread, which SIGTERM drains and stops.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use cohort_io_mio::node_config::{LogFormat, NodeConfig};
use cohort_io_mio::reactor::{Lifecycle, Reactor};
use cohort_io_mio::roles;
use sd_notify::NotifyState;

use crate::node_log::NodeLog;

#[derive(Debug, clap::Subcommand)]
pub enum NodeCommand {
    /// Run a node: SIGTERM or SIGINT drains it (new work refused, running work finishes within
    /// `drain_timeout_secs`) and stops it; SIGHUP reloads the log settings. Under systemd
    /// (`Type=notify`) it says when it serves.
    Run {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// `text` or `json` (one object per line); default: `[log] format` in the config, else text.
        #[arg(long, value_name = "FORMAT", value_parser = parse_format)]
        log_format: Option<LogFormat>,
    },
}

fn parse_format(text: &str) -> Result<LogFormat, String> {
    match text {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(format!("`{other}` is not a log format: say text or json")),
    }
}

/// Tells systemd (when it started the node with `NOTIFY_SOCKET`) and the log of the loop's life.
struct ServiceLife {
    log: NodeLog,
    config: PathBuf,
}

impl ServiceLife {
    fn notify(&self, state: &[NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(false, state) {
            tracing::warn!("could not notify the service manager: {e}");
        }
    }
}

impl Lifecycle for ServiceLife {
    fn ready(&mut self) {
        tracing::info!("serving");
        self.notify(&[NotifyState::Ready, NotifyState::Status("serving")]);
    }

    fn reload(&mut self) -> String {
        self.notify(&[NotifyState::Reloading]);
        let done = self.log.reload(&self.config);
        self.notify(&[NotifyState::Ready]);
        done
    }

    fn stopping(&mut self) {
        self.notify(&[NotifyState::Stopping]);
    }
}

pub fn run(command: &NodeCommand) -> anyhow::Result<()> {
    let NodeCommand::Run { config: path, log_format } = command;
    let config = NodeConfig::load(path)?;
    let log = NodeLog::init(&config.log, *log_format)?;
    if let Some(metrics) = &config.metrics {
        cohort_io_mio::metrics::serve(metrics.listen).map_err(anyhow::Error::msg)?;
        tracing::info!("metrics served on http://{}/metrics", metrics.listen);
    }
    let mut reactor = Reactor::new().context("the event loop could not start")?;
    reactor.stop_on_signals().context("could not watch for signals")?;
    reactor.set_drain_limit(Duration::from_secs(config.drain_timeout_secs));
    reactor.set_lifecycle(Box::new(ServiceLife { log, config: path.clone() }));
    reactor.host(|slot| roles::start(&config, slot)).context("the node could not start")?;
    reactor.run().context("the node stopped on an error")
}
