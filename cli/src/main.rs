//! The `cohort` command. Owns argument parsing, reading the operator's files and showing results;
//! every protocol rule lives in cohort-core and every OS interaction in the drivers.

mod admin;
mod audit;
mod change;
mod client_config;
mod cluster_file;
mod copy_cli;
mod demo;
mod directory_cli;
mod exec_client;
mod exec_setup;
mod history_view;
mod hosts_file;
mod init;
mod init_args;
mod join;
mod keygen;
mod local_get;
mod node;
mod node_log;
mod nodeset_cli;
mod plural;
mod policy_agents;
mod policy_ask;
mod policy_cli;
mod policy_setup;
mod principal_cli;
mod public_key_args;
#[cfg(test)]
mod readme_commands;
mod results;
mod shell_docs;
mod sim;
mod target;
mod time_arg;

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
    Demo {
        /// Keep the site running after the walk-through (to use the web console) until Enter.
        #[arg(long)]
        stay: bool,
    },
    /// Create a cluster: operator key, member keys, genesis configuration, one directory per member.
    Init(init::Args),
    /// Prepare a new node's directory to join a running cluster (from `cohort admin join-file`).
    Join(join::JoinArgs),
    /// Run a node.
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// Show a node's view of the cluster.
    Status(admin::StatusArgs),
    /// Look up a setting (or all settings) in a member's active configuration.
    Get(admin::GetArgs),
    /// Create, list or show security policies (signed with the operator key).
    #[command(subcommand)]
    Policy(policy_cli::PolicyCommand),
    /// Log in through the gateway; the credential is kept (0600) for `cohort exec`.
    Login(exec_client::LoginArgs),
    /// Run a command on many hosts at once.
    Exec(exec_client::ExecArgs),
    /// Expand, fold or count node sets, or list the cluster's groups (ClusterShell's `nodeset`).
    Nodeset(nodeset_cli::NodesetArgs),
    /// Send files to many hosts (atomic on each host, mode kept, each file's hash audited).
    Copy(copy_cli::CopyArgs),
    /// Add, remove or list managed hosts (a signed configuration change).
    #[command(subcommand)]
    Host(directory_cli::HostCommand),
    /// Set, remove or show principals' ACL entries and ceilings (a signed configuration change).
    #[command(subcommand)]
    Acl(directory_cli::AclCommand),
    /// Add, change, remove or list the principals who may log in (at the KDC, operator-signed).
    #[command(subcommand)]
    Principal(principal_cli::PrincipalCommandArgs),
    /// Read or verify the audit trail.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Change the configuration through a member (signed with the operator key).
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// Run a protocol scenario on simulated hosts (turmoil) and report what happened.
    #[command(subcommand)]
    Sim(sim::SimCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(shell_docs::CompletionsArgs),
    /// Write man pages for cohort and each of its commands.
    InstallMan(shell_docs::InstallManArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keygen(args) => keygen::run(&args),
        Command::Key(command) => keygen::run_key(&command),
        Command::Change(command) => change::run(&command),
        Command::Sim(command) => sim::run(&command),
        Command::Completions(args) => shell_docs::completions(&args),
        Command::InstallMan(args) => shell_docs::install_man(&args),
        Command::Demo { stay } => demo::run(stay),
        Command::Init(args) => init::run(&args),
        Command::Join(args) => join::join(&args),
        Command::Node(command) => node::run(&command),
        Command::Status(args) => admin::status(&args),
        Command::Get(args) => admin::get(&args),
        Command::Admin(command) => admin::admin(&command),
        Command::Login(args) => exec_client::login(&args),
        Command::Policy(command) => policy_cli::run(&command),
        Command::Audit(command) => audit::run(&command),
        Command::Host(command) => directory_cli::host(&command),
        Command::Principal(command) => principal_cli::run(&command),
        Command::Acl(command) => directory_cli::acl(&command),
        Command::Nodeset(args) => nodeset_cli::run(&args),
        // Non-zero when any host failed (with -S, the largest status), like pdsh and clush.
        Command::Exec(args) => match exec_client::exec(&args) {
            Ok(status) => return ExitCode::from(status),
            Err(e) => Err(e),
        },
        Command::Copy(args) => match copy_cli::copy(&args) {
            Ok(status) => return ExitCode::from(status),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes as one line, each cause once: a library error that already names its
/// cause in its own message (`could not bind …: Address already in use`) is not followed by that
/// cause again.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

#[cfg(test)]
mod tests {
    /// clap checks the whole command tree (unique names, valid defaults) here, not at run time.
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_printed_again() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use (os error 98)");
        let e = anyhow::Error::new(io)
            .context("could not listen on 127.0.0.1:7000: Address already in use (os error 98)");
        assert_eq!(
            super::error_text(&e),
            "could not listen on 127.0.0.1:7000: Address already in use (os error 98)"
        );
        let e = anyhow::anyhow!("disk full").context("could not write node.db");
        assert_eq!(super::error_text(&e), "could not write node.db: disk full");
    }

    /// As with pdsh and clush, the command needs no `--`, and its own options stay its own.
    #[test]
    fn a_command_is_taken_with_or_without_a_double_dash() {
        use clap::Parser;
        let command = |args: &[&str]| match super::Cli::try_parse_from(args).expect("parses").command {
            super::Command::Exec(exec) => exec.command,
            _ => panic!("an exec"),
        };
        assert_eq!(command(&["cohort", "exec", "-w", "h01", "true"]), ["true"]);
        assert_eq!(command(&["cohort", "exec", "-w", "h01", "ls", "-l", "-w", "x"]), ["ls", "-l", "-w", "x"]);
        assert_eq!(command(&["cohort", "exec", "-w", "h01", "--", "ls", "-l"]), ["ls", "-l"]);
        assert_eq!(command(&["cohort", "exec", "-w", "h01", "--", "-weird"]), ["-weird"]);
        // A mistyped option is not taken for the command.
        let typo = super::Cli::try_parse_from(["cohort", "exec", "-w", "h01", "--jsn", "true"]);
        assert!(typo.is_err_and(|e| e.to_string().contains("--jsn")), "a typo ran as a command");
        assert!(
            super::Cli::try_parse_from(["cohort", "exec", "-w", "h01"]).is_err(),
            "a command is required"
        );
    }
}
