//! Scraping a node's `/metrics` endpoint and reading figures from it with a Prometheus text
//! parser, for the tests that check the figures move.

use std::io::{Read, Write};
use std::time::Duration;

pub use prometheus_parse::Sample;

/// The body of `GET /metrics` on 127.0.0.1:`port`, when it answers 200.
pub fn scrape(port: u16) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

/// The samples of a scrape, parsed as Prometheus' text format (a body that is not fails).
pub fn samples(body: &str) -> Vec<Sample> {
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines).expect("Prometheus text format").samples
}

/// The samples of 127.0.0.1:`port` now, none when it does not answer.
pub fn scrape_samples(port: u16) -> Vec<Sample> {
    scrape(port).map(|b| samples(&b)).unwrap_or_default()
}

/// The value of metric `name` (with label `label`, if given).
pub fn value(samples: &[Sample], name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    samples.iter().find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v))).map(
        |s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        },
    )
}
