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
use cohort_core::policy::policy_file::PolicyFile;

use crate::admin::render_status;
use crate::init;
use crate::target::{Target, TargetArgs, wait_installed};

const MEMBERS: u16 = 3;
const EXEC_HOSTS: u16 = 6;
const POLICY_LOCALS: u16 = 2;
const POLICY_AGENTS: u16 = 6;
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

/// Where to find the web console and how to log in; with `stay`, the site keeps running until
/// Enter is pressed (or standard input closes).
fn web_console(args: &init::Args, stay: bool) -> anyhow::Result<()> {
    let Some(web) = crate::exec_setup::web_address(args) else { return Ok(()) };
    println!();
    println!("web console   https://{web}/   (self-signed certificate, made by `cohort init`)");
    if let Some(print) = crate::exec_setup::web_fingerprint(&args.dir.join("m0")) {
        println!("  SHA-256     {print}");
    }
    let password = args.dir.join(format!("{}.password", args.exec_user));
    let secret = std::fs::read_to_string(&password).unwrap_or_default();
    println!(
        "  log in as   {} with password {}   (from {})",
        args.exec_user,
        secret.trim(),
        password.display()
    );
    if stay {
        println!("  the site keeps running: press Enter to stop it");
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
    } else {
        println!("  run `cohort demo --stay` to keep the site up and use the console");
    }
    Ok(())
}

pub fn run(stay: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = tempfile::Builder::new().prefix("cohort-demo-").tempdir()?;
    println!(
        "cohort demo: a {MEMBERS}-member cluster, {EXEC_HOSTS} managed hosts and a policy tier on loopback, in {}",
        dir.path().display()
    );
    let args = init::Args {
        dir: dir.path().join("cluster"),
        cluster: "demo".into(),
        members: MEMBERS,
        host: "127.0.0.1".parse()?,
        base_port: 0,
        heartbeat_ms: HEARTBEAT_MS,
        exec_hosts: EXEC_HOSTS,
        exec_user: "alice".into(),
        password_file: None,
        run_as: None,
        exec_port: 0,
        kdc_port: None,
        web_port: None,
        policy_locals: POLICY_LOCALS,
        policy_agents: POLICY_AGENTS,
        policy_port: 0,
        policy_sync_s: 1,
        policy_poll_s: None,
    };
    // The members, the exec member, then the gateway, the KDC and the web console.
    let founders = usize::from(init::founders(&args));
    let addresses = free_addresses(2 * founders + 3)?;
    let (ports, gateway) = addresses.split_at(2 * founders);
    let members: Vec<(SocketAddr, SocketAddr)> = ports.chunks(2).map(|p| (p[0], p[1])).collect();
    let policy_port = free_port_run(usize::from(POLICY_LOCALS) + 1)?;
    let args = init::Args {
        exec_port: gateway[0].port(),
        kdc_port: Some(gateway[1].port()),
        web_port: Some(gateway[2].port()),
        policy_port,
        ..args
    };
    let created = init::create_at(&args, &members)?;
    step(
        started,
        "created an operator key, keys for 3 members and the exec member, a genesis configuration \
         signed by the operator (with the 6 managed hosts and alice's ACL), a gateway on m0, a KDC \
         with its own key on m1, and 6 managed hosts on the exec member, each on its own 127.0.1.x address",
    );

    let exe = std::env::current_exe().context("could not find the cohort executable")?;
    let mut fleet = Fleet { children: Vec::new() };
    let policy_configs: Vec<PathBuf> = crate::policy_setup::server_names(usize::from(POLICY_LOCALS))
        .into_iter()
        .chain(["agents".to_owned()])
        .map(|n| args.dir.join("policy").join(n).join("node.toml"))
        .collect();
    for config in created.node_configs.iter().chain(policy_configs.iter()) {
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
        &format!(
            "{} member processes up (m0-m2 and exec), exchanging signed heartbeats every {HEARTBEAT_MS} ms",
            targets.len()
        ),
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

    parallel_commands(started, dir.path(), &args)?;
    policy_tier(started, &args)?;
    web_console(&args, stay)?;
    drop(fleet);
    step(started, "stopped all members (SIGTERM)");

    Ok(())
}

/// `count` consecutive loopback ports free for TCP right now; returns the first.
fn free_port_run(count: usize) -> anyhow::Result<u16> {
    for _ in 0..200 {
        let probe = TcpListener::bind("127.0.0.1:0")?;
        let base = probe.local_addr()?.port();
        drop(probe);
        let Some(last) = base.checked_add(u16::try_from(count)?) else { continue };
        let _ = last;
        let free = (0..count).all(|i| TcpListener::bind(("127.0.0.1", base + i as u16)).is_ok());
        if free {
            return Ok(base);
        }
    }
    bail!("could not find {count} consecutive free loopback ports")
}

/// A policy made at the master reaches every agent's file through the tier; then the global
/// status table, asked of every local now.
fn policy_tier(started: Instant, args: &init::Args) -> anyhow::Result<()> {
    use cohort_core::policy::document::{Policy, PolicyTarget, Scope};
    use cohort_core::policy::wire::{PolicyAdmin, PolicyAdminReply};
    let tier =
        crate::policy_ask::TierArgs { tier: Some(args.dir.join("policy").join("tier.toml")), server: None };
    let key = Some(args.dir.join("operator.key"));
    let demo_flag = args.dir.join("policy").join("demo-flag");
    println!();
    let change_started = Instant::now();
    let policy = Policy {
        id: "firewall".into(),
        version: 1,
        author: String::new(),
        scope: Scope::Global,
        target: PolicyTarget::default(),
        params: [
            ("firewall.default".to_owned(), "deny".to_owned()),
            ("scan.interval_hours".to_owned(), "6".to_owned()),
            // Checks the agents measure: two that hold on any machine, and one that fails on
            // purpose (the flag file is never made), so the status shows a real failure.
            ("check.passwd".to_owned(), "file /etc/passwd present severity=high".to_owned()),
            ("check.true".to_owned(), "command timeout=5s -- true".to_owned()),
            ("check.demo-flag".to_owned(), format!("file {} mode=0600 severity=high", demo_flag.display())),
        ]
        .into(),
        retired: false,
    };
    let wait_started = Instant::now();
    while let Err(e) = crate::policy_ask::ask(&tier, &key, PolicyAdmin::Create(policy.clone())) {
        if wait_started.elapsed() > Duration::from_secs(20) {
            return Err(e.context("the policy master did not answer"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    step(
        started,
        "cohort policy set firewall firewall.default=deny scan.interval_hours=6 check.passwd=… check.true=… \
         check.demo-flag=…   (at the master)",
    );
    println!(
        "  checks: /etc/passwd present (high), `true` exits 0, and {} with mode 0600 (high; never made, so it fails on purpose)",
        demo_flag.display()
    );
    let agents_dir = args.dir.join("policy").join("agents");
    let files: Vec<PathBuf> =
        (0..POLICY_AGENTS).map(|a| agents_dir.join(format!("agent-{a:02}.policy"))).collect();
    let denies = |f: &PathBuf| {
        let written = std::fs::read_to_string(f).ok().and_then(|t| PolicyFile::parse(&t).ok());
        written.is_some_and(|w| w.params.get("firewall.default").is_some_and(|v| v == "deny"))
    };
    while !files.iter().all(denies) {
        if change_started.elapsed() > Duration::from_secs(30) {
            bail!("the policy did not reach every agent within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    step(
        started,
        &format!(
            "all {POLICY_AGENTS} agents applied it {:.1} s later, through local-00 and local-01 (behind local-00)",
            change_started.elapsed().as_secs_f64()
        ),
    );
    let status_started = Instant::now();
    loop {
        let reply = crate::policy_ask::ask(&tier, &key, PolicyAdmin::Status { current: true, since: None })?;
        // Every agent on the new policy, with its checks measured (three and the apply each).
        let measured = |s: &cohort_core::policy::wire::GlobalStatus| {
            s.aggregate.platforms.values().map(|c| c.checks).sum::<u64>() == 4 * u64::from(POLICY_AGENTS)
        };
        if let PolicyAdminReply::Status(status) = reply
            && status.aggregate.agents() == u64::from(POLICY_AGENTS)
            && status.aggregate.policy_versions.len() == 1
            && measured(&status)
        {
            println!();
            step(started, "cohort status --global --current");
            print!("{}", crate::policy_cli::render_global(&status));
            return Ok(());
        }
        if status_started.elapsed() > Duration::from_secs(20) {
            bail!("the global status never showed every agent on the new policy, measured");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Logs in through the gateway and runs two commands on the six managed hosts.
fn parallel_commands(started: Instant, dir: &Path, args: &init::Args) -> anyhow::Result<()> {
    let state = crate::exec_client::StateArgs { state_dir: Some(dir.join("client")) };
    let login = crate::exec_client::LoginArgs {
        cluster: Some(args.dir.join("cluster.toml")),
        user: Some("alice".into()),
        gateway: None,
        password_file: Some(args.dir.join("alice.password")),
        state: state.clone(),
    };
    let wait_started = Instant::now();
    while let Err(e) = crate::exec_client::login(&login) {
        if wait_started.elapsed() > Duration::from_secs(20) {
            return Err(e.context("the gateway did not take a login"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    step(started, "alice logged in through the gateway (Argon2id check at the KDC)");
    let exec = |argv: &[&str]| crate::exec_client::ExecArgs {
        run: crate::exec_client::RunArgs {
            hosts: Some("h[01-06]".into()),
            exclude: Vec::new(),
            rerun: None,
            lines: false,
            gather: false,
            largest_status: false,
            connect_timeout: 10.0,
            fanout: 4,
            t1: 16.0,
            t2: 32.0,
            t3: 2.0,
            run_as: None,
            max_output: 1024 * 1024,
            json: false,
            state: state.clone(),
        },
        no_stdin: true,
        env: Vec::new(),
        command: argv.iter().map(|a| (*a).to_owned()).collect(),
    };
    println!();
    step(
        started,
        "cohort exec -w 'h[01-06]' -f 4 -- uname -a   (ticket per host, ACL check, audit before spawn)",
    );
    crate::exec_client::exec(&exec(&["uname", "-a"]))?;
    let flags = dir.join("flags");
    std::fs::create_dir_all(&flags)?;
    for host in ["h01", "h03", "h05"] {
        std::fs::write(flags.join(host), "")?;
    }
    let probe = format!("{}/%h", flags.display());
    println!();
    step(started, &format!("cohort exec -w 'h[01-06]' -- test -e {probe}   (%h is each host's name)"));
    let status = crate::exec_client::exec(&exec(&["test", "-e", &probe]))?;
    if status == 0 {
        bail!("the probe was meant to fail on h02, h04 and h06");
    }
    // alice's ACL permits copies under /tmp, wherever the demo's own directory is.
    let copied = tempfile::Builder::new().prefix("cohort-demo-copy-").tempdir_in("/tmp")?;
    let source = dir.join("motd");
    std::fs::write(&source, "managed by cohort\n")?;
    let dest = format!("{}/motd-%h", copied.path().display());
    println!();
    step(
        started,
        &format!("cohort copy motd {dest} -w 'h[01-06]'   (whole file on each host, its hash audited)"),
    );
    let copy = crate::copy_cli::CopyArgs { run: exec(&[]).run, paths: vec![source, PathBuf::from(&dest)] };
    if crate::copy_cli::copy(&copy)? != 0 {
        bail!("the copy was meant to reach every host");
    }
    let placed = std::fs::read_dir(copied.path())?.count();
    if placed != 6 {
        bail!("the copy left {placed} files, not 6");
    }
    let db = args.dir.join("m0").join("node.db");
    let store = cohort_io_mio::store::Store::open(&db)?;
    let entries: Vec<_> = store
        .load_chain()?
        .into_iter()
        .filter_map(|e| match e {
            cohort_io_mio::store::StoredEntry::Entry(entry) => Some(*entry),
            cohort_io_mio::store::StoredEntry::Undecodable { .. } => None,
        })
        .collect();
    let count =
        cohort_core::exec::audit::verify_chain(&entries).context("the audit chain does not verify")?;
    println!();
    step(started, &format!("audit trail at the collector: {count} hash-chained records, chain verified"));
    Ok(())
}

fn targets(cluster_file: &Path, operator_key: &Path) -> anyhow::Result<Vec<Target>> {
    let args = TargetArgs {
        config: None,
        cluster: Some(PathBuf::from(cluster_file)),
        node: None,
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
