//! The console's rules on their own: the gateway it talks to is answered by hand here; the
//! whole path (KDC, hosts, audit) runs in the node tests and the simulation.

use super::*;
use crate::exec::gateway::{ClientEvent, ClientRequest, Gateway, GatewayInput, HostOutcome, HostResult};
use crate::exec::ticket::Credential;
use crate::identity::NodeKeys;
use crate::rng::seeded;
use crate::signed::Signed;
use crate::time::{Instant, Now, WallClock};

const NOW: Now = Now::new(Instant::from_nanos(1), WallClock(1_900_000_000_000));

mod audit;

struct Bench {
    console: WebConsole,
    gateway: Gateway,
    kdc: NodeKeys,
    /// The gateway's key: the collector's too.
    keys: NodeKeys,
    next: u64,
}

impl Bench {
    fn new() -> Bench {
        let mut rng = seeded(11);
        let kdc = NodeKeys::generate(&mut rng);
        let keys = NodeKeys::generate(&mut rng);
        Bench {
            console: WebConsole::new(&keys, seeded(12)),
            gateway: Gateway::new(kdc.public(), keys.clone(), seeded(13)),
            kdc,
            keys,
            next: 0,
        }
    }

    /// Sends one request; returns its id and everything the console said.
    fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (RequestId, Vec<ConsoleOutput>) {
        self.next += 1;
        let id = RequestId(self.next);
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let request = WebRequest {
            method,
            path: path.into(),
            query: query.into(),
            headers: headers.iter().map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec())).collect(),
            body: body.as_bytes().to_vec(),
            peer: "192.0.2.7".into(),
        };
        self.console.handle_request(NOW, id, request, Sources { gateway: &self.gateway, member: None });
        (id, self.drain())
    }

    fn drain(&mut self) -> Vec<ConsoleOutput> {
        std::iter::from_fn(|| self.console.poll_output()).collect()
    }

    fn credential(&self, principal: &str) -> Signed<Credential> {
        let body = Credential {
            principal: principal.into(),
            client_key: [5; 32],
            issued: NOW.wall,
            expires: WallClock(NOW.wall.0 + 3_600_000),
            id: [principal.len() as u8; 16],
        };
        Signed::sign(body, &self.kdc).expect("signs")
    }

    /// Logs `principal` in through the form; returns the session cookie header and CSRF token.
    fn log_in(&mut self, principal: &str) -> (String, String) {
        let (_, out) = self.send(Method::Get, "/login", &[], "");
        let page = only_response(&out);
        let nonce = set_cookie(page, LOGIN_COOKIE).expect("a login cookie");
        let token = between(&body(page), "name=\"csrf\" value=\"", "\"");
        let form = format!("csrf={token}&principal={principal}&password=pw");
        let cookie = format!("{LOGIN_COOKIE}={nonce}");
        let (id, out) = self.send(Method::Post, "/login", &form_headers(&cookie), &form);
        let [
            ConsoleOutput::Gateway(GatewayInput::Client {
                client, request: ClientRequest::Login { .. }, ..
            }),
        ] = out.as_slice()
        else {
            panic!("the login goes to the gateway: {out:?}")
        };
        let credential = self.credential(principal);
        self.console.handle_event(NOW, *client, ClientEvent::LoggedIn { credential: credential.clone() });
        let out = self.drain();
        let ConsoleOutput::Respond { request, response } = &out[0] else { panic!("{out:?}") };
        assert_eq!((*request, response.status), (id, 303));
        let sealed = set_cookie(response, SESSION_COOKIE).expect("a session cookie");
        let header =
            response.headers.iter().find(|(n, v)| n == "set-cookie" && v.starts_with(SESSION_COOKIE));
        let header = &header.expect("set").1;
        for part in ["Secure", "HttpOnly", "SameSite=Strict", "Max-Age=3600"] {
            assert!(header.contains(part), "{header}");
        }
        (format!("{SESSION_COOKIE}={sealed}"), self.console.keys().csrf_token(&credential))
    }
}

fn form_headers(cookie: &str) -> Vec<(&'static str, &str)> {
    vec![("content-type", "application/x-www-form-urlencoded"), ("cookie", cookie)]
}

fn only_response(out: &[ConsoleOutput]) -> &WebResponse {
    match out {
        [ConsoleOutput::Respond { response, .. }] => response,
        _ => panic!("one response expected: {out:?}"),
    }
}

fn body(response: &WebResponse) -> String {
    String::from_utf8(response.body.clone()).expect("utf-8")
}

fn header<'a>(response: &'a WebResponse, name: &str) -> Option<&'a str> {
    response.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

fn set_cookie(response: &WebResponse, name: &str) -> Option<String> {
    response
        .headers
        .iter()
        .filter(|(n, _)| n == "set-cookie")
        .filter_map(|(_, v)| v.strip_prefix(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap_or_default().to_owned())
        .next()
}

fn between(text: &str, start: &str, end: &str) -> String {
    let from = text.find(start).expect("start marker") + start.len();
    text[from..].split(end).next().expect("end marker").to_owned()
}

#[test]
fn a_visitor_without_a_session_gets_the_login_form_with_its_own_token_and_strict_headers() {
    let mut bench = Bench::new();
    let (_, out) = bench.send(Method::Get, "/", &[], "");
    assert_eq!(header(only_response(&out), "location"), Some("/login"));
    let (_, out) = bench.send(Method::Get, "/login", &[], "");
    let page = only_response(&out);
    assert_eq!(page.status, 200);
    assert_eq!(header(page, "content-security-policy"), Some(CONTENT_SECURITY_POLICY));
    assert!(!CONTENT_SECURITY_POLICY.contains("unsafe-inline"));
    assert!(!body(page).contains("<script>"), "no inline script");
    assert!(set_cookie(page, LOGIN_COOKIE).is_some());
}

#[test]
fn a_login_form_without_its_token_or_cookie_is_refused_before_the_kdc_is_asked() {
    let mut bench = Bench::new();
    let (_, out) =
        bench.send(Method::Post, "/login", &form_headers("x=1"), "csrf=00&principal=alice&password=pw");
    assert_eq!(only_response(&out).status, 403);
    assert!(body(only_response(&out)).contains("stale or not ours"));
}

#[test]
fn a_login_sets_a_sealed_strict_cookie_and_the_console_page_carries_the_csrf_token() {
    let mut bench = Bench::new();
    let (cookie, csrf) = bench.log_in("alice");
    let (_, out) = bench.send(Method::Get, "/", &[("cookie", &cookie)], "");
    let page = body(only_response(&out));
    assert!(page.contains(&format!("name=\"cohort-csrf\" content=\"{csrf}\"")), "{page}");
    assert!(page.contains("alice"));
}

#[test]
fn a_tampered_or_foreign_cookie_sends_the_browser_back_to_the_login_form_saying_so() {
    let mut bench = Bench::new();
    let (cookie, _) = bench.log_in("alice");
    let mut tampered = cookie.into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    let (_, out) = bench.send(Method::Get, "/", &[("cookie", &tampered)], "");
    let response = only_response(&out);
    assert_eq!((response.status, header(response, "location")), (303, Some("/login?why=tampered")));
    assert_eq!(set_cookie(response, SESSION_COOKIE).as_deref(), Some(""), "the bad cookie is cleared");
    let (_, out) = bench.send(Method::Get, "/login?why=tampered", &[], "");
    assert!(body(only_response(&out)).contains("could not be read"));
    let (_, out) = bench.send(Method::Get, "/login?why=<script>alert(1)</script>", &[], "");
    assert!(!body(only_response(&out)).contains("alert(1)"), "the query is never echoed");
}

#[test]
fn an_exec_without_the_csrf_token_is_refused_and_never_reaches_the_gateway() {
    let mut bench = Bench::new();
    let (cookie, _) = bench.log_in("alice");
    let form = "nodes=h01&command=id&run_as=root";
    let (_, out) = bench.send(Method::Post, "/api/exec", &form_headers(&cookie), form);
    assert_eq!(only_response(&out).status, 403);
    let mut headers = form_headers(&cookie);
    headers.push(("x-cohort-csrf", "0123456789abcdef0123456789abcdef"));
    let (_, out) = bench.send(Method::Post, "/api/exec", &headers, form);
    assert_eq!(only_response(&out).status, 403);
}

#[test]
fn a_run_streams_accepted_hosts_and_groups_folded_and_output_stays_data() {
    let mut bench = Bench::new();
    let (cookie, csrf) = bench.log_in("alice");
    let mut headers = form_headers(&cookie);
    headers.push(("x-cohort-csrf", &csrf));
    let form =
        "nodes=h%5B01-03%5D&command=echo+%27%3Cscript%3Ealert(1)%3C%2Fscript%3E%27&run_as=root&fanout=8";
    let (id, out) = bench.send(Method::Post, "/api/exec", &headers, form);
    let [
        ConsoleOutput::Gateway(GatewayInput::Client {
            client,
            request: ClientRequest::Exec(command),
            client_key,
        }),
    ] = out.as_slice()
    else {
        panic!("{out:?}")
    };
    assert_eq!(command.credential.body.principal, "alice");
    assert_eq!(*client_key, command.credential.body.client_key, "the credential's own binding");
    assert_eq!(
        command.task,
        crate::exec::task::Task::Run {
            argv: vec!["echo".into(), "<script>alert(1)</script>".into()],
            stdin: Vec::new(),
            env: Vec::new()
        }
    );
    let client = *client;
    bench.console.handle_event(NOW, client, ClientEvent::Accepted { hosts: 3 });
    for (host, out) in
        [("h01", "<script>alert(1)</script>\n"), ("h02", "<script>alert(1)</script>\n"), ("h03", "other\n")]
    {
        let result = HostResult {
            host: host.into(),
            outcome: HostOutcome::Exited(0),
            stdout: out.as_bytes().to_vec(),
            stderr: Vec::new(),
            cut_bytes: 0,
            started_ms: Some(1),
            ended_ms: 2,
        };
        bench.console.handle_event(NOW, client, ClientEvent::Host(result));
    }
    bench.console.handle_event(NOW, client, ClientEvent::Finished);
    let out = bench.drain();
    let ConsoleOutput::Respond { request, response } = &out[0] else { panic!("{out:?}") };
    assert_eq!(
        (*request, response.streamed, header(response, "content-type")),
        (id, true, Some("application/x-ndjson"))
    );
    let lines: Vec<serde_json::Value> = out[1..]
        .iter()
        .map(|o| match o {
            ConsoleOutput::Chunk { bytes, .. } => serde_json::from_slice(bytes).expect("a JSON line"),
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(matches!(out.last(), Some(ConsoleOutput::Chunk { last: true, .. })));
    assert_eq!(lines[0]["event"], "accepted");
    assert_eq!(lines[1]["result"]["stdout"], "<script>alert(1)</script>\n", "output is data in JSON");
    let last = &lines[4];
    assert_eq!(last["summary"], "3 hosts: 3 ok");
    assert_eq!(last["groups"][0]["hosts"], "h[01-02]");
    assert_eq!(last["groups"][1]["hosts"], "h03");
}

#[test]
fn only_the_principal_who_started_a_run_may_cancel_it_and_a_cancel_ends_it_at_the_gateway() {
    let mut bench = Bench::new();
    let (alice, alice_csrf) = bench.log_in("alice");
    let (bob, bob_csrf) = bench.log_in("bob");
    let mut headers = form_headers(&alice);
    headers.push(("x-cohort-csrf", &alice_csrf));
    let (_, out) = bench.send(Method::Post, "/api/exec", &headers, "nodes=h01&command=sleep+60&run_as=root");
    let [ConsoleOutput::Gateway(GatewayInput::Client { client, .. })] = out.as_slice() else {
        panic!("{out:?}")
    };
    let client = *client;
    bench.console.handle_event(NOW, client, ClientEvent::Accepted { hosts: 1 });
    let run = client & !(1 << 62);
    bench.drain();
    let path = format!("/api/runs/{run}/cancel");
    let (_, out) = bench.send(Method::Post, &path, &[("cookie", &bob), ("x-cohort-csrf", &bob_csrf)], "");
    assert_eq!(only_response(&out).status, 404, "bob cannot cancel alice's run");
    let (_, out) = bench.send(Method::Post, &path, &[("cookie", &alice), ("x-cohort-csrf", &alice_csrf)], "");
    assert!(out.contains(&ConsoleOutput::Gateway(GatewayInput::ClientGone { client })), "{out:?}");
    assert!(out.iter().any(|o| matches!(o, ConsoleOutput::Chunk { last: true, bytes, .. }
        if String::from_utf8_lossy(bytes).contains("cancelled"))));
}

#[test]
fn repeated_failed_logins_for_one_principal_are_held_back_without_asking_the_kdc() {
    let mut bench = Bench::new();
    for _ in 0..limiter_failures() {
        let (_, out) = bench.send(
            Method::Post,
            "/api/login",
            &[("content-type", "application/json")],
            r#"{"principal":"alice","password":"wrong"}"#,
        );
        let [ConsoleOutput::Gateway(GatewayInput::Client { client, .. })] = out.as_slice() else {
            panic!("{out:?}")
        };
        bench.console.handle_event(NOW, *client, ClientEvent::Refused { reason: "login failed".into() });
        assert_eq!(only_response(&bench.drain()).status, 401);
    }
    let (_, out) = bench.send(
        Method::Post,
        "/api/login",
        &[("content-type", "application/json")],
        r#"{"principal":"alice","password":"right"}"#,
    );
    let response = only_response(&out);
    assert_eq!(response.status, 429);
    assert!(body(response).contains("too many failed logins"), "{}", body(response));
}

fn limiter_failures() -> u32 {
    super::limiter::FAILURES_PER_PRINCIPAL
}

#[test]
fn hostile_request_shapes_get_a_clear_answer() {
    let mut bench = Bench::new();
    let (cookie, csrf) = bench.log_in("alice");
    let mut headers = form_headers(&cookie);
    headers.push(("x-cohort-csrf", &csrf));
    for (form, says) in [
        ("nodes=h01&command=echo+%27unclosed&run_as=root", "could not be split"),
        ("nodes=&command=id&run_as=root", "name the hosts"),
        ("nodes=h01&command=id&run_as=root&fanout=0", "fan-out `0`"),
        ("nodes=h01&command=id&run_as=root&t1=NaN", "t1 `NaN`"),
    ] {
        let (_, out) = bench.send(Method::Post, "/api/exec", &headers, form);
        let response = only_response(&out);
        assert_eq!(response.status, 400, "{form}");
        assert!(body(response).contains(says), "{form}: {}", body(response));
    }
    let (_, out) = bench.send(Method::Other("DELETE".into()), "/", &[], "");
    assert_eq!(only_response(&out).status, 405);
    let (_, out) = bench.send(Method::Get, "/nosuch/<b>", &[], "");
    assert!(!body(only_response(&out)).contains("<b>"));
}
