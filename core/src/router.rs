//! The router: lets one node host several roles. Owns decoding the [`Envelope`] of each message
//! a channel delivers and handing its body to the role that owns its [`RoleTag`]; merges the
//! roles' outputs and timeouts. It never interprets a role's message and never lets a decode error
//! reach a role: a message no hosted role owns is rejected with a typed error.

use std::collections::{BTreeMap, VecDeque};

use crate::identity::NodeId;
use crate::machine::Machine;
use crate::time::Instant;
use crate::wire::{self, Envelope, RoleTag, WireError};

/// One role hosted by a node. Every role of a node emits the same output type `O` (the node's
/// command enum), so the driver drains one stream.
pub trait Role<O> {
    fn tag(&self) -> RoleTag;
    /// A message for this role from the authenticated peer `from`; `body` is unchecked bytes.
    fn handle_message(&mut self, now: Instant, from: NodeId, body: &[u8]);
    fn handle_timeout(&mut self, now: Instant);
    fn poll_output(&mut self) -> Option<O>;
    fn poll_timeout(&self) -> Option<Instant>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouterInput {
    /// A whole application message from an authenticated channel peer.
    Message {
        from: NodeId,
        bytes: Vec<u8>,
    },
    Timeout,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouterOutput<O> {
    /// A command from one of the hosted roles.
    Role(RoleTag, O),
    /// A message that could not be routed; the driver logs it and may close the channel.
    Rejected { from: NodeId, error: RouteError },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("bad envelope: {0}")]
    Envelope(#[from] WireError),
    #[error("no role {0:?} on this node")]
    NoSuchRole(RoleTag),
}

/// A node's roles, keyed by tag so iteration order (and so output order) is deterministic.
pub struct Router<O> {
    roles: BTreeMap<RoleTag, Box<dyn Role<O>>>,
    rejected: VecDeque<RouterOutput<O>>,
}

impl<O> std::fmt::Debug for Router<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").field("roles", &self.roles.keys().collect::<Vec<_>>()).finish()
    }
}

impl<O> Default for Router<O> {
    fn default() -> Self {
        Router { roles: BTreeMap::new(), rejected: VecDeque::new() }
    }
}

impl<O> Router<O> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Hosts `role`; a second role with the same tag replaces the first.
    pub fn add(&mut self, role: Box<dyn Role<O>>) {
        self.roles.insert(role.tag(), role);
    }

    pub fn role_tags(&self) -> impl Iterator<Item = RoleTag> + '_ {
        self.roles.keys().copied()
    }

    fn route(&mut self, now: Instant, from: NodeId, bytes: &[u8]) -> Result<(), RouteError> {
        let envelope: Envelope = wire::decode(bytes)?;
        let role = self.roles.get_mut(&envelope.role).ok_or(RouteError::NoSuchRole(envelope.role))?;
        role.handle_message(now, from, &envelope.body);
        Ok(())
    }
}

impl<O> Machine for Router<O> {
    type Input = RouterInput;
    type Output = RouterOutput<O>;

    fn handle(&mut self, now: Instant, input: RouterInput) {
        match input {
            RouterInput::Message { from, bytes } => {
                if let Err(error) = self.route(now, from, &bytes) {
                    self.rejected.push_back(RouterOutput::Rejected { from, error });
                }
            }
            RouterInput::Timeout => {
                for role in self.roles.values_mut() {
                    if role.poll_timeout().is_some_and(|t| t <= now) {
                        role.handle_timeout(now);
                    }
                }
            }
        }
    }

    fn poll_output(&mut self) -> Option<RouterOutput<O>> {
        if let Some(rejected) = self.rejected.pop_front() {
            return Some(rejected);
        }
        self.roles
            .iter_mut()
            .find_map(|(tag, role)| role.poll_output().map(|out| RouterOutput::Role(*tag, out)))
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.roles.values().filter_map(|r| r.poll_timeout()).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A role that echoes what it is sent and wants a timeout at a fixed instant.
    struct Echo {
        tag: RoleTag,
        out: VecDeque<String>,
        wake: Option<Instant>,
    }

    impl Role<String> for Echo {
        fn tag(&self) -> RoleTag {
            self.tag
        }
        fn handle_message(&mut self, _now: Instant, from: NodeId, body: &[u8]) {
            self.out.push_back(format!("{:?} from {} got {:?}", self.tag, &from.to_hex()[..4], body));
        }
        fn handle_timeout(&mut self, now: Instant) {
            self.out.push_back(format!("{:?} timeout at {now}", self.tag));
            self.wake = None;
        }
        fn poll_output(&mut self) -> Option<String> {
            self.out.pop_front()
        }
        fn poll_timeout(&self) -> Option<Instant> {
            self.wake
        }
    }

    fn router() -> Router<String> {
        let mut r = Router::new();
        for (tag, wake) in [(RoleTag::Member, 5), (RoleTag::ExecDaemon, 3)] {
            let wake = Some(Instant::from_nanos(wake));
            r.add(Box::new(Echo { tag, out: VecDeque::new(), wake }));
        }
        r
    }

    fn message(role: RoleTag, body: &[u8]) -> RouterInput {
        let bytes = wire::encode(&Envelope { role, body: body.to_vec() }).expect("encodes");
        RouterInput::Message { from: NodeId([0xab; 16]), bytes }
    }

    #[test]
    fn messages_reach_the_role_that_owns_them() {
        let mut r = router();
        r.handle(Instant::ZERO, message(RoleTag::ExecDaemon, b"x"));
        assert_eq!(
            r.poll_output(),
            Some(RouterOutput::Role(RoleTag::ExecDaemon, "ExecDaemon from abab got [120]".into()))
        );
        assert_eq!(r.poll_output(), None);
    }

    #[test]
    fn a_message_for_a_role_not_hosted_or_garbage_is_rejected() {
        let mut r = router();
        r.handle(Instant::ZERO, message(RoleTag::Kdc, b""));
        assert!(matches!(
            r.poll_output(),
            Some(RouterOutput::Rejected { error: RouteError::NoSuchRole(RoleTag::Kdc), .. })
        ));
        r.handle(Instant::ZERO, RouterInput::Message { from: NodeId([0; 16]), bytes: vec![1, 99] });
        assert!(matches!(
            r.poll_output(),
            Some(RouterOutput::Rejected { error: RouteError::Envelope(_), .. })
        ));
    }

    #[test]
    fn the_earliest_role_timeout_wins_and_only_due_roles_fire() {
        let mut r = router();
        assert_eq!(r.poll_timeout(), Some(Instant::from_nanos(3)));
        r.handle(Instant::from_nanos(3), RouterInput::Timeout);
        assert_eq!(
            r.poll_output(),
            Some(RouterOutput::Role(RoleTag::ExecDaemon, "ExecDaemon timeout at 0.000".into()))
        );
        assert_eq!(r.poll_output(), None);
        assert_eq!(r.poll_timeout(), Some(Instant::from_nanos(5)));
    }
}
