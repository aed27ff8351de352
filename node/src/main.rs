//! `hearsay`: the agent daemon and the CLI that talks to it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use hearsay::agent::{self, AgentOptions, DurableName, IdentitySource, StartAt};
use hearsay::api::types::hex;
use hearsay::cli::{self, Client, DEFAULT_API};
use hearsay::config::{FileConfig, Preset};
use hearsay::message::TopicName;
use hearsay::transport::faulty::Faults;
use hearsay::transport::identity::ClusterSecret;
use hearsay_protocols::aggregate::Func;

#[derive(Parser)]
#[command(
    name = "hearsay",
    version,
    about = "Gossip-based peer-to-peer dissemination and multicast",
    long_about = "Gossip-based peer-to-peer dissemination and multicast. Run `hearsay agent` on every \
                  host; the other commands talk to the local agent's API (--api, or HEARSAY_API)."
)]
struct Cli {
    /// The agent's local API address (for `agent`: where to serve it).
    #[arg(long, global = true, env = "HEARSAY_API", default_value = DEFAULT_API)]
    api: String,
    /// A file holding the API's token (for `agent`: require it of every request; required when
    /// --api is not a loopback address; for the other commands: send it). Owner-only, at least
    /// 16 characters.
    #[arg(long, global = true, env = "HEARSAY_API_TOKEN_FILE", value_name = "FILE")]
    api_token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run an agent: join the cluster, serve the local API until SIGTERM or Ctrl-C.
    #[command(long_about = AGENT_ABOUT)]
    Agent(Box<AgentArgs>),
    /// This agent's name, id, address, member count and uptime; exits non-zero when its API does
    /// not answer (a health check).
    Status {
        /// Print {name, id, addr, members, uptime_s}.
        #[arg(long)]
        json: bool,
    },
    /// List the members this agent knows: name, address, state, incarnation.
    Members {
        /// Print a JSON array of {name, addr, state, incarnation, id, ring_id, tags}.
        #[arg(long)]
        json: bool,
        /// Only members with tag KEY whose value matches the regex PATTERN as a whole
        /// (repeatable: every one must match), e.g. `--tag role=web` or `--tag 'dc=eu.*'`.
        #[arg(long = "tag", value_name = "KEY=PATTERN")]
        tags: Vec<String>,
    },
    /// Publish MSG on TOPIC (or each line of stdin when MSG is absent); prints the message id
    /// and the subscribers known, with a warning on stderr when there are none.
    Publish {
        /// The topic (names starting with `gossip/` spread by rumor mongering, others by tree).
        topic: TopicName,
        /// The message; read lines from stdin when absent.
        msg: Option<String>,
        /// A header NAME=VALUE for subscription filters (repeatable).
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
        /// Print each reply as a JSON object {topic, origin, seq, subscribers, warning?}.
        #[arg(long)]
        json: bool,
    },
    /// Stream the messages of TOPIC (and explicit gap notices) until interrupted or expired.
    #[command(long_about = SUBSCRIBE_ABOUT)]
    Subscribe {
        /// The topic.
        topic: TopicName,
        /// Only messages whose headers match, e.g. `priority >= 3 && region == eu`.
        #[arg(long)]
        filter: Option<String>,
        /// End the subscription after SECS seconds.
        #[arg(long, value_name = "SECS")]
        expire: Option<f64>,
        /// A durable subscription: the agent keeps NAME's cursors (per origin, the last line
        /// acknowledged), and a later `subscribe --durable NAME` resumes after them, also
        /// after a restart of the agent. Each line is acknowledged once written to stdout.
        #[arg(long, value_name = "NAME")]
        durable: Option<DurableName>,
        /// Where to start: `new` (what arrives from now on; the default), `all` (everything
        /// retained here, and the topic's history from its members if this agent was not on
        /// the topic yet), or an RFC 3339 time such as 2025-01-31T08:00:00Z (as `all`, passing
        /// over messages published before it). For an existing durable subscription it is
        /// ignored: that one resumes after its cursors.
        #[arg(long, value_name = "new|all|TIME", value_parser = parse_from)]
        from: Option<String>,
        /// One JSON object per line: {topic, origin, seq, payload | payload_b64} or
        /// {"gap": {topic, origin, from_seq, to_seq}}.
        #[arg(long)]
        json: bool,
    },
    /// List or delete durable subscriptions.
    Durable {
        #[command(subcommand)]
        action: DurableCmd,
    },
    /// Ask the cluster for an aggregate of a value every node may hold.
    Query {
        /// The function.
        #[arg(value_enum)]
        func: FuncArg,
        /// The value's name.
        name: String,
        /// Print {fn, name, value, rounds, nodes, converged}.
        #[arg(long)]
        json: bool,
        /// Aggregate only over members with tag KEY whose value matches the regex PATTERN as
        /// a whole (repeatable, at most 4: every one must match). Each node decides from its
        /// own tags, in the network; `nodes` still counts every member in view.
        #[arg(long = "tag", value_name = "KEY=PATTERN")]
        tags: Vec<String>,
    },
    /// Show or change this agent's tags (carried in membership; at most 16 tags and 256
    /// bytes of keys and values): `tags`, `tags set KEY=VALUE...`, `tags delete KEY...`.
    Tags {
        #[command(subcommand)]
        action: Option<TagsCmd>,
        /// Print the tags after as a JSON object.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Print this agent's events as they happen until interrupted: member join, leave,
    /// failed, suspect, alive, update (tags, address), and its own tree changes
    /// (tree-attached, tree-detached, tree-root) for its topics.
    Monitor {
        /// One JSON object per line: {seq, event, time_ms, member?, topic?, parent?, cause?}.
        #[arg(long)]
        json: bool,
    },
    /// Set this node's contribution to aggregates.
    Value {
        #[command(subcommand)]
        action: ValueCmd,
    },
    /// Topics this agent takes part in.
    Topics {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// This agent's ring neighbourhood: predecessor, successors, fingers.
    Ring {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// A whole cluster on loopback in this process, live: formation, publish/subscribe under
    /// loss with repair, a crash and its detection, an aggregation query. Exits by itself.
    Demo {
        /// Agents to start.
        #[arg(long, default_value_t = 16)]
        nodes: usize,
        /// Fraction of UDP datagrams each agent drops, in [0, 0.5).
        #[arg(long, default_value_t = 0.05)]
        loss: f64,
        /// Seconds of publishing.
        #[arg(long, default_value_t = 30)]
        duration: u64,
        /// Messages published per second.
        #[arg(long, default_value_t = 20)]
        rate: u32,
    },
    /// Benchmark: N agents in this process over QUIC on 127.0.0.1, all subscribed; publish M
    /// messages of S bytes at R/s and report delivery, latency, bytes, duplicates, CPU, memory.
    #[command(long_about = BENCH_ABOUT)]
    Bench(BenchArgs),
    /// Rotate the cluster secret without downtime, across the cluster: `keys list`,
    /// `keys install FILE`, `keys use FILE`, `keys remove FILE`.
    #[command(long_about = KEYS_ABOUT)]
    Keys {
        #[command(subcommand)]
        action: KeysCmd,
        /// Print the reply as JSON.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Make a new cluster secret file (give the same file to every agent of a cluster).
    Keygen {
        /// Where to write it (refuses to overwrite).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a completion script for SHELL, generated from these very commands and flags.
    #[command(long_about = COMPLETIONS_ABOUT)]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page hearsay(1), generated from these very commands and flags; with
    /// --out DIR, write it and one page per command (hearsay-agent.1, ...) into DIR.
    Man {
        /// Write hearsay.1 and a page per command into this directory instead.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

const COMPLETIONS_ABOUT: &str = "\
Print a completion script for SHELL (bash, zsh, fish, elvish, powershell), generated from
these very commands and flags. Install it where your shell looks:

  bash  hearsay completions bash > /etc/bash_completion.d/hearsay
        (or ~/.local/share/bash-completion/completions/hearsay)
  zsh   hearsay completions zsh > \"${fpath[1]}/_hearsay\"
  fish  hearsay completions fish > ~/.config/fish/completions/hearsay.fish";

const AGENT_ABOUT: &str = "\
Run an agent: join the cluster, serve the local API until SIGTERM or Ctrl-C (which make it
leave the cluster gracefully).

Once its QUIC socket and API are bound, the agent prints one JSON line on stdout and writes the
same object to DATA_DIR/ready.json (atomically: a temporary file renamed; removed when the agent
exits cleanly):

  {\"name\": \"a\", \"id\": \"<NodeId hex>\", \"addr\": \"10.0.0.1:7946\", \"api\": \"127.0.0.1:7070\", \"pid\": 4242}

With port 0 (`--bind 127.0.0.1:0 --api 127.0.0.1:0`) the OS picks free ports and this line says
which; `pid` tells a fresh file from one left by an agent that was killed.";

const BENCH_ABOUT: &str = "\
Benchmark: start N real agents in this process on 127.0.0.1 (QUIC, mutual TLS under a fresh
cluster secret, the same Engine and defaults as `hearsay agent`, lan preset), each joining
through up to 5 earlier agents chosen by --seed. Once every agent sees N alive and every
agent's ring (successors, fingers) is stable, every agent subscribes to every topic; once the
topic trees are stable too, P publishers (chosen by --seed) publish
M messages of S bytes at R per second on a fixed schedule; each payload carries its publish
timestamp. A progress line goes to stderr; at the end a table (or, with --json, one JSON line)
goes to stdout.

Measurement window: from the first publish until the last publish plus --drain. Over it:
UDP payload bytes sent by all agents (every protocol, QUIC included), duplicate payload copies
dropped, and process CPU (getrusage). Deliveries are to nodes other than the publisher,
M*(N-1) expected; per-delivery figures divide by the deliveries within the window. Messages
delivered after the window (up to 10 s more) still count for delivery_ratio.

JSON fields: nodes, auth, finger_base, route_via_successors, messages, size, rate, publishers,
topics, seed, delivery_ratio, deliveries, expected_deliveries, late_deliveries, complete_messages, last_node_ms {p50,p99,max}
(publish until the last node delivered), per_delivery_ms {p50,p99,max}, bytes_per_delivery,
dup_per_delivery, cpu_s, cpu_us_per_delivery, peak_rss_mib (whole process), wire_bytes,
wire_datagrams, duplicates, connections_opened, evictions, live_connections,
connections_per_agent, rss_before_mib, frames_by_protocol {PROTOCOL: {frames, bytes}}, window_s,
formation_s, settle_s, max_tree_depth, load_avg_1m; and from the idle window (--idle seconds
before the first publish, trees settled and membership updates spread, nothing published):
idle_s, idle_wait_s (how long the membership updates took to spread), idle_bytes_per_node_per_s
(UDP bytes per agent per second, QUIC included), idle_frame_bytes_per_node_per_s {PROTOCOL: B/s},
idle_connections_per_agent.

Example: hearsay bench --nodes 10 --messages 3000 --size 256 --rate 100 --json";

#[derive(Args)]
struct BenchArgs {
    /// Agents to start (N >= 2).
    #[arg(long, default_value_t = 10)]
    nodes: usize,
    /// Messages to publish (M >= 1).
    #[arg(long, default_value_t = 1000)]
    messages: u64,
    /// Payload bytes per message (S >= 32: the timestamp header).
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Messages per second over all publishers (R > 0).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Publishing agents, chosen by the seed (1 <= P <= N).
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Topics; every agent subscribes to all, message k goes to topic k mod T.
    #[arg(long, default_value_t = 1)]
    topics: usize,
    /// Seed of the bench's choices (publishers, bootstrap peers).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds after the last publish that still belong to the measurement window.
    #[arg(long, default_value_t = 2.0)]
    drain: f64,
    /// Seconds of idle measurement before the first publish (trees settled, nothing
    /// published): background bytes per agent per second. 0 skips it.
    #[arg(long, default_value_t = 5.0)]
    idle: f64,
    /// Tokio worker threads for all agents together; 0 runs them all on one thread (a
    /// current-thread runtime). Default: one per core, as `hearsay agent` runs.
    #[arg(long, default_value_t = std::thread::available_parallelism().map_or(2, |n| n.get()))]
    threads: usize,
    /// Give every agent a durable store with this sync policy (`always` or `batch`), in a
    /// temporary dir removed at the end: publishes are then acknowledged once durable.
    #[arg(long, value_parser = parse_sync)]
    durable: Option<hearsay::store::Sync>,
    /// Publishes waiting for their acknowledgement at once (1: one at a time).
    #[arg(long, default_value_t = 1)]
    inflight: usize,
    /// Run the agents without authenticity (no seals or signatures made or checked): only to
    /// measure what authenticity costs, beside the same run without this flag.
    #[arg(long)]
    no_auth: bool,
    /// The ring's finger base: 2 (the daemon's default), 4 or 16 (routes of about log_b N
    /// hops: shallower trees), to measure what a larger base changes.
    #[arg(long, default_value_t = 2, value_parser = hearsay_overlay::chord::FingerLayout::parse_base)]
    finger_base: u8,
    /// Let successor-list entries compete with fingers as next hops (Chord's ToN variant):
    /// one hop less per route; with 16 successors, a star at N <= 17.
    #[arg(long)]
    route_via_successors: bool,
    /// Print one JSON line instead of a table.
    #[arg(long)]
    json: bool,
}

const SUBSCRIBE_ABOUT: &str = "\
Stream the messages of TOPIC (and explicit gap notices) until interrupted or expired.

Delivery: per origin (publisher) in seq order; a message that can no longer be had is announced
as a gap line, never skipped silently. Without --durable, each message at most once from the
moment the subscription starts; a client too slow to keep up is closed (the agent says why).
With --durable NAME, at least once across restarts of this command and of the agent: the agent
keeps NAME's cursors, this command acknowledges each line after writing it to stdout (every 64
lines or 100 ms, and on exit), and `subscribe --durable NAME` again gets everything after the
last acknowledged line, then live messages. A redelivered message has the same origin and seq,
so a consumer can drop what it has seen. One client per durable name at a time. A slow durable
client is paused, not closed, and catches up from the agent's store.

--from sets where a new subscription starts (new, all, or an RFC 3339 time); an existing
durable subscription ignores it and resumes after its cursors. `hearsay durable list` shows
the durable subscriptions and their cursors; `hearsay durable delete NAME` removes one.";

#[derive(Subcommand)]
enum DurableCmd {
    /// The durable subscriptions: name, topic, whether a client is connected, cursors.
    List {
        /// Print a JSON array of {name, topic, connected, since?, cursors: [{origin, seq}]}.
        #[arg(long)]
        json: bool,
    },
    /// Delete a durable subscription: its cursors are forgotten, its client closed, and its
    /// topic unsubscribed unless something else holds it.
    Delete {
        /// Its name.
        name: DurableName,
    },
}

/// A `--from` that the agent will take.
fn parse_from(s: &str) -> Result<String, String> {
    s.parse::<StartAt>().map(|_| s.to_string()).map_err(|e| e.to_string())
}

const KEYS_ABOUT: &str = "\
Rotate the cluster secret without downtime (as Serf's `keys`). Every agent holds a keyring
of cluster secrets in its data dir (DATA_DIR/keyring, mode 0600; made from --secret-file on
first start, and used instead of it from then on). Its certificate is issued under the
keyring's primary key; it accepts peers whose certificate is issued under any installed key.

Each command goes to the local agent, which applies it and then sends it to every alive
member over the mutually authenticated QUIC connection with it; the reply says how many
members acknowledged out of how many alive, and which did not (the command then exits 1).

  keys list          the keys the members hold (by fingerprint: never a secret), how many
                     members hold each, and whose primary it is
  keys install FILE  add the secret in FILE (made by `hearsay keygen`) to every keyring
  keys use FILE      make it the primary: certificates are issued under it from now on
                     (refused where it is not installed)
  keys remove FILE   delete it from every keyring (refused for the primary); a node holding
                     only that key can no longer join

A rotation: keygen a new secret, `keys install NEW`, `keys use NEW`, `keys remove OLD`, then
give NEW to new agents (--secret-file). FILE may also be a key's fingerprint for use and
remove. `install` sends the secret to the local API in the request body, so it is refused
unless --api is a loopback address (the API has no TLS); between agents it travels only over
mutual TLS. An agent that was down during a step misses it: run the step again once it is
back (every step can be repeated), or give it the keyring by hand.";

#[derive(Subcommand)]
enum KeysCmd {
    /// The keys every alive member holds, by fingerprint.
    List,
    /// Install the secret in FILE on every alive member (not as the primary).
    Install {
        /// A secret file written by `hearsay keygen`.
        file: PathBuf,
    },
    /// Make the key in FILE (installed everywhere first) the primary on every alive member.
    Use {
        /// A secret file, or the key's fingerprint (16 hex digits).
        file: PathBuf,
    },
    /// Remove the key in FILE (not the primary) from every alive member.
    Remove {
        /// A secret file, or the key's fingerprint (16 hex digits).
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum TagsCmd {
    /// Add or replace tags.
    Set {
        /// KEY=VALUE (repeatable).
        #[arg(value_name = "KEY=VALUE", required = true)]
        tags: Vec<String>,
    },
    /// Remove tags.
    Delete {
        /// The keys.
        #[arg(value_name = "KEY", required = true)]
        keys: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ValueCmd {
    /// Set NAME to X (a finite number).
    Set {
        /// The value's name.
        name: String,
        /// The value.
        #[arg(allow_negative_numbers = true)]
        value: f64,
    },
}

/// The aggregation functions, as clap lists them.
#[derive(Clone, Copy, ValueEnum)]
enum FuncArg {
    Avg,
    Sum,
    Count,
    Min,
    Max,
}

impl From<FuncArg> for Func {
    fn from(f: FuncArg) -> Func {
        match f {
            FuncArg::Avg => Func::Avg,
            FuncArg::Sum => Func::Sum,
            FuncArg::Count => Func::Count,
            FuncArg::Min => Func::Min,
            FuncArg::Max => Func::Max,
        }
    }
}

#[derive(Args)]
struct AgentArgs {
    /// Read settings from this TOML file (same keys as the flags; flags win).
    #[arg(long)]
    config: Option<PathBuf>,
    /// This node's name in member lists.
    #[arg(long)]
    name: Option<String>,
    /// UDP address for QUIC [default: 0.0.0.0:7946].
    #[arg(long)]
    bind: Option<SocketAddr>,
    /// Address other nodes should use to reach this one [default: the bind address].
    #[arg(long)]
    advertise: Option<SocketAddr>,
    /// A seed address to join through (repeatable); none starts a new cluster.
    #[arg(long)]
    join: Vec<SocketAddr>,
    /// The cluster secret (made by `hearsay keygen`). On first start it becomes the keyring
    /// in the data dir (DATA_DIR/keyring); once that exists the keyring wins (see `hearsay
    /// keys --help`).
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// Where this node keeps its key and store [default: /var/lib/hearsay/NAME as root, else
    /// $XDG_STATE_HOME/hearsay/NAME, i.e. ~/.local/state/hearsay/NAME].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Timing preset after memberlist's: lan, wan or local.
    #[arg(long, value_enum)]
    preset: Option<Preset>,
    /// Log filter, e.g. `info` or `hearsay=debug`.
    #[arg(long)]
    log: Option<String>,
    /// When the store syncs writes to disk: `always` (one fsync per write) or `batch` (writes
    /// that arrive during an fsync share the next one) [default: batch]. Either way a publish
    /// is acknowledged only once its write is durable.
    #[arg(long, value_parser = parse_sync)]
    sync: Option<hearsay::store::Sync>,
    /// Messages the store keeps per topic [default: 100000]; older ones are trimmed, and a
    /// subscriber that needed them gets an explicit gap.
    #[arg(long)]
    retain_messages: Option<u64>,
    /// Payload bytes the store keeps per topic, e.g. 256MiB or 1GB [default: 256MiB].
    #[arg(long)]
    retain_bytes: Option<String>,
    /// How long the store keeps messages, e.g. 12h or 7d [default: 7d].
    #[arg(long)]
    retain_age: Option<String>,
    /// The largest message body a publish through this agent's API may carry, in bytes
    /// [default: 262144, 256 KiB; at most 1032192]; a larger one is refused with 413.
    #[arg(long, value_name = "BYTES")]
    max_message_bytes: Option<usize>,
    /// A tag KEY=VALUE this node advertises (repeatable; at most 16 tags and 256 bytes of keys
    /// and values together); `hearsay tags` changes them at run time.
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    tags: Vec<String>,
    /// Run this shell command (`sh -c`) for each event, serially, the event's JSON on stdin
    /// and HEARSAY_EVENT set to its name; killed after 30 s; failures are logged and counted.
    #[arg(long, value_name = "CMD")]
    event_handler: Option<String>,
    /// Subscriptions the API serves at once [default: 256]; one more is refused with 503.
    #[arg(long, value_name = "N")]
    max_subscriptions: Option<usize>,
    /// Drop this fraction of outgoing UDP datagrams (testing).
    #[arg(long, hide = true, default_value_t = 0.0)]
    test_loss: f64,
    /// Delay outgoing UDP datagrams by this many milliseconds (testing).
    #[arg(long, hide = true, default_value_t = 0)]
    test_delay_ms: u64,
    /// Serve `/v1/test/control` on the API: cut and heal links, set loss and delay at run time
    /// (testing; never on a real deployment).
    #[arg(long, hide = true)]
    test_control: bool,
}

/// What `hearsay agent` reports once its QUIC socket and API are bound: one JSON line on
/// stdout and the same object in `DATA_DIR/ready.json` (written to a temporary file and
/// renamed, so a reader sees all of it or nothing; removed when the agent exits cleanly).
/// With port 0 in `--bind` or `--api` this is how to learn the ports the OS gave.
#[derive(serde::Serialize)]
struct Ready {
    /// The node's name.
    name: String,
    /// Its NodeId (hex).
    id: String,
    /// The UDP address QUIC is bound to.
    addr: SocketAddr,
    /// The API's address.
    api: Option<SocketAddr>,
    /// This process (a file left by an agent that was killed names a dead one).
    pid: u32,
}

/// The ready file's path in a data directory.
const READY_FILE: &str = "ready.json";

/// Print `ready` on stdout and write it to `dir/ready.json` atomically.
fn report_ready(dir: &std::path::Path, ready: &Ready) -> Result<()> {
    let line = serde_json::to_string(ready)?;
    let tmp = dir.join(format!("{READY_FILE}.{}.tmp", ready.pid));
    std::fs::write(&tmp, format!("{line}\n")).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(READY_FILE))
        .with_context(|| format!("cannot rename {} to {READY_FILE}", tmp.display()))?;
    // Nobody reading stdout (closed, or a full pipe nobody drains) must not stop the agent.
    let mut out = std::io::stdout().lock();
    let _ = std::io::Write::write_all(&mut out, format!("{line}\n").as_bytes());
    let _ = std::io::Write::flush(&mut out);
    Ok(())
}

fn parse_sync(s: &str) -> Result<hearsay::store::Sync, String> {
    s.parse()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let token_file = cli.api_token_file;
    let token = || token_file.as_deref().map(hearsay::config::load_api_token).transpose();
    let client = || -> Result<Client> { Ok(Client::new(&cli.api).with_token(token()?)) };
    match cli.command {
        Cmd::Agent(args) => run_agent(&cli.api, token_file.clone(), *args),
        Cmd::Status { json } => cli::status(&client()?, json),
        Cmd::Members { json, tags } => cli::members(&client()?, json, &tags),
        Cmd::Publish { topic, msg, headers, json } => {
            cli::publish(&client()?, topic, msg.as_deref(), &headers, json)
        }
        Cmd::Subscribe { topic, filter, expire, durable, from, json } => {
            let how = cli::SubscribeArgs {
                filter: filter.as_deref(),
                expire,
                durable: durable.as_ref(),
                from: from.as_deref(),
            };
            cli::subscribe(&client()?, &topic, &how, json)
        }
        Cmd::Durable { action: DurableCmd::List { json } } => cli::durable_list(&client()?, json),
        Cmd::Durable { action: DurableCmd::Delete { name } } => cli::durable_delete(&client()?, &name),
        Cmd::Query { func, name, json, tags } => cli::query(&client()?, func.into(), &name, &tags, json),
        Cmd::Tags { action, json } => match action {
            None => cli::tags(&client()?, &[], &[], json),
            Some(TagsCmd::Set { tags }) => cli::tags(&client()?, &tags, &[], json),
            Some(TagsCmd::Delete { keys }) => cli::tags(&client()?, &[], &keys, json),
        },
        Cmd::Monitor { json } => cli::monitor(&client()?, json),
        Cmd::Keys { action, json } => match action {
            KeysCmd::List => cli::keys_list(&client()?, json),
            KeysCmd::Install { file } => cli::keys_op(&client()?, "install", &file, json),
            KeysCmd::Use { file } => cli::keys_op(&client()?, "use", &file, json),
            KeysCmd::Remove { file } => cli::keys_op(&client()?, "remove", &file, json),
        },
        Cmd::Value { action: ValueCmd::Set { name, value } } => cli::set_value(&client()?, &name, value),
        Cmd::Topics { json } => cli::topics(&client()?, json),
        Cmd::Ring { json } => cli::ring(&client()?, json),
        Cmd::Demo { nodes, loss, duration, rate } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_env("HEARSAY_LOG")
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
                )
                .with_writer(std::io::stderr)
                .init();
            let opts = hearsay::demo::DemoOptions {
                nodes,
                loss,
                duration: std::time::Duration::from_secs(duration),
                rate,
            };
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(hearsay::demo::run(opts))
        }
        Cmd::Bench(args) => run_bench(args),
        Cmd::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "hearsay", &mut std::io::stdout());
            Ok(())
        }
        Cmd::Man { out: None } => Ok(clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?),
        Cmd::Man { out: Some(dir) } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(Cli::command(), &dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?;
            eprintln!("wrote hearsay.1 and a page per command into {}", dir.display());
            Ok(())
        }
        Cmd::Keygen { out } => {
            if out.exists() {
                anyhow::bail!(
                    "{} exists: keygen refuses to overwrite a cluster secret (remove it first, or pick another --out)",
                    out.display()
                );
            }
            ClusterSecret::generate()?.write_new(&out)?;
            println!(
                "wrote a new cluster secret to {}: give this file to every agent (--secret-file)",
                out.display()
            );
            Ok(())
        }
    }
}

fn run_bench(args: BenchArgs) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HEARSAY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    if !(args.drain.is_finite() && (0.0..=600.0).contains(&args.drain)) {
        anyhow::bail!("--drain must be a number of seconds in [0, 600]");
    }
    if !(args.idle.is_finite() && (0.0..=600.0).contains(&args.idle)) {
        anyhow::bail!("--idle must be a number of seconds in [0, 600]");
    }
    let mut opts = hearsay::bench::BenchOptions::new(args.nodes, args.messages, args.size, args.rate);
    opts.idle = std::time::Duration::from_secs_f64(args.idle);
    opts.durable = args.durable;
    opts.inflight = args.inflight;
    opts.no_auth = args.no_auth;
    opts.finger_base_bits = args.finger_base;
    opts.route_via_successors = args.route_via_successors;
    opts.publishers = args.publishers;
    opts.topics = args.topics;
    opts.seed = args.seed;
    opts.drain = std::time::Duration::from_secs_f64(args.drain);
    opts.progress = true;
    opts.validate()?;
    let runtime = if args.threads == 0 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads).enable_all().build()?
    };
    let report = runtime.block_on(hearsay::bench::run(opts))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

fn run_agent(api: &str, api_token_file: Option<PathBuf>, args: AgentArgs) -> Result<()> {
    let file = match &args.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let api_addr: Option<SocketAddr> = api.trim_start_matches("http://").parse().ok();
    let flags = FileConfig {
        name: args.name,
        bind: args.bind,
        advertise: args.advertise,
        join: Some(args.join),
        api: api_addr.filter(|a| a.to_string() != DEFAULT_API || args.config.is_none()),
        secret_file: args.secret_file,
        data_dir: args.data_dir,
        preset: args.preset,
        log: args.log,
        sync: args.sync,
        retain_messages: args.retain_messages,
        retain_bytes: args.retain_bytes,
        retain_age: args.retain_age,
        max_message_bytes: args.max_message_bytes,
        tags: if args.tags.is_empty() {
            None
        } else {
            let parsed = args.tags.iter().map(|t| hearsay_protocols::tags::split_key_value(t));
            Some(parsed.collect::<Result<_, _>>().context("--tag")?)
        },
        event_handler: args.event_handler,
        api_token_file,
        max_subscriptions: args.max_subscriptions,
    };
    let config = file.overridden_by(flags).resolve()?;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&config.log).context("bad --log filter")?)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if !(0.0..1.0).contains(&args.test_loss) {
        anyhow::bail!("--test-loss must be in [0, 1)");
    }
    let secret = ClusterSecret::load(&config.secret_file)?;
    let api_token = config.api_token_file.as_deref().map(hearsay::config::load_api_token).transpose()?;
    let faults = Faults::none();
    faults.set_loss(args.test_loss);
    faults.set_delay(std::time::Duration::from_millis(args.test_delay_ms));
    let mut opts = AgentOptions::new(&config.name, config.bind, secret);
    opts.advertise = config.advertise;
    opts.join = config.join.clone();
    opts.api = Some(config.api);
    opts.identity = IdentitySource::DataDir(config.data_dir.clone());
    opts.store = Some(agent::StoreOptions {
        dir: config.data_dir.clone(),
        sync: config.sync,
        retention: config.retention,
    });
    opts.preset = config.preset;
    opts.faults = faults;
    opts.max_message_bytes = config.max_message_bytes;
    opts.test_control = args.test_control;
    opts.tags = config.tags.clone();
    opts.event_handler = config.event_handler.clone();
    opts.api_token = api_token;
    opts.max_subscriptions = config.max_subscriptions;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let data_dir = config.data_dir.clone();
    let ran = runtime.block_on(async move {
        let handle = agent::spawn(opts).await?;
        eprintln!(
            "hearsay agent {} ({}) listening on {}, API on http://{}",
            config.name,
            hex(&handle.id),
            handle.addr,
            handle.api.map_or_else(|| "-".to_string(), |a| a.to_string())
        );
        let ready = Ready {
            name: config.name.clone(),
            id: hex(&handle.id),
            addr: handle.addr,
            api: handle.api,
            pid: std::process::id(),
        };
        report_ready(&config.data_dir, &ready)?;
        let stop = async {
            #[cfg(unix)]
            {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            #[cfg(not(unix))]
            tokio::signal::ctrl_c().await?;
            Ok::<(), std::io::Error>(())
        };
        let mut handle = handle;
        tokio::select! {
            r = stop => {
                r?;
                eprintln!("leaving the cluster...");
                handle.request_leave();
                Ok(handle.stopped().await?)
            }
            r = handle.stopped() => Ok(r?),
        }
    });
    let _ = std::fs::remove_file(data_dir.join(READY_FILE));
    ran
}
