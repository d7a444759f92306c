//! A browser in the simulation: it sends the gateway node parsed web requests (what the real
//! driver's HTTPS front would hand over) and reads the answers, whole or streamed, keeping
//! cookies as a browser does. The TLS and HTTP layers are the real front's business and are
//! tested on real sockets; here the console's rules run under turmoil's clock, crashes and
//! restarts. It decides nothing: the node judges every request.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cohort_core::node::Input;
use cohort_core::web::{Method, RequestId, WebRequest, WebResponse};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// One request on its way to the node, and where its answer goes.
#[derive(Debug)]
pub struct WebCall {
    pub request: RequestId,
    pub web: Box<WebRequest>,
    pub answer: UnboundedSender<WebPart>,
}

/// A piece of an answer.
#[derive(Debug)]
pub enum WebPart {
    Head(Box<WebResponse>),
    Chunk(Vec<u8>),
    End,
}

/// The way from browsers to the node serving the console: set when the node asks to listen,
/// gone with the node when it crashes.
#[derive(Debug, Clone, Default)]
pub struct SimWeb {
    inbox: Arc<Mutex<Option<UnboundedSender<WebCall>>>>,
    next: Arc<AtomicU64>,
}

impl SimWeb {
    /// The node listens: calls come to the receiver returned.
    pub fn listen(&self) -> UnboundedReceiver<WebCall> {
        let (tx, rx) = unbounded_channel();
        *self.inbox.lock().unwrap_or_else(PoisonError::into_inner) = Some(tx);
        rx
    }

    fn call(&self, web: WebRequest) -> Result<UnboundedReceiver<WebPart>, String> {
        let request = RequestId(self.next.fetch_add(1, Ordering::Relaxed) + 1);
        let (answer, answers) = unbounded_channel();
        let inbox = self.inbox.lock().unwrap_or_else(PoisonError::into_inner);
        let sent = inbox.as_ref().map(|tx| tx.send(WebCall { request, web: Box::new(web), answer }));
        match sent {
            Some(Ok(())) => Ok(answers),
            _ => Err("connection refused: the console is not listening".into()),
        }
    }
}

/// Where each request's answer goes, on the host serving the console: what its web outputs
/// are carried to, and what the host hears back (a browser that left; bytes it read, at once).
#[derive(Debug, Default)]
pub struct WebAnswers {
    open: BTreeMap<RequestId, UnboundedSender<WebPart>>,
}

impl WebAnswers {
    /// A browser's call: the input for the node.
    pub fn take(&mut self, call: WebCall) -> Input {
        self.open.insert(call.request, call.answer);
        Input::WebRequest { request: call.request, web: call.web }
    }

    /// The node's answer; the input to feed if the browser has gone.
    pub fn respond(&mut self, request: RequestId, response: Box<WebResponse>) -> Option<Input> {
        let streamed = response.streamed;
        let delivered = self.open.get(&request).is_some_and(|a| a.send(WebPart::Head(response)).is_ok());
        if (!delivered || !streamed)
            && let Some(answer) = self.open.remove(&request)
        {
            let _ = answer.send(WebPart::End);
        }
        (!delivered && streamed).then_some(Input::WebGone { request })
    }

    /// More of a streamed answer; what the node hears: read at once, or gone.
    pub fn chunk(&mut self, request: RequestId, bytes: Vec<u8>, last: bool) -> Option<Input> {
        let length = bytes.len();
        let delivered = self.open.get(&request).is_some_and(|a| a.send(WebPart::Chunk(bytes)).is_ok());
        if last && let Some(answer) = self.open.remove(&request) {
            let _ = answer.send(WebPart::End);
        }
        match delivered {
            true if !last => Some(Input::WebSent { request, bytes: length }),
            true => None,
            false => {
                self.open.remove(&request);
                Some(Input::WebGone { request })
            }
        }
    }
}

/// An answer as the browser saw it, the streamed chunks joined.
#[derive(Debug, Clone)]
pub struct Page {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Page {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body's JSON lines (a streamed run), or its one JSON value.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.text().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// The value of the first `name="NAME" value="..."` or `name="NAME" content="..."` in a page.
    pub fn form_value(&self, name: &str) -> Option<String> {
        let text = self.text();
        let at = text.find(&format!("name=\"{name}\""))?;
        let tag = text[at..].split('>').next()?;
        let start = ["value=\"", "content=\""].iter().find_map(|k| tag.find(k).map(|i| i + k.len()))?;
        tag[start..].split('"').next().map(str::to_owned)
    }
}

/// A browser: a cookie jar and an address. Cheap to clone into a scenario.
#[derive(Debug, Clone)]
pub struct SimBrowser {
    web: SimWeb,
    jar: Arc<Mutex<BTreeMap<String, String>>>,
    pub peer: String,
}

/// How long a browser waits for an answer to end.
const PATIENCE: Duration = Duration::from_secs(120);

impl SimBrowser {
    pub fn new(web: SimWeb, peer: &str) -> SimBrowser {
        SimBrowser { web, jar: Arc::default(), peer: peer.to_owned() }
    }

    pub fn cookie(&self, name: &str) -> Option<String> {
        self.jar.lock().unwrap_or_else(PoisonError::into_inner).get(name).cloned()
    }

    /// Sets a cookie by hand (what a tampering user does).
    pub fn set_cookie(&self, name: &str, value: &str) {
        self.jar.lock().unwrap_or_else(PoisonError::into_inner).insert(name.into(), value.into());
    }

    pub async fn get(&self, path: &str) -> Result<Page, String> {
        self.send(Method::Get, path, &[], Vec::new()).await
    }

    /// Posts a form, as the page's `<form>` does.
    pub async fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> Result<Page, String> {
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
        let headers = [("content-type", "application/x-www-form-urlencoded")];
        self.send(Method::Post, path, &headers, body.into_bytes()).await
    }

    /// Logs in through the form as a person would; the console page's CSRF token.
    pub async fn log_in(&self, principal: &str, password: &str) -> Result<String, String> {
        let form = self.get("/login").await?;
        let token = form.form_value("csrf").ok_or("the login form carries a CSRF token")?;
        let fields = [("csrf", token.as_str()), ("principal", principal), ("password", password)];
        let answer = self.post_form("/login", &fields).await?;
        if answer.status != 303 || answer.header("location") != Some("/") {
            return Err(format!("login answered {} {}", answer.status, answer.text()));
        }
        let page = self.get("/").await?;
        if page.status != 200 || !page.text().contains(principal) {
            return Err(format!("the console page answered {}", page.status));
        }
        page.form_value("cohort-csrf").ok_or_else(|| "the console page carries its CSRF token".into())
    }

    /// Posts JSON with the CSRF header, as the page's script and the API's scripts do.
    pub async fn post_json(&self, path: &str, csrf: &str, body: &serde_json::Value) -> Result<Page, String> {
        let headers = [("content-type", "application/json"), ("x-cohort-csrf", csrf)];
        self.send(Method::Post, path, &headers, body.to_string().into_bytes()).await
    }

    /// Sends a request and reads its answer to the end.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Page, String> {
        let mut answers = self.open(method, path, headers, body)?;
        tokio::time::timeout(PATIENCE, self.read(&mut answers, |_| {}))
            .await
            .map_err(|_| format!("{path}: no complete answer in {PATIENCE:?}"))?
    }

    /// Sends a request; the answer's parts come on the receiver returned (dropping it is the
    /// browser going away).
    pub fn open(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<UnboundedReceiver<WebPart>, String> {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let mut all: Vec<(String, Vec<u8>)> =
            headers.iter().map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec())).collect();
        let cookies = self.jar.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if !cookies.is_empty() {
            let line = cookies.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("; ");
            all.push(("cookie".into(), line.into_bytes()));
        }
        let web = WebRequest {
            method,
            path: path.into(),
            query: query.into(),
            headers: all,
            body,
            peer: self.peer.clone(),
        };
        self.web.call(web)
    }

    /// Reads an answer opened with [`SimBrowser::open`], calling `each` on every streamed line
    /// as it comes, and keeps its cookies.
    pub async fn read(
        &self,
        answers: &mut UnboundedReceiver<WebPart>,
        each: impl FnMut(&serde_json::Value),
    ) -> Result<Page, String> {
        let page = read_page(answers, each).await?;
        self.keep_cookies(&page);
        Ok(page)
    }

    fn keep_cookies(&self, page: &Page) {
        let mut jar = self.jar.lock().unwrap_or_else(PoisonError::into_inner);
        for (_, cookie) in page.headers.iter().filter(|(n, _)| n == "set-cookie") {
            let Some((pair, attributes)) = cookie.split_once(';').or(Some((cookie.as_str(), ""))) else {
                continue;
            };
            let Some((name, value)) = pair.split_once('=') else { continue };
            if value.is_empty() || attributes.contains("Max-Age=0") {
                jar.remove(name.trim());
            } else {
                jar.insert(name.trim().to_owned(), value.to_owned());
            }
        }
    }
}

async fn read_page(
    answers: &mut UnboundedReceiver<WebPart>,
    mut each: impl FnMut(&serde_json::Value),
) -> Result<Page, String> {
    let head = match answers.recv().await {
        Some(WebPart::Head(head)) => head,
        Some(_) => return Err("an answer began without a head".into()),
        None => return Err("the connection closed before an answer".into()),
    };
    let mut page = Page { status: head.status, headers: head.headers, body: head.body };
    if !head.streamed {
        return Ok(page);
    }
    let mut line = Vec::new();
    loop {
        match answers.recv().await {
            Some(WebPart::Chunk(bytes)) => {
                for byte in &bytes {
                    if *byte == b'\n' {
                        if let Ok(value) = serde_json::from_slice(&line) {
                            each(&value);
                        }
                        line.clear();
                    } else {
                        line.push(*byte);
                    }
                }
                page.body.extend_from_slice(&bytes);
            }
            Some(WebPart::End) => return Ok(page),
            Some(WebPart::Head(_)) => return Err("a second head in one answer".into()),
            None => return Err("the connection closed in the middle of an answer".into()),
        }
    }
}
