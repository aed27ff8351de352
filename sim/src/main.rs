//! `hearsay-sim`: run hearsay's protocol machines at scale, deterministically by seed.
//!
//! Every experiment prints progress on stderr and its result last on stdout: one JSON line
//! with `--json`, a readable table without. See `hearsay-sim <experiment> --help`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use hearsay_overlay::chord::LookupMode;
use hearsay_protocols::Duration;
use hearsay_protocols::anti_entropy::AeMode;
use hearsay_sim::experiments::{anti_entropy, bench, chord};
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
    /// Speed and memory of the simulator kernel: events per second for a trivial machine,
    /// bytes per simulated anti-entropy node.
    Bench(BenchArgs),
    /// Lookup hops on a Chord ring, and lookup success under churn (Stoica et al. 2001).
    ///
    /// Builds a ring of N nodes (ideal: from the member table; protocol: joins one by one and
    /// stabilizes until every finger is right), optionally churns it, then runs lookups from
    /// random nodes for random keys. Prints hops (forwardings only: a lookup resolved at its
    /// origin is 0 hops) beside ½·log2 N, and the fraction of lookups answered with the true
    /// successor.
    Chord(ChordArgs),
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

#[derive(Clone, Copy, ValueEnum)]
enum LatencyArg {
    Zero,
    Lan,
    Wan,
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

fn probability(s: &str) -> Result<f64, String> {
    let p: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if (0.0..1.0).contains(&p) { Ok(p) } else { Err(format!("{p} is not a probability in [0, 1)")) }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::AntiEntropy(args) => run_anti_entropy(args),
        Command::Bench(args) => run_bench(args),
        Command::Chord(args) => run_chord(args),
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
    progress.note(&format!("elapsed {:.2} s", progress.elapsed_s()));
    if let Some(path) = &c.plot {
        chord::plot(&p, &results, &report, path)
            .map_err(|e| format!("cannot draw {}: {e}", path.display()))?;
        progress.note(&format!("plot written to {}", path.display()));
    }
    print(&report, c.json, chord::table)
}

fn print<R: serde::Serialize>(report: &R, json: bool, table: fn(&R) -> String) -> Result<(), String> {
    if json {
        println!("{}", serde_json::to_string(report).map_err(|e| e.to_string())?);
    } else {
        print!("{}", table(report));
    }
    Ok(())
}
