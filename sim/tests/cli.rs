//! The `hearsay-sim` binary as a user runs it: JSON output, tables, plots, bad input.

use std::process::Command;

fn sim(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hearsay-sim")).args(args).output().expect("hearsay-sim runs")
}

#[test]
fn json_line_has_the_documented_fields() {
    let out = sim(&[
        "anti-entropy",
        "--nodes",
        "300",
        "--mode",
        "push-pull",
        "--runs",
        "3",
        "--seed",
        "5",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let last = stdout.lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(v["experiment"], "anti-entropy");
    assert_eq!(v["nodes"], 300);
    assert_eq!(v["mode"], "push-pull");
    assert_eq!(v["loss"], 0.0);
    assert_eq!(v["runs"], 3);
    assert_eq!(v["seed"], 5);
    for field in ["rounds_mean", "rounds_p99", "rounds_max", "transmissions_per_node"] {
        assert!(v[field].as_f64().is_some_and(|x| x > 0.0), "{field}: {}", v[field]);
    }
    // Progress went to stderr, not stdout.
    assert_eq!(stdout.lines().count(), 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("run 3/3"));
}

#[test]
fn same_arguments_same_bytes() {
    let args = ["anti-entropy", "--nodes", "200", "--runs", "2", "--json", "--loss", "0.1"];
    assert_eq!(sim(&args).stdout, sim(&args).stdout);
}

#[test]
fn table_and_plot() {
    let dir = std::env::temp_dir().join(format!("hearsay-sim-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("ae.svg");
    let out =
        sim(&["anti-entropy", "--nodes", "200", "--runs", "2", "--plot", svg.to_str().unwrap(), "--quiet"]);
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("rounds to full coverage"), "{table}");
    let drawn = std::fs::read_to_string(&svg).unwrap();
    assert!(drawn.starts_with("<svg") && drawn.contains("polyline"), "not an SVG line plot");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_is_a_clear_error() {
    for (args, says) in [
        (vec!["anti-entropy", "--loss", "1.5"], "not a probability"),
        (vec!["anti-entropy", "--nodes", "1"], "nodes"),
        (vec!["anti-entropy", "--mode", "sideways"], "sideways"),
        (vec!["anti-entropy", "--runs", "0"], "runs"),
    ] {
        let out = sim(&args);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let out =
        sim(&["anti-entropy", "--plot", "/nonexistent-dir/x.svg", "--nodes", "50", "--runs", "1", "--quiet"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot draw"));
}
