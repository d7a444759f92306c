use super::*;

fn file(mode: u32, owner: &str, content: &str) -> Observation {
    Observation::File(Ok(Some(FileFacts {
        is_file: true,
        mode,
        uid: 0,
        gid: 0,
        owner: Some(owner.into()),
        group: Some("root".into()),
        size: content.len() as u64,
        content: Some(content.as_bytes().to_vec()),
    })))
}

fn verdict(line: &str, seen: &Observation) -> (CheckOutcome, String) {
    judge(&Check::parse(line).expect("parses"), seen)
}

#[test]
fn the_catalog_parses_with_severity_and_refuses_what_it_does_not_know() {
    let check =
        Check::parse("file /etc/cohort-test-flag mode=0600 owner=root severity=high").expect("parses");
    assert_eq!(check.severity, Severity::High);
    assert_eq!(
        check.kind,
        CheckKind::File {
            path: "/etc/cohort-test-flag".into(),
            want: Want::Present,
            mode: Some(0o600),
            owner: Some("root".into()),
            group: None
        }
    );
    let command = Check::parse("command timeout=5s user=nobody -- /usr/bin/test -f /x").expect("parses");
    assert_eq!(
        command.kind,
        CheckKind::Command {
            argv: vec!["/usr/bin/test".into(), "-f".into(), "/x".into()],
            user: Some("nobody".into()),
            timeout: Duration::from_secs(5)
        }
    );
    assert_eq!(command.severity, Severity::Medium);
    for (bad, says) in [
        ("scan everything", "`scan` is not a check"),
        ("file etc/passwd", "not an absolute, plain path"),
        ("file /etc/../etc/shadow", "not an absolute, plain path"),
        ("file /x mode=999", "not octal"),
        ("port 0 listening", "not a port"),
        ("port 22 open", "not listening or closed"),
        ("contains /x (unclosed", "does not compile"),
        ("command /bin/true", "after `--`"),
        ("command timeout=9999s -- true", "from 1s to 300s"),
        ("sysctl ../../etc/shadow 1", "not a sysctl name"),
        ("unit -x active", "cannot start with `-`"),
        ("file /x severity=urgent", "not low, medium or high"),
        ("", "empty"),
    ] {
        let e = Check::parse(bad).expect_err(bad).to_string();
        assert!(e.contains(says), "{bad}: {e}");
    }
}

#[test]
fn a_file_check_names_what_is_wrong() {
    let line = "file /etc/cohort-test-flag mode=0600 owner=root";
    assert_eq!(verdict(line, &file(0o644, "root", "")), (CheckOutcome::Fail, "mode 0644, wants 0600".into()));
    assert_eq!(
        verdict(line, &file(0o600, "alice", "")),
        (CheckOutcome::Fail, "owner alice, wants root".into())
    );
    assert_eq!(verdict(line, &file(0o600, "root", "")).0, CheckOutcome::Pass);
    assert_eq!(verdict(line, &Observation::File(Ok(None))), (CheckOutcome::Fail, "missing".into()));
    assert_eq!(verdict("file /x absent", &Observation::File(Ok(None))).0, CheckOutcome::Pass);
    let denied = Observation::File(Err("permission denied".into()));
    assert_eq!(verdict(line, &denied), (CheckOutcome::Error, "permission denied".into()));
}

#[test]
fn content_sysctl_port_package_and_command_checks_judge_what_was_seen() {
    let config = file(0o600, "root", "# comment\nPermitRootLogin no\n");
    assert_eq!(verdict("contains /etc/ssh/sshd_config '^PermitRootLogin no'", &config).1, "line 2 matches");
    assert_eq!(verdict("lacks /etc/ssh/sshd_config '^PermitRootLogin yes'", &config).0, CheckOutcome::Pass);
    assert_eq!(verdict("sysctl net.ipv4.ip_forward 0", &file(0o644, "root", "1\n")).1, "= 1, wants 0");
    let tables = "  sl  local_address rem_address   st\n   0: 0100007F:1F90 00000000:0000 0A 0\n   1: 0100007F:0016 0100007F:D3C2 01 0\n";
    let sockets = Observation::Sockets(Ok(tables.as_bytes().to_vec()));
    assert_eq!(verdict("port 8080 listening", &sockets).0, CheckOutcome::Pass);
    assert_eq!(verdict("port 22 listening", &sockets).0, CheckOutcome::Fail, "established, not listening");
    assert_eq!(verdict("port 22 closed", &sockets).0, CheckOutcome::Pass);
    let ran =
        |code, out: &str| Observation::Ran { end: RunEnd::Exited(code), stdout: out.as_bytes().to_vec() };
    let dpkg = ran(0, "install ok installed\t1:3.0.2-0ubuntu1");
    assert_eq!(verdict("package openssl min=3.0", &dpkg).0, CheckOutcome::Pass);
    assert_eq!(verdict("package openssl min=1:3.1", &dpkg).0, CheckOutcome::Fail);
    assert_eq!(verdict("package nosuch", &ran(1, "")).1, "not installed");
    assert_eq!(verdict("package gone", &ran(0, "deinstall ok config-files\t1.0")).1, "not installed");
    assert_eq!(verdict("unit sshd active", &ran(3, "inactive\n")).1, "inactive, wants active");
    assert_eq!(verdict("command -- /bin/false", &ran(1, "")).1, "exit 1");
    let slow = Observation::Ran { end: RunEnd::TimedOut, stdout: Vec::new() };
    assert_eq!(
        verdict("command timeout=2s -- sleep 9", &slow),
        (CheckOutcome::Fail, "still running after 2 s".into())
    );
    let missing = Observation::Ran { end: RunEnd::NotStarted("No such file".into()), stdout: Vec::new() };
    assert_eq!(verdict("command -- /nope", &missing).0, CheckOutcome::Error);
}

#[test]
fn checks_come_from_the_check_parameters_and_a_bad_one_is_kept_as_its_error() {
    let params: std::collections::BTreeMap<String, String> = [
        ("check.flag".to_owned(), "file /etc/flag".to_owned()),
        ("check.bad".to_owned(), "frobnicate".to_owned()),
        ("firewall.default".to_owned(), "deny".to_owned()),
    ]
    .into();
    let checks = checks_of(&params);
    assert_eq!(checks.len(), 2);
    assert_eq!(checks[0].0, "bad");
    assert!(checks[0].1.is_err());
    assert!(checks[1].1.is_ok());
}

#[test]
fn a_policy_with_a_check_no_agent_could_read_is_refused_where_it_is_written() {
    use crate::policy::document::{Policy, PolicyTarget, Scope};
    let policy = |check: &str| Policy {
        id: "baseline".into(),
        version: 1,
        author: "master".into(),
        scope: Scope::Global,
        target: PolicyTarget::default(),
        params: [("check.flag".to_owned(), check.to_owned())].into(),
        retired: false,
    };
    assert!(policy("file /etc/flag mode=0600").validate().is_ok());
    let e = policy("file /etc/flag mode=rw").validate().expect_err("refused").to_string();
    assert!(e.contains("check `flag`: file: mode `rw` is not octal"), "{e}");
}
