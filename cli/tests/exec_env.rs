//! A command's environment and the ACL's allowlist, on real sockets and real processes: a
//! command run as `nobody` starts in nobody's reset environment (PATH fixed, HOME, USER, LOGNAME
//! and SHELL from its passwd entry, its home as the working directory or `/`), with nothing of the
//! exec daemon's own environment and only the variables the ACL lets a client pass; a variable it
//! does not list is refused, named, and audited. An allowlist of absolute paths refuses
//! `nice sh -c` (and a bare name); `*` lets it through, and `acl show` says so.

mod common;

use std::process::Output;

use common::{TestCluster, exec, path_str, run};

/// Set in the exec node's own environment: no command may see it.
const MARKER: &str = "COHORT_LEAK_MARKER";

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// One member (the gateway with the KDC) and the exec member with two hosts, the exec node
/// started with the marker in its environment; alice logged in.
fn site() -> (TestCluster, std::path::PathBuf) {
    let mut cluster = TestCluster::init_exec(1, 2);
    cluster.start(0);
    cluster.start_with_env(1, &[(MARKER, "1")]);
    let state = cluster.dir.path().join("client");
    cluster.login(&state);
    (cluster, state)
}

/// `cohort acl set alice ARGS… --wait`, signed at m0 with the operator key.
fn acl_set(cluster: &TestCluster, args: &[&str]) -> String {
    let mut full: Vec<String> = ["acl", "set", "alice"].iter().map(|a| (*a).to_owned()).collect();
    full.extend(args.iter().map(|a| (*a).to_owned()));
    full.extend(cluster.operator_args("m0"));
    full.push("--wait".into());
    run(&full)
}

/// h01's result of `cohort exec --json ARGS`.
fn on_h01(state: &std::path::Path, args: &[&str]) -> (Output, serde_json::Value) {
    let mut full = vec!["-w", "h01", "--json"];
    full.extend(args);
    let out = exec(state, &full);
    let line = String::from_utf8_lossy(&out.stdout).lines().next().map(str::to_owned).unwrap_or_default();
    let result = serde_json::from_str(&line).unwrap_or(serde_json::Value::Null);
    (out, result)
}

/// (home, shell) of `user` in /etc/passwd.
fn passwd(user: &str) -> (String, String) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    let line = passwd.lines().find(|l| l.split(':').next() == Some(user)).expect("the user's entry");
    let fields: Vec<&str> = line.split(':').collect();
    (fields[5].to_owned(), fields[6].to_owned())
}

#[test]
fn a_command_run_as_nobody_gets_nobodys_reset_environment_and_only_the_variables_its_acl_passes() {
    if !is_root() {
        eprintln!("skipped: running a command as `nobody` needs the exec daemon to be root");
        return;
    }
    let (cluster, state) = site();
    let me =
        nix::unistd::User::from_uid(nix::unistd::geteuid()).ok().flatten().expect("my passwd entry").name;
    acl_set(&cluster, &["--run-as", &format!("{me},nobody"), "--commands", "*", "--env", "LANG"]);

    let (out, result) = on_h01(&state, &["--run-as", "nobody", "--env", "LANG=C.UTF-8", "--", "printenv"]);
    assert!(out.status.success(), "{}", text(&out));
    let (home, shell) = passwd("nobody");
    let mut shown: Vec<&str> = result["stdout"].as_str().expect("stdout").lines().collect();
    shown.sort_unstable();
    let mut expected = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
        format!("HOME={home}"),
        "USER=nobody".to_owned(),
        "LOGNAME=nobody".to_owned(),
        format!("SHELL={shell}"),
        "LANG=C.UTF-8".to_owned(),
    ];
    expected.sort_unstable();
    // Exactly these: nothing of the daemon's environment (its marker, RUST_LOG, its HOME), which
    // does hold the marker.
    assert_eq!(shown, expected, "{result}");
    assert!(!shown.iter().any(|l| l.starts_with(MARKER)), "{result}");
    let pid = cluster.members[1].as_ref().expect("the exec node runs").id();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("the exec node's environment");
    assert!(environ.split(|b| *b == 0).any(|v| v == format!("{MARKER}=1").as_bytes()));

    // The working directory is nobody's home, or `/` when that is no directory (Debian's
    // `/nonexistent`), as sudo does.
    let (out, result) = on_h01(&state, &["--run-as", "nobody", "--", "pwd"]);
    assert!(out.status.success(), "{}", text(&out));
    let dir = if std::path::Path::new(&home).is_dir() { home.clone() } else { "/".to_owned() };
    assert_eq!(result["stdout"], format!("{dir}\n"), "{result}");

    // A variable the ACL does not list: refused up front at the gateway, naming it, nothing run.
    let (out, _) =
        on_h01(&state, &["--run-as", "nobody", "--env", "LANG=C", "--env", "TZ=UTC", "--", "printenv"]);
    let shown = text(&out);
    assert!(!out.status.success(), "{shown}");
    assert!(shown.contains("ACL: principal `alice` may not pass the variable `TZ`"), "{shown}");
    // … and audited like any other denial; the allowed run's record names LANG by digest.
    let config = path_str(&cluster.config(0)).to_owned();
    let tail =
        run(&["audit".into(), "tail".into(), "--config".into(), config.clone(), "-n".into(), "50".into()]);
    assert!(tail.contains("DENIED: ACL: principal `alice` may not pass the variable `TZ`"), "{tail}");
    assert!(tail.contains("[env LANG 7 B "), "{tail}");
    let verify = common::cohort(&["audit", "verify", "--config", &config]);
    assert!(verify.status.success(), "{}", text(&verify));
}

#[test]
fn an_allowlist_of_paths_refuses_nice_sh_and_a_wildcard_says_it_does_not() {
    let (cluster, state) = site();
    let me =
        nix::unistd::User::from_uid(nix::unistd::geteuid()).ok().flatten().expect("my passwd entry").name;
    acl_set(&cluster, &["--run-as", &me, "--commands", "/usr/bin/uptime,/bin/echo"]);

    let (out, result) = on_h01(&state, &["--", "/bin/echo", "listed"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(result["stdout"], "listed\n");
    // `nice` would run a shell: it is not on the list, by path or by name.
    for argv in [&["/usr/bin/nice", "sh", "-c", "true"][..], &["nice", "sh", "-c", "true"]] {
        let mut args = vec!["--"];
        args.extend(argv);
        let (out, result) = on_h01(&state, &args);
        assert!(!out.status.success(), "{}", text(&out));
        assert!(result["outcome"].as_str().is_some_and(|o| o.starts_with("denied: ACL")), "{result}");
    }
    let tail = run(&[
        "audit".into(),
        "tail".into(),
        "--config".into(),
        path_str(&cluster.config(0)).into(),
        "-n".into(),
        "20".into(),
    ]);
    assert!(tail.contains("DENIED: ACL: principal `alice` may not run `/usr/bin/nice`"), "{tail}");
    assert!(tail.contains("may run only programs named by absolute path"), "{tail}");
    // A bare name in the allowlist itself is refused before anything is signed.
    let mut bare: Vec<String> = ["acl", "set", "alice", "--run-as", &me, "--commands", "uptime"]
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
    bare.extend(cluster.operator_args("m0"));
    let refused = common::cohort(&bare.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(text(&refused).contains("`uptime` is not an absolute path"), "{}", text(&refused));

    // `*` is any command, a shell reached through another included, and says so.
    let set = {
        let mut full: Vec<String> = ["acl", "set", "alice", "--run-as", &me, "--commands", "*"]
            .iter()
            .map(|a| (*a).to_owned())
            .collect();
        full.extend(cluster.operator_args("m0"));
        full.push("--wait".into());
        common::cohort(&full.iter().map(String::as_str).collect::<Vec<_>>())
    };
    assert!(set.status.success(), "{}", text(&set));
    assert!(text(&set).contains("any command: a shell can be reached through it"), "{}", text(&set));
    let shown = run(&[
        "acl".into(),
        "show".into(),
        "alice".into(),
        "--config".into(),
        path_str(&cluster.config(0)).into(),
    ]);
    assert!(shown.contains("commands    * (any command: a shell can be reached through it)"), "{shown}");
    let (out, result) = on_h01(&state, &["--", "nice", "sh", "-c", "echo reached"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(result["stdout"], "reached\n");
    // The shell flag still keeps argv[0] itself from being a shell, and says that is all it does.
    let (out, result) = on_h01(&state, &["--", "sh", "-c", "true"]);
    let denied = result["outcome"]
        .as_str()
        .is_some_and(|o| o.starts_with("denied: ACL: principal `alice` may not run a shell"));
    assert!(!out.status.success() && denied, "{}", text(&out));
    assert!(shown.contains("a permitted program may still start one"), "{shown}");
}
