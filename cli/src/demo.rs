//! `cohort demo`: the embedded default. Creates a 3-member cluster on loopback in a temporary
//! directory, starts each member as its own `cohort node run` process, makes a configuration
//! change at one member, waits until every member reports it installed, shows what happened with
//! timings, and stops everything.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cohort_core::admin::{AdminRequest, AdminResponse, LookupReply};
use cohort_core::member::Change;

use crate::admin::{Target, TargetArgs, render_status, wait_installed};
use crate::init;

const MEMBERS: u16 = 3;
const HEARTBEAT_MS: u64 = 250;

/// Member processes, stopped (SIGTERM, then SIGKILL) when dropped, so an early error leaves
/// nothing running.
struct Fleet {
    children: Vec<(String, Child)>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for (_, child) in &mut self.children {
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Loopback ports free for both TCP and UDP right now.
fn free_addresses(count: usize) -> anyhow::Result<Vec<SocketAddr>> {
    let mut found = Vec::new();
    let mut held = Vec::new();
    for _ in 0..count * 20 {
        if found.len() == count {
            break;
        }
        let tcp = TcpListener::bind("127.0.0.1:0")?;
        let addr = tcp.local_addr()?;
        if let Ok(udp) = UdpSocket::bind(addr) {
            found.push(addr);
            held.push((tcp, udp));
        }
    }
    if found.len() < count {
        bail!("could not find {count} free loopback ports");
    }
    Ok(found)
}

fn step(started: Instant, text: &str) {
    println!("[{:>5.2}s] {text}", started.elapsed().as_secs_f64());
}

pub fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = tempfile::Builder::new().prefix("cohort-demo-").tempdir()?;
    println!("cohort demo: a {MEMBERS}-member cluster on loopback, in {}", dir.path().display());
    let args = init::Args {
        dir: dir.path().join("cluster"),
        cluster: "demo".into(),
        members: MEMBERS,
        host: "127.0.0.1".parse()?,
        base_port: 0,
        heartbeat_ms: HEARTBEAT_MS,
        exec_hosts: 0,
        exec_user: "alice".into(),
        password_file: None,
        run_as: None,
        exec_port: 0,
    };
    let created = init::create_at(&args, &free_addresses(usize::from(MEMBERS))?)?;
    step(
        started,
        "created an operator key, 3 member keys and a genesis configuration signed by the operator",
    );

    let exe = std::env::current_exe().context("could not find the cohort executable")?;
    let mut fleet = Fleet { children: Vec::new() };
    for config in &created.node_configs {
        let name =
            config.parent().and_then(Path::file_name).map_or("node".into(), |n| n.to_string_lossy().into());
        let log = std::fs::File::create(dir.path().join(format!("{name}.log")))?;
        let child = Command::new(&exe)
            .args(["node", "run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("could not start member {name}"))?;
        fleet.children.push((name, child));
    }
    let targets = targets(&created.cluster_file, &created.operator_key)?;
    wait_serving(&targets, &mut fleet, Duration::from_secs(20))?;
    step(
        started,
        &format!("{MEMBERS} member processes up, exchanging signed heartbeats every {HEARTBEAT_MS} ms"),
    );

    let at = &targets[1];
    let change_started = Instant::now();
    let version = at.change(vec![
        Change::Set { key: "dns".into(), value: "10.0.0.53".into() },
        Change::Set { key: "motd".into(), value: "hello from cohort".into() },
    ])?;
    step(started, &format!("operator change (dns, motd) accepted at {} as {version}", at.name));
    let took = wait_installed(&targets, version, Duration::from_secs(30))?;
    let beats = took.as_secs_f64() * 1000.0 / HEARTBEAT_MS as f64;
    step(
        started,
        &format!(
            "every member installed {version} {:.0} ms after the change ({beats:.1} heartbeats), \
             each having heard every other announce it twice",
            (change_started.elapsed().min(took)).as_secs_f64() * 1000.0
        ),
    );

    let status = targets[0].status()?;
    println!();
    print!("{}", render_status(&status));
    println!();
    match targets[2].ask(&AdminRequest::Lookup { key: Some("dns".into()) })? {
        AdminResponse::Lookup(LookupReply::Value { version, value: Some(value), .. }) => {
            step(started, &format!("`cohort get dns` at {}: {value} (from {version})", targets[2].name));
        }
        other => bail!("lookup at {} answered {other:?}", targets[2].name),
    }
    drop(fleet);
    step(started, "stopped all members (SIGTERM)");
    println!("policy tier and parallel execution join this demo as they land (issues 5 and 6).");
    Ok(())
}

fn targets(cluster_file: &Path, operator_key: &Path) -> anyhow::Result<Vec<Target>> {
    let args = TargetArgs {
        config: None,
        cluster: Some(PathBuf::from(cluster_file)),
        member: None,
        key: Some(PathBuf::from(operator_key)),
        timeout_secs: 5,
    };
    args.all_members()
}

fn wait_serving(targets: &[Target], fleet: &mut Fleet, limit: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        for (name, child) in &mut fleet.children {
            if let Ok(Some(exit)) = child.try_wait() {
                bail!("member {name} exited early ({exit}); see its log");
            }
        }
        let up = targets.iter().filter(|t| t.status().is_ok_and(|s| !s.syncing)).count();
        if up == targets.len() {
            return Ok(());
        }
        if started.elapsed() > limit {
            bail!("only {up} of {} members answered within {limit:?}", targets.len());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
