//! Node sets in the syntax of ClusterShell and pdsh: `web[01-20,33],db[1-3]`, several bracket
//! groups in one name (`rack[1-2]-n[1-4]`, the cartesian product), and `@group` names resolved by
//! the caller. Owns expanding a set into host names (order kept, duplicates dropped) and folding
//! host names back into the shortest readable set. It never expands beyond [`MAX_HOSTS`].

use std::collections::{BTreeMap, BTreeSet};

/// A bound on any one expansion, so `h[1-99999999]` is an error and not an allocation.
pub const MAX_HOSTS: usize = 100_000;
const MAX_PATTERN_LEN: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeSetError {
    #[error("empty node set")]
    Empty,
    #[error("node set `{0}` has an unclosed `[`")]
    Unclosed(String),
    #[error("node set `{0}` has a `]` without `[`")]
    Unopened(String),
    #[error("range `{0}` is not N, N-M or a list of them")]
    BadRange(String),
    #[error("range `{0}` runs backwards")]
    Backwards(String),
    #[error("node set expands to more than {MAX_HOSTS} hosts")]
    TooLarge,
    #[error("unknown group `@{0}`")]
    UnknownGroup(String),
    #[error("group `@{0}` refers to itself")]
    Recursive(String),
    #[error("host name `{0}` has a character outside letters, digits, `.`, `-` and `_`")]
    BadName(String),
}

/// Expands `pattern`; `groups` resolves `@name` to another node set.
pub fn expand(pattern: &str, groups: &dyn Fn(&str) -> Option<String>) -> Result<Vec<String>, NodeSetError> {
    expand_depth(pattern, groups, 0)
}

fn expand_depth(
    pattern: &str,
    groups: &dyn Fn(&str) -> Option<String>,
    depth: usize,
) -> Result<Vec<String>, NodeSetError> {
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(NodeSetError::TooLarge);
    }
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for item in split_top_level(pattern)? {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let hosts = if let Some(name) = item.strip_prefix('@') {
            if depth > 8 {
                return Err(NodeSetError::Recursive(name.to_owned()));
            }
            let set = groups(name).ok_or_else(|| NodeSetError::UnknownGroup(name.to_owned()))?;
            expand_depth(&set, groups, depth + 1)?
        } else {
            expand_item(item)?
        };
        for host in hosts {
            if seen.insert(host.clone()) {
                out.push(host);
                if out.len() > MAX_HOSTS {
                    return Err(NodeSetError::TooLarge);
                }
            }
        }
    }
    if out.is_empty() {
        return Err(NodeSetError::Empty);
    }
    Ok(out)
}

/// Splits on commas outside brackets.
fn split_top_level(pattern: &str) -> Result<Vec<&str>, NodeSetError> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in pattern.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.checked_sub(1).ok_or_else(|| NodeSetError::Unopened(pattern.to_owned()))?,
            ',' if depth == 0 => {
                parts.push(&pattern[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(NodeSetError::Unclosed(pattern.to_owned()));
    }
    parts.push(&pattern[start..]);
    Ok(parts)
}

/// One item without top-level commas: literal text and bracket groups, expanded as a product.
fn expand_item(item: &str) -> Result<Vec<String>, NodeSetError> {
    let mut results = vec![String::new()];
    let mut rest = item;
    while !rest.is_empty() {
        let (literal, after) = match rest.find('[') {
            Some(open) => (&rest[..open], Some(&rest[open + 1..])),
            None => (rest, None),
        };
        check_name(literal, item)?;
        for r in &mut results {
            r.push_str(literal);
        }
        let Some(after) = after else { break };
        let close = after.find(']').ok_or_else(|| NodeSetError::Unclosed(item.to_owned()))?;
        let values = expand_ranges(&after[..close])?;
        if results.len().saturating_mul(values.len()) > MAX_HOSTS {
            return Err(NodeSetError::TooLarge);
        }
        results =
            results.iter().flat_map(|prefix| values.iter().map(move |v| format!("{prefix}{v}"))).collect();
        rest = &after[close + 1..];
    }
    Ok(results)
}

fn check_name(text: &str, item: &str) -> Result<(), NodeSetError> {
    if text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')) {
        Ok(())
    } else {
        Err(NodeSetError::BadName(item.to_owned()))
    }
}

/// `01-03,7` → ["01", "02", "03", "7"]; zero padding follows the lower bound's width.
fn expand_ranges(spec: &str) -> Result<Vec<String>, NodeSetError> {
    let mut out = Vec::new();
    for part in spec.split(',') {
        let bad = || NodeSetError::BadRange(part.to_owned());
        let (low, high) = part.split_once('-').unwrap_or((part, part));
        if low.is_empty() || high.is_empty() || !low.bytes().chain(high.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let (a, b): (u64, u64) = (low.parse().map_err(|_| bad())?, high.parse().map_err(|_| bad())?);
        if b < a {
            return Err(NodeSetError::Backwards(part.to_owned()));
        }
        if (b - a) as usize >= MAX_HOSTS || out.len() + (b - a) as usize >= MAX_HOSTS {
            return Err(NodeSetError::TooLarge);
        }
        let width = if low.len() > 1 && low.starts_with('0') { low.len() } else { 1 };
        out.extend((a..=b).map(|n| format!("{n:0width$}")));
    }
    Ok(out)
}

/// Folds host names into a node set: hosts sharing a prefix, suffix and digit width collapse into
/// one bracket group with merged ranges. Hosts without a number stay as they are. Sorted output.
pub fn fold<S: AsRef<str>>(hosts: &[S]) -> String {
    // (prefix, suffix) → the digit strings seen between them.
    let mut by_shape: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut plain: BTreeSet<String> = BTreeSet::new();
    for host in hosts {
        let host = host.as_ref();
        match split_last_number(host) {
            Some((prefix, digits, suffix)) if digits.len() <= 18 => {
                by_shape.entry((prefix.to_owned(), suffix.to_owned())).or_default().push(digits.to_owned());
            }
            _ => {
                plain.insert(host.to_owned());
            }
        }
    }
    let mut parts: Vec<String> = plain.into_iter().collect();
    for ((prefix, suffix), all_digits) in by_shape {
        let padded = |d: &str| d.len() > 1 && d.starts_with('0');
        // Widths some host writes with leading zeros; an unpadded number that wide joins them
        // (h09 and h10 are one group of width 2).
        let padded_widths: BTreeSet<usize> =
            all_digits.iter().filter(|d| padded(d)).map(String::len).collect();
        let mut by_width: BTreeMap<usize, BTreeSet<u64>> = BTreeMap::new();
        for digits in &all_digits {
            let width =
                if padded(digits) || padded_widths.contains(&digits.len()) { digits.len() } else { 0 };
            if let Ok(n) = digits.parse::<u64>() {
                by_width.entry(width).or_default().insert(n);
            }
        }
        for (width, numbers) in by_width {
            let ranges = merge_ranges(&numbers, width);
            if numbers.len() == 1 {
                parts.push(format!("{prefix}{ranges}{suffix}"));
            } else {
                parts.push(format!("{prefix}[{ranges}]{suffix}"));
            }
        }
    }
    parts.sort();
    parts.join(",")
}

fn split_last_number(host: &str) -> Option<(&str, &str, &str)> {
    let bytes = host.as_bytes();
    let end = bytes.iter().rposition(|b| b.is_ascii_digit())? + 1;
    let start = bytes[..end].iter().rposition(|b| !b.is_ascii_digit()).map_or(0, |p| p + 1);
    Some((&host[..start], &host[start..end], &host[end..]))
}

fn merge_ranges(numbers: &BTreeSet<u64>, width: usize) -> String {
    let fmt = |n: u64| if width > 0 { format!("{n:0width$}") } else { n.to_string() };
    let mut out: Vec<String> = Vec::new();
    let mut iter = numbers.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        out.push(if start == end { fmt(start) } else { format!("{}-{}", fmt(start), fmt(end)) });
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_groups(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn ranges_lists_and_padding_expand_in_order() {
        assert_eq!(
            expand("web[01-03,10],db[1-2]", &no_groups).expect("expands"),
            ["web01", "web02", "web03", "web10", "db1", "db2"]
        );
        assert_eq!(
            expand("a[1-2]-b[1-2]", &no_groups).expect("expands"),
            ["a1-b1", "a1-b2", "a2-b1", "a2-b2"]
        );
        assert_eq!(expand("h1,h1,h2", &no_groups).expect("expands"), ["h1", "h2"]);
    }

    #[test]
    fn groups_resolve_through_the_caller() {
        let groups = |name: &str| (name == "web").then(|| "w[1-2]".to_owned());
        assert_eq!(expand("@web,db1", &groups).expect("expands"), ["w1", "w2", "db1"]);
        assert_eq!(expand("@nope", &groups), Err(NodeSetError::UnknownGroup("nope".into())));
        let looping = |_: &str| Some("@self".to_owned());
        assert!(matches!(expand("@self", &looping), Err(NodeSetError::Recursive(_))));
    }

    #[test]
    fn bad_sets_are_errors_not_panics_or_huge_allocations() {
        assert!(matches!(expand("h[1-", &no_groups), Err(NodeSetError::Unclosed(_))));
        assert!(matches!(expand("h]", &no_groups), Err(NodeSetError::Unopened(_))));
        assert!(matches!(expand("h[a-b]", &no_groups), Err(NodeSetError::BadRange(_))));
        assert!(matches!(expand("h[5-1]", &no_groups), Err(NodeSetError::Backwards(_))));
        assert_eq!(expand("h[1-99999999999]", &no_groups), Err(NodeSetError::TooLarge));
        assert_eq!(expand("a[1-1000]b[1-1000]", &no_groups), Err(NodeSetError::TooLarge));
        assert!(matches!(expand("h;rm -rf /", &no_groups), Err(NodeSetError::BadName(_))));
        assert_eq!(expand(" , ", &no_groups), Err(NodeSetError::Empty));
    }

    #[test]
    fn folding_inverts_expansion() {
        let hosts = expand("h[01-50]", &no_groups).expect("expands");
        assert_eq!(fold(&hosts), "h[01-50]");
        assert_eq!(fold(&["web3", "web1", "web2", "db", "web7"]), "db,web[1-3,7]");
        assert_eq!(fold(&["n1.rack2", "n1.rack3"]), "n1.rack[2-3]");
        assert_eq!(fold(&["h09", "h10", "h7"]), "h7,h[09-10]");
        assert_eq!(fold(&["solo9"]), "solo9");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn fold_then_expand_gives_back_the_same_hosts(numbers in prop::collection::btree_set(0u64..500, 1..40), padded in any::<bool>()) {
                let hosts: Vec<String> = numbers.iter().map(|n| if padded { format!("h{n:03}") } else { format!("h{n}") }).collect();
                let folded = fold(&hosts);
                let mut back = expand(&folded, &no_groups).expect("folded sets expand");
                back.sort();
                let mut want = hosts.clone();
                want.sort();
                prop_assert_eq!(back, want);
            }

            #[test]
            fn any_text_expands_or_errors_without_panicking(text in ".{0,60}") {
                let _ = expand(&text, &no_groups);
            }
        }
    }
}
