//! `hearsay-sim bench`: the kernel's speed and the memory of a simulated node, as printed
//! figures (not timed tests).
//!
//! - **Speed**: a trivial machine that forwards every message it receives to a uniformly
//!   random node, 10,000 nodes, one message in flight per node. Measured twice on one thread:
//!   with per-link latency (every event goes through the priority queue) and at zero latency
//!   (the same-instant FIFO path round-based experiments use).
//! - **Memory**: the resident-set growth from building N anti-entropy nodes exactly as the
//!   `anti-entropy` experiment does (subscribed, shared peer view, timers queued) and running
//!   three rounds with nothing to reconcile, divided by N: everything a node costs beyond its
//!   store, kernel slot and queue entries included.

use hearsay_protocols::anti_entropy::{AeMode, AntiEntropy};
use hearsay_protocols::{Duration, Instant, Machine, NodeId, Outbox, PeerView, Rng, Transmit};
use serde::Serialize;

use crate::experiments::anti_entropy;
use crate::kernel::{Latency, NetConfig, Sim, node_ids};
use crate::report::round;

/// The benchmark's figures.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Always "bench".
    pub experiment: &'static str,
    /// Message events simulated per speed measurement.
    pub events: u64,
    /// Message events per second through the priority queue (per-link latency), one thread.
    pub events_per_sec_latency: f64,
    /// Message events per second at zero latency (FIFO path), one thread.
    pub events_per_sec_zero_latency: f64,
    /// Anti-entropy nodes built for the memory figure.
    pub ae_nodes: usize,
    /// Resident bytes per anti-entropy node beyond its (empty) store; `None` where
    /// /proc/self/status is not readable.
    pub ae_bytes_per_node: Option<f64>,
    /// `size_of::<AntiEntropy>()`: the machine's inline part.
    pub ae_machine_inline_bytes: usize,
}

/// Forwards every message to a uniformly random node.
struct Relay {
    rng: Rng,
    peers: PeerView,
    me: Option<usize>,
    start: bool,
    out: Outbox<u32, ()>,
}

impl Machine for Relay {
    type Message = u32;
    type Event = ();
    fn handle_message(&mut self, _now: Instant, _from: NodeId, hops: u32) {
        if let Some(p) = self.peers.pick_except(self.me, &mut self.rng) {
            self.out.datagram(p, hops.wrapping_add(1));
        }
    }
    fn handle_timeout(&mut self, _now: Instant) {
        self.start = false;
        self.handle_message(Instant::ZERO, NodeId::from_u64(0), 0);
    }
    fn poll_transmit(&mut self) -> Option<Transmit<u32>> {
        self.out.pop_transmit()
    }
    fn poll_event(&mut self) -> Option<()> {
        None
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.start.then_some(Instant::ZERO)
    }
}

fn relay_speed(events: u64, latency: Latency) -> f64 {
    let n = 10_000;
    let peers: PeerView = node_ids(1, 0, n).into_iter().collect();
    let net = NetConfig { latency, ..NetConfig::default() };
    let mut sim = Sim::new(1, 0, n, net, move |init| Relay {
        rng: Rng::from_seed(init.seed.machine("relay")),
        me: peers.position(&init.id),
        peers: peers.clone(),
        start: true,
        out: Outbox::default(),
    });
    // Warm up: every node starts its message.
    sim.run_while(&mut (), |s| s.stats().delivered < n as u64);
    let before = sim.stats().delivered;
    let start = std::time::Instant::now();
    sim.run_while(&mut (), |s| s.stats().delivered - before < events);
    let secs = start.elapsed().as_secs_f64();
    (sim.stats().delivered - before) as f64 / secs
}

fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn ae_memory(nodes: usize) -> Option<f64> {
    let before = resident_bytes()?;
    let p = anti_entropy::Params::new(nodes, AeMode::PushPull);
    let mut sim = anti_entropy::build(&p, 0);
    sim.run_until(Instant::from_micros(4 * Duration::from_secs(1).as_micros()), &mut ());
    let after = resident_bytes()?;
    let per_node = after.saturating_sub(before) as f64 / nodes as f64;
    drop(sim);
    Some(per_node)
}

/// Measure everything.
pub fn run(events: u64, nodes: usize) -> Report {
    // Memory first, on a fresh heap, so the speed runs' freed memory does not hide growth.
    let ae_bytes_per_node = ae_memory(nodes).map(|b| round(b, 1));
    let lat = Latency::Uniform { lo: Duration::from_millis(1), hi: Duration::from_millis(50) };
    let events_per_sec_latency = round(relay_speed(events, lat), 0);
    let events_per_sec_zero_latency = round(relay_speed(events, Latency::Zero), 0);
    Report {
        experiment: "bench",
        events,
        events_per_sec_latency,
        events_per_sec_zero_latency,
        ae_nodes: nodes,
        ae_bytes_per_node,
        ae_machine_inline_bytes: std::mem::size_of::<AntiEntropy>(),
    }
}

/// A readable table.
pub fn table(r: &Report) -> String {
    let mem = r.ae_bytes_per_node.map_or("n/a (no /proc)".to_string(), |b| format!("{b:.0} B"));
    format!(
        "simulator kernel, one thread\n  \
         message events/s, per-link latency (heap path)   {:>12.0}\n  \
         message events/s, zero latency (FIFO path)       {:>12.0}\n\
         anti-entropy node memory beyond its store ({} nodes)\n  \
         resident bytes per node                          {:>12}\n  \
         machine inline size                              {:>10} B\n",
        r.events_per_sec_latency, r.events_per_sec_zero_latency, r.ae_nodes, mem, r.ae_machine_inline_bytes
    )
}
