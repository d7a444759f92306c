//! The security-policy tier's global status in the console, current or historical, and its
//! history drawn as a chart of compliance and threats over time. The figures are the master's:
//! the gateway asks it over a channel of its own for each request (signed with the gateway's
//! key, which the master lists as a viewer: read-only), and keeps nothing between requests.
//! Owns what a page asks the master and how the answer is shown; it never computes a figure the
//! master did not send.

use std::collections::BTreeMap;

use maud::{Markup, PreEscaped, html};
use serde_json::json;

use super::console::{ConsoleOutput, WebConsole};
use super::http::{RequestId, WebRequest, WebResponse, field};
use super::pages::{self, Viewer};
use super::waiting::{PolicyAsk, Want};
use crate::exec::audit_view::utc_text;
use crate::policy::report::PlatformCounts;
use crate::policy::wire::{GlobalStatus, HistoryPoint, PolicyAdmin, PolicyAdminReply};
use crate::time::{Now, WallClock};

/// The span of history a page shows unless asked for another, and the longest it takes.
const HOURS_DEFAULT: u64 = 24;
const HOURS_MAX: u64 = 24 * 90;
/// Points the chart draws at most: more are thinned evenly (the table of the API has them all).
const CHART_POINTS: usize = 360;
const HOUR_MS: u64 = 3_600_000;

impl WebConsole {
    /// `GET /policy` (`?current=1` asks every tier now; `?hours=N` the history's span).
    pub(super) fn policy_page(
        &mut self,
        now: Now,
        request: RequestId,
        web: &WebRequest,
    ) -> Option<WebResponse> {
        let credential = match self.page_session(now, web) {
            Ok(credential) => credential,
            Err(refused) => return Some(refused),
        };
        let query = web.query_pairs();
        let current = field(&query, "current").is_some_and(|c| c == "1");
        let hours = match field(&query, "hours").filter(|h| !h.is_empty()) {
            None => HOURS_DEFAULT,
            Some(h) => match h.parse::<u64>().ok().filter(|h| (1..=HOURS_MAX).contains(h)) {
                Some(h) => h,
                None => {
                    let text = format!("hours `{h}` is not a number from 1 to {HOURS_MAX}");
                    return Some(WebResponse::html(400, pages::problem("Policy status", &text)));
                }
            },
        };
        if !self.policy_master {
            let text = "This gateway is not set up to ask the policy tier's master (`policy_master` and \
                        `policy_master_key` under [gateway.web] in its node.toml).";
            return Some(WebResponse::html(503, pages::problem("Policy status", text)));
        }
        let since = WallClock(now.wall.0.saturating_sub(hours * HOUR_MS));
        let want = Want::Page {
            principal: credential.body.principal.clone(),
            csrf: self.csrf_for(&credential),
            current,
            since,
            status: None,
        };
        self.ask_master(PolicyAsk { request, want }, PolicyAdmin::Status { current, since: None });
        None
    }

    /// `GET /api/policy` (`?current=1`) and `GET /api/policy/history?since=MS&until=MS`.
    pub(super) fn policy_json(
        &mut self,
        now: Now,
        request: RequestId,
        web: &WebRequest,
        history: bool,
    ) -> Option<WebResponse> {
        if let Err(refused) = self.api_session(now, web) {
            return Some(refused);
        }
        if !self.policy_master {
            let error = "this gateway is not set up to ask the policy tier's master";
            return Some(WebResponse::json(503, &json!({ "error": error })));
        }
        let query = web.query_pairs();
        let (admin, want) = match history {
            false => {
                let current = field(&query, "current").is_some_and(|c| c == "1");
                (PolicyAdmin::Status { current, since: None }, Want::Status)
            }
            true => {
                let time = |key: &str| -> Result<Option<WallClock>, String> {
                    match field(&query, key).filter(|v| !v.is_empty()) {
                        None => Ok(None),
                        Some(v) => v
                            .parse::<u64>()
                            .map(|ms| Some(WallClock(ms)))
                            .map_err(|_| format!("{key} `{v}` is not a time in milliseconds since 1970")),
                    }
                };
                match (time("since"), time("until")) {
                    (Ok(since), Ok(until)) => (PolicyAdmin::History { since, until }, Want::History),
                    (Err(e), _) | (_, Err(e)) => return Some(WebResponse::json(400, &json!({ "error": e }))),
                }
            }
        };
        self.ask_master(PolicyAsk { request, want }, admin);
        None
    }

    fn ask_master(&mut self, ask: PolicyAsk, request: PolicyAdmin) {
        let id = self.next_policy_ask();
        self.policy_asks.insert(id, ask);
        self.push(ConsoleOutput::AskPolicy { ask: id, request });
    }

    /// The master's answer to `ask`, or why none came (the channel failed or fell silent).
    pub fn handle_policy_reply(&mut self, now: Now, ask: u64, reply: Result<PolicyAdminReply, String>) {
        let Some(PolicyAsk { request, want }) = self.policy_asks.remove(&ask) else { return };
        let for_page = matches!(want, Want::Page { .. });
        let failed = |error: String| match for_page {
            true => WebResponse::html(502, pages::problem("Policy status", &error)),
            false => WebResponse::json(502, &json!({ "error": error })),
        };
        let response = match (reply, want) {
            (Err(e), _) => failed(format!("the policy master did not answer: {e}")),
            (Ok(PolicyAdminReply::Error(e)), _) => failed(format!("the policy master refused: {e}")),
            (Ok(PolicyAdminReply::Status(status)), Want::Status) => WebResponse::json(200, &status.to_json()),
            (Ok(PolicyAdminReply::History(points)), Want::History) => {
                let points: Vec<_> = points.iter().map(point_json).collect();
                WebResponse::json(200, &json!({ "points": points }))
            }
            (Ok(PolicyAdminReply::Status(found)), Want::Page { principal, csrf, current, since, .. }) => {
                let want = Want::Page { principal, csrf, current, since, status: Some(Box::new(found)) };
                self.ask_master(
                    PolicyAsk { request, want },
                    PolicyAdmin::History { since: Some(since), until: None },
                );
                return;
            }
            (
                Ok(PolicyAdminReply::History(points)),
                Want::Page { principal, csrf, status: Some(status), since, .. },
            ) => {
                let viewer = Viewer { principal: &principal, csrf: &csrf };
                WebResponse::html(200, page(&viewer, &status, &points, since, now.wall))
            }
            (Ok(other), _) => failed(format!("the policy master answered with {}", reply_kind(&other))),
        };
        self.respond(request, response);
    }

    /// Drops what a browser that left was waiting for from the master.
    pub(super) fn forget_policy_asks(&mut self, request: RequestId) {
        self.policy_asks.retain(|_, ask| ask.request != request);
    }
}

fn reply_kind(reply: &PolicyAdminReply) -> &'static str {
    match reply {
        PolicyAdminReply::Created => "a policy's creation",
        PolicyAdminReply::SyncStarted => "a sync's start",
        PolicyAdminReply::Policies(_) => "a list of policies",
        PolicyAdminReply::Status(_) => "a status where history was asked",
        PolicyAdminReply::History(_) => "history where a status was asked",
        PolicyAdminReply::Error(_) => "an error",
        PolicyAdminReply::Policy { .. } => "one policy",
        PolicyAdminReply::Retired { .. } => "a retirement",
        PolicyAdminReply::Agents(_) => "a list of agents",
        PolicyAdminReply::Alerts(_) => "a list of alerts",
    }
}

fn point_json(p: &HistoryPoint) -> serde_json::Value {
    json!({
        "at_unix_ms": p.at.0,
        "at": utc_text(p.at.0),
        "local": p.local,
        "agents": p.counts.agents,
        "compliant": p.counts.compliant,
        "threats": p.counts.threats,
        "silent": p.silent,
    })
}

/// The tier's totals over time: after each sync, every local's latest figures summed.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Total {
    at: u64,
    agents: u64,
    compliant_pct: f64,
    threats: u64,
}

fn totals(points: &[HistoryPoint]) -> Vec<Total> {
    let mut latest: BTreeMap<&str, PlatformCounts> = BTreeMap::new();
    let mut out = Vec::with_capacity(points.len());
    for p in points {
        latest.insert(&p.local, p.counts);
        let mut sum = PlatformCounts::default();
        for v in latest.values() {
            sum = PlatformCounts {
                agents: sum.agents + v.agents,
                compliant: sum.compliant + v.compliant,
                threats: sum.threats + v.threats,
                checks: sum.checks + v.checks,
                passed: sum.passed + v.passed,
            };
        }
        let (agents, threats, compliant_pct) = (sum.agents, sum.threats, sum.compliance_pct());
        out.push(Total { at: p.at.0, agents, compliant_pct, threats });
    }
    out
}

/// Compliance (percent, left scale) and threats (right scale) as SVG, from the first sync within
/// `since..now` (a tier younger than the span fills the width) to `now`.
fn chart(points: &[HistoryPoint], since: WallClock, now: WallClock) -> Markup {
    let since = points.first().map_or(since, |p| WallClock(p.at.0.clamp(since.0, now.0)));
    const W: f64 = 720.0;
    const H: f64 = 240.0;
    const PAD: f64 = 40.0;
    let all = totals(points);
    let step = all.len().div_ceil(CHART_POINTS).max(1);
    let shown: Vec<Total> = all.iter().step_by(step).chain(all.last()).copied().collect();
    let span = now.0.saturating_sub(since.0).max(1) as f64;
    let max_threats = shown.iter().map(|t| t.threats).max().unwrap_or(0).max(1) as f64;
    let x = |at: u64| PAD + (W - 2.0 * PAD) * (at.saturating_sub(since.0) as f64 / span).min(1.0);
    let y = |fraction: f64| H - PAD - (H - 2.0 * PAD) * fraction;
    let line = |value: &dyn Fn(&Total) -> f64| -> String {
        shown.iter().map(|t| format!("{:.1},{:.1}", x(t.at), y(value(t)))).collect::<Vec<_>>().join(" ")
    };
    let compliant = line(&|t| t.compliant_pct / 100.0);
    let threats = line(&|t| t.threats as f64 / max_threats);
    // Numbers only go into the markup: no text from the network is placed unescaped.
    let svg = format!(
        r#"<svg class="chart" id="compliance-chart" viewBox="0 0 {W} {H}" role="img" aria-label="compliance and threats over time">
<line class="axis" x1="{PAD}" y1="{b}" x2="{r}" y2="{b}"/><line class="axis" x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{b}"/>
<text x="4" y="{top}">100%</text><text x="4" y="{b}">0%</text><text x="{r2}" y="{top}">{max_threats}</text>
<text x="{PAD}" y="{lbl}">{from}</text><text x="{r3}" y="{lbl}">{to}</text>
<polyline class="compliant" points="{compliant}"/><polyline class="threats" points="{threats}"/></svg>"#,
        b = H - PAD,
        r = W - PAD,
        top = PAD + 4.0,
        r2 = W - PAD + 4.0,
        r3 = W - PAD - 110.0,
        lbl = H - PAD + 16.0,
        from = utc_text(since.0),
        to = utc_text(now.0),
    );
    PreEscaped(svg)
}

fn counts_table(title: &str, rows: &BTreeMap<String, PlatformCounts>) -> Markup {
    html! {
        table {
            thead { tr { th { (title) } th { "agents" } th { "all checks pass" } th { "compliance" } th { "threats" } } }
            tbody {
                @for (name, c) in rows {
                    tr {
                        td { (name) }
                        td { (c.agents) }
                        td { (c.compliant) }
                        td { @if c.checks == 0 { "unmeasured" } @else { (format!("{:.0}% of {} checks", c.compliance_pct(), c.checks)) } }
                        td class=[(c.threats > 0).then_some("threat")] { (c.threats) }
                    }
                }
            }
        }
    }
}

/// `1 agent`, `3 agents`.
fn agents(n: u64) -> String {
    format!("{n} agent{}", if n == 1 { "" } else { "s" })
}

fn page(
    viewer: &Viewer<'_>,
    status: &GlobalStatus,
    points: &[HistoryPoint],
    since: WallClock,
    now: WallClock,
) -> Markup {
    let a = &status.aggregate;
    let hours = now.0.saturating_sub(since.0) / HOUR_MS;
    pages::layout(
        "policy",
        Some(viewer),
        html! {
            h1 { "Security policy: global status" }
            p id="policy-summary" {
                (if status.current { "Current (every tier asked now)" } else { "Historical (each local's last sync)" })
                ": " strong { (agents(a.agents())) } " reporting, " (agents(status.not_reporting())) " not reporting. "
                @if status.current { a href="/policy" { "Show the last syncs instead" } }
                @else { a href="/policy?current=1" { "Ask every tier now" } }
            }
            @if status.partial() {
                p.error role="alert" {
                    (if status.current { "PARTIAL: no answer from " } else { "PARTIAL: no sync in the span from " })
                    (status.missing.join(", "))
                    "; the " (agents(status.unanswered_agents())) " their last syncs counted are not reporting."
                }
            }
            (counts_table("platform", &a.platforms))
            (counts_table("local server", &a.locals))
            p id="failing" {
                "Failing checks: "
                @if a.failing.is_empty() { "none" }
                @for (check, n) in &a.failing { code { (check) } " (" (agents(*n)) ") " }
            }
            p { "Policy versions applied: "
                @for (digest, n) in &a.policy_versions { code { (digest) } " (" (n) ") " }
            }
            h2 { "Compliance over the last " (hours) " hours" }
            @if points.is_empty() {
                p { "No sync reached the master in this span." }
            } @else {
                (chart(points, since, now))
                p.legend { span.ok { "━ compliant (%)" } " " span.error { "┅ threats" } " · " (points.len()) " syncs" }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(at: u64, local: &str, agents: u64, compliant: u64, threats: u64) -> HistoryPoint {
        HistoryPoint {
            at: WallClock(at),
            local: local.into(),
            counts: PlatformCounts { agents, compliant, threats, checks: agents, passed: compliant },
            silent: 0,
            platforms: BTreeMap::new(),
            locals: BTreeMap::new(),
        }
    }

    #[test]
    fn totals_sum_every_locals_latest_sync() {
        let points = [point(1, "a", 10, 10, 0), point(2, "b", 10, 0, 3), point(3, "a", 10, 5, 1)];
        let t = totals(&points);
        assert_eq!(
            t.iter().map(|t| (t.agents, t.threats)).collect::<Vec<_>>(),
            vec![(10, 0), (20, 3), (20, 4)]
        );
        assert_eq!(t.iter().map(|t| t.compliant_pct).collect::<Vec<_>>(), vec![100.0, 50.0, 25.0]);
    }

    #[test]
    fn the_chart_names_no_local_and_stays_inside_its_box() {
        let points: Vec<_> = (0..1000).map(|i| point(i * 1000, "<script>", 10, i % 11, i % 7)).collect();
        let svg = chart(&points, WallClock(0), WallClock(1_000_000)).into_string();
        assert!(!svg.contains("<script>"));
        let polyline = svg.split("points=\"").nth(1).expect("a line").split('"').next().expect("end");
        assert!(polyline.split(' ').count() <= CHART_POINTS + 2);
        for pair in polyline.split(' ') {
            let (x, y) = pair.split_once(',').expect("x,y");
            let (x, y): (f64, f64) = (x.parse().expect("x"), y.parse().expect("y"));
            assert!((0.0..=720.0).contains(&x) && (0.0..=240.0).contains(&y), "{pair}");
        }
    }
}
