//! `cohort policy set|list|show` and `cohort status --global`: an operator's signed requests to a
//! policy server, and the global status as a readable table or JSON.

use std::path::PathBuf;

use anyhow::{Context, bail};
use cohort_core::WallClock;
use cohort_core::exec::audit_view::utc_text;
use cohort_core::policy::document::{Policy, PolicyTarget, Scope};
use cohort_core::policy::report::PlatformCounts;
use cohort_core::policy::server::GlobalStatus;
use cohort_core::policy::wire::{PolicyAdmin, PolicyAdminReply};

use crate::plural::plural;
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
    /// Only syncs at or after this time: an age (10m, 2h, 1d), a date or time in UTC
    /// (2026-11-24, 2026-11-24T08:00:00Z), or Unix ms.
    #[arg(long, value_name = "TIME", value_parser = crate::time_arg::time_arg)]
    pub since: Option<u64>,
    /// Only syncs at or before this time, in the same forms (with --history).
    #[arg(long, value_name = "TIME", requires = "history", value_parser = crate::time_arg::time_arg)]
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
    // A status that left servers out is printed, then failed, so a script notices.
    if status.partial() {
        let missing = status.missing.join(", ");
        let why =
            if status.current { "did not answer within the deadline" } else { "sent no sync in the span" };
        bail!(
            "the status is PARTIAL: {missing} {why}; the {} below, as their last syncs counted them, are counted as not reporting",
            plural(status.unanswered_agents(), "agent")
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
        eprintln!("wrote {} ({})", path.display(), plural(points.len(), "sync"));
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
    let partial = match (status.partial(), status.current) {
        (false, _) => String::new(),
        (true, true) => format!(", PARTIAL: no answer from {}", status.missing.join(", ")),
        (true, false) => format!(", PARTIAL: no sync in the span from {}", status.missing.join(", ")),
    };
    let mut out = format!(
        "global status ({}){partial}: {} reporting, {} not reporting\n",
        if status.current { "current" } else { "historical" },
        plural(a.agents(), "agent"),
        plural(status.not_reporting(), "agent"),
    );
    for (server, u) in &status.unanswered {
        let why = if status.current { "did not answer" } else { "sent no sync in the span" };
        let Some(at) = u.last_sync else {
            out.push_str(&format!("  {server} {why} and never synced: the agents below it are unknown\n"));
            continue;
        };
        let platforms: Vec<String> = u.platforms.iter().map(|(p, n)| format!("{p} {n}")).collect();
        let platforms =
            if platforms.is_empty() { String::new() } else { format!(" ({})", platforms.join(", ")) };
        out.push_str(&format!(
            "  {server} {why}: {} not reporting, as its last sync at {} counted them{platforms}\n",
            plural(u.agents, "agent"),
            utc_text(at.0),
        ));
    }
    if !status.current && !status.as_of.is_empty() {
        let syncs: Vec<String> =
            status.as_of.iter().map(|(local, at)| format!("{local} {}", utc_text(at.0))).collect();
        out.push_str(&format!("  figures as of each local's last sync: {}\n", syncs.join(", ")));
    }
    table(&mut out, "platform", &a.platforms);
    table(&mut out, "local server", &a.locals);
    if a.failing.is_empty() {
        out.push_str("  failing checks: none\n");
    } else {
        let failing: Vec<String> =
            a.failing.iter().map(|(check, n)| format!("{check} ({})", plural(*n, "agent"))).collect();
        out.push_str(&format!("  failing checks: {}\n", failing.join(", ")));
    }
    // A version nobody applies is no row; agents yet to apply any policy are said so.
    let mut spread: Vec<String> = a
        .policy_versions
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(d, n)| format!("{d}: {}", plural(*n, "agent")))
        .collect();
    let none_yet = a.without_policy();
    if none_yet > 0 {
        spread.push(format!("none yet: {}", plural(none_yet, "agent")));
    }
    if spread.is_empty() {
        spread.push("none".to_owned());
    }
    out.push_str(&format!("  policy versions applied: {}\n", spread.join(", ")));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_core::policy::report::Aggregate;
    use cohort_core::policy::wire::Unanswered;

    /// 2026-01-01 00:00:00 UTC.
    const T0: u64 = 1_767_225_600_000;

    /// One agent reporting at local-00 on version 1a2b3c4d, and whatever `unanswered` says.
    fn status(current: bool, unanswered: &[(&str, Unanswered)]) -> GlobalStatus {
        let one = PlatformCounts { agents: 1, compliant: 1, threats: 0, checks: 2, passed: 2 };
        let aggregate = Aggregate {
            platforms: [("linux/12/web".to_owned(), one)].into(),
            locals: [("local-00".to_owned(), one)].into(),
            policy_versions: [("1a2b3c4d".to_owned(), 1), ("ffffffff".to_owned(), 0)].into(),
            ..Aggregate::default()
        };
        GlobalStatus {
            current,
            missing: unanswered.iter().map(|(s, _)| (*s).to_owned()).collect(),
            aggregate,
            as_of: [("local-00".to_owned(), WallClock(T0))].into(),
            unanswered: unanswered.iter().map(|(s, u)| ((*s).to_owned(), u.clone())).collect(),
        }
    }

    fn gone(agents: u64) -> Unanswered {
        Unanswered {
            last_sync: Some(WallClock(T0 - 60_000)),
            agents,
            platforms: [("linux/12/db".to_owned(), agents)].into(),
        }
    }

    #[test]
    fn a_local_that_did_not_answer_is_named_and_its_agents_counted_as_not_reporting() {
        let text = render_global(&status(true, &[("local-01", gone(3))]));
        print!("{text}");
        assert!(
            text.starts_with(
                "global status (current), PARTIAL: no answer from local-01: 1 agent reporting, 3 agents not reporting\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "  local-01 did not answer: 3 agents not reporting, as its last sync at 2025-12-31T23:59:00Z counted them (linux/12/db 3)\n"
            ),
            "{text}"
        );
        let never = Unanswered::default();
        let text = render_global(&status(true, &[("local-02", never)]));
        assert!(
            text.contains("local-02 did not answer and never synced: the agents below it are unknown"),
            "{text}"
        );
    }

    #[test]
    fn a_stored_status_says_what_each_figure_is_as_of_and_who_sent_nothing_in_the_span() {
        let text = render_global(&status(false, &[("local-01", gone(1))]));
        print!("{text}");
        assert!(text.starts_with("global status (historical), PARTIAL: no sync in the span from local-01: 1 agent reporting, 1 agent not reporting\n"), "{text}");
        assert!(text.contains("  local-01 sent no sync in the span: 1 agent not reporting"), "{text}");
        assert!(
            text.contains("figures as of each local's last sync: local-00 2026-01-01T00:00:00Z"),
            "{text}"
        );
    }

    #[test]
    fn a_version_nobody_applies_has_no_row_and_agents_without_a_policy_are_said() {
        let text = render_global(&status(true, &[]));
        assert!(text.contains("  policy versions applied: 1a2b3c4d: 1 agent\n"), "{text}");
        assert!(!text.contains("ffffffff") && !text.contains("00000000"), "{text}");
        let mut waiting = status(true, &[]);
        waiting.aggregate.policy_versions.clear();
        let text = render_global(&waiting);
        assert!(text.contains("  policy versions applied: none yet: 1 agent\n"), "{text}");
    }
}
