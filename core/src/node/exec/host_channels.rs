//! The gateway's channels to its hosts. One channel to a host carries every session the gateway
//! runs there, each under the session's number, and stays open between runs: a run pays no
//! handshake to a host it reached in the last [`IDLE_CLOSE`]. Owns which channel a session goes
//! on, retiring a channel that let a session down, sending a request once more when a channel
//! that sat open turns out dead before the host took it, and closing channels left idle. It
//! never decides a session's outcome: the gateway does, from the inputs this hands it.
//!
//! Sending a request twice never runs it twice: the host refuses an authenticator it has seen
//! (and one made before it started), so the worst a resend can bring is a refusal that names
//! the replay.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::super::Effects;
use super::super::conns::{ConnLimits, Owner};
use super::super::io::{ConnId, Event};
use super::encode;
use crate::exec::directory::ManagedHost;
use crate::exec::gateway::GatewayInput;
use crate::exec::wire::{ExecRequest, HostEvent, HostFrame, HostWire};
use crate::identity::{NodeKeys, PublicIdentity};
use crate::time::{Instant, Now};
use crate::wire;

/// A channel with no session for this long is closed; the next run to its host opens another.
pub const IDLE_CLOSE: Duration = Duration::from_secs(300);
/// Sessions one channel carries at once (the host takes up to 256); more open another channel.
pub const SESSIONS_PER_CHANNEL: usize = 64;

/// A host as a channel pins it: where it listens and the key it must prove.
type HostKey = (String, PublicIdentity);

fn host_key(host: &ManagedHost) -> HostKey {
    (host.address.clone(), host.identity)
}

#[derive(Debug)]
struct Channel {
    conn: ConnId,
    host: ManagedHost,
    /// Its handshake finished: a request sent on it now goes on a channel that was already up.
    established: bool,
    /// No new session goes on it; it closes when its last one ends.
    retired: bool,
    sessions: BTreeSet<u64>,
    idle_since: Option<Instant>,
}

#[derive(Debug)]
struct Route {
    channel: u64,
    /// Kept until the host says it has the request, for the one resend.
    request: Option<Box<ExecRequest>>,
    /// The channel was up before the request went on it: if it turns out dead before the host
    /// took the request, the request goes once more on a fresh channel.
    on_open_channel: bool,
    resent: bool,
}

/// See the module docs.
#[derive(Debug)]
pub(super) struct HostChannels {
    keys: NodeKeys,
    limits: ConnLimits,
    channels: BTreeMap<u64, Channel>,
    /// The channel new sessions to each host go on.
    current: BTreeMap<HostKey, u64>,
    routes: BTreeMap<u64, Route>,
    /// Channels with no session, by the time they fell idle, earliest first: the next to close
    /// is found without a scan.
    idle: BTreeSet<(Instant, u64)>,
    next_channel: u64,
}

impl HostChannels {
    pub(super) fn new(keys: NodeKeys, limits: ConnLimits) -> HostChannels {
        HostChannels {
            keys,
            limits,
            channels: BTreeMap::new(),
            current: BTreeMap::new(),
            routes: BTreeMap::new(),
            idle: BTreeSet::new(),
            next_channel: 1,
        }
    }

    /// Channels carrying a session, and channels open with none.
    pub(super) fn counts(&self) -> (usize, usize) {
        let idle = self.channels.values().filter(|c| c.sessions.is_empty()).count();
        (self.channels.len() - idle, idle)
    }

    /// Sends `request` to `host` as `session`; the input for the gateway if it cannot go.
    pub(super) fn start(
        &mut self,
        now: Now,
        session: u64,
        host: ManagedHost,
        request: Box<ExecRequest>,
        fx: &mut Effects<'_>,
    ) -> Option<GatewayInput> {
        let route = Route { channel: 0, request: Some(request), on_open_channel: false, resent: false };
        self.routes.insert(session, route);
        self.send_start(now, session, host, fx)
    }

    /// Puts `session`'s request on the current channel to `host`, opening one if there is none
    /// with room.
    fn send_start(
        &mut self,
        now: Now,
        session: u64,
        host: ManagedHost,
        fx: &mut Effects<'_>,
    ) -> Option<GatewayInput> {
        let id = match self.current_channel(&host) {
            Some(id) => id,
            None => match self.open_channel(now, host, fx) {
                Ok(id) => id,
                Err(reason) => {
                    self.routes.remove(&session);
                    return Some(GatewayInput::HostLost { session, reason });
                }
            },
        };
        self.set_idle(id, None);
        let (Some(channel), Some(route)) = (self.channels.get_mut(&id), self.routes.get_mut(&session)) else {
            return None;
        };
        channel.sessions.insert(session);
        route.channel = id;
        route.on_open_channel = channel.established;
        if let Some(request) = route.request.clone() {
            let bytes = encode(&HostWire::Start { session, request });
            fx.conns.send(channel.conn, &bytes);
        }
        None
    }

    fn current_channel(&self, host: &ManagedHost) -> Option<u64> {
        let id = *self.current.get(&host_key(host))?;
        let channel = self.channels.get(&id)?;
        (!channel.retired && channel.sessions.len() < SESSIONS_PER_CHANNEL).then_some(id)
    }

    fn open_channel(&mut self, now: Now, host: ManagedHost, fx: &mut Effects<'_>) -> Result<u64, String> {
        let id = self.next_channel;
        let owner = Owner::HostChannel(id);
        let conn =
            fx.conns.connect(now, host.address.clone(), &self.keys, host.identity, owner, self.limits)?;
        self.next_channel += 1;
        self.current.insert(host_key(&host), id);
        let channel = Channel {
            conn,
            host,
            established: false,
            retired: false,
            sessions: BTreeSet::new(),
            idle_since: None,
        };
        self.channels.insert(id, channel);
        Ok(id)
    }

    pub(super) fn cancel(&mut self, session: u64, reason: String, fx: &mut Effects<'_>) {
        let Some(route) = self.routes.get(&session) else { return };
        if let Some(channel) = self.channels.get(&route.channel) {
            fx.conns.send(channel.conn, &encode(&HostWire::Cancel { session, reason }));
        }
    }

    /// The gateway wants nothing more of `session`. If the host never said its last word (a kill
    /// it never confirmed, a request it never took), its channel is not trusted with another
    /// session: the host is told to stop, and the channel closes once its other sessions end.
    pub(super) fn done(&mut self, now: Now, session: u64, fx: &mut Effects<'_>) {
        let Some(route) = self.routes.remove(&session) else { return };
        let Some(channel) = self.channels.get_mut(&route.channel) else { return };
        let reason = "the gateway gave up on the session".to_owned();
        fx.conns.send(channel.conn, &encode(&HostWire::Cancel { session, reason }));
        channel.retired = true;
        self.leave(now.mono, route.channel, session, fx);
    }

    /// `session` is off channel `id`: a retired channel with nothing left closes, another waits.
    fn leave(&mut self, now: Instant, id: u64, session: u64, fx: &mut Effects<'_>) {
        let Some(channel) = self.channels.get_mut(&id) else { return };
        channel.sessions.remove(&session);
        if !channel.sessions.is_empty() {
            return;
        }
        if channel.retired {
            self.close(id, fx);
        } else {
            self.set_idle(id, Some(now));
        }
    }

    /// Closes channel `id` from this side; its `Gone` then finds nothing.
    fn close(&mut self, id: u64, fx: &mut Effects<'_>) {
        if let Some(channel) = self.remove(id) {
            fx.conns.close(channel.conn);
        }
    }

    /// Channel `id` fell idle at `since`, or (`None`) carries a session again.
    fn set_idle(&mut self, id: u64, since: Option<Instant>) {
        let Some(channel) = self.channels.get_mut(&id) else { return };
        if let Some(was) = std::mem::replace(&mut channel.idle_since, since) {
            self.idle.remove(&(was, id));
        }
        if let Some(since) = since {
            self.idle.insert((since, id));
        }
    }

    /// Forgets channel `id`, and that new sessions to its host go on it.
    fn remove(&mut self, id: u64) -> Option<Channel> {
        self.set_idle(id, None);
        let channel = self.channels.remove(&id)?;
        let key = host_key(&channel.host);
        if self.current.get(&key) == Some(&id) {
            self.current.remove(&key);
        }
        Some(channel)
    }

    pub(super) fn on_established(&mut self, owner: Owner) {
        if let Owner::HostChannel(id) = owner
            && let Some(channel) = self.channels.get_mut(&id)
        {
            channel.established = true;
        }
    }

    /// A host's frame on channel `owner`: the gateway's input it carries, if any.
    pub(super) fn on_message(
        &mut self,
        now: Now,
        owner: Owner,
        conn: ConnId,
        bytes: &[u8],
        fx: &mut Effects<'_>,
    ) -> Option<GatewayInput> {
        let Owner::HostChannel(id) = owner else { return None };
        let frame = match wire::decode::<HostFrame>(bytes) {
            Ok(frame) => frame,
            Err(e) => {
                let error = format!("a host sent an undecodable event: {e}");
                fx.log(Event::BadMessage { conn, error });
                // Its sessions are lost when the close comes back as `Gone`.
                if let Some(channel) = self.channels.get_mut(&id) {
                    channel.retired = true;
                }
                fx.conns.close(conn);
                return None;
            }
        };
        let HostFrame { session, event } = frame;
        // A session is answered only on the channel it went on; a late frame of one the gateway
        // gave up on finds nothing.
        let route = self.routes.get_mut(&session).filter(|r| r.channel == id)?;
        if event == HostEvent::Received {
            route.request = None;
        }
        if event.is_final() {
            self.routes.remove(&session);
            self.leave(now.mono, id, session, fx);
        }
        Some(GatewayInput::Host { session, event })
    }

    /// Channel `owner` ended: each session on it is lost, except a request the host never took
    /// on a channel that was up before it, which goes once more on a fresh channel (the host may
    /// have restarted since the channel opened).
    pub(super) fn on_gone(
        &mut self,
        now: Now,
        owner: Owner,
        error: Option<String>,
        fx: &mut Effects<'_>,
    ) -> Vec<GatewayInput> {
        let Owner::HostChannel(id) = owner else { return Vec::new() };
        let Some(channel) = self.remove(id) else { return Vec::new() };
        let reason = error.unwrap_or_else(|| "the host closed the connection".into());
        let mut lost = Vec::new();
        for session in channel.sessions {
            let Some(route) = self.routes.get_mut(&session) else { continue };
            if route.on_open_channel && !route.resent && route.request.is_some() {
                route.resent = true;
                lost.extend(self.send_start(now, session, channel.host.clone(), fx));
            } else {
                self.routes.remove(&session);
                lost.push(GatewayInput::HostLost { session, reason: reason.clone() });
            }
        }
        lost
    }

    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.idle.first().map(|(since, _)| *since + IDLE_CLOSE)
    }

    /// Closes the channels idle for [`IDLE_CLOSE`].
    pub(super) fn handle_timeout(&mut self, now: Now, fx: &mut Effects<'_>) {
        // In channel order, whatever the order they fell idle in.
        let idle: BTreeSet<u64> = self
            .idle
            .iter()
            .take_while(|(since, _)| *since + IDLE_CLOSE <= now.mono)
            .map(|(_, id)| *id)
            .collect();
        for id in idle {
            self.close(id, fx);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::super::super::conns::Connections;
    use super::super::super::io::Output;
    use super::super::super::links::Links;
    use super::super::super::{AfterPersist, Ids};
    use super::*;
    use crate::exec::task::Task;
    use crate::exec::ticket::{SealedAuthenticator, ServiceTicket};
    use crate::rng::seeded;

    fn request() -> Box<ExecRequest> {
        Box::new(ExecRequest {
            ticket: ServiceTicket { host: "h1".into(), nonce: [0; 24], ciphertext: Vec::new() },
            authenticator: SealedAuthenticator { nonce: [0; 12], ciphertext: Vec::new() },
            run_as: "alice".into(),
            task: Task::Run { argv: vec!["true".into()], stdin: Vec::new(), env: Vec::new() },
            max_output: 1024,
        })
    }

    /// The pieces of a node a test lends as `Effects`.
    struct Plumbing {
        conns: Connections,
        links: Links,
        out: VecDeque<Output>,
        ids: Ids,
        after: BTreeMap<crate::node::io::PersistId, AfterPersist>,
    }

    impl Plumbing {
        fn new() -> Plumbing {
            Plumbing {
                conns: Connections::new(seeded(1)),
                links: Links::new(seeded(2)),
                out: VecDeque::new(),
                ids: Ids::default(),
                after: BTreeMap::new(),
            }
        }

        fn fx(&mut self) -> Effects<'_> {
            Effects {
                conns: &mut self.conns,
                links: &mut self.links,
                out: &mut self.out,
                ids: &mut self.ids,
                after: &mut self.after,
            }
        }

        /// Connections asked for since the last call.
        fn dialled(&mut self) -> usize {
            std::iter::from_fn(|| self.conns.poll_output())
                .filter(|o| matches!(o, Output::Connect { .. }))
                .count()
        }
    }

    /// One channel carries at most [`SESSIONS_PER_CHANNEL`] sessions; the next opens a second
    /// channel to the same host, and a channel whose sessions all ended waits, idle, until
    /// [`IDLE_CLOSE`] has passed, then closes.
    #[test]
    fn a_host_gets_a_second_channel_past_the_sessions_one_carries_and_idle_ones_close() {
        let mut plumbing = Plumbing::new();
        let host =
            ManagedHost { address: "h1:7000".into(), identity: NodeKeys::generate(&mut seeded(4)).public() };
        let mut channels = HostChannels::new(NodeKeys::generate(&mut seeded(3)), ConnLimits::default());
        let now = Now::ZERO;
        let cap = SESSIONS_PER_CHANNEL as u64;
        for session in 0..cap {
            assert_eq!(channels.start(now, session, host.clone(), request(), &mut plumbing.fx()), None);
        }
        assert_eq!((plumbing.dialled(), channels.counts()), (1, (1, 0)));
        assert_eq!(channels.start(now, cap, host.clone(), request(), &mut plumbing.fx()), None);
        assert_eq!((plumbing.dialled(), channels.counts()), (1, (2, 0)));
        assert_eq!(channels.poll_timeout(), None, "no channel is idle");

        // The second channel's one session ends: it falls idle, and closes after IDLE_CLOSE.
        let ended =
            wire::encode(&HostFrame { session: cap, event: HostEvent::Exited { code: 0 } }).expect("encodes");
        let (owner, conn) = (Owner::HostChannel(2), ConnId(2));
        let heard = channels.on_message(now, owner, conn, &ended, &mut plumbing.fx());
        assert!(matches!(heard, Some(GatewayInput::Host { session, .. }) if session == cap));
        assert_eq!(channels.counts(), (1, 1));
        assert_eq!(channels.poll_timeout(), Some(now.mono + IDLE_CLOSE));
        let later = Now { mono: now.mono + IDLE_CLOSE, ..now };
        channels.handle_timeout(later, &mut plumbing.fx());
        assert_eq!((channels.counts(), channels.poll_timeout()), ((1, 0), None));
    }
}
