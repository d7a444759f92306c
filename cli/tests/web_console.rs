//! The web console in a real browser: headless Chromium, driven through chromedriver, against a
//! gateway and twenty managed hosts on loopback. It logs in through the form, runs commands and
//! reads the grouped results the page draws, finds hostile output shown as text, cancels a run
//! and finds its processes gone, survives a gateway restart, and lands on the login form with an
//! altered cookie. A screenshot of the results page is saved in the test's output directory.
//! Without chromium and chromedriver (`.ci/run` installs them) it says so and passes.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Processes, free_base_port, init_web_site, start_node};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < limit, "{what} did not happen within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Processes on this machine whose argv is exactly `argv`.
fn running(argv: &[&str]) -> usize {
    let wanted: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
                .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == wanted))
                .count()
        })
        .unwrap_or(0)
}

async fn text(client: &Client, css: &str) -> String {
    match client.find(Locator::Css(css)).await {
        Ok(element) => element.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Waits until the element at `css` shows text containing `needle`.
async fn wait_text(client: &Client, css: &str, needle: &str, limit: Duration) -> String {
    let started = Instant::now();
    loop {
        let shown = text(client, css).await;
        if shown.contains(needle) {
            return shown;
        }
        assert!(started.elapsed() < limit, "`{css}` never showed `{needle}`; it shows `{shown}`");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Fills the command form and presses Run.
async fn run(client: &Client, nodes: &str, command: &str) {
    for (id, value) in [("#nodes", nodes), ("#command", command)] {
        let field = client.find(Locator::Css(id)).await.expect("the form field");
        field.clear().await.expect("cleared");
        field.send_keys(value).await.expect("typed");
    }
    client.find(Locator::Css("#start")).await.expect("the Run button").click().await.expect("clicked");
}

async fn save(client: &Client, shots: &Path, name: &str) {
    let shot = client.screenshot().await.expect("a screenshot");
    std::fs::write(shots.join(name), &shot).expect("the screenshot is saved");
    eprintln!("screenshot: {}", shots.join(name).display());
}

async fn group_labels(client: &Client) -> Vec<String> {
    let mut labels = Vec::new();
    for group in client.find_all(Locator::Css("#groups .group h3 .label")).await.expect("groups") {
        labels.push(group.text().await.expect("a label"));
    }
    labels
}

#[test]
fn the_console_in_headless_chromium() {
    if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
        eprintln!(
            "skipped: {CHROMIUM} and {CHROMEDRIVER} are needed (apt-get install chromium chromium-driver)"
        );
        return;
    }
    let (dir, web_port, made) = init_web_site(20, true);
    assert!(made.contains(&format!("https://127.0.0.1:{web_port}/")), "init names the console: {made}");
    assert!(made.contains("SHA-256 "), "init prints the certificate's fingerprint: {made}");
    let root = dir.path().join("c");
    let mut nodes = Processes(vec![start_node(&root, "m0"), start_node(&root, "exec")]);
    for policy in ["policy/master", "policy/local-00", "policy/agents"] {
        nodes.0.push(start_node(&root, policy));
    }
    let driver_port = free_base_port(1);
    let driver = Command::new(CHROMEDRIVER)
        .arg(format!("--port={driver_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let mut helpers = Processes(vec![("chromedriver".into(), driver)]);
    wait_until("chromedriver listening", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", driver_port)).is_ok()
    });
    wait_until("the console listening", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", web_port)).is_ok()
    });
    let password = std::fs::read_to_string(root.join("alice.password")).expect("the password file");
    let profile = dir.path().join("chromium-profile");
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web-console");
    std::fs::create_dir_all(&shots).expect("the screenshot directory");

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        let capabilities = json!({
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,1000", format!("--user-data-dir={}", profile.display())],
            },
        });
        let serde_json::Value::Object(capabilities) = capabilities else { unreachable!("an object") };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{driver_port}"))
            .await
            .expect("a WebDriver session");
        let base = format!("https://127.0.0.1:{web_port}");

        // Log in through the form.
        client.goto(&format!("{base}/")).await.expect("the console loads");
        assert_eq!(client.current_url().await.expect("a url").path(), "/login", "not logged in: the form");
        client
            .find(Locator::Css("input[name=principal]"))
            .await
            .expect("principal")
            .send_keys("alice")
            .await
            .expect("typed");
        client
            .find(Locator::Css("input[name=password]"))
            .await
            .expect("password")
            .send_keys(password.trim())
            .await
            .expect("typed");
        client.find(Locator::Css("#login button")).await.expect("the button").click().await.expect("clicked");
        client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css("#run"))
            .await
            .expect("the command form");
        assert_eq!(text(&client, ".who").await, "alice");

        // Twenty hosts, one output: one group of twenty.
        let field = client.find(Locator::Css("#nodes")).await.expect("nodes");
        field.send_keys("h[01-20]").await.expect("typed");
        wait_text(&client, "#count", "20 hosts", Duration::from_secs(10)).await;
        run(&client, "h[01-20]", "uname -r").await;
        wait_text(&client, "#status", "20 hosts: 20 ok", Duration::from_secs(60)).await;
        assert_eq!(group_labels(&client).await, vec!["h[01-20] (20)"]);
        let release = String::from_utf8(Command::new("uname").arg("-r").output().expect("uname").stdout)
            .expect("utf-8");
        assert_eq!(text(&client, "#groups .group pre.stdout").await.trim(), release.trim());

        // Output that differs by host: a group per output, largest first, each host's detail.
        run(&client, "h[01-20]", "test %h = h07").await;
        wait_text(&client, "#status", "20 hosts:", Duration::from_secs(60)).await;
        assert_eq!(group_labels(&client).await, vec!["h[01-06,08-20] (19)", "h07 (1)"]);
        client
            .find(Locator::Css("#groups .hosts button"))
            .await
            .expect("a host")
            .click()
            .await
            .expect("clicked");
        wait_text(&client, "#detail h3", "exit 1", Duration::from_secs(5)).await;
        let shot = client.screenshot().await.expect("a screenshot");
        std::fs::write(shots.join("results.png"), &shot).expect("the screenshot is saved");
        eprintln!("screenshot: {}", shots.join("results.png").display());

        // Hostile output is text: no script runs, no element is made.
        run(&client, "h[01-20]", "echo '<script>alert(1)</script>'").await;
        wait_text(&client, "#status", "20 hosts: 20 ok", Duration::from_secs(60)).await;
        assert_eq!(text(&client, "#groups .group pre.stdout").await.trim(), "<script>alert(1)</script>");
        assert!(client.get_alert_text().await.is_err(), "no alert was raised");
        let shot = client.screenshot().await.expect("a screenshot");
        std::fs::write(shots.join("escaped.png"), &shot).expect("the screenshot is saved");
        let scripts = client
            .execute("return document.querySelectorAll('main script').length", vec![])
            .await
            .expect("runs");
        assert_eq!(scripts, json!(0), "the output made no script element");

        // Cancel a long run: the commands are killed on every host.
        let sleeper = ["sleep", "67.25"];
        run(&client, "h[01-20]", "sleep 67.25").await;
        let started = Instant::now();
        while running(&sleeper) < 20 {
            assert!(started.elapsed() < Duration::from_secs(30), "only {} sleeps started", running(&sleeper));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        client.find(Locator::Css("#cancel")).await.expect("Cancel").click().await.expect("clicked");
        wait_text(&client, "#status", "cancelled", Duration::from_secs(20)).await;
        let started = Instant::now();
        while running(&sleeper) > 0 {
            assert!(started.elapsed() < Duration::from_secs(10), "{} sleeps still run", running(&sleeper));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // Restart the gateway between login and a command: the cookie still works.
        nodes.kill("m0");
        nodes.0.push(start_node(&root, "m0"));
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", web_port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(20), "the console came back");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        run(&client, "h[01-20]", "echo after the restart").await;
        wait_text(&client, "#status", "20 hosts: 20 ok", Duration::from_secs(60)).await;

        // The cluster's status: this member's view of the others.
        client.goto(&format!("{base}/status")).await.expect("the status page loads");
        wait_text(&client, "#cluster", "serving", Duration::from_secs(5)).await;
        let members = text(&client, "#members").await;
        assert!(members.contains("m0") && members.contains("exec"), "{members}");
        save(&client, &shots, "status.png").await;

        // The audit trail, newest first: the hostile command is text, and the trail verifies.
        client.goto(&format!("{base}/audit?limit=200")).await.expect("the audit page loads");
        let first = text(&client, "#audit tbody tr td.command").await;
        assert_eq!(first.trim(), "echo after the restart", "newest first");
        let commands = text(&client, "#audit").await;
        assert!(commands.contains("echo '<script>alert(1)</script>'"), "shown as text");
        assert!(client.get_alert_text().await.is_err(), "no alert was raised");
        client.find(Locator::Css("#verify-trail")).await.expect("Verify").click().await.expect("clicked");
        wait_text(&client, "#verify", "Intact", Duration::from_secs(10)).await;
        client.goto(&format!("{base}/audit?host=h07")).await.expect("a filtered listing");
        let hosts = client.find_all(Locator::Css("#audit tbody tr td:nth-child(3)")).await.expect("rows");
        assert!(!hosts.is_empty(), "h07 has records");
        for host in hosts {
            assert_eq!(host.text().await.expect("a cell"), "h07");
        }
        save(&client, &shots, "audit.png").await;

        // The policy tier's global status from its master, and compliance over time.
        let started = Instant::now();
        loop {
            client.goto(&format!("{base}/policy")).await.expect("the policy page loads");
            let summary = client.find(Locator::Css("#policy-summary")).await;
            if let Ok(summary) = summary
                && summary.text().await.expect("text").contains("2 agents reporting")
                && client.find(Locator::Css("#compliance-chart polyline")).await.is_ok()
            {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "the tier never reported its two agents");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        save(&client, &shots, "policy.png").await;

        // An altered cookie: back to the login form, saying why.
        let mut cookie = client.get_named_cookie("cohort_session").await.expect("the session cookie");
        let value = cookie.value().to_owned();
        let flipped = if value.ends_with('A') { 'B' } else { 'A' };
        cookie.set_value(format!("{}{flipped}", &value[..value.len() - 1]));
        client.delete_cookie("cohort_session").await.expect("deleted");
        client.add_cookie(cookie).await.expect("set");
        client.goto(&format!("{base}/")).await.expect("the console loads");
        let url = client.current_url().await.expect("a url");
        assert_eq!((url.path(), url.query()), ("/login", Some("why=tampered")));
        wait_text(&client, "p.error", "could not be read", Duration::from_secs(5)).await;
        client.close().await.expect("the session closes");
    });
    helpers.kill("chromedriver");
    drop(nodes);
}
