//! `hearsay-sim`: run hearsay's protocol machines at scale, deterministically by seed.
//!
//! Every experiment prints progress on stderr and its result last on stdout: one JSON line
//! with `--json`, a readable table without. See `hearsay-sim <experiment> --help`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use hearsay_protocols::anti_entropy::AeMode;
use hearsay_sim::experiments::{anti_entropy, bench, pbcast};
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
        Command::Pbcast(args) => run_pbcast(args),
        Command::Bench(args) => run_bench(args),
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
    progress.note(&format!("elapsed {:.2} s", progress.elapsed_s()));
    if let Some(path) = &c.plot {
        anti_entropy::plot(&p, &results, &report, path)
            .map_err(|e| format!("cannot draw {}: {e}", path.display()))?;
        progress.note(&format!("plot written to {}", path.display()));
    }
    print(&report, c.json, anti_entropy::table)
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
    progress.note(&format!("elapsed {:.2} s", progress.elapsed_s()));
    if let Some(path) = &c.plot {
        pbcast::plot(&p, &report, path).map_err(|e| format!("cannot draw {}: {e}", path.display()))?;
        progress.note(&format!("plot written to {}", path.display()));
    }
    print(&report, c.json, pbcast::table)
}

fn run_bench(args: BenchArgs) -> Result<(), String> {
    let report = bench::run(args.events, args.nodes);
    print(&report, args.json, bench::table)
}

fn print<R: serde::Serialize>(report: &R, json: bool, table: fn(&R) -> String) -> Result<(), String> {
    if json {
        println!("{}", serde_json::to_string(report).map_err(|e| e.to_string())?);
    } else {
        print!("{}", table(report));
    }
    Ok(())
}
