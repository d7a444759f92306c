//! The client side of a site: what a scenario's script does through the gateway (log in, run,
//! hang up early), straight to a host or the collector (the raw material of replays and
//! forgeries), and with tickets a holder of the KDC's key could mint. It decides nothing about
//! the site; the nodes judge everything it sends.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cohort_core::exec::audit::AuditRecord;
use cohort_core::exec::daemon::ExecRequest;
use cohort_core::exec::gateway::{ClientEvent, ClientRequest, ExecCommand};
use cohort_core::exec::kdc::Kdc;
use cohort_core::exec::task::Task;
use cohort_core::exec::ticket::{Authenticator, Credential, request_digest};
use cohort_core::exec::wire::{GatewayReply, GatewayWire};
use cohort_core::rng::{SeededRng, fork};
use cohort_core::signed::Signed;
use cohort_core::{NodeKeys, PublicIdentity, WallClock};

use super::{GATEWAY_PORT, PASSWORD, host_port};
use crate::browser::{SimBrowser, SimWeb};
use crate::operator::{self, Conversation};

/// A logged-in client: its channel key and the credential bound to it.
#[derive(Debug, Clone)]
pub struct Login {
    pub keys: NodeKeys,
    pub credential: Signed<Credential>,
}

/// The client side of a scenario: cheap to clone into the simulated client task.
#[derive(Clone)]
pub struct SiteClient {
    pub(super) gateway: PublicIdentity,
    pub(super) hosts: Vec<PublicIdentity>,
    /// The site's KDC, rebuilt from its key and principals: what holding a genuine ticket takes.
    pub(super) kdc: Arc<Mutex<Kdc>>,
    pub(super) rng: Arc<Mutex<SeededRng>>,
    /// Where browsers reach the gateway's console, when the site serves one.
    pub(super) web: Option<SimWeb>,
}

impl std::fmt::Debug for SiteClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteClient").field("hosts", &self.hosts.len()).finish_non_exhaustive()
    }
}

/// Long enough for any run a scenario makes.
const PATIENCE: Duration = Duration::from_secs(120);

impl SiteClient {
    /// A fresh rng, forked in the order the script asks (so a run replays).
    pub fn rng(&self) -> SeededRng {
        fork(&mut *self.rng.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// A fresh browser at address `peer`, with an empty cookie jar.
    pub fn browser(&self, peer: &str) -> Result<SimBrowser, String> {
        let web = self.web.clone().ok_or("this site serves no web console (SiteSpec::web)")?;
        Ok(SimBrowser::new(web, peer))
    }

    pub fn new_keys(&self) -> NodeKeys {
        NodeKeys::generate(&mut self.rng())
    }

    /// Logs in over a fresh channel key; the refusal's reason otherwise.
    pub async fn login(&self, principal: &str, password: &str) -> Result<Login, String> {
        let keys = self.new_keys();
        let request = GatewayWire::Client(ClientRequest::Login {
            principal: principal.into(),
            password: password.into(),
        });
        let addr = format!("gw:{GATEWAY_PORT}");
        let reply: GatewayReply =
            operator::ask(&addr, self.gateway, &keys, &request, self.rng(), PATIENCE).await?;
        match reply {
            GatewayReply::Client(ClientEvent::LoggedIn { credential }) => Ok(Login { keys, credential }),
            GatewayReply::Client(ClientEvent::Refused { reason }) => Err(reason),
            other => Err(format!("unexpected answer to a login: {other:?}")),
        }
    }

    /// A command as `cohort exec` sends it by default: fanout 8, T1/T2/T3 16/32/2 s, 1 MiB cap.
    pub fn command(&self, credential: &Signed<Credential>, hosts: &[&str], argv: &[&str]) -> ExecCommand {
        ExecCommand {
            credential: credential.clone(),
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            exclude: Vec::new(),
            run_as: "alice".into(),
            task: Task::Run {
                argv: argv.iter().map(|a| (*a).to_owned()).collect(),
                stdin: Vec::new(),
                env: Vec::new(),
            },
            fanout: 8,
            t1_ms: 16_000,
            t2_ms: 32_000,
            t3_ms: 2_000,
            max_output: 1024 * 1024,
            connect_timeout_ms: 10_000,
        }
    }

    /// Runs `hosts argv` as `login` and returns every event until the run finished or was
    /// refused.
    pub async fn exec(
        &self,
        login: &Login,
        hosts: &[&str],
        argv: &[&str],
    ) -> Result<Vec<ClientEvent>, String> {
        self.run(&login.keys, self.command(&login.credential, hosts, argv)).await
    }

    /// Sends `command` over a channel with `keys` and collects the events until the end.
    pub async fn run(&self, keys: &NodeKeys, command: ExecCommand) -> Result<Vec<ClientEvent>, String> {
        self.run_until(keys, command, |e| matches!(e, ClientEvent::Finished | ClientEvent::Refused { .. }))
            .await
    }

    /// Like [`SiteClient::run`], but hangs up as soon as `stop` says so.
    pub async fn run_until(
        &self,
        keys: &NodeKeys,
        command: ExecCommand,
        stop: impl Fn(&ClientEvent) -> bool,
    ) -> Result<Vec<ClientEvent>, String> {
        let addr = format!("gw:{GATEWAY_PORT}");
        let request = GatewayWire::Client(ClientRequest::Exec(Box::new(command)));
        let replies: Vec<GatewayReply> = operator::converse(
            &addr,
            self.gateway,
            keys,
            &request,
            self.rng(),
            PATIENCE,
            |r| matches!(r, GatewayReply::Client(e) if stop(e)),
        )
        .await?;
        Ok(replies
            .into_iter()
            .filter_map(|r| match r {
                GatewayReply::Client(e) => Some(e),
                _ => None,
            })
            .collect())
    }

    /// A request for `host` built the way the gateway builds one, from a genuine ticket for
    /// `ticket_host` and an authenticator stamped `stamp`: the raw material of replays and
    /// forgeries.
    pub fn request(
        &self,
        ticket_host: &str,
        host: &str,
        stamp: WallClock,
        argv: &[&str],
    ) -> Result<ExecRequest, String> {
        let task = Task::Run {
            argv: argv.iter().map(|a| (*a).to_owned()).collect(),
            stdin: Vec::new(),
            env: Vec::new(),
        };
        self.request_task(ticket_host, host, stamp, task)
    }

    /// [`SiteClient::request`] for any task (variables passed, a copy).
    pub fn request_task(
        &self,
        ticket_host: &str,
        host: &str,
        stamp: WallClock,
        task: Task,
    ) -> Result<ExecRequest, String> {
        let client = self.new_keys().public().agreement;
        let mut kdc = self.kdc.lock().unwrap_or_else(PoisonError::into_inner);
        let now = crate::clock::now().wall;
        let credential = kdc.login(now, "alice", PASSWORD, client).map_err(|e| e.to_string())?;
        let issued = kdc.issue_ticket(now, &credential, &client, ticket_host).map_err(|e| e.to_string())?;
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&stamp.0.to_le_bytes());
        let auth = Authenticator {
            principal: "alice".into(),
            timestamp: stamp,
            nonce,
            request_digest: request_digest(host, "alice", &task),
        };
        let authenticator =
            auth.seal(&issued.session_key, host, &mut self.rng()).map_err(|e| e.to_string())?;
        Ok(ExecRequest {
            ticket: issued.ticket,
            authenticator,
            run_as: "alice".into(),
            task,
            max_output: 1 << 20,
        })
    }

    /// Managed host `host`'s public keys (what anyone may know).
    pub fn host_identity(&self, host: usize) -> Option<PublicIdentity> {
        self.hosts.get(host).copied()
    }

    /// A channel straight to managed host `host`, presenting `keys`: what a gateway (or an
    /// attacker) has.
    pub async fn to_host(&self, host: usize, keys: &NodeKeys) -> Result<Conversation, String> {
        let identity = *self.hosts.get(host).ok_or_else(|| format!("no host {host}"))?;
        Conversation::open(&format!("exec:{}", host_port(host)), identity, keys, self.rng()).await
    }

    /// A channel to the gateway presenting `keys`, for a client that does more than one exchange
    /// (or hangs up half way).
    pub async fn to_gateway(&self, keys: &NodeKeys) -> Result<Conversation, String> {
        Conversation::open(&format!("gw:{GATEWAY_PORT}"), self.gateway, keys, self.rng()).await
    }

    /// A record sent to the collector as an exec node sends it, over a channel with `keys`;
    /// returns the collector's answer.
    pub async fn submit_audit(
        &self,
        keys: &NodeKeys,
        record: Signed<AuditRecord>,
    ) -> Result<GatewayReply, String> {
        let addr = format!("gw:{GATEWAY_PORT}");
        let request = GatewayWire::AuditSubmit { ack: 1, record };
        operator::ask(&addr, self.gateway, keys, &request, self.rng(), PATIENCE).await
    }
}
