//! Experiment `chord`: lookup path length on a Chord ring, and lookup success under churn
//! (PROTOCOLS.md §7.7).
//!
//! N nodes run the real [`Chord`] machine as a standalone ring ([`Detector::Standalone`]: no
//! SWIM; failures are found by missing `PredIs`, `RingPing` and lookup timeouts).
//!
//! - **Build.** `ideal` (default): every node joins from the full member table, which gives
//!   exactly the converged successor lists, predecessors and fingers. `protocol`: nodes join
//!   one by one, in a random order, every `join_gap` (500 ms: with much shorter gaps dozens of
//!   joiners land between two stabilize rounds and sort themselves out one stabilize round at
//!   a time, which takes minutes), each through a uniformly random node
//!   already on the ring (the paper's join), and the ring then runs stabilize / fix_fingers
//!   until every successor list, predecessor and finger equals the converged one (checked
//!   every second against the sorted id list).
//! - **Churn** (`--churn RATE`): node failures arrive as a Poisson process of RATE · N per
//!   minute (RATE = 0.01: 1% of the nodes fail each minute); each victim is a uniformly random
//!   live node; a fraction `leave_ratio` of departures are voluntary leaves (`LeaveHint`), the
//!   rest crashes. A departed node restarts after `downtime` with fresh state and joins again
//!   through a uniformly random ring member.
//! - **Lookups.** After `warmup` (churn runs, so that stabilization has run), `--lookups L`
//!   lookups start at uniformly random instants of a `window`, each from a uniformly random
//!   ring member for a uniformly random 64-bit key.
//!
//! Quantities: `hops` is the number of forwardings of an answered lookup (§7.7: 0 when its
//! origin resolves it; the final step to the successor is not a hop). A lookup **succeeds** if
//! it is answered with the key's true successor among the ring members (live nodes that have
//! joined) at the instant the answer arrives; wrong answers, lookups that failed after every
//! attempt, and lookups unanswered at the end of the run count against `lookup_success`;
//! lookups whose origin departed meanwhile are left out (`lookups_orphaned`). Hop statistics
//! pool the answered lookups of all runs.
//!
//! Anchors: mean hops ½·log2 N = 4.98 / 6.64 / 8.30 at N = 10^3 / 10^4 / 10^5 (the issue's
//! reference simulation measured 4.83 / 6.52 / 8.19, p99 8 / 10 / 13).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use hearsay_overlay::chord::{
    Chord, ChordConfig, ChordEvent, ChordMessage, Detector, FINGERS, LookupMode, RingId, RingNode,
    RingSnapshot,
};
use hearsay_protocols::{Duration, Instant, NodeId, Rng, Seed, Timing, Transmit};
use serde::Serialize;

use crate::kernel::{Fate, Fault, Latency, NetConfig, Observer, Sim, node_ids};
use crate::report::{self, Progress, Series};

/// How the ring is built before lookups start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Build {
    /// Every node joins from the full member table: converged at once.
    Ideal,
    /// Nodes join one by one through a member and stabilize until every finger is right.
    Protocol,
}

/// The network's latency profile (PROTOCOLS.md §9.5; `zero` is the default for `chord`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// Every message arrives at once.
    Zero,
    /// 0.1 ms + 1 ms × distance, × U[1, 1.1).
    Lan,
    /// 1 ms + 100 ms × distance, × U[1, 1.1).
    Wan,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Params {
    /// Number of nodes N.
    pub nodes: usize,
    /// Lookups per run.
    pub lookups: usize,
    /// Failures per node per minute.
    pub churn: f64,
    /// Fraction of departures that are voluntary leaves.
    pub leave_ratio: f64,
    /// How the ring is built.
    pub build: Build,
    /// Recursive or iterative lookups.
    pub mode: LookupMode,
    /// Successor-list entries compete with fingers as next hops (the ToN variant).
    pub route_via_successors: bool,
    /// Latency profile.
    pub latency: Profile,
    /// Independent runs.
    pub runs: u64,
    /// Seed of run 0..runs.
    pub seed: u64,
    /// Datagram loss probability.
    pub loss: f64,
    /// Worker threads (0 = all cores).
    pub threads: usize,
    /// Churn before the first measured lookup.
    pub warmup: Duration,
    /// Span over which the lookups start.
    pub window: Duration,
    /// How long a departed node stays down.
    pub downtime: Duration,
    /// Protocol build: time between two joins.
    pub join_gap: Duration,
    /// Protocol build: give up converging after this long past the last join.
    pub converge_limit: Duration,
}

impl Params {
    /// Defaults for N nodes: 3,000 lookups over 1 s on an ideal stable ring, recursive, zero
    /// latency, 1 run, seed 1; with churn, 60 s of warm-up and a 60 s window.
    pub fn new(nodes: usize) -> Self {
        Params {
            nodes,
            lookups: 3_000,
            churn: 0.0,
            leave_ratio: 0.0,
            build: Build::Ideal,
            mode: LookupMode::Recursive,
            route_via_successors: false,
            latency: Profile::Zero,
            runs: 1,
            seed: 1,
            loss: 0.0,
            threads: 0,
            warmup: Duration::ZERO,
            window: Duration::from_secs(1),
            downtime: Duration::from_secs(60),
            join_gap: Duration::from_millis(500),
            converge_limit: Duration::from_secs(600),
        }
    }

    /// The same with churn `rate` (failures per node per minute), 60 s of warm-up, 60 s window.
    pub fn with_churn(self, rate: f64) -> Self {
        Params { churn: rate, warmup: Duration::from_secs(60), window: Duration::from_secs(60), ..self }
    }
}

/// ½·log2 N, the anchor for mean hops.
pub fn anchor(nodes: usize) -> f64 {
    0.5 * (nodes as f64).log2()
}

/// The reference measurement (mean hops, p99) at 10^3, 10^4 and 10^5 nodes.
pub fn reference(nodes: usize) -> Option<(f64, f64)> {
    match nodes {
        1_000 => Some((4.83, 8.0)),
        10_000 => Some((6.52, 10.0)),
        100_000 => Some((8.19, 13.0)),
        _ => None,
    }
}

/// One run's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    /// Hops of every answered lookup, in answer order.
    #[serde(skip)]
    pub hops: Vec<u8>,
    /// Lookups started (origin on the ring).
    pub issued: u64,
    /// Answered with the true successor.
    pub correct: u64,
    /// Answered with another node.
    pub wrong: u64,
    /// Failed after every attempt.
    pub failed: u64,
    /// Still unanswered when the run ended.
    pub unfinished: u64,
    /// Left out: the origin departed before the answer.
    pub orphaned: u64,
    /// Crashes.
    pub crashes: u64,
    /// Voluntary leaves.
    pub leaves: u64,
    /// Joins retried after a join failed.
    pub join_retries: u64,
    /// Protocol build: seconds from the last join until every finger was right.
    pub converge_s: Option<f64>,
    /// Protocol build: the ring converged within the limit.
    pub converged: bool,
    /// Ring messages sent per node per simulated second.
    pub messages_per_node_per_s: f64,
}

/// The experiment's report: one JSON line.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Always "chord".
    pub experiment: &'static str,
    /// N.
    pub nodes: usize,
    /// Lookups per run.
    pub lookups: usize,
    /// Failures per node per minute.
    pub churn: f64,
    /// Fraction of departures that were voluntary leaves.
    pub leave_ratio: f64,
    /// "ideal" or "protocol".
    pub build: Build,
    /// "recursive" or "iterative".
    pub mode: LookupMode,
    /// Next hops: "fingers" (default) or "fingers+successors" (the ToN variant).
    pub route: &'static str,
    /// Latency profile.
    pub latency: Profile,
    /// Datagram loss probability.
    pub loss: f64,
    /// Number of runs.
    pub runs: u64,
    /// Seed.
    pub seed: u64,
    /// Seconds of churn before the first lookup.
    pub warmup_s: f64,
    /// Seconds over which lookups start.
    pub window_s: f64,
    /// Mean forwardings per answered lookup, all runs pooled.
    pub hops_mean: f64,
    /// Standard error of the per-run means.
    pub hops_stderr: f64,
    /// Median hops.
    pub hops_p50: f64,
    /// Nearest-rank 99th percentile of hops.
    pub hops_p99: f64,
    /// Most hops of any lookup.
    pub hops_max: f64,
    /// Fraction of lookups (orphans excluded) answered with the true successor.
    pub lookup_success: f64,
    /// Lookups started, all runs.
    pub lookups_issued: u64,
    /// Answered with a wrong node, all runs.
    pub lookups_wrong: u64,
    /// Failed after every attempt, all runs.
    pub lookups_failed: u64,
    /// Unanswered at the end, all runs.
    pub lookups_unfinished: u64,
    /// Origin departed before the answer, all runs.
    pub lookups_orphaned: u64,
    /// Crashes plus leaves, all runs.
    pub departures: u64,
    /// Ring messages per node per simulated second, mean over runs.
    pub messages_per_node_per_s: f64,
    /// Protocol build: mean seconds from the last join to a fully converged ring.
    pub converge_s_mean: Option<f64>,
    /// Protocol build: runs that did not converge within the limit.
    pub unconverged_runs: u64,
    /// ½·log2 N.
    pub anchor_hops_mean: f64,
    /// The reference mean and p99 at this N, if measured there.
    pub reference_hops_mean: Option<f64>,
    /// The reference p99.
    pub reference_hops_p99: Option<f64>,
    /// Fraction of answered lookups with h hops, h = 0, 1, ….
    pub hops_pmf: Vec<f64>,
    /// Per-run results, in run order.
    pub per_run: Vec<RunResult>,
}

/// Watches the run: ring membership as the oracle, lookup outcomes, message counts.
struct Watch {
    rings: Vec<RingId>,
    /// Ring members (up and joined): RingId → node index.
    members: BTreeMap<RingId, usize>,
    member: Vec<bool>,
    /// Outstanding lookups: (origin, request id) → key.
    outstanding: BTreeMap<(usize, u64), RingId>,
    /// A lookup being started: its origin and key (it may be answered before its id is known).
    starting: Option<(usize, RingId, Option<u64>)>,
    result: RunResult,
    joined: Vec<usize>,
    join_failed: Vec<usize>,
    messages: u64,
}

impl Watch {
    fn new(rings: Vec<RingId>) -> Self {
        let n = rings.len();
        Watch {
            rings,
            members: BTreeMap::new(),
            member: vec![false; n],
            outstanding: BTreeMap::new(),
            starting: None,
            result: RunResult {
                hops: Vec::new(),
                issued: 0,
                correct: 0,
                wrong: 0,
                failed: 0,
                unfinished: 0,
                orphaned: 0,
                crashes: 0,
                leaves: 0,
                join_retries: 0,
                converge_s: None,
                converged: false,
                messages_per_node_per_s: 0.0,
            },
            joined: Vec::new(),
            join_failed: Vec::new(),
            messages: 0,
        }
    }

    fn add_member(&mut self, i: usize) {
        if !self.member[i] {
            self.member[i] = true;
            self.members.insert(self.rings[i], i);
            self.joined.push(i);
        }
    }

    fn remove_member(&mut self, i: usize) {
        if self.member[i] {
            self.member[i] = false;
            self.members.remove(&self.rings[i]);
        }
        let gone: Vec<(usize, u64)> =
            self.outstanding.range((i, 0)..=(i, u64::MAX)).map(|(k, _)| *k).collect();
        for k in gone {
            self.outstanding.remove(&k);
            self.result.orphaned += 1;
        }
    }

    /// The true successor of `key` among the ring members.
    fn successor(&self, key: RingId) -> Option<usize> {
        self.members.range(key..).next().or_else(|| self.members.iter().next()).map(|(_, &i)| i)
    }

    fn answered(&mut self, key: RingId, node: RingNode, hops: u8) {
        self.result.hops.push(hops);
        let truth = self.successor(key).map(|i| self.rings[i]);
        if truth == Some(node.ring) {
            self.result.correct += 1;
        } else {
            self.result.wrong += 1;
        }
    }
}

impl Observer<Chord> for Watch {
    fn on_event(&mut self, _now: Instant, node: usize, event: ChordEvent) {
        match event {
            ChordEvent::Joined => self.add_member(node),
            ChordEvent::JoinFailed { .. } => self.join_failed.push(node),
            ChordEvent::LookupDone { id, key, node: answer, hops, .. } => {
                if self.outstanding.remove(&(node, id)).is_some() {
                    self.answered(key, answer, hops);
                } else if let Some((origin, k, None)) = self.starting.filter(|s| s.0 == node) {
                    // Answered inside `lookup` itself (resolved locally).
                    self.starting = Some((origin, k, Some(id)));
                    self.answered(key, answer, hops);
                }
            }
            ChordEvent::LookupFailed { id, .. } if self.outstanding.remove(&(node, id)).is_some() => {
                self.result.failed += 1;
            }
            _ => {}
        }
    }

    fn on_send(&mut self, _: Instant, _: usize, _: Option<usize>, _: &Transmit<ChordMessage>, _: Fate) {
        self.messages += 1;
    }

    fn on_fault(&mut self, _now: Instant, fault: &Fault) {
        if let Fault::Crash(i) = fault {
            self.remove_member(*i);
        }
    }
}

enum Action {
    Depart,
    Restart(usize),
    Rejoin(usize),
    Lookup,
}

fn net_config(p: &Params) -> NetConfig {
    let (latency, jitter) = match p.latency {
        Profile::Zero => (Latency::Zero, 0.0),
        Profile::Lan => (Latency::LAN, 0.1),
        Profile::Wan => (Latency::WAN, 0.1),
    };
    NetConfig { latency, jitter, loss: p.loss, stream_loss: false, stream_retransmit: false }
}

/// The ring's settings in this experiment: §10.7 defaults, standalone failure detection.
pub fn config(p: &Params) -> ChordConfig {
    ChordConfig {
        detector: Detector::Standalone,
        lookup_mode: p.mode,
        timing: Timing::Phased,
        route_via_successors: p.route_via_successors,
        ..ChordConfig::default()
    }
}

/// Build the simulation of run `run` (exposed for tests).
pub fn build(p: &Params, run: u64) -> (Sim<Chord>, Arc<RingSnapshot>) {
    let ids = node_ids(p.seed, run, p.nodes);
    let snapshot = Arc::new(RingSnapshot::new(ids));
    let config = Arc::new(config(p));
    let ideal = p.build == Build::Ideal;
    let snap = snapshot.clone();
    let sim = Sim::new(p.seed, run, p.nodes, net_config(p), move |init| {
        let mut m = Chord::new(init.id, config.clone(), &init.seed, init.now);
        if ideal && init.restarts == 0 {
            // A RingId collision (probability ~N²/2^65) leaves that node off the ring.
            let _ = m.join_from_members(init.now, &snap);
        }
        m
    });
    (sim, snapshot)
}

/// True if every up node's successor list, predecessor and fingers equal the converged ones.
pub fn converged(sim: &Sim<Chord>, snapshot: &RingSnapshot) -> bool {
    (0..sim.len()).all(|i| {
        let m = sim.machine(i);
        let me = m.node();
        let r = m.config().successor_list_len;
        m.is_joined()
            && m.successors() == snapshot.successors_of(&me, r).as_slice()
            && m.predecessor() == snapshot.predecessors_of(&me, 1).first().copied()
            && (0..FINGERS).all(|k| m.finger(k) == snapshot.finger_of(&me, k))
    })
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// Run one repetition.
pub fn run_once(p: &Params, run: u64) -> RunResult {
    let (mut sim, snapshot) = build(p, run);
    let mut work = Rng::from_seed(Seed::derive(p.seed, "work", run, 0));
    let ids: Vec<NodeId> = (0..p.nodes).map(|i| sim.id(i)).collect();
    let mut watch = Watch::new(ids.iter().map(RingId::of).collect());
    let mut t0 = Instant::ZERO;
    match p.build {
        Build::Ideal => {
            for i in 0..p.nodes {
                if sim.machine(i).is_joined() {
                    watch.add_member(i);
                }
            }
        }
        Build::Protocol => {
            let mut order: Vec<usize> = (0..p.nodes).collect();
            work.shuffle(&mut order);
            sim.call(order[0], &mut watch, |m, now| m.create(now).ok());
            for (k, &i) in order.iter().enumerate().skip(1) {
                sim.run_until(Instant::ZERO + p.join_gap * k as u64, &mut watch);
                let bootstrap = watch.joined[work.index(watch.joined.len())];
                let b = ids[bootstrap];
                sim.call(i, &mut watch, move |m, now| m.join_via(now, b).ok());
                retry_failed_joins(&mut sim, &mut watch, &mut work, &ids);
            }
            let last = sim.now();
            let limit = last + p.converge_limit;
            while sim.now() < limit {
                let next = sim.now() + Duration::from_secs(1);
                sim.run_until(next, &mut watch);
                retry_failed_joins(&mut sim, &mut watch, &mut work, &ids);
                if converged(&sim, &snapshot) {
                    watch.result.converged = true;
                    watch.result.converge_s = Some(report::round((sim.now() - last).as_secs_f64(), 3));
                    break;
                }
            }
            t0 = sim.now();
        }
    }
    let messages_before = watch.messages;
    // The workload: departures (Poisson), lookups (uniform in the window), in time order.
    let mut actions: BTreeMap<(Instant, u64), Action> = BTreeMap::new();
    let mut seq = 0u64;
    let mut push = |actions: &mut BTreeMap<(Instant, u64), Action>, at: Instant, a: Action| {
        actions.insert((at, seq), a);
        seq += 1;
    };
    let measure_from = t0 + p.warmup;
    let end = measure_from + p.window;
    if p.churn > 0.0 {
        let per_s = p.churn * p.nodes as f64 / 60.0;
        let mut t = t0 + secs(work.exp(1.0 / per_s));
        while t < end {
            push(&mut actions, t, Action::Depart);
            t += secs(work.exp(1.0 / per_s));
        }
    }
    for _ in 0..p.lookups {
        let at = measure_from + secs(work.unit() * p.window.as_secs_f64());
        push(&mut actions, at, Action::Lookup);
    }
    let mut up = vec![true; p.nodes];
    while let Some(((at, _), action)) = actions.pop_first() {
        sim.run_until(at, &mut watch);
        for i in std::mem::take(&mut watch.join_failed) {
            watch.result.join_retries += 1;
            push(&mut actions, at + Duration::from_secs(1), Action::Rejoin(i));
        }
        match action {
            Action::Depart => {
                let Some(victim) = pick(&mut work, &up) else { continue };
                up[victim] = false;
                if work.chance(p.leave_ratio) && sim.machine(victim).is_joined() {
                    sim.call(victim, &mut watch, |m, now| m.leave(now).ok());
                    watch.result.leaves += 1;
                } else {
                    watch.result.crashes += 1;
                }
                watch.remove_member(victim);
                sim.schedule_fault(at, Fault::Crash(victim));
                push(&mut actions, at + p.downtime, Action::Restart(victim));
            }
            Action::Restart(i) | Action::Rejoin(i) => {
                if matches!(action, Action::Restart(_)) {
                    sim.schedule_fault(at, Fault::Restart(i));
                    up[i] = true;
                } else if !up[i] || watch.member[i] {
                    continue;
                }
                let Some(b) = pick(&mut work, &watch.member) else { continue };
                let b = ids[b];
                sim.schedule_call(at, i, move |m, now| {
                    let _ = m.join_via(now, b);
                });
            }
            Action::Lookup => {
                let Some(origin) = pick(&mut work, &watch.member) else { continue };
                let key = RingId(work.next_u64());
                watch.starting = Some((origin, key, None));
                let id = sim.call(origin, &mut watch, |m, now| m.lookup(now, key).ok());
                let started = watch.starting.take();
                if let Some(id) = id {
                    watch.result.issued += 1;
                    if started.is_none_or(|s| s.2 != Some(id)) {
                        watch.outstanding.insert((origin, id), key);
                    }
                }
            }
        }
    }
    // Let the last lookups finish (every attempt times out within attempts × timeout), and no
    // longer: the message rate is over the workload's span.
    let cfg = config(p);
    let drain = cfg.lookup_timeout * u64::from(cfg.lookup_attempts) + Duration::from_secs(2);
    let deadline = end.max(sim.now()) + drain;
    sim.run_until(end.max(sim.now()), &mut watch);
    while !watch.outstanding.is_empty() && sim.now() < deadline {
        let next = (sim.now() + Duration::from_millis(100)).min(deadline);
        sim.run_until(next, &mut watch);
    }
    watch.result.unfinished = watch.outstanding.len() as u64;
    let span = (sim.now() - t0).as_secs_f64().max(1e-9);
    watch.result.messages_per_node_per_s =
        report::round((watch.messages - messages_before) as f64 / p.nodes as f64 / span, 3);
    watch.result
}

fn retry_failed_joins(sim: &mut Sim<Chord>, watch: &mut Watch, work: &mut Rng, ids: &[NodeId]) {
    for i in std::mem::take(&mut watch.join_failed) {
        watch.result.join_retries += 1;
        if let Some(b) = pick(work, &watch.member) {
            let b = ids[b];
            sim.call(i, watch, move |m, now| m.join_via(now, b).ok());
        }
    }
}

/// A uniformly random index whose flag is set (rejection sampling; `None` if none is).
fn pick(work: &mut Rng, flags: &[bool]) -> Option<usize> {
    if !flags.iter().any(|&f| f) {
        return None;
    }
    loop {
        let i = work.index(flags.len());
        if flags[i] {
            return Some(i);
        }
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

fn summarize(p: &Params, results: &[RunResult]) -> Report {
    let hops: Vec<f64> = results.iter().flat_map(|r| r.hops.iter().map(|&h| f64::from(h))).collect();
    let per_run_means: Vec<f64> = results
        .iter()
        .filter(|r| !r.hops.is_empty())
        .map(|r| r.hops.iter().map(|&h| f64::from(h)).sum::<f64>() / r.hops.len() as f64)
        .collect();
    let sum = |f: fn(&RunResult) -> u64| results.iter().map(f).sum::<u64>();
    let (issued, correct, orphaned) = (sum(|r| r.issued), sum(|r| r.correct), sum(|r| r.orphaned));
    let counted = issued.saturating_sub(orphaned);
    let max = hops.iter().copied().fold(0.0, f64::max);
    let mut pmf = vec![0.0; max as usize + 1];
    for &h in &hops {
        pmf[h as usize] += 1.0;
    }
    let pmf = pmf.into_iter().map(|c| report::round(c / hops.len().max(1) as f64, 6)).collect();
    let converge: Vec<f64> = results.iter().filter_map(|r| r.converge_s).collect();
    Report {
        experiment: "chord",
        nodes: p.nodes,
        lookups: p.lookups,
        churn: p.churn,
        leave_ratio: p.leave_ratio,
        build: p.build,
        mode: p.mode,
        route: if p.route_via_successors { "fingers+successors" } else { "fingers" },
        latency: p.latency,
        loss: p.loss,
        runs: p.runs,
        seed: p.seed,
        warmup_s: p.warmup.as_secs_f64(),
        window_s: p.window.as_secs_f64(),
        hops_mean: report::round(report::mean(&hops), 3),
        hops_stderr: report::round(report::std_err(&per_run_means), 3),
        hops_p50: report::percentile(&hops, 50.0),
        hops_p99: report::percentile(&hops, 99.0),
        hops_max: max,
        lookup_success: if counted == 0 { 0.0 } else { report::round(correct as f64 / counted as f64, 6) },
        lookups_issued: issued,
        lookups_wrong: sum(|r| r.wrong),
        lookups_failed: sum(|r| r.failed),
        lookups_unfinished: sum(|r| r.unfinished),
        lookups_orphaned: orphaned,
        departures: sum(|r| r.crashes + r.leaves),
        messages_per_node_per_s: report::round(
            report::mean(&results.iter().map(|r| r.messages_per_node_per_s).collect::<Vec<_>>()),
            3,
        ),
        converge_s_mean: (p.build == Build::Protocol && !converge.is_empty())
            .then(|| report::round(report::mean(&converge), 3)),
        unconverged_runs: if p.build == Build::Protocol {
            results.iter().filter(|r| !r.converged).count() as u64
        } else {
            0
        },
        anchor_hops_mean: report::round(anchor(p.nodes), 3),
        reference_hops_mean: reference(p.nodes).map(|r| r.0),
        reference_hops_p99: reference(p.nodes).map(|r| r.1),
        hops_pmf: pmf,
        per_run: results.to_vec(),
    }
}

fn name<T: Serialize>(x: &T) -> String {
    serde_json::to_value(x).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// A readable table of one report.
pub fn table(r: &Report) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "chord  N = {}  build = {}  mode = {}  route = {}  latency = {}  churn = {}/node/min  loss = {}  runs = {}  seed = {}\n",
        r.nodes,
        name(&r.build),
        name(&r.mode),
        r.route,
        name(&r.latency),
        r.churn,
        r.loss,
        r.runs,
        r.seed
    ));
    s.push_str(&format!(
        "  hops (forwardings)   mean {:.3} (± {:.3})   p50 {}   p99 {}   max {}\n",
        r.hops_mean, r.hops_stderr, r.hops_p50, r.hops_p99, r.hops_max
    ));
    s.push_str(&format!(
        "  anchor ½·log2 N      {:.3}   difference {:+.3}\n",
        r.anchor_hops_mean,
        r.hops_mean - r.anchor_hops_mean
    ));
    if let (Some(m), Some(p99)) = (r.reference_hops_mean, r.reference_hops_p99) {
        s.push_str(&format!("  reference (issue)    mean {m:.2}   p99 {p99}\n"));
    }
    s.push_str(&format!(
        "  lookups              {} issued, success {:.4}%   wrong {}   failed {}   unfinished {}   orphaned {}\n",
        r.lookups_issued,
        100.0 * r.lookup_success,
        r.lookups_wrong,
        r.lookups_failed,
        r.lookups_unfinished,
        r.lookups_orphaned
    ));
    if r.churn > 0.0 {
        s.push_str(&format!(
            "  churn                {} departures, warm-up {} s, window {} s\n",
            r.departures, r.warmup_s, r.window_s
        ));
    }
    if let Some(c) = r.converge_s_mean {
        s.push_str(&format!("  protocol build       converged {c:.1} s after the last join (mean)\n"));
    }
    if r.unconverged_runs > 0 {
        s.push_str(&format!("  {} run(s) did not converge within the limit\n", r.unconverged_runs));
    }
    s.push_str(&format!("  ring messages        {:.2} per node per second\n", r.messages_per_node_per_s));
    s.push_str("  hops  fraction of lookups\n");
    for (h, f) in r.hops_pmf.iter().enumerate() {
        s.push_str(&format!("  {h:>4}  {f:.4}\n"));
    }
    s
}

/// Draw the distribution of hops: one light line per run, all runs pooled in bold.
pub fn plot(p: &Params, results: &[RunResult], report: &Report, path: &Path) -> Result<(), String> {
    let pmf = |hops: &[u8]| -> Vec<(f64, f64)> {
        let max = hops.iter().copied().max().unwrap_or(0) as usize;
        let mut c = vec![0.0; max + 1];
        for &h in hops {
            c[h as usize] += 1.0;
        }
        c.iter().enumerate().map(|(h, n)| (h as f64, n / hops.len().max(1) as f64)).collect()
    };
    let mut series: Vec<Series> = if results.len() > 1 {
        results
            .iter()
            .map(|r| Series { name: String::new(), points: pmf(&r.hops), emphasized: false })
            .collect()
    } else {
        Vec::new()
    };
    series.push(Series {
        name: format!(
            "{} runs pooled: mean {:.2} hops (½·log2 N = {:.2})",
            p.runs,
            report.hops_mean,
            anchor(p.nodes)
        ),
        points: report.hops_pmf.iter().enumerate().map(|(h, f)| (h as f64, *f)).collect(),
        emphasized: true,
    });
    let title = format!(
        "chord lookup hops, N = {}, {} build, churn {}/node/min, success {:.2}%",
        p.nodes,
        name(&p.build),
        p.churn,
        100.0 * report.lookup_success
    );
    report::plot_lines(path, &title, "hops (forwardings)", "fraction of lookups", &series)
}
