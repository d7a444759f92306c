//! Attacks on the configuration members: replays of what a member or the operator sent, an
//! older block offered again, and a removed member that goes on talking. Each member is a core
//! node on the turmoil driver; the site's observer checks the members' invariants at every step.

use std::time::Duration;

use cohort_core::admin::AdminRequest;
use cohort_core::member::{Change, ChangeError, FetchRequest, MemberMessage};
use cohort_core::signed::Signed;
use cohort_io_sim::member_site::{CLUSTER_ID, MemberSite, SiteResult};
use cohort_tests::admin::{accepted, rejected, set};

const HEARTBEAT: Duration = Duration::from_secs(1);

/// Whether the site's trace holds a line containing `needle` (the node's log lines are in it).
fn logged(site: &MemberSite, needle: &str) -> bool {
    site.trace().lines().iter().any(|line| line.contains(needle))
}

#[test]
fn a_replayed_change_request_applies_once_before_and_after_it_installs() -> SiteResult<()> {
    let mut site = MemberSite::new(3, 31)?;
    site.run_for(HEARTBEAT)?;
    let genesis = site.genesis_version();
    let operator = site.operator().clone();
    let first = site.change_request(genesis, set("mode", "old"))?;
    let v1 = accepted(site.ask(0, &operator, AdminRequest::Change(first.clone()))?);
    // The operator changes its mind before the first change installs.
    let second = site.change_request(genesis, set("mode", "new"))?;
    let v2 = accepted(site.ask(0, &operator, AdminRequest::Change(second))?);
    assert!(v2 > v1);

    // Replayed at the member that took it: the staged version names the request.
    let reason = rejected(site.ask(0, &operator, AdminRequest::Change(first.clone()))?);
    assert_eq!(reason, ChangeError::Replayed(v2).to_string());
    assert!(logged(&site, "operator change rejected: this request was already applied"));
    // Replayed at another member once it has staged the version that carries it.
    for _ in 0..50 {
        if site.view(1)?.staged_version() == Some(v2) || site.view(1)?.active_version() == v2 {
            break;
        }
        site.run_for(HEARTBEAT / 10)?;
    }
    if site.view(1)?.active_version() != v2 {
        let reason = rejected(site.ask(1, &operator, AdminRequest::Change(first.clone()))?);
        assert_eq!(reason, ChangeError::Replayed(v2).to_string());
    }
    site.run_for(HEARTBEAT * 4)?;
    assert!(site.installed_everywhere(v2), "{:?}", site.views().iter().map(|v| v.active_version()));

    // Once installed, the request is older than the active version everywhere.
    for at in 0..3 {
        let reason = rejected(site.ask(at, &operator, AdminRequest::Change(first.clone()))?);
        assert_eq!(reason, ChangeError::Stale { base: genesis, active: v2 }.to_string());
    }
    site.run_for(HEARTBEAT * 2)?;
    // Nothing changed: every member holds the operator's last word, under v2.
    for view in site.views() {
        assert_eq!(view.active_version(), v2);
        assert_eq!(view.staged_version(), None);
        assert_eq!(view.setting("mode"), Some("new"));
    }
    Ok(())
}

#[test]
fn a_replayed_fetch_is_not_answered_twice() -> SiteResult<()> {
    let mut site = MemberSite::new(3, 32)?;
    site.run_for(HEARTBEAT + HEARTBEAT / 2)?;
    let m1 = site.keys(1)?.clone();
    let request = FetchRequest {
        cluster_id: CLUSTER_ID.into(),
        requester: m1.node_id(),
        version: site.genesis_version(),
    };
    let bytes = MemberMessage::Fetch(Signed::sign(request, &m1).expect("signs")).to_wire().expect("encodes");
    let before = site.view(0)?;
    // Member 1's signed fetch, sent twice within its retry interval: served once.
    site.inject(0, &m1, bytes.clone())?;
    assert_eq!(site.view(0)?.drops_of("repeated-fetch"), 0, "the first fetch is answered");
    site.inject(0, &m1, bytes)?;
    let after = site.view(0)?;
    assert_eq!(after.drops_of("repeated-fetch"), 1);
    assert!(logged(&site, "asked again for the block it was just sent (a replayed fetch)"));
    assert_eq!((after.active_version(), after.staged_version()), (before.active_version(), None));
    let dropped = site.status(0)?.dropped;
    assert!(dropped.iter().any(|(kind, n)| kind == "repeated-fetch" && *n == 1), "{dropped:?}");
    Ok(())
}

#[test]
fn an_older_block_offered_again_is_refused_and_the_newer_one_kept() -> SiteResult<()> {
    let mut site = MemberSite::new(3, 33)?;
    site.run_for(HEARTBEAT)?;
    let old_block = site.view(0)?.active.block.clone();
    let version = accepted(site.change(1, set("release", "2"))?);
    site.run_for(HEARTBEAT * 4)?;
    assert!(site.installed_everywhere(version));

    // Member 1 (or anyone holding its key) sends member 0 the genesis block as a fetch reply.
    let m1 = site.keys(1)?.clone();
    let reply = MemberMessage::FetchReply { block: Box::new(old_block) }.to_wire().expect("encodes");
    site.inject(0, &m1, reply)?;
    let view = site.view(0)?;
    assert_eq!(view.drops_of("stale-reply"), 1);
    assert!(logged(&site, "which is not newer than what this member holds"));
    assert_eq!(view.active_version(), version);
    assert_eq!(view.staged_version(), None);
    assert_eq!(view.setting("release"), Some("2"));
    Ok(())
}

#[test]
fn a_removed_member_is_cut_off_and_cannot_open_a_channel_again() -> SiteResult<()> {
    let mut site = MemberSite::new(4, 34)?;
    site.run_for(HEARTBEAT * 2)?;
    let removed = site.node_id(3)?;
    let version = accepted(site.change(0, vec![Change::RemoveMember(removed)])?);
    site.run_for(HEARTBEAT * 4)?;
    assert!((0..3).all(|i| site.view(i).is_ok_and(|v| v.active_version() == version)));
    // Its channels, opened while it was trusted, were closed when the roster dropped it.
    let cut = format!("closed: {removed}'s key is no longer trusted here");
    assert!(logged(&site, &cut), "no member closed the removed member's channel");

    // Still talking: a Status in its own name, signed with its own key.
    let keys = site.keys(3)?.clone();
    let before: Vec<u64> = (0..3).map(|i| site.view(i).map(|v| v.all_drops())).collect::<Result<_, _>>()?;
    let heard_before = site.view(0)?.heard.get(&removed).copied();
    let status = site.view(3)?;
    let body = cohort_core::member::Status {
        cluster_id: CLUSTER_ID.into(),
        sender: removed,
        active: status.active_version(),
        staged: None,
        seq: u64::MAX / 2,
        recipients: Vec::new(),
    };
    let bytes = MemberMessage::Status(Signed::sign(body, &keys).expect("signs")).to_wire().expect("encodes");
    site.inject(0, &keys, bytes)?;
    // It gets no channel: nothing reached member 0 to drop, and member 0 heard nothing from it.
    let after: Vec<u64> = (0..3).map(|i| site.view(i).map(|v| v.all_drops())).collect::<Result<_, _>>()?;
    assert_eq!(after, before);
    assert_eq!(site.view(0)?.heard.get(&removed).copied(), heard_before);
    assert!((0..3).all(|i| site.view(i).is_ok_and(|v| v.active_version() == version)));
    Ok(())
}
