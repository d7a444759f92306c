//! The web console on a node's gateway: the requests the driver's HTTPS front parsed go to the
//! console, and its answers leave as outputs. Owns counting each streamed answer's unread bytes,
//! so a browser that stops reading loses its run instead of filling the node's memory. Every web
//! rule (sessions, CSRF, what a form asks the gateway) is the console's; this never decides one.

use std::collections::BTreeMap;

use super::super::Effects;
use super::super::io::{Event, Output};
use super::{ExecHost, GatewaySlot};
use crate::exec::gateway::GatewayInput;
use crate::time::Now;
use crate::web::{ConsoleOutput, RequestId, WebConsole, WebLimits, WebRequest, WebResponse};

/// The web console a gateway serves, and where.
#[derive(Debug, Clone)]
pub struct WebRole {
    pub listen: String,
    pub limits: WebLimits,
}

#[derive(Debug)]
pub(super) struct WebSlot {
    pub(super) console: WebConsole,
    limits: WebLimits,
    /// Bytes of each streamed answer handed to the driver and not yet taken by its connection.
    unread: BTreeMap<RequestId, usize>,
}

impl WebSlot {
    /// Asks the driver for the listener.
    pub(super) fn new(role: WebRole, console: WebConsole, fx: &mut Effects<'_>) -> WebSlot {
        fx.out.push_back(Output::ListenWeb { addr: role.listen, limits: role.limits });
        WebSlot { console, limits: role.limits, unread: BTreeMap::new() }
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
    pub(super) fn carry_out(&mut self, out: ConsoleOutput, fx: &mut Effects<'_>) -> Option<GatewayInput> {
        match out {
            ConsoleOutput::Gateway(input) => return Some(input),
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
    /// A request from the web front: the gateway's console answers it, or (no console here) a
    /// plain refusal does.
    pub fn on_web_request(&mut self, now: Now, request: RequestId, web: WebRequest, fx: &mut Effects<'_>) {
        match self.gateway.as_mut() {
            Some(GatewaySlot { web: Some(slot), gateway, .. }) => {
                slot.console.handle_request(now, request, web, gateway)
            }
            _ => {
                let error = serde_json::json!({ "error": "this node serves no web console" });
                let response = Box::new(WebResponse::json(404, &error));
                fx.out.push_back(Output::WebRespond { request, response });
            }
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
