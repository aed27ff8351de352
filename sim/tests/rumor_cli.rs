//! `hearsay-sim rumor` and `hearsay-sim flood-vs-gossip` as a user runs them: JSON lines with
//! the fields the issue names, a k sweep, tables, plots, identical bytes, bad input.

use std::process::Command;

fn sim(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hearsay-sim")).args(args).output().expect("hearsay-sim runs")
}

fn json_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every stdout line is JSON"))
        .collect()
}

#[test]
fn rumor_sweep_prints_one_json_line_per_k() {
    let out = sim(&[
        "rumor",
        "--nodes",
        "300",
        "--variant",
        "feedback-coin",
        "--k",
        "1..3",
        "--runs",
        "3",
        "--seed",
        "4",
        "--json",
    ]);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 3);
    for (k, v) in (1..=3).zip(&lines) {
        assert_eq!(v["experiment"], "rumor");
        assert_eq!(v["k"], k);
        assert_eq!(v["nodes"], 300);
        assert_eq!(v["variant"], "feedback-coin");
        assert_eq!(v["mode"], "push");
        assert_eq!(v["timing"], "rounds");
        for field in ["residue", "traffic", "t_ave", "t_last", "formula_residue"] {
            assert!(v[field].as_f64().is_some_and(|x| x > 0.0), "{field}: {}", v[field]);
        }
    }
    assert!(String::from_utf8_lossy(&out.stderr).contains("rumor k=3: run 3/3"));
}

#[test]
fn flood_vs_gossip_json_has_both_sides_and_ratios() {
    let out = sim(&[
        "flood-vs-gossip",
        "--nodes",
        "200",
        "--degree",
        "6",
        "--b",
        "2",
        "--f",
        "2",
        "--runs",
        "2",
        "--json",
    ]);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1);
    let v = &lines[0];
    assert_eq!(v["experiment"], "flood-vs-gossip");
    assert_eq!(v["graph"], "random");
    assert_eq!((v["b"].as_u64(), v["f"].as_u64(), v["degree"].as_u64()), (Some(2), Some(2), Some(6)));
    for side in ["flood", "bcrm"] {
        for field in ["messages_per_node", "coverage", "rounds"] {
            assert!(v[side][field].as_f64().is_some_and(|x| x > 0.0), "{side}.{field}");
        }
    }
    for field in ["msg_ratio", "coverage_ratio", "time_ratio"] {
        assert!(v[field].as_f64().is_some_and(|x| x > 0.0), "{field}");
    }
    assert_eq!(v["claimed"]["coverage"], 0.9);
}

#[test]
fn same_arguments_same_bytes() {
    for args in [
        vec!["rumor", "--nodes", "200", "--runs", "2", "--json", "--loss", "0.1", "--timing", "async"],
        vec!["flood-vs-gossip", "--nodes", "200", "--runs", "2", "--json", "--graph", "power-law"],
    ] {
        let (one, two) = (sim(&args), sim(&args));
        for out in [&one, &two] {
            assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        assert!(!one.stdout.is_empty(), "{args:?}");
        assert_eq!(one.stdout, two.stdout, "{args:?}");
    }
}

#[test]
fn tables_and_plots() {
    let dir = std::env::temp_dir().join(format!("hearsay-sim-rumor-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (args, says) in [
        (vec!["rumor", "--nodes", "200", "--runs", "2", "--k", "1..2"], "formula"),
        (
            vec!["rumor", "--nodes", "200", "--runs", "2", "--timing", "async", "--variant", "feedback-coin"],
            "Demers",
        ),
        (vec!["flood-vs-gossip", "--nodes", "200", "--runs", "2"], "claimed"),
    ] {
        let svg = dir.join("p.svg");
        let mut full = args.clone();
        full.extend(["--plot", svg.to_str().unwrap(), "--quiet"]);
        let out = sim(&full);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let table = String::from_utf8(out.stdout).unwrap();
        assert!(table.contains(says), "{table}");
        let drawn = std::fs::read_to_string(&svg).unwrap();
        assert!(drawn.starts_with("<svg") && drawn.contains("polyline"), "{args:?}: not an SVG line plot");
        std::fs::remove_file(&svg).unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_is_a_clear_error() {
    for (args, says) in [
        (vec!["rumor", "--k", "0"], "not a k"),
        (vec!["rumor", "--k", "5..2"], "empty k range"),
        (vec!["rumor", "--variant", "sideways"], "sideways"),
        (vec!["rumor", "--timing", "never"], "never"),
        (vec!["rumor", "--loss", "1.5"], "not a probability"),
        (vec!["rumor", "--fanout", "0"], "fanout"),
        (vec!["flood-vs-gossip", "--graph", "cube"], "cube"),
        (vec!["flood-vs-gossip", "--graph", "power-law", "--degree", "5"], "even"),
        (vec!["flood-vs-gossip", "--nodes", "20", "--degree", "30"], "needs more"),
        (vec!["flood-vs-gossip", "--ttl", "0"], "ttl"),
    ] {
        let out = sim(&args);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
