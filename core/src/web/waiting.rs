//! What a request waits for while the console asks someone else: the node's store for audit
//! rows, or the policy tier's master for figures. Owns only the shape of that state; the pages
//! that fill it and answer from it decide everything.

use super::http::RequestId;
use crate::exec::audit_view::{AuditFilter, StoredEntry};
use crate::policy::wire::GlobalStatus;
use crate::time::WallClock;

/// A listing or verify waiting on the store.
#[derive(Debug)]
pub(crate) struct AuditAsk {
    pub(super) request: RequestId,
    /// The page's viewer and its CSRF token; `None` for the JSON API.
    pub(super) page: Option<(String, String)>,
    pub(super) filter: AuditFilter,
    pub(super) limit: usize,
    pub(super) found: Vec<StoredEntry>,
    pub(super) scanned: u64,
    pub(super) verify: bool,
}

/// What a request waits for from the master.
#[derive(Debug)]
pub(crate) struct PolicyAsk {
    pub(super) request: RequestId,
    pub(super) want: Want,
}

#[derive(Debug)]
pub(super) enum Want {
    /// The page: the status first, then the history since `since`.
    Page {
        principal: String,
        csrf: String,
        current: bool,
        since: WallClock,
        status: Option<Box<GlobalStatus>>,
    },
    Status,
    History,
}
