//! `cohort host add|remove|list` and `cohort acl set|remove|show`: the managed hosts and the
//! ACLs, changed as the cluster's signed configuration (a change signed here with the operator
//! key, checked by the member against the configuration's operators) and read from a member's
//! active configuration. The text of each entry is core's; this module builds and shows it.

use std::collections::BTreeSet;

use anyhow::bail;
use cohort_core::admin::{AdminRequest, AdminResponse, LookupReply};
use cohort_core::exec::acl::{ANY_COMMAND, AclEntry, Limits};
use cohort_core::exec::directory::{
    ACL_PREFIX, HOST_PREFIX, ManagedHost, acl_setting, check_setting, parse_acl_setting, parse_duration_ms,
    parse_host_setting,
};
use cohort_core::member::{Change, Version};

use crate::admin::send_change;
use crate::public_key_args::PublicKeyArgs;
use crate::target::TargetArgs;

#[derive(Debug, clap::Subcommand)]
pub enum HostCommand {
    /// Add (or replace) a managed host: where its exec daemon listens and its public keys.
    Add {
        #[arg(value_name = "NAME")]
        name: String,
        /// Where the host's exec daemon listens (HOST:PORT).
        #[arg(long, value_name = "HOST:PORT")]
        address: String,
        #[command(flatten)]
        keys: PublicKeyArgs,
        #[command(flatten)]
        target: TargetArgs,
        /// Wait until every member in --cluster has installed the change.
        #[arg(long)]
        wait: bool,
    },
    /// Remove a managed host: the gateway, the KDC and its daemon refuse it once installed.
    Remove {
        #[arg(value_name = "NAME")]
        name: String,
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long)]
        wait: bool,
    },
    /// List the managed hosts of a member's active configuration.
    List {
        #[command(flatten)]
        target: TargetArgs,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum AclCommand {
    /// Set (replace) a principal's ACL entry and ceilings.
    Set {
        #[arg(value_name = "PRINCIPAL")]
        principal: String,
        /// Local users it may run as (comma-separated).
        #[arg(long, value_name = "USERS", value_delimiter = ',', required = true)]
        run_as: Vec<String>,
        /// Programs it may run, comma-separated: absolute paths or patterns on them (`*` and `?`
        /// within one path segment: `/usr/bin/uptime,/opt/app/bin/*`), which argv[0] must match
        /// as written; or `*` for any command, through which a shell can be reached.
        #[arg(long, value_name = "PROGRAMS", value_delimiter = ',')]
        commands: Vec<String>,
        /// argv[0] may be a shell or `env`, `sudo`, `su`, `busybox` (if --commands permits it).
        /// Without it a listed program that runs commands itself (nice, timeout, xargs, an
        /// interpreter) still reaches a shell: list only what may do so.
        #[arg(long)]
        shell: bool,
        /// Variables a client may pass with `cohort exec --env`, by exact name, comma-separated
        /// (no wildcard; PATH or LD_PRELOAD only if named).
        #[arg(long, value_name = "NAMES", value_delimiter = ',')]
        env: Vec<String>,
        /// Directories under which `cohort copy` may write, comma-separated.
        #[arg(long, value_name = "DIRS", value_delimiter = ',')]
        copy: Vec<String>,
        /// May read every principal's records in the web console's audit trail (each principal
        /// always sees its own).
        #[arg(long)]
        audit: bool,
        /// Sessions at once within one run, at most.
        #[arg(long, value_name = "N")]
        max_fanout: Option<u32>,
        /// T1+T2, at most: how long one host's command may run (e.g. 48s, 10m).
        #[arg(long, value_name = "DURATION")]
        max_time: Option<String>,
        /// Runs at once at the gateway, at most.
        #[arg(long, value_name = "N")]
        max_runs: Option<u32>,
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long)]
        wait: bool,
    },
    /// Remove a principal's ACL entry: it may then run nothing anywhere.
    Remove {
        #[arg(value_name = "PRINCIPAL")]
        principal: String,
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long)]
        wait: bool,
    },
    /// Show the ACL entries (or one principal's) of a member's active configuration.
    Show {
        #[arg(value_name = "PRINCIPAL")]
        principal: Option<String>,
        #[command(flatten)]
        target: TargetArgs,
    },
}

/// One entry as a setting, checked here with core's rules so a mistake is named before it is
/// signed (the member checks again).
fn setting(key: String, value: String) -> anyhow::Result<Change> {
    check_setting(&key, &value).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Change::Set { key, value })
}

pub fn host(command: &HostCommand) -> anyhow::Result<()> {
    match command {
        HostCommand::Add { name, address, keys, target, wait } => {
            let identity = keys.identity("the host")?;
            let host = ManagedHost { address: address.clone(), identity };
            let change = setting(format!("{HOST_PREFIX}{name}"), host.to_setting())?;
            send_change(&target.resolve()?, target, vec![change], *wait)
        }
        HostCommand::Remove { name, target, wait } => {
            let change = Change::Unset { key: format!("{HOST_PREFIX}{name}") };
            send_change(&target.resolve()?, target, vec![change], *wait)
        }
        HostCommand::List { target } => {
            let (version, settings) = active_settings(target)?;
            println!("{:<16} {:<24} ed25519", "host", "address");
            let mut count = 0;
            for (key, value) in &settings {
                let Some(name) = key.strip_prefix(HOST_PREFIX) else { continue };
                count += 1;
                match parse_host_setting(value) {
                    Ok(h) => println!("{name:<16} {:<24} {}", h.address, hex::encode(h.identity.signing)),
                    Err(e) => println!("{name:<16} (unreadable: {e})"),
                }
            }
            eprintln!("({count} managed hosts in {})", version.to_full_string());
            Ok(())
        }
    }
}

pub fn acl(command: &AclCommand) -> anyhow::Result<()> {
    match command {
        AclCommand::Set {
            principal,
            run_as,
            commands,
            shell,
            env,
            copy,
            audit,
            max_fanout,
            max_time,
            max_runs,
            target,
            wait,
        } => {
            let defaults = Limits::default();
            let limits = Limits {
                max_fanout: max_fanout.unwrap_or(defaults.max_fanout),
                max_time_ms: max_time
                    .as_deref()
                    .map(parse_duration_ms)
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("--max-time: {e}"))?
                    .unwrap_or(defaults.max_time_ms),
                max_runs: max_runs.unwrap_or(defaults.max_runs),
            };
            let set =
                |items: &[String]| items.iter().filter(|i| !i.is_empty()).cloned().collect::<BTreeSet<_>>();
            let entry = AclEntry {
                run_as: set(run_as),
                commands: set(commands),
                shell: *shell,
                env: set(env),
                copy: set(copy),
                audit: *audit,
                limits,
            };
            let change = setting(format!("{ACL_PREFIX}{principal}"), acl_setting(&entry))?;
            if entry.commands.contains(ANY_COMMAND) {
                eprintln!("note: commands {}", commands_text(&entry));
            }
            send_change(&target.resolve()?, target, vec![change], *wait)
        }
        AclCommand::Remove { principal, target, wait } => {
            let change = Change::Unset { key: format!("{ACL_PREFIX}{principal}") };
            send_change(&target.resolve()?, target, vec![change], *wait)
        }
        AclCommand::Show { principal, target } => {
            let (version, settings) = active_settings(target)?;
            let mut shown = 0;
            for (key, value) in &settings {
                let Some(name) = key.strip_prefix(ACL_PREFIX) else { continue };
                if principal.as_deref().is_some_and(|p| p != name) {
                    continue;
                }
                shown += 1;
                match parse_acl_setting(value) {
                    Ok(entry) => print!("{}", render_entry(name, &entry)),
                    Err(e) => println!("{name}: (unreadable: {e})"),
                }
            }
            if let (Some(p), 0) = (principal, shown) {
                bail!("principal `{p}` has no ACL entry in {}", version.to_full_string());
            }
            Ok(())
        }
    }
}

/// The shared settings of the member's active configuration, through its lookup service.
pub(crate) fn active_settings(target: &TargetArgs) -> anyhow::Result<(Version, Vec<(String, String)>)> {
    let node = target.resolve()?;
    match node.ask(&AdminRequest::Lookup { key: None })? {
        AdminResponse::Lookup(LookupReply::Settings { version, settings }) => Ok((version, settings)),
        AdminResponse::Lookup(LookupReply::Declined { retry_after_ms }) => {
            bail!("{} is syncing to a newer configuration; retry in {retry_after_ms} ms", node.name)
        }
        other => bail!("{} answered a lookup with {other:?}", node.name),
    }
}

fn list(set: &BTreeSet<String>) -> String {
    if set.is_empty() { "-".to_owned() } else { set.iter().cloned().collect::<Vec<_>>().join(", ") }
}

/// What the commands of `e` permit, said plainly.
fn commands_text(e: &AclEntry) -> String {
    if e.commands.contains(ANY_COMMAND) {
        format!("{ANY_COMMAND} (any command: a shell can be reached through it)")
    } else if e.commands.is_empty() {
        "- (none)".to_owned()
    } else {
        format!("{} (argv[0] as an absolute path matching one of these)", list(&e.commands))
    }
}

fn shell_text(e: &AclEntry) -> &'static str {
    if e.shell {
        "yes (argv[0] may be a shell, if the commands permit it)"
    } else {
        "no (argv[0] may not be a shell; a permitted program may still start one)"
    }
}

fn render_entry(name: &str, e: &AclEntry) -> String {
    format!(
        "{name}\n  run as      {}\n  commands    {}\n  shell       {}\n  env         {}\n  copy under  {}\n  ceilings    fan-out {}, T1+T2 {} s, {} runs at once\n",
        list(&e.run_as),
        commands_text(e),
        shell_text(e),
        list(&e.env),
        list(&e.copy),
        e.limits.max_fanout,
        e.limits.max_time_ms / 1000,
        e.limits.max_runs,
    )
}
