//! The `hearsay` binary's own face: its version, every command in its help, and no test-only
//! flag shown to users. (Building this test also builds the binary that `tests/` runs, so
//! `cargo test --workspace` alone has everything it needs.)

use std::process::Command;

fn hearsay(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hearsay")).args(args).output().expect("hearsay runs")
}

#[test]
fn help_lists_every_command_and_hides_the_test_flags() {
    let out = hearsay(&["--version"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("hearsay {}", env!("CARGO_PKG_VERSION")));
    let out = hearsay(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for command in [
        "agent",
        "members",
        "publish",
        "subscribe",
        "query",
        "value",
        "topics",
        "ring",
        "demo",
        "bench",
        "keygen",
    ] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(command)),
            "`{command}` missing from:\n{help}"
        );
    }
    let out = hearsay(&["agent", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--secret-file") && help.contains("ready.json"), "{help}");
    for hidden in ["--test-control", "--test-loss", "--test-delay-ms"] {
        assert!(!help.contains(hidden), "{hidden} is for tests only:\n{help}");
    }
    let out = hearsay(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unrecognized subcommand 'frobnicate'"));
}
