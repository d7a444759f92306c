//! Attacks on the web console: a session cookie kept after its user logged out and presented
//! again. The console is the gateway node's own, on the turmoil driver, with a simulated
//! browser; the host driver checks that nothing runs without a ticket, a grant and a record.

use cohort_io_sim::exec_site::{PASSWORD, Site, SiteSpec};
use serde_json::json;

#[test]
fn a_cookie_replayed_after_logout_is_refused_logged_and_runs_nothing() {
    let spec = SiteSpec { web: true, ..SiteSpec::new(2, 351) };
    let run = Site::run_checked(&spec, |client| async move {
        let browser = client.browser("192.0.2.30")?;
        let csrf = browser.log_in("alice", PASSWORD).await?;
        // Someone copies the cookie (a shared machine, a proxy's log) before the user logs out.
        let copied = browser.cookie("cohort_session").ok_or("a session cookie")?;
        let out = browser.post_form("/logout", &[("csrf", csrf.as_str())]).await?;
        if out.status != 303 || browser.cookie("cohort_session").is_some() {
            return Err(format!("logout answered {} and left the cookie", out.status));
        }

        // The copy, presented again: to a page, and to the API with the page's token.
        browser.set_cookie("cohort_session", &copied);
        let home = browser.get("/").await?;
        if home.status != 303 || home.header("location") != Some("/login?why=logged-out") {
            return Err(format!(
                "the copied cookie goes to the login form: {} {:?}",
                home.status, home.headers
            ));
        }
        let login = browser.get("/login?why=logged-out").await?;
        if !login.text().contains("That session was logged out") {
            return Err("the login page says why".into());
        }
        browser.set_cookie("cohort_session", &copied);
        let body = json!({ "nodes": "h[01-02]", "command": "/usr/bin/echo hi", "run_as": "alice" });
        let refused = browser.post_json("/api/exec", &csrf, &body).await?;
        if refused.status != 401 || !refused.text().contains("logged out") {
            return Err(format!("no session, no run: {} {}", refused.status, refused.text()));
        }
        Ok(())
    });
    assert!(run.spawned.is_empty(), "nothing ran: {:?}", run.spawned);
    let logged =
        run.trace.lines().iter().filter(|l| l.contains("logged-out session was presented again")).count();
    assert_eq!(logged, 2, "each refusal is logged");
}
