//! `cohort sim`: runs a scenario on simulated hosts and prints its report. Exits non-zero, naming
//! the invariant and the seed, when a run breaks an invariant.

use std::time::Duration;

use anyhow::{Context, bail};
use cohort_io_sim::config_change::Membership;
use cohort_io_sim::{ConfigChangeScenario, run_config_change};

use crate::plural::plural;

#[derive(Debug, clap::Subcommand)]
pub enum SimCommand {
    /// One operator change at a random member of N simulated members, under optional loss,
    /// a partition of one member and crashes.
    ConfigChange(ConfigChangeArgs),
    /// A security-policy fleet: a master, local servers (the last behind the first) and agents.
    /// Reports bytes reaching the master per sync cycle against agents polling it directly, and
    /// how long a policy change takes to reach every agent.
    Policy(PolicyArgs),
}

#[derive(Debug, clap::Args)]
pub struct PolicyArgs {
    /// Local servers. Each local, and the agents it serves, are simulated hosts of their own, and
    /// the simulator's cost grows with the cube of its hosts: 50 locals take minutes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=50))]
    locals: u16,
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    agents: u32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ConfigChangeArgs {
    /// Number of members.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=256))]
    nodes: u16,
    /// Simulation seed: the same seed replays the same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Probability (0 to 1) that any one write breaks its connection (loss on a stream).
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Cut one random member off for this many milliseconds, from just before the change.
    #[arg(long, value_name = "MS")]
    partition_ms: Option<u64>,
    /// Crash (and later restart) this many random members around the change.
    #[arg(long, value_name = "K", default_value_t = 0)]
    crash: usize,
    /// The change also adds a node that joined from an anchor (`join`) or removes a member
    /// other than its author (`remove`).
    #[arg(long, value_enum, default_value_t = MembershipArg::Unchanged)]
    membership: MembershipArg,
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
        SimCommand::Policy(args) => policy(args),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum MembershipArg {
    Unchanged,
    Join,
    Remove,
}

fn config_change(args: &ConfigChangeArgs) -> anyhow::Result<()> {
    if !(0.0..1.0).contains(&args.loss) {
        bail!("--loss must be at least 0 and below 1 (got {})", args.loss);
    }
    let mut scenario = ConfigChangeScenario::new(usize::from(args.nodes), args.seed);
    scenario.loss = args.loss;
    scenario.partition = args.partition_ms.map(Duration::from_millis);
    scenario.crashes = args.crash;
    scenario.membership = match args.membership {
        MembershipArg::Unchanged => Membership::Unchanged,
        MembershipArg::Join => Membership::Join,
        MembershipArg::Remove => Membership::Remove,
    };
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

fn policy(args: &PolicyArgs) -> anyhow::Result<()> {
    let scenario = cohort_io_sim::policy_fleet::FleetScenario::new(
        usize::from(args.locals),
        args.agents as usize,
        args.seed,
    );
    let report = cohort_io_sim::policy_fleet::run_fleet(scenario);
    if args.json {
        println!("{}", serde_json::to_string(&report).context("could not encode the report")?);
    } else {
        println!(
            "policy fleet: master, {}, {}, seed {}",
            plural(report.locals as u64, "local"),
            plural(report.agents as u64, "agent"),
            report.seed
        );
        println!("  bytes reaching the master per {} s sync cycle:", report.sync_window_s);
        println!("    through the tier   {:>12.0}", report.master_bytes_per_cycle);
        println!(
            "    agents direct      {:>12.0}   ({:.1}x more)",
            report.direct_baseline_bytes_per_cycle, report.reduction
        );
        match report.policy_change_to_every_agent_ms {
            Some(ms) => println!(
                "  policy change at the master reached {} in {:.1} s",
                if report.agents == 1 {
                    "its one agent".to_owned()
                } else {
                    format!("all {} agents", report.agents)
                },
                ms as f64 / 1000.0
            ),
            None => println!(
                "  policy change reached only {} of {}",
                report.agents_applied,
                plural(report.agents as u64, "agent")
            ),
        }
    }
    Ok(())
}
