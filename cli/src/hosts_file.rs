//! Hosts files: the node sets a run targets when they come from a file, either named on the
//! command line (`-w ^FILE`, `-x ^FILE`: a leading `^` is a file there, never the `^` operator) or,
//! when `-w` is not given, named by `$COHORT_HOSTS_FILE` or else pdsh's `$WCOLL`. Owns reading
//! such a file: one node set per line, each evaluated on its own (`a!b` on one line never removes
//! hosts named on another), `#` starts a comment. It never checks a node set's syntax (the caller
//! does, with core's parser) and never resolves groups (the gateway does).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The environment variables naming a hosts file, in order of precedence.
pub const HOSTS_FILE_VARS: [&str; 2] = ["COHORT_HOSTS_FILE", "WCOLL"];

/// The node sets in the hosts file at `path`, one per line.
pub fn read(path: &Path) -> anyhow::Result<Vec<String>> {
    let content = std::fs::read_to_string(path)
        .with_context(|| format!("could not read the host file `{}`", path.display()))?;
    let sets: Vec<String> = content
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if sets.is_empty() {
        bail!("the host file `{}` names no hosts", path.display());
    }
    Ok(sets)
}

/// The node sets of one -w or -x value: `^FILE` reads the node sets in FILE, anything else is
/// one node set taken as it is (its `^` operators included).
pub fn node_sets_arg(text: &str) -> anyhow::Result<Vec<String>> {
    match text.strip_prefix('^') {
        Some(path) => read(Path::new(path)),
        None => Ok(vec![text.to_owned()]),
    }
}

/// The hosts file the environment names, with the variable that named it; `var` reads one
/// variable (an empty value counts as unset).
pub fn file_from(var: &dyn Fn(&str) -> Option<OsString>) -> Option<(&'static str, PathBuf)> {
    HOSTS_FILE_VARS.iter().find_map(|name| {
        var(name).filter(|value| !value.is_empty()).map(|value| (*name, PathBuf::from(value)))
    })
}

/// The node sets to target when -w is not given: the hosts file of `$COHORT_HOSTS_FILE`, else of
/// `$WCOLL`; an error saying how to name hosts when neither is set.
pub fn default_targets() -> anyhow::Result<Vec<String>> {
    let Some((name, path)) = file_from(&|name| std::env::var_os(name)) else {
        bail!(
            "say which hosts: -w NODESET (or -w ^FILE), or set {} (or {}) to a file of node sets",
            HOSTS_FILE_VARS[0],
            HOSTS_FILE_VARS[1]
        );
    };
    read(&path).with_context(|| format!("reading the hosts file named by ${name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cohort_s_variable_wins_over_wcoll_and_empty_values_are_unset() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| OsString::from(v))
        };
        let both = env(&[("COHORT_HOSTS_FILE", "/a"), ("WCOLL", "/b")]);
        assert_eq!(file_from(&both), Some(("COHORT_HOSTS_FILE", PathBuf::from("/a"))));
        let wcoll = env(&[("COHORT_HOSTS_FILE", ""), ("WCOLL", "/b")]);
        assert_eq!(file_from(&wcoll), Some(("WCOLL", PathBuf::from("/b"))));
        assert_eq!(file_from(&env(&[])), None);
    }

    #[test]
    fn a_hosts_file_is_node_sets_with_comments_and_a_caret_names_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hosts");
        std::fs::write(&path, "# web tier\nweb[1-3]  # front\n\ndb[1-2]!db2\n").expect("write");
        assert_eq!(read(&path).expect("reads"), ["web[1-3]", "db[1-2]!db2"]);
        let arg = format!("^{}", path.display());
        assert_eq!(node_sets_arg(&arg).expect("reads"), ["web[1-3]", "db[1-2]!db2"]);
        assert_eq!(node_sets_arg("a[1-3]^a2").expect("as is"), ["a[1-3]^a2"]);
        std::fs::write(&path, "# nothing\n").expect("write");
        assert!(read(&path).is_err());
        assert!(node_sets_arg("^/nonexistent/hosts").is_err());
    }
}
