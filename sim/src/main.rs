//! `hearsay-sim`: run hearsay's protocol machines at scale, deterministically by seed.
//!
//! Every experiment prints progress on stderr and its result last on stdout: one JSON line
//! with `--json`, a readable table without. See `hearsay-sim <experiment> --help`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use hearsay_overlay::chord::LookupMode;
use hearsay_overlay::swim::Lifeguard;
use hearsay_protocols::Duration;
use hearsay_protocols::Timing;
use hearsay_protocols::aggregate::{Algorithm, Func};
use hearsay_protocols::anti_entropy::AeMode;
use hearsay_protocols::rumor::{Direction, Variant};
use hearsay_sim::experiments::{
    aggregate, anti_entropy, bench, chord, cluster, flood_vs_gossip, fuzz, pbcast, rumor, scribe, swim,
};
use hearsay_sim::report::Progress;

#[derive(Parser)]
#[command(name = "hearsay-sim", version, about = "Deterministic simulator for hearsay's gossip protocols")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Rounds for one update to reach every node by anti-entropy (Demers et al. 1987).
    ///
    /// Every round, every node exchanges with one uniformly random other node; state is
    /// judged at the start of the round. Prints rounds to full coverage (mean, p99, max) and
    /// update transmissions per node, beside the published anchors.
    AntiEntropy(AntiEntropyArgs),
    /// Residue, traffic and delay of rumor mongering (Demers et al. 1987 §1.4).
    ///
    /// One rumor injected at one node; hot nodes contact random peers and lose interest by
    /// the chosen rule (feedback or blind, counter or coin, k). Prints residue (fraction never
    /// reached), traffic (rumor messages per node), t_ave and t_last per k, beside the residue
    /// formula s = e^-(k+1)(1-s) (feedback coin push) and Demers' table (N = 1000, rounds).
    Rumor(RumorArgs),
    /// Flooding with a TTL against blind counter rumor mongering (B, F) over a random or
    /// power-law graph (Portmann & Seneviratne 2002).
    ///
    /// Prints messages per node, coverage and rounds (time of the last first delivery, in
    /// hops) for both, their ratios, and the seed's claims (B = F = 2: about half the
    /// messages, about 90% coverage, about twice as slow).
    FloodVsGossip(FloodArgs),
    /// Gossip aggregation (Kempe et al. 2003; Jelasity et al. 2005): convergence and mass
    /// conservation of push-sum, acknowledged push-sum, push-pull averaging and extremum gossip.
    ///
    /// Node 0 queries avg, sum, count, min or max of a value every node holds. Prints the
    /// per-round variance factor, rounds until σ/|x̄| ≤ 1e-3 and 1e-6, the worst node's final
    /// relative error, the querier's answer by the stopping rule, and the weight mass left,
    /// beside the published anchors (push-pull from a peak: factor 1/(2√e), 29/31/33 rounds
    /// to 1e-6 at N = 10^3/10^4/10^5).
    Aggregate(AggregateArgs),
    /// Bimodal multicast (Birman et al. 1999): delivery ratio, atomicity and latency modes.
    ///
    /// Every node is a member of one topic; one message per round is published by a random
    /// node, multicast unreliably in phase one and repaired by digest gossip in phase two.
    /// Prints the delivery ratio, the atomicity histogram and bimodality, and the latency of
    /// first-phase and repaired deliveries, beside the anchors.
    Pbcast(PbcastArgs),
    /// Speed and memory of the simulator kernel: events per second for a trivial machine,
    /// bytes per simulated anti-entropy node.
    Bench(BenchArgs),
    /// The full stack: N Engines (every machine of the daemon, through encoded frames) under
    /// loss, crashes and a partition. Prints delivery ratio, explicit gaps, silent losses (which
    /// must be 0), latency, bytes and messages per delivered message, and memory per node.
    Cluster(ClusterArgs),
    /// Lookup hops on a Chord ring, and lookup success under churn (Stoica et al. 2001).
    ///
    /// Builds a ring of N nodes (ideal: from the member table; protocol: joins one by one and
    /// stabilizes until every finger is right), optionally churns it, then runs lookups from
    /// random nodes for random keys. Prints hops (forwardings only: a lookup resolved at its
    /// origin is 0 hops) beside ½·log2 N, and the fraction of lookups answered with the true
    /// successor.
    Chord(ChordArgs),
    /// SWIM failure detection with Lifeguard (Das et al. 2002; Dadgar et al. 2018).
    ///
    /// N nodes with a converged table, LAN defaults and latency. Detection: C nodes crash at
    /// random period boundaries after a 10-period warm-up; prints the mean first detection
    /// (crash to first failed probe, in periods) with aligned and with random phases, full
    /// dissemination, and the message load per member per period. With --slow S, also the
    /// slow-node scenario (stalls of U[5,25] periods) with the Lifeguard setting and the
    /// baseline: false positives on healthy and on slow targets, and their ratio.
    Swim(SwimArgs),
    /// Scribe topic trees over the Chord ring, with bimodal multicast repairing what the trees
    /// lose (Castro et al. 2002).
    ///
    /// Every node runs the ring, the trees and pbcast; each topic gets --group-size random
    /// members, who subscribe at once; once they are on their trees each topic gets
    /// --messages messages from random members, one per second. Prints tree depth beside
    /// log2 N, the relative delay penalty against direct unicast, link and node stress, the
    /// delivery ratio by the tree alone and with repair (anchor 0.9999), and the tree's
    /// control messages per node.
    Scribe(ScribeArgs),
    /// Hostile and broken frames at volume (issue 12): random and mutated-valid frames of
    /// every protocol's messages, from fake members, into a small cluster of Engines.
    ///
    /// Each frame runs under catch_unwind; prints the panics (0 is the claim), the largest
    /// state the honest Engines accounted for, and whether the honest members still deliver
    /// each other's messages at the end.
    Fuzz(FuzzArgs),
}

/// Options every experiment takes.
#[derive(Args, Clone)]
struct Common {
    /// Independent runs (each seeded from --seed and its run number).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    runs: u64,
    /// Seed: the same seed and arguments give the same output, byte for byte.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Probability that each message is lost, in [0, 1).
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    loss: f64,
    /// Print one JSON line instead of a table.
    #[arg(long)]
    json: bool,
    /// Also draw the result as an SVG plot into this file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Worker threads for parallel runs (0 = one per core). Does not change results.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct AntiEntropyArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(2..=10_000_000))]
    nodes: u64,
    /// Exchange mode.
    #[arg(long, value_enum, default_value_t = ModeArg::PushPull)]
    mode: ModeArg,
    #[command(flatten)]
    common: Common,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Push,
    Pull,
    PushPull,
}

impl From<ModeArg> for AeMode {
    fn from(m: ModeArg) -> AeMode {
        match m {
            ModeArg::Push => AeMode::Push,
            ModeArg::Pull => AeMode::Pull,
            ModeArg::PushPull => AeMode::PushPull,
        }
    }
}

#[derive(Args)]
struct RumorArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(2..=10_000_000))]
    nodes: u64,
    /// Loss-of-interest rule.
    #[arg(long, value_enum, default_value_t = VariantArg::FeedbackCounter)]
    variant: VariantArg,
    /// k (counter limit, or 1/probability of the coin): one value, or a sweep like 1..7.
    #[arg(long, default_value = "3", value_parser = k_range)]
    k: KRange,
    /// Who sends rumors in a contact.
    #[arg(long, value_enum, default_value_t = DirectionArg::Push)]
    mode: DirectionArg,
    /// Partners contacted per tick.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    fanout: u32,
    /// Lock-step rounds (state judged at the start of the round) or continuous time (Poisson
    /// clocks, one contact at a time).
    #[arg(long, value_enum, default_value_t = TimingArg::Rounds)]
    timing: TimingArg,
    /// Give up a run after this many cycles.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_rounds: u64,
    #[command(flatten)]
    common: Common,
}

#[derive(Clone, Copy, ValueEnum)]
enum VariantArg {
    FeedbackCoin,
    FeedbackCounter,
    BlindCoin,
    BlindCounter,
}

impl From<VariantArg> for Variant {
    fn from(v: VariantArg) -> Variant {
        match v {
            VariantArg::FeedbackCoin => Variant::FeedbackCoin,
            VariantArg::FeedbackCounter => Variant::FeedbackCounter,
            VariantArg::BlindCoin => Variant::BlindCoin,
            VariantArg::BlindCounter => Variant::BlindCounter,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum DirectionArg {
    Push,
    Pull,
    PushPull,
}

impl From<DirectionArg> for Direction {
    fn from(d: DirectionArg) -> Direction {
        match d {
            DirectionArg::Push => Direction::Push,
            DirectionArg::Pull => Direction::Pull,
            DirectionArg::PushPull => Direction::PushPull,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum TimingArg {
    Rounds,
    Async,
}

impl From<TimingArg> for rumor::RumorTiming {
    fn from(t: TimingArg) -> rumor::RumorTiming {
        match t {
            TimingArg::Rounds => rumor::RumorTiming::Rounds,
            TimingArg::Async => rumor::RumorTiming::Async,
        }
    }
}

/// k values: `K` or `A..B` (inclusive).
#[derive(Clone, Copy, Debug)]
struct KRange(u32, u32);

fn k_range(s: &str) -> Result<KRange, String> {
    let one = |t: &str| -> Result<u32, String> {
        match t.trim().parse::<u32>() {
            Ok(k) if (1..=1_000).contains(&k) => Ok(k),
            _ => Err(format!("`{t}` is not a k in 1..=1000")),
        }
    };
    match s.split_once("..") {
        Some((a, b)) => {
            let (a, b) = (one(a)?, one(b.trim_start_matches('='))?);
            if a <= b { Ok(KRange(a, b)) } else { Err(format!("empty k range {a}..{b}")) }
        }
        None => one(s).map(|k| KRange(k, k)),
    }
}

#[derive(Args)]
struct FloodArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(10..=10_000_000))]
    nodes: u64,
    /// Graph: uniform random with N·degree/2 edges, or Barabási–Albert (m = degree/2).
    #[arg(long, value_enum, default_value_t = GraphArg::Random)]
    graph: GraphArg,
    /// Mean degree (default 8 for random, 6 for power-law; even for power-law).
    #[arg(long, value_parser = clap::value_parser!(u32).range(2..=1000))]
    degree: Option<u32>,
    /// B: neighbours per forwarding.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1000))]
    b: u32,
    /// F: receptions that trigger forwarding.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1000))]
    f: u32,
    /// Flooding's TTL, in hops.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u8).range(1..))]
    ttl: u8,
    #[command(flatten)]
    common: Common,
}

#[derive(Clone, Copy, ValueEnum)]
enum GraphArg {
    Random,
    PowerLaw,
}

#[derive(Args)]
struct AggregateArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(2..=10_000_000))]
    nodes: u64,
    /// The aggregate node 0 asks for.
    #[arg(long = "fn", value_enum, default_value_t = FnArg::Avg)]
    func: FnArg,
    /// How it is computed [default: ack-push-sum for avg/sum/count, extremum for min/max].
    #[arg(long, value_enum)]
    algorithm: Option<AlgorithmArg>,
    /// Initial values: `peak` = N at node 0 and 0 elsewhere; `uniform` = U[0, 1) per node.
    #[arg(long, value_enum, default_value_t = InitArg::Peak)]
    init: InitArg,
    /// Who joins before round 1: `all` (announcement complete) or only the querier, the rest
    /// on their first aggregation message.
    #[arg(long, value_enum, default_value_t = JoinArg::All)]
    join: JoinArg,
    /// Rounds (push-pull: cycles) to simulate; also the query's max_rounds.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    rounds: u32,
    #[command(flatten)]
    common: Common,
}

#[derive(Clone, Copy, ValueEnum)]
enum FnArg {
    Avg,
    Sum,
    Count,
    Min,
    Max,
}

#[derive(Clone, Copy, ValueEnum)]
enum AlgorithmArg {
    /// Acknowledged push-sum: exactly-once mass transfer, conserves mass under loss.
    AckPushSum,
    /// Kempe et al.'s plain push-sum: loses mass with every lost message.
    PushSum,
    /// Jelasity et al.'s push-pull averaging, sequential atomic exchanges per cycle.
    PushPull,
    /// Min/max by idempotent push-pull merging.
    Extremum,
}

#[derive(Clone, Copy, ValueEnum)]
enum InitArg {
    Peak,
    Uniform,
}

#[derive(Clone, Copy, ValueEnum)]
enum JoinArg {
    All,
    OnMessage,
}

#[derive(Args)]
struct PbcastArgs {
    /// Number of nodes (all are members of the topic).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(2..=1_000_000))]
    nodes: u64,
    /// Messages published, one per gossip round.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    messages: u64,
    /// Digests each member sends per round (0: no repair, phase one only).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=64))]
    fanout: u64,
    /// G: rounds an entry stays in a member's gossip buffer (gaps are declared after 2·G).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    gc_rounds: u64,
    /// Phase one: the origin sends to every member, or nothing (gossip alone).
    #[arg(long, value_enum, default_value_t = FirstPhaseArg::Multicast)]
    first_phase: FirstPhaseArg,
    /// Probability that an origin crashes after sending first-phase copies to a random
    /// number of members.
    #[arg(long, default_value_t = 0.0, value_parser = closed_probability)]
    origin_crash_prob: f64,
    /// Most rounds to run after the last publish [default: 10·G].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    drain: Option<u64>,
    /// Link latency profile.
    #[arg(long, value_enum, default_value_t = LatencyArg::Wan)]
    latency: LatencyArg,
    #[command(flatten)]
    common: Common,
}

#[derive(Clone, Copy, ValueEnum)]
enum FirstPhaseArg {
    Multicast,
    None,
}

#[derive(Clone, Copy, ValueEnum)]
enum LatencyArg {
    Zero,
    Lan,
    Wan,
}

#[derive(Args)]
struct ClusterArgs {
    /// Nodes.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(3..=100_000))]
    nodes: u64,
    /// Topics.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=64))]
    topics: u64,
    /// Subscribers per topic [default: min(nodes, 100)].
    #[arg(long)]
    subscribers: Option<u64>,
    /// Messages published per simulated second (all publishers together).
    #[arg(long, default_value_t = 20.0)]
    publish_rate: f64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Fraction of nodes that crash a third of the way in.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    crash_fraction: f64,
    /// Seconds the cluster is split in two halves, halfway through (0: no partition).
    #[arg(long, default_value_t = 0.0)]
    partition_secs: f64,
    /// Fraction of the nodes (not crashed for good) that crash a quarter of the way in and
    /// restart `--down-secs` later, with their store (what the daemon keeps in its data dir).
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    restart_fraction: f64,
    /// Seconds a restarting node stays down.
    #[arg(long, default_value_t = 10.0)]
    down_secs: f64,
    /// Restarted nodes come back without their store (new streams; not counted).
    #[arg(long)]
    lose_store: bool,
    /// Also report bytes per node per second by message kind (`node_bytes_per_s_by_kind`;
    /// decodes every frame, so slower).
    #[arg(long)]
    breakdown: bool,
    /// Seconds of draining after the last publish.
    #[arg(long, default_value_t = 60.0)]
    drain: f64,
    /// Network latency profile.
    #[arg(long, value_enum, default_value_t = LatencyArg::Lan)]
    latency: LatencyArg,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
struct BenchArgs {
    /// Message events to simulate for the speed figure.
    #[arg(long, default_value_t = 20_000_000)]
    events: u64,
    /// Anti-entropy nodes to build for the memory figure.
    #[arg(long, default_value_t = 100_000)]
    nodes: usize,
    /// Print one JSON line instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct FuzzArgs {
    /// Crafted frames to send.
    #[arg(long, default_value_t = 100_000)]
    frames: u64,
    /// Seed: the same seed and arguments give the same output.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Honest members.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(2..=64))]
    honest: u64,
    /// Fake members the frames are sent from.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=64))]
    fakes: u64,
    /// Print one JSON line instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ChordArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(2..=1_000_000))]
    nodes: u64,
    /// Lookups per run.
    #[arg(long, default_value_t = 3_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    lookups: u64,
    /// Node failures per node per minute (0.01: 1% of the nodes fail each minute; each comes
    /// back after --downtime with fresh state and joins again). 0: a stable ring.
    #[arg(long, default_value_t = 0.0, value_parser = churn_rate)]
    churn: f64,
    /// How the ring is built before the lookups.
    #[arg(long, value_enum, default_value_t = BuildArg::Ideal)]
    build: BuildArg,
    /// How lookups travel.
    #[arg(long, value_enum, default_value_t = LookupArg::Recursive)]
    mode: LookupArg,
    /// Next hops: fingers only (the SIGCOMM paper), or fingers and successor-list entries (the
    /// ToN variant, PROTOCOLS.md §7.4).
    #[arg(long, value_enum, default_value_t = RouteArg::Fingers)]
    route: RouteArg,
    /// Network latency profile.
    #[arg(long, value_enum, default_value_t = LatencyArg::Zero)]
    latency: LatencyArg,
    /// Fraction of departures that are voluntary leaves (the rest crash).
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    leave_ratio: f64,
    /// Seconds of churn (and maintenance) before the first lookup [default: 60 with churn, 0 without].
    #[arg(long, value_parser = seconds)]
    warmup: Option<f64>,
    /// Seconds over which the lookups start [default: 60 with churn, 1 without].
    #[arg(long, value_parser = seconds)]
    window: Option<f64>,
    /// Protocol build: seconds between two joins.
    #[arg(long, default_value_t = 0.5, value_parser = seconds)]
    join_gap: f64,
    /// Seconds a departed node stays down before it joins again.
    #[arg(long, default_value_t = 60.0, value_parser = seconds)]
    downtime: f64,
    #[command(flatten)]
    common: Common,
}

#[derive(Clone, Copy, ValueEnum)]
enum BuildArg {
    /// Every node joins from the full member table: converged at once.
    Ideal,
    /// Nodes join one by one through a member, then stabilize until every finger is right.
    Protocol,
}

#[derive(Clone, Copy, ValueEnum)]
enum LookupArg {
    Recursive,
    Iterative,
}

#[derive(Clone, Copy, ValueEnum)]
enum RouteArg {
    Fingers,
    FingersAndSuccessors,
}

#[derive(Args)]
struct ScribeArgs {
    /// Number of nodes (all on the ring).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(2..=1_000_000))]
    nodes: u64,
    /// Topics, each with its own tree.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    topics: u64,
    /// Members per topic: uniformly random nodes (PROTOCOLS.md §8.11 calls it --members).
    #[arg(long, alias = "members", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    group_size: u64,
    /// Messages per topic, one per second, each from a random live member.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    messages: u64,
    /// Node failures per node per minute from the start (0.01: 1% of the nodes fail each
    /// minute); failed nodes stay down.
    #[arg(long, default_value_t = 0.0, value_parser = churn_rate)]
    churn: f64,
    /// G: rounds an entry stays in a member's pbcast gossip buffer.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    gc_rounds: u64,
    /// Most pbcast rounds to run after the last publish [default: 10·G].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    drain: Option<u64>,
    /// Link latency profile.
    #[arg(long, value_enum, default_value_t = LatencyArg::Wan)]
    latency: LatencyArg,
    /// The ring's finger base: 2 (the paper's, about ½·log2 N hops), 4 or 16 (about log_b N
    /// hops, more fingers): shallower trees.
    #[arg(long, default_value_t = 2, value_parser = hearsay_overlay::chord::FingerLayout::parse_base)]
    finger_base: u8,
    /// Proximity neighbour selection: each finger is the member with the lowest round-trip
    /// time among the first K members of its interval (the network model's RTT stands in for
    /// a measured one); 0 turns it off (each finger is the successor of its target).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=64))]
    proximity: u64,
    /// Let successor-list entries compete with fingers as next hops (Chord's ToN variant):
    /// about one hop less per route.
    #[arg(long)]
    route_via_successors: bool,
    /// Send every tree copy on the reliable stream to the next hop (ScribeConfig::tree_streams)
    /// instead of a datagram; a lost transmission is resent one QUIC probe timeout later
    /// (1.5 × RTT + 25 ms), delaying the stream's later messages too.
    #[arg(long)]
    tree_streams: bool,
    #[command(flatten)]
    common: Common,
}

fn churn_rate(s: &str) -> Result<f64, String> {
    let x: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if x.is_finite() && (0.0..=60.0).contains(&x) {
        Ok(x)
    } else {
        Err(format!("{x} is not a churn rate in [0, 60] failures per node per minute"))
    }
}

fn fraction(s: &str) -> Result<f64, String> {
    let x: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if (0.0..=1.0).contains(&x) { Ok(x) } else { Err(format!("{x} is not a fraction in [0, 1]")) }
}

fn seconds(s: &str) -> Result<f64, String> {
    let x: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if x.is_finite() && (0.0..=1e6).contains(&x) {
        Ok(x)
    } else {
        Err(format!("{x} is not a number of seconds in [0, 1e6]"))
    }
}

#[derive(Args)]
struct SwimArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(3..=100_000))]
    nodes: u64,
    /// Nodes crashed per detection run, each at a random period boundary after the warm-up
    /// [default: 25, at most 5% of the nodes; 20 runs × 25 give a standard error near 0.045].
    #[arg(long)]
    crash: Option<u64>,
    /// Slow nodes in the false-positive scenario (they stall for U[5,25] periods at a time);
    /// 0 skips that scenario.
    #[arg(long, default_value_t = 0)]
    slow: u64,
    /// Lifeguard: on, off, or the parts that are on (a comma-separated list of health,
    /// suspicion, buddy).
    #[arg(long, default_value = "on", value_parser = swim::parse_lifeguard)]
    lifeguard: Lifeguard,
    /// Probe timing of the headline figures: rounds (every node's period aligned, as in SWIM's
    /// analysis) or phased (a random phase per node, as in the daemon).
    #[arg(long, value_enum, default_value_t = SwimTimingArg::Rounds)]
    timing: SwimTimingArg,
    /// Run the detection part in the headline timing only (by default also in the other).
    #[arg(long)]
    one_timing: bool,
    /// Crashes fall on period boundaries spread over this many periods after the warm-up
    /// (1: all together, as in PROTOCOLS.md §6.15).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    crash_window: u64,
    /// Length of each false-positive run, in periods.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    duration: u64,
    /// False-positive runs (each runs the setting and the baseline).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    fp_runs: u64,
    #[command(flatten)]
    common: Common,
}

#[derive(Clone, Copy, ValueEnum)]
enum SwimTimingArg {
    /// Aligned periods (simulator `sync`).
    Rounds,
    /// A random phase per node.
    Phased,
}

fn probability(s: &str) -> Result<f64, String> {
    let p: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if (0.0..1.0).contains(&p) { Ok(p) } else { Err(format!("{p} is not a probability in [0, 1)")) }
}

fn closed_probability(s: &str) -> Result<f64, String> {
    let p: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if (0.0..=1.0).contains(&p) { Ok(p) } else { Err(format!("{p} is not a probability in [0, 1]")) }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::AntiEntropy(args) => run_anti_entropy(args),
        Command::Rumor(args) => run_rumor(args),
        Command::FloodVsGossip(args) => run_flood(args),
        Command::Aggregate(args) => run_aggregate(args),
        Command::Pbcast(args) => run_pbcast(args),
        Command::Bench(args) => run_bench(args),
        Command::Cluster(args) => run_cluster(args),
        Command::Chord(args) => run_chord(args),
        Command::Swim(args) => run_swim(args),
        Command::Scribe(args) => run_scribe(args),
        Command::Fuzz(args) => run_fuzz(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_anti_entropy(args: AntiEntropyArgs) -> Result<(), String> {
    let c = args.common;
    let p = anti_entropy::Params {
        nodes: args.nodes as usize,
        mode: args.mode.into(),
        runs: c.runs,
        seed: c.seed,
        loss: c.loss,
        threads: c.threads,
        max_rounds: 1_000,
    };
    let progress = Progress::new("anti-entropy", c.runs, c.quiet);
    let (report, results) = anti_entropy::run_with_results(&p, &progress);
    finish(
        &progress,
        &c,
        &report,
        |path| anti_entropy::plot(&p, &results, &report, path),
        anti_entropy::table,
    )
}

fn run_rumor(args: RumorArgs) -> Result<(), String> {
    let c = args.common;
    let KRange(k0, k1) = args.k;
    let mut out = Vec::new();
    for k in k0..=k1 {
        let p = rumor::Params {
            nodes: args.nodes as usize,
            variant: args.variant.into(),
            direction: args.mode.into(),
            k,
            fanout: args.fanout,
            timing: args.timing.into(),
            runs: c.runs,
            seed: c.seed,
            loss: c.loss,
            threads: c.threads,
            max_rounds: args.max_rounds,
        };
        let progress = Progress::new(format!("rumor k={k}"), c.runs, c.quiet);
        out.push(rumor::run_with_results(&p, &progress));
        progress.note(&format!("elapsed {:.2} s", progress.elapsed_s()));
    }
    if let Some(path) = &c.plot {
        rumor::plot(&out, path).map_err(|e| format!("cannot draw {}: {e}", path.display()))?;
        if !c.quiet {
            eprintln!("rumor: plot written to {}", path.display());
        }
    }
    let reports: Vec<rumor::Report> = out.into_iter().map(|(r, _)| r).collect();
    if c.json {
        for r in &reports {
            println!("{}", serde_json::to_string(r).map_err(|e| e.to_string())?);
        }
    } else {
        print!("{}", rumor::table(&reports));
    }
    Ok(())
}

fn run_flood(args: FloodArgs) -> Result<(), String> {
    let c = args.common;
    let graph = match args.graph {
        GraphArg::Random => flood_vs_gossip::Graph::Random,
        GraphArg::PowerLaw => flood_vs_gossip::Graph::PowerLaw,
    };
    let degree = args.degree.unwrap_or(match graph {
        flood_vs_gossip::Graph::Random => 8,
        flood_vs_gossip::Graph::PowerLaw => 6,
    });
    let p = flood_vs_gossip::Params {
        nodes: args.nodes as usize,
        graph,
        degree,
        b: args.b,
        f: args.f,
        ttl: args.ttl,
        runs: c.runs,
        seed: c.seed,
        loss: c.loss,
        threads: c.threads,
    };
    p.validate()?;
    let progress = Progress::new("flood-vs-gossip", c.runs, c.quiet);
    let (report, results) = flood_vs_gossip::run_with_results(&p, &progress);
    finish(&progress, &c, &report, |path| flood_vs_gossip::plot(&p, &results, path), flood_vs_gossip::table)
}

fn run_aggregate(args: AggregateArgs) -> Result<(), String> {
    let c = args.common;
    let func = match args.func {
        FnArg::Avg => Func::Avg,
        FnArg::Sum => Func::Sum,
        FnArg::Count => Func::Count,
        FnArg::Min => Func::Min,
        FnArg::Max => Func::Max,
    };
    let algorithm = match args.algorithm {
        None => func.default_algorithm(),
        Some(AlgorithmArg::AckPushSum) => Algorithm::AckPushSum,
        Some(AlgorithmArg::PushSum) => Algorithm::PushSum,
        Some(AlgorithmArg::PushPull) => Algorithm::PushPull,
        Some(AlgorithmArg::Extremum) => Algorithm::Extremum,
    };
    let p = aggregate::Params {
        nodes: args.nodes as usize,
        func,
        algorithm,
        init: match args.init {
            InitArg::Peak => aggregate::Init::Peak,
            InitArg::Uniform => aggregate::Init::Uniform,
        },
        join: match args.join {
            JoinArg::All => aggregate::Join::All,
            JoinArg::OnMessage => aggregate::Join::OnMessage,
        },
        rounds: args.rounds,
        runs: c.runs,
        seed: c.seed,
        loss: c.loss,
        threads: c.threads,
    };
    p.validate()?;
    let progress = Progress::new("aggregate", c.runs, c.quiet);
    let (report, results) = aggregate::run_with_results(&p, &progress);
    finish(&progress, &c, &report, |path| aggregate::plot(&p, &results, &report, path), aggregate::table)
}

fn run_pbcast(args: PbcastArgs) -> Result<(), String> {
    let c = args.common;
    let p = pbcast::Params {
        nodes: args.nodes as usize,
        messages: args.messages as usize,
        loss: c.loss,
        fanout: args.fanout as usize,
        gc_rounds: args.gc_rounds,
        first_phase: match args.first_phase {
            FirstPhaseArg::Multicast => pbcast::FirstPhase::Multicast,
            FirstPhaseArg::None => pbcast::FirstPhase::None,
        },
        origin_crash_prob: args.origin_crash_prob,
        drain_rounds: args.drain,
        latency: match args.latency {
            LatencyArg::Zero => pbcast::Profile::Zero,
            LatencyArg::Lan => pbcast::Profile::Lan,
            LatencyArg::Wan => pbcast::Profile::Wan,
        },
        runs: c.runs,
        seed: c.seed,
        threads: c.threads,
    };
    p.config().validate().map_err(|e| e.to_string())?;
    let progress = Progress::new("pbcast", c.runs, c.quiet);
    let report = pbcast::run(&p, &progress);
    finish(&progress, &c, &report, |path| pbcast::plot(&p, &report, path), pbcast::table)
}

fn run_swim(args: SwimArgs) -> Result<(), String> {
    let c = args.common;
    let p = swim::Params {
        nodes: args.nodes as usize,
        crash: args.crash.map_or_else(|| swim::default_crash(args.nodes as usize), |c| c as usize),
        slow: args.slow as usize,
        loss: c.loss,
        lifeguard: args.lifeguard,
        timing: match args.timing {
            SwimTimingArg::Rounds => Timing::Sync,
            SwimTimingArg::Phased => Timing::Phased,
        },
        both_timings: !args.one_timing,
        runs: c.runs,
        fp_runs: args.fp_runs,
        duration: args.duration,
        crash_window: args.crash_window,
        seed: c.seed,
        threads: c.threads,
        ..swim::Params::new(args.nodes as usize)
    };
    p.validate()?;
    let jobs = c.runs * if p.both_timings { 2 } else { 1 } + if p.slow > 0 { 2 * p.fp_runs } else { 0 };
    let progress = Progress::new("swim", jobs, c.quiet);
    let (report, results) = swim::run_with_results(&p, &progress);
    finish(&progress, &c, &report, |path| swim::plot(&p, &results, path), swim::table)
}

fn run_cluster(args: ClusterArgs) -> Result<(), String> {
    let c = args.common;
    if !(args.publish_rate > 0.0 && args.duration > 0.0 && args.drain >= 0.0 && args.partition_secs >= 0.0) {
        return Err(
            "--publish-rate and --duration must be positive, --drain and --partition-secs not negative"
                .into(),
        );
    }
    let nodes = args.nodes as usize;
    let p = cluster::Params {
        nodes,
        topics: args.topics as usize,
        subscribers: args.subscribers.map_or(nodes.min(100), |s| (s as usize).min(nodes)),
        publish_rate: args.publish_rate,
        duration: args.duration,
        loss: c.loss,
        crash_fraction: args.crash_fraction,
        partition_secs: args.partition_secs,
        drain: args.drain,
        latency: match args.latency {
            LatencyArg::Zero => hearsay_sim::kernel::Latency::Zero,
            LatencyArg::Lan => hearsay_sim::kernel::Latency::LAN,
            LatencyArg::Wan => hearsay_sim::kernel::Latency::WAN,
        },
        runs: c.runs,
        seed: c.seed,
        threads: c.threads,
        restart_fraction: args.restart_fraction,
        down_secs: args.down_secs,
        lose_store: args.lose_store,
        breakdown: args.breakdown,
    };
    let progress = Progress::new("cluster", c.runs, c.quiet);
    let report = cluster::run(&p, &progress);
    progress.note(&format!("elapsed {:.1} s", progress.elapsed_s()));
    print(&report, c.json, cluster::table)
}

fn run_fuzz(args: FuzzArgs) -> Result<(), String> {
    let p = fuzz::Params {
        honest: args.honest as usize,
        fakes: args.fakes as usize,
        ..fuzz::Params::new(args.frames, args.seed)
    };
    let report = fuzz::run(&p);
    print(&report, args.json, fuzz::table)
}

fn run_bench(args: BenchArgs) -> Result<(), String> {
    let report = bench::run(args.events, args.nodes);
    print(&report, args.json, bench::table)
}

fn run_chord(args: ChordArgs) -> Result<(), String> {
    let c = args.common;
    let churning = args.churn > 0.0;
    let default_s = |churned: f64, stable: f64| if churning { churned } else { stable };
    let p = chord::Params {
        lookups: args.lookups as usize,
        churn: args.churn,
        leave_ratio: args.leave_ratio,
        build: match args.build {
            BuildArg::Ideal => chord::Build::Ideal,
            BuildArg::Protocol => chord::Build::Protocol,
        },
        mode: match args.mode {
            LookupArg::Recursive => LookupMode::Recursive,
            LookupArg::Iterative => LookupMode::Iterative,
        },
        route_via_successors: matches!(args.route, RouteArg::FingersAndSuccessors),
        latency: match args.latency {
            LatencyArg::Zero => chord::Profile::Zero,
            LatencyArg::Lan => chord::Profile::Lan,
            LatencyArg::Wan => chord::Profile::Wan,
        },
        runs: c.runs,
        seed: c.seed,
        loss: c.loss,
        threads: c.threads,
        warmup: Duration::from_secs_f64(args.warmup.unwrap_or(default_s(60.0, 0.0))),
        window: Duration::from_secs_f64(args.window.unwrap_or(default_s(60.0, 1.0))),
        downtime: Duration::from_secs_f64(args.downtime),
        join_gap: Duration::from_secs_f64(args.join_gap),
        ..chord::Params::new(args.nodes as usize)
    };
    let progress = Progress::new("chord", c.runs, c.quiet);
    let (report, results) = chord::run_with_results(&p, &progress);
    finish(&progress, &c, &report, |path| chord::plot(&p, &results, &report, path), chord::table)
}

fn run_scribe(args: ScribeArgs) -> Result<(), String> {
    let c = args.common;
    let p = scribe::Params {
        topics: args.topics as usize,
        group_size: args.group_size as usize,
        messages: args.messages as usize,
        churn: args.churn,
        loss: c.loss,
        gc_rounds: args.gc_rounds,
        latency: match args.latency {
            LatencyArg::Zero => scribe::Profile::Zero,
            LatencyArg::Lan => scribe::Profile::Lan,
            LatencyArg::Wan => scribe::Profile::Wan,
        },
        drain_rounds: args.drain,
        finger_base_bits: args.finger_base,
        proximity_candidates: args.proximity as usize,
        route_via_successors: args.route_via_successors,
        tree_streams: args.tree_streams,
        runs: c.runs,
        seed: c.seed,
        threads: c.threads,
        ..scribe::Params::new(args.nodes as usize)
    };
    p.validate()?;
    let progress = Progress::new("scribe", c.runs, c.quiet);
    let (report, results) = scribe::run_with_results(&p, &progress);
    finish(&progress, &c, &report, |path| scribe::plot(&p, &results, &report, path), scribe::table)
}

/// The end of every experiment command: the elapsed time, the plot if `--plot` asked for
/// one, then the report (JSON or table).
fn finish<R: serde::Serialize, E: std::fmt::Display>(
    progress: &Progress,
    c: &Common,
    report: &R,
    plot: impl FnOnce(&std::path::Path) -> Result<(), E>,
    table: fn(&R) -> String,
) -> Result<(), String> {
    progress.note(&format!("elapsed {:.2} s", progress.elapsed_s()));
    if let Some(path) = &c.plot {
        plot(path).map_err(|e| format!("cannot draw {}: {e}", path.display()))?;
        progress.note(&format!("plot written to {}", path.display()));
    }
    print(report, c.json, table)
}

fn print<R: serde::Serialize>(report: &R, json: bool, table: fn(&R) -> String) -> Result<(), String> {
    if json {
        println!("{}", serde_json::to_string(report).map_err(|e| e.to_string())?);
    } else {
        print!("{}", table(report));
    }
    Ok(())
}
