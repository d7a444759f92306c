//! The console's pages, rendered on the server (maud escapes every value it interpolates, so a
//! host name, a principal or an error is text, never markup). Pages carry no inline script or
//! style: behaviour comes from `/static/console.js` under the Content-Security-Policy. Owns how
//! pages look; it never decides who may see them.

use maud::{DOCTYPE, Markup, html};

use crate::exec::acl::Limits;

/// Who is logged in, for the header and the forms.
#[derive(Debug, Clone)]
pub struct Viewer<'a> {
    pub principal: &'a str,
    pub csrf: &'a str,
}

pub(super) fn layout(title: &str, viewer: Option<&Viewer<'_>>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(v) = viewer {
                    meta name="cohort-csrf" content=(v.csrf);
                }
                title { "cohort · " (title) }
                link rel="stylesheet" href="/static/console.css";
                script src="/static/console.js" defer {}
            }
            body {
                header {
                    span.brand { "cohort" }
                    @if let Some(v) = viewer {
                        nav {
                            a href="/" { "Run" }
                            a href="/status" { "Status" }
                            a href="/policy" { "Policy" }
                            a href="/audit" { "Audit" }
                        }
                        form.logout method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(v.csrf);
                            span.who { (v.principal) }
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The login form; `error` says why the last attempt or the old session did not work.
pub fn login(csrf: &str, error: Option<&str>) -> Markup {
    layout(
        "log in",
        None,
        html! {
            h1 { "Log in" }
            @if let Some(error) = error {
                p.error role="alert" { (error) }
            }
            form id="login" method="post" action="/login" {
                input type="hidden" name="csrf" value=(csrf);
                label { "Principal" input name="principal" autocomplete="username" required autofocus; }
                label { "Password" input name="password" type="password" autocomplete="current-password" required; }
                button type="submit" { "Log in" }
            }
        },
    )
}

/// The command form and the place results stream into.
pub fn console(viewer: &Viewer<'_>, run_as: &[String], limits: &Limits, default_fanout: u32) -> Markup {
    let fanout = limits.max_fanout.min(default_fanout);
    layout(
        "run",
        Some(viewer),
        html! {
            h1 { "Run a command" }
            noscript { p.error { "The console streams results with JavaScript; enable it, or use the JSON API." } }
            form id="run" method="post" action="/api/exec" {
                label {
                    "Hosts " input id="nodes" name="nodes" placeholder="h[01-20],@web" required autocomplete="off";
                    output id="count" for="nodes" {}
                }
                label { "Command " input id="command" name="command" placeholder="uname -r" required autocomplete="off"; }
                label {
                    "Run as "
                    select name="run_as" {
                        @for user in run_as { option value=(user) { (user) } }
                    }
                }
                fieldset {
                    legend { "Limits (your ceilings: fan-out " (limits.max_fanout) ", T1+T2 " (limits.max_time_ms / 1000) " s)" }
                    label { "Fan-out " input name="fanout" type="number" min="1" max=(limits.max_fanout) value=(fanout); }
                    label { "T1 s " input name="t1" type="number" min="0" step="any" value="16"; }
                    label { "T2 s " input name="t2" type="number" min="0" step="any" value="32"; }
                    label { "T3 s " input name="t3" type="number" min="0" step="any" value="2"; }
                }
                button id="start" type="submit" { "Run" }
                button id="cancel" type="button" disabled { "Cancel" }
            }
            section id="results" aria-live="polite" {
                p id="status" {}
                p id="notes" {}
                div id="groups" {}
                div id="detail" {}
            }
        },
    )
}

/// A page for what went wrong, with no detail a visitor should not see.
pub fn problem(status_text: &str, message: &str) -> Markup {
    layout(
        status_text,
        None,
        html! {
            h1 { (status_text) }
            p.error { (message) }
            p { a href="/" { "Back to the console" } }
        },
    )
}
