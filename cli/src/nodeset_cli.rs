//! `cohort nodeset`: ClusterShell's `nodeset` command on cohort's node sets. `-e` expands, `-f`
//! folds, `-c` counts, `-l` lists the cluster's groups (`-ll` with their nodes, `-lll` with their
//! counts too). Node sets come from the arguments, or from standard input (one per line) when
//! there are none. Groups (`@name`, and `-l`) are the `group.NAME` settings of a member's active
//! configuration, the same ones the gateway resolves `-w @name` with, read only when needed. The
//! node set rules are core's; this module reads arguments and prints. It never changes the
//! configuration.

use std::collections::BTreeMap;
use std::io::Read;

use anyhow::{Context, bail};
use cohort_core::exec::directory::ExecDirectory;
use cohort_core::exec::nodeset::{MAX_PATTERN_LEN, NodeSet};

use crate::directory_cli::active_settings;
use crate::target::TargetArgs;

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["expand", "fold", "count", "list"])))]
pub struct NodesetArgs {
    /// Print every node, in ClusterShell's order, separated by spaces (or by -S).
    #[arg(short = 'e', long)]
    pub expand: bool,
    /// Print the node set folded: `web[1-3]-eth[0-1]`.
    #[arg(short = 'f', long)]
    pub fold: bool,
    /// Print how many nodes the node set holds.
    #[arg(short = 'c', long)]
    pub count: bool,
    /// List the cluster's groups as `@name`; -ll adds each group's nodes, -lll their count. With
    /// node sets, only the groups holding some of those nodes, with the nodes they hold.
    #[arg(short = 'l', long, action = clap::ArgAction::Count)]
    pub list: u8,
    /// What -e puts between nodes (`\n` and `\t` as typed are a newline and a tab).
    #[arg(short = 'S', long, value_name = "SEP", default_value = " ")]
    pub separator: String,
    /// Node sets: `h[1-10/2]`, `web[1-3]-eth[0-1]`, `a[1-9]!a5`, `@group&rack1-[1-8]`, ...
    /// (`,` union, `!` difference, `&` intersection, `^` symmetric difference, left to right).
    #[arg(value_name = "NODESET")]
    pub nodesets: Vec<String>,
    /// Where the groups come from: a member of the cluster (only read for `@name` or -l).
    #[command(flatten)]
    pub target: TargetArgs,
}

/// `cohort nodeset`.
pub fn run(args: &NodesetArgs) -> anyhow::Result<()> {
    let mut sets = args.nodesets.clone();
    if sets.is_empty() && args.list == 0 {
        let mut text = String::new();
        std::io::stdin()
            .take(MAX_PATTERN_LEN as u64 + 1)
            .read_to_string(&mut text)
            .context("could not read node sets from standard input")?;
        sets.push(text);
    }
    let needs_groups = args.list > 0 || sets.iter().any(|s| s.contains('@'));
    let groups = if needs_groups { cluster_groups(&args.target)? } else { BTreeMap::new() };
    print!("{}", render(args, &sets, &groups)?);
    Ok(())
}

/// The `group.NAME` settings of the member's active configuration.
fn cluster_groups(target: &TargetArgs) -> anyhow::Result<BTreeMap<String, String>> {
    if target.config.is_none() && target.cluster.is_none() {
        bail!(
            "groups (`@name`, -l) are the cluster's: say where to read them with --config NODE.toml, \
             or --cluster cluster.toml --key operator.key"
        );
    }
    let (_, settings) = active_settings(target)?;
    let (directory, _) = ExecDirectory::from_settings(&settings.into_iter().collect());
    Ok(directory.groups)
}

/// What `cohort nodeset` prints for `sets`, `groups` resolving `@name`.
pub fn render(
    args: &NodesetArgs,
    sets: &[String],
    groups: &BTreeMap<String, String>,
) -> anyhow::Result<String> {
    let lookup = |name: &str| groups.get(name).cloned();
    let set = NodeSet::from_args(sets, &lookup).context("bad node set")?;
    if args.list > 0 {
        return list(args.list, (!sets.is_empty()).then_some(&set), groups);
    }
    let line = if args.expand {
        let separator = args.separator.replace("\\n", "\n").replace("\\t", "\t");
        set.iter().collect::<Vec<_>>().join(&separator)
    } else if args.fold {
        set.fold()
    } else {
        set.len().to_string()
    };
    Ok(format!("{line}\n"))
}

/// `-l`: every group (or those holding some of `filter`'s nodes), at `level` of detail.
fn list(level: u8, filter: Option<&NodeSet>, groups: &BTreeMap<String, String>) -> anyhow::Result<String> {
    let lookup = |name: &str| groups.get(name).cloned();
    let mut out = String::new();
    for name in groups.keys() {
        let members = NodeSet::parse(&format!("@{name}"), &lookup)
            .with_context(|| format!("the cluster's group `@{name}` is not a valid node set"))?;
        let line = match filter {
            None => match level {
                1 => format!("@{name}"),
                2 => format!("@{name} {members}"),
                _ => format!("@{name} {members} {}", members.len()),
            },
            Some(filter) => {
                let held = members.intersection(filter)?;
                if held.is_empty() {
                    continue;
                }
                match level {
                    1 => format!("@{name}"),
                    2 => format!("@{name} {held}"),
                    _ => format!("@{name} {held} {}/{}", held.len(), members.len()),
                }
            }
        };
        out.push_str(&line);
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: NodesetArgs,
    }

    fn output(argv: &[&str], groups: &[(&str, &str)]) -> anyhow::Result<String> {
        let cli = Cli::try_parse_from(std::iter::once("nodeset").chain(argv.iter().copied()))?;
        let groups = groups.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        render(&cli.args, &cli.args.nodesets, &groups)
    }

    const GROUPS: &[(&str, &str)] = &[("web", "web[1-3]"), ("db", "db[1-2]"), ("all", "@web,@db")];

    #[test]
    fn expand_fold_and_count_like_clustershell() {
        assert_eq!(output(&["-e", "h[1-10/3]"], &[]).expect("ok"), "h1 h4 h7 h10\n");
        assert_eq!(output(&["-e", "-S", ",", "h[1-3]"], &[]).expect("ok"), "h1,h2,h3\n");
        assert_eq!(output(&["-e", "-S", "\\t", "h[1-2]"], &[]).expect("ok"), "h1\th2\n");
        assert_eq!(
            output(&["-f", "web[1-3]-eth0", "web[1-3]-eth1"], &[]).expect("ok"),
            "web[1-3]-eth[0-1]\n"
        );
        assert_eq!(output(&["-c", "a[1-5]!a3", "b1"], &[]).expect("ok"), "5\n");
        assert_eq!(output(&["-f", "@all!web2"], GROUPS).expect("ok"), "db[1-2],web[1,3]\n");
        assert!(output(&["-f", "@nope"], GROUPS).is_err());
        assert!(output(&["-e", "-f", "h1"], &[]).is_err(), "one command at a time");
    }

    #[test]
    fn list_groups_at_three_levels_and_filtered_by_nodes() {
        assert_eq!(output(&["-l"], GROUPS).expect("ok"), "@all\n@db\n@web\n");
        assert_eq!(
            output(&["-ll"], GROUPS).expect("ok"),
            "@all db[1-2],web[1-3]\n@db db[1-2]\n@web web[1-3]\n"
        );
        assert_eq!(
            output(&["-lll"], GROUPS).expect("ok"),
            "@all db[1-2],web[1-3] 5\n@db db[1-2] 2\n@web web[1-3] 3\n"
        );
        assert_eq!(
            output(&["-lll", "web[2-9]"], GROUPS).expect("ok"),
            "@all web[2-3] 2/5\n@web web[2-3] 2/3\n"
        );
        assert_eq!(output(&["-l"], &[]).expect("ok"), "");
    }
}
