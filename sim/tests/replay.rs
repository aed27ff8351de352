//! One seed reproduces a whole run bit for bit: the full trace (every send with its fate,
//! every delivery, every event, every fault) hashes the same twice, and differently for
//! another seed.

use hearsay_protocols::anti_entropy::AeMode;
use hearsay_protocols::{Duration, Instant};
use hearsay_sim::experiments::anti_entropy::{self, Params};
use hearsay_sim::kernel::Fault;
use hearsay_sim::trace::TraceHash;

fn trace(seed: u64) -> ([u8; 32], u64) {
    let p = Params { seed, loss: 0.1, ..Params::new(300, AeMode::PushPull) };
    let mut sim = anti_entropy::build(&p, 0);
    let mut hash = TraceHash::default();
    let s = |secs: u64| Instant::from_micros(Duration::from_secs(secs).as_micros());
    sim.schedule_fault(s(2), Fault::Crash(5));
    sim.schedule_fault(s(3), Fault::Partition(vec![(0..150).collect()]));
    sim.schedule_fault(s(6), Fault::Heal);
    sim.schedule_fault(s(7), Fault::Restart(5));
    sim.call(17, &mut hash, |m, now| {
        let stream = hearsay_protocols::StreamId { topic: hearsay_protocols::TopicId(1), origin: m.id() };
        m.insert(
            now,
            hearsay_protocols::anti_entropy::Entry::unsealed(stream, 1, bytes::Bytes::from_static(b"x")),
        )
    });
    sim.run_until(s(12), &mut hash);
    (hash.finish(), hash.records)
}

#[test]
fn same_seed_same_trace() {
    let (a, records) = trace(11);
    assert!(records > 10_000, "the trace covers a real run ({records} records)");
    assert_eq!(a, trace(11).0);
}

#[test]
fn another_seed_another_trace() {
    assert_ne!(trace(11).0, trace(12).0);
}

#[test]
fn experiment_output_is_identical_across_thread_counts() {
    let run = |threads| {
        let p = Params { runs: 6, threads, ..Params::new(500, AeMode::Push) };
        serde_json::to_string(&anti_entropy::run(&p, &hearsay_sim::report::Progress::silent())).unwrap()
    };
    assert_eq!(run(1), run(3));
}
