//! Node sets with ClusterShell 1.9's semantics: `web[01-20,33],db[1-3]`, steps (`h[1-10/2]`),
//! several numbers per name (`rack[1-2]-n[1-4]`), `@group` names resolved by the caller, and the
//! operators `,` `!` `&` `^` evaluated left to right. Owns parsing a set, the set arithmetic,
//! and printing it back folded (`nodeset -f`), expanded (`nodeset -e`, ClusterShell's order) or
//! counted (`nodeset -c`), matching ClusterShell's output for the same input. It is pure: groups
//! come through a callback. It never holds more than [`MAX_HOSTS`] nodes, never reads more than
//! [`MAX_PATTERN_LEN`] bytes of one expression, and refuses (never panics on) anything else.

mod nd;
mod parse;
mod rangeset;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;

use nd::{RangeSetNd, for_each_point};
use rangeset::RangeSet;

/// A bound on any one node set, so `h[1-99999999]` is an error and not an allocation.
pub const MAX_HOSTS: usize = 100_000;
/// The longest node set expression read from a user.
pub const MAX_PATTERN_LEN: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeSetError {
    #[error("empty node set")]
    Empty,
    #[error("node set `{0}` has an unclosed `[`")]
    Unclosed(String),
    #[error("node set has a `]` without `[` in `{0}`")]
    Unopened(String),
    #[error("node set opens a second `[` right after a `]` in `{0}`")]
    Reopened(String),
    #[error("range `{0}`: {1}")]
    BadRange(String, &'static str),
    #[error("range `{0}` runs backwards")]
    Backwards(String),
    #[error("range `{0}` has a bad step (write N-M/STEP, STEP at least 1)")]
    BadStep(String),
    #[error("range `{0}` pads its bounds to different widths")]
    PaddingMismatch(String),
    #[error("digits `{0}` after a bracket cannot follow a range with a step")]
    StepThenDigits(String),
    #[error("`{op}` needs a node set on both sides (near `{near}`)")]
    MissingOperand { op: char, near: String },
    #[error("node set expands to more than {MAX_HOSTS} hosts")]
    TooLarge,
    #[error("node set is longer than {MAX_PATTERN_LEN} bytes")]
    TooLong,
    #[error("node set needs too much work to compute (too many pieces or group lookups)")]
    TooComplex,
    #[error("unknown group `@{0}`")]
    UnknownGroup(String),
    #[error("group `@{0}` is nested too deep (does it refer to itself?)")]
    Recursive(String),
    #[error("`{0}` has a character outside letters, digits, `.`, `-` and `_`")]
    BadName(String),
}

/// What one pattern (`web%s-eth%s`) holds: nothing to number, one axis, or several.
#[derive(Debug, Clone)]
enum Entry {
    Plain,
    One(RangeSet),
    Nd(RangeSetNd),
}

impl Entry {
    /// ClusterShell's truth value of the entry: a numbered entry with something in it.
    fn has_nodes(&self) -> bool {
        match self {
            Entry::Plain => false,
            Entry::One(rs) => !rs.is_empty(),
            Entry::Nd(nd) => nd.has_vectors(),
        }
    }

    /// A copy as ClusterShell takes it when a pattern first enters a set (folding the source).
    fn copy(&mut self) -> Entry {
        match self {
            Entry::Plain => Entry::Plain,
            Entry::One(rs) => Entry::One(rs.clone()),
            Entry::Nd(nd) => Entry::Nd(nd.copy()),
        }
    }

    fn len(&mut self) -> usize {
        match self {
            Entry::Plain => 1,
            Entry::One(rs) => rs.len(),
            Entry::Nd(nd) => nd.len(),
        }
    }
}

/// A set of host names, in ClusterShell's canonical form. Values given out by this module are
/// always folded, so reading them needs no mutation.
#[derive(Debug, Clone, Default)]
pub struct NodeSet {
    patterns: BTreeMap<String, Entry>,
}

/// `pattern` with each `%s` replaced by the next of `parts`.
fn fill(pattern: &str, parts: &[&str]) -> String {
    let mut out = String::with_capacity(pattern.len() + parts.iter().map(|p| p.len()).sum::<usize>());
    let mut pieces = pattern.split("%s");
    if let Some(first) = pieces.next() {
        out.push_str(first);
    }
    for (piece, part) in pieces.zip(parts.iter().chain(std::iter::repeat(&""))) {
        out.push_str(part);
        out.push_str(piece);
    }
    out
}

fn bracketed(rs: &RangeSet) -> String {
    if rs.len() > 1 { format!("[{rs}]") } else { rs.to_string() }
}

impl NodeSet {
    /// Parses one expression, as ClusterShell's `NodeSet(text)`; `groups` resolves `@name` to
    /// another node set. Empty text gives the empty set.
    pub fn parse(text: &str, groups: &dyn Fn(&str) -> Option<String>) -> Result<NodeSet, NodeSetError> {
        NodeSet::from_args(&[text], groups)
    }

    /// The node set of `nodeset`'s arguments: each argument's lines parsed and joined, then the
    /// arguments joined, in ClusterShell's order of steps (its folding depends on it).
    pub fn from_args<S: AsRef<str>>(
        args: &[S],
        groups: &dyn Fn(&str) -> Option<String>,
    ) -> Result<NodeSet, NodeSetError> {
        if args.iter().any(|a| a.as_ref().len() > MAX_PATTERN_LEN) {
            return Err(NodeSetError::TooLong);
        }
        NodeSet::evaluate(args, groups)
    }

    fn evaluate<S: AsRef<str>>(
        args: &[S],
        groups: &dyn Fn(&str) -> Option<String>,
    ) -> Result<NodeSet, NodeSetError> {
        let mut parser = parse::Parser::new(groups);
        let mut all = NodeSet::default();
        for arg in args {
            let mut one = NodeSet::default();
            for line in arg.as_ref().split(['\n', '\r']) {
                let mut parsed = parser.parse_string(line, 0)?;
                one.update(&mut parsed);
            }
            all.update(&mut one);
            if all.raw_len() > 2 * MAX_HOSTS {
                return Err(NodeSetError::TooLarge);
            }
        }
        all.settle();
        if all.len() > MAX_HOSTS {
            return Err(NodeSetError::TooLarge);
        }
        Ok(all)
    }

    /// Folds every entry, as printing or counting does in ClusterShell.
    fn settle(&mut self) {
        for entry in self.patterns.values_mut() {
            if let Entry::Nd(nd) = entry {
                nd.settle();
            }
        }
    }

    fn insert_new(&mut self, pattern: String, entry: Entry) {
        self.patterns.insert(pattern, entry);
    }

    fn raw_len(&self) -> usize {
        self.patterns.values().fold(0usize, |n, e| {
            n.saturating_add(match e {
                Entry::Plain => 1,
                Entry::One(rs) => rs.len(),
                Entry::Nd(nd) => nd.raw_len(),
            })
        })
    }

    /// ClusterShell's `NodeSetBase._add` for each of `other`'s patterns.
    fn update(&mut self, other: &mut NodeSet) {
        for (pattern, theirs) in &mut other.patterns {
            match self.patterns.get_mut(pattern) {
                Some(mine) => {
                    if mine.has_nodes() {
                        match (mine, theirs) {
                            (Entry::One(a), Entry::One(b)) => a.extend(b),
                            (Entry::Nd(a), Entry::Nd(b)) => a.update(b.raw_vectors()),
                            _ => {}
                        }
                    }
                }
                None => {
                    self.patterns.insert(pattern.clone(), theirs.copy());
                }
            }
        }
    }

    fn intersection_update(&mut self, other: &NodeSet) -> Result<(), NodeSetError> {
        let mut kept = BTreeMap::new();
        for (pattern, theirs) in &other.patterns {
            match self.patterns.get_mut(pattern) {
                Some(mine) if mine.has_nodes() => {
                    let mut common = match (mine, theirs) {
                        (Entry::One(a), Entry::One(b)) => Entry::One(a.intersection(b)),
                        (Entry::Nd(a), Entry::Nd(b)) => {
                            let mut c = a.copy();
                            c.intersection_update(b.raw_vectors())?;
                            Entry::Nd(c)
                        }
                        _ => continue,
                    };
                    if common.len() > 0 {
                        kept.insert(pattern.clone(), common);
                    }
                }
                Some(_) if !theirs.has_nodes() => {
                    kept.insert(pattern.clone(), Entry::Plain);
                }
                _ => {}
            }
        }
        self.patterns = kept;
        Ok(())
    }

    fn difference_update(&mut self, other: &NodeSet) -> Result<(), NodeSetError> {
        let mut purge = Vec::new();
        for (pattern, theirs) in &other.patterns {
            match self.patterns.get_mut(pattern) {
                Some(mine) if mine.has_nodes() => {
                    match (&mut *mine, theirs) {
                        (Entry::One(a), Entry::One(b)) => *a = a.difference(b),
                        (Entry::Nd(a), Entry::Nd(b)) => a.difference_update(b.raw_vectors())?,
                        _ => {}
                    }
                    if mine.len() == 0 {
                        purge.push(pattern.clone());
                    }
                }
                Some(_) => purge.push(pattern.clone()),
                None => {}
            }
        }
        for pattern in purge {
            self.patterns.remove(&pattern);
        }
        Ok(())
    }

    fn symmetric_difference_update(&mut self, other: &mut NodeSet) -> Result<(), NodeSetError> {
        let mut purge = Vec::new();
        for (pattern, mine) in &mut self.patterns {
            match other.patterns.get_mut(pattern) {
                Some(theirs) if theirs.has_nodes() => match (mine, theirs) {
                    (Entry::One(a), Entry::One(b)) => *a = a.symmetric_difference(b),
                    (Entry::Nd(a), Entry::Nd(b)) => a.symmetric_difference_update(b)?,
                    _ => {}
                },
                Some(_) => purge.push(pattern.clone()),
                None => {}
            }
        }
        for (pattern, theirs) in &mut other.patterns {
            if !self.patterns.contains_key(pattern) {
                self.patterns.insert(pattern.clone(), theirs.copy());
            }
        }
        for (pattern, mine) in &mut self.patterns {
            if !matches!(mine, Entry::Plain) && mine.len() == 0 {
                purge.push(pattern.clone());
            }
        }
        for pattern in purge {
            self.patterns.remove(&pattern);
        }
        Ok(())
    }

    /// A copy to compute on, taken as ClusterShell's `copy()` does.
    fn copy(&self) -> NodeSet {
        let mut source = self.clone();
        NodeSet { patterns: source.patterns.iter_mut().map(|(p, e)| (p.clone(), e.copy())).collect() }
    }

    fn finish(mut self) -> Result<NodeSet, NodeSetError> {
        self.settle();
        if self.len() > MAX_HOSTS {
            return Err(NodeSetError::TooLarge);
        }
        Ok(self)
    }

    /// Every node in either set.
    pub fn union(&self, other: &NodeSet) -> Result<NodeSet, NodeSetError> {
        let mut out = self.copy();
        out.update(&mut other.clone());
        out.finish()
    }

    /// The nodes of `self` that are not in `other`.
    pub fn difference(&self, other: &NodeSet) -> Result<NodeSet, NodeSetError> {
        let mut out = self.copy();
        out.difference_update(other)?;
        out.finish()
    }

    /// The nodes in both sets.
    pub fn intersection(&self, other: &NodeSet) -> Result<NodeSet, NodeSetError> {
        let mut out = self.copy();
        out.intersection_update(other)?;
        out.finish()
    }

    /// The nodes in exactly one of the sets.
    pub fn symmetric_difference(&self, other: &NodeSet) -> Result<NodeSet, NodeSetError> {
        let mut out = self.copy();
        out.symmetric_difference_update(&mut other.clone())?;
        out.finish()
    }

    /// How many nodes (`nodeset -c`).
    pub fn len(&self) -> usize {
        self.patterns.values().fold(0usize, |n, e| {
            n.saturating_add(match e {
                Entry::Plain => 1,
                Entry::One(rs) => rs.len(),
                Entry::Nd(nd) => nd.raw_len(),
            })
        })
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The nodes in ClusterShell's order (`nodeset -e`): by pattern, then as folded.
    pub fn iter(&self) -> impl Iterator<Item = String> + '_ {
        self.patterns.iter().flat_map(|(pattern, entry)| {
            let mut names = Vec::new();
            match entry {
                Entry::Plain => names.push(pattern.clone()),
                Entry::One(rs) => names.extend(rs.iter().map(|i| fill(pattern, &[i.as_str()]))),
                Entry::Nd(nd) => {
                    for vector in nd.raw_vectors() {
                        for_each_point(vector, &mut |point| {
                            let parts: Vec<&str> = point.iter().map(|i| i.as_str()).collect();
                            names.push(fill(pattern, &parts));
                        });
                    }
                }
            }
            names
        })
    }

    /// Whether `host` is one of the nodes.
    pub fn contains(&self, host: &str) -> bool {
        let Ok((pattern, axes)) = parse::scan_single(host) else { return false };
        let points: Vec<_> = axes.iter().filter_map(|a| a.first()).collect();
        match self.patterns.get(&pattern) {
            None => false,
            Some(Entry::Plain) => true,
            Some(Entry::One(rs)) => points.first().is_some_and(|p| rs.iter().any(|i| i == *p)),
            Some(Entry::Nd(nd)) => nd.raw_vectors().iter().any(|v| {
                v.len() == points.len() && v.iter().zip(&points).all(|(rs, p)| rs.iter().any(|i| i == *p))
            }),
        }
    }

    /// The folded form (`nodeset -f`), e.g. `web[1-3]-eth[0-1]`.
    pub fn fold(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for NodeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        for (pattern, entry) in &self.patterns {
            match entry {
                Entry::Plain => parts.push(pattern.clone()),
                Entry::One(rs) => parts.push(fill(pattern, &[&bracketed(rs)])),
                Entry::Nd(nd) => {
                    for vector in nd.raw_vectors() {
                        let axes: Vec<String> = vector.iter().map(bracketed).collect();
                        let refs: Vec<&str> = axes.iter().map(String::as_str).collect();
                        parts.push(fill(pattern, &refs));
                    }
                }
            }
        }
        f.write_str(&parts.join(","))
    }
}

/// Every host `pattern` names, in ClusterShell's order (sorted by name pattern, then by number),
/// each once; `groups` resolves `@name`. An expression naming no host is an error.
pub fn expand(pattern: &str, groups: &dyn Fn(&str) -> Option<String>) -> Result<Vec<String>, NodeSetError> {
    let set = NodeSet::parse(pattern, groups)?;
    if set.is_empty() {
        return Err(NodeSetError::Empty);
    }
    Ok(set.iter().collect())
}

/// How many hosts `pattern` names (`nodeset -c`).
pub fn count(pattern: &str, groups: &dyn Fn(&str) -> Option<String>) -> Result<usize, NodeSetError> {
    Ok(NodeSet::parse(pattern, groups)?.len())
}

/// Folds host names into the node set ClusterShell's `nodeset -f` prints for them joined by
/// commas. Names that are not plain host names are listed as they are.
pub fn fold<S: AsRef<str>>(hosts: &[S]) -> String {
    let joined = hosts.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(",");
    // Host names come from a run, not a user, so they may be longer than one typed expression.
    match NodeSet::evaluate(&[joined], &|_| None) {
        Ok(set) => set.fold(),
        Err(_) => {
            let mut names: Vec<&str> = hosts.iter().map(AsRef::as_ref).collect();
            names.sort_unstable();
            names.dedup();
            names.join(",")
        }
    }
}
