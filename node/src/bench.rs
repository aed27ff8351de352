//! `hearsay bench`: a load generator over a whole cluster of real agents in this process.
//!
//! N agents start on 127.0.0.1 exactly as `hearsay agent` would run them (QUIC through quinn,
//! admission by the cluster CA, the same Engine and the same defaults, the `lan` preset), each
//! joining through up to 5 earlier agents chosen by the seed. Every agent subscribes to every
//! bench topic through the in-process API (the same subscription path the HTTP API uses).
//! Once every agent sees N members alive and every topic tree has stopped changing, P
//! publishers (chosen by the seed) publish M messages of S bytes at R per second on a fixed
//! schedule (message k at `k / R` seconds, round-robin over publishers and topics). Each
//! payload carries its publish timestamp and index, so a subscriber measures its latency on
//! arrival.
//!
//! # What is measured, and over which window
//!
//! - A **delivery** is a message handed to a subscriber on a node other than its publisher
//!   (the publisher's own local copy is not counted): M·(N−1) are expected.
//! - **The measurement window** runs from the first publish until the last scheduled publish
//!   plus the drain time (`--drain`, default 2 s), whatever happens inside it: a fixed length
//!   for a given M, R and drain. UDP payload bytes (sent, by every agent, all protocols and
//!   QUIC overhead included), duplicates, and process CPU (`getrusage`, user + system) are
//!   differences over this window; per-delivery figures divide them by the deliveries made
//!   within it.
//! - Deliveries that come after the window (up to 10 s more, only while some are missing) still
//!   count for `delivery_ratio` and latency, and are reported as `late_deliveries`.
//! - `last_node_ms`: per message delivered to all N−1 other nodes, publish until the last of
//!   them got it. `per_delivery_ms`: publish until each delivery. Nearest-rank percentiles.
//! - `peak_rss_mib`: the whole process's peak resident set (`ru_maxrss`), harness included.
//! - **The idle window** (`--idle`, default 5 s) comes before the first publish, once the trees
//!   have settled and every agent's membership piggyback queue is empty (`idle_wait_s`: how
//!   long the subscriptions' meta changes took to spread): UDP bytes each agent sends per
//!   second while nothing is published
//!   (`idle_bytes_per_node_per_s`, QUIC's own packets included; per protocol in
//!   `idle_frame_bytes_per_node_per_s`), and live connections per agent at its end.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::agent::Command;
use crate::agent::{self, AgentHandle, AgentOptions};
use crate::api::types::StreamItem;
use crate::config::Preset;
use crate::message::{AppMessage, TopicName};
use crate::transport::identity::ClusterSecret;

/// Smallest payload: the header the bench writes into every message (timestamp, index,
/// publisher) is this long.
pub const MIN_SIZE: usize = 32;
/// Largest payload the bench accepts (well under the Engine's 1 MiB payload limit).
pub const MAX_SIZE: usize = 512 << 10;
/// Most agents one bench runs.
pub const MAX_NODES: usize = 1000;
/// Most topics (a member advertises at most 64).
pub const MAX_TOPICS: usize = 64;

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Agents (N).
    pub nodes: usize,
    /// Messages to publish (M).
    pub messages: u64,
    /// Payload bytes per message (S).
    pub size: usize,
    /// Messages per second over all publishers (R).
    pub rate: f64,
    /// Publishing agents (P), chosen by the seed.
    pub publishers: usize,
    /// Topics (T); every agent subscribes to all, message k goes to topic k mod T.
    pub topics: usize,
    /// Seed of the bench's own choices (publishers, bootstrap peers).
    pub seed: u64,
    /// Time after the last publish that still belongs to the measurement window.
    pub drain: Duration,
    /// Print a progress line on stderr.
    pub progress: bool,
    /// Give every agent a durable store with this sync policy (in a temporary dir, removed at
    /// the end); `None`: no store, nothing is kept.
    pub durable: Option<crate::store::Sync>,
    /// Publishes in flight at once (each waits for its acknowledgement: with a store, its
    /// write being durable). 1: one at a time.
    pub inflight: usize,
    /// Run the agents without authenticity (no seals made or checked, SWIM records unsigned):
    /// to measure what signatures cost beside a run with them.
    pub no_auth: bool,
    /// Length of the idle window (trees settled, nothing published) measured before the
    /// first publish; zero skips it.
    pub idle: Duration,
    /// log2 of the ring's finger base (`ChordConfig::finger_base_bits`): 1, the daemon's
    /// default (base 2), or 2 / 4 (base 4 / 16: shallower trees), to measure what it changes.
    pub finger_base_bits: u8,
    /// Let successor-list entries compete with fingers as next hops
    /// (`ChordConfig::route_via_successors`; the daemon's default is off).
    pub route_via_successors: bool,
}

impl BenchOptions {
    /// Defaults for everything but the shape.
    pub fn new(nodes: usize, messages: u64, size: usize, rate: f64) -> Self {
        BenchOptions {
            nodes,
            messages,
            size,
            rate,
            publishers: 1,
            topics: 1,
            seed: 1,
            drain: Duration::from_secs(2),
            progress: false,
            durable: None,
            inflight: 1,
            no_auth: false,
            idle: Duration::from_secs(5),
            finger_base_bits: 1,
            route_via_successors: false,
        }
    }

    /// Refuse a shape the bench cannot run.
    pub fn validate(&self) -> Result<(), BenchError> {
        if !(2..=MAX_NODES).contains(&self.nodes) {
            return Err(BenchError::Nodes(self.nodes));
        }
        if self.messages == 0 {
            return Err(BenchError::Messages);
        }
        if !(MIN_SIZE..=MAX_SIZE).contains(&self.size) {
            return Err(BenchError::Size(self.size));
        }
        if !(self.rate.is_finite() && self.rate > 0.0 && self.rate <= 1e6) {
            return Err(BenchError::Rate(self.rate));
        }
        if !(1..=self.nodes).contains(&self.publishers) {
            return Err(BenchError::Publishers(self.publishers, self.nodes));
        }
        if !(1..=MAX_TOPICS).contains(&self.topics) {
            return Err(BenchError::Topics(self.topics));
        }
        if self.drain > Duration::from_secs(600) {
            return Err(BenchError::Drain);
        }
        if self.idle > Duration::from_secs(600) {
            return Err(BenchError::Idle);
        }
        if !(1..=4096).contains(&self.inflight) {
            return Err(BenchError::Inflight(self.inflight));
        }
        Ok(())
    }
}

/// Why a bench shape was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// N out of range.
    #[error("--nodes must be between 2 and {MAX_NODES} (got {0})")]
    Nodes(usize),
    /// M is zero.
    #[error("--messages must be at least 1")]
    Messages,
    /// S out of range.
    #[error(
        "--size must be between {MIN_SIZE} (the timestamp, index and publisher header) and {MAX_SIZE} bytes (got {0})"
    )]
    Size(usize),
    /// R not a positive number.
    #[error("--rate must be a number of messages per second in (0, 1000000] (got {0})")]
    Rate(f64),
    /// P out of range.
    #[error("--publishers must be between 1 and --nodes ({1}) (got {0})")]
    Publishers(usize, usize),
    /// T out of range.
    #[error("--topics must be between 1 and {MAX_TOPICS} (got {0})")]
    Topics(usize),
    /// Drain too long.
    #[error("--drain must be at most 600 s")]
    Drain,
    /// Idle window too long.
    #[error("--idle must be at most 600 s")]
    Idle,
    /// In-flight publishes out of range.
    #[error("--inflight must be between 1 and 4096 (got {0})")]
    Inflight(usize),
}

/// Percentiles of a latency distribution, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of microsecond samples (sorted in place), in ms.
    fn of(samples: &mut [u64]) -> Self {
        if samples.is_empty() {
            return Percentiles { p50: f64::NAN, p99: f64::NAN, max: f64::NAN };
        }
        samples.sort_unstable();
        let rank = |q: f64| {
            let i = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i] as f64 / 1000.0
        };
        Percentiles { p50: rank(0.50), p99: rank(0.99), max: rank(1.0) }
    }
}

/// Frames one protocol sent over the window (all agents).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProtocolTraffic {
    /// Frames sent.
    pub frames: u64,
    /// Frame bytes (before QUIC).
    pub bytes: u64,
}

/// The result of a run (one JSON line with `--json`).
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// N.
    pub nodes: usize,
    /// Authenticity on (seals and signatures made and checked) or off (`--no-auth`).
    pub auth: bool,
    /// The ring's finger base (2: the daemon's default).
    pub finger_base: u32,
    /// Successor-list entries competed with fingers as next hops (off: the daemon's default).
    pub route_via_successors: bool,
    /// M.
    pub messages: u64,
    /// S.
    pub size: usize,
    /// R.
    pub rate: f64,
    /// P.
    pub publishers: usize,
    /// T.
    pub topics: usize,
    /// The seed.
    pub seed: u64,
    /// Deliveries made / M·(N−1).
    pub delivery_ratio: f64,
    /// Deliveries made (to nodes other than the publisher).
    pub deliveries: u64,
    /// M·(N−1).
    pub expected_deliveries: u64,
    /// Deliveries after the measurement window.
    pub late_deliveries: u64,
    /// Messages that reached every other node.
    pub complete_messages: u64,
    /// Publish until the last node delivered, per complete message.
    pub last_node_ms: Percentiles,
    /// Publish until delivery, per delivery.
    pub per_delivery_ms: Percentiles,
    /// UDP payload bytes sent by all agents over the window / deliveries in the window.
    pub bytes_per_delivery: f64,
    /// Payload copies dropped as duplicates over the window / deliveries in the window.
    pub dup_per_delivery: f64,
    /// Process CPU seconds (user + system) over the window.
    pub cpu_s: f64,
    /// CPU microseconds per delivery in the window.
    pub cpu_us_per_delivery: f64,
    /// Peak resident set of the whole process, MiB.
    pub peak_rss_mib: f64,
    /// UDP payload bytes sent by all agents over the window.
    pub wire_bytes: u64,
    /// UDP datagrams sent by all agents over the window.
    pub wire_datagrams: u64,
    /// Duplicates dropped over the window.
    pub duplicates: u64,
    /// QUIC connections opened over the window (all agents, either direction).
    pub connections_opened: u64,
    /// Connections closed over the window to stay under the cache bound.
    pub evictions: u64,
    /// Frames and frame bytes sent over the window, per protocol, all agents.
    pub frames_by_protocol: BTreeMap<String, ProtocolTraffic>,
    /// Live QUIC connections over all agents at the end of the window.
    pub live_connections: u64,
    /// Live QUIC connections per agent at the end of the window (`live_connections / nodes`;
    /// each connection is counted at both of its ends).
    pub connections_per_agent: f64,
    /// Length of the idle window, seconds (0: not measured).
    pub idle_s: f64,
    /// Seconds from the trees settling until every agent's queue of membership updates to
    /// piggyback was empty (the subscriptions' meta changes spread), when the idle window
    /// began; 120 at most.
    pub idle_wait_s: Option<f64>,
    /// UDP payload bytes each agent sent per second over the idle window (every protocol and
    /// QUIC's own packets: acknowledgements, keep-alives), mean over agents; `null` when no
    /// idle window was measured.
    pub idle_bytes_per_node_per_s: Option<f64>,
    /// Frame bytes (before QUIC) each agent sent per second over the idle window, per protocol.
    pub idle_frame_bytes_per_node_per_s: BTreeMap<String, f64>,
    /// Live QUIC connections per agent at the end of the idle window.
    pub idle_connections_per_agent: Option<f64>,
    /// Peak RSS when the window started (formation and tree setup), MiB.
    pub rss_before_mib: f64,
    /// Length of the window, seconds (publishing plus drain).
    pub window_s: f64,
    /// Seconds until every agent saw N alive.
    pub formation_s: f64,
    /// Seconds from subscribing until the trees were stable.
    pub settle_s: f64,
    /// Deepest tree position at the start of the window.
    pub max_tree_depth: usize,
    /// The store's sync policy (`always`, `batch`), or `off`.
    pub durable: String,
    /// Publishes in flight at once.
    pub inflight: usize,
    /// Time from asking to publish to the acknowledgement (with a store: the write durable).
    pub publish_ack_ms: Percentiles,
    /// Acknowledged publishes per second over the publishing phase.
    pub publishes_per_s: f64,
    /// With a store: bytes of the store files over the messages they hold (every agent keeps
    /// what it publishes and delivers), after the run.
    pub store_bytes_per_message: Option<f64>,
    /// The 1-minute load average at the end (the machine may be shared).
    pub load_avg_1m: f64,
}

/// splitmix64: the bench's own choices, reproducible from `--seed`.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// `k` distinct values of `0..n` (k ≤ n), partial Fisher-Yates.
    fn sample(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        for i in 0..k.min(n) {
            let j = i + self.below(n - i);
            v.swap(i, j);
        }
        v.truncate(k.min(n));
        v
    }
}

/// Process CPU seconds (user + system) and peak RSS in MiB, from `getrusage(RUSAGE_SELF)`.
#[cfg(unix)]
fn rusage() -> (f64, f64) {
    use nix::sys::resource::{UsageWho, getrusage};
    use nix::sys::time::TimeValLike;
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let cpu = (u.user_time().num_microseconds() + u.system_time().num_microseconds()) as f64 / 1e6;
            // Linux reports KiB, macOS bytes.
            let rss = if cfg!(target_os = "macos") {
                u.max_rss() as f64 / (1024.0 * 1024.0)
            } else {
                u.max_rss() as f64 / 1024.0
            };
            (cpu, rss)
        }
        Err(_) => (f64::NAN, f64::NAN),
    }
}

#[cfg(not(unix))]
fn rusage() -> (f64, f64) {
    (f64::NAN, f64::NAN)
}

fn load_avg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// What every agent's wire, transport and Engine counted so far.
#[derive(Clone, Debug, Default)]
struct Counters {
    /// Per protocol: (frames sent, frame bytes sent).
    protocols: BTreeMap<String, (u64, u64)>,
    bytes: u64,
    datagrams: u64,
    dups: u64,
    connections: u64,
    evictions: u64,
    live: u64,
}

impl Counters {
    /// Frames and frame bytes sent per protocol since `earlier`.
    fn protocols_since(&self, earlier: &Counters) -> BTreeMap<String, ProtocolTraffic> {
        self.protocols
            .iter()
            .map(|(k, (f, b))| {
                let (f0, b0) = earlier.protocols.get(k).copied().unwrap_or_default();
                (k.clone(), ProtocolTraffic { frames: f.saturating_sub(f0), bytes: b.saturating_sub(b0) })
            })
            .collect()
    }

    async fn of(agents: &[AgentHandle]) -> Self {
        let mut c = Counters::default();
        for h in agents {
            c.bytes += h.transport.wire().bytes_sent.load(Ordering::Relaxed);
            c.datagrams += h.transport.wire().datagrams_sent.load(Ordering::Relaxed);
            c.connections += h.transport.stats().connections_opened.load(Ordering::Relaxed);
            c.evictions += h.transport.stats().evictions.load(Ordering::Relaxed);
            c.live += h.transport.connections() as u64;
            if let Ok(text) = h.ask(Command::Metrics).await {
                c.dups += metric(&text, "hearsay_duplicates_total");
                for (prefix, slot) in [("hearsay_messages_sent_total{", 0), ("hearsay_bytes_sent_total{", 1)]
                {
                    for line in text.lines().filter(|l| l.starts_with(prefix)) {
                        let label = line.split('"').nth(1).unwrap_or("?").to_string();
                        let v =
                            line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) as u64;
                        let e = c.protocols.entry(label).or_default();
                        if slot == 0 {
                            e.0 += v;
                        } else {
                            e.1 += v;
                        }
                    }
                }
            }
        }
        c
    }
}

/// The payload of message `idx` from publisher `publisher`, published at `ts_us`.
fn payload(ts_us: u64, idx: u64, publisher: usize, size: usize) -> String {
    let mut s = String::with_capacity(size);
    let _ = write!(s, "{ts_us:016x}{idx:010x}{publisher:05x}|");
    while s.len() < size {
        s.push('.');
    }
    s
}

/// (publish timestamp µs, index, publisher) from a payload the bench wrote.
fn parse(p: &str) -> Option<(u64, u64, usize)> {
    let ts = u64::from_str_radix(p.get(0..16)?, 16).ok()?;
    let idx = u64::from_str_radix(p.get(16..26)?, 16).ok()?;
    let publisher = usize::from_str_radix(p.get(26..31)?, 16).ok()?;
    Some((ts, idx, publisher))
}

/// What one node's subscriber recorded: (message index, latency µs).
#[derive(Default)]
struct Log {
    got: Vec<(u64, u64)>,
    unparsed: u64,
    gaps: u64,
}

/// Shared tallies for the progress line and the drain.
#[derive(Default)]
struct Tally {
    delivered: AtomicU64,
}

fn say(progress: bool, line: &str) {
    if progress {
        let mut err = std::io::stderr();
        if err.is_terminal() {
            let _ = write!(err, "\r\x1b[2K");
        }
        let _ = writeln!(err, "bench: {line}");
    }
}

fn status(progress: bool, line: &str) {
    if progress {
        let mut err = std::io::stderr();
        if err.is_terminal() {
            let _ = write!(err, "\r\x1b[2K{line}");
            let _ = err.flush();
        } else {
            let _ = writeln!(err, "{line}");
        }
    }
}

/// Tree shape of every agent for the bench topics: (node, topic) → (parent, depth).
async fn tree_shape(agents: &[AgentHandle], names: &[TopicName]) -> Option<Vec<(Option<String>, usize)>> {
    let mut shape = Vec::new();
    for h in agents {
        let topics = h.ask(Command::Topics).await.ok()?;
        for name in names {
            let t = topics.iter().find(|t| t.topic == name.as_str())?;
            shape.push((t.parent.clone(), t.depth?));
        }
    }
    Some(shape)
}

/// Run a bench; the report says what was measured (module docs).
pub async fn run(opts: BenchOptions) -> Result<BenchReport> {
    opts.validate()?;
    let n = opts.nodes;
    let progress = opts.progress;
    let mut mix = Mix(opts.seed);
    let secret = ClusterSecret::generate()?;
    let begin = Instant::now();
    say(progress, &format!("starting {n} agents on 127.0.0.1 (QUIC, mutual TLS, lan preset)"));
    let mut agents: Vec<AgentHandle> = Vec::with_capacity(n);
    let mut addrs: Vec<SocketAddr> = Vec::with_capacity(n);
    let store_dir = opts
        .durable
        .map(|_| std::env::temp_dir().join(format!("hearsay-bench-{}-{}", std::process::id(), opts.seed)));
    let result = async {
        for i in 0..n {
            // Named b0, b1, ...: the formation check names agents this way.
            let mut o = AgentOptions::new(&format!("b{i}"), "127.0.0.1:0".parse()?, secret.clone());
            o.preset = Preset::Lan;
            o.no_auth = opts.no_auth;
            if opts.finger_base_bits != 1 || opts.route_via_successors {
                let mut engine = Preset::Lan.engine_config();
                engine.chord = std::sync::Arc::new(hearsay_overlay::chord::ChordConfig {
                    finger_base_bits: opts.finger_base_bits,
                    route_via_successors: opts.route_via_successors,
                    ..(*engine.chord).clone()
                });
                o.engine = Some(engine);
            }
            if let (Some(sync), Some(dir)) = (opts.durable, &store_dir) {
                o.store = Some(crate::agent::StoreOptions {
                    dir: dir.join(format!("b{i}")),
                    sync,
                    retention: crate::store::Retention::default(),
                });
            }
            o.join = mix.sample(i, 5).into_iter().map(|j| addrs[j]).collect();
            let h = agent::spawn(o).await.with_context(|| format!("starting agent b{i}"))?;
            if i % 10 == 9 {
                status(
                    progress,
                    &format!("[{:5.1} s] {} agents started", begin.elapsed().as_secs_f64(), i + 1),
                );
            }
            addrs.push(h.addr);
            agents.push(h);
        }
        measure(&opts, &mut mix, &agents, begin).await
    }
    .await;
    // Clean shutdown, bounded, whatever happened.
    say(progress, "agents leaving...");
    let leaving: Vec<_> = agents.into_iter().map(|h| tokio::spawn(h.shutdown())).collect();
    let all = async {
        for l in leaving {
            let _ = l.await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(20), all).await.is_err() {
        say(progress, "some agents did not stop within 20 s");
    }
    let mut result = result;
    if let Some(dir) = &store_dir {
        if let Ok(r) = result.as_mut() {
            let bytes = dir_bytes(dir);
            let kept = r.messages + r.deliveries;
            r.store_bytes_per_message = (kept > 0).then(|| bytes as f64 / kept as f64);
        }
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

async fn measure(
    opts: &BenchOptions,
    mix: &mut Mix,
    agents: &[AgentHandle],
    begin: Instant,
) -> Result<BenchReport> {
    let n = opts.nodes;
    let progress = opts.progress;
    // Formation.
    let deadline = Instant::now() + Duration::from_secs(60 + n as u64 / 2);
    let formed = loop {
        let mut full = 0;
        let mut fewest = n;
        for h in agents {
            let alive =
                h.ask(Command::Members).await.map_or(0, |m| m.iter().filter(|m| m.state == "alive").count());
            full += usize::from(alive == n);
            fewest = fewest.min(alive);
        }
        status(
            progress,
            &format!(
                "[{:5.1} s] membership: {full}/{n} agents see all {n} alive (the fewest sees {fewest})",
                begin.elapsed().as_secs_f64()
            ),
        );
        if full == n || Instant::now() >= deadline {
            break full == n;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    if !formed {
        // Say who is missing whom, as each agent sees it.
        let mut views = Vec::with_capacity(n);
        for h in agents {
            views.push(h.ask(Command::Members).await.unwrap_or_default());
        }
        let names: Vec<String> = (0..n).map(|i| format!("b{i}")).collect();
        let mut lines = Vec::new();
        for (i, v) in views.iter().enumerate() {
            let alive = v.iter().filter(|m| m.state == "alive").count();
            if alive == n {
                continue;
            }
            let missing: Vec<String> = names
                .iter()
                .filter_map(|name| match v.iter().find(|m| &m.name == name) {
                    Some(m) if m.state == "alive" => None,
                    Some(m) => Some(format!("{name} ({} at incarnation {})", m.state, m.incarnation)),
                    None => Some(format!("{name} (unknown)")),
                })
                .collect();
            lines.push(format!("agent {i} sees {alive} alive; not alive there: {}", missing.join(", ")));
        }
        bail!("the cluster did not form: not every agent saw {n} alive in time\n{}", lines.join("\n"));
    }
    let formation_s = begin.elapsed().as_secs_f64();
    say(progress, &format!("cluster formed in {formation_s:.2} s"));

    // The ring: Scribe routes JOINs by fingers, so trees built on a ring still filling its
    // fingers come out deep. Wait until every agent's successors and fingers stop changing.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last_ring: Vec<(Vec<String>, Vec<String>)> = Vec::new();
    let mut ring_since = Instant::now();
    loop {
        let mut ring = Vec::with_capacity(n);
        for h in agents {
            let r = h.ask(Command::Ring).await?;
            ring.push((
                r.successors.into_iter().map(|p| p.id).collect(),
                r.fingers.into_iter().map(|p| p.id).collect(),
            ));
        }
        if ring != last_ring {
            ring_since = Instant::now();
        }
        last_ring = ring;
        let stable = ring_since.elapsed();
        status(
            progress,
            &format!(
                "[{:5.1} s] ring: stable for {:.1} s",
                begin.elapsed().as_secs_f64(),
                stable.as_secs_f64()
            ),
        );
        if stable >= Duration::from_secs(3) || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    say(progress, &format!("ring stable after {:.2} s", begin.elapsed().as_secs_f64()));

    // Subscriptions: one sink per node for all topics.
    let names: Vec<TopicName> =
        (0..opts.topics).map(|t| TopicName::new(format!("bench/{t}"))).collect::<Result<_, _>>()?;
    let tally = Arc::new(Tally::default());
    let epoch = Instant::now();
    let mut logs: Vec<Arc<Mutex<Log>>> = Vec::with_capacity(n);
    for (i, h) in agents.iter().enumerate() {
        let (sink, mut items) = mpsc::channel::<StreamItem>(1 << 16);
        for name in &names {
            h.ask(|reply| Command::Subscribe {
                topic: name.clone(),
                options: Default::default(),
                sink: sink.clone(),
                reply,
            })
            .await??;
        }
        let log = Arc::new(Mutex::new(Log::default()));
        logs.push(log.clone());
        let tally = tally.clone();
        tokio::spawn(async move {
            while let Some(item) = items.recv().await {
                let now = epoch.elapsed().as_micros() as u64;
                let mut l = log.lock().unwrap_or_else(|p| p.into_inner());
                match item {
                    StreamItem::Message(d) => match d.payload.as_deref().and_then(parse) {
                        Some((_, _, publisher)) if publisher == i => {}
                        Some((ts, idx, _)) => {
                            l.got.push((idx, now.saturating_sub(ts)));
                            tally.delivered.fetch_add(1, Ordering::Relaxed);
                        }
                        None => l.unparsed += 1,
                    },
                    StreamItem::Gap { gap } => l.gaps += gap.to_seq.saturating_sub(gap.from_seq) + 1,
                    StreamItem::Closed { .. } => break,
                }
            }
        });
    }

    // Trees: every agent has a position in every topic's tree, unchanged for 2 s.
    let sub_start = Instant::now();
    let mut last: Option<Vec<(Option<String>, usize)>> = None;
    let mut stable_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    let settled = loop {
        let shape = tree_shape(agents, &names).await;
        let placed = shape.is_some();
        if shape != last || !placed {
            stable_since = Instant::now();
        }
        let stable = stable_since.elapsed();
        status(
            progress,
            &format!(
                "trees: {} (stable for {:.1} s)",
                if placed { "every agent placed" } else { "joining" },
                stable.as_secs_f64()
            ),
        );
        last = shape;
        if placed && stable >= Duration::from_secs(2) {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    if !settled {
        bail!("the topic trees did not settle within 60 s");
    }
    let settle_s = sub_start.elapsed().as_secs_f64();
    let max_tree_depth = last.as_ref().map_or(0, |s| s.iter().map(|(_, d)| *d).max().unwrap_or(0));
    say(progress, &format!("trees settled in {settle_s:.2} s (deepest member at depth {max_tree_depth})"));

    // The idle window: subscribed, trees settled, nothing published. What the cluster costs
    // when it carries no traffic (membership, ring, tree heartbeats, QUIC's own packets).
    let mut idle_bytes = None;
    let mut idle_frames = BTreeMap::new();
    let mut idle_connections = None;
    let mut idle_wait = None;
    if !opts.idle.is_zero() {
        // Subscribing changed every agent's advertised meta: wait until those membership
        // updates have spread (every agent's piggyback queue is empty), so the window shows
        // the steady state, and report how long that took.
        let waited = Instant::now();
        let deadline = waited + Duration::from_secs(120);
        loop {
            let mut queued = 0;
            for h in agents {
                if let Ok(text) = h.ask(Command::Metrics).await {
                    queued += metric(&text, "hearsay_membership_queued_updates");
                }
            }
            status(progress, &format!("membership updates still queued: {queued} (all agents)"));
            if queued == 0 || Instant::now() >= deadline {
                if queued > 0 {
                    say(progress, &format!("{queued} membership updates still queued after 120 s"));
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        idle_wait = Some(waited.elapsed().as_secs_f64());
        say(progress, &format!("idle for {:.1} s (nothing published)", opts.idle.as_secs_f64()));
        let i0 = Counters::of(agents).await;
        let t0 = Instant::now();
        tokio::time::sleep(opts.idle).await;
        let i1 = Counters::of(agents).await;
        let node_secs = n as f64 * t0.elapsed().as_secs_f64();
        idle_bytes = Some(i1.bytes.saturating_sub(i0.bytes) as f64 / node_secs);
        idle_frames = i1
            .protocols_since(&i0)
            .into_iter()
            .filter(|(_, t)| t.bytes > 0)
            .map(|(k, t)| (k, t.bytes as f64 / node_secs))
            .collect();
        idle_connections = Some(i1.live as f64 / n as f64);
        say(
            progress,
            &format!(
                "idle: {:.0} bytes per agent per second, {:.1} connections per agent",
                idle_bytes.unwrap_or(0.0),
                i1.live as f64 / n as f64
            ),
        );
    }

    // Publishers, chosen by the seed.
    let publishers = mix.sample(n, opts.publishers);
    let m = opts.messages;
    let expected = m * (n as u64 - 1);
    let period = Duration::from_secs_f64(1.0 / opts.rate);
    say(
        progress,
        &format!(
            "publishing {m} messages of {} bytes at {}/s from {} publisher(s) on {} topic(s)",
            opts.size,
            opts.rate,
            publishers.len(),
            names.len()
        ),
    );

    let c0 = Counters::of(agents).await;
    let rss_before = rusage().1;
    let (cpu0, _) = rusage();
    let start = tokio::time::Instant::now();
    let mut next_status = Instant::now();
    // Publishes, at most `inflight` waiting for their acknowledgement at once.
    let slots = Arc::new(tokio::sync::Semaphore::new(opts.inflight));
    let mut acks: tokio::task::JoinSet<Result<u64>> = tokio::task::JoinSet::new();
    for k in 0..m {
        tokio::time::sleep_until(start + period.mul_f64(k as f64)).await;
        let p = publishers[(k % publishers.len() as u64) as usize];
        let ts = epoch.elapsed().as_micros() as u64;
        let topic = names[(k % names.len() as u64) as usize].clone();
        let payload = AppMessage::new(payload(ts, k, p, opts.size)).encode()?;
        let slot = slots.clone().acquire_owned().await?;
        let commands = agents[p].commands.clone();
        acks.spawn(async move {
            let asked = Instant::now();
            let (tx, rx) = tokio::sync::oneshot::channel();
            commands
                .send(Command::Publish { topic, payload, reply: tx })
                .await
                .map_err(|_| anyhow!("agent gone"))?;
            match rx.await.map_err(|_| anyhow!("agent gone"))? {
                Ok(_) => {}
                Err(e) => bail!("publishing message {k} failed: {e}"),
            }
            drop(slot);
            Ok(asked.elapsed().as_micros() as u64)
        });
        if progress && Instant::now() >= next_status {
            next_status = Instant::now() + Duration::from_secs(1);
            let got = tally.delivered.load(Ordering::Relaxed);
            let due = (k + 1) * (n as u64 - 1);
            status(
                progress,
                &format!(
                    "published {}/{m} | delivered {got}/{due} so far | {:.0} s",
                    k + 1,
                    start.elapsed().as_secs_f64()
                ),
            );
        }
    }
    let mut ack_us = Vec::with_capacity(m as usize);
    while let Some(r) = acks.join_next().await {
        ack_us.push(r??);
    }
    let acked_in = start.elapsed();
    let last_publish = start + period.mul_f64((m - 1) as f64);
    tokio::time::sleep_until(last_publish + opts.drain).await;
    let (cpu1, _) = rusage();
    let window = start.elapsed();
    let c1 = Counters::of(agents).await;
    let in_window = tally.delivered.load(Ordering::Relaxed);

    // Late deliveries: only while some are missing, bounded.
    if in_window < expected {
        say(
            progress,
            &format!("{in_window}/{expected} delivered at the end of the window; waiting up to 10 s more"),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while tally.delivered.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (_, peak_rss_mib) = rusage();
    let total = tally.delivered.load(Ordering::Relaxed);

    // Latencies.
    let mut per_delivery = Vec::with_capacity(total as usize);
    let mut per_message: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let mut unparsed = 0;
    let mut gaps = 0;
    for log in &logs {
        let l = log.lock().unwrap_or_else(|p| p.into_inner());
        unparsed += l.unparsed;
        gaps += l.gaps;
        for &(idx, lat) in &l.got {
            per_delivery.push(lat);
            let e = per_message.entry(idx).or_insert((0, 0));
            e.0 += 1;
            e.1 = e.1.max(lat);
        }
    }
    if unparsed > 0 || gaps > 0 {
        say(
            progress,
            &format!("{unparsed} deliveries with a foreign payload, {gaps} messages announced as gaps"),
        );
    }
    let mut last_node: Vec<u64> =
        per_message.values().filter(|(c, _)| *c >= n as u64 - 1).map(|(_, lat)| *lat).collect();
    let complete_messages = last_node.len() as u64;
    let per = |x: f64| if in_window == 0 { f64::NAN } else { x / in_window as f64 };
    let wire_bytes = c1.bytes.saturating_sub(c0.bytes);
    let duplicates = c1.dups.saturating_sub(c0.dups);
    let cpu_s = cpu1 - cpu0;
    Ok(BenchReport {
        nodes: n,
        auth: !opts.no_auth,
        finger_base: hearsay_overlay::chord::FingerLayout::new(opts.finger_base_bits)
            .map_or(0, |_| 1 << opts.finger_base_bits),
        route_via_successors: opts.route_via_successors,
        messages: m,
        size: opts.size,
        rate: opts.rate,
        publishers: publishers.len(),
        topics: names.len(),
        seed: opts.seed,
        delivery_ratio: total as f64 / expected as f64,
        deliveries: total,
        expected_deliveries: expected,
        late_deliveries: total - in_window,
        complete_messages,
        last_node_ms: Percentiles::of(&mut last_node),
        per_delivery_ms: Percentiles::of(&mut per_delivery),
        bytes_per_delivery: per(wire_bytes as f64),
        dup_per_delivery: per(duplicates as f64),
        cpu_s,
        cpu_us_per_delivery: per(cpu_s * 1e6),
        peak_rss_mib,
        wire_bytes,
        wire_datagrams: c1.datagrams.saturating_sub(c0.datagrams),
        connections_opened: c1.connections.saturating_sub(c0.connections),
        evictions: c1.evictions.saturating_sub(c0.evictions),
        live_connections: c1.live,
        connections_per_agent: c1.live as f64 / n as f64,
        idle_s: opts.idle.as_secs_f64(),
        idle_wait_s: idle_wait,
        idle_bytes_per_node_per_s: idle_bytes,
        idle_frame_bytes_per_node_per_s: idle_frames,
        idle_connections_per_agent: idle_connections,
        frames_by_protocol: c1.protocols_since(&c0).into_iter().filter(|(_, t)| t.frames > 0).collect(),
        rss_before_mib: rss_before,
        duplicates,
        window_s: window.as_secs_f64(),
        formation_s,
        settle_s,
        max_tree_depth,
        load_avg_1m: load_avg(),
        durable: opts.durable.map_or("off".to_string(), |s| format!("{s:?}").to_lowercase()),
        inflight: opts.inflight,
        publish_ack_ms: Percentiles::of(&mut ack_us),
        publishes_per_s: m as f64 / acked_in.as_secs_f64(),
        store_bytes_per_message: None,
    })
}

impl BenchReport {
    /// A readable table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let p = |x: &Percentiles| format!("p50 {:.2}  p99 {:.2}  max {:.2}", x.p50, x.p99, x.max);
        let rows: Vec<(&str, String)> = vec![
            (
                "shape",
                format!(
                    "N {} | M {} | S {} B | R {}/s | P {} | T {} | seed {} | auth {}",
                    self.nodes,
                    self.messages,
                    self.size,
                    self.rate,
                    self.publishers,
                    self.topics,
                    self.seed,
                    if self.auth { "on" } else { "off" }
                ),
            ),
            (
                "delivery ratio",
                format!(
                    "{:.6} ({} of {}, {} late; {} of {} messages reached every node)",
                    self.delivery_ratio,
                    self.deliveries,
                    self.expected_deliveries,
                    self.late_deliveries,
                    self.complete_messages,
                    self.messages
                ),
            ),
            ("last-node latency ms", p(&self.last_node_ms)),
            ("per-delivery latency ms", p(&self.per_delivery_ms)),
            (
                "bytes per delivery",
                format!(
                    "{:.0} ({} UDP payload bytes, {} datagrams)",
                    self.bytes_per_delivery, self.wire_bytes, self.wire_datagrams
                ),
            ),
            ("duplicates per delivery", format!("{:.4} ({} copies)", self.dup_per_delivery, self.duplicates)),
            ("CPU µs per delivery", format!("{:.1} ({:.2} s of CPU)", self.cpu_us_per_delivery, self.cpu_s)),
            (
                "publish acknowledgements",
                format!(
                    "{} | {:.0}/s | store {} | {} in flight{}",
                    p(&self.publish_ack_ms),
                    self.publishes_per_s,
                    self.durable,
                    self.inflight,
                    self.store_bytes_per_message
                        .map_or(String::new(), |b| format!(" | {b:.0} disk bytes per message kept"))
                ),
            ),
            (
                "peak RSS MiB",
                format!(
                    "{:.1} (whole process; {:.1} before publishing)",
                    self.peak_rss_mib, self.rss_before_mib
                ),
            ),
            (
                "QUIC connections",
                format!(
                    "{} opened, {} evicted in the window; {} live at its end ({:.1} per agent)",
                    self.connections_opened,
                    self.evictions,
                    self.live_connections,
                    self.connections_per_agent
                ),
            ),
            (
                "idle bytes per agent/s",
                match self.idle_bytes_per_node_per_s {
                    None => "not measured (--idle 0)".to_string(),
                    Some(b) => format!(
                        "{b:.0} UDP over {:.1} s with nothing published (from {:.1} s after the trees settled, when membership updates had spread); frames: {}; {:.1} connections per agent",
                        self.idle_s,
                        self.idle_wait_s.unwrap_or(0.0),
                        self.idle_frame_bytes_per_node_per_s
                            .iter()
                            .map(|(k, b)| format!("{k} {b:.0}"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        self.idle_connections_per_agent.unwrap_or(0.0)
                    ),
                },
            ),
            (
                "window",
                format!(
                    "{:.1} s (publishing + drain); formation {:.1} s, trees settled {:.1} s, depth ≤ {}",
                    self.window_s, self.formation_s, self.settle_s, self.max_tree_depth
                ),
            ),
            (
                "frames by protocol",
                self.frames_by_protocol
                    .iter()
                    .map(|(k, t)| format!("{k} {} ({} B)", t.frames, t.bytes))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            ("load average (1 min)", format!("{:.2}", self.load_avg_1m)),
        ];
        for (k, v) in rows {
            let _ = writeln!(s, "{k:<24} {v}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_and_fills_the_size() {
        let p = payload(123_456_789, 42, 7, 256);
        assert_eq!(p.len(), 256);
        assert_eq!(parse(&p), Some((123_456_789, 42, 7)));
        assert_eq!(payload(1, 2, 3, MIN_SIZE).len(), MIN_SIZE);
        assert_eq!(parse("short"), None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).map(|x| x * 1000).collect();
        let p = Percentiles::of(&mut v);
        assert_eq!((p.p50, p.p99, p.max), (50.0, 99.0, 100.0));
        assert!(Percentiles::of(&mut []).p50.is_nan());
    }

    #[test]
    fn bad_shapes_are_refused() {
        let ok = BenchOptions::new(5, 10, 256, 100.0);
        assert!(ok.validate().is_ok());
        assert_eq!(BenchOptions { nodes: 1, ..ok.clone() }.validate(), Err(BenchError::Nodes(1)));
        assert_eq!(BenchOptions { size: 8, ..ok.clone() }.validate(), Err(BenchError::Size(8)));
        assert!(BenchOptions { rate: 0.0, ..ok.clone() }.validate().is_err());
        assert!(BenchOptions { rate: f64::NAN, ..ok.clone() }.validate().is_err());
        assert!(BenchOptions { publishers: 6, ..ok.clone() }.validate().is_err());
        assert!(BenchOptions { messages: 0, ..ok.clone() }.validate().is_err());
        assert!(BenchOptions { topics: 0, ..ok }.validate().is_err());
    }

    #[test]
    fn samples_are_distinct_and_seeded() {
        let a = Mix(7).sample(100, 5);
        assert_eq!(a, Mix(7).sample(100, 5));
        let mut d = a.clone();
        d.sort_unstable();
        d.dedup();
        assert_eq!(d.len(), 5);
        assert!(Mix(1).sample(0, 5).is_empty());
    }
}
