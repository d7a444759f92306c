//! `cohort login` and `cohort exec`: log in once through the gateway, keep the credential (0600)
//! with its expiry, then run a task (a command, or `cohort copy`'s files) on many hosts and show
//! the results as they arrive, with a progress bar while running. Owns the client's state
//! directory (key, credential, last run for `--rerun`); how results look is `results.rs`'s.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use cohort_core::child_env::is_var_name;
use cohort_core::exec::gateway::{ClientEvent, ClientRequest, ExecCommand, HostOutcome, HostResult};
use cohort_core::exec::nodeset;
use cohort_core::exec::task::{MAX_STDIN, Task};
use cohort_core::exec::ticket::Credential;
use cohort_core::exec::wire::{GatewayReply, GatewayWire};
use cohort_core::signed::Signed;
use cohort_core::{NodeKeys, PublicIdentity, wire};
use cohort_io_mio::channel_client::ChannelClient;
use cohort_io_mio::launch::current_user;
use cohort_io_mio::{entropy, keyfile};
use serde::{Deserialize, Serialize};

use crate::client_config::client_config;
use crate::cluster_file::ClusterFile;
use crate::hosts_file;
use crate::results::{exit_status, host_json, print_lines, render_grouped, summary};
use crate::target::with_defaults;

/// What `cohort login` keeps: where the gateway is, its pinned key, and the credential.
#[derive(Debug, Serialize, Deserialize)]
struct Session {
    gateway: SocketAddr,
    gateway_identity: PublicIdentity,
    credential: Signed<Credential>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct StateArgs {
    /// Where the client key and credential live (default: $COHORT_HOME, else `state_dir` in the
    /// client config, else ~/.cohort).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

impl StateArgs {
    fn dir(&self) -> anyhow::Result<PathBuf> {
        if let Some(dir) = with_defaults(&self.state_dir, "COHORT_HOME", client_config()?.state_dir.as_ref())
        {
            return Ok(dir);
        }
        let home = std::env::var_os("HOME").context("set HOME, COHORT_HOME or --state-dir")?;
        Ok(PathBuf::from(home).join(".cohort"))
    }
}

fn client_keys(dir: &Path) -> anyhow::Result<NodeKeys> {
    let path = dir.join("client.key");
    if path.exists() {
        return Ok(keyfile::read_key_file(&path)?);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("could not create {}", dir.display()))?;
    let keys = NodeKeys::generate(&mut entropy::os_seeded_rng());
    keyfile::write_key_file(&path, &keys, false)?;
    Ok(keys)
}

#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// The cluster file naming the gateway and pinning its key (from `cohort init`).
    /// [default: $COHORT_CLUSTER, else `cluster` in the client config]
    #[arg(long, value_name = "FILE")]
    pub cluster: Option<PathBuf>,
    /// The principal to log in as. [default: $COHORT_USER, else `user` in the client config]
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// Reach the gateway at this address instead of the cluster file's (its key stays the one
    /// the cluster file pins). [default: $COHORT_GATEWAY, else `gateway` in the client config]
    #[arg(long, value_name = "IP:PORT")]
    pub gateway: Option<SocketAddr>,
    /// Read the password from this file instead of asking.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    #[command(flatten)]
    pub state: StateArgs,
}

pub fn login(args: &LoginArgs) -> anyhow::Result<()> {
    let config = client_config()?;
    let cluster = with_defaults(&args.cluster, "COHORT_CLUSTER", config.cluster.as_ref()).context(
        "say which cluster: --cluster cluster.toml (or $COHORT_CLUSTER, or `cluster` in the client config)",
    )?;
    let user = with_defaults(&args.user, "COHORT_USER", config.user.as_ref())
        .context("say who logs in: -u NAME (or $COHORT_USER, or `user` in the client config)")?;
    let file = ClusterFile::load(&cluster)?;
    let mut gateway =
        file.gateway.context("the cluster file names no gateway; run `cohort init --exec-hosts N`")?;
    let address = match &args.gateway {
        Some(addr) => Some(*addr),
        None => match std::env::var("COHORT_GATEWAY").ok().filter(|v| !v.is_empty()) {
            Some(text) => {
                Some(text.parse().with_context(|| format!("COHORT_GATEWAY `{text}` is not IP:PORT"))?)
            }
            None => config.gateway,
        },
    };
    gateway.address = address.unwrap_or(gateway.address);
    let identity = gateway.identity()?;
    let dir = args.state.dir()?;
    let keys = client_keys(&dir)?;
    let password = read_password(args.password_file.as_deref(), &user)?;
    let timeout = Duration::from_secs(15);
    let mut client = ChannelClient::connect(gateway.address, identity, &keys, timeout)?;
    client.send(&GatewayWire::Client(ClientRequest::Login { principal: user.clone(), password }))?;
    match client.recv::<GatewayReply>(timeout)? {
        GatewayReply::Client(ClientEvent::LoggedIn { credential }) => {
            let expires = credential.body.expires;
            let session = Session { gateway: gateway.address, gateway_identity: identity, credential };
            let path = dir.join("credential");
            let bytes = wire::encode(&session)?;
            write_private(&path, &bytes)?;
            let hours = expires.0.saturating_sub(wall_ms()) as f64 / 3_600_000.0;
            println!("logged in as {user}; credential in {} expires in {hours:.1} h", path.display());
            Ok(())
        }
        GatewayReply::Client(ClientEvent::Refused { reason }) => bail!("{reason}"),
        other => bail!("the gateway answered a login with {other:?}"),
    }
}

/// A password from `file` (its first line), else asked for on the terminal, else the first line
/// of standard input.
pub fn read_password(file: Option<&std::path::Path>, user: &str) -> anyhow::Result<String> {
    Ok(match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("could not read {}", path.display()))?
            .trim_end_matches('\n')
            .to_owned(),
        None if std::io::stdin().is_terminal() => {
            rpassword::prompt_password(format!("password for {user}: "))?
        }
        None => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line.trim_end_matches(['\n', '\r']).to_owned()
        }
    })
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // A staging name of this process's own: two runs finishing at once each rename a whole
    // file into place, and the last one wins.
    let staging = path.with_extension(format!("{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&staging);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&staging)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&staging, path)?;
    Ok(())
}

fn load_session(dir: &Path) -> anyhow::Result<Session> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("credential");
    let meta = std::fs::metadata(&path)
        .with_context(|| format!("no credential at {}; run `cohort login` first", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!("{} is readable by others; fix it with `chmod 600 {}`", path.display(), path.display());
    }
    let bytes = std::fs::read(&path)?;
    let session: Session =
        wire::decode(&bytes).with_context(|| format!("{} is damaged; log in again", path.display()))?;
    if session.credential.body.expires.0 <= wall_ms() {
        bail!("your credential expired; run `cohort login` again");
    }
    Ok(session)
}

/// What `cohort exec` and `cohort copy` share: which hosts, how many at once, the alarm times,
/// as whom, and how the results show.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Target hosts as a node set: `web[01-20,33],db[1-3]`, `h[1-10/2]!h5`, `@group` from the
    /// cluster configuration, or `^FILE` for the node sets in FILE (one per line, `#` comments).
    /// Without -w: the hosts file named by $COHORT_HOSTS_FILE, else by $WCOLL.
    #[arg(short = 'w', long = "hosts", value_name = "NODESET")]
    pub hosts: Option<String>,
    /// Hosts to leave out, in the same forms as -w.
    #[arg(short = 'x', long = "exclude", value_name = "NODESET")]
    pub exclude: Vec<String>,
    /// Run on the hosts of the last run (kept in the state directory) that failed, or that
    /// succeeded; with -w, only those of them that -w also names.
    #[arg(long, value_enum, value_name = "WHICH")]
    pub rerun: Option<Rerun>,
    /// At most this many hosts at once.
    #[arg(short = 'f', long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub fanout: u32,
    /// Seconds before the alarm first checks a command (the source's T1).
    #[arg(long, default_value_t = 16.0)]
    pub t1: f64,
    /// Seconds past T1 after which a command is killed regardless (T2).
    #[arg(long, default_value_t = 32.0)]
    pub t2: f64,
    /// Seconds between checks of a command that keeps producing output after T1 (T3).
    #[arg(long, default_value_t = 2.0)]
    pub t3: f64,
    /// Local user to run as on each host (default: your local user name).
    #[arg(long, value_name = "USER")]
    pub run_as: Option<String>,
    /// Bytes of each host's stdout (and of its stderr) to keep; the rest is cut and counted.
    /// The gateway holds it to at most 1 MiB.
    #[arg(long, value_name = "BYTES", default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..))]
    pub max_output: u64,
    /// One JSON object per host instead of grouped output.
    #[arg(long, conflicts_with = "lines")]
    pub json: bool,
    /// Grouped output: hosts with identical output and outcome under one folded node set (the
    /// default; clush's and dshbak's -b, accepted so their habits work). Not with -L or --json.
    #[arg(short = 'b', long = "gather", conflicts_with_all = ["lines", "json"])]
    pub gather: bool,
    /// `host: line` for every line, printed as each host's result arrives (pdsh's way) instead
    /// of grouped output; stderr lines go to stderr, and a host that did not exit 0 gets a
    /// `host: [outcome]` line there.
    #[arg(short = 'L', long)]
    pub lines: bool,
    /// Exit with the largest exit status of any host (pdsh's and clush's -S): a signal counts as
    /// 128 plus its number, an alarm kill as 124, a refusal as 126, an unreachable host as 255.
    /// Without it: 0 when every host exited 0, else 1.
    #[arg(short = 'S', long = "largest-status")]
    pub largest_status: bool,
    /// Seconds a host may take to accept the gateway's channel before it is reported
    /// unreachable (pdsh's -t); the gateway holds it between 0.1 and 60.
    #[arg(short = 't', long, default_value_t = 10.0, value_name = "SECONDS")]
    pub connect_timeout: f64,
    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Do not forward standard input (by default, unless it is a terminal, it is read whole, up
    /// to 1 MiB, and every host's command reads it).
    #[arg(long)]
    pub no_stdin: bool,
    /// Pass NAME=VALUE to the command's environment (repeatable). The command otherwise starts
    /// in the run-as user's reset environment (PATH, HOME, USER, LOGNAME, SHELL); each host
    /// refuses a NAME its ACL's env does not list, and so does the gateway, up front.
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = env_var)]
    pub env: Vec<(String, String)>,
    /// The command and its arguments (run directly, no shell; `%h` is each host's name, `%%` a
    /// literal `%`). Everything from the first word that is not an option of cohort's is the
    /// command's, its own options included; `--` is needed only before a command whose first
    /// word starts with `-` (a mistyped option of cohort's is an error, never a command).
    #[arg(trailing_var_arg = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Rerun {
    /// Every host whose command did not exit 0 (including unreachable and denied hosts).
    Failed,
    /// Every host whose command exited 0.
    Ok,
}

/// What the client keeps of its last run, for `--rerun`.
#[derive(Debug, Serialize, Deserialize)]
struct LastRun {
    ok: Vec<String>,
    failed: Vec<String>,
}

const LAST_RUN: &str = "last-run.json";

/// Checks a node set's syntax here, so a typo fails before anything is sent; groups resolve at
/// the gateway.
fn check_node_set(set: &str, what: &str) -> anyhow::Result<()> {
    nodeset::expand(set, &|_| Some("placeholder".to_owned())).with_context(|| format!("bad {what}"))?;
    Ok(())
}

/// The hosts to run on: -w (or ^FILE, or the hosts file of $COHORT_HOSTS_FILE or $WCOLL),
/// narrowed to the last run's failed or ok hosts with --rerun.
fn target_hosts(args: &RunArgs, dir: &Path) -> anyhow::Result<Vec<String>> {
    let named = match (&args.hosts, args.rerun) {
        (Some(hosts), _) => Some(hosts_file::node_sets_arg(hosts)?),
        (None, None) => Some(hosts_file::default_targets()?),
        (None, Some(_)) => None,
    };
    for set in named.iter().flatten() {
        check_node_set(set, "host list")?;
    }
    let Some(which) = args.rerun else { return Ok(named.unwrap_or_default()) };
    let path = dir.join(LAST_RUN);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!("no last run to rerun ({} is missing); run `cohort exec -w ...` first", path.display())
    })?;
    let last: LastRun =
        serde_json::from_str(&text).with_context(|| format!("{} is damaged", path.display()))?;
    let mut hosts = match which {
        Rerun::Failed => last.failed,
        Rerun::Ok => last.ok,
    };
    if let Some(sets) = &named {
        let mut allowed = Vec::new();
        for set in sets {
            allowed
                .extend(nodeset::expand(set, &|_| None).context("with --rerun, -w takes plain host names")?);
        }
        hosts.retain(|h| allowed.contains(h));
    }
    if hosts.is_empty() {
        let which = if which == Rerun::Failed { "failed" } else { "succeeded" };
        bail!("no host {which} in the last run; nothing to rerun");
    }
    Ok(vec![nodeset::fold(&hosts)])
}

fn save_last_run(dir: &Path, results: &[HostResult]) -> anyhow::Result<()> {
    let (ok, failed): (Vec<&HostResult>, Vec<&HostResult>) =
        results.iter().partition(|r| r.outcome == HostOutcome::Exited(0));
    let last = LastRun {
        ok: ok.iter().map(|r| r.host.clone()).collect(),
        failed: failed.iter().map(|r| r.host.clone()).collect(),
    };
    write_private(&dir.join(LAST_RUN), serde_json::to_string(&last)?.as_bytes())
}

/// Standard input to forward: none from a terminal or with --no-stdin, else all of it.
fn forwarded_stdin(args: &ExecArgs) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let stdin = std::io::stdin();
    if args.no_stdin || stdin.is_terminal() {
        return Ok(Vec::new());
    }
    let mut bytes = Vec::new();
    stdin
        .lock()
        .take(MAX_STDIN as u64 + 1)
        .read_to_end(&mut bytes)
        .context("could not read standard input (or pass --no-stdin)")?;
    if bytes.len() > MAX_STDIN {
        bail!(
            "standard input is over the {MAX_STDIN}-byte limit of one run; pass --no-stdin, or send files with their own transfer"
        );
    }
    Ok(bytes)
}

/// Seconds as milliseconds. Any positive time may be asked for: the gateway holds it to the
/// principal's ceiling and says so.
fn seconds_ms(value: f64, name: &str) -> anyhow::Result<u64> {
    if !(0.001..=1e9).contains(&value) {
        bail!("--{name} must be a number of seconds from 0.001 up");
    }
    Ok((value * 1000.0) as u64)
}

/// `--env NAME=VALUE`: split at the first `=`, the name checked with core's rule (the hosts
/// check it again, with the count and size of all of them).
fn env_var(text: &str) -> Result<(String, String), String> {
    let (name, value) = text.split_once('=').ok_or_else(|| format!("`{text}` is not NAME=VALUE"))?;
    if !is_var_name(name) {
        return Err(format!(
            "`{name}` is not a variable name (letters, digits and `_`, not starting with a digit)"
        ));
    }
    Ok((name.to_owned(), value.to_owned()))
}

/// `cohort exec`: the command, with standard input forwarded; true if every host exited 0.
pub fn exec(args: &ExecArgs) -> anyhow::Result<u8> {
    let stdin = forwarded_stdin(args)?;
    run(&args.run, Task::Run { argv: args.command.clone(), stdin, env: args.env.clone() })
}

/// Runs `task` on the hosts `args` name and shows the results; returns the status to exit with:
/// with `-S` the largest of the hosts', else 0 if every host ended with exit 0 and 1 if not.
pub fn run(args: &RunArgs, task: Task) -> anyhow::Result<u8> {
    let dir = args.state.dir()?;
    let hosts = target_hosts(args, &dir)?;
    let mut exclude = Vec::new();
    for x in &args.exclude {
        exclude.extend(hosts_file::node_sets_arg(x)?);
    }
    for set in &exclude {
        check_node_set(set, "exclusion list")?;
    }
    let session = load_session(&dir)?;
    let keys = client_keys(&dir)?;
    let run_as = match &args.run_as {
        Some(user) => user.clone(),
        None => current_user().context("no local user name; pass --run-as")?,
    };
    let (t1, t2, t3) = (seconds_ms(args.t1, "t1")?, seconds_ms(args.t2, "t2")?, seconds_ms(args.t3, "t3")?);
    let command = ExecCommand {
        credential: session.credential,
        hosts,
        exclude,
        run_as,
        task,
        fanout: args.fanout,
        t1_ms: t1,
        t2_ms: t2,
        t3_ms: t3,
        max_output: args.max_output,
        connect_timeout_ms: seconds_ms(args.connect_timeout, "connect-timeout")?,
    };
    let connect = Duration::from_secs(10);
    let mut client = ChannelClient::connect(session.gateway, session.gateway_identity, &keys, connect)?;
    client.send(&GatewayWire::Client(ClientRequest::Exec(Box::new(command))))?;
    // No event can be further apart than a whole host's life under the alarm rules.
    let patience = Duration::from_millis(t1 + t2 + t3) + Duration::from_secs(30);
    let mut results: Vec<HostResult> = Vec::new();
    let mut bar: Option<indicatif::ProgressBar> = None;
    loop {
        match client.recv::<GatewayReply>(patience)? {
            GatewayReply::Client(ClientEvent::Accepted { hosts }) => {
                if std::io::stderr().is_terminal() && !args.json {
                    let b = indicatif::ProgressBar::new(u64::from(hosts));
                    b.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} hosts {msg}",
                        )
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                    );
                    bar = Some(b);
                }
            }
            GatewayReply::Client(ClientEvent::Lowered(lowered)) => {
                let what: Vec<String> = lowered.ceilings.iter().map(ToString::to_string).collect();
                let note =
                    format!("note: {} (the ceilings of principal `{}`)", what.join("; "), lowered.principal);
                match &bar {
                    Some(b) => b.println(note),
                    None => eprintln!("{note}"),
                }
            }
            GatewayReply::Client(ClientEvent::Host(result)) => {
                if let Some(b) = &bar {
                    b.inc(1);
                    b.set_message(result.host.clone());
                }
                if args.json {
                    println!("{}", serde_json::to_string(&host_json(&result))?);
                } else if args.lines {
                    print_lines(&result);
                }
                results.push(result);
            }
            GatewayReply::Client(ClientEvent::Finished) => break,
            GatewayReply::Client(ClientEvent::Refused { reason }) => bail!("the gateway refused: {reason}"),
            other => bail!("unexpected answer from the gateway: {other:?}"),
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    save_last_run(&dir, &results).context("could not keep this run's results for --rerun")?;
    if args.lines {
        eprintln!("{}", summary(&results));
    } else if !args.json {
        print!("{}", render_grouped(&results));
        println!("{}", summary(&results));
    }
    if args.largest_status {
        return Ok(results.iter().map(|r| exit_status(&r.outcome)).max().unwrap_or(0));
    }
    Ok(u8::from(!results.iter().all(|r| r.outcome == HostOutcome::Exited(0))))
}
