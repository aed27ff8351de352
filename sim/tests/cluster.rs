//! The `cluster` experiment's claim (issue 5 §1), at a size the test suite can afford: full
//! Engines under 5% loss, crashes and a partition lose nothing silently (every eligible
//! subscriber delivers each message or is told of a gap covering it), deliver nothing twice,
//! and announce no gap at all when no publisher crashes and the partition is shorter than the
//! publishers' history. The 8 s partition outlasts pbcast's repair window (20 rounds of
//! 200 ms), so what was published on the other side comes back through the anti-entropy
//! catch-up the Engine runs with members that were unreachable. The N = 2,000 figures are in
//! the README, from the CLI.

use hearsay_sim::experiments::cluster::{self, Params};
use hearsay_sim::report::Progress;

fn small(seed: u64) -> Params {
    Params {
        topics: 4,
        subscribers: 30,
        publish_rate: 10.0,
        duration: 12.0,
        loss: 0.05,
        drain: 30.0,
        seed,
        threads: 1,
        ..Params::new(80)
    }
}

#[test]
fn loss_crashes_and_a_partition_lose_nothing_silently() {
    for seed in [1, 2] {
        let p = Params { crash_fraction: 0.1, partition_secs: 8.0, ..small(seed) };
        let r = cluster::run(&p, &Progress::silent());
        let run = &r.per_run[0];
        assert!(run.eligible > 1000, "seed {seed}: only {} eligible pairs", run.eligible);
        // The crashed subscribers are no longer owed anything: fewer eligible pairs than
        // messages × 30 subscribers.
        assert!(run.eligible < run.published * 30, "seed {seed}: {run:?}");
        assert_eq!(r.silent_losses, 0, "seed {seed}: {r:?}");
        assert_eq!(r.duplicates, 0, "seed {seed}: {r:?}");
        assert_eq!(r.accounted_ratio, 1.0, "seed {seed}: {r:?}");
        assert!(r.delivery_ratio >= 0.99, "seed {seed}: delivery {}", r.delivery_ratio);
    }
}

#[test]
fn no_gaps_while_the_history_covers_the_outage() {
    let p = Params { partition_secs: 8.0, ..small(3) };
    let r = cluster::run(&p, &Progress::silent());
    assert_eq!(r.silent_losses, 0, "{r:?}");
    assert_eq!(r.gaps, 0, "{r:?}");
    assert_eq!(r.delivery_ratio, 1.0, "{r:?}");
}

/// Issue 11: nodes that crash and come back with their store (what the daemon keeps in its data
/// dir) miss nothing: what was published while they were down comes back from their peers,
/// their own streams continue (no duplicate, no second stream), and nothing is lost silently.
#[test]
fn restarted_nodes_with_their_store_deliver_everything() {
    for seed in [4, 5] {
        let p = Params { restart_fraction: 0.1, down_secs: 8.0, ..small(seed) };
        let r = cluster::run(&p, &Progress::silent());
        let run = &r.per_run[0];
        assert!(run.restarted >= 6, "seed {seed}: {} restarted", run.restarted);
        assert_eq!(r.silent_losses, 0, "seed {seed}: {r:?}");
        assert_eq!(r.duplicates, 0, "seed {seed}: {r:?}");
        assert_eq!(r.gaps, 0, "seed {seed}: {r:?}");
        assert_eq!(r.delivery_ratio, 1.0, "seed {seed}: {r:?}");
    }
}

/// Without its store a restarted node opens new streams and subscribes afresh: the cluster
/// still loses nothing silently for the nodes that stayed up.
#[test]
fn restarted_nodes_without_their_store_do_not_disturb_the_others() {
    let p = Params { restart_fraction: 0.1, down_secs: 8.0, lose_store: true, ..small(6) };
    let r = cluster::run(&p, &Progress::silent());
    assert_eq!(r.silent_losses, 0, "{r:?}");
    assert_eq!(r.duplicates, 0, "{r:?}");
}
