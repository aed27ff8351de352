//! `hearsay demo` as a newcomer runs it (smaller and shorter): it narrates, checks its
//! subscribers by seq, says what it measured in its closing line, and exits 0 only when its
//! own check holds.

use std::process::Command;
use std::time::Duration;

use hearsay_tests::{binary, run, serial};

/// The numbers of a line, in order.
fn numbers(line: &str) -> Vec<u64> {
    line.split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .filter_map(|w| w.parse().ok())
        .collect()
}

#[test]
fn the_demo_narrates_checks_every_seq_and_exits_zero() {
    let _serial = serial();
    let out = run(
        Command::new(binary()).args([
            "demo",
            "--nodes",
            "4",
            "--duration",
            "4",
            "--rate",
            "20",
            "--loss",
            "0.05",
        ]),
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    for says in [
        "starting 4 agents on 127.0.0.1",
        "cluster formed: every agent sees 4 members alive",
        "killed n3 (a subscriber) without a goodbye",
        "avg(load) = ",
        "agents leaving the cluster...",
    ] {
        assert!(lines.iter().any(|l| l.contains(says)), "no `{says}` in:\n{}", out.stdout);
    }
    // n0 and n2 survive (n3, the last subscriber, is killed); one line each, then the total.
    let per: Vec<Vec<u64>> = ["n0: ", "n2: "]
        .iter()
        .map(|p| {
            let line = lines
                .iter()
                .find(|l| l.contains(p) && l.contains("delivered"))
                .unwrap_or_else(|| panic!("no {p}line"));
            numbers(line.split_once(p).map_or("", |(_, rest)| rest))
        })
        .collect();
    let last = lines.last().copied().unwrap_or("");
    assert!(last.contains("] done: 2 surviving subscribers, "), "{last}");
    let total = numbers(last.split_once("done: ").map_or("", |(_, r)| r));
    // [subscribers, pairs, delivered, gapped, out of order, duplicated, silent]
    assert_eq!(total.len(), 7, "{last}");
    for p in &per {
        // [delivered, expected, gapped, out of order, duplicated, silent]
        assert_eq!(p.len(), 6, "{per:?}");
        assert_eq!(p[0] + p[2], p[1], "every message delivered or announced: {per:?}");
        assert_eq!(&p[3..], [0, 0, 0], "{per:?}");
    }
    assert_eq!(total[1], per[0][1] + per[1][1], "{last}");
    assert_eq!(total[2], per[0][0] + per[1][0], "{last}");
    assert_eq!(total[3], per[0][2] + per[1][2], "{last}");
    assert_eq!(&total[4..], [0, 0, 0], "{last}");
    // 4 s at 20 messages/s (both publishers together), on a fixed schedule.
    assert!((78..=81).contains(&per[0][1]), "{per:?}");
}

#[test]
fn the_demo_refuses_settings_it_cannot_show() {
    for (args, says) in [
        (vec!["demo", "--nodes", "2"], "error: the demo needs at least 3 nodes (--nodes)"),
        (vec!["demo", "--loss", "0.5"], "error: --loss must be in [0, 0.5)"),
    ] {
        let out = run(Command::new(binary()).args(&args), Duration::from_secs(30));
        assert_eq!((out.status.code(), out.stderr.trim()), (Some(1), says), "{args:?}");
    }
}
