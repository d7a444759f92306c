//! `cohort change sign|show|submit`: the signed change requests an operator makes, offline if
//! need be. The request file is the wire form a member accepts; submitting only carries it, the
//! member decides.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use cohort_core::admin::{AdminRequest, AdminResponse};
use cohort_core::member::config::MAX_ENCODED_CONFIG;
use cohort_core::member::{Change, ChangeRequest, MemberInfo, VersionRef};
use cohort_core::signed::Signed;
use cohort_core::{NodeId, PublicIdentity, wire};
use cohort_io_mio::keyfile;

use crate::client_config::client_config;
use crate::cluster_file::ClusterFile;
use crate::plural::plural;
use crate::target::{TargetArgs, report_accepted, with_defaults};

#[derive(Debug, clap::Subcommand)]
pub enum ChangeCommand {
    /// Sign a change request with an operator key and write it to a file (offline: no node is
    /// asked; carry the file to a machine that reaches a member and `change submit` it).
    Sign(SignArgs),
    /// Print a change request file in words and check its signature.
    Show {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Send a signed change request file to a member, which checks it against its configuration.
    Submit(SubmitArgs),
}

#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// The operator's key file (from `cohort keygen`). [default: $COHORT_KEY, else `key` in the
    /// client config]
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// The cluster id the change is for (default: the one --cluster-file names).
    #[arg(long, value_name = "ID")]
    cluster: Option<String>,
    /// The cluster file: gives the cluster id, and the members a short --base resolves against
    /// (with the signing key, which authored version 1).
    /// [default: $COHORT_CLUSTER, else `cluster` in the client config]
    #[arg(long, value_name = "FILE")]
    cluster_file: Option<PathBuf>,
    /// The active version the change is based on, as `cohort status` prints it (`v6@33d39f34`,
    /// resolved against --cluster-file's members) or in full (`6@` and 32 hex digits).
    #[arg(long, value_name = "VERSION")]
    base: VersionRef,
    /// Set a setting.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Remove a setting.
    #[arg(long = "unset", value_name = "KEY")]
    unset: Vec<String>,
    /// Add a member: NAME,ADDRESS,ED25519_PUBLIC_HEX,X25519_PUBLIC_HEX (as `cohort keygen` prints).
    #[arg(long = "add-member", value_name = "SPEC")]
    add_member: Vec<String>,
    /// Remove a member by node id.
    #[arg(long = "remove-member", value_name = "NODE_ID")]
    remove_member: Vec<String>,
    /// Where to write the signed request.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// The signed request (from `cohort change sign`).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Which member to send it to (--member NAME), and the key that opens the channel.
    #[command(flatten)]
    target: TargetArgs,
    /// Wait until every member in the cluster file has installed the change (at most
    /// --timeout-secs).
    #[arg(long)]
    wait: bool,
}

pub fn run(command: &ChangeCommand) -> anyhow::Result<()> {
    match command {
        ChangeCommand::Sign(args) => sign(args),
        ChangeCommand::Show { file } => show(file),
        ChangeCommand::Submit(args) => submit(args),
    }
}

/// Parses `--set`, `--unset`, `--add-member` and `--remove-member` into changes, in that order.
pub fn parse_changes(
    set: &[String],
    unset: &[String],
    add_member: &[String],
    remove_member: &[String],
) -> anyhow::Result<Vec<Change>> {
    let mut changes = Vec::new();
    for pair in set {
        let (key, value) = pair.split_once('=').with_context(|| format!("`{pair}` is not KEY=VALUE"))?;
        changes.push(Change::Set { key: key.to_owned(), value: value.to_owned() });
    }
    changes.extend(unset.iter().map(|key| Change::Unset { key: key.clone() }));
    for spec in add_member {
        changes.push(Change::AddMember(parse_member(spec)?));
    }
    for id in remove_member {
        changes.push(Change::RemoveMember(parse_node_id(id)?));
    }
    if changes.is_empty() {
        bail!("no change given: use --set, --unset, --add-member or --remove-member");
    }
    Ok(changes)
}

/// KEY=VALUE pairs and KEY=PATH files, read and checked, in the order given.
pub fn settings_from(pairs: &[String], files: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let mut settings = Vec::new();
    for pair in pairs {
        let (key, value) = pair.split_once('=').with_context(|| format!("`{pair}` is not KEY=VALUE"))?;
        settings.push((key.to_owned(), value.to_owned()));
    }
    for spec in files {
        let (key, path) = spec.split_once('=').with_context(|| format!("`{spec}` is not KEY=PATH"))?;
        let len = std::fs::metadata(path).with_context(|| format!("could not read `{path}`"))?.len();
        if len > MAX_ENCODED_CONFIG as u64 {
            bail!(
                "`{path}` is {len} bytes; a configuration holds at most {MAX_ENCODED_CONFIG} bytes (16 MiB) in all"
            );
        }
        let bytes = std::fs::read(path).with_context(|| format!("could not read `{path}`"))?;
        let value = String::from_utf8(bytes).map_err(|e| {
            anyhow::anyhow!("`{path}` is not UTF-8 text (first bad byte at {})", e.utf8_error().valid_up_to())
        })?;
        settings.push((key.to_owned(), value));
    }
    Ok(settings)
}

fn parse_hex32(text: &str, what: &str) -> anyhow::Result<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).with_context(|| format!("{what} `{text}` is not 64 hex digits"))?;
    Ok(out)
}

pub fn parse_node_id(text: &str) -> anyhow::Result<NodeId> {
    let mut id = [0u8; 16];
    hex::decode_to_slice(text, &mut id).with_context(|| format!("node id `{text}` is not 32 hex digits"))?;
    Ok(NodeId(id))
}

pub fn parse_member(spec: &str) -> anyhow::Result<MemberInfo> {
    let parts: Vec<&str> = spec.split(',').collect();
    let [name, address, signing, agreement] = parts[..] else {
        bail!("member `{spec}` is not NAME,ADDRESS,ED25519_PUBLIC_HEX,X25519_PUBLIC_HEX");
    };
    let identity = PublicIdentity {
        signing: parse_hex32(signing, "Ed25519 public key")?,
        agreement: parse_hex32(agreement, "X25519 public key")?,
    };
    Ok(MemberInfo { name: name.to_owned(), identity, address: address.to_owned() })
}

fn sign(args: &SignArgs) -> anyhow::Result<()> {
    let config = client_config()?;
    let key = with_defaults(&args.key, "COHORT_KEY", config.key.as_ref()).context(
        "say which operator key signs: --key FILE (or $COHORT_KEY, or `key` in the client config)",
    )?;
    let keys = keyfile::read_key_file(&key).context("could not read the operator key")?;
    let changes = parse_changes(&args.set, &args.unset, &args.add_member, &args.remove_member)?;
    let file = with_defaults(&args.cluster_file, "COHORT_CLUSTER", config.cluster.as_ref())
        .map(|path| ClusterFile::load(&path))
        .transpose()?;
    let cluster_id = match (&args.cluster, &file) {
        (Some(id), _) => id.clone(),
        (None, Some(file)) => file.cluster_id.clone(),
        (None, None) => bail!("say which cluster: --cluster-file cluster.toml, or --cluster ID"),
    };
    let base = match (args.base.full(), &file) {
        (Some(version), _) => version,
        (None, Some(file)) => {
            // Members author every version but the first, which the operator who ran `init` signed.
            let members = file.members.iter().map(|m| m.identity()).collect::<anyhow::Result<Vec<_>>>()?;
            let authors = members.iter().map(PublicIdentity::node_id).chain([keys.node_id()]);
            args.base.resolve(authors)?
        }
        (None, None) => bail!(
            "--base `v{}@…` names its author by a prefix: give --cluster-file to resolve it, or the full form \
             `cohort status --json` prints",
            args.base.counter
        ),
    };
    let request = ChangeRequest { cluster_id, base, changes, operator: keys.public().signing };
    let signed = Signed::sign(request, &keys).context("could not sign the request")?;
    let bytes = wire::encode(&signed).context("could not encode the request")?;
    std::fs::write(&args.out, bytes).with_context(|| format!("could not write {}", args.out.display()))?;
    println!(
        "wrote {} ({}, based on {}, operator {})",
        args.out.display(),
        plural(signed.body.changes.len(), "change"),
        base,
        keys.node_id()
    );
    Ok(())
}

/// Reads and decodes a request file, and checks its signature against the key it names.
fn read_request(file: &Path) -> anyhow::Result<(Signed<ChangeRequest>, bool)> {
    let len = std::fs::metadata(file).with_context(|| format!("could not read {}", file.display()))?.len();
    if len > 2 * MAX_ENCODED_CONFIG as u64 {
        bail!("{} is {len} bytes: larger than any change request", file.display());
    }
    let bytes = std::fs::read(file).with_context(|| format!("could not read {}", file.display()))?;
    let signed: Signed<ChangeRequest> =
        wire::decode(&bytes).with_context(|| format!("{} is not a change request", file.display()))?;
    let verified = signed.verify_with_signing_key(&signed.body.operator).is_ok();
    Ok((signed, verified))
}

fn show(file: &Path) -> anyhow::Result<()> {
    let (signed, verified) = read_request(file)?;
    let request = &signed.body;
    println!("cluster    {:?}", request.cluster_id);
    println!("based on   {} ({})", request.base, request.base.to_full_string());
    println!("operator   {}", NodeId::of_signing_key(&request.operator));
    println!("signature  {}", if verified { "valid" } else { "INVALID" });
    println!("{}:", plural(request.changes.len(), "change"));
    for change in &request.changes {
        println!("  {change}");
    }
    if !verified {
        bail!("the request's signature does not verify against its operator key");
    }
    Ok(())
}

fn submit(args: &SubmitArgs) -> anyhow::Result<()> {
    let (signed, verified) = read_request(&args.file)?;
    if !verified {
        bail!("{}: the signature does not verify; it was altered after signing", args.file.display());
    }
    let node = args.target.resolve()?;
    let base = signed.body.base;
    let version = match node.ask(&AdminRequest::Change(signed))? {
        AdminResponse::ChangeAccepted { version } => version,
        AdminResponse::ChangeRejected { reason } => {
            bail!("{} rejected the change (based on {base}): {reason}", node.name)
        }
        AdminResponse::Error(e) => bail!("{} refused the change: {e}", node.name),
        other => bail!("{} answered a change with {other:?}", node.name),
    };
    report_accepted(&node, &args.target, version, args.wait)
}
