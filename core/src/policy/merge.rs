//! The one merge that derives a client's effective policy. Owns the rule and its digest.
//!
//! The rule: take the winning version of every policy (by [`PolicyRank`]: version, then author),
//! drop retired ones, and keep those whose target matches the platform and whose scope is global
//! or the client's own local server. Apply them in ascending order of
//! (scope, specificity, id): global before local, then fewer target fields before more, then by
//! id. Each later policy's parameters override earlier ones key by key. So a local override always
//! beats a global setting, a more specific target beats a less specific one at the same scope,
//! and the result never depends on the order policies arrived in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::document::{Platform, Policy, PolicyRank, Scope};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectivePolicy {
    pub params: BTreeMap<String, String>,
    /// For each parameter, the policy (id, version) it came from.
    pub sources: BTreeMap<String, (String, u64)>,
    /// SHA-256 of the parameters: the "applied policy version" agents report.
    pub digest: [u8; 32],
}

impl EffectivePolicy {
    /// The first 8 hex digits of the digest, as status tables show it.
    pub fn short(&self) -> String {
        hex::encode(&self.digest[..4])
    }
}

/// The effective policy for `platform` under local server `local`.
pub fn effective<'a>(
    policies: impl IntoIterator<Item = &'a Policy>,
    platform: &Platform,
    local: &str,
) -> EffectivePolicy {
    // The winner per id, so duplicates, stale copies and the loser of a conflict change nothing.
    let mut newest: BTreeMap<&str, (PolicyRank, &Policy)> = BTreeMap::new();
    for policy in policies {
        let rank = policy.rank();
        match newest.get(policy.id.as_str()) {
            Some((held, _)) if *held >= rank => {}
            _ => {
                newest.insert(&policy.id, (rank, policy));
            }
        }
    }
    let mut applicable: Vec<&Policy> = newest
        .into_values()
        .map(|(_, p)| p)
        .filter(|p| !p.retired && p.target.matches(platform))
        .filter(|p| match &p.scope {
            Scope::Global => true,
            Scope::Local(name) => name == local,
        })
        .collect();
    applicable.sort_by(|a, b| {
        let rank = |p: &Policy| (matches!(p.scope, Scope::Local(_)), p.target.specificity());
        rank(a).cmp(&rank(b)).then_with(|| a.id.cmp(&b.id))
    });
    let mut params = BTreeMap::new();
    let mut sources = BTreeMap::new();
    for policy in applicable {
        for (key, value) in &policy.params {
            params.insert(key.clone(), value.clone());
            sources.insert(key.clone(), (policy.id.clone(), policy.version));
        }
    }
    let digest = Sha256::digest(postcard::to_allocvec(&params).unwrap_or_default()).into();
    EffectivePolicy { params, sources, digest }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::document::PolicyTarget;
    use proptest::prelude::*;

    fn policy(id: &str, version: u64, scope: Scope, target: PolicyTarget, params: &[(&str, &str)]) -> Policy {
        Policy {
            id: id.into(),
            version,
            author: "master".into(),
            scope,
            target,
            params: params.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            retired: false,
        }
    }

    fn linux_web() -> Platform {
        Platform::new("linux", "6", "web")
    }

    #[test]
    fn specific_targets_and_local_scope_override_in_that_order() {
        let os_only = PolicyTarget { os: Some("linux".into()), ..Default::default() };
        let full =
            PolicyTarget { os: Some("linux".into()), os_version: Some("6".into()), role: Some("web".into()) };
        let policies = vec![
            policy(
                "base",
                1,
                Scope::Global,
                PolicyTarget::default(),
                &[("firewall.default", "deny"), ("scan.interval_hours", "24")],
            ),
            policy("linux", 1, Scope::Global, os_only, &[("scan.interval_hours", "12")]),
            policy(
                "web",
                1,
                Scope::Global,
                full,
                &[("scan.interval_hours", "6"), ("firewall.default", "allow-http")],
            ),
            policy(
                "site-a",
                1,
                Scope::Local("site-a".into()),
                PolicyTarget::default(),
                &[("firewall.default", "deny")],
            ),
            policy(
                "site-b",
                1,
                Scope::Local("site-b".into()),
                PolicyTarget::default(),
                &[("update.channel", "beta")],
            ),
        ];
        let eff = effective(&policies, &linux_web(), "site-a");
        assert_eq!(eff.params["scan.interval_hours"], "6");
        assert_eq!(
            eff.params["firewall.default"], "deny",
            "a local override beats a more specific global one"
        );
        assert!(!eff.params.contains_key("update.channel"), "another site's override does not apply");
        assert_eq!(eff.sources["firewall.default"], ("site-a".to_owned(), 1));
        let windows = effective(&policies, &Platform::new("windows", "11", "desk"), "site-b");
        assert_eq!(windows.params["scan.interval_hours"], "24");
        assert_eq!(windows.params["update.channel"], "beta");
    }

    #[test]
    fn the_newest_version_of_a_policy_wins() {
        let policies = vec![
            policy("base", 2, Scope::Global, PolicyTarget::default(), &[("k", "new")]),
            policy("base", 1, Scope::Global, PolicyTarget::default(), &[("k", "old")]),
        ];
        assert_eq!(effective(&policies, &linux_web(), "x").params["k"], "new");
    }

    #[test]
    fn a_conflict_at_one_version_goes_to_the_author_that_sorts_last_whatever_the_order() {
        let mut a = policy("fw", 2, Scope::Global, PolicyTarget::default(), &[("k", "from-local")]);
        a.author = "local-00".into();
        let mut b = policy("fw", 2, Scope::Global, PolicyTarget::default(), &[("k", "from-master")]);
        b.author = "master".into();
        let one = effective([&a, &b], &linux_web(), "x");
        let other = effective([&b, &a], &linux_web(), "x");
        assert_eq!(one.params["k"], "from-master");
        assert_eq!(one, other);
        assert!(b.rank() > a.rank());
    }

    #[test]
    fn a_retired_policy_applies_to_no_one_and_outranks_what_it_retired() {
        let live = policy("fw", 1, Scope::Global, PolicyTarget::default(), &[("k", "v")]);
        let other = policy("base", 1, Scope::Global, PolicyTarget::default(), &[("j", "w")]);
        let tomb = Policy { version: 2, params: BTreeMap::new(), retired: true, ..live.clone() };
        let eff = effective([&live, &tomb, &other], &linux_web(), "x");
        assert!(!eff.params.contains_key("k"));
        assert_eq!(eff.params["j"], "w");
        assert!(tomb.rank() > live.rank());
    }

    fn arb_policy() -> impl Strategy<Value = Policy> {
        let target = (
            prop::option::of(prop::sample::select(vec!["linux", "windows"])),
            prop::option::of(prop::sample::select(vec!["6", "11"])),
            prop::option::of(prop::sample::select(vec!["web", "db"])),
        )
            .prop_map(|(os, v, r)| PolicyTarget {
                os: os.map(str::to_owned),
                os_version: v.map(str::to_owned),
                role: r.map(str::to_owned),
            });
        let scope = prop_oneof![
            Just(Scope::Global),
            prop::sample::select(vec!["a", "b"]).prop_map(|s| Scope::Local(s.to_owned()))
        ];
        let params = prop::collection::btree_map(
            prop::sample::select(vec!["k1", "k2", "k3", "k4"]),
            "[a-z]{1,3}",
            0..4,
        );
        let author = prop::sample::select(vec!["m", "local-00", "local-01"]);
        (prop::sample::select(vec!["p1", "p2", "p3", "p4", "p5"]), 1u64..4, author, scope, target, params)
            .prop_map(|(id, version, author, scope, target, params)| Policy {
                id: id.to_owned(),
                version,
                author: author.to_owned(),
                scope,
                target,
                params: params.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
                retired: false,
            })
    }

    proptest! {
        #[test]
        fn merging_is_idempotent(policies in prop::collection::vec(arb_policy(), 0..12)) {
            let once = effective(&policies, &linux_web(), "a");
            let twice: Vec<Policy> = policies.iter().chain(policies.iter()).cloned().collect();
            prop_assert_eq!(effective(&twice, &linux_web(), "a"), once);
        }

        #[test]
        fn arrival_order_does_not_matter(policies in prop::collection::vec(arb_policy(), 0..12), seed in any::<u64>()) {
            let mut shuffled = policies.clone();
            // A deterministic shuffle from the seed.
            let n = shuffled.len();
            for i in (1..n).rev() {
                let j = (seed.wrapping_mul(6364136223846793005).wrapping_add(i as u64) % (i as u64 + 1)) as usize;
                shuffled.swap(i, j);
            }
            // Equal versions with different contents (a conflict) are in the input on purpose:
            // the rank decides between them whatever the order.
            prop_assert_eq!(effective(&shuffled, &linux_web(), "a"), effective(&policies, &linux_web(), "a"));
        }

        #[test]
        fn a_local_override_always_wins_over_global_settings(policies in prop::collection::vec(arb_policy(), 0..10), value in "[A-Z]{4}") {
            let mut with_override = policies.clone();
            with_override.push(Policy {
                id: "zz-local".into(),
                version: 1,
                author: "a".into(),
                scope: Scope::Local("a".into()),
                target: PolicyTarget { os: Some("linux".into()), os_version: Some("6".into()), role: Some("web".into()) },
                params: [("k1".to_owned(), value.clone())].into(),
                retired: false,
            });
            prop_assert_eq!(&effective(&with_override, &linux_web(), "a").params["k1"], &value);
        }
    }
}
