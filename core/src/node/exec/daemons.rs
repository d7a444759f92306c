//! The exec daemons a node plays, one per managed host (a node may play a thousand), and what
//! keeps the cost of a turn to the hosts that did something in it: which daemons were handed an
//! input since their outputs were last taken, and every other daemon's next deadline in time
//! order, so neither a drain nor the next wake-up asks all of them. It never looks inside what a
//! daemon is told or says: `ExecHost` maps that.

use std::collections::BTreeSet;

use crate::exec::daemon::{DaemonInput, DaemonOutput, ExecDaemon};
use crate::machine::Machine;
use crate::node::io::ListenerId;
use crate::time::{Instant, Now};

/// One managed host: its daemon and the listener it answers on.
#[derive(Debug)]
pub(super) struct Host {
    pub daemon: ExecDaemon,
    pub listener: ListenerId,
}

/// The node's daemons. See the module docs.
#[derive(Debug)]
pub(super) struct Daemons {
    hosts: Vec<Host>,
    /// Handed an input since their outputs were last all taken: what they say and when they
    /// next wake may have changed.
    stirred: BTreeSet<usize>,
    /// The next deadline of each daemon not stirred, earliest first ...
    deadlines: BTreeSet<(Instant, usize)>,
    /// ... and each daemon's entry there.
    filed: Vec<Option<Instant>>,
}

impl Daemons {
    /// Every daemon starts stirred: its first outputs and deadline are taken on the first drain.
    pub fn new(hosts: Vec<Host>) -> Daemons {
        let count = hosts.len();
        Daemons { hosts, stirred: (0..count).collect(), deadlines: BTreeSet::new(), filed: vec![None; count] }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Host> {
        self.hosts.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Hands `input` to host `host`'s daemon (if there is such a host).
    pub fn handle(&mut self, host: usize, now: Now, input: DaemonInput) {
        let Some(h) = self.hosts.get_mut(host) else { return };
        h.daemon.handle(now, input);
        if let Some(at) = self.filed.get_mut(host).and_then(Option::take) {
            self.deadlines.remove(&(at, host));
        }
        self.stirred.insert(host);
    }

    /// The earliest deadline of any daemon.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let stirred = self.stirred.iter().filter_map(|i| self.hosts.get(*i)?.daemon.poll_timeout());
        self.deadlines.first().map(|(at, _)| *at).into_iter().chain(stirred).min()
    }

    /// Wakes every daemon whose deadline has come, in host order.
    pub fn handle_timeout(&mut self, now: Now) {
        let filed = self.deadlines.iter().take_while(|(at, _)| *at <= now.mono).map(|(_, i)| *i);
        let stirred = self.stirred.iter().copied().filter(|i| {
            self.hosts.get(*i).and_then(|h| h.daemon.poll_timeout()).is_some_and(|at| at <= now.mono)
        });
        let due: BTreeSet<usize> = filed.chain(stirred).collect();
        for host in due {
            self.handle(host, now, DaemonInput::Timeout);
        }
    }

    /// The next output of a stirred daemon, lowest host first, with its host. A daemon with
    /// nothing left to say is settled: its deadline is filed.
    pub fn poll_output(&mut self) -> Option<(usize, DaemonOutput)> {
        while let Some(&host) = self.stirred.first() {
            let daemon = &mut self.hosts.get_mut(host)?.daemon;
            if let Some(output) = daemon.poll_output() {
                return Some((host, output));
            }
            self.stirred.remove(&host);
            if let Some(at) = daemon.poll_timeout()
                && let Some(filed) = self.filed.get_mut(host)
            {
                self.deadlines.insert((at, host));
                *filed = Some(at);
            }
        }
        None
    }
}
