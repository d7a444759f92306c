//! The exec invariants a simulated host checks as it goes, from the records every host keeps:
//! the collector's chain verifies after each append, no command runs before its audit record is
//! durable here and in the chain, and nothing runs or is placed that the ACL denies. A failure
//! panics with what broke, so the run's seed replays it. It decides nothing for the node.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::PoisonError;

use cohort_core::child_env::ChildEnvironment;
use cohort_core::exec::acl::Acl;
use cohort_core::exec::audit::{AuditDecision, ChainEntry, verify_chain};
use cohort_core::exec::task::DataKind;
use cohort_core::node::Record;

use crate::observer::Observer;

/// What the invariants read of one simulated host: its name, the records every host kept, and
/// where a violation is reported.
pub(crate) struct Watched<'a> {
    pub name: &'a str,
    pub records: &'a std::sync::Mutex<Vec<(String, Record)>>,
    pub observer: &'a Observer,
}

/// Invariant: the collector's chain verifies after every append (the entry about to be made
/// durable, after every one this host made durable before it).
pub(crate) fn check_chain(ctx: &Watched<'_>, entry: &ChainEntry) {
    let records = ctx.records.lock().unwrap_or_else(PoisonError::into_inner);
    let chain: Vec<&ChainEntry> = records
        .iter()
        .filter(|(host, _)| *host == ctx.name)
        .filter_map(|(_, r)| match r {
            Record::AuditEntry { entry: e, .. } => Some(&**e),
            _ => None,
        })
        .chain([entry])
        .collect();
    if let Err(e) = verify_chain(chain) {
        ctx.observer
            .report_violation(turmoil::elapsed(), format!("{}: the audit chain broke: {e}", ctx.name));
    }
}

/// Invariant: no command runs before its audit record is durable at its host and in the
/// collector's chain. The `spawned`th command of this node needs that many `Run` records kept
/// here that the chain holds too (the same host and run, so another host's records cannot
/// stand in for them).
pub(crate) fn check_audited_before_spawn(ctx: &Watched<'_>, spawned: usize) {
    let records = ctx.records.lock().unwrap_or_else(PoisonError::into_inner);
    let runs = |r: &Record, here: bool| match r {
        Record::LocalAudit(a) if here && a.decision == AuditDecision::Run => Some((a.host.clone(), a.run_id)),
        Record::AuditEntry { entry: e, .. } if !here && e.record.decision == AuditDecision::Run => {
            Some((e.record.host.clone(), e.record.run_id))
        }
        _ => None,
    };
    let chained: BTreeSet<(String, [u8; 16])> = records.iter().filter_map(|(_, r)| runs(r, false)).collect();
    let local: Vec<(String, [u8; 16])> =
        records.iter().filter(|(host, _)| *host == ctx.name).filter_map(|(_, r)| runs(r, true)).collect();
    let both = local.iter().filter(|run| chained.contains(*run)).count();
    if both < spawned {
        let what = format!(
            "{}: command {spawned} spawned with {} run records kept here, {both} of them in the chain",
            ctx.name,
            local.len()
        );
        ctx.observer.report_violation(turmoil::elapsed(), what);
    }
}

/// Invariant: no file is placed that the ACL denies or the trail does not hold. A placed file has
/// a `Run` record kept here, and in the chain, whose data names that path with the digest of
/// exactly these bytes, as that owner, and whose host's ACL lets its principal write there.
pub(crate) fn check_placed(
    ctx: &Watched<'_>,
    acls: &BTreeMap<String, Acl>,
    path: &str,
    contents: &[u8],
    owner: &str,
) {
    use sha2::Digest;
    let sha256: [u8; 32] = sha2::Sha256::digest(contents).into();
    let records = ctx.records.lock().unwrap_or_else(PoisonError::into_inner);
    let chained = |run_id: [u8; 16]| {
        records.iter().any(|(_, r)| {
            matches!(r, Record::AuditEntry { entry: e, .. } if e.record.run_id == run_id && e.record.decision == AuditDecision::Run)
        })
    };
    let permitted = records.iter().filter(|(host, _)| *host == ctx.name).any(|(_, r)| {
        matches!(r, Record::LocalAudit(a)
            if a.decision == AuditDecision::Run
                && a.run_as == owner
                && a.data.iter().any(|d| d.sha256 == sha256
                    && matches!(&d.what, DataKind::File { path: p, .. } if p == path))
                && acls.get(&a.host).is_some_and(|acl| acl.check_copy(&a.principal, &a.run_as, path).is_ok())
                && chained(a.run_id))
    });
    if !permitted {
        let what =
            format!("{}: placed {path} as {owner}, which no permitted, chained run record covers", ctx.name);
        ctx.observer.report_violation(turmoil::elapsed(), what);
    }
}

/// Invariant: nothing runs that the ACL denies, nor with what it does not pass. A spawned command
/// has a reset environment and a `Run` record kept here with the same argv, run-as user and
/// passed variables, whose host's ACL grants its principal exactly that.
pub(crate) fn check_permitted(
    ctx: &Watched<'_>,
    acls: &BTreeMap<String, Acl>,
    argv: &[String],
    run_as: Option<&str>,
    env: &ChildEnvironment,
) {
    let records = ctx.records.lock().unwrap_or_else(PoisonError::into_inner);
    let passed: Vec<&str> = env.vars().iter().map(|(name, _)| name.as_str()).collect();
    let reset = matches!(env, ChildEnvironment::Reset { .. });
    let permitted = reset
        && records.iter().filter(|(host, _)| *host == ctx.name).any(|(_, r)| {
            let Record::LocalAudit(a) = r else { return false };
            let recorded: Vec<&str> = a
                .data
                .iter()
                .filter_map(|d| match &d.what {
                    DataKind::Env { name } => Some(name.as_str()),
                    _ => None,
                })
                .collect();
            a.decision == AuditDecision::Run
                && a.argv == argv
                && Some(a.run_as.as_str()) == run_as
                && recorded == passed
                && acls.get(&a.host).is_some_and(|acl| {
                    acl.check(&a.principal, &a.run_as, &a.argv).is_ok()
                        && acl.check_env(&a.principal, env.vars()).is_ok()
                })
        });
    if !permitted {
        let what =
            format!("{}: spawned {argv:?} as {run_as:?}, which no permitted run record covers", ctx.name);
        ctx.observer.report_violation(turmoil::elapsed(), what);
    }
}
