//! Helpers for tests that run real `cohort` processes on loopback.

#![allow(dead_code)]

pub mod scrape;

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn cohort(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cohort")).args(args).output().expect("cohort runs")
}

/// `n` consecutive loopback ports free for TCP and UDP, starting at the returned base.
pub fn free_base_port(n: u16) -> u16 {
    // Distinct per call within one test process too: tests run in parallel threads.
    static CALLS: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let seed = (std::process::id() as u16) ^ (nanos as u16) ^ call.wrapping_mul(4099);
    for attempt in 0..500u16 {
        let base = 20_000 + (seed.wrapping_mul(7).wrapping_add(attempt.wrapping_mul(97))) % 40_000;
        let all_free = (0..n).all(|i| {
            let addr = ("127.0.0.1", base + i);
            TcpListener::bind(addr).is_ok() && UdpSocket::bind(addr).is_ok()
        });
        if all_free {
            return base;
        }
    }
    panic!("no free loopback ports");
}

/// A base port for `n` members: base..base+n for their member listeners and base+100.. for their
/// admin listeners, all free.
pub fn free_member_base(n: u16) -> u16 {
    loop {
        let base = free_base_port(n);
        if (0..n).all(|i| TcpListener::bind(("127.0.0.1", base + 100 + i)).is_ok()) {
            return base;
        }
    }
}

/// A cluster made by `cohort init`, its member processes, and their logs.
pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub members: Vec<Option<Child>>,
    pub names: Vec<String>,
}

impl TestCluster {
    pub fn init(n: u16, heartbeat_ms: u64) -> TestCluster {
        let names = (0..n).map(|i| format!("m{i}")).collect();
        let hb = heartbeat_ms.to_string();
        TestCluster::init_with(&["--members", &n.to_string(), "--heartbeat-ms", &hb], n, names)
    }

    /// `cohort init` with `extra` arguments; `processes` are the node directories (under the
    /// cluster root) this test runs, e.g. `policy/master`.
    pub fn init_with(extra: &[&str], members: u16, processes: Vec<String>) -> TestCluster {
        TestCluster::init_at(free_member_base(members), extra, processes)
    }

    /// A cluster of `members` with the gateway on m0 (and the KDC on m1 when there are two),
    /// and an `exec` member hosting `hosts` managed hosts; the processes are the members, then
    /// `exec`. Every port it uses is free when it is made.
    pub fn init_exec(members: u16, hosts: u16) -> TestCluster {
        // The exec node is a member too: it takes the ports after the others'.
        let base = free_member_base(members + 1);
        let taken: Vec<u16> = (0..=members).flat_map(|i| [base + i, base + 100 + i]).collect();
        let exec_port = loop {
            let p = free_base_port(2);
            if !taken.contains(&p) && !taken.contains(&(p + 1)) {
                break p;
            }
        };
        let mut names: Vec<String> = (0..members).map(|i| format!("m{i}")).collect();
        names.push("exec".into());
        let (members, hosts, exec_port) = (members.to_string(), hosts.to_string(), exec_port.to_string());
        let args = [
            "--members",
            &members,
            "--heartbeat-ms",
            "200",
            "--exec-hosts",
            &hosts,
            "--exec-port",
            &exec_port,
        ];
        TestCluster::init_at(base, &args, names)
    }

    fn init_at(base: u16, extra: &[&str], processes: Vec<String>) -> TestCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("c");
        let mut args = vec!["init", "--dir", path_str(&root), "--cluster", "test"];
        let base = base.to_string();
        args.extend(["--base-port", base.as_str()]);
        args.extend(extra);
        let out = cohort(&args);
        assert!(out.status.success(), "init failed: {}", String::from_utf8_lossy(&out.stderr));
        TestCluster { dir, members: processes.iter().map(|_| None).collect(), names: processes }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("c")
    }

    pub fn config(&self, i: usize) -> PathBuf {
        self.root().join(&self.names[i]).join("node.toml")
    }

    pub fn log(&self, i: usize) -> PathBuf {
        self.root().join(format!("{}.log", self.names[i]))
    }

    pub fn start(&mut self, i: usize) {
        self.start_with_env(i, &[]);
    }

    /// Starts member `i` with `env` added to its own environment.
    pub fn start_with_env(&mut self, i: usize, env: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log(i)).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_cohort"))
            .args(["node", "run", "--config"])
            .arg(self.config(i))
            .env("RUST_LOG", "debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("node starts");
        self.members[i] = Some(child);
    }

    pub fn start_all(&mut self) {
        for i in 0..self.members.len() {
            self.start(i);
        }
    }

    /// kill -9.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reaped");
        }
    }

    /// SIGSTOP: the process neither sends nor reads, as if cut off (its kernel still queues
    /// what peers send it).
    pub fn pause(&self, i: usize) {
        self.signal(i, nix::sys::signal::Signal::SIGSTOP);
    }

    /// SIGCONT after [`TestCluster::pause`].
    pub fn resume(&self, i: usize) {
        self.signal(i, nix::sys::signal::Signal::SIGCONT);
    }

    pub fn signal(&self, i: usize, signal: nix::sys::signal::Signal) {
        let child = self.members[i].as_ref().expect("the member runs");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("a pid"));
        nix::sys::signal::kill(pid, signal).expect("signal delivered");
    }

    /// `cohort status --json` of member `i`, if it answers.
    pub fn status(&self, i: usize) -> Option<serde_json::Value> {
        let out = cohort(&["status", "--config", self.config(i).to_str()?, "--json", "--timeout-secs", "2"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    pub fn wait_for(&self, what: &str, limit: Duration, mut ready: impl FnMut(&TestCluster) -> bool) {
        let started = Instant::now();
        while !ready(self) {
            assert!(started.elapsed() < limit, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn operator_args(&self, member: &str) -> Vec<String> {
        let root = self.root();
        vec![
            "--cluster".into(),
            root.join("cluster.toml").to_string_lossy().into(),
            "--node".into(),
            member.into(),
            "--key".into(),
            root.join("operator.key").to_string_lossy().into(),
        ]
    }

    /// `cohort login` as alice with the password init generated, keeping the credential in
    /// `state`; retried until the gateway and KDC answer (20 s at most).
    pub fn login(&self, state: &Path) {
        let root = self.root();
        let started = Instant::now();
        loop {
            let out = cohort(&[
                "login",
                "--state-dir",
                path_str(state),
                "--cluster",
                path_str(&root.join("cluster.toml")),
                "-u",
                "alice",
                "--password-file",
                path_str(&root.join("alice.password")),
            ]);
            if out.status.success() {
                return;
            }
            if started.elapsed() > Duration::from_secs(20) {
                let logs: Vec<String> = (0..self.names.len())
                    .map(|i| format!("{}:\n{}", self.names[i], self.log_text(i)))
                    .collect();
                panic!("login never worked: {}\n{}", String::from_utf8_lossy(&out.stderr), logs.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log_text(&self, i: usize) -> String {
        std::fs::read_to_string(self.log(i)).unwrap_or_default()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

pub fn active(status: &serde_json::Value) -> Option<String> {
    status["active"].as_str().map(str::to_owned)
}

pub fn staged(status: &serde_json::Value) -> Option<String> {
    status["staged"].as_str().map(str::to_owned)
}

/// `cohort exec` with the client state in `state`.
pub fn exec(state: &Path, args: &[&str]) -> Output {
    let mut full = vec!["exec", "--state-dir", path_str(state)];
    full.extend(args);
    cohort(&full)
}

/// Runs `cohort` with `args` and returns its stdout; fails the test if it fails.
pub fn run(args: &[String]) -> String {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = cohort(&args);
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The version `cohort admin set` printed as accepted, in full (`COUNTER@AUTHOR`), from its
/// `accepted the change as v2@1a2b3c4d (2@1a2b…)` line.
pub fn accepted_version(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| {
            let (_, rest) = l.split_once("accepted the change as ")?;
            let full = rest.split_once('(')?.1.trim_end().strip_suffix(')')?;
            Some(full.to_owned())
        })
        .unwrap_or_else(|| panic!("no accepted version in {stdout:?}"))
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Node processes a test started, by name; each is killed when the test ends.
pub struct Processes(pub Vec<(String, Child)>);

impl Processes {
    /// Kills the process called `name` and forgets it.
    pub fn kill(&mut self, name: &str) {
        if let Some((_, child)) = self.0.iter_mut().find(|(n, _)| n == name) {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.0.retain(|(n, _)| n != name);
    }

    /// The process id of the process called `name`.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, c)| c.id())
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts the node whose configuration is ROOT/NAME/node.toml, its log appended to
/// ROOT/NAME.log.
pub fn start_node(root: &Path, name: &str) -> (String, Child) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join(format!("{name}.log")))
        .expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(["node", "run", "--config"])
        .arg(root.join(name).join("node.toml"))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("node starts");
    (name.to_owned(), child)
}

/// A site with the web console, made by `cohort init` in DIR/c on ports free now: m0 is the
/// gateway (with the KDC) and serves the console, the `exec` member hosts `hosts` managed hosts;
/// with `policy`, a policy tier too (`policy/master`, `policy/local-00` and two agents in
/// `policy/agents`, syncing every second), whose master the console asks.
/// Returns the directory, the console's port and what init printed.
pub fn init_web_site(hosts: u16, policy: bool) -> (tempfile::TempDir, u16, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let member_port = free_member_base(2);
    let taken = [member_port, member_port + 1, member_port + 100, member_port + 101];
    // The gateway, the KDC after it, and the console after that.
    let exec_port = loop {
        let p = free_base_port(3);
        if !(0..3).any(|i| taken.contains(&(p + i))) {
            break p;
        }
    };
    let web_port = exec_port + 2;
    let root = dir.path().join("c");
    let policy_port = loop {
        let p = free_base_port(2);
        if !(0..2).any(|i| taken.contains(&(p + i)) || (exec_port..exec_port + 3).contains(&(p + i))) {
            break p.to_string();
        }
    };
    let policy_args =
        ["--policy-locals", "1", "--policy-agents", "2", "--policy-sync-s", "1", "--policy-port"];
    let policy_args: Vec<&str> =
        if policy { policy_args.into_iter().chain([policy_port.as_str()]).collect() } else { Vec::new() };
    let out = cohort(
        &[
            "init",
            "--dir",
            path_str(&root),
            "--members",
            "1",
            "--base-port",
            &member_port.to_string(),
            "--exec-hosts",
            &hosts.to_string(),
            "--exec-port",
            &exec_port.to_string(),
            "--web-port",
            &web_port.to_string(),
            "--heartbeat-ms",
            "200",
        ]
        .into_iter()
        .chain(policy_args)
        .collect::<Vec<_>>(),
    );
    assert!(out.status.success(), "init failed: {}", String::from_utf8_lossy(&out.stderr));
    (dir, web_port, String::from_utf8_lossy(&out.stdout).into_owned())
}
