//! The web console: the seed's browser client, served by the gateway. It turns each web request
//! into what the gateway understands (a login passed to the KDC, an exec with the credential the
//! browser brought back) and the gateway's answers into pages, cookies and streamed results. It
//! keeps nothing between requests but rate-limit counters and the runs in progress: the
//! credential lives sealed in the browser's cookie. Owns the routes, the cookie and CSRF checks,
//! and the login limits; the gateway owns every exec rule, and the KDC every login rule.

use std::collections::{BTreeMap, VecDeque};

use rand_core::RngCore;
use serde_json::json;

use super::forms::{DEFAULT_FANOUT, exec_command, read_fields};
use super::http::{Method, RequestId, WebRequest, WebResponse, field};
use super::limiter::LoginLimiter;
use super::pages::{self, Viewer};
use super::run_view::RunView;
use super::session::{
    ConsoleKeys, CookieError, LOGIN_COOKIE, LoggedOut, SESSION_COOKIE, clear_cookie, cookie,
};
use super::waiting::{AuditAsk, PolicyAsk};
use crate::exec::audit_view::AuditRange;
use crate::exec::gateway::{ClientEvent, ClientRequest, Gateway, GatewayInput};
use crate::exec::report::{host_json, summary_of};
use crate::exec::ticket::Credential;
use crate::identity::{NodeKeys, PublicIdentity};
use crate::member::Member;
use crate::policy::wire::PolicyAdmin;
use crate::rng::SeededRng;
use crate::signed::Signed;
use crate::time::{Now, WallClock};

/// A login form is good for this long.
const LOGIN_FORM_SECS: u64 = 3600;
/// Gateway client ids of the console's requests: bit 62, apart from connection ids (bit 63 for
/// inbound, small numbers for outbound).
const WEB_CLIENT: u64 = 1 << 62;

/// What the console asks of the driver or the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleOutput {
    /// The answer to `request`: whole, or (when the response says `streamed`) followed by chunks.
    Respond { request: RequestId, response: WebResponse },
    /// More of a streamed body; the last one ends it.
    Chunk { request: RequestId, bytes: Vec<u8>, last: bool },
    /// For the gateway, as if from a client.
    Gateway(GatewayInput),
    /// Read `range` of the node's audit trail; the rows come back to
    /// [`WebConsole::handle_audit_read`] with the same `read`.
    ReadAudit { read: u64, range: AuditRange },
    /// Ask the policy tier's master `request`, signed with the gateway's key, on a channel of
    /// its own; the answer comes back to [`WebConsole::handle_policy_reply`] with the same `ask`.
    AskPolicy { ask: u64, request: PolicyAdmin },
    /// A session cookie that opened was refused all the same: its session was logged out.
    LoggedOutSessionRefused { principal: String },
}

/// What the console reads from the rest of the node to answer a request.
#[derive(Debug, Clone, Copy)]
pub struct Sources<'a> {
    /// Node-set expansion, the principal's ACL entry and ceilings, the hosts' keys.
    pub gateway: &'a Gateway,
    /// This node's cluster member, when it is one: the status page's view.
    pub member: Option<&'a Member>,
}

/// A request waiting on the gateway, by gateway client id.
#[derive(Debug)]
enum Waiting {
    Login { request: RequestId, principal: String, form: bool },
    Run(Box<RunView>),
}

/// The console. See the module docs.
#[derive(Debug)]
pub struct WebConsole {
    keys: ConsoleKeys,
    /// The gateway's key: it signs the gateway's own audit records and the collector's
    /// checkpoints, so a verify checks both against it.
    pub(super) collector: PublicIdentity,
    limiter: LoginLimiter,
    rng: SeededRng,
    waiting: BTreeMap<u64, Waiting>,
    clients: BTreeMap<RequestId, u64>,
    next_client: u64,
    /// Listings and verifies waiting on a read of the audit trail, by read.
    pub(super) reads: BTreeMap<u64, AuditAsk>,
    pub(super) next_read: u64,
    /// A verify reads the whole trail: one at a time.
    pub(super) verifying: bool,
    /// Whether the gateway may ask the policy tier's master (it is set up with its address).
    pub(super) policy_master: bool,
    /// Requests waiting on the master, by ask.
    pub(super) policy_asks: BTreeMap<u64, PolicyAsk>,
    /// Sessions ended by a logout before they expire: a copy of the cookie kept elsewhere
    /// opens no more than the browser's own did.
    logged_out: LoggedOut,
    outputs: VecDeque<ConsoleOutput>,
}

/// The session a request brought, or why it brought none that counts.
enum Session {
    Valid(Box<Signed<Credential>>),
    None,
    Refused(CookieError),
}

impl WebConsole {
    pub fn new(keys: &NodeKeys, rng: SeededRng) -> WebConsole {
        WebConsole {
            keys: ConsoleKeys::derive(keys),
            collector: keys.public(),
            limiter: LoginLimiter::default(),
            rng,
            waiting: BTreeMap::new(),
            clients: BTreeMap::new(),
            next_client: 1,
            reads: BTreeMap::new(),
            next_read: 1,
            verifying: false,
            policy_master: false,
            policy_asks: BTreeMap::new(),
            logged_out: LoggedOut::default(),
            outputs: VecDeque::new(),
        }
    }

    #[cfg(test)]
    pub(super) fn keys(&self) -> &ConsoleKeys {
        &self.keys
    }

    /// The gateway can ask the policy tier's master: the policy pages are served.
    pub fn serve_policy(&mut self) {
        self.policy_master = true;
    }

    /// A fresh id for a question to the policy master: tagged like the console's gateway
    /// clients, so it never meets the gateway's own connection numbers.
    pub(super) fn next_policy_ask(&mut self) -> u64 {
        let ask = WEB_CLIENT | self.next_client;
        self.next_client += 1;
        ask
    }

    /// Whether gateway client `client` is one of the console's requests.
    pub fn owns(client: u64) -> bool {
        client & WEB_CLIENT != 0 && client & (1 << 63) == 0
    }

    pub fn poll_output(&mut self) -> Option<ConsoleOutput> {
        self.outputs.pop_front()
    }

    pub(super) fn push(&mut self, output: ConsoleOutput) {
        self.outputs.push_back(output);
    }

    pub(super) fn respond(&mut self, request: RequestId, response: WebResponse) {
        self.outputs.push_back(ConsoleOutput::Respond { request, response });
    }

    fn chunk(&mut self, request: RequestId, event: &serde_json::Value, last: bool) {
        let mut bytes = event.to_string().into_bytes();
        bytes.push(b'\n');
        self.outputs.push_back(ConsoleOutput::Chunk { request, bytes, last });
    }

    fn session(&mut self, request: &WebRequest, wall: WallClock) -> Session {
        match request.cookie(SESSION_COOKIE).filter(|c| !c.is_empty()) {
            None => Session::None,
            Some(sealed) => match self.keys.open(sealed, wall) {
                Ok(credential) if self.logged_out.ended(&credential.body) => {
                    let principal = credential.body.principal.chars().take(64).collect();
                    self.outputs.push_back(ConsoleOutput::LoggedOutSessionRefused { principal });
                    Session::Refused(CookieError::LoggedOut)
                }
                Ok(credential) => Session::Valid(Box::new(credential)),
                Err(e) => Session::Refused(e),
            },
        }
    }

    /// A request from a browser or script.
    pub fn handle_request(&mut self, now: Now, request: RequestId, web: WebRequest, sources: Sources<'_>) {
        let gateway = sources.gateway;
        let response = match (&web.method, web.path.as_str()) {
            (Method::Get, "/static/console.js") => {
                Some(WebResponse::asset("text/javascript; charset=utf-8", super::CONSOLE_JS))
            }
            (Method::Get, "/static/console.css") => {
                Some(WebResponse::asset("text/css; charset=utf-8", super::CONSOLE_CSS))
            }
            (Method::Get, "/") => Some(self.home(now, &web, gateway)),
            (Method::Get, "/login") => {
                let why = field(&web.query_pairs(), "why").and_then(why_text);
                Some(self.login_page(200, why))
            }
            (Method::Post, "/login") => self.login(now, request, &web, true),
            (Method::Post, "/api/login") => self.login(now, request, &web, false),
            (Method::Post, "/logout") => Some(self.logout(now, &web)),
            (Method::Get, "/api/expand") => Some(self.expand(now, &web, gateway)),
            (Method::Post, "/api/exec") => self.exec(now, request, &web),
            (Method::Post, path) if path.starts_with("/api/runs/") && path.ends_with("/cancel") => {
                Some(self.cancel(now, &web))
            }
            (Method::Get, "/policy") => self.policy_page(now, request, &web),
            (Method::Get, "/api/policy") => self.policy_json(now, request, &web, false),
            (Method::Get, "/api/policy/history") => self.policy_json(now, request, &web, true),
            (Method::Get, "/status") => Some(self.status_page(now, &web, sources)),
            (Method::Get, "/api/status") => Some(self.status_json(now, &web, sources)),
            (Method::Get, "/audit") => self.audit(now, request, &web, gateway, false, false),
            (Method::Get, "/api/audit") => self.audit(now, request, &web, gateway, true, false),
            (Method::Post, "/audit/verify") => self.audit(now, request, &web, gateway, false, true),
            (Method::Post, "/api/audit/verify") => self.audit(now, request, &web, gateway, true, true),
            (Method::Get | Method::Post, _) => {
                Some(WebResponse::html(404, pages::problem("Not found", "There is no such page.")))
            }
            (Method::Other(_), _) => {
                let mut response =
                    WebResponse::html(405, pages::problem("Method not allowed", "Use GET or POST."));
                response.set("allow", "GET, POST");
                Some(response)
            }
        };
        if let Some(response) = response {
            self.respond(request, response);
        }
    }

    fn login_page(&mut self, status: u16, error: Option<&str>) -> WebResponse {
        let mut nonce = [0u8; 16];
        self.rng.fill_bytes(&mut nonce);
        let nonce = hex::encode(nonce);
        let token = self.keys.login_token(&nonce);
        WebResponse::html(status, pages::login(&token, error)).set_cookie(cookie(
            LOGIN_COOKIE,
            &nonce,
            LOGIN_FORM_SECS,
        ))
    }

    /// Back to the login form, the session cookie cleared, saying why.
    fn back_to_login(&self, error: &CookieError) -> WebResponse {
        WebResponse::see_other(&format!("/login?why={}", error.why()))
            .set_cookie(clear_cookie(SESSION_COOKIE))
    }

    /// The session of a page request: none or a bad one sends the browser to the login form.
    /// A POST must carry the page's CSRF token in its form.
    pub(super) fn page_session(
        &mut self,
        now: Now,
        web: &WebRequest,
    ) -> Result<Signed<Credential>, WebResponse> {
        let credential = match self.session(web, now.wall) {
            Session::Valid(credential) => *credential,
            Session::None => return Err(WebResponse::see_other("/login")),
            Session::Refused(e) => return Err(self.back_to_login(&e)),
        };
        if web.method == Method::Post {
            let token = self.keys.csrf_token(&credential);
            let presented = read_fields(web).ok();
            if !ConsoleKeys::same_token(&token, presented.as_deref().and_then(|p| field(p, "csrf"))) {
                let text = "The form was stale; reload the page.";
                return Err(WebResponse::html(403, pages::problem("Forbidden", text)));
            }
        }
        Ok(credential)
    }

    /// Who is logged in, for a page's header and forms.
    pub(super) fn csrf_for(&self, credential: &Signed<Credential>) -> String {
        self.keys.csrf_token(credential)
    }

    fn home(&mut self, now: Now, web: &WebRequest, gateway: &Gateway) -> WebResponse {
        match self.session(web, now.wall) {
            Session::Valid(credential) => {
                let principal = credential.body.principal.clone();
                let csrf = self.keys.csrf_token(&credential);
                let directory = gateway.directory();
                let run_as: Vec<String> = directory
                    .acl
                    .principals
                    .get(&principal)
                    .map(|entry| entry.run_as.iter().cloned().collect())
                    .unwrap_or_default();
                let limits = directory.acl.limits(&principal);
                let viewer = Viewer { principal: &principal, csrf: &csrf };
                WebResponse::html(200, pages::console(&viewer, &run_as, &limits, DEFAULT_FANOUT))
            }
            Session::None => WebResponse::see_other("/login"),
            Session::Refused(e) => self.back_to_login(&e),
        }
    }

    /// A login, from the form (`form`) or a script. The password goes to the KDC through the
    /// gateway and is not kept.
    fn login(&mut self, now: Now, request: RequestId, web: &WebRequest, form: bool) -> Option<WebResponse> {
        let pairs = match read_fields(web) {
            Ok(pairs) => pairs,
            Err(e) => return Some(self.login_refused(form, 400, &e)),
        };
        if form {
            let token = web.cookie(LOGIN_COOKIE).map(|nonce| self.keys.login_token(nonce));
            let fresh = token.is_some_and(|t| ConsoleKeys::same_token(&t, field(&pairs, "csrf")));
            if !fresh {
                return Some(self.login_refused(
                    form,
                    403,
                    "the login form was stale or not ours; try again",
                ));
            }
        }
        let (Some(principal), Some(password)) = (field(&pairs, "principal"), field(&pairs, "password"))
        else {
            return Some(self.login_refused(form, 400, "a login needs a principal and a password"));
        };
        let principal = principal.trim().to_owned();
        if let Err(limited) = self.limiter.attempt(now.mono, &web.peer, &principal) {
            return Some(self.login_refused(form, 429, &limited.to_string()));
        }
        // The credential is bound to a key no client holds: it is usable only inside a cookie
        // this gateway sealed, never over another channel.
        let mut binding = [0u8; 32];
        self.rng.fill_bytes(&mut binding);
        let client = self.client_for(request);
        self.waiting.insert(client, Waiting::Login { request, principal: principal.clone(), form });
        let request = ClientRequest::Login { principal, password: password.to_owned() };
        self.outputs.push_back(ConsoleOutput::Gateway(GatewayInput::Client {
            client,
            client_key: binding,
            request,
        }));
        None
    }

    fn login_refused(&mut self, form: bool, status: u16, error: &str) -> WebResponse {
        match form {
            true => self.login_page(status, Some(error)),
            false => WebResponse::json(status, &json!({ "error": error })),
        }
    }

    fn client_for(&mut self, request: RequestId) -> u64 {
        let client = WEB_CLIENT | self.next_client;
        self.next_client += 1;
        self.clients.insert(request, client);
        client
    }

    fn logout(&mut self, now: Now, web: &WebRequest) -> WebResponse {
        // A forged logout is harmless but refused all the same: every form carries its token.
        if let Session::Valid(credential) = self.session(web, now.wall) {
            let presented = read_fields(web).ok();
            let token = self.keys.csrf_token(&credential);
            if !ConsoleKeys::same_token(&token, presented.as_deref().and_then(|p| field(p, "csrf"))) {
                return WebResponse::html(
                    403,
                    pages::problem("Forbidden", "The form was stale; reload the page."),
                );
            }
            self.logged_out.end(&credential.body, now.wall);
        }
        WebResponse::see_other("/login").set_cookie(clear_cookie(SESSION_COOKIE))
    }

    /// The session of an API request, with its CSRF token checked for a POST.
    pub(super) fn api_session(
        &mut self,
        now: Now,
        web: &WebRequest,
    ) -> Result<Signed<Credential>, WebResponse> {
        let credential = match self.session(web, now.wall) {
            Session::Valid(credential) => *credential,
            Session::None => {
                return Err(WebResponse::json(401, &json!({ "error": "log in first", "why": "none" })));
            }
            Session::Refused(e) => {
                let response = WebResponse::json(401, &json!({ "error": e.to_string(), "why": e.why() }));
                return Err(response.set_cookie(clear_cookie(SESSION_COOKIE)));
            }
        };
        if web.method == Method::Post {
            let token = self.keys.csrf_token(&credential);
            if !ConsoleKeys::same_token(&token, web.header("x-cohort-csrf")) {
                let error = "missing or wrong CSRF token (send the page's token as X-Cohort-CSRF)";
                return Err(WebResponse::json(403, &json!({ "error": error })));
            }
        }
        Ok(credential)
    }

    fn expand(&mut self, now: Now, web: &WebRequest, gateway: &Gateway) -> WebResponse {
        if let Err(refused) = self.api_session(now, web) {
            return refused;
        }
        let pairs = web.query_pairs();
        let Some(nodes) = field(&pairs, "nodes") else {
            return WebResponse::json(400, &json!({ "error": "give the node set as ?nodes=" }));
        };
        match gateway.expand(&[nodes.to_owned()]) {
            Ok(hosts) => WebResponse::json(200, &json!({ "count": hosts.len() })),
            Err(e) => WebResponse::json(400, &json!({ "error": e })),
        }
    }

    /// A run: the gateway checks the credential, the ACL and the ceilings; results stream back
    /// as JSON lines.
    fn exec(&mut self, now: Now, request: RequestId, web: &WebRequest) -> Option<WebResponse> {
        let credential = match self.api_session(now, web) {
            Ok(credential) => credential,
            Err(refused) => return Some(refused),
        };
        let command = match read_fields(web).and_then(|pairs| exec_command(&pairs, credential)) {
            Ok(command) => command,
            Err(e) => return Some(WebResponse::json(400, &json!({ "error": e }))),
        };
        let principal = command.credential.body.principal.clone();
        let client_key = command.credential.body.client_key;
        let client = self.client_for(request);
        let view = RunView { request, principal, accepted: false, ends: Vec::new(), groups: BTreeMap::new() };
        self.waiting.insert(client, Waiting::Run(Box::new(view)));
        let request = ClientRequest::Exec(Box::new(command));
        self.outputs.push_back(ConsoleOutput::Gateway(GatewayInput::Client { client, client_key, request }));
        None
    }

    fn cancel(&mut self, now: Now, web: &WebRequest) -> WebResponse {
        let credential = match self.api_session(now, web) {
            Ok(credential) => credential,
            Err(refused) => return refused,
        };
        let run = web.path.trim_start_matches("/api/runs/").trim_end_matches("/cancel").parse::<u64>().ok();
        let client = run.map(|r| WEB_CLIENT | r);
        let mine = client.filter(|c| {
            matches!(self.waiting.get(c), Some(Waiting::Run(v)) if v.principal == credential.body.principal)
        });
        let Some(client) = mine else {
            return WebResponse::json(404, &json!({ "error": "no run of yours by that number is running" }));
        };
        self.end_run(client, "cancelled");
        WebResponse::json(200, &json!({ "cancelled": client & !WEB_CLIENT }))
    }

    /// Ends a run early: the gateway cancels its sessions (the hosts kill the commands) and the
    /// stream ends saying so.
    fn end_run(&mut self, client: u64, event: &str) {
        if let Some(Waiting::Run(view)) = self.waiting.remove(&client) {
            self.clients.remove(&view.request);
            self.outputs.push_back(ConsoleOutput::Gateway(GatewayInput::ClientGone { client }));
            if view.accepted {
                let summary = summary_of(view.ends.iter().map(|(h, o)| (h.as_str(), o)));
                self.chunk(view.request, &json!({ "event": event, "summary": summary }), true);
            }
        }
    }

    /// The browser went away before its answer was complete.
    pub fn handle_gone(&mut self, request: RequestId) {
        self.forget_reads(request);
        self.forget_policy_asks(request);
        let Some(client) = self.clients.remove(&request) else { return };
        match self.waiting.get(&client) {
            Some(Waiting::Run(_)) => self.end_run(client, "cancelled"),
            // The login still completes at the KDC; its answer finds no one and is dropped.
            _ => drop(self.waiting.remove(&client)),
        }
    }

    /// What the gateway said to console client `client`.
    pub fn handle_event(&mut self, now: Now, client: u64, event: ClientEvent) {
        let Some(waiting) = self.waiting.remove(&client) else { return };
        match waiting {
            Waiting::Login { request, principal, form } => {
                self.clients.remove(&request);
                let response = match event {
                    ClientEvent::LoggedIn { credential } => self.logged_in(now, &credential, form),
                    ClientEvent::Refused { reason } => {
                        self.limiter.failed(now.mono, &principal);
                        self.login_refused(form, 401, &reason)
                    }
                    other => {
                        let reason = format!("the gateway answered a login with {}", event_kind(&other));
                        self.login_refused(form, 502, &reason)
                    }
                };
                self.respond(request, response);
            }
            Waiting::Run(mut view) => {
                let request = view.request;
                match event {
                    ClientEvent::Accepted { hosts } => {
                        view.accepted = true;
                        self.respond(request, WebResponse::json_lines());
                        let run = client & !WEB_CLIENT;
                        self.chunk(
                            request,
                            &json!({ "event": "accepted", "run": run, "hosts": hosts }),
                            false,
                        );
                    }
                    ClientEvent::Lowered(lowered) => {
                        let note =
                            lowered.ceilings.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
                        self.chunk(request, &json!({ "event": "lowered", "note": note }), false);
                    }
                    ClientEvent::Host(result) => {
                        self.chunk(request, &json!({ "event": "host", "result": host_json(&result) }), false);
                        view.record(&result);
                    }
                    ClientEvent::Finished => {
                        self.clients.remove(&request);
                        let event = view.finished();
                        self.chunk(request, &event, true);
                        return;
                    }
                    ClientEvent::Refused { reason } => {
                        self.clients.remove(&request);
                        match view.accepted {
                            true => {
                                self.chunk(request, &json!({ "event": "refused", "reason": reason }), true)
                            }
                            false => {
                                self.respond(request, WebResponse::json(403, &json!({ "error": reason })))
                            }
                        }
                        return;
                    }
                    ClientEvent::LoggedIn { .. } => {}
                }
                self.waiting.insert(client, Waiting::Run(view));
            }
        }
    }

    fn logged_in(&mut self, now: Now, credential: &Signed<Credential>, form: bool) -> WebResponse {
        let sealed = self.keys.seal(credential, &mut self.rng);
        let lifetime = credential.body.expires.0.saturating_sub(now.wall.0) / 1000;
        let session = cookie(SESSION_COOKIE, &sealed, lifetime);
        match form {
            true => WebResponse::see_other("/").set_cookie(session).set_cookie(clear_cookie(LOGIN_COOKIE)),
            false => {
                let body = json!({
                    "principal": credential.body.principal,
                    "expires_unix_ms": credential.body.expires.0,
                    "csrf": self.keys.csrf_token(credential),
                });
                WebResponse::json(200, &body).set_cookie(session)
            }
        }
    }
}

/// The login page's words for why the browser was sent back to it (a fixed set: the query is
/// never echoed).
fn why_text(why: &str) -> Option<&'static str> {
    match why {
        "expired" => Some("Your session has expired; log in again."),
        "logged-out" => Some("That session was logged out; log in again."),
        "tampered" => {
            Some("Your session cookie could not be read (altered, or from another gateway); log in again.")
        }
        _ => None,
    }
}

fn event_kind(event: &ClientEvent) -> &'static str {
    match event {
        ClientEvent::LoggedIn { .. } => "a credential",
        ClientEvent::Refused { .. } => "a refusal",
        ClientEvent::Accepted { .. } => "a run's acceptance",
        ClientEvent::Lowered(_) => "a lowered run",
        ClientEvent::Host(_) => "a host's result",
        ClientEvent::Finished => "a run's end",
    }
}
