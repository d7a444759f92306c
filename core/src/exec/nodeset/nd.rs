//! Node names with several numbers (`web1-eth0`, `r1n1`): a list of vectors of axes, each vector
//! standing for the product of its axes, folded the way ClusterShell 1.9's `RangeSetND` folds them
//! (one varying axis merged at once; otherwise expanded and merged pairwise). ClusterShell's
//! printed form depends on when it folds, so this follows its moments exactly. It never expands
//! or splits beyond the bounds in [`super`], and gives up merging (still exact, less compact)
//! after a fixed amount of work.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use super::NodeSetError;
use super::rangeset::{RangeSet, text_of};

/// Pairwise comparisons one multivariate merge may make before it settles for what it has.
const MERGE_BUDGET: usize = 4_000_000;
/// Vectors a difference may split into before it is refused.
const MAX_VECTORS: usize = 100_000;

pub(super) type Vector = Vec<RangeSet>;

#[derive(Debug, Clone, Default)]
pub(super) struct RangeSetNd {
    veclist: Vec<Vector>,
    dirty: bool,
    multivar_hint: bool,
}

fn product(vector: &[RangeSet]) -> usize {
    vector.iter().fold(1usize, |n, rg| n.saturating_mul(rg.len()))
}

impl RangeSetNd {
    /// One vector, as a freshly parsed node pattern gives (not yet folded).
    pub(super) fn from_vector(vector: Vector) -> RangeSetNd {
        RangeSetNd { veclist: vec![vector], dirty: true, multivar_hint: false }
    }

    fn empty() -> RangeSetNd {
        RangeSetNd { veclist: Vec::new(), dirty: true, multivar_hint: false }
    }

    /// ClusterShell folds lazily, at the first read after a change; every reading method here
    /// calls this first, as its decorated methods do.
    pub(super) fn settle(&mut self) {
        if self.dirty {
            self.fold();
        }
    }

    /// A copy as ClusterShell's `copy()` makes it: folded first, with a fresh merge hint.
    pub(super) fn copy(&mut self) -> RangeSetNd {
        self.settle();
        RangeSetNd { veclist: self.veclist.clone(), dirty: self.dirty, multivar_hint: false }
    }

    /// Whether any vector is held (ClusterShell's truth value; no folding).
    pub(super) fn has_vectors(&self) -> bool {
        !self.veclist.is_empty()
    }

    /// An upper bound on the node count without folding (vectors may still overlap).
    pub(super) fn raw_len(&self) -> usize {
        self.veclist.iter().fold(0usize, |n, v| n.saturating_add(product(v)))
    }

    pub(super) fn len(&mut self) -> usize {
        self.settle();
        self.raw_len()
    }

    /// The vectors as they are, unfolded (what ClusterShell's set operations read of the other
    /// operand).
    pub(super) fn raw_vectors(&self) -> &[Vector] {
        &self.veclist
    }

    pub(super) fn update(&mut self, vectors: &[Vector]) {
        self.veclist.extend(vectors.iter().cloned());
        self.dirty = true;
        if !self.multivar_hint {
            self.fold_univariate();
        }
    }

    fn set_veclist(&mut self, veclist: Vec<Vector>) {
        self.veclist = veclist;
        self.dirty = true;
    }

    fn fold(&mut self) {
        if self.veclist.len() > 1 {
            if !self.fold_univariate() {
                self.fold_multivariate();
            }
        } else {
            self.dirty = false;
        }
    }

    /// When all vectors agree on every axis but one, that axis is merged into the first vector.
    fn fold_univariate(&mut self) -> bool {
        let dim = self.veclist.first().map_or(0, Vec::len);
        let mut vardim = 0;
        let mut dimdiff = 0;
        if dim > 1 {
            for axis in 0..dim {
                let first = &self.veclist[0][axis];
                if self.veclist.iter().any(|v| &v[axis] != first) {
                    dimdiff += 1;
                    if dimdiff > 1 {
                        break;
                    }
                    vardim = axis;
                }
            }
        }
        let univariate = dim == 1 || dimdiff == 1;
        if univariate {
            let rest: Vec<Vector> = self.veclist.drain(1..).collect();
            for vector in &rest {
                self.veclist[0][vardim].extend(&vector[vardim]);
            }
            self.dirty = false;
        }
        self.multivar_hint = !univariate;
        univariate
    }

    fn fold_multivariate(&mut self) {
        let mut points: BTreeSet<Vec<super::rangeset::Idx>> = BTreeSet::new();
        for vector in &self.veclist {
            for_each_point(vector, &mut |point| {
                points.insert(point.to_vec());
            });
        }
        let mut items: Vec<Vector> =
            points.into_iter().map(|p| p.into_iter().map(RangeSet::one).collect()).collect();
        merge(&mut items);
        self.veclist = items;
        self.dirty = false;
    }

    pub(super) fn difference_update(&mut self, other: &[Vector]) -> Result<(), NodeSetError> {
        let mut result: Vec<Vector> = Vec::new();
        for vector in &self.veclist {
            let mut process: Vec<Vector> = vec![vector.clone()];
            for other_vector in other {
                let mut next: Vec<Vector> = Vec::new();
                for piece in process.drain(..) {
                    let mut pieces: Vec<Vector> = Vec::new();
                    for (axis, (rg1, rg2)) in piece.iter().zip(other_vector).enumerate() {
                        if rg1.is_subset(rg2) {
                            continue;
                        }
                        if rg1.is_disjoint(rg2) {
                            pieces = vec![piece.clone()];
                            break;
                        }
                        let mut split = piece.clone();
                        split[axis] = rg1.difference(rg2);
                        pieces.push(split);
                    }
                    next.extend(pieces);
                    if next.len() + result.len() > MAX_VECTORS {
                        return Err(NodeSetError::TooComplex);
                    }
                }
                process = next;
            }
            result.extend(process);
        }
        self.set_veclist(result);
        Ok(())
    }

    pub(super) fn intersection_update(&mut self, other: &[Vector]) -> Result<(), NodeSetError> {
        if self.veclist.len().saturating_mul(other.len()) > MAX_VECTORS * 10 {
            return Err(NodeSetError::TooComplex);
        }
        let mut tmp = RangeSetNd::empty();
        for vector in &self.veclist {
            for other_vector in other {
                let common: Vector =
                    vector.iter().zip(other_vector).map(|(a, b)| a.intersection(b)).collect();
                if common.iter().all(|rg| !rg.is_empty()) {
                    tmp.update(&[common]);
                }
            }
        }
        tmp.settle();
        self.set_veclist(tmp.veclist);
        Ok(())
    }

    /// ClusterShell computes `other - self` (folding `other` in place), removes `other` from
    /// `self`, then adds the first result.
    pub(super) fn symmetric_difference_update(&mut self, other: &mut RangeSetNd) -> Result<(), NodeSetError> {
        let mut only_other = other.copy();
        only_other.difference_update(&self.veclist)?;
        self.difference_update(&other.veclist)?;
        self.update(&only_other.veclist);
        Ok(())
    }
}

/// Calls `f` with every point of the product of `vector`'s axes, first axis slowest.
pub(super) fn for_each_point(vector: &[RangeSet], f: &mut dyn FnMut(&[super::rangeset::Idx])) {
    fn walk(
        axes: &[RangeSet],
        prefix: &mut Vec<super::rangeset::Idx>,
        f: &mut dyn FnMut(&[super::rangeset::Idx]),
    ) {
        match axes.split_first() {
            None => f(prefix),
            Some((axis, rest)) => {
                for idx in axis.iter() {
                    prefix.push(idx.clone());
                    walk(rest, prefix, f);
                    prefix.pop();
                }
            }
        }
    }
    walk(vector, &mut Vec::with_capacity(vector.len()), f);
}

/// ClusterShell's ordering of vectors before each merge pass: larger products first, then per
/// axis larger sets first, then by first and last index as text.
fn compare_vectors(a: &Vector, b: &Vector) -> Ordering {
    product(b).cmp(&product(a)).then_with(|| {
        for (x, y) in a.iter().zip(b) {
            let ord = y
                .len()
                .cmp(&x.len())
                .then_with(|| text_of(x.first()).cmp(text_of(y.first())))
                .then_with(|| text_of(x.last()).cmp(text_of(y.last())));
            if ord != Ordering::Equal {
                return ord;
            }
        }
        Ordering::Equal
    })
}

/// How two vectors combine: `Some((axis, how))` when they differ on at most one axis in a way
/// that merges into one vector (None as axis: equal).
enum Merge {
    No,
    Same,
    Join(usize),
    KeepLarger(usize),
}

fn how_to_merge(a: &Vector, b: &Vector) -> Merge {
    let mut found = Merge::Same;
    for (axis, (rg1, rg2)) in a.iter().zip(b).enumerate() {
        if rg1 == rg2 {
            continue;
        }
        let this = if rg1.is_disjoint(rg2) {
            Merge::Join(axis)
        } else if rg1.is_subset(rg2) || rg2.is_subset(rg1) {
            Merge::KeepLarger(axis)
        } else {
            return Merge::No;
        };
        if !matches!(found, Merge::Same) {
            return Merge::No;
        }
        found = this;
    }
    found
}

/// ClusterShell's pairwise merge passes: an easy pass compares each vector with those that follow
/// it until one does not merge; when a pass changes nothing, full passes compare every pair. The
/// list is a linked list so removals cost nothing.
fn merge(items: &mut Vec<Vector>) {
    let mut budget = MERGE_BUDGET;
    let mut full = false;
    let mut changed = true;
    while changed {
        changed = false;
        items.sort_by(compare_vectors);
        let n = items.len();
        let mut alive = vec![true; n];
        let mut next: Vec<usize> = (1..=n).collect();
        let mut i = 0;
        'outer: while i < n {
            let mut prev = i;
            let mut j = next[i];
            while j < n {
                if budget == 0 {
                    break 'outer;
                }
                budget -= 1;
                let (head, tail) = items.split_at_mut(j);
                let (a, b) = (&mut head[i], &mut tail[0]);
                let merged = match how_to_merge(a, b) {
                    Merge::No => false,
                    Merge::Same => true,
                    Merge::Join(axis) => {
                        let taken = std::mem::take(&mut b[axis]);
                        if taken.len() > a[axis].len() {
                            let mine = std::mem::replace(&mut a[axis], taken);
                            a[axis].extend(&mine);
                        } else {
                            a[axis].extend(&taken);
                        }
                        true
                    }
                    Merge::KeepLarger(axis) => {
                        if b[axis].len() > a[axis].len() {
                            a[axis] = std::mem::take(&mut b[axis]);
                        }
                        true
                    }
                };
                if merged {
                    changed = true;
                    alive[j] = false;
                    next[prev] = next[j];
                    j = next[j];
                } else if !full {
                    break;
                } else {
                    prev = j;
                    j = next[j];
                }
            }
            i = next[i];
        }
        let mut k = 0;
        items.retain(|_| {
            k += 1;
            alive[k - 1]
        });
        if budget == 0 {
            return;
        }
        if !changed && !full {
            changed = true;
            full = true;
        }
    }
}
