//! `cohort completions SHELL` and `cohort install-man`: shell completion scripts and man pages,
//! both generated from the command-line definition itself, so they cannot drift from it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

use crate::plural::plural;

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell. Install for bash with
    /// `cohort completions bash > /etc/bash_completion.d/cohort`.
    #[arg(value_name = "SHELL")]
    shell: Shell,
}

#[derive(Debug, clap::Args)]
pub struct InstallManArgs {
    /// Where the pages go (a `man1` directory on MANPATH).
    #[arg(long, value_name = "DIR", default_value = "/usr/local/share/man/man1")]
    dir: PathBuf,
}

pub fn completions(args: &CompletionsArgs) -> anyhow::Result<()> {
    let mut command = crate::Cli::command();
    clap_complete::generate(args.shell, &mut command, "cohort", &mut std::io::stdout());
    Ok(())
}

pub fn install_man(args: &InstallManArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir).with_context(|| format!("could not create {}", args.dir.display()))?;
    let written = write_pages(&crate::Cli::command(), "cohort", &args.dir)?;
    println!(
        "wrote {} to {} (read one with `man cohort-exec`)",
        plural(written, "man page"),
        args.dir.display()
    );
    Ok(())
}

/// Writes `name.1` for `command`, then one page per subcommand (`cohort-exec.1`, …), as git does.
fn write_pages(command: &clap::Command, name: &str, dir: &Path) -> anyhow::Result<usize> {
    let command = command.clone().name(name.to_owned());
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut page).context("could not render a man page")?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, page).with_context(|| format!("could not write {}", path.display()))?;
    let mut written = 1;
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        written += write_pages(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(written)
}
