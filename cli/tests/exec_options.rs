//! `cohort exec` options the way pdsh and clush users use them, on real processes: `--rerun
//! failed` runs on exactly the hosts the last run failed on, `-x` leaves hosts out, `-w ^FILE`
//! reads the node sets from a file, `-L` prints `host: line`, and standard input reaches every
//! host's command, its digest in every host's audit record.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{TestCluster, exec, path_str};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn site(hosts: u16) -> (TestCluster, std::path::PathBuf) {
    let mut cluster = TestCluster::init_exec(1, hosts);
    cluster.start_all();
    let state = cluster.dir.path().join("client");
    cluster.login(&state);
    (cluster, state)
}

#[test]
fn standard_input_reaches_every_hosts_command() {
    let (cluster, state) = site(20);
    let mut child = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(["exec", "--state-dir", path_str(&state), "-w", "h[01-20]", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cohort exec runs");
    child.stdin.take().expect("stdin").write_all(b"hello\n").expect("writes");
    let out = child.wait_with_output().expect("finishes");
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("h[01-20] (20) ok\n"), "one group of twenty: {text}");
    assert_eq!(text.matches("hello\n").count(), 1, "{text}");
    assert!(text.contains("20 hosts: 20 ok"), "{text}");
    // Every host's record names the input it read by size and SHA-256 (never the bytes).
    let config = path_str(&cluster.config(0)).to_owned();
    let export = common::cohort(&["audit", "export", "--config", &config, "--json"]);
    let hello = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
    let with_input = String::from_utf8_lossy(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line"))
        .filter(|r| r["decision"] == "run")
        .filter(|r| {
            r["data"][0]["kind"] == "stdin" && r["data"][0]["size"] == 6 && r["data"][0]["sha256"] == hello
        })
        .count();
    assert_eq!(with_input, 20, "{}", String::from_utf8_lossy(&export.stdout));
}

#[test]
fn rerun_failed_runs_on_exactly_the_hosts_that_failed_and_exclusions_and_host_files_narrow_the_set() {
    let (cluster, state) = site(10);

    // Four of ten hosts find their flag.
    let flags = cluster.dir.path().join("flags");
    std::fs::create_dir_all(&flags).expect("flag dir");
    for host in ["h01", "h02", "h03", "h04"] {
        std::fs::write(flags.join(format!("flag-{host}")), "").expect("flag");
    }
    let test = format!("{}/flag-%h", path_str(&flags));
    let out = exec(&state, &["-w", "h[01-10]", "--", "test", "-e", &test]);
    let text = stdout(&out);
    assert!(!out.status.success(), "six hosts failed: {text}");
    assert!(text.contains("h[01-04] (4) ok"), "{text}");
    assert!(text.contains("h[05-10] (6) exit 1"), "{text}");

    // --rerun failed takes exactly those six.
    let out = exec(&state, &["--rerun", "failed", "--", "true"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("h[05-10] (6) ok"), "{text}");
    assert!(text.contains("6 hosts: 6 ok"), "{text}");
    // That run succeeded everywhere, so nothing failed in it.
    let out = exec(&state, &["--rerun", "failed", "--", "true"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no host failed in the last run"));

    // -x leaves hosts out; -w ^FILE reads node sets from a file, comments and blank lines aside.
    let out = exec(&state, &["-w", "h[01-10]", "-x", "h[03-10]", "--", "true"]);
    let text = stdout(&out);
    assert!(text.contains("h[01-02] (2) ok") && text.contains("2 hosts: 2 ok"), "{text}");
    let file = cluster.dir.path().join("hosts.txt");
    std::fs::write(&file, "h01\n# the last two\n\nh[09-10]\n").expect("host file");
    let from_file = format!("^{}", path_str(&file));
    let out = exec(&state, &["-w", &from_file, "-x", "h10", "--", "true"]);
    let text = stdout(&out);
    assert!(text.contains("h[01,09] (2) ok") && text.contains("2 hosts: 2 ok"), "{text}");

    // Hosts the directory does not know fold into one group, like any hosts with one outcome.
    let out = exec(&state, &["-w", "h01,zz[1-3]", "--", "true"]);
    let text = stdout(&out);
    assert!(text.contains("zz[1-3] (3) failed: not a managed host"), "{text}");
    assert_eq!(text.matches("not a managed host").count(), 1, "{text}");

    // -L: a `host: line` per line, nothing else on stdout.
    let out = exec(&state, &["-L", "-w", "h[01-03]", "--", "echo", "up", "%h"]);
    let mut lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    lines.sort();
    assert_eq!(lines, ["h01: up h01", "h02: up h02", "h03: up h03"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("3 hosts: 3 ok"));

    // -b is the grouped default said out loud (clush's habit); it and -L exclude each other.
    let out = exec(&state, &["-b", "-w", "h[01-03]", "--", "echo", "same"]);
    assert!(stdout(&out).contains("h[01-03] (3) ok"), "{}", stdout(&out));
    let both = exec(&state, &["-b", "-L", "-w", "h01", "--", "true"]);
    assert!(!both.status.success());
    assert!(String::from_utf8_lossy(&both.stderr).contains("cannot be used with"), "{both:?}");

    // `%%` is one `%`: `date +%%h` keeps its `%h` for date, and `%%%h` is `%` then the host.
    let out = exec(&state, &["-L", "-w", "h[01-02]", "--", "echo", "100%%", "+%%h-%d", "%%%h"]);
    let mut lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    lines.sort();
    assert_eq!(lines, ["h01: 100% +%h-%d %h01", "h02: 100% +%h-%d %h02"]);

    // -S: the largest exit status of any host (h01 exits 1, h02 2, h03 3), with or without `--`.
    let exits = ["/usr/bin/python3", "-c", "import sys; sys.exit(int(sys.argv[1][1:]))", "%h"];
    let largest = exec(&state, &[&["-S", "-w", "h[01-03]"][..], &exits[..]].concat());
    assert_eq!(largest.status.code(), Some(3), "{}", stdout(&largest));
    let plain = exec(&state, &[&["-w", "h[01-03]", "--"][..], &exits[..]].concat());
    assert_eq!(plain.status.code(), Some(1), "without -S any failure is 1");
    assert_eq!(exec(&state, &["-S", "-w", "h[01-03]", "true"]).status.code(), Some(0));
}
