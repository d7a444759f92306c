//! A node as a service on real processes: readiness sent to systemd's notify socket once it
//! serves, SIGHUP reloading the log filter and reopening the log file, SIGTERM draining running
//! exec work before the node exits, JSON log lines, and the Prometheus scrape endpoint parsed
//! with a Prometheus text parser.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::scrape::{samples, scrape, value};
use common::{TestCluster, free_base_port, path_str};
use nix::sys::signal::Signal;

/// Appends `text` to node `i`'s node.toml.
fn append_config(cluster: &TestCluster, i: usize, text: &str) {
    let path = cluster.config(i);
    let mut config = std::fs::read_to_string(&path).expect("node.toml");
    config.push_str(text);
    std::fs::write(&path, config).expect("node.toml written");
}

/// `cohort node run` with no RUST_LOG (so the file's filter governs) and `env` added.
fn start_plain(config: &Path, stderr: &Path, env: &[(&str, &str)], extra: &[&str]) -> Child {
    let log = std::fs::File::create(stderr).expect("stderr file");
    let mut command = Command::new(env!("CARGO_BIN_EXE_cohort"));
    command.args(["node", "run", "--config"]).arg(config).args(extra).env_remove("RUST_LOG");
    for (k, v) in env {
        command.env(k, v);
    }
    command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).spawn().expect("node starts")
}

fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn signal(child: &Child, signal: Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("a pid"));
    nix::sys::signal::kill(pid, signal).expect("signal delivered");
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn readiness_reaches_the_notify_socket_once_the_node_serves() {
    let cluster = TestCluster::init(1, 200);
    let socket_path = cluster.root().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("notify socket");
    socket.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let stderr = cluster.root().join("m0.stderr");
    let mut node =
        start_plain(&cluster.config(0), &stderr, &[("NOTIFY_SOCKET", path_str(&socket_path))], &[]);
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).expect("a notification within 30 s");
    let message = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(message.contains("READY=1"), "{message}");
    // Ready means serving: the admin channel answers now, without retrying.
    assert!(cluster.status(0).is_some(), "READY=1 came before the node answered");
    signal(&node, Signal::SIGTERM);
    let n = socket.recv(&mut buf).expect("STOPPING=1 on SIGTERM");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    assert!(node.wait().expect("exits").success());
}

#[test]
fn sighup_reloads_the_log_filter_and_reopens_a_rotated_log_file() {
    let cluster = TestCluster::init(2, 200);
    append_config(&cluster, 0, "\n[log]\nfilter = \"info\"\nfile = \"node-file.log\"\n");
    let log = cluster.root().join("m0").join("node-file.log");
    let stderr = cluster.root().join("m0.stderr");
    let mut node = start_plain(&cluster.config(0), &stderr, &[], &["--log-format", "json"]);
    let mut other = start_plain(&cluster.config(1), &cluster.root().join("m1.stderr"), &[], &[]);
    wait_until("the node logs to its file", Duration::from_secs(30), || read(&log).contains("serving"));
    // JSON lines, one object each.
    for line in read(&log).lines() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(value["level"].is_string() && value["message"].is_string(), "{line}");
    }
    assert!(!read(&log).contains("\"DEBUG\""), "debug lines under an info filter");

    // logrotate moves the file away, the filter is raised, and SIGHUP follows.
    std::fs::rename(&log, log.with_extension("log.1")).expect("rotated");
    let config = read(&cluster.config(0)).replace("filter = \"info\"", "filter = \"debug\"");
    std::fs::write(cluster.config(0), config).expect("node.toml");
    signal(&node, Signal::SIGHUP);
    wait_until("the reload is logged in a new file", Duration::from_secs(10), || {
        read(&log).contains("log filter `debug`")
    });
    wait_until("debug lines under the new filter", Duration::from_secs(10), || {
        read(&log).contains("\"DEBUG\"")
    });
    assert!(node.try_wait().expect("waits").is_none(), "SIGHUP stopped the node");
    assert!(cluster.status(0).is_some(), "the node answers after the reload");

    // A filter that does not parse leaves the running one, and the node up.
    let config = read(&cluster.config(0)).replace("filter = \"debug\"", "filter = \"=[\"");
    std::fs::write(cluster.config(0), config).expect("node.toml");
    signal(&node, Signal::SIGHUP);
    wait_until("the refusal is logged", Duration::from_secs(10), || {
        read(&log).contains("kept the running log settings")
    });
    assert!(node.try_wait().expect("waits").is_none(), "a bad reload stopped the node");
    signal(&node, Signal::SIGTERM);
    signal(&other, Signal::SIGTERM);
    assert!(node.wait().expect("exits").success());
    assert!(other.wait().expect("exits").success());
}

#[test]
fn sigterm_drains_a_running_command_before_the_exec_node_exits() {
    let mut cluster = TestCluster::init_exec(2, 2);
    let exec = cluster.names.len() - 1;
    cluster.start_all();
    let state = cluster.dir.path().join("client");
    cluster.login(&state);

    std::thread::scope(|s| {
        let running = s.spawn(|| common::exec(&state, &["-w", "h01", "--", "sleep", "3"]));
        // Well inside the three seconds the command runs (a run starts in milliseconds).
        std::thread::sleep(Duration::from_millis(1200));
        cluster.signal(exec, Signal::SIGTERM);
        wait_until("the drain is logged", Duration::from_secs(10), || {
            cluster.log_text(exec).contains("draining")
        });
        // New work is refused while the drain lasts: the host closes new connections.
        let refused = common::exec(&state, &["-w", "h02", "--", "true"]);
        assert!(!refused.status.success(), "a draining node took new work");
        let out = running.join().expect("the client returns");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "the running command was cut: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    let child = cluster.members[exec].as_mut().expect("the exec node ran");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waits") {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the exec node did not exit after draining");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
    let log = cluster.log_text(exec);
    assert!(log.contains("drained"), "{log}");
}

#[test]
fn metrics_are_scraped_parsed_and_move_with_the_events() {
    let mut cluster = TestCluster::init_exec(2, 2);
    let exec = cluster.names.len() - 1;
    let gateway_port = free_base_port(1);
    let exec_port = loop {
        let p = free_base_port(1);
        if p != gateway_port {
            break p;
        }
    };
    append_config(&cluster, 0, &format!("\n[metrics]\nlisten = \"127.0.0.1:{gateway_port}\"\n"));
    append_config(&cluster, exec, &format!("\n[metrics]\nlisten = \"127.0.0.1:{exec_port}\"\n"));
    cluster.start_all();
    let state = cluster.dir.path().join("client");
    cluster.login(&state);

    let mut first = Vec::new();
    wait_until("the gateway node's metrics", Duration::from_secs(20), || {
        first = scrape(gateway_port).map(|b| samples(&b)).unwrap_or_default();
        value(&first, "cohort_heartbeats_received_total", None).is_some_and(|v| v > 0.0)
    });
    for name in [
        "cohort_member_active_version",
        "cohort_member_syncing",
        "cohort_exec_sessions_running",
        "cohort_exec_alarm_kills_total",
        "cohort_audit_queue_depth",
    ] {
        assert!(value(&first, name, None).is_some(), "{name} missing");
    }
    assert_eq!(
        value(&first, "cohort_member_messages_dropped_total", Some(("reason", "bad-signature"))),
        Some(0.0)
    );
    let version = value(&first, "cohort_member_active_version", None).unwrap_or_default();
    let heard = value(&first, "cohort_heartbeats_received_total", None).unwrap_or_default();

    // A change installs: the version moves; heartbeats keep coming.
    let mut set = vec!["admin".to_owned(), "set".into(), "metrics=1".into(), "--wait".into()];
    set.extend(cluster.operator_args("m0"));
    common::run(&set);
    // An alarm kills a silent command: the gateway counts it. Meanwhile the exec node runs it.
    std::thread::scope(|s| {
        let killed = s.spawn(|| {
            common::exec(&state, &["-w", "h01", "--t1", "1", "--t2", "1", "--t3", "0.5", "--", "sleep", "30"])
        });
        wait_until("a session running on the exec node", Duration::from_secs(20), || {
            let now = scrape(exec_port).map(|b| samples(&b)).unwrap_or_default();
            value(&now, "cohort_exec_sessions_running", None).is_some_and(|v| v >= 1.0)
        });
        let out = killed.join().expect("the client returns");
        assert!(!out.status.success(), "an alarm-killed command succeeded");
    });
    wait_until("the figures moved", Duration::from_secs(10), || {
        let now = scrape(gateway_port).map(|b| samples(&b)).unwrap_or_default();
        value(&now, "cohort_member_active_version", None).is_some_and(|v| v > version)
            && value(&now, "cohort_heartbeats_received_total", None).is_some_and(|v| v > heard)
            && value(&now, "cohort_exec_alarm_kills_total", None).is_some_and(|v| v >= 1.0)
    });
    let config = std::fs::read_to_string(cluster.config(0)).expect("node.toml");
    assert!(config.contains("127.0.0.1"), "metrics listen on loopback");
}
