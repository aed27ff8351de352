//! `hearsay-sim swim` as a user runs it: the issue's JSON fields, a table, a plot, bad flags.

use std::process::Command;

fn sim(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hearsay-sim")).args(args).output().expect("hearsay-sim runs")
}

#[test]
fn json_line_has_the_fields_the_issue_names() {
    let args = [
        "swim",
        "--nodes",
        "60",
        "--crash",
        "4",
        "--slow",
        "3",
        "--loss",
        "0.05",
        "--duration",
        "30",
        "--runs",
        "2",
        "--seed",
        "3",
        "--json",
    ];
    let out = sim(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(stdout.lines().count(), 1);
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["experiment"], "swim");
    assert_eq!((v["nodes"].as_u64(), v["crash"].as_u64(), v["slow"].as_u64()), (Some(60), Some(4), Some(3)));
    assert_eq!(v["lifeguard"], "on");
    assert_eq!(v["timing"], "rounds");
    for field in
        ["first_detection_periods_mean", "full_dissemination_periods_p99", "messages_per_member_per_period"]
    {
        assert!(v[field].as_f64().is_some_and(|x| x > 0.0), "{field}: {}", v[field]);
    }
    for field in ["false_positives", "baseline_false_positives", "fp_ratio_healthy", "fp_ratio_slow"] {
        assert!(v[field].as_f64().is_some(), "{field}: {}", v[field]);
    }
    assert!(v["first_detection_periods_mean_phased"].as_f64().is_some(), "both timings by default");
    assert!(String::from_utf8_lossy(&out.stderr).contains("run 6/6"));
    assert_eq!(sim(&args).stdout, out.stdout, "same arguments, same bytes");
}

#[test]
fn table_and_plot() {
    let dir = std::env::temp_dir().join(format!("hearsay-sim-swim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("swim.svg");
    let out = sim(&[
        "swim",
        "--nodes",
        "50",
        "--crash",
        "3",
        "--slow",
        "2",
        "--duration",
        "20",
        "--runs",
        "1",
        "--quiet",
        "--lifeguard",
        "health,buddy",
        "--timing",
        "phased",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("first detection") && table.contains("false positives"), "{table}");
    assert!(table.contains("lifeguard = health,buddy") && table.contains("timing = phased"), "{table}");
    let drawn = std::fs::read_to_string(&svg).unwrap();
    assert!(drawn.starts_with("<svg") && drawn.contains("polyline"), "not an SVG line plot");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_flags_are_clear_errors() {
    for (args, says) in [
        (vec!["swim", "--lifeguard", "maybe"], "not a Lifeguard part"),
        (vec!["swim", "--nodes", "2"], "nodes"),
        (vec!["swim", "--nodes", "10", "--crash", "9"], "--crash 9"),
        (vec!["swim", "--nodes", "10", "--slow", "9", "--crash", "1"], "--slow 9"),
        (vec!["swim", "--timing", "sideways"], "sideways"),
        (vec!["swim", "--loss", "1"], "not a probability"),
        (vec!["swim", "--duration", "0"], "duration"),
    ] {
        let out = sim(&args);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
