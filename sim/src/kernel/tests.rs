//! The kernel driving a toy machine: ordering, faults, stalls, partitions, replay.

use hearsay_protocols::{
    Duration, Instant, Machine, NodeId, Outbox, PeerView, Rng, Ticker, Timing, Transmit,
};

use super::*;
use crate::trace::TraceHash;

/// Each tick: send a numbered datagram to a random peer. Each message: emit it as an event and
/// answer every even number with a stream message carrying number + 1.
struct Toy {
    id: NodeId,
    rng: Rng,
    peers: PeerView,
    tick: Ticker,
    sent: u64,
    out: Outbox<u64, (NodeId, u64)>,
}

impl Toy {
    fn new(init: &NodeInit, peers: PeerView, timing: Timing) -> Self {
        let mut rng = Rng::from_seed(init.seed.machine("toy"));
        let tick = Ticker::start(init.now, Duration::from_secs(1), timing, &mut rng);
        Toy { id: init.id, rng, peers, tick, sent: 0, out: Outbox::default() }
    }
}

impl Machine for Toy {
    type Message = u64;
    type Event = (NodeId, u64);
    fn handle_message(&mut self, _now: Instant, from: NodeId, msg: u64) {
        self.out.event((from, msg));
        if msg % 2 == 0 {
            self.out.stream(from, msg + 1);
        }
    }
    fn handle_timeout(&mut self, now: Instant) {
        if self.tick.is_due(now) {
            self.tick.advance(now, &mut self.rng);
            if let Some(p) = self.peers.pick_other(&self.id, &mut self.rng) {
                self.sent += 2;
                self.out.datagram(p, self.sent);
            }
        }
    }
    fn poll_transmit(&mut self) -> Option<Transmit<u64>> {
        self.out.pop_transmit()
    }
    fn poll_event(&mut self) -> Option<(NodeId, u64)> {
        self.out.pop_event()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.tick.deadline())
    }
}

fn sim(n: usize, seed: u64, net: NetConfig, timing: Timing) -> Sim<Toy> {
    let peers: PeerView = node_ids(seed, 0, n).into_iter().collect();
    Sim::new(seed, 0, n, net, move |init| Toy::new(init, peers.clone(), timing))
}

#[derive(Default)]
struct Log {
    events: Vec<(u64, usize, u64)>,
    sends: Vec<(u64, usize, Fate)>,
    faults: usize,
}

impl Observer<Toy> for Log {
    fn on_event(&mut self, now: Instant, node: usize, e: (NodeId, u64)) {
        self.events.push((now.as_micros(), node, e.1));
    }
    fn on_send(&mut self, now: Instant, from: usize, _to: Option<usize>, _t: &Transmit<u64>, fate: Fate) {
        self.sends.push((now.as_micros(), from, fate));
    }
    fn on_fault(&mut self, _now: Instant, _f: &Fault) {
        self.faults += 1;
    }
}

#[test]
fn zero_latency_rounds_tick_everyone_before_any_message() {
    let mut s = sim(20, 1, NetConfig::default(), Timing::Sync);
    let mut log = Log::default();
    s.run_until(Instant::from_micros(1_000_001), &mut log);
    // Round 1 at t = 1 s: 20 ticks sent 20 datagrams, each answered once (2 is even).
    assert_eq!(s.stats().timers, 20);
    assert_eq!(log.events.iter().filter(|e| e.2 == 2).count(), 20);
    assert_eq!(log.events.iter().filter(|e| e.2 == 3).count(), 20);
    assert!(log.events.iter().all(|e| e.0 == 1_000_000));
    // The first 20 sends are the ticks' datagrams, in node order; replies come after.
    let froms: Vec<usize> = log.sends.iter().take(20).map(|s| s.1).collect();
    assert_eq!(froms, (0..20).collect::<Vec<_>>());
}

#[test]
fn run_rounds_stops_when_asked() {
    let mut s = sim(5, 2, NetConfig::default(), Timing::Sync);
    let mut seen = Vec::new();
    let ran = s.run_rounds(Duration::from_secs(1), 100, &mut (), |k, sim| {
        seen.push((k, sim.stats().timers));
        k < 3
    });
    assert_eq!(ran, 4);
    assert_eq!(seen, vec![(0, 0), (1, 5), (2, 10), (3, 15)]);
}

#[test]
fn same_seed_same_trace_and_another_seed_another() {
    let net = NetConfig {
        latency: Latency::WAN,
        jitter: 0.1,
        loss: 0.1,
        stream_loss: false,
        stream_retransmit: false,
    };
    let trace = |seed| {
        let mut s = sim(50, seed, net.clone(), Timing::Phased);
        s.schedule_fault(Instant::from_micros(2_000_000), Fault::Crash(4));
        s.schedule_fault(Instant::from_micros(7_000_000), Fault::Restart(4));
        s.schedule_fault(Instant::from_micros(6_000_000), Fault::Partition(vec![(0..25).collect()]));
        s.schedule_fault(Instant::from_micros(8_000_000), Fault::Heal);
        let mut h = TraceHash::default();
        s.run_until(Instant::from_micros(10_000_000), &mut h);
        (h.finish(), *s.stats())
    };
    let (a, stats) = trace(7);
    assert_eq!((a, stats), trace(7));
    assert_ne!(a, trace(8).0);
    assert!(stats.lost > 0 && stats.partitioned > 0 && stats.unreachable > 0, "{stats:?}");
}

#[test]
fn crash_discards_pending_work_and_restart_builds_a_fresh_machine() {
    let net = NetConfig { latency: Latency::Constant(Duration::from_millis(10)), ..NetConfig::default() };
    let mut s = sim(3, 3, net, Timing::Sync);
    s.schedule_fault(Instant::from_micros(1_000_005), Fault::Crash(1));
    s.schedule_fault(Instant::from_micros(2_500_000), Fault::Restart(1));
    let mut log = Log::default();
    s.run_until(Instant::from_micros(2_000_000), &mut log);
    assert!(!s.is_up(1));
    // Node 1 neither ticks nor receives while down.
    assert!(log.events.iter().all(|e| e.1 != 1 || e.0 < 1_000_005));
    assert_eq!(s.machine(1).sent, 2, "one tick (at 1 s) before the crash");
    s.run_until(Instant::from_micros(4_000_001), &mut log);
    assert!(s.is_up(1));
    // The old machine would be at 6 after ticks at 3 s and 4 s; the fresh one counts from 0.
    assert_eq!(s.machine(1).sent, 4);
    assert_eq!(s.id(1), node_ids(3, 0, 3)[1], "same identity after restart");
    assert_eq!(log.faults, 2);
}

#[test]
fn stalled_nodes_queue_messages_and_process_them_in_order_later() {
    let mut s = sim(2, 4, NetConfig::default(), Timing::Sync);
    s.schedule_fault(Instant::from_micros(500_000), Fault::Stall(1));
    s.schedule_fault(Instant::from_micros(3_500_000), Fault::Unstall(1));
    let mut log = Log::default();
    s.run_until(Instant::from_micros(3_400_000), &mut log);
    // Node 1 kept ticking (its datagrams reached node 0) but processed nothing.
    assert!(log.events.iter().all(|e| e.1 != 1));
    assert_eq!(log.events.iter().filter(|e| e.1 == 0 && e.2 % 2 == 0).count(), 3);
    s.run_until(Instant::from_micros(3_500_001), &mut log);
    let late: Vec<u64> = log.events.iter().filter(|e| e.1 == 1).map(|e| e.2).collect();
    assert_eq!(late, vec![2, 3, 4, 5, 6, 7], "backlog in arrival order");
    assert!(log.events.iter().filter(|e| e.1 == 1).all(|e| e.0 == 3_500_000));
}

#[test]
fn partition_drops_messages_in_flight_when_they_arrive() {
    let net = NetConfig { latency: Latency::Constant(Duration::from_millis(100)), ..NetConfig::default() };
    let mut s = sim(2, 5, net, Timing::Sync);
    // Round-1 datagrams leave at 1.0 s and would arrive at 1.1 s; the cut comes at 1.05 s.
    s.schedule_fault(Instant::from_micros(1_050_000), Fault::Partition(vec![vec![0]]));
    let mut log = Log::default();
    s.run_until(Instant::from_micros(1_500_000), &mut log);
    assert!(log.events.is_empty());
    assert_eq!(s.stats().partitioned, 2);
}
