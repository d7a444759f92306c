//! `cohort policy agents`, `cohort policy agent NAME` and `cohort policy alerts`: the per-client
//! detail the master asks of the tier now, and the alerts it raised, shown as tables (or JSON).
//! Renders only; which agents match, who answered and what is alerted is the tier's answer.

use std::path::PathBuf;

use anyhow::bail;
use cohort_core::WallClock;
use cohort_core::policy::alerts::Condition;
use cohort_core::policy::checks::CheckOutcome;
use cohort_core::policy::wire::{AgentDetail, AgentListing, PolicyAdmin, PolicyAdminReply};

use crate::policy_ask::{TierArgs, ask, wall};

#[derive(Debug, Clone, clap::Args)]
pub struct AgentsArgs {
    /// The policy tier file (from `cohort init --policy-locals`).
    #[arg(long, value_name = "FILE")]
    pub tier: Option<PathBuf>,
    /// The operator key that signs the request.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

impl AgentsArgs {
    /// The master, asked through the tier file.
    fn master(&self) -> TierArgs {
        TierArgs { tier: self.tier.clone(), server: None }
    }
}

/// `cohort policy agents [--server LOCAL] [--failing]`.
pub fn list(args: &AgentsArgs, server: &Option<String>, failing: bool) -> anyhow::Result<()> {
    let request = PolicyAdmin::Agents { server: server.clone(), failing };
    let PolicyAdminReply::Agents(listing) = ask(&args.master(), &args.key, request)? else {
        bail!("unexpected answer to a listing of agents");
    };
    if args.json {
        println!("{}", serde_json::to_string(&listing_json(&listing))?);
    } else {
        print!("{}", render_listing(&listing, wall(), failing));
    }
    partial(&listing)
}

/// `cohort policy agent NAME`.
pub fn one(args: &AgentsArgs, name: &str) -> anyhow::Result<()> {
    let PolicyAdminReply::Agents(listing) =
        ask(&args.master(), &args.key, PolicyAdmin::Agent(name.to_owned()))?
    else {
        bail!("unexpected answer about one agent");
    };
    let Some(agent) = listing.agents.iter().find(|a| a.agent == name) else {
        if listing.missing.is_empty() {
            bail!(
                "no server of the tier has a report from agent `{name}`; `cohort policy agents` lists those that do"
            );
        }
        bail!(
            "agent `{name}` was not found, and {} did not answer in time: it may be theirs; try again",
            listing.missing.join(", ")
        );
    };
    if args.json {
        println!("{}", serde_json::to_string(&listing_json(&listing))?);
    } else {
        print!("{}", render_agent(agent, wall()));
    }
    Ok(())
}

/// `cohort policy alerts`.
pub fn alerts(args: &AgentsArgs) -> anyhow::Result<()> {
    let PolicyAdminReply::Alerts(alerts) = ask(&args.master(), &args.key, PolicyAdmin::Alerts)? else {
        bail!("unexpected answer to a listing of alerts");
    };
    if args.json {
        let rows: Vec<serde_json::Value> = alerts.iter().map(|a| a.to_json()).collect();
        println!("{}", serde_json::to_string(&rows)?);
        return Ok(());
    }
    if alerts.is_empty() {
        println!("no alerts raised");
    }
    for a in &alerts {
        let about = match &a.condition {
            Condition::LocalCompliance { local } => format!("local {local}"),
            Condition::PlatformCompliance { platform } => format!("platform {platform}"),
            Condition::SilentAgent { agent, local } => format!("agent {agent} at {local}"),
            Condition::HighSeverity { agent, local, check } => {
                format!("agent {agent} at {local}, check {check}")
            }
        };
        println!(
            "#{:<5} {}  {:<20} {about}: {}",
            a.id,
            cohort_core::exec::audit_view::utc_text(a.at.0),
            a.condition.kind(),
            a.detail
        );
    }
    Ok(())
}

/// A listing that left servers out is an error once printed, so a script sees it.
fn partial(listing: &AgentListing) -> anyhow::Result<()> {
    if listing.truncated {
        eprintln!("more agents matched than one answer lists; narrow it with --server or --failing");
    }
    if listing.missing.is_empty() {
        return Ok(());
    }
    bail!("PARTIAL: no answer in time from {}; their agents are not listed", listing.missing.join(", "))
}

/// `12s ago`, `5m ago`, `3h ago`.
fn ago(then: WallClock, now: WallClock) -> String {
    let secs = now.0.saturating_sub(then.0) / 1000;
    match secs {
        0..=119 => format!("{secs}s ago"),
        120..=7199 => format!("{}m ago", secs / 60),
        _ => format!("{}h ago", secs / 3600),
    }
}

fn outcome_text(outcome: &CheckOutcome) -> &'static str {
    match outcome {
        CheckOutcome::Pass => "pass",
        CheckOutcome::Fail => "FAIL",
        CheckOutcome::Error => "ERROR",
    }
}

fn checks_text(a: &AgentDetail) -> String {
    match a.checks_total {
        0 => "unmeasured".to_owned(),
        n => format!("{}/{n} pass", a.checks_passed),
    }
}

pub fn render_listing(listing: &AgentListing, now: WallClock, failing: bool) -> String {
    if listing.agents.is_empty() {
        let what = if failing { "with a failing check" } else { "reporting" };
        return format!("no agents {what}\n");
    }
    let mut out = format!(
        "{:<20} {:<12} {:<20} {:<9} {:>11} {:>7} {:>10} {:>10}\n",
        "agent", "server", "platform", "policy", "checks", "threats", "measured", "heard"
    );
    for a in &listing.agents {
        let threats = a.threats.map_or_else(|| "-".to_owned(), |t| t.to_string());
        let measured = a.measured.map_or_else(|| "never".to_owned(), |m| ago(m, now));
        out.push_str(&format!(
            "{:<20} {:<12} {:<20} {:<9} {:>11} {:>7} {:>10} {:>10}\n",
            a.agent,
            a.server,
            a.platform.key(),
            hex::encode(&a.applied[..4]),
            checks_text(a),
            threats,
            measured,
            ago(a.heard, now)
        ));
        for (name, check) in &a.checks {
            out.push_str(&format!(
                "    {:<5} {name} ({}): {}\n",
                outcome_text(&check.outcome),
                check.severity.as_str(),
                check.detail
            ));
        }
    }
    out
}

pub fn render_agent(a: &AgentDetail, now: WallClock) -> String {
    let mut out = format!(
        "{} at {} ({}): policy {}, {}, threats {}, measured {}, heard {}\n",
        a.agent,
        a.server,
        a.platform.key(),
        hex::encode(&a.applied[..4]),
        checks_text(a),
        a.threats.map_or_else(|| "unknown".to_owned(), |t| t.to_string()),
        a.measured.map_or_else(|| "never".to_owned(), |m| ago(m, now)),
        ago(a.heard, now)
    );
    for (name, check) in &a.checks {
        out.push_str(&format!(
            "  {:<5} {:<24} {:<6} {}\n",
            outcome_text(&check.outcome),
            name,
            check.severity.as_str(),
            check.detail
        ));
    }
    out
}

fn listing_json(listing: &AgentListing) -> serde_json::Value {
    let agents: Vec<serde_json::Value> = listing
        .agents
        .iter()
        .map(|a| {
            let checks: serde_json::Map<String, serde_json::Value> = a
                .checks
                .iter()
                .map(|(name, c)| {
                    let row = serde_json::json!({
                        "outcome": c.outcome.as_str(),
                        "severity": c.severity.as_str(),
                        "detail": c.detail,
                    });
                    (name.clone(), row)
                })
                .collect();
            serde_json::json!({
                "agent": a.agent,
                "server": a.server,
                "platform": a.platform.key(),
                "applied": hex::encode(a.applied),
                "heard_unix_ms": a.heard.0,
                "measured_unix_ms": a.measured.map(|m| m.0),
                "threats": a.threats,
                "checks_total": a.checks_total,
                "checks_passed": a.checks_passed,
                "checks": checks,
            })
        })
        .collect();
    serde_json::json!({ "agents": agents, "missing": listing.missing, "truncated": listing.truncated })
}
