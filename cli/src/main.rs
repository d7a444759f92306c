//! The `cohort` command. Owns argument parsing, reading the operator's files and showing results;
//! every protocol rule lives in cohort-core and every OS interaction in the drivers.

mod change;
mod keygen;
mod sim;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cohort", version, about = "A secure control plane for fleets of servers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a node key file (Ed25519 + X25519) and print the node's public identity.
    Keygen(keygen::Args),
    /// Sign or inspect an operator's configuration change request.
    #[command(subcommand)]
    Change(change::ChangeCommand),
    /// Inspect an existing key file.
    #[command(subcommand)]
    Key(keygen::KeyCommand),
    /// Run a local demonstration cluster on loopback.
    Demo,
    /// Run a protocol scenario on simulated hosts (turmoil) and report what happened.
    #[command(subcommand)]
    Sim(sim::SimCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keygen(args) => keygen::run(&args),
        Command::Key(command) => keygen::run_key(&command),
        Command::Change(command) => change::run(&command),
        Command::Sim(command) => sim::run(&command),
        Command::Demo => {
            println!(
                "cohort demo: not yet. The local demo cluster arrives with the production node \
                 (issue 4). Run the tests with `cargo test --workspace`."
            );
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
