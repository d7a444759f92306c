//! A member site: cluster members from a genesis configuration, each a core node on the one
//! turmoil host driver, driven step by step by a test. Owns the mapping from a scenario's verbs
//! (run for a while, cut or heal links, crash or restart a member, ask a member as an operator
//! over its admin channel, send a forged message on a channel of its own) onto turmoil, and what it reads
//! back (each member's view from the driver's probe, the observer's installs, the trace). It
//! never decides, retries or repairs anything for a member: every rule is the members', and a
//! broken invariant ends the run with an error. Same seed, same run, byte for byte.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cohort_core::admin::{AdminRequest, AdminResponse, LookupReply, NodeStatus};
use cohort_core::member::block::BlockError;
use cohort_core::member::{Change, ChangeRequest, MemberInfo, MemberSettings, Version};
use cohort_core::rng::{SeededRng, fork, seeded};
use cohort_core::signed::Signed;
use cohort_core::trace::{Trace, short};
use cohort_core::{Instant, NodeId, NodeKeys, PublicIdentity};
use rand_core::RngCore;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::member_view::{MemberView, SharedViews, probe};
use crate::members::{Genesis, MEMBER_PORT, admin_addr, host_name};
use crate::node_host::{self, NodeHostContext, SharedCapture, SharedTrace};
use crate::observer::Observer;
use crate::operator;

/// The cluster id every site's genesis names.
pub const CLUSTER_ID: &str = "sim";
/// Each message takes 1 ms up to this long on a link.
pub const MAX_LATENCY: Duration = Duration::from_millis(5);
/// Long enough for a forger's channel to finish its handshake and deliver one message.
const FORGED_DELIVERY: Duration = Duration::from_millis(100);
/// How long the operator waits for an answer, as `cohort admin` would.
const PATIENCE: Duration = Duration::from_secs(5);
/// Far longer than any scenario: turmoil fails a run that outlives its duration.
const SIMULATION_LIMIT: Duration = Duration::from_secs(3_600);
/// The two hosts outside the cluster: one plays the operator, one forges member traffic.
const OPERATOR: &str = "operator";
const FORGER: &str = "forger";

pub type SiteResult<T> = Result<T, SiteError>;

#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error("genesis could not be sealed: {0}")]
    Genesis(#[from] BlockError),
    #[error("the simulation failed at {at:?}: {what}")]
    Simulation { at: Duration, what: String },
    #[error("invariant violated: {0}")]
    Invariant(String),
    /// The operator got no answer: the channel was refused or closed, or the node said nothing.
    #[error("no answer from {node}: {why}")]
    NoAnswer { node: String, why: String },
    #[error("{node} answered {answer:?}, not a {wanted}")]
    Unexpected { node: String, answer: Box<AdminResponse>, wanted: &'static str },
    #[error("there is no node {0}")]
    NoSuchNode(usize),
    #[error("could not sign a request: {0}")]
    Sign(String),
}

/// Where an answer to the operator lands.
type Slot = Arc<Mutex<Option<Result<AdminResponse, String>>>>;

/// Open the admin channel to `addr` (pinning `node`'s key) as `keys`, send `request`, keep the
/// first answer in `answer`.
struct Ask {
    addr: String,
    node: PublicIdentity,
    keys: NodeKeys,
    request: AdminRequest,
    rng: SeededRng,
    answer: Slot,
}

/// What a host outside the cluster is asked to do.
enum Job {
    Ask(Box<Ask>),
    /// Open a channel to `addr` presenting `keys` (a member's stolen key, or a stranger's), send
    /// `bytes` as one message, and hang up.
    Send(Box<Forged>),
}

/// One message a forger sends on a channel of its own.
struct Forged {
    addr: String,
    node: cohort_core::PublicIdentity,
    keys: NodeKeys,
    bytes: Vec<u8>,
    rng: SeededRng,
}

/// See the module docs.
pub struct MemberSite {
    sim: turmoil::Sim<'static>,
    genesis: Genesis,
    observer: Observer,
    trace: SharedTrace,
    views: SharedViews,
    operator_jobs: UnboundedSender<Job>,
    forger_jobs: UnboundedSender<Job>,
    rng: SeededRng,
    /// Member links cut, one way: (from, to).
    cuts: BTreeSet<(usize, usize)>,
    /// Every byte the members put on the wire.
    capture: SharedCapture,
    down: BTreeSet<usize>,
}

impl std::fmt::Debug for MemberSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberSite")
            .field("elapsed", &self.sim.elapsed())
            .field("nodes", &self.genesis.keys.len())
            .field("cuts", &self.cuts)
            .field("down", &self.down)
            .finish_non_exhaustive()
    }
}

impl MemberSite {
    /// `members` founding members on their hosts; they boot at the first step.
    pub fn new(members: usize, seed: u64) -> SiteResult<MemberSite> {
        MemberSite::with_joiners(members, 0, seed)
    }

    /// `members` founders plus `joiners` nodes that hold the genesis configuration without being in
    /// its roster, each on its own simulated host.
    pub fn with_joiners(members: usize, joiners: usize, seed: u64) -> SiteResult<MemberSite> {
        let mut rng = seeded(seed);
        let genesis = Genesis::new(CLUSTER_ID, members, joiners, &mut rng)?;
        let observer = Observer::default();
        let trace = SharedTrace::default();
        let capture = SharedCapture::default();
        let views: SharedViews =
            Arc::new(Mutex::new(genesis.records.iter().map(MemberView::of_record).collect()));
        let mut sim = crate::clock::simulation(seed, SIMULATION_LIMIT, MAX_LATENCY);
        for i in 0..genesis.keys.len() {
            let host_seed = fork(&mut rng).next_u64();
            let ctx =
                genesis.context(i, MemberSettings::default(), host_seed).ok_or(SiteError::NoSuchNode(i))?;
            let ctx = NodeHostContext {
                observer: observer.clone(),
                trace: Some(trace.clone()),
                probe: Some(probe(views.clone(), i)),
                capture: Some(capture.clone()),
                ..ctx
            };
            sim.host(host_name(i), move || node_host::run(ctx.clone()));
        }
        let (operator_jobs, jobs) = unbounded_channel();
        sim.client(OPERATOR, outside(jobs));
        let (forger_jobs, jobs) = unbounded_channel();
        sim.client(FORGER, outside(jobs));
        Ok(MemberSite {
            sim,
            genesis,
            observer,
            trace,
            views,
            operator_jobs,
            forger_jobs,
            rng,
            cuts: BTreeSet::new(),
            down: BTreeSet::new(),
            capture,
        })
    }

    // ---- time ------------------------------------------------------------------------------

    /// Simulated time since the site started.
    pub fn elapsed(&self) -> Duration {
        self.sim.elapsed()
    }

    /// Runs the simulation for `span`. Fails at the first broken invariant.
    pub fn run_for(&mut self, span: Duration) -> SiteResult<()> {
        let until = self.sim.elapsed() + span;
        while self.sim.elapsed() < until {
            self.step()?;
        }
        Ok(())
    }

    fn step(&mut self) -> SiteResult<()> {
        self.sim.step().map_err(|e| SiteError::Simulation { at: self.sim.elapsed(), what: e.to_string() })?;
        match self.observer.violation() {
            Some(violation) => Err(SiteError::Invariant(violation)),
            None => Ok(()),
        }
    }

    // ---- faults ------------------------------------------------------------------------------

    /// Cuts member `i` off from every other member, both ways (not from the operator).
    pub fn isolate(&mut self, i: usize) {
        for j in (0..self.genesis.keys.len()).filter(|j| *j != i) {
            self.sim.partition(host_name(i), host_name(j));
            self.cuts.extend([(i, j), (j, i)]);
        }
        self.note(&host_name(i), "partitioned from every member");
    }

    /// Nothing member `from` sends reaches member `to`; the other way still works.
    pub fn cut_oneway(&mut self, from: usize, to: usize) {
        self.sim.partition_oneway(host_name(from), host_name(to));
        self.cuts.insert((from, to));
        self.note(&host_name(from), &format!("cannot reach {}", host_name(to)));
    }

    /// Repairs every link cut so far.
    pub fn heal(&mut self) {
        for (from, to) in std::mem::take(&mut self.cuts) {
            self.sim.repair_oneway(host_name(from), host_name(to));
        }
        self.note("net", "partition healed");
    }

    /// Stops member `i`'s host: what it had not synced to its disk is lost.
    pub fn crash(&mut self, i: usize) {
        self.sim.crash(host_name(i));
        self.down.insert(i);
        self.note(&host_name(i), "crashed");
    }

    /// Starts member `i`'s host again, from what its disk kept.
    pub fn restart(&mut self, i: usize) {
        self.sim.bounce(host_name(i));
        self.down.remove(&i);
        self.note(&host_name(i), "restarted from its disk");
    }

    // ---- the operator and the forger -------------------------------------------------------

    /// A change request signed by the cluster's operator, based on `base`.
    pub fn change_request(&self, base: Version, changes: Vec<Change>) -> SiteResult<Signed<ChangeRequest>> {
        let request = ChangeRequest {
            cluster_id: CLUSTER_ID.into(),
            base,
            changes,
            operator: self.genesis.operator.public().signing,
        };
        Signed::sign(request, &self.genesis.operator).map_err(|e| SiteError::Sign(e.to_string()))
    }

    /// The operator asks member `at` to apply `changes` to the configuration it has active, as
    /// `cohort admin set` does, and gets the member's answer.
    pub fn change(&mut self, at: usize, changes: Vec<Change>) -> SiteResult<AdminResponse> {
        let request = self.change_request(self.view(at)?.active_version(), changes)?;
        let operator = self.genesis.operator.clone();
        self.ask(at, &operator, AdminRequest::Change(request))
    }

    /// The operator looks `key` up at member `at` (every setting when `None`).
    pub fn lookup(&mut self, at: usize, key: Option<&str>) -> SiteResult<LookupReply> {
        let operator = self.genesis.operator.clone();
        match self.ask(at, &operator, AdminRequest::Lookup { key: key.map(str::to_owned) })? {
            AdminResponse::Lookup(reply) => Ok(reply),
            other => {
                Err(SiteError::Unexpected { node: host_name(at), answer: Box::new(other), wanted: "lookup" })
            }
        }
    }

    /// What the operator's `cohort status` shows for member `at`.
    pub fn status(&mut self, at: usize) -> SiteResult<NodeStatus> {
        let operator = self.genesis.operator.clone();
        match self.ask(at, &operator, AdminRequest::Status)? {
            AdminResponse::Status(status) => Ok(status),
            other => {
                Err(SiteError::Unexpected { node: host_name(at), answer: Box::new(other), wanted: "status" })
            }
        }
    }

    /// Opens member `at`'s admin channel presenting `keys`, sends `request`, and runs the
    /// simulation until the answer comes back (or the operator gives up).
    pub fn ask(&mut self, at: usize, keys: &NodeKeys, request: AdminRequest) -> SiteResult<AdminResponse> {
        let node = self.keys(at)?.public();
        let what = match &request {
            AdminRequest::Status => "status".to_owned(),
            AdminRequest::Change(r) => format!("change of {} on {}", r.body.changes.len(), r.body.base),
            AdminRequest::Lookup { key } => format!("lookup {key:?}"),
            AdminRequest::JoinAnchor => "join anchor".to_owned(),
        };
        self.note(OPERATOR, &format!("asks {}: {what}", host_name(at)));
        let answer = Slot::default();
        let job = Job::Ask(Box::new(Ask {
            addr: admin_addr(at),
            node,
            keys: keys.clone(),
            request,
            rng: fork(&mut self.rng),
            answer: answer.clone(),
        }));
        let no_answer = |why: String| SiteError::NoAnswer { node: host_name(at), why };
        self.operator_jobs.send(job).map_err(|_| no_answer("the operator host stopped".into()))?;
        // The operator's own timeout ends the exchange; a little more covers the job's hand-over.
        let until = self.sim.elapsed() + PATIENCE + Duration::from_secs(1);
        while self.sim.elapsed() < until {
            self.step()?;
            if let Some(result) = answer.lock().unwrap_or_else(PoisonError::into_inner).take() {
                return result.map_err(no_answer);
            }
        }
        Err(no_answer(format!("nothing within {PATIENCE:?}")))
    }

    /// Opens a channel from a host outside the cluster to member `to`'s member port presenting
    /// `keys`, sends `bytes` as one message, and runs until it has arrived and been handled (a
    /// key outside the roster gets no channel, so nothing arrives).
    pub fn inject(&mut self, to: usize, keys: &NodeKeys, bytes: Vec<u8>) -> SiteResult<()> {
        let addr = format!("{}:{MEMBER_PORT}", host_name(to));
        let node = self.keys(to)?.public();
        self.note(FORGER, &format!("sends {} to {addr} as {}", short(&bytes), keys.node_id()));
        let job =
            Job::Send(Box::new(Forged { addr, node, keys: keys.clone(), bytes, rng: fork(&mut self.rng) }));
        self.forger_jobs.send(job).map_err(|_| SiteError::NoAnswer {
            node: FORGER.into(),
            why: "the forger host stopped".into(),
        })?;
        self.run_for(FORGED_DELIVERY)
    }

    // ---- what the site reads back ----------------------------------------------------------

    /// Member `i` as its probe last saw it (while it is down, as it was when it went down).
    pub fn view(&self, i: usize) -> SiteResult<MemberView> {
        self.views
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(i)
            .cloned()
            .ok_or(SiteError::NoSuchNode(i))
    }

    /// Every node's view, founders then joiners.
    pub fn views(&self) -> Vec<MemberView> {
        self.views.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Whether every running node has `version` active.
    pub fn installed_everywhere(&self, version: Version) -> bool {
        self.views()
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.down.contains(i))
            .all(|(_, v)| v.active_version() == version)
    }

    /// Every install the observer saw, in order: (node, version, when).
    pub fn installs(&self) -> Vec<(usize, Version, Duration)> {
        let state = self.observer.lock();
        state.installs.iter().filter_map(|(id, v, at)| Some((self.index_of(id)?, *v, *at))).collect()
    }

    /// Each restart: the node, and the active and staged versions it came back with.
    pub fn recoveries(&self) -> Vec<(usize, Version, Option<Version>)> {
        let state = self.observer.lock();
        state
            .recoveries
            .iter()
            .filter_map(|(id, _, active, staged)| Some((self.index_of(id)?, *active, *staged)))
            .collect()
    }

    pub fn nodes(&self) -> usize {
        self.genesis.keys.len()
    }

    pub fn keys(&self, i: usize) -> SiteResult<&NodeKeys> {
        self.genesis.keys.get(i).ok_or(SiteError::NoSuchNode(i))
    }

    pub fn node_id(&self, i: usize) -> SiteResult<NodeId> {
        self.keys(i).map(NodeKeys::node_id)
    }

    /// The cluster's operator key, the one the genesis configuration lists.
    pub fn operator(&self) -> &NodeKeys {
        &self.genesis.operator
    }

    /// The genesis configuration's version.
    pub fn genesis_version(&self) -> Version {
        self.genesis.config.version
    }

    /// Node `i`'s roster entry, for an add-member change.
    pub fn info(&self, i: usize) -> SiteResult<MemberInfo> {
        self.genesis.info(i).ok_or(SiteError::NoSuchNode(i))
    }

    fn index_of(&self, id: &NodeId) -> Option<usize> {
        self.genesis.keys.iter().position(|k| k.node_id() == *id)
    }

    // ---- the trace -------------------------------------------------------------------------

    /// Every node input and output so far (since the last [`MemberSite::clear_trace`]), with the
    /// site's notes.
    /// Every byte the members have put on the wire so far.
    pub fn captured(&self) -> Vec<u8> {
        self.capture.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn trace(&self) -> Trace {
        self.trace.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Starts the trace afresh: what came before (the boot) is not the scenario's.
    pub fn clear_trace(&mut self) {
        *self.trace.lock().unwrap_or_else(PoisonError::into_inner) = Trace::new();
    }

    /// A remark in the trace at the current simulated time.
    pub fn note(&self, actor: &str, text: &str) {
        let now = Instant::from_nanos(u64::try_from(self.sim.elapsed().as_nanos()).unwrap_or(u64::MAX));
        self.trace.lock().unwrap_or_else(PoisonError::into_inner).note(now, actor, text);
    }
}

/// A host outside the cluster: carries out the jobs the site hands it. Asks run side by side;
/// each answer (or why there was none) goes to the job's slot.
async fn outside(mut jobs: UnboundedReceiver<Job>) -> turmoil::Result {
    while let Some(job) = jobs.recv().await {
        match job {
            Job::Ask(ask) => {
                let Ask { addr, node, keys, request, rng, answer } = *ask;
                tokio::task::spawn_local(async move {
                    let result = operator::ask(&addr, node, &keys, &request, rng, PATIENCE).await;
                    *answer.lock().unwrap_or_else(PoisonError::into_inner) = Some(result);
                });
            }
            // A message that cannot be delivered (no channel for that key) is simply not.
            Job::Send(forged) => {
                let Forged { addr, node, keys, bytes, rng } = *forged;
                tokio::task::spawn_local(async move {
                    let Ok(mut channel) = operator::Conversation::open(&addr, node, &keys, rng).await else {
                        return;
                    };
                    if channel.send_bytes(&bytes).is_ok() {
                        // Until the node hangs up or a while has passed: it answers nothing.
                        let _ =
                            tokio::time::timeout(Duration::from_secs(1), channel.receive::<Vec<u8>>()).await;
                    }
                });
            }
        }
    }
    Ok(())
}
