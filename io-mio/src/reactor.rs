//! The one mio event loop of a node process. Owns the `Poll`, the waker other threads use to ask
//! for a stop, the signals (SIGTERM and SIGINT drain then stop, SIGHUP reloads), and the order of
//! each turn: settle every role, sleep until the
//! earliest deadline or event, hand each event to the role that owns its token, fire due timers.
//! Roles (member, exec, policy) own their sockets and state; this module never looks inside them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mio::event::Event;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use tracing::{info, warn};

use crate::error::NodeError;

const WAKER: Token = Token(0);
const SIGNALS: Token = Token(1);
/// Each role's tokens are `(slot + 1) << SLOT_SHIFT` plus the role's own numbering, so a token
/// says which role it belongs to without a lookup table.
const SLOT_SHIFT: u32 = 40;
const _: () = assert!(usize::BITS >= 64, "role token slots need a 64-bit usize");

/// One role hosted by the loop.
pub trait Role {
    /// What the role is called in errors and logs.
    fn name(&self) -> &'static str;
    /// Moves every output that is ready (machine outputs to sockets, storage, files) until nothing
    /// moves, so no answer waits for the next wake-up.
    fn settle(&mut self) -> Result<(), NodeError>;
    /// When the role next needs [`Role::fire_timeouts`].
    fn next_wake(&self) -> Option<std::time::Instant>;
    /// One readiness event on a token of this role's slot.
    fn handle_event(&mut self, event: &Event) -> Result<(), NodeError>;
    fn fire_timeouts(&mut self) -> Result<(), NodeError>;
    /// The process was asked to stop: refuse new work, let what runs finish.
    fn drain(&mut self) {}
    /// Whether nothing the role started is still running (after [`Role::drain`]).
    fn drained(&self) -> bool {
        true
    }
    /// The loop is stopping: close connections, stop children.
    fn stop(&mut self);
}

/// What the process around the loop is told of the loop's life (a service manager's
/// notifications, the log's reload). Each has a default that does nothing.
pub trait Lifecycle {
    /// Every role has bound its sockets and settled once: the node serves.
    fn ready(&mut self) {}
    /// SIGHUP: reload what can be reloaded; returns what was done, for the log.
    fn reload(&mut self) -> String {
        "nothing to reload".to_owned()
    }
    /// The loop began to drain, then to stop.
    fn stopping(&mut self) {}
}

/// A process with nothing to tell.
#[derive(Debug, Default)]
pub struct Quiet;

impl Lifecycle for Quiet {}

/// What a role registers its sources with: the loop's registry and the role's own token range.
#[derive(Debug)]
pub struct Slot {
    registry: Registry,
    base: usize,
}

impl Slot {
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The token for the role's own number `n`.
    pub fn token(&self, n: usize) -> Token {
        Token(self.base + n)
    }

    /// The role's own number for one of its tokens.
    pub fn local(&self, token: Token) -> usize {
        token.0 - self.base
    }

    /// Registers `source` under the role's own number `n`.
    pub fn register<S: mio::event::Source + ?Sized>(
        &self,
        source: &mut S,
        n: usize,
        interest: Interest,
    ) -> std::io::Result<Token> {
        let token = self.token(n);
        self.registry.register(source, token, interest)?;
        Ok(token)
    }
}

/// Lets another thread of this process ask the running loop to stop, as SIGTERM would.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
}

impl NodeHandle {
    /// Whether a stop was asked for.
    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    pub fn shutdown(&self) -> std::io::Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        self.waker.wake()
    }
}

pub struct Reactor {
    poll: Poll,
    handle: NodeHandle,
    signals: Option<Signals>,
    roles: Vec<Box<dyn Role + Send>>,
    lifecycle: Box<dyn Lifecycle + Send>,
    /// How long a SIGTERM drain may last before what still runs is stopped.
    drain_limit: std::time::Duration,
}

/// Where the loop is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// Since the signal, until the deadline.
    Draining(std::time::Instant),
    Stopping,
}

impl std::fmt::Debug for Reactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let roles: Vec<&str> = self.roles.iter().map(|r| r.name()).collect();
        f.debug_struct("Reactor").field("roles", &roles).finish()
    }
}

impl Reactor {
    pub fn new() -> std::io::Result<Reactor> {
        let poll = Poll::new()?;
        let handle = NodeHandle {
            waker: Arc::new(Waker::new(poll.registry(), WAKER)?),
            stop: Arc::new(AtomicBool::new(false)),
        };
        Ok(Reactor {
            poll,
            handle,
            signals: None,
            roles: Vec::new(),
            lifecycle: Box::new(Quiet),
            drain_limit: std::time::Duration::ZERO,
        })
    }

    /// Tells `lifecycle` of readiness, reloads and the stop.
    pub fn set_lifecycle(&mut self, lifecycle: Box<dyn Lifecycle + Send>) {
        self.lifecycle = lifecycle;
    }

    /// On SIGTERM or SIGINT, drain for up to `limit` before stopping (zero: stop at once).
    pub fn set_drain_limit(&mut self, limit: std::time::Duration) {
        self.drain_limit = limit;
    }

    /// Also drain and stop on SIGTERM and SIGINT, and reload on SIGHUP (a process's loop; tests
    /// that host roles in a thread leave signals alone). `logrotate` or `systemctl reload`
    /// sending SIGHUP must never take a node down.
    pub fn stop_on_signals(&mut self) -> std::io::Result<()> {
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
        self.poll.registry().register(&mut signals, SIGNALS, Interest::READABLE)?;
        self.signals = Some(signals);
        Ok(())
    }

    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// Starts a role with its own slot and hosts it.
    pub fn host<R, E>(&mut self, start: impl FnOnce(Slot) -> Result<R, E>) -> Result<(), E>
    where
        R: Role + Send + 'static,
        E: From<std::io::Error>,
    {
        let slot =
            Slot { registry: self.poll.registry().try_clone()?, base: (self.roles.len() + 1) << SLOT_SHIFT };
        let role = start(slot)?;
        self.roles.push(Box::new(role));
        Ok(())
    }

    /// Runs until a stop is asked for (handle or signal) and the drain is over. Returns an error,
    /// naming the role, only for what the node cannot go on after (storage failing, the event
    /// loop failing).
    pub fn run(&mut self) -> Result<(), NodeError> {
        let mut events = Events::with_capacity(1024);
        let mut phase = Phase::Running;
        let mut announced = false;
        loop {
            for role in &mut self.roles {
                role.settle().map_err(|e| e.in_role(role.name()))?;
            }
            if !announced {
                announced = true;
                self.lifecycle.ready();
            }
            phase = self.next_phase(phase);
            if phase == Phase::Stopping {
                break;
            }
            let mut wake = self.roles.iter().filter_map(|r| r.next_wake()).min();
            if let Phase::Draining(deadline) = phase {
                wake = Some(wake.map_or(deadline, |w| w.min(deadline)));
            }
            let timeout = wake.map(|t| t.saturating_duration_since(std::time::Instant::now()));
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
            for event in &events {
                match event.token() {
                    WAKER => {
                        if self.handle.stop_requested() && phase == Phase::Running {
                            info!("shutting down on request");
                            phase = Phase::Stopping;
                        }
                    }
                    SIGNALS => {
                        let pending: Vec<i32> = self.signals.iter_mut().flat_map(|s| s.pending()).collect();
                        for signal in pending {
                            phase = self.on_signal(signal, phase);
                        }
                    }
                    Token(t) => {
                        let Some(role) = (t >> SLOT_SHIFT).checked_sub(1).and_then(|i| self.roles.get_mut(i))
                        else {
                            continue;
                        };
                        role.handle_event(event).map_err(|e| e.in_role(role.name()))?;
                    }
                }
            }
            for role in &mut self.roles {
                role.fire_timeouts().map_err(|e| e.in_role(role.name()))?;
            }
        }
        for role in &mut self.roles {
            role.stop();
        }
        Ok(())
    }

    fn on_signal(&mut self, signal: i32, phase: Phase) -> Phase {
        let name = signal_name(signal);
        match (signal, phase) {
            (SIGHUP, _) => {
                let done = self.lifecycle.reload();
                info!("{name} received: reloaded: {done} (other settings apply at restart)");
                phase
            }
            (_, Phase::Running) if !self.drain_limit.is_zero() => {
                info!(
                    "{name} received: draining: new work is refused; what runs may finish for up to {} s (send it again to stop at once)",
                    self.drain_limit.as_secs()
                );
                self.lifecycle.stopping();
                for role in &mut self.roles {
                    role.drain();
                }
                Phase::Draining(std::time::Instant::now() + self.drain_limit)
            }
            (_, Phase::Draining(_)) => {
                info!("{name} received again: stopping now");
                Phase::Stopping
            }
            _ => {
                info!("{name} received: stopping");
                self.lifecycle.stopping();
                Phase::Stopping
            }
        }
    }

    /// A drain ends when every role is drained or its deadline passed.
    fn next_phase(&self, phase: Phase) -> Phase {
        let Phase::Draining(deadline) = phase else { return phase };
        if self.roles.iter().all(|r| r.drained()) {
            info!("drained: nothing runs any more; stopping");
            return Phase::Stopping;
        }
        if std::time::Instant::now() >= deadline {
            warn!("drain deadline passed with work still running: stopping it");
            return Phase::Stopping;
        }
        phase
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        SIGHUP => "SIGHUP",
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}
