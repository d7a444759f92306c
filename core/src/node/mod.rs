//! The node: the one machine a process runs, whatever roles it hosts (as quinn-proto's
//! `Endpoint` owns its connections). It owns a Noise channel per connection, admission limits,
//! outbound links with reconnect backoff, and delivery of every message to the role that owns its
//! listener or link, with the identity the channel authenticated: a role never trusts a name
//! written inside a message for who sent it. Roles reply to an identity, and the node finds the
//! channel.
//!
//! The node never touches the operating system. A driver feeds it what it observed as
//! [`Input`]s and carries out its [`Output`]s:
//!
//! ```no_run
//! # use cohort_core::node::{Input, Node, Output};
//! # use cohort_core::{Machine, Now};
//! # fn read_clocks() -> Now { Now::ZERO }
//! # fn wait_for_io_until(_: Option<cohort_core::Instant>) -> Option<Input> { None }
//! # fn carry_out(_: Output) -> Option<Input> { None }
//! # fn drive(mut node: Node) {
//! loop {
//!     // Carry out every output; some are answered at once (a persist made durable).
//!     while let Some(output) = node.poll_output() {
//!         if let Some(answer) = carry_out(output) {
//!             node.handle(read_clocks(), answer);
//!         }
//!     }
//!     // Sleep until something happens or the node's next deadline.
//!     match wait_for_io_until(node.poll_timeout()) {
//!         Some(input) => node.handle(read_clocks(), input),
//!         None => node.handle(read_clocks(), Input::Timeout),
//!     }
//! }
//! # }
//! ```
//!
//! A [`Output::Persist`] must be answered with [`Input::Persisted`] before the node yields any
//! further output: nothing that follows a record reaches the network before the record is
//! durable (raft-rs's `Ready` discipline).

mod backoff;
mod conns;
mod io;
mod links;
mod policy;

use std::collections::VecDeque;

pub use backoff::Backoff;
pub use conns::ConnLimits;
pub use io::{ChildId, ConnId, Event, FileId, Input, Level, ListenerId, Output, PersistId, Record};
pub use policy::{PolicyAgentRole, PolicyServerRole};

use crate::machine::Machine;
use crate::policy::agent::PolicyAgent;
use crate::policy::server::PolicyServer;
use crate::rng::{SeededRng, fork};
use crate::time::{Instant, Now};
use conns::{ConnEvent, Connections};
use links::Links;
use policy::PolicyHost;

/// The roles a node runs.
#[derive(Debug, Clone, Default)]
pub struct NodeSetup {
    pub policy_server: Option<PolicyServerRole>,
    pub policy_agents: Vec<PolicyAgentRole>,
}

/// Ids the node hands out for what it asks the driver to do.
#[derive(Debug, Default)]
struct Ids {
    persist: u64,
    file: u64,
    child: u64,
}

impl Ids {
    fn persist(&mut self) -> PersistId {
        self.persist += 1;
        PersistId(self.persist)
    }

    fn file(&mut self) -> FileId {
        self.file += 1;
        FileId(self.file)
    }

    fn child(&mut self) -> ChildId {
        self.child += 1;
        ChildId(self.child)
    }
}

/// What a role may do to the node while it handles an input.
struct Effects<'a> {
    conns: &'a mut Connections,
    links: &'a mut Links,
    out: &'a mut VecDeque<Output>,
    ids: &'a mut Ids,
}

impl Effects<'_> {
    fn persist(&mut self, record: Record) {
        let id = self.ids.persist();
        self.out.push_back(Output::Persist { id, record });
    }
}

/// One process's machine. See the module docs.
#[derive(Debug)]
pub struct Node {
    conns: Connections,
    links: Links,
    policy: PolicyHost,
    ids: Ids,
    outputs: VecDeque<Output>,
    /// A persist handed out and not yet answered: nothing more leaves until it is.
    unanswered: Option<PersistId>,
}

impl Node {
    /// Starts the roles of `setup`; the first outputs ask for the listeners.
    pub fn new(now: Now, setup: NodeSetup, mut rng: SeededRng) -> Node {
        let mut conns = Connections::new(fork(&mut rng));
        let mut links = Links::new(fork(&mut rng));
        let mut ids = Ids::default();
        let mut outputs = VecDeque::new();
        let mut fx = Effects { conns: &mut conns, links: &mut links, out: &mut outputs, ids: &mut ids };
        let policy = PolicyHost::new(now, setup.policy_server, setup.policy_agents, &mut rng, &mut fx);
        let mut node = Node { conns, links, policy, ids, outputs, unanswered: None };
        node.settle(now);
        node
    }

    /// The policy server this node runs, if any.
    pub fn policy_server(&self) -> Option<&PolicyServer> {
        self.policy.server()
    }

    pub fn policy_agents(&self) -> impl Iterator<Item = &PolicyAgent> {
        self.policy.agents()
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.conns.open()
    }

    /// Runs connection events through the roles until nothing moves, and opens links that have
    /// something to send.
    fn settle(&mut self, now: Now) {
        loop {
            self.links.dial_due(now, &mut self.conns);
            while let Some(out) = self.conns.poll_output() {
                self.outputs.push_back(out);
            }
            let Some(event) = self.conns.poll_event() else { return };
            if let Some(log) = self.links.on_event(now, &event) {
                self.outputs.push_back(log);
            }
            let owner = match &event {
                ConnEvent::Established { owner, .. }
                | ConnEvent::Message { owner, .. }
                | ConnEvent::Gone { owner, .. } => *owner,
            };
            if self.policy.owns(owner) {
                let Node { conns, links, policy, ids, outputs, .. } = self;
                let mut fx = Effects { conns, links, out: outputs, ids };
                policy.on_conn(now, event, &mut fx);
            }
        }
    }

    /// Lends the roles' view of the node (connections, links, outputs, ids) to `f`.
    fn with_policy(&mut self, f: impl FnOnce(&mut PolicyHost, &mut Effects<'_>)) {
        let Node { conns, links, policy, ids, outputs, .. } = self;
        f(policy, &mut Effects { conns, links, out: outputs, ids });
    }
}

impl Machine for Node {
    type Input = Input;
    type Output = Output;

    fn handle(&mut self, now: Now, input: Input) {
        match input {
            Input::Accepted { listener, conn } => self.conns.accepted(now, listener, conn),
            Input::Received { conn, bytes } => self.conns.received(now, conn, bytes),
            Input::Written { conn, bytes } => self.conns.written(conn, bytes),
            Input::Closed { conn, error } => self.conns.closed(now, conn, error),
            Input::Persisted { id } => {
                if self.unanswered == Some(id) {
                    self.unanswered = None;
                }
            }
            Input::FileWritten { id, outcome } => {
                self.with_policy(|policy, fx| policy.on_file_written(now, id, outcome, fx))
            }
            Input::ChildStarted { child } => self.with_policy(|policy, fx| {
                policy.on_child(now, child, Ok(()), fx);
            }),
            Input::ChildFailed { child, reason } => self.with_policy(|policy, fx| {
                policy.on_child(now, child, Err(reason), fx);
            }),
            // Hooks' output and exit are not the policy's business; exec sessions are (later).
            Input::ChildOutput { .. } | Input::ChildExited { .. } => {}
            Input::Timeout => {
                self.conns.handle_timeout(now);
                self.with_policy(|policy, fx| policy.handle_timeout(now, fx));
            }
        }
        self.settle(now);
    }

    fn poll_output(&mut self) -> Option<Output> {
        if self.unanswered.is_some() {
            return None;
        }
        let out = self.outputs.pop_front()?;
        if let Output::Persist { id, .. } = &out {
            self.unanswered = Some(*id);
        }
        Some(out)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        [self.conns.poll_timeout(), self.links.poll_timeout(), self.policy.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }
}

#[cfg(test)]
mod tests;
