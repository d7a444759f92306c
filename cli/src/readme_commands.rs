//! Every `cohort` command line the README shows parses as written: subcommands, flags and values
//! that clap checks (versions, times, node sets given to a value parser). What the commands do is
//! shown by the real-process tests each README section names; this keeps the text from drifting
//! away from the command line.

use clap::Parser;

const README: &str = include_str!("../../README.md");

/// The shell variables the README's blocks set, as they expand there.
const VARIABLES: &[(&str, &str)] =
    &[("$OP", "--cluster site/cluster.toml --key site/operator.key"), ("$USER", "alice"), ("$C", "cohort")];

/// Each `cohort …` (or `$C …`) command in the README's `sh` blocks: continuation lines joined,
/// with its line number.
fn commands() -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut in_sh = false;
    let mut pending: Option<(usize, String)> = None;
    for (number, line) in README.lines().enumerate().map(|(i, l)| (i + 1, l)) {
        if line.starts_with("```") {
            in_sh = line == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        let (start, mut text) = match pending.take() {
            Some((start, so_far)) => (start, format!("{so_far} {}", line.trim())),
            None => {
                // The part after a pipe is the command (`echo hello | $C exec …`).
                let command = line.rsplit_once(" | ").map_or(line, |(_, after)| after).trim_start();
                if !(command.starts_with("$C ") || command.starts_with("cohort ")) {
                    continue;
                }
                (number, command.to_owned())
            }
        };
        if let Some(open) = text.strip_suffix('\\') {
            text = open.to_owned();
            pending = Some((start, text));
            continue;
        }
        found.push((start, text));
    }
    found
}

fn expand(command: &str) -> String {
    let mut text = command.to_owned();
    for (name, value) in VARIABLES {
        text = text.replace(name, value);
    }
    text
}

/// The words of `command` as a shell splits them, without a trailing `&` (a background job).
fn words(command: &str) -> Result<Vec<String>, shell_words::ParseError> {
    let mut words = shell_words::split(&expand(command))?;
    if words.last().is_some_and(|w| w == "&") {
        words.pop();
    }
    Ok(words)
}

#[test]
fn every_command_the_readme_shows_parses() {
    let commands = commands();
    assert!(commands.len() > 80, "found only {} commands: is the README's layout changed?", commands.len());
    let mut broken = Vec::new();
    for (line, command) in &commands {
        let words = match words(command) {
            Ok(words) => words,
            Err(e) => {
                broken.push(format!("README.md:{line}: {command}\n  not shell words: {e}"));
                continue;
            }
        };
        if let Err(e) = crate::Cli::try_parse_from(&words) {
            let first = e.to_string().lines().next().unwrap_or_default().to_owned();
            broken.push(format!("README.md:{line}: {command}\n  {first}"));
        }
    }
    assert!(broken.is_empty(), "{} README commands do not parse:\n{}", broken.len(), broken.join("\n"));
}

#[test]
fn a_wrong_flag_in_a_readme_line_would_be_caught() {
    let words = words("$C status --no-such-flag --config m0/node.toml &").expect("words");
    assert!(crate::Cli::try_parse_from(&words).is_err());
}
