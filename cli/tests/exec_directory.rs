//! Hosts, ACLs and limits through the signed configuration, on real sockets: `cohort host
//! remove|add` and `cohort acl set`, made at a member that is neither the gateway nor the exec
//! node, take effect at the gateway, the KDC and the daemons without a restart; a removed host is
//! refused; a client asking beyond the principal's ceilings gets the ceilings and is told so (in
//! its output and the audit trail); a sixth concurrent run with a limit of five is refused.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestCluster, exec, path_str, run};

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `cohort SUBCOMMAND ARGS… --cluster … --node m2 --key … --wait`: a signed change made at m2
/// and waited for on every member.
fn change_at_m2(cluster: &TestCluster, args: &[&str]) -> String {
    let mut full: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    full.extend(cluster.operator_args("m2"));
    full.push("--wait".into());
    run(&full)
}

fn whoami() -> String {
    let out = Command::new("id").arg("-un").output().expect("id runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn hosts_and_acls_change_through_the_configuration_and_the_gateway_holds_runs_to_their_ceilings() {
    // m0 gateway, m1 KDC, m2 a plain member, and the exec member with five hosts.
    let mut cluster = TestCluster::init_exec(3, 5);
    cluster.start_all();
    let root = cluster.root();
    let state = cluster.dir.path().join("client");
    cluster.login(&state);
    let out = exec(&state, &["-w", "h[01-05]", "--", "true"]);
    assert!(out.status.success(), "{}", text(&out));

    let hosts = run(&["host".into(), "list".into(), "--config".into(), path_str(&cluster.config(0)).into()]);
    assert_eq!(hosts.lines().filter(|l| l.starts_with('h')).count(), 6, "{hosts}"); // header + 5

    // Removed at m2: the gateway and the KDC refuse h05 once installed; h01-h04 still run.
    change_at_m2(&cluster, &["host", "remove", "h05"]);
    let out = exec(&state, &["-w", "h[01-05]", "--", "true"]);
    let shown = text(&out);
    assert!(!out.status.success(), "{shown}");
    assert!(shown.contains("4 ok") && shown.contains("h05"), "{shown}");
    assert!(shown.contains("h05 (1) failed: not a managed host"), "{shown}");

    // Added back, with the key from its key file: it runs again, and nothing was restarted.
    let key_file = root.join("exec/hosts/h05.key");
    let exec_toml = std::fs::read_to_string(root.join("exec/node.toml")).expect("exec node.toml");
    let address = exec_toml
        .split("[[exec_host]]")
        .find(|entry| entry.contains("name = \"h05\""))
        .and_then(|entry| entry.lines().find_map(|l| l.strip_prefix("listen = ")))
        .expect("h05's listen address")
        .trim_matches('"')
        .to_owned();
    change_at_m2(&cluster, &["host", "add", "h05", "--address", &address, "--key-file", path_str(&key_file)]);
    let out = exec(&state, &["-w", "h[01-05]", "--", "true"]);
    assert!(out.status.success(), "{}", text(&out));

    // The ACL narrowed at m2 to an allowlist: `/bin/cat` is no longer permitted, `/bin/echo` and
    // `/bin/sleep` are, each named by its path; ceilings of fan-out 4, T1+T2 60 s and 5 runs at
    // once.
    let user = whoami();
    change_at_m2(
        &cluster,
        &[
            "acl",
            "set",
            "alice",
            "--run-as",
            &user,
            "--commands",
            "/bin/echo,/bin/sleep,/bin/true",
            "--max-fanout",
            "4",
            "--max-time",
            "60s",
            "--max-runs",
            "5",
        ],
    );
    let out = exec(&state, &["-w", "h01", "--", "/bin/cat", "/dev/null"]);
    let shown = text(&out);
    assert!(!out.status.success() && shown.contains("may not run `/bin/cat`"), "{shown}");
    // A bare name is not looked up on a PATH: it is refused, saying why.
    let out = exec(&state, &["-w", "h01", "--", "echo", "bare"]);
    let shown = text(&out);
    assert!(!out.status.success() && shown.contains("only programs named by absolute path"), "{shown}");
    let shown_acl = run(&[
        "acl".into(),
        "show".into(),
        "alice".into(),
        "--config".into(),
        path_str(&cluster.config(1)).into(),
    ]);
    assert!(shown_acl.contains("fan-out 4, T1+T2 60 s, 5 runs at once"), "{shown_acl}");
    assert!(!shown_acl.contains("/bin/cat") && shown_acl.contains("/bin/echo, /bin/sleep"), "{shown_acl}");

    // Asking for far more than the ceilings: the run goes ahead within them, and says so.
    let out = exec(&state, &["-w", "h[01-05]", "-f", "1000", "--t2", "100000", "--", "/bin/echo", "ok"]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("fan-out 1000 lowered to 4"), "{shown}");
    assert!(shown.contains("lowered to 60s"), "{shown}");
    let trail = run(&["audit".into(), "tail".into(), "--config".into(), path_str(&cluster.config(0)).into()]);
    assert!(trail.contains("lowered: fan-out 1000 lowered to 4"), "{trail}");

    // Five runs at once are alice's limit: a sixth is refused with a clear message.
    let runs: Vec<std::process::Child> = (0..5)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_cohort"))
                .args(["exec", "--state-dir", path_str(&state), "-w", "h01", "--", "/bin/sleep", "4"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("exec starts")
        })
        .collect();
    // Until the five are running at h01 (each has a `run` record at the collector).
    let started = Instant::now();
    loop {
        let trail = run(&[
            "audit".into(),
            "tail".into(),
            "-n".into(),
            "20".into(),
            "--config".into(),
            path_str(&cluster.config(0)).into(),
        ]);
        if trail.lines().filter(|l| l.contains(" run: ") && l.ends_with("/bin/sleep 4")).count() >= 5 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the five runs did not start:\n{trail}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = exec(&state, &["-w", "h02", "--", "/bin/echo", "sixth"]);
    let shown = text(&out);
    assert!(!out.status.success(), "{shown}");
    assert!(shown.contains("already has 5 runs in progress, its limit of 5"), "{shown}");
    for child in runs {
        let out = child.wait_with_output().expect("exec ends");
        assert!(out.status.success(), "{}", text(&out));
    }
    // With the five done, alice runs again.
    let out = exec(&state, &["-w", "h02", "--", "/bin/echo", "seventh"]);
    assert!(out.status.success(), "{}", text(&out));
}

fn login_as(
    cluster: &TestCluster,
    user: &str,
    password_file: &std::path::Path,
    state: &std::path::Path,
) -> std::process::Output {
    let cluster_file = cluster.root().join("cluster.toml");
    common::cohort(&[
        "login",
        "--state-dir",
        path_str(state),
        "--cluster",
        path_str(&cluster_file),
        "-u",
        user,
        "--password-file",
        path_str(password_file),
    ])
}

#[test]
fn principals_are_managed_at_the_kdc_by_operators_only_and_take_effect_at_once() {
    let mut cluster = TestCluster::init_exec(2, 2);
    cluster.start_all();
    let root = cluster.root();
    let kdc_args = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = vec!["principal".into()];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        args.extend(["--cluster".into(), path_str(&root.join("cluster.toml")).into()]);
        args.extend(["--key".into(), path_str(&root.join("operator.key")).into()]);
        args
    };
    // Alice works; that also means the KDC is up.
    cluster.login(&cluster.dir.path().join("alice"));
    let first = cluster.dir.path().join("bob.pw");
    let second = cluster.dir.path().join("bob.pw2");
    std::fs::write(&first, "correct horse\n").expect("written");
    std::fs::write(&second, "battery staple\n").expect("written");

    let out = run(&kdc_args(&["add", "bob", "--password-file", path_str(&first)]));
    assert!(out.contains("principal `bob` added"), "{out}");
    let listed = run(&kdc_args(&["list"]));
    assert_eq!(listed.lines().collect::<Vec<_>>(), ["alice", "bob"]);
    change_or_wait(&cluster, &["acl", "set", "bob", "--run-as", &whoami(), "--commands", "/bin/echo"]);
    let state = cluster.dir.path().join("bob");
    let out = login_as(&cluster, "bob", &first, &state);
    assert!(out.status.success(), "{}", text(&out));
    let out = exec(&state, &["-w", "h[01-02]", "--", "/bin/echo", "bob"]);
    assert!(out.status.success(), "{}", text(&out));

    // A new password: the old one no longer logs in, the new one does.
    run(&kdc_args(&["passwd", "bob", "--password-file", path_str(&second)]));
    let out = login_as(&cluster, "bob", &first, &state);
    assert!(!out.status.success() && text(&out).contains("login failed"), "{}", text(&out));
    let out = login_as(&cluster, "bob", &second, &state);
    assert!(out.status.success(), "{}", text(&out));

    // Removed: no login, and the KDC's store no longer names bob after a restart of its node.
    run(&kdc_args(&["remove", "bob"]));
    let out = login_as(&cluster, "bob", &second, &state);
    assert!(!out.status.success(), "{}", text(&out));
    cluster.kill(1);
    cluster.start(1);
    cluster.login(&cluster.dir.path().join("alice-again"));
    assert_eq!(run(&kdc_args(&["list"])).lines().collect::<Vec<_>>(), ["alice"]);

    // A key that is not an operator's cannot even open the KDC's channel.
    let stranger = cluster.dir.path().join("stranger.key");
    run(&["keygen".into(), "--out".into(), path_str(&stranger).into()]);
    let mut args = vec!["principal", "add", "eve", "--password-file", path_str(&first)];
    let cluster_file = root.join("cluster.toml");
    args.extend(["--cluster", path_str(&cluster_file), "--key", path_str(&stranger)]);
    let out = common::cohort(&args);
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(run(&kdc_args(&["list"])).lines().collect::<Vec<_>>(), ["alice"]);
}

/// A signed change made at m1, waited for on every member.
fn change_or_wait(cluster: &TestCluster, args: &[&str]) -> String {
    let mut full: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    full.extend(cluster.operator_args("m1"));
    full.push("--wait".into());
    run(&full)
}
