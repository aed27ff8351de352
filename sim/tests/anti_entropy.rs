//! The anti-entropy experiment against its anchors (PROTOCOLS.md §1.7): mean rounds until one
//! update reaches every node, fixed seeds, ±1 round.

use hearsay_protocols::anti_entropy::AeMode;
use hearsay_sim::experiments::anti_entropy::{self, Params};
use hearsay_sim::report::Progress;

fn check(nodes: usize, mode: AeMode) {
    let p = Params { runs: 20, seed: 1, ..Params::new(nodes, mode) };
    let r = anti_entropy::run(&p, &Progress::silent());
    let anchor = anti_entropy::anchor(mode, nodes).expect("an anchor exists");
    assert_eq!(r.incomplete_runs, 0);
    assert!(
        (r.rounds_mean - anchor).abs() <= 1.0,
        "{mode:?} N={nodes}: mean {} rounds, anchor {anchor}",
        r.rounds_mean
    );
    // Digest first, then deltas: each node receives the update about once, whatever the mode.
    assert!(r.transmissions_per_node < 1.5, "{}", r.transmissions_per_node);
    assert_eq!(r.informed_fraction_mean.last().copied(), Some(1.0));
}

#[test]
fn push_1k() {
    check(1_000, AeMode::Push);
}

#[test]
fn pull_1k() {
    check(1_000, AeMode::Pull);
}

#[test]
fn push_pull_1k() {
    check(1_000, AeMode::PushPull);
}

#[test]
fn push_10k() {
    check(10_000, AeMode::Push);
}

#[test]
fn pull_10k() {
    check(10_000, AeMode::Pull);
}

#[test]
fn push_pull_10k() {
    check(10_000, AeMode::PushPull);
}

#[test]
fn push_pull_beats_pull_beats_push() {
    let rounds = |mode| anti_entropy::run(&Params::new(1_000, mode), &Progress::silent()).rounds_mean;
    let (push, pull, pp) = (rounds(AeMode::Push), rounds(AeMode::Pull), rounds(AeMode::PushPull));
    assert!(pp < pull && pull < push, "push {push}, pull {pull}, push-pull {pp}");
}

#[test]
fn loss_slows_convergence_but_everyone_is_reached() {
    let clean =
        anti_entropy::run(&Params { runs: 10, ..Params::new(1_000, AeMode::PushPull) }, &Progress::silent());
    let lossy = anti_entropy::run(
        &Params { runs: 10, loss: 0.3, ..Params::new(1_000, AeMode::PushPull) },
        &Progress::silent(),
    );
    assert_eq!(lossy.incomplete_runs, 0);
    assert!(lossy.rounds_mean > clean.rounds_mean + 1.0, "{} vs {}", lossy.rounds_mean, clean.rounds_mean);
}
