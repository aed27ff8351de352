//! Delivery accounting shared by the `pbcast` and `scribe` experiments (PROTOCOLS.md §4.10):
//! which member got which message, how (first phase, repair), when, and in what order.
//!
//! A [`Ledger`] is told of every publish before its first delivery can happen and watches
//! pbcast's `Deliver` and `Gap` events; at the end of a run [`Ledger::tally`] counts, for a
//! given notion of eligibility, `delivery_ratio`, `delivery_ratio_first_phase`, the atomicity
//! of each message, the latency samples of the two classes and the gaps.

use std::collections::HashMap;

use hearsay_protocols::pbcast::{MsgId, PbEvent, Via};
use hearsay_protocols::{Instant, NodeId, Seq, TopicId};
use serde::Serialize;

use crate::report;

/// Latency histogram: bins per decade, from 1 ms.
pub const LAT_BINS_PER_DECADE: usize = 10;
/// Latency histogram: number of bins (1 ms … 100 s).
pub const LAT_BINS: usize = 50;

/// One delivery at a member.
#[derive(Clone, Copy, Debug)]
struct Record {
    msg: u32,
    node: u32,
    via: Via,
    receive_us: u64,
    deliver_us: u64,
}

/// One delivery as the tally sees it: message index, member, how it first got it, and the
/// receive latency (first obtained − published) in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The message's index (publish order).
    pub msg: u32,
    /// The member's node index.
    pub node: u32,
    /// How the member first obtained it.
    pub via: Via,
    /// First obtained − published, µs.
    pub receive_us: u64,
}

/// Every publish, delivery and gap of a run.
#[derive(Default)]
pub struct Ledger {
    index: HashMap<MsgId, u32>,
    published: Vec<Instant>,
    records: Vec<Record>,
    /// (node, topic, origin, first, last).
    gap_events: Vec<(u32, TopicId, NodeId, Seq, Seq)>,
    /// Last seq delivered per (node, topic, origin), for the FIFO / at-most-once check.
    last: HashMap<(u32, TopicId, NodeId), Seq>,
    fifo_violations: u64,
    unknown_deliveries: u64,
}

impl Ledger {
    /// Message `id` is published at `at`; returns its index. Call before the publish reaches
    /// any machine (the origin delivers its own message at once).
    pub fn publish(&mut self, id: MsgId, at: Instant) -> u32 {
        let k = self.published.len() as u32;
        self.index.insert(id, k);
        self.published.push(at);
        k
    }

    /// Messages published so far.
    pub fn messages(&self) -> usize {
        self.published.len()
    }

    /// The index of message `id`, if it was published.
    pub fn message(&self, id: &MsgId) -> Option<u32> {
        self.index.get(id).copied()
    }

    /// When message `k` was published.
    pub fn published_at(&self, k: u32) -> Instant {
        self.published[k as usize]
    }

    /// A pbcast event at node `node`.
    pub fn on_event(&mut self, now: Instant, node: usize, event: &PbEvent) {
        match event {
            PbEvent::Deliver(d) => {
                let node = node as u32;
                let prev = self.last.insert((node, d.id.topic, d.id.origin), d.id.seq);
                if prev.is_some_and(|p| p >= d.id.seq) {
                    self.fifo_violations += 1;
                }
                let Some(&msg) = self.index.get(&d.id) else {
                    self.unknown_deliveries += 1;
                    return;
                };
                let t0 = self.published[msg as usize];
                self.records.push(Record {
                    msg,
                    node,
                    via: d.via,
                    receive_us: (d.received_at - t0).as_micros(),
                    deliver_us: (now - t0).as_micros(),
                });
            }
            PbEvent::Gap { topic, origin, first, last } => {
                self.gap_events.push((node as u32, *topic, *origin, *first, *last));
            }
            PbEvent::HeadsWanted { .. } | PbEvent::PullWanted { .. } => {}
        }
    }

    /// Every delivery, in the order they happened.
    pub fn receipts(&self) -> impl Iterator<Item = Receipt> + '_ {
        self.records.iter().map(|r| Receipt {
            msg: r.msg,
            node: r.node,
            via: r.via,
            receive_us: r.receive_us,
        })
    }

    /// Count the run (§4.10). `eligible(m, node)`: the member counts for message m (subscribed
    /// before m was published and not crashed at the end); `eligible_count[m]`: how many do;
    /// `up[node]`: the node was not crashed at the end (gap events elsewhere are ignored).
    pub fn tally(&self, up: &[bool], eligible: impl Fn(u32, u32) -> bool, eligible_count: &[u64]) -> Tally {
        let msgs = self.published.len();
        let mut delivered = vec![0u64; msgs];
        let mut first = vec![0u64; msgs];
        let (mut fp, mut rp) = (Samples::default(), Samples::default());
        for r in self.records.iter().filter(|r| eligible(r.msg, r.node)) {
            delivered[r.msg as usize] += 1;
            let ms = |us: u64| us as f64 / 1e3;
            match r.via {
                Via::Local => first[r.msg as usize] += 1,
                Via::FirstPhase => {
                    first[r.msg as usize] += 1;
                    fp.receive_ms.push(ms(r.receive_us));
                    fp.delivery_ms.push(ms(r.deliver_us));
                }
                Via::Repair | Via::AntiEntropy => {
                    rp.receive_ms.push(ms(r.receive_us));
                    rp.delivery_ms.push(ms(r.deliver_us));
                }
            }
        }
        let atomicity: Vec<f64> = delivered
            .iter()
            .zip(eligible_count)
            .map(|(&d, &e)| if e > 0 { d as f64 / e as f64 } else { 0.0 })
            .collect();
        let total_eligible = eligible_count.iter().sum::<u64>() as f64;
        let total_delivered: u64 = delivered.iter().sum();
        let ratio = |x: u64| if total_eligible > 0.0 { x as f64 / total_eligible } else { 0.0 };
        let bimodal = atomicity.iter().filter(|&&a| !(0.05..0.95).contains(&a)).count();
        let mut gap_pairs = 0;
        let mut gaps = 0;
        for &(node, topic, origin, lo, hi) in self.gap_events.iter().filter(|g| up[g.0 as usize]) {
            gaps += 1;
            // No origin published more than every message.
            let top = hi.min(self.index.len() as u64);
            gap_pairs += (lo..=top)
                .filter_map(|seq| self.index.get(&MsgId { origin, topic, seq }))
                .filter(|&&m| eligible(m, node))
                .count() as u64;
        }
        Tally {
            delivery_ratio: ratio(total_delivered),
            delivery_ratio_first_phase: ratio(first.iter().sum()),
            bimodality: if msgs > 0 { bimodal as f64 / msgs as f64 } else { 1.0 },
            atomicity,
            gaps,
            gap_pairs,
            total_delivered,
            fifo_violations: self.fifo_violations + self.unknown_deliveries,
            first_phase: fp,
            repair: rp,
        }
    }
}

/// What [`Ledger::tally`] counts.
#[derive(Clone, Debug)]
pub struct Tally {
    /// Σ delivered / Σ eligible.
    pub delivery_ratio: f64,
    /// Same, counting only members whose first copy came in phase one (or the origin itself).
    pub delivery_ratio_first_phase: f64,
    /// a_m = #delivered(m) / #eligible(m), per message in publish order.
    pub atomicity: Vec<f64>,
    /// Fraction of messages with a_m < 0.05 or ≥ 0.95.
    pub bimodality: f64,
    /// Gap events at nodes up at the end.
    pub gaps: u64,
    /// Eligible (message, member) pairs covered by those gaps.
    pub gap_pairs: u64,
    /// Σ delivered.
    pub total_delivered: u64,
    /// Deliveries out of per-origin order, repeated, or of unknown messages (must be 0).
    pub fifo_violations: u64,
    /// Latencies of members that first got the message in phase one.
    pub first_phase: Samples,
    /// Latencies of members that first got it by repair.
    pub repair: Samples,
}

/// Latency samples of one class, in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Samples {
    /// First obtained − published.
    pub receive_ms: Vec<f64>,
    /// Handed to the subscriber − published.
    pub delivery_ms: Vec<f64>,
}

impl Samples {
    /// All samples of `parts`, in order.
    pub fn pooled<'a>(parts: impl IntoIterator<Item = &'a Samples>) -> Samples {
        let mut s = Samples::default();
        for p in parts {
            s.receive_ms.extend_from_slice(&p.receive_ms);
            s.delivery_ms.extend_from_slice(&p.delivery_ms);
        }
        s
    }
}

/// p50/p90/p99/max of one latency class, in ms.
#[derive(Clone, Debug, Serialize)]
pub struct LatencyStats {
    /// (member, message) pairs in the class.
    pub count: usize,
    /// Receive latency p50.
    pub receive_p50: f64,
    /// Receive latency p90.
    pub receive_p90: f64,
    /// Receive latency p99.
    pub receive_p99: f64,
    /// Receive latency max.
    pub receive_max: f64,
    /// Delivery latency p50.
    pub delivery_p50: f64,
    /// Delivery latency p90.
    pub delivery_p90: f64,
    /// Delivery latency p99.
    pub delivery_p99: f64,
    /// Delivery latency max.
    pub delivery_max: f64,
}

impl LatencyStats {
    /// The percentiles of `s` (nearest rank, rounded to µs).
    pub fn of(s: &Samples) -> Self {
        let p = |xs: &[f64], q| report::round(report::percentile(xs, q), 3);
        LatencyStats {
            count: s.delivery_ms.len(),
            receive_p50: p(&s.receive_ms, 50.0),
            receive_p90: p(&s.receive_ms, 90.0),
            receive_p99: p(&s.receive_ms, 99.0),
            receive_max: p(&s.receive_ms, 100.0),
            delivery_p50: p(&s.delivery_ms, 50.0),
            delivery_p90: p(&s.delivery_ms, 90.0),
            delivery_p99: p(&s.delivery_ms, 99.0),
            delivery_max: p(&s.delivery_ms, 100.0),
        }
    }
}

/// The atomicity bin of a_m: [0, 0.05) → 0, …, [0.95, 1.0) → 19, exactly 1.0 → 20.
pub fn atomicity_bin(a: f64) -> usize {
    if a >= 1.0 { 20 } else { ((a * 20.0).floor().max(0.0) as usize).min(19) }
}

/// The latency bin of `ms`: 10 per decade from 1 ms; below 1 ms → 0, above the last → last.
pub fn latency_bin(ms: f64) -> usize {
    if ms < 1.0 {
        return 0;
    }
    ((ms.log10() * LAT_BINS_PER_DECADE as f64).floor() as usize).min(LAT_BINS - 1)
}

/// The latency histogram's bin edges in ms (one more than the bins).
pub fn latency_edges() -> Vec<f64> {
    (0..=LAT_BINS).map(|k| report::round(10f64.powf(k as f64 / LAT_BINS_PER_DECADE as f64), 3)).collect()
}

/// Counts of `ms` per latency bin.
pub fn latency_hist(ms: &[f64]) -> Vec<u64> {
    let mut h = vec![0u64; LAT_BINS];
    for &x in ms {
        h[latency_bin(x)] += 1;
    }
    h
}
