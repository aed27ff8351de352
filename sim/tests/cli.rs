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
    let (one, two) = (sim(&args), sim(&args));
    for out in [&one, &two] {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(String::from_utf8_lossy(&one.stdout).lines().count(), 1, "one JSON line");
    assert_eq!(one.stdout, two.stdout);
}

#[test]
fn cluster_runs_full_engines_from_the_command_line() {
    let args = [
        "cluster",
        "--nodes",
        "60",
        "--topics",
        "2",
        "--subscribers",
        "20",
        "--publish-rate",
        "10",
        "--duration",
        "4",
        "--drain",
        "20",
        "--crash-fraction",
        "0.1",
        "--partition-secs",
        "3",
        "--loss",
        "0.05",
        "--runs",
        "1",
        "--seed",
        "2",
        "--json",
    ];
    let out = sim(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(stdout.lines().count(), 1, "one JSON line, progress on stderr: {stdout}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["experiment"], "cluster");
    let flags = [("nodes", 60.0), ("topics", 2.0), ("subscribers_per_topic", 20.0), ("publish_rate", 10.0)];
    for (field, value) in flags {
        assert_eq!(v[field].as_f64(), Some(value), "{field}: {v}");
    }
    assert_eq!((v["loss"].as_f64(), v["crash_fraction"].as_f64()), (Some(0.05), Some(0.1)), "{v}");
    assert_eq!(
        (v["partition_secs"].as_f64(), v["runs"].as_u64(), v["seed"].as_u64()),
        (Some(3.0), Some(1), Some(2))
    );
    // The experiment's claim, from the command line: nothing lost silently, nothing twice.
    assert_eq!(v["accounted_ratio"], 1.0, "{v}");
    assert_eq!((v["silent_losses"].as_u64(), v["duplicates"].as_u64()), (Some(0), Some(0)), "{v}");
    assert!(v["delivery_ratio"].as_f64().is_some_and(|d| d > 0.99), "{v}");
    let run = &v["per_run"][0];
    assert_eq!(run["crashed"], 6, "--crash-fraction 0.1 of 60 nodes: {run}");
    // 4 s at 10/s (random publish times, 40 on average), each to one topic of 20 subscribers:
    // the eligible pairs exclude the crashed subscribers.
    let (published, eligible) = (run["published"].as_u64().unwrap(), run["eligible"].as_u64().unwrap());
    assert!((28..=52).contains(&published), "{run}");
    assert!(eligible < published * 20 && eligible > published * 15, "{run}");
    let bytes = v["node_bytes_per_s"].as_object().expect("bytes by protocol");
    for p in ["Membership", "Ring", "Tree", "Pbcast", "AntiEntropy"] {
        assert!(bytes.get(p).and_then(|b| b.as_f64()).is_some_and(|b| b > 0.0), "{p}: {v}");
    }
    let again = sim(&args);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    // Same arguments, same report, but for the process's memory (`state_bytes_per_node` is
    // measured from RSS, which moves run to run).
    let strip = |bytes: &[u8]| {
        let mut v: serde_json::Value = serde_json::from_slice(bytes).expect("JSON");
        v.as_object_mut().expect("an object").remove("state_bytes_per_node");
        v
    };
    assert_eq!(strip(&again.stdout), strip(&out.stdout), "same arguments, same report");
    let table = sim(&[
        "cluster",
        "--nodes",
        "30",
        "--topics",
        "1",
        "--duration",
        "2",
        "--drain",
        "10",
        "--runs",
        "1",
        "--quiet",
    ]);
    assert!(table.status.success(), "{}", String::from_utf8_lossy(&table.stderr));
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text.starts_with("cluster  N = 30  topics = 1 x 30 subscribers"), "{text}");
    for (bad, says) in [
        (vec!["cluster", "--nodes", "2"], "--nodes"),
        (vec!["cluster", "--publish-rate", "0"], "--publish-rate and --duration must be positive"),
        (vec!["cluster", "--crash-fraction", "1.5"], "not a probability"),
    ] {
        let out = sim(&bad);
        assert!(!out.status.success(), "{bad:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{bad:?}: {err}");
    }
}

#[test]
fn bench_measures_the_kernel_from_the_command_line() {
    let out = sim(&["bench", "--events", "200000", "--nodes", "2000", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "one JSON line: {stdout}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        (v["experiment"].as_str(), v["events"].as_u64(), v["ae_nodes"].as_u64()),
        (Some("bench"), Some(200_000), Some(2000))
    );
    // Speed: at least 10^5 events a second on a loaded 2-core machine (the README's figures
    // are in the millions).
    for field in ["events_per_sec_latency", "events_per_sec_zero_latency"] {
        assert!(v[field].as_f64().is_some_and(|x| x > 1e5), "{field}: {v}");
    }
    // Memory: a node costs more than its inline struct and less than a megabyte.
    let inline = v["ae_machine_inline_bytes"].as_f64().expect("inline bytes");
    assert!(inline > 0.0, "{v}");
    assert!(v["ae_bytes_per_node"].as_f64().is_some_and(|b| b > inline && b < 1e6), "{v}");
    let table = sim(&["bench", "--events", "100000", "--nodes", "1000"]);
    assert!(table.status.success(), "{}", String::from_utf8_lossy(&table.stderr));
    assert!(!table.stdout.is_empty());
    let bad = sim(&["bench", "--events", "many"]);
    assert_eq!(bad.status.code(), Some(2), "{}", String::from_utf8_lossy(&bad.stderr));
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
