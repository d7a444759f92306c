//! The policies a server holds: for each policy id the winning version by the tier's one order
//! ([`PolicyRank`]: version, then author), and the versions that lost a conflict to it, kept
//! (bounded) as superseded so an operator sees what an edit lost to. Owns that choice. It never
//! checks a signature: the server verifies a version before offering it here.

use std::collections::{BTreeMap, VecDeque};

use crate::policy::document::{PolicyRank, SignedPolicy, Superseded};

/// The most lost versions kept per policy id; the oldest go first.
pub const MAX_SUPERSEDED_PER_POLICY: usize = 16;

/// What offering a version did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placed {
    /// The id was not held: this is now its version.
    New,
    /// It outranks the held version and replaces it; when the two had one version number, the
    /// one replaced lost a conflict and comes back here.
    Replaced { lost: Option<Superseded> },
    /// Held already, or older than what is held: nothing changed.
    Known,
    /// It lost a conflict to the held version (first time seen): kept as superseded.
    Lost(Superseded),
}

#[derive(Debug, Default)]
pub struct HeldPolicies {
    current: BTreeMap<String, (PolicyRank, SignedPolicy)>,
    superseded: BTreeMap<String, VecDeque<Superseded>>,
}

impl HeldPolicies {
    pub fn get(&self, id: &str) -> Option<&SignedPolicy> {
        self.current.get(id).map(|(_, p)| p)
    }

    pub fn rank_of(&self, id: &str) -> Option<&PolicyRank> {
        self.current.get(id).map(|(r, _)| r)
    }

    /// Every held winner, by id.
    pub fn iter(&self) -> impl Iterator<Item = &SignedPolicy> {
        self.current.values().map(|(_, p)| p)
    }

    /// The rank of every held winner, by id: what a sync tells the parent.
    pub fn ranks(&self) -> BTreeMap<String, PolicyRank> {
        self.current.iter().map(|(id, (rank, _))| (id.clone(), rank.clone())).collect()
    }

    /// The versions of `id` that lost a conflict, oldest first.
    pub fn superseded(&self, id: &str) -> impl Iterator<Item = &Superseded> {
        self.superseded.get(id).into_iter().flatten()
    }

    /// Offers a verified version.
    pub fn place(&mut self, signed: SignedPolicy) -> Placed {
        let rank = signed.body.rank();
        let id = signed.body.id.clone();
        let Some((held_rank, held)) = self.current.get(&id) else {
            self.current.insert(id, (rank, signed));
            return Placed::New;
        };
        if rank > *held_rank {
            let lost = (held_rank.version == rank.version)
                .then(|| Superseded { policy: held.body.clone(), by: rank.clone() });
            if let Some(lost) = &lost {
                self.keep(lost.clone());
            }
            self.current.insert(id, (rank, signed));
            return Placed::Replaced { lost };
        }
        if rank.version != held_rank.version || rank == *held_rank {
            return Placed::Known;
        }
        let lost = Superseded { policy: signed.body, by: held_rank.clone() };
        if self.superseded(&id).any(|s| s.policy == lost.policy) {
            return Placed::Known;
        }
        self.keep(lost.clone());
        Placed::Lost(lost)
    }

    /// Keeps a lost version (once), dropping the oldest past the bound.
    pub fn keep(&mut self, lost: Superseded) {
        let kept = self.superseded.entry(lost.policy.id.clone()).or_default();
        if kept.iter().any(|s| s.policy == lost.policy) {
            return;
        }
        if kept.len() >= MAX_SUPERSEDED_PER_POLICY {
            kept.pop_front();
        }
        kept.push_back(lost);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::NodeKeys;
    use crate::policy::document::{Policy, PolicyTarget, Scope};
    use crate::rng::seeded;
    use crate::signed::Signed;

    fn version(author: &str, version: u64, value: &str) -> SignedPolicy {
        let keys = NodeKeys::generate(&mut seeded(version));
        let body = Policy {
            id: "fw".into(),
            version,
            author: author.into(),
            scope: Scope::Global,
            target: PolicyTarget::default(),
            params: [("firewall.default".to_owned(), value.to_owned())].into(),
            retired: false,
        };
        Signed::sign(body, &keys).expect("signs")
    }

    #[test]
    fn two_edits_of_one_version_end_on_one_winner_in_either_order_and_the_loser_is_kept() {
        let base = version("master", 1, "deny");
        let local = version("local-00", 2, "allow");
        let master = version("master", 2, "reject");
        for order in [[&local, &master], [&master, &local]] {
            let mut held = HeldPolicies::default();
            assert_eq!(held.place(base.clone()), Placed::New);
            for offered in order {
                held.place(offered.clone());
            }
            assert_eq!(held.get("fw"), Some(&master), "`master` sorts after `local-00`: it wins");
            let lost: Vec<&Superseded> = held.superseded("fw").collect();
            assert_eq!(lost.len(), 1, "the loser is kept once, whichever came first");
            assert_eq!(lost[0].policy, local.body);
            assert_eq!(lost[0].by, master.body.rank());
            // Offered again (a resend), nothing changes and nothing is kept twice.
            assert_eq!(held.place(local.clone()), Placed::Known);
            assert_eq!(held.place(base.clone()), Placed::Known, "an older version never comes back");
        }
    }

    #[test]
    fn a_newer_version_replaces_without_a_conflict() {
        let mut held = HeldPolicies::default();
        held.place(version("local-00", 1, "deny"));
        assert_eq!(held.place(version("master", 2, "allow")), Placed::Replaced { lost: None });
        assert_eq!(held.superseded("fw").count(), 0);
    }
}
