//! Fetching and serving blocks (rules 3-4): a member that hears of a newer version asks for it,
//! the author first and then any member that advertised it, moving on when one refuses or is
//! silent; and every member serves any roster member a whole block it has staged or installed.
//! It never serves a block it has not verified and opened itself (only its staged and active
//! ones, never a joiner's anchor), and never stages a reply that does not verify.

use super::super::block::{ConfigBlock, SignedHeader, verify_and_open, verify_header};
use super::super::config::Version;
use super::super::io::{DropReason, MemberOutput, StoredConfig};
use super::super::messages::{FetchRequest, MemberMessage};
use super::Member;
use crate::identity::NodeId;
use crate::signed::Signed;
use crate::time::Instant;

/// The version this member is fetching, and from whom.
pub(super) struct Fetch {
    pub(super) version: Version,
    /// Who may hold it: the author first, then members that advertised it.
    sources: Vec<NodeId>,
    next_source: usize,
    pub(super) deadline: Instant,
}

impl Member {
    pub(super) fn want(&mut self, now: Instant, version: Version, advertiser: NodeId) {
        match &mut self.fetch {
            Some(fetch) if fetch.version == version => {
                if !fetch.sources.contains(&advertiser) {
                    fetch.sources.push(advertiser);
                }
                return;
            }
            Some(fetch) if fetch.version > version => return,
            _ => {}
        }
        let mut sources = Vec::new();
        if version.author != self.id && self.known_member(&version.author).is_some() {
            sources.push(version.author);
        }
        if !sources.contains(&advertiser) {
            sources.push(advertiser);
        }
        self.fetch = Some(Fetch { version, sources, next_source: 0, deadline: now });
        self.send_fetch(now);
    }

    /// Asks the next source in turn, and arms the retry.
    pub(super) fn send_fetch(&mut self, now: Instant) {
        let Some(fetch) = &mut self.fetch else { return };
        let Some(&to) = fetch.sources.get(fetch.next_source % fetch.sources.len().max(1)) else {
            return;
        };
        fetch.next_source = fetch.next_source.wrapping_add(1);
        fetch.deadline = now + self.settings.fetch_retry;
        let version = fetch.version;
        let request = FetchRequest { cluster_id: self.cluster_id().to_owned(), requester: self.id, version };
        let Some(address) = self.known_member(&to).map(|m| m.address.clone()) else { return };
        let Ok(signed) = Signed::sign(request, &self.keys) else { return };
        self.outputs.push_back(MemberOutput::Send {
            to,
            address,
            message: Box::new(MemberMessage::Fetch(signed)),
        });
    }

    pub(super) fn handle_fetch(&mut self, now: Instant, from: NodeId, signed: Signed<FetchRequest>) {
        let request = &signed.body;
        if request.requester != from {
            return self.drop_message(DropReason::WrongPeer { claimed: request.requester, peer: from });
        }
        if request.cluster_id != self.cluster_id() {
            return self.drop_message(DropReason::WrongCluster);
        }
        let Some(requester) = self.known_member(&request.requester).cloned() else {
            return self.drop_message(DropReason::UnknownSender(request.requester));
        };
        if signed.verify(&requester.identity).is_err() {
            return self.drop_message(DropReason::BadSignature(request.requester));
        }
        // Only what this member verified and opened itself; a joiner's anchor has no body.
        let held = [Some(&self.durable.active), self.durable.staged.as_ref()]
            .into_iter()
            .flatten()
            .find(|s| s.version() == request.version && s.config.is_member(&self.id));
        let digest = requester.identity.key_digest();
        let reply = match held {
            Some(s) if !s.block.lists(&digest) => {
                MemberMessage::NotInVersion { header: s.block.header.clone() }
            }
            Some(s) => {
                // A requester asks one source again only after its retry interval; half of it
                // leaves room for one message arriving late and the next early.
                let window = self.settings.fetch_retry / 2;
                if let Some((version, at)) = self.served.get(&request.requester)
                    && *version == request.version
                    && now < *at + window
                {
                    return self.drop_message(DropReason::RepeatedFetch(request.requester));
                }
                self.served.insert(request.requester, (request.version, now));
                MemberMessage::FetchReply { block: Box::new(s.block.clone()) }
            }
            None => MemberMessage::FetchRefused { version: request.version },
        };
        self.outputs.push_back(MemberOutput::Send {
            to: request.requester,
            address: requester.address,
            message: Box::new(reply),
        });
    }

    pub(super) fn handle_fetch_reply(&mut self, now: Instant, from: NodeId, block: ConfigBlock) {
        let version = block.version();
        if version <= self.newest_intended() {
            return self.drop_message(DropReason::StaleReply(version));
        }
        let config = match verify_and_open(self.cluster_id(), &block, &self.keys, &self.trusted_authors()) {
            Ok(config) => config,
            Err(error) => return self.drop_message(DropReason::BadBlock { version, error }),
        };
        self.stage(now, StoredConfig { block, config }, Some(from));
    }

    pub(super) fn handle_fetch_refused(&mut self, now: Instant, version: Version) {
        // Another source may hold it: move on at once rather than wait out the retry.
        if self.fetch.as_ref().is_some_and(|f| f.version == version) {
            self.send_fetch(now);
        }
    }

    /// A header that leaves this member out of the version it is fetching: believed only if it
    /// verifies against the authors this member trusts and is the version it asked for.
    pub(super) fn handle_not_in_version(&mut self, header: SignedHeader) {
        let version = header.body.version;
        if self.fetch.as_ref().is_none_or(|f| f.version != version) {
            return self.drop_message(DropReason::StaleReply(version));
        }
        if let Err(error) = verify_header(self.cluster_id(), &header, &self.trusted_authors()) {
            return self.drop_message(DropReason::BadBlock { version, error });
        }
        if header.body.entries.contains_key(&self.digest) {
            // It lists this member after all: an entry is to be had; keep fetching.
            return;
        }
        self.fetch = None;
        self.removed = Some(version);
        self.next_heartbeat = None;
        self.outputs.push_back(MemberOutput::Removed { version });
    }
}
