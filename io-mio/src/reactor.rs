//! The one mio event loop of a node process. Owns the `Poll`, the waker other threads use to ask
//! for a stop, SIGINT/SIGTERM, and the order of each turn: settle every role, sleep until the
//! earliest deadline or event, hand each event to the role that owns its token, fire due timers.
//! Roles (member, exec, policy) own their sockets and state; this module never looks inside them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mio::event::Event;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use tracing::info;

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
    /// The loop is stopping: close connections, stop children.
    fn stop(&mut self);
}

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
        Ok(Reactor { poll, handle, signals: None, roles: Vec::new() })
    }

    /// Also stop on SIGINT and SIGTERM, and outlive SIGHUP (a process's loop; tests that host
    /// roles in a thread leave signals alone). A node keeps no file open to reopen and reads its
    /// configuration only at start, so `logrotate` or `systemctl reload` sending SIGHUP must not
    /// take it down; it says so in the log instead.
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

    /// Runs until a stop is asked for (handle or signal). Returns an error, naming the role, only
    /// for what the node cannot go on after (storage failing, the event loop failing).
    pub fn run(&mut self) -> Result<(), NodeError> {
        let mut events = Events::with_capacity(1024);
        let mut stopping = false;
        while !stopping {
            for role in &mut self.roles {
                role.settle().map_err(|e| e.in_role(role.name()))?;
            }
            let wake = self.roles.iter().filter_map(|r| r.next_wake()).min();
            let timeout = wake.map(|t| t.saturating_duration_since(std::time::Instant::now()));
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
            for event in &events {
                match event.token() {
                    WAKER => {
                        if self.handle.stop_requested() {
                            info!("shutting down on request");
                            stopping = true;
                        }
                    }
                    SIGNALS => {
                        for signal in self.signals.iter_mut().flat_map(|s| s.pending()) {
                            if signal == SIGHUP {
                                info!(
                                    "SIGHUP received: still running (a node reads its configuration only at start; restart it to apply a change)"
                                );
                                continue;
                            }
                            info!(signal, "shutting down on signal");
                            stopping = true;
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
}
