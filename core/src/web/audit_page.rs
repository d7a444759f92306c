//! The audit trail in the console: newest first, filtered by principal and host, read from the
//! node's store a stretch at a time, and a verify of the whole trail. Owns who may read whose
//! records (a principal its own; one whose ACL entry says `audit`, everyone's) and how a listing
//! pages through the store. The chain's rules are the collector's and `verify_trail`'s; this never
//! holds more than one listing's rows, and never more than one verify's trail at a time.

use maud::{Markup, html};
use serde_json::json;

use super::console::{ConsoleOutput, WebConsole};
use super::http::{RequestId, WebRequest, WebResponse, field};
use super::pages::{self, Viewer};
use super::waiting::AuditAsk;
use crate::exec::audit_view::{
    AuditFilter, AuditRange, AuditRows, StoredEntry, audit_signers, decision_parts, row_json, utc_text,
    verify_stored,
};
use crate::exec::gateway::Gateway;
use crate::time::Now;

/// Entries a listing shows unless asked for another number, and at most.
const LIST_DEFAULT: usize = 50;
const LIST_MAX: usize = 500;
/// Rows asked of the store at a time while a filter finds too few.
const READ_STRETCH: u32 = 512;
/// Rows one listing looks through before it stops and offers to go on from there: a filter
/// that matches nothing must not read the whole trail on every request.
const SCAN_MAX: u64 = 20_000;
/// The longest principal or host name a filter takes.
const MAX_NAME: usize = 256;

/// How a verify came out, for the page and the API.
#[derive(Debug)]
struct Verdict {
    entries: u64,
    checkpoints: usize,
    error: Option<String>,
}

impl WebConsole {
    /// `GET /audit`, `GET /api/audit` (`json`), and their verify (`POST .../verify`): checks the
    /// session and what it may read, then asks the store.
    pub(super) fn audit(
        &mut self,
        now: Now,
        request: RequestId,
        web: &WebRequest,
        gateway: &Gateway,
        json: bool,
        verify: bool,
    ) -> Option<WebResponse> {
        let session = if json { self.api_session(now, web) } else { self.page_session(now, web) };
        let credential = match session {
            Ok(credential) => credential,
            Err(refused) => return Some(refused),
        };
        let me = credential.body.principal.clone();
        let page = (!json).then(|| (me.clone(), self.csrf_for(&credential)));
        let refuse = |status: u16, error: &str| match json {
            true => WebResponse::json(status, &json!({ "error": error })),
            false => WebResponse::html(status, pages::problem("Audit trail", error)),
        };
        let query = web.query_pairs();
        let (mut filter, before, limit) = match read_query(&query) {
            Ok(read) => read,
            Err(e) => return Some(refuse(400, &e)),
        };
        let reads_all = gateway.directory().acl.principals.get(&me).is_some_and(|entry| entry.audit);
        if !reads_all {
            if filter.principal.as_ref().is_some_and(|p| *p != me) {
                let error = "you may read only your own audit records (the ACL gives `audit` to those who may read all)";
                return Some(refuse(403, error));
            }
            filter.principal = Some(me);
        }
        if verify && self.verifying {
            return Some(refuse(429, "a verify of the audit trail is already running; try again shortly"));
        }
        self.verifying |= verify;
        let range = match verify {
            true => AuditRange::Whole,
            false => AuditRange::Newest { before, count: READ_STRETCH },
        };
        let ask = AuditAsk { request, page, filter, limit, found: Vec::new(), scanned: 0, verify };
        self.ask_store(ask, range);
        None
    }

    fn ask_store(&mut self, ask: AuditAsk, range: AuditRange) {
        let read = self.next_read;
        self.next_read += 1;
        self.reads.insert(read, ask);
        self.push(ConsoleOutput::ReadAudit { read, range });
    }

    /// What the store read for `read`: the listing goes on or is answered.
    pub fn handle_audit_read(&mut self, read: u64, rows: Result<AuditRows, String>, gateway: &Gateway) {
        let Some(mut ask) = self.reads.remove(&read) else { return };
        if ask.verify {
            self.verifying = false;
        }
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                let error = format!("the audit trail could not be read: {e}");
                let response = match ask.page {
                    Some(_) => WebResponse::html(500, pages::problem("Audit trail", &error)),
                    None => WebResponse::json(500, &json!({ "error": error })),
                };
                self.respond(ask.request, response);
                return;
            }
        };
        let verdict = ask.verify.then(|| self.verdict(&rows, gateway));
        // A verify read the trail oldest first; a listing's stretch comes newest first.
        let newest_first: Box<dyn Iterator<Item = StoredEntry>> = match ask.verify {
            true => Box::new(rows.rows.into_iter().rev()),
            false => Box::new(rows.rows.into_iter()),
        };
        let mut lowest = None;
        let mut read_rows = 0u64;
        let mut cursor = None;
        for row in newest_first {
            read_rows += 1;
            lowest = Some(row.index());
            if ask.filter.matches(&row) {
                ask.found.push(row);
                if ask.found.len() == ask.limit {
                    cursor = lowest;
                    break;
                }
            }
        }
        ask.scanned += read_rows;
        let more_in_store =
            !ask.verify && read_rows == u64::from(READ_STRETCH) && lowest.is_some_and(|l| l > 0);
        if cursor.is_none() && more_in_store {
            if ask.scanned < SCAN_MAX {
                self.ask_store(ask, AuditRange::Newest { before: lowest, count: READ_STRETCH });
                return;
            }
            cursor = lowest;
        }
        let response = answer(&ask, cursor, verdict.as_ref());
        self.respond(ask.request, response);
    }

    /// Checks every row, link, host signature and checkpoint against the keys the installed
    /// configuration gives.
    fn verdict(&self, rows: &AuditRows, gateway: &Gateway) -> Verdict {
        let signers = audit_signers(gateway.directory(), self.collector);
        let checkpoints = rows.checkpoints.len();
        match verify_stored(&rows.rows, &signers, &self.collector, &rows.checkpoints) {
            Ok(entries) => Verdict { entries, checkpoints, error: None },
            Err(e) => Verdict { entries: rows.rows.len() as u64, checkpoints, error: Some(e.to_string()) },
        }
    }

    /// Drops the reads a browser that left was waiting on.
    pub(super) fn forget_reads(&mut self, request: RequestId) {
        let verifying = self.reads.values().any(|a| a.request == request && a.verify);
        self.reads.retain(|_, ask| ask.request != request);
        if verifying {
            self.verifying = false;
        }
    }
}

/// The filter, cursor and length a listing's query asks for.
fn read_query(query: &[(String, String)]) -> Result<(AuditFilter, Option<u64>, usize), String> {
    let name = |key: &str| -> Result<Option<String>, String> {
        match field(query, key).map(str::trim).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) if v.len() > MAX_NAME || v.chars().any(char::is_control) => {
                Err(format!("`{key}` must be a name of at most {MAX_NAME} printable characters"))
            }
            Some(v) => Ok(Some(v.to_owned())),
        }
    };
    let filter = AuditFilter { principal: name("principal")?, host: name("host")? };
    let before = match field(query, "before").filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| format!("before `{v}` is not an entry number"))?),
    };
    let limit = match field(query, "limit").filter(|v| !v.is_empty()) {
        None => LIST_DEFAULT,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=LIST_MAX).contains(n))
            .ok_or_else(|| format!("limit `{v}` is not a number from 1 to {LIST_MAX}"))?,
    };
    Ok((filter, before, limit))
}

fn answer(ask: &AuditAsk, cursor: Option<u64>, verdict: Option<&Verdict>) -> WebResponse {
    match &ask.page {
        None => {
            let mut body = json!({
                "entries": ask.found.iter().map(row_json).collect::<Vec<_>>(),
                "next_before": cursor,
                "scanned": ask.scanned,
                "filter": { "principal": ask.filter.principal, "host": ask.filter.host },
            });
            if let Some(v) = verdict {
                body["verify"] = json!({
                    "intact": v.error.is_none(),
                    "entries": v.entries,
                    "checkpoints": v.checkpoints,
                    "error": v.error,
                });
            }
            WebResponse::json(200, &body)
        }
        Some((principal, csrf)) => {
            let viewer = Viewer { principal, csrf };
            WebResponse::html(200, page(&viewer, ask, cursor, verdict))
        }
    }
}

fn page(viewer: &Viewer<'_>, ask: &AuditAsk, cursor: Option<u64>, verdict: Option<&Verdict>) -> Markup {
    let principal = ask.filter.principal.as_deref().unwrap_or("");
    let host = ask.filter.host.as_deref().unwrap_or("");
    let older = cursor.map(|before| {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("principal", principal)
            .append_pair("host", host)
            .append_pair("before", &before.to_string())
            .finish();
        format!("/audit?{query}")
    });
    pages::layout(
        "audit",
        Some(viewer),
        html! {
            h1 { "Audit trail" }
            @if let Some(v) = verdict {
                @match &v.error {
                    None => p.ok id="verify" role="status" {
                        "Intact: " (v.entries) " entries, every link and host signature and "
                        (v.checkpoints) " checkpoints verified."
                    },
                    Some(e) => p.error id="verify" role="alert" { "Broken: " (e) },
                }
            }
            form.filters id="audit-filter" method="get" action="/audit" {
                label { "Principal " input name="principal" value=(principal) autocomplete="off"; }
                label { "Host " input name="host" value=(host) autocomplete="off"; }
                button type="submit" { "Filter" }
            }
            form.verify method="post" action="/audit/verify" {
                input type="hidden" name="csrf" value=(viewer.csrf);
                button id="verify-trail" type="submit" { "Verify the whole trail" }
            }
            table id="audit" {
                thead { tr { th { "#" } th { "time (UTC)" } th { "host" } th { "principal" } th { "as" } th { "command" } th { "decision" } } }
                tbody {
                    @for row in &ask.found { (audit_row(row)) }
                }
            }
            @if ask.found.is_empty() { p { "No entries match." } }
            @if let Some(href) = older { p { a id="older" href=(href) { "Older entries" } } }
        },
    )
}

fn audit_row(row: &StoredEntry) -> Markup {
    match row {
        StoredEntry::Entry(entry) => {
            let r = &entry.record;
            let (decision, detail) = decision_parts(&r.decision);
            html! {
                tr {
                    td { (entry.index) }
                    td { (utc_text(r.at.0)) }
                    td { (r.host) }
                    td { (r.principal) }
                    td { (if r.run_as.is_empty() { "-" } else { &r.run_as }) }
                    td.command { code { (r.subject()) } }
                    td class=(decision) { (decision) @if let Some(d) = detail { ": " (d) } }
                }
            }
        }
        StoredEntry::Undecodable { index, reason } => html! {
            tr.broken { td { (index) } td colspan="6" { "does not decode: " (reason) } }
        },
    }
}
