//! `hearsay-sim fuzz` in CI (issue 12): random and mutated-valid frames of every protocol from
//! fake members into a small cluster of Engines: no panic, bounded state, and the honest
//! members still deliver each other's messages.

use hearsay_sim::experiments::fuzz::{self, Params};

#[test]
fn twenty_thousand_hostile_frames_cause_no_panic_and_honest_members_still_deliver() {
    let r = fuzz::run(&Params::new(20_000, 1));
    assert_eq!(r.panics, 0, "{:#?}", r.panic_cases);
    assert!(
        r.delivered_ok,
        "{} of {} final messages delivered",
        r.final_delivered,
        r.honest * (r.honest - 1)
    );
    assert!(r.frames_by_kind.iter().all(|&n| n > 0), "every kind was sent: {:?}", r.frames_by_kind);
    assert!(r.mutated > 0 && r.decode_errors > 0);
    // Four honest Engines: each part capped, far below this.
    assert!(r.max_state_bytes < 256 << 20, "{}", r.max_state_bytes);
}

#[test]
fn a_seed_replays_the_same_run() {
    let strip = |mut r: fuzz::Report| {
        r.elapsed_s = 0.0;
        serde_json::to_string(&r).unwrap()
    };
    assert_eq!(strip(fuzz::run(&Params::new(3_000, 7))), strip(fuzz::run(&Params::new(3_000, 7))));
}
