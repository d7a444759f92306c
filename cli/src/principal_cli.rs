//! `cohort principal add|passwd|remove|list`: who may log in, managed at the KDC. The command is
//! signed here with the operator's key and sent on a channel that key opens to the KDC (pinned by
//! the cluster file); the KDC checks both against the installed configuration's operators,
//! hashes the password itself and makes the change durable before it answers.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use cohort_core::exec::principals::{PrincipalCommand, PrincipalOp, PrincipalReply};
use cohort_core::exec::wire::{KdcReply, KdcRequest};
use cohort_core::signed::Signed;
use cohort_core::time::WallClock;
use cohort_io_mio::channel_client::ChannelClient;
use cohort_io_mio::keyfile;
use rand_core::RngCore;

use crate::cluster_file::ClusterFile;

#[derive(Debug, clap::Args)]
pub struct KdcArgs {
    /// The operator's cluster.toml (from `cohort init`): where the KDC is, and its key.
    #[arg(long, value_name = "FILE")]
    pub cluster: PathBuf,
    /// The operator key file: opens the channel and signs the command.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
}

#[derive(Debug, clap::Subcommand)]
pub enum PrincipalCommandArgs {
    /// Add a principal with a password (from --password-file, the terminal, or stdin).
    Add {
        #[arg(value_name = "NAME")]
        name: String,
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        #[command(flatten)]
        kdc: KdcArgs,
    },
    /// Change a principal's password.
    Passwd {
        #[arg(value_name = "NAME")]
        name: String,
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        #[command(flatten)]
        kdc: KdcArgs,
    },
    /// Remove a principal: its logins and credentials stop working.
    Remove {
        #[arg(value_name = "NAME")]
        name: String,
        #[command(flatten)]
        kdc: KdcArgs,
    },
    /// List the principals (names only; hashes never leave the KDC).
    List {
        #[command(flatten)]
        kdc: KdcArgs,
    },
}

pub fn run(command: &PrincipalCommandArgs) -> anyhow::Result<()> {
    let password =
        |file: &Option<PathBuf>, name: &str| crate::exec_client::read_password(file.as_deref(), name);
    let (op, kdc) = match command {
        PrincipalCommandArgs::Add { name, password_file, kdc } => {
            (PrincipalOp::Add { name: name.clone(), password: password(password_file, name)? }, kdc)
        }
        PrincipalCommandArgs::Passwd { name, password_file, kdc } => {
            (PrincipalOp::Passwd { name: name.clone(), password: password(password_file, name)? }, kdc)
        }
        PrincipalCommandArgs::Remove { name, kdc } => (PrincipalOp::Remove { name: name.clone() }, kdc),
        PrincipalCommandArgs::List { kdc } => (PrincipalOp::List, kdc),
    };
    match ask(kdc, op)? {
        PrincipalReply::Done { message } => println!("{message}"),
        PrincipalReply::Listed { names } => {
            for name in &names {
                println!("{name}");
            }
            eprintln!("({} principals)", names.len());
        }
        PrincipalReply::Refused { reason } => bail!("the KDC refused: {reason}"),
    }
    Ok(())
}

fn ask(args: &KdcArgs, op: PrincipalOp) -> anyhow::Result<PrincipalReply> {
    let file = ClusterFile::load(&args.cluster)?;
    let kdc = file.kdc.context("the cluster file names no KDC; run `cohort init --exec-hosts N`")?;
    let keys = keyfile::read_key_file(&args.key).context("could not read the operator key")?;
    let at = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let mut nonce = [0u8; 16];
    cohort_io_mio::entropy::os_seeded_rng().fill_bytes(&mut nonce);
    let command = PrincipalCommand { op, at: WallClock(at), nonce };
    let signed = Signed::sign(command, &keys).context("could not sign the command")?;
    let timeout = Duration::from_secs(15);
    let mut client = ChannelClient::connect(kdc.address, kdc.identity()?, &keys, timeout)
        .with_context(|| format!("could not reach the KDC at {} with the operator key", kdc.address))?;
    client.send(&KdcRequest::Principals(signed))?;
    match client.recv::<KdcReply>(timeout)? {
        KdcReply::Principals(reply) => Ok(reply),
        KdcReply::Refused { reason } => bail!("the KDC refused: {reason}"),
        _ => bail!("the KDC answered out of turn"),
    }
}
