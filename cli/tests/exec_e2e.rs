//! Parallel secure execution on loopback with real processes: 50 exec daemons in one
//! `cohort node run`, each on its own 127.0.x.y address; `cohort exec` groups identical output;
//! a host that is down is reported unreachable while the others complete; the audit trail holds
//! every run and denial in order, verifies, and names the record that was altered.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{cohort, free_base_port, free_member_base};

struct Site {
    dir: tempfile::TempDir,
    nodes: Vec<Child>,
}

impl Drop for Site {
    fn drop(&mut self) {
        for child in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Site {
    fn root(&self) -> PathBuf {
        self.dir.path().join("c")
    }

    fn path(&self, rel: &str) -> String {
        self.root().join(rel).to_string_lossy().into_owned()
    }

    fn run(&self, args: &[&str]) -> Output {
        let state = self.dir.path().join("client");
        let mut full: Vec<&str> = args.to_vec();
        let state = state.to_string_lossy().into_owned();
        if matches!(args.first(), Some(&"exec") | Some(&"login")) {
            full.insert(1, "--state-dir");
            full.insert(2, &state);
        }
        Command::new(env!("CARGO_BIN_EXE_cohort")).args(&full).output().expect("cohort runs")
    }
}

fn start(config: &Path, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(["node", "run", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log"))
        .spawn()
        .expect("node starts")
}

/// 1 member (the gateway, with the KDC) and the exec member with 51 managed hosts, of which h51
/// is never started.
fn site() -> Site {
    let dir = tempfile::tempdir().expect("tempdir");
    // m0 and the exec member: base, base + 1 and their admin ports at + 100.
    let member_port = free_member_base(2);
    let taken = [member_port, member_port + 1, member_port + 100, member_port + 101];
    // The KDC listens on the port after the gateway's.
    let exec_port = loop {
        let p = free_base_port(2);
        if !taken.contains(&p) && !taken.contains(&(p + 1)) {
            break p;
        }
    };
    let out = cohort(&[
        "init",
        "--dir",
        dir.path().join("c").to_str().expect("utf-8"),
        "--members",
        "1",
        "--base-port",
        &member_port.to_string(),
        "--exec-hosts",
        "51",
        "--exec-port",
        &exec_port.to_string(),
        "--heartbeat-ms",
        "200",
    ]);
    assert!(out.status.success(), "init failed: {}", String::from_utf8_lossy(&out.stderr));
    // h51 stays registered with the gateway but its daemon never runs.
    let exec_config = dir.path().join("c/exec/node.toml");
    let text = std::fs::read_to_string(&exec_config).expect("exec node.toml");
    let cut = text.find("name = \"h51\"").expect("h51 entry");
    let start_of_entry = text[..cut].rfind("[[exec_host]]").expect("entry header");
    let end_of_entry = text[cut..].find("\n\n").map_or(text.len(), |e| cut + e);
    let trimmed = format!("{}{}", &text[..start_of_entry], &text[end_of_entry..]);
    std::fs::write(&exec_config, trimmed).expect("written");

    let root = dir.path().join("c");
    let nodes = vec![
        start(&root.join("m0/node.toml"), &root.join("m0.log")),
        start(&root.join("exec/node.toml"), &root.join("exec.log")),
    ];
    let site = Site { dir, nodes };
    // Wait for the gateway to take logins.
    let started = Instant::now();
    loop {
        let out = site.run(&[
            "login",
            "--cluster",
            &site.path("cluster.toml"),
            "-u",
            "alice",
            "--password-file",
            &site.path("alice.password"),
        ]);
        if out.status.success() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "login never worked: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    site
}

#[test]
fn fifty_hosts_one_group_a_down_host_unreachable_denials_and_an_audit_trail_that_verifies() {
    let site = site();

    let out = site.run(&["exec", "-w", "h[01-50]", "--", "echo", "hi"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exec failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("h[01-50] (50) ok\n"), "{stdout}");
    assert_eq!(stdout.matches("hi\n").count(), 1, "one group: {stdout}");
    assert!(stdout.contains("50 hosts: 50 ok"), "{stdout}");
    // One event loop per node process: m0 hosts the member, gateway, KDC and collector, the exec
    // node fifty daemons, all on the main thread; beside it only the thread commands start from.
    for node in &site.nodes {
        let mut threads: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", node.id()))
            .expect("/proc")
            .map(|task| std::fs::read_to_string(task.expect("a task").path().join("comm")).expect("comm"))
            .map(|comm| comm.trim_end().to_owned())
            .collect();
        threads.sort();
        assert_eq!(threads, ["cohort", "spawner"], "node process {}", node.id());
    }

    let out = site.run(&["exec", "-w", "h[01-51]", "--json", "--", "echo", "hi"]);
    assert!(!out.status.success(), "a down host makes the run fail");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 51);
    let down = lines.iter().find(|v| v["host"] == "h51").expect("h51 reported");
    assert!(down["outcome"].as_str().expect("outcome").starts_with("unreachable"), "{down}");
    assert_eq!(lines.iter().filter(|v| v["exit_code"] == 0 && v["stdout"] == "hi\n").count(), 50);

    // A denial: the ACL grants no shell.
    let out = site.run(&["exec", "-w", "h01", "--", "sh", "-c", "id"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("denied: ACL: principal `alice` may not run a shell")
    );

    // The trail: 100 records for the first run, 100 for the second's 50 reachable hosts, and the
    // denial; per host, the run record precedes its end.
    let config = site.path("m0/node.toml");
    let verify = cohort(&["audit", "verify", "--config", &config]);
    let verified = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{verified}{}", String::from_utf8_lossy(&verify.stderr));
    assert!(verified.contains("audit chain intact: 201 entries"), "{verified}");
    // The same trail as JSON lines for a log pipeline: one object per entry, every field named.
    let export = cohort(&["audit", "export", "--config", &config, "--json"]);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 201);
    let denied = lines.iter().find(|l| l["decision"] == "denied").expect("the denial");
    assert_eq!(denied["principal"], "alice");
    assert!(denied["detail"].as_str().is_some_and(|d| d.contains("may not run a shell")), "{denied}");
    assert_eq!(lines[0]["host_signature"].as_str().map(str::len), Some(128));
    let tail = cohort(&["audit", "tail", "--config", &config, "-n", "500"]);
    let tail = String::from_utf8_lossy(&tail.stdout);
    assert!(tail.contains("DENIED: ACL: principal `alice` may not run a shell"));
    for host in ["h01", "h37"] {
        let lines: Vec<&str> = tail.lines().filter(|l| l.contains(&format!(" {host} "))).collect();
        let kinds: Vec<&str> = lines
            .iter()
            .map(|l| {
                if l.contains(" run") && !l.contains("ended") {
                    "run"
                } else if l.contains("ended") {
                    "ended"
                } else {
                    "denied"
                }
            })
            .collect();
        assert!(kinds.starts_with(&["run", "ended", "run", "ended"]), "{host}: {lines:?}");
    }

    // Alter one record in the database: verify names it.
    let db = site.root().join("m0/node.db");
    let conn = rusqlite::Connection::open(&db).expect("db");
    let record: Vec<u8> =
        conn.query_row("SELECT record FROM audit_chain WHERE idx = 42", [], |r| r.get(0)).expect("row 42");
    let mut altered = record.clone();
    let at = altered.windows(2).position(|w| w == b"hi").expect("the argv is in the record");
    altered[at] = b'H';
    conn.execute("UPDATE audit_chain SET record = ?1 WHERE idx = 42", [altered]).expect("updated");
    drop(conn);
    let verify = cohort(&["audit", "verify", "--config", &config]);
    assert!(!verify.status.success());
    let err = String::from_utf8_lossy(&verify.stderr);
    assert!(err.contains("entry 42"), "{err}");

    // Put it back, then cut the chain short behind the collector's last checkpoint: the links
    // that remain are intact, and verify still says the trail was truncated.
    let conn = rusqlite::Connection::open(&db).expect("db");
    conn.execute("UPDATE audit_chain SET record = ?1 WHERE idx = 42", [record]).expect("restored");
    conn.execute_batch(
        "CREATE TABLE cut AS SELECT * FROM audit_chain WHERE idx >= 150;
         DELETE FROM audit_chain WHERE idx >= 150;",
    )
    .expect("cut");
    let verify = cohort(&["audit", "verify", "--config", &config]);
    let err = String::from_utf8_lossy(&verify.stderr);
    assert!(!verify.status.success() && err.contains("truncated"), "{err}");
    conn.execute_batch("INSERT INTO audit_chain SELECT * FROM cut; DROP TABLE cut;").expect("put back");
    drop(conn);
    let verify = cohort(&["audit", "verify", "--config", &config]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));

    // The alarm: a silent command is killed at T1, on the host, whole process group, audited.
    let started = Instant::now();
    let out =
        site.run(&["exec", "-w", "h01,h02", "--t1", "1", "--t2", "2", "--t3", "0.5", "--", "sleep", "31.5"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        stdout.contains("h[01-02] (2) killed by alarm: no output since the last alarm after T1"),
        "{stdout}"
    );
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    let still_running = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .any(|cmdline| cmdline == b"sleep\x0031.5\x00");
    assert!(!still_running, "the killed command is still running");
    let tail = cohort(&["audit", "tail", "--config", &config, "-n", "10"]);
    assert!(String::from_utf8_lossy(&tail.stdout).contains("ended: killed: killed by alarm"));

    // Open handshakes at the gateway are bounded: the 65th silent connection is refused at once,
    // and once they go away logins work again.
    let cluster: toml::Value =
        toml::from_str(&std::fs::read_to_string(site.path("cluster.toml")).expect("read"))
            .expect("cluster.toml parses");
    let gateway: std::net::SocketAddr =
        cluster["gateway"]["address"].as_str().expect("gateway address").parse().expect("an address");
    let idle: Vec<std::net::TcpStream> =
        (0..64).map(|_| std::net::TcpStream::connect(gateway).expect("connects")).collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut extra = std::net::TcpStream::connect(gateway).expect("the kernel accepts it");
    extra.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    let mut byte = [0u8; 1];
    let refused = match std::io::Read::read(&mut extra, &mut byte) {
        Ok(0) => true,
        Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
        Ok(_) => false,
    };
    assert!(refused, "the 65th silent connection was kept open");
    drop(idle);
    std::thread::sleep(Duration::from_millis(300));
    let pw = site.path("alice.password");
    let out =
        site.run(&["login", "--cluster", &site.path("cluster.toml"), "-u", "alice", "--password-file", &pw]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A wrong password: refused with a clear error, and audited precisely at the collector.
    let bad = site.dir.path().join("bad.password");
    std::fs::write(&bad, "not the password\n").expect("written");
    let bad = bad.to_string_lossy().into_owned();
    let out =
        site.run(&["login", "--cluster", &site.path("cluster.toml"), "-u", "alice", "--password-file", &bad]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("login failed: unknown principal or wrong password")
    );
    let tail = cohort(&["audit", "tail", "--config", &config]);
    assert!(String::from_utf8_lossy(&tail.stdout).contains("DENIED: wrong password for `alice`"));
}

/// Output larger than one message, from every host at once and from one host printing 50 MB: the
/// first comes back whole and grouped, the second cut at the cap with a marker that says how
/// much was dropped, and a run beside it is not disturbed.
#[test]
fn large_outputs_come_back_whole_or_capped_with_a_marker_without_disturbing_other_runs() {
    let site = site();

    // About 108 KB per host from fifty hosts: 5.4 MB of results for one client.
    let out = site.run(&["exec", "-w", "h[01-50]", "--", "seq", "1", "20000"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{}",
        &stdout[..stdout.len().min(2000)],
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("h[01-50] (50) ok\n"), "one group of fifty");
    assert_eq!(stdout.matches("\n19999\n20000\n").count(), 1, "the whole output, once");
    assert!(stdout.contains("50 hosts: 50 ok"));

    let fifty_mb = (50 * 1024 * 1024).to_string();
    let (big, beside) = std::thread::scope(|s| {
        let big = s.spawn(|| site.run(&["exec", "-w", "h01", "--", "head", "-c", &fifty_mb, "/dev/zero"]));
        std::thread::sleep(Duration::from_millis(200));
        let beside = site.run(&["exec", "-w", "h[02-10]", "--", "echo", "beside"]);
        (big.join().expect("the big run"), beside)
    });
    let stdout = String::from_utf8_lossy(&beside.stdout);
    assert!(beside.status.success(), "{stdout}");
    assert!(stdout.contains("h[02-10] (9) ok\n") && stdout.contains("\nbeside\n"), "{stdout}");
    assert!(stdout.contains("9 hosts: 9 ok"), "{stdout}");
    let stdout = String::from_utf8_lossy(&big.stdout);
    assert!(big.status.success(), "{}", String::from_utf8_lossy(&big.stderr));
    let cut = 50 * 1024 * 1024 - 1024 * 1024;
    assert!(
        stdout.contains(&format!("[output cut: {cut} more bytes not kept; see --max-output]")),
        "marker missing"
    );

    // A smaller cap, asked for by the client, in JSON.
    let out = site.run(&[
        "exec",
        "-w",
        "h03",
        "--json",
        "--max-output",
        "4096",
        "--",
        "head",
        "-c",
        &fifty_mb,
        "/dev/zero",
    ]);
    let line: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).expect("one JSON object");
    assert_eq!(line["stdout"].as_str().map(str::len), Some(4096));
    assert_eq!(line["output_cut_bytes"], 50 * 1024 * 1024 - 4096);
    assert_eq!(line["exit_code"], 0);
}
