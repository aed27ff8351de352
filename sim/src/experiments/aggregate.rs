//! Experiment `aggregate`: how fast gossip aggregation converges, and whether mass survives
//! message loss (PROTOCOLS.md §5.9).
//!
//! N nodes with full membership run the real [`Aggregation`] machine at zero latency. Node 0
//! is the querier; every node holds a value for the attribute (`--init peak`: N at node 0 and
//! 0 elsewhere, mean 1; `uniform`: U[0, 1) i.i.d. from the run's workload RNG). With
//! `--join all` (the default) every node joins the query before round 1, i.e. the announcement
//! rumor of §5.1 is taken as complete, as in Kempe's and Jelasity's analyses; with
//! `--join on-message` only the querier starts and the others join on the first aggregation
//! message they receive.
//!
//! **Timing.** Push-sum (plain or acknowledged) and extremum tick in sync timing: every node's
//! `agg_tick` at k·T, all sends of round k delivered at the same instant after every tick of the
//! round (Kempe's synchronous rounds). Push-pull runs Jelasity's cycle model (§5.5, §9.4): in
//! each cycle every node initiates exactly one exchange, the N exchanges atomically one after
//! another in a fresh uniformly random permutation of initiators drawn from the workload RNG;
//! the machines are in `manual_ticks` mode and the experiment calls `tick` on each initiator
//! and lets its request and reply land before the next.
//!
//! **Quantities.** After round t (t = 0: before any), with truth the exact aggregate and
//! scale = |truth| (1 if truth is 0): σ_t = √((1/N) Σ_i (est_i − truth)²); `rounds_to_1e-3` /
//! `rounds_to_1e-6` = first t with σ_t / scale ≤ ε; `variance_factor` = (σ²_W / σ²_0)^{1/W} with
//! W = min(20, rounds); `final_rel_error` = max_i |est_i − truth| / scale after the last round;
//! `rounds_worst_to_1e-3` = first t where that worst error is ≤ 10^−3. An undefined estimate
//! (w = 0, a node not yet joined, ±∞) makes σ_t and the worst error undefined. The querier's
//! stopping rule (§5.7, with `max_rounds` = the rounds simulated) gives `rounds`, `value`,
//! `converged` and `rel_error`.
//!
//! **Departure from §5.9, on purpose:** σ_t is measured around the true aggregate, not around
//! the current mean of the estimates. Where mass is conserved (push-pull without loss, both
//! push-sums once mixed) the two are the same number; where it is not (plain push-sum and
//! push-pull under loss) the §5.9 σ would hide the bias, and hiding it is the opposite of what
//! the experiment is for.
//!
//! Anchors (push-pull, peak, no loss): variance factor 1/(2√e) ≈ 0.3033 per cycle; rounds to
//! 10^−6: 29 / 31 / 33 at N = 10^3 / 10^4 / 10^5 (Jelasity et al. 2005; reproduced [R]).

use std::path::Path;
use std::sync::Arc;

use hearsay_protocols::aggregate::{
    AggConfig, AggEvent, AggMessage, Aggregation, Algorithm, Func, Query, QueryResult, QuerySpec,
};
use hearsay_protocols::{Duration, Instant, PeerView, Rng, Seed, Timing, Transmit};
use serde::Serialize;

use crate::kernel::{Fate, NetConfig, Observer, Sim, node_ids};
use crate::report::{self, Progress, Series};

/// The round period (at zero latency only rounds count).
const PERIOD: Duration = Duration::from_secs(1);

/// The attribute every node holds.
const ATTR: &str = "x";

/// Jelasity et al.'s per-cycle variance factor for push-pull averaging: 1/(2√e).
pub const VARIANCE_FACTOR_THEORY: f64 = 0.303_265_329_856_316_7;

/// Cycles over which the variance factor is averaged (§5.9).
pub const FACTOR_WINDOW: usize = 20;

/// Initial values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Init {
    /// x = N at node 0, 0 elsewhere (mean 1).
    Peak,
    /// x ~ U[0, 1) i.i.d.
    Uniform,
}

/// Who joins the query before round 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Join {
    /// Every node (the announcement is taken as complete).
    All,
    /// The querier only; the others join on their first aggregation message.
    OnMessage,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Params {
    /// Number of nodes N.
    pub nodes: usize,
    /// The aggregate.
    pub func: Func,
    /// The algorithm.
    pub algorithm: Algorithm,
    /// Initial values.
    pub init: Init,
    /// Who joins before round 1.
    pub join: Join,
    /// Rounds (cycles) simulated; also the query's `max_rounds`.
    pub rounds: u32,
    /// Independent runs.
    pub runs: u64,
    /// Seed of run 0..runs.
    pub seed: u64,
    /// Per-message loss probability.
    pub loss: f64,
    /// Worker threads (0 = all cores).
    pub threads: usize,
}

impl Params {
    /// `func` by `algorithm` over N nodes: peak start, everyone joined, 50 rounds, 20 runs,
    /// seed 1, no loss.
    pub fn new(nodes: usize, func: Func, algorithm: Algorithm) -> Self {
        Params {
            nodes,
            func,
            algorithm,
            init: Init::Peak,
            join: Join::All,
            rounds: 50,
            runs: 20,
            seed: 1,
            loss: 0.0,
            threads: 0,
        }
    }

    /// Check what the simulation cannot run.
    pub fn validate(&self) -> Result<(), String> {
        if !self.algorithm.computes(self.func) {
            let hint =
                if self.func.is_extremum() { "extremum" } else { "ack-push-sum, push-sum or push-pull" };
            return Err(format!(
                "{} cannot compute {}: use --algorithm {hint}",
                self.algorithm.name(),
                self.func.name()
            ));
        }
        if self.nodes < 2 {
            return Err("aggregation needs at least 2 nodes".into());
        }
        if self.rounds == 0 || self.rounds > hearsay_protocols::aggregate::MAX_ROUNDS_LIMIT {
            return Err(format!(
                "--rounds must be in 1..={}",
                hearsay_protocols::aggregate::MAX_ROUNDS_LIMIT
            ));
        }
        Ok(())
    }
}

/// One run's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    /// The exact aggregate.
    pub true_value: f64,
    /// σ_t / scale after each round t = 0..=rounds (`None`: undefined).
    pub rel_sd: Vec<Option<f64>>,
    /// max_i |est_i − truth| / scale after each round.
    pub worst: Vec<Option<f64>>,
    /// First t with σ_t / scale ≤ 10^−3.
    #[serde(rename = "rounds_to_1e-3")]
    pub rounds_to_1e3: Option<u32>,
    /// First t with σ_t / scale ≤ 10^−6.
    #[serde(rename = "rounds_to_1e-6")]
    pub rounds_to_1e6: Option<u32>,
    /// First t with the worst node's relative error ≤ 10^−3.
    #[serde(rename = "rounds_worst_to_1e-3")]
    pub rounds_worst_to_1e3: Option<u32>,
    /// First t at which every node's estimate equals the truth exactly (extremum: everyone
    /// holds the extreme).
    pub rounds_to_exact: Option<u32>,
    /// (σ²_W / σ²_0)^{1/W} (not for extremum).
    pub variance_factor: Option<f64>,
    /// The worst node's relative error after the last round.
    pub final_rel_error: Option<f64>,
    /// The querier's answer (`None` if it never answered: cannot happen with max_rounds =
    /// rounds unless the querier never ticked).
    pub answer: Option<QueryResult>,
    /// |answer − truth| / scale.
    pub rel_error: Option<f64>,
    /// Messages sent per node per round.
    pub msgs_per_node_per_round: f64,
    /// (Σ_i w_i held + Σ w in transfers sent and not yet applied) / Σ_i w_i(0) after the last
    /// round: §5.3's invariant, 1 when mass is conserved (mass algorithms only).
    pub weight_mass: Option<f64>,
    /// The part of that in transfers not yet applied (acknowledged push-sum).
    pub weight_in_flight: Option<f64>,
    /// The same for the value mass: Σ s after the last round / Σ s(0) (push-pull keeps w = 1
    /// for avg, so a lost reply shows here).
    pub value_mass: Option<f64>,
}

/// The experiment's report: one JSON line.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Always "aggregate".
    pub experiment: &'static str,
    /// N.
    pub nodes: usize,
    /// The aggregate.
    #[serde(rename = "fn")]
    pub func: Func,
    /// The algorithm.
    pub algorithm: Algorithm,
    /// Initial values.
    pub init: Init,
    /// Who joined before round 1.
    pub join: Join,
    /// Per-message loss probability.
    pub loss: f64,
    /// Number of runs.
    pub runs: u64,
    /// Seed.
    pub seed: u64,
    /// Rounds simulated (the query's max_rounds).
    pub max_rounds: u32,
    /// Mean over runs; `None` if some run never got there.
    #[serde(rename = "rounds_to_1e-3")]
    pub rounds_to_1e3: Option<f64>,
    /// Mean over runs; `None` if some run never got there.
    #[serde(rename = "rounds_to_1e-6")]
    pub rounds_to_1e6: Option<f64>,
    /// Mean over runs; `None` if some run never got there.
    #[serde(rename = "rounds_worst_to_1e-3")]
    pub rounds_worst_to_1e3: Option<f64>,
    /// Mean over runs; `None` if some run never got there.
    pub rounds_to_exact: Option<f64>,
    /// Mean over runs of the per-run geometric-mean factor.
    pub variance_factor: Option<f64>,
    /// Smallest per-run factor.
    pub variance_factor_min: Option<f64>,
    /// Largest per-run factor.
    pub variance_factor_max: Option<f64>,
    /// Mean over runs of the worst node's final relative error.
    pub final_rel_error: Option<f64>,
    /// Largest over runs.
    pub final_rel_error_max: Option<f64>,
    /// Mean over runs of the querier's answer round.
    pub rounds: Option<f64>,
    /// Runs whose querier answered by the stopping rule (not the cap).
    pub converged_runs: u64,
    /// Mean over runs of the querier's answer.
    pub value: Option<f64>,
    /// Mean over runs of the exact aggregate.
    pub true_value: f64,
    /// Mean over runs of |value − true_value| / scale.
    pub rel_error: Option<f64>,
    /// Largest over runs.
    pub rel_error_max: Option<f64>,
    /// Messages per node per round, mean over runs.
    pub msgs_per_node_per_round: f64,
    /// Weight held or in flight after the last round / initial weight, mean over runs (1:
    /// conserved).
    pub weight_mass: Option<f64>,
    /// Weight in transfers not yet applied / initial weight, mean over runs.
    pub weight_in_flight: Option<f64>,
    /// Value mass held or in flight / initial value mass, mean over runs (1: conserved).
    pub value_mass: Option<f64>,
    /// The anchor for rounds to 10^−6, where there is one.
    #[serde(rename = "anchor_rounds_to_1e-6")]
    pub anchor_rounds_to_1e6: Option<f64>,
    /// 1/(2√e) for push-pull.
    pub anchor_variance_factor: Option<f64>,
    /// Geometric mean over runs of σ_t / scale, t = 0..=rounds.
    pub rel_sd_per_round: Vec<Option<f64>>,
    /// Geometric mean over runs of the worst node's relative error, t = 0..=rounds.
    pub worst_rel_error_per_round: Vec<Option<f64>>,
    /// Per-run figures, in run order.
    pub per_run: Vec<RunSummary>,
}

/// The scalar figures of one run.
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    /// See [`RunResult`].
    #[serde(rename = "rounds_to_1e-3")]
    pub rounds_to_1e3: Option<u32>,
    /// See [`RunResult`].
    #[serde(rename = "rounds_to_1e-6")]
    pub rounds_to_1e6: Option<u32>,
    /// See [`RunResult`].
    pub variance_factor: Option<f64>,
    /// See [`RunResult`].
    pub final_rel_error: Option<f64>,
    /// The querier's answer round.
    pub rounds: Option<u32>,
    /// Whether the stopping rule fired.
    pub converged: bool,
    /// The querier's answer.
    pub value: Option<f64>,
    /// The exact aggregate.
    pub true_value: f64,
}

/// The anchor for rounds to 10^−6 (push-pull from a peak).
pub fn anchor_rounds_to_1e6(p: &Params) -> Option<f64> {
    if p.algorithm != Algorithm::PushPull || p.init != Init::Peak || p.func != Func::Avg {
        return None;
    }
    match p.nodes {
        1_000 => Some(29.0),
        10_000 => Some(31.0),
        100_000 => Some(33.0),
        _ => None,
    }
}

/// Counts sends and keeps the querier's answer.
#[derive(Default)]
struct Watch {
    messages: u64,
    answer: Option<QueryResult>,
}

impl Observer<Aggregation> for Watch {
    fn on_event(&mut self, _now: Instant, node: usize, event: AggEvent) {
        if let (0, AggEvent::Answered(r)) = (node, event) {
            self.answer.get_or_insert(r);
        }
    }
    fn on_send(&mut self, _: Instant, _: usize, _: Option<usize>, _: &Transmit<AggMessage>, _: Fate) {
        self.messages += 1;
    }
}

/// The initial values of run `run`.
pub fn initial_values(p: &Params, run: u64) -> Vec<f64> {
    match p.init {
        Init::Peak => (0..p.nodes).map(|i| if i == 0 { p.nodes as f64 } else { 0.0 }).collect(),
        Init::Uniform => {
            let mut work = Rng::from_seed(Seed::derive(p.seed, "work", run, 0));
            (0..p.nodes).map(|_| work.unit()).collect()
        }
    }
}

/// The exact aggregate of `values`.
pub fn truth(func: Func, values: &[f64]) -> f64 {
    match func {
        Func::Avg => values.iter().sum::<f64>() / values.len() as f64,
        Func::Sum => values.iter().sum(),
        Func::Count => values.len() as f64,
        Func::Min => values.iter().copied().fold(f64::INFINITY, f64::min),
        Func::Max => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    }
}

/// Σ s(0) and Σ w(0) over all nodes once joined (§5.1), whoever has joined yet.
pub fn initial_mass(func: Func, values: &[f64]) -> (f64, f64) {
    match func {
        Func::Avg => (values.iter().sum(), values.len() as f64),
        Func::Sum => (values.iter().sum(), 1.0),
        Func::Count => (values.len() as f64, 1.0),
        Func::Min | Func::Max => (0.0, 0.0),
    }
}

/// Build the simulation of run `run` with node i holding `values[i]` (for replay tests).
pub fn build(p: &Params, run: u64, values: Arc<Vec<f64>>) -> Sim<Aggregation> {
    let config = Arc::new(AggConfig {
        period: PERIOD,
        timing: Timing::Sync,
        manual_ticks: p.algorithm == Algorithm::PushPull,
        ..AggConfig::default()
    });
    let peers: PeerView = node_ids(p.seed, run, p.nodes).into_iter().collect();
    let net = NetConfig { loss: p.loss, ..NetConfig::default() };
    Sim::new(p.seed, run, p.nodes, net, move |init| {
        let mut m = Aggregation::new(init.id, config.clone(), &init.seed, init.now);
        m.handle_peers(init.now, peers.clone());
        if let Some(&x) = values.get(init.index) {
            // Finite by construction.
            let _ = m.set_value(init.now, ATTR, x);
        }
        m
    })
}

/// Start the query at node 0 (and join everyone, with `Join::All`). Returns the query.
pub fn start(p: &Params, sim: &mut Sim<Aggregation>, obs: &mut impl Observer<Aggregation>) -> Query {
    let spec =
        QuerySpec { max_rounds: Some(p.rounds), ..QuerySpec::new(p.func, ATTR) }.with_algorithm(p.algorithm);
    let query = sim
        .call(0, obs, |m, now| m.start_query(now, spec))
        .expect("Params::validate admits only valid queries");
    if p.join == Join::All {
        for i in 1..p.nodes {
            let q = query.clone();
            let _ = sim.call(i, obs, |m, now| m.handle_query(now, q));
        }
    }
    query
}

/// Run one repetition.
pub fn run_once(p: &Params, run: u64) -> RunResult {
    let values = Arc::new(initial_values(p, run));
    let truth = truth(p.func, &values);
    let scale = if truth == 0.0 { 1.0 } else { truth.abs() };
    let mut sim = build(p, run, values.clone());
    let mut watch = Watch::default();
    let query = start(p, &mut sim, &mut watch);
    let qid = query.qid;
    let (s0, w0) = initial_mass(p.func, &values);
    let measure = |sim: &Sim<Aggregation>| -> (Option<f64>, Option<f64>) {
        let mut sq = 0.0;
        let mut worst: f64 = 0.0;
        for i in 0..p.nodes {
            let Some(e) = sim.machine(i).estimate(&qid) else { return (None, None) };
            sq += (e - truth) * (e - truth);
            worst = worst.max((e - truth).abs());
        }
        (Some((sq / p.nodes as f64).sqrt() / scale), Some(worst / scale))
    };
    let (mut rel_sd, mut worst) = (Vec::new(), Vec::new());
    let (sd0, worst0) = measure(&sim);
    rel_sd.push(sd0);
    worst.push(worst0);
    let mut order = Rng::from_seed(Seed::derive(p.seed, "work", run, 1));
    let mut perm: Vec<usize> = (0..p.nodes).collect();
    for t in 1..=u64::from(p.rounds) {
        if p.algorithm == Algorithm::PushPull {
            sim.run_until(Instant::from_micros(t * PERIOD.as_micros()), &mut watch);
            order.shuffle(&mut perm);
            for &i in &perm {
                sim.call(i, &mut watch, |m, now| m.tick(now));
                sim.run_while(&mut watch, |s| s.pending() > 0);
            }
        } else {
            // Round t's ticks fire at t·T; its messages land at the same instant.
            sim.run_until(Instant::from_micros((t + 1) * PERIOD.as_micros()), &mut watch);
        }
        let (s, w) = measure(&sim);
        rel_sd.push(s);
        worst.push(w);
    }
    let first =
        |xs: &[Option<f64>], eps: f64| xs.iter().position(|x| x.is_some_and(|x| x <= eps)).map(|t| t as u32);
    let window = FACTOR_WINDOW.min(p.rounds as usize);
    let variance_factor = match (rel_sd[0], rel_sd[window], p.algorithm) {
        (_, _, Algorithm::Extremum) => None,
        (Some(a), Some(b), _) if a > 0.0 => Some(((b * b) / (a * a)).powf(1.0 / window as f64)),
        _ => None,
    };
    // §5.3's invariant: mass held plus mass in transfers not yet applied at their receiver.
    let (mut held_s, mut held_w, mut flying_w) = (0.0, 0.0, 0.0);
    for i in 0..p.nodes {
        let m = sim.machine(i);
        let Some(v) = m.mass(&qid) else { continue };
        held_s += v.s;
        held_w += v.w;
        for t in m.in_flight(&qid) {
            let applied = sim
                .index_of(&t.peer)
                .is_some_and(|j| sim.machine(j).has_applied(&qid, &m.id(), t.session, t.seq));
            if !applied {
                held_s += t.s;
                held_w += t.w;
                flying_w += t.w;
            }
        }
    }
    let mass_algorithm = p.algorithm != Algorithm::Extremum;
    let weight_mass = (mass_algorithm && w0 > 0.0).then(|| held_w / w0);
    let weight_in_flight = (mass_algorithm && w0 > 0.0).then(|| flying_w / w0);
    let value_mass = (mass_algorithm && s0 != 0.0).then(|| held_s / s0);
    let answer = watch.answer.clone();
    let rel_error = answer.as_ref().and_then(|a| a.value).map(|v| (v - truth).abs() / scale);
    RunResult {
        true_value: truth,
        rounds_to_1e3: first(&rel_sd, 1e-3),
        rounds_to_1e6: first(&rel_sd, 1e-6),
        rounds_worst_to_1e3: first(&worst, 1e-3),
        rounds_to_exact: first(&worst, 0.0),
        variance_factor,
        final_rel_error: worst.last().copied().flatten(),
        rel_sd,
        worst,
        answer,
        rel_error,
        msgs_per_node_per_round: watch.messages as f64 / (p.nodes as f64 * f64::from(p.rounds)),
        weight_mass,
        weight_in_flight,
        value_mass,
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

/// Mean of values that must all be present; `None` if any is missing (or there are none).
fn mean_all(xs: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let v: Option<Vec<f64>> = xs.collect();
    v.filter(|v| !v.is_empty()).map(|v| report::mean(&v))
}

/// `x` rounded to 4 significant digits (stable, short JSON).
fn sig(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    format!("{x:.3e}").parse().unwrap_or(x)
}

/// Geometric mean over runs of the t-th value; `None` if any run has none. Zeros give 0.
fn geo_per_round(series: &[&Vec<Option<f64>>]) -> Vec<Option<f64>> {
    let len = series.iter().map(|s| s.len()).min().unwrap_or(0);
    (0..len)
        .map(|t| {
            let v: Option<Vec<f64>> = series.iter().map(|s| s[t]).collect();
            let v = v?;
            if v.iter().any(|&x| x <= 0.0) {
                return Some(0.0);
            }
            Some(sig((v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp()))
        })
        .collect()
}

fn summarize(p: &Params, results: &[RunResult]) -> Report {
    let r4 = |x: Option<f64>| x.map(|x| report::round(x, 4));
    let factors: Vec<f64> = results.iter().filter_map(|r| r.variance_factor).collect();
    let all_factors = factors.len() == results.len();
    let fold = |f: fn(f64, f64) -> f64| factors.iter().copied().reduce(f);
    let rel: Vec<&Vec<Option<f64>>> = results.iter().map(|r| &r.rel_sd).collect();
    let worst: Vec<&Vec<Option<f64>>> = results.iter().map(|r| &r.worst).collect();
    Report {
        experiment: "aggregate",
        nodes: p.nodes,
        func: p.func,
        algorithm: p.algorithm,
        init: p.init,
        join: p.join,
        loss: p.loss,
        runs: p.runs,
        seed: p.seed,
        max_rounds: p.rounds,
        rounds_to_1e3: r4(mean_all(results.iter().map(|r| r.rounds_to_1e3.map(f64::from)))),
        rounds_to_1e6: r4(mean_all(results.iter().map(|r| r.rounds_to_1e6.map(f64::from)))),
        rounds_worst_to_1e3: r4(mean_all(results.iter().map(|r| r.rounds_worst_to_1e3.map(f64::from)))),
        rounds_to_exact: r4(mean_all(results.iter().map(|r| r.rounds_to_exact.map(f64::from)))),
        variance_factor: mean_all(results.iter().map(|r| r.variance_factor)).map(|x| report::round(x, 5)),
        variance_factor_min: fold(f64::min).filter(|_| all_factors).map(|x| report::round(x, 5)),
        variance_factor_max: fold(f64::max).filter(|_| all_factors).map(|x| report::round(x, 5)),
        final_rel_error: mean_all(results.iter().map(|r| r.final_rel_error)).map(sig),
        final_rel_error_max: mean_all(results.iter().map(|r| r.final_rel_error))
            .and(results.iter().filter_map(|r| r.final_rel_error).reduce(f64::max))
            .map(sig),
        rounds: r4(mean_all(results.iter().map(|r| r.answer.as_ref().map(|a| f64::from(a.rounds))))),
        converged_runs: results.iter().filter(|r| r.answer.as_ref().is_some_and(|a| a.converged)).count()
            as u64,
        value: mean_all(results.iter().map(|r| r.answer.as_ref().and_then(|a| a.value))).map(sig),
        true_value: sig(report::mean(&results.iter().map(|r| r.true_value).collect::<Vec<_>>())),
        rel_error: mean_all(results.iter().map(|r| r.rel_error)).map(sig),
        rel_error_max: mean_all(results.iter().map(|r| r.rel_error))
            .and(results.iter().filter_map(|r| r.rel_error).reduce(f64::max))
            .map(sig),
        msgs_per_node_per_round: report::round(
            report::mean(&results.iter().map(|r| r.msgs_per_node_per_round).collect::<Vec<_>>()),
            3,
        ),
        weight_mass: mean_all(results.iter().map(|r| r.weight_mass)).map(|x| report::round(x, 9)),
        weight_in_flight: mean_all(results.iter().map(|r| r.weight_in_flight)).map(sig),
        value_mass: mean_all(results.iter().map(|r| r.value_mass)).map(|x| report::round(x, 9)),
        anchor_rounds_to_1e6: anchor_rounds_to_1e6(p),
        anchor_variance_factor: (p.algorithm == Algorithm::PushPull).then_some(VARIANCE_FACTOR_THEORY),
        rel_sd_per_round: geo_per_round(&rel),
        worst_rel_error_per_round: geo_per_round(&worst),
        per_run: results
            .iter()
            .map(|r| RunSummary {
                rounds_to_1e3: r.rounds_to_1e3,
                rounds_to_1e6: r.rounds_to_1e6,
                variance_factor: r.variance_factor.map(|x| report::round(x, 5)),
                final_rel_error: r.final_rel_error.map(sig),
                rounds: r.answer.as_ref().map(|a| a.rounds),
                converged: r.answer.as_ref().is_some_and(|a| a.converged),
                value: r.answer.as_ref().and_then(|a| a.value).map(sig),
                true_value: sig(r.true_value),
            })
            .collect(),
    }
}

fn show(x: Option<f64>, digits: usize) -> String {
    x.map_or_else(|| "—".to_owned(), |x| format!("{x:.digits$}"))
}

fn show_e(x: Option<f64>) -> String {
    x.map_or_else(|| "—".to_owned(), |x| format!("{x:.2e}"))
}

/// A readable table of one report.
pub fn table(r: &Report) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "aggregate  {} by {}  N = {}  init = {}  join = {}  loss = {}  runs = {}  seed = {}  rounds = {}\n",
        r.func.name(),
        r.algorithm.name(),
        r.nodes,
        if r.init == Init::Peak { "peak" } else { "uniform" },
        if r.join == Join::All { "all" } else { "on-message" },
        r.loss,
        r.runs,
        r.seed,
        r.max_rounds
    ));
    let anchor = |a: Option<f64>, d: usize| a.map_or(String::new(), |a| format!("   anchor {a:.d$}"));
    s.push_str(&format!(
        "  variance factor per round   {}   (runs {} .. {}){}\n",
        show(r.variance_factor, 4),
        show(r.variance_factor_min, 4),
        show(r.variance_factor_max, 4),
        anchor(r.anchor_variance_factor, 4)
    ));
    s.push_str(&format!("  rounds to σ/|x̄| ≤ 1e-3      {}\n", show(r.rounds_to_1e3, 2)));
    s.push_str(&format!(
        "  rounds to σ/|x̄| ≤ 1e-6      {}{}\n",
        show(r.rounds_to_1e6, 2),
        anchor(r.anchor_rounds_to_1e6, 0)
    ));
    s.push_str(&format!("  rounds to worst ≤ 1e-3      {}\n", show(r.rounds_worst_to_1e3, 2)));
    if r.algorithm == Algorithm::Extremum {
        s.push_str(&format!("  rounds to every node exact  {}\n", show(r.rounds_to_exact, 2)));
    }
    s.push_str(&format!(
        "  final worst rel. error      {} (max over runs {})\n",
        show_e(r.final_rel_error),
        show_e(r.final_rel_error_max)
    ));
    s.push_str(&format!(
        "  querier answer              round {}   {}/{} converged   value {} (true {})   rel. error {} (max {})\n",
        show(r.rounds, 2),
        r.converged_runs,
        r.runs,
        show(r.value, 6),
        r.true_value,
        show_e(r.rel_error),
        show_e(r.rel_error_max)
    ));
    s.push_str(&format!("  messages per node per round {:.3}\n", r.msgs_per_node_per_round));
    if r.weight_mass.is_some() {
        s.push_str(&format!(
            "  mass / initial              weight {}   value {}   (weight in flight {})\n",
            show(r.weight_mass, 9),
            show(r.value_mass, 9),
            show_e(r.weight_in_flight)
        ));
    }
    s.push_str("  round  σ/|x̄| (geo. mean)  worst rel. error\n");
    for (t, (a, b)) in r.rel_sd_per_round.iter().zip(&r.worst_rel_error_per_round).enumerate() {
        s.push_str(&format!("  {t:>5}  {:>17}  {:>16}\n", show_e(*a), show_e(*b)));
    }
    s
}

/// Draw log10 of σ_t/|x̄| per round: a light line per run, for push-pull the 1/(2√e) slope
/// from the same start, then the geometric mean and the worst node's error in bold on top.
pub fn plot(p: &Params, results: &[RunResult], report: &Report, path: &Path) -> Result<(), String> {
    const FLOOR: f64 = -17.0;
    let log = |x: f64| if x > 0.0 { x.log10().max(FLOOR) } else { FLOOR };
    let line = |xs: &[Option<f64>]| -> Vec<(f64, f64)> {
        xs.iter().enumerate().filter_map(|(t, x)| x.map(|x| (t as f64, log(x)))).collect()
    };
    let mut series: Vec<Series> = results
        .iter()
        .map(|r| Series { name: String::new(), points: line(&r.rel_sd), emphasized: false })
        .collect();
    if let (Algorithm::PushPull, Some(Some(s0))) = (p.algorithm, report.rel_sd_per_round.first()) {
        let slope = 0.5 * VARIANCE_FACTOR_THEORY.log10();
        series.push(Series {
            name: "theory: variance × 1/(2√e) per cycle".into(),
            points: (0..=p.rounds)
                .map(|t| (f64::from(t), log(*s0) + slope * f64::from(t)))
                .filter(|&(_, y)| y >= FLOOR)
                .collect(),
            emphasized: true,
        });
    }
    series.push(Series {
        name: format!("σ/|x̄|, geometric mean of {} runs", p.runs),
        points: line(&report.rel_sd_per_round),
        emphasized: true,
    });
    series.push(Series {
        name: "worst node's relative error".into(),
        points: line(&report.worst_rel_error_per_round),
        emphasized: true,
    });
    let title = format!(
        "aggregate {} by {}, N = {}, init {}, loss = {}",
        p.func.name(),
        p.algorithm.name(),
        p.nodes,
        if p.init == Init::Peak { "peak" } else { "uniform" },
        p.loss
    );
    report::plot_lines(path, &title, "round (cycle)", "log10 relative error", &series)
}
