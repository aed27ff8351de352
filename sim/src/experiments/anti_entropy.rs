//! Experiment `anti-entropy`: rounds until one update reaches every node (PROTOCOLS.md §1.7).
//!
//! N nodes with full membership run the real [`AntiEntropy`] machine in sync timing (every
//! node's tick at k·T), zero latency and `Commit::AtRoundStart`, so the state a node passes
//! on in round r is its state at the start of round r. One update is written at a uniformly
//! random node before round 1; in every round **every** node, informed or not, opens one
//! exchange with a uniformly random other node. `rounds` is the first round at whose end all
//! N nodes hold the update.
//!
//! `--loss p` drops each exchange message independently with probability p (the experiment
//! treats exchange messages as lossy; the exchange timeout is half a round, so a broken
//! exchange never blocks the next round's).
//!
//! Anchors (mean rounds, no loss): push 17.96 / 23.80 / 29.25, pull 13.8 / 17.6 / 21.3,
//! push-pull 9.23 / 11.50 / 14.00 at N = 10^3 / 10^4 / 10^5 (Pittel: push log2 N + ln N + O(1);
//! Karp et al.: push-pull log3 N + O(ln ln N)).

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use hearsay_protocols::anti_entropy::{AeConfig, AeEvent, AeMode, AntiEntropy, Commit, Entry};
use hearsay_protocols::{
    Duration, Instant, Machine, PeerView, Rng, Seed, StreamId, Timing, TopicId, Transmit,
};
use serde::Serialize;

use crate::kernel::{Fate, Latency, NetConfig, Observer, Sim, node_ids};
use crate::report::{self, Progress, Series};

/// The round period (its value does not matter at zero latency; rounds are what is counted).
const PERIOD: Duration = Duration::from_secs(1);

/// The topic all nodes reconcile.
const TOPIC: TopicId = TopicId(1);

/// What to run.
#[derive(Clone, Debug)]
pub struct Params {
    /// Number of nodes N.
    pub nodes: usize,
    /// Exchange mode.
    pub mode: AeMode,
    /// Independent runs.
    pub runs: u64,
    /// Seed of run 0..runs.
    pub seed: u64,
    /// Per-message loss probability.
    pub loss: f64,
    /// Worker threads (0 = all cores).
    pub threads: usize,
    /// Give up a run after this many rounds.
    pub max_rounds: u64,
}

impl Params {
    /// Defaults for N nodes in `mode`: 20 runs, seed 1, no loss.
    pub fn new(nodes: usize, mode: AeMode) -> Self {
        Params { nodes, mode, runs: 20, seed: 1, loss: 0.0, threads: 0, max_rounds: 1_000 }
    }
}

/// One run's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    /// First round at whose end every node was informed (`max_rounds` if never).
    pub rounds: u64,
    /// True if every node was informed within `max_rounds`.
    pub complete: bool,
    /// Entries carried in deltas (update transmissions), over all nodes.
    pub transmissions: u64,
    /// Exchange messages sent (Syn, SynAck, Delta), over all nodes.
    pub messages: u64,
    /// Fraction of nodes informed at the end of each round (index 0 = before round 1).
    pub informed: Vec<f64>,
}

/// The experiment's report: one JSON line.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Always "anti-entropy".
    pub experiment: &'static str,
    /// N.
    pub nodes: usize,
    /// "push", "pull" or "push-pull".
    pub mode: AeMode,
    /// Per-message loss probability.
    pub loss: f64,
    /// Number of runs.
    pub runs: u64,
    /// Seed.
    pub seed: u64,
    /// Mean over runs of rounds to full coverage.
    pub rounds_mean: f64,
    /// Standard error of that mean.
    pub rounds_stderr: f64,
    /// Nearest-rank 99th percentile over runs.
    pub rounds_p99: f64,
    /// Fewest rounds of any run.
    pub rounds_min: u64,
    /// Most rounds of any run.
    pub rounds_max: u64,
    /// Update transmissions (entries carried in deltas) per node, mean over runs.
    pub transmissions_per_node: f64,
    /// Exchange messages per node, mean over runs.
    pub messages_per_node: f64,
    /// Runs that did not reach every node within the round limit.
    pub incomplete_runs: u64,
    /// Mean informed fraction after each round (runs that finished count as 1.0).
    pub informed_fraction_mean: Vec<f64>,
    /// The anchor for this mode at this N, when there is one.
    pub anchor_rounds_mean: Option<f64>,
    /// Per-run rounds, in run order.
    pub per_run_rounds: Vec<u64>,
}

/// The independently measured means the tests hold the simulator to.
pub fn anchor(mode: AeMode, nodes: usize) -> Option<f64> {
    let row = match mode {
        AeMode::Push => [17.96, 23.80, 29.25],
        AeMode::Pull => [13.8, 17.6, 21.3],
        AeMode::PushPull => [9.23, 11.50, 14.00],
        AeMode::Heads => return None,
    };
    match nodes {
        1_000 => Some(row[0]),
        10_000 => Some(row[1]),
        100_000 => Some(row[2]),
        _ => None,
    }
}

/// Counts first receipts and update transmissions as they happen.
struct Count {
    informed: usize,
    transmissions: u64,
    messages: u64,
}

impl Observer<AntiEntropy> for Count {
    fn on_event(&mut self, _now: Instant, _node: usize, event: AeEvent) {
        if matches!(event, AeEvent::Received { .. }) {
            self.informed += 1;
        }
    }
    fn on_send(
        &mut self,
        _: Instant,
        _: usize,
        _: Option<usize>,
        t: &Transmit<<AntiEntropy as Machine>::Message>,
        _: Fate,
    ) {
        self.messages += 1;
        use hearsay_protocols::anti_entropy::AeMessage::*;
        if let SynAck { delta, .. } | Delta { delta, .. } = &t.msg {
            self.transmissions += delta.len() as u64;
        }
    }
}

/// Build the simulation of run `run` (exposed for the replay test and the benchmark).
pub fn build(p: &Params, run: u64) -> Sim<AntiEntropy> {
    let config = Arc::new(AeConfig {
        mode: p.mode,
        interval: PERIOD,
        timeout: Duration::from_micros(PERIOD.as_micros() / 2),
        timing: Timing::Sync,
        commit: Commit::AtRoundStart,
        ..AeConfig::default()
    });
    let peers: PeerView = node_ids(p.seed, run, p.nodes).into_iter().collect();
    let net = NetConfig {
        latency: Latency::Zero,
        jitter: 0.0,
        loss: p.loss,
        stream_loss: true,
        stream_retransmit: false,
    };
    Sim::new(p.seed, run, p.nodes, net, move |init| {
        let mut m = AntiEntropy::new(init.id, config.clone(), &init.seed, init.now);
        m.subscribe(init.now, TOPIC);
        m.handle_peers(init.now, peers.clone());
        m
    })
}

/// Run one repetition.
pub fn run_once(p: &Params, run: u64) -> RunResult {
    let mut sim = build(p, run);
    let mut work = Rng::from_seed(Seed::derive(p.seed, "work", run, 0));
    let origin = work.index(p.nodes);
    let stream = StreamId { topic: TOPIC, origin: sim.id(origin) };
    let mut count = Count { informed: 1, transmissions: 0, messages: 0 };
    sim.call(origin, &mut count, |m, now| {
        m.insert(now, Entry::unsealed(stream, 1, Bytes::from_static(b"update")))
    });
    let n = p.nodes;
    let mut informed = vec![1.0 / n as f64];
    let mut rounds = 0;
    // Round k of the kernel covers [k·T, (k+1)·T); ticks of round r fire at r·T, r ≥ 1.
    sim.run_until(PERIOD_START, &mut count);
    while count.informed < n && rounds < p.max_rounds {
        rounds += 1;
        sim.run_until(Instant::from_micros((rounds + 1) * PERIOD.as_micros()), &mut count);
        informed.push(count.informed as f64 / n as f64);
    }
    RunResult {
        rounds,
        complete: count.informed == n,
        transmissions: count.transmissions,
        messages: count.messages,
        informed,
    }
}

/// Instant of round 1's ticks.
const PERIOD_START: Instant = Instant::from_micros(PERIOD.as_micros());

/// Run every repetition and summarize.
pub fn run(p: &Params, progress: &Progress) -> Report {
    run_with_results(p, progress).0
}

fn summarize(p: &Params, results: &[RunResult]) -> Report {
    let rounds: Vec<f64> = results.iter().map(|r| r.rounds as f64).collect();
    let n = p.nodes as f64;
    let longest = results.iter().map(|r| r.informed.len()).max().unwrap_or(0);
    let informed_fraction_mean = (0..longest)
        .map(|k| {
            let v: Vec<f64> = results.iter().map(|r| r.informed.get(k).copied().unwrap_or(1.0)).collect();
            report::round(report::mean(&v), 6)
        })
        .collect();
    Report {
        experiment: "anti-entropy",
        nodes: p.nodes,
        mode: p.mode,
        loss: p.loss,
        runs: p.runs,
        seed: p.seed,
        rounds_mean: report::round(report::mean(&rounds), 3),
        rounds_stderr: report::round(report::std_err(&rounds), 3),
        rounds_p99: report::percentile(&rounds, 99.0),
        rounds_min: results.iter().map(|r| r.rounds).min().unwrap_or(0),
        rounds_max: results.iter().map(|r| r.rounds).max().unwrap_or(0),
        transmissions_per_node: report::round(
            report::mean(&results.iter().map(|r| r.transmissions as f64 / n).collect::<Vec<_>>()),
            3,
        ),
        messages_per_node: report::round(
            report::mean(&results.iter().map(|r| r.messages as f64 / n).collect::<Vec<_>>()),
            3,
        ),
        incomplete_runs: results.iter().filter(|r| !r.complete).count() as u64,
        informed_fraction_mean,
        anchor_rounds_mean: anchor(p.mode, p.nodes),
        per_run_rounds: results.iter().map(|r| r.rounds).collect(),
    }
}

/// A readable table of one report.
pub fn table(r: &Report) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "anti-entropy  N = {}  mode = {}  loss = {}  runs = {}  seed = {}\n",
        r.nodes,
        mode_name(r.mode),
        r.loss,
        r.runs,
        r.seed
    ));
    s.push_str(&format!(
        "  rounds to full coverage   mean {:.2} (± {:.2})   min {}   p99 {}   max {}\n",
        r.rounds_mean, r.rounds_stderr, r.rounds_min, r.rounds_p99, r.rounds_max
    ));
    if let Some(a) = r.anchor_rounds_mean {
        s.push_str(&format!(
            "  anchor (issue)            mean {a:.2}   difference {:+.2}\n",
            r.rounds_mean - a
        ));
    }
    s.push_str(&format!(
        "  per node                  {:.2} update transmissions, {:.2} messages\n",
        r.transmissions_per_node, r.messages_per_node
    ));
    if r.incomplete_runs > 0 {
        s.push_str(&format!("  {} run(s) did not finish within the round limit\n", r.incomplete_runs));
    }
    s.push_str("  round  informed (mean over runs)\n");
    for (k, f) in r.informed_fraction_mean.iter().enumerate() {
        s.push_str(&format!("  {k:>5}  {f:.6}\n"));
    }
    s
}

/// The mode's command-line name.
pub fn mode_name(mode: AeMode) -> &'static str {
    match mode {
        AeMode::Push => "push",
        AeMode::Pull => "pull",
        AeMode::PushPull => "push-pull",
        AeMode::Heads => "heads",
    }
}

/// Draw the informed fraction per round: one light line per run, the mean in bold.
pub fn plot(p: &Params, results: &[RunResult], report: &Report, path: &Path) -> Result<(), String> {
    let mut series: Vec<Series> = results
        .iter()
        .map(|r| Series {
            name: String::new(),
            points: r.informed.iter().enumerate().map(|(k, f)| (k as f64, *f)).collect(),
            emphasized: false,
        })
        .collect();
    series.push(Series {
        name: format!("mean of {} runs", p.runs),
        points: report.informed_fraction_mean.iter().enumerate().map(|(k, f)| (k as f64, *f)).collect(),
        emphasized: true,
    });
    let title = format!("anti-entropy {}, N = {}, loss = {}", mode_name(p.mode), p.nodes, p.loss);
    report::plot_lines(path, &title, "round", "fraction of nodes informed", &series)
}

/// Run, keeping the per-run results for plotting.
pub fn run_with_results(p: &Params, progress: &Progress) -> (Report, Vec<RunResult>) {
    let results = report::parallel_runs(p.runs, report::threads(p.threads), progress, |r| run_once(p, r));
    (summarize(p, &results), results)
}
