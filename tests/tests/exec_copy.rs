//! `cohort copy` in simulation, through the one turmoil host driver: files reach every host only
//! after a record naming each file's path, mode and SHA-256 is durable at the host and in the
//! chain (the host driver checks this for every placement), and a path outside the principal's
//! copy prefixes is refused on every host, audited, and placed nowhere.

use cohort_core::exec::audit::AuditDecision;
use cohort_core::exec::gateway::HostOutcome;
use cohort_core::exec::task::{CopyFile, DataKind, Task};
use cohort_io_sim::exec_site::{PASSWORD, Site, SiteSpec, host_results};
use sha2::{Digest, Sha256};

fn spec(seed: u64) -> SiteSpec {
    let mut spec = SiteSpec::new(3, seed);
    let alice = spec.acl.principals.get_mut("alice").expect("alice's entry");
    alice.copy = ["/etc/app".to_owned()].into();
    spec
}

fn file(path: &str, mode: u32, content: &[u8]) -> CopyFile {
    CopyFile { path: path.into(), mode, content: content.to_vec() }
}

#[test]
fn files_are_placed_on_every_host_after_their_digests_are_audited() {
    let files = vec![file("/etc/app/a.conf", 0o640, b"a = 1\n"), file("/etc/app/%h.id", 0o600, b"id\n")];
    let task = Task::Copy { files };
    let sent = task.clone();
    let run = Site::run_checked(&spec(81), |client| async move {
        let login = client.login("alice", PASSWORD).await?;
        let mut command = client.command(&login.credential, &["h[01-03]"], &["unused"]);
        command.task = sent;
        let events = client.run(&login.keys, command).await?;
        let results = host_results(&events);
        let ok = results.iter().filter(|r| r.outcome == HostOutcome::Exited(0)).count();
        if ok == 3 { Ok(()) } else { Err(format!("not placed everywhere: {results:?}")) }
    });
    assert_eq!(run.placed.len(), 6, "two files on each of three hosts: {:?}", run.placed);
    for host in ["h01", "h02", "h03"] {
        let own = format!("/etc/app/{host}.id mode 600 owner alice");
        assert!(run.placed.iter().any(|p| p.contains(&own)), "{own} in {:?}", run.placed);
        let record = run
            .chain
            .iter()
            .find(|e| e.record.host == host && e.record.decision == AuditDecision::Run)
            .unwrap_or_else(|| panic!("{host}'s run record is in the chain"));
        let expected = task.for_host(host).digests();
        assert_eq!(record.record.data, expected, "{host}'s record names each file's digest");
        let shared = &record.record.data[0];
        assert_eq!(shared.what, DataKind::File { path: "/etc/app/a.conf".into(), mode: 0o640 });
        assert_eq!(shared.sha256, <[u8; 32]>::from(Sha256::digest(b"a = 1\n")));
        let ended = run.chain.iter().any(|e| {
            e.record.host == host
                && matches!(&e.record.decision, AuditDecision::Ended { outcome } if outcome == "copied 2 files")
        });
        assert!(ended, "{host}'s copy ended in the trail");
    }
}

#[test]
fn a_path_outside_the_copy_prefixes_is_refused_everywhere_and_placed_nowhere() {
    let run = Site::run_checked(&spec(82), |client| async move {
        let login = client.login("alice", PASSWORD).await?;
        for path in ["/etc/passwd", "/etc/app/../passwd", "/etc/application"] {
            let mut command = client.command(&login.credential, &["h[01-03]"], &["unused"]);
            command.task = Task::Copy { files: vec![file(path, 0o644, b"root::0:0::/:/bin/sh\n")] };
            let events = client.run(&login.keys, command).await?;
            for r in host_results(&events) {
                match &r.outcome {
                    HostOutcome::Denied(reason) if reason.contains(path) => {}
                    other => return Err(format!("{path} on {}: {other:?}", r.host)),
                }
            }
        }
        Ok(())
    });
    assert!(run.placed.is_empty(), "nothing placed: {:?}", run.placed);
    let denials = run
        .chain
        .iter()
        .filter(|e| matches!(e.record.decision, AuditDecision::Denied { .. }) && !e.record.data.is_empty())
        .count();
    assert_eq!(denials, 9, "each host's refusal of each path is audited with the file it named");
}
