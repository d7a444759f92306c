//! The master's history: each child sync as one point (totals only), held in memory up to a
//! bound with the oldest dropped first, taken back from the driver's store at start, and read
//! by time range for the history request. Owns the series; what a point holds is the wire's.

use super::PolicyServer;
use crate::policy::report::Aggregate;
use crate::policy::wire::{HistoryPoint, MAX_HISTORY_REPLY};
use crate::time::WallClock;

/// The most history points the master holds in memory; the oldest go first. At one sync a
/// minute from each of 14 locals, about a day; the driver's store keeps everything.
pub const MAX_HISTORY_POINTS: usize = 20_000;

impl PolicyServer {
    /// Takes back the history the driver kept (oldest first), as points appended in that order;
    /// the newest [`MAX_HISTORY_POINTS`] are kept. Every point is kept, a child since removed from
    /// the tier included: it is what the master received then. Only the master keeps history.
    pub fn restore_history(&mut self, history: impl IntoIterator<Item = (String, WallClock, Aggregate)>) {
        if self.setup.parent.is_some() {
            return;
        }
        for (child, at, aggregate) in history {
            self.record_history(HistoryPoint::of(&child, at, &aggregate));
        }
    }

    /// The history held now, oldest first.
    pub fn history(&self) -> impl Iterator<Item = &HistoryPoint> {
        self.history.iter()
    }

    /// Appends one point, dropping the oldest past the bound.
    pub(super) fn record_history(&mut self, point: HistoryPoint) {
        if self.history.len() >= MAX_HISTORY_POINTS {
            self.history.pop_front();
        }
        self.history.push_back(point);
    }

    /// The held points taken between `since` and `until` (inclusive), in time order, the newest
    /// [`MAX_HISTORY_REPLY`] when more match. Sorted by time, not arrival: the wall clock may
    /// have stepped back between two syncs (the sort is stable, so ties keep arrival order).
    pub(super) fn history_between(
        &self,
        since: Option<WallClock>,
        until: Option<WallClock>,
    ) -> Vec<HistoryPoint> {
        let mut points: Vec<&HistoryPoint> = self
            .history
            .iter()
            .filter(|p| since.is_none_or(|s| p.at >= s) && until.is_none_or(|u| p.at <= u))
            .collect();
        points.sort_by_key(|p| p.at);
        let skip = points.len().saturating_sub(MAX_HISTORY_REPLY);
        points.into_iter().skip(skip).cloned().collect()
    }
}
