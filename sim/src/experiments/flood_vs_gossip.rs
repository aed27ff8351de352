//! Experiment `flood-vs-gossip`: flooding with a TTL against blind counter rumor mongering
//! with parameters B and F, over the same graph (Portmann & Seneviratne 2002; PROTOCOLS.md
//! §3.4).
//!
//! Per run: one graph (`--graph random`: N·d/2 uniformly random edges; `--graph power-law`:
//! Barabási–Albert preferential attachment with m = d/2), one uniformly random origin, and two
//! simulations over them, one with the real [`Flooding`] machine and one with the real
//! [`Bcrm`] machine. Every message takes U[0.5, 1.5) hop units (`Latency::Constant(0.5)` with
//! jitter 2). A run ends when no message is in flight.
//!
//! | field | definition |
//! |---|---|
//! | `messages_per_node` | `Flood`/`Gossip` sends, duplicates and lost ones included, / N |
//! | `coverage` | nodes holding the message at the end (the origin included) / N |
//! | `rounds` | time of the last first delivery, in hops (PROTOCOLS.md's `t_last`) |
//! | `t_ave` | mean first-delivery time over reached nodes other than the origin, in hops |
//! | `duplicates_per_node` | receptions of a message already held / N |
//! | `msg_ratio`, `coverage_ratio`, `time_ratio` | BCRM's mean over flooding's mean |
//!
//! The seed's claim for B = F = 2: about 50% of flooding's messages, about 90% coverage,
//! about 2× slower.
//!
//! Departures from PROTOCOLS.md §3.1, §3.4 and §10.3:
//! - `--graph random|power-law` as the issue names them (PROTOCOLS.md: `gnm|ba`), and the
//!   default is `random` with degree 8, the "random graph of configurable degree"
//!   (PROTOCOLS.md: `ba`, m = 3, which is `--graph power-law --degree 6` here).
//! - `coverage` counts the origin, which holds the message without delivering it.
//! - `rounds` is PROTOCOLS.md's `t_last` under the name.
//! - The graph comes from its own labelled stream, `derive("graph", r, 0)` \[H\], not from
//!   `topo`, which the kernel's network already draws from; the origin from
//!   `derive("work", r, 0)`.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use hearsay_protocols::flood::{Bcrm, BcrmConfig, FloodConfig, FloodEvent, FloodMessage, Flooding};
use hearsay_protocols::rumor::RumorId;
use hearsay_protocols::{Duration, Instant, Machine, PeerView, Rng, Seed, StreamId, TopicId, Transmit};
use serde::Serialize;

use crate::kernel::{Fate, Latency, NetConfig, Observer, Sim, node_ids};
use crate::report::{self, Progress, Series};

/// One hop's nominal latency: the time unit of the report.
const HOP: Duration = Duration::from_secs(1);

/// The overlay graph both protocols run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Graph {
    /// Uniform random graph with N·degree/2 edges (no loops, no multi-edges).
    Random,
    /// Barabási–Albert preferential attachment, m = degree/2 (a Gnutella-like power law).
    PowerLaw,
}

impl Graph {
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Graph::Random => "random",
            Graph::PowerLaw => "power-law",
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Params {
    /// Number of nodes N.
    pub nodes: usize,
    /// Graph family.
    pub graph: Graph,
    /// Mean degree d.
    pub degree: u32,
    /// B: neighbours per forwarding.
    pub b: u32,
    /// F: receptions that trigger forwarding.
    pub f: u32,
    /// Flooding's TTL.
    pub ttl: u8,
    /// Independent runs.
    pub runs: u64,
    /// Seed of runs 0..runs.
    pub seed: u64,
    /// Per-message loss.
    pub loss: f64,
    /// Worker threads (0 = all cores).
    pub threads: usize,
}

impl Params {
    /// Defaults: B = F = 2, TTL 7, 20 runs, seed 1, no loss; degree 8 (random) or 6
    /// (power-law, m = 3).
    pub fn new(nodes: usize, graph: Graph) -> Self {
        let degree = match graph {
            Graph::Random => 8,
            Graph::PowerLaw => 6,
        };
        Params { nodes, graph, degree, b: 2, f: 2, ttl: 7, runs: 20, seed: 1, loss: 0.0, threads: 0 }
    }

    /// Refuse graphs that cannot be built.
    pub fn validate(&self) -> Result<(), String> {
        let (n, d) = (self.nodes as u64, u64::from(self.degree));
        if n < 2 || d == 0 {
            return Err("need at least 2 nodes and a positive degree".into());
        }
        match self.graph {
            Graph::Random if d >= n => Err(format!("degree {d} needs more than {n} nodes")),
            Graph::PowerLaw if d % 2 != 0 => {
                Err(format!("power-law degree must be even (m = degree/2), not {d}"))
            }
            Graph::PowerLaw if d / 2 + 1 >= n => {
                Err(format!("degree {d} needs more than {} nodes", d / 2 + 1))
            }
            _ => Ok(()),
        }
    }
}

/// One protocol's outcome in one run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Side {
    /// Sends / N.
    pub messages_per_node: f64,
    /// Nodes holding the message / N.
    pub coverage: f64,
    /// Last first-delivery time, hops.
    pub rounds: f64,
    /// Mean first-delivery time over reached non-origin nodes, hops.
    pub t_ave: f64,
    /// Receptions of an already held message / N.
    pub duplicates_per_node: f64,
    /// First-delivery times, hops, ascending (for the plot; not serialized).
    #[serde(skip)]
    pub arrivals: Vec<f64>,
}

/// One run: both protocols on the same graph from the same origin.
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    /// Mean degree of the graph built.
    pub mean_degree: f64,
    /// Flooding.
    pub flood: Side,
    /// BCRM.
    pub bcrm: Side,
}

/// The seed's claims for B = F = 2.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Claimed {
    /// BCRM messages / flooding messages.
    pub msg_ratio: f64,
    /// BCRM coverage.
    pub coverage: f64,
    /// BCRM time / flooding time.
    pub time_ratio: f64,
}

/// The experiment's report: one JSON line.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Always "flood-vs-gossip".
    pub experiment: &'static str,
    /// N.
    pub nodes: usize,
    /// random or power-law.
    pub graph: &'static str,
    /// Requested mean degree.
    pub degree: u32,
    /// Measured mean degree, mean over runs.
    pub mean_degree: f64,
    /// B.
    pub b: u32,
    /// F.
    pub f: u32,
    /// Flooding's TTL.
    pub ttl: u8,
    /// Per-message loss.
    pub loss: f64,
    /// Runs.
    pub runs: u64,
    /// Seed.
    pub seed: u64,
    /// Flooding, means over runs.
    pub flood: Side,
    /// BCRM, means over runs.
    pub bcrm: Side,
    /// bcrm.messages_per_node / flood.messages_per_node.
    pub msg_ratio: f64,
    /// bcrm.coverage / flood.coverage.
    pub coverage_ratio: f64,
    /// bcrm.rounds / flood.rounds.
    pub time_ratio: f64,
    /// The seed's claims (B = F = 2).
    pub claimed: Claimed,
    /// BCRM coverage per run, in run order.
    pub per_run_bcrm_coverage: Vec<f64>,
}

/// The seed's claims for B = F = 2 against flooding.
pub const CLAIMED: Claimed = Claimed { msg_ratio: 0.5, coverage: 0.9, time_ratio: 2.0 };

/// Build run `run`'s graph: sorted adjacency lists of node indices.
pub fn graph(p: &Params, run: u64) -> Vec<Vec<u32>> {
    let n = p.nodes;
    let mut rng = Rng::from_seed(Seed::derive(p.seed, "graph", run, 0));
    let mut adj: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut edges: HashSet<(u32, u32)> = HashSet::new();
    let mut add = |adj: &mut Vec<Vec<u32>>, a: u32, b: u32| {
        let key = (a.min(b), a.max(b));
        if a != b && edges.insert(key) {
            adj[a as usize].push(b);
            adj[b as usize].push(a);
            true
        } else {
            false
        }
    };
    match p.graph {
        Graph::Random => {
            let target = (n as u64 * u64::from(p.degree) / 2) as usize;
            let mut made = 0;
            while made < target {
                let (a, b) = (rng.index(n) as u32, rng.index(n) as u32);
                made += usize::from(add(&mut adj, a, b));
            }
        }
        Graph::PowerLaw => {
            let m = (p.degree / 2) as usize;
            // A clique of m + 1 nodes, then each new node attaches to m distinct nodes drawn
            // with probability proportional to degree (uniform over edge endpoints).
            let mut ends: Vec<u32> = Vec::with_capacity(n * 2 * m);
            for a in 0..=m as u32 {
                for b in 0..a {
                    add(&mut adj, a, b);
                    ends.extend([a, b]);
                }
            }
            for v in (m + 1) as u32..n as u32 {
                let mut targets: Vec<u32> = Vec::with_capacity(m);
                while targets.len() < m {
                    let t = ends[rng.index(ends.len())];
                    if !targets.contains(&t) {
                        targets.push(t);
                    }
                }
                for t in targets {
                    add(&mut adj, v, t);
                    ends.extend([v, t]);
                }
            }
        }
    }
    for list in adj.iter_mut() {
        list.sort_unstable();
    }
    adj
}

/// Counts sends and first deliveries.
#[derive(Default)]
struct Watch {
    sent: u64,
    arrivals: Vec<f64>,
}

impl<M: Machine<Message = FloodMessage, Event = FloodEvent>> Observer<M> for Watch {
    fn on_event(&mut self, now: Instant, _node: usize, event: FloodEvent) {
        let FloodEvent::Delivered { .. } = event;
        self.arrivals.push(now.as_micros() as f64 / HOP.as_micros() as f64);
    }
    fn on_send(&mut self, _: Instant, _: usize, _: Option<usize>, _: &Transmit<FloodMessage>, _: Fate) {
        self.sent += 1;
    }
}

fn net(p: &Params) -> NetConfig {
    let half = Duration::from_micros(HOP.as_micros() / 2);
    NetConfig {
        latency: Latency::Constant(half),
        jitter: 2.0,
        loss: p.loss,
        stream_loss: false,
        stream_retransmit: false,
    }
}

/// Run `sim` from `origin` until nothing is in flight; summarize.
fn drive<M: Machine<Message = FloodMessage, Event = FloodEvent>>(
    mut sim: Sim<M>,
    origin: usize,
    start: impl FnOnce(&mut M, Instant) -> bool,
    duplicates: impl Fn(&M) -> u64,
) -> Side {
    let mut watch = Watch::default();
    sim.call(origin, &mut watch, start);
    while sim.step(&mut watch) {}
    let n = sim.len() as f64;
    let mut arrivals = watch.arrivals;
    arrivals.sort_by(f64::total_cmp);
    let dups: u64 = (0..sim.len()).map(|i| duplicates(sim.machine(i))).sum();
    Side {
        messages_per_node: watch.sent as f64 / n,
        coverage: (arrivals.len() + 1) as f64 / n,
        rounds: arrivals.last().copied().unwrap_or(0.0),
        t_ave: if arrivals.is_empty() { 0.0 } else { report::mean(&arrivals) },
        duplicates_per_node: dups as f64 / n,
        arrivals,
    }
}

/// Run one repetition: the graph, then flooding and BCRM over it.
pub fn run_once(p: &Params, run: u64) -> RunResult {
    let adj = graph(p, run);
    let ids = node_ids(p.seed, run, p.nodes);
    let views: Arc<Vec<PeerView>> =
        Arc::new(adj.iter().map(|ns| ns.iter().map(|&j| ids[j as usize]).collect()).collect());
    let origin = Rng::from_seed(Seed::derive(p.seed, "work", run, 0)).index(p.nodes);
    let id = RumorId::Message { stream: StreamId { topic: TopicId(1), origin: ids[origin] }, seq: 1 };
    let payload = Bytes::from_static(b"query");

    let flood_cfg = Arc::new(FloodConfig { ttl: p.ttl, ..FloodConfig::default() });
    let v = views.clone();
    let flood_sim = Sim::new(p.seed, run, p.nodes, net(p), move |init| {
        let mut m = Flooding::new(init.id, flood_cfg.clone());
        m.set_neighbours(v[init.index].clone());
        m
    });
    let pl = payload.clone();
    let flood = drive(flood_sim, origin, move |m, now| m.originate(now, id, pl), |m| m.stats().duplicates);

    let bcrm_cfg = Arc::new(BcrmConfig { b: p.b, f: p.f, ..BcrmConfig::default() });
    let v = views.clone();
    let bcrm_sim = Sim::new(p.seed, run, p.nodes, net(p), move |init| {
        let mut m = Bcrm::new(init.id, bcrm_cfg.clone(), &init.seed);
        m.set_neighbours(v[init.index].clone());
        m
    });
    let bcrm = drive(bcrm_sim, origin, move |m, now| m.originate(now, id, payload), |m| m.stats().duplicates);

    let mean_degree = adj.iter().map(|l| l.len()).sum::<usize>() as f64 / p.nodes as f64;
    RunResult { mean_degree, flood, bcrm }
}

/// Run every repetition and summarize.
pub fn run(p: &Params, progress: &Progress) -> Report {
    run_with_results(p, progress).0
}

/// Run, keeping the per-run results for plotting.
pub fn run_with_results(p: &Params, progress: &Progress) -> (Report, Vec<RunResult>) {
    let results = report::parallel_runs(p.runs, report::threads(p.threads), progress, |r| run_once(p, r));
    (summarize(p, &results), results)
}

fn mean_side(sides: &[&Side]) -> Side {
    let m = |f: &dyn Fn(&Side) -> f64, digits| {
        report::round(report::mean(&sides.iter().map(|s| f(s)).collect::<Vec<_>>()), digits)
    };
    Side {
        messages_per_node: m(&|s| s.messages_per_node, 4),
        coverage: m(&|s| s.coverage, 5),
        rounds: m(&|s| s.rounds, 3),
        t_ave: m(&|s| s.t_ave, 3),
        duplicates_per_node: m(&|s| s.duplicates_per_node, 4),
        arrivals: Vec::new(),
    }
}

fn summarize(p: &Params, results: &[RunResult]) -> Report {
    let flood = mean_side(&results.iter().map(|r| &r.flood).collect::<Vec<_>>());
    let bcrm = mean_side(&results.iter().map(|r| &r.bcrm).collect::<Vec<_>>());
    let ratio = |a: f64, b: f64| if b > 0.0 { report::round(a / b, 4) } else { 0.0 };
    Report {
        experiment: "flood-vs-gossip",
        nodes: p.nodes,
        graph: p.graph.name(),
        degree: p.degree,
        mean_degree: report::round(
            report::mean(&results.iter().map(|r| r.mean_degree).collect::<Vec<_>>()),
            3,
        ),
        b: p.b,
        f: p.f,
        ttl: p.ttl,
        loss: p.loss,
        runs: p.runs,
        seed: p.seed,
        msg_ratio: ratio(bcrm.messages_per_node, flood.messages_per_node),
        coverage_ratio: ratio(bcrm.coverage, flood.coverage),
        time_ratio: ratio(bcrm.rounds, flood.rounds),
        flood,
        bcrm,
        claimed: CLAIMED,
        per_run_bcrm_coverage: results.iter().map(|r| report::round(r.bcrm.coverage, 5)).collect(),
    }
}

/// A readable table: both protocols, their ratios, and the seed's claims.
pub fn table(r: &Report) -> String {
    let mut s = format!(
        "flood-vs-gossip  N = {}  graph = {} (degree {}, measured {:.2})  B = {}  F = {}  TTL = {}  loss = {}  runs = {}  seed = {}\n",
        r.nodes, r.graph, r.degree, r.mean_degree, r.b, r.f, r.ttl, r.loss, r.runs, r.seed
    );
    s.push_str("               messages/node  coverage   rounds (hops)  t_ave  duplicates/node\n");
    for (name, side) in [("flooding", &r.flood), ("BCRM", &r.bcrm)] {
        s.push_str(&format!(
            "  {name:<10} {:>14.3}  {:>8.4}  {:>14.2}  {:>5.2}  {:>15.3}\n",
            side.messages_per_node, side.coverage, side.rounds, side.t_ave, side.duplicates_per_node
        ));
    }
    s.push_str(&format!(
        "  BCRM/flood {:>14.3}  {:>8.4}  {:>14.2}\n",
        r.msg_ratio, r.coverage_ratio, r.time_ratio
    ));
    s.push_str(&format!(
        "  claimed    {:>14.2}  {:>8.2}  {:>14.1}   (seed, B = F = 2: half the messages, ~90% coverage, ~2x slower)\n",
        r.claimed.msg_ratio, r.claimed.coverage, r.claimed.time_ratio
    ));
    s
}

/// Coverage against time (hops), mean over runs, for both protocols; single runs light.
pub fn plot(p: &Params, results: &[RunResult], path: &Path) -> Result<(), String> {
    let horizon = results.iter().map(|r| r.flood.rounds.max(r.bcrm.rounds)).fold(1.0, f64::max).ceil();
    let steps = (horizon * 10.0) as usize;
    let n = p.nodes as f64;
    let curve = |arrivals: &[f64]| -> Vec<(f64, f64)> {
        (0..=steps)
            .map(|k| {
                let t = k as f64 / 10.0;
                let reached = arrivals.partition_point(|a| *a <= t);
                (t, (reached + 1) as f64 / n)
            })
            .collect()
    };
    let mean_curve = |pick: &dyn Fn(&RunResult) -> &Side| -> Vec<(f64, f64)> {
        let curves: Vec<Vec<(f64, f64)>> = results.iter().map(|r| curve(&pick(r).arrivals)).collect();
        (0..=steps)
            .map(|k| (k as f64 / 10.0, report::mean(&curves.iter().map(|c| c[k].1).collect::<Vec<_>>())))
            .collect()
    };
    let mut series: Vec<Series> = results
        .iter()
        .flat_map(|r| {
            [
                Series { name: String::new(), points: curve(&r.flood.arrivals), emphasized: false },
                Series { name: String::new(), points: curve(&r.bcrm.arrivals), emphasized: false },
            ]
        })
        .collect();
    series.push(Series {
        name: format!("flooding, TTL {}", p.ttl),
        points: mean_curve(&|r| &r.flood),
        emphasized: true,
    });
    series.push(Series {
        name: format!("BCRM, B = {}, F = {}", p.b, p.f),
        points: mean_curve(&|r| &r.bcrm),
        emphasized: true,
    });
    let title = format!("flooding vs BCRM, {} graph, degree {}, N = {}", p.graph.name(), p.degree, p.nodes);
    report::plot_lines(path, &title, "time (hops)", "fraction of nodes reached", &series)
}
