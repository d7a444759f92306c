//! Member traces as insta snapshots under `snapshots/`, each from members that are core nodes on
//! the one turmoil host driver: a clean change on 3 members, a change during a partition and its
//! heal, and a rejected forged heartbeat. A trace holds every input and output of every node (the
//! operator's admin channel included) and the site's notes of what it did; each scenario runs
//! twice and must replay byte for byte.

use std::time::Duration;

use cohort_core::NodeKeys;
use cohort_core::admin::AdminResponse;
use cohort_core::member::{Change, MemberMessage, Status};
use cohort_core::rng::seeded;
use cohort_core::signed::Signed;
use cohort_core::trace::Trace;
use cohort_io_sim::member_site::{CLUSTER_ID, MemberSite, SiteResult};

const HEARTBEAT: Duration = Duration::from_secs(1);

fn snapshot(name: &str, trace: &Trace) {
    insta::with_settings!({ snapshot_path => "../../snapshots", prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!(name, trace.render());
    });
}

/// Boots the members and lets them settle, then starts a fresh trace for the scenario.
fn settled(members: usize, seed: u64) -> SiteResult<MemberSite> {
    let mut site = MemberSite::new(members, seed)?;
    site.run_for(HEARTBEAT)?;
    site.clear_trace();
    Ok(site)
}

fn set(key: &str, value: &str) -> Vec<Change> {
    vec![Change::Set { key: key.into(), value: value.into() }]
}

fn clean_change() -> SiteResult<Trace> {
    let mut site = settled(3, 11)?;
    let answer = site.change(1, set("dns", "10.0.0.53"))?;
    let AdminResponse::ChangeAccepted { version } = answer else { panic!("not accepted: {answer:?}") };
    site.run_for(HEARTBEAT * 2)?;
    assert!(site.installed_everywhere(version));
    assert_eq!(version.counter, 2);
    Ok(site.trace())
}

fn partition_and_heal() -> SiteResult<Trace> {
    let mut site = settled(3, 12)?;
    site.isolate(2);
    let answer = site.change(0, set("ntp", "pool.example"))?;
    let AdminResponse::ChangeAccepted { version } = answer else { panic!("not accepted: {answer:?}") };
    site.run_for(HEARTBEAT * 2)?;
    assert_eq!(site.view(0)?.active_version(), site.genesis_version(), "held back by the partition");
    site.heal();
    site.run_for(HEARTBEAT * 3)?;
    assert!(site.installed_everywhere(version));
    Ok(site.trace())
}

fn forged_heartbeat() -> SiteResult<Trace> {
    let mut site = settled(3, 13)?;
    // Half a heartbeat on, so the forgery is alone in the trace.
    site.run_for(HEARTBEAT / 2)?;
    site.clear_trace();
    let forger = NodeKeys::generate(&mut seeded(666));
    let status = Status {
        cluster_id: CLUSTER_ID.into(),
        sender: site.node_id(1)?,
        active: site.genesis_version(),
        staged: None,
        seq: u64::MAX,
        recipients: (0..3)
            .map(|i| site.keys(i).map(|k| k.public().key_digest()))
            .collect::<Result<_, _>>()?,
    };
    let forged = MemberMessage::Status(Signed::sign(status, &forger).expect("signs"));
    // Over a channel opened with member 1's stolen key: only the signature is left to catch it.
    let m1 = site.keys(1)?.clone();
    site.inject(0, &m1, forged.to_wire().expect("encodes"))?;
    assert_eq!(site.view(0)?.drops_of("bad-signature"), 1);
    Ok(site.trace())
}

#[test]
fn clean_change_on_three_members() -> SiteResult<()> {
    let trace = clean_change()?;
    assert_eq!(trace, clean_change()?, "same seed, same trace");
    snapshot("member_clean_change_3", &trace);
    Ok(())
}

#[test]
fn change_during_a_partition_and_its_heal() -> SiteResult<()> {
    let trace = partition_and_heal()?;
    assert_eq!(trace, partition_and_heal()?, "same seed, same trace");
    snapshot("member_partition_and_heal", &trace);
    Ok(())
}

#[test]
fn rejected_forged_heartbeat() -> SiteResult<()> {
    let trace = forged_heartbeat()?;
    assert_eq!(trace, forged_heartbeat()?, "same seed, same trace");
    snapshot("member_forged_heartbeat", &trace);
    Ok(())
}
