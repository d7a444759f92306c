//! One axis of a node set: the indexes that fill one `[...]`, kept as digit strings so `01` and
//! `1` stay different nodes (ClusterShell 1.9's mixed padding), parsed from `1-10/2,003` and shown
//! back in ClusterShell's folded form. It never builds a range larger than the budget it is given.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::fmt;

use super::NodeSetError;

/// More digits than this in one index is refused rather than held in a wider integer.
pub(super) const MAX_DIGITS: usize = 30;

/// One index as written (`007`), ordered the way ClusterShell sorts them: shorter strings first,
/// then by text, which for digit strings of one length is numeric order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Idx {
    text: String,
    value: u128,
}

impl Idx {
    /// `digits` must be 1..=MAX_DIGITS ASCII digits; callers check.
    fn new(text: String, value: u128) -> Idx {
        Idx { text, value }
    }

    pub(super) fn parse(digits: &str) -> Result<Idx, NodeSetError> {
        if digits.is_empty() || digits.len() > MAX_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(NodeSetError::BadRange(digits.to_owned(), "an index is 1 to 30 digits"));
        }
        let value = digits.parse().map_err(|_| NodeSetError::BadRange(digits.to_owned(), "bad index"))?;
        Ok(Idx::new(digits.to_owned(), value))
    }

    pub(super) fn as_str(&self) -> &str {
        &self.text
    }

    /// Written with leading zeros (`07`, `00`), so its width is part of its identity.
    fn padded(&self) -> bool {
        self.text.len() > 1 && self.text.starts_with('0')
    }
}

impl Ord for Idx {
    fn cmp(&self, other: &Self) -> Ordering {
        self.text.len().cmp(&other.text.len()).then_with(|| self.text.cmp(&other.text))
    }
}

impl PartialOrd for Idx {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A set of indexes on one axis.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct RangeSet {
    items: BTreeSet<Idx>,
}

fn format_padded(value: u128, pad: usize) -> String {
    format!("{value:0pad$}")
}

impl RangeSet {
    pub(super) fn one(idx: Idx) -> RangeSet {
        RangeSet { items: BTreeSet::from([idx]) }
    }

    /// Parses `1-10/2,003, 7` as ClusterShell's `RangeSet` does; `budget` is how many indexes it
    /// may still add, checked before any range is built.
    pub(super) fn parse(spec: &str, budget: usize) -> Result<RangeSet, NodeSetError> {
        let mut set = RangeSet::default();
        for sub in spec.split(',') {
            let sub = sub.trim();
            let bad = |why: &'static str| NodeSetError::BadRange(sub.to_owned(), why);
            if sub.is_empty() {
                return Err(bad("empty range"));
            }
            let (base, step) = match sub.split_once('/') {
                None => (sub, 1u128),
                Some((base, step)) => {
                    let step = step.trim();
                    if step.is_empty() || step.len() > MAX_DIGITS || !step.bytes().all(|b| b.is_ascii_digit())
                    {
                        return Err(NodeSetError::BadStep(sub.to_owned()));
                    }
                    (base, step.parse::<u128>().map_err(|_| NodeSetError::BadStep(sub.to_owned()))?)
                }
            };
            let (begin, end) = match base.split_once('-') {
                None if step != 1 => return Err(NodeSetError::BadStep(sub.to_owned())),
                None => (base.trim(), base.trim()),
                Some((begin, end)) => (begin.trim(), end.trim()),
            };
            if begin.is_empty() || end.contains('-') {
                return Err(bad("negative indexes are not supported"));
            }
            let (first, last) = (Idx::parse(begin)?, Idx::parse(end)?);
            // ClusterShell's rule: a padded bound fixes the width, so both bounds must have it.
            let pad = if first.padded() { begin.len() } else { 0 };
            if (pad > 0 || (last.padded() && last.value != 0)) && begin.len() != end.len() {
                return Err(NodeSetError::PaddingMismatch(sub.to_owned()));
            }
            if step == 0 {
                return Err(NodeSetError::BadStep(sub.to_owned()));
            }
            if first.value > last.value {
                return Err(NodeSetError::Backwards(sub.to_owned()));
            }
            let count = (last.value - first.value) / step + 1;
            if count > (budget.saturating_sub(set.len())) as u128 {
                return Err(NodeSetError::TooLarge);
            }
            let mut value = first.value;
            while value <= last.value {
                set.items.insert(Idx::new(format_padded(value, pad), value));
                value = match value.checked_add(step) {
                    Some(v) => v,
                    None => break,
                };
            }
        }
        Ok(set)
    }

    pub(super) fn len(&self) -> usize {
        self.items.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Idx> {
        self.items.iter()
    }

    pub(super) fn first(&self) -> Option<&Idx> {
        self.items.first()
    }

    pub(super) fn last(&self) -> Option<&Idx> {
        self.items.last()
    }

    pub(super) fn extend(&mut self, other: &RangeSet) {
        self.items.extend(other.items.iter().cloned());
    }

    pub(super) fn intersection(&self, other: &RangeSet) -> RangeSet {
        RangeSet { items: self.items.intersection(&other.items).cloned().collect() }
    }

    pub(super) fn difference(&self, other: &RangeSet) -> RangeSet {
        RangeSet { items: self.items.difference(&other.items).cloned().collect() }
    }

    pub(super) fn symmetric_difference(&self, other: &RangeSet) -> RangeSet {
        RangeSet { items: self.items.symmetric_difference(&other.items).cloned().collect() }
    }

    pub(super) fn is_disjoint(&self, other: &RangeSet) -> bool {
        self.items.is_disjoint(&other.items)
    }

    pub(super) fn is_subset(&self, other: &RangeSet) -> bool {
        self.items.is_subset(&other.items)
    }

    /// The runs ClusterShell prints without autostep: consecutive indexes of one padding state,
    /// each as (first, last, zero-pad width or 0).
    fn runs(&self) -> Vec<(u128, u128, usize)> {
        let mut out = Vec::new();
        let mut current: Option<(u128, u128, bool, usize)> = None;
        for idx in &self.items {
            let padded = idx.padded();
            let width = idx.text.len();
            if let Some((start, last, run_padded, run_width)) = current {
                // A padded run takes any index of its width next (`09`, `10`); an unpadded run
                // ends at the first padded index, which sorts after it.
                let same_padding = if run_padded { width == run_width } else { !padded };
                if same_padding && idx.value == last + 1 {
                    current = Some((start, idx.value, run_padded, run_width));
                    continue;
                }
                out.push((start, last, if run_padded { run_width } else { 0 }));
            }
            current = Some((idx.value, idx.value, padded, width));
        }
        if let Some((start, last, run_padded, run_width)) = current {
            out.push((start, last, if run_padded { run_width } else { 0 }));
        }
        out
    }

    /// Each run as ClusterShell's `contiguous()` prints it: `08-10` or `7`.
    pub(super) fn run_strings(&self) -> Vec<String> {
        self.runs()
            .into_iter()
            .map(|(a, b, pad)| {
                if a == b {
                    format_padded(a, pad)
                } else {
                    format!("{}-{}", format_padded(a, pad), format_padded(b, pad))
                }
            })
            .collect()
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.run_strings().join(","))
    }
}

/// ClusterShell's ordering key for a vector of axes compares first and last indexes as plain
/// text (`10` before `9`); this gives that text.
pub(super) fn text_of(idx: Option<&Idx>) -> &str {
    idx.map_or("", Idx::as_str)
}
