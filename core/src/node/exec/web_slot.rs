//! The web console on a node's gateway: the requests the driver's HTTPS front parsed go to the
//! console, and its answers leave as outputs. Owns counting each streamed answer's unread bytes,
//! so a browser that stops reading loses its run instead of filling the node's memory, and the
//! one-question channels to the policy tier's master (each request signed with the gateway's
//! key). Every web rule (sessions, CSRF, what a form asks) is the console's; this never decides
//! one.

use std::collections::BTreeMap;

use super::super::Effects;
use std::time::Duration;

use super::super::conns::{ConnLimits, Owner};
use super::super::io::{AuditReadId, AuditRows, ConnId, Event, Output};
use super::{ExecHost, GatewaySlot, send};
use crate::exec::gateway::GatewayInput;
use crate::identity::{NodeKeys, PublicIdentity};
use crate::member::Member;
use crate::policy::wire::{PolicyAdmin, PolicyAdminRequest, PolicyWire};
use crate::signed::Signed;
use crate::time::Now;
use crate::web::{ConsoleOutput, RequestId, Sources, WebConsole, WebLimits, WebRequest, WebResponse};
use crate::wire;

/// The web console a gateway serves, and where.
#[derive(Debug, Clone)]
pub struct WebRole {
    pub listen: String,
    pub limits: WebLimits,
    /// The policy tier's master, which lists the gateway's key as a viewer: the policy pages ask
    /// it. `None`: no policy pages.
    pub policy_master: Option<PolicyMaster>,
}

/// Where the policy tier's master listens, and its key.
#[derive(Debug, Clone)]
pub struct PolicyMaster {
    pub addr: String,
    pub identity: PublicIdentity,
}

/// A question to the master that hears nothing for this long fails (a current status waits for
/// every local up to the master's own deadline, well inside this).
const MASTER_SILENCE: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub(super) struct WebSlot {
    pub(super) console: WebConsole,
    limits: WebLimits,
    master: Option<PolicyMaster>,
    /// Signs the questions to the master: the gateway's key.
    keys: NodeKeys,
    /// Each question to the master in flight: ask → its connection.
    asks: BTreeMap<u64, ConnId>,
    /// Bytes of each streamed answer handed to the driver and not yet taken by its connection.
    unread: BTreeMap<RequestId, usize>,
}

impl WebSlot {
    /// Asks the driver for the listener.
    pub(super) fn new(
        role: WebRole,
        mut console: WebConsole,
        keys: NodeKeys,
        fx: &mut Effects<'_>,
    ) -> WebSlot {
        fx.out.push_back(Output::ListenWeb { addr: role.listen, limits: role.limits });
        if role.policy_master.is_some() {
            console.serve_policy();
        }
        let master = role.policy_master;
        WebSlot { console, limits: role.limits, master, keys, asks: BTreeMap::new(), unread: BTreeMap::new() }
    }

    /// Whether `owner` is one of the questions to the master.
    pub(super) fn asks_master(&self, owner: Owner) -> bool {
        matches!(owner, Owner::Dial(ask) if self.asks.contains_key(&ask))
    }

    /// The master answered on `ask`'s channel: one answer per channel, which then closes.
    pub(super) fn master_answered(
        &mut self,
        now: Now,
        owner: Owner,
        conn: ConnId,
        bytes: &[u8],
        fx: &mut Effects<'_>,
    ) {
        let Owner::Dial(ask) = owner else { return };
        self.asks.remove(&ask);
        fx.conns.close(conn);
        let reply = match wire::decode::<PolicyWire>(bytes) {
            Ok(PolicyWire::AdminReply(reply)) => Ok(reply),
            Ok(_) => Err("the master sent something other than an answer".to_owned()),
            Err(e) => Err(format!("an undecodable answer: {e}")),
        };
        self.console.handle_policy_reply(now, ask, reply);
    }

    /// `ask`'s channel ended before an answer.
    pub(super) fn master_gone(&mut self, now: Now, owner: Owner, error: Option<String>) {
        let Owner::Dial(ask) = owner else { return };
        if self.asks.remove(&ask).is_some() {
            let error = error.unwrap_or_else(|| "the channel closed without an answer".to_owned());
            self.console.handle_policy_reply(now, ask, Err(error));
        }
    }

    fn ask_master(&mut self, now: Now, ask: u64, request: PolicyAdmin, fx: &mut Effects<'_>) {
        let Some(master) = &self.master else {
            return self.console.handle_policy_reply(now, ask, Err("no policy master is set up".into()));
        };
        let limits = ConnLimits { idle: Some(MASTER_SILENCE), ..ConnLimits::default() };
        let signed = match Signed::sign(PolicyAdminRequest { at: now.wall, request }, &self.keys) {
            Ok(signed) => signed,
            Err(e) => return self.console.handle_policy_reply(now, ask, Err(format!("could not sign: {e}"))),
        };
        match fx.conns.connect(
            now,
            master.addr.clone(),
            &self.keys,
            master.identity,
            Owner::Dial(ask),
            limits,
        ) {
            Ok(conn) => {
                self.asks.insert(ask, conn);
                send(fx, conn, &PolicyWire::Admin(signed));
            }
            Err(e) => self.console.handle_policy_reply(now, ask, Err(e)),
        }
    }

    pub(super) fn sent(&mut self, request: RequestId, bytes: usize) {
        if let Some(unread) = self.unread.get_mut(&request) {
            *unread = unread.saturating_sub(bytes);
        }
    }

    pub(super) fn gone(&mut self, request: RequestId) {
        self.unread.remove(&request);
        self.console.handle_gone(request);
    }

    /// Carries out one of the console's outputs; what it asks of the gateway is returned.
    pub(super) fn carry_out(
        &mut self,
        now: Now,
        out: ConsoleOutput,
        fx: &mut Effects<'_>,
    ) -> Option<GatewayInput> {
        match out {
            ConsoleOutput::Gateway(input) => return Some(input),
            ConsoleOutput::LoggedOutSessionRefused { principal } => {
                fx.log(Event::WebSessionLoggedOut { principal });
            }
            ConsoleOutput::AskPolicy { ask, request } => self.ask_master(now, ask, request, fx),
            ConsoleOutput::ReadAudit { read, range } => {
                fx.out.push_back(Output::ReadAudit { read: AuditReadId(read), range });
            }
            ConsoleOutput::Respond { request, response } => {
                if response.streamed {
                    self.unread.insert(request, 0);
                }
                fx.out.push_back(Output::WebRespond { request, response: Box::new(response) });
            }
            ConsoleOutput::Chunk { request, bytes, last: true } => {
                self.unread.remove(&request);
                fx.out.push_back(Output::WebChunk { request, bytes, last: true });
            }
            ConsoleOutput::Chunk { request, bytes, last: false } => {
                // A chunk for an answer already ended (the browser left) goes nowhere.
                let unread = self.unread.get_mut(&request)?;
                *unread += bytes.len();
                if *unread > self.limits.max_unread {
                    // The console ends the run and sends the stream's last chunk; what it had
                    // queued before that is dropped (no entry any more).
                    fx.log(Event::WebNotReading { request, unread: *unread });
                    self.gone(request);
                } else {
                    fx.out.push_back(Output::WebChunk { request, bytes, last: false });
                }
            }
        }
        None
    }
}

/// The web front's inputs, for the gateway's console.
impl ExecHost {
    /// A request from the web front: the gateway's console answers it (reading the node's
    /// `member` for the cluster's status), or (no console here) a plain refusal does.
    pub fn on_web_request(
        &mut self,
        now: Now,
        request: RequestId,
        web: WebRequest,
        member: Option<&Member>,
        fx: &mut Effects<'_>,
    ) {
        match self.gateway.as_mut() {
            Some(GatewaySlot { web: Some(slot), gateway, .. }) => {
                slot.console.handle_request(now, request, web, Sources { gateway, member })
            }
            _ => {
                let error = serde_json::json!({ "error": "this node serves no web console" });
                let response = Box::new(WebResponse::json(404, &error));
                fx.out.push_back(Output::WebRespond { request, response });
            }
        }
        self.drain(now, fx);
    }

    /// What the store read for the console's audit page.
    pub fn on_audit_read(
        &mut self,
        now: Now,
        read: AuditReadId,
        rows: Result<AuditRows, String>,
        fx: &mut Effects<'_>,
    ) {
        if let Some(GatewaySlot { web: Some(slot), gateway, .. }) = self.gateway.as_mut() {
            slot.console.handle_audit_read(read.0, rows, gateway);
        }
        self.drain(now, fx);
    }

    /// The front handed `bytes` more of a streamed answer to its connection.
    pub fn on_web_sent(&mut self, request: RequestId, bytes: usize) {
        if let Some(slot) = self.gateway.as_mut().and_then(|g| g.web.as_mut()) {
            slot.sent(request, bytes);
        }
    }

    /// The browser went away: a run it was watching is cancelled.
    pub fn on_web_gone(&mut self, now: Now, request: RequestId, fx: &mut Effects<'_>) {
        if let Some(slot) = self.gateway.as_mut().and_then(|g| g.web.as_mut()) {
            slot.gone(request);
        }
        self.drain(now, fx);
    }
}
