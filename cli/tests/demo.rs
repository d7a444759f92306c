//! `cohort demo` (the README's first command) runs a cluster, makes a change, sees it installed
//! everywhere and exits 0.

use std::process::Command;

#[test]
fn the_demo_runs_end_to_end() {
    let out = Command::new(env!("CARGO_BIN_EXE_cohort")).arg("demo").output().expect("cohort runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("every member installed v2@"), "{stdout}");
    assert!(stdout.contains("`cohort get dns` at m2: 10.0.0.53"), "{stdout}");
    assert!(stdout.contains("h[01-06] (6) ok"), "uname -a on six hosts, one group:\n{stdout}");
    assert!(stdout.contains("h[02,04,06] (3) exit 1"), "the failing command, grouped:\n{stdout}");
    assert!(stdout.contains("chain verified"), "{stdout}");
    assert!(stdout.contains("all 6 agents applied it"), "the policy reached every agent:\n{stdout}");
    assert!(stdout.contains("global status (current): 6 agents reporting"), "{stdout}");
    // Measured, with the failure the demo causes on purpose named: 3 of 4 checks pass.
    assert!(stdout.contains("failing checks: demo-flag (6 agents)"), "{stdout}");
    assert!(stdout.contains("75% of 8"), "two agents per platform, four checks each:\n{stdout}");
    assert!(stdout.contains("stopped all members"), "{stdout}");
}
