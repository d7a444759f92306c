//! The gateway's questions to the KDC: a login passed through, and the tickets of a run asked
//! for in batches of the fan-out, one question out at a time (again for hosts whose
//! ticket would expire before they start), each used once to send a session to its host with a
//! fresh authenticator. Owns what a ticket answer
//! means for the run; it never keeps a ticket or session key past the run.

use std::collections::BTreeSet;

use rand_core::RngCore;
use zeroize::Zeroizing;

use super::super::parallel::SessionEnd;
use super::super::ticket::{Authenticator, ServiceTicket, request_digest};
use super::super::wire::{ExecRequest, KdcReply, KdcRequest, TicketGrant};
use super::{Ask, ClientEvent, Gateway, GatewayOutput, Subject};
use crate::time::{Instant, WallClock};

/// A ticket the KDC granted for one host of a run, with the session key its authenticator is
/// made with; dropped (and the key wiped) when the run ends.
#[derive(Debug)]
pub(super) struct HeldTicket {
    pub(super) ticket: ServiceTicket,
    pub(super) session_key: Zeroizing<[u8; 32]>,
    pub(super) expires: WallClock,
}

/// A ticket this close to expiry is asked for again rather than sent.
pub(super) const TICKET_MARGIN_MS: u64 = 10_000;

/// Whether `ticket` may still be sent at `wall`.
fn fresh(ticket: &HeldTicket, wall: WallClock) -> bool {
    ticket.expires.0 > wall.0.saturating_add(TICKET_MARGIN_MS)
}

impl Gateway {
    /// The parallel utility starts `host`: with its ticket in hand the session goes to the host
    /// at once; otherwise it waits while the KDC is asked for the next batch of tickets.
    pub(super) fn start_session(
        &mut self,
        now: Instant,
        wall: WallClock,
        client: u64,
        index: usize,
        host: String,
    ) {
        let session = self.next_session;
        self.next_session += 1;
        if let Some(run) = self.runs.get_mut(&client) {
            run.sessions.insert(index, session);
        }
        self.session_index.insert(session, (client, index));
        let Some(grant) = self.credentials.get_mut(&client) else { return };
        if let Some(reason) = grant.refused.get(&host).cloned() {
            return self.session_ended(now, wall, session, SessionEnd::Failed { reason });
        }
        if grant.tickets.get(&host).is_some_and(|t| fresh(t, wall)) {
            return self.dispatch(now, wall, client, session, &host);
        }
        grant.waiting.push((index, host));
        self.ask_tickets(wall, client);
    }

    /// Asks the KDC, unless a question is out already, for the tickets of the sessions waiting
    /// and of the next hosts not yet started: a batch of the fan-out, so the first sessions
    /// leave once their own tickets are sealed rather than the whole run's; the next batch is
    /// asked for once fewer than half a batch are held, so it is on its way before it is needed.
    fn ask_tickets(&mut self, wall: WallClock, client: u64) {
        let Some(grant) = self.credentials.get_mut(&client) else { return };
        if grant.asking {
            return;
        }
        let started: BTreeSet<usize> =
            self.runs.get(&client).map(|r| r.sessions.keys().copied().collect()).unwrap_or_default();
        let mut hosts: Vec<String> = grant.waiting.iter().map(|(_, h)| h.clone()).collect();
        let ahead = grant
            .hosts
            .iter()
            .enumerate()
            .filter(|(i, h)| !started.contains(i) && !grant.refused.contains_key(*h))
            .map(|(_, h)| h)
            .filter(|h| !grant.tickets.get(*h).is_some_and(|t| fresh(t, wall)))
            .take(grant.ticket_batch)
            .cloned();
        hosts.extend(ahead);
        if hosts.is_empty() {
            return;
        }
        grant.asking = true;
        let request =
            KdcRequest::Tickets { credential: grant.credential.clone(), client_key: grant.client_key, hosts };
        self.ask_kdc(Ask::Tickets { client }, request);
    }

    /// The KDC answered a run's ticket request: keep the tickets, and send every waiting session.
    fn tickets_granted(
        &mut self,
        now: Instant,
        wall: WallClock,
        client: u64,
        reply: Result<Vec<TicketGrant>, String>,
    ) {
        let Some(grant) = self.credentials.get_mut(&client) else { return };
        grant.asking = false;
        let waiting = std::mem::take(&mut grant.waiting);
        match reply {
            Ok(grants) => {
                let answered: BTreeSet<String> = grants.iter().map(|g| g.host.clone()).collect();
                for TicketGrant { host, ticket } in grants {
                    match ticket {
                        Ok(t) => {
                            let held = HeldTicket {
                                ticket: t.ticket,
                                session_key: Zeroizing::new(t.session_key),
                                expires: t.expires,
                            };
                            grant.tickets.insert(host, held);
                        }
                        Err(reason) => {
                            grant.refused.insert(host, reason);
                        }
                    }
                }
                // A session that started after the question left waits for the next one.
                let (now_served, still): (Vec<_>, Vec<_>) =
                    waiting.into_iter().partition(|(_, host)| answered.contains(host));
                grant.waiting = still;
                for (index, host) in now_served {
                    let session = self.runs.get(&client).and_then(|r| r.sessions.get(&index)).copied();
                    let Some(session) = session else { continue };
                    let refused = self.credentials.get(&client).and_then(|g| g.refused.get(&host)).cloned();
                    match refused {
                        Some(reason) => self.session_ended(now, wall, session, SessionEnd::Failed { reason }),
                        None => self.dispatch(now, wall, client, session, &host),
                    }
                }
                self.ask_tickets(wall, client);
            }
            Err(reason) => {
                for (index, _) in waiting {
                    let session = self.runs.get(&client).and_then(|r| r.sessions.get(&index)).copied();
                    if let Some(session) = session {
                        let end = SessionEnd::Failed { reason: reason.clone() };
                        self.session_ended(now, wall, session, end);
                    }
                }
            }
        }
    }

    /// Sends session `session` to `host` with its ticket and a fresh authenticator. The ticket
    /// is used once: a host that runs again gets a new one.
    fn dispatch(&mut self, now: Instant, wall: WallClock, client: u64, session: u64, host: &str) {
        let Some(target) = self.directory.hosts.get(host).cloned() else {
            let reason = "not a managed host in the installed configuration".to_owned();
            return self.session_ended(now, wall, session, SessionEnd::Unreachable { reason });
        };
        let Some(grant) = self.credentials.get_mut(&client) else { return };
        let Some(held) = grant.tickets.remove(host) else {
            let reason = "the KDC granted no ticket for this host".to_owned();
            return self.session_ended(now, wall, session, SessionEnd::Failed { reason });
        };
        if grant.tickets.len() < grant.ticket_batch / 2 {
            self.ask_tickets(wall, client);
        }
        let Some(grant) = self.credentials.get_mut(&client) else { return };
        // `%h` stands for the host's name, as in ClusterShell; the authenticator covers the
        // substituted task, so each host does exactly what it was sent.
        let task = grant.task.for_host(host);
        let run_as = grant.run_as.clone();
        let max_output = grant.max_output;
        let connect_timeout = grant.connect_timeout;
        let mut nonce = [0u8; 16];
        self.rng.fill_bytes(&mut nonce);
        let authenticator = Authenticator {
            principal: grant.credential.body.principal.clone(),
            timestamp: wall,
            nonce,
            request_digest: request_digest(host, &run_as, &task),
        };
        let sealed = match authenticator.seal(&held.session_key, host, &mut self.rng) {
            Ok(sealed) => sealed,
            Err(e) => {
                return self.session_ended(now, wall, session, SessionEnd::Failed { reason: e.to_string() });
            }
        };
        let request = ExecRequest { ticket: held.ticket, authenticator: sealed, run_as, task, max_output };
        self.connecting.insert(session, now + connect_timeout);
        self.outputs.push_back(GatewayOutput::HostStart { session, host: target, request });
    }

    pub(super) fn handle_kdc_reply(
        &mut self,
        now: Instant,
        wall: WallClock,
        ask: u64,
        reply: Result<KdcReply, String>,
    ) {
        let Some(ask) = self.asks.remove(&ask) else { return };
        match (ask, reply) {
            (Ask::Login { client, .. }, Ok(KdcReply::LoggedIn { credential })) => {
                let event = ClientEvent::LoggedIn { credential };
                self.outputs.push_back(GatewayOutput::ToClient { client, event });
                self.outputs.push_back(GatewayOutput::CloseClient { client });
            }
            (Ask::Login { client, principal }, Ok(KdcReply::LoginRefused { public, reason })) => {
                // The trail keeps the precise reason; the client learns only that it failed.
                self.audit_refusal(wall, &principal, Subject::login(), reason);
                self.refuse(client, public);
            }
            (Ask::Login { client, principal }, Err(reason)) => {
                let reason = format!("the KDC could not be reached: {reason}");
                self.audit_refusal(wall, &principal, Subject::login(), reason.clone());
                self.refuse(client, format!("login failed: {reason}"));
            }
            (Ask::Tickets { client }, Ok(KdcReply::Tickets { grants })) => {
                self.tickets_granted(now, wall, client, Ok(grants))
            }
            (Ask::Tickets { client }, Ok(KdcReply::Refused { reason })) => {
                self.tickets_granted(now, wall, client, Err(format!("the KDC refused tickets: {reason}")))
            }
            (Ask::Tickets { client }, Err(reason)) => self.tickets_granted(
                now,
                wall,
                client,
                Err(format!("the KDC could not be reached: {reason}")),
            ),
            (Ask::Login { client, .. } | Ask::Tickets { client }, Ok(other)) => {
                let reason = format!("the KDC answered out of turn ({})", kdc_reply_kind(&other));
                match self.credentials.contains_key(&client) {
                    true => self.tickets_granted(now, wall, client, Err(reason)),
                    false => self.refuse(client, reason),
                }
            }
        }
    }
}

fn kdc_reply_kind(reply: &KdcReply) -> &'static str {
    match reply {
        KdcReply::LoggedIn { .. } => "a credential",
        KdcReply::LoginRefused { .. } => "a login refusal",
        KdcReply::Tickets { .. } => "tickets",
        KdcReply::Refused { .. } => "a refusal",
        KdcReply::Principals(_) => "a principal answer",
    }
}
