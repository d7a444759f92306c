//! A web request as the driver hands it over (already parsed by a vetted HTTP crate, bytes not
//! yet trusted) and a response as the console makes it, with the security headers every page
//! carries. Owns reading the parts the console uses (a header, a cookie, a form, a query) with
//! checked limits; it never decides what a request may do.

use std::fmt;

/// The largest request body the console reads (a login or command form, a JSON exec request).
pub const MAX_BODY: usize = 256 * 1024;

/// What the driver's HTTPS front holds each browser to, decided here and enforced there: the
/// front refuses what goes past them before the node hears of it, so a slow or greedy client
/// costs a bounded amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebLimits {
    /// Connections open at once; more wait in the kernel's backlog and then are refused.
    pub max_connections: usize,
    /// Connections one address may hold open at once, so one client cannot take every slot;
    /// more from it are closed at accept.
    pub max_per_peer: usize,
    /// A request's head must arrive whole within this (the one-byte-a-second client).
    pub header_timeout_ms: u64,
    /// A request's body must arrive whole within this.
    pub body_timeout_ms: u64,
    /// The largest request body; a larger one is answered 413 by the front.
    pub max_body: usize,
    /// Bytes of one streamed answer the browser may leave unread before its run is ended.
    pub max_unread: usize,
}

impl Default for WebLimits {
    fn default() -> WebLimits {
        WebLimits {
            max_connections: 256,
            max_per_peer: 32,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            max_body: MAX_BODY,
            max_unread: 4 * 1024 * 1024,
        }
    }
}

/// A request the driver took from a browser or script; answered by exactly one response, which
/// a streamed body follows with chunks until the last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "web#{}", self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Other(String),
}

/// One HTTP request, as parsed by the driver's HTTP crate. Header names are lowercase; values,
/// the body and the peer are whatever arrived.
#[derive(Clone, PartialEq, Eq)]
pub struct WebRequest {
    pub method: Method,
    pub path: String,
    /// The raw query string, without `?`.
    pub query: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    /// The address the request came from (its IP), for login rate limits.
    pub peer: String,
}

impl fmt::Debug for WebRequest {
    // Never a password or a cookie in a log or a trace.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("peer", &self.peer)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

impl WebRequest {
    /// The first value of header `name` (lowercase), if it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// The value of cookie `name` from the `Cookie` headers.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == "cookie")
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }

    /// The body as an `application/x-www-form-urlencoded` form: `(name, value)` pairs.
    pub fn form(&self) -> Result<Vec<(String, String)>, String> {
        if !self.header("content-type").is_some_and(|c| c.starts_with("application/x-www-form-urlencoded")) {
            return Err("the form must be sent as application/x-www-form-urlencoded".into());
        }
        Ok(form_urlencoded::parse(&self.body).into_owned().collect())
    }

    /// The query string's `(name, value)` pairs.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(self.query.as_bytes()).into_owned().collect()
    }
}

/// The value of field `name` in a form or query.
pub fn field<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// What the console answers: a status, headers, and a body that is whole or (when `streamed`)
/// continued by chunks until the last.
#[derive(Clone, PartialEq, Eq)]
pub struct WebResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub streamed: bool,
}

impl fmt::Debug for WebResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebResponse")
            .field("status", &self.status)
            .field("headers", &self.headers.iter().map(|(n, _)| n).collect::<Vec<_>>())
            .field("body_bytes", &self.body.len())
            .field("streamed", &self.streamed)
            .finish()
    }
}

/// No inline script or style, nothing from elsewhere, no framing, forms only to this origin.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

impl WebResponse {
    fn with(status: u16, content_type: &str, body: Vec<u8>) -> WebResponse {
        let headers = [
            ("content-type", content_type),
            ("content-security-policy", CONTENT_SECURITY_POLICY),
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "no-referrer"),
            ("cache-control", "no-store"),
            ("strict-transport-security", "max-age=31536000"),
            ("x-frame-options", "DENY"),
        ];
        let headers = headers.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect();
        WebResponse { status, headers, body, streamed: false }
    }

    pub fn html(status: u16, page: maud::Markup) -> WebResponse {
        WebResponse::with(status, "text/html; charset=utf-8", page.into_string().into_bytes())
    }

    pub fn json(status: u16, value: &serde_json::Value) -> WebResponse {
        WebResponse::with(status, "application/json", value.to_string().into_bytes())
    }

    /// A body of JSON lines, one event each, that follows as chunks.
    pub fn json_lines() -> WebResponse {
        WebResponse { streamed: true, ..WebResponse::with(200, "application/x-ndjson", Vec::new()) }
    }

    pub fn asset(content_type: &str, body: &[u8]) -> WebResponse {
        let mut response = WebResponse::with(200, content_type, body.to_vec());
        response.set("cache-control", "max-age=300");
        response
    }

    /// `303 See Other` to `location` (after a form post, so a reload does not post again).
    pub fn see_other(location: &str) -> WebResponse {
        let mut response = WebResponse::with(303, "text/plain; charset=utf-8", Vec::new());
        response.headers.push(("location".into(), location.into()));
        response
    }

    pub fn set(&mut self, name: &str, value: &str) {
        self.headers.retain(|(n, _)| n != name);
        self.headers.push((name.into(), value.into()));
    }

    /// Adds a `Set-Cookie` (several may be set).
    pub fn set_cookie(mut self, cookie: String) -> WebResponse {
        self.headers.push(("set-cookie".into(), cookie));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &[u8])], body: &[u8]) -> WebRequest {
        WebRequest {
            method: Method::Post,
            path: "/login".into(),
            query: "a=1&b=x%20y".into(),
            headers: headers.iter().map(|(n, v)| ((*n).to_owned(), v.to_vec())).collect(),
            body: body.to_vec(),
            peer: "127.0.0.1".into(),
        }
    }

    #[test]
    fn cookies_forms_and_queries_are_read_and_bad_bytes_are_not_trusted() {
        let r = request(
            &[
                ("cookie", b"a=1; cohort_session=abc"),
                ("cookie", b"x=\xff"),
                ("content-type", b"application/x-www-form-urlencoded"),
            ],
            b"principal=alice&password=p%26w",
        );
        assert_eq!(r.cookie("cohort_session"), Some("abc"));
        assert_eq!(r.cookie("x"), None, "a header that is not text is ignored");
        let form = r.form().expect("a form");
        assert_eq!(field(&form, "password"), Some("p&w"));
        assert_eq!(field(&r.query_pairs(), "b"), Some("x y"));
        let not_a_form = request(&[("content-type", b"text/plain")], b"principal=alice");
        assert!(not_a_form.form().is_err());
    }

    #[test]
    fn a_request_debug_shows_no_body_or_cookie() {
        let r = request(&[("cookie", b"cohort_session=secret")], b"password=hunter2");
        let shown = format!("{r:?}");
        assert!(!shown.contains("secret") && !shown.contains("hunter2"), "{shown}");
    }
}
