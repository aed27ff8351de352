//! The `swim` experiment against its anchors (PROTOCOLS.md §6.15, issue 4), fixed seeds:
//! first detection e/(e − 1) with aligned periods at N = 1,000, about 2.1 with random phases,
//! a message load per member per period independent of N, and Lifeguard's cut in false
//! positives in the slow-node scenario (scaled down from N = 500; the full size is in the
//! README).

use hearsay_overlay::swim::Lifeguard;
use hearsay_protocols::Timing;
use hearsay_sim::experiments::swim::{self, ANCHOR_SYNC, Params};
use hearsay_sim::report::Progress;

fn detection(nodes: usize, crash: usize, runs: u64, timing: Timing) -> swim::Report {
    let p = Params { crash, runs, timing, both_timings: false, ..Params::new(nodes) };
    swim::run(&p, &Progress::silent())
}

#[test]
fn first_detection_with_aligned_periods_is_e_over_e_minus_1() {
    // The CLI's defaults: 20 runs × 25 crashes = 500 events, standard error ≈ 0.95/√500.
    let r = detection(1_000, swim::default_crash(1_000), 20, Timing::Sync);
    assert_eq!(r.first_detection_events, 500);
    assert_eq!(r.undetected, 0);
    assert!(r.first_detection_periods_stderr < 0.05, "stderr {}", r.first_detection_periods_stderr);
    assert!(
        (r.first_detection_periods_mean - ANCHOR_SYNC).abs() <= 0.15,
        "mean {} periods, anchor {ANCHOR_SYNC}",
        r.first_detection_periods_mean
    );
    // Aligned periods: every first detection is a whole number of periods, at least 1.
    assert!(r.per_run_first_detection_mean.iter().all(|&m| m >= 1.0));
    // Infection-style dissemination reaches every member within a few periods.
    assert_eq!(r.undisseminated, 0);
    assert!(
        r.dissemination_periods_mean < r.first_detection_periods_mean + 2.0,
        "{}",
        r.dissemination_periods_mean
    );
    assert!(r.full_dissemination_periods_p99 <= 8.0, "{}", r.full_dissemination_periods_p99);
}

#[test]
fn first_detection_with_random_phases_is_about_2_1() {
    let r = detection(300, 20, 12, Timing::Phased);
    assert_eq!(r.undetected, 0);
    assert!(
        (1.8..=2.4).contains(&r.first_detection_periods_mean),
        "mean {} periods (anchor ≈ 2.1)",
        r.first_detection_periods_mean
    );
}

#[test]
fn message_load_per_member_per_period_does_not_depend_on_n() {
    let load = |nodes| {
        let r = detection(nodes, 0, 1, Timing::Sync);
        r.messages_per_member_per_period
    };
    let (small, large) = (load(100), load(2_000));
    // A ping and an ack per member per period, plus rare push-pull exchanges.
    for l in [small, large] {
        assert!((2.0..2.1).contains(&l), "{l}");
    }
    assert!((small - large).abs() / small < 0.10, "N = 100: {small}, N = 2,000: {large}");
}

#[test]
fn lifeguard_cuts_false_positives_on_healthy_members() {
    // §6.15's scenario at 2/5 of its size: 5% loss, 5% of the nodes slow with stalls of
    // U[5, 25] periods, 300 periods (N = 500, 600 periods in the README).
    let p = Params {
        crash: 0,
        runs: 1,
        both_timings: false,
        slow: 10,
        loss: 0.05,
        duration: 300,
        fp_runs: 1,
        ..Params::new(200)
    };
    let r = swim::run(&p, &Progress::silent());
    let (on, off) = (r.false_positives.unwrap(), r.baseline_false_positives.unwrap());
    let ratio = r.fp_ratio_healthy.unwrap();
    assert!(off >= 100.0, "plain SWIM should declare many healthy members dead: {off}");
    assert!(ratio >= 30.0, "FP off {off} / on {on} = {ratio}");
    // Without Lifeguard, the declarations come from the stalled members' own timers.
    assert!(r.baseline_fp_declarations_by_slow.unwrap() >= 0.9 * r.baseline_fp_declarations.unwrap());
    // Slow members really are unresponsive: Lifeguard does not save them.
    let slow_ratio = r.fp_ratio_slow.unwrap();
    assert!((0.5..2.0).contains(&slow_ratio), "{slow_ratio}");
    // The health multiplier slows the stalled members' probing: fewer suspicions originate.
    assert!(r.suspicions_healthy.unwrap() < r.baseline_suspicions_healthy.unwrap() / 2.0);
}

#[test]
fn each_lifeguard_part_alone_helps_less_than_all_three() {
    let fp = |lifeguard| {
        let p = Params {
            crash: 0,
            runs: 1,
            both_timings: false,
            slow: 5,
            loss: 0.05,
            duration: 200,
            lifeguard,
            ..Params::new(100)
        };
        let r = swim::run(&p, &Progress::silent());
        (r.false_positives.unwrap(), r.baseline_false_positives.unwrap())
    };
    let (all, off) = fp(Lifeguard::ON);
    let (health, _) = fp(Lifeguard { health: true, ..Lifeguard::OFF });
    let (suspicion, _) = fp(Lifeguard { dynamic_suspicion: true, ..Lifeguard::OFF });
    assert!(all <= health && all <= suspicion, "all {all}, health {health}, suspicion {suspicion}");
    assert!(health < off && suspicion < off, "off {off}, health {health}, suspicion {suspicion}");
}

#[test]
fn output_is_identical_across_thread_counts() {
    let run = |threads| {
        let p = Params { crash: 5, runs: 3, slow: 3, loss: 0.05, duration: 40, threads, ..Params::new(60) };
        serde_json::to_string(&swim::run(&p, &Progress::silent())).unwrap()
    };
    assert_eq!(run(1), run(2));
}

#[test]
fn one_seed_replays_a_run_with_faults_bit_for_bit() {
    use hearsay_protocols::{Duration, Instant};
    use hearsay_sim::kernel::Fault;
    use hearsay_sim::trace::TraceHash;
    let trace = |seed| {
        let p = Params { seed, loss: 0.05, ..Params::new(80) };
        let mut sim = swim::build(&p, 0, Timing::Phased, Lifeguard::ON);
        let s = |secs| Instant::ZERO + Duration::from_secs(secs);
        sim.schedule_fault(s(3), Fault::Crash(5));
        sim.schedule_fault(s(4), Fault::Stall(7));
        sim.schedule_fault(s(6), Fault::Partition(vec![(0..40).collect()]));
        sim.schedule_fault(s(9), Fault::Unstall(7));
        sim.schedule_fault(s(14), Fault::Heal);
        sim.schedule_fault(s(16), Fault::Restart(5));
        let mut hash = TraceHash::default();
        sim.run_until(s(30), &mut hash);
        (hash.finish(), hash.records)
    };
    let (a, records) = trace(11);
    assert!(records > 20_000, "the trace covers a real run ({records} records)");
    assert_eq!(a, trace(11).0);
    assert_ne!(a, trace(12).0);
}
