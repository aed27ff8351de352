//! `hearsay-sim`: run hearsay's protocol machines at scale, deterministically by seed.
//!
//! Every experiment prints progress on stderr and its result last on stdout: one JSON line
//! with `--json`, a readable table without. See `hearsay-sim <experiment> --help`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use hearsay_overlay::swim::Lifeguard;
use hearsay_protocols::Timing;
use hearsay_protocols::anti_entropy::AeMode;
use hearsay_sim::experiments::{anti_entropy, bench, swim};
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
    /// SWIM failure detection with Lifeguard (Das et al. 2002; Dadgar et al. 2018).
    ///
    /// N nodes with a converged table, LAN defaults and latency. Detection: C nodes crash at
    /// random period boundaries after a 10-period warm-up; prints the mean first detection
    /// (crash to first failed probe, in periods) with aligned and with random phases, full
    /// dissemination, and the message load per member per period. With --slow S, also the
    /// slow-node scenario (stalls of U[5,25] periods) with the Lifeguard setting and the
    /// baseline: false positives on healthy and on slow targets, and their ratio.
    Swim(SwimArgs),
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
    #[arg(long, value_enum, default_value_t = TimingArg::Rounds)]
    timing: TimingArg,
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
enum TimingArg {
    /// Aligned periods (simulator `sync`).
    Rounds,
    /// A random phase per node.
    Phased,
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
        Command::Swim(args) => run_swim(args),
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

fn run_swim(args: SwimArgs) -> Result<(), String> {
    let c = args.common;
    let p = swim::Params {
        nodes: args.nodes as usize,
        crash: args.crash.map_or_else(|| swim::default_crash(args.nodes as usize), |c| c as usize),
        slow: args.slow as usize,
        loss: c.loss,
        lifeguard: args.lifeguard,
        timing: match args.timing {
            TimingArg::Rounds => Timing::Sync,
            TimingArg::Phased => Timing::Phased,
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
    progress.note(&format!("elapsed {:.2} s", progress.elapsed_s()));
    if let Some(path) = &c.plot {
        swim::plot(&p, &results, path).map_err(|e| format!("cannot draw {}: {e}", path.display()))?;
        progress.note(&format!("plot written to {}", path.display()));
    }
    print(&report, c.json, swim::table)
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
