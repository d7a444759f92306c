//! Reading node set text: ClusterShell's extended pattern (operands joined left to right by `,`
//! union, `!` difference, `&` intersection, `^` symmetric difference), each operand a name with
//! bracket ranges (`web[01-20/2]-eth[0-1]`) or an `@group` resolved through the caller. The
//! scanner follows ClusterShell's `ParsingEngine` step by step, so its odd corners (digits glued
//! to a bracket, `h1[2-3]` = h12,h13) agree. It never lets one operand exceed [`MAX_HOSTS`],
//! nests groups at most [`MAX_GROUP_DEPTH`] deep, and bounds the text read through groups.

use super::nd::RangeSetNd;
use super::rangeset::{Idx, RangeSet};
use super::{Entry, MAX_HOSTS, NodeSet, NodeSetError};

/// How deep `@a` may refer to `@b` referring to `@c`...
pub(super) const MAX_GROUP_DEPTH: usize = 8;
/// Bytes of node set text one evaluation may read, counting every group's text each time it is
/// used, so `@g[1-100000]` or nested doubling groups end in an error, not a long wait.
const MAX_TEXT_READ: usize = 4 * 1024 * 1024;
/// The running union may hold this many nodes (counted before folding, so overlaps count twice)
/// before it is refused; the exact count is checked against [`MAX_HOSTS`] at the end.
const MAX_RAW_NODES: usize = 2 * MAX_HOSTS;

const OPERATORS: [char; 4] = [',', '!', '&', '^'];

/// One operand as scanned: the operator joining it to what came before, its pattern (`%s` for
/// each number) and one range set per `%s`.
struct Operand {
    op: char,
    pattern: String,
    axes: Vec<RangeSet>,
}

pub(super) struct Parser<'a> {
    groups: &'a dyn Fn(&str) -> Option<String>,
    text_left: usize,
}

fn next_op(text: &str) -> Option<(usize, char)> {
    text.char_indices().find(|(_, c)| OPERATORS.contains(c))
}

fn missing_operand(op: char, near: &str) -> NodeSetError {
    NodeSetError::MissingOperand { op, near: near.to_owned() }
}

/// A name without brackets, split as ClusterShell's `(\D*)(\d*)` does: each run of digits becomes
/// a one-index axis and a `%s` in the pattern.
pub(super) fn scan_single(text: &str) -> Result<(String, Vec<RangeSet>), NodeSetError> {
    if text.is_empty() {
        return Err(NodeSetError::Empty);
    }
    let mut pattern = String::new();
    let mut axes = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let digits_at = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        pattern.push_str(&rest[..digits_at]);
        rest = &rest[digits_at..];
        let digits_end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits_end > 0 {
            pattern.push_str("%s");
            axes.push(RangeSet::one(Idx::parse(&rest[..digits_end])?));
        }
        rest = &rest[digits_end..];
    }
    Ok((pattern, axes))
}

/// `n1[2-3]` means n12,n13: digits just before a bracket move into each bound of its ranges.
fn amend_leading_digits(outer: &str, inner: &str, budget: usize) -> Result<(String, String), NodeSetError> {
    let stripped = outer.trim_end_matches(|c: char| c.is_ascii_digit());
    if stripped.len() == outer.len() {
        return Ok((outer.to_owned(), inner.to_owned()));
    }
    let digits = &outer[stripped.len()..];
    let runs = RangeSet::parse(inner, budget)?.run_strings();
    let inner = runs
        .iter()
        .map(|run| run.split('-').map(|bound| format!("{digits}{bound}")).collect::<Vec<_>>().join("-"))
        .collect::<Vec<_>>()
        .join(",");
    Ok((stripped.to_owned(), inner))
}

/// `n[1-3]0` means n10,n20,n30: digits just after a bracket join each bound, and a range steps
/// by the power of ten they shift it.
fn amend_trailing_digits(outer: &str, inner: &str) -> Result<(String, String), NodeSetError> {
    let stripped = outer.trim_start_matches(|c: char| c.is_ascii_digit());
    if stripped.len() == outer.len() {
        return Ok((outer.to_owned(), inner.to_owned()));
    }
    if inner.contains('/') {
        return Err(NodeSetError::StepThenDigits(outer.to_owned()));
    }
    let digits = &outer[..outer.len() - stripped.len()];
    // Checked before the digits join the bounds: `[-19]1` must not become `[1-191/10]`.
    if let Some(elem) = inner.split(',').find(|elem| elem.split('-').any(|bound| bound.trim().is_empty())) {
        return Err(NodeSetError::BadRange(elem.trim().to_owned(), "a range needs both bounds"));
    }
    let inner = inner
        .split(',')
        .map(|elem| {
            let shifted =
                elem.split('-').map(|bound| format!("{bound}{digits}")).collect::<Vec<_>>().join("-");
            if shifted.contains('-') { format!("{shifted}/1{}", "0".repeat(digits.len())) } else { shifted }
        })
        .collect::<Vec<_>>()
        .join(",");
    Ok((stripped.to_owned(), inner))
}

/// Adds one bracket's axis, keeping the operand's product within [`MAX_HOSTS`] before building.
fn push_axis(axes: &mut Vec<RangeSet>, spec: &str) -> Result<(), NodeSetError> {
    let so_far = axes.iter().fold(1usize, |n, a| n.saturating_mul(a.len().max(1)));
    let axis = RangeSet::parse(spec, MAX_HOSTS / so_far.max(1))?;
    if so_far.saturating_mul(axis.len()) > MAX_HOSTS {
        return Err(NodeSetError::TooLarge);
    }
    axes.push(axis);
    Ok(())
}

/// ClusterShell's `_scan_string`: the operands of `text` in order.
fn scan(text: &str) -> Result<Vec<Operand>, NodeSetError> {
    let mut out = Vec::new();
    let mut next_op_code = ',';
    let mut rest: Option<String> = Some(text.to_owned());
    while let Some(current) = rest.take().filter(|s| !s.is_empty()) {
        let current = current.trim_start();
        let op = next_op_code;
        let mut axes: Vec<RangeSet> = Vec::new();
        let mut found = next_op(current);
        let mut bracket = current.find('[');
        let before_op = |bracket: Option<usize>, found: Option<(usize, char)>| match (bracket, found) {
            (Some(b), Some((o, _))) => o > b,
            (Some(_), None) => true,
            (None, _) => false,
        };
        let pattern = if before_op(bracket, found) {
            let mut pattern = String::new();
            let mut sfx = current.to_owned();
            while before_op(bracket, found) {
                let (pfx, after) =
                    sfx.split_once('[').map(|(a, b)| (a.to_owned(), b.to_owned())).unwrap_or_default();
                let Some((rng, after)) = after.split_once(']') else {
                    return Err(NodeSetError::Unclosed(current.to_owned()));
                };
                let (mut rng, mut after) = (rng.to_owned(), after.to_owned());
                if pfx.contains(']') {
                    return Err(NodeSetError::Unopened(pfx));
                }
                if !after.is_empty() {
                    let close = after.find(']');
                    let open = after.find('[');
                    if let Some(close) = close {
                        if open.is_none_or(|open| close < open) {
                            return Err(NodeSetError::Unopened(after));
                        }
                    }
                    (after, rng) = amend_trailing_digits(&after, &rng)?;
                }
                let mut pfx = pfx;
                if !pfx.is_empty() {
                    (pfx, rng) = amend_leading_digits(&pfx, &rng, MAX_HOSTS)?;
                    if !pfx.is_empty() {
                        let (scanned, prefix_axes) = scan_single(&pfx)?;
                        pfx = scanned;
                        axes.extend(prefix_axes);
                    }
                }
                bracket = after.find('[');
                found = next_op(&after);
                if after.starts_with('[') {
                    return Err(NodeSetError::Reopened(after));
                }
                pattern.push_str(&pfx);
                pattern.push_str("%s");
                push_axis(&mut axes, &rng)?;
                sfx = after;
            }
            let mut tail = sfx.as_str();
            if let Some((at, code)) = next_op(tail) {
                let remainder = &tail[at + code.len_utf8()..];
                if remainder.is_empty() {
                    return Err(missing_operand(code, current));
                }
                rest = Some(remainder.to_owned());
                next_op_code = code;
                tail = &tail[..at];
            }
            let tail = tail.trim_end();
            if !tail.is_empty() {
                let (scanned, tail_axes) = scan_single(tail)?;
                pattern.push_str(&scanned);
                axes.extend(tail_axes);
            }
            pattern
        } else {
            let node = match found {
                None => current,
                Some((at, code)) => {
                    let (node, remainder) = (&current[..at], &current[at + code.len_utf8()..]);
                    if node.is_empty() || remainder.is_empty() {
                        return Err(missing_operand(code, if node.is_empty() { remainder } else { node }));
                    }
                    rest = Some(remainder.to_owned());
                    next_op_code = code;
                    node
                }
            };
            if node.contains(']') {
                return Err(NodeSetError::Unopened(node.to_owned()));
            }
            let (pattern, single_axes) = scan_single(node.trim_end())?;
            axes = single_axes;
            pattern
        };
        check_pattern(&pattern, current)?;
        out.push(Operand { op, pattern, axes });
    }
    Ok(out)
}

/// Names are letters, digits, `.`, `-` and `_` (and a leading `@` for a group): a node set ends
/// up in commands and file names, so nothing else is let through.
fn check_pattern(pattern: &str, near: &str) -> Result<(), NodeSetError> {
    let body = pattern.strip_prefix('@').unwrap_or(pattern).replace("%s", "0");
    if body.is_empty() || !body.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')) {
        return Err(NodeSetError::BadName(near.trim().to_owned()));
    }
    Ok(())
}

fn entry_of(axes: Vec<RangeSet>) -> Entry {
    match axes.len() {
        0 => Entry::Plain,
        1 => Entry::One(axes.into_iter().next().unwrap_or_default()),
        _ => Entry::Nd(RangeSetNd::from_vector(axes)),
    }
}

impl<'a> Parser<'a> {
    pub(super) fn new(groups: &'a dyn Fn(&str) -> Option<String>) -> Parser<'a> {
        Parser { groups, text_left: MAX_TEXT_READ }
    }

    /// ClusterShell's `parse_string`: evaluates `text` left to right into a node set.
    pub(super) fn parse_string(&mut self, text: &str, depth: usize) -> Result<NodeSet, NodeSetError> {
        self.text_left = self.text_left.checked_sub(text.len()).ok_or(NodeSetError::TooComplex)?;
        // `%s` marks a number inside a pattern, so a literal `%` could forge one.
        if text.contains('%') {
            return Err(NodeSetError::BadName(text.trim().to_owned()));
        }
        let mut nodeset = NodeSet::default();
        for operand in scan(text.trim())? {
            let mut right = if let Some(group) = operand.pattern.strip_prefix('@') {
                let mut names = NodeSet::default();
                names.insert_new(group.to_owned(), entry_of(operand.axes));
                let mut members = NodeSet::default();
                for name in names.iter() {
                    let value =
                        (self.groups)(&name).ok_or_else(|| NodeSetError::UnknownGroup(name.clone()))?;
                    if depth >= MAX_GROUP_DEPTH {
                        return Err(NodeSetError::Recursive(name));
                    }
                    if !value.trim().is_empty() {
                        let mut sub = self.parse_string(&value, depth + 1)?;
                        members.update(&mut sub);
                    }
                }
                members
            } else {
                let mut single = NodeSet::default();
                single.insert_new(operand.pattern, entry_of(operand.axes));
                single
            };
            match operand.op {
                '!' => nodeset.difference_update(&right)?,
                '&' => nodeset.intersection_update(&right)?,
                '^' => nodeset.symmetric_difference_update(&mut right)?,
                _ => nodeset.update(&mut right),
            }
            if nodeset.raw_len() > MAX_RAW_NODES {
                return Err(NodeSetError::TooLarge);
            }
        }
        Ok(nodeset)
    }
}
