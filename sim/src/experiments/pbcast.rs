//! Experiment `pbcast`: bimodal multicast's two bimodal behaviours (Birman et al. 1999;
//! PROTOCOLS.md §4.10).
//!
//! N nodes, all subscribed to one topic from the start ([`Start::FromFirst`]), run the real
//! [`Pbcast`] machine in phased timing (T_g = 200 ms) over the `wan` latency profile. One
//! message per round is published by a uniformly random live node, at t = (k + 1)·T_g for
//! k = 0 … M−1. Phase one (`--first-phase multicast`, the default) is the origin sending one
//! datagram to every other member, each lost independently (Birman's IP-multicast model);
//! `none` skips it. With `--origin-crash-prob τ`, with probability τ the origin crashes right
//! after sending first-phase copies to a uniformly random number j ∈ {0, …, M−1} of its M
//! other members, taken in random order: the case that shows the "almost none" mode.
//!
//! After the last publish the run drains until the system is quiescent (no entry left in any
//! gossip buffer and no member with a known-missing seq: nothing more can happen) or for at
//! most `--drain` rounds (default 10·G).
//!
//! Measured exactly as §4.10 defines it: `eligible(m)` = members subscribed before m was
//! published and not crashed at the end; `delivered(m)` those whose subscriber got m.
//!
//! Choices of this experiment [H], beyond §4.10:
//! - **`--loss` hits every message**, datagram or stream (a digest or a batch of
//!   retransmissions over the datagram budget travels on a stream), as in Birman's model where
//!   every message may be lost and in §4.8's derivation, which charges the loss to the digest,
//!   the solicitation and the retransmission alike.
//! - The origin's own delivery counts as delivered (it is an eligible member) and as first
//!   phase in `delivery_ratio_first_phase`; it is left out of the latency figures (its latency
//!   is zero by construction).
//! - Latencies are in milliseconds; `latency_first_phase_p50` and `latency_repaired_p50` are
//!   delivery latencies (publish to hand-over, FIFO hold included). Percentiles and histograms
//!   pool every (message, member) pair of every run; ratios are means over runs.
//!
//! Anchors (the issue): at N = 1000 and 20% loss, `delivery_ratio` ≥ 0.9999 with repair and no
//! crashes; `bimodality` ≥ 0.99 with and without `--origin-crash-prob 0.1`; two latency modes.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use hearsay_protocols::pbcast::{MsgId, PbConfig, PbEvent, PbMessage, Pbcast, Start};
use hearsay_protocols::{Duration, Instant, NodeId, PeerView, Rng, Seed, TopicId, Transmit};
use serde::Serialize;

use super::delivery::{LAT_BINS, LAT_BINS_PER_DECADE, Ledger, Tally, latency_edges, latency_hist};
pub use super::delivery::{LatencyStats, Samples, atomicity_bin};
use crate::kernel::{Fate, Fault, Latency, NetConfig, Observer, Sim, node_ids};
use crate::report::{self, HistPanel, Progress};

/// The topic every node subscribes to.
pub const TOPIC: TopicId = TopicId(1);

/// Bytes of every published payload.
pub const PAYLOAD_BYTES: usize = 64;

/// The anchors.
pub const ANCHOR_DELIVERY_RATIO: f64 = 0.9999;
/// Fraction of messages that must reach under 5% or at least 95% of the eligible members.
pub const ANCHOR_BIMODALITY: f64 = 0.99;

/// How phase one reaches the members.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FirstPhase {
    /// The origin sends one datagram to every other member.
    #[default]
    Multicast,
    /// No first phase: gossip repair alone.
    None,
}

/// The network's latency profile (PROTOCOLS.md §9.5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// Every message arrives at once.
    Zero,
    /// 0.1 ms + 1 ms × distance in the unit square, × U[1, 1.1).
    Lan,
    /// 1 ms + 100 ms × distance, × U[1, 1.1) (default for pbcast).
    #[default]
    Wan,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Params {
    /// Number of nodes N (all are members).
    pub nodes: usize,
    /// Messages published, one per round.
    pub messages: usize,
    /// Per-message loss probability.
    pub loss: f64,
    /// Digests per member per round (0: no repair).
    pub fanout: usize,
    /// G: rounds an entry stays in the gossip buffer.
    pub gc_rounds: u64,
    /// How phase one works.
    pub first_phase: FirstPhase,
    /// Probability that an origin crashes during its first phase.
    pub origin_crash_prob: f64,
    /// Most rounds to run after the last publish (`None`: 10·G).
    pub drain_rounds: Option<u64>,
    /// Latency profile.
    pub latency: Profile,
    /// Independent runs.
    pub runs: u64,
    /// Seed of run 0..runs.
    pub seed: u64,
    /// Worker threads (0 = all cores).
    pub threads: usize,
}

impl Params {
    /// Defaults for N nodes: 200 messages, no loss, fanout 1, G = 20, multicast first phase,
    /// no crashes, `wan` latency, 20 runs, seed 1.
    pub fn new(nodes: usize) -> Self {
        Params {
            nodes,
            messages: 200,
            loss: 0.0,
            fanout: 1,
            gc_rounds: 20,
            first_phase: FirstPhase::Multicast,
            origin_crash_prob: 0.0,
            drain_rounds: None,
            latency: Profile::Wan,
            runs: 20,
            seed: 1,
            threads: 0,
        }
    }

    /// The drain limit in rounds.
    pub fn drain_limit(&self) -> u64 {
        self.drain_rounds.unwrap_or(10 * self.gc_rounds)
    }

    /// The machines' settings.
    pub fn config(&self) -> PbConfig {
        PbConfig {
            fanout: self.fanout,
            gc_rounds: self.gc_rounds,
            pull_on_missing: false,
            ..PbConfig::default()
        }
    }
}

/// Watches a run: deliveries, gaps, FIFO order (the ledger), messages sent by kind.
#[derive(Default)]
struct Watch {
    ledger: Ledger,
    sent: u64,
    first_phase: u64,
    digests: u64,
    solicits: u64,
    repairs: u64,
}

impl Observer<Pbcast> for Watch {
    fn on_event(&mut self, now: Instant, node: usize, event: PbEvent) {
        self.ledger.on_event(now, node, &event);
    }

    fn on_send(&mut self, _: Instant, _: usize, _: Option<usize>, t: &Transmit<PbMessage>, _: Fate) {
        self.sent += 1;
        match &t.msg {
            PbMessage::Data(_) => self.first_phase += 1,
            PbMessage::Retransmit(_) => self.repairs += 1,
            PbMessage::Digest { .. } => self.digests += 1,
            PbMessage::Solicit { .. } => self.solicits += 1,
            PbMessage::Repair { entries } => self.repairs += entries.len() as u64,
            PbMessage::ProofWanted { .. } => self.solicits += 1,
            PbMessage::Proofs { .. } => self.repairs += 1,
        }
    }
}

/// One run's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    /// Σ delivered / Σ eligible.
    pub delivery_ratio: f64,
    /// Same, counting only members that got their first copy in phase one.
    pub delivery_ratio_first_phase: f64,
    /// a_m = #delivered(m) / #eligible(m), per message in publish order.
    #[serde(skip)]
    pub atomicity: Vec<f64>,
    /// Fraction of messages with a_m < 0.05 or ≥ 0.95.
    pub bimodality: f64,
    /// Gap events at live members.
    pub gaps: u64,
    /// (message, member) pairs covered by those gaps.
    pub gap_pairs: u64,
    /// Messages of every kind sent, per node.
    pub messages_per_node: f64,
    /// (digests + solicitations + retransmitted entries) / Σ delivered.
    pub repair_msgs_per_delivery: f64,
    /// Origins that crashed.
    pub origin_crashes: u64,
    /// Rounds run after the last publish.
    pub drain_rounds: u64,
    /// True if the run ended quiescent (not cut by the drain limit).
    pub quiescent: bool,
    /// Deliveries out of per-origin order or repeated (must be 0).
    pub fifo_violations: u64,
    /// Latencies of members that first got the message in phase one.
    #[serde(skip)]
    pub first_phase: Samples,
    /// Latencies of members that first got it by repair.
    #[serde(skip)]
    pub repair: Samples,
}

/// The experiment's report: one JSON line.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Always "pbcast".
    pub experiment: &'static str,
    /// N.
    pub nodes: usize,
    /// Messages per run.
    pub messages: usize,
    /// Per-message loss probability.
    pub loss: f64,
    /// Digests per member per round.
    pub fanout: usize,
    /// G.
    pub gc_rounds: u64,
    /// "multicast" or "none".
    pub first_phase: FirstPhase,
    /// τ.
    pub origin_crash_prob: f64,
    /// Latency profile.
    pub latency: Profile,
    /// Number of runs.
    pub runs: u64,
    /// Seed.
    pub seed: u64,
    /// Mean over runs of Σ delivered / Σ eligible.
    pub delivery_ratio: f64,
    /// Mean over runs, counting only first-phase copies.
    pub delivery_ratio_first_phase: f64,
    /// Messages (all runs) per atomicity bin [0, 0.05), …, [0.95, 1.0), then exactly 1.0.
    pub atomicity_hist: Vec<u64>,
    /// Fraction of messages (all runs) delivered to < 5% or ≥ 95% of the eligible members.
    pub bimodality: f64,
    /// Delivery latency p50 of first-phase pairs, ms (`null` when there are none).
    pub latency_first_phase_p50: Option<f64>,
    /// Delivery latency p50 of repaired pairs, ms (`null` when there are none).
    pub latency_repaired_p50: Option<f64>,
    /// Full latency figures, first-phase class, ms.
    pub latency_first_phase: LatencyStats,
    /// Full latency figures, repair class, ms.
    pub latency_repaired: LatencyStats,
    /// Lower edges (ms) of the latency histogram's bins (10 per decade from 1 ms; the last bin
    /// also holds everything above).
    pub latency_hist_edges_ms: Vec<f64>,
    /// Delivery latency histogram, first-phase pairs (all runs).
    pub latency_hist_first_phase: Vec<u64>,
    /// Delivery latency histogram, repaired pairs (all runs).
    pub latency_hist_repaired: Vec<u64>,
    /// Gap events at live members, mean per run.
    pub gaps: f64,
    /// (message, member) pairs covered by gaps, mean per run.
    pub gap_pairs: f64,
    /// Messages of every kind sent per node, mean over runs.
    pub messages_per_node: f64,
    /// (digests + solicitations + retransmissions) per delivery, mean over runs.
    pub repair_msgs_per_delivery: f64,
    /// Origins crashed, over all runs.
    pub origin_crashes: u64,
    /// Rounds drained after the last publish, mean over runs.
    pub drain_rounds_mean: f64,
    /// Runs cut by the drain limit before quiescence.
    pub unquiescent_runs: u64,
    /// Out-of-order or repeated deliveries, over all runs (must be 0).
    pub fifo_violations: u64,
    /// The anchor for `delivery_ratio` (with repair, no crashes, N = 1000, 20% loss).
    pub anchor_delivery_ratio: f64,
    /// The anchor for `bimodality`.
    pub anchor_bimodality: f64,
    /// Per-run figures, in run order.
    pub per_run: Vec<RunResult>,
}

/// The network for a profile.
fn net(p: &Params) -> NetConfig {
    let (latency, jitter) = match p.latency {
        Profile::Zero => (Latency::Zero, 0.0),
        Profile::Lan => (Latency::LAN, 0.1),
        Profile::Wan => (Latency::WAN, 0.1),
    };
    NetConfig { latency, jitter, loss: p.loss, stream_loss: true, stream_retransmit: false }
}

/// Build the simulation of run `run` (exposed for replay tests).
pub fn build(p: &Params, run: u64) -> Sim<Pbcast> {
    let config = Arc::new(p.config());
    let members: PeerView = node_ids(p.seed, run, p.nodes).into_iter().collect();
    Sim::new(p.seed, run, p.nodes, net(p), move |init| {
        let auth = Arc::new(hearsay_protocols::auth::Unchecked(init.id));
        let mut m = Pbcast::new(init.id, auth, config.clone(), &init.seed, init.now);
        m.handle_topic_peers(init.now, TOPIC, members.clone());
        m.subscribe(init.now, TOPIC, Start::FromFirst);
        m
    })
}

/// Run one repetition.
pub fn run_once(p: &Params, run: u64) -> RunResult {
    let n = p.nodes;
    let period = p.config().period;
    let mut sim = build(p, run);
    let mut work = Rng::from_seed(Seed::derive(p.seed, "work", run, 0));
    let mut watch = Watch::default();
    let mut live: Vec<usize> = (0..n).collect();
    let mut published_by = vec![0u64; n];
    let mut crashes = 0;
    let at = |k: u64| Instant::from_micros(period.as_micros() * k);
    for k in 0..p.messages {
        let now = at(k as u64 + 1);
        sim.run_until(now, &mut watch);
        if live.is_empty() {
            break;
        }
        let origin = live[work.index(live.len())];
        let crash = p.origin_crash_prob > 0.0 && work.chance(p.origin_crash_prob);
        let others: Vec<NodeId> = (0..n).filter(|&i| i != origin).map(|i| sim.id(i)).collect();
        let targets: Vec<NodeId> = match (p.first_phase, crash) {
            (FirstPhase::None, _) => Vec::new(),
            (FirstPhase::Multicast, false) => others,
            (FirstPhase::Multicast, true) => {
                let j = work.index(others.len());
                work.distinct(others.len(), j).into_iter().map(|i| others[i]).collect()
            }
        };
        published_by[origin] += 1;
        let id = MsgId { origin: sim.id(origin), topic: TOPIC, seq: published_by[origin] };
        let index = watch.ledger.publish(id, now);
        debug_assert_eq!(index, k as u32);
        let mut payload = vec![0u8; PAYLOAD_BYTES];
        payload[..8].copy_from_slice(&(k as u64).to_le_bytes());
        let payload = Bytes::from(payload);
        sim.call(origin, &mut watch, |m, now| match m.publish(now, TOPIC, payload) {
            Ok(data) => m.multicast(now, &data, &targets),
            Err(e) => unreachable!("a {PAYLOAD_BYTES}-byte payload is under the limit: {e}"),
        });
        if crash {
            sim.schedule_fault(now, Fault::Crash(origin));
            live.retain(|&i| i != origin);
            crashes += 1;
        }
    }
    // Drain until nothing more can happen, or the limit.
    let last = p.messages as u64;
    let mut drained = 0;
    let mut quiescent = false;
    while drained < p.drain_limit() {
        drained += 1;
        sim.run_until(at(last + drained + 1), &mut watch);
        if (0..n).all(|i| !sim.is_up(i) || sim.machine(i).is_quiescent()) {
            quiescent = true;
            break;
        }
    }
    measure(p, &sim, watch, crashes, drained, quiescent)
}

fn measure(
    p: &Params,
    sim: &Sim<Pbcast>,
    w: Watch,
    crashes: u64,
    drained: u64,
    quiescent: bool,
) -> RunResult {
    let n = p.nodes;
    let up: Vec<bool> = (0..n).map(|i| sim.is_up(i)).collect();
    let eligible = up.iter().filter(|u| **u).count() as u64;
    let counts = vec![eligible; w.ledger.messages()];
    let Tally {
        delivery_ratio,
        delivery_ratio_first_phase,
        atomicity,
        bimodality,
        gaps,
        gap_pairs,
        total_delivered,
        fifo_violations,
        first_phase,
        repair,
    } = w.ledger.tally(&up, |_, node| up[node as usize], &counts);
    RunResult {
        delivery_ratio,
        delivery_ratio_first_phase,
        bimodality,
        atomicity,
        gaps,
        gap_pairs,
        messages_per_node: w.sent as f64 / n as f64,
        repair_msgs_per_delivery: if total_delivered > 0 {
            (w.digests + w.solicits + w.repairs) as f64 / total_delivered as f64
        } else {
            0.0
        },
        origin_crashes: crashes,
        drain_rounds: drained,
        quiescent,
        fifo_violations,
        first_phase,
        repair,
    }
}

fn summarize(p: &Params, results: Vec<RunResult>) -> Report {
    let mean = |f: &dyn Fn(&RunResult) -> f64| report::mean(&results.iter().map(f).collect::<Vec<_>>());
    let mut hist = vec![0u64; 21];
    let mut all = 0usize;
    let mut bimodal = 0usize;
    for a in results.iter().flat_map(|r| r.atomicity.iter()) {
        hist[atomicity_bin(*a)] += 1;
        all += 1;
        bimodal += usize::from(!(0.05..0.95).contains(a));
    }
    let fp = Samples::pooled(results.iter().map(|r| &r.first_phase));
    let rp = Samples::pooled(results.iter().map(|r| &r.repair));
    let (fps, rps) = (LatencyStats::of(&fp), LatencyStats::of(&rp));
    Report {
        experiment: "pbcast",
        nodes: p.nodes,
        messages: p.messages,
        loss: p.loss,
        fanout: p.fanout,
        gc_rounds: p.gc_rounds,
        first_phase: p.first_phase,
        origin_crash_prob: p.origin_crash_prob,
        latency: p.latency,
        runs: p.runs,
        seed: p.seed,
        delivery_ratio: report::round(mean(&|r| r.delivery_ratio), 7),
        delivery_ratio_first_phase: report::round(mean(&|r| r.delivery_ratio_first_phase), 7),
        atomicity_hist: hist,
        bimodality: report::round(if all > 0 { bimodal as f64 / all as f64 } else { 1.0 }, 6),
        latency_first_phase_p50: (fps.count > 0).then_some(fps.delivery_p50),
        latency_repaired_p50: (rps.count > 0).then_some(rps.delivery_p50),
        latency_first_phase: fps,
        latency_repaired: rps,
        latency_hist_edges_ms: latency_edges()[..LAT_BINS].to_vec(),
        latency_hist_first_phase: latency_hist(&fp.delivery_ms),
        latency_hist_repaired: latency_hist(&rp.delivery_ms),
        gaps: report::round(mean(&|r| r.gaps as f64), 3),
        gap_pairs: report::round(mean(&|r| r.gap_pairs as f64), 3),
        messages_per_node: report::round(mean(&|r| r.messages_per_node), 3),
        repair_msgs_per_delivery: report::round(mean(&|r| r.repair_msgs_per_delivery), 4),
        origin_crashes: results.iter().map(|r| r.origin_crashes).sum(),
        drain_rounds_mean: report::round(mean(&|r| r.drain_rounds as f64), 2),
        unquiescent_runs: results.iter().filter(|r| !r.quiescent).count() as u64,
        fifo_violations: results.iter().map(|r| r.fifo_violations).sum(),
        anchor_delivery_ratio: ANCHOR_DELIVERY_RATIO,
        anchor_bimodality: ANCHOR_BIMODALITY,
        per_run: results
            .into_iter()
            .map(|r| RunResult {
                delivery_ratio: report::round(r.delivery_ratio, 7),
                delivery_ratio_first_phase: report::round(r.delivery_ratio_first_phase, 7),
                bimodality: report::round(r.bimodality, 6),
                messages_per_node: report::round(r.messages_per_node, 3),
                repair_msgs_per_delivery: report::round(r.repair_msgs_per_delivery, 4),
                atomicity: Vec::new(),
                first_phase: Samples::default(),
                repair: Samples::default(),
                ..r
            })
            .collect(),
    }
}

/// Run every repetition and summarize.
pub fn run(p: &Params, progress: &Progress) -> Report {
    let results = report::parallel_runs(p.runs, report::threads(p.threads), progress, |r| run_once(p, r));
    summarize(p, results)
}

/// A readable table of one report.
pub fn table(r: &Report) -> String {
    let mut s = String::new();
    let fp = match r.first_phase {
        FirstPhase::Multicast => "multicast",
        FirstPhase::None => "none",
    };
    s.push_str(&format!(
        "pbcast  N = {}  messages = {}  loss = {}  fanout = {}  G = {}  first phase = {fp}  origin crash = {}  runs = {}  seed = {}\n",
        r.nodes, r.messages, r.loss, r.fanout, r.gc_rounds, r.origin_crash_prob, r.runs, r.seed
    ));
    s.push_str(&format!(
        "  delivery ratio        {:.7}   (anchor ≥ {}; first phase alone {:.4})\n",
        r.delivery_ratio, r.anchor_delivery_ratio, r.delivery_ratio_first_phase
    ));
    s.push_str(&format!(
        "  bimodality            {:.6}    (anchor ≥ {})\n",
        r.bimodality, r.anchor_bimodality
    ));
    s.push_str("  atomicity histogram   (messages per fraction of eligible members that delivered)\n");
    for (k, c) in r.atomicity_hist.iter().enumerate() {
        if *c > 0 || k == 0 || k == 20 {
            let bin = if k == 20 {
                "           1.00".to_string()
            } else {
                format!("[{:.2}, {:.2})", k as f64 * 0.05, (k + 1) as f64 * 0.05)
            };
            s.push_str(&format!("    {bin}  {c}\n"));
        }
    }
    s.push_str("  latency (ms)             pairs      p50      p90      p99      max\n");
    for (name, l) in [("first phase", &r.latency_first_phase), ("repaired", &r.latency_repaired)] {
        s.push_str(&format!(
            "    {name:<11} receive  {:>8} {:>8.1} {:>8.1} {:>8.1} {:>8.1}\n",
            l.count, l.receive_p50, l.receive_p90, l.receive_p99, l.receive_max
        ));
        s.push_str(&format!(
            "    {:<11} deliver  {:>8} {:>8.1} {:>8.1} {:>8.1} {:>8.1}\n",
            "", "", l.delivery_p50, l.delivery_p90, l.delivery_p99, l.delivery_max
        ));
    }
    s.push_str(&format!(
        "  gaps                  {:.2} events, {:.2} (message, member) pairs per run\n",
        r.gaps, r.gap_pairs
    ));
    s.push_str(&format!(
        "  cost                  {:.1} messages per node, {:.3} repair messages per delivery\n",
        r.messages_per_node, r.repair_msgs_per_delivery
    ));
    s.push_str(&format!(
        "  origins crashed       {}   drain rounds (mean) {:.1}   runs cut by --drain {}   FIFO violations {}\n",
        r.origin_crashes, r.drain_rounds_mean, r.unquiescent_runs, r.fifo_violations
    ));
    s
}

/// Draw both histograms side by side: atomicity (messages per bin, log scale) and delivery
/// latency (pairs per log-spaced bin, first phase and repaired).
pub fn plot(p: &Params, r: &Report, path: &Path) -> Result<(), String> {
    let mut a_edges: Vec<f64> = (0..=20).map(|k| k as f64 * 0.05).collect();
    a_edges.push(1.05);
    let atomicity = HistPanel {
        title: "atomicity".into(),
        x_label: "fraction of eligible members that delivered (last bar: all)".into(),
        y_label: "messages (log scale)".into(),
        edges: a_edges,
        series: vec![("messages".into(), r.atomicity_hist.iter().map(|&c| c as f64).collect())],
        log_x: false,
        log_y: true,
    };
    // Up to the last decade with any pair in it.
    let used = (0..LAT_BINS)
        .rev()
        .find(|&k| r.latency_hist_first_phase[k] + r.latency_hist_repaired[k] > 0)
        .map_or(LAT_BINS, |k| ((k / LAT_BINS_PER_DECADE + 1) * LAT_BINS_PER_DECADE).min(LAT_BINS));
    let counts = |h: &[u64]| h[..used].iter().map(|&c| c as f64).collect::<Vec<f64>>();
    let latency = HistPanel {
        title: "delivery latency".into(),
        x_label: "ms after publish (log scale)".into(),
        y_label: "(message, member) pairs".into(),
        edges: latency_edges()[..=used].to_vec(),
        series: vec![
            ("first phase".into(), counts(&r.latency_hist_first_phase)),
            ("repaired".into(), counts(&r.latency_hist_repaired)),
        ],
        log_x: true,
        log_y: false,
    };
    let title = format!(
        "pbcast, N = {}, {} messages × {} runs, loss = {}, G = {}, origin crash = {}",
        p.nodes, p.messages, p.runs, p.loss, p.gc_rounds, p.origin_crash_prob
    );
    report::plot_histograms(path, &title, &[atomicity, latency])
}

/// The round period the experiment uses (T_g).
pub fn period() -> Duration {
    PbConfig::default().period
}
