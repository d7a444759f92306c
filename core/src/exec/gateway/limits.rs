//! The ceilings a run is held to: the principal's fan-out and T1+T2 (a client asking for more
//! gets the ceiling, and is told), and the runs at once, per principal and gateway-wide; and,
//! before any of it, the variables the run passes, against the principal's ACL (each daemon
//! checks them again: this only makes the refusal early and whole). Owns the arithmetic and the
//! refusal text; it never starts or refuses a run itself (the gateway does, with what this
//! answers).

use super::super::acl::Limits;
use super::super::task::Task;
use super::{Ceiling, ExecCommand, Gateway, MAX_FANOUT};

impl Gateway {
    /// Whether `principal` may start a run of `task`: every variable it passes is one its ACL
    /// names, and another run fits its own ceiling and the gateway's.
    pub(super) fn admit(&self, principal: &str, task: &Task) -> Result<(), String> {
        if let Err(denied) = self.directory.acl.check_env(principal, task.env()) {
            return Err(format!("ACL: {denied}"));
        }
        let limit = self.directory.acl.limits(principal).max_runs;
        let own = self.credentials.values().filter(|g| g.credential.body.principal == principal).count();
        if own >= usize::try_from(limit).unwrap_or(usize::MAX) {
            return Err(format!(
                "principal `{principal}` already has {own} runs in progress, its limit of {limit}; wait for one to finish"
            ));
        }
        let all = self.directory.max_runs;
        if self.runs.len() >= usize::try_from(all).unwrap_or(usize::MAX) {
            return Err(format!("the gateway is running its limit of {all} runs at once; retry shortly"));
        }
        Ok(())
    }
}

/// What a run is granted within the principal's ceilings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Granted {
    pub(super) fanout: u32,
    pub(super) t1_ms: u64,
    pub(super) t2_ms: u64,
}

/// The request held to `limits`: fan-out at most `max_fanout` (and [`MAX_FANOUT`]); T1+T2 at
/// most `max_time_ms`, T1 kept first (it is when the alarms begin) and T2 shortened.
pub(super) fn grant_within(command: &ExecCommand, limits: Limits) -> (Granted, Vec<Ceiling>) {
    let mut lowered = Vec::new();
    let fanout_ceiling = limits.max_fanout.min(u32::try_from(MAX_FANOUT).unwrap_or(u32::MAX));
    let fanout = if command.fanout > fanout_ceiling {
        lowered.push(Ceiling::Fanout { asked: command.fanout, granted: fanout_ceiling });
        fanout_ceiling
    } else {
        command.fanout
    };
    let asked = command.t1_ms.saturating_add(command.t2_ms);
    let (t1_ms, t2_ms) = if asked > limits.max_time_ms {
        let t1 = command.t1_ms.min(limits.max_time_ms);
        let t2 = limits.max_time_ms - t1;
        lowered.push(Ceiling::Time { asked_ms: asked, granted_ms: limits.max_time_ms });
        (t1, t2)
    } else {
        (command.t1_ms, command.t2_ms)
    };
    (Granted { fanout, t1_ms, t2_ms }, lowered)
}

pub(super) fn lowered_text(ceilings: &[Ceiling]) -> String {
    ceilings.iter().map(Ceiling::to_string).collect::<Vec<_>>().join("; ")
}
