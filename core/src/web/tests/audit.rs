//! The audit and status pages: who reads whose records, how a listing pages through the store,
//! what a verify says, and that every field is shown as text.

use super::*;
use crate::exec::acl::AclEntry;
use crate::exec::audit::{AuditCollector, AuditDecision, AuditRecord, CollectorInput, CollectorOutput};
use crate::exec::audit_view::{AuditRange, AuditRows};
use crate::exec::directory::{ExecDirectory, ManagedHost};
use crate::machine::Machine;

const HOSTS: u8 = 3;

fn host_key(n: u8) -> NodeKeys {
    NodeKeys::generate(&mut seeded(100 + u64::from(n)))
}

/// `n` records: host `h{i % 3}`, principal alice for even `i` and bob for odd, the command
/// carrying `i`. The fifth names a hostile command.
fn chain(bench: &Bench, n: u64) -> AuditRows {
    let signers = (0..HOSTS).map(|h| (format!("h{h}"), host_key(h).public())).collect();
    let mut collector = AuditCollector::new(None, signers, bench.keys.clone());
    for i in 0..n {
        let host = (i % u64::from(HOSTS)) as u8;
        let argv = match i {
            5 => vec!["echo".into(), "<script>alert(1)</script>".into()],
            _ => vec!["uptime".into(), i.to_string()],
        };
        let record = AuditRecord {
            host: format!("h{host}"),
            principal: if i % 2 == 0 { "alice" } else { "bob" }.into(),
            run_as: "deploy".into(),
            argv,
            at: WallClock(NOW.wall.0 - 60_000 + i),
            decision: AuditDecision::Run,
            run_id: [i as u8; 16],
            data: Vec::new(),
        };
        let signed = Signed::sign(record, &host_key(host)).expect("signs");
        collector.handle(NOW, CollectorInput::Submit { ack: i, record: Box::new(signed) });
    }
    let kept: Vec<_> = std::iter::from_fn(|| collector.poll_output())
        .filter_map(|out| match out {
            CollectorOutput::Append { entry, checkpoint } => Some((*entry, checkpoint.map(|c| *c))),
            _ => None,
        })
        .collect();
    AuditRows::select(kept.iter().map(|(e, c)| (e, c.as_ref())), AuditRange::Whole)
}

/// The gateway's directory: the three hosts, alice with the `audit` grant and bob without.
fn directory(bench: &mut Bench) {
    let hosts = (0..HOSTS)
        .map(|h| {
            let host = ManagedHost {
                address: format!("127.0.0.1:{}", 7000 + u16::from(h)),
                identity: host_key(h).public(),
            };
            (format!("h{h}"), host)
        })
        .collect();
    let mut directory = ExecDirectory { hosts, ..ExecDirectory::default() };
    let entry = |audit| AclEntry { run_as: ["deploy".to_owned()].into(), audit, ..AclEntry::default() };
    directory.acl.principals.insert("alice".into(), entry(true));
    directory.acl.principals.insert("bob".into(), entry(false));
    bench.gateway.handle(NOW, GatewayInput::Directory(Box::new(directory)));
}

/// Answers every read the console asks with what a store holding `whole` returns, until it
/// responds; returns the response and how many reads it took.
fn serve_reads(bench: &mut Bench, mut out: Vec<ConsoleOutput>, whole: &AuditRows) -> (WebResponse, usize) {
    let mut reads = 0;
    loop {
        match out.as_slice() {
            [ConsoleOutput::ReadAudit { read, range }] => {
                reads += 1;
                let kept: Vec<_> = whole
                    .rows
                    .iter()
                    .filter_map(|r| match r {
                        crate::exec::audit_view::StoredEntry::Entry(e) => Some((&**e, None)),
                        _ => None,
                    })
                    .collect();
                let mut rows = AuditRows::select(kept, *range);
                if *range == AuditRange::Whole {
                    rows.checkpoints = whole.checkpoints.clone();
                }
                bench.console.handle_audit_read(*read, Ok(rows), &bench.gateway);
                out = bench.drain();
            }
            [ConsoleOutput::Respond { response, .. }] => return (response.clone(), reads),
            other => panic!("a read or a response expected: {other:?}"),
        }
    }
}

fn api(cookie: &str, csrf: &str) -> Vec<(&'static str, String)> {
    vec![("cookie", cookie.to_owned()), ("x-cohort-csrf", csrf.to_owned())]
}

fn get_json(
    bench: &mut Bench,
    path: &str,
    cookie: &str,
    whole: &AuditRows,
) -> (serde_json::Value, u16, usize) {
    let (_, out) = bench.send(Method::Get, path, &[("cookie", cookie)], "");
    let (response, reads) = serve_reads(bench, out, whole);
    let value = serde_json::from_slice(&response.body).expect("json");
    (value, response.status, reads)
}

fn indices(value: &serde_json::Value) -> Vec<u64> {
    value["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["index"].as_u64().expect("index"))
        .collect()
}

#[test]
fn the_trail_lists_newest_first_filtered_by_principal_and_host_and_pages_on() {
    let mut bench = Bench::new();
    directory(&mut bench);
    let whole = chain(&bench, 1200);
    let (cookie, _) = bench.log_in("alice");
    let (all, status, _) = get_json(&mut bench, "/api/audit?limit=4", &cookie, &whole);
    assert_eq!(status, 200);
    assert_eq!(indices(&all), vec![1199, 1198, 1197, 1196]);
    assert_eq!(all["next_before"], 1196);
    let (older, _, _) = get_json(&mut bench, "/api/audit?limit=2&before=1196", &cookie, &whole);
    assert_eq!(indices(&older), vec![1195, 1194]);
    // bob on h1: i odd and i % 3 == 1, newest first; the store is read in stretches until
    // enough match.
    let (bob_h1, _, reads) =
        get_json(&mut bench, "/api/audit?principal=bob&host=h1&limit=300", &cookie, &whole);
    let expected: Vec<u64> = (0..1200u64).rev().filter(|i| i % 2 == 1 && i % 3 == 1).take(300).collect();
    assert_eq!(indices(&bob_h1), expected);
    assert!(reads >= 2, "the filter read more than one stretch ({reads})");
    assert!(
        bob_h1["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .all(|e| e["principal"] == "bob" && e["host"] == "h1")
    );
}

#[test]
fn without_the_audit_grant_a_principal_reads_only_its_own_records() {
    let mut bench = Bench::new();
    directory(&mut bench);
    let whole = chain(&bench, 30);
    let (cookie, _) = bench.log_in("bob");
    let (mine, status, _) = get_json(&mut bench, "/api/audit", &cookie, &whole);
    assert_eq!(status, 200);
    assert_eq!(indices(&mine).len(), 15);
    assert!(mine["entries"].as_array().expect("entries").iter().all(|e| e["principal"] == "bob"));
    let (_, out) = bench.send(Method::Get, "/api/audit?principal=alice", &[("cookie", cookie.as_str())], "");
    let refused = only_response(&out);
    assert_eq!(refused.status, 403);
    assert!(body(refused).contains("only your own"), "{}", body(refused));
}

#[test]
fn a_verify_reports_an_intact_trail_and_names_the_entry_that_was_altered() {
    let mut bench = Bench::new();
    directory(&mut bench);
    let mut whole = chain(&bench, 40);
    let (cookie, csrf) = bench.log_in("alice");
    let headers = api(&cookie, &csrf);
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let (_, out) = bench.send(Method::Post, "/api/audit/verify", &headers, "");
    let (response, reads) = serve_reads(&mut bench, out, &whole);
    let value: serde_json::Value = serde_json::from_slice(&response.body).expect("json");
    assert_eq!((reads, value["verify"]["intact"].as_bool()), (1, Some(true)), "{value}");
    assert_eq!(value["verify"]["entries"], 40);
    // Entry 17's command rewritten in the store: its hash no longer matches.
    if let crate::exec::audit_view::StoredEntry::Entry(e) = &mut whole.rows[17] {
        e.record.argv = vec!["true".into()];
    }
    let (_, out) = bench.send(Method::Post, "/api/audit/verify", &headers, "");
    let (response, _) = serve_reads(&mut bench, out, &whole);
    let value: serde_json::Value = serde_json::from_slice(&response.body).expect("json");
    assert_eq!(value["verify"]["intact"], false);
    assert!(value["verify"]["error"].as_str().expect("error").contains("entry 17"), "{value}");
    // Without the page's token a verify is refused before anything is read.
    let (_, out) = bench.send(Method::Post, "/api/audit/verify", &[("cookie", cookie.as_str())], "");
    assert_eq!(only_response(&out).status, 403);
}

#[test]
fn the_audit_page_shows_hostile_fields_as_text_and_offers_older_entries() {
    let mut bench = Bench::new();
    directory(&mut bench);
    let whole = chain(&bench, 80);
    let (cookie, _) = bench.log_in("alice");
    let (_, out) = bench.send(Method::Get, "/audit?limit=76", &[("cookie", cookie.as_str())], "");
    let (response, _) = serve_reads(&mut bench, out, &whole);
    let page = body(&response);
    assert_eq!(response.status, 200);
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "escaped");
    assert!(!page.contains("<script>alert(1)"), "never markup");
    assert!(page.contains("href=\"/audit?principal=&amp;host=&amp;before=4\""), "older link");
    // Without a session the page sends the browser to log in.
    let (_, out) = bench.send(Method::Get, "/audit", &[], "");
    assert_eq!(only_response(&out).status, 303);
}

#[test]
fn the_status_page_says_when_the_gateway_is_not_a_member_and_the_api_gives_null() {
    let mut bench = Bench::new();
    let (cookie, _) = bench.log_in("alice");
    let (_, out) = bench.send(Method::Get, "/status", &[("cookie", cookie.as_str())], "");
    assert!(body(only_response(&out)).contains("not a cluster member"));
    let (_, out) = bench.send(Method::Get, "/api/status", &[("cookie", cookie.as_str())], "");
    let value: serde_json::Value = serde_json::from_slice(&only_response(&out).body).expect("json");
    assert_eq!(value, serde_json::json!({ "cluster": null }));
    let (_, out) = bench.send(Method::Get, "/api/status", &[], "");
    assert_eq!(only_response(&out).status, 401);
}
