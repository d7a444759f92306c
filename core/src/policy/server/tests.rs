//! One policy server on its own, no network: what a restart takes back from storage is verified
//! again, as if it had just arrived. Tier behaviour across servers is tested through the turmoil
//! driver (tests/tests/policy_fleet.rs).

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::policy::document::{PolicyTarget, Scope};
use crate::rng::seeded;

fn master(keys: &NodeKeys) -> PolicyServer {
    let setup = ServerSetup {
        name: "master".into(),
        keys: keys.clone(),
        parent: None,
        children: BTreeMap::new(),
        agents: BTreeMap::new(),
        signers: [("master".to_owned(), keys.public())].into(),
        operators: Vec::new(),
        sync_window: Duration::from_secs(60),
        sync_jitter: Duration::ZERO,
        stats_deadline: Duration::from_secs(5),
    };
    PolicyServer::new(Instant::ZERO, setup, seeded(2))
}

#[test]
fn a_stored_policy_altered_on_disk_is_refused_at_restore_and_never_served() {
    let keys = NodeKeys::generate(&mut seeded(1));
    let base = Policy {
        id: "base".into(),
        version: 1,
        author: "master".into(),
        scope: Scope::Global,
        target: PolicyTarget::default(),
        params: [("antimalware.enabled".to_owned(), "true".to_owned())].into(),
    };
    let stored = Signed::sign(base, &keys).expect("signs");
    // A row altered on disk: a newer version that opens the firewall, under the old signature.
    let mut tampered = stored.clone();
    tampered.body.params.insert("firewall.default".into(), "allow-all".into());
    tampered.body.version += 1;

    let mut server = master(&keys);
    server.restore([stored, tampered], []);
    assert_eq!(server.rejected().get(&RejectKind::StoredPolicyInvalid), Some(&1));
    let held: Vec<&Policy> = server.policies().collect();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].version, 1, "the genuine row is still served");
    assert!(held.iter().all(|p| !p.params.contains_key("firewall.default")));
    let outputs: Vec<ServerOutput> = std::iter::from_fn(|| server.poll_output()).collect();
    assert!(
        matches!(outputs.as_slice(), [ServerOutput::Rejected(r)] if r.kind == RejectKind::StoredPolicyInvalid),
        "a refusal and nothing stored again: {outputs:?}"
    );
}
