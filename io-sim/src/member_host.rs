//! One simulated member host: a UDP socket, the member machine, a simulated disk and a seeded
//! loss model. The loop drains outputs, then waits (biased) for a datagram or the next deadline,
//! feeding `handle(now, …)`. Time is turmoil's simulated clock, never the wall clock.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cohort_core::member::{ChangeRequest, Member, MemberInput, MemberOutput, MemberSettings};
use cohort_core::rng::{SeededRng, fork, seeded};
use cohort_core::signed::Signed;
use cohort_core::{Instant, Machine, NodeKeys};
use rand_core::RngCore;
use turmoil::net::UdpSocket;

use crate::observer::Observer;
use crate::storage::SimDisk;

pub const PORT: u16 = 7000;
/// A simulated fsync: a crash inside this window loses the write.
const SYNC_DELAY: Duration = Duration::from_millis(2);

/// An operator change this host takes at a set time.
#[derive(Debug, Clone)]
pub struct ScheduledChange {
    pub at: Duration,
    pub request: Signed<ChangeRequest>,
}

/// Everything a host needs, shared with the harness so it survives the host's crashes.
#[derive(Debug, Clone)]
pub struct HostContext {
    pub keys: NodeKeys,
    pub disk: SimDisk,
    pub observer: Observer,
    pub settings: MemberSettings,
    pub seed: u64,
    pub loss: f64,
    pub change: Arc<Mutex<Option<ScheduledChange>>>,
    /// Incremented at each boot so a restarted host draws fresh (still seeded) randomness.
    pub boots: Arc<Mutex<u64>>,
}

use crate::clock::now;

pub async fn run(ctx: HostContext) -> turmoil::Result {
    let boot = {
        let mut boots = ctx.boots.lock().unwrap_or_else(PoisonError::into_inner);
        *boots += 1;
        *boots
    };
    let mut rng = seeded(ctx.seed ^ boot.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut loss_rng: SeededRng = fork(&mut rng);
    let socket = UdpSocket::bind(("0.0.0.0", PORT)).await?;
    let record = ctx.disk.recover().ok_or("a simulated host started with an empty disk")?;
    let me = ctx.keys.node_id();
    ctx.observer.booted(me, &record, turmoil::elapsed());
    let mut member = Member::new(now().mono, ctx.keys.clone(), record, ctx.settings, fork(&mut rng));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while let Some(output) = member.poll_output() {
            match output {
                MemberOutput::Send { address, message, .. } => {
                    let Ok(bytes) = message.to_wire() else { continue };
                    ctx.observer.sent(me, bytes.len());
                    let roll = f64::from(loss_rng.next_u32()) / f64::from(u32::MAX);
                    if roll >= ctx.loss {
                        // A send to an unknown or unreachable host is like a lost datagram.
                        let _ = socket.send_to(&bytes, address.as_str()).await;
                    }
                }
                MemberOutput::Persist { token, record } => {
                    ctx.disk.write(*record);
                    tokio::time::sleep(SYNC_DELAY).await;
                    ctx.disk.sync();
                    member.handle(now(), MemberInput::Persisted(token));
                }
                MemberOutput::Installed { .. } => {
                    ctx.observer.installed(me, member.active(), turmoil::elapsed());
                }
                MemberOutput::ChangeAccepted { version, .. } => {
                    ctx.observer.change_accepted(version, turmoil::elapsed());
                }
                _ => {}
            }
        }
        let change_at = ctx.change.lock().unwrap_or_else(PoisonError::into_inner).as_ref().map(|c| c.at);
        if let Some(at) = change_at
            && turmoil::elapsed() >= at
        {
            let taken = ctx.change.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some(change) = taken {
                member.handle(now(), MemberInput::Change { request_id: 1, request: change.request });
            }
            continue;
        }
        let deadline =
            [member.poll_timeout().map(Instant::since_start), change_at].into_iter().flatten().min();
        let wait = deadline.map_or(Duration::from_secs(3600), |d| d.saturating_sub(turmoil::elapsed()));
        tokio::select! {
            biased;
            received = socket.recv_from(&mut buf) => {
                let (len, _from) = received?;
                let bytes = buf.get(..len).unwrap_or_default().to_vec();
                ctx.observer.delivered(me, &bytes);
                member.handle(now(), MemberInput::Received(bytes));
            }
            () = tokio::time::sleep(wait) => {
                member.handle(now(), MemberInput::Timeout);
            }
        }
    }
}
