//! `cohort nodeset -e/-f/-c/-l` as a user runs it (the real binary), and the hosts a run targets
//! when they come from a file: `-w ^FILE`, `$COHORT_HOSTS_FILE` and pdsh's `$WCOLL`. Targeting is
//! checked without a gateway: the run fails at the first step after the hosts are read (no
//! credential), so the error says whether the hosts were taken.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{TestCluster, path_str, run};

fn cohort_env(args: &[&str], env: &[(&str, &Path)], stdin: &str) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cohort"));
    command.args(args).env_remove("COHORT_HOSTS_FILE").env_remove("WCOLL");
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cohort runs");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("stdin written");
    child.wait_with_output().expect("cohort ends")
}

fn stdout_of(args: &[&str], stdin: &str) -> String {
    let out = cohort_env(args, &[], stdin);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn nodeset_expands_folds_and_counts_like_clustershell() {
    assert_eq!(stdout_of(&["nodeset", "-e", "h[1-10/2]"], ""), "h1 h3 h5 h7 h9\n");
    assert_eq!(
        stdout_of(&["nodeset", "-f", "web[1-3]-eth[0-1]!web2-eth1"], ""),
        "web[2-3]-eth0,web1-eth[0-1],web3-eth1\n"
    );
    assert_eq!(
        stdout_of(&["nodeset", "-f", "web1-eth0", "web1-eth1", "web2-eth[0-1]"], ""),
        "web[1-2]-eth[0-1]\n"
    );
    assert_eq!(stdout_of(&["nodeset", "-c", "a[1-5]&a[3-8]", "b[01-10]^b[05-12]"], ""), "9\n");
    assert_eq!(stdout_of(&["nodeset", "-e", "-S", "\\n", "n[9-11]"], ""), "n9\nn10\nn11\n");
    // No node set argument: standard input, one per line.
    assert_eq!(stdout_of(&["nodeset", "-f"], "h3\nh1\nh2\nh[7-8]\n"), "h[1-3,7-8]\n");

    let bad = cohort_env(&["nodeset", "-f", "h[5-1]"], &[], "");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("runs backwards"));
    let groups = cohort_env(&["nodeset", "-f", "@web"], &[], "");
    assert!(!groups.status.success(), "a group needs a cluster to read it from");
    assert!(String::from_utf8_lossy(&groups.stderr).contains("--config"));
}

#[test]
fn hosts_come_from_a_caret_file_or_the_hosts_file_variables() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("state dir");
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "# rack 1\nh[1-3]\nh[5-9/2]!h7\n").expect("hosts file");
    let broken = dir.path().join("broken");
    std::fs::write(&broken, "h[1-3\n").expect("broken file");
    let exec = |w: Option<&str>, env: &[(&str, &Path)]| {
        let mut args = vec!["exec", "--state-dir", path_str(&state)];
        if let Some(w) = w {
            args.extend(["-w", w]);
        }
        args.push("true");
        let out = cohort_env(&args, env, "");
        assert!(!out.status.success(), "there is no gateway to run on");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let taken = "run `cohort login` first";

    assert!(exec(None, &[]).contains("say which hosts"), "no -w and no hosts file");
    assert!(exec(None, &[("COHORT_HOSTS_FILE", &hosts)]).contains(taken));
    assert!(exec(None, &[("WCOLL", &hosts)]).contains(taken));
    let wcoll_broken = exec(None, &[("WCOLL", &broken)]);
    assert!(wcoll_broken.contains("bad host list"), "{wcoll_broken}");
    // $COHORT_HOSTS_FILE wins over $WCOLL, and -w over both.
    assert!(exec(None, &[("COHORT_HOSTS_FILE", &hosts), ("WCOLL", &broken)]).contains(taken));
    assert!(exec(Some("h1"), &[("COHORT_HOSTS_FILE", &broken)]).contains(taken));
    let missing = dir.path().join("missing");
    let named = exec(None, &[("COHORT_HOSTS_FILE", &missing)]);
    assert!(named.contains("COHORT_HOSTS_FILE") && named.contains("could not read"), "{named}");

    // A leading `^` is a file; inside a node set it is the symmetric difference.
    let caret = format!("^{}", hosts.display());
    assert!(exec(Some(&caret), &[]).contains(taken));
    assert!(exec(Some(&format!("^{}", missing.display())), &[]).contains("could not read the host file"));
    assert!(exec(Some("h[1-3]^h[2-4]"), &[]).contains(taken));
}

#[test]
fn nodeset_lists_and_resolves_the_cluster_s_groups() {
    let mut cluster = TestCluster::init(1, 200);
    cluster.start_all();
    cluster.wait_for("the member up", Duration::from_secs(20), |c| c.status(0).is_some());
    let mut set = vec!["admin".to_owned(), "set".into(), "group.web=web[1-3]".into()];
    set.extend(["group.all=@web,db[1-2]".into(), "--wait".into()]);
    set.extend(cluster.operator_args("m0"));
    run(&set);

    let ask = |args: &[&str]| {
        let mut all: Vec<String> = vec!["nodeset".into()];
        all.extend(args.iter().map(|a| a.to_string()));
        all.extend(cluster.operator_args("m0"));
        run(&all)
    };
    assert_eq!(ask(&["-l"]), "@all\n@web\n");
    assert_eq!(ask(&["-ll"]), "@all db[1-2],web[1-3]\n@web web[1-3]\n");
    assert_eq!(ask(&["-lll", "web[3-4]"]), "@all web3 1/5\n@web web3 1/3\n");
    assert_eq!(ask(&["-f", "@all!web2"]), "db[1-2],web[1,3]\n");
    assert_eq!(ask(&["-c", "@all&@web"]), "3\n");
}
