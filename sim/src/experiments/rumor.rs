//! Experiment `rumor`: residue, traffic and delay of rumor mongering (Demers et al. 1987 §1.4;
//! PROTOCOLS.md §2.5–2.7).
//!
//! N nodes with full membership run the real [`RumorMonger`] at zero latency. One rumor is
//! injected at one uniformly random node at time 0; the run ends when no node is infective.
//! Reported, as means over runs (§2.5):
//!
//! | field | definition |
//! |---|---|
//! | `residue` | fraction of nodes that never learned the rumor (`residue_nodes` = × N) |
//! | `traffic` | rumor items carried in `Rumors` messages (lost ones included) / N |
//! | `t_ave` | mean first-arrival time over reached nodes other than the origin, in cycles |
//! | `t_last` | last first-arrival time, in cycles |
//!
//! `--timing rounds` runs lock-step cycles (`Timing::Sync`, every tick at k·T) with state
//! judged at the start of the cycle (`Staging::AtCycleStart`): Demers' tables, anchor B, where
//! an arrival's time is its cycle index. `--timing async` gives every node a Poisson clock of
//! rate 1/T and applies the rules per contact (`Staging::Immediate`): the continuous-time model
//! behind the seed's residue formula s = e^{−(k+1)(1−s)} (feedback coin push), anchor A, where
//! times are arrival / T.
//!
//! `--loss p` drops each datagram (rumors, pulls, feedback) independently.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use hearsay_protocols::rumor::{
    Direction, RumorConfig, RumorEvent, RumorId, RumorMessage, RumorMonger, Staging, Variant,
};
use hearsay_protocols::{Duration, Instant, PeerView, Rng, Seed, StreamId, Timing, TopicId, Transmit};
use serde::Serialize;

use crate::kernel::{Fate, NetConfig, Observer, Sim, node_ids};
use crate::report::{self, Progress, Series};

/// The cycle length T (its value does not matter at zero latency; cycles are what is counted).
const PERIOD: Duration = Duration::from_secs(1);

/// Synchronous rounds or continuous time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RumorTiming {
    /// Lock-step cycles, state judged at the start of the cycle (Demers' tables).
    #[default]
    Rounds,
    /// Poisson clocks, one contact at a time (the ODE's continuous time).
    Async,
}

impl RumorTiming {
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            RumorTiming::Rounds => "rounds",
            RumorTiming::Async => "async",
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Params {
    /// Number of nodes N.
    pub nodes: usize,
    /// Loss-of-interest rule.
    pub variant: Variant,
    /// Push, pull or push-pull.
    pub direction: Direction,
    /// The counter limit or 1/p_stop.
    pub k: u32,
    /// Partners per tick.
    pub fanout: u32,
    /// Rounds or async.
    pub timing: RumorTiming,
    /// Independent runs.
    pub runs: u64,
    /// Seed of runs 0..runs.
    pub seed: u64,
    /// Per-datagram loss probability.
    pub loss: f64,
    /// Worker threads (0 = all cores).
    pub threads: usize,
    /// Give up a run after this many cycles.
    pub max_rounds: u64,
}

impl Params {
    /// Defaults: push, fanout 1, rounds, 20 runs, seed 1, no loss.
    pub fn new(nodes: usize, variant: Variant, k: u32) -> Self {
        Params {
            nodes,
            variant,
            direction: Direction::Push,
            k,
            fanout: 1,
            timing: RumorTiming::Rounds,
            runs: 20,
            seed: 1,
            loss: 0.0,
            threads: 0,
            max_rounds: 10_000,
        }
    }
}

/// One run's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    /// Nodes that never learned the rumor.
    pub residue_nodes: u64,
    /// Rumor items sent / N.
    pub traffic: f64,
    /// Mean first-arrival time (cycles) over reached nodes other than the origin.
    pub t_ave: f64,
    /// Last first-arrival time (cycles).
    pub t_last: f64,
    /// Cycles until no node was infective.
    pub rounds: u64,
    /// False if the run hit `max_rounds` with infective nodes left.
    pub complete: bool,
    /// Fraction of nodes informed at the end of each cycle (index 0 = at injection).
    pub informed: Vec<f64>,
    /// Fraction of nodes infective (hot or staged) at the end of each cycle.
    pub infective: Vec<f64>,
}

/// Published values for one configuration (Demers' table, as quoted by the issue).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Anchor {
    /// Residue s.
    pub residue: f64,
    /// Traffic m.
    pub traffic: f64,
    /// t_ave (reported beside, not asserted).
    pub t_ave: f64,
    /// t_last (reported beside, not asserted).
    pub t_last: f64,
}

/// The experiment's report for one configuration: one JSON line.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Always "rumor".
    pub experiment: &'static str,
    /// N.
    pub nodes: usize,
    /// Loss-of-interest rule.
    pub variant: &'static str,
    /// push, pull or push-pull.
    pub mode: &'static str,
    /// rounds or async.
    pub timing: &'static str,
    /// k.
    pub k: u32,
    /// Partners per tick.
    pub fanout: u32,
    /// Per-datagram loss.
    pub loss: f64,
    /// Runs.
    pub runs: u64,
    /// Seed.
    pub seed: u64,
    /// Mean residue s over runs.
    pub residue: f64,
    /// Mean residue × N (nodes never reached).
    pub residue_nodes: f64,
    /// Standard error of `residue_nodes`.
    pub residue_nodes_stderr: f64,
    /// Mean traffic m (rumor items per node).
    pub traffic: f64,
    /// Standard error of `traffic`.
    pub traffic_stderr: f64,
    /// Mean t_ave (cycles).
    pub t_ave: f64,
    /// Mean t_last (cycles).
    pub t_last: f64,
    /// Mean cycles until no node was infective.
    pub rounds: f64,
    /// Runs stopped at the cycle limit.
    pub incomplete_runs: u64,
    /// The formula s = e^{−(k+1)(1−s)} (feedback coin push, continuous time, N → ∞); for
    /// feedback coin push only.
    pub formula_residue: Option<f64>,
    /// `formula_residue` × N.
    pub formula_residue_nodes: Option<f64>,
    /// The formula's traffic m = (k+1)(1−s).
    pub formula_traffic: Option<f64>,
    /// Demers' table for this row (N = 1000, push, rounds, fanout 1, no loss), if any.
    pub anchor: Option<Anchor>,
    /// Per-run residue × N, in run order.
    pub per_run_residue_nodes: Vec<u64>,
    /// Per-run traffic, in run order.
    pub per_run_traffic: Vec<f64>,
    /// Mean informed fraction at the end of each cycle (finished runs hold their last value).
    pub informed_mean: Vec<f64>,
    /// Mean infective fraction at the end of each cycle (finished runs count 0).
    pub infective_mean: Vec<f64>,
}

/// The seed's residue table: nodes never reached out of 10,000, k = 1..=7 (anchor A).
pub const SEED_TABLE: [f64; 7] = [2032.0, 595.0, 198.0, 70.0, 25.0, 9.0, 3.0];

/// Solve s = e^{−(k+1)(1−s)} for the root in (0, 1) (Demers §1.4; PROTOCOLS.md §2.6).
pub fn formula_residue(k: u32) -> f64 {
    let c = f64::from(k) + 1.0;
    // Fixed-point iteration from 0 increases monotonically to the smallest root, which is
    // the one in (0, 1) for c > 1.
    let mut s = 0.0f64;
    for _ in 0..10_000 {
        let next = (-c * (1.0 - s)).exp();
        if (next - s).abs() < 1e-15 {
            return next;
        }
        s = next;
    }
    s
}

/// Demers' table as the issue quotes it (N = 1000, push, synchronous cycles).
pub fn demers_anchor(variant: Variant, k: u32) -> Option<Anchor> {
    let a = |residue, traffic, t_ave, t_last| Some(Anchor { residue, traffic, t_ave, t_last });
    match (variant, k) {
        (Variant::FeedbackCounter, 1) => a(0.176, 1.74, 11.0, 16.8),
        (Variant::FeedbackCounter, 2) => a(0.037, 3.30, 12.1, 16.9),
        (Variant::FeedbackCounter, 3) => a(0.011, 4.53, 12.5, 17.4),
        (Variant::FeedbackCounter, 4) => a(0.0036, 5.64, 12.7, 17.5),
        (Variant::FeedbackCounter, 5) => a(0.0012, 6.68, 12.8, 17.7),
        (Variant::BlindCoin, 1) => a(0.96, 0.04, 19.0, 38.0),
        (Variant::BlindCoin, 2) => a(0.205, 1.59, 17.0, 33.0),
        (Variant::BlindCoin, 3) => a(0.060, 2.82, 15.0, 32.0),
        (Variant::BlindCoin, 4) => a(0.021, 3.91, 14.1, 32.0),
        (Variant::BlindCoin, 5) => a(0.008, 4.95, 13.8, 32.0),
        _ => None,
    }
}

fn anchor_for(p: &Params) -> Option<Anchor> {
    let comparable = p.nodes == 1_000
        && p.direction == Direction::Push
        && p.timing == RumorTiming::Rounds
        && p.fanout == 1
        && p.loss == 0.0;
    if comparable { demers_anchor(p.variant, p.k) } else { None }
}

/// Watches a run: first arrivals, infective count, rumor items sent.
struct Watch {
    period: f64,
    informed: usize,
    active: usize,
    items: u64,
    arrivals: Vec<f64>,
}

impl Observer<RumorMonger> for Watch {
    fn on_event(&mut self, now: Instant, _node: usize, event: RumorEvent) {
        match event {
            RumorEvent::Delivered { .. } => {
                self.informed += 1;
                self.active += 1;
                self.arrivals.push(now.as_micros() as f64 / self.period);
            }
            RumorEvent::Removed { .. } => self.active = self.active.saturating_sub(1),
        }
    }
    fn on_send(&mut self, _: Instant, _: usize, _: Option<usize>, t: &Transmit<RumorMessage>, _: Fate) {
        if let RumorMessage::Rumors { items, .. } = &t.msg {
            self.items += items.len() as u64;
        }
    }
}

/// The machines' configuration for these parameters.
pub fn config(p: &Params) -> RumorConfig {
    let (timing, staging) = match p.timing {
        RumorTiming::Rounds => (Timing::Sync, Staging::AtCycleStart),
        RumorTiming::Async => (Timing::Poisson, Staging::Immediate),
    };
    RumorConfig {
        variant: p.variant,
        k: p.k,
        fanout: p.fanout,
        direction: p.direction,
        period: PERIOD,
        timing,
        staging,
        ..RumorConfig::default()
    }
}

/// Build the simulation of run `run` (exposed for replay tests).
pub fn build(p: &Params, run: u64) -> Sim<RumorMonger> {
    let config = Arc::new(config(p));
    let peers: PeerView = node_ids(p.seed, run, p.nodes).into_iter().collect();
    let net = NetConfig { loss: p.loss, ..NetConfig::default() };
    Sim::new(p.seed, run, p.nodes, net, move |init| {
        let mut m = RumorMonger::new(init.id, config.clone(), &init.seed, init.now);
        m.handle_peers(init.now, peers.clone());
        m
    })
}

/// Run one repetition.
pub fn run_once(p: &Params, run: u64) -> RunResult {
    let mut sim = build(p, run);
    let mut work = Rng::from_seed(Seed::derive(p.seed, "work", run, 0));
    let origin = work.index(p.nodes);
    let id = RumorId::Message { stream: StreamId { topic: TopicId(1), origin: sim.id(origin) }, seq: 1 };
    let period = PERIOD.as_micros();
    let mut watch = Watch { period: period as f64, informed: 1, active: 1, items: 0, arrivals: Vec::new() };
    sim.call(origin, &mut watch, |m, now| m.inject(now, id, Bytes::from_static(b"rumor")));
    let n = p.nodes as f64;
    let mut informed = vec![1.0 / n];
    let mut infective = vec![1.0 / n];
    let mut rounds = 0;
    while watch.active > 0 && rounds < p.max_rounds {
        rounds += 1;
        sim.run_until(Instant::from_micros((rounds + 1) * period), &mut watch);
        informed.push(watch.informed as f64 / n);
        infective.push(watch.active as f64 / n);
    }
    let reached = watch.arrivals.len();
    RunResult {
        residue_nodes: (p.nodes - watch.informed) as u64,
        traffic: watch.items as f64 / n,
        t_ave: if reached == 0 { 0.0 } else { watch.arrivals.iter().sum::<f64>() / reached as f64 },
        t_last: watch.arrivals.iter().copied().fold(0.0, f64::max),
        rounds,
        complete: watch.active == 0,
        informed,
        infective,
    }
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

fn column(results: &[RunResult], f: impl Fn(&RunResult) -> f64) -> Vec<f64> {
    results.iter().map(f).collect()
}

fn mean_curve(results: &[RunResult], curve: impl Fn(&RunResult) -> &Vec<f64>, done: Option<f64>) -> Vec<f64> {
    let longest = results.iter().map(|r| curve(r).len()).max().unwrap_or(0);
    (0..longest)
        .map(|k| {
            let v: Vec<f64> = results
                .iter()
                .map(|r| {
                    let c = curve(r);
                    c.get(k).copied().unwrap_or_else(|| done.unwrap_or(c.last().copied().unwrap_or(0.0)))
                })
                .collect();
            report::round(report::mean(&v), 6)
        })
        .collect()
}

fn summarize(p: &Params, results: &[RunResult]) -> Report {
    let n = p.nodes as f64;
    let residue_nodes = column(results, |r| r.residue_nodes as f64);
    let traffic = column(results, |r| r.traffic);
    let feedback_coin_push = p.variant == Variant::FeedbackCoin && p.direction == Direction::Push;
    let formula = feedback_coin_push.then(|| formula_residue(p.k));
    Report {
        experiment: "rumor",
        nodes: p.nodes,
        variant: p.variant.name(),
        mode: p.direction.name(),
        timing: p.timing.name(),
        k: p.k,
        fanout: p.fanout,
        loss: p.loss,
        runs: p.runs,
        seed: p.seed,
        residue: report::round(report::mean(&residue_nodes) / n, 6),
        residue_nodes: report::round(report::mean(&residue_nodes), 2),
        residue_nodes_stderr: report::round(report::std_err(&residue_nodes), 2),
        traffic: report::round(report::mean(&traffic), 4),
        traffic_stderr: report::round(report::std_err(&traffic), 4),
        t_ave: report::round(report::mean(&column(results, |r| r.t_ave)), 3),
        t_last: report::round(report::mean(&column(results, |r| r.t_last)), 3),
        rounds: report::round(report::mean(&column(results, |r| r.rounds as f64)), 2),
        incomplete_runs: results.iter().filter(|r| !r.complete).count() as u64,
        formula_residue: formula.map(|s| report::round(s, 6)),
        formula_residue_nodes: formula.map(|s| report::round(s * n, 1)),
        formula_traffic: formula.map(|s| report::round((f64::from(p.k) + 1.0) * (1.0 - s), 4)),
        anchor: anchor_for(p),
        per_run_residue_nodes: results.iter().map(|r| r.residue_nodes).collect(),
        per_run_traffic: traffic.iter().map(|t| report::round(*t, 4)).collect(),
        informed_mean: mean_curve(results, |r| &r.informed, None),
        infective_mean: mean_curve(results, |r| &r.infective, Some(0.0)),
    }
}

/// The header line of a table of reports that share everything but k.
fn header(r: &Report) -> String {
    format!(
        "rumor  N = {}  {} {}  timing = {}  fanout = {}  loss = {}  runs = {}  seed = {}\n",
        r.nodes, r.variant, r.mode, r.timing, r.fanout, r.loss, r.runs, r.seed
    )
}

/// A readable table of one or more reports (a k sweep), measured beside formula and anchor.
pub fn table(reports: &[Report]) -> String {
    let Some(first) = reports.first() else { return String::new() };
    let mut s = header(first);
    s.push_str(
        "   k   residue  never reached (± se)   traffic (± se)   t_ave  t_last  cycles | formula: never reached  traffic | Demers: residue traffic t_ave t_last\n",
    );
    for r in reports {
        s.push_str(&format!(
            "  {:>2}  {:>8.5}  {:>9.1} (± {:>6.1})   {:>6.3} (± {:.3})  {:>6.2}  {:>6.2}  {:>6.1} |",
            r.k,
            r.residue,
            r.residue_nodes,
            r.residue_nodes_stderr,
            r.traffic,
            r.traffic_stderr,
            r.t_ave,
            r.t_last,
            r.rounds
        ));
        match (r.formula_residue_nodes, r.formula_traffic) {
            (Some(nodes), Some(m)) => s.push_str(&format!("          {nodes:>9.1}  {m:>7.3} |")),
            _ => s.push_str("                  —        — |"),
        }
        match r.anchor {
            Some(a) => s.push_str(&format!(
                "         {:>7.4} {:>7.2} {:>5.1} {:>6.1}\n",
                a.residue, a.traffic, a.t_ave, a.t_last
            )),
            None => s.push_str("               —\n"),
        }
        if r.incomplete_runs > 0 {
            s.push_str(&format!("      {} run(s) stopped at the cycle limit\n", r.incomplete_runs));
        }
    }
    s
}

/// Plot a sweep as log10(residue) against k (measured, formula, Demers); a single
/// configuration as informed and infective fractions per cycle (runs light, means bold, and
/// the ODE for feedback coin push).
pub fn plot(reports: &[(Report, Vec<RunResult>)], path: &Path) -> Result<(), String> {
    let Some((first, results)) = reports.first() else { return Err("nothing to plot".into()) };
    if reports.len() > 1 {
        let log_points = |f: &dyn Fn(&Report) -> Option<f64>| -> Vec<(f64, f64)> {
            reports
                .iter()
                .filter_map(|(r, _)| f(r).filter(|v| *v > 0.0).map(|v| (f64::from(r.k), v.log10())))
                .collect()
        };
        let mut series = vec![Series {
            name: format!("measured ({} runs)", first.runs),
            points: log_points(&|r| Some(r.residue)),
            emphasized: true,
        }];
        let formula = log_points(&|r| r.formula_residue);
        if !formula.is_empty() {
            series.push(Series { name: "s = e^-(k+1)(1-s)".into(), points: formula, emphasized: true });
        }
        let demers = log_points(&|r| r.anchor.map(|a| a.residue));
        if !demers.is_empty() {
            series.push(Series { name: "Demers et al. 1987".into(), points: demers, emphasized: true });
        }
        let title = format!("rumor {} {}, {}, N = {}", first.variant, first.mode, first.timing, first.nodes);
        return report::plot_lines(path, &title, "k", "log10 residue", &series);
    }
    let curve =
        |c: &[f64]| -> Vec<(f64, f64)> { c.iter().enumerate().map(|(k, f)| (k as f64, *f)).collect() };
    let mut series: Vec<Series> = results
        .iter()
        .flat_map(|r| {
            [
                Series { name: String::new(), points: curve(&r.informed), emphasized: false },
                Series { name: String::new(), points: curve(&r.infective), emphasized: false },
            ]
        })
        .collect();
    series.push(Series {
        name: "informed (mean)".into(),
        points: curve(&first.informed_mean),
        emphasized: true,
    });
    series.push(Series {
        name: "infective (mean)".into(),
        points: curve(&first.infective_mean),
        emphasized: true,
    });
    if first.formula_residue.is_some() && first.timing == "async" {
        let horizon = (first.informed_mean.len().max(2) - 1) as f64;
        let (informed, infective) = ode(first.k, first.nodes, horizon);
        series.push(Series { name: "ODE informed".into(), points: informed, emphasized: true });
        series.push(Series { name: "ODE infective".into(), points: infective, emphasized: true });
    }
    let title = format!(
        "rumor {} {} k = {}, {}, N = {}",
        first.variant, first.mode, first.k, first.timing, first.nodes
    );
    report::plot_lines(path, &title, "cycle", "fraction of nodes", &series)
}

/// Points (x, y) of a plotted line.
type Curve = Vec<(f64, f64)>;

/// Demers' ODE (ds/dt = −si, di/dt = si − (1/k)(1−s)i) from one infective of N, integrated
/// with small Euler steps; points at every tenth of a cycle up to `horizon`.
fn ode(k: u32, nodes: usize, horizon: f64) -> (Curve, Curve) {
    let (mut s, mut i) = (1.0 - 1.0 / nodes as f64, 1.0 / nodes as f64);
    let dt = 0.001;
    let (mut informed, mut infective) = (Vec::new(), Vec::new());
    let mut t = 0.0;
    let mut step = 0u64;
    while t <= horizon {
        if step % 100 == 0 {
            informed.push((t, 1.0 - s));
            infective.push((t, i));
        }
        let ds = -s * i;
        let di = s * i - (1.0 - s) * i / f64::from(k);
        s += ds * dt;
        i += di * dt;
        t += dt;
        step += 1;
    }
    (informed, infective)
}
