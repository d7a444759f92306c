//! `cohort status`, `cohort get` and `cohort admin …`: talk to a running node over its admin
//! channel. Changes are signed here with the operator's key; the node checks that signature
//! against its configuration, so the channel alone grants no power to change anything.

use anyhow::{Context, bail};
use cohort_core::admin::{AdminRequest, AdminResponse, LookupReply, NodeStatus, PeerStatus};
use cohort_core::member::section::seal_value;
use cohort_core::member::{Change, OperatorInfo, Version};

use crate::change::parse_changes;
use crate::plural::plural;
use crate::public_key_args::PublicKeyArgs;
use crate::target::{Target, TargetArgs, report_accepted};

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// The security-policy tier's global status (from the master) instead of a member's view.
    #[arg(long)]
    pub global: bool,
    #[command(flatten)]
    pub policy: crate::policy_cli::GlobalArgs,
}

pub fn status(args: &StatusArgs) -> anyhow::Result<()> {
    if args.global {
        return crate::policy_cli::global_status(&args.policy, &args.target.key_file()?, args.json);
    }
    let status = args.target.resolve()?.status()?;
    if args.json {
        println!("{}", serde_json::to_string(&status.to_json())?);
    } else {
        print!("{}", render_status(&status));
    }
    Ok(())
}

fn version_text(version: Option<Version>) -> String {
    version.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// What the node is doing, for a person.
fn state_text(status: &NodeStatus) -> &'static str {
    match status.state() {
        "outside-roster" => "not in the roster (waiting to be added, or removed): answering no lookups",
        other => other,
    }
}

pub fn render_status(status: &NodeStatus) -> String {
    let mut out = format!(
        "{} ({}) in cluster `{}`: active {}, staged {}, {}\n",
        status.name,
        &status.node_id.to_hex()[..8],
        status.cluster_id,
        status.active,
        version_text(status.staged),
        state_text(status),
    );
    out.push_str(&format!(
        "  {:<10} {:<22} {:<14} {:<14} {}\n",
        "member", "address", "active", "staged", "last heard"
    ));
    let mut members: Vec<_> = status.members.iter().collect();
    members.sort_by(|a, b| a.name.cmp(&b.name));
    for m in members {
        let heard = if m.is_self {
            "(this node)".to_owned()
        } else {
            m.last_heard_ms.map_or_else(|| "never".to_owned(), |ms| format!("{:.1}s ago", ms as f64 / 1000.0))
        };
        out.push_str(&format!(
            "  {:<10} {:<22} {:<14} {:<14} {}\n",
            m.name,
            m.address,
            version_text(m.active),
            version_text(m.staged),
            heard
        ));
    }
    if !status.dropped.is_empty() {
        let drops: Vec<String> = status.dropped.iter().map(|(k, v)| format!("{k} {v}")).collect();
        out.push_str(&format!("  dropped messages: {}\n", drops.join(", ")));
    }
    out
}

#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// Set settings: KEY=VALUE …, shared by every member, or one member's own (sealed to its key) with --sealed-for.
    Set {
        #[arg(value_name = "KEY=VALUE", required_unless_present = "files")]
        pairs: Vec<String>,
        /// Take a value from a file (UTF-8 text, up to the 16 MiB configuration limit).
        #[arg(long = "file", value_name = "KEY=PATH")]
        files: Vec<String>,
        /// Set these in member NAME's own section: sealed here to that member's key, so no other
        /// member (nor the member that authors the change) can read them.
        #[arg(long = "sealed-for", value_name = "NAME")]
        for_member: Option<String>,
        #[command(flatten)]
        target: TargetArgs,
        /// Wait until every member in --cluster has installed the change.
        #[arg(long)]
        wait: bool,
    },
    /// Remove settings: KEY …, shared ones, or one member's own (sealed to its key) with --sealed-for.
    Unset {
        #[arg(value_name = "KEY", required = true)]
        keys: Vec<String>,
        /// Remove these from member NAME's own section.
        #[arg(long = "sealed-for", value_name = "NAME")]
        for_member: Option<String>,
        #[command(flatten)]
        target: TargetArgs,
        /// Wait until every member in --cluster has installed the change.
        #[arg(long)]
        wait: bool,
    },
    /// Add, remove or list the operators who may sign changes.
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// Add a member: NAME,ADDRESS,ED25519_PUBLIC_HEX,X25519_PUBLIC_HEX
    AddMember {
        #[arg(value_name = "SPEC")]
        spec: String,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Remove a member by node id.
    RemoveMember {
        #[arg(value_name = "NODE_ID")]
        node_id: String,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Export what a new node needs to join (for `cohort join`) from a member.
    JoinFile(crate::join::JoinFileArgs),
}

#[derive(Debug, clap::Subcommand)]
pub enum OperatorCommand {
    /// Add an operator by its public keys (from its key file, or as `cohort key show` prints them).
    Add {
        #[arg(value_name = "NAME")]
        name: String,
        #[command(flatten)]
        keys: PublicKeyArgs,
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long)]
        wait: bool,
    },
    /// Remove an operator, by name or node id (the last one cannot be removed).
    Remove {
        #[arg(value_name = "NAME_OR_ID")]
        operator: String,
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long)]
        wait: bool,
    },
    /// List the operators of a member's active configuration.
    List {
        #[command(flatten)]
        target: TargetArgs,
    },
}

pub fn admin(command: &AdminCommand) -> anyhow::Result<()> {
    let (changes, target, wait) = match command {
        AdminCommand::Unset { keys, for_member, target, wait } => {
            let node = target.resolve()?;
            let changes = match for_member {
                None => keys.iter().map(|key| Change::Unset { key: key.clone() }).collect(),
                Some(name) => {
                    let member = roster_member(&node.status()?, &node.name, name)?.node_id;
                    keys.iter().map(|key| Change::UnsetFor { member, key: key.clone() }).collect()
                }
            };
            return send_change(&node, target, changes, *wait);
        }
        AdminCommand::Operator(command) => return operator(command),
        AdminCommand::Set { pairs, files, for_member, target, wait } => {
            let settings = crate::change::settings_from(pairs, files)?;
            let node = target.resolve()?;
            let changes = match for_member {
                None => settings.into_iter().map(|(key, value)| Change::Set { key, value }).collect(),
                Some(name) => member_section_changes(&node, name, settings)?,
            };
            return send_change(&node, target, changes, *wait);
        }
        AdminCommand::AddMember { spec, target } => {
            (parse_changes(&[], &[], std::slice::from_ref(spec), &[])?, target, false)
        }
        AdminCommand::RemoveMember { node_id, target } => {
            (parse_changes(&[], &[], &[], std::slice::from_ref(node_id))?, target, false)
        }
        AdminCommand::JoinFile(args) => return crate::join::export(args),
    };
    send_change(&target.resolve()?, target, changes, wait)
}

fn operator(command: &OperatorCommand) -> anyhow::Result<()> {
    match command {
        OperatorCommand::Add { name, keys, target, wait } => {
            let identity = keys.identity("the new operator")?;
            let change = Change::AddOperator(OperatorInfo { name: name.clone(), identity });
            send_change(&target.resolve()?, target, vec![change], *wait)
        }
        OperatorCommand::Remove { operator, target, wait } => {
            let node = target.resolve()?;
            let status = node.status()?;
            let found =
                status.operators.iter().find(|o| o.name == *operator || o.node_id.to_hex() == *operator);
            let Some(found) = found else {
                let names: Vec<&str> = status.operators.iter().map(|o| o.name.as_str()).collect();
                bail!("`{operator}` is not an operator at {} (operators: {})", node.name, names.join(", "));
            };
            send_change(&node, target, vec![Change::RemoveOperator(found.node_id)], *wait)
        }
        OperatorCommand::List { target } => {
            let node = target.resolve()?;
            let status = node.status()?;
            println!(
                "{} of {} ({}):",
                plural(status.operators.len(), "operator"),
                status.cluster_id,
                status.active
            );
            for o in &status.operators {
                println!("  {:<16} {}", o.name, o.node_id.to_hex());
            }
            Ok(())
        }
    }
}

pub fn send_change(
    node: &Target,
    target: &TargetArgs,
    changes: Vec<Change>,
    wait: bool,
) -> anyhow::Result<()> {
    let version = node.change(changes)?;
    report_accepted(node, target, version, wait)
}

/// `settings` as changes to member `name`'s own section, each value sealed to the key the
/// member's roster entry lists (as `node` reports it over the authenticated admin channel).
fn member_section_changes(
    node: &Target,
    name: &str,
    settings: Vec<(String, String)>,
) -> anyhow::Result<Vec<Change>> {
    let status = node.status()?;
    let member = roster_member(&status, &node.name, name)?;
    let mut rng = cohort_io_mio::entropy::os_seeded_rng();
    settings
        .into_iter()
        .map(|(key, value)| {
            let sealed = seal_value(&status.cluster_id, &member.identity, &key, &value, &mut rng)
                .with_context(|| format!("could not seal `{key}` for {name}"))?;
            Ok(Change::SetFor { member: member.node_id, key, value: sealed })
        })
        .collect()
}

/// Member `name` (or node id) in the roster `node` reports.
fn roster_member<'a>(status: &'a NodeStatus, node: &str, name: &str) -> anyhow::Result<&'a PeerStatus> {
    status.members.iter().find(|m| m.name == name || m.node_id.to_hex() == name).with_context(|| {
        let names: Vec<&str> = status.members.iter().map(|m| m.name.as_str()).collect();
        format!("`{name}` is not a member in {node}'s roster (members: {})", names.join(", "))
    })
}

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// The setting to look up; all settings when omitted.
    #[arg(value_name = "KEY")]
    pub setting: Option<String>,
    /// Ask the member's local lookup service at this Unix socket (its `lookup_socket`) instead
    /// of the admin channel: no key needed, only access to the socket.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub target: TargetArgs,
}

/// `cohort get KEY`: the network service lookup (rule 9).
pub fn get(args: &GetArgs) -> anyhow::Result<()> {
    if let Some(socket) = &args.socket {
        return crate::local_get::get(socket, args.setting.as_deref());
    }
    let node = args.target.resolve()?;
    match node.ask(&AdminRequest::Lookup { key: args.setting.clone() })? {
        AdminResponse::Lookup(LookupReply::Value { version, key, value: Some(value) }) => {
            println!("{value}");
            eprintln!("({key} from {})", version.to_full_string());
        }
        AdminResponse::Lookup(LookupReply::Value { version, key, value: None }) => {
            bail!("`{key}` is not set in {}", version.to_full_string())
        }
        AdminResponse::Lookup(LookupReply::Settings { version, settings }) => {
            for (key, value) in settings {
                println!("{key}={value}");
            }
            eprintln!("(from {})", version.to_full_string());
        }
        AdminResponse::Lookup(LookupReply::Declined { retry_after_ms }) => {
            bail!("{} is syncing to a newer configuration; retry in {retry_after_ms} ms", node.name)
        }
        other => bail!("{} answered a lookup with {other:?}", node.name),
    }
    Ok(())
}
