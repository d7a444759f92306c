//! The security-policy roles of a node, hosted by the process's event loop: a policy server (master or local)
//! and any number of agents. Owns the listener (admitting only the tier's servers, agents and
//! operators), the links to a parent server and from agents to their server, delivery of tier
//! messages by the identity each channel authenticated, the master's history in SQLite, and
//! writing each agent's effective policy to its file atomically (then running its hook). Protocol
//! rules, operators' admin requests included, stay in core.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cohort_core::channel::{Channel, ChannelConfig, ChannelInput, ChannelOutput, TrustSet};
use cohort_core::policy::agent::{AgentInput, AgentOutput, PolicyAgent};
use cohort_core::policy::document::Platform;
use cohort_core::policy::merge::EffectivePolicy;
use cohort_core::policy::server::{PolicyServer, ServerInput, ServerOutput, ServerSetup};
use cohort_core::policy::wire::PolicyWire;
use cohort_core::rng::{SeededRng, fork};
use cohort_core::{Instant, Machine, NodeId, NodeKeys, Now, PublicIdentity, wire};
use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Token};
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::channel_conn::ChannelConn;
use crate::clock::Clock;
use crate::entropy::os_seeded_rng;
use crate::keyfile;
use crate::node::NodeError;
use crate::node_config::{AgentsFile, NodeConfig, NodeConfigError, TierFile, load_toml, parse_key};
use crate::reactor::{Role, Slot};
use crate::store::Store;

// The role's own token numbers (see `reactor::Slot`).
const LISTENER: usize = 2;
const FIRST_DYNAMIC: usize = 1_000;
const MAX_INBOUND: usize = 4096;

fn identity(path: &Path, ed: &str, x: &str) -> Result<PublicIdentity, NodeConfigError> {
    Ok(PublicIdentity { signing: parse_key(path, "ed25519", ed)?, agreement: parse_key(path, "x25519", x)? })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Inbound,
    /// To our server's parent.
    Parent,
    /// Agent `i` to its server.
    AgentLink(usize),
}

#[derive(Debug)]
struct Conn {
    io: ChannelConn,
    kind: Kind,
    /// The identity the channel authenticated, once established.
    peer: Option<PublicIdentity>,
}

#[derive(Debug)]
struct Link {
    addr: SocketAddr,
    identity: PublicIdentity,
    token: Option<Token>,
    /// Messages waiting for the link to open.
    queue: Vec<PolicyWire>,
    retry_at: Option<Instant>,
    backoff: Backoff,
}

impl Link {
    fn new(addr: SocketAddr, identity: PublicIdentity) -> Link {
        Link { addr, identity, token: None, queue: Vec::new(), retry_at: None, backoff: Backoff::reconnect() }
    }
}

#[derive(Debug)]
struct ServerSide {
    server: PolicyServer,
    listener: TcpListener,
    parent: Option<Link>,
    /// The inbound connection each authenticated peer is reachable on.
    peers: BTreeMap<NodeId, Token>,
    /// Admin requests waiting for the server's answer.
    admin: BTreeMap<u64, Token>,
    next_request: u64,
}

#[derive(Debug)]
struct AgentSide {
    agent: PolicyAgent,
    link: Link,
    policy_file: std::path::PathBuf,
    hook: Vec<String>,
    hooks: Vec<Child>,
}

pub struct PolicyRuntime {
    slot: Slot,
    keys: NodeKeys,
    store: Store,
    rng: SeededRng,
    clock: Clock,
    server: Option<ServerSide>,
    agents: Vec<AgentSide>,
    conns: BTreeMap<Token, Conn>,
    next_token: usize,
}

impl std::fmt::Debug for PolicyRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyRuntime")
            .field("server", &self.server.is_some())
            .field("agents", &self.agents.len())
            .finish()
    }
}

fn channel_config() -> ChannelConfig {
    ChannelConfig {
        max_message_len: 4 * 1024 * 1024,
        handshake_timeout: Duration::from_secs(5),
        max_queued_bytes: 4 * 1024 * 1024,
    }
}

impl PolicyRuntime {
    pub fn start(config: &NodeConfig, slot: Slot) -> Result<PolicyRuntime, NodeError> {
        let keys = keyfile::read_key_file(&config.key_file)?;
        let store = Store::open(&config.database())?;
        let mut rng = os_seeded_rng();
        let now = Instant::ZERO;
        let server = match &config.policy_server {
            None => None,
            Some(sc) => {
                let tier: TierFile = load_toml(&sc.tier_file)?;
                let mut ids = BTreeMap::new();
                for s in &tier.servers {
                    ids.insert(
                        s.name.clone(),
                        (identity(&sc.tier_file, &s.ed25519, &s.x25519)?, s.address, s.parent.clone()),
                    );
                }
                let me = tier.servers.iter().find(|s| s.name == sc.name).ok_or_else(|| {
                    NodeConfigError::Parse {
                        path: sc.tier_file.clone(),
                        message: format!("no server `{}` in the tier file", sc.name),
                    }
                })?;
                let parent_name = me.parent.clone();
                let parent =
                    parent_name.as_ref().and_then(|p| ids.get(p)).map(|(id, addr, _)| Link::new(*addr, *id));
                let children = ids
                    .iter()
                    .filter(|(_, (_, _, p))| p.as_deref() == Some(sc.name.as_str()))
                    .map(|(n, (id, _, _))| (n.clone(), *id))
                    .collect();
                let agents = match &sc.agents_file {
                    None => BTreeMap::new(),
                    Some(path) => {
                        let file: AgentsFile = load_toml(path)?;
                        let mut agents = BTreeMap::new();
                        for a in &file.agents {
                            agents.insert(a.name.clone(), identity(path, &a.ed25519, &a.x25519)?);
                        }
                        agents
                    }
                };
                let operators = tier
                    .operators
                    .iter()
                    .map(|o| identity(&sc.tier_file, &o.ed25519, &o.x25519))
                    .collect::<Result<Vec<_>, _>>()?;
                let setup = ServerSetup {
                    name: sc.name.clone(),
                    keys: keys.clone(),
                    parent: parent_name.as_ref().zip(parent.as_ref()).map(|(n, l)| (n.clone(), l.identity)),
                    children,
                    agents,
                    signers: ids.iter().map(|(n, (id, _, _))| (n.clone(), *id)).collect(),
                    operators,
                    sync_window: Duration::from_secs(sc.sync_window_s.max(1)),
                    sync_jitter: Duration::from_secs(sc.sync_jitter_s),
                    stats_deadline: Duration::from_secs(5),
                };
                let mut listener = TcpListener::bind(sc.listen).map_err(|source| NodeError::Bind {
                    what: "listen for the policy tier on",
                    addr: sc.listen,
                    source,
                })?;
                slot.register(&mut listener, LISTENER, Interest::READABLE)?;
                let mut server = PolicyServer::new(now, setup, fork(&mut rng));
                // A stored policy refused here is logged with the server's other refusals.
                server.restore(store.load_policies()?, store.latest_policy_history()?);
                info!(
                    name = %sc.name,
                    listen = %sc.listen,
                    parent = ?parent_name,
                    policies = server.policies().count(),
                    "policy server up"
                );
                Some(ServerSide {
                    server,
                    listener,
                    parent,
                    peers: BTreeMap::new(),
                    admin: BTreeMap::new(),
                    next_request: 1,
                })
            }
        };
        let mut agents = Vec::new();
        for ac in &config.policy_agents {
            let tier: TierFile = load_toml(&ac.tier_file)?;
            let server =
                tier.servers.iter().find(|s| s.name == ac.server).ok_or_else(|| NodeConfigError::Parse {
                    path: ac.tier_file.clone(),
                    message: format!("agent `{}` names unknown server `{}`", ac.name, ac.server),
                })?;
            let agent_keys = keyfile::read_key_file(&ac.key_file)?;
            let agent = PolicyAgent::new(
                now,
                ac.name.clone(),
                agent_keys,
                Platform::new(&ac.os, &ac.os_version, &ac.role),
                ac.server.clone(),
                Duration::from_secs(ac.poll_interval_s.max(1)),
                Duration::from_secs(ac.poll_interval_s.max(1) / 5),
                fork(&mut rng),
            );
            let link = Link::new(server.address, identity(&ac.tier_file, &server.ed25519, &server.x25519)?);
            agents.push(AgentSide {
                agent,
                link,
                policy_file: ac.policy_file.clone(),
                hook: ac.hook.clone(),
                hooks: Vec::new(),
            });
        }
        Ok(PolicyRuntime {
            slot,
            keys,
            store,
            rng,
            clock: Clock::start(),
            server,
            agents,
            conns: BTreeMap::new(),
            next_token: FIRST_DYNAMIC,
        })
    }

    fn now(&self) -> Now {
        self.clock.now()
    }

    fn next_deadline(&self) -> Option<Instant> {
        let server = self.server.as_ref().and_then(|s| s.server.poll_timeout());
        let agents = self.agents.iter().filter_map(|a| a.agent.poll_timeout());
        let conns = self.conns.values().filter_map(|c| c.io.channel.poll_timeout());
        let links = self.links().filter_map(|l| l.retry_at);
        server.into_iter().chain(agents).chain(conns).chain(links).min()
    }

    fn links(&self) -> impl Iterator<Item = &Link> {
        self.server.iter().filter_map(|s| s.parent.as_ref()).chain(self.agents.iter().map(|a| &a.link))
    }

    fn fire_due(&mut self) {
        let now = self.now();
        if let Some(s) = &mut self.server
            && s.server.poll_timeout().is_some_and(|t| t <= now.mono)
        {
            s.server.handle(now, ServerInput::Timeout);
        }
        for i in 0..self.agents.len() {
            if self.agents[i].agent.poll_timeout().is_some_and(|t| t <= now.mono) {
                self.feed_agent(i, AgentInput::Timeout);
            }
            self.agents[i].hooks.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
        }
        for conn in self.conns.values_mut() {
            if conn.io.channel.poll_timeout().is_some_and(|t| t <= now.mono) {
                conn.io.channel.handle(now, ChannelInput::Timeout);
            }
        }
    }

    fn drive_all(&mut self) -> Result<(), NodeError> {
        for _ in 0..10_000 {
            let mut moved = self.drive_server()?;
            moved |= self.drive_links();
            moved |= self.drive_conns();
            if !moved {
                break;
            }
        }
        Ok(())
    }

    // ---- connections --------------------------------------------------------------------------

    fn add_conn(
        &mut self,
        mut stream: TcpStream,
        peer: SocketAddr,
        channel: Channel,
        kind: Kind,
    ) -> Option<Token> {
        let token = self.slot.token(self.next_token);
        self.next_token += 1;
        if let Err(e) =
            self.slot.registry().register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
        {
            warn!(%peer, error = %e, "could not register a policy connection");
            return None;
        }
        self.conns.insert(token, Conn { io: ChannelConn::new(stream, peer, channel), kind, peer: None });
        Some(token)
    }

    fn accept(&mut self) {
        loop {
            let Some(s) = &self.server else { return };
            let (stream, peer) = match s.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => return warn!(error = %e, "policy accept failed"),
            };
            if self.conns.values().filter(|c| c.kind == Kind::Inbound).count() >= MAX_INBOUND {
                warn!(%peer, "policy connection refused: too many open");
                continue;
            }
            // The tier's servers and agents, and the operators: no one else gets a channel.
            let trust: TrustSet = s.server.peers().chain(s.server.operators()).copied().collect();
            let now = self.now().mono;
            match Channel::responder(now, channel_config(), &self.keys, trust, fork(&mut self.rng)) {
                Ok(channel) => {
                    self.add_conn(stream, peer, channel, Kind::Inbound);
                }
                Err(e) => warn!(error = %e, "could not start a policy channel"),
            }
        }
    }

    fn service(&mut self, token: Token, readable: bool, writable: bool) {
        let now = self.now();
        if let Some(conn) = self.conns.get_mut(&token) {
            conn.io.service(now, readable, writable);
        }
    }

    fn send_on(&mut self, token: Token, message: &PolicyWire) {
        let Ok(bytes) = wire::encode(message) else { return };
        if let Some(conn) = self.conns.get_mut(&token)
            && let Err(e) = conn.io.channel.send(&bytes)
        {
            debug!(error = %e, "could not send a policy message");
        }
    }

    fn drive_conns(&mut self) -> bool {
        let mut moved = false;
        let tokens: Vec<Token> = self.conns.keys().copied().collect();
        for token in tokens {
            if self.conns.get_mut(&token).is_some_and(|c| std::mem::take(&mut c.io.more_to_read)) {
                self.service(token, true, false);
            }
            while let Some(output) = self.conns.get_mut(&token).and_then(|c| c.io.channel.poll_output()) {
                moved = true;
                match output {
                    ChannelOutput::Transmit(bytes) => {
                        if let Some(conn) = self.conns.get_mut(&token)
                            && !conn.io.queue(&bytes)
                        {
                            conn.io.channel.close();
                        }
                    }
                    ChannelOutput::Established(peer) => {
                        let Some(conn) = self.conns.get_mut(&token) else { break };
                        conn.peer = Some(peer);
                        let kind = conn.kind;
                        if kind == Kind::Inbound
                            && let Some(s) = &mut self.server
                        {
                            s.peers.insert(peer.node_id(), token);
                        }
                        if let Some(link) = self.link_mut(kind) {
                            link.backoff.succeeded();
                        }
                    }
                    ChannelOutput::Message(bytes) => self.on_message(token, &bytes),
                    ChannelOutput::Closed(reason) => {
                        debug!(?reason, "policy connection closed");
                        self.on_closed(token);
                        break;
                    }
                }
            }
            let now = self.now();
            if let Some(conn) = self.conns.get_mut(&token)
                && conn.io.flush().is_err()
            {
                conn.io.channel.handle(now, ChannelInput::PeerClosed);
                moved = true;
            }
        }
        moved
    }

    fn on_closed(&mut self, token: Token) {
        let Some(mut conn) = self.conns.remove(&token) else { return };
        let _ = self.slot.registry().deregister(&mut conn.io.stream);
        if conn.kind == Kind::Inbound {
            if let Some(s) = &mut self.server {
                s.peers.retain(|_, t| *t != token);
                s.admin.retain(|_, t| *t != token);
            }
        } else {
            self.link_down(conn.kind);
        }
    }

    /// A link's connection failed or closed: it is tried again after its backoff.
    fn link_down(&mut self, kind: Kind) {
        let now = self.now();
        // The link and the rng are borrowed apart, so not through `link_mut`.
        let now = now.mono;
        let PolicyRuntime { server, agents, rng, .. } = self;
        if let Some(link) = link_of(server, agents, kind) {
            link.token = None;
            link.retry_at = Some(now + link.backoff.failed(rng));
        }
    }

    fn on_message(&mut self, token: Token, bytes: &[u8]) {
        let Some((kind, peer)) = self.conns.get(&token).map(|c| (c.kind, c.peer)) else { return };
        let message = match wire::decode::<PolicyWire>(bytes) {
            Ok(message) => message,
            Err(e) => {
                warn!(error = %e, "undecodable policy message; closing");
                if let Some(conn) = self.conns.get_mut(&token) {
                    conn.io.channel.close();
                }
                return;
            }
        };
        // Messages arrive only on established channels.
        let Some(from) = peer else { return };
        let size = bytes.len();
        match (kind, message) {
            (Kind::Inbound | Kind::Parent, PolicyWire::Tier(message)) => {
                self.feed_server(ServerInput::Received { from, message, size })
            }
            (Kind::Inbound, PolicyWire::Admin(signed)) => {
                let Some(s) = &mut self.server else { return };
                let request = s.next_request;
                s.next_request += 1;
                s.admin.insert(request, token);
                self.feed_server(ServerInput::Admin { request, signed });
            }
            (Kind::AgentLink(i), PolicyWire::Tier(message)) => {
                self.feed_agent(i, AgentInput::FromServer(Box::new(message)))
            }
            (_, _) => warn!("a policy message arrived on the wrong kind of connection"),
        }
    }

    fn feed_server(&mut self, input: ServerInput) {
        let now = self.now();
        if let Some(s) = &mut self.server {
            s.server.handle(now, input);
        }
    }

    fn drive_server(&mut self) -> Result<bool, NodeError> {
        let mut moved = false;
        loop {
            let Some(s) = &mut self.server else { return Ok(moved) };
            let Some(out) = s.server.poll_output() else { return Ok(moved) };
            moved = true;
            match out {
                ServerOutput::Send { to, name, message } => {
                    let to_parent = s.server.parent().is_some_and(|p| p.node_id() == to);
                    if to_parent {
                        if let Some(link) = &mut s.parent {
                            link.queue.push(PolicyWire::Tier(message));
                        }
                    } else if let Some(token) = s.peers.get(&to).copied() {
                        self.send_on(token, &PolicyWire::Tier(message));
                    } else {
                        debug!(%name, "no connection to a policy peer; message dropped");
                    }
                }
                ServerOutput::Stored(policy) => {
                    // Kept before anything that follows it goes out.
                    self.store.save_policy(&policy)?;
                    info!(id = %policy.body.id, version = policy.body.version, "policy stored");
                }
                ServerOutput::History { from, at, aggregate } => {
                    self.store.append_policy_history(&from, at, &aggregate)?
                }
                ServerOutput::AdminReply { request, reply } => {
                    if let Some(token) = s.admin.remove(&request) {
                        self.send_on(token, &PolicyWire::AdminReply(reply));
                    }
                }
                ServerOutput::Rejected(rejection) => {
                    warn!(kind = rejection.kind.as_str(), reason = %rejection, "policy input refused")
                }
            }
        }
    }

    // ---- links --------------------------------------------------------------------------------

    /// Opens links that have messages waiting, and sends them.
    fn drive_links(&mut self) -> bool {
        let mut moved = false;
        let now = self.now().mono;
        let mut targets: Vec<(Kind, SocketAddr, PublicIdentity)> = Vec::new();
        if let Some(link) = self.server.as_ref().and_then(|s| s.parent.as_ref())
            && link.token.is_none()
            && !link.queue.is_empty()
            && link.retry_at.is_none_or(|t| t <= now)
        {
            targets.push((Kind::Parent, link.addr, link.identity));
        }
        for (i, a) in self.agents.iter().enumerate() {
            if a.link.token.is_none() && !a.link.queue.is_empty() && a.link.retry_at.is_none_or(|t| t <= now)
            {
                targets.push((Kind::AgentLink(i), a.link.addr, a.link.identity));
            }
        }
        for (kind, addr, id) in targets {
            let token = TcpStream::connect(addr).ok().and_then(|stream| {
                let trust: TrustSet = [id].into_iter().collect();
                let keys = match kind {
                    Kind::AgentLink(i) => self.agent_keys(i),
                    _ => self.keys.clone(),
                };
                let channel =
                    Channel::initiator(now, channel_config(), &keys, trust, fork(&mut self.rng)).ok()?;
                self.add_conn(stream, addr, channel, kind)
            });
            match token {
                Some(token) => {
                    if let Some(link) = self.link_mut(kind) {
                        link.token = Some(token);
                        link.retry_at = None;
                    }
                }
                None => self.link_down(kind),
            }
            moved = true;
        }
        for kind in [Kind::Parent].into_iter().chain((0..self.agents.len()).map(Kind::AgentLink)) {
            let Some(link) = self.link_mut(kind) else { continue };
            let Some(token) = link.token else { continue };
            let queued = std::mem::take(&mut link.queue);
            for message in &queued {
                self.send_on(token, message);
                moved = true;
            }
        }
        moved
    }

    fn agent_keys(&self, i: usize) -> NodeKeys {
        self.agents[i].agent.keys().clone()
    }

    fn link_mut(&mut self, kind: Kind) -> Option<&mut Link> {
        link_of(&mut self.server, &mut self.agents, kind)
    }

    // ---- agents -------------------------------------------------------------------------------

    fn feed_agent(&mut self, i: usize, input: AgentInput) {
        let Some(side) = self.agents.get_mut(i) else { return };
        side.agent.handle(self.clock.now(), input);
        while let Some(out) = side.agent.poll_output() {
            match out {
                AgentOutput::Send { message, .. } => side.link.queue.push(PolicyWire::Tier(message)),
                AgentOutput::Apply(policy) => {
                    let outcome = side.apply(&policy);
                    match &outcome {
                        Ok(()) => {
                            info!(agent = %side.agent.name(), digest = %policy.short(), "policy applied")
                        }
                        Err(e) => warn!(agent = %side.agent.name(), error = %e, "policy not applied"),
                    }
                    let applied = AgentInput::Applied { digest: policy.digest, outcome };
                    side.agent.handle(self.clock.now(), applied);
                }
            }
        }
    }
}

impl AgentSide {
    /// Writes the policy file and starts the hook; what failed, if anything, in words.
    fn apply(&mut self, policy: &EffectivePolicy) -> Result<(), String> {
        let file = self.policy_file.display();
        write_policy(&self.policy_file, self.agent.name(), policy)
            .map_err(|e| format!("could not write {file}: {e}"))?;
        let Some((program, args)) = self.hook.split_first() else { return Ok(()) };
        let child = Command::new(program)
            .args(args)
            .env("COHORT_POLICY_FILE", &self.policy_file)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("the policy hook `{program}` did not start: {e}"))?;
        self.hooks.push(child);
        Ok(())
    }
}

/// The outbound link a connection kind belongs to.
fn link_of<'a>(
    server: &'a mut Option<ServerSide>,
    agents: &'a mut [AgentSide],
    kind: Kind,
) -> Option<&'a mut Link> {
    match kind {
        Kind::Parent => server.as_mut().and_then(|s| s.parent.as_mut()),
        Kind::AgentLink(i) => agents.get_mut(i).map(|a| &mut a.link),
        Kind::Inbound => None,
    }
}

impl Role for PolicyRuntime {
    fn name(&self) -> &'static str {
        "policy"
    }

    fn settle(&mut self) -> Result<(), NodeError> {
        self.drive_all()
    }

    fn next_wake(&self) -> Option<std::time::Instant> {
        self.next_deadline().map(|d| self.clock.wake_at(d))
    }

    fn handle_event(&mut self, event: &Event) -> Result<(), NodeError> {
        match self.slot.local(event.token()) {
            LISTENER => self.accept(),
            _ => self.service(event.token(), event.is_readable(), event.is_writable()),
        }
        Ok(())
    }

    fn fire_timeouts(&mut self) -> Result<(), NodeError> {
        self.fire_due();
        Ok(())
    }

    fn stop(&mut self) {
        info!("policy roles stopped");
    }
}

/// Writes `policy` to `path` atomically: a temporary file beside it, synced, then renamed over.
pub fn write_policy(path: &Path, agent: &str, policy: &EffectivePolicy) -> std::io::Result<()> {
    use std::io::Write;
    let mut text =
        format!("# cohort effective policy for {agent}\n# digest {}\n", hex::encode(policy.digest));
    for (key, value) in &policy.params {
        let (id, version) = &policy.sources[key];
        text.push_str(&format!("{key} = {value:?}  # {id} v{version}\n"));
    }
    let staging = path.with_extension("tmp");
    let mut file = std::fs::File::create(&staging)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&staging, path)
}
