//! The web console's rules through the turmoil driver: a simulated browser logs in (the password
//! checked at the KDC on its own machine), runs commands on simulated hosts with the sealed
//! cookie it was given, and is refused when its CSRF token is missing, its cookie has expired or
//! been altered. The host driver checks the same invariants as for the CLI path on every spawn:
//! no command without a ticket, an ACL grant and a durable audit record.

use std::time::Duration;

use cohort_core::web::Method;
use cohort_io_sim::browser::{Page, SimBrowser};
use cohort_io_sim::exec_site::{PASSWORD, Site, SiteSpec};
use serde_json::{Value, json};

fn spec(hosts: usize, seed: u64) -> SiteSpec {
    SiteSpec { web: true, ..SiteSpec::new(hosts, seed) }
}

async fn exec(browser: &SimBrowser, csrf: &str, nodes: &str, command: &str) -> Result<Page, String> {
    browser
        .post_json("/api/exec", csrf, &json!({ "nodes": nodes, "command": command, "run_as": "alice" }))
        .await
}

/// The run's last event.
fn finished(page: &Page) -> Result<Value, String> {
    let lines = page.json_lines();
    lines
        .last()
        .filter(|l| l["event"] == "finished")
        .cloned()
        .ok_or_else(|| format!("the run did not finish: {}", page.text()))
}

#[test]
fn a_browser_logs_in_and_sees_identical_output_in_one_group_and_different_output_apart() {
    let run = Site::run_checked(&spec(6, 301), |client| async move {
        let browser = client.browser("192.0.2.10")?;
        let csrf = browser.log_in("alice", PASSWORD).await?;
        let same = exec(&browser, &csrf, "h[01-06]", "/usr/bin/uname -r").await?;
        let end = finished(&same)?;
        let groups = end["groups"].as_array().ok_or("groups")?;
        if groups.len() != 1 || groups[0]["hosts"] != "h[01-06]" {
            return Err(format!("uname on six hosts is one group of six: {end}"));
        }
        let hosts = same.json_lines().iter().filter(|l| l["event"] == "host").count();
        if hosts != 6 {
            return Err(format!("each host's result streams in: {hosts} of 6"));
        }
        let mixed = exec(&browser, &csrf, "h[01-06]", "/usr/bin/when %h=h02 say two else say other").await?;
        let end = finished(&mixed)?;
        let groups = end["groups"].as_array().ok_or("groups")?;
        let folded: Vec<&Value> = groups.iter().map(|g| &g["hosts"]).collect();
        if folded != [&json!("h[01,03-06]"), &json!("h02")] {
            return Err(format!("different outputs are different groups, largest first: {end}"));
        }
        Ok(())
    });
    assert_eq!(run.spawned.len(), 12, "six hosts ran each command: {:?}", run.spawned);
}

#[test]
fn a_request_without_its_csrf_token_or_from_a_stale_form_runs_nothing() {
    let run = Site::run_checked(&spec(3, 302), |client| async move {
        let browser = client.browser("192.0.2.11")?;
        // A login form posted without the form's cookie and token (a cross-site post).
        let forged = browser
            .post_form("/login", &[("principal", "alice"), ("password", PASSWORD), ("csrf", "00")])
            .await?;
        if forged.status != 403 || browser.cookie("cohort_session").is_some() {
            return Err(format!("a forged login form is refused: {}", forged.status));
        }
        let csrf = browser.log_in("alice", PASSWORD).await?;
        for token in ["", "0123", &csrf[..csrf.len() - 1]] {
            let refused = exec(&browser, token, "h[01-03]", "/usr/bin/echo hi").await?;
            if refused.status != 403 {
                return Err(format!("token `{token}` answered {}", refused.status));
            }
        }
        Ok(())
    });
    assert!(run.spawned.is_empty(), "nothing ran: {:?}", run.spawned);
}

#[test]
fn an_expired_session_goes_back_to_the_login_form_and_runs_nothing() {
    let mut spec = spec(3, 303);
    spec.kdc.credential_lifetime = Duration::from_secs(20);
    let run = Site::run_checked(&spec, |client| async move {
        let browser = client.browser("192.0.2.12")?;
        let csrf = browser.log_in("alice", PASSWORD).await?;
        tokio::time::sleep(Duration::from_secs(25)).await;
        let sealed = browser.cookie("cohort_session").ok_or("a session cookie")?;
        let refused = exec(&browser, &csrf, "h[01-03]", "/usr/bin/echo hi").await?;
        if refused.status != 401 || !refused.text().contains("expired") {
            return Err(format!("an expired API session is refused: {} {}", refused.status, refused.text()));
        }
        // The refusal cleared the cookie; the page is asked with it once more.
        browser.set_cookie("cohort_session", &sealed);
        let home = browser.get("/").await?;
        if home.status != 303 || home.header("location") != Some("/login?why=expired") {
            return Err(format!(
                "an expired session goes to the login form: {} {:?}",
                home.status, home.headers
            ));
        }
        let login = browser.get("/login?why=expired").await?;
        if !login.text().contains("expired") {
            return Err("the login form says the session expired".into());
        }
        Ok(())
    });
    assert!(run.spawned.is_empty(), "nothing ran: {:?}", run.spawned);
}

#[test]
fn an_altered_cookie_goes_back_to_the_login_form_and_runs_nothing() {
    let run = Site::run_checked(&spec(3, 304), |client| async move {
        let browser = client.browser("192.0.2.13")?;
        let csrf = browser.log_in("alice", PASSWORD).await?;
        let sealed = browser.cookie("cohort_session").ok_or("a session cookie")?;
        let flipped = if sealed.ends_with('A') { 'B' } else { 'A' };
        browser.set_cookie("cohort_session", &format!("{}{flipped}", &sealed[..sealed.len() - 1]));
        let home = browser.get("/").await?;
        if home.status != 303 || home.header("location") != Some("/login?why=tampered") {
            return Err(format!(
                "an altered cookie goes to the login form: {} {:?}",
                home.status, home.headers
            ));
        }
        if browser.cookie("cohort_session").is_some() {
            return Err("the altered cookie is cleared".into());
        }
        let refused = exec(&browser, &csrf, "h[01-03]", "/usr/bin/echo hi").await?;
        if refused.status != 401 {
            return Err(format!("no session, no run: {}", refused.status));
        }
        Ok(())
    });
    assert!(run.spawned.is_empty(), "nothing ran: {:?}", run.spawned);
}

#[test]
fn a_session_outlives_a_gateway_restart_between_login_and_command() {
    let mut spec = spec(3, 305);
    spec.gateway_outage = Some((Duration::from_secs(5), Duration::from_secs(3)));
    let run = Site::run_checked(&spec, |client| async move {
        let browser = client.browser("192.0.2.14")?;
        let csrf = browser.log_in("alice", PASSWORD).await?;
        // The gateway crashes at 5 s and is back at 8 s: it kept nothing of the session.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let page = exec(&browser, &csrf, "h[01-03]", "/usr/bin/echo after the restart").await?;
        let end = finished(&page)?;
        if end["groups"][0]["hosts"] != "h[01-03]" || end["summary"] != "3 hosts: 3 ok" {
            return Err(format!("the command ran everywhere after the restart: {end}"));
        }
        Ok(())
    });
    assert_eq!(run.spawned.len(), 3, "{:?}", run.spawned);
}

#[test]
fn a_principal_the_acl_does_not_name_runs_nothing_and_the_refusal_is_audited() {
    let run = Site::run_checked(&spec(3, 306), |client| async move {
        let browser = client.browser("192.0.2.15")?;
        let csrf = browser.log_in("bob", PASSWORD).await?;
        let page = exec(&browser, &csrf, "h[01-03]", "/usr/bin/echo hi").await?;
        let refused = page.status == 403 || page.json_lines().iter().any(|l| l["event"] == "refused");
        let denied = page.json_lines().iter().filter(|l| l["event"] == "host").count();
        if !refused && denied == 0 {
            return Err(format!("bob's run was not refused: {}", page.text()));
        }
        Ok(())
    });
    assert!(run.spawned.is_empty(), "nothing ran: {:?}", run.spawned);
}

#[test]
fn a_browser_that_leaves_mid_run_cancels_it_on_the_hosts() {
    let run = Site::run_checked(&spec(3, 307), |client| async move {
        let browser = client.browser("192.0.2.16")?;
        let csrf = browser.log_in("alice", PASSWORD).await?;
        let body =
            json!({ "nodes": "h[01-03]", "command": "/usr/bin/sleep 60", "run_as": "alice" }).to_string();
        let headers = [("content-type", "application/json"), ("x-cohort-csrf", csrf.as_str())];
        let mut answers = browser.open(Method::Post, "/api/exec", &headers, body.into_bytes())?;
        // The run is accepted, the commands start, then the browser goes away.
        let _head = answers.recv().await.ok_or("an answer")?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(answers);
        Ok(())
    });
    assert_eq!(run.spawned.len(), 3, "{:?}", run.spawned);
    let killed = run.trace.lines().iter().filter(|l| l.contains("-> Kill ")).count();
    assert_eq!(killed, 3, "every host killed its command when the browser left");
}

#[test]
fn a_cancelled_run_kills_the_commands_on_the_hosts_and_ends_its_stream() {
    let run = Site::run_checked(&spec(3, 308), |client| async move {
        let browser = client.browser("192.0.2.17")?;
        let csrf = browser.log_in("alice", PASSWORD).await?;
        let body =
            json!({ "nodes": "h[01-03]", "command": "/usr/bin/sleep 60", "run_as": "alice" }).to_string();
        let headers = [("content-type", "application/json"), ("x-cohort-csrf", csrf.as_str())];
        let mut answers = browser.open(Method::Post, "/api/exec", &headers, body.into_bytes())?;
        let (watcher, seen) = (browser.clone(), std::sync::Arc::new(std::sync::Mutex::new(Vec::new())));
        let lines = seen.clone();
        let stream = tokio::spawn(async move {
            let page = watcher
                .read(&mut answers, |line| lines.lock().expect("not poisoned").push(line.clone()))
                .await;
            page.map(|_| lines.lock().expect("not poisoned").last().cloned().unwrap_or_default())
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        let run = seen
            .lock()
            .expect("not poisoned")
            .iter()
            .find(|l| l["event"] == "accepted")
            .map(|l| l["run"].clone())
            .ok_or("the run was accepted")?;
        let cancelled = browser.post_json(&format!("/api/runs/{run}/cancel"), &csrf, &json!({})).await?;
        if cancelled.status != 200 {
            return Err(format!("cancel answered {} {}", cancelled.status, cancelled.text()));
        }
        let last = stream.await.map_err(|e| e.to_string())??;
        if last["event"] != "cancelled" {
            return Err(format!("the stream ends saying the run was cancelled: {last}"));
        }
        Ok(())
    });
    assert_eq!(run.spawned.len(), 3, "{:?}", run.spawned);
    let killed = run.trace.lines().iter().filter(|l| l.contains("-> Kill ")).count();
    assert_eq!(killed, 3, "every host killed its command when the run was cancelled");
}

#[test]
fn the_audit_trail_through_the_console_shows_ones_own_records_newest_first_and_verifies() {
    Site::run_checked(&spec(3, 309), |client| async move {
        let bob = client.browser("192.0.2.18")?;
        let bob_csrf = bob.log_in("bob", PASSWORD).await?;
        exec(&bob, &bob_csrf, "h[01-03]", "/usr/bin/echo bob").await?;
        let alice = client.browser("192.0.2.19")?;
        let csrf = alice.log_in("alice", PASSWORD).await?;
        finished(&exec(&alice, &csrf, "h[01-03]", "/usr/bin/echo hi").await?)?;
        // A host reports its command's end as it writes the `ended` record: the record reaches
        // the collector a moment after the result reaches the browser.
        let mut value = Value::Null;
        for _ in 0..20 {
            let listing = alice.get("/api/audit").await?;
            value = serde_json::from_slice(&listing.body).map_err(|e| e.to_string())?;
            if value["entries"].as_array().is_some_and(|e| e.len() >= 6) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let entries = value["entries"].as_array().ok_or_else(|| format!("entries: {value}"))?;
        // Each host's `run` and `ended` records, and none of bob's: alice has no `audit` grant.
        if entries.len() != 6 || entries.iter().any(|e| e["principal"] != "alice") {
            return Err(format!("alice sees her six records only: {value}"));
        }
        let index: Vec<u64> = entries.iter().filter_map(|e| e["index"].as_u64()).collect();
        if index.windows(2).any(|w| w[0] <= w[1]) {
            return Err(format!("newest first: {index:?}"));
        }
        let verify = alice.post_json("/api/audit/verify", &csrf, &json!({})).await?;
        let value: Value = serde_json::from_slice(&verify.body).map_err(|e| e.to_string())?;
        if value["verify"]["intact"] != true {
            return Err(format!("the trail verifies: {value}"));
        }
        let page = alice.get("/audit").await?;
        if page.status != 200 || !page.text().contains("echo hi") {
            return Err(format!("the audit page lists the run: {}", page.status));
        }
        Ok(())
    });
}
