//! `cohort policy set|list|show` and `cohort status --global`: an operator's signed requests to a
//! policy server, and the global status as a readable table or JSON.

use std::path::PathBuf;

use anyhow::{Context, bail};
use cohort_core::WallClock;
use cohort_core::policy::document::{Policy, PolicyTarget, Scope};
use cohort_core::policy::report::PlatformCounts;
use cohort_core::policy::server::GlobalStatus;
use cohort_core::policy::wire::{PolicyAdmin, PolicyAdminReply};

use crate::policy_ask::TierArgs;
use crate::policy_ask::ask;

#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Create or replace a policy: ID KEY=VALUE …
    Set {
        id: String,
        #[arg(value_name = "KEY=VALUE", required = true)]
        params: Vec<String>,
        /// Apply only to the clients of this local server (an override).
        #[arg(long, value_name = "NAME")]
        local: Option<String>,
        #[arg(long)]
        os: Option<String>,
        #[arg(long)]
        os_version: Option<String>,
        #[arg(long)]
        role: Option<String>,
        #[command(flatten)]
        tier: TierArgs,
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
    },
    /// List the policies a server holds.
    List {
        #[command(flatten)]
        tier: TierArgs,
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
    },
    /// Make a local server sync with its parent now instead of at its next window
    /// (`--server NAME` says which local).
    Sync {
        #[command(flatten)]
        tier: TierArgs,
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
    },
    /// Show one policy, with the versions of it that lost a conflict.
    Show {
        id: String,
        #[command(flatten)]
        tier: TierArgs,
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
    },
    /// List the agents the tier's servers hold reports from, asked of every tier now (through
    /// the master): each with its policy, checks, threats and when it was last heard.
    Agents {
        /// Only the agents of this local server.
        #[arg(long, value_name = "LOCAL")]
        server: Option<String>,
        /// Only agents with a check not passing (each such check is shown).
        #[arg(long)]
        failing: bool,
        #[command(flatten)]
        args: crate::policy_agents::AgentsArgs,
    },
    /// One agent's every check, asked of the server that holds it (through the tier).
    Agent {
        name: String,
        #[command(flatten)]
        args: crate::policy_agents::AgentsArgs,
    },
    /// The alerts the master raised (each once, when its condition began), oldest first.
    Alerts {
        #[command(flatten)]
        args: crate::policy_agents::AgentsArgs,
    },
    /// Retire a policy from every tier: a new version that applies to no one replaces it
    /// everywhere, and no older version can come back.
    Retire {
        id: String,
        #[command(flatten)]
        tier: TierArgs,
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
    },
}

pub fn run(command: &PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Set { id, params, local, os, os_version, role, tier, key } => {
            let mut map = std::collections::BTreeMap::new();
            for pair in params {
                let (k, v) = pair.split_once('=').with_context(|| format!("`{pair}` is not KEY=VALUE"))?;
                map.insert(k.to_owned(), v.to_owned());
            }
            let policy = Policy {
                id: id.clone(),
                version: 1,
                author: String::new(),
                scope: local.clone().map_or(Scope::Global, Scope::Local),
                target: PolicyTarget { os: os.clone(), os_version: os_version.clone(), role: role.clone() },
                params: map,
                retired: false,
            };
            ask(tier, key, PolicyAdmin::Create(policy))?;
            println!("policy `{id}` stored; it reaches the tier at the next syncs");
        }
        PolicyCommand::Sync { tier, key } => {
            let name = tier.server.clone().context("say which local syncs: --server NAME")?;
            ask(tier, key, PolicyAdmin::SyncNow)?;
            println!("{name} is syncing with its parent now");
        }
        PolicyCommand::List { tier, key } => {
            let PolicyAdminReply::Policies(policies) = ask(tier, key, PolicyAdmin::List)? else {
                bail!("unexpected answer to a list");
            };
            if policies.is_empty() {
                println!("no policies held");
            }
            for p in &policies {
                println!("{}", headline(p));
            }
        }
        PolicyCommand::Show { id, tier, key } => {
            let PolicyAdminReply::Policy { held, superseded } =
                ask(tier, key, PolicyAdmin::Show(id.clone()))?
            else {
                bail!("unexpected answer to a show");
            };
            println!("{}", headline(&held));
            for (k, v) in &held.params {
                println!("  {k} = {v}");
            }
            for lost in &superseded {
                println!(
                    "  superseded: {} lost to {} (edited at the same version between syncs)",
                    lost.policy.rank().label(),
                    lost.by.label()
                );
                for (k, v) in &lost.policy.params {
                    println!("    {k} = {v}");
                }
            }
        }
        PolicyCommand::Agents { server, failing, args } => {
            crate::policy_agents::list(args, server, *failing)?
        }
        PolicyCommand::Agent { name, args } => crate::policy_agents::one(args, name)?,
        PolicyCommand::Alerts { args } => crate::policy_agents::alerts(args)?,
        PolicyCommand::Retire { id, tier, key } => {
            let PolicyAdminReply::Retired { version } = ask(tier, key, PolicyAdmin::Retire(id.clone()))?
            else {
                bail!("unexpected answer to a retirement");
            };
            println!("policy `{id}` retired as v{version}; every tier drops it at its next sync");
        }
    }
    Ok(())
}

/// `fw v3 by master (global)`, and `retired` when it is.
fn headline(p: &Policy) -> String {
    let scope = match &p.scope {
        Scope::Global => "global".to_owned(),
        Scope::Local(l) => format!("local {l}"),
    };
    let retired = if p.retired { ", retired" } else { "" };
    format!("{} {} ({scope}{retired})", p.id, p.rank().label())
}

#[derive(Debug, clap::Args)]
pub struct GlobalArgs {
    /// Ask every local now (with a deadline) instead of reading stored syncs.
    #[arg(long)]
    pub current: bool,
    /// Only syncs at or after this time (Unix milliseconds).
    #[arg(long, value_name = "UNIX_MS")]
    pub since: Option<u64>,
    /// Only syncs at or before this time (Unix milliseconds; with --history).
    #[arg(long, value_name = "UNIX_MS", requires = "history")]
    pub until: Option<u64>,
    /// Every sync the master stored, as a time series per local server and per platform.
    #[arg(long, conflicts_with = "current")]
    pub history: bool,
    /// With --history: also draw compliance and threats over time into this SVG file.
    #[arg(long, value_name = "FILE.svg", requires = "history")]
    pub plot: Option<PathBuf>,
    #[command(flatten)]
    pub tier: TierArgs,
}

pub fn global_status(args: &GlobalArgs, key: &Option<PathBuf>, json: bool) -> anyhow::Result<()> {
    if args.history {
        return history(args, key, json);
    }
    let request = PolicyAdmin::Status { current: args.current, since: args.since.map(WallClock) };
    let PolicyAdminReply::Status(status) = ask(&args.tier, key, request)? else { bail!("unexpected answer") };
    if json {
        println!("{}", serde_json::to_string(&status.to_json())?);
    } else {
        print!("{}", render_global(&status));
    }
    // A current status that left servers out is printed, then failed, so a script notices.
    if status.current && status.partial() {
        bail!(
            "the status is PARTIAL: {} did not answer within the deadline; their agents are not counted",
            status.missing.join(", ")
        );
    }
    Ok(())
}

/// `status --global --history [--plot FILE.svg]`.
fn history(args: &GlobalArgs, key: &Option<PathBuf>, json: bool) -> anyhow::Result<()> {
    let request = PolicyAdmin::History { since: args.since.map(WallClock), until: args.until.map(WallClock) };
    let PolicyAdminReply::History(points) = ask(&args.tier, key, request)? else {
        bail!("unexpected answer")
    };
    if json {
        let rows: Vec<serde_json::Value> = points
            .iter()
            .map(|p| {
                serde_json::json!({
                    "at_unix_ms": p.at.0,
                    "local": p.local,
                    "agents": p.counts.agents,
                    "compliant": p.counts.compliant,
                    "threats": p.counts.threats,
                    "checks": p.counts.checks,
                    "passed": p.counts.passed,
                    "compliance_pct": p.counts.compliance_pct(),
                    "silent": p.silent,
                })
            })
            .collect();
        println!("{}", serde_json::to_string(&rows)?);
    } else {
        print!("{}", crate::history_view::render_history(&points));
    }
    if let Some(path) = &args.plot {
        crate::history_view::plot_history(&points, path)?;
        eprintln!("wrote {} ({} syncs)", path.display(), points.len());
    }
    Ok(())
}

/// One section of the global status: a header, then a row per entry. Compliance is the share
/// of measured checks that passed; `clean` the agents whose every check passed.
fn table(out: &mut String, title: &str, rows: &std::collections::BTreeMap<String, PlatformCounts>) {
    out.push_str(&format!(
        "  {:<24} {:>7} {:>7} {:>11} {:>8}\n",
        title, "agents", "clean", "compliance", "threats"
    ));
    for (name, c) in rows {
        let compliance = match c.checks {
            0 => "unmeasured".to_owned(),
            _ => format!("{:.0}% of {}", c.compliance_pct(), c.checks),
        };
        out.push_str(&format!(
            "  {:<24} {:>7} {:>7} {:>11} {:>8}\n",
            name, c.agents, c.compliant, compliance, c.threats
        ));
    }
}

pub fn render_global(status: &GlobalStatus) -> String {
    let a = &status.aggregate;
    let mut out = format!(
        "global status ({}){}: {} agents reporting, {} not reporting\n",
        if status.current { "current" } else { "historical" },
        if status.partial() {
            format!(", PARTIAL: no answer from {}", status.missing.join(", "))
        } else {
            String::new()
        },
        a.agents(),
        a.silent_agents
    );
    table(&mut out, "platform", &a.platforms);
    table(&mut out, "local server", &a.locals);
    if a.failing.is_empty() {
        out.push_str("  failing checks: none\n");
    } else {
        let failing: Vec<String> = a
            .failing
            .iter()
            .map(|(check, n)| format!("{check} ({n} agent{})", if *n == 1 { "" } else { "s" }))
            .collect();
        out.push_str(&format!("  failing checks: {}\n", failing.join(", ")));
    }
    let spread: Vec<String> = a.policy_versions.iter().map(|(d, n)| format!("{d}: {n}")).collect();
    out.push_str(&format!("  policy versions applied: {}\n", spread.join(", ")));
    out
}
