//! `cohort operator keygen` and `cohort change sign|show`: an operator's key and the signed
//! change requests it makes. The request file is the wire form a member accepts.

use std::path::PathBuf;

use anyhow::{Context, bail};
use cohort_core::member::config::MAX_ENCODED_CONFIG;
use cohort_core::member::{Change, ChangeRequest, MemberInfo, Version};
use cohort_core::signed::Signed;
use cohort_core::{NodeId, PublicIdentity, wire};
use cohort_io_mio::keyfile;

#[derive(Debug, clap::Subcommand)]
pub enum ChangeCommand {
    /// Sign a change request with an operator key and write it to a file.
    Sign(SignArgs),
    /// Print a change request file and check its signature.
    Show {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// The operator's key file (from `cohort keygen`).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The cluster id the change is for.
    #[arg(long)]
    cluster: String,
    /// The active version the change is based on, as COUNTER@AUTHOR (from `cohort status`).
    #[arg(long, value_name = "VERSION")]
    base: Version,
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

pub fn run(command: &ChangeCommand) -> anyhow::Result<()> {
    match command {
        ChangeCommand::Sign(args) => sign(args),
        ChangeCommand::Show { file } => show(file),
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
    let keys = keyfile::read_key_file(&args.key).context("could not read the operator key")?;
    let changes = parse_changes(&args.set, &args.unset, &args.add_member, &args.remove_member)?;
    let request = ChangeRequest {
        cluster_id: args.cluster.clone(),
        base: args.base,
        changes,
        operator: keys.public().signing,
    };
    let signed = Signed::sign(request, &keys).context("could not sign the request")?;
    let bytes = wire::encode(&signed).context("could not encode the request")?;
    std::fs::write(&args.out, bytes).with_context(|| format!("could not write {}", args.out.display()))?;
    println!(
        "wrote {} ({} changes, operator {})",
        args.out.display(),
        signed.body.changes.len(),
        keys.node_id()
    );
    Ok(())
}

fn show(file: &PathBuf) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("could not read {}", file.display()))?;
    let signed: Signed<ChangeRequest> =
        wire::decode(&bytes).with_context(|| format!("{} is not a change request", file.display()))?;
    let request = &signed.body;
    let verified = signed.verify_with_signing_key(&request.operator).is_ok();
    println!("cluster   {}", request.cluster_id);
    println!("base      {}", request.base.to_full_string());
    println!("operator  {}", NodeId::of_signing_key(&request.operator));
    println!("signature {}", if verified { "valid" } else { "INVALID" });
    for change in &request.changes {
        println!("change    {change:?}");
    }
    if !verified {
        bail!("the request's signature does not verify against its operator key");
    }
    Ok(())
}
