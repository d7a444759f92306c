//! `cohort sim`: runs a scenario on simulated hosts and prints its report. Exits non-zero, naming
//! the invariant and the seed, when a run breaks an invariant.

use std::time::Duration;

use anyhow::{Context, bail};
use cohort_io_sim::{ConfigChangeScenario, run_config_change};

#[derive(Debug, clap::Subcommand)]
pub enum SimCommand {
    /// One operator change at a random member of N simulated members, under optional loss,
    /// a partition of one member and crashes.
    ConfigChange(ConfigChangeArgs),
}

#[derive(Debug, clap::Args)]
pub struct ConfigChangeArgs {
    /// Number of members.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=256))]
    nodes: u16,
    /// Simulation seed: the same seed replays the same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Probability (0 to 1) that any one datagram is lost.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Cut one random member off for this many milliseconds, from just before the change.
    #[arg(long, value_name = "MS")]
    partition_ms: Option<u64>,
    /// Crash (and later restart) this many random members around the change.
    #[arg(long, value_name = "K", default_value_t = 0)]
    crash: usize,
    /// Heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    heartbeat_ms: u64,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(command: &SimCommand) -> anyhow::Result<()> {
    match command {
        SimCommand::ConfigChange(args) => config_change(args),
    }
}

fn config_change(args: &ConfigChangeArgs) -> anyhow::Result<()> {
    if !(0.0..1.0).contains(&args.loss) {
        bail!("--loss must be at least 0 and below 1 (got {})", args.loss);
    }
    let mut scenario = ConfigChangeScenario::new(usize::from(args.nodes), args.seed);
    scenario.loss = args.loss;
    scenario.partition = args.partition_ms.map(Duration::from_millis);
    scenario.crashes = args.crash;
    scenario.heartbeat = Duration::from_millis(args.heartbeat_ms);
    let report = run_config_change(&scenario);
    if args.json {
        println!("{}", serde_json::to_string(&report).context("could not encode the report")?);
    } else {
        println!("config-change: {} members, seed {}", report.nodes, report.seed);
        println!("  all installed:   {}", report.all_installed);
        if let (Some(ms), Some(beats)) =
            (report.change_to_last_install_ms, report.change_to_last_install_heartbeats)
        {
            println!(
                "  change → last install: {ms} ms ({beats:.2} heartbeats of {} ms)",
                report.heartbeat_ms
            );
        }
        println!(
            "  sent per member: {:.0} messages, {:.0} bytes",
            report.messages_sent_per_member, report.bytes_sent_per_member
        );
    }
    if let Some(violation) = &report.violation {
        bail!("invariant violated with seed {}: {violation}", report.seed);
    }
    Ok(())
}
