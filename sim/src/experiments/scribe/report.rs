//! The `scribe` experiment's report: runs combined, the JSON line, the table and the plot.

use std::path::Path;

use hearsay_overlay::chord::FingerLayout;
use serde::Serialize;

use super::run::{RunResult, TreeShape, run_once};
use super::{ANCHOR_DELIVERY_RATIO, Params, Profile, anchor_depth};
use crate::experiments::delivery::{
    LAT_BINS, LAT_BINS_PER_DECADE, LatencyStats, Samples, latency_edges, latency_hist,
};
use crate::report::{self, HistPanel, Progress};

/// The experiment's report: one JSON line.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Always "scribe".
    pub experiment: &'static str,
    /// N.
    pub nodes: usize,
    /// Topics.
    pub topics: usize,
    /// Members per topic.
    pub group_size: usize,
    /// Messages per topic.
    pub messages: usize,
    /// Failures per node per minute.
    pub churn: f64,
    /// Per-datagram loss probability.
    pub loss: f64,
    /// G.
    pub gc_rounds: u64,
    /// Latency profile.
    pub latency: Profile,
    /// The ring's finger base (2, 4 or 16).
    pub finger_base: u32,
    /// Candidates per finger for proximity neighbour selection (0: off).
    pub proximity_candidates: usize,
    /// Successor-list entries compete with fingers as next hops.
    pub route_via_successors: bool,
    /// Tree copies on streams, retransmitted on loss.
    pub tree_streams: bool,
    /// Number of runs.
    pub runs: u64,
    /// Seed.
    pub seed: u64,
    /// Mean hops from a member to its root when publishing starts, all runs pooled.
    pub tree_depth_mean: f64,
    /// 99th percentile of the members' hops.
    pub tree_depth_p99: f64,
    /// Most hops of any member.
    pub tree_depth_max: f64,
    /// The anchor: log2 N.
    pub anchor_tree_depth: f64,
    /// Fraction of live members on a tree when publishing starts, mean over runs.
    pub subscribers_on_tree: f64,
    /// The same at the end of the run.
    pub subscribers_on_tree_at_end: f64,
    /// The fraction sampled every second from the first publish to the end: mean over samples
    /// and runs.
    pub subscribers_on_tree_mean: f64,
    /// The lowest sample of any run.
    pub subscribers_on_tree_min: f64,
    /// Members alive at the end never seen on their tree, all runs.
    pub subscribers_never_on_tree: u64,
    /// Topics with two live roots when publishing started, all runs.
    pub split_topics: u64,
    /// Seconds until publishing started (every live member with a parent, or the limit).
    pub attach_s_mean: f64,
    /// Mean RDP over (message, member) pairs reached by the tree.
    pub rdp_mean: f64,
    /// Median RDP.
    pub rdp_p50: f64,
    /// 99th percentile RDP.
    pub rdp_p99: f64,
    /// Mean over messages of mean tree delay / mean unicast delay.
    pub rad_mean: f64,
    /// Mean over messages of max tree delay / max unicast delay.
    pub rmd_mean: f64,
    /// Mean tree copies sent + received per (message, node that handled it).
    pub link_stress_mean: f64,
    /// Most tree copies any node sent + received for one message.
    pub link_stress_max: u64,
    /// Tree entries per live node: mean.
    pub node_stress_topics_mean: f64,
    /// Tree entries per live node: 99th percentile.
    pub node_stress_topics_p99: f64,
    /// Tree entries per live node: max.
    pub node_stress_topics_max: f64,
    /// Children entries per live node: mean.
    pub node_stress_children_mean: f64,
    /// Children entries per live node: 99th percentile.
    pub node_stress_children_p99: f64,
    /// Children entries per live node: max.
    pub node_stress_children_max: f64,
    /// Mean over runs of Σ members the tree got a copy to / Σ eligible (the origin counts).
    pub delivery_ratio_tree_only: f64,
    /// Mean over runs of §4.10's first-phase ratio: members whose first copy came down the
    /// tree (repair can overtake a long tree path).
    pub delivery_ratio_first_phase: f64,
    /// Mean over runs of Σ delivered / Σ eligible, after repair.
    pub delivery_ratio_with_repair: f64,
    /// The worst run's delivery ratio with repair.
    pub delivery_ratio_with_repair_min: f64,
    /// The anchor for `delivery_ratio_with_repair`.
    pub anchor_delivery_ratio: f64,
    /// Fraction of messages (all runs) delivered to < 5% or ≥ 95% of their eligible members.
    pub bimodality: f64,
    /// Delivery latency p50 of tree deliveries, ms.
    pub latency_tree_p50: Option<f64>,
    /// Delivery latency p50 of repaired deliveries, ms.
    pub latency_repaired_p50: Option<f64>,
    /// Full latency figures, tree deliveries, ms.
    pub latency_tree: LatencyStats,
    /// Full latency figures, repaired deliveries, ms.
    pub latency_repaired: LatencyStats,
    /// Scribe control messages (JOIN, JoinAck, LEAVE, heartbeats, acks) per node over a run.
    pub control_messages_per_node: f64,
    /// The same per second of simulated time.
    pub control_messages_per_node_per_s: f64,
    /// Ring maintenance messages per node per second.
    pub ring_messages_per_node_per_s: f64,
    /// pbcast (digests + solicitations + retransmissions) per delivery.
    pub repair_msgs_per_delivery: f64,
    /// Nodes crashed, all runs.
    pub crashes: u64,
    /// Messages published, all runs.
    pub published: u64,
    /// Publishes skipped because every member of the topic had crashed, all runs.
    pub publish_skipped: u64,
    /// Gap events at live nodes, mean per run.
    pub gaps: f64,
    /// Eligible pairs covered by gaps, mean per run.
    pub gap_pairs: f64,
    /// Out-of-order or repeated deliveries, all runs (must be 0).
    pub fifo_violations: u64,
    /// Rounds drained after the last publish, mean.
    pub drain_rounds_mean: f64,
    /// Runs cut by the drain limit before quiescence.
    pub unquiescent_runs: u64,
    /// Simulated seconds per run, mean.
    pub duration_s_mean: f64,
    /// Per-run figures, in run order.
    pub per_run: Vec<RunResult>,
}

/// Run every repetition and summarize.
pub fn run(p: &Params, progress: &Progress) -> Report {
    run_with_results(p, progress).0
}

/// Run, keeping the per-run results (with their samples) for plotting.
pub fn run_with_results(p: &Params, progress: &Progress) -> (Report, Vec<RunResult>) {
    let results = report::parallel_runs(p.runs, report::threads(p.threads), progress, |r| run_once(p, r));
    (summarize(p, &results), results)
}

fn stats3(xs: &[f64]) -> (f64, f64, f64) {
    let max = xs.iter().copied().fold(0.0, f64::max);
    (report::round(report::mean(xs), 4), report::percentile(xs, 99.0), max)
}

fn summarize(p: &Params, results: &[RunResult]) -> Report {
    let mean = |f: &dyn Fn(&RunResult) -> f64| report::mean(&results.iter().map(f).collect::<Vec<_>>());
    let pool = |f: &dyn Fn(&RunResult) -> &[f64]| {
        results.iter().flat_map(|r| f(r).iter().copied()).collect::<Vec<f64>>()
    };
    let depths: Vec<f64> = results.iter().flat_map(|r| r.start.depths.iter().map(|&x| x as f64)).collect();
    let rdp = pool(&|r| &r.rdp);
    let (entries, children) = (pool(&|r| &r.start.entries), pool(&|r| &r.start.children));
    let (em, ep, ex) = stats3(&entries);
    let (cm, cp, cx) = stats3(&children);
    let stress_sum: u64 = results.iter().map(|r| r.stress_sum).sum();
    let stress_pairs: u64 = results.iter().map(|r| r.stress_pairs).sum();
    let tree = Samples::pooled(results.iter().map(|r| &r.tree));
    let repaired = Samples::pooled(results.iter().map(|r| &r.repaired));
    let (ts, rs) = (LatencyStats::of(&tree), LatencyStats::of(&repaired));
    let messages: u64 = results.iter().map(|r| r.published).sum();
    let bimodal = results.iter().map(|r| r.bimodality * r.published as f64).sum::<f64>();
    Report {
        experiment: "scribe",
        nodes: p.nodes,
        topics: p.topics,
        group_size: p.group_size,
        messages: p.messages,
        churn: p.churn,
        loss: p.loss,
        gc_rounds: p.gc_rounds,
        latency: p.latency,
        finger_base: FingerLayout::new(p.finger_base_bits).map_or(0, |_| 1 << p.finger_base_bits),
        proximity_candidates: p.proximity_candidates,
        route_via_successors: p.route_via_successors,
        tree_streams: p.tree_streams,
        runs: p.runs,
        seed: p.seed,
        tree_depth_mean: report::round(report::mean(&depths), 3),
        tree_depth_p99: report::percentile(&depths, 99.0),
        tree_depth_max: depths.iter().copied().fold(0.0, f64::max),
        anchor_tree_depth: report::round(anchor_depth(p.nodes), 3),
        subscribers_on_tree: report::round(mean(&|r| r.start.on_tree), 6),
        subscribers_on_tree_at_end: report::round(mean(&|r| r.on_tree_at_end), 6),
        subscribers_on_tree_mean: report::round(mean(&|r| r.on_tree_mean), 6),
        subscribers_on_tree_min: report::round(results.iter().map(|r| r.on_tree_min).fold(1.0, f64::min), 6),
        subscribers_never_on_tree: results.iter().map(|r| r.never_on_tree).sum(),
        split_topics: results.iter().map(|r| r.start.split_topics).sum(),
        attach_s_mean: report::round(mean(&|r| r.attach_s), 2),
        rdp_mean: report::round(report::mean(&rdp), 3),
        rdp_p50: report::round(report::percentile(&rdp, 50.0), 3),
        rdp_p99: report::round(report::percentile(&rdp, 99.0), 3),
        rad_mean: report::round(report::mean(&pool(&|r| &r.rad)), 3),
        rmd_mean: report::round(report::mean(&pool(&|r| &r.rmd)), 3),
        link_stress_mean: if stress_pairs > 0 {
            report::round(stress_sum as f64 / stress_pairs as f64, 3)
        } else {
            0.0
        },
        link_stress_max: results.iter().map(|r| r.link_stress_max).max().unwrap_or(0),
        node_stress_topics_mean: em,
        node_stress_topics_p99: ep,
        node_stress_topics_max: ex,
        node_stress_children_mean: cm,
        node_stress_children_p99: cp,
        node_stress_children_max: cx,
        delivery_ratio_tree_only: report::round(mean(&|r| r.delivery_ratio_tree_only), 7),
        delivery_ratio_first_phase: report::round(mean(&|r| r.delivery_ratio_first_phase), 7),
        delivery_ratio_with_repair: report::round(mean(&|r| r.delivery_ratio_with_repair), 7),
        delivery_ratio_with_repair_min: report::round(
            results.iter().map(|r| r.delivery_ratio_with_repair).fold(1.0, f64::min),
            7,
        ),
        anchor_delivery_ratio: ANCHOR_DELIVERY_RATIO,
        bimodality: if messages > 0 { report::round(bimodal / messages as f64, 6) } else { 1.0 },
        latency_tree_p50: (ts.count > 0).then_some(ts.delivery_p50),
        latency_repaired_p50: (rs.count > 0).then_some(rs.delivery_p50),
        latency_tree: ts,
        latency_repaired: rs,
        control_messages_per_node: report::round(mean(&|r| r.control_messages_per_node), 2),
        control_messages_per_node_per_s: report::round(mean(&|r| r.control_messages_per_node_per_s), 3),
        ring_messages_per_node_per_s: report::round(mean(&|r| r.ring_messages_per_node_per_s), 2),
        repair_msgs_per_delivery: report::round(mean(&|r| r.repair_msgs_per_delivery), 4),
        crashes: results.iter().map(|r| r.crashes).sum(),
        published: messages,
        publish_skipped: results.iter().map(|r| r.publish_skipped).sum(),
        gaps: report::round(mean(&|r| r.gaps as f64), 3),
        gap_pairs: report::round(mean(&|r| r.gap_pairs as f64), 3),
        fifo_violations: results.iter().map(|r| r.fifo_violations).sum(),
        drain_rounds_mean: report::round(mean(&|r| r.drain_rounds as f64), 2),
        unquiescent_runs: results.iter().filter(|r| !r.quiescent).count() as u64,
        duration_s_mean: report::round(mean(&|r| r.duration_s), 3),
        per_run: results
            .iter()
            .map(|r| RunResult {
                delivery_ratio_with_repair: report::round(r.delivery_ratio_with_repair, 7),
                delivery_ratio_tree_only: report::round(r.delivery_ratio_tree_only, 7),
                delivery_ratio_first_phase: report::round(r.delivery_ratio_first_phase, 7),
                bimodality: report::round(r.bimodality, 6),
                start: TreeShape { on_tree: report::round(r.start.on_tree, 6), ..TreeShape::default() },
                on_tree_at_end: report::round(r.on_tree_at_end, 6),
                on_tree_mean: report::round(r.on_tree_mean, 6),
                on_tree_min: report::round(r.on_tree_min, 6),
                attach_s: report::round(r.attach_s, 3),
                rdp: Vec::new(),
                rad: Vec::new(),
                rmd: Vec::new(),
                control_messages_per_node: report::round(r.control_messages_per_node, 3),
                control_messages_per_node_per_s: report::round(r.control_messages_per_node_per_s, 3),
                ring_messages_per_node_per_s: report::round(r.ring_messages_per_node_per_s, 3),
                repair_msgs_per_delivery: report::round(r.repair_msgs_per_delivery, 4),
                duration_s: report::round(r.duration_s, 3),
                tree: Samples::default(),
                repaired: Samples::default(),
                ..r.clone()
            })
            .collect(),
    }
}

fn name<T: Serialize>(x: &T) -> String {
    serde_json::to_value(x).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// A readable table of one report.
pub fn table(r: &Report) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "scribe  N = {}  topics = {}  group size = {}  messages = {}/topic  churn = {}/node/min  loss = {}  G = {}  latency = {}  runs = {}  seed = {}\n",
        r.nodes, r.topics, r.group_size, r.messages, r.churn, r.loss, r.gc_rounds, name(&r.latency), r.runs, r.seed
    ));
    s.push_str(&format!(
        "  tree depth            mean {:.3}   p99 {}   max {}   (anchor: near log2 N = {:.2} or better)\n",
        r.tree_depth_mean, r.tree_depth_p99, r.tree_depth_max, r.anchor_tree_depth
    ));
    s.push_str(&format!(
        "  on a tree             {:.4}% of live members when publishing started ({:.1} s); after: mean {:.4}%, lowest {:.4}%, end {:.4}%\n",
        100.0 * r.subscribers_on_tree,
        r.attach_s_mean,
        100.0 * r.subscribers_on_tree_mean,
        100.0 * r.subscribers_on_tree_min,
        100.0 * r.subscribers_on_tree_at_end
    ));
    s.push_str(&format!(
        "                        never on a tree: {} members; topics with two roots: {}\n",
        r.subscribers_never_on_tree, r.split_topics
    ));
    s.push_str(&format!(
        "  delivery ratio        with repair {:.7} (anchor ≥ {}; worst run {:.7})   tree only {:.5}   first copy by the tree {:.5}\n",
        r.delivery_ratio_with_repair,
        r.anchor_delivery_ratio,
        r.delivery_ratio_with_repair_min,
        r.delivery_ratio_tree_only,
        r.delivery_ratio_first_phase
    ));
    s.push_str(&format!(
        "  delay penalty         RDP mean {:.3} (p50 {:.3}, p99 {:.3})   RAD {:.3}   RMD {:.3}\n",
        r.rdp_mean, r.rdp_p50, r.rdp_p99, r.rad_mean, r.rmd_mean
    ));
    s.push_str(&format!(
        "  link stress           mean {:.3}   max {}   (copies sent + received per node per message)\n",
        r.link_stress_mean, r.link_stress_max
    ));
    s.push_str(&format!(
        "  node stress           tree entries mean {:.3} p99 {} max {}   children mean {:.3} p99 {} max {}\n",
        r.node_stress_topics_mean,
        r.node_stress_topics_p99,
        r.node_stress_topics_max,
        r.node_stress_children_mean,
        r.node_stress_children_p99,
        r.node_stress_children_max
    ));
    s.push_str(&format!(
        "  latency (ms)          tree p50 {:.1} p99 {:.1} ({} pairs)   repaired p50 {:.1} p99 {:.1} ({} pairs)\n",
        r.latency_tree.delivery_p50,
        r.latency_tree.delivery_p99,
        r.latency_tree.count,
        r.latency_repaired.delivery_p50,
        r.latency_repaired.delivery_p99,
        r.latency_repaired.count
    ));
    s.push_str(&format!(
        "  cost                  {:.1} tree control messages per node ({:.2}/s); ring {:.1}/node/s; {:.3} repair messages per delivery\n",
        r.control_messages_per_node,
        r.control_messages_per_node_per_s,
        r.ring_messages_per_node_per_s,
        r.repair_msgs_per_delivery
    ));
    s.push_str(&format!(
        "  run                   {} messages, {} crashes, {} skipped; gaps {:.2} ({:.2} pairs) per run; bimodality {:.4}; drain {:.1} rounds, {} cut; FIFO violations {}\n",
        r.published,
        r.crashes,
        r.publish_skipped,
        r.gaps,
        r.gap_pairs,
        r.bimodality,
        r.drain_rounds_mean,
        r.unquiescent_runs,
        r.fifo_violations
    ));
    s
}

/// RDP histogram: bins per decade from 1, and the number of bins (1 … 100).
const RDP_BINS_PER_DECADE: usize = 20;
const RDP_BINS: usize = 40;

/// Draw three panels: tree depth of the members, RDP, and delivery latency of tree and
/// repaired deliveries.
pub fn plot(p: &Params, results: &[RunResult], r: &Report, path: &Path) -> Result<(), String> {
    let max_depth = results.iter().flat_map(|x| x.start.depths.iter().copied()).max().unwrap_or(0);
    let mut depth = vec![0.0; max_depth + 1];
    for &x in results.iter().flat_map(|x| x.start.depths.iter()) {
        depth[x] += 1.0;
    }
    let depth_panel = HistPanel {
        title: format!("tree depth (mean {:.2}, log2 N = {:.1})", r.tree_depth_mean, r.anchor_tree_depth),
        x_label: "hops from the root".into(),
        y_label: "members".into(),
        edges: (0..=max_depth + 1).map(|k| k as f64 - 0.5).collect(),
        series: vec![("members".into(), depth)],
        log_x: false,
        log_y: false,
    };
    let rdp_bin =
        |x: f64| ((x.max(1.0).log10() * RDP_BINS_PER_DECADE as f64).floor() as usize).min(RDP_BINS - 1);
    let mut rdp = vec![0.0; RDP_BINS];
    for &x in results.iter().flat_map(|x| x.rdp.iter()) {
        rdp[rdp_bin(x)] += 1.0;
    }
    let used = (0..RDP_BINS).rev().find(|&k| rdp[k] > 0.0).map_or(1, |k| k + 1);
    let rdp_panel = HistPanel {
        title: format!("relative delay penalty (mean {:.2})", r.rdp_mean),
        x_label: "tree delay / unicast delay (log scale)".into(),
        y_label: "(message, member) pairs".into(),
        edges: (0..=used).map(|k| 10f64.powf(k as f64 / RDP_BINS_PER_DECADE as f64)).collect(),
        series: vec![("tree".into(), rdp[..used].to_vec())],
        log_x: true,
        log_y: false,
    };
    let tree = Samples::pooled(results.iter().map(|x| &x.tree));
    let repaired = Samples::pooled(results.iter().map(|x| &x.repaired));
    let (ht, hr) = (latency_hist(&tree.delivery_ms), latency_hist(&repaired.delivery_ms));
    let used = (0..LAT_BINS)
        .rev()
        .find(|&k| ht[k] + hr[k] > 0)
        .map_or(LAT_BINS, |k| ((k / LAT_BINS_PER_DECADE + 1) * LAT_BINS_PER_DECADE).min(LAT_BINS));
    let counts = |h: &[u64]| h[..used].iter().map(|&c| c as f64).collect::<Vec<f64>>();
    let latency_panel = HistPanel {
        title: "delivery latency".into(),
        x_label: "ms after publish (log scale)".into(),
        y_label: "(message, member) pairs (log scale)".into(),
        edges: latency_edges()[..=used].to_vec(),
        series: vec![("tree".into(), counts(&ht)), ("repaired".into(), counts(&hr))],
        log_x: true,
        log_y: true,
    };
    let title = format!(
        "scribe, N = {}, {} topics × {} members, loss = {}, churn = {}/node/min: delivered {:.5} by the tree, {:.6} with repair",
        p.nodes,
        p.topics,
        p.group_size,
        p.loss,
        p.churn,
        r.delivery_ratio_tree_only,
        r.delivery_ratio_with_repair
    );
    report::plot_histograms(path, &title, &[depth_panel, rdp_panel, latency_panel])
}
