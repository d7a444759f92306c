//! `cohort keygen`: creates a node key file and prints the public identity an operator shares.

use std::path::PathBuf;

use anyhow::Context;
use cohort_core::NodeKeys;
use cohort_io_mio::{entropy, keyfile};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to write the key file (created with mode 0600).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Replace an existing key file. The old key is lost.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum KeyCommand {
    /// Print the public identity held in a key file (checks its permissions and integrity).
    Show {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let keys = NodeKeys::generate(&mut entropy::os_seeded_rng());
    keyfile::write_key_file(&args.out, &keys, args.force)
        .with_context(|| format!("could not create key file {}", args.out.display()))?;
    println!("wrote {}", args.out.display());
    print_identity(&keys);
    Ok(())
}

pub fn run_key(command: &KeyCommand) -> anyhow::Result<()> {
    match command {
        KeyCommand::Show { file } => {
            let keys = keyfile::read_key_file(file).context("could not read the key file")?;
            print_identity(&keys);
            Ok(())
        }
    }
}

fn print_identity(keys: &NodeKeys) {
    let public = keys.public();
    println!("node-id        {}", public.node_id());
    println!("ed25519-public {}", hex::encode(public.signing));
    println!("x25519-public  {}", hex::encode(public.agreement));
    println!("key-digest     {}", hex::encode(public.key_digest().0));
}
