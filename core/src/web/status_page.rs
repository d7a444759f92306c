//! The cluster's status in the console: this node's view of the members, their active and
//! staged versions, whether it is syncing, and when each was last heard. Owns how that view is
//! shown and served; the view itself is the member's (`node_status`). Any principal who is
//! logged in may read it: it names members and versions, never a setting's value.

use maud::{Markup, html};
use serde_json::json;

use super::console::{Sources, WebConsole};
use super::http::{WebRequest, WebResponse};
use super::pages::{self, Viewer};
use crate::admin::{NodeStatus, node_status};
use crate::member::Version;
use crate::time::Now;

impl WebConsole {
    /// `GET /status`.
    pub(super) fn status_page(&mut self, now: Now, web: &WebRequest, sources: Sources<'_>) -> WebResponse {
        let credential = match self.page_session(now, web) {
            Ok(credential) => credential,
            Err(refused) => return refused,
        };
        let csrf = self.csrf_for(&credential);
        let viewer = Viewer { principal: &credential.body.principal, csrf: &csrf };
        let status = sources.member.map(|m| node_status(m, now.mono));
        WebResponse::html(200, page(&viewer, status.as_ref()))
    }

    /// `GET /api/status`: `cluster` is null on a gateway that is not a member.
    pub(super) fn status_json(&mut self, now: Now, web: &WebRequest, sources: Sources<'_>) -> WebResponse {
        if let Err(refused) = self.api_session(now, web) {
            return refused;
        }
        let cluster = sources.member.map(|m| node_status(m, now.mono).to_json());
        WebResponse::json(200, &json!({ "cluster": cluster }))
    }
}

fn version(v: Option<Version>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// Milliseconds since last heard, the way a person reads it.
fn heard(ms: Option<u64>, is_self: bool) -> String {
    match (is_self, ms) {
        (true, _) => "this node".to_owned(),
        (false, None) => "never".to_owned(),
        (false, Some(ms)) if ms < 10_000 => format!("{:.1} s ago", ms as f64 / 1000.0),
        (false, Some(ms)) if ms < 120_000 => format!("{} s ago", ms / 1000),
        (false, Some(ms)) => format!("{} min ago", ms / 60_000),
    }
}

fn page(viewer: &Viewer<'_>, status: Option<&NodeStatus>) -> Markup {
    pages::layout(
        "status",
        Some(viewer),
        html! {
            h1 { "Cluster status" }
            @match status {
                None => p { "This gateway is not a cluster member, so it has no view of the cluster. Ask a member: "
                    code { "cohort status --node ADDRESS" } "." },
                Some(s) => {
                    p id="cluster" {
                        "Node " strong { (s.name) } " in cluster " code { (s.cluster_id) } ": active "
                        code { (s.active.to_string()) } ", staged " code { (version(s.staged)) } ", "
                        span class=(s.state()) { (s.state()) } "."
                    }
                    table id="members" {
                        thead { tr { th { "member" } th { "address" } th { "active" } th { "staged" } th { "last heard" } } }
                        tbody {
                            @for m in &s.members {
                                tr class=[m.is_self.then_some("self")] {
                                    td { (m.name) }
                                    td { (m.address) }
                                    td { code { (version(m.active)) } }
                                    td { code { (version(m.staged)) } }
                                    td { (heard(m.last_heard_ms, m.is_self)) }
                                }
                            }
                        }
                    }
                    @if !s.dropped.is_empty() {
                        h2 { "Messages dropped" }
                        ul { @for (why, n) in &s.dropped { li { (why) ": " (n) } } }
                    }
                }
            }
        },
    )
}
